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

__all__ = ["InputLink", "ChannelCircuit", "channel_circuit"]


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
