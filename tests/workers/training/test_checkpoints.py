import json
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from workers.errors import Conflict, InvalidInput, InvalidParameter, ModelUnavailable, NotFound
from workers.training.checkpoints import ModelStore, validate_model_id

TENSORS = {"0.weight": torch.arange(6.0).reshape(3, 2), "0.bias": torch.tensor([1.0, -1.0, 0.5])}
BAD_IDS = [
    "",
    "..",
    "../escape",
    "a/b",
    "a\\b",
    ".tmp-x",
    "-a",
    "A",
    "a.b",
    "a" * 65,
    "a\x00",
    "/abs",
]


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


def test_save_then_load_round_trips(store):
    info = store.save("m1", TENSORS, {"task": "spiral", "parameter_count": 9})
    assert info.valid and info.reason is None and info.id == "m1"
    loaded = store.load_tensors("m1")
    assert loaded.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert torch.equal(loaded[name], tensor)
    metadata = store.get("m1").metadata
    assert metadata["task"] == "spiral" and metadata["parameter_count"] == 9
    assert len(metadata["weights_sha256"]) == 64 and metadata["created_at"]
    assert store.weights_bytes("m1") == (store.root / "m1" / "weights.safetensors").read_bytes()


def test_save_bytes_stores_what_a_remote_worker_serialised(store):
    store.save_bytes("remote", safetensors.torch.save(TENSORS), {"task": "regression"})
    assert torch.equal(store.load_tensors("remote")["0.bias"], TENSORS["0.bias"])
    with pytest.raises(InvalidInput):
        store.save_bytes("garbage", b"\x00" * 32, {})
    assert not (store.root / "garbage").exists()


def test_list_is_newest_first_and_ignores_what_is_not_a_model(store):
    for index, model_id in enumerate(["a", "b", "c"]):
        store.save(model_id, TENSORS, {"created_at": f"2024-01-0{index + 1}T00:00:00+00:00"})
    (store.root / ".tmp-d-1234abcd").mkdir()
    (store.root / "Not-An-Id").mkdir()
    (store.root / "stray-file").write_text("x")
    assert [info.id for info in store.list()] == ["c", "b", "a"]


def test_an_interrupted_save_leaves_nothing_visible(store, monkeypatch):
    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.save("m1", TENSORS, {})
    monkeypatch.undo()
    assert list(store.root.iterdir()) == []
    with pytest.raises(NotFound):
        store.get("m1")


def test_a_leftover_temp_dir_is_ignored_and_cleaned(store):
    # What a kill -9 between writing and renaming leaves behind.
    leftover = store.root / ".tmp-m1-0badc0de"
    leftover.mkdir()
    (leftover / "weights.safetensors").write_bytes(b"half")
    assert store.list() == []
    with pytest.raises(NotFound):
        store.get("m1")
    store.save("m1", TENSORS, {})
    assert [info.id for info in store.list()] == ["m1"]
    assert store.cleanup(older_than_s=3600) == 0
    assert store.cleanup() == 1
    assert not leftover.exists() and store.get("m1").valid


def test_saving_an_existing_id_conflicts(store):
    store.save("m1", TENSORS, {"version": 1})
    with pytest.raises(Conflict):
        store.save("m1", TENSORS, {"version": 2})
    assert store.get("m1").metadata["version"] == 1
    assert [entry.name for entry in store.root.iterdir()] == ["m1"]


def test_tampered_weights_are_reported_and_never_served(store):
    store.save("m1", TENSORS, {})
    path = store.root / "m1" / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    info = store.get("m1")
    assert not info.valid and "checksum" in info.reason
    assert not store.list()[0].valid
    with pytest.raises(ModelUnavailable, match="checksum"):
        store.load_tensors("m1")
    with pytest.raises(ModelUnavailable):
        store.weights_bytes("m1")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "metadata.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "metadata.json").unlink(), "metadata is missing"),
        (lambda d: (d / "weights.safetensors").unlink(), "weights are missing"),
    ],
)
def test_damaged_files_are_reported(store, damage, reason):
    store.save("m1", TENSORS, {})
    damage(store.root / "m1")
    info = store.get("m1")
    assert not info.valid and reason in info.reason
    with pytest.raises(ModelUnavailable):
        store.load_tensors("m1")


def test_tampered_metadata_checksum_is_caught(store):
    store.save("m1", TENSORS, {})
    meta = store.root / "m1" / "metadata.json"
    record = json.loads(meta.read_text())
    record["weights_sha256"] = "0" * 64
    meta.write_text(json.dumps(record))
    assert not store.get("m1").valid


@pytest.mark.parametrize("model_id", BAD_IDS)
def test_ids_that_could_escape_the_store_are_rejected(store, tmp_path, model_id):
    for call in (
        lambda: store.get(model_id),
        lambda: store.load_tensors(model_id),
        lambda: store.weights_bytes(model_id),
        lambda: store.delete(model_id),
        lambda: store.save(model_id, TENSORS, {}),
        lambda: validate_model_id(model_id),
    ):
        with pytest.raises(InvalidParameter) as caught:
            call()
        assert caught.value.parameter == "model_id"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    assert list(store.root.iterdir()) == []


def test_missing_models_are_not_found(store):
    for call in (store.get, store.load_tensors, store.weights_bytes, store.delete):
        with pytest.raises(NotFound):
            call("nope")


def test_delete_removes_the_whole_model(store):
    store.save("m1", TENSORS, {})
    store.delete("m1")
    assert list(store.root.iterdir()) == []
    with pytest.raises(NotFound):
        store.get("m1")


def test_loading_never_unpickles(store, monkeypatch):
    store.save("m1", TENSORS, {})

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert torch.equal(store.load_tensors("m1")["0.weight"], TENSORS["0.weight"])


def test_metadata_that_is_not_json_is_refused(store):
    with pytest.raises(InvalidInput):
        store.save("m1", TENSORS, {"loss": float("nan")})
    assert list(store.root.iterdir()) == []


def test_a_second_store_on_the_same_root_sees_the_models(tmp_path):
    ModelStore(tmp_path).save("m1", TENSORS, {"k": "v"})
    assert ModelStore(Path(tmp_path)).get("m1").metadata["k"] == "v"


def test_concurrent_saves_of_one_id_leave_exactly_one_model(store):
    from concurrent.futures import ThreadPoolExecutor

    def save(version):
        try:
            store.save("m1", TENSORS, {"version": version})
            return "saved"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(save, range(16)))
    assert outcomes.count("saved") == 1 and outcomes.count("conflict") == 15
    assert [entry.name for entry in store.root.iterdir()] == ["m1"]
    assert store.get("m1").valid
