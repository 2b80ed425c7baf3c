"""Tiny featapp models built with ``onnx.helper`` at test time (no TensorFlow).

:func:`build` writes a small convnet with any input size, 1 or 3 channels and any
number of convolutions, its metadata written by ``ModelSpec.to_json`` exactly as the
converter does (:func:`with_gradients` adds its gradient model), and :func:`reference` computes the same network in plain numpy, so
tests can check featapp's numbers and layout against something that is not ONNX Runtime.

:func:`build_red_model` writes a fixed model whose every output can be computed by hand
(the red channel and its mean), for tests of statistics, ranking and occlusion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from featapp.engine.images import InputSpec
from featapp.engine.metadata import METADATA_KEY, LayerInfo, ModelSpec, with_receptive_fields

__all__ = ["Conv", "TinyNet", "build", "with_gradients", "reference", "build_red_model"]


@dataclass(frozen=True)
class Conv:
    channels: int
    kernel: int = 3
    stride: int = 1
    padding: str = "valid"


@dataclass
class TinyNet:
    """A convnet: convolutions (ReLU), an optional 2x2 max-pool, flatten, dense head."""

    height: int = 20
    width: int = 24
    channels: int = 1
    convs: tuple[Conv, ...] = (Conv(4),)
    pool: bool = True
    head: str | None = "sigmoid"  # "sigmoid" (1 unit), "softmax" (len(class_names) units) or None
    class_names: tuple[str, ...] = ("cat", "dog")
    seed: int = 0
    input_scale: float = 1 / 255
    input_offset: float = 0.0
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        channels = self.channels
        for index, conv in enumerate(self.convs):
            name = _conv_name(index)
            self.weights[name + "/W"] = rng.normal(0, 0.5, (conv.channels, channels, conv.kernel, conv.kernel)).astype(
                np.float32
            )
            self.weights[name + "/B"] = rng.normal(0, 0.1, conv.channels).astype(np.float32)
            channels = conv.channels
        units = int(np.prod(self.trunk_shape()))
        if self.head:
            outputs = 1 if self.head == "sigmoid" else len(self.class_names)
            self.weights["dense/W"] = rng.normal(0, 0.05, (units, outputs)).astype(np.float32)
            self.weights["dense/B"] = rng.normal(0, 0.1, outputs).astype(np.float32)

    def shapes(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, kind, channels-last shape) of every layer, as Keras would report them."""
        rows, cols, found = self.height, self.width, []
        for index, conv in enumerate(self.convs):
            rows, cols = (_out(rows, conv), _out(cols, conv))
            found.append((_conv_name(index), "Conv2D", (rows, cols, conv.channels)))
        if self.pool:
            rows, cols = rows // 2, cols // 2
            found.append(("max_pooling2d", "MaxPooling2D", (rows, cols, found[-1][2][2])))
        units = rows * cols * found[-1][2][2]
        found.append(("flatten", "Flatten", (units,)))
        if self.head:
            found.append(("dense", "Dense", (1 if self.head == "sigmoid" else len(self.class_names),)))
        return found

    def trunk_shape(self) -> tuple[int, ...]:
        return [shape for _, _, shape in self.shapes() if len(shape) == 3][-1]

    def spec(self) -> ModelSpec:
        layers = []
        for name, kind, shape in self.shapes():
            info = LayerInfo(name=name, kind=kind, output_shape=shape)
            if kind == "Conv2D":
                conv = self.convs[0 if name == "conv2d" else int(name.split("_")[1])]
                info = replace(
                    info,
                    kernel=(conv.kernel,) * 2,
                    stride=(conv.stride,) * 2,
                    padding=conv.padding,
                    activation="relu",
                    params=int(self.weights[name + "/W"].size + conv.channels),
                )
            elif kind == "MaxPooling2D":
                info = replace(info, kernel=(2, 2), stride=(2, 2), padding="valid")
            elif kind == "Dense":
                info = replace(info, activation=self.head, params=int(self.weights["dense/W"].size + shape[0]))
            layers.append(info)
        return ModelSpec(
            input=InputSpec(self.height, self.width, self.channels),
            layers=with_receptive_fields(layers, (self.height, self.width)),
            output_activation=self.head,
            class_names=self.class_names if self.head else (),
            input_scale=self.input_scale,
            input_offset=self.input_offset,
            source_file="tiny.keras",
        )


def _conv_name(index: int) -> str:
    return "conv2d" if index == 0 else f"conv2d_{index}"


def _pads(size: int, conv: Conv) -> tuple[int, int]:
    if conv.padding == "valid":
        return 0, 0
    out = math.ceil(size / conv.stride)
    total = max((out - 1) * conv.stride + conv.kernel - size, 0)
    return total // 2, total - total // 2


def _out(size: int, conv: Conv) -> int:
    if conv.padding == "same":
        return math.ceil(size / conv.stride)
    return (size - conv.kernel) // conv.stride + 1


def build(
    net: TinyNet,
    path: Path,
    *,
    metadata: str | None | Callable[[ModelSpec], str] = "spec",
    input_shape: list | None = None,
) -> Path:
    """Write ``net`` as an ONNX file at ``path``. ``metadata``: ``"spec"`` (the right
    metadata), ``None`` (none), a JSON string, or a function of the right spec."""
    nodes, inits, outputs = [], [], []
    for key, value in net.weights.items():
        inits.append(numpy_helper.from_array(value, key))
    nodes.append(helper.make_node("Transpose", ["input"], ["x_nchw"], perm=[0, 3, 1, 2]))
    current, rows, cols = "x_nchw", net.height, net.width
    shapes = {name: shape for name, _, shape in net.shapes()}
    for index, conv in enumerate(net.convs):
        name = _conv_name(index)
        top, bottom = _pads(rows, conv)
        left, right = _pads(cols, conv)
        nodes.append(
            helper.make_node(
                "Conv",
                [current, name + "/W", name + "/B"],
                [name + "/pre"],
                kernel_shape=[conv.kernel] * 2,
                strides=[conv.stride] * 2,
                pads=[top, left, bottom, right],
            )
        )
        nodes.append(helper.make_node("Relu", [name + "/pre"], [name]))
        rows, cols = _out(rows, conv), _out(cols, conv)
        current = name
        outputs.append((name, shapes[name]))
    if net.pool:
        nodes.append(helper.make_node("MaxPool", [current], ["max_pooling2d"], kernel_shape=[2, 2], strides=[2, 2]))
        current = "max_pooling2d"
        outputs.append((current, shapes[current]))
    # Keras flattens channels-last: transpose back before the reshape.
    nodes.append(helper.make_node("Transpose", [current], ["trunk_nhwc"], perm=[0, 2, 3, 1]))
    inits.append(numpy_helper.from_array(np.array([-1, shapes["flatten"][0]], np.int64), "flat_shape"))
    nodes.append(helper.make_node("Reshape", ["trunk_nhwc", "flat_shape"], ["flatten"]))
    outputs.append(("flatten", shapes["flatten"]))
    if net.head:
        nodes.append(helper.make_node("MatMul", ["flatten", "dense/W"], ["dense/mm"]))
        nodes.append(helper.make_node("Add", ["dense/mm", "dense/B"], ["dense/pre"]))
        if net.head == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", ["dense/pre"], ["dense"]))
        else:
            nodes.append(helper.make_node("Softmax", ["dense/pre"], ["dense"], axis=1))
        outputs.append(("dense", shapes["dense"]))

    def nchw(shape: tuple[int, ...]) -> list:
        return ["N", shape[2], shape[0], shape[1]] if len(shape) == 3 else ["N", *shape]

    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, input_shape or ["N", net.height, net.width, net.channels]
            )
        ],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, nchw(shape)) for name, shape in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="featapp-tests")
    model.ir_version = 8
    if metadata is not None:
        text = net.spec().to_json() if metadata == "spec" else metadata(net.spec()) if callable(metadata) else metadata
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, text
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def with_gradients(path: Path) -> Path:
    """Write the gradient model (``<name>.grad.onnx``) beside a built model, as the converter
    does, so its gradient views and feature visualisation work; returns ``path``."""
    import hashlib

    from featapp.explain.backward import build_gradient_model, gradient_path

    forward = onnx.load(str(path))
    spec_json = {p.key: p.value for p in forward.metadata_props}[METADATA_KEY]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    onnx.save(build_gradient_model(forward, spec_json, sha), str(gradient_path(path)))
    return path


def reference(net: TinyNet, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The same network in plain numpy (loops over the kernel): NCHW maps, vectors."""
    x = np.transpose(batch.astype(np.float64) * net.input_scale + net.input_offset, (0, 3, 1, 2))
    found: dict[str, np.ndarray] = {}
    for index, conv in enumerate(net.convs):
        name = _conv_name(index)
        weight, bias = net.weights[name + "/W"].astype(np.float64), net.weights[name + "/B"].astype(np.float64)
        top, bottom = _pads(x.shape[2], conv)
        left, right = _pads(x.shape[3], conv)
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        rows, cols = _out(x.shape[2], conv), _out(x.shape[3], conv)
        out = np.zeros((x.shape[0], conv.channels, rows, cols))
        for dy in range(conv.kernel):
            for dx in range(conv.kernel):
                window = padded[
                    :, :, dy : dy + rows * conv.stride : conv.stride, dx : dx + cols * conv.stride : conv.stride
                ]
                out += np.einsum("nihw,oi->nohw", window[:, :, :rows, :cols], weight[:, :, dy, dx])
        x = np.maximum(out + bias[None, :, None, None], 0)
        found[name] = x
    if net.pool:
        rows, cols = x.shape[2] // 2, x.shape[3] // 2
        x = x[:, :, : rows * 2, : cols * 2].reshape(x.shape[0], x.shape[1], rows, 2, cols, 2).max(axis=(3, 5))
        found["max_pooling2d"] = x
    flat = np.transpose(x, (0, 2, 3, 1)).reshape(x.shape[0], -1)
    found["flatten"] = flat
    if net.head:
        logits = flat @ net.weights["dense/W"].astype(np.float64) + net.weights["dense/B"]
        if net.head == "sigmoid":
            found["dense"] = 1 / (1 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            found["dense"] = shifted / shifted.sum(axis=1, keepdims=True)
    return found


# -- the red model: hand-computable ------------------------------------------------------------------
# A tiny, hand-computable model built with ``onnx.helper``.
#
# It looks only at the first channel (red, or grey for a grayscale model), scaled to 0..1:
#
# * ``red``      (H, W, 1) map: the first channel itself (a 1x1 "convolution");
# * ``pool``     (H/2, W/2, 1) map: 2x2 max pooling, stride 2, of ``red``;
# * ``flat``     (H*W,) vector: ``red`` flattened, row by row;
# * ``flat_copy`` (H*W,) vector: an Identity of ``flat`` (like dropout at inference);
# * ``red_mean`` (1,) vector: the mean of ``red``;
# * ``probs``    (2,) softmax-style output ``[1 - red_mean, red_mean]``: class ``red``
#   wins when the image's first channel averages more than half.
#
# So on any image every statistic and every occlusion drop can be computed by hand.

RED_CLASS_NAMES = ("other", "red")


def build_red_model(path: Path, height: int = 48, width: int = 48, channels: int = 3) -> Path:
    """Write the red model (see the section above) to ``path`` and return it."""
    assert height % 2 == 0 and width % 2 == 0
    units = height * width
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Slice", ["nchw", "start", "stop", "axis"], ["red"]),
        helper.make_node("MaxPool", ["red"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["red", "flat_shape"], ["flat"]),
        helper.make_node("Identity", ["flat"], ["flat_copy"]),
        helper.make_node("ReduceMean", ["flat"], ["red_mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["one", "red_mean"], ["not_red"]),
        helper.make_node("Concat", ["not_red", "red_mean"], ["probs"], axis=1),
    ]
    initializers = [
        helper.make_tensor("start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("stop", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, units]),
        helper.make_tensor("one", TensorProto.FLOAT, [1, 1], [1.0]),
    ]
    outputs = [
        helper.make_tensor_value_info("red", TensorProto.FLOAT, ["N", 1, height, width]),
        helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["N", 1, height // 2, width // 2]),
        helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", units]),
        helper.make_tensor_value_info("flat_copy", TensorProto.FLOAT, ["N", units]),
        helper.make_tensor_value_info("red_mean", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_red",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", height, width, channels])],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    layers = [
        LayerInfo("red", "Conv2D", (height, width, 1), kernel=(1, 1), stride=(1, 1), padding="valid"),
        LayerInfo("pool", "MaxPooling2D", (height // 2, width // 2, 1), kernel=(2, 2), stride=(2, 2), padding="valid"),
        LayerInfo("flat", "Flatten", (units,)),
        LayerInfo("flat_copy", "Dropout", (units,)),
        LayerInfo("red_mean", "GlobalAveragePooling2D", (1,)),
        LayerInfo("probs", "Dense", (2,), activation="softmax"),
    ]
    spec = ModelSpec(
        input=InputSpec(height, width, channels),
        layers=with_receptive_fields(layers, (height, width)),
        input_name="input",
        output_activation="softmax",
        class_names=RED_CLASS_NAMES,
    )
    helper.set_model_props(model, {METADATA_KEY: spec.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
