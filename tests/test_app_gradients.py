"""The gradient views in the app (AppTest): saliency and Grad-CAM on the Model page, and
"what this channel looks for" with the layer's grid on the Feature map and One-neuron pages."""

from __future__ import annotations

import numpy as np

from featapp.explain.featurevis import visualize
from featapp.explain.gradients import load_gradients
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
    expected = visualize(load_gradients(model), "conv2d", [0], steps=STEPS, objective="neuron")
    caption = next(c for c in captions(at) if c.startswith("Channel 1: its centre cell"))
    assert f"{expected.activations[0]:.3f} on this picture" in caption
    next(b for b in at.main.button if b.label.startswith("Compute pictures for all 32 channels")).click().run()
    assert not at.exception
    assert any(c.startswith("All 32 channels of conv2d") for c in captions(at))
    cached = list((app_env / "cache" / "featurevis").rglob("conv2d-all-*.npz"))
    assert len(cached) == 1  # on disk, keyed by the model's hash: the next session needs no button
    at2 = open_app("feature_map")
    assert any(c.startswith("All 32 channels of conv2d") for c in captions(at2))
    assert any(c.startswith("Channel 1: its centre cell") for c in captions(at2))


def test_neuron_page_shows_what_the_channel_looks_for(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    at = open_app("neuron")
    assert "What this channel looks for" in main_text(at)
    next(b for b in at.main.button if b.label.startswith("Optimise a picture for channel 1")).click().run()
    assert not at.exception
    assert any(c.startswith("Channel 1: its centre cell") for c in captions(at))


def test_trunk_models_give_messages_not_crashes(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    # A committed snapshot (it has a gradient file): class views say why not, channel views work.
    monkeypatch.setenv("FEATAPP_MODEL", str(COMMITTED_MODEL.parent / "snapshots" / "epoch_000.onnx"))
    at = open_app("model")
    assert "Saliency and Grad-CAM need a class score" in main_text(at)
    go(at, "feature_map")
    next(b for b in at.main.button if b.label.startswith("Optimise a picture")).click().run()
    assert not at.exception and any(c.startswith("Channel 1: its centre cell") for c in captions(at))
    # A trunk cut in the test has no gradient file: every gradient view says how to make one.
    monkeypatch.setenv("FEATAPP_MODEL", str(trunk_of(COMMITTED_MODEL, app_env / "trunk.onnx")))
    at = open_app("model")
    assert "python -m convert gradients" in main_text(at)
    go(at, "feature_map")
    assert "gradient views unavailable" in main_text(at)
    assert not np.any([b.label.startswith("Optimise") for b in at.main.button])


def test_pictures_on_disk_are_read_once_and_sent_from_the_shelf(app_env, monkeypatch, model):
    """An instructor computed a layer's pictures before class: every student's rerun shows them
    from memory (a rerun that read and encoded them cost a third of a second), the browser gets
    them at a URL of the picture shelf, and pictures computed again are read again."""
    import io
    import os

    from PIL import Image

    from featapp.app import sections
    from featapp.app.asset_server import SHELF, SHELF_PATH
    from featapp.explain import featurevis

    monkeypatch.setenv("FEATAPP_VIS_STEPS", str(STEPS))
    grads = load_gradients(model)
    whole = featurevis.layer_pictures(grads, "conv2d", steps=STEPS)

    def shown(at) -> dict[str, np.ndarray]:
        found = {}
        for image in at.main.image:
            caption = image.captions[0] if image.captions else ""
            url = image.value[0]
            if caption.startswith(("All 32 channels", "Channel 1: its centre cell")):
                assert url.startswith(SHELF_PATH), url
                body = SHELF.get(url.removeprefix(SHELF_PATH)).body
                found[caption.split(":")[0].split(" of ")[0]] = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        return found

    at = open_app("feature_map")
    pictures = shown(at)
    assert whole.objective == "neuron"  # layer 1: the centre cell's receptive field, enlarged
    assert np.array_equal(pictures["All 32 channels"], sections._mosaic(whole.shown()))
    assert np.array_equal(pictures["Channel 1"], whole.shown()[0])

    read = featurevis._read_cached

    def refuse(path):
        raise AssertionError(f"{path} was read again on a rerun")

    monkeypatch.setattr(featurevis, "_read_cached", refuse)
    at.run()
    assert not at.exception
    assert set(shown(at)) == {"All 32 channels", "Channel 1"}

    monkeypatch.setattr(featurevis, "_read_cached", read)
    again = featurevis.FeatureVisualization(
        "conv2d",
        whole.channels,
        255 - whole.images,
        whole.activations,
        whole.start_activations,
        whole.objective,
        whole.box,
    )
    path = featurevis.cache_file(grads, "conv2d", steps=STEPS)
    featurevis._write_cached(path, again)
    later = path.stat().st_mtime_ns + 2_000_000_000  # a coarse file system may keep the old time stamp
    os.utime(path, ns=(later, later))
    at.run()
    assert np.array_equal(shown(at)["All 32 channels"], sections._mosaic(again.shown()))


def test_a_wide_layers_mosaic_is_shrunk_by_a_whole_factor_to_fit_the_page():
    from featapp.app.sections import MOSAIC_MAX_PX, _mosaic

    # 128 pictures, 16 to a row: at 150 px that is 2,460 px; halved (block means) it is 1,260.
    values = np.arange(128, dtype=np.uint8)[:, None, None, None]
    pictures = np.broadcast_to(values, (128, 150, 150, 3)).copy()
    pictures[0, :2, :2] = [[[0, 0, 0], [4, 4, 4]], [[8, 8, 8], [12, 12, 12]]]  # one 2x2 block: mean 6
    mosaic = _mosaic(pictures)
    assert mosaic.shape == (8 * 79 - 4, 16 * 79 - 4, 3) and mosaic.shape[1] <= MOSAIC_MAX_PX
    assert (mosaic[0, 0] == 6).all() and (mosaic[0, 1] == 0).all()
    assert (mosaic[79 * 7 + 10, 79 * 15 + 10] == 127).all()  # the last picture, bottom right
    assert (mosaic[:, 75:79] == 255).all()  # the white gap after the first column
    # 32 pictures, 8 to a row, fit as they are.
    assert _mosaic(pictures[:32]).shape == (4 * 154 - 4, 8 * 154 - 4, 3)
