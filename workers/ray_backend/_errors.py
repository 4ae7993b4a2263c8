"""Ray's exceptions in this house's terms: the one place that reads ``ray.exceptions``.

The image pool, the training lanes and the model servers all call into Ray inside
:func:`map_ray_errors`, the way httpx wraps every call to httpcore in
``map_httpcore_exceptions()``: what comes out is a :mod:`workers.errors` class, so the
HTTP layer's one status table covers the Ray backend too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ray import exceptions as rex

from workers.errors import PoolUnavailable, TensorlensError, WorkCancelled, WorkerDied

#: Ray errors meaning the process (or node) running a task or actor call is gone.
WORKER_LOST = (
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.ObjectLostError,
    rex.OwnerDiedError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,  # Ray's memory monitor killed the worker
    rex.RayActorError,  # an actor died (Ray may restart it)
    rex.ActorUnschedulableError,  # ... and cannot come back: its node is gone
)


@contextmanager
def map_ray_errors(work: str, *, then: str = "") -> Iterator[None]:
    """Turns the Ray exceptions raised inside into :mod:`workers.errors` classes.

    ``work`` names what was running, for the messages (``"the request"``, ``"the job"``);
    ``then`` is added to them (``"; retry the request"``). A domain error raised by the
    remote code passes through as itself, and so does anything that is not Ray's.

    Raises
    ------
    WorkerDied
        The Ray worker, actor or node running the work is gone (:data:`WORKER_LOST`).
    WorkCancelled
        Ray cancelled the work (``ray.cancel``).
    PoolUnavailable
        Any other failure of Ray's own: the work itself was fine.
    """
    try:
        yield
    except TensorlensError:
        raise  # the remote code's own answer (a RayTaskError that is also one)
    except WORKER_LOST as exc:
        raise WorkerDied(
            f"the Ray worker running {work} died ({type(exc).__name__}){then}"
        ) from None
    except rex.TaskCancelledError:
        raise WorkCancelled(f"{work} was cancelled{then}") from None
    except rex.RayError as exc:
        raise PoolUnavailable(f"Ray failed {work} ({type(exc).__name__}){then}") from None
