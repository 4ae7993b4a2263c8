"""The playground page over HTTP: served at `/` and `/ui/` with the right content types,
every file it loads present, nothing pointing off the host, kept out of the API
description, and shipped in the wheel. tests/service/test_ui_browser.py drives it."""

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from service.routes.ui import CONTENT_TYPES, STATIC_DIR

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
MODULE_IMPORT = re.compile(r"""(?:from|import)\s*["']([^"']+)["']""")
OFF_HOST = re.compile(r"""\b(?:https?|wss?|ftp):|["'(]//[^/]""", re.IGNORECASE)
PAGE_FILES = sorted(p.name for p in STATIC_DIR.iterdir() if p.suffix in CONTENT_TYPES)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def linked(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


async def test_root_and_ui_lead_to_the_page(client: httpx.AsyncClient) -> None:
    for path in ("/", "/ui"):
        redirect = await client.get(path)
        assert redirect.status_code == 307
        # Relative, so the page works behind a proxy that serves the API under a prefix.
        assert redirect.headers["location"] == "ui/"
        assert urljoin(f"http://tensorlens{path}", "ui/") == "http://tensorlens/ui/"
    page = await client.get("/", follow_redirects=True)
    assert page.status_code == 200
    assert str(page.url) == "http://tensorlens/ui/"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>tensorlens playground</title>" in page.text
    assert page.headers["x-request-id"]


async def test_every_file_the_page_loads_is_served_with_its_type(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/ui/")
    base = "http://tensorlens/ui/"
    pending = [urljoin(base, url) for url in linked(page.text) if not url.startswith("data:")]
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await client.get(url)
        assert response.status_code == 200, url
        if url.endswith(".js"):
            assert response.headers["content-type"] == "text/javascript; charset=utf-8"
            # Follow the ES module graph: every import is a file served beside it.
            pending += [urljoin(url, spec) for spec in MODULE_IMPORT.findall(response.text)]
        elif url.endswith(".css"):
            assert response.headers["content-type"] == "text/css; charset=utf-8"
    served = {url.removeprefix(base) for url in seen if url.startswith(base)}
    # Every file in the folder is reached from the page, and nothing is missing from it.
    assert served == set(PAGE_FILES) - {"index.html"}


@pytest.mark.parametrize("name", PAGE_FILES)
def test_no_file_of_the_page_names_another_host(name: str) -> None:
    text = (STATIC_DIR / name).read_text()
    assert not OFF_HOST.findall(text), f"{name} refers to another host or scheme"
    assert "@import" not in text
    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", text):
        assert url.startswith("data:"), url


async def test_the_browser_may_reach_only_this_host(client: httpx.AsyncClient) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
        response = await client.get(path)
        policy = dict(
            part.strip().split(" ", 1)
            for part in response.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["connect-src"] == policy["script-src"] == policy["style-src"] == "'self'"
        assert policy["img-src"] == "'self' data: blob:"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_an_unchanged_file_is_revalidated_with_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/ui/app.js")
    assert first.headers["cache-control"] == "no-cache"
    again = await client.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    stale = await client.get("/ui/app.js", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200 and stale.content == first.content


@pytest.mark.parametrize("path", ["/ui/missing.js", "/ui/%2e%2e%2fmain.py", "/ui/ui.py"])
async def test_anything_else_under_ui_is_a_404_problem(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


async def test_the_page_is_not_part_of_the_api_description(client: httpx.AsyncClient) -> None:
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_the_page_ships_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    for name in PAGE_FILES:
        relative = (STATIC_DIR / name).relative_to(ROOT / "service").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_every_static_control_has_a_label() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    # Radios are wrapped in their label; everything else is labelled by id.
    controls = re.findall(r"<(?:input|select|textarea)\b([^>]*)>", html)
    for attributes in controls:
        if 'type="radio"' in attributes:
            continue
        match = re.search(r'id="([^"]+)"', attributes)
        assert match and match.group(1) in labelled, attributes
