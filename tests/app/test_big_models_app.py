"""The app on a big model: a MobileNetV2-shaped network of ~150 layers in blocks (PyTorch's
module paths ``features.N...``, written by ``many_blocks`` in tests/helpers/onnxgraphs.py and
converted with ``convert export``), whose last map has 1,280 channels.

The layer choosers come in two steps, block then layer, and stay in step across pages;
the One-neuron page draws each top photo's box for a layer after a ``Pad``; the Layer
grid and the Feature map show the 1,280-channel layer. A small model keeps one chooser.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.onnx_source import OnnxOptions, export_onnx
from featapp.app import view
from featapp.engine.blocks import group_blocks
from featapp.engine.model import load_model
from tests.helpers import onnxgraphs
from tests.helpers.apptest import assert_clean, chart_title, go, main_text, open_app


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big_model")
    source = onnxgraphs.many_blocks(folder / "source.onnx")
    export_onnx(source, folder / "many.onnx", OnnxOptions(gradients=False), log=lambda _: None)
    return folder / "many.onnx"


def _options(at, key: str) -> list[str]:
    return list(at.selectbox(key=key).options)


def test_a_big_models_layers_are_chosen_by_block_then_layer_on_every_page(app_env, monkeypatch, big_model):
    monkeypatch.setenv("FEATAPP_MODEL", str(big_model))
    model = load_model(big_model, provider="cpu")
    spatial = [layer.name for layer in model.layers if layer.is_spatial]
    assert len(spatial) > view.BLOCKS_ABOVE
    at = open_app("feature_map")
    blocks = _options(at, "feature_map.layer_block")
    assert blocks[:3] == ["features.0 (layers 1-2)", "features.1 (layers 3-8)", "features.2 (layers 9-14)"]
    assert blocks[-1] == "features.26 (layers 150-151)"
    # The layer box lists the first block's layers, numbered as in the model.
    assert _options(at, "feature_map.layer") == ["1 · features.0.0", "2 · features.0.2"]

    at.selectbox(key="feature_map.layer_block").set_value("features.4 (layers 21-25)").run()
    assert_clean(at)
    assert at.session_state[view.LAYER] == "features.4.conv.0.0"  # a new block opens on its first layer
    assert _options(at, "feature_map.layer") == [
        "21 · features.4.conv.0.0",
        "22 · features.4.conv.0.2",
        "23 · features.4.conv.1.0",
        "24 · features.4.conv.1.2",
        "25 · features.4.conv.2",
    ]
    at.selectbox(key="feature_map.layer").set_value("features.4.conv.1.0").run()
    assert chart_title(at) == "Layer 23 (features.4.conv.1.0), channel 1"

    # One neuron, many images: the same block and layer, and every top photo's peak has its
    # box although a Pad comes before this layer.
    go(at, "neuron")
    assert at.selectbox(key="neuron.layer_block").value == "features.4 (layers 21-25)"
    assert at.selectbox(key="neuron.layer").value == "features.4.conv.1.0"
    ranked = [image for image in at.main.image if image.proto.imgs and "Number " in image.proto.imgs[0].alt]
    assert len(ranked) == 20
    assert all("a red box around input rows" in image.proto.imgs[0].alt for image in ranked)

    # The Layer grid also lists vectors: the pooling and the head are a group of their own.
    go(at, "layer_grid")
    grid_blocks = _options(at, "layer_grid.layer_block")
    assert grid_blocks[-1] == "avgpool to softmax (layers 152-154)"
    assert at.selectbox(key="layer_grid.layer").value == "features.4.conv.1.0"
    last = grid_blocks[-2]
    at.selectbox(key="layer_grid.layer_block").set_value(last).run()
    at.selectbox(key="layer_grid.layer").set_value("features.26.0").run()
    assert_clean(at)
    assert "`1 x 2 x 2 x 1280`" in main_text(at)
    assert "Showing channels 1 to 1280 (1280 of 1280)" in main_text(at)

    # Back on the Feature map, the 1,280-channel layer and its last channel.
    go(at, "feature_map")
    assert at.selectbox(key="feature_map.layer_block").value == last
    at.number_input(key="feature_map.channel").set_value(1280).run()
    assert_clean(at)
    assert chart_title(at) == "Layer 150 (features.26.0), channel 1280"


def test_a_small_model_keeps_one_layer_chooser(app_env, monkeypatch, tmp_path):
    source = onnxgraphs.graph_zoo(tmp_path / "source.onnx")
    small = tmp_path / "small.onnx"
    export_onnx(source, small, OnnxOptions(gradients=False), log=lambda _: None)
    spatial = [layer.name for layer in load_model(small, provider="cpu").layers if layer.is_spatial]
    assert len(group_blocks(spatial)) > 1  # its names fall into blocks, but 13 maps need no blocks
    monkeypatch.setenv("FEATAPP_MODEL", str(small))
    at = open_app("feature_map")
    assert not [box for box in at.selectbox if box.label == "Block"]
    assert [option.split(" · ")[1] for option in _options(at, "feature_map.layer")] == spatial
