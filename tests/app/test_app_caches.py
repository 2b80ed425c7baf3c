"""The app's shared caches (featapp/app/caches.py), called directly: one copy of an image's
activations for every session, which no page can change, and pictures encoded once."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from featapp.app.appstate import CurrentImage
from featapp.engine.images import prepare_image

# Outside `streamlit run` the caches still work, in memory; Streamlit says so once per cache.
logging.getLogger("streamlit.runtime.caching").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def caches():
    from featapp.app import caches

    return caches


@pytest.fixture
def photo(model, cat_photo) -> CurrentImage:
    return CurrentImage.from_array(prepare_image(cat_photo, model.input_spec), "dataset", cat_photo.name)


def test_activations_are_computed_once_shared_and_read_only(caches, model, photo):
    first = caches.activations(model, photo)
    assert caches.activations(model, photo) is first  # every session reads the same arrays, no copy
    name = model.layers[0].name
    expected = model.activations(photo.array[np.newaxis])[name][0]
    np.testing.assert_array_equal(first[name], expected)
    with pytest.raises(ValueError, match="read-only"):
        first[name][0, 0, 0] = 1.0  # a page writing into the map would change it for every student
    with pytest.raises(TypeError):
        first["extra"] = expected  # type: ignore[index]
    np.testing.assert_array_equal(caches.activations(model, photo)[name], expected)


def test_a_picture_is_encoded_once_as_png_and_sized_for_its_place(caches):
    picture = np.random.default_rng(5).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    data = caches.picture_png(picture)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG"
    np.testing.assert_array_equal(np.asarray(decoded), picture)  # lossless
    assert caches.picture_png(picture.copy()) == data  # the same pixels are the same cached bytes
    other = picture.copy()
    other[0, 0, 0] ^= 1
    assert caches.picture_png(other) != data  # one changed pixel is another picture
    sized = Image.open(io.BytesIO(caches.picture_png(picture, 360)))
    assert sized.size == (360, 360)


def test_a_heatmap_view_is_built_once_and_every_channel_is_its_own(caches, model, photo):
    import pyarrow as pa

    from featapp import render

    layer = model.layers[0].name
    maps = caches.activations(model, photo)[layer]
    scale = render.COLOUR_SCALES["blues4"]
    vr = render.value_range(maps[0], "per map")
    spec = caches.heatmap_spec(model, photo, layer, 0, vr, scale, width_px=360)
    assert caches.heatmap_spec(model, photo, layer, 0, vr, scale, width_px=360) is spec  # a second student: no work
    assert all(isinstance(table, pa.Table) for table in spec["datasets"].values())
    # What it shows is the chart of that map: the picture render draws for it.
    picture = spec["datasets"]["picture"].column("url")[0].as_py()
    assert picture == render.data_url(render.map_png(maps[0], vr, scale))
    # Another channel, range, colour scale or chosen cell is another chart.
    other_vr = render.value_range(maps[1], "per map")
    others = [
        caches.heatmap_spec(model, photo, layer, 1, other_vr, scale, width_px=360),
        caches.heatmap_spec(
            model, photo, layer, 0, render.value_range(maps[0], "per layer", layer_values=maps), scale, width_px=360
        ),
        caches.heatmap_spec(model, photo, layer, 0, vr, render.COLOUR_SCALES["viridis"], width_px=360),
        caches.heatmap_spec(model, photo, layer, 0, vr, scale, width_px=360, selected_cell=(3, 4)),
    ]
    assert all(other is not spec for other in others)
    assert others[3]["datasets"]["outline"].to_pylist() == [{"r0": 3, "r1": 4, "c0": 4, "c1": 5}]
    assert others[0]["datasets"]["picture"].column("url")[0].as_py() == render.data_url(
        render.map_png(maps[1], other_vr, scale)
    )


def test_a_layer_grid_is_built_once_per_view(caches, model, photo):
    from featapp import render

    layer = model.layers[2].name
    maps = caches.activations(model, photo)[layer]
    scale = render.COLOUR_SCALES["blues4"]
    chart, ordered, dead = caches.tile_grid(model, photo, layer, (1, 8), "max", scale, "per map", None, width_px=880)
    again = caches.tile_grid(model, photo, layer, (1, 8), "max", scale, "per map", None, width_px=880)
    assert again[0] is chart
    assert ordered == render.order_channels(maps, range(8), "max")
    assert dead == [channel for channel in range(8) if render.is_constant(maps[channel])]
    assert [row["ch"] for row in chart["datasets"]["tiles"].to_pylist()] == ordered
    fewer = caches.tile_grid(model, photo, layer, (2, 5), "index", scale, "per map", None, width_px=880)
    assert fewer[1] == [1, 2, 3, 4]


def test_gallery_cards_are_the_photos_made_once_and_served_from_the_shelf(caches, model, dataset):
    from featapp.app.asset_server import SHELF, SHELF_PATH

    cards = caches.gallery_cards(model, dataset, "test", 0)
    assert caches.gallery_cards(model, dataset, "test", 0) is cards  # one lookup per rerun, for every student
    items, pixels = caches.gallery(model, dataset, "test", 0)
    assert [card.item for card in cards] == list(items) and len(cards) == 20
    probabilities = model.predict(pixels).probabilities
    for card, photo, p in zip(cards, pixels, probabilities, strict=True):
        assert card.wrong == (card.item.label != int(p.argmax()))
        shown = np.asarray(Image.open(io.BytesIO(card.png)).convert("RGB"))
        if card.wrong:  # framed in red
            assert (shown[:3, :, 0] > 180).all() and (shown[:3, :, 1] < 80).all()
            assert not np.array_equal(shown, photo)
        else:
            np.testing.assert_array_equal(shown, photo)
        url = caches.card_url(card)
        assert url == SHELF_PATH + card.name and SHELF.get(card.name).body == card.png
    assert any(card.wrong for card in cards) and not all(card.wrong for card in cards)
    other = caches.gallery_cards(model, dataset, "test", 1)
    assert {c.name for c in other}.isdisjoint(c.name for c in cards)  # another sample, other photos


def test_the_snapshot_index_is_read_again_only_when_it_changes(caches, monkeypatch, tmp_path):
    from tests.helpers.appmodels import snapshot_folder

    folder = snapshot_folder(tmp_path / "snaps", {0: 11, 3: None}, best=3)
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(folder))
    first, problem = caches.read_snapshots()
    assert problem is None and len(first) == 2
    assert caches.read_snapshots()[0] == first
    index = folder / "index.json"
    index.write_text("{not json", encoding="utf-8")  # a new size and time stamp: read again
    snaps, problem = caches.read_snapshots()
    assert snaps == [] and "damaged" in problem
    index.unlink()
    assert caches.read_snapshots() == ([], None)


class RecordingBar:
    """Stands in for ``st.progress``: keeps every text it is given."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def progress(self, value: float, text: str = "") -> None:
        assert 0.0 <= value <= 1.0
        self.texts.append(text)


def test_a_page_scanning_a_split_someone_else_is_scanning_says_it_waits(caches, monkeypatch, tmp_path, dataset):
    import threading
    import time

    from featapp.data.dataset import Dataset
    from featapp.engine.model import load_model
    from featapp.stats import analysis
    from tests.helpers.modelfactory import build_red_model

    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "cache"))
    for image in dataset.sample("test", per_class=1, seed=4):
        (tmp_path / "photos" / "test" / image.class_name).mkdir(parents=True)
        (tmp_path / "photos" / "test" / image.class_name / image.name).symlink_to(image.path)
    data = Dataset(tmp_path / "photos")
    tiny = load_model(build_red_model(tmp_path / "tiny.onnx"), provider="cpu")
    running = analysis._running_scan(analysis.cache_path(tiny, data, "test"))
    bar, result = RecordingBar(), []
    with running.lock:  # another session's scan of this split, half done
        running.done, running.total = 1, 2
        page = threading.Thread(target=lambda: result.append(caches.run_scan(tiny, data, "test", bar)))
        page.start()
        while not bar.texts:
            time.sleep(0.01)
    page.join(timeout=30)
    assert bar.texts[0] == f"{caches.SCAN_WAITING}: 1 of 2 photos so far"
    # That scan saved nothing here, so this session scans after it, with its own progress.
    assert bar.texts[-1] == "Scanned 2 of 2 photos" and len(result[0]) == 2


class CountingModel:
    """A real model whose ``activations`` calls are counted."""

    def __init__(self, model) -> None:
        self._model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def activations(self, *args, **kwargs):
        self.calls += 1
        return self._model.activations(*args, **kwargs)


def test_the_activation_cache_is_bounded_in_bytes_so_a_bigger_model_keeps_fewer_images(caches, monkeypatch, tmp_path):
    from featapp.engine.metadata import activation_bytes
    from featapp.engine.model import load_model
    from tests.helpers.modelfactory import build_red_model

    small = CountingModel(load_model(build_red_model(tmp_path / "small.onnx", 48, 48), provider="cpu"))
    big = CountingModel(load_model(build_red_model(tmp_path / "big.onnx", 96, 96), provider="cpu"))
    per_small, per_big = activation_bytes(small.layers), activation_bytes(big.layers)
    assert per_big >= 3 * per_small
    budget = int(2.5 * per_big)
    caches._activations.clear()  # what other tests cached is released from the ledger too
    monkeypatch.setattr(caches, "ACTIVATION_CACHE_BYTES", budget)
    monkeypatch.setattr(caches, "_ACTIVATION_BYTES", caches._ByteLedger(budget))
    keeps = {model: caches.activation_cache_images(model) for model in (small, big)}
    assert keeps[small] == budget // per_small and keeps[big] == 2
    rng = np.random.default_rng(0)
    try:
        for model in (small, big):
            side = model.input_spec.height
            images = [
                CurrentImage.from_array(rng.integers(0, 256, (side, side, 3), np.uint8), "dataset", f"{side}-{i}.png")
                for i in range(keeps[model] + 2)
            ]
            for image in images:
                caches.activations(model, image)
            assert model.calls == len(images)
            assert caches._ACTIVATION_BYTES.total <= budget
            for image in reversed(images[-keeps[model] :]):  # the most recent ones are all still there
                caches.activations(model, image)
            assert model.calls == len(images)
            caches.activations(model, images[0])  # the oldest was dropped from Streamlit's cache, not only counted out
            assert model.calls == len(images) + 1
    finally:
        caches._activations.clear()
    assert caches._ACTIVATION_BYTES.total == 0  # Streamlit's clear is heard


def test_gallery_layers_are_bounded_in_bytes_so_deep_layers_keep_more(caches, model, monkeypatch):
    rng = np.random.default_rng(1)
    samples = [rng.integers(0, 256, (3, 150, 150, 3), np.uint8) for _ in range(3)]
    counting = CountingModel(model)
    layer_one = model.activations(samples[0], layers=["conv2d"])["conv2d"].nbytes  # one sample's layer 1
    budget = int(2.5 * layer_one)
    caches._gallery_layer.clear()
    monkeypatch.setattr(caches, "_GALLERY_LAYER_BYTES", caches._ByteBudget(budget))
    try:
        for pixels in samples * 2:  # a deep layer is small: every sample's stays
            maps = caches.gallery_layer(counting, pixels, "conv2d_3")
        assert counting.calls == 3 and maps.shape[0] == 3
        for pixels in samples:
            caches.gallery_layer(counting, pixels, "conv2d")
        assert counting.calls == 6
        assert caches._GALLERY_LAYER_BYTES.total <= budget
        caches.gallery_layer(counting, samples[2], "conv2d")
        caches.gallery_layer(counting, samples[1], "conv2d")
        assert counting.calls == 6  # the two most recent layer 1s are kept
        again = caches.gallery_layer(counting, samples[0], "conv2d")
        assert counting.calls == 7  # the oldest was dropped from Streamlit's cache, not only counted out
        np.testing.assert_array_equal(again, model.activations(samples[0], layers=["conv2d"])["conv2d"])
    finally:
        caches._gallery_layer.clear()
    assert caches._GALLERY_LAYER_BYTES.total == 0  # Streamlit's clear is heard


def test_scans_in_memory_are_bounded_in_bytes(caches, model, app_env, dataset, monkeypatch):
    from featapp.data.dataset import Dataset
    from featapp.stats import analysis

    root = app_env / "two-splits"
    for split in ("test", "validation"):
        for item in dataset.sample(split, per_class=2, seed=3):
            target = root / split / item.class_name / item.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(item.path)
    data = Dataset(root)
    for split in ("test", "validation"):
        analysis.load_or_scan(model, data, split=split)
    caches._neuron_stats.clear()
    try:
        first = caches.neuron_stats(model, data, "test")
        assert first is not None and len(first) == 4
        size = caches._SCAN_BYTES.total
        arrays = sum(a.nbytes for layer in first._layers.values() for a in layer.arrays().values())
        assert arrays <= size <= arrays + 100_000  # the statistics' arrays, each once, and a few names
        caches._neuron_stats.clear()
        monkeypatch.setattr(caches, "_SCAN_BYTES", caches._ByteBudget(int(1.5 * size)))
        first = caches.neuron_stats(model, data, "test")
        assert caches.neuron_stats(model, data, "test") is first  # kept while within the budget
        other = caches.neuron_stats(model, data, "validation")
        assert other is not None and other.split == "validation"
        assert caches._SCAN_BYTES.total <= 1.5 * size
        assert caches.neuron_stats(model, data, "validation") is other
        again = caches.neuron_stats(model, data, "test")  # dropped for the other split: read again
        assert again is not first and again is not None and again.paths == first.paths
    finally:
        caches._neuron_stats.clear()
    assert caches._SCAN_BYTES.total == 0


def test_a_byte_budget_counts_arrays_once_through_any_holder(caches):
    block = np.zeros((1000,), np.float64)
    view = block[10:20]

    @dataclass
    class Holder:
        arrays: list
        name: str

    assert caches._nbytes(block) == 8000
    assert caches._nbytes(Holder([block, view, block], "abc")) == 8003  # the view is the block's memory
    assert caches._nbytes({"a": block, "b": (view,)}) == 8002


def test_a_model_file_is_loaded_once_and_again_when_it_is_replaced(caches, tmp_path):
    import os
    import shutil

    from tests.helpers.appmodels import COMMITTED_MODEL

    path = tmp_path / "model.onnx"
    shutil.copyfile(COMMITTED_MODEL, path)
    first = caches.model_at(path)
    assert caches.model_at(str(path)) is first  # the Feature map asks on every rerun: no reload
    assert caches.model_at(tmp_path / "." / "model.onnx") is first  # another spelling, the same file
    replacement = tmp_path / "model.new"
    shutil.copyfile(COMMITTED_MODEL, replacement)
    os.replace(replacement, path)  # written again, atomically, as `convert export` does
    second = caches.model_at(path)
    assert second is not first and second.sha256 == first.sha256
    path.unlink()
    from featapp.engine.model import ModelError

    with pytest.raises(ModelError):
        caches.model_at(path)
