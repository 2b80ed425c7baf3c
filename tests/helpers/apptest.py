"""Helpers for running the app with ``streamlit.testing.v1.AppTest``: open it on a page,
switch pages and tabs, upload, and read back what a student would see (texts, picture
captions, the chart specs and data sent to the browser). The ``app_env`` and
``first_photo`` fixtures they go with are in ``tests/conftest.py``."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image
from streamlit.testing.v1 import AppTest

from featapp.app.chrome import PAGE_FILES
from featapp.app.view import GALLERY_TAB, GALLERY_TABS
from tests.helpers import imagefactory

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "streamlit_app.py"
TIMEOUT = 90


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert_clean(at)
    if page is not None:
        go(at, page)
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(PAGE_FILES[page]).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def as_shown(markdown: str) -> str:
    """Markdown source as the browser shows it, as far as escapes go: the app escapes
    file names (``dog\\.1.jpg``) so that Markdown prints them literally."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def main_text(at: AppTest) -> str:
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts.extend(str(element.value) for element in getattr(at.main, kind))
    return as_shown("\n".join(parts))


def sidebar_text(at: AppTest) -> str:
    text = "\n".join(str(e.value) for kind in ("markdown", "caption") for e in getattr(at.sidebar, kind))
    return as_shown(text + "\n" + "\n".join(c for image in at.sidebar.image for c in image.captions))


def captions(at: AppTest) -> list[str]:
    return [as_shown(caption) for image in at.main.image for caption in image.captions]


def charts(at: AppTest) -> list[tuple[dict, dict]]:
    """Each chart's Vega-Lite spec and its datasets (name -> rows), as sent to the browser."""
    found = []
    for chart in at.get("vega_lite_chart"):
        data = {
            d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas().to_dict("records")
            for d in chart.proto.datasets
        }
        found.append((json.loads(chart.proto.spec), data))
    return found


def views(spec: dict) -> list[dict]:
    found = []
    for key in ("hconcat", "vconcat", "concat", "layer"):
        for child in spec.get(key, []):
            found.extend(views(child))
    if "mark" in spec:
        found.append(spec)
    return found


def rows_of(spec: dict, datasets: dict, mark: str) -> list[dict]:
    view = next(v for v in views(spec) if (v["mark"] if isinstance(v["mark"], str) else v["mark"]["type"]) == mark)
    return datasets[(view.get("data") or spec["data"])["name"]]


def heatmap_picture(at: AppTest, index: int = 0) -> np.ndarray:
    spec, data = charts(at)[index]
    url = rows_of(spec, data, "image")[0]["url"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def chart_title(at: AppTest) -> str:
    """The bold line above the feature map's chart (kept out of the spec, which then stays the same)."""
    return next(m.value.strip("*") for m in at.main.markdown if m.value.startswith("**Layer "))


def legend_range(data: dict) -> list[float]:
    """The values a chart's colour bar spans, from the data the browser draws it with."""
    bands = data["legend"]
    return [min(b["y0"] for b in bands), max(b["y1"] for b in bands)]


def png_upload(array: np.ndarray, name: str = "upload.png") -> tuple[str, bytes, str]:
    return name, imagefactory.encode(Image.fromarray(array), "PNG"), "image/png"


def open_tab(at: AppTest, index: int) -> AppTest:
    """Open one of the gallery's tabs, as a click on it does: only the open tab is drawn."""
    at.session_state[GALLERY_TAB] = GALLERY_TABS[index]
    at.run()
    assert_clean(at)
    return at


def upload(at: AppTest, file: tuple[str, bytes, str]) -> AppTest:
    if not at.file_uploader:
        open_tab(at, 2)
    at.file_uploader(key="gallery.upload").set_value(file).run()
    assert_clean(at)
    return at


def channel_picture_shown(at, channel: int) -> bool:
    """Whether the page's "What this channel looks for" is drawn for ``channel`` (1-based): the
    picture from the model's atlas, or the button that computes it."""
    button = f"Optimise a picture for channel {channel} ("
    alt = f"The picture optimised for channel {channel} of "
    return any(b.label.startswith(button) for b in at.button) or any(
        image.proto.imgs[0].alt.startswith(alt) for image in at.main.image
    )
