import hashlib
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import safetensors.torch
import torch

from workers.errors import Conflict, InvalidInput, InvalidParameter, ModelUnavailable, NotFound
from workers.training.checkpoints import ModelRef, ModelStore, validate_alias, validate_model_id

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


def entries(directory: Path) -> list[str]:
    """What a listing would trip over: everything but the writers' lock file."""
    return sorted(p.name for p in directory.iterdir() if p.name != ".lock")


def write_old_layout(root: Path, model_id: str, tensors=TENSORS, **metadata) -> None:
    """A model as the store wrote it before names and versions: ``<id>/`` at the root."""
    weights = safetensors.torch.save(tensors)
    directory = root / model_id
    directory.mkdir(parents=True)
    (directory / "weights.safetensors").write_bytes(weights)
    record = {
        **metadata,
        "id": model_id,
        "weights_file": "weights.safetensors",
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    (directory / "metadata.json").write_text(json.dumps(record))


def test_save_then_load_round_trips(store):
    info = store.save("m1", TENSORS, {"task": "spiral", "parameter_count": 9})
    assert info.valid and info.reason is None and info.ref == ModelRef("m1", 1)
    loaded = store.load_tensors("m1")
    assert loaded.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert torch.equal(loaded[name], tensor)
    metadata = store.get("m1").metadata
    assert metadata["task"] == "spiral" and metadata["parameter_count"] == 9
    assert metadata["name"] == "m1" and metadata["version"] == 1
    assert len(metadata["weights_sha256"]) == 64 and metadata["created_at"]
    on_disk = store.root / "m1" / "1" / "weights.safetensors"
    assert store.weights_bytes(ModelRef("m1", 1)) == on_disk.read_bytes()


def test_saves_of_one_name_are_its_next_versions(store):
    for seed in range(3):
        store.save("spiral", {"w": torch.full((2,), float(seed))}, {"seed": seed})
    assert [info.version for info in store.versions("spiral")] == [1, 2, 3]
    assert store.resolve("spiral") == ModelRef("spiral", 3)  # the latest by default
    assert store.get(ModelRef("spiral", 2)).metadata["seed"] == 1
    assert torch.equal(store.load_tensors(ModelRef("spiral", 1))["w"], torch.zeros(2))
    assert entries(store.root / "spiral") == ["1", "2", "3", "registry.json"]


def test_resolution_follows_version_alias_and_the_default_policy(store):
    for _ in range(3):
        store.save("m", TENSORS, {})
    assert store.set_alias("m", "production", 2) == ModelRef("m", 2)
    assert store.resolve("m", alias="production") == ModelRef("m", 2)
    assert store.resolve("m", version=1) == ModelRef("m", 1)
    assert store.resolve("m") == ModelRef("m", 3)
    store.set_alias("m", "default", 1)
    assert store.resolve("m") == ModelRef("m", 1)
    assert store.get("m").version == 1
    store.set_alias("m", "production", 3)  # a move
    assert store.aliases("m") == {"default": 1, "production": 3}
    store.delete_alias("m", "default")
    assert store.resolve("m") == ModelRef("m", 3)
    registered = store.model("m")
    assert registered.default.version == 3 and registered.aliases == {"production": 3}


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda s: s.resolve("nope"), "model"),
        (lambda s: s.resolve("m", version=9), "version"),
        (lambda s: s.resolve("m", alias="staging"), "alias"),
        (lambda s: s.get(ModelRef("m", 9)), "version"),
        (lambda s: s.load_tensors(ModelRef("m", 9)), "version"),
        (lambda s: s.set_alias("m", "staging", 9), "version"),
        (lambda s: s.set_alias("nope", "staging", 1), "model"),
        (lambda s: s.delete_alias("m", "staging"), "alias"),
        (lambda s: s.delete_version(ModelRef("m", 9)), "version"),
        (lambda s: s.delete("nope"), "model"),
    ],
)
def test_unknown_names_versions_and_aliases_say_which(store, call, kind):
    store.save("m", TENSORS, {})
    with pytest.raises(NotFound) as caught:
        call(store)
    assert caught.value.context["kind"] == kind


@pytest.mark.parametrize("alias", ["3", "v3", "007", "v10"])
def test_aliases_that_look_like_versions_are_refused(store, alias):
    store.save("m", TENSORS, {})
    for call in (
        lambda: validate_alias(alias),
        lambda: store.set_alias("m", alias, 1),
        lambda: store.resolve("m", alias=alias),
    ):
        with pytest.raises(InvalidParameter) as caught:
            call()
        assert caught.value.parameter == "alias"


def test_a_version_and_an_alias_together_are_refused(store):
    store.save("m", TENSORS, {})
    store.set_alias("m", "production", 1)
    with pytest.raises(InvalidParameter):
        store.resolve("m", version=1, alias="production")


def test_a_version_an_alias_points_at_cannot_be_deleted(store):
    store.save("m", TENSORS, {})
    store.save("m", TENSORS, {})
    store.set_alias("m", "production", 1)
    with pytest.raises(Conflict, match="production"):
        store.delete_version(ModelRef("m", 1))
    store.set_alias("m", "production", 2)
    store.delete_version(ModelRef("m", 1))
    assert [info.version for info in store.versions("m")] == [2]


def test_versions_are_never_reused(store):
    for _ in range(3):
        store.save("m", TENSORS, {})
    store.delete_version(ModelRef("m", 3))
    assert store.save("m", TENSORS, {}).version == 4
    assert [info.version for info in store.versions("m")] == [1, 2, 4]


def test_deleting_the_last_version_deletes_the_name(store):
    store.save("m", TENSORS, {})
    store.delete_version(ModelRef("m", 1))
    assert not store.exists("m") and store.list() == []
    with pytest.raises(NotFound):
        store.resolve("m")


def test_save_bytes_stores_what_a_remote_worker_serialised(store):
    store.save_bytes("remote", safetensors.torch.save(TENSORS), {"task": "regression"})
    assert torch.equal(store.load_tensors("remote")["0.bias"], TENSORS["0.bias"])
    with pytest.raises(InvalidInput):
        store.save_bytes("garbage", b"\x00" * 32, {})
    assert not (store.root / "garbage").exists()


def test_list_is_newest_first_and_ignores_what_is_not_a_model(store):
    for index, name in enumerate(["a", "b", "c"]):
        store.save(name, TENSORS, {"created_at": f"2024-01-0{index + 1}T00:00:00+00:00"})
    store.save("a", TENSORS, {"created_at": "2024-01-09T00:00:00+00:00"})
    (store.root / ".tmp-d-1234abcd").mkdir()
    (store.root / "Not-An-Id").mkdir()
    (store.root / "stray-file").write_text("x")
    (store.root / "empty").mkdir()  # a name whose first save has not finished
    listed = store.list()
    assert [m.name for m in listed] == ["a", "c", "b"]  # by the latest version
    assert [info.version for info in listed[0].versions] == [1, 2]


def test_an_interrupted_save_leaves_nothing_visible(store, monkeypatch):
    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.save("m1", TENSORS, {})
    monkeypatch.undo()
    assert entries(store.root) == []
    with pytest.raises(NotFound):
        store.get("m1")


def test_a_leftover_temp_dir_is_ignored_and_cleaned(store):
    # What a kill -9 between writing and renaming leaves behind.
    store.save("m1", TENSORS, {})
    leftover = store.root / "m1" / ".tmp-2-0badc0de"
    leftover.mkdir()
    (leftover / "weights.safetensors").write_bytes(b"half")
    (store.root / ".trash-m2-0badc0de").mkdir()
    assert [info.version for info in store.versions("m1")] == [1]
    assert store.cleanup(older_than_s=3600) == 0
    assert store.cleanup() == 2
    assert not leftover.exists() and store.get("m1").valid
    assert store.save("m1", TENSORS, {}).version == 2


def test_tampered_weights_are_reported_and_never_served(store):
    store.save("m1", TENSORS, {})
    path = store.root / "m1" / "1" / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    info = store.get("m1")
    assert not info.valid and "checksum" in info.reason
    assert not store.list()[0].versions[0].valid
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
    damage(store.root / "m1" / "1")
    info = store.get("m1")
    assert not info.valid and reason in info.reason
    with pytest.raises(ModelUnavailable):
        store.load_tensors("m1")


def test_a_damaged_registry_keeps_the_versions(store):
    store.save("m1", TENSORS, {})
    (store.root / "m1" / "registry.json").write_text("{not json")
    assert store.resolve("m1") == ModelRef("m1", 1) and store.aliases("m1") == {}


def test_tampered_metadata_checksum_is_caught(store):
    store.save("m1", TENSORS, {})
    meta = store.root / "m1" / "1" / "metadata.json"
    record = json.loads(meta.read_text())
    record["weights_sha256"] = "0" * 64
    meta.write_text(json.dumps(record))
    assert not store.get("m1").valid


@pytest.mark.parametrize("model_id", BAD_IDS)
def test_names_that_could_escape_the_store_are_rejected(store, tmp_path, model_id):
    for call in (
        lambda: store.get(model_id),
        lambda: store.get(ModelRef(model_id, 1)),
        lambda: store.load_tensors(model_id),
        lambda: store.weights_bytes(model_id),
        lambda: store.delete(model_id),
        lambda: store.delete_version(ModelRef(model_id, 1)),
        lambda: store.save(model_id, TENSORS, {}),
        lambda: store.resolve(model_id),
        lambda: store.set_alias(model_id, "production", 1),
    ):
        with pytest.raises(InvalidParameter) as caught:
            call()
        assert caught.value.parameter == "name"
    with pytest.raises(InvalidParameter) as caught:
        validate_model_id(model_id)
    assert caught.value.parameter == "model_id"
    with pytest.raises(InvalidParameter):
        store.set_alias("m", model_id, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    assert entries(store.root) == []


def test_missing_models_are_not_found(store):
    (store.root / "stray-file").write_text("x")
    calls = (store.get, store.load_tensors, store.weights_bytes, store.delete, store.model)
    for call in (*calls, store.resolve, store.versions, store.aliases):
        for name in ("nope", "stray-file"):
            with pytest.raises(NotFound):
                call(name)


def test_delete_removes_the_whole_name(store):
    store.save("m1", TENSORS, {})
    store.save("m1", TENSORS, {})
    store.set_alias("m1", "production", 1)
    store.delete("m1")
    assert entries(store.root) == []
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
    assert entries(store.root) == []


def test_a_second_store_on_the_same_root_sees_the_models_and_aliases(tmp_path):
    first = ModelStore(tmp_path)
    first.save("m1", TENSORS, {"k": "v"})
    second = ModelStore(Path(tmp_path))
    assert second.get("m1").metadata["k"] == "v"
    first.save("m1", TENSORS, {"k": "w"})
    first.set_alias("m1", "production", 2)
    assert second.resolve("m1", alias="production") == ModelRef("m1", 2)
    assert second.save("m1", TENSORS, {}).version == 3


def test_concurrent_saves_of_one_name_make_distinct_versions(store):
    with ThreadPoolExecutor(8) as pool:
        infos = list(pool.map(lambda i: store.save("m1", TENSORS, {"i": i}), range(16)))
    assert sorted(info.version for info in infos) == list(range(1, 17))
    assert [info.metadata["i"] for info in store.versions("m1")] == [
        info.metadata["i"] for info in sorted(infos, key=lambda info: info.version)
    ]
    assert all(info.valid for info in store.versions("m1"))


def test_concurrent_alias_moves_always_resolve(store):
    for _ in range(2):
        store.save("m", TENSORS, {})
    store.set_alias("m", "production", 1)

    def move(i: int) -> None:
        store.set_alias("m", "production", 1 + i % 2)

    def read(_: int) -> ModelRef:
        return store.resolve("m", alias="production")

    with ThreadPoolExecutor(8) as pool:
        moves = [pool.submit(move, i) for i in range(50)]
        reads = list(pool.map(read, range(500)))
        for future in moves:
            future.result()
    assert {ref.version for ref in reads} <= {1, 2}


def test_the_layout_before_names_migrates_to_version_1(tmp_path):
    root = tmp_path / "models"
    write_old_layout(root, "0123abcd", task="spiral", job_id="0123abcd")
    write_old_layout(root, "other", task="regression")
    store = ModelStore(root)
    assert sorted(store.migrate()) == ["0123abcd", "other"]
    assert store.migrate() == []  # once
    assert entries(root / "0123abcd") == ["1"]
    info = store.get("0123abcd")
    assert info.ref == ModelRef("0123abcd", 1) and info.valid and info.job_id == "0123abcd"
    assert info.metadata["task"] == "spiral"
    assert torch.equal(store.load_tensors("other")["0.bias"], TENSORS["0.bias"])
    assert store.save("other", TENSORS, {}).version == 2


def test_a_migration_cut_short_is_finished_by_the_next(tmp_path):
    root = tmp_path / "models"
    write_old_layout(root, "m1")
    # Killed between its two renames: the model is in the staging directory only.
    staging = root / ".migrating-m1"
    staging.mkdir()
    os.rename(root / "m1", staging / "1")
    store = ModelStore(root)
    assert store.cleanup() == 0  # not something to clean up
    assert store.migrate() == ["m1"]
    assert store.get("m1").valid and entries(root) == ["m1"]
