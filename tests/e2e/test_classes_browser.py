"""End to end: the 'Cats vs dogs' page in headless Chromium, on 4 cats and 4 dogs scanned beforehand.

The map's tooltip must show the photo's thumbnail (Vega draws a field called ``image``
as a picture), and a click on a point must make that photo the current image (the
sidebar changes). Screenshots go to ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import shutil

import pytest

from featapp.data.dataset import Dataset
from featapp.stats.analysis import load_or_scan
from tests.e2e.steps import SLOW, no_exception, shot, wait_until
from tests.helpers import browsing

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def classes_url(tmp_path_factory, dataset, model):
    work = tmp_path_factory.mktemp("e2e-classes")
    root = work / "photos"
    for image in dataset.sample("test", per_class=4, seed=6):
        target = root / "test" / image.class_name / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    stats = load_or_scan(model, Dataset(root), "test", work / "cache")
    env = browsing.server_env(
        FEATAPP_CACHE_DIR=str(work / "cache"), FEATAPP_DATA_DIR=str(root), FEATAPP_SNAPSHOTS=str(work / "none")
    )
    with browsing.streamlit_server(work / "streamlit.log", env) as url:
        yield url, stats


def sidebar_caption(page) -> str:
    return page.locator('[data-testid="stSidebar"] [data-testid="stImage"]').first.inner_text()


def test_the_map_shows_thumbnails_and_a_click_makes_the_photo_current(classes_url, page):
    url, stats = classes_url
    page.goto(url + "/classes")
    page.get_by_text("What tells a cat from a dog").first.wait_for(timeout=SLOW)
    page.get_by_text("its top photos of each class").first.wait_for(timeout=SLOW)
    no_exception(page)
    shot(page, "classes-channels")

    page.get_by_role("tab", name="Map of the feature space").click()
    page.get_by_text("photos nearest to the current image").first.wait_for(timeout=SLOW)
    symbols = page.locator('[data-testid="stVegaLiteChart"] svg g.mark-symbol').first.locator("path")
    wait_until(lambda: symbols.count() == len(stats), what="one point per scanned photo")
    before = sidebar_caption(page)
    names = {path.name for path in stats.paths}
    for number in range(symbols.count()):
        symbols.nth(number).hover(force=True)
        tooltip = page.locator("#vg-tooltip-element.visible")
        try:
            tooltip.wait_for(timeout=2000)
        except Exception:  # noqa: BLE001 - a point hidden under another: try the next one
            continue
        text = tooltip.inner_text()
        shown = next((name for name in names if name in text), None)
        if shown is None or shown in before:
            continue
        source = tooltip.locator("img").first.get_attribute("src")
        assert source.startswith("data:image/jpeg;base64,")
        shot(page, "classes-map-hover")
        symbols.nth(number).click(force=True)
        wait_until(lambda shown=shown: shown in sidebar_caption(page), what="the clicked photo to become current")
        no_exception(page)
        shot(page, "classes-map-clicked")
        break
    else:
        pytest.fail("no point on the map showed a photo's tooltip")

    page.get_by_role("tab", name="Health").click()
    page.get_by_text("How much of each layer is alive").first.wait_for(timeout=SLOW)
    no_exception(page)
