"""Every student can use it (issue 27): axe-core's WCAG 2.0/2.1 A and AA rules find no
serious or critical violation on any page, in its default state and after its main
action, inside the map explorer's frame too; and a student with only a keyboard can
choose a photo, open the Feature map, change layer and channel, choose a cell and hear its
value and box, and open a Layer grid tile.

axe-core is injected by the test (``tests/e2e/axe_check.py``), never by the app. The
keyboard test uses no mouse event: only Tab, arrows, Enter and typing.
"""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.images import prepare_image
from featapp.render import LECTURE_BLUES, value_range
from featapp.render.describe import describe_map, summarise_map
from tests.e2e import axe_check
from tests.e2e.steps import SLOW, focused, no_exception, scanned_sample_app, tab_to, wait_until
from tests.helpers import browsing

pytestmark = pytest.mark.e2e

FRAME = 'iframe[src*="map_explorer"]'
HEADING = '[data-testid="stMainBlockContainer"] h1'


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, dataset, model):
    """The app on a small copy of the test split (4 photos a class, scanned), so that every
    page, the class statistics and the neuron ranking included, is ready in seconds."""
    axe_check.axe_or_skip()
    work = tmp_path_factory.mktemp("e2e-a11y")
    with scanned_sample_app(work, dataset, model) as url:
        yield url


@pytest.fixture
def page(browser):
    # The size the issue measured on: a student's laptop.
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def settle(page, explorer: str | None = None) -> None:
    """Wait for the page's title, its explorer's first draw when it has one, and the end of its run."""
    page.locator(HEADING).first.wait_for(timeout=SLOW)
    if explorer:
        page.frame_locator(FRAME).locator(f"body.{explorer}[data-draws]").wait_for(timeout=SLOW)
    wait_until(lambda: page.locator('[data-testid="stStatusWidget"]').count() == 0, 90, "the run to end")
    page.wait_for_timeout(800)


def assert_no_blocking(page, where: str) -> None:
    no_exception(page)
    found = axe_check.blocking(axe_check.violations(page))
    assert not found, f"{where}:\n{axe_check.report(found)}"


def test_axe_finds_no_serious_violation_on_any_page(app_url, page):
    # Gallery: as it opens, and after choosing a photo.
    page.goto(app_url)
    settle(page)
    assert_no_blocking(page, "Gallery")
    page.get_by_role("button", name="Look inside").nth(2).click()
    page.get_by_role("button", name="(the current image)").wait_for(timeout=SLOW)
    settle(page)
    assert_no_blocking(page, "Gallery after choosing a photo")

    # Feature map: as it opens, then with a cell chosen and the map over the photo.
    page.goto(app_url + "/feature_map")
    settle(page, "map")
    assert_no_blocking(page, "Feature map")
    frame = page.frame_locator(FRAME)
    # The lesson above the fold on a 1400 x 900 screen: the whole photo, with no scrolling.
    photo = frame.locator("#photo").bounding_box()
    assert photo["y"] + photo["height"] <= 900, photo
    frame.locator("#map").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    frame.locator("#overlay").check()
    frame.locator("#cell-text", has_text="It sees input rows").wait_for(timeout=5000)
    assert_no_blocking(page, "Feature map with a cell chosen")

    # Layer grid: as it opens, and ordered by strength with a tile focused.
    page.goto(app_url + "/layer_grid")
    settle(page, "grid")
    assert_no_blocking(page, "Layer grid")
    frame.get_by_label("max activation (strongest first)").check()
    frame.locator("#grid-buttons button[tabindex='0']").focus()
    assert_no_blocking(page, "Layer grid ordered, a tile focused")

    # One neuron: the small dataset is scanned, so it opens on the ranked photos and their boxes.
    page.goto(f"{app_url}/neuron")
    settle(page)
    assert_no_blocking(page, "One neuron, many images")

    # Cats vs dogs: each of its tabs.
    page.goto(f"{app_url}/classes")
    settle(page)
    assert_no_blocking(page, "Cats vs dogs")
    for tab in page.get_by_role("tab").all()[1:]:
        name = tab.inner_text()
        tab.click()
        settle(page)
        assert_no_blocking(page, f"Cats vs dogs, tab {name}")

    # Model: after occlusion, saliency and Grad-CAM.
    page.goto(f"{app_url}/model")
    settle(page)
    assert_no_blocking(page, "Model")
    page.get_by_role("button", name="Compute the occlusion map").click()
    page.get_by_text("laid over the photo").first.wait_for(timeout=SLOW)
    page.get_by_role("button", name="Compute saliency and Grad-CAM").click()
    page.get_by_text("Grad-CAM of").first.wait_for(timeout=SLOW)
    settle(page)
    assert_no_blocking(page, "Model after occlusion, saliency and Grad-CAM")


def test_a_student_with_only_a_keyboard(app_url, page, model):
    page.goto(app_url)
    settle(page)

    # Choose a photo: one tab stop a photo (no hidden fullscreen button), each button named after its photo.
    stops = page.evaluate(
        """() => [...document.querySelectorAll('.st-key-gallery-photos *')]
            .filter((e) => e.tabIndex >= 0 && e.offsetParent !== null && !e.disabled)
            .map((e) => e.tagName + ' ' + (e.innerText || e.getAttribute('aria-label') || ''))"""
    )
    assert stops and all(stop.startswith("BUTTON Look inside ") for stop in stops), stops
    tab_to(page, "button Look inside")
    button = tab_to(page, "button Look inside")  # the second photo: the first is the current image
    name = button.split("Look inside ", 1)[1].strip()
    page.keyboard.press("Enter")
    page.get_by_role("button", name=f"Look inside {name} (the current image)").wait_for(timeout=SLOW)

    # Open the Feature map from the page's navigation: the focus goes to its title.
    tab_to(page, "Feature map")
    page.keyboard.press("Enter")
    settle(page, "map")
    wait_until(lambda: focused(page).startswith("h1"), 10, "the focus on the page's title")
    assert "Feature map" in page.evaluate("() => document.activeElement.innerText")
    frame = page.frame_locator(FRAME)
    body = frame.locator("body")

    # Change the layer (a Streamlit selectbox: typing chooses).
    tab_to(page, "input")
    wait_until(lambda: "Layer" in page.evaluate("() => document.activeElement.getAttribute('aria-label') || ''"), 2)
    page.keyboard.type("2 · ")
    page.keyboard.press("Enter")
    layer = model.layer_names[1]
    wait_until(lambda: body.get_attribute("data-layer") == layer, 60, "layer 2")

    # Change the channel: into the frame, its channel number field.
    tab_to(page, "frame: input channel-number")
    page.keyboard.press("ArrowUp")
    wait_until(lambda: body.get_attribute("data-channel") == "2", 5, "channel 2")

    # The map: one tab stop; arrows move a cursor, Enter chooses; the value and box are said.
    tab_to(page, "frame: canvas")
    assert "Arrow keys move a cursor" in focused(page)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    cursor = frame.locator("#cursor-text")
    wait_until(lambda: cursor.inner_text().startswith("Cursor at row 2, column 2: value"), 5, "the cursor's words")
    page.keyboard.press("Enter")
    cell = frame.locator("#cell-text")
    wait_until(lambda: "Cell row 2, column 2 has value" in cell.inner_text(), 5, "the chosen cell")
    assert "It sees input rows" in cell.inner_text()
    assert frame.locator("#cell-text").get_attribute("aria-live") == "polite"
    assert frame.locator("#photo").get_attribute("data-box")

    # The map in words, in a live region.
    summary = frame.locator("#summary")
    assert summary.get_attribute("aria-live") == "polite"
    assert summary.inner_text().startswith("Layer 2, channel 2: ")
    assert "Strongest at row" in summary.inner_text() or "Dead for this image" in summary.inner_text()

    # Open a Layer grid tile: one tab stop for the grid, arrows between tiles, Enter opens.
    page.keyboard.press("Escape")  # clears the chosen cell; focus stays on the map
    tab_to(page, "Layer grid")
    page.keyboard.press("Enter")
    settle(page, "grid")
    tab_to(page, "frame: button Channel 1:")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert focused(page).startswith("frame: button Channel 3:")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    wait_until(lambda: page.frame_locator(FRAME).locator("body").get_attribute("data-channel") == "3", 60, "channel 3")
    no_exception(page)


def test_the_summary_in_the_frame_is_the_librarys(app_url, page, model, dataset):
    """The explorer's words for the first photo's map are :func:`featapp.render.describe.describe_map`'s."""
    page.goto(app_url + "/feature_map")
    settle(page, "map")
    frame = page.frame_locator(FRAME)
    layer = frame.locator("body").get_attribute("data-layer")
    sidebar = page.locator('[data-testid="stSidebar"] [data-testid="stImage"] img').first.get_attribute("alt")
    assert sidebar and sidebar.startswith("Dataset photo ")
    name = sidebar.split()[2].rstrip(",.")
    photo = next(dataset.root.rglob(name))
    channel_map = model.activations(prepare_image(photo, model)[np.newaxis])[layer][0][0]
    summary = summarise_map(channel_map, value_range(channel_map, "per map"), LECTURE_BLUES)
    wait_until(lambda: frame.locator("#summary").inner_text() != "", 5, "the summary")
    assert frame.locator("#summary").inner_text() == f"Layer 1, channel 1: {describe_map(summary)}"


@pytest.mark.parametrize("path, mode", [("feature_map", "map"), ("layer_grid", "grid")])
def test_the_explorer_reflows_at_320_css_pixels(app_url, browser, path, mode):
    """WCAG 1.4.10: at 320 CSS px the explorer needs no sideways scrolling, the photo sits
    above the map, and every control is inside the frame."""
    context = browser.new_context(viewport={"width": 320, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{app_url}/{path}")
        settle(page, mode)
        frame = next(f for f in page.frames if "map_explorer" in f.url)
        width = frame.evaluate("() => document.documentElement.clientWidth")
        assert frame.evaluate("() => document.documentElement.scrollWidth") <= width
        outside = frame.evaluate(
            """(width) => [...document.querySelectorAll('input, button:not(#grid-buttons button), canvas')]
                .filter((e) => e.offsetParent !== null)
                .filter((e) => { const r = e.getBoundingClientRect(); return r.left < 0 || r.right > width + 0.5; })
                .map((e) => e.id || e.getAttribute('aria-label') || e.tagName)""",
            width,
        )
        assert outside == []
        if mode == "map":
            photo = frame.locator("#photo").bounding_box()
            drawn = frame.locator("#map").bounding_box()
            assert photo["y"] + photo["height"] <= drawn["y"], "the photo should be above the map"
        assert_no_blocking(page, f"{path} at 320 px")
    finally:
        context.close()


def test_the_training_slider_moves_with_the_keyboard(browser, tmp_path, data_dir):
    """The issue's last keyboard step: with the committed snapshots, Tab to "Training progress"
    on the Feature map and move it with a key; the map then shows an earlier epoch."""
    env = browsing.server_env(
        FEATAPP_CACHE_DIR=str(tmp_path / "cache"),
        FEATAPP_DATA_DIR=str(data_dir),
        FEATAPP_SNAPSHOTS=str(browsing.REPO_ROOT / "models" / "snapshots"),
    )
    with browsing.streamlit_server(tmp_path / "streamlit.log", env) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(f"{url}/feature_map")
        settle(page, "map")
        tab_to(page, "input Training progress")  # the slider's own range input, after its help button
        page.keyboard.press("Home")  # the first option: epoch 0
        page.get_by_text("Showing epoch 0").first.wait_for(timeout=SLOW)
        assert "epoch 0" in page.evaluate("() => document.activeElement.getAttribute('aria-valuetext') || ''")
        no_exception(page)
        context.close()
