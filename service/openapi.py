"""The OpenAPI document: FastAPI's, finished so that generators (openapi-typescript,
schemathesis, client generators) can use it as it is.

:func:`install` makes ``app.openapi()`` (and so ``/openapi.json``, ``/docs``) return the
finished document; ``tensorlens openapi`` (``make openapi``) prints it, as does
``python -m service.openapi``. What :func:`finish` does, once for every route:

- every error status is a problem document (``application/problem+json``), 422
  included, where FastAPI would document its ``HTTPValidationError``; ``/v2`` keeps the
  Open Inference Protocol's own error body;
- the statuses any route can send are declared: 422 where it takes parameters or a body,
  413 where it takes a body, 400 where that body is multipart, 500 everywhere;
- ``X-Request-ID`` on every response, ``Retry-After`` on 429 and 503, ``Location`` on
  201 and on the training queue's 202;
- the API key: a ``bearer`` security scheme; the operations that need a key (when
  ``TENSORLENS_API_KEYS`` is set) declare it, the role they need (``x-required-role``)
  and 401, 403 (where the role is above ``infer``) and 429 (the rate limit);
- a union's discriminator (``task``, ``op``, ``name``) is required in each member, as
  the server requires it;
- component names read well: ``ImageForm`` and ``PipelineForm``, not
  ``Body_images-canny``; ``Rgb2grayStep``, not ``service__routes__images__NoStep__1``;
- named examples: the notes' spiral, the ensemble, a two-step pipeline, a sample name;
  the bundled sample names as an enum wherever a parameter names one.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from service.auth import Role, required_role
from service.errors import PROBLEM_MEDIA_TYPE, ErrorBody, error_body_for
from workers.images.samples import SAMPLE_NAMES

Document = dict[str, Any]

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id (the client's `X-Request-ID` when it sent a sane "
        "one, else a new one); the same id is in an error's problem body and the log line.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before sending the request again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {
        "description": "Where the created resource is.",
        "required": True,
        "schema": {"type": "string", "format": "uri-reference"},
    },
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `tensorlens hash-key`, sent as `Authorization: Bearer "
        "<key>`. Needed only when the server sets `TENSORLENS_API_KEYS`; the operation's "
        "`x-required-role` says which role (infer < train < admin) it needs.",
    }
}

#: Statuses that say "the work was queued or created somewhere": they carry ``Location``.
_LOCATION_STATUSES = {"201"}
_LOCATION_OPERATIONS = {"trainings-create_training"}

# Examples ------------------------------------------------------------------------------

NOTES_SPIRAL = {
    "task": "spiral",
    "data": {"points_per_class": 1000, "classes": 3, "noise": 0.2, "seed": 12345},
    "model": {"hidden": [100], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 1e-5},
    "epochs": 1000,
    "report_every": 10,
}
NOTES_LINEAR = {**NOTES_SPIRAL, "model": {"hidden": [100], "activation": "identity"}}
NOTES_ENSEMBLE = {
    "task": "regression",
    "data": {"n_points": 100, "x_min": -1.0, "x_max": 1.0, "noise": 0.3, "seed": 1},
    "model": {"hidden": [100], "activation": "relu", "ensemble_size": 5},
    "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 1e-5},
    "epochs": 1000,
    "report_every": 10,
}
TWO_STEP_PIPELINE = [{"op": "rgb2gray"}, {"op": "canny", "sigma": 2}]
#: Two points of the plane for a spiral model, as an Open Inference Protocol request.
INFER_TWO_POINTS = {
    "inputs": [
        {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [0.1, 0.2, -0.5, 0.3]}
    ]
}

#: operationId -> media type -> named examples of its request body.
BODY_EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "trainings-create_training": {
        "application/json": {
            "spiral": {
                "summary": "The notes' spiral, two-layer ReLU network",
                "value": NOTES_SPIRAL,
            },
            "linear": {"summary": "The notes' linear model on the spiral", "value": NOTES_LINEAR},
            "ensemble": {
                "summary": "The notes' cubic, fitted by an ensemble of five networks",
                "value": NOTES_ENSEMBLE,
            },
        }
    },
    "v2-model_infer": {
        "application/json": {"two-points": {"summary": "Two points", "value": INFER_TWO_POINTS}}
    },
    "v2-model_version_infer": {
        "application/json": {"two-points": {"summary": "Two points", "value": INFER_TWO_POINTS}}
    },
    "v2-repository_index": {
        "application/json": {"ready": {"summary": "Only loaded models", "value": {"ready": True}}}
    },
    "models-set_alias": {
        "application/json": {"version": {"summary": "Point at version 2", "value": {"version": 2}}}
    },
    "images-pipeline": {
        "multipart/form-data": {
            "two-step": {
                "summary": "Gray, then Canny edges (with `sample=astronaut` or an upload)",
                "value": {"steps": json.dumps(TWO_STEP_PIPELINE)},
            }
        }
    },
}

#: Query and path parameters' examples, by name, on every operation that has them.
PARAMETER_EXAMPLES: dict[str, Any] = {"sample": "camera"}
#: (operationId, parameter) -> example, where one op's parameter has a telling value.
OPERATION_PARAMETER_EXAMPLES: dict[tuple[str, str], Any] = {
    ("samples-get_sample_image", "name"): "camera",
    ("images-canny", "sigma"): 2,
    ("images-equalize_adapthist", "clip_limit"): 0.03,
    ("images-rescale_intensity", "low"): 2,
    ("images-rescale_intensity", "high"): 98,
}


# The document --------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the finished document (built once, then cached)."""

    def openapi() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = finish(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(document: Document) -> Document:
    """FastAPI's document, made complete and readable for generators (see the module)."""
    _rename_components(document)
    _require_discriminators(document)
    components = document.setdefault("components", {})
    components["headers"] = {**components.get("headers", {}), **HEADERS}
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    for path, method, operation in _operations(document):
        _declare_security(path, method, operation)
        _declare_errors(path, operation)
        _declare_headers(operation)
        _add_examples(operation)
        _name_samples(operation)
    _drop_unused_schemas(document)
    return document


def _operations(document: Document) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _declare_security(path: str, method: str, operation: dict[str, Any]) -> None:
    # The access rules match concrete paths: a template's `{name}` stands for any segment.
    concrete = re.sub(r"\{[^}/]+\}", "x", path)
    role = required_role(method.upper(), concrete, metrics_require_key=False)
    if role is None:
        return
    # Either alternative: a key, or none when the server has no keys set.
    operation["security"] = [{"apiKey": []}, {}]
    operation["x-required-role"] = role.name.lower()
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in ("401", "403", "429") if role > Role.INFER else ("401", "429"):
        responses.setdefault(status, None)


def _problem_response(status: str) -> dict[str, Any]:
    return {
        "description": HTTPStatus(int(status)).phrase,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM)}},
    }


def _declare_errors(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    speaks_problem = error_body_for(path) is ErrorBody.PROBLEM
    sends = {"500"}
    if operation.get("parameters") or operation.get("requestBody"):
        sends.add("422")
    body = operation.get("requestBody", {}).get("content", {})
    if body:
        sends.add("413")
    if "multipart/form-data" in body:
        sends.add("400")  # a multipart body the parser cannot read
    for status in sorted(sends):
        if status not in responses and not _covered_by_range(responses, status):
            responses[status] = _problem_response(status) if speaks_problem else None
    for status, response in list(responses.items()):
        if not _is_error(status):
            continue
        if speaks_problem:
            # FastAPI adds `application/json` (from `model=`) and its HTTPValidationError;
            # the service sends only problem documents.
            problem = _problem_response(status)
            description = (response or {}).get("description") or problem["description"]
            responses[status] = {**problem, "description": description}
        elif response is None or _documents_validation_error(response):
            responses[status] = _open_inference_error(status, responses)
    operation["responses"] = dict(sorted(responses.items(), key=lambda kv: _status_key(kv[0])))


def _is_error(status: str) -> bool:
    return status[:1] in "45"


def _covered_by_range(responses: dict[str, Any], status: str) -> bool:
    return f"{status[0]}XX" in responses


def _status_key(status: str) -> tuple[int, str]:
    return (int(status[0]) * 100 + (int(status[1:]) if status[1:].isdigit() else 99), status)


def _documents_validation_error(response: dict[str, Any]) -> bool:
    return "HTTPValidationError" in json.dumps(response.get("content", {}))


def _open_inference_error(status: str, responses: dict[str, Any]) -> dict[str, Any]:
    # The body the router speaks, as its other error responses declare it.
    for other_status, other in responses.items():
        if _is_error(other_status) and other and not _documents_validation_error(other):
            return {**copy.deepcopy(other), "description": HTTPStatus(int(status)).phrase}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    return {
        "description": HTTPStatus(int(status)).phrase,
        "content": {"application/json": {"schema": error}},
    }


def _declare_headers(operation: dict[str, Any]) -> None:
    for status, response in operation["responses"].items():
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = {"$ref": "#/components/headers/X-Request-ID"}
        if status in ("429", "503"):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if status in _LOCATION_STATUSES or (
            status == "202" and operation.get("operationId") in _LOCATION_OPERATIONS
        ):
            headers["Location"] = {"$ref": "#/components/headers/Location"}


def _add_examples(operation: dict[str, Any]) -> None:
    operation_id = operation.get("operationId", "")
    for media_type, examples in BODY_EXAMPLES.get(operation_id, {}).items():
        content = operation.get("requestBody", {}).get("content", {})
        if media_type in content:
            content[media_type].setdefault("examples", {}).update(copy.deepcopy(examples))
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        key = (operation_id, name)
        if key in OPERATION_PARAMETER_EXAMPLES:
            parameter["example"] = OPERATION_PARAMETER_EXAMPLES[key]
        elif name in PARAMETER_EXAMPLES and parameter.get("in") == "query":
            parameter["example"] = PARAMETER_EXAMPLES[name]


#: The parameters that name a bundled sample image: (operationId or None for any, name).
SAMPLE_PARAMETERS = {(None, "sample"), ("samples-get_sample_image", "name")}


def _name_samples(operation: dict[str, Any]) -> None:
    """The bundled samples as an enum, so generated clients (and fuzzers) know them."""
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if not {(None, name), (operation.get("operationId"), name)} & SAMPLE_PARAMETERS:
            continue
        schema = parameter["schema"]
        options = schema.get("anyOf", [schema])
        for option in options:
            if option.get("type") == "string":
                option["enum"] = list(SAMPLE_NAMES)


# Components ----------------------------------------------------------------------------


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", name))


def _without_title(schema: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in schema.items() if k != "title"}, sort_keys=True)


def _readable_names(schemas: dict[str, Any]) -> dict[str, str]:
    """Old component name -> new, for FastAPI's form bodies and pydantic's clashes."""
    renames: dict[str, str] = {}
    # Form bodies: one shared name for identical ones (the image upload of every op).
    bodies: dict[str, list[str]] = {}
    for name, schema in schemas.items():
        if name.startswith("Body_"):
            bodies.setdefault(_without_title(schema), []).append(name)
    for names in bodies.values():
        if len(names) > 1:
            fields = schemas[names[0]].get("properties", {})
            shared = "".join(_camel(field) for field in fields) + "Form"
            renames.update(dict.fromkeys(names, shared))
        else:
            route = names[0].removeprefix("Body_").partition("-")[2] or names[0]
            renames[names[0]] = f"{_camel(route)}Form"
    # Pydantic qualifies clashing model names with their module (`pkg__mod__Name__1`):
    # name each after the constant that tells it apart (a union member's tag).
    for name, schema in schemas.items():
        if "__" not in name:
            continue
        consts = [p["const"] for p in schema.get("properties", {}).values() if "const" in p]
        title = str(schema.get("title", name.split("__")[-2]))
        suffix = re.search(r"[A-Z][a-z0-9]*$", title)
        if len(consts) == 1 and isinstance(consts[0], str):
            renames[name] = _camel(consts[0]) + (suffix.group(0) if suffix else "")
        else:
            renames[name] = title + name.rsplit("__", 1)[-1]
    taken = set(schemas) - set(renames)
    return {old: new for old, new in renames.items() if new not in taken}


def _rename_components(document: Document) -> None:
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    renames = _readable_names(schemas)
    if not renames:
        return
    renamed: dict[str, Any] = {}
    for name, schema in schemas.items():
        new = renames.get(name, name)
        if new != name:
            schema["title"] = new
        renamed.setdefault(new, schema)
    document["components"]["schemas"] = dict(sorted(renamed.items()))
    prefix = "#/components/schemas/"
    for node in _walk(document):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix) :] in renames:
            node["$ref"] = prefix + renames[ref[len(prefix) :]]
        mapping = node.get("discriminator", {}).get("mapping") if "discriminator" in node else None
        if isinstance(mapping, dict):
            for tag, target in mapping.items():
                if target.startswith(prefix) and target[len(prefix) :] in renames:
                    mapping[tag] = prefix + renames[target[len(prefix) :]]


def _require_discriminators(document: Document) -> None:
    """The server rejects a union member without its tag: say so in each member."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    prefix = "#/components/schemas/"
    for node in _walk(document):
        discriminator = node.get("discriminator")
        if not isinstance(discriminator, dict):
            continue
        tag = discriminator["propertyName"]
        targets = [m.get("$ref", "") for m in node.get("oneOf", node.get("anyOf", []))]
        targets += list(discriminator.get("mapping", {}).values())
        for target in targets:
            member = schemas.get(target.removeprefix(prefix))
            if member is not None and tag in member.get("properties", {}):
                required = member.setdefault("required", [])
                if tag not in required:
                    required.insert(0, tag)


def _drop_unused_schemas(document: Document) -> None:
    """FastAPI's validation error models, once no response refers to them."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        others = {k: v for k, v in document.items() if k != "components"}
        others["schemas"] = {k: v for k, v in schemas.items() if k != name}
        if name in schemas and f'"#/components/schemas/{name}"' not in json.dumps(others):
            del schemas[name]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def openapi_json() -> str:
    """The document as committed in ``openapi.json``."""
    from service.main import create_app  # service.main installs this module's `finish`

    return json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(openapi_json(), end="")
