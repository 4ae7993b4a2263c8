"""The process channel: what crosses it arrives equal, large buffers travel out of band
and arrive in buffers the receiver owns, in a real spawned process over a socket pair."""

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import numpy as np
import pytest

from workers import _channel

pytestmark = pytest.mark.anyio

MB = 1024 * 1024


def _echo_main(sock: socket.socket) -> None:
    """Sends back every message as it was received (re-pickled after loading)."""
    while True:
        try:
            message = _channel.receive(sock)
        except EOFError:
            return
        _channel.send(sock, _channel.dumps(_channel.loads(message)))


@pytest.fixture(scope="module")
async def echo() -> AsyncIterator[_channel.Child]:
    child = _channel.spawn(_echo_main, name="tensorlens-test-echo")
    yield child
    await asyncio.to_thread(child.kill)


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    image = rng.random((512, 512))
    return [
        image,  # float64, 2 MB
        image > 0.5,  # bool
        (image * 65535).astype(np.uint16),
        np.asfortranarray(image),  # arrives C-ordered, equal
        image[::2, ::3],  # not contiguous
        image.astype(">f4"),  # big-endian
        rng.random((100, 100, 3)).astype(np.float32),
        np.zeros((0, 5)),  # empty
        image[:3, :3],  # small: inside the pickle
    ]


@pytest.mark.parametrize("index", range(len(_arrays())))
async def test_arrays_arrive_equal_writeable_and_with_their_dtype(
    echo: _channel.Child, index: int
) -> None:
    array = _arrays()[index]
    await echo.send(_channel.dumps({"result": array, "ms": 1.5}))
    back = await echo.receive()
    assert back["ms"] == 1.5
    got = back["result"]
    assert type(got) is np.ndarray
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable
    got[...] = 0  # owned by the receiver: writing changes nothing that was sent
    assert array.size == 0 or np.any(array != 0)


async def test_bytes_and_bytearrays_keep_their_type(echo: _channel.Child) -> None:
    payload = {
        "upload": bytes(range(256)) * (3 * MB // 256),
        "encoded": bytearray(b"\x93NUMPY") + bytearray(2 * MB),
        "small": b"png",
        "small_array": bytearray(b"abc"),
    }
    await echo.send(_channel.dumps(payload))
    back = await echo.receive()
    assert back == payload
    assert {key: type(value) for key, value in back.items()} == {
        key: type(value) for key, value in payload.items()
    }


async def test_object_arrays_and_other_objects_still_cross(echo: _channel.Child) -> None:
    objects = np.array([None, "a", 1] * 30_000, dtype=object)  # pickled, not a buffer
    await echo.send(_channel.dumps(("ok", objects, {"nested": [1, 2.5, "x"]})))
    tag, back, nested = await echo.receive()
    assert tag == "ok" and nested == {"nested": [1, 2.5, "x"]}
    assert back.dtype == object and list(back) == list(objects)


def test_large_buffers_stay_out_of_the_pickle() -> None:
    encoded = bytearray(2 * MB)
    array = np.ones((512, 512))
    message = _channel.dumps(("ok", {"encoded": encoded, "array": array, "png": b"x" * 10}))
    assert len(message.pickle) < 1024
    assert [memoryview(b).nbytes for b in message.buffers] == [2 * MB, array.nbytes]
    # Written from where they lie: the sender's memory, not a copy.
    assert message.buffers[0].obj is encoded
    small = _channel.dumps(("ok", b"x" * 1000, np.ones(10)))
    assert small.buffers == []


def test_a_received_bytearray_is_the_receivers_buffer_not_a_copy() -> None:
    sent = _channel.dumps(bytearray(b"y" * (1 * MB)))
    received = _channel.Message(bytes(sent.pickle), [bytearray(b) for b in sent.buffers])
    assert _channel.loads(received) is received.buffers[0]


async def test_small_messages_are_one_frame_and_post_sends_them(echo: _channel.Child) -> None:
    (frame,) = _channel._frames(_channel.dumps(("cancel", 1)))
    assert len(frame) < 100
    echo.post(("cancel", 1))
    assert await echo.receive() == ("cancel", 1)
    # A large message goes in several writes, its buffers as they are.
    frames = _channel._frames(_channel.dumps(bytearray(MB)))
    assert len(frames) == 2 and memoryview(frames[-1]).nbytes == MB


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds through /proc")
def test_a_killed_child_leaves_no_descriptor_open() -> None:
    before = _open_fds()
    for _ in range(3):
        child = _channel.spawn(_echo_main, name="tensorlens-test-echo")
        assert _open_fds() > before  # its socket and its sentinel pipe
        child.kill()
    # The socket and the sentinel pipe are closed at once, not when collected.
    assert _open_fds() == before
