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


def test_the_document_reads_well_for_generators() -> None:
    document = json.loads(openapi_json())
    schemas = document["components"]["schemas"]
    for name in schemas:
        assert "__" not in name and not name.startswith("Body_"), name
    assert "HTTPValidationError" not in schemas
    assert {"ImageForm", "PipelineForm", "Rgb2grayStep", "FillHolesStep"} <= set(schemas)
    for tagged, tag in (
        ("SpiralConfig", "task"),
        ("RegressionConfig", "task"),
        ("SGDSpec", "name"),
    ):
        assert tag in schemas[tagged]["required"], tagged
    config = schemas["TrainingPublic"]["properties"]["config"]
    assert config["discriminator"]["propertyName"] == "task"


def test_every_response_declares_its_errors_and_headers() -> None:
    document = json.loads(openapi_json())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert {"422", "4XX"} & set(responses), (method, path)
            for status, response in responses.items():
                assert "X-Request-ID" in response["headers"], (method, path, status)
                if status == "429":
                    assert "Retry-After" in response["headers"], (method, path)
                if status[0] in "45" and path.startswith("/v1/"):
                    assert list(response["content"]) == ["application/problem+json"]
    created = document["paths"]["/v1/trainings"]["post"]
    assert "Location" in created["responses"]["202"]["headers"]
    examples = created["requestBody"]["content"]["application/json"]["examples"]
    assert {"spiral", "ensemble"} <= set(examples)
    pipeline = document["paths"]["/v1/images/pipeline"]["post"]["requestBody"]
    assert "two-step" in pipeline["content"]["multipart/form-data"]["examples"]
