"""Which channels of the convolution below build a channel (Distill's Circuits, "expanded weights", simplified).

A channel of a convolution is a weighted sum over every channel of its input. Between two
convolutions of this kind of network there are only poolings, which keep each channel apart,
so input channel ``i`` of a convolution *is* channel ``i`` of the convolution below, pooled.
The kernel slice ``weights[channel, i]`` (a small 3 x 3 pattern) says how channel ``i``
feeds this one: its L2 norm is how strongly, and the sign of its sum whether, on the whole,
more of channel ``i`` pushes this channel up (excites it) or down (inhibits it).

>>> ops = read_layer_ops(model)                                  # doctest: +SKIP
>>> circuit = channel_circuit(ops, "conv2d_2", 4, count=3)        # doctest: +SKIP
>>> circuit.below, [link.channel for link in circuit.excitatory]  # doctest: +SKIP
('conv2d_1', [17, 3, 40])

Channels are counted from 0 here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from featapp.engine.arithmetic import GRAPH_INPUT, CannotExplain, ConvOp, PoolOp

__all__ = ["InputLink", "ChannelCircuit", "channel_circuit", "UnitInputs", "dense_weights", "dense_unit_inputs"]


@dataclass(frozen=True)
class InputLink:
    """One input channel's kernel slice: ``norm`` (its L2 norm) and ``total`` (the sum of its weights)."""

    channel: int
    norm: float
    total: float

    @property
    def signed(self) -> float:
        """The norm with the sign of the slice's sum: positive excites, negative inhibits."""
        return self.norm if self.total >= 0 else -self.norm


@dataclass(frozen=True)
class ChannelCircuit:
    """``layer``'s ``channel``, built from channels of ``below`` (reached through ``via``, the
    poolings in between): the strongest ``excitatory`` and ``inhibitory`` links, strongest first."""

    layer: str
    channel: int
    below: str
    via: tuple[str, ...]
    excitatory: tuple[InputLink, ...]
    inhibitory: tuple[InputLink, ...]
    inputs: int


def _conv_below(ops: Mapping[str, ConvOp | PoolOp | str], op: ConvOp) -> tuple[str, tuple[str, ...]]:
    """The convolution whose channels ``op`` reads, through poolings only; raises :class:`CannotExplain`."""
    via: list[str] = []
    source = op.source
    while True:
        if source == GRAPH_INPUT:
            raise CannotExplain(
                f"{op.layer} is the first convolution: it reads the photo's colour channels, not other channels. "
                "Its kernels are drawn on the Model page."
            )
        below = ops.get(source)
        if isinstance(below, ConvOp):
            return source, tuple(via)
        if isinstance(below, PoolOp):
            via.append(source)
            source = below.source
            continue
        raise CannotExplain(
            f"{op.layer} reads {source}, which is not a convolution or a pooling of one, so its inputs are not "
            "channels of a convolution below."
        )


def channel_circuit(
    ops: Mapping[str, ConvOp | PoolOp | str], layer: str, channel: int, count: int = 4
) -> ChannelCircuit:
    """The ``count`` input channels that excite ``channel`` of convolution ``layer`` most, and the
    ``count`` that inhibit it most, ranked by the L2 norms of their kernel slices.

    ``ops`` is :func:`featapp.engine.arithmetic.read_layer_ops`'s. Raises :class:`CannotExplain`
    (with advice) for a layer that is not a convolution, or the first one.
    """
    op = ops.get(layer)
    if isinstance(op, str):
        raise CannotExplain(op)
    if not isinstance(op, ConvOp):
        kind = "a pooling layer: it has no weights" if isinstance(op, PoolOp) else "not a convolution"
        raise CannotExplain(f"{layer} is {kind}; choose a convolution to see which channels build its channels.")
    if not 0 <= channel < op.weights.shape[0]:
        raise CannotExplain(f"{layer} has channels 1-{op.weights.shape[0]}, not {channel + 1}.")
    below, via = _conv_below(ops, op)
    kernel = op.weights[channel].astype(np.float64)
    norms = np.sqrt((kernel**2).sum(axis=(1, 2)))
    totals = kernel.sum(axis=(1, 2))
    links = [InputLink(int(i), float(norms[i]), float(totals[i])) for i in range(len(kernel))]
    ranked = sorted(links, key=lambda link: (-link.norm, link.channel))
    excitatory = tuple(link for link in ranked if link.signed > 0)[:count]
    inhibitory = tuple(link for link in ranked if link.signed < 0)[:count]
    return ChannelCircuit(layer, channel, below, via, excitatory, inhibitory, len(kernel))


# -- dense units: which conv channels feed them -------------------------------------------------------------------


@dataclass(frozen=True)
class UnitInputs:
    """Unit ``unit`` of dense layer ``layer`` fed by the channels of ``maps`` (flattened by ``flatten``):
    ``contributions[i, c]`` is image ``i``'s sum over channel ``c``'s map of activation x weight, so
    ``contributions[i].sum() + bias`` is the unit's value before its activation, for image ``i``."""

    layer: str
    unit: int
    maps: str
    contributions: np.ndarray
    bias: float

    @property
    def mean(self) -> np.ndarray:
        """Each channel's contribution, averaged over the images."""
        return self.contributions.mean(axis=0)

    def strongest(self, count: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The ``count`` channels with the largest mean push up, and down: ``(channel, mean contribution)``."""
        mean = self.mean
        order = np.argsort(-mean, kind="stable")
        up = [(int(c), float(mean[c])) for c in order[:count] if mean[c] > 0]
        down = [(int(c), float(mean[c])) for c in order[::-1][:count] if mean[c] < 0]
        return up, down


def dense_weights(path, layer: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Dense ``layer``'s weights ``(inputs, units)``, bias ``(units,)`` and the tensor it reads, from the
    ONNX file (``MatMul`` + ``Add`` or ``Gemm``); raises :class:`CannotExplain` for anything else."""
    from featapp.engine.filters import _resolve, read_graph

    graph, tensors, producers = read_graph(path)
    node = producers.get(layer)
    while node is not None and node.op_type in ("Relu", "Sigmoid", "Softmax", "Identity"):
        node = producers.get(node.input[0])
    bias = None
    if node is not None and node.op_type == "Add":
        constants = [(_resolve(name, tensors, producers), name) for name in node.input]
        bias = next((value for value, _ in constants if value is not None), None)
        node = next((producers.get(name) for value, name in constants if value is None), None)
    weights = None
    if node is not None and node.op_type in ("MatMul", "Gemm"):
        weights = _resolve(node.input[1], tensors, producers)
        if node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
            if attrs.get("transA"):
                weights = None
            elif weights is not None and attrs.get("transB"):
                weights = weights.T
            if len(node.input) > 2 and node.input[2]:
                bias = _resolve(node.input[2], tensors, producers)
    if weights is None or weights.ndim != 2:
        raise CannotExplain(
            f"{layer}'s weights are not stored as a plain matrix in this file, so its inputs cannot be shown."
        )
    if bias is None:
        bias = np.zeros(weights.shape[1], np.float32)
    return np.asarray(weights, np.float32), np.asarray(bias, np.float32).reshape(-1), node.input[0]


def dense_unit_inputs(
    weights: np.ndarray, bias: np.ndarray, layer: str, unit: int, maps_layer: str, maps: np.ndarray, flat: np.ndarray
) -> UnitInputs:
    """Which channels of ``maps`` (``(images, channels, rows, cols)``, the last maps before the flatten)
    feed ``unit`` of dense ``layer``. ``flat`` is the flatten's output for the same images: it decides
    the order the flatten took (channels last, as Keras, or first, as PyTorch); if it is neither,
    :class:`CannotExplain`."""
    count, channels, rows, cols = maps.shape
    if weights.shape[0] != channels * rows * cols:
        raise CannotExplain(
            f"{layer} reads {weights.shape[0]} numbers, not the {channels} x {rows} x {cols} of {maps_layer}, "
            "so its inputs are not those channels."
        )
    if not 0 <= unit < weights.shape[1]:
        raise CannotExplain(f"{layer} has units 1-{weights.shape[1]}, not {unit + 1}.")
    column = weights[:, unit].astype(np.float64)
    if np.allclose(flat, maps.transpose(0, 2, 3, 1).reshape(count, -1), atol=1e-6):
        per_cell = column.reshape(rows, cols, channels).transpose(2, 0, 1)
    elif np.allclose(flat, maps.reshape(count, -1), atol=1e-6):
        per_cell = column.reshape(channels, rows, cols)
    else:
        raise CannotExplain(f"{layer}'s input is not {maps_layer}'s maps in any order this view knows.")
    contributions = np.einsum("ichw,chw->ic", maps.astype(np.float64), per_cell)
    return UnitInputs(layer, unit, maps_layer, contributions, float(bias[unit]))
