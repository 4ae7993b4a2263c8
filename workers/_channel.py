"""Child processes of the local backend, and the one way the parent talks to them.

A child is spawned with one end of a socket pair. Each message, either way, is a pickle
behind its length. The parent's end is non-blocking and driven by the event loop, so a
message costs no thread hand-off and a large upload or result streams through without
blocking the loop; the child's end is an ordinary blocking socket. The image pool's
workers (:mod:`workers.pool`) and the training processes (:mod:`workers.local`) both
talk this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

#: What precedes every message: the pickle's length.
_LENGTH = struct.Struct("!Q")

#: Messages up to this size go out in one write, header and pickle joined.
_JOIN_BELOW_BYTES = 64 * 1024

_SPAWN = multiprocessing.get_context("spawn")


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


# The child's side: blocking calls. ------------------------------------------------------


def send(sock: socket.socket, payload: bytes) -> None:
    header = _LENGTH.pack(len(payload))
    if len(payload) < _JOIN_BELOW_BYTES:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def receive(sock: socket.socket) -> bytearray:
    """The next message's pickle; EOFError once the parent is gone."""
    (size,) = _LENGTH.unpack(_receive_exactly(sock, _LENGTH.size))
    return _receive_exactly(sock, size)


def pending(sock: socket.socket) -> bool:
    """Whether a message (or the parent's end of the connection) is waiting to be read."""
    return bool(select.select([sock], [], [], 0)[0])


def _receive_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError("the other end closed the connection")
        received += count
    return buffer


# The parent's side: the event loop's. ---------------------------------------------------


@dataclass(eq=False)
class Child:
    """A spawned process and the parent's end of its socket pair."""

    process: BaseProcess
    sock: socket.socket

    async def send(self, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        header = _LENGTH.pack(len(payload))
        if len(payload) < _JOIN_BELOW_BYTES:
            await loop.sock_sendall(self.sock, header + payload)
        else:
            await loop.sock_sendall(self.sock, header)
            await loop.sock_sendall(self.sock, payload)

    def post(self, obj: Any) -> None:
        """Sends a small message without waiting; the child must read what it is sent, so
        the socket's buffer has room (an OSError when it has not, or the child is gone)."""
        payload = dumps(obj)
        message = _LENGTH.pack(len(payload)) + payload
        if self.sock.send(message) != len(message):
            raise BlockingIOError("the child's socket buffer is full")

    async def receive(self) -> Any:
        """The next message, unpickled; EOFError (or OSError) once the child is gone."""
        (size,) = _LENGTH.unpack(await self._receive_exactly(_LENGTH.size))
        return pickle.loads(await self._receive_exactly(size))

    async def _receive_exactly(self, size: int) -> bytearray:
        loop = asyncio.get_running_loop()
        buffer = bytearray(size)
        view = memoryview(buffer)
        received = 0
        while received < size:
            count = await loop.sock_recv_into(self.sock, view[received:])
            if count == 0:
                raise EOFError("the child closed the connection")
            received += count
        return buffer

    async def exit_code(self, wait_s: float) -> int | None:
        """The process's exit code, waiting up to ``wait_s`` for it to end (None: it runs on)."""
        await asyncio.to_thread(self.process.join, wait_s)
        return self.process.exitcode

    def kill(self) -> None:
        """Kills the process and closes the connection; blocks until the process is gone."""
        with contextlib.suppress(Exception):
            self.process.kill()
        self.process.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sock.close()


def spawn(target: Callable[..., None], *args: Any, name: str) -> Child:
    """Starts ``target(sock, *args)`` in a spawned process; ``sock`` is the child's end."""
    parent, child = socket.socketpair()
    process = _SPAWN.Process(target=target, args=(child, *args), daemon=True, name=name)
    try:
        process.start()
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    parent.setblocking(False)
    return Child(process, parent)
