"""The browser for the end-to-end tests: Debian's headless Chromium, one per module."""

from __future__ import annotations

import os

import pytest

from tests.helpers.browsing import CHROMIUM, launch_chromium


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"Debian's chromium is missing ({CHROMIUM}): apt-get install -y chromium (.ci/run does)"
        if os.environ.get("FEATAPP_REQUIRE_BROWSER") == "1":
            pytest.fail(message)  # in CI a missing browser is a failure, not a skip
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    yield context.new_page()
    context.close()
