"""Receptive fields checked by brute force: which input pixels really change each cell.

:func:`pixels_seen` changes one input pixel at a time (all its channels, to black and to
white) and runs every image through the converted model in ONNX Runtime; a cell depends
on a pixel when either change moves it. :func:`check_boxes` then holds every spatial
layer's metadata boxes (:func:`featapp.engine.geometry.receptive_box`) against that.
Models meant for it are linear (no ReLU, average pooling), so every pixel a cell can
see changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from featapp.engine.geometry import receptive_box
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import FeatureModel

__all__ = ["pixels_seen", "boxes", "check_boxes"]


def pixels_seen(model: FeatureModel, layers: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Per layer, a boolean ``(rows, cols, H, W)``: whether input pixel ``(y, x)`` changes cell
    ``(row, col)`` of some channel, from a random mid-grey photo."""
    spec = model.input_spec
    height, width = spec.height, spec.width
    rng = np.random.default_rng(seed)
    base = rng.integers(64, 192, (height, width, spec.channels), dtype=np.uint8)
    reference = model.activations(base[None], layers=layers)
    seen = {name: np.zeros((*reference[name].shape[2:], height, width), bool) for name in layers}
    for value in (0, 255):
        for y in range(height):
            batch = np.repeat(base[None], width, axis=0)
            batch[np.arange(width), y, np.arange(width)] = value
            acts = model.activations(batch, layers=layers, batch_size=width)
            for name in layers:
                # relative to the layer's scale, so float32 noise in a deep sum is not a change
                scale = max(float(np.abs(reference[name]).max()), 1e-6)
                moved = (np.abs(acts[name] - reference[name]) > 1e-5 * scale).any(axis=1)  # (width, rows, cols)
                seen[name][:, :, y, :] |= np.transpose(moved, (1, 2, 0))
    return seen


def boxes(layer: LayerInfo, input_hw: tuple[int, int]) -> np.ndarray:
    """``(rows, cols, 4)``: every cell's box from the layer's metadata."""
    assert layer.receptive_field is not None, f"{layer.name} has no receptive field"
    rows, cols = layer.output_shape[:2]
    return np.array([[receptive_box(layer.receptive_field, r, c, input_hw) for c in range(cols)] for r in range(rows)])


def check_boxes(
    layer: LayerInfo, seen: np.ndarray, input_hw: tuple[int, int], *, tight: bool | Literal["inside"]
) -> int:
    """Every pixel that changes a cell lies in the cell's box. With ``tight``, each box is
    also the smallest that holds those pixels: its first and last rows and columns each
    hold one; ``"inside"`` asks that only of cells whose whole field lies inside the image
    (a dilated kernel's outer taps may sit on padding, where nothing changes them).
    Returns how many cells depend on some pixel (so a caller can tell the check was not
    vacuous)."""
    field = layer.receptive_field
    assert field is not None, f"{layer.name} has no receptive field"
    found = boxes(layer, input_hw)
    rows, cols = layer.output_shape[:2]
    reached = 0
    for r in range(rows):
        for c in range(cols):
            top, left, bottom, right = (int(v) for v in found[r, c])
            ys, xs = np.nonzero(seen[r, c])
            if not len(ys):
                continue
            reached += 1
            where = f"{layer.name} cell {(r, c)}: box {(top, left, bottom, right)}"
            assert top <= ys.min() and ys.max() < bottom, f"{where}, rows {ys.min()}..{ys.max()} change it"
            assert left <= xs.min() and xs.max() < right, f"{where}, columns {xs.min()}..{xs.max()} change it"
            inside = all(
                field.offset[axis] + index * field.jump[axis] - (field.size[axis] - 1) / 2 >= 0
                and field.offset[axis] + index * field.jump[axis] + (field.size[axis] - 1) / 2 <= input_hw[axis] - 1
                for axis, index in ((0, r), (1, c))
            )
            if tight is True or (tight == "inside" and inside):
                assert (top, bottom - 1) == (ys.min(), ys.max()), f"{where} is taller than rows {ys.min()}..{ys.max()}"
                assert (left, right - 1) == (xs.min(), xs.max()), f"{where} is wider than cols {xs.min()}..{xs.max()}"
    return reached
