"""HTTP caching of answers that change only with what they are made from: `ETag`,
`Cache-Control` and `If-None-Match` (RFC 9110 section 13.1.2, RFC 9111).

A route names its answer's validator before doing any work: :func:`not_modified` gives
the 304 when the client already holds that version, and :func:`cached` sends the
answer with its validators otherwise.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version as metadata_version
from typing import Any

from fastapi import Request, Response

#: Samples ship inside the installed scikit-image: they change only with it.
SAMPLE_CACHE_CONTROL = "public, max-age=86400"
#: A model's plots change only with its weights, and a model can be deleted: caches
#: keep them but ask again (a 304 costs no rendering).
MODEL_PLOT_CACHE_CONTROL = "no-cache"


def entity_tag(*parts: str) -> str:
    """A strong entity tag (quoted) for the answer made from ``parts``."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f'"{digest}"'


def model_plot_tag(model_id: str, kind: str, metadata: dict[str, Any]) -> str:
    """The entity tag of a model's plot: its weights' digest, the kind, this release."""
    weights = str(metadata.get("weights_sha256", ""))
    return entity_tag(model_id, kind, weights, metadata_version("tensorlens"))


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    # Weak comparison, as If-None-Match asks: W/"x" matches "x".
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in tags


def not_modified(request: Request, etag: str, cache_control: str) -> Response | None:
    """A 304 when the request's `If-None-Match` names ``etag``, else None."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is None or not _matches(if_none_match, etag):
        return None
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})


def cached(response: Response, etag: str, cache_control: str) -> Response:
    """``response`` with its `ETag` and `Cache-Control`."""
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = cache_control
    return response


NOT_MODIFIED_RESPONSE: dict[int | str, dict[str, str]] = {
    304: {"description": "Not modified: the `If-None-Match` tag is still current."}
}
