"""The Streamlit app, run page by page with ``streamlit.testing.v1.AppTest``.

Every test runs the real ``streamlit_app.py`` (as the script of a session) with the real
model (or a model built in the test) and checks what is shown: texts, images, and the
chart specs and data sent to the browser. Expected values are computed independently
from the model, not copied from the app's output.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from featapp import render
from featapp.app import view
from featapp.app.asset_server import SHELF, SHELF_PATH
from featapp.app.captions import WRONG_MARK, markdown_literal
from featapp.app.chrome import PAGE_FILES
from featapp.engine.images import prepare_image
from featapp.engine.model import load_model
from featapp.engine.probes import probe_images
from tests.helpers import imagefactory
from tests.helpers.appmodels import COMMITTED_MODEL, snapshot_folder, trunk_of
from tests.helpers.apptest import (
    APP,
    REPO_ROOT,
    TIMEOUT,
    as_shown,
    assert_clean,
    captions,
    chart_title,
    charts,
    go,
    heatmap_picture,
    legend_range,
    main_text,
    open_app,
    open_tab,
    png_upload,
    rows_of,
    sidebar_text,
    upload,
)
from tests.helpers.modelfactory import Conv, TinyNet, build

# -- gallery -------------------------------------------------------------------------------------------------


@pytest.fixture
def sent_pictures(monkeypatch):
    """The pictures the app sent, by URL: what the browser would draw (``st.image`` bytes,
    or the picture shelf's for the shared ones)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    sent: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        if isinstance(path_or_data, bytes):
            sent[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)

    def picture(url: str) -> np.ndarray:
        if url.startswith(SHELF_PATH):  # a shared picture: what the server's middleware answers there
            data = SHELF.get(url.removeprefix(SHELF_PATH)).body
        else:
            data = sent[url.rsplit("/", 1)[-1].split(".")[0]]
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    return picture


def test_gallery_shows_twenty_labelled_photos_with_predictions(app_env, model, dataset, sent_pictures):
    at = open_app()
    positive = model.class_names[1]
    photo_captions = [c for c in captions(at) if f"p({positive})" in c]
    assert len(photo_captions) == 20
    assert sum("cats" in c for c in photo_captions) == 10 and sum("dogs" in c for c in photo_captions) == 10
    sample = dataset.sample("test", per_class=10, seed=0)
    probabilities = model.predict([item.path for item in sample]).probabilities
    wrong = [item.label != int(p.argmax()) for item, p in zip(sample, probabilities, strict=True)]
    # wrong answers are marked in words and with a red frame, no emoji (an empty box without an emoji font)
    assert [c.startswith(WRONG_MARK) for c in photo_captions] == wrong
    assert not any("❌" in c for c in photo_captions)
    photos = [image.value[0] for image in at.main.image if any(f"p({positive})" in c for c in image.captions)]
    for url, item, was_wrong in zip(photos, sample, wrong, strict=True):
        picture = sent_pictures(url).astype(int)
        edge = np.concatenate([picture[:3].reshape(-1, 3), picture[-3:].reshape(-1, 3)])
        red = (edge[:, 0] > 180) & (edge[:, 1] < 80) & (edge[:, 2] < 80)
        assert red.all() == was_wrong, item.name
        if not was_wrong:
            assert np.array_equal(picture, prepare_image(item.path, model))
    for caption, p in zip(photo_captions, probabilities, strict=True):
        assert caption.endswith(f"p({positive}) {p[1]:.2f}")
    text = main_text(at)
    assert f"**{20 - sum(wrong)} of 20** right" in text
    assert "Sample seed **0**" in text


def test_another_seed_shows_other_photos_and_names_the_seed(app_env):
    at = open_app()
    before = [image.value for image in at.main.image][:20]
    at.number_input(key="gallery.seed").set_value(7).run()
    assert_clean(at)
    assert "Sample seed **7**" in main_text(at)
    assert [image.value for image in at.main.image][:20] != before
    at.button[[b.label for b in at.button].index("🎲 New random sample")].click().run()
    seed = at.session_state["view.seed"]
    assert f"Sample seed **{seed}**" in main_text(at)


def test_choosing_a_gallery_photo_makes_it_current_on_every_page(app_env, dataset):
    at = open_app()
    chosen = dataset.sample("test", per_class=10, seed=0)[13]
    at.button(key="gallery.use_13").click().run()
    assert_clean(at)
    assert chosen.name in sidebar_text(at)
    assert f"Current image: **{chosen.name} (test)**" in main_text(at)
    go(at, "feature_map")
    assert any(chosen.name in c for c in captions(at))


def test_only_the_open_tab_is_drawn(app_env, model):
    at = open_app()
    assert [b.key for b in at.button if b.key and b.key.startswith("gallery.use_")] == [
        f"gallery.use_{i}" for i in range(20)
    ]
    assert not [b for b in at.button if b.key and b.key.startswith("gallery.probe_")] and not at.file_uploader
    assert len(at.main.image) == 20
    open_tab(at, 1)
    assert not [b for b in at.button if b.key and b.key.startswith("gallery.use_")] and not at.file_uploader
    assert len(at.main.image) == len(probe_images(model.input_spec))
    open_tab(at, 2)
    assert len(at.file_uploader) == 1 and not at.main.image
    open_tab(at, 0)
    assert len(at.main.image) == 20 and "Sample seed **0**" in main_text(at)


def test_probes_can_be_chosen(app_env, model):
    at = open_tab(open_app(), 1)
    assert not [m.value for m in at.main.markdown if "prepare_image" in m.value]  # no stray text on the page
    probes = probe_images(model.input_spec)
    assert [b.key for b in at.button if b.key and b.key.startswith("gallery.probe_")] == [
        f"gallery.probe_{i}" for i in range(len(probes))
    ]
    # Shown as titled: "Diagonal edge (\\)" must not lose its backslash to Markdown.
    assert captions(at) == [probe.title for probe in probes]
    at.button(key="gallery.probe_1").click().run()
    assert f"Current image: **{probes[1].title}** (synthetic probe)" in main_text(at)


def test_a_good_upload_becomes_the_current_image(app_env, model):
    at = open_app("feature_map")
    default_map = heatmap_picture(at)
    go(at, "gallery")
    stripes = np.zeros((200, 300, 3), np.uint8)
    stripes[:, ::20] = 255
    upload(at, png_upload(stripes, "stripes.png"))
    assert "Current image: **stripes.png** (your upload)" in main_text(at)
    assert not at.error
    go(at, "feature_map")
    assert any("stripes.png" in c for c in captions(at))
    expected = model.activations(prepare_image(imagefactory.encode(Image.fromarray(stripes), "PNG"), model))
    layer = model.layers[0].name
    values = expected[layer][0, 0]
    assert np.array_equal(
        heatmap_picture(at), render.colourise(values, render.value_range(values, "per map"), render.LECTURE_BLUES)
    )
    assert not np.array_equal(heatmap_picture(at), default_map)


BAD_FILES = {
    "text named .jpg": (("notes.jpg", imagefactory.TEXT, "image/jpeg"), "text file"),
    "iPhone HEIC": (("IMG_0001.jpg", imagefactory.HEIC, "image/jpeg"), "HEIC"),
    "SVG drawing": (("cat.png", imagefactory.SVG, "image/png"), "SVG"),
    "empty file": (("empty.png", b"", "image/png"), "empty"),
    "truncated JPEG": (
        (
            "cut.jpg",
            imagefactory.encode(Image.fromarray(np.full((300, 300, 3), 90, np.uint8)), "JPEG")[:300],
            "image/jpeg",
        ),
        "cut off|damaged",
    ),
    "decompression bomb": (("bomb.png", imagefactory.png_stream(12000, 12000, bands=1), "image/png"), "megapixels"),
    "huge declared size": (("huge.png", imagefactory.png_declaring(60000, 60000), "image/png"), "megapixels"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_upload_gives_a_clear_error_and_the_session_goes_on(app_env, name):
    (file, reason) = BAD_FILES[name]
    at = open_app()
    before = main_text(at).split("Current image:")[1]
    upload(at, file)
    errors = [as_shown(e.value) for e in at.error]
    assert len(errors) == 1 and file[0] in errors[0]
    assert any(word.lower() in errors[0].lower() for word in reason.split("|")), errors[0]
    assert main_text(at).split("Current image:")[1] == before  # the current image did not change
    go(at, "feature_map")  # and every page still works
    go(at, "gallery")
    upload(at, png_upload(np.full((60, 80, 3), 200, np.uint8), "fine.png"))
    assert not at.error and "Current image: **fine.png**" in main_text(at)


def test_a_file_with_another_extension_gets_the_same_clear_error(app_env):
    at = open_app()
    upload(at, ("notes.txt", imagefactory.TEXT, "text/plain"))
    assert "notes.txt" in as_shown(at.error[0].value) and "text file" in at.error[0].value


def test_probe_pictures_have_a_frame_against_the_white_page(app_env, model, sent_pictures):
    from featapp.app.pages.gallery import PROBE_FRAME

    at = open_tab(open_app(), 1)
    assert not [m.value for m in at.main.markdown if "prepare_image" in m.value]  # no stray text on the page
    probes = probe_images(model.input_spec)
    shown = [
        image
        for image in at.main.image
        if image.captions and image.captions[0] in {markdown_literal(p.title) for p in probes}
    ]
    assert len(shown) == len(probes)
    assert any((p.image == 255).all(axis=-1)[:, 0].any() for p in probes)  # some probes do touch the edge in white
    for image, probe in zip(shown, probes, strict=True):
        picture = sent_pictures(image.value[0])
        edge = np.concatenate([picture[0], picture[-1], picture[:, 0], picture[:, -1]])
        assert (edge == PROBE_FRAME).all(), probe.title
        inner = probe.image if probe.image.shape[2] == 3 else np.repeat(probe.image, 3, axis=2)
        assert np.array_equal(picture[2:-2, 2:-2], inner[2:-2, 2:-2])  # the frame covers the edge pixels only


def test_the_uploader_accepts_every_format_the_error_text_offers(app_env):
    from featapp.engine.images import _FORMATS_HINT

    extensions = {"JPEG": {"jpg", "jpeg"}, "PNG": {"png"}, "WebP": {"webp"}, "GIF": {"gif"}, "BMP": {"bmp"}}
    extensions["TIFF"] = {"tif", "tiff"}
    offered = re.findall(r"[A-Z][A-Za-z]+", _FORMATS_HINT.removeprefix("Use a"))
    assert set(offered) == set(extensions), offered  # the hint names no format this test does not know
    at = open_tab(open_app(), 2)
    accepted = {t.lstrip(".").lower() for t in at.file_uploader(key="gallery.upload").proto.type}
    for name in offered:
        assert extensions[name] <= accepted, (name, accepted)
    tiff = imagefactory.encode(Image.fromarray(np.full((40, 60, 3), (0, 90, 180), np.uint8)), "TIFF")
    upload(at, ("scan.tif", tiff, "image/tiff"))
    assert not at.error and "Current image: **scan.tif**" in main_text(at)


def test_camera_photo(app_env):
    at = open_tab(open_app(), 2)
    at.toggle(key="gallery.camera_on").set_value(True).run()
    photo = imagefactory.encode(Image.fromarray(np.full((480, 640, 3), (30, 60, 200), np.uint8)), "JPEG")
    at.camera_input(key="gallery.camera").set_value(("photo.jpg", photo, "image/jpeg")).run()
    assert_clean(at)
    assert "Current image: **camera photo** (camera photo)" in main_text(at)


def test_without_a_dataset_probes_uploads_and_pages_still_work(app_env, monkeypatch, model):
    empty = app_env / "empty"
    empty.mkdir()
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(empty))
    at = open_app()
    info = " ".join(i.value for i in at.info)
    assert "FEATAPP_DATA_DIR" in info and str(empty) in info
    first_probe = probe_images(model.input_spec)[0]
    assert f"Current image: **{first_probe.title}**" in main_text(at)
    upload(at, png_upload(np.full((50, 50, 3), 10, np.uint8), "dark.png"))
    assert "Current image: **dark.png**" in main_text(at)
    for page in ("feature_map", "layer_grid", "model", "neuron"):
        go(at, page)
    assert "no photos to rank" in main_text(at) and len(charts(at)) == 2  # the comparison still works


# -- feature map -----------------------------------------------------------------------------------------------


def expected_picture(values: np.ndarray, scale=render.LECTURE_BLUES) -> np.ndarray:
    return render.colourise(values, render.value_range(values, "per map"), scale)


def test_feature_map_starts_at_layer_one_channel_one_and_follows_the_channel(app_env, model, first_photo):
    at = open_app("feature_map")
    layer = model.layers[0]
    assert at.selectbox(key="feature_map.layer").value == layer.name
    assert at.number_input(key="feature_map.channel").value == 1
    assert chart_title(at) == f"Layer 1 ({layer.name}), channel 1"
    maps = model.activations(first_photo[1])[layer.name][0]
    assert np.array_equal(heatmap_picture(at), expected_picture(maps[0]))
    assert heatmap_picture(at).shape[:2] == layer.output_shape[:2]  # rows x cols, like the photo
    at.number_input(key="feature_map.channel").set_value(2).run()
    assert chart_title(at) == f"Layer 1 ({layer.name}), channel 2"
    assert np.array_equal(heatmap_picture(at), expected_picture(maps[1]))


def test_feature_map_of_a_deeper_layer(app_env, model, first_photo):
    at = open_app("feature_map")
    spatial = [layer for layer in model.layers if layer.is_spatial]
    deep = spatial[-2]
    at.selectbox(key="feature_map.layer").set_value(deep.name).run()
    at.number_input(key="feature_map.channel").set_value(deep.channels).run()
    number = model.layer_names.index(deep.name) + 1
    assert chart_title(at) == f"Layer {number} ({deep.name}), channel {deep.channels}"
    values = model.activations(first_photo[1])[deep.name][0, deep.channels - 1]
    if render.is_constant(values):
        assert "dead" in main_text(at)
    else:
        assert np.array_equal(heatmap_picture(at), expected_picture(values))
    spec, data = charts(at)[0]
    cells = rows_of(spec, data, "rect")
    assert len(cells) == deep.output_shape[0] * deep.output_shape[1]  # small maps: one hover cell per cell
    cell = max(cells, key=lambda c: c["value"])
    assert cell["value"] == pytest.approx(float(values.max()), abs=1e-3)


def test_colours_and_scaling_are_true_in_the_legend(app_env, model, first_photo):
    at = open_app("feature_map")
    at.radio(key="feature_map.colours").set_value("viridis").run()
    maps = model.activations(first_photo[1])[model.layers[0].name][0]
    assert np.array_equal(heatmap_picture(at), expected_picture(maps[0], render.VIRIDIS))
    at.radio(key="feature_map.scaling").set_value("per layer").run()
    _, data = charts(at)[0]
    assert legend_range(data) == pytest.approx([float(maps.min()), float(maps.max())], rel=1e-5)
    assert "all channels of this layer" in main_text(at)
    at.radio(key="feature_map.scaling").set_value("fixed").run()
    at.number_input(key="feature_map.scaling_low").set_value(0.5).run()
    at.number_input(key="feature_map.scaling_high").set_value(0.25).run()
    assert "lower to a higher value" in at.error[0].value
    at.number_input(key="feature_map.scaling_high").set_value(2.0).run()
    assert not at.error
    _, data = charts(at)[0]
    assert legend_range(data) == [0.5, 2.0]
    assert "the range you set" in main_text(at)


def test_a_dead_map_is_shown_as_dead(app_env, model):
    at = open_app()
    upload(at, png_upload(np.full((90, 120, 3), 128, np.uint8), "grey.png"))  # flat grey: every layer-1 map is constant
    go(at, "feature_map")
    warning = " ".join(w.value for w in at.warning)
    assert "dead" in warning
    assert "Constant map" in main_text(at)
    picture = heatmap_picture(at)
    assert np.all(picture == picture[0, 0])


def test_a_chosen_cell_outlines_its_receptive_field(app_env, model):
    at = open_app("feature_map")
    photo_before = at.main.image[0].value
    layer = model.layers[2]  # a convolution with a receptive field wider than 1 pixel
    at.selectbox(key="feature_map.layer").set_value(layer.name).run()
    at.session_state["view.cell"] = (layer.name, 10, 20)  # what a click on the map stores
    at.run()
    assert_clean(at)
    field = layer.receptive_field
    top, left = (
        round(field.offset[0] + 10 * field.jump[0] - (field.size[0] - 1) / 2),
        round(field.offset[1] + 20 * field.jump[1] - (field.size[1] - 1) / 2),
    )
    text = main_text(at)
    assert "row 11, column 21" in text
    assert f"input rows {top + 1}-{top + field.size[0]} and columns {left + 1}-{left + field.size[1]}" in text
    assert any("red box" in c for c in captions(at))
    assert at.main.image[0].value != photo_before
    _, data = charts(at)[0]
    assert len(data["outline"]) == 1 and data["outline"][0]["r0"] == 10 and data["outline"][0]["c0"] == 20
    next(b for b in at.button if b.label == "Clear the chosen cell").click().run()
    assert_clean(at)
    assert at.session_state["view.cell"] is None and not charts(at)[0][1]["outline"]
    assert "row 11, column 21" not in main_text(at)


def test_overlay_changes_the_photo(app_env):
    at = open_app("feature_map")
    plain = at.main.image[0].value
    at.toggle(key="feature_map.overlay").set_value(True).run()
    assert_clean(at)
    assert at.main.image[0].value != plain


# -- layer grid ----------------------------------------------------------------------------------------------------


def test_layer_grid_prints_the_shape_and_flags_dead_channels(app_env, model, first_photo):
    at = open_app("layer_grid")
    layer = model.layers[0]
    rows, cols, count = layer.output_shape
    text = main_text(at)
    assert f"`1 x {rows} x {cols} x {count}`" in text and f"`20 x {rows} x {cols} x {count}`" in text
    assert "One tile is one channel" in text
    spec, data = charts(at)[0]
    tiles = rows_of(spec, data, "image")
    assert [t["ch"] for t in tiles] == list(range(count))
    maps = model.activations(first_photo[1])[layer.name][0]
    dead = [c + 1 for c in range(count) if render.is_constant(maps[c])]
    assert [t["channel"] for t in tiles if t["status"] != "active"] == dead
    if dead:
        assert f"**{len(dead)} of {count}**" in text


def test_layer_grid_range_and_order_of_a_deep_layer(app_env, model, first_photo):
    at = open_app("layer_grid")
    wide = next(layer for layer in model.layers if layer.is_spatial and layer.channels >= 64)
    at.selectbox(key="layer_grid.layer").set_value(wide.name).run()
    at.number_input(key="layer_grid.first").set_value(1).run()
    at.number_input(key="layer_grid.last").set_value(40).run()
    spec, data = charts(at)[0]
    assert [t["ch"] for t in rows_of(spec, data, "image")] == list(range(40))
    at.radio(key="layer_grid.order").set_value("max").run()
    spec, data = charts(at)[0]
    maps = model.activations(first_photo[1])[wide.name][0][:40]
    expected = list(np.argsort(-maps.max(axis=(1, 2)), kind="stable"))
    assert [t["ch"] for t in rows_of(spec, data, "image")] == expected
    assert f"channels 1 to 40 (40 of {wide.channels})" in main_text(at)


def test_layer_grid_shows_vector_layers_as_values(app_env, model, first_photo):
    at = open_app("layer_grid")
    vectors = [layer for layer in model.layers if not layer.is_spatial]
    small = min(vectors, key=lambda layer: layer.channels)
    wide = max(vectors, key=lambda layer: layer.channels)
    acts = model.activations(first_photo[1])
    at.selectbox(key="layer_grid.layer").set_value(small.name).run()
    assert_clean(at)
    assert f"`1 x {small.channels}`" in main_text(at)
    spec, data = charts(at)[0]
    bars = rows_of(spec, data, "bar")
    assert [b["value"] for b in bars] == pytest.approx(acts[small.name][0].tolist(), abs=1e-6)
    at.selectbox(key="layer_grid.layer").set_value(wide.name).run()
    assert_clean(at)
    assert f"`1 x {wide.channels}`" in main_text(at) and "128 per row" in main_text(at)
    assert len(rows_of(*charts(at)[1], "bar")) == 40


def test_clicking_a_tile_opens_it_on_the_feature_map_page(app_env, model):
    at = open_app("layer_grid")
    layer = model.layers[2]
    # What the tile chart's click callback stores (the browser test clicks for real).
    at.session_state["view.layer"] = layer.name
    at.session_state["view.channel"] = 7
    at.session_state["layer_grid.goto_feature_map"] = True
    at.run()
    assert_clean(at)
    assert at.title[0].value.endswith("Feature map")
    assert at.number_input(key="feature_map.channel").value == 7
    assert chart_title(at).startswith(f"Layer 3 ({layer.name}), channel 7")


# -- one neuron, many images --------------------------------------------------------------------------------------------


def test_gallery_ranked_by_one_channel(app_env, model, dataset):
    at = open_app("neuron")
    layer = model.layers[0]
    sample = dataset.sample("test", per_class=10, seed=0)
    maps = model.activations([item.path for item in sample])[layer.name][:, 0]
    order = np.argsort(-maps.reshape(20, -1).max(axis=1), kind="stable")
    ranked = [c for c in captions(at) if c.startswith("#")]
    assert ranked == [f"#{rank + 1} {sample[i].name}" for rank, i in enumerate(order)]
    assert f"max {maps[order[0]].max():.3g}" in captions(at)


def test_scanning_a_small_dataset_ranks_its_photos(app_env, monkeypatch, dataset):
    small = app_env / "small"
    for item in dataset.sample("test", per_class=3, seed=5):
        target = small / "test" / item.class_name / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(item.path)  # links, not copies: the shared photos stay where they are
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(small))
    at = open_app("neuron")
    at.radio(key="neuron.source").set_value("dataset").run()
    assert "have not been scanned" in main_text(at)
    scan = next(b for b in at.button if b.label.startswith("Scan the 6 photos"))
    scan.click().run()
    assert_clean(at)
    assert len([c for c in captions(at) if c.startswith("#")]) == 6
    # the notice and its button are gone in the very run that scanned, not only on the next one
    assert "have not been scanned" not in main_text(at)
    assert not [b for b in at.button if b.label.startswith("Scan")]
    assert list((app_env / "cache").glob("neurons-*.npz"))
    at.run()  # the next visit reads the cache: no scan button
    assert not [b for b in at.button if b.label.startswith("Scan")]


def test_a_file_name_with_markdown_characters_is_shown_as_it_is(app_env):
    name = "cat *final* $5 [v2] (\\).png"
    at = open_app()
    upload(at, png_upload(np.full((60, 60, 3), 120, np.uint8), name))
    go(at, "neuron")
    raw = [caption for image in at.main.image for caption in image.captions]
    assert markdown_literal(name) in raw  # the compare section's current image, escaped like every other title
    go(at, "model")
    assert any(f"Current image: **{markdown_literal(name)}**" in m.value for m in at.main.markdown)


def test_compare_starts_with_two_different_photos(app_env, first_photo):
    at = open_app("neuron")
    compare = [image for image in at.main.image if image.captions and not image.captions[0].startswith("#")][-2:]
    left, right = (image.captions[0] for image in compare)
    assert as_shown(left) == f"{first_photo[0].name} (test)"  # the current image: gallery photo 1
    assert as_shown(right) != first_photo[0].name and compare[0].value != compare[1].value
    assert at.selectbox(key="neuron.compare_right").value != "g0"


def test_two_images_are_compared_on_one_scale(app_env):
    at = open_app("neuron")
    at.selectbox(key="neuron.compare_right").set_value("g5").run()
    assert_clean(at)
    compare = [(spec, data) for spec, data in charts(at)][-2:]
    ranges = [legend_range(data) for _, data in compare]
    assert ranges[0] == ranges[1] and ranges[0][1] > ranges[0][0]
    assert "over all the maps shown" in main_text(at)


# -- model page ------------------------------------------------------------------------------------------------------------


def test_model_page_lists_layers_filters_prediction_and_downloads(app_env, model):
    at = open_app("model")
    table = at.dataframe[0].value
    assert list(table["layer"]) == model.layer_names
    assert list(table["parameters"]) == [layer.params for layer in model.layers]
    filters = at.main.image[0]
    assert len(filters.captions) == 1 and "1 to 32" in filters.captions[0]
    assert "The model says" in main_text(at)
    labels = [b.label for b in at.download_button]
    assert any(label.endswith(".npz)") for label in labels) and sum("(PNG)" in label for label in labels) == 2


def test_model_page_shows_the_filters_as_one_picture_in_equal_rows(app_env, model, sent_pictures):
    at = open_app("model")
    shown = at.main.image[0].proto.imgs
    assert len(shown) == 1  # one mosaic, not 32 images that wrap with the page width
    count = model.layers[0].channels
    columns = render.grid_columns(count)
    rows = -(-count // columns)
    assert count % columns == 0 and f"{count} first-layer filters" in shown[0].alt
    assert f"in {rows} rows of {columns}" in shown[0].alt
    picture = sent_pictures(shown[0].url)
    # Each filter at a readable size: the tiles of a row span most of a readable width.

    def runs(filled: np.ndarray) -> list[int]:  # lengths of the runs of True: the tiles along one axis
        edges = np.flatnonzero(np.diff(np.concatenate([[0], filled.astype(int), [0]])))
        return (edges[1::2] - edges[::2]).tolist()

    white = (picture == 255).all(axis=2)
    across, down = runs(~white.all(axis=0)), runs(~white.all(axis=1))
    # Equal rows of equal tiles, each at a readable size.
    assert len(across) == columns and len(down) == rows and len(set(across + down)) == 1 and across[0] >= 64


def test_tables_are_sized_to_their_rows(app_env, monkeypatch, model):
    import streamlit

    heights = []
    original = streamlit.dataframe

    def record(*args, **kwargs):
        heights.append(kwargs.get("height", "auto"))
        return original(*args, **kwargs)

    monkeypatch.setattr(streamlit, "dataframe", record)
    open_app("model")
    # "content": as tall as the rows, so no blank row below the last; a computed pixel height drifted from it.
    assert len(heights) >= 2 and set(heights) == {"content"}


@pytest.mark.slow
def test_occlusion_map_over_the_photo(app_env, model, first_photo):
    at = open_app("model")
    next(b for b in at.button if b.label.startswith("Compute the occlusion map")).click().run()
    assert_clean(at)
    predicted = model.class_names[int(model.predict(first_photo[1]).indices[0])]
    assert f"Drop in p({predicted}) laid over the photo" in captions(at)
    assert any(m.value.startswith(f"**Drop in p({predicted})**") for m in at.main.markdown)
    spec, data = charts(at)[-1]
    assert len(data["cells"]) <= render.MAX_CHART_CELLS  # the drop map, with its hover cells
    assert spec["hconcat"][1]["title"]["text"] == f"drop in p({predicted})"
    at.run()  # computed once per image: shown again without asking
    assert f"Drop in p({predicted}) laid over the photo" in captions(at)


# -- other models, trunks and snapshots ------------------------------------------------------------------------------------


def test_a_trunk_model_has_no_predictions_but_every_page_works(app_env, monkeypatch):
    trunk = trunk_of(COMMITTED_MODEL, app_env / "trunk.onnx")
    monkeypatch.setenv("FEATAPP_MODEL", str(trunk))
    at = open_app()
    assert "No prediction" in sidebar_text(at)
    assert not any("p(" in c for c in captions(at))
    assert "no classifier" in main_text(at)
    for page in ("feature_map", "layer_grid", "neuron", "model"):
        go(at, page)
    assert "unavailable for a model without a classifier" in main_text(at)


def test_the_strip_ends_with_the_final_model_when_no_snapshot_is_that_network(app_env, monkeypatch, model, first_photo):
    folder = snapshot_folder(app_env / "snapshots", {0: 11, 3: 5}, best=3)  # best epoch: other weights
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(folder))
    at = open_app("feature_map")
    at.session_state[view.STRIP_OPEN] = True
    at.run()
    assert_clean(at)
    strip = next(c for c in captions(at) if c.startswith("Left to right: ")).removeprefix("Left to right: ")
    labels = strip.rstrip(".").split(", ")
    assert labels == ["epoch 0 (initial weights)", "epoch 3 (best): 53% on validation", "final model"]


def test_training_snapshots_on_feature_map_grid_and_model_pages(app_env, monkeypatch, model, first_photo):
    folder = snapshot_folder(app_env / "snapshots", {0: 11, 3: None}, best=3)
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(folder))
    at = open_app("feature_map")
    slider = at.select_slider(key="feature_map.snapshot")
    assert slider.value == "final"
    final_picture = heatmap_picture(at)
    epoch0 = str(folder / "epoch_000.onnx")
    slider.set_value(epoch0).run()
    assert_clean(at)
    assert chart_title(at) == f"Layer 1 ({model.layers[0].name}), channel 1, epoch 0 (initial weights)"
    random_maps = load_model(epoch0, provider="cpu").activations(first_photo[1])[model.layers[0].name][0]
    assert np.array_equal(heatmap_picture(at), expected_picture(random_maps[0]))
    assert not np.array_equal(heatmap_picture(at), final_picture)
    # The map across training is closed, and not drawn, until a student opens it.
    across = next(e for e in at.main.expander if e.label == "This map across training")
    assert not across.proto.expanded
    assert not any(c.startswith("Left to right: ") for c in captions(at)) and "tuned to nothing" not in main_text(at)
    at.session_state[view.STRIP_OPEN] = True  # what opening it does (AppTest cannot click an expander)
    at.run()
    assert_clean(at)
    strip = next(c for c in captions(at) if c.startswith("Left to right: ")).removeprefix("Left to right: ")
    labels = strip.rstrip(".").split(", ")
    # Epoch 3, the best, has the committed weights: one tile for it and the final model.
    assert len(labels) == 2 and labels[0].startswith("epoch 0")
    assert labels[1] == "epoch 3 (best): 53% on validation = the final model"
    assert "tuned to nothing" in main_text(at)
    go(at, "gallery")
    go(at, "feature_map")  # still open on the next visit
    assert next(e for e in at.main.expander if e.label == "This map across training").proto.expanded and any(
        c.startswith("Left to right: ") for c in captions(at)
    )
    go(at, "layer_grid")  # the choice carries over
    assert at.select_slider(key="layer_grid.snapshot").value == epoch0
    assert "at epoch 0" in main_text(at)
    go(at, "model")
    random_filters = at.main.image[0].value
    at.select_slider(key="model.snapshot").set_value("final").run()
    assert at.main.image[0].value != random_filters


def test_a_damaged_snapshot_index_is_reported_not_fatal(app_env, monkeypatch):
    folder = app_env / "broken"
    folder.mkdir()
    (folder / "index.json").write_text("{not json", encoding="utf-8")
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(folder))
    at = open_app("feature_map")
    assert "snapshots cannot be used" in " ".join(w.value for w in at.warning)
    assert charts(at)


def test_another_model_grayscale_other_size_other_classes(app_env, monkeypatch):
    net = TinyNet(
        height=40,
        width=32,
        channels=1,
        convs=(Conv(4), Conv(6)),
        head="softmax",
        class_names=("circle", "square", "triangle"),
        seed=4,
    )
    monkeypatch.setenv("FEATAPP_MODEL", str(build(net, app_env / "shapes.onnx")))
    at = open_app()
    assert "do not match the model's classes" in main_text(at)
    assert "dog" not in sidebar_text(at) and "The model says" in sidebar_text(at)
    go(at, "feature_map")
    assert chart_title(at) == "Layer 1 (conv2d), channel 1"
    assert heatmap_picture(at).shape[:2] == (38, 30)
    go(at, "layer_grid")
    assert "`1 x 38 x 30 x 4`" in main_text(at)
    go(at, "neuron")
    go(at, "model")
    text = main_text(at)
    assert "40 x 32 x 1 (grayscale)" in text and "circle, square, triangle" in text
    assert at.main.image[0].captions == ["Filters 1 to 4, 4 per row, numbered left to right from the top left."]


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_a_missing_or_corrupt_model_gives_a_fix_it_page(app_env, monkeypatch, problem):
    path = app_env / "model.onnx"
    if problem == "corrupt":
        path.write_bytes(b"this is not an onnx model" * 100)
    monkeypatch.setenv("FEATAPP_MODEL", str(path))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert "cannot start" in at.title[0].value
    assert ("No model file" if problem == "missing" else "not a model ONNX Runtime can load") in at.error[0].value
    assert "FEATAPP_MODEL" in main_text(at)


def test_the_app_never_imports_tensorflow(app_env):
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT}).run()
for page in {list(PAGE_FILES.values())!r}:
    at.switch_page(page).run()
    assert not at.exception, page
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras", "tf2onnx")))
print("LOADED", loaded)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout


def test_config_limits_uploads_and_needs_no_internet():
    import tomllib  # Python 3.11+, the version the project is verified on

    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["maxUploadSize"] == 10
    assert config["browser"]["gatherUsageStats"] is False
    assert config["runner"]["magicEnabled"] is False  # a page shows only what it calls st.* for
    # The browser keeps large messages long enough that a burst of reruns cannot strand it (explorer.py).
    assert config["global"]["maxCachedMessageAge"] >= 20
    helpers = sorted((REPO_ROOT / "featapp" / "app").glob("*.py"))
    sources = [APP, *(REPO_ROOT / path for path in PAGE_FILES.values()), *helpers]
    for source in sources:
        text = source.read_text(encoding="utf-8")
        assert ":material/" not in text, f"{source.name} uses a Material icon (a font from the internet)"
        assert "http://" not in text and "https://" not in text, f"{source.name} refers to the internet"


def test_feature_map_finds_the_lecture_detectors_and_says_what_the_filters_are(app_env, model, monkeypatch):
    """The lecture's horizontal-edge detector is channel 1 of another network: the button opens
    this network's counterpart, found with the probes, and says how clearly it prefers the edge."""
    from featapp.stats.detectors import lecture_detectors

    horizontal = lecture_detectors(model)[0]
    at = open_app("feature_map")
    next(b for b in at.main.button if b.label == "Its horizontal edge detector").click().run()
    assert_clean(at)
    assert at.session_state["view.channel"] == horizontal.channel + 1
    assert at.session_state["view.layer"] == "conv2d"
    text = main_text(at)
    assert f"channel {horizontal.channel + 1} of conv2d" in text
    assert "oriented edge" in text  # the first layer's filters, measured
    # The Model page says what the committed filters are, with the numbers the library measures.
    from featapp.engine.filters import first_layer_summary, read_first_layer_filters

    start = read_first_layer_filters(REPO_ROOT / "models" / "snapshots" / "epoch_000.onnx")
    summary = first_layer_summary(read_first_layer_filters(model.path), start)
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(REPO_ROOT / "models" / "snapshots"))
    text = main_text(go(open_app(), "model"))
    assert f"{len(summary.edge_like)} of the {summary.count} filters" in text
    assert (
        f"correlate {summary.correlation_with_start:.2f}" in text
        or f"only {summary.correlation_with_start:.2f}" in text
    )
    assert "training turns them into edge and colour detectors" not in text


def test_another_model_starting_with_conv2d_is_not_offered_the_lectures_snapshots(app_env, monkeypatch):
    """Snapshots belong to their model: a model whose first layer is also called conv2d, but
    which is another network, gets no training slider and no strip."""
    from tests.helpers import modelfactory

    folder = snapshot_folder(app_env / "snapshots", {0: 11, 3: None}, best=3)
    other = modelfactory.build(modelfactory.TinyNet(height=40, width=40, channels=3), app_env / "other.onnx")
    assert load_model(other, provider="cpu").layer_names[0] == "conv2d"
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(folder))
    monkeypatch.setenv("FEATAPP_MODEL", str(other))
    at = open_app("feature_map")
    assert_clean(at)
    assert not [s for s in at.select_slider if s.label == "Training progress"]
    monkeypatch.setenv("FEATAPP_MODEL", str(COMMITTED_MODEL))  # the lecture's model still has them
    at = open_app("feature_map")
    assert [s for s in at.select_slider if s.label == "Training progress"]


@pytest.mark.slow
def test_a_model_converted_from_pytorch_opens_every_page(app_env, monkeypatch):
    """The app treats a PyTorch model converted with 'convert export MODEL.onnx' like any other."""
    from convert.onnx_source import OnnxOptions, export_onnx

    converted = app_env / "torch_featapp.onnx"
    fixture = COMMITTED_MODEL.parent.parent / "tests" / "fixtures" / "onnx" / "torch_legacy.onnx"
    options = OnnxOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    export_onnx(fixture, converted, options, log=lambda _: None)
    monkeypatch.setenv("FEATAPP_MODEL", str(converted))
    at = open_app()
    assert_clean(at)
    for page in PAGE_FILES:
        go(at, page)
        assert_clean(at)
    assert "class " in sidebar_text(at)  # a prediction among its ten classes
