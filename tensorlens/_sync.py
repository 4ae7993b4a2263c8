"""The sync client: one method per route of the tensorlens API.

Generated from ``_async.py`` by ``python -m tensorlens._unasync``: edit that file.
"""

# ruff: noqa: UP028  (the async source cannot `yield from`; its twin keeps its loops)

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from tensorlens import _asgi, _core
from tensorlens._core import Accept, ExportFormat, ImageInput, PlotKind
from tensorlens.errors import StreamDropped, error_for
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

__all__ = ["Client"]

T = TypeVar("T")


class Client(_core.BaseClient):
    """A client of one tensorlens service, over a live URL or in process.

    ``retries`` (0 by default: opt in) resends a request answered 429, or 503 with
    ``Retry-After``, after the time the server asks for, at most that many times and
    only while it asks for no more than ``max_retry_wait_s``. ``api_key`` is sent as
    ``Authorization: Bearer`` with every request. ``max_reconnects``
    bounds how often in a row :meth:`training_events` reconnects to a dropped stream.
    ``transport`` is any httpx transport; :meth:`from_app` builds the in-process one.
    """

    def __init__(
        self,
        base_url: str | httpx.URL = _core.DEFAULT_BASE_URL,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        retries: int = 0,
        max_retry_wait_s: float = 60.0,
        max_reconnects: int = 5,
    ) -> None:
        super().__init__(
            retries=retries, max_retry_wait_s=max_retry_wait_s, max_reconnects=max_reconnects
        )
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            headers=_core.with_api_key(headers, api_key),
            limits=httpx.Limits(keepalive_expiry=_core.KEEPALIVE_EXPIRY_S),
        )

    # region from_app
    @classmethod
    @contextmanager
    def from_app(
        cls,
        app: _asgi.ASGIApp,
        *,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        retries: int = 0,
        max_retry_wait_s: float = 60.0,
        max_reconnects: int = 5,
    ) -> Iterator[Self]:
        """A client of ``app`` (e.g. ``create_app(settings)``) in this process: the app's
        lifespan and requests run on an event loop in a thread for as long as the
        ``with`` block."""
        transport = _asgi.ThreadedASGITransport(app)
        transport.start()
        with cls(
            _asgi.IN_PROCESS_BASE_URL,
            transport=transport,
            timeout=timeout,
            headers=headers,
            api_key=api_key,
            retries=retries,
            max_retry_wait_s=max_retry_wait_s,
            max_reconnects=max_reconnects,
        ) as client:
            yield client

    # endregion

    @property
    def base_url(self) -> httpx.URL:
        return self._http.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, call: _core.Call[T]) -> T:
        attempt = 0
        while True:
            response = self._http.send(self._build(self._http, call))
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return self._outcome(call, response)
            attempt += 1
            time.sleep(delay)

    # Health ------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /healthz``: the process answers."""
        return self._request(_core.health())

    def readiness(self) -> Readiness:
        """``GET /readyz``: every worker is up (:class:`PoolUnavailable` otherwise)."""
        return self._request(_core.readiness())

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus exposition text."""
        return self._request(_core.metrics())

    # Samples -----------------------------------------------------------------

    def list_samples(self) -> list[SampleInfo]:
        return self._request(_core.list_samples())

    def get_sample(self, name: str) -> bytes:
        """The sample image as PNG bytes."""
        return self._request(_core.sample_png(name))

    # Images ------------------------------------------------------------------
    #
    # Every op takes the image as bytes, a path or a binary file (``image``), or a
    # bundled sample's name (``sample=``). ``accept="png"`` answers with the resulting
    # PNG's bytes (``"npy"``: the exact array as .npy bytes, ``"tiff"``: a TIFF); the
    # default, JSON, with an :class:`ImageResult` (its ``png`` unless
    # ``include_image=False``).

    def list_ops(self) -> list[OpInfo]:
        """Every op with the JSON schema of its parameters."""
        return self._request(_core.list_ops())

    @overload
    def pipeline(
        self,
        steps: Sequence[Mapping[str, Any]],
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def pipeline(
        self,
        steps: Sequence[Mapping[str, Any]],
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def pipeline(
        self,
        steps: Sequence[Mapping[str, Any]],
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Apply ``steps`` in order, each ``{"op": name, **parameters}``."""
        return self._request(_core.pipeline(steps, image, sample, accept, include_image))

    def histogram_plot(
        self, image: ImageInput = None, *, sample: str | None = None, bins: int = 256
    ) -> bytes:
        """The image's histogram as a PNG figure."""
        return self._request(_core.histogram_plot(image, sample, bins))

    def contrast_report(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        low: float = 2,
        high: float = 98,
        clip_limit: float = 0.03,
        bins: int = 256,
    ) -> bytes:
        """The notes' 2 x 4 figure (original, stretching, equalization, CLAHE) as PNG."""
        call = _core.contrast_report(image, sample, low, high, clip_limit, bins)
        return self._request(call)

    # One method per op (GET /v1/images/ops; a test keeps them equal) ---------

    @overload
    def rgb2gray(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def rgb2gray(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def rgb2gray(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Convert RGB(A) to grayscale floats in [0, 1]."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("rgb2gray", image, sample, params, accept, include_image)
        )

    @overload
    def channel(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        index: int = 0,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def channel(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        index: int = 0,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def channel(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        index: int = 0,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Keep one channel of a color image."""
        params: dict[str, Any] = {"index": index}
        return self._request(
            _core.image_op("channel", image, sample, params, accept, include_image)
        )

    @overload
    def rgb2bgr(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def rgb2bgr(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def rgb2bgr(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Reverse the color channels (RGB to BGR); alpha stays last."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("rgb2bgr", image, sample, params, accept, include_image)
        )

    @overload
    def pixel(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        row: int,
        col: int,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def pixel(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        row: int,
        col: int,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def pixel(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        row: int,
        col: int,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Read one pixel's value; the image passes through."""
        params: dict[str, Any] = {"row": row, "col": col}
        return self._request(_core.image_op("pixel", image, sample, params, accept, include_image))

    @overload
    def fill(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        row_start: int | None = None,
        row_stop: int | None = None,
        col_start: int | None = None,
        col_stop: int | None = None,
        value: float | Sequence[float] = 0,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def fill(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        row_start: int | None = None,
        row_stop: int | None = None,
        col_start: int | None = None,
        col_stop: int | None = None,
        value: float | Sequence[float] = 0,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def fill(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        row_start: int | None = None,
        row_stop: int | None = None,
        col_start: int | None = None,
        col_stop: int | None = None,
        value: float | Sequence[float] = 0,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Set a rectangle of pixels to a value."""
        params: dict[str, Any] = {
            "row_start": row_start,
            "row_stop": row_stop,
            "col_start": col_start,
            "col_stop": col_stop,
            "value": value,
        }
        return self._request(_core.image_op("fill", image, sample, params, accept, include_image))

    @overload
    def set_where(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        comparison: Literal["lt", "le", "gt", "ge", "eq", "ne"] = "lt",
        threshold: float = 80,
        value: float | Sequence[float] = 255,
        channel: int | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def set_where(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        comparison: Literal["lt", "le", "gt", "ge", "eq", "ne"] = "lt",
        threshold: float = 80,
        value: float | Sequence[float] = 255,
        channel: int | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def set_where(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        comparison: Literal["lt", "le", "gt", "ge", "eq", "ne"] = "lt",
        threshold: float = 80,
        value: float | Sequence[float] = 255,
        channel: int | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Set the pixels that pass a comparison to a value (camera[camera < 80] = 255)."""
        params: dict[str, Any] = {
            "comparison": comparison,
            "threshold": threshold,
            "value": value,
            "channel": channel,
        }
        return self._request(
            _core.image_op("set_where", image, sample, params, accept, include_image)
        )

    @overload
    def recolor(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        channel: int = 0,
        threshold: float = 160,
        color: Sequence[float] = (255, 0, 0),
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def recolor(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        channel: int = 0,
        threshold: float = 160,
        color: Sequence[float] = (255, 0, 0),
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def recolor(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        channel: int = 0,
        threshold: float = 160,
        color: Sequence[float] = (255, 0, 0),
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Paint pixels whose channel exceeds a threshold with a color (the red cat)."""
        params: dict[str, Any] = {"channel": channel, "threshold": threshold, "color": color}
        return self._request(
            _core.image_op("recolor", image, sample, params, accept, include_image)
        )

    @overload
    def img_as_float(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def img_as_float(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def img_as_float(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Convert to 64-bit float (0..1, or -1..1 for signed input): skimage.util.img_as_float."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("img_as_float", image, sample, params, accept, include_image)
        )

    @overload
    def img_as_ubyte(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def img_as_ubyte(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def img_as_ubyte(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Convert to 8-bit unsigned integers (0..255) with skimage.util.img_as_ubyte."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("img_as_ubyte", image, sample, params, accept, include_image)
        )

    @overload
    def img_as_uint(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def img_as_uint(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def img_as_uint(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Convert to 16-bit unsigned integers (0..65535) with skimage.util.img_as_uint."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("img_as_uint", image, sample, params, accept, include_image)
        )

    @overload
    def img_as_int(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def img_as_int(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def img_as_int(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Convert to 16-bit signed integers (-32768..32767) with skimage.util.img_as_int."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("img_as_int", image, sample, params, accept, include_image)
        )

    @overload
    def histogram(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        bins: int = 256,
        source_range: Literal["image", "dtype"] = "image",
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def histogram(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        bins: int = 256,
        source_range: Literal["image", "dtype"] = "image",
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def histogram(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        bins: int = 256,
        source_range: Literal["image", "dtype"] = "image",
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Count pixels per intensity bin (skimage.exposure.histogram); the image passes through."""
        params: dict[str, Any] = {"bins": bins, "source_range": source_range}
        return self._request(
            _core.image_op("histogram", image, sample, params, accept, include_image)
        )

    @overload
    def cumulative_distribution(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        bins: int = 256,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def cumulative_distribution(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        bins: int = 256,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def cumulative_distribution(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        bins: int = 256,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Cumulative distribution of intensities; the image passes through."""
        params: dict[str, Any] = {"bins": bins}
        return self._request(
            _core.image_op("cumulative_distribution", image, sample, params, accept, include_image)
        )

    @overload
    def threshold(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        method: Literal["value", "otsu"] = "otsu",
        value: float | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def threshold(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        method: Literal["value", "otsu"] = "otsu",
        value: float | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def threshold(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        method: Literal["value", "otsu"] = "otsu",
        value: float | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Binary mask of pixels above a fixed or Otsu threshold."""
        params: dict[str, Any] = {"method": method, "value": value}
        return self._request(
            _core.image_op("threshold", image, sample, params, accept, include_image)
        )

    @overload
    def canny(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        sigma: float = 1.0,
        low_threshold: float | None = None,
        high_threshold: float | None = None,
        use_quantiles: bool = False,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def canny(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        sigma: float = 1.0,
        low_threshold: float | None = None,
        high_threshold: float | None = None,
        use_quantiles: bool = False,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def canny(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        sigma: float = 1.0,
        low_threshold: float | None = None,
        high_threshold: float | None = None,
        use_quantiles: bool = False,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Canny edge detection on a single-channel image."""
        params: dict[str, Any] = {
            "sigma": sigma,
            "low_threshold": low_threshold,
            "high_threshold": high_threshold,
            "use_quantiles": use_quantiles,
        }
        return self._request(_core.image_op("canny", image, sample, params, accept, include_image))

    @overload
    def fill_holes(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def fill_holes(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def fill_holes(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Fill the holes of a binary image (non-zero is foreground)."""
        params: dict[str, Any] = {}
        return self._request(
            _core.image_op("fill_holes", image, sample, params, accept, include_image)
        )

    @overload
    def rescale_intensity(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        low: float = 2,
        high: float = 98,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def rescale_intensity(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        low: float = 2,
        high: float = 98,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def rescale_intensity(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        low: float = 2,
        high: float = 98,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Contrast stretching: map the low..high percentiles to the full range."""
        params: dict[str, Any] = {"low": low, "high": high}
        return self._request(
            _core.image_op("rescale_intensity", image, sample, params, accept, include_image)
        )

    @overload
    def equalize_hist(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        nbins: int = 256,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def equalize_hist(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        nbins: int = 256,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def equalize_hist(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        nbins: int = 256,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Global histogram equalization."""
        params: dict[str, Any] = {"nbins": nbins}
        return self._request(
            _core.image_op("equalize_hist", image, sample, params, accept, include_image)
        )

    @overload
    def equalize_adapthist(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        nbins: int = 256,
        include_image: bool = True,
        accept: Literal["json"] = "json",
    ) -> ImageResult: ...
    @overload
    def equalize_adapthist(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        nbins: int = 256,
        include_image: bool = True,
        accept: Literal["png", "npy", "tiff"],
    ) -> bytes: ...
    def equalize_adapthist(
        self,
        image: ImageInput = None,
        *,
        sample: str | None = None,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        nbins: int = 256,
        include_image: bool = True,
        accept: Accept = "json",
    ) -> ImageResult | bytes:
        """Contrast-limited adaptive histogram equalization (CLAHE)."""
        params: dict[str, Any] = {
            "clip_limit": clip_limit,
            "kernel_size": kernel_size,
            "nbins": nbins,
        }
        return self._request(
            _core.image_op("equalize_adapthist", image, sample, params, accept, include_image)
        )

    # Trainings ---------------------------------------------------------------

    def create_training(
        self, config: TrainingConfig | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Training:
        """Queue a training (a :class:`SpiralConfig`, :class:`RegressionConfig` or a dict).

        With ``idempotency_key``, sending the same config again (a retry after a dropped
        connection) returns the job the first call made instead of queuing another.
        """
        return self._request(_core.create_training(config, idempotency_key))

    def list_trainings(
        self, *, limit: int = 50, offset: int = 0, status: JobStatus | None = None
    ) -> TrainingsPage:
        """One page of jobs, newest first."""
        return self._request(_core.list_trainings(limit, offset, status))

    def iter_trainings(
        self, *, status: JobStatus | None = None, page_size: int = 100
    ) -> Iterator[Training]:
        """Every job, newest first, a page at a time."""
        offset = 0
        while True:
            page = self.list_trainings(limit=page_size, offset=offset, status=status)
            for job in page.items:
                yield job
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def get_training(self, job_id: str) -> Training:
        return self._request(_core.get_training(job_id))

    def cancel_training(self, job_id: str) -> Training:
        """Cancel a queued or running job (:class:`Conflict` if it has finished)."""
        return self._request(_core.cancel_training(job_id))

    def training_events(self, job_id: str, *, after: int = 0) -> Iterator[Progress | Training]:
        """The job's progress reports as they happen, then the finished :class:`Training`.

        Reports after ``after`` only. A stream that drops is reopened with
        ``Last-Event-ID``, so no report is lost or repeated; :class:`StreamDropped`
        after ``max_reconnects`` drops in a row.
        """
        last_seq = after
        drops = 0
        retry: ServerSentEvent | None = None
        timeout = _core.stream_timeout(self._http.timeout)
        while True:
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    _core.events_url(job_id),
                    headers=_core.events_headers(last_seq),
                    timeout=timeout,
                ) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise error_for(source.response)
                    for event in source.iter_sse():
                        retry = event if event.retry is not None else retry
                        item = _core.parse_event(event)
                        if item is None:
                            continue
                        drops = 0
                        yield item
                        if isinstance(item, Training):
                            return
                        last_seq = item.seq
            except httpx.TransportError:
                pass  # dropped: reconnect below, as a browser's EventSource would
            drops += 1
            if drops > self.max_reconnects:
                raise StreamDropped(
                    f"the event stream of {job_id} dropped {drops} times in a row "
                    f"(last report: {last_seq})"
                )
            time.sleep(_core.reconnect_delay_s(retry))

    # Models ------------------------------------------------------------------

    def list_models(self, *, limit: int = 50, offset: int = 0) -> ModelsPage:
        """One page of models, newest first."""
        return self._request(_core.list_models(limit, offset))

    def iter_models(self, *, page_size: int = 100) -> Iterator[Model]:
        """Every model, newest first, a page at a time."""
        offset = 0
        while True:
            page = self.list_models(limit=page_size, offset=offset)
            for model in page.items:
                yield model
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def get_model(self, model_id: str) -> Model:
        return self._request(_core.get_model(model_id))

    def delete_model(self, model_id: str) -> None:
        self._request(_core.delete_model(model_id))

    def model_plot(
        self,
        model_id: str,
        kind: PlotKind,
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> bytes:
        """A PNG: ``dataset``, ``decision-boundary``, ``curves`` or ``fit`` (regression),
        of the version ``version`` or ``alias`` names, else the one served."""
        return self._request(_core.model_plot(model_id, kind, version, alias))

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self._request(_core.get_model_version(name, version))

    def delete_model_version(self, name: str, version: int) -> None:
        """Remove one version; a :class:`Conflict` while an alias points at it."""
        self._request(_core.delete_model_version(name, version))

    def set_alias(self, name: str, alias: str, version: int) -> Alias:
        """Point ``alias`` (e.g. ``production``; ``default`` is what a bare name serves) at
        ``version``, creating or moving it in one step."""
        return self._request(_core.set_alias(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._request(_core.delete_alias(name, alias))

    def export_model(
        self,
        model_id: str,
        format: ExportFormat = "onnx",
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> bytes:
        """The model as an ONNX file, or (``format="triton"``) a zip of a Triton model
        repository; the version ``version`` or ``alias`` names, else the one served."""
        return self._request(_core.export_model(model_id, format, version, alias))

    def predict(
        self,
        model_id: str,
        inputs: Sequence[Sequence[float]] | Sequence[float],
        *,
        version: int | None = None,
        alias: str | None = None,
    ) -> Prediction:
        """Classes and probabilities (spiral), or mean and ensemble std (regression), from
        the version ``version`` or ``alias`` names, else the one the name serves."""
        return self._request(_core.predict(model_id, inputs, version, alias))

    # Open Inference Protocol v2 ----------------------------------------------

    def server_metadata(self) -> ServerMetadata:
        """The server's name, version and the protocol extensions it implements."""
        return self._request(_core.server_metadata())

    def server_live(self) -> ServerLive:
        return self._request(_core.server_live())

    def server_ready(self) -> ServerReady:
        """``ready`` is False (not an error) while the server cannot infer."""
        return self._request(_core.server_ready())

    def model_metadata(self, model_id: str, version: int | str | None = None) -> ModelMetadata:
        """Tensors of ``version`` (a number or an alias; else the server's policy's), and
        every version of the model."""
        return self._request(_core.model_metadata(model_id, version))

    def model_ready(self, model_id: str, version: int | str | None = None) -> ModelReady:
        """``ready`` is False (not an error) while the version is not loaded."""
        return self._request(_core.model_ready(model_id, version))

    def infer(
        self,
        model_id: str,
        request: InferRequest | Mapping[str, Any],
        version: int | str | None = None,
    ) -> InferResponse:
        """Inference with the protocol's tensor JSON, on ``version`` (a number or an
        alias; else the server's policy's)."""
        return self._request(_core.infer(model_id, request, version))

    def repository_index(self, ready: bool = False) -> list[RepositoryModel]:
        """Every version of every model and whether it is loaded (only loaded ones with
        ``ready=True``)."""
        return self._request(_core.repository_index(ready))

    def load_model(self, model_id: str) -> None:
        """Load the version the server's policy serves into its cache."""
        self._request(_core.load_model(model_id))

    def unload_model(self, model_id: str) -> None:
        """Take the model's versions out of the server's cache (its files stay)."""
        self._request(_core.unload_model(model_id))
