"""The playground page in a real browser (Debian's Chromium, driven by Playwright)
against a live server: a pipeline on a sample, hostile uploads, a spiral trained live,
predictions on the plane, and a keyboard-only pass. Every request to another host is
blocked and fails the test; screenshots at 1280 and 375 px, light and dark, are
written where tests/browser.py says (``$TENSORLENS_TEST_ARTIFACTS`` or a temp folder)."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image
from playwright.sync_api import ConsoleMessage, expect

from tests._support import live_service

if TYPE_CHECKING:  # imported by pytest below, not here, so that its asserts are rewritten
    from tests.browser import OfflinePage

# The browser and offline_page fixtures.
pytest_plugins = ["tests.browser"]

VIEWS = [(1280, "light"), (1280, "dark"), (375, "light"), (375, "dark")]
#: Anything that waits on the server (a worker, a training process) on a busy 2-core machine.
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def ui_server(browser: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` on a loopback port (started only when Chromium is there)."""
    settings = {
        "TENSORLENS_IMAGE_WORKERS": "2",
        "TENSORLENS_TRAINING_CPU_THREADS": "1",
        # One training waiting is a full queue: the keyboard test meets a 429.
        "TENSORLENS_MAX_QUEUED_TRAININGS": "1",
    }
    with live_service(tmp_path_factory.mktemp("ui-server"), settings) as live:
        yield live.base_url


@pytest.fixture
def api(ui_server: str) -> Iterator[httpx.Client]:
    """The same server, asked directly: what the page shows is checked against it."""
    with httpx.Client(base_url=ui_server, timeout=60) as client:
        yield client


@pytest.fixture
def playground(offline_page, ui_server: str) -> Iterator[OfflinePage]:  # type: ignore[no-untyped-def]
    """The page at `/`, with console errors recorded; after the test, no request may have
    left the host and no script or Content-Security-Policy error may have happened."""
    offline = offline_page(ui_server)
    console: list[str] = []

    def record(message: ConsoleMessage) -> None:
        # A 4xx the page asked for (and shows) is logged too; that one is expected.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            console.append(message.text)

    offline.page.on("console", record)
    offline.goto("/")
    yield offline
    assert offline.blocked == [], f"requests to other hosts: {offline.blocked}"
    assert offline.errors == [], f"script errors: {offline.errors}"
    assert console == [], f"console errors: {console}"


def screenshots(offline: OfflinePage, name: str) -> None:
    """Full-page screenshots at 1280 and 375 px wide, light and dark; the page must fit."""
    page = offline.page
    for width, scheme in VIEWS:
        page.set_viewport_size({"width": width, "height": 900})
        page.emulate_media(color_scheme=scheme)
        page.wait_for_timeout(150)  # the canvases redraw on resize and theme change
        overflow = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{name} is {overflow} px wider than a {width} px screen"
        path = offline.artifacts / f"ui-{name}-{width}-{scheme}.png"
        page.screenshot(path=str(path), full_page=True)
        offline.screenshots.append(path)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="light")


def painted_pixels(offline: OfflinePage, selector: str) -> int:
    return offline.page.evaluate(
        """(selector) => {
            const canvas = document.querySelector(selector);
            const { width, height } = canvas;
            const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
            return painted;
        }""",
        selector,
    )


def unlabelled_controls(offline: OfflinePage) -> list[str]:
    return offline.page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button")]
            .filter((e) => e.offsetParent !== null)
            .filter((e) => {
                const labels = [...(e.labels ?? [])].map((l) => l.textContent).join(" ");
                const text = e.tagName === "BUTTON" ? e.textContent : "";
                const name = labels || e.getAttribute("aria-label") || text;
                return !name.trim();
            })
            .map((e) => e.outerHTML)"""
    )


def focused_id(offline: OfflinePage) -> str:
    return offline.page.evaluate("() => document.activeElement?.id ?? ''")


def tab_to(offline: OfflinePage, element_id: str, *, backwards: bool = False) -> None:
    if focused_id(offline) == element_id:
        return
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(80):
        offline.page.keyboard.press(key)
        if focused_id(offline) == element_id:
            return
    pytest.fail(f"#{element_id} cannot be reached with {key}")


def steps_in_page(offline: OfflinePage) -> list[str]:
    return offline.page.eval_on_selector_all(
        "#steps > li", "(items) => items.map((i) => i.dataset.op)"
    )


# Images ------------------------------------------------------------------------------


def test_pipeline_on_a_sample_shows_before_and_after(
    playground: OfflinePage, api: httpx.Client
) -> None:
    page, check = playground.page, expect
    check(page.locator("#before")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    page.select_option("#sample", "coins")
    check(page.locator("#before img")).to_have_attribute(
        "alt", re.compile("coins"), timeout=WAIT_MS
    )
    # Build the pipeline: the first step is CLAHE; add Otsu's threshold, then add a
    # contrast stretch, move it to the front, and take it out again.
    page.select_option("#add-op", "threshold")
    page.click("#add-step")
    page.select_option("#add-op", "rescale_intensity")
    page.click("#add-step")
    assert steps_in_page(playground) == ["equalize_adapthist", "threshold", "rescale_intensity"]
    page.get_by_role("button", name="Move step 3 (rescale_intensity) up").click()
    page.get_by_role("button", name="Move step 2 (rescale_intensity) up").click()
    assert steps_in_page(playground) == ["rescale_intensity", "equalize_adapthist", "threshold"]
    page.get_by_role("button", name="Remove step 1 (rescale_intensity)").click()
    assert steps_in_page(playground) == ["equalize_adapthist", "threshold"]
    # Fields generated from the op's JSON schema: CLAHE's clip limit as the notes set it.
    clip = page.locator('#steps > li[data-op="equalize_adapthist"] input[name="clip_limit"]')
    check(clip).to_have_value("0.03", timeout=WAIT_MS)
    assert unlabelled_controls(playground) == []

    page.click("#run")
    check(page.locator("#after")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    rows = page.locator("#step-table tbody td:first-child").all_text_contents()
    assert rows == ["equalize_adapthist", "threshold"]
    # The image shown is the one the API gives for the same request.
    steps = [{"op": "equalize_adapthist", "clip_limit": 0.03}, {"op": "threshold"}]
    direct = api.post("/v1/images/pipeline?sample=coins", data={"steps": json.dumps(steps)})
    assert direct.status_code == 200
    src = page.get_attribute("#after img", "src")
    assert src == "data:image/png;base64," + direct.json()["png_base64"]
    shown = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert shown.size == (384, 303)
    # The histogram and cumulative distribution of each side are drawn.
    assert painted_pixels(playground, "#before canvas") > 1000
    assert painted_pixels(playground, "#after canvas") > 1000

    page.click("#images-copy-curl")
    curl = page.text_content("#images-snippet-code") or ""
    assert curl.startswith("curl -s -X POST ")
    assert "/v1/images/pipeline?sample=coins'" in curl
    assert f"-F 'steps={json.dumps(steps, separators=(',', ':'))}'" in curl
    page.click("#images-copy-fetch")
    assert "await fetch(" in (page.text_content("#images-snippet-code") or "")

    page.click("#contrast")
    check(page.locator("#report")).to_be_visible(timeout=WAIT_MS)
    report = page.locator("#report img")
    check(report).to_have_attribute("src", re.compile("^blob:"), timeout=WAIT_MS)
    assert report.evaluate("(img) => img.decode().then(() => img.naturalWidth)") > 500
    screenshots(playground, "images")


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [("notes.png", b"these are my notes, not a picture\n"), ("truncated.png", png_bytes()[:60])],
    ids=["text-named-png", "truncated-png"],
)
def test_a_hostile_upload_shows_the_problem(
    playground: OfflinePage, api: httpx.Client, name: str, content: bytes
) -> None:
    page, check = playground.page, expect
    check(page.locator("#before")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    problem = api.post(
        "/v1/images/pipeline",
        data={"steps": json.dumps([{"op": "histogram"}, {"op": "cumulative_distribution"}])},
        files={"image": (name, content, "image/png")},
    )
    assert problem.status_code in (415, 422)
    detail, title = problem.json()["detail"], problem.json()["title"]
    page.set_input_files(
        "#upload", files=[{"name": name, "mimeType": "image/png", "buffer": content}]
    )
    error = page.locator("#images-error")
    check(error).to_be_visible(timeout=WAIT_MS)
    check(error).to_contain_text(detail, timeout=WAIT_MS)
    check(error).to_contain_text(f"{title} ({problem.status_code})", timeout=WAIT_MS)
    check(page.locator("#before")).to_have_attribute("data-state", "empty", timeout=WAIT_MS)
    check(page.locator("#before .placeholder")).to_contain_text(title, timeout=WAIT_MS)
    # Running the pipeline on it shows the same problem, never a blank panel.
    page.click("#run")
    check(page.locator("#after .placeholder")).to_contain_text(title, timeout=WAIT_MS)
    check(error).to_contain_text(detail, timeout=WAIT_MS)
    if name == "truncated.png":
        screenshots(playground, "hostile-upload")


# Training ----------------------------------------------------------------------------


def fill(offline: OfflinePage, values: dict[str, str]) -> None:
    for element_id, value in values.items():
        offline.page.fill(f"#{element_id}", value)


def test_a_spiral_trains_live_and_its_plane_answers(
    playground: OfflinePage, api: httpx.Client
) -> None:
    page, check = playground.page, expect
    page.click("#tab-training")
    check(page.locator("#panel-training")).to_be_visible(timeout=WAIT_MS)
    fill(
        playground,
        {
            "points-per-class": "150",
            "hidden": "32, 32",
            "lr": "0.01",
            # Long enough (a second or two) to be watched while it learns.
            "epochs": "2400",
            "report-every": "24",
        },
    )
    page.click("#train")
    # The curve grows while the job runs: the page redraws at each `progress` event.
    counts: list[int] = []
    deadline = time.monotonic() + WAIT_MS / 1000
    while page.get_attribute("#plane", "data-state") != "painted":
        assert time.monotonic() < deadline, page.text_content("#train-status")
        assert not page.locator("#train-error").is_visible(), page.text_content("#train-error")
        counts.append(int(page.get_attribute("#curves", "data-points") or 0))
        page.wait_for_timeout(40)
    final = int(page.get_attribute("#curves", "data-points") or 0)
    growing = sorted({count for count in counts if 0 < count < final})
    assert growing, f"the curve never showed a partial training: {counts}"
    check(page.locator("#train-status")).to_contain_text("succeeded", timeout=WAIT_MS)
    assert painted_pixels(playground, "#curves") > 1000
    assert painted_pixels(playground, "#plane") > 10_000
    check(page.locator("#server-plot")).to_be_visible(timeout=WAIT_MS)

    # Click the plane: the page asks the model about that point and shows its answer.
    page.click("#plane", position={"x": 60, "y": 80})
    prediction = page.locator("#prediction")
    check(prediction).to_contain_text("class", timeout=WAIT_MS)
    x, y = float(page.input_value("#predict-x")), float(page.input_value("#predict-y"))
    assert -1.2 < x < 0 < y < 1.2  # the upper left of the plane
    model_id = page.get_attribute("#models-table tbody tr", "data-model")
    # Every report the job made was drawn (the model's id is its job's id).
    assert final == api.get(f"/v1/trainings/{model_id}").json()["progress"]["seq"]
    answer = api.post(f"/v1/models/{model_id}/predict", json={"inputs": [[x, y]]}).json()
    cls = answer["classes"][0]
    check(prediction).to_contain_text(f"({x:g}, {y:g}) → class {cls} with p = ", timeout=WAIT_MS)
    # From the keyboard: focus the plane, move the marker, ask with Enter.
    page.focus("#plane")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    check(page.locator("#predict-x")).not_to_have_value(str(x), timeout=WAIT_MS)
    moved = float(page.input_value("#predict-x"))
    assert moved > x
    check(prediction).to_contain_text(f"({moved:g}, {y:g}) → class ", timeout=WAIT_MS)
    screenshots(playground, "training")

    # The models list: this model is there, and Delete removes it.
    row = page.locator(f'#models-table tr[data-model="{model_id}"]')
    check(row).to_be_visible(timeout=WAIT_MS)
    row.get_by_role("button", name=re.compile("^Show")).click()
    check(page.locator("#train-status")).to_contain_text("its training curves", timeout=WAIT_MS)
    check(page.locator("#plane")).to_have_attribute("data-state", "painted", timeout=WAIT_MS)
    assert page.get_attribute("#curves", "data-points") == str(final)  # from its metadata
    row.get_by_role("button", name=re.compile("^Delete")).click()
    check(row).to_have_count(0, timeout=WAIT_MS)
    check(page.locator("#plane")).to_have_attribute("data-state", "empty", timeout=WAIT_MS)
    assert api.get(f"/v1/models/{model_id}").status_code == 404


def test_keyboard_only(playground: OfflinePage, api: httpx.Client) -> None:
    """Pick a sample, add a step, run; switch to training, meet a full queue (429), start
    one and cancel it."""
    page, check = playground.page, expect
    check(page.locator("#before")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    tab_to(playground, "sample")
    page.keyboard.press("ArrowDown")  # camera → cell
    check(page.locator("#before img")).to_have_attribute("alt", re.compile("cell"), timeout=WAIT_MS)
    tab_to(playground, "add-op")
    page.keyboard.press("ArrowUp")  # canny → threshold
    tab_to(playground, "add-step")
    page.keyboard.press("Enter")
    assert steps_in_page(playground) == ["equalize_adapthist", "threshold"]
    assert focused_id(playground).startswith("param-method")  # on the new step's field
    tab_to(playground, "run")
    page.keyboard.press("Space")
    check(page.locator("#after")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    check(page.locator("#after img")).to_have_attribute(
        "alt", re.compile("threshold"), timeout=WAIT_MS
    )

    tab_to(playground, "tab-images", backwards=True)
    page.keyboard.press("ArrowRight")
    check(page.locator("#tab-training")).to_have_attribute("aria-selected", "true", timeout=WAIT_MS)
    assert focused_id(playground) == "tab-training"
    tab_to(playground, "points-per-class")
    page.keyboard.press("Control+A")
    page.keyboard.type("100")
    tab_to(playground, "epochs")
    page.keyboard.press("Control+A")
    page.keyboard.type("10000")
    # Another client fills the training queue: one job runs, one waits.
    config = {"task": "spiral", "data": {"points_per_class": 50}, "epochs": 10000}
    others = [api.post("/v1/trainings", json=config) for _ in range(2)]
    assert [response.status_code for response in others] == [202, 202]
    tab_to(playground, "train")
    page.keyboard.press("Enter")
    error = page.locator("#train-error")
    check(error).to_contain_text("(429)", timeout=WAIT_MS)
    check(error).to_contain_text(re.compile(r"try again in \d+ s"), timeout=WAIT_MS)
    for other in reversed(others):
        assert api.delete(f"/v1/trainings/{other.json()['id']}").status_code == 202
    check(page.locator("#train")).to_be_enabled(timeout=WAIT_MS)
    tab_to(playground, "train", backwards=True)
    page.keyboard.press("Enter")
    check(error).to_be_hidden(timeout=WAIT_MS)
    check(page.locator("#curves")).not_to_have_attribute("data-points", "0", timeout=WAIT_MS)
    tab_to(playground, "cancel")
    page.keyboard.press("Enter")
    check(page.locator("#train-status")).to_contain_text("cancelled", timeout=WAIT_MS)
    check(page.locator("#cancel")).to_be_disabled(timeout=WAIT_MS)
    check(page.locator("#train")).to_be_enabled(timeout=WAIT_MS)
