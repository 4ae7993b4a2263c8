"""`openapi.json` at the root is generated from the app (`make openapi`) and kept in sync."""

import json
from pathlib import Path

from service.main import create_app
from service.openapi import openapi_json

ROOT = Path(__file__).resolve().parents[1]


def test_openapi_json_is_in_sync_with_the_app() -> None:
    committed = (ROOT / "openapi.json").read_text()
    assert committed == openapi_json(), "openapi.json is stale: run `make openapi`"


def test_every_operation_is_documented() -> None:
    document = json.loads(openapi_json())
    ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            ids.append(operation["operationId"])
            assert operation.get("summary") or operation.get("description"), (method, path)
            assert operation["tags"], (method, path)
            assert operation["responses"], (method, path)
            if path.startswith("/v1/") and method in ("post", "delete") and "predict" not in path:
                codes = set(operation["responses"])
                assert codes & {"404", "422", "409", "429"}, (method, path)
    assert len(ids) == len(set(ids))
    assert "Problem" in document["components"]["schemas"]


def test_operation_ids_are_stable() -> None:
    ids = {
        op["operationId"]
        for item in create_app().openapi()["paths"].values()
        for op in item.values()
    }
    for expected in (
        "images-canny",
        "images-pipeline",
        "images-contrast_report",
        "trainings-create_training",
        "models-predict",
        "v2-model_infer",
        "health-ready",
    ):
        assert expected in ids
