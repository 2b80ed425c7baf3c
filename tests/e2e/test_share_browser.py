"""The instructor's view to the class, in Debian's headless Chromium: a view set on the Feature
map (a photo, a layer, a channel, colours and scale), "Share this view" opened from the keyboard,
its link read from the page, and that link opened in a fresh browser context (another student's
browser: no cookies, no session) shows the same view. Screenshots go to ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import urllib.parse

import pytest

from tests.e2e.steps import SLOW, channel_picture_part, choose, no_exception, photos_app, shot, wait_until

pytestmark = pytest.mark.e2e

FRAME = 'iframe[src*="map_explorer"]'
SIDEBAR = '[data-testid="stSidebar"]'


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, data_dir):
    yield from photos_app(tmp_path_factory.mktemp("share"), data_dir)


def explorer(page):
    frame = page.frame_locator(FRAME)
    frame.locator("#map").wait_for(timeout=SLOW)
    wait_until(lambda: frame.locator("body").get_attribute("data-draws") not in (None, "0"), 60, "the first draw")
    return frame


def shared_link(page) -> str:
    return page.locator(f'{SIDEBAR} [data-testid="stCode"] code').inner_text().strip()


def the_view(page) -> dict:
    """What a student sees of the view: the page's title, the layer chooser, the explorer's
    title, layer, channel, colours and scale, its map's pixels, and the current image's caption."""
    frame = explorer(page)
    return {
        "title": page.locator("h1").first.inner_text(),
        "layer chooser": page.locator('[data-testid="stSelectbox"] input').first.input_value(),
        "explorer": frame.locator("#title").inner_text(),
        "layer": frame.locator("body").get_attribute("data-layer"),
        "channel": frame.locator("body").get_attribute("data-channel"),
        "viridis": frame.get_by_role("radio", name="Viridis, continuous").is_checked(),
        "per layer": frame.get_by_role("radio", name="per layer (all channels, this image)").is_checked(),
        "image": page.locator(f'{SIDEBAR} [data-testid="stImageCaption"]').first.inner_text(),
        "map": frame.locator("#map").evaluate("c => c.toDataURL()"),
        "range": frame.locator("#range-caption").inner_text(),
    }


def test_a_shared_link_opens_the_same_view_in_a_fresh_browser(app_url, browser, dataset):
    photo = dataset.sample("test", per_class=10, seed=0)[12]  # not the default photo (the sample's first)
    instructor = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = instructor.new_page()
    page.goto(app_url)
    page.get_by_role("button", name=f"Look inside {photo.name}", exact=True).click(timeout=SLOW)
    wait_until(lambda: photo.name in page.locator(f"{SIDEBAR} [data-testid='stImageCaption']").first.inner_text())

    # The view: layer 3, channel 6, viridis, per layer.
    page.locator('[data-testid="stSidebarNavLink"]', has_text="Feature map").first.click()
    frame = explorer(page)
    choose(page, "Layer", "3 · conv2d_1")
    wait_until(lambda: frame.locator("body").get_attribute("data-layer") == "conv2d_1", 60, "layer 3")
    frame.locator("#channel-number").fill("5")
    frame.get_by_label("Viridis, continuous").check()
    frame.get_by_label("per layer (all channels, this image)").check()
    channel_picture_part(page, 5).wait_for(timeout=SLOW)

    # "Share this view", opened from the keyboard.
    summary = page.locator(f"{SIDEBAR} summary", has_text="Share this view")
    summary.focus()
    page.keyboard.press("Enter")
    code = page.locator(f'{SIDEBAR} [data-testid="stCode"]')
    code.wait_for(timeout=SLOW)
    url = wait_until(lambda: "channel=5" in shared_link(page) and shared_link(page), 30, "the link")
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{app_url}/feature_map"
    assert urllib.parse.parse_qs(parts.query) == {
        "photo": [photo.reference],
        "layer": ["conv2d_1"],
        "channel": ["5"],
        "colours": ["viridis"],
        "scale": ["per-layer"],
    }
    qr = page.locator(f'{SIDEBAR} img[alt^="QR code of the link"]')
    assert qr.get_attribute("alt") == f"QR code of the link {url}"
    assert qr.evaluate("img => img.complete && img.naturalWidth") > 100
    # This server listens on 127.0.0.1: the box says students need another address.
    assert "This address works only on this computer" in page.locator(SIDEBAR).inner_text()

    # The link follows the view: a channel changed in the browser is in the link once it settles.
    frame.locator("#next").click()
    url = wait_until(lambda: "channel=6" in shared_link(page) and shared_link(page), 30, "the link to follow")
    channel_picture_part(page, 6).wait_for(timeout=SLOW)
    qr.scroll_into_view_if_needed()
    shot(page, "share_01_instructor")
    instructor_view = the_view(page)
    assert instructor_view["explorer"] == "Layer 3 (conv2d_1), channel 6"

    # The projector's code: a large picture in a dialog, opened and closed from the keyboard.
    page.get_by_role("button", name="Show the code large (for the projector)").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    large = dialog.locator(f'img[alt="QR code of the link {url}"]')
    large.wait_for(timeout=SLOW)
    assert large.evaluate("img => img.naturalWidth") > 2 * qr.evaluate("img => img.naturalWidth")
    shot(page, "share_02_projector")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden", timeout=10_000)
    no_exception(page)

    # Another student's browser: a fresh context, nothing shared with the instructor's.
    student = browser.new_context(viewport={"width": 1400, "height": 1000})
    other = student.new_page()
    other.goto(url)
    other.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    wait_until(lambda: explorer(other).locator("body").get_attribute("data-channel") == "6", 60, "channel 6")
    shot(other, "share_03_student")
    student_view = the_view(other)
    assert student_view == instructor_view
    assert student_view["title"] == "🔥 Feature map" and student_view["layer chooser"] == "3 · conv2d_1"
    assert student_view["image"].startswith(f"{photo.name} (test)") and student_view["viridis"]
    assert student_view["per layer"]
    # The link's view was applied once: the address no longer carries it.
    wait_until(lambda: "?" not in other.url, 10, "the address to drop the link's query")
    no_exception(other)
    student.close()
    instructor.close()


def test_the_share_box_and_its_large_code_pass_axe(app_url, browser):
    """axe-core's WCAG A/AA rules on the page with "Share this view" open, and with its dialog."""
    from tests.e2e import axe_check

    axe_check.axe_or_skip()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(app_url + "/layer_grid")
    page.get_by_role("heading", name="Layer grid").wait_for(timeout=SLOW)
    page.locator(f"{SIDEBAR} summary", has_text="Share this view").click()
    qr = page.locator(f'{SIDEBAR} img[alt^="QR code of the link"]')
    qr.wait_for(timeout=SLOW)
    assert "/layer_grid?" in qr.get_attribute("alt")
    wait_until(lambda: page.locator('[data-testid="stStatusWidget"]').count() == 0, 90, "the run to end")
    found = axe_check.blocking(axe_check.violations(page))
    assert not found, axe_check.report(found)
    page.get_by_role("button", name="Show the code large (for the projector)").click()
    page.get_by_role("dialog").locator('img[alt^="QR code of the link"]').wait_for(timeout=SLOW)
    found = axe_check.blocking(axe_check.violations(page))
    assert not found, axe_check.report(found)
    no_exception(page)
    context.close()
