"""Issue 27's small layout faults, in Chromium: a file name in a caption is never broken
mid-name ("dog.1880.jp / g"), and the map explorer's frame draws its text in the app's own
font (the theme's, which Streamlit sends with each render), not the browser's default."""

from __future__ import annotations

import pytest

from tests.e2e.steps import SLOW, no_exception, scanned_sample_app, wait_until

pytestmark = pytest.mark.e2e

FRAME = 'iframe[src*="map_explorer"]'
HEADING = '[data-testid="stMainBlockContainer"] h1'

# Every visible file name in the page's text, with the number of lines it is drawn on.
FILE_NAME_LINES = r"""() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const name = /[\w-]+(?:\.[\w-]+)*\.(?:jpe?g|png|webp|onnx|npz)\b/gi;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!element || !element.checkVisibility({ visibilityProperty: true })) continue;
    if (element.closest('[data-testid="stSidebar"][aria-expanded="false"]')) continue;
    for (const match of node.data.matchAll(name)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
      if (lines.size) found.push([match[0], lines.size]);
    }
  }
  return found;
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, dataset, model):
    """The app on 4 photos a class of the test split, scanned, so the Cats vs dogs page shows photos."""
    work = tmp_path_factory.mktemp("e2e-names")
    with scanned_sample_app(work, dataset, model) as url:
        yield url


def settle(page) -> None:
    page.locator(HEADING).first.wait_for(timeout=SLOW)
    wait_until(lambda: page.locator('[data-testid="stStatusWidget"]').count() == 0, 90, "the run to end")
    page.wait_for_timeout(800)


@pytest.mark.parametrize("path, width", [("", 320), ("classes", 1400), ("classes", 700), ("neuron", 1400)])
def test_file_names_are_never_broken_mid_name(app_url, browser, path, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{app_url}/{path}")
        settle(page)
        if width < 400:  # the sidebar's current image and its caption, opened as a phone user would
            page.locator('[data-testid="stExpandSidebarButton"]').first.click()
            page.wait_for_timeout(800)
        no_exception(page)
        names = page.evaluate(FILE_NAME_LINES)
        assert any(name.endswith(".jpg") for name, _ in names), names
        assert [name for name, lines in names if lines > 1] == []
        # A name wider than its narrow column is cut inside its caption, never drawn over the next one.
        spilling = page.evaluate(
            """() => [...document.querySelectorAll('[data-testid="stImageCaption"]')]
              .filter((c) => c.scrollWidth > c.clientWidth + 1 && getComputedStyle(c).overflowX !== 'hidden')
              .map((c) => c.textContent)"""
        )
        assert spilling == []
    finally:
        context.close()


def test_the_explorer_is_drawn_in_the_apps_font(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{app_url}/feature_map")
        settle(page)
        page.frame_locator(FRAME).locator("body.map[data-draws]").wait_for(timeout=SLOW)
        frame = next(f for f in page.frames if "map_explorer" in f.url)
        app_font = page.evaluate("() => getComputedStyle(document.body).fontFamily")
        family = app_font.split(",")[0].strip().strip("\"'")
        assert frame.evaluate("() => getComputedStyle(document.body).fontFamily").startswith(app_font.split(",")[0])
        # Named is not enough: the frame must hold the font itself, or the browser falls back to its default.
        loaded = frame.evaluate(
            """async (family) => { await document.fonts.ready;
                return [...document.fonts].some((f) => f.family.replace(/["']/g, '') === family && f.status === 'loaded'); }""",
            family,
        )
        assert loaded, f"the frame names {family} but does not have it"
        for selector in ("label", "button", "input"):
            control = frame.locator(selector).first
            if control.count():
                assert control.evaluate("(e) => getComputedStyle(e).fontFamily").startswith(app_font.split(",")[0])
    finally:
        context.close()


def test_the_model_pages_tables_show_every_row_and_column_at_1400_px(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{app_url}/model")
        settle(page)
        tables = page.locator('[data-testid="stDataFrame"]')
        assert tables.count() >= 2
        for index in range(tables.count()):
            tables.nth(index).scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            scroller = tables.nth(index).locator(".dvn-scroller").first
            # No column cut: the grid needs no sideways scrolling; no blank row: none to scroll down to either.
            sizes = scroller.evaluate("(e) => [e.scrollWidth, e.clientWidth, e.scrollHeight, e.clientHeight]")
            assert sizes[0] <= sizes[1], f"table {index + 1} cuts a column: {sizes}"
            assert sizes[2] <= sizes[3] + 1, f"table {index + 1} scrolls: {sizes}"
    finally:
        context.close()


def test_a_page_links_label_is_whole_at_200_percent_zoom(app_url, browser):
    """At 200% zoom a 1400 px screen is 700 CSS px: the Gallery's "Look at its feature maps" link,
    in a quarter-width column, wraps rather than losing the end of its words."""
    context = browser.new_context(viewport={"width": 700, "height": 900}, device_scale_factor=2)
    try:
        page = context.new_page()
        page.goto(app_url)
        settle(page)
        cut = page.evaluate(
            """() => [...document.querySelectorAll('[data-testid="stPageLink-NavLink"] p')]
              .filter((p) => p.scrollWidth > p.clientWidth + 1 || p.getBoundingClientRect().right > innerWidth)
              .map((p) => p.textContent)"""
        )
        assert page.get_by_text("Look at its feature maps").count() == 1
        assert cut == []
    finally:
        context.close()
