"""Child processes of the local backend, and the one way the parent talks to them.

A child is spawned with one end of a socket pair. Each message, either way, is a pickle
behind its length, and the large buffers it holds (``bytes``, ``bytearray``, NumPy
arrays) travel beside it, out of band, written from where they lie and read into buffers
the receiver then owns: a 2 MB result is never copied into or out of a pickle. The
parent's end is non-blocking and driven by the event loop, so a message costs no thread
hand-off and a large upload or result streams through without blocking the loop; the
child's end is an ordinary blocking socket. The image pool's workers
(:mod:`workers.pool`) and the training processes (:mod:`workers.local`) both talk this
way.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import pickle
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

import numpy as np

#: What precedes every message: the pickle's length and how many buffers follow it, then
#: each buffer's length.
_HEADER = struct.Struct("!QI")
_SIZE = struct.Struct("!Q")

#: Messages up to this size go out in one write, header and pickle joined.
_JOIN_BELOW_BYTES = 64 * 1024

#: A ``bytes``, ``bytearray`` or NumPy array this large or larger travels out of band.
_OUT_OF_BAND_BYTES = 64 * 1024

#: The socket buffers asked for each end (granted up to the kernel's limits).
_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024

_SPAWN = multiprocessing.get_context("spawn")


class Message(NamedTuple):
    """A pickled object: the pickle and the buffers it refers to out of band."""

    pickle: bytes | bytearray
    buffers: list[memoryview] | list[bytearray]

    @property
    def nbytes(self) -> int:
        return len(self.pickle) + sum(memoryview(b).nbytes for b in self.buffers)


class _Pickler(pickle.Pickler):
    """Leaves large buffers out of the pickle, as persistent ids naming them.

    Not pickle's own out-of-band buffers: ``bytes`` and ``bytearray`` never reach
    ``reducer_override``, while ``persistent_id`` sees every object first.
    """

    def __init__(self, file: io.BytesIO, buffers: list[memoryview]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.buffers = buffers

    def persistent_id(self, obj: Any) -> tuple[Any, ...] | None:
        kind = type(obj)
        if kind is bytes or kind is bytearray:
            if len(obj) < _OUT_OF_BAND_BYTES:
                return None
            self.buffers.append(memoryview(obj))
            return (kind.__name__, len(self.buffers) - 1)
        if kind is np.ndarray and obj.nbytes >= _OUT_OF_BAND_BYTES and not obj.dtype.hasobject:
            array = np.ascontiguousarray(obj)
            self.buffers.append(memoryview(array.reshape(-1).view(np.uint8)))
            return ("ndarray", len(self.buffers) - 1, array.dtype.str, array.shape)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, buffers: list[memoryview] | list[bytearray]) -> None:
        super().__init__(file)
        self.buffers = buffers

    def persistent_load(self, pid: tuple[Any, ...]) -> Any:
        kind, index, *layout = pid
        buffer = self.buffers[index]
        if kind == "bytes":
            return bytes(buffer)
        if kind == "bytearray":  # the received buffer itself, no copy
            return buffer if type(buffer) is bytearray else bytearray(buffer)
        dtype, shape = layout
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)


def dumps(obj: Any) -> Message:
    out = io.BytesIO()
    buffers: list[memoryview] = []
    _Pickler(out, buffers).dump(obj)
    return Message(out.getvalue(), buffers)


def loads(message: Message) -> Any:
    return _Unpickler(io.BytesIO(message.pickle), message.buffers).load()


def _frames(message: Message) -> list[bytes | memoryview]:
    """What goes on the wire, in order: small parts joined, large buffers as they lie."""
    header = _HEADER.pack(len(message.pickle), len(message.buffers)) + b"".join(
        _SIZE.pack(memoryview(b).nbytes) for b in message.buffers
    )
    if message.nbytes < _JOIN_BELOW_BYTES:
        return [b"".join([header, message.pickle, *message.buffers])]
    head = (
        [header, message.pickle]
        if len(message.pickle) >= _JOIN_BELOW_BYTES
        else [header + message.pickle]
    )
    return [*head, *(memoryview(b).cast("B") for b in message.buffers)]


# The child's side: blocking calls. ------------------------------------------------------


def send(sock: socket.socket, message: Message) -> None:
    for frame in _frames(message):
        sock.sendall(frame)


def receive(sock: socket.socket) -> Message:
    """The next message, not yet unpickled; EOFError once the parent is gone."""
    size, count = _HEADER.unpack(_receive_exactly(sock, _HEADER.size))
    sizes = struct.unpack(f"!{count}Q", _receive_exactly(sock, _SIZE.size * count))
    return Message(_receive_exactly(sock, size), [_receive_exactly(sock, n) for n in sizes])


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

    async def send(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        for frame in _frames(message):
            await loop.sock_sendall(self.sock, frame)

    def post(self, obj: Any) -> None:
        """Sends a small message without waiting; the child must read what it is sent, so
        the socket's buffer has room (an OSError when it has not, or the child is gone)."""
        (frame,) = _frames(dumps(obj))
        if self.sock.send(frame) != len(frame):
            raise BlockingIOError("the child's socket buffer is full")

    async def receive(self) -> Any:
        """The next message, unpickled; EOFError (or OSError) once the child is gone."""
        size, count = _HEADER.unpack(await self._receive_exactly(_HEADER.size))
        sizes = struct.unpack(f"!{count}Q", await self._receive_exactly(_SIZE.size * count))
        head = await self._receive_exactly(size)
        return loads(Message(head, [await self._receive_exactly(n) for n in sizes]))

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
        # Closes the process's sentinel pipe now, not whenever the object is collected.
        with contextlib.suppress(ValueError):  # still running: it was not killed in time
            self.process.close()


def spawn(target: Callable[..., None], *args: Any, name: str) -> Child:
    """Starts ``target(sock, *args)`` in a spawned process; ``sock`` is the child's end."""
    parent, child = socket.socketpair()
    for end in (parent, child):
        # Room for a whole result in flight: with the default (~200 kB) a 2 MB result
        # crosses in ten rounds of the writer blocking and the reader waking, each a pair
        # of context switches. The kernel caps this at net.core.[rw]mem_max.
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER_BYTES)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER_BYTES)
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
