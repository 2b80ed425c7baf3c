"""How a cell was computed (issue 29, item 1): the recomputed value is the one the model returned."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.arithmetic import (
    GRAPH_INPUT,
    CannotExplain,
    ConvArithmetic,
    PoolArithmetic,
    explain_cell,
    read_layer_ops,
)
from featapp.engine.images import prepare_image
from featapp.engine.model import load_model
from tests.helpers.modelfactory import Conv, TinyNet, build

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def committed_ops(model):
    return read_layer_ops(model)


def _cells(maps: np.ndarray, count: int, seed: int) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    channels, rows, cols = maps.shape
    cells = [(int(rng.integers(channels)), int(rng.integers(rows)), int(rng.integers(cols))) for _ in range(count)]
    # The strongest cell too: a value well above zero checks the ReLU's pass-through, not only its zeros.
    strongest = np.unravel_index(int(np.argmax(maps)), maps.shape)
    return [*cells, tuple(int(i) for i in strongest)]


def test_every_conv_and_pool_layer_of_the_committed_model_recomputes_its_cells(model, committed_ops, dataset):
    spatial = [layer.name for layer in model.layers if layer.is_spatial]
    assert set(committed_ops) == set(spatial)
    assert all(not isinstance(op, str) for op in committed_ops.values()), committed_ops
    photos = [item.path for item in dataset.sample("test", per_class=2, seed=3)]
    for index, path in enumerate(photos):
        pixels = prepare_image(path, model)
        acts = model.activations(pixels[np.newaxis])
        for name, op in committed_ops.items():
            for channel, row, col in _cells(acts[name][0], 12, seed=index):
                cell = explain_cell(op, model, acts, pixels, channel, row, col)
                assert abs(cell.value - cell.model_value) <= TOLERANCE, (path, name, channel, row, col)


def test_a_first_layer_cell_shows_the_pixels_after_preprocessing(model, committed_ops, cat_photo):
    pixels = prepare_image(cat_photo, model)
    acts = model.activations(pixels[np.newaxis])
    cell = explain_cell(committed_ops["conv2d"], model, acts, pixels, channel=5, row=10, col=20)
    assert isinstance(cell, ConvArithmetic) and cell.source == GRAPH_INPUT
    assert cell.rows == (10, 11, 12) and cell.cols == (20, 21, 22)
    assert cell.pixels is not None and cell.pixels.shape == (3, 3, 3)
    assert np.array_equal(cell.pixels, pixels[10:13, 20:23].transpose(2, 0, 1))
    scale = model.spec.input_scale
    assert np.allclose(cell.window, cell.pixels * scale + model.spec.input_offset, atol=1e-7)
    assert cell.products.shape == (3, 3, 3)
    assert cell.total == pytest.approx(float(cell.products.sum()))
    assert cell.preactivation == pytest.approx(cell.total + cell.bias)


def test_a_deeper_cell_splits_into_its_strongest_input_channels_and_the_rest(model, committed_ops, dog_photo):
    pixels = prepare_image(dog_photo, model)
    acts = model.activations(pixels[np.newaxis])
    cell = explain_cell(committed_ops["conv2d_3"], model, acts, pixels, channel=7, row=4, col=6)
    assert cell.source == "max_pooling2d_2" and cell.pixels is None
    top, rest = cell.strongest(5)
    assert len(top) == 5
    sizes = [abs(value) for _, value in top]
    assert sizes == sorted(sizes, reverse=True)
    assert sum(value for _, value in top) + rest + cell.bias == pytest.approx(cell.preactivation, abs=1e-6)


def test_a_pooling_cell_names_the_input_that_won(model, committed_ops, cat_photo):
    pixels = prepare_image(cat_photo, model)
    acts = model.activations(pixels[np.newaxis])
    cell = explain_cell(committed_ops["max_pooling2d"], model, acts, pixels, channel=3, row=7, col=9)
    assert isinstance(cell, PoolArithmetic) and cell.kind == "max"
    assert cell.rows == (14, 15) and cell.cols == (18, 19)
    assert cell.winner is not None
    assert (
        cell.window[cell.winner] == cell.model_value == acts["conv2d"][0, 3, 14 + cell.winner[0], 18 + cell.winner[1]]
    )


def test_padding_strides_and_offsets_of_a_small_model(tmp_path):
    net = TinyNet(
        height=11, width=13, channels=3, convs=(Conv(4, 3, 2, "same"), Conv(5, 3, 1, "same")), input_offset=-0.5
    )
    small = load_model(build(net, tmp_path / "tiny.onnx"), provider="cpu")
    ops = read_layer_ops(small)
    assert ops["conv2d"].strides == (2, 2) and sum(ops["conv2d_1"].pads) == 4
    pixels = np.random.default_rng(1).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    acts = small.activations(pixels[np.newaxis])
    for name in ("conv2d", "conv2d_1", "max_pooling2d"):
        maps = acts[name][0]
        for channel in range(maps.shape[0]):
            for row in range(maps.shape[1]):
                for col in range(maps.shape[2]):
                    cell = explain_cell(ops[name], small, acts, pixels, channel, row, col)
                    assert abs(cell.value - cell.model_value) <= TOLERANCE, (name, channel, row, col)
    corner = explain_cell(ops["conv2d_1"], small, acts, pixels, 0, 0, 0)
    assert corner.rows[0] == -1 and np.all(corner.window[:, 0, :] == 0)  # padding counts as zero


def test_layers_it_cannot_explain_say_why(model, committed_ops, cat_photo):
    pixels = prepare_image(cat_photo, model)
    acts = model.activations(pixels[np.newaxis])
    with pytest.raises(CannotExplain, match="grouped"):
        explain_cell("conv2d is a grouped (or depthwise) convolution", model, acts, pixels, 0, 0, 0)
    with pytest.raises(CannotExplain, match="rows 1-148"):
        explain_cell(committed_ops["conv2d"], model, acts, pixels, 0, 148, 0)
    assert "dense" not in committed_ops  # only layers with maps have cells


def test_a_layer_made_by_another_operator_gets_a_reason(tmp_path):
    """A converted network with a residual Add (as a ResNet's): that layer is explained in words, the rest still work."""
    import onnx
    from onnx import helper

    path = build(
        TinyNet(height=10, width=10, channels=1, convs=(Conv(2, 3, 1, "same"),), pool=False), tmp_path / "t.onnx"
    )
    proto = onnx.load(str(path))
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.output[0] = "conv2d_relu"
    add = helper.make_node("Add", ["conv2d_relu", "conv2d_relu"], ["conv2d"])
    position = list(proto.graph.node).index(relu) + 1
    proto.graph.node.insert(position, add)
    onnx.save(proto, str(path))
    ops = read_layer_ops(load_model(path, provider="cpu"))
    assert ops["conv2d"] == (
        "conv2d (Conv2D) is made by an Add operator in this file; the step-by-step view covers convolutions "
        "(with or without a ReLU) and max or average pooling."
    )
