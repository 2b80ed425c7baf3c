"""featapp.stats.detectors: this network's counterparts of the lecture's layer-1 detectors."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.model import load_model
from featapp.stats.detectors import CLEAR_SELECTIVITY, lecture_detectors
from tests.modelfactory import Conv, TinyNet, build

SOBEL = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]], np.float32)  # dark above, bright below


def _net_with_known_detectors() -> TinyNet:
    """Channel 2: horizontal edges, 0: vertical edges, 3: red, 1: an even blur (none of them)."""
    net = TinyNet(height=40, width=40, channels=3, convs=(Conv(4),), seed=1)
    weights = np.zeros((4, 3, 3, 3), np.float32)
    weights[2] = SOBEL / 3
    weights[0] = SOBEL.T / 3
    weights[1] = 1 / 27
    weights[3, 0] = 1 / 9
    weights[3, 1:] = -1 / 9
    net.weights["conv2d/W"] = weights
    net.weights["conv2d/B"] = np.zeros(4, np.float32)
    return net


def test_known_detectors_are_found_with_their_selectivity(tmp_path):
    model = load_model(build(_net_with_known_detectors(), tmp_path / "known.onnx"), provider="cpu")
    horizontal, vertical, colour = lecture_detectors(model)
    assert (horizontal.kind, horizontal.channel, horizontal.layer) == ("horizontal edge", 2, "conv2d")
    assert (vertical.kind, vertical.channel) == ("vertical edge", 0)
    assert (colour.kind, colour.channel) == ("red patch", 3)
    # An ideal Sobel answers its own edge and not the other: selectivity 1, both polarities seen.
    assert horizontal.selectivity == pytest.approx(1.0) and horizontal.other_response == pytest.approx(0.0, abs=1e-6)
    assert horizontal.response > 0 and horizontal.clear and vertical.clear and colour.clear


def test_a_network_without_detectors_says_none_is_clear(tmp_path):
    net = TinyNet(height=40, width=40, channels=3, convs=(Conv(2),), seed=2)
    net.weights["conv2d/W"] = np.full((2, 3, 3, 3), 1 / 27, np.float32)  # two even blurs
    model = load_model(build(net, tmp_path / "blur.onnx"), provider="cpu")
    horizontal, vertical, _ = lecture_detectors(model)
    assert not horizontal.clear and not vertical.clear
    assert abs(horizontal.selectivity) < CLEAR_SELECTIVITY


def test_committed_model_answers_for_every_kind(model):
    matches = lecture_detectors(model)
    assert [m.kind.split()[-1] for m in matches] == ["edge", "edge", "patch"]
    for match in matches:
        assert 0 <= match.channel < model.layers[0].channels
        assert -1.0 <= match.selectivity <= 1.0
