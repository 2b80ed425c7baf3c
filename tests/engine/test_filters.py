"""featapp.engine.filters: the first convolution's weights, read from the ONNX file, and their pictures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from featapp.engine.filters import FirstLayerFilters, filter_pictures, read_first_layer_filters
from featapp.engine.images import prepare_image
from featapp.engine.model import ModelError, load_model
from tests.helpers.modelfactory import Conv, TinyNet, build, build_red_model


def test_committed_filters_reproduce_layer_one(model, cat_photo):
    """The weights read from the file, convolved by hand, give the layer-1 maps ONNX Runtime gives."""
    filters = read_first_layer_filters(model.path)
    first = model.layers[0]
    assert filters.weights.shape == (first.channels, model.input_spec.channels, *first.kernel)
    assert first.stride == (1, 1) and first.padding == "valid"
    pixels = prepare_image(cat_photo, model)
    x = pixels.astype(np.float64) * model.spec.input_scale + model.spec.input_offset
    maps = model.activations(pixels)[first.name][0]
    bias = filters.bias if filters.bias is not None else np.zeros(filters.count)
    rows, cols = first.kernel
    for channel in (0, filters.count // 2, filters.count - 1):
        for r, c in ((0, 0), (70, 31), (maps.shape[1] - 1, maps.shape[2] - 1)):
            window = x[r : r + rows, c : c + cols, :]  # (rows, cols, channels)
            by_hand = max(0.0, float(np.sum(filters.weights[channel].transpose(1, 2, 0) * window) + bias[channel]))
            assert maps[channel, r, c] == pytest.approx(by_hand, abs=1e-4)


def test_tiny_grayscale_model_filters_are_its_weights(tmp_path):
    net = TinyNet(height=12, width=10, channels=1, convs=(Conv(5, kernel=3), Conv(2)), seed=3)
    filters = read_first_layer_filters(build(net, tmp_path / "tiny.onnx"))
    assert np.array_equal(filters.weights, net.weights["conv2d/W"])
    assert np.array_equal(filters.bias, net.weights["conv2d/B"])
    pictures = filter_pictures(filters)
    assert len(pictures) == 5 and pictures[0].shape == (3, 3, 1)


def test_weights_behind_constant_and_identity_nodes(tmp_path):
    weights = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    nodes = [
        helper.make_node("Constant", [], ["w_const"], value=numpy_helper.from_array(weights, "w")),
        helper.make_node("Identity", ["w_const"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
    )
    path = tmp_path / "constant.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    filters = read_first_layer_filters(path)
    assert np.array_equal(filters.weights, weights) and filters.bias is None


def test_model_without_convolution_says_so(tmp_path):
    path = build_red_model(tmp_path / "no_conv.onnx")
    assert load_model(path).layers  # a fine model for maps...
    with pytest.raises(ModelError, match="no first convolution"):
        read_first_layer_filters(path)  # ...that has no filters to show


def test_unreadable_file_is_a_model_error(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\x01 not protobuf at all" * 10)
    with pytest.raises(ModelError, match="could not be read as an ONNX file"):
        read_first_layer_filters(path)


def test_filter_pictures_put_zero_at_grey():
    weights = np.zeros((2, 3, 1, 2), np.float32)
    weights[0, 0, 0] = [1.0, -1.0]  # red up on the left, down on the right
    weights[1, 2, 0] = [0.5, 0.0]  # a weaker blue filter
    filters = FirstLayerFilters(weights, None, "conv")
    own = filter_pictures(filters)
    assert own[0].shape == (1, 2, 3)
    assert own[0][0, 0].tolist() == [255, 128, 128] and own[0][0, 1].tolist() == [0, 128, 128]
    assert own[1][0, 0].tolist() == [128, 128, 255]  # scaled to its own peak
    shared = filter_pictures(filters, shared_scale=True)
    assert shared[1][0, 0].tolist() == [128, 128, 191]  # half the strongest weight overall
    all_zero = filter_pictures(FirstLayerFilters(np.zeros((1, 1, 2, 2), np.float32), None, "conv"))
    assert np.all(all_zero[0] == 128)


def test_edge_energy_share_of_sobel_kernels_is_one_and_of_a_blob_zero():
    from featapp.engine.filters import edge_energy_shares, edge_like_kernels

    sobel = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    weights = np.zeros((4, 3, 3, 3))
    weights[0, :] = sobel  # vertical edge in every colour
    weights[1, :] = sobel.T  # horizontal edge
    weights[2, :, 1, 1] = 1.0  # a bright spot: no edge
    weights[3, 0] = 1.0  # pure red, flat: no luminance pattern at all
    shares = edge_energy_shares(weights)
    assert shares[:2] == pytest.approx([1.0, 1.0]) and shares[2] == pytest.approx(0.0, abs=1e-12)
    assert shares[3] == 0.0
    assert edge_like_kernels(weights).tolist() == [0, 1]
    # A rotation of a Sobel pair stays in their span; the colour part does not count.
    diagonal = (sobel + sobel.T) / 2
    coloured = np.stack([diagonal + 5.0, diagonal - 5.0, diagonal])
    assert edge_energy_shares(coloured[None])[0] == pytest.approx(1.0)


def test_random_kernels_put_about_a_quarter_of_their_energy_in_the_sobel_span():
    from featapp.engine.filters import edge_energy_shares

    shares = edge_energy_shares(np.random.default_rng(0).normal(size=(4000, 3, 3, 3)))
    assert shares.mean() == pytest.approx(2 / 8, abs=0.02)


def test_colour_energy_share_of_a_flat_colour_contrast_is_one_and_of_an_edge_zero():
    from featapp.engine.filters import colour_energy_shares, colour_like_kernels

    sobel = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    weights = np.zeros((5, 3, 3, 3))
    weights[0, 0], weights[0, 1] = 1.0, -1.0  # red against green, flat
    weights[1, :] = sobel  # an edge in every colour: no colour at all
    weights[2, :] = 1.0  # flat brightness: light, not colour
    weights[3, 2] = 1.0  # flat blue alone: blue against the average of the three, 2/3 of it
    weights[4, 0] = sobel  # an edge in red only: colour, but not flat
    shares = colour_energy_shares(weights)
    assert shares[0] == pytest.approx(1.0) and shares[1] == shares[2] == pytest.approx(0.0, abs=1e-12)
    assert shares[3] == pytest.approx(2 / 3) and shares[4] == pytest.approx(0.0, abs=1e-12)
    assert colour_like_kernels(weights).tolist() == [0, 3]
    assert colour_energy_shares(np.ones((2, 1, 3, 3))).tolist() == [0.0, 0.0]  # grayscale: no colour


def test_random_kernels_put_about_two_27ths_of_their_energy_in_a_flat_colour_contrast():
    from featapp.engine.filters import colour_energy_shares

    shares = colour_energy_shares(np.random.default_rng(0).normal(size=(4000, 3, 3, 3)))
    assert shares.mean() == pytest.approx(2 / 27, abs=0.01)


def test_start_and_learned_splits_a_kernel_into_its_start_and_what_was_added():
    from featapp.engine.filters import kernel_correlation, start_and_learned

    rng = np.random.default_rng(3)
    start = rng.standard_normal((3, 3, 3, 32))
    added = rng.standard_normal(start.shape)
    added -= (added.ravel() @ start.ravel()) / (start.ravel() @ start.ravel()) * start  # orthogonal to the start
    added *= np.linalg.norm(start) / np.linalg.norm(added)
    share, learned = start_and_learned(1.3 * start + 0.8 * added, start)
    assert share == pytest.approx(1.3) and learned == pytest.approx(0.8)
    # Amplifying the start keeps the correlation up: 1.3 / sqrt(1.3^2 + 0.8^2) = 0.85; halving it lowers it to 0.63.
    assert kernel_correlation(1.3 * start + 0.8 * added, start) == pytest.approx(0.85, abs=0.01)
    assert kernel_correlation(0.65 * start + 0.8 * added, start) == pytest.approx(0.63, abs=0.01)
    with pytest.raises(ValueError, match="different shapes"):
        start_and_learned(start[..., :16], start)
    with pytest.raises(ValueError, match="all zeros"):
        start_and_learned(start, np.zeros_like(start))
