"""The 'Cats vs dogs' page and the Model page's liveness, in AppTest, on 3 cats and 3 dogs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from featapp.app.appstate import get_current
from featapp.app.chrome import PAGE_FILES
from featapp.app.view import CHANNEL, CLASSES_LAYER, CLASSES_TAB, CLASSES_TABS, LAYER
from featapp.data.dataset import Dataset
from featapp.engine.images import prepare_image
from featapp.stats import classes, projection
from featapp.stats.analysis import load_cached
from tests.helpers.apptest import as_shown, assert_clean, charts, go, main_text, open_app, rows_of, views


@pytest.fixture(scope="module")
def six_photos(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("six")
    for image in dataset.sample("test", per_class=3, seed=5):
        target = root / "test" / image.class_name / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    return root


@pytest.fixture
def env(monkeypatch, tmp_path, six_photos):
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(six_photos))
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(tmp_path / "no-snapshots"))
    monkeypatch.setenv("FEATAPP_PROVIDER", "cpu")
    monkeypatch.delenv("FEATAPP_MODEL", raising=False)
    return tmp_path / "cache"


def scanned_page(model, six_photos):
    at = open_app("classes")
    assert "have not been scanned" in main_text(at)
    next(b for b in at.button if b.label.startswith("Scan the 6 photos")).click().run()
    assert_clean(at)
    stats = load_cached(model, Dataset(six_photos), "test")
    assert stats is not None and len(stats) == 6
    return at, stats


def open_tab(at, index: int):
    at.session_state[CLASSES_TAB] = CLASSES_TABS[index]
    at.run()
    assert_clean(at)
    return at


def test_channels_tab_ranks_the_deepest_conv_layer_and_opens_the_feature_map(env, model, six_photos):
    at, stats = scanned_page(model, six_photos)
    text = main_text(at)
    table = classes.layer_separation(stats, "conv2d_3", "max")
    best = table.ranked()[0]
    assert "Layer 7 (conv2d_3)" in text
    assert f"Channel {best.channel + 1} of layer 7: its top photos of each class" in text
    shown = at.dataframe[0].value
    assert len(shown) == 128 and shown["channel"].tolist() == [row.channel + 1 for row in table.ranked()]
    assert shown["AUC"].tolist() == [round(row.auc, 3) for row in table.ranked()]
    # Three photos of each class, each with its map, on one scale.
    names = {as_shown(c).split(" · ")[0] for image in at.main.image for c in image.captions}
    assert {p.name for p in stats.paths} <= names
    # "Map" under the first dog photo opens the Feature map on this channel with that photo.
    dog = classes.class_top(stats, "conv2d_3", best.channel, "dogs", 1)[0]
    button = at.button(key=f"classes.open_conv2d_3_{best.channel}_{dog.index}")
    button.click().run()
    assert_clean(at)
    assert at.session_state[LAYER] == "conv2d_3" and at.session_state[CHANNEL] == best.channel + 1
    current = get_current(at.session_state)
    assert current.title == f"{dog.path.name} (test)"
    assert np.array_equal(current.array, prepare_image(dog.path, model))
    assert "Feature map" in at.title[0].value

    # The dense layer: units, no maps.
    go(at, "classes")
    at.selectbox(key=CLASSES_LAYER).set_value("dense").run()
    assert_clean(at)
    dense = classes.layer_separation(stats, "dense", "max")
    assert at.dataframe[0].value["unit"].tolist()[:10] == [row.channel + 1 for row in dense.ranked(10)]
    unit = dense.ranked()[0].channel
    cat = classes.class_top(stats, "dense", unit, "cats", 1)[0]
    at.button(key=f"classes.open_dense_{unit}_{cat.index}").click().run()
    assert_clean(at)
    assert get_current(at.session_state).title == f"{cat.path.name} (test)"
    assert "What tells a cat from a dog" in at.title[0].value, "a unit's photo opens here, not on another page"


def test_dense_tab_sums_the_units_to_the_models_probability(env, model, six_photos):
    at, _ = scanned_page(model, six_photos)
    open_tab(at, 1)
    current = get_current(at.session_state)
    p = model.predict(current.array[np.newaxis]).probabilities[0, 1]
    assert f"p(dogs) = **{p:.3f}**" in "\n".join(m.value for m in at.main.markdown)
    spec, data = charts(at)[0]
    bars = rows_of(spec, data, "bar")
    weights = classes.output_weights(model.path)
    dense = model.activations(current.array[np.newaxis])["dense"][0]
    expected = [r for r in classes.contributions(dense, weights) if r.contribution != 0][:20]
    assert [row["unit"] for row in bars] == [str(r.unit + 1) for r in expected]
    assert [row["contribution"] for row in bars] == pytest.approx([r.contribution for r in expected], abs=1e-4)


def test_map_tab_places_every_photo_and_the_current_image(env, model, six_photos):
    at, stats = scanned_page(model, six_photos)
    open_tab(at, 2)
    fitted = projection.load_or_fit(stats, "dense")
    spec, data = charts(at)[0]
    photos = rows_of(spec, data, "point")
    assert len(photos) == 6
    marks = [v for v in views(spec) if v["mark"] == "point" or v["mark"].get("type") == "point"]
    you = [row for v in marks for row in data[(v.get("data") or spec["data"])["name"]] if row.get("label")]
    assert len(you) == 1 and you[0]["label"] == "current image"
    you = you[0]
    assert [p["photo"] for p in photos] == [path.name for path in stats.paths]
    assert np.allclose([[p["x"], p["y"]] for p in photos], fitted.coords, atol=1e-5)
    assert all(p["image"].startswith("data:image/jpeg;base64,") for p in photos)
    predicted = projection.predicted_labels(stats)
    assert [p["answer"] == "wrong" for p in photos] == (predicted != stats.labels).tolist()
    current = get_current(at.session_state)
    expected = fitted.place(model.activations(current.array[np.newaxis])["dense"][0])[0]
    assert [you["x"], you["y"]] == pytest.approx(expected.tolist(), abs=1e-4)
    # The nearest photos: "Open" makes one current.
    features = stats.values("dense")
    query = model.activations(current.array[np.newaxis])["dense"][0]
    indices, distances = projection.nearest(features, query, k=6)
    first = next(i for i, d in zip(indices, distances, strict=True) if d > 1e-5)
    at.button(key=f"classes.near_{first}").click().run()
    assert_clean(at)
    assert get_current(at.session_state).title == f"{stats.paths[first].name} (test)"


def test_map_tab_with_one_method_names_it_instead_of_a_one_choice_radio(env, monkeypatch, model, six_photos):
    monkeypatch.setattr(projection, "available_methods", lambda: ["pca"])
    at, _ = scanned_page(model, six_photos)
    open_tab(at, 2)
    assert not [r for r in at.radio if r.label == "Map"]
    assert "**Map:** PCA" in [m.value for m in at.main.markdown]


def test_health_tab_and_the_model_page_show_liveness(env, model, six_photos):
    at = open_app("model")
    text = main_text(at)
    assert "How alive each layer is" in text and "the gallery's 6 photos" in text
    at, stats = scanned_page(model, six_photos)
    open_tab(at, 3)
    expected = classes.health_table(
        classes.network_health(stats), [layer.name for layer in model.layers if layer.is_spatial]
    )
    shown = at.dataframe[0].value
    assert shown["never fire"].tolist() == expected["never fire"].tolist()
    assert shown["zeros %"].tolist() == expected["zeros %"].tolist()
    go(at, "model")
    assert "all 6 scanned photos of the test split" in main_text(at)
    assert at.dataframe[1].value["never fire"].tolist() == expected["never fire"].tolist()


def test_the_page_without_a_dataset_explains(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATAPP_PROVIDER", "cpu")
    at = open_app()
    at.switch_page(PAGE_FILES["classes"]).run()
    assert_clean(at)
    assert "needs a dataset to scan" in main_text(at)


def test_a_trunk_and_a_three_class_model_still_work(env, monkeypatch, model, six_photos, tmp_path):
    from tests.helpers.appmodels import COMMITTED_MODEL, trunk_of
    from tests.helpers.modelfactory import Conv, TinyNet, build

    monkeypatch.setenv("FEATAPP_MODEL", str(trunk_of(COMMITTED_MODEL, tmp_path / "trunk.onnx")))
    at, _ = scanned_page_of(six_photos)
    for tab in range(4):
        open_tab(at, tab)
    open_tab(at, 1)
    assert "no dense output layer" in main_text(at)

    net = TinyNet(
        height=40, width=32, channels=1, convs=(Conv(4), Conv(6)), head="softmax",
        class_names=("circle", "square", "triangle"), seed=4,
    )  # fmt: skip
    monkeypatch.setenv("FEATAPP_MODEL", str(build(net, tmp_path / "shapes.onnx")))
    at, _ = scanned_page_of(six_photos)
    for tab in range(4):
        open_tab(at, tab)
    open_tab(at, 1)
    assert "3 units" in main_text(at)


def scanned_page_of(six_photos):
    at = open_app("classes")
    next(b for b in at.button if b.label.startswith("Scan the 6 photos")).click().run()
    assert_clean(at)
    return at, None


def test_dense_tab_lists_the_channels_feeding_a_unit_and_opens_one(env, model, six_photos):
    from featapp.stats.circuits import dense_unit_inputs, dense_weights

    at, _ = scanned_page(model, six_photos)
    open_tab(at, 1)
    at.number_input(key="circuits.dense_unit").set_value(6).run()
    assert_clean(at)
    current = get_current(at.session_state)
    acts = model.activations(current.array[np.newaxis])
    weights, bias, _ = dense_weights(model.path, "dense")
    inputs = dense_unit_inputs(weights, bias, "dense", 5, "max_pooling2d_3", acts["max_pooling2d_3"], acts["flatten"])
    text = main_text(at)
    assert (
        "Unit 6 of dense adds up every cell of every channel of max_pooling2d_3 (channels of conv2d_3, pooled)" in text
    )
    up, _ = inputs.strongest(4)
    channel = up[0][0]
    at.button(key=f"dense.dense.5.{channel}").click().run()
    assert_clean(at)
    assert at.session_state[LAYER] == "conv2d_3" and at.session_state[CHANNEL] == channel + 1
    assert at.title[0].value == "🔥 Feature map"
