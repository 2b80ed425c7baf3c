"""A shared link in the real app (AppTest): the query opens its view (page, image, layer,
channel, colours, scale), a hostile one is partly ignored and says so, and "Share this view"
gives the link of the view shown, which opens the same view in another session."""

from __future__ import annotations

import io
import urllib.parse

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from featapp import render
from featapp.app import view
from featapp.app.asset_server import SHELF, SHELF_PATH
from featapp.app.chrome import PAGE_FILES
from featapp.app.share import qr_picture
from featapp.engine.images import prepare_image
from tests.helpers.appmodels import snapshot_folder
from tests.helpers.apptest import (
    APP,
    TIMEOUT,
    assert_clean,
    chart_title,
    go,
    heatmap_picture,
    open_app,
    png_upload,
    sidebar_text,
    upload,
)

ADDRESS = "http://10.0.0.5:8501"
URL_PATHS = {"gallery": "", "feature_map": "feature_map", "layer_grid": "layer_grid", "model": "model"}


def opened(page: str, query: dict[str, str], *, url: str | None = None) -> AppTest:
    """A fresh session that opens ``page`` with ``query`` in its address, as a browser
    following a link does (its first run is on that page, with that query)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if page != "gallery":
        at.switch_page(PAGE_FILES[page])
    at.query_params.update(query)
    at.context["url"] = url or f"{ADDRESS}/{URL_PATHS[page]}"
    at.run()
    assert_clean(at)
    return at


def widgets(at: AppTest) -> dict:
    """The Feature map's (or Layer grid's) view as its widgets show it."""
    found = {box.key: box.value for box in at.selectbox}
    found.update({box.key: box.value for box in at.number_input})
    found.update({radio.key: radio.value for radio in at.radio})
    return found


def share_box(at: AppTest, url: str) -> tuple[str, str]:
    """Open "Share this view" (as a click on it does) and read its link and its code's alt text."""
    at.session_state[view.SHARE_OPEN] = True
    at.context["url"] = url
    at.run()
    assert_clean(at)
    url = shared_link(at)
    pictures = [img for image in at.sidebar.image for img in image.proto.imgs if "QR code" in img.alt]
    assert len(pictures) == 1
    return url, pictures[0]


def shared_link(at: AppTest) -> str:
    codes = [code.value for code in at.sidebar.code]
    assert len(codes) == 1, codes
    return codes[0]


def link_notes(at: AppTest) -> list[str]:
    return [info.value for info in at.info if info.value.startswith("This page opened from a shared link")]


def shelf_picture(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(SHELF.get(url.removeprefix(SHELF_PATH)).body)).convert("RGB"))


def test_a_link_opens_its_view_on_the_feature_map(app_env, model, dataset):
    photo = [image for image in dataset.images("validation") if image.class_name == "dogs"][3]
    query = {
        "photo": photo.reference,
        "layer": "conv2d_1",
        "channel": "5",
        "colours": "viridis",
        "scale": "fixed",
        "range": "0,2.5",
        "quiz": "7",
    }
    at = opened("feature_map", query)
    assert at.title[0].value == "🔥 Feature map"
    assert widgets(at) == {
        "feature_map.layer": "conv2d_1",
        "feature_map.channel": 5,
        "feature_map.colours": "viridis",
        "feature_map.scaling": "fixed",
        "feature_map.scaling_low": 0.0,
        "feature_map.scaling_high": 2.5,
    }
    assert chart_title(at) == "Layer 3 (conv2d_1), channel 5"
    assert f"{photo.name} (validation) · dataset photo" in sidebar_text(at)
    assert "True label: dogs" in sidebar_text(at)
    # The map is this photo's channel 5, in viridis, on the fixed range.
    values = model.activations(prepare_image(photo.path, model)[np.newaxis])["conv2d_1"][0, 4]
    expected = render.colourise(
        values, render.value_range(values, "fixed", fixed=(0.0, 2.5)), render.COLOUR_SCALES["viridis"]
    )
    assert np.array_equal(heatmap_picture(at), expected)
    assert not link_notes(at)  # nothing in the link was ignored
    # The link's keys are read once and leave the address; another feature's key stays.
    assert at.query_params == {"quiz": "7"}
    at.number_input(key="feature_map.channel").set_value(6).run()
    assert chart_title(at) == "Layer 3 (conv2d_1), channel 6"  # the student's change is not undone


def test_a_probe_link_opens_on_the_layer_grid_and_a_photo_link_on_the_gallery(app_env, dataset):
    at = opened("layer_grid", {"probe": "edge-vertical", "layer": "conv2d_2", "colours": "viridis"})
    assert at.title[0].value == "🔲 Layer grid"
    assert widgets(at)["layer_grid.layer"] == "conv2d_2" and widgets(at)["layer_grid.colours"] == "viridis"
    assert "· synthetic probe" in sidebar_text(at) and "vertical" in sidebar_text(at).lower()
    assert "Layer 5 (conv2d_2, Conv2D)" in "\n".join(m.value for m in at.markdown)

    photo = dataset.images("train")[-1]
    at = opened("gallery", {"photo": photo.reference})
    assert at.title[0].value == "🖼️ Gallery"
    assert f"Current image: **{photo.name} (train)** (dataset photo)" in "\n".join(s.value for s in at.success).replace(
        "\\", ""
    )


def test_a_hostile_link_is_ignored_with_a_message_and_the_rest_applies(app_env):
    query = {
        "photo": "../../../../etc/passwd",
        "layer": "conv9",
        "channel": "9" * 400,
        "colours": "[x](http://evil.example)",
        "scale": "per-layer",
        "range": "nan,1",
    }
    at = opened("feature_map", query)
    notes = link_notes(at)
    assert len(notes) == 1
    note = notes[0]
    # The title stays the page's first element; the note comes right after it.
    first, second = at.main.children[0], at.main.children[1]
    assert first.type == "title" and "Feature map" in first.value, first
    assert second.type == "info" and second.value == note
    for words in ("photo `../../../../etc/passwd`", "layer `conv9`", "`channel` is 400 characters", "colours `[x]("):
        assert words in note, note
    assert "range `nan,1`" in note and "](http" not in note.replace("`[x](http://evil.example)`", "")
    assert widgets(at)["feature_map.scaling"] == "per layer"  # the one good value applies
    assert widgets(at)["feature_map.layer"] == "conv2d" and widgets(at)["feature_map.colours"] == "blues4"
    assert "dataset photo" in sidebar_text(at)  # the default photo, not a file from outside the dataset
    assert not at.query_params
    at.run()
    assert link_notes(at) == notes  # still there after a rerun of the page
    go(at, "model")
    assert not link_notes(at)  # the note belongs to the page the link opened
    go(at, "feature_map")
    assert not link_notes(at)


def test_share_this_view_gives_the_link_that_opens_the_same_view(app_env, model):
    at = open_app("feature_map")
    at.selectbox(key="feature_map.layer").set_value("conv2d_3").run()
    at.number_input(key="feature_map.channel").set_value(100).run()
    at.radio(key="feature_map.colours").set_value("viridis").run()
    at.radio(key="feature_map.scaling").set_value("per layer").run()
    assert_clean(at)
    picture = heatmap_picture(at)
    title = next(line for line in sidebar_text(at).splitlines() if "· dataset photo" in line)

    url, code = share_box(at, f"{ADDRESS}/feature_map")
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ADDRESS}/feature_map"
    query = {key: value[0] for key, value in urllib.parse.parse_qs(parts.query).items()}
    assert query["layer"] == "conv2d_3" and query["channel"] == "100" and query["scale"] == "per-layer"
    assert query["photo"].startswith("test/") and query["colours"] == "viridis"
    assert url in code.alt  # the code's alt text carries the link
    assert np.array_equal(shelf_picture(code.url), qr_picture(url, module_px=5))
    assert "only on this computer" not in sidebar_text(at)

    other = opened("feature_map", query)  # a fresh session: another student's browser
    assert chart_title(other) == "Layer 7 (conv2d_3), channel 100"
    assert widgets(other)["feature_map.colours"] == "viridis" and widgets(other)["feature_map.scaling"] == "per layer"
    assert title in sidebar_text(other)
    assert np.array_equal(heatmap_picture(other), picture)

    # Opened as localhost, the link would not reach a student's phone: the box says so.
    at.context["url"] = "http://localhost:8501/feature_map"
    at.run()
    assert "only on this computer" in sidebar_text(at)


def test_an_upload_is_not_in_the_link_and_the_box_says_so(app_env):
    at = open_app()
    upload(at, png_upload(np.full((80, 80, 3), 200, np.uint8), "mine.png"))
    go(at, "feature_map")
    url, _ = share_box(at, f"{ADDRESS}/feature_map")
    assert "photo=" not in url and "probe=" not in url and "layer=conv2d" in url
    assert "your upload: it stays in this session, so the link cannot show it" in sidebar_text(at)


def test_the_box_says_the_training_progress_is_not_in_the_link(app_env, monkeypatch):
    folder = snapshot_folder(app_env / "snapshots", {0: 11}, best=None)
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(folder))
    at = open_app("feature_map")
    url, _ = share_box(at, f"{ADDRESS}/feature_map")
    assert "training progress is not in the link" not in sidebar_text(at)
    at.select_slider(key="feature_map.snapshot").set_value(str(folder / "epoch_000.onnx")).run()
    assert_clean(at)
    assert "training progress is not in the link: it opens the final model" in sidebar_text(at)
    assert shared_link(at) == url  # the same link: it carries no snapshot
