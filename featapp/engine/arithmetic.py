"""How one cell of a feature map was computed, number by number (CNN Explainer's view, on any converted model).

A convolution cell is a dot product: the input window under the kernel, times the kernel,
summed, plus the bias, through the ReLU. A max-pooling cell is the largest value of its
window. This module reads each layer's operator and weights from the ONNX file (ONNX
Runtime runs a model but does not hand out its weights) and redoes that arithmetic for
one cell from the layer's input, which is either the photo as the graph takes it
(``pixel * input_scale + input_offset``) or the output of the layer below, as
:meth:`FeatureModel.activations` returns it.

>>> ops = read_layer_ops(model)                                         # doctest: +SKIP
>>> acts = model.activations(photo)                                     # doctest: +SKIP
>>> cell = explain_cell(ops["conv2d"], model, acts, pixels, channel=4, row=10, col=20)  # doctest: +SKIP
>>> round(cell.value - cell.model_value, 5)                             # doctest: +SKIP
0.0

Channels, rows and columns are counted from 0 here (the app counts from 1). A layer whose
arithmetic this module cannot redo (grouped convolutions, a convolution followed by
something other than a ReLU, dense layers) gets a :class:`CannotExplain` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from featapp.engine.filters import _resolve, read_graph
from featapp.engine.model import FeatureModel
from featapp.errors import FeatappError

__all__ = [
    "CannotExplain",
    "ConvOp",
    "PoolOp",
    "ConvArithmetic",
    "PoolArithmetic",
    "read_layer_ops",
    "explain_cell",
    "GRAPH_INPUT",
]

GRAPH_INPUT = ""
"""The ``source`` of a layer that reads the photo itself (as the graph takes it), not another layer."""


class CannotExplain(FeatappError, ValueError):
    """This layer's cells cannot be recomputed step by step here; the message says why."""


@dataclass(frozen=True)
class ConvOp:
    """One convolution as the file stores it: ``weights`` ``(out, in, rows, cols)``, ``bias``
    ``(out,)``, and the window geometry. ``source`` is the layer it reads (or :data:`GRAPH_INPUT`)."""

    layer: str
    source: str
    weights: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    relu: bool


@dataclass(frozen=True)
class PoolOp:
    """One max or average pooling: ``kind`` is ``"max"`` or ``"average"``."""

    layer: str
    source: str
    kind: str
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]


@dataclass(frozen=True)
class ConvArithmetic:
    """One convolution cell, every number of it. Arrays are ``(input channels, kernel rows, kernel cols)``.

    ``window`` is the input under the kernel (zero where the kernel hangs over a padded
    edge); ``pixels`` is the same window as uint8 photo pixels when the layer reads the photo.
    ``rows``/``cols`` are the input positions (0-based; outside ``0..size-1`` = padding).
    """

    layer: str
    source: str
    channel: int
    row: int
    col: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    window: np.ndarray
    kernel: np.ndarray
    bias: float
    relu: bool
    model_value: float
    pixels: np.ndarray | None = None

    @property
    def products(self) -> np.ndarray:
        return self.window.astype(np.float64) * self.kernel.astype(np.float64)

    @property
    def contributions(self) -> np.ndarray:
        """Per input channel: the sum over the window of weight x input."""
        return self.products.reshape(len(self.window), -1).sum(axis=1)

    @property
    def total(self) -> float:
        """The sum of all the products (the dot product)."""
        return float(self.products.sum())

    @property
    def preactivation(self) -> float:
        return self.total + self.bias

    @property
    def value(self) -> float:
        """The recomputed activation: the ReLU of the pre-activation (or it, without a ReLU)."""
        return max(self.preactivation, 0.0) if self.relu else self.preactivation

    def strongest(self, count: int) -> tuple[list[tuple[int, float]], float]:
        """The ``count`` input channels with the largest contributions by size, as
        ``(channel, contribution)``, and the sum of all the others'."""
        contributions = self.contributions
        order = np.argsort(-np.abs(contributions), kind="stable")[:count]
        top = [(int(c), float(contributions[c])) for c in order]
        return top, float(contributions.sum() - sum(value for _, value in top))


@dataclass(frozen=True)
class PoolArithmetic:
    """One pooling cell: its input ``window`` ``(rows, cols)`` at input ``rows``/``cols``;
    ``winner`` is the (row, col) inside the window that won (max pooling) or None (average)."""

    layer: str
    source: str
    kind: str
    channel: int
    row: int
    col: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    window: np.ndarray
    winner: tuple[int, int] | None
    model_value: float

    @property
    def value(self) -> float:
        return float(self.window.max()) if self.kind == "max" else float(self.window.mean())


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pair(values, default: int) -> tuple[int, int]:
    values = list(values) if values is not None else [default, default]
    return int(values[0]), int(values[1])


def _pads(attrs: dict, kernel: tuple[int, int], strides: tuple[int, int], dilations: tuple[int, int], size) -> tuple:
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for axis in range(2):
            out = -(-size[axis] // strides[axis])
            span = (kernel[axis] - 1) * dilations[axis] + 1
            total = max((out - 1) * strides[axis] + span - size[axis], 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto == "SAME_UPPER" else (large, small))
        return pads[0][0], pads[1][0], pads[0][1], pads[1][1]
    values = attrs.get("pads") or [0, 0, 0, 0]
    return int(values[0]), int(values[1]), int(values[2]), int(values[3])


def _source(tensor: str, layer_names: set[str], input_name: str, producers: dict) -> str | None:
    """The layer whose output ``tensor`` is, looking through transposes and copies; None if another op made it."""
    seen = set()
    while tensor not in layer_names and tensor != input_name:
        node = producers.get(tensor)
        if node is None or tensor in seen or node.op_type not in ("Transpose", "Identity"):
            return None
        seen.add(tensor)
        tensor = node.input[0]
    return GRAPH_INPUT if tensor == input_name else tensor


def _maker(tensor: str, producers: dict):
    """The node that computes ``tensor``, looking through copies and through transposes that
    cancel out (the exporter wraps some layers' outputs in a pair of them)."""
    perm: list[int] | None = None
    node = producers.get(tensor)
    while node is not None and node.op_type in ("Transpose", "Identity"):
        if node.op_type == "Transpose":
            step = list(_attributes(node).get("perm") or [])
            perm = step if perm is None else [step[i] for i in perm]
        node = producers.get(node.input[0])
    if perm is not None and perm != sorted(perm):
        return None
    return node


def read_layer_ops(model: FeatureModel) -> dict[str, ConvOp | PoolOp | str]:
    """For each spatial layer of ``model``: its :class:`ConvOp` or :class:`PoolOp`, or, when its
    cells cannot be recomputed here, a sentence saying why (for a student)."""
    graph, tensors, producers = read_graph(model.path)
    names = set(model.layer_names)
    found: dict[str, ConvOp | PoolOp | str] = {}
    spec = model.input_spec
    sizes: dict[str, tuple[int, ...]] = {GRAPH_INPUT: (spec.height, spec.width)}
    sizes.update({layer.name: layer.output_shape[:2] for layer in model.layers if layer.is_spatial})
    for layer in model.layers:
        if not layer.is_spatial:
            continue
        node = _maker(layer.name, producers)
        relu = node is not None and node.op_type == "Relu"
        if relu:
            node = producers.get(node.input[0])
        op = node.op_type if node is not None else "?"
        if op == "Conv":
            found[layer.name] = _conv_op(layer.name, node, tensors, producers, names, model, relu, sizes)
        elif op in ("MaxPool", "AveragePool") and not relu:
            found[layer.name] = _pool_op(layer.name, node, producers, names, model, sizes)
        else:
            article = "an" if op[:1] in "AEIOU" else "a"
            what = f"{article} {op} operator" + (" followed by a ReLU" if relu else "")
            found[layer.name] = (
                f"{layer.name} ({layer.kind}) is made by {what} in this file; the step-by-step view covers "
                "convolutions (with or without a ReLU) and max or average pooling."
            )
    return found


def _conv_op(name, node, tensors, producers, names, model, relu, sizes) -> ConvOp | str:
    attrs = _attributes(node)
    weights = _resolve(node.input[1], tensors, producers)
    bias = _resolve(node.input[2], tensors, producers) if len(node.input) > 2 and node.input[2] else None
    source = _source(node.input[0], names, model.spec.input_name, producers)
    if weights is None or weights.ndim != 4:
        return f"{name}'s kernel is not stored as a 4-D constant in the file, so its arithmetic cannot be shown."
    if int(attrs.get("group", 1)) != 1:
        return f"{name} is a grouped (or depthwise) convolution; the step-by-step view covers ordinary ones."
    if source is None:
        return (
            f"{name} reads a tensor that is neither the photo nor another layer's output (some operator sits "
            "between them), so its input window cannot be shown."
        )
    kernel = (int(weights.shape[2]), int(weights.shape[3]))
    strides = _pair(attrs.get("strides"), 1)
    dilations = _pair(attrs.get("dilations"), 1)
    pads = _pads(attrs, kernel, strides, dilations, sizes[source])
    bias = np.zeros(weights.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32).reshape(-1)
    return ConvOp(name, source, np.asarray(weights, np.float32), bias, strides, dilations, pads, relu)


def _pool_op(name, node, producers, names, model, sizes) -> PoolOp | str:
    attrs = _attributes(node)
    source = _source(node.input[0], names, model.spec.input_name, producers)
    if source is None:
        return f"{name} reads a tensor that is not another layer's output, so its window cannot be shown."
    kernel = _pair(attrs.get("kernel_shape"), 1)
    strides = _pair(attrs.get("strides"), 1)
    dilations = _pair(attrs.get("dilations"), 1)
    if dilations != (1, 1):
        return f"{name} is a dilated pooling; the step-by-step view covers ordinary ones."
    pads = _pads(attrs, kernel, strides, dilations, sizes[source])
    kind = "max" if node.op_type == "MaxPool" else "average"
    return PoolOp(name, source, kind, kernel, strides, pads)


def _positions(index: int, stride: int, pad: int, count: int, dilation: int) -> np.ndarray:
    return index * stride - pad + np.arange(count) * dilation


def _window(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float) -> np.ndarray:
    """``values[..., rows, cols]`` for each pair, with ``fill`` outside the map (the padding)."""
    inside_r = (rows >= 0) & (rows < values.shape[-2])
    inside_c = (cols >= 0) & (cols < values.shape[-1])
    window = np.full((*values.shape[:-2], len(rows), len(cols)), fill, np.float32)
    block = values[..., rows[inside_r][:, None], cols[inside_c][None, :]]
    window[..., np.flatnonzero(inside_r)[:, None], np.flatnonzero(inside_c)[None, :]] = block
    return window


def explain_cell(
    op: ConvOp | PoolOp | str,
    model: FeatureModel,
    activations: Mapping[str, np.ndarray],
    pixels: np.ndarray,
    channel: int,
    row: int,
    col: int,
) -> ConvArithmetic | PoolArithmetic:
    """Every number behind cell (``row``, ``col``) of ``channel`` of ``op``'s layer, for one image.

    ``activations`` are that image's, as :meth:`FeatureModel.activations` gives them (batch of
    one, or the image's own maps without the batch axis); ``pixels`` its uint8 ``(H, W, C)``.
    ``op`` comes from :func:`read_layer_ops`; a reason there (a string) raises :class:`CannotExplain`.
    """
    if isinstance(op, str):
        raise CannotExplain(op)
    maps = _image_maps(activations, op.layer)
    if not (0 <= channel < maps.shape[0] and 0 <= row < maps.shape[1] and 0 <= col < maps.shape[2]):
        raise CannotExplain(
            f"{op.layer} has channels 1-{maps.shape[0]}, rows 1-{maps.shape[1]} and columns 1-{maps.shape[2]}; "
            f"asked for channel {channel + 1}, row {row + 1}, column {col + 1}."
        )
    model_value = float(maps[channel, row, col])
    pixels = np.asarray(pixels)
    if op.source == GRAPH_INPUT:
        scaled = np.multiply(pixels, np.float32(model.spec.input_scale), dtype=np.float32)
        scaled += np.float32(model.spec.input_offset)
        source = np.ascontiguousarray(scaled.transpose(2, 0, 1))
    else:
        source = _image_maps(activations, op.source)
    if isinstance(op, PoolOp):
        return _pool_cell(op, source, channel, row, col, model_value)
    kh, kw = op.weights.shape[2:]
    rows = _positions(row, op.strides[0], op.pads[0], kh, op.dilations[0])
    cols = _positions(col, op.strides[1], op.pads[1], kw, op.dilations[1])
    window = _window(source, rows, cols, 0.0)
    photo = None
    if op.source == GRAPH_INPUT:
        photo = _window(pixels.transpose(2, 0, 1).astype(np.float32), rows, cols, 0.0).astype(np.uint8)
    return ConvArithmetic(
        layer=op.layer,
        source=op.source,
        channel=channel,
        row=row,
        col=col,
        rows=tuple(int(r) for r in rows),
        cols=tuple(int(c) for c in cols),
        window=window,
        kernel=op.weights[channel],
        bias=float(op.bias[channel]),
        relu=op.relu,
        model_value=model_value,
        pixels=photo,
    )


def _image_maps(activations: Mapping[str, np.ndarray], layer: str) -> np.ndarray:
    maps = np.asarray(activations[layer])
    if maps.ndim == 4:
        if maps.shape[0] != 1:
            raise ValueError(f"one image's activations, not {maps.shape[0]}")
        maps = maps[0]
    return maps


def _pool_cell(op: PoolOp, source: np.ndarray, channel: int, row: int, col: int, model_value: float) -> PoolArithmetic:
    rows = _positions(row, op.strides[0], op.pads[0], op.kernel[0], 1)
    cols = _positions(col, op.strides[1], op.pads[1], op.kernel[1], 1)
    # Keras pads max pooling with -infinity (padding never wins) and averages only real inputs.
    inside_r = rows[(rows >= 0) & (rows < source.shape[1])]
    inside_c = cols[(cols >= 0) & (cols < source.shape[2])]
    window = source[channel][inside_r[:, None], inside_c[None, :]]
    winner = None
    if op.kind == "max":
        flat = int(np.argmax(window))
        winner = (flat // window.shape[1], flat % window.shape[1])
    return PoolArithmetic(
        layer=op.layer,
        source=op.source,
        kind=op.kind,
        channel=channel,
        row=row,
        col=col,
        rows=tuple(int(r) for r in inside_r),
        cols=tuple(int(c) for c in inside_c),
        window=np.asarray(window, np.float32),
        winner=winner,
        model_value=model_value,
    )
