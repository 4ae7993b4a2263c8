"""Interactive docs, Swagger UI at `/docs` and ReDoc at `/redoc`, that load without internet
access: their JavaScript, CSS and favicon come from the installed `fastapi-offline` package
(FastAPI's self-hosting recipe), never from a CDN. Each page also carries a
Content-Security-Policy that holds it to this origin: ReDoc's sidebar shows a logo from
cdn.redoc.ly, which no option turns off; the browser refuses it before any request."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the bundled assets are served: swagger-ui-bundle.js, swagger-ui.css,
#: redoc.standalone.js and favicon.png.
ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"

#: Swagger UI's default validator badge is an image from validator.swagger.io: off.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}

router = APIRouter(tags=["docs"], include_in_schema=False)
router.mount(ASSETS_PATH, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")


def _content_security_policy(html: str) -> str:
    # Swagger UI's page starts it with one inline script: allowed by its hash, not by
    # 'unsafe-inline'. ReDoc writes its styles into <style> elements as it renders.
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in scripts
    ]
    return "; ".join(
        (
            "default-src 'self'",
            " ".join(("script-src 'self'", *hashes)),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


def _held_to_this_origin(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _content_security_policy(bytes(page.body).decode())
    return page


def _prefix(request: Request) -> str:
    # Behind a proxy that serves the app under a path, every URL in the page carries it.
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    prefix = _prefix(request)
    page = get_swagger_ui_html(
        openapi_url=f"{prefix}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{prefix}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{prefix}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{prefix}{ASSETS_PATH}/favicon.png",
        oauth2_redirect_url=f"{prefix}{OAUTH2_REDIRECT_PATH}",
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )
    return _held_to_this_origin(page)


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    prefix = _prefix(request)
    page = get_redoc_html(
        openapi_url=f"{prefix}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{prefix}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{prefix}{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
    return _held_to_this_origin(page)
