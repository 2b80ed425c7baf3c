"""Small ONNX graphs written with ``onnx.helper`` for the gradient tests (no TensorFlow, no PyTorch).

:func:`make_model` wraps nodes into a model ONNX Runtime loads; :func:`away_from_kinks` gives
inputs whose values stay clear of an operator's kinks (ReLU's 0, ReLU6's 6, hard sigmoid's
corners) and are all different (no ties in a max pool), so central differences with a step
below the clearance are exact for piecewise-linear operators; :func:`mobilenet_like` writes a
tiny MobileNet-style classifier as PyTorch's legacy exporter would name it (depthwise
convolution, batch norm, ReLU6 as ``Clip``, ``Pad``, ``Concat``, ``HardSwish``, a
squeeze-and-excitation gate, global pooling, ``Gemm``); :func:`with_offset` makes any tensor
of a graph nudgeable, for finite differences with respect to a layer, and :func:`in_float64`
runs a graph in float64 with onnx's reference evaluator (ONNX Runtime's CPU convolutions are
float32 only), so that a finite difference of a tiny gradient is not lost in rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["away_from_kinks", "in_float64", "make_model", "mobilenet_like", "with_offset"]


def make_model(
    nodes: Sequence,
    inputs: dict[str, Sequence[int | str]],
    output: str,
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
):
    """A model of ``nodes`` with float inputs of the given shapes (a string is a free size) and one float output."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # What exporters write: onnx's own default IR version is newer than ONNX Runtime reads.
    model.ir_version = 8 if opset <= 17 else 10
    return model


def away_from_kinks(
    shape: Sequence[int],
    low: float = -2.0,
    high: float = 2.0,
    kinks: Sequence[float] = (0.0,),
    clearance: float = 0.03,
    seed: int = 0,
) -> np.ndarray:
    """Float32 values in [low, high], all different by at least ``clearance`` and at least
    ``clearance`` from every kink, in random order. A range too short for that many values
    is widened on both sides."""
    count = int(np.prod(shape))
    while True:
        grid = np.arange(low, high, clearance * 1.01)
        grid = grid[np.all(np.abs(grid[:, None] - np.asarray(kinks, np.float64)[None, :]) >= clearance, axis=1)]
        if len(grid) >= count:
            break
        low, high = low - 1.0, high + 1.0
    picked = np.random.default_rng(seed).choice(grid, count, replace=False)
    return picked.reshape(shape).astype(np.float32)


def with_offset(model, tensor: str):
    """``model`` with a new input ``<tensor>__offset`` (shaped like ``tensor``) added to
    ``tensor`` where it is made: zero gives the model's own output; a nudge of one cell
    gives a finite difference with respect to that cell of the layer."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    raw = f"{tensor}__raw"
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == tensor:
                node.output[i] = raw
    producer = next(i for i, node in enumerate(graph.node) if raw in node.output)
    graph.node.insert(producer + 1, helper.make_node("Add", [raw, f"{tensor}__offset"], [tensor]))
    graph.input.append(helper.make_tensor_value_info(f"{tensor}__offset", TensorProto.FLOAT, None))
    return model_copy


def in_float64(model):
    """An onnx reference evaluator of ``model`` with its float32 weights and values in float64:
    ``run(outputs, feeds)`` with float64 feeds computes in float64."""
    from onnx.reference import ReferenceEvaluator

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float64), init.name))
    for value_info in [*copy.graph.input, *copy.graph.output]:
        if value_info.type.tensor_type.elem_type == TensorProto.FLOAT:
            value_info.type.tensor_type.elem_type = TensorProto.DOUBLE
    del copy.graph.value_info[:]
    return ReferenceEvaluator(copy)


def mobilenet_like(path: Path, size: int = 32, classes: int = 3, seed: int = 0) -> Path:
    """A MobileNet-style classifier (random weights, NCHW ``input``, ``classes`` logits):

    zero Pad + stride-2 3x3 conv + batch norm + ReLU6 (Clip 0..6); a depthwise 3x3 conv
    (group = channels) + batch norm + ReLU6; a squeeze-and-excitation gate (global average
    pool, 1x1 conv, ReLU, 1x1 conv, hard sigmoid, broadcast Mul); a 1x1 projection + batch
    norm added to the stem (a residual); a 1x1 conv + HardSwish branch concatenated with it;
    a 1x1 conv + HardSwish; global average pool, Flatten and Gemm.
    """
    rng = np.random.default_rng(seed)
    stem, squeezed, branch, wide = 8, 4, 4, 16
    weights: dict[str, np.ndarray] = {}

    def conv_weights(name: str, out: int, inp: int, k: int) -> None:
        weights[f"{name}.weight"] = rng.normal(0, np.sqrt(2 / (inp * k * k)), (out, inp, k, k)).astype(np.float32)
        weights[f"{name}.bias"] = rng.normal(0, 0.1, out).astype(np.float32)

    def bn_weights(name: str, channels: int) -> None:
        weights[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        weights[f"{name}.bias"] = rng.normal(0.5, 0.5, channels).astype(np.float32)
        weights[f"{name}.running_mean"] = rng.normal(0, 0.1, channels).astype(np.float32)
        weights[f"{name}.running_var"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)

    conv_weights("features.0.conv", stem, 3, 3)
    bn_weights("features.0.bn", stem)
    conv_weights("features.1.dw", stem, 1, 3)
    bn_weights("features.1.bn", stem)
    conv_weights("features.1.se.fc1", squeezed, stem, 1)
    conv_weights("features.1.se.fc2", stem, squeezed, 1)
    conv_weights("features.1.project", stem, stem, 1)
    bn_weights("features.1.project_bn", stem)
    conv_weights("features.2.conv", branch, stem, 1)
    conv_weights("features.3.conv", wide, stem + branch, 1)
    weights["classifier.weight"] = rng.normal(0, np.sqrt(1 / wide), (classes, wide)).astype(np.float32)
    weights["classifier.bias"] = rng.normal(0, 0.1, classes).astype(np.float32)
    weights["pads"] = np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64)
    weights["relu6_min"] = np.array(0.0, np.float32)
    weights["relu6_max"] = np.array(6.0, np.float32)

    def conv(name: str, x: str, out: str, **attrs) -> onnx.NodeProto:
        return helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=f"/{name.replace('.', '/')}/Conv", **attrs
        )

    def bn(name: str, x: str, out: str) -> onnx.NodeProto:
        parts = [f"{name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        return helper.make_node("BatchNormalization", [x, *parts], [out], name=f"/{name.replace('.', '/')}/Bn")

    def relu6(name: str, x: str, out: str) -> onnx.NodeProto:
        return helper.make_node("Clip", [x, "relu6_min", "relu6_max"], [out], name=f"/{name.replace('.', '/')}/Clip")

    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"], name="/features/features.0/pad/Pad"),
        conv("features.0.conv", "padded", "s0", strides=[2, 2]),
        bn("features.0.bn", "s0", "s1"),
        relu6("features.0.act", "s1", "s2"),
        conv("features.1.dw", "s2", "d0", group=stem, pads=[1, 1, 1, 1]),
        bn("features.1.bn", "d0", "d1"),
        relu6("features.1.act", "d1", "d2"),
        helper.make_node("GlobalAveragePool", ["d2"], ["q0"], name="/features/features.1/se/pool/GlobalAveragePool"),
        conv("features.1.se.fc1", "q0", "q1"),
        helper.make_node("Relu", ["q1"], ["q2"], name="/features/features.1/se/relu/Relu"),
        conv("features.1.se.fc2", "q2", "q3"),
        helper.make_node(
            "HardSigmoid", ["q3"], ["gate"], name="/features/features.1/se/gate/HardSigmoid", alpha=1 / 6, beta=0.5
        ),
        helper.make_node("Mul", ["d2", "gate"], ["excited"], name="/features/features.1/se/Mul"),
        conv("features.1.project", "excited", "p0"),
        bn("features.1.project_bn", "p0", "p1"),
        helper.make_node("Add", ["s2", "p1"], ["residual"], name="/features/features.1/Add"),
        conv("features.2.conv", "residual", "b0"),
        helper.make_node("HardSwish", ["b0"], ["b1"], name="/features/features.2/act/HardSwish"),
        helper.make_node("Concat", ["residual", "b1"], ["joined"], name="/features/Concat", axis=1),
        conv("features.3.conv", "joined", "w0"),
        helper.make_node("HardSwish", ["w0"], ["w1"], name="/features/features.3/act/HardSwish"),
        helper.make_node("GlobalAveragePool", ["w1"], ["pooled"], name="/avgpool/GlobalAveragePool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
        helper.make_node(
            "Gemm", ["flat", "classifier.weight", "classifier.bias"], ["logits"], name="/classifier/Gemm", transB=1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "mobilenet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
