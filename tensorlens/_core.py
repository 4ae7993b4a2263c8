"""The request-building core the sync and async clients share.

Each route is a function here that returns a :class:`Call`: what to send and how to
read the answer. The clients only send calls (with the retry policy of
:class:`BaseClient`) and hand back what the call's ``parse`` makes of the response,
the way httpx's ``BaseClient`` holds what its two clients have in common.
"""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent
from pydantic import BaseModel

from tensorlens.errors import error_for, parse_retry_after
from tensorlens.types import (
    Alias,
    Health,
    ImageResult,
    InferRequest,
    InferResponse,
    JobStatus,
    Model,
    ModelMetadata,
    ModelReady,
    ModelsPage,
    ModelVersion,
    OpInfo,
    Prediction,
    Progress,
    Readiness,
    RepositoryModel,
    SampleInfo,
    ServerLive,
    ServerMetadata,
    ServerReady,
    Training,
    TrainingConfig,
    TrainingsPage,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: How an image route answers: its JSON summary (:class:`ImageResult`), or the image
#: alone as PNG, as NumPy's .npy (the exact array: ``numpy.load(io.BytesIO(answer))``)
#: or as TIFF (float samples kept).
Accept = Literal["json", "png", "npy", "tiff"]
#: An image to upload: its bytes, a path to it, or a binary file open for reading.
ImageInput = bytes | str | os.PathLike[str] | IO[bytes] | None
PlotKind = Literal["dataset", "decision-boundary", "curves", "fit"]
#: ``onnx``: the model file; ``triton``: a zip of a Triton model repository.
ExportFormat = Literal["onnx", "triton"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Image work may wait in the server's queue up to its request timeout (30 s by default).
DEFAULT_TIMEOUT_S = 60.0
#: Seconds an idle connection is kept for reuse: under the server's keep-alive
#: (`TENSORLENS_HTTP_KEEP_ALIVE_S`, 5 by default), so the client lets a connection go
#: before the server may close it; a request sent just as the server closes its end gets
#: no answer at all (httpx's default, 5 s, is the server's and loses that race).
KEEPALIVE_EXPIRY_S = 2.0
PNG = "image/png"
_ACCEPT = {"json": "application/json", "png": PNG, "npy": "application/x-npy", "tiff": "image/tiff"}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to the API and how to read its answer."""

    method: str
    url: str
    parse: Callable[[httpx.Response], T]
    params: Sequence[tuple[str, str | int | float | bool]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    #: Statuses whose body is a result rather than an error.
    ok: frozenset[int] = frozenset({200})


class BaseClient:
    """What the two clients share: settings, building requests, retries, reading answers."""

    def __init__(self, *, retries: int, max_retry_wait_s: float, max_reconnects: int) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.max_retry_wait_s = max_retry_wait_s
        self.max_reconnects = max_reconnects

    @staticmethod
    def _build(http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        return http.build_request(
            call.method,
            call.url,
            params=list(call.params) or None,
            headers=dict(call.headers),
            json=call.json,
            data=call.data,
            files=call.files,
        )

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again, or None to give the answer back.

        Only a 429, or a 503 that says when to come back, is retried (the server never
        started that work), at most ``retries`` times and only when ``Retry-After``
        asks for no more than ``max_retry_wait_s``.
        """
        if attempt >= self.retries:
            return None
        after = parse_retry_after(response.headers.get("retry-after"))
        if response.status_code == 429:
            delay = 1.0 if after is None else after
        elif response.status_code == 503 and after is not None:
            delay = after
        else:
            return None
        return delay if delay <= self.max_retry_wait_s else None

    @staticmethod
    def _outcome(call: Call[T], response: httpx.Response) -> T:
        if response.status_code in call.ok:
            return call.parse(response)
        raise error_for(response)


# Reading answers ---------------------------------------------------------------


def with_api_key(headers: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    """``headers`` plus the API key as a Bearer token, when there is one."""
    auth = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    return {**(headers or {}), **auth}


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate_json(response.content)


def _models(cls: type[M]) -> Callable[[httpx.Response], list[M]]:
    return lambda response: [cls.model_validate(item) for item in response.json()]


def _content(response: httpx.Response) -> bytes:
    return response.content


def _text(response: httpx.Response) -> str:
    return response.text


def _nothing(response: httpx.Response) -> None:
    return None


def _path(template: str, *parts: str) -> str:
    return template.format(*(quote(part, safe="") for part in parts))


def _query(values: Mapping[str, Any]) -> list[tuple[str, str | int | float | bool]]:
    """Query parameters: None left out (the server's default), a sequence repeated."""
    query: list[tuple[str, str | int | float | bool]] = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, Sequence) and not isinstance(value, str):
            query += [(name, item) for item in value]
        else:
            query.append((name, value))
    return query


# Health ----------------------------------------------------------------------


def health() -> Call[Health]:
    return Call("GET", "/healthz", _model(Health))


def readiness() -> Call[Readiness]:
    return Call("GET", "/readyz", _model(Readiness))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", _text)


# Samples and images ------------------------------------------------------------


def list_samples() -> Call[list[SampleInfo]]:
    return Call("GET", "/v1/samples", _models(SampleInfo))


def sample_png(name: str) -> Call[bytes]:
    return Call("GET", _path("/v1/samples/{}", name), _content, headers={"Accept": PNG})


def list_ops() -> Call[list[OpInfo]]:
    return Call("GET", "/v1/images/ops", _models(OpInfo))


def upload(image: ImageInput) -> tuple[str, bytes, str] | None:
    """The multipart ``image`` field for bytes, a path or a binary file."""
    if image is None:
        return None
    if isinstance(image, bytes | bytearray | memoryview):
        return ("image", bytes(image), "application/octet-stream")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return (path.name, path.read_bytes(), _media_type(path.name))
    data = image.read()
    if not isinstance(data, bytes):
        raise TypeError("open the image file in binary mode ('rb')")
    name = os.path.basename(str(getattr(image, "name", "image")))
    return (name, data, _media_type(name))


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _image_call(
    url: str,
    image: ImageInput,
    sample: str | None,
    params: Mapping[str, Any],
    accept: Accept,
    parse: Callable[[httpx.Response], T],
    data: Mapping[str, str] | None = None,
) -> Call[T]:
    field = upload(image)
    return Call(
        "POST",
        url,
        parse,
        params=_query({"sample": sample, **params}),
        headers={"Accept": _ACCEPT[accept]},
        data=data,
        files={"image": field} if field else None,
    )


def _image_answer(accept: Accept) -> Callable[[httpx.Response], ImageResult | bytes]:
    return _model(ImageResult) if accept == "json" else _content


def image_op(
    op: str,
    image: ImageInput,
    sample: str | None,
    params: Mapping[str, Any],
    accept: Accept,
    include_image: bool,
) -> Call[ImageResult | bytes]:
    query = {**params, "include_image": None if include_image else False}
    url = _path("/v1/images/{}", op)
    return _image_call(url, image, sample, query, accept, _image_answer(accept))


def pipeline(
    steps: Iterable[Mapping[str, Any]],
    image: ImageInput,
    sample: str | None,
    accept: Accept,
    include_image: bool,
) -> Call[ImageResult | bytes]:
    query = {"include_image": None if include_image else False}
    form = {"steps": json.dumps([dict(step) for step in steps])}
    parse = _image_answer(accept)
    return _image_call("/v1/images/pipeline", image, sample, query, accept, parse, data=form)


def histogram_plot(image: ImageInput, sample: str | None, bins: int) -> Call[bytes]:
    params = {"bins": bins}
    return _image_call("/v1/images/histogram-plot", image, sample, params, "png", _content)


def contrast_report(
    image: ImageInput, sample: str | None, low: float, high: float, clip_limit: float, bins: int
) -> Call[bytes]:
    params = {"low": low, "high": high, "clip_limit": clip_limit, "bins": bins}
    return _image_call("/v1/images/contrast-report", image, sample, params, "png", _content)


# Trainings -------------------------------------------------------------------


def config_body(config: TrainingConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json", exclude_none=True)
    return dict(config)


def create_training(
    config: TrainingConfig | Mapping[str, Any], idempotency_key: str | None = None
) -> Call[Training]:
    # 200: a submission repeated with its key, answered with the job it made.
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    return Call(
        "POST",
        "/v1/trainings",
        _model(Training),
        json=config_body(config),
        headers=headers,
        ok=frozenset({200, 202}),
    )


def list_trainings(limit: int, offset: int, status: JobStatus | None) -> Call[TrainingsPage]:
    params = _query({"limit": limit, "offset": offset, "status": status})
    return Call("GET", "/v1/trainings", _model(TrainingsPage), params=params)


def get_training(job_id: str) -> Call[Training]:
    return Call("GET", _path("/v1/trainings/{}", job_id), _model(Training))


def cancel_training(job_id: str) -> Call[Training]:
    url = _path("/v1/trainings/{}", job_id)
    return Call("DELETE", url, _model(Training), ok=frozenset({202}))


def events_url(job_id: str) -> str:
    return _path("/v1/trainings/{}/events", job_id)


def events_headers(last_event_id: int) -> dict[str, str]:
    return {"Last-Event-ID": str(last_event_id)} if last_event_id else {}


def parse_event(event: ServerSentEvent) -> Progress | Training | None:
    """A ``progress`` or the final ``end`` event; None for any other (future) kind."""
    if event.event == "progress":
        return Progress.model_validate_json(event.data)
    if event.event == "end":
        return Training.model_validate_json(event.data)
    return None


def stream_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """The client's timeouts without a read timeout: reports may be minutes apart."""
    return httpx.Timeout(connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool)


def reconnect_delay_s(event: ServerSentEvent | None, default_s: float = 0.5) -> float:
    """The stream's ``retry:`` advice, capped: the client reconnects promptly."""
    if event is not None and event.retry is not None:
        return min(event.retry / 1000, 2.0)
    return default_s


# Models ----------------------------------------------------------------------


def list_models(limit: int, offset: int) -> Call[ModelsPage]:
    params = _query({"limit": limit, "offset": offset})
    return Call("GET", "/v1/models", _model(ModelsPage), params=params)


def get_model(model_id: str) -> Call[Model]:
    return Call("GET", _path("/v1/models/{}", model_id), _model(Model))


def delete_model(model_id: str) -> Call[None]:
    url = _path("/v1/models/{}", model_id)
    return Call("DELETE", url, _nothing, ok=frozenset({204}))


def model_plot(
    model_id: str, kind: PlotKind, version: int | None, alias: str | None
) -> Call[bytes]:
    url = _path("/v1/models/{}/plots/{}", model_id, kind)
    params = _query({"version": version, "alias": alias})
    return Call("GET", url, _content, headers={"Accept": PNG}, params=params)


def get_model_version(name: str, version: int) -> Call[ModelVersion]:
    url = _path("/v1/models/{}/versions/{}", name, str(version))
    return Call("GET", url, _model(ModelVersion))


def delete_model_version(name: str, version: int) -> Call[None]:
    url = _path("/v1/models/{}/versions/{}", name, str(version))
    return Call("DELETE", url, _nothing, ok=frozenset({204}))


def set_alias(name: str, alias: str, version: int) -> Call[Alias]:
    url = _path("/v1/models/{}/aliases/{}", name, alias)
    return Call("PUT", url, _model(Alias), json={"version": version})


def delete_alias(name: str, alias: str) -> Call[None]:
    url = _path("/v1/models/{}/aliases/{}", name, alias)
    return Call("DELETE", url, _nothing, ok=frozenset({204}))


def export_model(
    model_id: str, format: ExportFormat, version: int | None, alias: str | None
) -> Call[bytes]:
    params = _query({"format": format, "version": version, "alias": alias})
    return Call("GET", _path("/v1/models/{}/export", model_id), _content, params=params)


def predict(
    model_id: str,
    inputs: Sequence[Sequence[float]] | Sequence[float],
    version: int | None = None,
    alias: str | None = None,
) -> Call[Prediction]:
    body = {"inputs": [list(row) if isinstance(row, Sequence) else row for row in inputs]}
    url = _path("/v1/models/{}/predict", model_id)
    params = _query({"version": version, "alias": alias})
    return Call("POST", url, _model(Prediction), json=body, params=params)


# Open Inference Protocol v2 ----------------------------------------------------


def server_live() -> Call[ServerLive]:
    return Call("GET", "/v2/health/live", _model(ServerLive))


def server_ready() -> Call[ServerReady]:
    # Not ready is an answer here, not an error: 503 with {"ready": false}.
    return Call("GET", "/v2/health/ready", _model(ServerReady), ok=frozenset({200, 503}))


def server_metadata() -> Call[ServerMetadata]:
    return Call("GET", "/v2", _model(ServerMetadata))


def _v2_model(name: str, version: int | str | None, tail: str = "") -> str:
    # A version is a number or an alias; without one, the server's policy chooses.
    if version is None:
        return _path("/v2/models/{}", name) + tail
    return _path("/v2/models/{}/versions/{}", name, str(version)) + tail


def model_metadata(model_id: str, version: int | str | None = None) -> Call[ModelMetadata]:
    return Call("GET", _v2_model(model_id, version), _model(ModelMetadata))


def model_ready(model_id: str, version: int | str | None = None) -> Call[ModelReady]:
    # Not loaded is an answer, not an error: 503 with {"ready": false}.
    url = _v2_model(model_id, version, "/ready")
    return Call("GET", url, _model(ModelReady), ok=frozenset({200, 503}))


def infer(
    model_id: str, request: InferRequest | Mapping[str, Any], version: int | str | None = None
) -> Call[InferResponse]:
    body = (
        request.model_dump(mode="json", exclude_none=True)
        if isinstance(request, InferRequest)
        else dict(request)
    )
    return Call("POST", _v2_model(model_id, version, "/infer"), _model(InferResponse), json=body)


def repository_index(ready: bool) -> Call[list[RepositoryModel]]:
    body = {"ready": ready}
    return Call("POST", "/v2/repository/index", _models(RepositoryModel), json=body)


def load_model(name: str) -> Call[None]:
    return Call("POST", _path("/v2/repository/models/{}/load", name), _nothing)


def unload_model(name: str) -> Call[None]:
    return Call("POST", _path("/v2/repository/models/{}/unload", name), _nothing)
