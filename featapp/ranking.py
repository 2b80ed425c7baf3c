"""Rank images by how strongly one channel fires, and find where: the cell and its input box.

>>> import numpy as np
>>> maps = np.zeros((2, 3, 3), np.float32); maps[1, 2, 0] = 5.0
>>> [(r.index, r.value, r.cell) for r in rank_by_activation(maps)]
[(1, 5.0, (2, 0)), (0, 0.0, (0, 0))]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featapp.geometry import ReceptiveField, receptive_box

__all__ = ["RankedMap", "rank_by_activation"]


@dataclass(frozen=True)
class RankedMap:
    """One image's place in a ranking: its index in the batch, its score, and where it peaked.

    ``cell`` is the (row, col) of the map's maximum (0-based); ``box`` is that cell's
    receptive field on the input, ``(top, left, bottom, right)`` with exclusive ends.
    """

    index: int
    value: float
    cell: tuple[int, int]
    box: tuple[int, int, int, int] | None


def rank_by_activation(
    maps: np.ndarray,
    field: ReceptiveField | None = None,
    input_hw: tuple[int, int] | None = None,
    by: str = "max",
) -> list[RankedMap]:
    """Images of a batch of one channel's maps ``(N, H, W)``, strongest first.

    ``by`` is ``"max"`` (the strongest cell, as the lecture's "which input makes this
    neuron fire") or ``"mean"`` (the whole map). Ties keep batch order. With ``field``
    and ``input_hw``, each entry carries the input box of its strongest cell.
    """
    if maps.ndim != 3:
        raise ValueError(f"expected maps of shape (images, rows, cols), got {maps.shape}")
    if by not in ("max", "mean"):
        raise ValueError(f"rank by 'max' or 'mean', not {by!r}")
    count, _, cols = maps.shape
    flat = maps.reshape(count, -1)
    peaks = flat.argmax(axis=1)
    scores = flat.max(axis=1) if by == "max" else flat.mean(axis=1)
    order = np.argsort(-scores, kind="stable")
    ranked = []
    for index in order:
        cell = (int(peaks[index] // cols), int(peaks[index] % cols))
        box = receptive_box(field, cell[0], cell[1], input_hw) if field is not None and input_hw else None
        ranked.append(RankedMap(index=int(index), value=float(scores[index]), cell=cell, box=box))
    return ranked
