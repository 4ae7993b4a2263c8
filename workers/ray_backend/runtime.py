"""Joining a Ray cluster, or starting a local Ray instance, for the Ray backend."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import NamedTuple

# Before Ray is imported: no usage reporting from this service or its tests.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

from workers.backend import BackendSettings
from workers.errors import PoolUnavailable

#: On a cluster with GPUs, by default a training asks for 3/4 of one and the cached models
#: share the last quarter: one training per GPU, and a loaded model never keeps a training
#: off the GPU it sits on (see :func:`gpu_shares`).
TRAINING_GPU_SHARE = 0.75
MODEL_GPU_SHARE = 0.25

logger = logging.getLogger(__name__)

# A Ray Client join is retried when the head's proxy fails to start the per-client server
# it hands each driver to (it now and then does, on a busy head). Joining by a GCS address
# needs no retry here: Ray itself waits for an unreachable GCS.
JOIN_ATTEMPTS = 3
JOIN_RETRY_DELAY_S = 2.0


@dataclass
class RayRuntime:
    """Connects this process to Ray.

    Parameters
    ----------
    address : str
        Empty starts a local Ray instance in this process's session; ``auto`` joins the
        cluster running on this node; ``ray://host:10001`` joins a remote one (Ray client).
    num_cpus : int or None
        CPUs of a local instance (default: this machine's). Ignored when joining.
    object_store_bytes : int
        Object store size of a local instance. Ignored when joining.
    """

    address: str = ""
    num_cpus: int | None = None
    object_store_bytes: int = 256 * 1024**2
    _owned: bool = False

    def start(self) -> None:
        # A process connects once; another app in it (tests) shares the connection.
        if ray.is_initialized():
            return
        try:
            if self.address:
                self._join()
            else:
                ray.init(
                    num_cpus=self.num_cpus,
                    object_store_memory=self.object_store_bytes,
                    include_dashboard=False,
                    log_to_driver=False,
                )
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            raise PoolUnavailable(
                f"cannot reach Ray at {self.address or 'a local instance'}: {exc}"
            ) from exc
        self._owned = True

    def _join(self) -> None:
        attempts = JOIN_ATTEMPTS if self.address.startswith("ray://") else 1
        for attempt in range(1, attempts + 1):
            try:
                ray.init(address=self.address, log_to_driver=False)
                return
            except ConnectionAbortedError as exc:
                if attempt == attempts:
                    raise
                logger.warning(
                    "joining Ray at %s failed (attempt %d of %d), retrying: %s",
                    self.address,
                    attempt,
                    attempts,
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else exc,
                )
                if ray.is_initialized():
                    ray.shutdown()
                time.sleep(JOIN_RETRY_DELAY_S)

    def stop(self) -> None:
        # Disconnects from a joined cluster; stops a local instance this process started.
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False

    @staticmethod
    def resources() -> dict[str, float]:
        """What the cluster has in all (``CPU``, ``GPU``, memory, custom resources)."""
        return dict(ray.cluster_resources())


class GpuShares(NamedTuple):
    """The GPUs a training task and a model actor ask Ray for (fractions share one)."""

    training: float
    model: float


def gpu_shares(settings: BackendSettings, cluster_gpus: float) -> GpuShares:
    """The settings' shares (``ray_training_gpus``, ``ray_model_gpus``) where they are set;
    else, on a cluster with GPUs, :data:`TRAINING_GPU_SHARE` for a training and
    :data:`MODEL_GPU_SHARE` split between the ``model_cache_size`` cached models; else 0."""
    training, model = settings.ray_training_gpus, settings.ray_model_gpus
    if training is None:
        training = TRAINING_GPU_SHARE if cluster_gpus > 0 else 0.0
    if model is None:
        model = MODEL_GPU_SHARE / settings.model_cache_size if cluster_gpus > 0 else 0.0
    return GpuShares(training, model)


def ray_device() -> str:
    """The device of the Ray task or actor calling this: ``cuda:0`` or ``cpu``.

    Ray narrows ``CUDA_VISIBLE_DEVICES`` to the GPU it assigned, which torch sees as
    ``cuda:0``. One that asked for no GPU hides every GPU from itself, whatever the node
    has; one given a GPU that torch cannot use (a CPU build of torch on a GPU node) runs
    on the CPU.
    """
    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
