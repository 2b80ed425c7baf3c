"""Write a model's backward pass in plain ONNX operators (``MODEL.grad.onnx``).

ONNX Runtime's inference packages cannot differentiate (the ``Gradient`` operator is not
registered, microsoft/onnxruntime#13057) and tf2onnx has no handlers for TensorFlow's
gradient ops (``ReluGrad``, ``MaxPoolGrad``; onnx/tensorflow-onnx#1926). So this module
differentiates the *converted forward graph* itself, operator by operator, with the
standard rules: ``Conv`` -> ``ConvTranspose`` with the same weights, ``Relu`` ->
``g * Sign(y)``, ``MaxPool`` -> its ``Indices`` output into ``MaxUnpool`` (one per
subset of non-overlapping windows, summed, when windows overlap), ``MatMul``/``Gemm`` ->
``Gemm`` with the weights transposed in place, reshapes and transposes undone, ``Pad`` and
``Concat`` sliced back, a broadcast input's gradient summed over the axes it was broadcast
along, and so on (:data:`SUPPORTED_OPS`; :func:`differentiate` applies the same rules to any
graph, which is how ``tests/explain/test_backward_rules.py`` checks each against finite
differences). Working on the ONNX graph rather than on Keras layers means the
same code serves every model the converter accepts and the trunk-only snapshots, and it
can be run on an existing ``.onnx`` file without its Keras source
(``python -m convert gradients MODEL.onnx``). It needs ONNX and NumPy only, so the app
can also say which layer stops a model from having gradients.

Why a separate file, not more outputs in the forward model: the forward model stays as
it is (same bytes, same hash, same speed), and an app without gradient views never loads
the backward graph. The gradient file holds the forward graph too (its weights are shared
by the backward nodes, not copied), so one run gives activations and gradients.

The gradient model has

* input ``input`` (exactly the forward model's input) and, per *target*, a seed
  ``seed/<target>`` shaped like the target layer's output (NCHW maps, ``(N, units)``
  vectors): the gradient of the scalar of interest with respect to that output. Targets
  are every layer (for the classifier, sigmoid or softmax, the seed is on its *logit*,
  the value before the activation) and ``<layer>:preact``, the value before a ReLU;
* outputs: every forward layer output (same names as the forward model), and for each
  target the gradient with respect to the input (NHWC, like ``input``) and to every layer
  below the target. Their tensor names are listed, per target, in the
  :data:`GRADIENTS_KEY` metadata (``targets[i]["gradients"]``).

Each target has its own backward chain. ONNX Runtime runs every node of a graph whatever
outputs are asked for, so :func:`target_graph` cuts out one target's part (the forward
graph up to the target and that chain) for the app to run.

Before the file is written, ``convert.gradients.verify_gradients`` replays the forward
graph in TensorFlow and compares ``tf.GradientTape`` with ONNX Runtime on several images
and targets; the file is written only when they agree.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featapp.errors import FeatappError

__all__ = [
    "GRADIENTS_KEY",
    "GRADIENT_SUFFIX",
    "PREACT_SUFFIX",
    "SUPPORTED_OPS",
    "UnsupportedLayer",
    "build_gradient_model",
    "differentiate",
    "gradient_path",
    "target_graph",
]

GRADIENTS_KEY = "featapp_gradients"
GRADIENT_SUFFIX = ".grad.onnx"
# ONNX 1.23 writes IR version 14, which ONNX Runtime 1.31 refuses to load: the gradient
# model keeps its forward model's version (8 from tf2onnx, 10 from PyTorch's dynamo
# exporter), never above MAX_IR_VERSION.
IR_VERSION = 8
MAX_IR_VERSION = 10


class UnsupportedLayer(FeatappError, ValueError):
    """The forward graph has an operator this module cannot differentiate."""

    def __init__(self, layer: str, kind: str, op: str) -> None:
        self.layer, self.kind, self.op = layer, kind, op
        super().__init__(f"layer {layer} ({kind}) cannot be differentiated (ONNX operator {op})")


def gradient_path(onnx_path: str | Path) -> Path:
    """Where the gradient model of ``onnx_path`` lives.

    >>> gradient_path("models/cats_dogs_small.onnx").as_posix()
    'models/cats_dogs_small.grad.onnx'
    """
    path = Path(onnx_path)
    return path.with_name(
        path.name[: -len(".onnx")] + GRADIENT_SUFFIX if path.name.endswith(".onnx") else path.name + GRADIENT_SUFFIX
    )


# Operators whose gradient this module writes; anything else in a differentiated path is refused.
SUPPORTED_OPS = (
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
)
_FLOAT = 1  # onnx.TensorProto.FLOAT
_ACTIVATIONS = ("Relu", "LeakyRelu")
PREACT_SUFFIX = ":preact"
"""Target name suffix for a layer's value before its ReLU (``conv2d_2:preact``)."""


@dataclass
class _Graph:
    """The forward graph with what differentiation needs to know about it."""

    nodes: list[Any]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int | None, ...]]
    float_tensors: set[str]
    layer_of_node: dict[int, str]
    opset: int
    """The default domain's opset: it decides whether ReduceSum, Unsqueeze, Pad and Slice
    take their axes and amounts as inputs or as attributes."""


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _analyse(model, layer_names: Sequence[str]) -> _Graph:
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes: dict[str, tuple[int | None, ...]] = {}
    float_tensors: set[str] = set()
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        if tensor.elem_type == _FLOAT:
            float_tensors.add(value.name)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = list(model.graph.node)
    for node in nodes:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in nodes:
        # PyTorch's legacy exporter passes a weight used twice through an Identity.
        if node.op_type == "Identity" and node.input and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    for name, array in constants.items():
        shapes.setdefault(name, tuple(array.shape))
        if array.dtype == np.float32:
            float_tensors.add(name)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    # Each node belongs to the first layer (in model order) whose output needs it.
    layer_of_node: dict[int, str] = {}
    for layer in layer_names:
        stack = [layer]
        while stack:
            tensor = stack.pop()
            index = producer.get(tensor)
            if index is None or index in layer_of_node:
                continue
            layer_of_node[index] = layer
            stack.extend(nodes[index].input)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return _Graph(nodes, producer, consumers, constants, shapes, float_tensors, layer_of_node, opset)


class _Builder:
    """Appends backward nodes for one target to a node list."""

    def __init__(
        self,
        graph: _Graph,
        prefix: str,
        kinds: dict[str, str],
        new_nodes: list,
        initializers: list,
    ) -> None:
        self.g = graph
        self.prefix = prefix
        self.kinds = kinds
        self.nodes = new_nodes
        self.initializers = initializers
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def node(self, op: str, inputs: Sequence[str], hint: str | None = None, **attrs: Any) -> str:
        import onnx

        out = self.name(hint or op.lower())
        self.nodes.append(onnx.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def const(self, array: np.ndarray | np.generic, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def is_dynamic(self, tensor: str) -> bool:
        return tensor not in self.g.constants and tensor in self.g.float_tensors

    def static(self, tensor: str) -> tuple[int | None, ...] | None:
        return self.g.shapes.get(tensor)

    def unsupported(self, index: int) -> UnsupportedLayer:
        node = self.g.nodes[index]
        layer = self.g.layer_of_node.get(index, node.name or node.op_type)
        return UnsupportedLayer(layer, self.kinds.get(layer, "?"), node.op_type)

    # -- the rules -----------------------------------------------------------------
    def backward(self, index: int, g: str) -> list[tuple[str, str]]:
        """Gradient contributions ``(input tensor, gradient tensor)`` of node ``index``."""
        node = self.g.nodes[index]
        op, ins, out = node.op_type, list(node.input), node.output[0]
        a = _attrs(node)
        if op in ("Identity", "Dropout"):
            return [(ins[0], g)]
        if op == "Transpose":
            perm = list(a["perm"])
            inverse = [perm.index(i) for i in range(len(perm))]
            return [(ins[0], self.node("Transpose", [g], perm=inverse))]
        if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            shape = self.node("Shape", [ins[0]])
            return [(ins[0], self.node("Reshape", [g, shape]))]
        if op == "Relu":
            # y >= 0, so Sign(y) is the 0/1 mask of y > 0; Sign and Mul run several times
            # faster than Where in ONNX Runtime on the CPU.
            return [(ins[0], self.node("Mul", [g, self.node("Sign", [out])]))]
        if op == "LeakyRelu":
            scaled = self.node("Mul", [g, self.const(np.float32(a.get("alpha", 0.01)), "alpha")])
            return [(ins[0], self.node("Where", [self.node("Greater", [ins[0], self._zero()]), g, scaled]))]
        if op == "Sigmoid":
            one_minus = self.node("Sub", [self._one(), out])
            return [(ins[0], self.node("Mul", [g, self.node("Mul", [out, one_minus])]))]
        if op == "Tanh":
            one_minus = self.node("Sub", [self._one(), self.node("Mul", [out, out])])
            return [(ins[0], self.node("Mul", [g, one_minus]))]
        if op == "Softmax":
            axes = [a.get("axis", -1)]
            if self.g.opset < 13:  # before opset 13, one softmax over every axis from `axis` (default 1) on
                rank = len(self.static(out) or ())
                if not rank:
                    raise self.unsupported(index)
                axes = list(range(a.get("axis", 1) % rank, rank))
            dot = self._reduce_sum(self.node("Mul", [g, out]), axes)
            return [(ins[0], self.node("Mul", [out, self.node("Sub", [g, dot])]))]
        if op == "Conv":
            return [(ins[0], self._conv(index, g, a))]
        if op == "MaxPool":
            return [(ins[0], self._maxpool(index, g, a))]
        if op == "AveragePool":
            return [(ins[0], self._avgpool(index, g, a))]
        if op == "GlobalAveragePool":
            spatial = _known_spatial(self.static(ins[0]))
            if spatial is None:
                raise self.unsupported(index)
            area = float(np.prod(spatial))
            scaled = self.node("Mul", [g, self.const(np.float32(1 / area), "area")])
            return [(ins[0], self.node("Expand", [scaled, self.node("Shape", [ins[0]])]))]
        if op == "ReduceMean":
            return [(ins[0], self._reduce_mean(index, g, a))]
        if op == "BatchNormalization" and all(name in self.g.constants for name in ins[1:5]):
            scale, _, _, var = (self.g.constants[name] for name in ins[1:5])
            factor = (scale / np.sqrt(var + a.get("epsilon", 1e-5))).astype(np.float32)
            rank = len(self.static(ins[0]) or (0, 0, 0, 0))
            factor = factor.reshape((1, -1) + (1,) * (rank - 2))
            return [(ins[0], self.node("Mul", [g, self.const(factor, "bn_scale")]))]
        if op in ("MatMul", "Gemm"):
            return self._matmul(index, g, a)
        if op in ("Add", "Sub", "Mul", "Div"):
            return self._elementwise(index, g)
        if op == "Clip":
            return [(ins[0], self._clip(index, g, a))]
        if op == "HardSigmoid":
            # y = clip(alpha x + beta, 0, 1): slope alpha where y is strictly inside (0, 1).
            inside = self._mask(
                self.node("And", [self.node("Greater", [out, self._zero()]), self.node("Less", [out, self._one()])])
            )
            scaled = self.node("Mul", [g, self.const(np.float32(a.get("alpha", 0.2)), "alpha")])
            return [(ins[0], self.node("Mul", [scaled, inside]))]
        if op == "HardSwish":
            # y = x * clip(x / 6 + 1/2, 0, 1): slope x / 3 + 1/2 for |x| < 3, else 0 (x <= -3) or 1 (x >= 3).
            x = ins[0]
            three = self.const(np.float32(3), "three")
            middle = self.node(
                "Add",
                [self.node("Mul", [x, self.const(np.float32(1 / 3), "third")]), self.const(np.float32(0.5), "half")],
            )
            outside = self._mask(self.node("Greater", [x, self._zero()]))
            slope = self.node("Where", [self.node("Less", [self.node("Abs", [x]), three]), middle, outside])
            return [(ins[0], self.node("Mul", [g, slope]))]
        if op == "Pad":
            return [(ins[0], self._pad(index, g, a))]
        if op == "Concat":
            return self._concat(index, g, a)
        raise self.unsupported(index)

    # -- operators whose axes or amounts moved from attributes to inputs over the opsets
    def _reduce_sum(self, x: str, axes: Sequence[int]) -> str:
        """Sum over ``axes``, keeping them (size 1)."""
        if self.g.opset >= 13:
            return self.node("ReduceSum", [x, self.const(np.array(axes, np.int64), "axes")], keepdims=1)
        return self.node("ReduceSum", [x], axes=list(axes), keepdims=1)

    def _unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.g.opset >= 13:
            return self.node("Unsqueeze", [x, self.const(np.array(axes, np.int64), "axes")])
        return self.node("Unsqueeze", [x], axes=list(axes))

    def _pad_zeros(self, x: str, amounts: Sequence[int]) -> str:
        """Zeros added around ``x``: ``amounts`` is ONNX's (begin of every axis, end of every axis)."""
        if self.g.opset >= 11:
            return self.node("Pad", [x, self.const(np.array(amounts, np.int64), "pads")])
        return self.node("Pad", [x], pads=list(amounts))

    def _slice(
        self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], steps: Sequence[int] = ()
    ) -> str:
        if self.g.opset >= 10:
            values = [starts, ends, axes, *([steps] if steps else [])]
            hints = ("starts", "ends", "axes", "steps")[: len(values)]
            return self.node(
                "Slice", [x, *(self.const(np.array(v, np.int64), h) for v, h in zip(values, hints, strict=True))]
            )
        if any(step != 1 for step in steps):
            raise ValueError("Slice takes steps from opset 10 on")
        return self.node("Slice", [x], starts=list(starts), ends=list(ends), axes=list(axes))

    def _mask(self, condition: str) -> str:
        """A boolean tensor as float 0/1 (Cast and Mul, like Relu's Sign, rather than Where)."""
        return self.node("Cast", [condition], to=_FLOAT)

    # -- rules that need more than a few lines
    def _clip(self, index: int, g: str, a: dict[str, Any]) -> str:
        """Clip (ReLU6 is Clip(x, 0, 6)): the gradient passes where min < x < max. The bounds
        are inputs from opset 11 and attributes before; either may be absent."""
        node = self.g.nodes[index]
        x = node.input[0]
        tests = []
        for position, attribute, compare in ((1, "min", "Greater"), (2, "max", "Less")):
            if len(node.input) > position and node.input[position]:
                bound = node.input[position]
                if self.is_dynamic(bound):
                    raise self.unsupported(index)  # a bound computed in the graph would need a gradient too
            elif attribute in a:
                bound = self.const(np.float32(a[attribute]), attribute)
            else:
                continue
            tests.append(self.node(compare, [x, bound]))
        if not tests:
            return g
        inside = tests[0] if len(tests) == 1 else self.node("And", tests)
        return self.node("Mul", [g, self._mask(inside)])

    def _pad(self, index: int, g: str, a: dict[str, Any]) -> str:
        """A constant Pad: the gradient is the part of ``g`` over the original tensor (a negative
        amount crops, so there the gradient is padded back with zeros). Reflect, edge and wrap
        modes send one gradient to several pixels and are refused."""
        node = self.g.nodes[index]
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        shape = self.static(node.input[0])
        if mode != "constant" or not shape:
            raise self.unsupported(index)
        if len(node.input) > 2 and node.input[2] and self.is_dynamic(node.input[2]):
            raise self.unsupported(index)  # a fill value computed in the graph would need a gradient too
        amounts = a.get("pads") if "pads" in a else self.g.constants.get(node.input[1]) if len(node.input) > 1 else None
        rank = len(shape)
        axes: Any = list(range(rank))
        if len(node.input) > 3 and node.input[3]:
            axes = self.g.constants.get(node.input[3])
        if amounts is None or axes is None or len(np.ravel(amounts)) != 2 * len(np.ravel(axes)):
            raise self.unsupported(index)
        axes = [int(axis) % rank for axis in np.ravel(axes)]
        amounts = [int(v) for v in np.ravel(amounts)]
        begins, ends = [0] * rank, [0] * rank
        for i, axis in enumerate(axes):
            begins[axis], ends[axis] = amounts[i], amounts[len(axes) + i]
        if any(v < 0 for v in begins + ends):
            g = self._pad_zeros(g, [max(-v, 0) for v in begins + ends])
        sliced = [axis for axis in range(rank) if begins[axis] > 0 or ends[axis] > 0]
        if not sliced:
            return g
        last = np.iinfo(np.int64).max
        return self._slice(
            g,
            [max(begins[axis], 0) for axis in sliced],
            [-ends[axis] if ends[axis] > 0 else last for axis in sliced],
            sliced,
        )

    def _concat(self, index: int, g: str, a: dict[str, Any]) -> list[tuple[str, str]]:
        """Each input gets its own stretch of ``g`` along the axis (sizes from static shapes)."""
        node = self.g.nodes[index]
        out_shape = self.static(node.output[0])
        if not out_shape:
            raise self.unsupported(index)
        axis = int(a["axis"]) % len(out_shape)
        result, offset = [], 0
        for tensor in node.input:
            shape = self.static(tensor)
            if not shape or len(shape) != len(out_shape) or shape[axis] is None:
                raise self.unsupported(index)
            size = int(shape[axis])  # type: ignore[arg-type]
            if self.is_dynamic(tensor):
                result.append((tensor, self._slice(g, [offset], [offset + size], [axis])))
            offset += size
        return result

    def _reduce_mean(self, index: int, g: str, a: dict[str, Any]) -> str:
        """A mean's gradient: ``g / count``, spread back over the axes it averaged."""
        node = self.g.nodes[index]
        shape = self.static(node.input[0])
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.g.constants.get(node.input[1])
        if not shape or axes is None or len(np.ravel(axes)) == 0:
            raise self.unsupported(index)
        axes = sorted(int(axis) % len(shape) for axis in np.ravel(axes))
        if any(shape[axis] is None for axis in axes):
            raise self.unsupported(index)
        count = float(np.prod([shape[axis] for axis in axes]))
        if not a.get("keepdims", 1):
            g = self._unsqueeze(g, axes)
        scaled = self.node("Mul", [g, self.const(np.float32(1 / count), "count")])
        return self.node("Expand", [scaled, self.node("Shape", [node.input[0]])])

    def _zero(self) -> str:
        return self.const(np.float32(0), "zero")

    def _one(self) -> str:
        return self.const(np.float32(1), "one")

    def _window(self, index: int, a: dict[str, Any]) -> tuple[list[int], list[int], list[int], list[int]]:
        """Kernel, strides, dilations and explicit pads of a Conv or pooling node."""
        node = self.g.nodes[index]
        x_shape, y_shape = self.static(node.input[0]), self.static(node.output[0])
        if op_is_conv := node.op_type == "Conv":
            w_shape = self.static(node.input[1])
            kernel = list(a.get("kernel_shape") or (w_shape[2:] if w_shape else []))
        else:
            kernel = list(a["kernel_shape"])
        x_hw, y_hw = _known_spatial(x_shape), _known_spatial(y_shape)
        if x_hw is None or y_hw is None or not kernel:
            raise self.unsupported(index)
        rank = len(kernel)
        strides = list(a.get("strides", [1] * rank))
        dilations = list(a.get("dilations", [1] * rank)) if op_is_conv or node.op_type == "MaxPool" else [1] * rank
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("NOTSET", "VALID"):
            pads = list(a.get("pads", [0] * 2 * rank)) if auto_pad == "NOTSET" else [0] * 2 * rank
        else:  # SAME_UPPER / SAME_LOWER: the padding that gives ceil(in / stride) outputs
            pads = [0] * 2 * rank
            for i in range(rank):
                total = max((y_hw[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - x_hw[i], 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[rank + i] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return kernel, strides, dilations, pads

    def _transpose_conv(self, index: int, g: str, weights: str, a: dict[str, Any], group: int) -> str:
        node = self.g.nodes[index]
        kernel, strides, dilations, pads = self._window(index, a)
        x_hw, y_hw = _known_spatial(self.static(node.input[0])), _known_spatial(self.static(node.output[0]))
        assert x_hw is not None and y_hw is not None  # _window raised otherwise
        rank = len(kernel)
        # Rows and columns the forward window never reached (e.g. 15 -> 7 pooling drops
        # the last one) come back as output padding, so the gradient has the input's size
        # and is zero there.
        output_padding = [
            x_hw[i] - ((y_hw[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[rank + i])
            for i in range(rank)
        ]
        if any(p < 0 for p in output_padding):
            raise self.unsupported(index)
        extra: dict[str, Any] = {}  # more attributes of the node
        # ConvTranspose only allows output padding below the stride; the rest is padded on.
        limited = [min(p, s - 1) for p, s in zip(output_padding, strides, strict=True)]
        pads_after = [p - q for p, q in zip(output_padding, limited, strict=True)]
        if any(limited):
            extra["output_padding"] = limited
        result = self.node(
            "ConvTranspose",
            [g, weights],
            strides=strides,
            dilations=dilations,
            pads=pads,
            group=group,
            kernel_shape=kernel,
            **extra,
        )
        if any(pads_after):
            result = self._pad_zeros(result, [0, 0] + [0] * rank + [0, 0] + pads_after)
        return result

    def _conv(self, index: int, g: str, a: dict[str, Any]) -> str:
        node = self.g.nodes[index]
        if self.is_dynamic(node.input[1]) and self.g.producer.get(node.input[1]) is not None:
            # Weights computed in the graph: they would need a gradient of their own.
            raise self.unsupported(index)
        # A stride-1 Conv of the padded gradient with flipped filters would do the same; it
        # measured no faster here and needs a flipped copy of every filter in the file.
        group = int(a.get("group", 1))
        return self._transpose_conv(index, g, node.input[1], a, group)

    def _avgpool(self, index: int, g: str, a: dict[str, Any]) -> str:
        node = self.g.nodes[index]
        kernel, _, _, pads = self._window(index, a)
        channels = (self.static(node.input[0]) or (None, None))[1]
        if channels is None or (any(pads) and not a.get("count_include_pad", 0)) or a.get("ceil_mode", 0):
            raise self.unsupported(index)
        weights = np.full((channels, 1, *kernel), 1 / float(np.prod(kernel)), np.float32)
        return self._transpose_conv(index, g, self.const(weights, "avg_kernel"), a, channels)

    def _maxpool(self, index: int, g: str, a: dict[str, Any]) -> str:
        node = self.g.nodes[index]
        if a.get("ceil_mode", 0) or a.get("storage_order", 0):
            raise self.unsupported(index)
        kernel, strides, dilations, pads = self._window(index, a)
        indices = node.output[1] if len(node.output) > 1 and node.output[1] else f"{node.output[0]}__indices"
        shape = self.node("Shape", [node.input[0]])
        if all(s >= k for s, k in zip(strides, kernel, strict=True)) and all(d == 1 for d in dilations):
            # Windows do not overlap, so no two outputs send gradient to one pixel.
            return self.node("MaxUnpool", [g, indices, shape], kernel_shape=kernel, strides=strides, pads=pads)
        # Overlapping windows: one pixel can be the maximum of several, so their gradients add
        # up. Outputs `every` apart along each axis have windows that do not overlap, so each
        # such subset goes through MaxUnpool (which places values at the Indices, positions in
        # the flattened N, C, H, W input) and the subsets are summed: 4 for a 3x3 pool of
        # stride 2. ScatterElements with reduction="add" would need opset 16, and Keras'
        # model.export writes opset 15.
        if self.g.opset < 10:  # Slice has no steps before opset 10
            raise self.unsupported(index)
        every = [-(-((k - 1) * d + 1) // s) for k, d, s in zip(kernel, dilations, strides, strict=True)]
        axes = list(range(2, 2 + len(kernel)))
        last = [np.iinfo(np.int64).max] * len(kernel)
        parts = []
        for start in itertools.product(*(range(n) for n in every)):
            picked = [self._slice(t, list(start), last, axes, every) for t in (g, indices)]
            parts.append(self.node("MaxUnpool", [*picked, shape], kernel_shape=kernel, strides=strides))
        return parts[0] if len(parts) == 1 else self.node("Sum", parts)

    def _matmul(self, index: int, g: str, a: dict[str, Any]) -> list[tuple[str, str]]:
        node = self.g.nodes[index]
        left, right = node.input[0], node.input[1]
        if node.op_type == "Gemm":
            if a.get("transA", 0) or (len(node.input) > 2 and self.is_dynamic(node.input[2])):
                raise self.unsupported(index)
            alpha = float(a.get("alpha", 1.0))
            trans_b = int(a.get("transB", 0))
        else:
            alpha, trans_b = 1.0, 0
        if self.is_dynamic(right) or not self.is_dynamic(left):
            raise self.unsupported(index)
        if len(self.static(left) or ()) != 2 or len(self.static(right) or ()) != 2:
            raise self.unsupported(index)
        # g @ W^T without a transposed copy of W in the file.
        return [(left, self.node("Gemm", [g, right], alpha=alpha, transB=1 - trans_b))]

    def _elementwise(self, index: int, g: str) -> list[tuple[str, str]]:
        node = self.g.nodes[index]
        op, out = node.op_type, node.output[0]
        result = []
        for position, tensor in enumerate(node.input[:2]):
            if not self.is_dynamic(tensor):
                continue
            other = node.input[1 - position]
            if op == "Add":
                grad = g
            elif op == "Sub":
                grad = g if position == 0 else self.node("Neg", [g])
            elif op == "Mul":
                grad = self.node("Mul", [g, other])
            elif position == 0:  # Div, numerator
                grad = self.node("Div", [g, other])
            else:  # Div, denominator: d(a / b) / db = -(a / b) / b
                grad = self.node("Neg", [self.node("Mul", [g, self.node("Div", [out, tensor])])])
            result.append((tensor, self._unbroadcast(index, grad, tensor)))
        return result

    def _unbroadcast(self, index: int, grad: str, tensor: str) -> str:
        """``grad`` (shaped like the node's output) summed over the axes along which ``tensor``
        was broadcast: a squeeze-and-excitation gate (N, C, 1, 1) times a map (N, C, H, W)
        gets the sum over H and W."""
        shape, out_shape = self.static(tensor), self.static(self.g.nodes[index].output[0])
        if shape is None or out_shape is None or len(shape) > len(out_shape):
            raise self.unsupported(index)
        padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
        axes = []
        for axis, (have, want) in enumerate(zip(padded, out_shape, strict=True)):
            if have == want:  # equal sizes, or both free (the batch)
                continue
            if have != 1:  # a free size against a fixed one: broadcast or not is decided at run time
                raise self.unsupported(index)
            axes.append(axis)  # want may be free: summing an axis that turns out to be 1 changes nothing
        if axes:
            grad = self._reduce_sum(grad, axes)
        if len(shape) < len(out_shape):
            grad = self.node("Reshape", [grad, self.node("Shape", [tensor])])
        return grad


def _ancestors(graph: _Graph, tensor: str) -> set[int]:
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        index = graph.producer.get(stack.pop())
        if index is None or index in seen:
            continue
        seen.add(index)
        stack.extend(graph.nodes[index].input)
    return seen


def _same_value_chain(graph: _Graph, tensor: str) -> list[tuple[str, Any]]:
    """``tensor``'s producers back through Transpose/Identity: [(tensor, node)], nearest first.
    A layer output that nothing reads (tf2onnx's NCHW copy of a map, ``dropout``'s
    Identity) gets the gradient of the tensor it copies."""
    chain = []
    while (index := graph.producer.get(tensor)) is not None and graph.nodes[index].op_type in (
        "Transpose",
        "Identity",
        "Dropout",
    ):
        node = graph.nodes[index]
        chain.append((tensor, node))
        tensor = node.input[0]
    chain.append((tensor, None))
    return chain


def _backpropagate(builder: _Builder, tensor: str, seed: str) -> dict[str, str]:
    """Backward nodes from ``seed`` (d scalar / d ``tensor``) down to the graph's inputs:
    the gradient tensor of every tensor the scalar depends on."""
    graph = builder.g
    grads: dict[str, list[str]] = {tensor: [seed]}
    # ONNX graphs list nodes in topological order, so reverse order visits a node only
    # after every reader of its output has sent its gradient back.
    for index in sorted(_ancestors(graph, tensor), reverse=True):
        node = graph.nodes[index]
        if not node.output or node.output[0] not in grads:
            continue
        contributions = grads.pop(node.output[0])
        g = contributions[0] if len(contributions) == 1 else builder.node("Sum", contributions)
        grads[node.output[0]] = [g]
        for source, grad in builder.backward(index, g):
            grads.setdefault(source, []).append(grad)
    return {name: parts[0] if len(parts) == 1 else builder.node("Sum", parts) for name, parts in grads.items()}


def differentiate(forward, output: str, wrt: Sequence[str]):
    """Any ONNX graph with its backward pass: ``forward`` (an ``onnx.ModelProto``) plus an
    input ``seed`` shaped like ``output`` and one output ``grad/<name>`` per tensor in ``wrt``,
    the gradient of ``sum(seed * output)`` with respect to it, built by the same rules as
    :func:`build_gradient_model` (the converter's gradient files). The tests check each rule
    against finite differences with it.

    Raises :class:`UnsupportedLayer` for an operator outside :data:`SUPPORTED_OPS`, and
    ``ValueError`` when ``output`` does not depend on a tensor of ``wrt``.
    """
    import onnx

    graph = _analyse(forward, [output])
    new_nodes: list = list(forward.graph.node)
    initializers: list = list(forward.graph.initializer)
    for i, node in enumerate(new_nodes):
        if node.op_type == "MaxPool" and (len(node.output) < 2 or not node.output[1]):
            # The backward rule reads the argmax positions, which the forward node must give.
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.output[:]
            copy.output.extend([node.output[0], f"{node.output[0]}__indices"])
            new_nodes[i] = copy
    builder = _Builder(graph, "grad", {}, new_nodes, initializers)
    done = _backpropagate(builder, output, "seed")
    outputs = []
    for name in wrt:
        if name not in done:
            raise ValueError(f"{output} does not depend on {name}")
        outputs.append(onnx.helper.make_tensor_value_info(f"grad/{name}", _FLOAT, graph.shapes.get(name)))
        new_nodes.append(onnx.helper.make_node("Identity", [done[name]], [f"grad/{name}"]))
    seed = onnx.helper.make_tensor_value_info("seed", _FLOAT, graph.shapes.get(output))
    made = onnx.helper.make_graph(
        new_nodes,
        "differentiated",
        [*forward.graph.input, seed],
        [*forward.graph.output, *outputs],
        initializer=initializers,
    )
    model = onnx.helper.make_model(made, opset_imports=list(forward.opset_import), producer_name="featapp")
    model.ir_version = min(forward.ir_version or IR_VERSION, MAX_IR_VERSION)
    return model


def build_gradient_model(forward, spec_json: str, forward_sha256: str = ""):
    """The gradient model of a converted forward model (an ``onnx.ModelProto``).

    ``spec_json`` is the forward model's featapp metadata. Raises :class:`UnsupportedLayer`
    when a layer on a differentiated path uses an operator outside :data:`SUPPORTED_OPS`.
    """
    import onnx

    from featapp.engine.metadata import METADATA_KEY, ModelSpec

    spec = ModelSpec.from_json(spec_json)
    layers = [layer.name for layer in spec.layers]
    kinds = {layer.name: layer.kind for layer in spec.layers}
    graph = _analyse(forward, layers)
    input_name = spec.input_name

    new_nodes: list = []
    initializers: list = []
    # The forward nodes, with every MaxPool also giving its argmax positions.
    for node in graph.nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if node.op_type == "MaxPool" and (len(node.output) < 2 or not node.output[1]):
            del copy.output[:]
            copy.output.extend([node.output[0], f"{node.output[0]}__indices"])
        new_nodes.append(copy)

    seeds, outputs, targets = [], [], []
    jobs = []  # (target name, layer position, tensor seeded, on the logit, before the activation)
    for position, layer in enumerate(spec.layers):
        index = graph.producer.get(layer.name)
        op = graph.nodes[index].op_type if index is not None else ""
        if position == len(spec.layers) - 1 and spec.has_classifier:
            if index is None or op not in ("Sigmoid", "Softmax"):
                raise UnsupportedLayer(layer.name, layer.kind, op or "?")
            jobs.append((layer.name, position, graph.nodes[index].input[0], True, False))
            continue
        jobs.append((layer.name, position, layer.name, False, False))
        if index is not None and op in _ACTIVATIONS:
            # Feature visualisation climbs the value before the ReLU, as Lucid does: a
            # channel that is zero everywhere on the start noise still has a gradient there.
            jobs.append((f"{layer.name}{PREACT_SUFFIX}", position, graph.nodes[index].input[0], False, True))
    for target_name, position, tensor, is_logit, preact in jobs:
        layer = spec.layers[position]
        prefix = f"grad/{target_name}"
        seed = f"seed/{target_name}"
        seeds.append(onnx.helper.make_tensor_value_info(seed, _FLOAT, ["batch", *_nchw(layer)]))
        builder = _Builder(graph, prefix, kinds, new_nodes, initializers)
        done = _backpropagate(builder, tensor, seed)
        gradients: dict[str, str] = {}
        wanted = [(input_name, None)] + [(other.name, other) for other in spec.layers[:position]]
        used_as_output: set[str] = set()
        for name, other in wanted:
            chain = _same_value_chain(graph, name)
            found = next((k for k, (t, _) in enumerate(chain) if t in done), None)
            if found is None:
                continue  # the target does not depend on this layer
            g = done[chain[found][0]]
            for _, node in reversed(chain[:found]):
                if node.op_type == "Transpose":
                    g = builder.node("Transpose", [g], perm=list(_attrs(node)["perm"]))
            key = "input" if other is None else name
            if g in used_as_output or not g.startswith(prefix):
                # Already an output (two layers with one gradient) or a seed: a named copy.
                out = f"{prefix}/{key}"
                new_nodes.append(onnx.helper.make_node("Identity", [g], [out], name=out))
            else:
                out = g  # the tensor itself: an Identity would copy maps of megabytes per run
            used_as_output.add(out)
            shape: list[str | int] = (
                ["batch", spec.input.height, spec.input.width, spec.input.channels]
                if other is None
                else ["batch", *_nchw(other)]
            )
            outputs.append(onnx.helper.make_tensor_value_info(out, _FLOAT, shape))
            gradients[key] = out
        targets.append(
            {
                "name": target_name,
                "layer": layer.name,
                "seed": seed,
                "logit": is_logit,
                "preactivation": preact,
                "gradients": gradients,
            }
        )

    forward_graph = forward.graph
    graph_proto = onnx.helper.make_graph(
        new_nodes,
        "featapp_gradients",
        [*forward_graph.input, *seeds],
        [*forward_graph.output, *outputs],
        initializer=[*forward_graph.initializer, *initializers],
    )
    model = onnx.helper.make_model(
        graph_proto, opset_imports=list(forward.opset_import), producer_name="featapp convert"
    )
    model.ir_version = min(forward.ir_version or IR_VERSION, MAX_IR_VERSION)
    info = {"schema": 1, "forward_sha256": forward_sha256, "targets": targets}
    for key, value in ((METADATA_KEY, spec_json), (GRADIENTS_KEY, json.dumps(info, sort_keys=True))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def _known_spatial(shape: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    """The sizes after batch and channels of a static NCHW ``shape``, or ``None`` when
    the shape or any of those sizes is unknown."""
    if not shape:
        return None
    known = tuple(d for d in shape[2:] if d is not None)
    return known if len(known) == len(shape[2:]) else None


def _nchw(layer) -> list[int]:
    if layer.is_spatial:
        rows, cols, channels = layer.output_shape
        return [channels, rows, cols]
    return list(layer.output_shape)


def target_graph(model, target: str, layer_names: Sequence[str]):
    """The part of a gradient model that one target's outputs need, as its own model.

    ONNX Runtime runs every node of a graph whatever outputs are asked for, so the app
    runs one such pruned graph per target: the forward graph up to the target, the
    target's backward chain, and the forward layer outputs up to the target (what
    Grad-CAM multiplies the gradient with). Weights are shared with ``model``'s proto.
    """
    import onnx

    info = json.loads({p.key: p.value for p in model.metadata_props}[GRADIENTS_KEY])
    chosen = next((t for t in info["targets"] if t.get("name", t["layer"]) == target), None)
    if chosen is None:
        raise KeyError(f"the gradient model has no target {target!r}")
    position = list(layer_names).index(chosen["layer"])
    wanted = [*layer_names[: position + 1], *chosen["gradients"].values()]
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    keep: set[int] = set()
    stack = list(wanted)
    used: set[str] = set()
    while stack:
        tensor = stack.pop()
        if tensor in used:
            continue
        used.add(tensor)
        index = producer.get(tensor)
        if index is not None and index not in keep:
            keep.add(index)
            stack.extend(name for name in graph.node[index].input if name)
    outputs = {value.name: value for value in graph.output}
    pruned = onnx.helper.make_graph(
        [node for i, node in enumerate(graph.node) if i in keep],
        f"featapp_gradients_{target}",
        [value for value in graph.input if value.name in used],
        [outputs[name] for name in wanted],
        initializer=[init for init in graph.initializer if init.name in used],
    )
    result = onnx.helper.make_model(pruned, opset_imports=list(model.opset_import), producer_name=model.producer_name)
    result.ir_version = model.ir_version
    for prop in model.metadata_props:
        entry = result.metadata_props.add()
        entry.key, entry.value = prop.key, prop.value
    return result
