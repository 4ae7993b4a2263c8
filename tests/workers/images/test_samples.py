import socket

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from skimage import data

from workers.errors import NotFound
from workers.images import SAMPLE_NAMES, list_samples, load_sample
from workers.images import samples as samples_module


def test_the_documented_samples_are_bundled():
    expected = {"camera", "chelsea", "coins", "astronaut", "coffee", "moon", "page", "horse"}
    assert expected <= set(SAMPLE_NAMES)
    assert len(set(SAMPLE_NAMES)) == len(SAMPLE_NAMES)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_load_sample_matches_skimage_data(name):
    expected = getattr(data, name)()
    loaded = load_sample(name)
    assert loaded.dtype == expected.dtype
    assert_array_equal(loaded, expected)


def test_list_samples_describes_each_sample():
    infos = list_samples()
    assert [info.name for info in infos] == list(SAMPLE_NAMES)
    for info in infos:
        image = getattr(data, info.name)()
        assert info.shape == image.shape
        assert info.dtype == str(image.dtype)
        doc_first_line = getattr(data, info.name).__doc__.strip().splitlines()[0]
        assert info.description == doc_first_line


def test_samples_cover_gray_color_rgba_bool_and_float():
    kinds = {
        (info.dtype, len(info.shape), info.shape[-1] if len(info.shape) == 3 else 1)
        for info in list_samples()
    }
    assert ("uint8", 2, 1) in kinds
    assert ("uint8", 3, 3) in kinds
    assert ("uint8", 3, 4) in kinds
    assert ("bool", 2, 1) in kinds
    assert ("float64", 2, 1) in kinds


def test_load_sample_returns_a_fresh_writeable_copy():
    first = load_sample("camera")
    assert first.flags.writeable
    first[:] = 0
    second = load_sample("camera")
    assert not np.shares_memory(first, second)
    assert_array_equal(second, data.camera())


def test_unknown_sample_is_not_found():
    with pytest.raises(NotFound) as caught:
        load_sample("lena")
    assert caught.value.context == {"kind": "sample", "name": "lena"}


def test_samples_load_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a sample tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    samples_module._cached.cache_clear()
    samples_module._info.cache_clear()
    try:
        for name in SAMPLE_NAMES:
            assert load_sample(name).size > 0
    finally:
        samples_module._cached.cache_clear()
        samples_module._info.cache_clear()
