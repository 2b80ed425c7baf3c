"""The Feature map's "How this value was computed" (issue 29, item 1), as a student sees it."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.arithmetic import explain_cell, read_layer_ops
from tests.helpers.apptest import captions, main_text, open_app

HEADING = "How this value was computed"


def _choose(at, layer: str, channel: int, row: int, col: int):
    at.selectbox(key="feature_map.layer").set_value(layer).run()
    at.session_state["view.channel"] = channel + 1
    at.session_state["view.cell"] = (layer, row, col)  # what a click on the map stores
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return main_text(at)


def _expected(model, pixels, layer: str, channel: int, row: int, col: int):
    acts = model.activations(pixels[np.newaxis])
    return explain_cell(read_layer_ops(model)[layer], model, acts, pixels, channel, row, col)


def test_no_cell_chosen_shows_no_arithmetic(app_env):
    at = open_app("feature_map")
    assert HEADING not in main_text(at)


def test_a_first_layer_cell_shows_pixels_kernel_products_bias_and_relu(app_env, model, first_photo):
    _, pixels = first_photo
    text = _choose(at := open_app("feature_map"), "conv2d", 4, 70, 60)
    cell = _expected(model, pixels, "conv2d", 4, 70, 60)
    assert HEADING in text
    assert "3 x 3 patch of the photo: rows 71-73, columns 61-63" in text
    for colour in ("Red", "Green", "Blue"):
        assert f"**{colour}** (pixel → pixel × 0.003922" in text
    assert f"{int(cell.pixels[0, 0, 0])} → " in text
    assert "Add all 27 products" in text and "pre-activation" in text and "ReLU" in text
    assert f"The model returned **{cell.model_value:.4g}".replace("-", "\u2212") in text
    assert any("patch, enlarged" in c for c in captions(at))


def test_a_deeper_conv_cell_lists_its_strongest_input_channels(app_env, model, first_photo):
    _, pixels = first_photo
    text = _choose(open_app("feature_map"), "conv2d_3", 9, 7, 7)
    cell = _expected(model, pixels, "conv2d_3", 9, 7, 7)
    first = cell.strongest(6)[0][0][0]
    assert "window (rows 8-10, columns 8-10) of all 128 channels of layer 6 (max_pooling2d_2)" in text
    assert f"| {first + 1} of layer 6 (max_pooling2d_2) |" in text
    assert "the other 122 channels" in text and "sum = pre-activation" in text


def test_a_pooling_cell_shows_its_window_and_winner(app_env):
    text = _choose(open_app("feature_map"), "max_pooling2d", 0, 30, 30)
    assert "2 x 2 window of the same channel (1) of layer 1 (conv2d), rows 61-62 and columns 61-62" in text
    assert "It keeps the **largest**" in text and "✔" in text


@pytest.fixture
def browser_view(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_MAP_VIEW", "browser")
    return app_env


def test_a_cell_chosen_in_the_browser_view_is_explained(browser_view):
    at = open_app("feature_map")
    at.session_state["feature_map.explorer"] = {
        "layer_name": "conv2d",
        "channel": 3,
        "colours": "blues4",
        "scaling": "per map",
        "fixed_low": 0.0,
        "fixed_high": 1.0,
        "cell": [5, 6],
        "overlay": False,
    }
    at.run()
    assert not at.exception
    text = main_text(at)
    assert HEADING in text and "rows 6-8, columns 7-9" in text
