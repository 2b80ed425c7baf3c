"""Receptive fields from layer geometry: which input pixels can reach an activation cell.

Coordinates are input-pixel indices with pixel centres at integers. For every spatial
layer we track three numbers per axis (the standard recurrence, e.g. Araujo et al.,
"Computing Receptive Fields of Convolutional Neural Networks", Distill 2019):

* ``size``: how many input pixels one cell sees;
* ``jump``: how many input pixels apart two neighbouring cells are (the stride product);
* ``offset``: the input coordinate of the centre of cell 0.

A layer with kernel ``k``, stride ``s`` and ``p`` pixels of padding before the first
row maps ``(size, jump, offset)`` to
``(size + (k - 1) * jump, jump * s, offset + ((k - 1) / 2 - p) * jump)``.

>>> geometry = propagate([LayerGeometry("conv", (3, 3), (1, 1), "valid")], (150, 150))
>>> geometry[0].size, geometry[0].jump, geometry[0].offset
((3, 3), (1, 1), (1.0, 1.0))
>>> receptive_box(geometry[0], row=0, col=0, input_hw=(150, 150))
(0, 0, 3, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LayerGeometry", "ReceptiveField", "propagate", "receptive_box", "same_padding_before"]


@dataclass(frozen=True)
class LayerGeometry:
    """How a layer moves over space. ``kernel``/``stride`` are ``None`` for layers that
    keep geometry (activations, dropout, normalisation) or end it (``spatial=False``)."""

    name: str
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: str = "valid"
    spatial: bool = True
    dilation: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one spatial layer's cells, per axis (rows, cols)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[float, float]


def same_padding_before(input_size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Rows padded before the first one by TensorFlow/Keras ``padding="same"``."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(input_size / stride)
    total = max((out - 1) * stride + effective - input_size, 0)
    return total // 2


def propagate(layers: Sequence[LayerGeometry], input_hw: tuple[int, int]) -> list[ReceptiveField | None]:
    """Receptive field of every layer in order; ``None`` once the data is no longer a map."""
    size = [1, 1]
    jump = [1, 1]
    offset = [0.0, 0.0]
    extent = [input_hw[0], input_hw[1]]
    fields: list[ReceptiveField | None] = []
    still_spatial = True
    for layer in layers:
        if not layer.spatial:
            still_spatial = False
        if not still_spatial:
            fields.append(None)
            continue
        if layer.kernel is not None:
            stride = layer.stride or (1, 1)
            for axis in (0, 1):
                k_eff = (layer.kernel[axis] - 1) * layer.dilation[axis] + 1
                pad = 0
                if layer.padding == "same":
                    pad = same_padding_before(extent[axis], layer.kernel[axis], stride[axis], layer.dilation[axis])
                    extent[axis] = math.ceil(extent[axis] / stride[axis])
                else:
                    extent[axis] = (extent[axis] - k_eff) // stride[axis] + 1
                offset[axis] = offset[axis] + ((k_eff - 1) / 2 - pad) * jump[axis]
                size[axis] = size[axis] + (k_eff - 1) * jump[axis]
                jump[axis] = jump[axis] * stride[axis]
        fields.append(ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (offset[0], offset[1])))
    return fields


def receptive_box(field: ReceptiveField, row: int, col: int, input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Input box ``(top, left, bottom, right)`` seen by cell ``(row, col)``, clipped to
    the image; ``bottom`` and ``right`` are exclusive, as in slicing.

    >>> field = ReceptiveField(size=(46, 46), jump=(16, 16), offset=(22.5, 22.5))
    >>> receptive_box(field, 6, 6, (150, 150))   # the last cell of the lecture's 7x7 layer
    (96, 96, 142, 142)

    Every input pixel that can change the cell lies in the box, and for plain stacks of
    'valid' convolutions and poolings (the lecture's model) every pixel in the box can
    change it (tested by brute force on the real model). It is a bounding box: dilated
    kernels, and strides larger than kernels, leave pixels inside it that the cell never
    sees; and at the bottom or right border it may hold fewer than ``jump`` pixels that a
    strided 'valid' layer dropped before a 'same' layer padded there.
    """
    bounds = []
    for axis, index in ((0, row), (1, col)):
        centre = field.offset[axis] + index * field.jump[axis]
        half = (field.size[axis] - 1) / 2
        low = max(0, math.floor(centre - half))
        high = min(input_hw[axis], math.ceil(centre + half) + 1)
        bounds.append((low, high))
    (top, bottom), (left, right) = bounds
    return top, left, bottom, right
