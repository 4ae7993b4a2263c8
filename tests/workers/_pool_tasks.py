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
