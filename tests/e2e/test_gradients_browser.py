"""End to end, in headless Chromium: the gradient views as a student meets them.

Model page: saliency and Grad-CAM appear over the photo after one click. Feature map page:
the channel's optimised picture, then the whole layer's grid with its progress bar.
Screenshots go to ``test-artifacts/e2e/`` (look at them).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.e2e.steps import SLOW, no_exception, open_page, running_app, shot
from tests.helpers import browsing

pytestmark = pytest.mark.e2e

# These steps drive the Feature map's server-drawn view (a Vega-Lite chart, rerun per change);
# the browser-drawn default has its own walk, tests/e2e/test_map_explorer_browser.py.
SERVER_MAP_VIEW = "server"


def _picture(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"))


def test_gradient_views_in_the_browser(tmp_path, browser, data_dir):
    env = browsing.server_env(
        FEATAPP_MAP_VIEW=SERVER_MAP_VIEW,
        FEATAPP_CACHE_DIR=str(tmp_path / "cache"),
        FEATAPP_DATA_DIR=str(data_dir),
        FEATAPP_SNAPSHOTS=str(tmp_path / "none"),
    )
    env["FEATAPP_VIS_STEPS"] = "8"
    with running_app(tmp_path, env) as url:
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.goto(url, timeout=SLOW)
        page.get_by_role("heading", name="Gallery").first.wait_for(timeout=SLOW)
        open_page(page, "Model")
        page.get_by_role("button", name="Compute saliency and Grad-CAM").click()
        saliency = page.locator('[data-testid="stImage"]', has_text="Saliency of")
        saliency.first.wait_for(timeout=SLOW)
        cam = page.locator('[data-testid="stImage"]', has_text="Grad-CAM of")
        cam.first.wait_for(timeout=SLOW)
        saliency.first.scroll_into_view_if_needed()
        no_exception(page)
        shot(page, "gradients_model_page")
        for element in (saliency.first, cam.first):
            pixels = _picture(element.locator("img"))
            assert pixels.std() > 10  # a photo with a map over it, not a blank

        open_page(page, "Feature map")
        page.get_by_role("button", name="Optimise a picture for channel 1").click()
        picture = page.locator('[data-testid="stImage"]', has_text="Channel 1: its centre cell")
        picture.first.wait_for(timeout=SLOW)
        page.get_by_role("button", name="Compute pictures for all 32 channels").click()
        grid = page.locator('[data-testid="stImage"]', has_text="All 32 channels of conv2d")
        grid.first.wait_for(timeout=SLOW)
        grid.first.scroll_into_view_if_needed()
        no_exception(page)
        shot(page, "gradients_feature_map_grid")
        tiles = _picture(grid.first.locator("img"))
        assert tiles.shape[1] > 600 and tiles.std() > 10
