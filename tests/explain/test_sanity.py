"""The sanity check (issue 29, item 3): cascading randomisation of the weights, and rank correlations."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from featapp.engine.metadata import METADATA_KEY
from featapp.engine.model import load_model
from featapp.explain.backward import build_gradient_model, gradient_path
from featapp.explain.gradients import GradientError, load_gradients
from featapp.explain.sanity import randomised_copy, randomised_gradients, sanity_check, spearman, weighted_layers
from tests.helpers.modelfactory import Conv, TinyNet, build


def _weights(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def committed_grads(model):
    return load_gradients(model)


@pytest.fixture
def small(tmp_path):
    net = TinyNet(height=12, width=12, channels=3, convs=(Conv(4), Conv(5)))
    path = build(net, tmp_path / "tiny.onnx")
    forward = onnx.load(str(path))
    meta = {p.key: p.value for p in forward.metadata_props}
    import hashlib

    grad = build_gradient_model(forward, meta[METADATA_KEY], hashlib.sha256(path.read_bytes()).hexdigest())
    onnx.save(grad, str(gradient_path(path)))
    return load_model(path, provider="cpu")


def test_spearman_ranks_with_ties():
    a = np.array([[1.0, 2.0], [2.0, 5.0]])
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones_like(a)) == 0.0
    with pytest.raises(ValueError):
        spearman(a, a.ravel())


def test_the_cascade_randomises_only_the_top_layers_at_their_own_scale(small, tmp_path):
    assert weighted_layers(small) == ["conv2d", "conv2d_1", "dense"]
    before = _weights(small.path)
    copy = randomised_copy(small, top=2, seed=3, folder=tmp_path / "sanity")
    after = _weights(copy)
    assert np.array_equal(after["conv2d/W"], before["conv2d/W"])  # below the cascade: untouched
    for name in ("conv2d_1/W", "conv2d_1/B", "dense/W"):
        assert not np.allclose(after[name], before[name]), name
        assert after[name].std() == pytest.approx(before[name].std(), rel=0.5), name
    assert np.array_equal(after["dense/B"], before["dense/B"])  # one number: no scale of its own to draw from
    again = randomised_copy(small, top=2, seed=3, folder=tmp_path / "again")
    assert all(np.array_equal(after[k], v) for k, v in _weights(again).items())  # seeded
    with pytest.raises(ValueError, match="1 to 3"):
        randomised_copy(small, top=4, folder=tmp_path)


def test_the_randomised_gradient_model_is_the_randomised_network_s(small, tmp_path):
    """Its forward part matches the randomised file, and its gradient matches finite differences."""
    grads = randomised_gradients(small, top=3, seed=1, folder=tmp_path)
    random_model = grads.model
    pixels = np.random.default_rng(0).integers(0, 256, (1, 12, 12, 3), dtype=np.uint8)
    scaled = grads.scaled(pixels).astype(np.float64)
    result = grads.run_scaled(scaled.astype(np.float32), "dense", np.ones((1, 1), np.float32))
    assert np.allclose(result.activations["conv2d_1"], random_model.activations(pixels)["conv2d_1"], atol=1e-6)

    def logit(x: np.ndarray) -> float:
        p = float(
            grads.run_scaled(x.astype(np.float32), "dense", np.ones((1, 1), np.float32)).activations["dense"][0, 0]
        )
        return float(np.log(p / (1 - p)))

    step = 1e-2
    for index in [(0, 3, 4, 0), (0, 6, 6, 2), (0, 9, 2, 1)]:
        up, down = scaled.copy(), scaled.copy()
        up[index] += step
        down[index] -= step
        numeric = (logit(up) - logit(down)) / (2 * step)
        assert result.gradients["input"][index] == pytest.approx(numeric, rel=0.05, abs=1e-3)


def test_the_committed_model_s_maps_change_when_every_layer_is_random(committed_grads, cat_photo, tmp_path):
    layers = weighted_layers(committed_grads.model)
    assert layers == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "dense", "dense_1"]
    check = sanity_check(committed_grads, cat_photo, top=len(layers), seed=0, folder=tmp_path)
    assert check.randomised == tuple(layers) and check.cam_layer == "conv2d_3"
    assert check.saliency.shape == check.saliency_random.shape == (150, 150)
    assert check.gradcam.shape == check.gradcam_random.shape == (150, 150)
    assert -1.0 <= check.saliency_correlation < 0.99
    assert -1.0 <= check.gradcam_correlation < 0.99
    top_only = sanity_check(committed_grads, cat_photo, top=1, seed=0, folder=tmp_path)
    assert top_only.randomised == ("dense_1",) and top_only.class_index == check.class_index


def test_a_model_without_a_classifier_says_why(small, tmp_path):
    trunk = TinyNet(height=12, width=12, channels=3, convs=(Conv(4),), head=None)
    path = build(trunk, tmp_path / "trunk.onnx")
    forward = onnx.load(str(path))
    grad = build_gradient_model(forward, {p.key: p.value for p in forward.metadata_props}[METADATA_KEY])
    onnx.save(grad, str(gradient_path(path)))
    grads = load_gradients(load_model(path, provider="cpu"))
    with pytest.raises(GradientError, match="sanity-check maps need a class score"):
        sanity_check(grads, np.zeros((12, 12, 3), np.uint8), top=1, folder=tmp_path)


def test_the_model_page_shows_both_networks_side_by_side(app_env):
    from tests.helpers.apptest import captions, main_text, open_app

    at = open_app("model")
    assert "Sanity check." in main_text(at)
    at.select_slider(key="gradients.sanity_top").set_value(2).run()
    next(b for b in at.button if b.label.startswith("Sanity check")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = captions(at)
    for title in ("Saliency", "Grad-CAM at conv2d_3"):
        for which in ("trained", "randomised"):
            assert any(c.startswith(title) and c.endswith(f"{which} network") for c in shown), (title, which)
    text = main_text(at)
    assert "The weights of **dense, dense_1** were replaced by random numbers" in text
    assert text.count("rank correlation **") == 2
    assert "cannot tell you what the network learned" in text
