import hashlib
import json
import os
import pickle
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
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


# --------------------------------------------------------------------------- details


@pytest.mark.parametrize("model_id", ["a", "0", "a-", "9-x", "a" * 64, "0123abcd"])
def test_names_of_letters_digits_and_dashes_up_to_64_are_accepted(store, model_id):
    assert validate_model_id(model_id) == model_id
    assert store.save(model_id, TENSORS, {}).ref == ModelRef(model_id, 1)
    assert store.exists(model_id)


def test_refused_names_and_aliases_say_why():
    with pytest.raises(InvalidParameter) as caught:
        validate_model_id(123)  # not even a string
    assert caught.value.detail == (
        "invalid `model_id`: must be 1-64 lower-case letters, digits or dashes,"
        " not starting with a dash"
    )
    with pytest.raises(InvalidParameter) as caught:
        validate_alias("v3")
    assert caught.value.detail == "invalid `alias`: 'v3' looks like a version number"
    assert validate_alias("v3-candidate") == "v3-candidate"
    with pytest.raises(InvalidParameter) as caught:
        validate_alias("Prod")
    assert caught.value.parameter == "alias"


@pytest.mark.parametrize("version", [0, -1, True, False, "1", 1.0, None])
def test_versions_are_integers_from_1(store, version):
    store.save("m", TENSORS, {})
    calls = [lambda: store.get(ModelRef("m", version))]
    if version is not None:  # resolve's version=None means "no version given"
        calls.append(lambda: store.resolve("m", version=version))
        calls.append(lambda: store.set_alias("m", "a", version))
        calls.append(lambda: store.delete_version(ModelRef("m", version)))
    for call in calls:
        with pytest.raises(InvalidParameter) as caught:
            call()
        assert caught.value.detail == "invalid `version`: must be an integer >= 1"
    assert store.resolve("m", version=1) == ModelRef("m", 1)


def test_a_version_and_an_alias_together_say_so(store):
    store.save("m", TENSORS, {})
    with pytest.raises(InvalidParameter) as caught:
        store.resolve("m", version=1, alias="production")
    assert caught.value.detail == "invalid `alias`: give a version or an alias, not both"


def test_not_found_names_what_is_missing(store):
    store.save("m", TENSORS, {})
    cases = [
        (lambda: store.resolve("nope"), "model nope not found", {"kind": "model", "name": "nope"}),
        (
            lambda: store.resolve("m", version=9),
            "model m has no version 9",
            {"kind": "version", "name": "m", "version": 9},
        ),
        (
            lambda: store.delete_alias("m", "staging"),
            "model m has no alias staging",
            {"kind": "alias", "name": "m", "alias": "staging"},
        ),
        (
            lambda: store.weights_bytes(ModelRef("m", 2)),
            "model m has no version 2",
            {"kind": "version", "name": "m", "version": 2},
        ),
        (
            lambda: store.get(ModelRef("m", 3)),
            "model m has no version 3",
            {"kind": "version", "name": "m", "version": 3},
        ),
        (
            lambda: store.delete_version(ModelRef("m", 4)),
            "model m has no version 4",
            {"kind": "version", "name": "m", "version": 4},
        ),
        (
            lambda: store.resolve("m", alias="canary"),
            "model m has no alias canary",
            {"kind": "alias", "name": "m", "alias": "canary"},
        ),
        (lambda: store.delete("gone"), "model gone not found", {"kind": "model", "name": "gone"}),
        (lambda: store.model("gone"), "model gone not found", {"kind": "model", "name": "gone"}),
    ]
    for call, detail, context in cases:
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.detail == detail
        assert caught.value.context == context


def test_model_refs_read_and_sort_by_name_then_version():
    assert str(ModelRef("spiral", 3)) == "spiral version 3"
    refs = [ModelRef("b", 1), ModelRef("a", 10), ModelRef("a", 2)]
    assert sorted(refs) == [ModelRef("a", 2), ModelRef("a", 10), ModelRef("b", 1)]


def test_deleting_an_aliased_version_names_every_alias_in_the_conflict(store):
    store.save("m", TENSORS, {})
    store.save("m", TENSORS, {})
    store.set_alias("m", "production", 1)
    store.set_alias("m", "canary", 1)
    store.set_alias("m", "staging", 2)
    with pytest.raises(Conflict) as caught:
        store.delete_version(ModelRef("m", 1))
    assert caught.value.detail == (
        "m version 1 is the target of alias canary, production; move or delete the alias first"
    )
    assert caught.value.context == {
        "kind": "version",
        "name": "m",
        "version": 1,
        "aliases": ["canary", "production"],
    }


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "weights.safetensors").write_bytes(b"x"), "weights fail their checksum"),
        (lambda d: (d / "weights.safetensors").unlink(), "weights are missing"),
        (lambda d: (d / "metadata.json").write_text("{not json"), "metadata is not valid JSON"),
        (lambda d: (d / "metadata.json").write_bytes(b"\xff\xfe"), "metadata is not valid JSON"),
        (lambda d: (d / "metadata.json").write_text("[1, 2]"), "metadata is not a JSON object"),
        (lambda d: (d / "metadata.json").unlink(), "metadata is missing"),
    ],
)
def test_damaged_versions_are_unavailable_with_the_reason(store, damage, reason):
    store.save("m1", TENSORS, {})
    damage(store.root / "m1" / "1")
    info = store.get("m1")
    assert info.reason == reason and not info.valid
    if reason.startswith("metadata") or reason == "weights are missing":
        assert info.weights_bytes is None  # nothing read to measure
    else:
        assert info.weights_bytes == 1
    with pytest.raises(ModelUnavailable) as caught:
        store.weights_bytes("m1")
    assert caught.value.detail == f"m1 version 1 is damaged: {reason}"
    assert caught.value.context == {"model_id": "m1"}


def test_refused_weights_and_metadata_say_why(store):
    with pytest.raises(InvalidInput) as caught:
        store.save_bytes("m1", b"\x00" * 32, {})
    assert caught.value.detail.startswith("weights are not a safetensors file: ")
    with pytest.raises(InvalidInput) as caught:
        store.save("m1", TENSORS, {"when": object()})
    assert caught.value.detail.startswith("model metadata is not JSON: ")
    assert entries(store.root) == []


def test_a_failed_save_of_a_known_name_keeps_the_name(store):
    store.save("m1", TENSORS, {})
    with pytest.raises(InvalidInput):
        store.save("m1", TENSORS, {"loss": float("inf")})
    assert [info.version for info in store.versions("m1")] == [1]
    assert entries(store.root / "m1") == ["1", "registry.json"]


def test_views_and_strided_tensors_are_saved_as_their_values(store):
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"t": base.T, "row": base[1], "grad": torch.ones(2, requires_grad=True) * 3}
    store.save("m1", tensors, {})
    loaded = store.load_tensors("m1")
    for key, tensor in tensors.items():
        assert torch.equal(loaded[key], tensor.detach())


def test_the_metadata_record_describes_the_weights_file(store):
    info = store.save("m1", TENSORS, {"task": "spiral", "created_at": "2024-05-06T07:08:09+00:00"})
    weights = (store.root / "m1" / "1" / "weights.safetensors").read_bytes()
    on_disk = json.loads((store.root / "m1" / "1" / "metadata.json").read_text())
    assert on_disk == {
        "task": "spiral",
        "created_at": "2024-05-06T07:08:09+00:00",
        "id": "m1",
        "name": "m1",
        "version": 1,
        "weights_file": "weights.safetensors",
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
    }
    assert info.metadata == on_disk and info.weights_bytes == len(weights)
    assert info.created_at.isoformat() == "2024-05-06T07:08:09+00:00"
    assert info.id == "m1" and info.path == store.root / "m1" / "1"


@pytest.mark.parametrize("created_at", [None, "yesterday", 17])
def test_without_a_readable_creation_time_the_directorys_is_used(store, created_at):
    store.save("m1", TENSORS, {})
    directory = store.root / "m1" / "1"
    record = json.loads((directory / "metadata.json").read_text())
    if created_at is None:
        del record["created_at"]
    else:
        record["created_at"] = created_at
    (directory / "metadata.json").write_text(json.dumps(record))
    os.utime(directory, (1_700_000_000, 1_700_000_000))
    assert store.get("m1").created_at == datetime.fromtimestamp(1_700_000_000, UTC)


def test_job_ids_are_strings_or_none(store):
    assert store.save("m", TENSORS, {"job_id": "abc"}).job_id == "abc"
    assert store.save("m", TENSORS, {"job_id": 5}).job_id is None
    assert store.save("m", TENSORS, {}).job_id is None


def test_find_job_finds_the_version_a_job_registered(store):
    store.save("m", TENSORS, {"job_id": "first"})
    store.save("m", TENSORS, {"job_id": "second"})
    store.save("m", TENSORS, {})
    assert store.find_job("m", "second") == ModelRef("m", 2)
    assert store.find_job("m", "first") == ModelRef("m", 1)
    assert store.find_job("m", "third") is None
    assert store.find_job("nope", "first") is None


def test_a_default_alias_at_a_missing_version_falls_back_to_the_latest(store):
    for _ in range(3):
        store.save("m", TENSORS, {})
    store.set_alias("m", "default", 2)
    assert store.model("m").default.version == 2
    registry = store.root / "m" / "registry.json"
    registry.write_text(json.dumps({"aliases": {"default": 7}, "last_version": 3}))
    registered = store.model("m")
    assert registered.latest.version == 3 and registered.default.version == 3


def test_a_registry_keeps_only_integer_aliases_and_version_counts(store):
    store.save("m", TENSORS, {})
    store.save("m", TENSORS, {})
    registry = store.root / "m" / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "aliases": {"ok": 1, "flag": True, "text": "2", "none": None, "float": 2.0},
                "last_version": 5,
            }
        )
    )
    assert store.aliases("m") == {"ok": 1}
    assert store.save("m", TENSORS, {}).version == 6  # after last_version, not after 2
    registry.write_text(json.dumps({"aliases": ["ok"], "last_version": "9"}))
    assert store.aliases("m") == {}
    assert store.save("m", TENSORS, {}).version == 7  # after the versions on disk
    registry.write_text(json.dumps([1, 2]))
    assert store.aliases("m") == {} and store.save("m", TENSORS, {}).version == 8


def test_only_plain_decimal_directories_are_versions(store):
    store.save("m", TENSORS, {})
    for name in ("01", "0", "2a", "\u0663", ".5"):
        (store.root / "m" / name).mkdir()
    (store.root / "m" / "7").write_text("a file, not a version")
    assert [info.version for info in store.versions("m")] == [1]
    assert store.save("m", TENSORS, {}).version == 2


def test_list_orders_ties_by_name_and_undated_models_by_their_directory(store):
    stamp = {"created_at": "2024-01-01T00:00:00+00:00"}
    for name in ("a", "c", "b"):
        store.save(name, TENSORS, stamp)
    store.save("undated", TENSORS, {})
    directory = store.root / "undated" / "1"
    record = json.loads((directory / "metadata.json").read_text())
    del record["created_at"]
    (directory / "metadata.json").write_text(json.dumps(record))
    os.utime(directory, (0, 0))  # the epoch: older than every dated model
    assert [m.name for m in store.list()] == ["c", "b", "a", "undated"]


def test_cleanup_removes_only_what_is_older_than_asked(store):
    store.save("m", TENSORS, {})
    (store.root / "stray-file").write_text("x")  # a name-like file is no directory to scan
    old = [store.root / ".trash-x-00000000", store.root / "m" / ".tmp-registry.json-00000000"]
    old[0].mkdir()
    old[1].write_text("{}")
    young = store.root / "m" / ".tmp-2-00000000"
    young.mkdir()
    keep = store.root / "m" / "tmp-not-ours"
    keep.mkdir()
    now = time.time()
    for path in old:
        os.utime(path, (now - 100, now - 100))
    os.utime(young, (now - 10, now - 10))
    assert store.cleanup(older_than_s=50) == 2
    assert not any(path.exists() for path in old) and young.exists() and keep.exists()
    assert store.cleanup(older_than_s=50) == 0
    assert store.cleanup() == 1 and not young.exists() and keep.exists()
    assert store.get("m").valid


def test_migration_leaves_alone_what_is_not_an_old_model(tmp_path):
    root = tmp_path / "models"
    store = ModelStore(root)
    store.save("current", TENSORS, {})  # the new layout: versions, no files at the top
    write_old_layout(root, "taken")
    (root / ".migrating-taken").mkdir()  # a migration killed before its first rename
    (root / ".migrating-Bad").mkdir()
    (root / "weights-only").mkdir()
    (root / "weights-only" / "weights.safetensors").write_bytes(safetensors.torch.save(TENSORS))
    (root / "empty").mkdir()
    assert sorted(store.migrate()) == ["taken", "weights-only"]
    assert entries(root) == [
        ".migrating-Bad",
        "current",
        "empty",
        "taken",
        "weights-only",
    ]
    assert entries(root / "weights-only") == entries(root / "taken") == ["1"]
    assert store.get("taken").valid and store.resolve("weights-only") == ModelRef("weights-only", 1)
    assert store.versions("current")[0].valid


def test_a_store_sees_its_own_changes_at_once(store):
    # Changes within one clock tick leave the directories' times alone; the cache must not.
    store.save("m", TENSORS, {})
    store.save("m", TENSORS, {})
    for _ in range(20):
        store.set_alias("m", "p", 1)
        assert store.resolve("m", alias="p") == ModelRef("m", 1)
        store.set_alias("m", "p", 2)
        assert store.resolve("m", alias="p") == ModelRef("m", 2)
        store.delete_alias("m", "p")
        with pytest.raises(NotFound):
            store.resolve("m", alias="p")
    store.delete_version(ModelRef("m", 2))
    assert store.resolve("m") == ModelRef("m", 1)
    store.delete("m")
    with pytest.raises(NotFound):
        store.resolve("m")


def test_a_save_without_a_creation_time_is_stamped_now_in_utc(store):
    before = datetime.now(UTC)
    info = store.save("m", TENSORS, {})
    assert info.created_at.tzinfo == UTC
    assert before <= info.created_at <= datetime.now(UTC)
    assert datetime.fromisoformat(info.metadata["created_at"]) == info.created_at


def test_the_store_makes_its_root_with_missing_parents(tmp_path):
    store = ModelStore(tmp_path / "a" / "b")
    assert store.root.is_dir()
    assert ModelStore(tmp_path / "a" / "b").save("m", TENSORS, {}).version == 1


def test_exists_refuses_a_malformed_name(store):
    with pytest.raises(InvalidParameter) as caught:
        store.exists("../m")
    assert caught.value.parameter == "name"
    assert not store.exists("m")


def keep_mtime(path: Path):
    """Put back `path`'s modification time: as if what follows happened in the same tick."""
    stat = path.stat()
    return lambda: os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_version_deleted_within_one_clock_tick_is_gone_at_once(store):
    # File times have a coarse clock (ext4's tick is milliseconds): the store must not rely
    # on the name's directory changing time to see its own deletion.
    store.save("m", TENSORS, {})
    store.save("m", TENSORS, {})
    assert store.resolve("m") == ModelRef("m", 2)
    restore = keep_mtime(store.root / "m")
    store.delete_version(ModelRef("m", 2))
    restore()
    assert store.resolve("m") == ModelRef("m", 1)
    assert [info.version for info in store.versions("m")] == [1]


def test_versions_another_process_deleted_meanwhile_are_skipped(store):
    for _ in range(2):
        store.save("m", TENSORS, {})
    assert store.resolve("m") == ModelRef("m", 2)  # this store's view: versions 1 and 2
    restore = keep_mtime(store.root / "m")
    shutil.rmtree(store.root / "m" / "2")  # as another process would, in the same tick
    restore()
    assert [info.version for info in store.versions("m")] == [1]
    restore = keep_mtime(store.root / "m")
    shutil.rmtree(store.root / "m" / "1")
    restore()
    with pytest.raises(NotFound) as caught:
        store.model("m")
    assert caught.value.detail == "model m not found"


def test_migration_leaves_temp_and_stray_entries_alone(tmp_path):
    root = tmp_path / "models"
    write_old_layout(root, "m1")
    os.rename(root / "m1", root / ".tmp-m1-0badc0de")  # an old-layout save cut short
    (root / ".migrating-file").write_text("not a directory")
    store = ModelStore(root)
    assert store.migrate() == []
    assert entries(root) == [".migrating-file", ".tmp-m1-0badc0de"]


def test_an_alias_cannot_point_at_a_version_deleted_since_it_was_resolved(store):
    for _ in range(2):
        store.save("m", TENSORS, {})
    assert store.resolve("m", version=2) == ModelRef("m", 2)  # cached: versions 1 and 2
    restore = keep_mtime(store.root / "m")
    shutil.rmtree(store.root / "m" / "2")  # another process, in the same tick
    restore()
    with pytest.raises(NotFound) as caught:
        store.set_alias("m", "production", 2)
    assert caught.value.detail == "model m has no version 2"
    assert caught.value.context == {"kind": "version", "name": "m", "version": 2}
    assert store.aliases("m") == {}


def test_a_failed_first_save_keeps_a_name_directory_that_holds_leftovers(store):
    # A first save killed before its rename left a temp directory in the name's directory.
    leftover = store.root / "m" / ".tmp-1-0badc0de"
    leftover.mkdir(parents=True)
    with pytest.raises(InvalidInput):
        store.save("m", TENSORS, {"loss": float("nan")})
    assert entries(store.root / "m") == [".tmp-1-0badc0de"]
    assert store.save("m", TENSORS, {}).version == 1
    assert store.cleanup() == 1


def test_cleanup_skips_what_vanishes_while_it_looks(store):
    # Dangling links stand in for a name and a leftover another process removed meanwhile.
    store.save("m", TENSORS, {})
    (store.root / "vanished").symlink_to(store.root / "nowhere")
    (store.root / ".tmp-vanished").symlink_to(store.root / "nowhere-either")
    old = store.root / "m" / ".trash-1-00000000"
    old.mkdir()
    assert store.cleanup() == 1
    assert not old.exists() and store.get("m").valid


def test_another_stores_deletion_of_a_version_is_seen(tmp_path):
    first, second = ModelStore(tmp_path), ModelStore(tmp_path)
    for _ in range(2):
        first.save("m", TENSORS, {})
    assert first.resolve("m") == ModelRef("m", 2)
    second.delete_version(ModelRef("m", 2))  # the name's directory changes, its registry not
    assert first.resolve("m") == ModelRef("m", 1)


def test_weights_are_hashed_again_only_after_they_change(store, monkeypatch):
    # Listing a store must not re-hash every model each time (the digest is kept per file).
    store.save("m", TENSORS, {})
    hashed: list[int] = []
    real_sha256 = hashlib.sha256

    def counting_sha256(data=b""):
        hashed.append(len(data))
        return real_sha256(data)

    monkeypatch.setattr(hashlib, "sha256", counting_sha256)
    for _ in range(3):
        assert store.get("m").valid and store.list()[0].latest.valid
    assert hashed == []
    path = store.root / "m" / "1" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    assert not store.get("m").valid and not store.get("m").valid
    assert hashed == [path.stat().st_size]


def test_a_known_name_resolves_without_listing_its_directory(store, monkeypatch):
    # Every prediction resolves its model: after the first, two stats and no disk read.
    store.save("m", TENSORS, {})
    store.set_alias("m", "production", 1)
    assert store.resolve("m") == ModelRef("m", 1)
    listed: list[object] = []
    real_scandir = os.scandir

    def counting_scandir(path):
        listed.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    for _ in range(3):
        assert store.resolve("m") == ModelRef("m", 1)
        assert store.resolve("m", alias="production") == ModelRef("m", 1)
    assert listed == []
    store.save("m", TENSORS, {})
    assert store.resolve("m") == ModelRef("m", 2) and len(listed) >= 1
