"""The gradient views in the app (AppTest): saliency and Grad-CAM on the Model page, and
"what this channel looks for" with the layer's grid on the Feature map and One-neuron pages."""

from __future__ import annotations

import numpy as np

from featapp.featurevis import visualize
from featapp.gradients import load_gradients
from tests.appmodels import COMMITTED_MODEL, trunk_of
from tests.apptest import captions, go, main_text, open_app

STEPS = 4  # the app's steps per picture, kept small here (FEATAPP_VIS_STEPS)


def test_model_page_saliency_and_gradcam(app_env, model, first_photo):
    at = open_app("model")
    assert not any(c.startswith("Saliency of") for c in captions(at))  # computed only when asked
    next(b for b in at.main.button if b.label.startswith("Compute saliency")).click().run()
    assert not at.exception
    predicted = model.predict(first_photo[1]).labels[0]
    shown = captions(at)
    assert f"Saliency of '{predicted}' (SmoothGrad)" in shown
    assert f"Grad-CAM of '{predicted}' at conv2d_3" in shown
    at.run()  # computed once per image: shown again without asking
    assert f"Saliency of '{predicted}' (SmoothGrad)" in captions(at)


def test_feature_map_channel_picture_and_layer_grid(app_env, monkeypatch, model):
    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    at = open_app("feature_map")
    assert "What this channel looks for" in main_text(at)
    next(b for b in at.main.button if b.label.startswith("Optimise a picture for channel 1")).click().run()
    assert not at.exception
    expected = visualize(load_gradients(model), "conv2d", [0], steps=STEPS)
    caption = next(c for c in captions(at) if c.startswith("Channel 1: mean activation"))
    assert f"{expected.activations[0]:.3f} on this picture" in caption
    next(b for b in at.main.button if b.label.startswith("Compute pictures for all 32 channels")).click().run()
    assert not at.exception
    assert any(c.startswith("All 32 channels of conv2d") for c in captions(at))
    cached = list((app_env / "cache" / "featurevis").rglob("conv2d-all-*.npz"))
    assert len(cached) == 1  # on disk, keyed by the model's hash: the next session needs no button
    at2 = open_app("feature_map")
    assert any(c.startswith("All 32 channels of conv2d") for c in captions(at2))
    assert any(c.startswith("Channel 1: mean activation") for c in captions(at2))


def test_neuron_page_shows_what_the_channel_looks_for(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    at = open_app("neuron")
    assert "What this channel looks for" in main_text(at)
    next(b for b in at.main.button if b.label.startswith("Optimise a picture for channel 1")).click().run()
    assert not at.exception
    assert any(c.startswith("Channel 1: mean activation") for c in captions(at))


def test_trunk_models_give_messages_not_crashes(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    # A committed snapshot (it has a gradient file): class views say why not, channel views work.
    monkeypatch.setenv("FEATAPP_MODEL", str(COMMITTED_MODEL.parent / "snapshots" / "epoch_000.onnx"))
    at = open_app("model")
    assert "Saliency and Grad-CAM need a class score" in main_text(at)
    go(at, "feature_map")
    next(b for b in at.main.button if b.label.startswith("Optimise a picture")).click().run()
    assert not at.exception and any(c.startswith("Channel 1: mean activation") for c in captions(at))
    # A trunk cut in the test has no gradient file: every gradient view says how to make one.
    monkeypatch.setenv("FEATAPP_MODEL", str(trunk_of(COMMITTED_MODEL, app_env / "trunk.onnx")))
    at = open_app("model")
    assert "python -m convert gradients" in main_text(at)
    go(at, "feature_map")
    assert "gradient views unavailable" in main_text(at)
    assert not np.any([b.label.startswith("Optimise") for b in at.main.button])
