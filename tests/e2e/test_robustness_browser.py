"""The real server, driven by Debian's headless Chromium: privacy of uploads, the upload
limit, and a broken model file (issue 5).

* Photos uploaded through the browser (the real HTTP upload path) leave nothing on disk
  and nothing in the server's log, even at ``--logger.level debug``: every file modified
  during the test, under the repository, the server's temp folder, home and cache
  folders, ``/tmp`` and ``/dev/shm``, is searched for a random marker hidden in the photo,
  its file name and a row of its pixels. The browser's own profile folder is the
  student's machine, not the server's, and is not searched. A file without a name (an
  ``O_TMPFILE``, as Starlette's upload spool makes) cannot be found this way:
  ``test_browser.py::test_a_large_upload_never_touches_the_disk`` covers that.
* A file over the 10 MB upload limit is refused in the browser with a message, and the
  session goes on.
* A missing or damaged model file gives the fix-it page on every URL, without a
  traceback, and a reload after the fix brings the app back.

Needs ``apt-get install -y chromium`` (never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featapp.engine.images import prepare_image
from tests.engine.test_broken_model import BROKEN_MODELS, make_broken_model
from tests.helpers import browsing
from tests.helpers import imagefactory as factory
from tests.helpers.appmodels import COMMITTED_MODEL
from tests.helpers.traces import Secret, default_roots, find_traces

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXCEPTION = '[data-testid="stException"]'
# The Feature map's server-drawn view (its overlay toggle is a Streamlit widget); the
# browser-drawn default has its own walk, tests/e2e/test_map_explorer_browser.py.
SERVER_MAP_VIEW = "server"
SLOW = 90_000
# Playwright's Chromium profile and artifact folders (in /tmp): the student's side.
BROWSER_FOLDERS = ("playwright_chromiumdev_profile", "playwright-artifacts", "playwright_firefoxdev")


@contextlib.contextmanager
def streamlit_server(work: Path, env: dict[str, str], *flags: str) -> Iterator[tuple[str, Path]]:
    """``streamlit run`` on a free port of 127.0.0.1 with its own temp, home and cache
    folders under ``work``; yields its URL and its log file (complete once stopped)."""
    for name in ("tmp", "home", "cache"):
        (work / name).mkdir(parents=True, exist_ok=True)
    server_env = browsing.server_env(
        FEATAPP_MAP_VIEW=SERVER_MAP_VIEW,
        TMPDIR=str(work / "tmp"),
        HOME=str(work / "home"),
        FEATAPP_CACHE_DIR=str(work / "cache"),
        FEATAPP_SNAPSHOTS=str(work / "no-snapshots"),
        **env,
    )
    log_path = work / "server.log"
    with browsing.streamlit_server(log_path, server_env, flags) as url:
        yield url, log_path


def no_exception(page) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()


def open_own_photo_tab(page) -> None:
    page.get_by_role("tab", name="Your photo or the camera").click()


def upload_in_browser(page, name: str, data: bytes, mime: str) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": mime, "buffer": data}
    )


def test_browser_uploads_leave_no_trace_on_the_server(page, tmp_path, data_dir, model):
    since = time.time() - 1
    secrets = [Secret.new(".png"), Secret.new(".jpg"), Secret.new(".jpg")]
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 256, (200, 260, 3), dtype=np.uint8) for _ in secrets]
    files = [
        factory.with_marker(factory.encode(Image.fromarray(pictures[0]), "PNG"), secrets[0].marker),
        factory.with_marker(factory.encode(Image.fromarray(pictures[1]), "JPEG", quality=90), secrets[1].marker),
        # Refused (cut off): a bad upload's bytes must not be kept either.
        factory.with_marker(factory.encode(Image.fromarray(pictures[2]), "JPEG", quality=90), secrets[2].marker)[:3000],
    ]
    pixel_rows = [prepare_image(data, model)[75].tobytes() for data in files[:2]]
    with streamlit_server(tmp_path, {"FEATAPP_DATA_DIR": str(data_dir)}, "--logger.level", "debug") as (url, log):
        page.goto(url)
        page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
        open_own_photo_tab(page)
        for secret, data in zip(secrets[:2], files[:2], strict=True):
            upload_in_browser(
                page, secret.filename, data, "image/png" if secret.filename.endswith("png") else "image/jpeg"
            )
            page.get_by_text(f"Current image: {secret.filename} (your upload)").wait_for(timeout=SLOW)
            for name, ready in (
                ("Feature map", "Lay the map over the photo"),
                ("Layer grid", "One tile is one channel"),
            ):
                page.locator('[data-testid="stSidebarNavLink"]', has_text=name).first.click()
                page.get_by_text(ready).first.wait_for(timeout=SLOW)
                no_exception(page)
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Gallery").first.click()
            page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
            open_own_photo_tab(page)
        upload_in_browser(page, secrets[2].filename, files[2], "image/jpeg")
        page.get_by_text(f"'{secrets[2].filename}' cannot be used").wait_for(timeout=SLOW)
        no_exception(page)
    log_text = log.read_text(errors="replace")
    assert "Runtime state:" in log_text  # a debug-level line: the server did log at debug level
    for secret in secrets:
        assert secret.filename not in log_text and secret.marker.decode() not in log_text

    roots = default_roots(tmp_path)
    needles = [n for secret in secrets for n in secret.needles] + pixel_rows
    hits = find_traces(needles, since, roots, skip=BROWSER_FOLDERS)
    assert hits == {}, f"an upload reached the server's disk: {hits}"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, data_dir):
    with streamlit_server(tmp_path_factory.mktemp("server"), {"FEATAPP_DATA_DIR": str(data_dir)}) as (url, _):
        yield url


def open_gallery(page, url: str) -> str:
    """Open the app; returns the current-image line."""
    page.goto(url)
    page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW)
    return page.get_by_text("Current image:").first.inner_text()


def test_a_file_over_the_upload_limit_is_refused_in_the_browser(page, app_url):
    big = factory.png(factory.noisy(2048, 1800, seed=3))  # about 11 MB, over the 10 MB limit
    assert len(big) > 10 * 2**20
    current = open_gallery(page, app_url)
    open_own_photo_tab(page)
    upload_in_browser(page, "big-photo.png", big, "image/png")
    # Streamlit's uploader refuses it before sending it: the limit comes from .streamlit/config.toml.
    page.get_by_text("File must be 10.0MB or smaller").wait_for(timeout=SLOW)
    no_exception(page)
    assert page.get_by_text("Current image:").first.inner_text() == current
    small = factory.encode(Image.fromarray(np.full((60, 80, 3), 200, np.uint8)), "PNG")
    upload_in_browser(page, "fine.png", small, "image/png")
    page.get_by_text("Current image: fine.png (your upload)").wait_for(timeout=SLOW)
    no_exception(page)


def test_a_file_name_is_shown_as_it_is(page, app_url):
    name = "cat *final* [v2] $5.png"
    open_gallery(page, app_url)
    open_own_photo_tab(page)
    photo = factory.encode(Image.fromarray(np.full((60, 80, 3), 90, np.uint8)), "PNG")
    upload_in_browser(page, name, photo, "image/png")
    page.get_by_text("(your upload)").first.wait_for(timeout=SLOW)
    assert f"Current image: {name} (your upload)" in page.locator('[data-testid="stMain"]').inner_text()
    assert f"{name} · your upload" in page.locator('[data-testid="stSidebar"]').inner_text()


def _remove(path: Path) -> None:
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


def test_a_broken_model_gives_the_fix_it_page_on_every_url(page, tmp_path, data_dir):
    """One server; the model file is broken in each way in turn (the app looks at the file
    again on every page load), then fixed."""
    model_path = tmp_path / "model.onnx"
    env = {"FEATAPP_DATA_DIR": str(data_dir), "FEATAPP_MODEL": str(model_path)}
    with streamlit_server(tmp_path / "server", env) as (url, log):
        for problem, (_, message) in BROKEN_MODELS.items():
            _remove(model_path)
            make_broken_model(problem, model_path)
            for path in ("", "/feature_map"):
                page.goto(url + path)
                page.get_by_role("heading", name="featapp cannot start").wait_for(timeout=SLOW)
                page.get_by_text("Then reload this page").wait_for(timeout=SLOW)  # the page's last line
                text = page.locator('[data-testid="stMain"]').inner_text()
                assert message in text, (problem, text)
                assert "How to fix it" in text and "FEATAPP_MODEL" in text
                assert "Traceback" not in text and 'File "' not in text
                no_exception(page)
        # Fix the file and reload: the app comes back without a restart.
        _remove(model_path)
        model_path.write_bytes(COMMITTED_MODEL.read_bytes())
        page.reload()  # the last URL was the feature map's
        page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
        no_exception(page)
    assert "Traceback" not in log.read_text(errors="replace")
