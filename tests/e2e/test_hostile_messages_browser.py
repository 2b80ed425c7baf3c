"""Hostile messages from inside the map explorer's frame, in Debian's headless Chromium: a
student's console can post any value as the component's report. Whatever is posted, the page
and every later page show no exception, and the view stays the student's."""

from __future__ import annotations

import json
import random

import pytest

from tests.e2e.steps import SLOW, channel_picture_part, no_exception, open_page, photos_app, shot, wait_until

pytestmark = pytest.mark.e2e

FRAME = 'iframe[src*="map_explorer"]'  # titled by its own script once it runs

GOOD = {
    "layer_name": "conv2d",
    "channel": 1,
    "colours": "blues4",
    "scaling": "per map",
    "fixed_low": 0,
    "fixed_high": 1,
    "cell": None,
    "overlay": False,
}

# JavaScript expressions for values a frame can post (structured clone, then the page's
# JSON.stringify): each broke a page before the guard and the report's bounds.
ADVERSARIAL = {
    "nested 1,000 deep": "(() => { let v = []; for (let i = 0; i < 1000; i++) v = [v]; return v; })()",
    "nested 900 deep": "(() => { let v = {}; for (let i = 0; i < 900; i++) v = {a: v}; return v; })()",
    "a 10 MB junk key": "({...GOOD, junk: 'x'.repeat(10_000_000)})",
    "a huge fixed range": "({...GOOD, fixed_high: 1e308, fixed_low: -1e308})",
    "lists where strings go": "({...GOOD, colours: ['viridis'], scaling: {a: 1}, layer_name: ['conv2d']})",
    "a channel past the layer": "({...GOOD, channel: 2 ** 53})",
}


def random_reports(count: int, seed: int = 28) -> list[dict]:
    """Reports with random values in random fields, the same on every run."""
    rng = random.Random(seed)
    values = [None, True, -1, 0, 7, 33, 2**60, 1.5, -1e300, "", "conv2d", "viridis", [], [1, 2], [[1]], {"a": 1}]
    reports = []
    for _ in range(count):
        report = dict(GOOD)
        for key in rng.sample(sorted(GOOD) + ["junk", "first", "order"], rng.randint(1, 4)):
            report[key] = rng.choice(values)
        reports.append(report)
    return reports


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, data_dir):
    yield from photos_app(tmp_path_factory.mktemp("hostile"), data_dir)


def explorer_frame(page):
    page.frame_locator(FRAME).locator("#map").wait_for(timeout=SLOW)
    return wait_until(lambda: next((f for f in page.frames if "map_explorer" in f.url), None), 30, "the frame")


def post(frame, expression: str) -> None:
    """Post ``expression``'s value as the component's value, from inside its frame."""
    frame.evaluate(
        "([good, expression]) => { const GOOD = good; const value = eval('(' + expression + ')');"
        " window.parent.postMessage({isStreamlitMessage: true, type: 'streamlit:setComponentValue',"
        " value, dataType: 'json'}, '*'); }",
        [GOOD, expression],
    )


def settled(page) -> None:
    """Wait for the rerun a message started to finish."""
    page.wait_for_timeout(800)
    wait_until(lambda: page.locator('[data-testid="stStatusWidget"]').count() == 0, 60, "the rerun")


def test_hostile_and_random_reports_break_no_page(app_url, page):
    page.goto(app_url + "/feature_map")
    page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    frame = explorer_frame(page)
    for expression in ADVERSARIAL.values():
        post(frame, expression)
        settled(page)
        no_exception(page)
    for report in random_reports(20):
        post(frame, json.dumps(report))
    settled(page)
    no_exception(page)
    shot(page, "hostile_01_after_reports")
    # The last posted value is still the component's and is sent again with each rerun.
    post(frame, ADVERSARIAL["nested 1,000 deep"])
    settled(page)
    open_page(page, "Layer grid")
    settled(page)
    no_exception(page)
    open_page(page, "Feature map")
    settled(page)
    no_exception(page)
    channel_picture_part(page).wait_for(timeout=SLOW)
