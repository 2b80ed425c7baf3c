"""A tiny, hand-computable featapp model built with ``onnx.helper`` (tests only).

It looks only at the first channel (red, or grey for a grayscale model), scaled to 0..1:

* ``red``      (H, W, 1) map: the first channel itself (a 1x1 "convolution");
* ``pool``     (H/2, W/2, 1) map: 2x2 max pooling, stride 2, of ``red``;
* ``flat``     (H*W,) vector: ``red`` flattened, row by row;
* ``flat_copy`` (H*W,) vector: an Identity of ``flat`` (like dropout at inference);
* ``red_mean`` (1,) vector: the mean of ``red``;
* ``probs``    (2,) softmax-style output ``[1 - red_mean, red_mean]``: class ``red``
  wins when the image's first channel averages more than half.

So on any image every statistic and every occlusion drop can be computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from featapp.images import InputSpec
from featapp.metadata import METADATA_KEY, LayerInfo, ModelSpec, with_receptive_fields

CLASS_NAMES = ("other", "red")


def build_tiny_model(path: Path, height: int = 48, width: int = 48, channels: int = 3) -> Path:
    """Write the tiny model to ``path`` and return it."""
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
        class_names=CLASS_NAMES,
    )
    helper.set_model_props(model, {METADATA_KEY: spec.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def red_mean(image: np.ndarray) -> float:
    """What the tiny model computes as ``red_mean`` for a uint8 (H, W, C) image, in float64."""
    return float(image[:, :, 0].astype(np.float64).mean() / 255.0)
