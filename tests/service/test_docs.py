"""/docs and /redoc load from assets that ship with the installed package: no request
leaves the machine, checked in the served HTML and CSS and in a real browser."""

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from service.main import create_app
from service.routes.docs import ASSETS_PATH
from service.settings import Settings
from tests._support import live_service

# The browser and offline_page fixtures (imported by pytest, not here, so that its
# assertions are rewritten).
pytest_plugins = ["tests.browser"]

BUNDLED = files("fastapi_offline") / "static"
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def linked_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service on a loopback port; yields its base URL."""
    settings = {"TENSORLENS_IMAGE_WORKERS": "1"}
    with live_service(tmp_path_factory.mktemp("docs-server"), settings) as live:
        yield live.base_url


@pytest.fixture(scope="module")
def http(docs_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=docs_server, timeout=30) as client:
        yield client


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_link_only_to_this_host(http: httpx.Client, path: str) -> None:
    page = http.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    base = str(http.base_url)
    urls = linked_urls(page.text)
    assert urls, "the page links no script, stylesheet or icon"
    for url in urls:
        absolute = urljoin(base, url)
        assert origin(absolute) == origin(base), f"{path} links off the host: {url}"
        asset = http.get(absolute)
        assert asset.status_code == 200, (url, asset.status_code)
    # Nothing else in the page names a host: no CDN, no fonts, no validator badge.
    assert not re.findall(r"https?://", page.text), page.text


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_are_held_to_this_origin(http: httpx.Client, path: str) -> None:
    policy = http.get(path).headers["content-security-policy"]
    directives = dict(directive.split(" ", 1) for directive in policy.split("; "))
    assert directives["default-src"] == "'self'"
    for name in ("script-src", "img-src", "connect-src", "font-src", "style-src"):
        sources = directives[name].split()
        assert "'self'" in sources
        assert not [source for source in sources if "://" in source or source == "*"], policy
    assert "'unsafe-inline'" not in directives["script-src"]


def test_swagger_ui_is_configured_offline(http: httpx.Client) -> None:
    page = http.get("/docs").text
    assert '"validatorUrl": null' in page
    assert "url: '/openapi.json'" in page
    assert http.get("/docs/oauth2-redirect").status_code == 200


def test_stylesheet_refers_to_nothing_off_the_host(http: httpx.Client) -> None:
    css = http.get(f"{ASSETS_PATH}/swagger-ui.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    for url in CSS_URL.findall(css.text):
        assert url.startswith("data:") or origin(urljoin(str(css.url), url)) == origin(
            str(css.url)
        ), url


@pytest.mark.parametrize(
    "name", ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"]
)
def test_assets_are_the_installed_packages_files(http: httpx.Client, name: str) -> None:
    served = http.get(f"{ASSETS_PATH}/{name}")
    assert served.status_code == 200
    assert served.content == (BUNDLED / name).read_bytes()


def test_unknown_asset_is_a_problem_404(http: httpx.Client) -> None:
    response = http.get(f"{ASSETS_PATH}/nothing.js")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_docs_routes_stay_out_of_the_openapi_document(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]


@pytest.mark.anyio
async def test_urls_carry_the_root_path_behind_a_proxy(tmp_path: Path) -> None:
    # No lifespan: the docs routes need no worker, so none is started.
    app = create_app(Settings(data_dir=tmp_path, image_workers=1))
    transport = httpx.ASGITransport(app=app, root_path="/tensorlens")
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        swagger = (await client.get("/docs")).text
        redoc = (await client.get("/redoc")).text
    assert f'src="/tensorlens{ASSETS_PATH}/swagger-ui-bundle.js"' in swagger
    assert "url: '/tensorlens/openapi.json'" in swagger
    assert f'src="/tensorlens{ASSETS_PATH}/redoc.standalone.js"' in redoc
    assert 'spec-url="/tensorlens/openapi.json"' in redoc


def test_swagger_ui_renders_offline_and_expands_an_operation(
    docs_server: str, offline_page
) -> None:
    docs = offline_page(docs_server)
    docs.goto("/docs")
    # Swagger UI's id for an operation: operations-<tag>-<operationId>.
    canny = docs.page.locator("#operations-images-images-canny")
    canny.locator(".opblock-summary-control").click()
    parameters = canny.locator("table.parameters")
    parameters.locator("text=sigma").first.wait_for(state="visible")
    assert "low_threshold" in parameters.inner_text()
    docs.screenshot("swagger-ui-canny")
    assert docs.blocked == [], f"requests off the host were attempted: {docs.blocked}"
    assert docs.errors == []
    assert docs.console_errors == []


def test_redoc_renders_an_operation_offline(docs_server: str, offline_page) -> None:
    redoc = offline_page(docs_server)
    redoc.goto("/redoc")
    canny = redoc.page.locator('[data-section-id="operation/images-canny"]')
    canny.locator("text=sigma").first.wait_for(state="attached")
    assert "low_threshold" in canny.inner_text()
    canny.locator("h2").first.scroll_into_view_if_needed()
    redoc.screenshot("redoc-canny")
    assert redoc.blocked == [], f"requests off the host were attempted: {redoc.blocked}"
    assert redoc.errors == []
    # ReDoc's sidebar shows a logo from cdn.redoc.ly (no option turns it off): the page's
    # Content-Security-Policy refuses it before any request, and that is the only error.
    for line in redoc.console_errors:
        assert "cdn.redoc.ly" in line and "Content Security Policy" in line, line
