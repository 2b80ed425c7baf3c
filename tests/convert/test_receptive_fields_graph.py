"""Receptive fields through graphs, checked by brute force on small converted models.

Each model (``graph_zoo`` of tests/helpers/keras_builders.py for the Keras path,
and of tests/helpers/onnxgraphs.py for any ONNX file) has padding layers, strided 'same'
and explicitly padded convolutions, a dilated convolution, a residual add, a
concatenation of a 1x1 and a 3x3 branch and a squeeze-and-excitation gate. Every input
pixel is changed in turn and run through ONNX Runtime (tests/helpers/fieldcheck.py): every
pixel that changes a cell must lie in the cell's box, and where the geometry is plain the
box must be the smallest that holds them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.onnx_source import OnnxOptions, export_onnx
from featapp.engine.geometry import receptive_box
from featapp.engine.model import FeatureModel, load_model
from tests.helpers import onnxgraphs
from tests.helpers.fieldcheck import check_boxes, pixels_seen

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _checked(model: FeatureModel, tightness: dict[str, bool | str]) -> dict[str, int]:
    """check_boxes on every spatial layer (each must have a field); cells reached per layer."""
    hw = (model.input_spec.height, model.input_spec.width)
    spatial = [layer for layer in model.layers if layer.is_spatial]
    assert [layer.name for layer in spatial] == list(tightness)
    assert all(layer.receptive_field is not None for layer in spatial)
    seen = pixels_seen(model, [layer.name for layer in spatial])
    return {
        layer.name: check_boxes(layer, seen[layer.name], hw, tight=tightness[layer.name])  # type: ignore[arg-type]
        for layer in spatial
    }


@pytest.fixture(scope="module")
def keras_zoo(tmp_path_factory) -> FeatureModel:
    pytest.importorskip("tensorflow")
    from convert.export import ExportOptions, export_model
    from tests.helpers.keras_builders import graph_zoo

    path = tmp_path_factory.mktemp("keras_zoo") / "zoo.onnx"
    export_model(graph_zoo(), path, ExportOptions(gradients=False), log=lambda _: None)
    return load_model(path, provider="cpu")


@pytest.fixture(scope="module")
def onnx_zoo(tmp_path_factory) -> FeatureModel:
    folder = tmp_path_factory.mktemp("onnx_zoo")
    source = onnxgraphs.graph_zoo(folder / "source.onnx")
    export_onnx(source, folder / "zoo.onnx", OnnxOptions(gradients=False), log=lambda _: None)
    return load_model(folder / "zoo.onnx", provider="cpu")


def test_keras_padding_branches_and_gates_have_true_boxes(keras_zoo):
    reached = _checked(
        keras_zoo,
        {
            "pad": True,
            "conv_after_pad": True,
            "conv_s2_same": True,
            # A dilated kernel's outer taps may sit on padding near the border.
            "dilated": "inside",
            "residual": "inside",
            "branch_1x1": "inside",
            "branch_3x3": True,
            "concat": True,
            "crop": True,
            "pool": True,
            "squeeze_map": True,
            "gate": True,
            "scaled": False,  # a bounding union (the gate's jump is not the map's)
        },
    )
    # Every cell of every layer depends on some pixel, but the padding layer's border.
    assert reached["pad"] == 21 * 22
    assert all(reached[name] == 11 * 11 for name in ("conv_s2_same", "residual", "concat"))
    layers = {layer.name: layer for layer in keras_zoo.layers}
    assert layers["residual"].inputs == ("conv_s2_same", "dilated")
    assert layers["concat"].inputs == ("branch_1x1", "branch_3x3")
    assert layers["pad"].pads == (1, 0, 2, 1) and layers["crop"].pads == (-1, 0, 0, -1)
    # The gate sees every pixel the pooled map sees, so every scaled cell sees all of them too.
    gate = receptive_box(layers["gate"].receptive_field, 0, 0, (21, 22))
    scaled = layers["scaled"].receptive_field
    for row in range(5):
        for col in range(5):
            top, left, bottom, right = receptive_box(scaled, row, col, (21, 22))
            assert top <= gate[0] and left <= gate[1] and bottom >= gate[2] and right >= gate[3]


def test_onnx_padding_branches_and_gates_have_true_boxes(onnx_zoo):
    reached = _checked(
        onnx_zoo,
        {
            "conv1": True,  # PyTorch's padding=1 on a stride-2 conv: not TensorFlow's 'same'
            "act": True,  # a zero Pad before an activation
            "layer1.0.conv1": True,  # SAME_LOWER
            "layer1.0.downsample": True,
            "layer1.0.add": True,
            "layer2.dilated": "inside",
            "mix.branch1": "inside",
            "mix.branch3": True,
            "mix.concat": True,
            "pool": True,
            "se.fc": True,
            "se.gate": True,
            "se.scale": False,
        },
    )
    assert reached["conv1"] == 10 * 11 and reached["layer1.0.add"] == 6 * 6 and reached["se.scale"] == 3 * 3
    layers = {layer.name: layer for layer in onnx_zoo.layers}
    assert (layers["conv1"].padding, layers["conv1"].pads) == ("explicit", (1, 1, 1, 1))
    assert (layers["layer1.0.conv1"].padding, layers["layer1.0.conv1"].pads) == ("explicit", (1, 1, 0, 0))
    assert layers["act"].pads == (0, 1, 2, 0)
    assert layers["layer2.dilated"].padding == "same"  # pads (2, 2, 2, 2) are TensorFlow's for it
    assert layers["layer1.0.add"].inputs == ("layer1.0.conv1", "layer1.0.downsample")
    assert layers["se.scale"].inputs == ("pool", "se.gate")


def test_every_spatial_layer_of_a_mobilenet_shaped_model_has_its_boxes(tmp_path: Path):
    source = onnxgraphs.many_blocks(tmp_path / "source.onnx")
    spec = export_onnx(source, tmp_path / "many.onnx", OnnxOptions(gradients=False), log=lambda _: None)
    spatial = [layer for layer in spec.layers if layer.is_spatial]
    assert len(spatial) > 140
    assert [layer.name for layer in spatial if layer.receptive_field is None] == []
    # After a Pad and a stride-2 depthwise conv, cell 0 still starts at pixel 0.
    padded = next(layer for layer in spatial if layer.name == "features.4.conv.1.0")
    assert receptive_box(padded.receptive_field, 0, 0, (32, 32))[:2] == (0, 0)
