"""Uploads stay in memory: nothing of a student's photo reaches the disk or the logs (AppTest).

Photos carrying a unique random marker are uploaded, taken with the camera, and looked
at on every page (heatmaps, grids, downloads prepared); then every file modified since
the test started, under the repository, the cache folder, the temp folders, shared
memory and ``~/.streamlit`` / ``~/.cache``, is searched for the marker, the file name and
a row of the decoded pixels, and so is everything logged. A control file holding another
marker proves the search finds what is there. The same check against the real server and
a browser upload is in ``tests/e2e/test_robustness_browser.py``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from featapp.app.appstate import CURRENT_KEY
from tests.helpers import imagefactory as factory
from tests.helpers.apptest import go, open_app, open_tab, upload
from tests.helpers.traces import Secret, default_roots, files_modified_since, find_traces


def photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:240, 0:320]
    pixels = np.stack([rows % 256, cols % 256, (rows * cols) % 256], axis=-1).astype(np.uint8)
    return pixels ^ rng.integers(0, 32, pixels.shape, dtype=np.uint8)


def test_uploaded_and_camera_photos_leave_no_trace(app_env, caplog, capfd):
    since = time.time() - 1  # file times can be a little behind the clock
    caplog.set_level(logging.DEBUG)
    png, jpeg, camera = Secret.new(".png"), Secret.new(".jpg"), Secret.new(".jpg")
    files = {
        png: factory.with_marker(factory.encode(Image.fromarray(photo(1)), "PNG"), png.marker),
        jpeg: factory.with_marker(factory.encode(Image.fromarray(photo(2)), "JPEG", quality=92), jpeg.marker),
        camera: factory.with_marker(factory.encode(Image.fromarray(photo(3)), "JPEG", quality=92), camera.marker),
    }
    pixel_rows = []

    at = open_app()
    for secret in (png, jpeg):
        upload(at, (secret.filename, files[secret], "image/png" if secret is png else "image/jpeg"))
        current = at.session_state[CURRENT_KEY]
        assert current.title == secret.filename
        pixel_rows.append(current.array[75].tobytes())
        for page in ("feature_map", "layer_grid", "neuron", "model", "gallery"):
            go(at, page)  # every page draws it; the model page prepares the .npz and PNG downloads
    open_tab(at, 2)
    at.toggle(key="gallery.camera_on").set_value(True).run()
    at.camera_input(key="gallery.camera").set_value((camera.filename, files[camera], "image/jpeg")).run()
    assert at.session_state[CURRENT_KEY].source == "camera"
    pixel_rows.append(at.session_state[CURRENT_KEY].array[75].tobytes())
    go(at, "feature_map")
    assert not at.exception

    control = Secret.new(".bin")
    (app_env / "cache").mkdir(exist_ok=True)
    (app_env / "cache" / "control.bin").write_bytes(b"written on purpose: " + control.marker)
    roots = default_roots(app_env)
    needles = [n for secret in files for n in secret.needles] + pixel_rows
    hits = find_traces([*needles, control.marker], since, roots)
    assert hits.pop(str(app_env / "cache" / "control.bin")) == [control.marker]  # the search works
    assert hits == {}, f"an upload reached the disk: {hits}"
    assert files_modified_since(since, roots) >= 1

    logged = "\n".join(record.getMessage() for record in caplog.records)
    out, err = capfd.readouterr()
    for text in (logged, out, err):
        for secret in files:
            assert secret.filename not in text and secret.marker.decode() not in text
