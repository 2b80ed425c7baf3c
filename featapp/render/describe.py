"""A map in words: what a student who cannot see the colours hears about it.

The Feature map, the Layer grid and every picture of a map say the same things in text:
where the map is strongest, what share of its cells falls in each colour level, and whether
it is dead. The numbers come from the same :class:`~featapp.render.ValueRange` and
:class:`~featapp.render.ColourScale` as the picture, so the words never disagree with the
colours (the browser-side explorer computes the same summary in JavaScript for its own
redraws; ``components/map_explorer/index.html``, ``mapSummary``).

>>> import numpy as np
>>> from featapp.render import LECTURE_BLUES, value_range
>>> values = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
>>> summary = summarise_map(values, value_range(values, "per map"), LECTURE_BLUES)
>>> summary.peak_row, summary.peak_col, summary.peak_value, summary.level_shares
(1, 1, 4.0, (0.25, 0.25, 0.25, 0.25))
>>> describe_map(summary)
'Strongest at row 2, column 2 (value 4). Cells per colour level, lowest to highest: 25%, 25%, 25%, 25%.'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featapp.render.colours import ColourScale, ValueRange, _fmt, level_indices

__all__ = ["MapSummary", "summarise_map", "describe_map", "map_alt", "box_words", "SUMMARY_LEVELS"]

SUMMARY_LEVELS = 4
"""Bands a continuous scale's cells are counted in (a discrete scale uses its own levels):
four shares are few enough to hear, and match the lecture's 4-level Blues."""


@dataclass(frozen=True)
class MapSummary:
    """One map in numbers: its size, its strongest cell (0-based; the first in row order on
    a tie), its range as drawn, the share of cells in each colour level from the lowest, and
    whether it is dead (constant)."""

    rows: int
    cols: int
    peak_row: int
    peak_col: int
    peak_value: float
    low: float
    high: float
    level_shares: tuple[float, ...]
    dead: bool


def summarise_map(values: np.ndarray, vr: ValueRange, scale: ColourScale) -> MapSummary:
    """The :class:`MapSummary` of a 2-D map drawn with ``vr`` and ``scale``.

    A continuous scale's cells are counted in :data:`SUMMARY_LEVELS` equal bands of the
    range, as a discrete scale's are in its levels.

    >>> from featapp.render import VIRIDIS, value_range
    >>> flat = np.zeros((3, 4))
    >>> s = summarise_map(flat, value_range(flat, "per map"), VIRIDIS)
    >>> s.dead, s.level_shares, (s.peak_row, s.peak_col)
    (True, (1.0, 0.0, 0.0, 0.0), (0, 0))
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"expected a non-empty 2-D map, got shape {values.shape}")
    rows, cols = values.shape
    clean = np.nan_to_num(values, nan=-np.inf)
    peak = int(np.argmax(clean))
    peak_row, peak_col = divmod(peak, cols)
    if scale.discrete:
        levels = int(scale.levels or 1)
        index = level_indices(values, vr, scale)
    else:
        levels = SUMMARY_LEVELS
        if vr.constant:
            index = np.zeros(values.shape, dtype=np.int64)
        else:
            unit = np.clip(np.nan_to_num((values - vr.low) / (vr.high - vr.low), nan=0.0), 0.0, 1.0)
            index = np.minimum(np.floor(unit * levels), levels - 1).astype(np.int64)
    counts = np.bincount(index.reshape(-1).astype(np.int64), minlength=levels)[:levels]
    shares = tuple(float(count) / values.size for count in counts)
    return MapSummary(
        rows=rows,
        cols=cols,
        peak_row=peak_row,
        peak_col=peak_col,
        peak_value=float(values[peak_row, peak_col]),
        low=float(vr.low),
        high=float(vr.high),
        level_shares=shares,
        dead=bool(np.nanmax(values) == np.nanmin(values)),
    )


def _percent(share: float) -> str:
    # A level with a few cells is not "0%": the strongest cell alone is in the top level.
    if 0 < share < 0.005:
        return "under 1%"
    # Half up, as the browser does (Python's round() goes to even: 12.5 -> 12).
    return f"{math.floor(share * 100 + 0.5)}%"


def describe_map(summary: MapSummary) -> str:
    """The summary in one or two sentences (rows and columns counted from 1, as on the axes).

    >>> describe_map(MapSummary(5, 5, 0, 0, 0.0, 0.0, 0.0, (1.0, 0.0, 0.0, 0.0), True))
    'Dead for this image: every one of its 5 x 5 cells is 0.'
    """
    if summary.dead:
        return f"Dead for this image: every one of its {summary.rows} x {summary.cols} cells is {_fmt(summary.peak_value)}."
    shares = ", ".join(_percent(share) for share in summary.level_shares)
    return (
        f"Strongest at row {summary.peak_row + 1}, column {summary.peak_col + 1} (value {_fmt(summary.peak_value)}). "
        f"Cells per colour level, lowest to highest: {shares}."
    )


def map_alt(title: str, summary: MapSummary) -> str:
    """Alt text for a picture of a map: what it is, its size and range, and :func:`describe_map`.

    >>> s = MapSummary(2, 3, 1, 2, 2.5, 0.0, 2.5, (0.5, 0.0, 0.0, 0.5), False)
    >>> map_alt("Layer 1 (conv2d), channel 4", s)
    'Layer 1 (conv2d), channel 4: a 2 x 3 map, values 0 to 2.5. Strongest at row 2, column 3 (value 2.5). \
Cells per colour level, lowest to highest: 50%, 0%, 0%, 50%.'
    """
    size = f"a {summary.rows} x {summary.cols} map"
    if summary.dead:
        return f"{title}: {size}. {describe_map(summary)}"
    return f"{title}: {size}, values {_fmt(summary.low)} to {_fmt(summary.high)}. {describe_map(summary)}"


def box_words(box: tuple[int, int, int, int]) -> str:
    """A box on the photo, ``(top, left, bottom, right)`` in pixels with the ends exclusive
    (:func:`featapp.engine.geometry.receptive_box`), as rows and columns counted from 1.

    >>> box_words((0, 10, 21, 31))
    'input rows 1-21 and columns 11-31'
    """
    top, left, bottom, right = (int(v) for v in box)
    return f"input rows {top + 1}-{bottom} and columns {left + 1}-{right}"
