"""The atlas in the app (AppTest, issue 29 item 5): with ``<model>.atlas.zip`` beside a small model,
the One-neuron and Feature map pages show every channel's stored picture with no optimisation;
a stale or damaged atlas is logged and ignored. The One-neuron page leads with the photos."""

from __future__ import annotations

import io
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from featapp import render
from featapp.app.asset_server import SHELF, SHELF_PATH
from featapp.app.captions import EXEMPLARS_FIRST
from featapp.engine.model import load_model
from featapp.explain import featurevis
from featapp.explain.atlas import atlas_path, build_atlas
from featapp.explain.gradients import load_gradients
from tests.helpers.apptest import captions, go, main_text, open_app
from tests.helpers.modelfactory import Conv, TinyNet, build, with_gradients

STEPS = 3  # the app's steps here (FEATAPP_VIS_STEPS), so the atlas is made at the app's settings


def _model(folder, seed: int = 0, name: str = "tiny.onnx"):
    # Layer 1 (3 x 3 fields) gets the centre-neuron objective, layer 2 (5 x 5) the whole-map one.
    net = TinyNet(height=20, width=24, channels=3, convs=(Conv(4), Conv(5)), seed=seed)
    return with_gradients(build(net, folder / name))


@pytest.fixture
def tiny(app_env, monkeypatch):
    path = _model(app_env)
    monkeypatch.setenv("FEATAPP_MODEL", str(path))
    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    return path


@pytest.fixture
def optimisations(monkeypatch) -> list[tuple[str, tuple[int, ...]]]:
    """Every feature visualisation the app starts (a spy: the real optimisation still runs)."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    real = featurevis.visualize

    def spy(grads, layer, channels, **kwargs):
        calls.append((layer, tuple(channels)))
        return real(grads, layer, channels, **kwargs)

    monkeypatch.setattr(featurevis, "visualize", spy)
    return calls


def _shown(at) -> dict[str, np.ndarray]:
    """The feature-visualisation pictures on the page, by the start of their caption, as sent."""
    found = {}
    for image in at.main.image:
        caption = image.captions[0] if image.captions else ""
        if caption.startswith(("Channel ", "All ")):
            url = image.value[0]
            assert url.startswith(SHELF_PATH), url
            body = SHELF.get(url.removeprefix(SHELF_PATH)).body
            found[caption.split(":")[0].split(" of ")[0]] = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    return found


def test_every_channel_is_shown_from_the_atlas_with_no_computation(tiny, optimisations):
    grads = load_gradients(load_model(tiny, provider="cpu"))
    atlas = build_atlas(grads, steps=STEPS)
    optimisations.clear()

    at = open_app("neuron")
    assert EXEMPLARS_FIRST.split("**")[1] in main_text(at)
    images = [image.captions[0] if image.captions else "" for image in at.main.image]
    first_photo = next(i for i, c in enumerate(images) if c.startswith("#1 "))
    picture = next(i for i, c in enumerate(images) if c.startswith("Channel 1: its centre cell"))
    assert first_photo < picture  # the natural exemplars come first, the synthetic picture beside them
    assert not [b for b in at.main.button if b.label.startswith(("Optimise", "Compute pictures"))]
    shown = _shown(at)
    layer1 = atlas.layers["conv2d"].pictures
    assert np.array_equal(shown["Channel 1"], layer1.shown()[0])
    assert np.array_equal(shown["All 4 channels"], render.picture_mosaic(layer1.shown()))

    at.selectbox(key="neuron.layer").set_value("conv2d_1").run()
    at.number_input(key="neuron.channel").set_value(4).run()
    assert not at.exception
    layer2 = atlas.layers["conv2d_1"].pictures
    shown = _shown(at)
    assert np.array_equal(shown["Channel 4"], layer2.shown()[3])
    caption = next(c for c in captions(at) if c.startswith("Channel 4: mean activation"))
    assert f"{layer2.activations[3]:.3f} on this picture" in caption

    go(at, "feature_map")  # the same pictures, on the Feature map
    assert _shown(at).keys() == {"Channel 4", "All 5 channels"}
    assert optimisations == []  # nothing was optimised: every picture came from the file

    # ... and they are what the app would have computed on demand at its settings, each value
    # within one level of 255 (the atlas keeps 7 bits of each) and its activation near.
    on_demand = featurevis.visualize(grads, "conv2d_1", [3], steps=STEPS, objective="channel")
    assert np.abs(shown["Channel 4"].astype(int) - on_demand.shown()[0]).max() <= 1
    assert layer2.activations[3] == pytest.approx(on_demand.activations[0], rel=0.05, abs=1e-3)


@pytest.mark.parametrize("problem", ["another model", "damaged"])
def test_a_stale_or_damaged_atlas_is_ignored_and_pictures_are_computed_on_demand(
    tiny, app_env, optimisations, caplog, problem
):
    if problem == "another model":
        (app_env / "other").mkdir()
        other = _model(app_env / "other", seed=5)
        build_atlas(load_gradients(load_model(other, provider="cpu")), steps=STEPS)
        shutil.copyfile(atlas_path(other), atlas_path(tiny))
        said = "made for another model file"
    else:
        build_atlas(load_gradients(load_model(tiny, provider="cpu")), steps=STEPS)
        data = atlas_path(tiny).read_bytes()
        atlas_path(tiny).write_bytes(data[: len(data) // 3])
        said = "is damaged or not one featapp wrote"
    optimisations.clear()
    with caplog.at_level(logging.WARNING, logger="featapp.explain.atlas"):
        at = open_app("neuron")
    assert not at.exception and not at.error
    assert said in caplog.text and str(atlas_path(tiny)) in caplog.text
    assert not _shown(at)  # no stored picture shown...
    button = next(b for b in at.main.button if b.label.startswith("Optimise a picture for channel 1"))
    button.click().run()  # ... and computing on demand works as without an atlas
    assert not at.exception
    assert optimisations == [("conv2d", (0,))]
    assert "Channel 1" in _shown(at)


def test_the_server_reads_the_atlas_before_the_first_student(tiny, monkeypatch):
    from featapp.app import caches, chrome
    from featapp.explain import atlas as atlas_module

    build_atlas(load_gradients(load_model(tiny, provider="cpu")), steps=STEPS)
    assert chrome.warm_up_gradients() == "featapp: gradient model loaded; 9 pictures from tiny.atlas.zip"
    monkeypatch.setattr(atlas_module, "read_atlas", lambda *a, **k: pytest.fail("read again on a click"))
    at = open_app("neuron")
    assert "Channel 1" in _shown(at)
    model = caches.model_at(tiny)
    assert caches.atlas(model, STEPS) is not None
