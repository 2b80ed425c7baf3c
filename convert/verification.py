"""How close two float32 computations of one network must be, without false alarms.

Two correct float32 implementations (Keras and ONNX Runtime, or the source ONNX graph and
the converted one, whose operators ONNX Runtime may fuse differently) add the same terms
in different orders. Each addition rounds, so a sum of ``n`` terms can differ by about
``n`` float32 roundings of its largest term, most visibly when the terms are all alike
(a global average pool over a near-constant map). So the allowed error of a layer grows
with the longest sum behind it (:func:`accumulation_lengths`): the user's tolerance, or
``n`` roundings, whichever is larger. A real conversion mistake changes values by far
more than that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from featapp.engine.metadata import LayerInfo

__all__ = ["ACTIVATION_FLOOR", "FLOAT32_EPSILON", "accumulation_lengths", "allowed_error", "relative_error"]

FLOAT32_EPSILON = float(np.finfo(np.float32).eps)

_CONV_KINDS = ("Conv2D", "SeparableConv2D", "GroupConv2D")


ACTIVATION_FLOOR = 1e-3
"""The smallest scale an activation's error is measured against: a layer of near-zero values
is compared in absolute terms below it, so a rounding of 1e-7 there is not a large relative error."""


def relative_error(want: np.ndarray, got: np.ndarray, floor: float = ACTIVATION_FLOOR) -> float:
    """Largest difference, relative to the layer's own largest value (floored at ``floor`` so an
    all-zero layer does not divide by zero). Gradients are far smaller than activations, so
    their checks pass a smaller floor."""
    scale = max(float(np.abs(want).max()) if want.size else 0.0, floor)
    return float(np.abs(want.astype(np.float64) - got.astype(np.float64)).max()) / scale if want.size else 0.0


def allowed_error(tolerance: float, accumulation: int = 1) -> float:
    """The user's tolerance, or the rounding of a float32 sum of ``accumulation`` terms.

    >>> allowed_error(1e-4, 9) == 1e-4
    True
    >>> allowed_error(1e-4, 148 * 148) > 1.5e-4
    True
    """
    return max(float(tolerance), FLOAT32_EPSILON * max(int(accumulation), 1))


def accumulation_lengths(
    layers: Sequence[LayerInfo],
    input_shape: tuple[int, int, int],
    inputs: Sequence[Sequence[int | None]] | None = None,
) -> list[int]:
    """Per layer, the longest float32 sum that its value depends on: its own (kernel
    area x input channels for a convolution, the map's area for a global pool, the input
    length for a dense layer), or the longest of the layers it reads.

    >>> gap = LayerInfo("gap", "GlobalAveragePooling2D", (32,))
    >>> conv = LayerInfo("conv", "Conv2D", (148, 148, 32), kernel=(3, 3))
    >>> accumulation_lengths([conv, gap], (150, 150, 3))
    [27, 21904]
    """
    if inputs is None:
        inputs = [[None]] + [[i] for i in range(len(layers) - 1)] if layers else []
    lengths: list[int] = []
    for index, layer in enumerate(layers):
        sources = list(inputs[index]) or [None]
        before = input_shape if sources[0] is None else layers[sources[0]].output_shape
        own = 1
        if layer.kernel is not None:
            area = layer.kernel[0] * layer.kernel[1]
            own = area * int(before[-1]) if layer.kind in _CONV_KINDS else area
        elif layer.kind.startswith("Global") and len(before) == 3:
            own = int(before[0]) * int(before[1])
        elif layer.kind == "Dense":
            own = math.prod(int(d) for d in before)
        inherited = max((lengths[s] for s in sources if s is not None), default=1)
        lengths.append(max(own, inherited))
    return lengths
