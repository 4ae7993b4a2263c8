"""Top-level functions the pool tests send to worker processes (they must be importable)."""

import os
import time
from pathlib import Path

from workers.errors import InvalidParameter


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def sleep_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def touch(path: str) -> None:
    Path(path).touch()


def crash() -> None:
    os._exit(3)


def raise_domain_error() -> None:
    raise InvalidParameter("sigma", "must be positive")


def out_of_memory() -> None:
    raise MemoryError


def raise_bug() -> None:
    raise ZeroDivisionError("division by zero")


def unpicklable_result() -> object:
    return lambda: None


def page_faults_of_big_temporaries(rounds: int) -> int:
    """Minor page faults of ``rounds`` times three 16 MiB temporaries, as an op makes them.

    16 MiB: more than the free chunks a process's heap may hold by chance (a large module
    compiled at import leaves some), which would serve smaller arrays without a fault
    whatever the allocator's settings; within the 32 MiB glibc serves from its heap.
    """
    import resource

    import numpy as np

    def work() -> None:
        a = np.ones(2 << 20)
        b = a * 2
        c = a + b
        del a, b, c

    work()  # the first round may grow the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        work()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
