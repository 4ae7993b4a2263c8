"""Service settings: one pydantic-settings class, environment prefix ``TENSORLENS_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's cpuset, ``taskset``),
    not every CPU of the host as :func:`os.cpu_count` counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service. Each field is ``TENSORLENS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TENSORLENS_", env_file=".env", extra="ignore")

    # Server
    host: str = Field("127.0.0.1", description="Interface `make run` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port `make run` listens on.")
    data_dir: Path = Field(Path("data"), description="Job database and model checkpoints.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed by CORS; empty allows none.",
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans, HTTP metrics and logs, for a provider set up "
        "in the process (e.g. by `opentelemetry-instrument`). Off by default: the service's "
        "metrics are Prometheus, at /metrics, and looking up the providers costs every request "
        "about a tenth of a prediction's event-loop time.",
    )

    http_keep_alive_s: int = Field(
        5, ge=1, le=3600, description="Seconds an idle keep-alive connection stays open."
    )
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a connection has to send a request's headers, from when it opens "
        "(or its last answer): idle and slow connections are closed.",
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open connections (and requests in progress) above which requests get 503.",
    )
    sse_keepalive_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="Longest silence on an event stream before a keep-alive comment is sent "
        "(proxies cut idle streams, often at 60 s).",
    )

    # Access (service/auth.py)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `<role>:<sha256 of the key>` entries (role infer, train or "
        "admin; `tensorlens hash-key` prints one); empty: no keys needed.",
    )
    metrics_require_key: bool = Field(
        False, description="With API keys on, /metrics needs a key too (any role)."
    )
    rate_limit_per_s: float = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Requests per second allowed to each key (each client address without "
        "keys), past a burst; 429 with Retry-After above it. 0: no limit.",
    )
    rate_limit_burst: int = Field(
        20, ge=1, le=1_000_000, description="Requests a client may send at once under the limit."
    )

    # Worker pool
    image_workers: int = Field(
        default_factory=usable_cpus,
        ge=1,
        le=256,
        description="Worker processes for image pipelines (default: CPU count).",
    )
    max_queue_depth: int = Field(
        64, ge=1, le=100_000, description="Requests waiting for a worker before 429."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Per-request limit, queue wait included, before 504."
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After sent with 429.")
    image_worker_keep_freed_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        le=1024 * 1024 * 1024,
        description="Freed memory each image worker keeps for its next request instead of "
        "returning it to the kernel (glibc): big temporaries then cost no page faults. "
        "0: the C library's defaults.",
    )

    # Image limits
    max_upload_bytes: int = Field(
        25_000_000, ge=1024, description="Largest accepted upload in bytes (413 above)."
    )
    max_json_bytes: int = Field(
        10_000_000, ge=1024, description="Largest non-multipart request body (413 above)."
    )
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Largest accepted image in pixels (422 above)."
    )
    max_pipeline_steps: int = Field(32, ge=1, le=1000, description="Steps per pipeline.")
    png_compress_level: int = Field(
        1, ge=0, le=9, description="zlib level for PNG responses (1: fast, 9: small)."
    )

    # Training
    devices: str = Field(
        "auto",
        description="Training lanes: `auto` (every CUDA device, else the CPU), `cpu`, `cuda`, "
        "or a list such as `cuda:0,cuda:1`.",
    )
    lanes_per_device: int = Field(1, ge=1, le=64, description="Concurrent jobs per device.")
    training_cpu_threads: int = Field(
        1, ge=1, le=256, description="torch threads of a training process on the CPU."
    )
    max_queued_trainings: int = Field(
        16, ge=1, le=10_000, description="Trainings waiting for a lane before 429."
    )
    max_training_s: float = Field(
        3600, gt=0, le=7 * 86400, description="Wall-clock limit of one training job."
    )
    max_epochs: int = Field(10_000, ge=1, le=100_000, description="Epochs per training.")
    max_points: int = Field(100_000, ge=1, le=1_000_000, description="Dataset points per training.")
    max_hidden_units: int = Field(1024, ge=1, le=4096, description="Units per hidden layer.")
    max_layers: int = Field(8, ge=0, le=16, description="Hidden layers per network.")
    max_ensemble: int = Field(32, ge=1, le=64, description="Networks per regression ensemble.")

    # Inference
    inference_device: str = Field(
        "auto", description="Where loaded models live: `auto` (cuda:0 if any), `cpu`, `cuda:N`."
    )
    inference_cpu_threads: int = Field(
        default_factory=usable_cpus,
        ge=1,
        le=256,
        description="torch threads of the API process's forward passes on the CPU (default: CPU "
        "count: with batching on, the event loop parses the next requests while no pass runs, "
        "so a batch's pass may take every core; with it off, a one-row pass uses one thread).",
    )
    batch_instances: int = Field(
        default_factory=lambda data: max(
            1, min(4, usable_cpus() // data.get("inference_cpu_threads", 1))
        ),
        ge=1,
        le=64,
        description="Batches of one model that may run at once with batching on, each in its "
        "own thread, like Triton's model instances (default: CPU count // "
        "inference_cpu_threads, 1 to 4, so that passes at once times torch threads stay within "
        "the cores: 1 with the default threads).",
    )
    model_cache_size: int = Field(8, ge=1, le=1000, description="Models kept loaded (LRU).")
    batching: bool = Field(True, description="Gather concurrent predictions into one pass.")
    max_batch_size: int = Field(1024, ge=1, le=1_000_000, description="Rows per forward pass.")
    max_queue_delay_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="Longest a batch waits for as many rows as the model's batcher held at once "
        "in the last second, and never longer than the model's last forward pass (so a lone "
        "client waits at most a pass, and only within a second of a crowd); 0: a batch is "
        "whatever queued while the previous pass ran.",
    )
    max_predict_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="Input rows per prediction request."
    )
    max_export_bytes: int = Field(
        512 * 2**20,
        ge=1,
        le=2**31 - 2**20,
        description="Largest model (its weights' bytes) `GET /v1/models/{name}/export` converts; "
        "a larger one is refused with 422. The export is built in memory, and an ONNX file "
        "without external data stops at 2 GiB.",
    )

    # Backend
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where the work runs: `local` (this machine's worker processes) or `ray` "
        "(a Ray cluster; needs the `ray` extra).",
    )
    ray_address: str = Field(
        "",
        description="Ray cluster to join: empty starts a local Ray instance, `auto` joins the "
        "one on this node, `ray://host:10001` a remote one.",
    )
    ray_num_cpus: int | None = Field(
        None, ge=1, le=4096, description="CPUs of a local Ray instance (default: CPU count)."
    )
    ray_object_store_bytes: int = Field(
        256 * 1024**2, ge=78 * 1024**2, description="Object store of a local Ray instance."
    )
    ray_image_cpus: float = Field(
        1.0,
        gt=0,
        le=64,
        description="CPUs per image worker: each node runs one per this many of its CPUs "
        "(actors), or each image task asks for this many (tasks).",
    )
    ray_image_placement: Literal["actors", "tasks"] = Field(
        "actors",
        description="Where image work runs on Ray: long-lived image worker actors pinned "
        "to the nodes (no per-request worker lease: lower latency), or one Ray task per "
        "request (Ray accounts for each one, so an autoscaler sees the demand).",
    )
    ray_training_cpus: float = Field(1.0, gt=0, le=256, description="CPUs per training task.")
    ray_training_gpus: float | None = Field(
        None,
        ge=0,
        le=64,
        description="GPUs per training task, fractions allowed; empty: 0.75 when the cluster "
        "has GPUs (one training per GPU, the cached models share the rest), else 0.",
    )
    ray_model_cpus: float = Field(
        0.01,
        ge=0,
        le=64,
        description="CPUs per model actor; above 0 keeps actors off nodes with no CPUs "
        "(the API node of `docker compose`).",
    )
    ray_model_gpus: float | None = Field(
        None,
        ge=0,
        le=64,
        description="GPUs per model actor, fractions allowed; empty: 0.25/model_cache_size "
        "when the cluster has GPUs (every cached model fits beside a training), else 0.",
    )

    _split_origins = field_validator("cors_allow_origins", mode="before")(_split_csv)
    _split_keys = field_validator("api_keys", mode="before")(_split_csv)

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, entries: list[str]) -> list[str]:
        from service.auth import parse_key_entry

        for entry in entries:
            parse_key_entry(entry)  # ValueError: pydantic reports the setting
        return entries


@lru_cache
def get_settings() -> Settings:
    return Settings()
