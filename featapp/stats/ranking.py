"""Rank images by how strongly one channel fires, and find where: the cell and its input box.

>>> import numpy as np
>>> maps = np.zeros((2, 3, 3), np.float32); maps[1, 2, 0] = 5.0
>>> [(r.index, r.value, r.cell) for r in rank_by_activation(maps)]
[(1, 5.0, (2, 0)), (0, 0.0, (0, 0))]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featapp.engine.geometry import ReceptiveField, receptive_box

__all__ = ["RankedHit", "rank_by_activation"]


@dataclass(frozen=True)
class RankedHit:
    """One image among a channel's strongest, wherever the ranking came from: a batch in
    memory (:func:`rank_by_activation`, the gallery) or a scanned dataset
    (:meth:`featapp.NeuronStats.top_k`).

    ``index`` is the image's position in the batch or in :attr:`featapp.NeuronStats.paths`;
    ``rank`` 0 is the strongest. ``cell`` is the (row, col) of the map's maximum (0-based) and
    ``box`` that cell's receptive field on the input, ``(top, left, bottom, right)`` with
    exclusive ends; both are ``None`` for vector layers. ``path``, ``class_name`` and
    ``label`` are known for dataset photos.
    """

    index: int
    value: float
    cell: tuple[int, int] | None
    box: tuple[int, int, int, int] | None
    rank: int = 0
    path: Path | None = None
    class_name: str | None = None
    label: int | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else ""


def rank_by_activation(
    maps: np.ndarray,
    field: ReceptiveField | None = None,
    input_hw: tuple[int, int] | None = None,
    by: str = "max",
) -> list[RankedHit]:
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
    ranked: list[RankedHit] = []
    for index in order:
        cell = (int(peaks[index] // cols), int(peaks[index] % cols))
        box = receptive_box(field, cell[0], cell[1], input_hw) if field is not None and input_hw else None
        ranked.append(RankedHit(index=int(index), value=float(scores[index]), cell=cell, box=box, rank=len(ranked)))
    return ranked
