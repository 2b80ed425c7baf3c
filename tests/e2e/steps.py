"""Steps for the browser tests: a ``streamlit run`` server for the ``with`` block, and what
a student does and sees in Chromium (open a page, choose in a dropdown, wait for a chart to
change, no exception on the page, a screenshot in ``test-artifacts/e2e/``)."""

from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import browsing, imagefactory, samples

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
EXCEPTION = '[data-testid="stException"]'
SLOW = 90_000  # ms; the first run of each page computes and caches activations on a busy CPU


@contextlib.contextmanager
def running_app(work: Path, env: dict[str, str], *flags: str, base_path: str = ""):
    """``streamlit run streamlit_app.py`` on a free port of 127.0.0.1; yields its URL."""
    with browsing.streamlit_server(work / "streamlit.log", env, flags, base_path=base_path) as url:
        yield url


def png_bytes(pixels: np.ndarray) -> bytes:
    return imagefactory.encode(Image.fromarray(pixels), "PNG")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def no_exception(page) -> None:
    """No exception box on the page, and not Streamlit's "Connection error" dialog (which locks
    the page until it is reloaded)."""
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()
    dialog = page.get_by_role("dialog").filter(has_text="Connection error")
    assert dialog.count() == 0, dialog.first.inner_text()


def channel_picture_part(page, channel: int | None = None):
    """The Feature map's "What this channel looks for" for ``channel`` (any channel when None), as
    the server drew it: the picture from the model's atlas, or the button that computes it."""
    number = r"\d+" if channel is None else str(channel)
    button = page.get_by_role("button", name=re.compile(rf"^Optimise a picture for channel {number} \("))
    picture = page.get_by_role("img", name=re.compile(rf"^The picture optimised for channel {number} of "))
    return button.or_(picture).first


def wait_until(condition, timeout: float = 60, what: str = "the page to change"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def chart_pixels(page, index: int = 0) -> np.ndarray:
    chart = page.locator('[data-testid="stVegaLiteChart"]').nth(index)
    return np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB"))


def changed_from(before: np.ndarray):
    def check(page, index: int = 0):
        after = chart_pixels(page, index)
        return after.shape != before.shape or not np.array_equal(after, before)

    return check


def tile_urls(page) -> list[str]:
    return page.locator('[data-testid="stVegaLiteChart"] svg image').evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('href') || n.getAttribute('xlink:href'))"
    )


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` by typing it, as a keyboard user would."""
    box = page.locator('[data-testid="stSelectbox"]', has=page.get_by_text(label, exact=True)).first
    box.click()
    page.keyboard.type(option)
    page.keyboard.press("Enter")


def open_page(page, name: str) -> None:
    # Streamlit keeps the page links inert while a rerun runs: on a busy CPU (a whole test
    # run on 2 cores) a hostile report's rerun can take longer than Playwright's 30 s default.
    page.locator('[data-testid="stSidebarNavLink"]', has_text=name).first.click(timeout=SLOW)
    page.get_by_role("heading", name=name).first.wait_for(timeout=SLOW)


@contextlib.contextmanager
def scanned_sample_app(work: Path, dataset, model, per_class: int = 4):
    """The app on ``per_class`` photos a class of the test split, scanned, so every page (the
    class statistics and the neuron ranking included) is ready in seconds; yields its URL."""
    root, cache = samples.scanned_sample(work, dataset, model, per_class=per_class)
    env = browsing.server_env(
        FEATAPP_CACHE_DIR=str(cache), FEATAPP_DATA_DIR=str(root), FEATAPP_SNAPSHOTS=str(work / "none")
    )
    with browsing.streamlit_server(work / "streamlit.log", env) as url:
        yield url


def photos_app(work: Path, data_dir: Path):
    """The app on the shared photos with a private cache and no snapshots; yields its URL."""
    env = browsing.server_env(
        FEATAPP_CACHE_DIR=str(work / "cache"),
        FEATAPP_DATA_DIR=str(data_dir),
        FEATAPP_SNAPSHOTS=str(work / "no-snapshots"),
    )
    with running_app(work, env) as url:
        yield url


def focused(page) -> str:
    """What has the keyboard's focus, as '<tag> <name>' (a button by its text); inside the
    browser-drawn map's frame, 'frame: <tag> <name>'."""
    describe = """() => {
      const e = document.activeElement;
      if (!e) return "";
      const own = ["BUTTON", "A"].includes(e.tagName) ? e.innerText : "";
      const name = e.getAttribute("aria-label") || own || e.getAttribute("title") || e.id || "";
      return `${e.tagName.toLowerCase()} ${name}`.trim();
    }"""
    outer = page.evaluate(describe)
    if outer.startswith("iframe"):
        for frame in page.frames:
            if "map_explorer" in frame.url:
                return "frame: " + frame.evaluate(describe)
    return outer


def tab_to(page, wanted: str, *, limit: int = 300) -> str:
    """Press Tab, as a keyboard user does, until the focus is on something whose description
    (:func:`focused`) contains ``wanted``."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        seen.append(focused(page))
        if wanted in seen[-1]:
            return seen[-1]
    raise AssertionError(f"Tab never reached {wanted!r}; went through: {seen[-15:]}")
