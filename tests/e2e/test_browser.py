"""End to end: ``streamlit run`` on 127.0.0.1, driven by Playwright in Debian's headless Chromium.

One walk through the app as a student would take it: open it, pick a gallery photo,
upload a photo (and a bad file), change layer and channel, click a cell, scrub the
training snapshots, open the grid and click a tile. It checks that the heatmap and the
grid really change in the browser and that no exception element ever appears.
Screenshots go to ``test-artifacts/e2e/`` (git-ignored): look at them.

Needs ``apt-get install -y chromium`` (never ``playwright install``).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.steps import (
    SLOW,
    changed_from,
    chart_pixels,
    choose,
    no_exception,
    open_page,
    png_bytes,
    running_app,
    shot,
    tile_urls,
    wait_until,
)
from tests.helpers import browsing

pytestmark = pytest.mark.e2e

# These steps drive the Feature map's server-drawn view (a Vega-Lite chart, rerun per change);
# the browser-drawn default has its own walk, tests/e2e/test_map_explorer_browser.py.
SERVER_MAP_VIEW = "server"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, data_dir):
    from tests.helpers.appmodels import snapshot_folder

    work = tmp_path_factory.mktemp("e2e")
    snapshots = snapshot_folder(work / "snapshots", {0: 11, 3: None}, best=3)
    env = browsing.server_env(
        FEATAPP_MAP_VIEW=SERVER_MAP_VIEW,
        FEATAPP_CACHE_DIR=str(work / "cache"),
        FEATAPP_DATA_DIR=str(data_dir),
        FEATAPP_SNAPSHOTS=str(snapshots),
    )
    with running_app(work, env) as url:
        yield url


def test_a_student_walks_through_the_app(app_url, page, dataset):
    # 1. Open the app: the gallery with its 20 photos.
    page.goto(app_url)
    page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
    looks = page.get_by_role("button", name="Look inside")
    wait_until(lambda: looks.count() >= 20, SLOW / 1000, "the gallery's buttons")
    page.get_by_text("right; the ones it gets wrong are marked").wait_for(timeout=SLOW)
    shot(page, "01_gallery")
    no_exception(page)

    # 2. Pick a gallery photo: it becomes the current image in the sidebar.
    chosen = dataset.sample("test", per_class=10, seed=0)[12]
    looks.nth(12).click()
    page.get_by_text(f"Current image: {chosen.name} (test)").wait_for(timeout=SLOW)
    assert chosen.name in page.locator('[data-testid="stSidebar"]').inner_text()
    no_exception(page)

    # 3. A bad file gives a clear error, then a good photo is taken.
    page.get_by_role("tab", name="Your photo or the camera").click()
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    uploader.set_input_files({"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo at all"})
    page.get_by_text("'broken.jpg' cannot be used").wait_for(timeout=SLOW)
    page.get_by_text("'broken.jpg' cannot be used").scroll_into_view_if_needed()
    shot(page, "02_bad_upload")
    no_exception(page)
    stripes = np.zeros((240, 320, 3), np.uint8)
    stripes[:, ::24] = (255, 200, 0)
    stripes[::30, :] = (0, 90, 255)
    uploader.set_input_files({"name": "stripes.png", "mimeType": "image/png", "buffer": png_bytes(stripes)})
    page.get_by_text("Current image: stripes.png (your upload)").wait_for(timeout=SLOW)
    shot(page, "03_upload")
    no_exception(page)

    # 4. The feature map of the upload: change the channel, then the layer.
    open_page(page, "Feature map")
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.wait_for(timeout=SLOW)
    page.wait_for_timeout(1500)
    first_map = chart_pixels(page)
    shot(page, "04_feature_map")
    page.locator('[data-testid="stNumberInputStepUp"]').first.click()
    wait_until(lambda: changed_from(first_map)(page), 60, "the heatmap to show channel 2")
    assert page.get_by_label("Channel (1 to 32)").input_value() == "2"
    second_map = chart_pixels(page)
    choose(page, "Layer", "3 · conv2d_1")
    wait_until(lambda: changed_from(second_map)(page), 60, "the heatmap to show layer 3")
    page.wait_for_timeout(800)
    shot(page, "05_feature_map_layer3")
    no_exception(page)

    # 5. Click a cell: its receptive field is outlined on the photo.
    photo = page.locator('[data-testid="stImage"] img').nth(1)  # [0] is the sidebar's
    photo_before = photo.get_attribute("src")
    box = chart.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.45)
    page.get_by_role("button", name="Clear the chosen cell").wait_for(timeout=SLOW)
    wait_until(lambda: photo.get_attribute("src") != photo_before, 30, "the photo to show the box")
    page.wait_for_timeout(800)
    shot(page, "06_receptive_field")
    no_exception(page)

    # 6. Training progress: the same map at epoch 0.
    before_snapshot = chart_pixels(page)
    page.locator("input[type=range][aria-label='Training progress']").focus()
    page.keyboard.press("Home")
    page.get_by_text("epoch 0 (initial weights)").first.wait_for(timeout=SLOW)
    wait_until(lambda: changed_from(before_snapshot)(page), 60, "the heatmap at epoch 0")
    page.get_by_text("This map across training").click()  # closed, and not computed, until opened
    page.get_by_text("Left to right: epoch 0").wait_for(timeout=SLOW)
    page.wait_for_timeout(800)
    shot(page, "07_epoch0")
    page.locator("input[type=range][aria-label='Training progress']").focus()
    page.keyboard.press("End")
    page.wait_for_timeout(1500)
    no_exception(page)

    # 7. The layer grid: tiles are pictures; another layer gives other pictures.
    open_page(page, "Layer grid")
    page.get_by_text("One tile is one channel").wait_for(timeout=SLOW)
    wait_until(lambda: len(tile_urls(page)) == 64, SLOW / 1000, "64 tiles of layer 3")
    layer3_tiles = tile_urls(page)
    assert all(url.startswith("data:image/png;base64,") for url in layer3_tiles)
    shot(page, "08_grid_layer3")
    choose(page, "Layer", "6 · max_pooling2d_2")
    wait_until(lambda: len(tile_urls(page)) == 128, SLOW / 1000, "the 128 tiles of layer 6")
    assert set(tile_urls(page)).isdisjoint(layer3_tiles)
    page.wait_for_timeout(800)
    shot(page, "09_grid_layer6")
    no_exception(page)

    # 8. Clicking a tile opens that channel on the feature map page.
    page.locator('[data-testid="stVegaLiteChart"] svg image').nth(4).click()
    page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    wait_until(lambda: page.get_by_label("Channel (1 to 128)").count() == 1, 30, "the channel input of layer 6")
    assert page.get_by_label("Channel (1 to 128)").input_value() == "5"
    page.wait_for_timeout(1000)
    shot(page, "10_tile_opened")
    no_exception(page)

    # 9. The last two pages render too.
    open_page(page, "One neuron, many images")
    page.get_by_text("The photos it likes most").first.wait_for(timeout=SLOW)
    page.wait_for_timeout(2000)
    shot(page, "11_neuron")
    no_exception(page)
    open_page(page, "Model")
    page.get_by_text("What layer 1 looks for").wait_for(timeout=SLOW)
    page.get_by_role("button", name="Compute the occlusion map (a few seconds)").click()
    page.get_by_text("laid over the photo").wait_for(timeout=SLOW)
    page.wait_for_timeout(1000)
    shot(page, "12_model")
    no_exception(page)


def test_an_instructor_points_the_app_at_sample_photos_through_secrets(tmp_path, browser, dataset):
    """On Streamlit Community Cloud settings come from the app's secrets: root-level keys
    become environment variables. Here FEATAPP_DATA_DIR is only in a secrets file."""
    samples = tmp_path / "samples"
    chosen = dataset.sample("test", per_class=3, seed=9)
    for item in chosen:
        target = samples / "test" / item.class_name / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(item.path)  # links, not copies of the shared photos
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'FEATAPP_DATA_DIR = "{samples}"\n', encoding="utf-8")
    env = browsing.server_env(
        FEATAPP_MAP_VIEW=SERVER_MAP_VIEW,
        FEATAPP_CACHE_DIR=str(tmp_path / "cache"),
        FEATAPP_SNAPSHOTS=str(tmp_path / "none"),
    )
    with running_app(tmp_path, env, "--secrets.files", str(secrets)) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        try:
            page.goto(url)
            page.get_by_text("to see the same 6 photos on any machine").wait_for(timeout=SLOW)
            looks = page.get_by_role("button", name="Look inside")
            wait_until(lambda: looks.count() >= 6, SLOW / 1000, "the six sample photos")
            wait_until(
                lambda: chosen[0].name in page.locator('[data-testid="stSidebar"]').inner_text(), 30, "the sidebar"
            )
            shot(page, "13_instructor_samples")
            no_exception(page)
        finally:
            context.close()


def test_a_large_upload_never_touches_the_disk(tmp_path, browser):
    """Starlette spools an upload over 1 MB to a temporary file; ``featapp.app.server``
    raises that limit to the upload limit. Here the server cannot create a temporary file
    at all (``tempfile.tempdir`` points nowhere, set by a ``sitecustomize`` module), so a
    photo spooled to disk would fail to arrive instead of passing unnoticed: on Linux the
    spool file is unnamed, and no directory listing would ever show it."""
    no_temp_files = tmp_path / "no_temp_files"
    no_temp_files.mkdir()
    (no_temp_files / "sitecustomize.py").write_text(
        f"import tempfile\ntempfile.tempdir = {str(tmp_path / 'does-not-exist')!r}\n", encoding="utf-8"
    )
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    photo = png_bytes(noise)
    assert 2 * 1024 * 1024 < len(photo) < 10 * 1024 * 1024  # over Starlette's spool, under maxUploadSize

    env = browsing.server_env(
        FEATAPP_MAP_VIEW=SERVER_MAP_VIEW,
        FEATAPP_CACHE_DIR=str(tmp_path / "cache"),
        FEATAPP_SNAPSHOTS=str(tmp_path / "none"),
        PYTHONPATH=str(no_temp_files),
    )
    with running_app(tmp_path, env) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        try:
            page.goto(url)
            page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
            page.get_by_role("tab", name="Your photo or the camera").click()
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                {"name": "noise.png", "mimeType": "image/png", "buffer": photo}
            )
            page.get_by_text("Current image: noise.png (your upload)").wait_for(timeout=SLOW)
            no_exception(page)
        finally:
            context.close()
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()


def test_the_app_works_under_a_url_path_behind_a_proxy(tmp_path, browser, data_dir):
    """A course server often puts the app behind a proxy at a path of its own
    (``--server.baseUrlPath``): the server-start warm-up (``st.App``), the pages, the
    photos and an upload must all work there."""
    env = browsing.server_env(
        FEATAPP_MAP_VIEW=SERVER_MAP_VIEW,
        FEATAPP_CACHE_DIR=str(tmp_path / "cache"),
        FEATAPP_DATA_DIR=str(data_dir),
        FEATAPP_SNAPSHOTS=str(tmp_path / "none"),
    )
    with running_app(tmp_path, env, base_path="course/featapp") as url:
        assert url.endswith("/course/featapp")
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        try:
            page.goto(url)
            page.get_by_text("right; the ones it gets wrong are marked").wait_for(timeout=SLOW)
            page.wait_for_function(browsing.PHOTOS_SHOWN, polling="raf", timeout=SLOW)
            page.get_by_role("tab", name="Your photo or the camera").click()
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                {"name": "grey.png", "mimeType": "image/png", "buffer": png_bytes(np.full((80, 80, 3), 128, np.uint8))}
            )
            page.get_by_text("Current image: grey.png (your upload)").wait_for(timeout=SLOW)
            open_page(page, "Feature map")
            page.locator('[data-testid="stVegaLiteChart"] canvas').first.wait_for(timeout=SLOW)
            assert page.url.startswith(url + "/")
            shot(page, "15_under_a_url_path")
            no_exception(page)
        finally:
            context.close()
    log = (tmp_path / "streamlit.log").read_text()
    assert "featapp: model loaded" in log and "Traceback" not in log
