"""Every client method against the real app in process (``Client.from_app``)."""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from skimage import data, exposure, feature

import tensorlens
from tensorlens import (
    Client,
    Progress,
    Training,
)
from tensorlens._asgi import IN_PROCESS_BASE_URL
from tests.client.session import TINY, decode, first_session

#: Each op with an image it applies to and parameters that exercise it.
OP_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "rgb2gray": ("chelsea", {}),
    "channel": ("chelsea", {"index": 1}),
    "rgb2bgr": ("chelsea", {}),
    "pixel": ("camera", {"row": 5, "col": 7}),
    "fill": ("camera", {"row_start": 30, "row_stop": 100, "col_start": 10, "col_stop": 100}),
    "set_where": ("camera", {"comparison": "lt", "threshold": 80, "value": 255}),
    "recolor": ("chelsea", {"channel": 0, "threshold": 160, "color": (255, 0, 0)}),
    "img_as_float": ("camera", {}),
    "img_as_ubyte": ("camera", {}),
    "img_as_uint": ("camera", {}),
    "img_as_int": ("camera", {}),
    "histogram": ("camera", {"bins": 64, "source_range": "dtype"}),
    "cumulative_distribution": ("camera", {"bins": 64}),
    "threshold": ("camera", {"method": "otsu"}),
    "canny": (
        "camera",
        {"sigma": 2.0, "low_threshold": 0.5, "high_threshold": 0.9, "use_quantiles": True},
    ),
    "fill_holes": ("horse", {}),
    "rescale_intensity": ("moon", {"low": 2, "high": 98}),
    "equalize_hist": ("camera", {"nbins": 128}),
    "equalize_adapthist": ("camera", {"clip_limit": 0.03, "kernel_size": (64, 64)}),
}


def test_health(client: Client) -> None:
    assert client.health().status == "ok"
    ready = client.readiness()
    assert ready.status == "ready" and ready.workers_alive == ready.workers == 2
    assert "tensorlens_http_requests_total" in client.metrics()
    assert client.server_live().live and client.server_ready().ready


def test_samples(client: Client) -> None:
    camera = next(s for s in client.list_samples() if s.name == "camera")
    assert camera.shape == [512, 512] and camera.dtype == "uint8"
    assert_array_equal(decode(client.get_sample("camera")), data.camera())


@pytest.mark.parametrize("op", sorted(OP_CALLS))
def test_every_op(client: Client, op: str) -> None:
    sample, params = OP_CALLS[op]
    result = getattr(client, op)(sample=sample, **params)
    assert [step.op for step in result.steps] == [op]
    assert result.png is not None and decode(result.png).shape[:2] == tuple(result.shape[:2])
    png = getattr(client, op)(sample=sample, accept="png", **params)
    assert png == result.png


def test_op_results_match_skimage(client: Client) -> None:
    edges = client.canny(sample="camera", sigma=3, include_image=False)
    expected = feature.canny(data.camera(), sigma=3)
    assert edges.png is None and edges.dtype == "bool"
    assert_allclose(edges.mean, expected.mean())
    counts, centers = exposure.histogram(data.camera())
    histogram = client.histogram(sample="camera")
    assert histogram.values["counts"] == counts.tolist()
    assert histogram.values["bin_centers"] == centers.tolist()
    assert client.pixel(sample="camera", row=5, col=7).values["value"] == data.camera()[5, 7]


def test_image_input_as_bytes_path_and_file(client: Client, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(data.coins()).save(buffer, format="PNG")
    path = tmp_path / "coins.png"
    path.write_bytes(buffer.getvalue())
    with path.open("rb") as file:
        answers = [
            client.equalize_hist(image, accept="png")
            for image in (buffer.getvalue(), path, str(path), file)
        ]
    assert all(answer == answers[0] for answer in answers)
    assert decode(answers[0]).shape == data.coins().shape


def test_pipeline_and_plots(client: Client) -> None:
    steps = [{"op": "rgb2gray"}, {"op": "canny", "sigma": 2}]
    result = client.pipeline(steps, sample="chelsea")
    assert [s.op for s in result.steps] == ["rgb2gray", "canny"] and result.dtype == "bool"
    png = client.pipeline(steps, sample="chelsea", accept="png")
    assert png == result.png
    for figure in (
        client.histogram_plot(sample="camera", bins=32),
        client.contrast_report(sample="moon", low=1, high=99, clip_limit=0.02, bins=64),
    ):
        assert figure.startswith(b"\x89PNG") and decode(figure).ndim == 3


def test_the_readme_first_session(client: Client, tmp_path: Path) -> None:
    first_session(client, tmp_path)


# Errors ----------------------------------------------------------------------


def test_an_unknown_sample_is_not_found(client: Client) -> None:
    with pytest.raises(tensorlens.NotFound) as caught:
        client.get_sample("no-such-sample")
    error = caught.value
    assert error.status == 404 and error.type == "/problems/not-found"
    assert "no-such-sample" in error.detail and error.title == "Not found"
    assert error.response is not None
    assert error.request_id == error.response.headers["x-request-id"]
    assert error.extra["kind"] == "sample"


def test_a_bad_parameter_names_it(client: Client) -> None:
    with pytest.raises(tensorlens.InvalidParameter) as caught:
        client.canny(sample="camera", sigma=-1)
    assert caught.value.parameter == "sigma" and caught.value.status == 422
    assert isinstance(caught.value, tensorlens.InvalidInput)


def test_input_errors_have_their_classes(client: Client) -> None:
    with pytest.raises(tensorlens.IncompatibleImage):
        client.canny(sample="chelsea")
    with pytest.raises(tensorlens.UnsupportedMediaType):
        client.canny(b"this is not an image, only text" * 10)
    with pytest.raises(tensorlens.TooManySteps):
        client.pipeline([{"op": "img_as_float"}] * 33, sample="camera")
    with pytest.raises(tensorlens.InvalidInput) as caught:
        client.canny()  # neither an image nor a sample
    assert caught.value.type == "/problems/invalid-input"


def test_a_too_large_upload_is_payload_too_large(make_app) -> None:
    app = make_app(image_workers=1, max_upload_bytes=1024)
    with Client.from_app(app) as small, pytest.raises(tensorlens.PayloadTooLarge) as caught:
        small.canny(b"\x89PNG" + bytes(4096))
    assert caught.value.status == 413 and caught.value.extra["limit_bytes"] == 1024


# Trainings and models ------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    job: Training
    events: list[Progress | Training]
    #: A job queued behind `job` on the one CPU lane, and cancelled there.
    cancelled: Training


@pytest.fixture(scope="module")
def trained(client: Client) -> Trained:
    job = client.create_training(TINY)
    assert job.status in ("queued", "running") and job.links["events"].endswith("/events")
    long = {**TINY.model_dump(exclude_none=True), "epochs": 10_000}
    queued = client.create_training(long)  # a plain dict works too
    cancelled = client.cancel_training(queued.id)
    events = list(client.training_events(job.id))
    return Trained(job, events, cancelled)


def test_a_training_followed_to_its_end(client: Client, trained: Trained) -> None:
    job = trained.job
    *reports, end = trained.events
    assert [r.seq for r in reports] == [1, 2, 3, 4, 5]
    assert all(isinstance(r, Progress) for r in reports)
    assert [r.epoch for r in reports] == [0, 5, 10, 15, 19]
    assert isinstance(end, Training) and end.status == "succeeded" and end.model_id == job.id
    again = client.get_training(job.id)
    assert again.finished and again.progress == reports[-1]
    # Reports after a given one: what a reconnect with Last-Event-ID gets.
    later = list(client.training_events(job.id, after=2))
    assert [e.seq for e in later if isinstance(e, Progress)] == [3, 4, 5]


def test_cancelling_a_finished_job_is_a_conflict(client: Client, trained: Trained) -> None:
    job = trained.job
    with pytest.raises(tensorlens.Conflict) as caught:
        client.cancel_training(job.id)
    assert caught.value.status == 409 and caught.value.extra["job_status"] == "succeeded"


def test_cancel_and_list_pages(client: Client, trained: Trained) -> None:
    job, cancelled = trained.job, trained.cancelled
    assert cancelled.status == "cancelled" and cancelled.started_at is None
    assert list(client.training_events(cancelled.id)) == [client.get_training(cancelled.id)]
    page = client.list_trainings(limit=1)
    assert page.total >= 2 and len(page.items) == 1 and page.items[0].id == cancelled.id
    every = [t.id for t in client.iter_trainings(page_size=1)]
    assert every[:2] == [cancelled.id, job.id] and len(every) == page.total
    succeeded = {t.id for t in client.list_trainings(status="succeeded").items}
    assert job.id in succeeded and cancelled.id not in succeeded


def test_models(client: Client, trained: Trained) -> None:
    job = trained.job
    model = client.get_model(job.id)
    assert model.valid and model.task == "spiral" and model.parameter_count
    assert job.id in [m.id for m in client.iter_models(page_size=1)]
    assert client.list_models(limit=1).total >= 1
    for kind in ("dataset", "decision-boundary", "curves"):
        assert decode(client.model_plot(job.id, kind)).ndim == 3
    with pytest.raises(tensorlens.InvalidInput):
        client.model_plot(job.id, "fit")  # a regression plot of a spiral model
    prediction = client.predict(job.id, [[0.0, 0.0], [0.5, -0.5]])
    assert len(prediction.classes or []) == 2
    assert_allclose(np.sum(prediction.probabilities, axis=1), 1, rtol=1e-5)


def test_open_inference_protocol(client: Client, trained: Trained) -> None:
    job = trained.job
    metadata = client.model_metadata(job.id)
    assert metadata.name == job.id and metadata.inputs[0].shape == [-1, 2]
    client.load_model(job.id)  # ready means loaded, and readiness loads nothing
    assert client.model_ready(job.id).ready
    answer = client.infer(
        job.id,
        {
            "inputs": [
                {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [0, 0, 0.5, -0.5]}
            ]
        },
    )
    by_name = {tensor.name: tensor for tensor in answer.outputs}
    assert by_name["classes"].data == client.predict(job.id, [[0, 0], [0.5, -0.5]]).classes
    with pytest.raises(tensorlens.NotFound):
        client.model_ready("0" * 32)  # the protocol's {"error": ...} body, mapped by status


# A dropped event stream -------------------------------------------------------------


class _Broken(httpx.SyncByteStream):
    def __init__(self, head: bytes) -> None:
        self._head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        raise httpx.ReadError("connection reset by peer")


class DropFirstStream(httpx.BaseTransport):
    """The network: cuts the first event stream after its first `keep` events."""

    def __init__(self, inner: httpx.BaseTransport, keep: int) -> None:
        self.inner, self.keep = inner, keep
        self.resumed_from: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if len(self.resumed_from) > 1:
            return response
        blocks = response.read().split(b"\n\n")
        head = b"\n\n".join(blocks[: self.keep + 1]) + b"\n\n"  # the retry: block first
        return httpx.Response(response.status_code, headers=response.headers, stream=_Broken(head))


def test_a_dropped_stream_resumes_with_last_event_id(transport, trained: Trained) -> None:
    network = DropFirstStream(transport, keep=2)
    client = Client(IN_PROCESS_BASE_URL, transport=network)  # not closed: the app is shared
    events = list(client.training_events(trained.job.id))
    assert network.resumed_from == [None, "2"]
    assert events == trained.events


def test_delete_a_model(client: Client, trained: Trained) -> None:
    client.delete_model(trained.job.id)
    with pytest.raises(tensorlens.NotFound):
        client.get_model(trained.job.id)
    with pytest.raises(tensorlens.NotFound):
        client.delete_model(trained.job.id)
