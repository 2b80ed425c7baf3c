"""ONNX classifiers written with ``onnx.helper`` as PyTorch's legacy exporter names them
(``/layer1.0.conv1/Conv``, NCHW input ``x``), for ``convert.onnx_source`` to convert.

* :func:`graph_zoo`: one of each thing receptive fields must follow through a graph:
  PyTorch's symmetric padding on a stride-2 convolution, a zero ``Pad`` before an
  activation, ``SAME_LOWER``, a residual ``Add`` of a 3x3 path and a 1x1 shortcut, a
  dilated convolution, a ``Concat`` of a 1x1 and a 3x3 branch, a padded average pooling
  and a squeeze-and-excitation gate (``Mul``). Linear but for a leaky ReLU and the gate's
  sigmoid, so every pixel a cell can see changes it (:mod:`tests.helpers.fieldcheck`).
* :func:`many_blocks`: a MobileNetV2-shaped network of ~150 layers in blocks
  ``features.N`` (expand, depthwise, project, add), a zero ``Pad`` before each strided
  depthwise convolution as Keras writes it, and a last convolution of 1,280 channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["GraphWriter", "graph_zoo", "many_blocks"]


class GraphWriter:
    """Nodes named ``/<module path>/<Op>``, random weights, channel counts followed."""

    def __init__(self, height: int, width: int, channels: int = 3, seed: int = 0) -> None:
        self.height, self.width = height, width
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.channels: dict[str, int] = {"x": channels}

    def _const(self, array: np.ndarray, name: str) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], path: str, channels: int | None = None, **attrs) -> str:
        out = f"/{path}/{op_type}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"/{path}/{op_type}", **attrs))
        self.channels[out] = channels if channels is not None else self.channels[inputs[0]]
        return out

    def conv(
        self,
        x: str,
        out: int,
        kernel: int,
        path: str,
        *,
        stride: int = 1,
        pads: tuple[int, int, int, int] | None = None,
        dilation: int = 1,
        group: int = 1,
        auto_pad: str | None = None,
    ) -> str:
        inp = self.channels[x]
        fan_in = inp // group * kernel * kernel
        weight = (self.rng.normal(0, 1, (out, inp // group, kernel, kernel)) / np.sqrt(fan_in)).astype(np.float32)
        bias = self.rng.normal(0, 0.1, out).astype(np.float32)
        attrs: dict = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "group": group}
        if dilation != 1:
            attrs["dilations"] = [dilation, dilation]
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads or (0, 0, 0, 0))
        w = self._const(weight, f"{path}.weight")
        b = self._const(bias, f"{path}.bias")
        return self.op("Conv", [x, w, b], path, out, **attrs)

    def pad(self, x: str, pads: tuple[int, int, int, int], path: str) -> str:
        """Zero rows and columns (top, left, bottom, right), as Keras' ZeroPadding2D exports."""
        top, left, bottom, right = pads
        amounts = self._const(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), f"{path}.pads")
        return self.op("Pad", [x, amounts], path)

    def head(self, x: str, classes: int) -> None:
        pooled = self.op("GlobalAveragePool", [x], "avgpool")
        flat = self.op("Flatten", [pooled], "flatten")
        weight = (self.rng.normal(0, 1, (classes, self.channels[x])) / np.sqrt(self.channels[x])).astype(np.float32)
        w = self._const(weight, "fc.weight")
        b = self._const(np.zeros(classes, np.float32), "fc.bias")
        self.nodes.append(helper.make_node("Gemm", [flat, w, b], ["logits"], name="/fc/Gemm", transB=1))

    def save(self, path: Path, classes: int) -> Path:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", self.channels["x"], self.height, self.width])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])],
            self.inits,
        )
        made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
        made.ir_version = 8  # what exporters write; onnx's own default is newer than ONNX Runtime reads
        onnx.checker.check_model(made)
        onnx.save(made, path)
        return path


def graph_zoo(path: Path) -> Path:
    """20 x 21 input (see the module's docstring); layer names in the converted file:
    ``conv1``, ``act``, ``layer1.0.conv1``, ``layer1.0.downsample``, ``layer1.0.add``,
    ``layer2.dilated``, ``mix.branch1``, ``mix.branch3``, ``mix.concat``, ``pool``,
    ``se.fc``, ``se.gate``, ``se.scale``."""
    g = GraphWriter(20, 21, seed=3)
    x = g.conv("x", 4, 3, "conv1", stride=2, pads=(1, 1, 1, 1))  # 10 x 11, one row padded before
    x = g.pad(x, (0, 1, 2, 0), "pad")  # 12 x 12
    x = g.op("LeakyRelu", [x], "act", alpha=0.5)
    main = g.conv(x, 4, 3, "layer1.0.conv1", stride=2, auto_pad="SAME_LOWER")  # 6 x 6
    short = g.conv(x, 4, 1, "layer1.0.downsample", stride=2)
    x = g.op("Add", [main, short], "layer1.0.add")
    x = g.conv(x, 4, 3, "layer2.dilated", pads=(2, 2, 2, 2), dilation=2)
    one = g.conv(x, 3, 1, "mix.branch1")
    three = g.conv(x, 3, 3, "mix.branch3", pads=(1, 1, 1, 1))
    x = g.op("Concat", [one, three], "mix.concat", channels=6, axis=1)
    x = g.op("AveragePool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 3 x 3
    squeezed = g.op("GlobalAveragePool", [x], "se.squeeze")
    gate = g.conv(squeezed, 6, 1, "se.fc")
    gate = g.op("Sigmoid", [gate], "se.gate")
    x = g.op("Mul", [x, gate], "se.scale")
    g.head(x, 3)
    return g.save(path, 3)


def many_blocks(path: Path, blocks: int = 25, size: int = 32) -> Path:
    """A MobileNetV2-shaped network: ``features.0`` (stem), ``features.1`` ..
    ``features.<blocks>`` (expand 1x1, depthwise 3x3, project 1x1, add), then
    ``features.<blocks + 1>``: a 1x1 convolution to 1,280 channels; 3 strided blocks."""
    g = GraphWriter(size, size, seed=5)
    x = g.conv("x", 8, 3, "features.0.0", stride=2, pads=(1, 1, 1, 1))
    x = g.op("Relu", [x], "features.0.2")
    strided = {4, 10, 16}
    width = 8
    for block in range(1, blocks + 1):
        base = f"features.{block}"
        wide = width * 2
        y = g.conv(x, wide, 1, f"{base}.conv.0.0")
        y = g.op("Relu", [y], f"{base}.conv.0.2")
        if block in strided:
            y = g.pad(y, (0, 0, 1, 1), f"{base}.pad")
            y = g.conv(y, wide, 3, f"{base}.conv.1.0", stride=2, group=wide)
        else:
            y = g.conv(y, wide, 3, f"{base}.conv.1.0", pads=(1, 1, 1, 1), group=wide)
        y = g.op("Relu", [y], f"{base}.conv.1.2")
        y = g.conv(y, width, 1, f"{base}.conv.2")
        x = y if block in strided else g.op("Add", [x, y], f"{base}.add")
    x = g.conv(x, 1280, 1, f"features.{blocks + 1}.0")
    x = g.op("Relu", [x], f"features.{blocks + 1}.2")
    g.head(x, 4)
    return g.save(path, 4)
