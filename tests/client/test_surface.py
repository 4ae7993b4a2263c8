"""The client's shape: light to import, one typed method per route and per op."""

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.errors import STATUS_TABLE
from service.settings import Settings
from tensorlens import AsyncClient, Client, _unasync, errors
from tensorlens._core import KEEPALIVE_EXPIRY_S, BaseClient

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Parameters every image op method has beside the op's own.
IMAGE_PARAMS = {"self", "image", "sample", "include_image", "accept"}
#: Every operation of openapi.json and the client method that calls it; image ops
#: (`images-<op>`) are the method named after the op.
METHODS = {
    "health-live": "health",
    "health-ready": "readiness",
    "health-metrics": "metrics",
    "samples-list_sample_images": "list_samples",
    "samples-get_sample_image": "get_sample",
    "images-list_ops": "list_ops",
    "images-pipeline": "pipeline",
    "images-histogram_plot": "histogram_plot",
    "images-contrast_report": "contrast_report",
    "trainings-create_training": "create_training",
    "trainings-list_trainings": "list_trainings",
    "trainings-get_training": "get_training",
    "trainings-cancel_training": "cancel_training",
    "trainings-training_events": "training_events",
    "models-list_models": "list_models",
    "models-get_model": "get_model",
    "models-delete_model": "delete_model",
    "models-plot_model": "model_plot",
    "models-predict": "predict",
    "models-get_model_version": "get_model_version",
    "models-delete_model_version": "delete_model_version",
    "models-set_alias": "set_alias",
    "models-delete_alias": "delete_alias",
    "models-export_model": "export_model",
    "v2-server_live": "server_live",
    "v2-server_ready": "server_ready",
    "v2-model_metadata": "model_metadata",
    "v2-model_ready": "model_ready",
    "v2-model_infer": "infer",
    "v2-server_metadata": "server_metadata",
    "v2-model_version_metadata": "model_metadata",
    "v2-model_version_ready": "model_ready",
    "v2-model_version_infer": "infer",
    "v2-repository_index": "repository_index",
    "v2-repository_load": "load_model",
    "v2-repository_unload": "unload_model",
}
#: Routes outside the API a client calls (the page, the docs).
NOT_API = ("/docs", "/redoc", "/openapi.json", "/ui")


def test_importing_the_client_imports_no_server_side_library() -> None:
    heavy = ["fastapi", "starlette", "torch", "skimage", "numpy", "scipy", "service", "workers"]
    code = (
        "import sys, tensorlens\n"
        f"print([m for m in {heavy!r} if m in sys.modules or any("
        "k.startswith(m + '.') for k in sys.modules)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "[]"


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    assert _unasync.TARGET.read_text() == _unasync.generate(), (
        "tensorlens/_sync.py is out of date: run python -m tensorlens._unasync"
    )


def _operations() -> dict[str, str]:
    document = json.loads((REPO_ROOT / "openapi.json").read_text())
    return {
        operation["operationId"]: path
        for path, item in document["paths"].items()
        for operation in item.values()
        if not path.startswith(NOT_API)
    }


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_every_route_has_a_method(cls: type) -> None:
    ops = json.loads((REPO_ROOT / "openapi.json").read_text())["paths"]
    missing = []
    for operation_id, path in _operations().items():
        name = METHODS.get(operation_id)
        if name is None and path.startswith("/v1/images/"):
            name = path.removeprefix("/v1/images/")
        if name is None or not callable(getattr(cls, name, None)):
            missing.append(operation_id)
    assert not missing, f"routes without a client method: {missing}"
    assert ops  # the document was read


def _annotation(schema: dict[str, Any]) -> str:
    """The Python annotation a JSON schema reads as, spelled as the client spells it."""
    if "anyOf" in schema:
        return " | ".join(_annotation(member) for member in schema["anyOf"])
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    kind = schema.get("type")
    if kind == "array":
        return f"Sequence[{_annotation(schema['items'])}]"
    return {"integer": "int", "number": "float", "boolean": "bool", "null": "None"}[kind]


def _default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_op_methods_match_the_op_catalogue(client: Client, cls: type) -> None:
    """Fails when an op, or a parameter, its type or default, changes without the client."""
    ops = {op.name: op.params for op in client.list_ops()}
    takes_an_image = {
        name
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if {"image", "sample", "include_image"} <= set(inspect.signature(member).parameters)
    }
    assert takes_an_image == {*ops, "pipeline"}
    for name, schema in ops.items():
        signature = inspect.signature(getattr(cls, name))
        params = {k: p for k, p in signature.parameters.items() if k not in IMAGE_PARAMS}
        properties = schema.get("properties", {})
        assert list(params) == list(properties), name
        for param, prop in properties.items():
            parameter = params[param]
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (name, param)
            assert parameter.annotation == _annotation(prop), (name, param)
            if param in schema.get("required", []):
                assert parameter.default is inspect.Parameter.empty, (name, param)
            else:
                assert _default(parameter.default) == prop["default"], (name, param)


def test_every_problem_type_has_its_exception() -> None:
    for cls, (status, slug) in STATUS_TABLE.items():
        error = errors.error_for(
            httpx.Response(
                status,
                json={"type": f"/problems/{slug}", "title": "t", "status": status, "detail": "d"},
            )
        )
        assert type(error) is not errors.ApiError, f"{cls.__name__} ({slug}) has no class"
        assert isinstance(error, errors.TensorlensError) and error.type == f"/problems/{slug}"
        assert error.status == status


def test_a_body_that_is_no_problem_document_is_mapped_by_status() -> None:
    error = errors.error_for(httpx.Response(404, json={"error": "model x not found"}))
    assert isinstance(error, errors.NotFound) and error.detail == "model x not found"
    error = errors.error_for(httpx.Response(502, text="<html>bad gateway</html>"))
    assert type(error) is errors.ApiError and error.title == "Bad Gateway"


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "expected"),
    [
        (429, "2", 0, 2.0),
        (429, None, 0, 1.0),  # a 429 without Retry-After: a second
        (503, "1", 0, 1.0),
        (503, None, 0, None),  # a 503 that does not say when: not retried
        (500, "1", 0, None),
        (429, "2", 3, None),  # attempts are bounded
        (429, "120", 0, None),  # longer than max_retry_wait_s: given back
    ],
)
def test_retry_policy(
    status: int, retry_after: str | None, attempt: int, expected: float | None
) -> None:
    policy = BaseClient(retries=3, max_retry_wait_s=60, max_reconnects=5)
    headers = {"Retry-After": retry_after} if retry_after else {}
    assert policy._retry_delay(httpx.Response(status, headers=headers), attempt) == expected
    assert (
        BaseClient(retries=0, max_retry_wait_s=60, max_reconnects=5)._retry_delay(
            httpx.Response(429), 0
        )
        is None
    )


def test_retry_after_as_an_http_date() -> None:
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert errors.parse_retry_after("soon") is None


def test_idle_connections_are_let_go_before_the_server_closes_them() -> None:
    # A request sent on a connection the server is closing gets no answer at all (the
    # 1-hour soak saw 6 in 331,180 with httpx's default expiry, equal to the server's).
    assert Settings.model_fields["http_keep_alive_s"].default > KEEPALIVE_EXPIRY_S
    with Client("http://127.0.0.1:9") as client:
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY_S
