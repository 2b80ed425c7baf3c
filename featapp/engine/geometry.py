"""Receptive fields from layer geometry: which input pixels can reach an activation cell.

Coordinates are input-pixel indices with pixel centres at integers. For every spatial
layer we track three numbers per axis (the standard recurrence, e.g. Araujo et al.,
"Computing Receptive Fields of Convolutional Neural Networks", Distill 2019):

* ``size``: how many input pixels one cell sees;
* ``jump``: how many input pixels apart two neighbouring cells are (the stride product);
* ``offset``: the input coordinate of the centre of cell 0.

A layer with kernel ``k``, stride ``s`` and ``p`` pixels of padding before the first
row maps ``(size, jump, offset)`` to
``(size + (k - 1) * jump, jump * s, offset + ((k - 1) / 2 - p) * jump)`` (:func:`step`;
``p`` is TensorFlow's for ``padding="same"``, or given explicitly, negative for a crop).
A merge of branches sees the union of their fields (:func:`union`); a graph is followed
layer by layer in :func:`featapp.engine.metadata.with_receptive_fields`.

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

__all__ = [
    "INPUT_FIELD",
    "LayerGeometry",
    "ReceptiveField",
    "propagate",
    "receptive_box",
    "same_padding_before",
    "step",
    "union",
    "whole_map",
]


@dataclass(frozen=True)
class LayerGeometry:
    """How a layer moves over space. ``kernel``/``stride`` are ``None`` for layers that
    keep geometry (activations, dropout, normalisation) or end it (``spatial=False``).

    ``pads`` are explicit ``(top, left, bottom, right)`` rows and columns added around the
    map before the window slides (PyTorch's ``padding=1``, an ONNX ``Pad``); they take the
    place of ``padding``. A layer with ``pads`` and no kernel only pads (Keras'
    ``ZeroPadding2D``); negative pads crop (``Cropping2D``).
    """

    name: str
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: str = "valid"
    spatial: bool = True
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one spatial layer's cells, per axis (rows, cols)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[float, float]


INPUT_FIELD = ReceptiveField((1, 1), (1, 1), (0.0, 0.0))
"""The input's own pixels: each sees itself."""


def same_padding_before(input_size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Rows padded before the first one by TensorFlow/Keras ``padding="same"``."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(input_size / stride)
    total = max((out - 1) * stride + effective - input_size, 0)
    return total // 2


def step(
    field: ReceptiveField, extent: tuple[int, int], layer: LayerGeometry
) -> tuple[ReceptiveField, tuple[int, int]]:
    """The field and map size after ``layer``, from those of the map it reads.

    >>> step(INPUT_FIELD, (8, 8), LayerGeometry("pad", pads=(1, 1, 1, 1)))
    (ReceptiveField(size=(1, 1), jump=(1, 1), offset=(-1.0, -1.0)), (10, 10))
    """
    if layer.kernel is None and layer.pads is None:
        return field, extent
    kernel = layer.kernel or (1, 1)
    stride = (layer.stride or (1, 1)) if layer.kernel is not None else (1, 1)
    dilation = layer.dilation if layer.kernel is not None else (1, 1)
    size, jump, offset, out = [], [], [], []
    for axis in (0, 1):
        k_eff = (kernel[axis] - 1) * dilation[axis] + 1
        if layer.pads is not None:
            before, after = layer.pads[axis], layer.pads[axis + 2]
            count = (extent[axis] + before + after - k_eff) // stride[axis] + 1
        elif layer.padding == "same":
            before = same_padding_before(extent[axis], kernel[axis], stride[axis], dilation[axis])
            count = math.ceil(extent[axis] / stride[axis])
        else:
            before, count = 0, (extent[axis] - k_eff) // stride[axis] + 1
        offset.append(field.offset[axis] + ((k_eff - 1) / 2 - before) * field.jump[axis])
        size.append(field.size[axis] + (k_eff - 1) * field.jump[axis])
        jump.append(field.jump[axis] * stride[axis])
        out.append(count)
    return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (offset[0], offset[1])), (out[0], out[1])


def whole_map(field: ReceptiveField, extent: tuple[int, int]) -> ReceptiveField:
    """The field of one value computed from every cell of a map (a global pooling, a
    flatten and dense layer): what all its cells see together, as a single cell.

    >>> whole_map(ReceptiveField((3, 3), (2, 2), (1.0, 1.0)), (4, 4))
    ReceptiveField(size=(9, 9), jump=(8, 8), offset=(4.0, 4.0))
    """
    return step(field, extent, LayerGeometry("whole map", kernel=extent, stride=extent))[0]


def union(inputs: Sequence[tuple[ReceptiveField, tuple[int, int]]], extent: tuple[int, int]) -> ReceptiveField | None:
    """The field of a merge (``Add``, ``Concatenate``, ``Multiply``) of maps, each given
    with its size: each cell sees what the cells under it in all the inputs see.

    Per axis, cell ``i`` of an input with jump ``j`` sees from ``start + i * j`` to
    ``end + i * j``; an input one cell wide that is broadcast over ``extent`` cells (a
    squeeze-and-excitation gate) has the same box for every cell, a jump of 0. When those
    jumps agree (a residual block, an Inception module) the union is exact: from the least
    start to the greatest end, the cells ``jump`` apart. When they differ it is a bounding
    union: the cells keep the first full-size input's centres and jump, with a size wide
    enough that every cell's box holds all of its inputs' boxes, so it may hold pixels none
    of them sees. ``None`` when an input's size is neither ``extent`` nor 1 on some axis.

    >>> narrow = ReceptiveField((1, 1), (1, 1), (0.0, 0.0))
    >>> wide = ReceptiveField((3, 3), (1, 1), (0.0, 0.0))
    >>> union([(narrow, (5, 5)), (wide, (5, 5))], (5, 5))
    ReceptiveField(size=(3, 3), jump=(1, 1), offset=(0.0, 0.0))
    """
    size, jump, offset = [], [], []
    for axis in (0, 1):
        count = extent[axis]
        spans = []  # (start of cell 0, end of cell 0, jump) per input
        for field, in_extent in inputs:
            if in_extent[axis] == count or count == 1:
                step_ = field.jump[axis]
            elif in_extent[axis] == 1:
                step_ = 0
            else:
                return None
            half = (field.size[axis] - 1) / 2
            spans.append((field.offset[axis] - half, field.offset[axis] + half, step_))
        steps = {s for _, _, s in spans}
        if steps == {0} and count > 1:
            return None  # nothing full-size to place the cells by
        if count == 1 or len(steps) == 1:
            start = min(s for s, _, _ in spans)
            end = max(e for _, e, _ in spans)
            size.append(round(end - start) + 1)
            offset.append((start + end) / 2)
            jump.append(next(iter(spans))[2] if count > 1 else inputs[0][0].jump[axis])
            continue
        grid = next((span for span in spans if span[2] > 0), spans[0])
        centre0, grid_jump = (grid[0] + grid[1]) / 2, grid[2]
        reach = 0.0
        for start, end, s in spans:
            for i in (0, count - 1):
                centre = centre0 + i * grid_jump
                reach = max(reach, centre - (start + i * s), (end + i * s) - centre)
        size.append(math.ceil(2 * reach - 1e-9) + 1)
        offset.append(centre0)
        jump.append(grid_jump)
    return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (offset[0], offset[1]))


def propagate(layers: Sequence[LayerGeometry], input_hw: tuple[int, int]) -> list[ReceptiveField | None]:
    """Receptive field of every layer of a plain stack, in order; ``None`` once the data
    is no longer a map. (A graph with branches: :func:`featapp.engine.metadata.with_receptive_fields`.)"""
    field, extent = INPUT_FIELD, (input_hw[0], input_hw[1])
    fields: list[ReceptiveField | None] = []
    still_spatial = True
    for layer in layers:
        still_spatial = still_spatial and layer.spatial
        if not still_spatial:
            fields.append(None)
            continue
        field, extent = step(field, extent, layer)
        fields.append(field)
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
    strided 'valid' layer dropped before a 'same' layer padded there; after a merge of
    inputs whose jumps differ (a squeeze-and-excitation gate) it is the bounding union
    (:func:`union`). A cell that sits wholly on padding (a ``ZeroPadding2D`` layer's border)
    sees no pixel: its box is empty (``bottom == top`` or ``right == left``).
    """
    bounds = []
    for axis, index in ((0, row), (1, col)):
        centre = field.offset[axis] + index * field.jump[axis]
        half = (field.size[axis] - 1) / 2
        low = max(0, math.floor(centre - half))
        high = min(input_hw[axis], math.ceil(centre + half) + 1)
        bounds.append((low, max(low, high)))
    (top, bottom), (left, right) = bounds
    return top, left, bottom, right
