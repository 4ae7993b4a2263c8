"""Browser tests: Debian's Chromium driven by Playwright, with every request off the
service's host blocked and recorded.

A test module loads these fixtures with ``pytest_plugins = ["tests.browser"]``. Without
``/usr/bin/chromium`` (``apt-get install chromium``; `.ci/run` installs it) every browser
test skips with one reason line. Playwright cannot download a browser of its own here,
so it launches that one. Screenshots go to ``$TENSORLENS_TEST_ARTIFACTS`` (default: a
pytest temporary folder); the session's summary says where.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
SKIP_REASON = "Chromium not installed: apt-get install chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS_ENV = "TENSORLENS_TEST_ARTIFACTS"
#: Long enough for a page to render its document on a busy 2-core CI machine.
TIMEOUT_MS = 60_000

_SCREENSHOTS = pytest.StashKey[list[Path]]()


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@dataclass
class OfflinePage:
    """A page whose requests may only go to `base_url`'s scheme, host and port; any other
    is aborted and kept in `blocked`. Uncaught script errors are kept in `errors`, the
    console's error lines (a Content-Security-Policy refusal among them) in
    `console_errors`."""

    page: Page
    base_url: str
    artifacts: Path
    screenshots: list[Path]
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path, wait_until="load")

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        self.screenshots.append(path)
        return path


# Per module, not per session: while Playwright's sync API is open, its event loop is the
# running loop of the main thread, and every async test after it would fail to start one.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(SKIP_REASON)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def browser_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get(ARTIFACTS_ENV)
    folder = Path(configured) if configured else tmp_path_factory.mktemp("browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def offline_page(
    browser: Browser, browser_artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], OfflinePage]]:
    """A factory: ``offline_page(base_url)`` opens a fresh page cut off from every host
    but the one in `base_url`."""
    contexts: list[BrowserContext] = []
    screenshots = request.config.stash.setdefault(_SCREENSHOTS, [])

    def open_page(base_url: str) -> OfflinePage:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        offline = OfflinePage(page, base_url.rstrip("/"), browser_artifacts, screenshots)
        allowed = origin(base_url)

        # On the context, not the page: popups and workers are held to the same rule.
        def only_this_host(route: Route) -> None:
            url = route.request.url
            if origin(url) == allowed or url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                offline.blocked.append(url)
                route.abort("blockedbyclient")

        context.route("**/*", only_this_host)
        page.on("pageerror", lambda error: offline.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                offline.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        return offline

    yield open_page
    for context in contexts:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # pytest reports a skip from a fixture at each test's line; pointing them all at this
    # file folds them into one line of `-ra`'s summary, however many browser tests there are.
    if (
        report.skipped
        and isinstance(report.longrepr, tuple)
        and report.longrepr[2].endswith(SKIP_REASON)
    ):
        report.longrepr = (__file__, None, report.longrepr[2])
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    screenshots = terminalreporter.config.stash.get(_SCREENSHOTS, [])
    if screenshots:
        terminalreporter.write_sep("-", "browser screenshots")
        for path in screenshots:
            terminalreporter.write_line(str(path))
