"""The playground page: static files under `service/static/ui/`, served at `/ui/`.

The page is plain HTML, CSS and ES modules (no build step) that call the public API
like any other frontend; nothing here reaches into the service. `/` sends the
browser to `/ui/`. The files are read once, on first request, and kept in memory
with their ETag; the Content-Security-Policy lets the page load and fetch from this
origin only, so it cannot reach the network even by mistake.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

router = APIRouter(tags=["ui"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def static_files() -> dict[str, StaticFile]:
    """The page's files by name, read once (a few tens of kB)."""
    files = {}
    for path in sorted(STATIC_DIR.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.name] = StaticFile(body, content_type, etag)
    return files


def _serve(name: str, if_none_match: str | None) -> Response:
    file = static_files().get(name)
    if file is None:
        raise HTTPException(404, f"no file `{name}` in the playground page")
    headers = {
        "ETag": file.etag,
        # Revalidated on each load (a 304 costs a round trip), so a new release shows.
        "Cache-Control": "no-cache",
        # nosniff and Referrer-Policy: on every answer (service/observability.py).
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }
    if if_none_match is not None and file.etag in if_none_match:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.content_type, headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    # Relative, so the page also works behind a proxy that mounts the service under a prefix.
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui")
async def ui_without_slash() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/")
async def index(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return _serve("index.html", if_none_match)


@router.get("/ui/{name}")
async def static_file(
    name: str,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    return _serve(name, if_none_match)
