"""Colour scales and value ranges: which colour a value gets, and the numbers a legend says."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    pass


Scaling = Literal["per map", "per layer", "fixed"]
SCALINGS: tuple[Scaling, ...] = ("per map", "per layer", "fixed")


@dataclass(frozen=True)
class ColourScale:
    """A colour scale: ``stops`` from low to high; ``levels`` bins, or ``None`` for continuous."""

    key: str
    label: str
    stops: tuple[str, ...]
    levels: int | None

    @property
    def discrete(self) -> bool:
        return self.levels is not None


LECTURE_BLUES = ColourScale(
    "blues4",
    "Blues, 4 levels (the lecture's)",
    # ColorBrewer's 4-class Blues, light (low) to dark (high).
    ("#eff3ff", "#bdd7e7", "#6baed6", "#2171b5"),
    levels=4,
)
VIRIDIS = ColourScale(
    "viridis",
    "Viridis, continuous",
    # matplotlib's viridis sampled at 11 points; linear between them is within a few
    # levels of the full table, and the legend uses exactly these colours.
    (
        "#440154",
        "#482475",
        "#414487",
        "#355f8d",
        "#2a788e",
        "#21918c",
        "#22a884",
        "#44bf70",
        "#7ad151",
        "#bddf26",
        "#fde725",
    ),
    levels=None,
)
COLOUR_SCALES: dict[str, ColourScale] = {scale.key: scale for scale in (LECTURE_BLUES, VIRIDIS)}

CONTINUOUS_STEPS = 256
"""Colours in a continuous scale's palette (one PNG palette entry each)."""


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def _rgb_to_hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def palette(scale: ColourScale) -> np.ndarray:
    """The scale's colours as a ``(n, 3)`` uint8 table: 4 rows for the Blues, 256 for viridis.

    >>> palette(LECTURE_BLUES).shape, palette(VIRIDIS).shape
    ((4, 3), (256, 3))
    """
    stops = np.array([_hex_to_rgb(c) for c in scale.stops], dtype=np.float64)
    if scale.discrete:
        return stops.astype(np.uint8)
    positions = np.linspace(0.0, 1.0, len(stops))
    samples = np.linspace(0.0, 1.0, CONTINUOUS_STEPS)
    table = np.stack([np.interp(samples, positions, stops[:, k]) for k in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


# -- value ranges -----------------------------------------------------------------------


@dataclass(frozen=True)
class ValueRange:
    """The activation values mapped to the lowest and highest colour.

    ``clipped`` is True when some shown values lie outside ``[low, high]`` (only with a
    fixed range); they are drawn in the end colours.
    """

    low: float
    high: float
    mode: str
    clipped: bool = False

    @property
    def constant(self) -> bool:
        """True when the range is a single value (a dead map under "per map")."""
        return not self.high > self.low


def is_constant(values: np.ndarray) -> bool:
    """True when every value is the same: a dead map (or a dead unit) for this image.

    >>> is_constant(np.zeros((3, 3))), is_constant(np.eye(3))
    (True, False)
    """
    if values.size == 0:
        return True
    return bool(np.nanmax(values) == np.nanmin(values))


def value_range(
    values: np.ndarray,
    mode: str,
    *,
    layer_values: np.ndarray | None = None,
    fixed: tuple[float, float] | None = None,
) -> ValueRange:
    """The range to colour ``values`` with.

    ``"per map"``: ``values``' own min and max. ``"per layer"``: min and max of
    ``layer_values`` (all channels of the layer for this image; ``values`` if omitted).
    ``"fixed"``: ``fixed = (low, high)``; values outside it are clipped.

    >>> value_range(np.array([1.0, 3.0]), "fixed", fixed=(0.0, 2.0))
    ValueRange(low=0.0, high=2.0, mode='fixed', clipped=True)
    """
    if mode == "per map":
        source = values
    elif mode == "per layer":
        source = values if layer_values is None else layer_values
    elif mode == "fixed":
        if fixed is None:
            raise ValueError("a fixed range needs fixed=(low, high)")
        low, high = float(fixed[0]), float(fixed[1])
        if not high > low:
            raise ValueError(f"a fixed range needs low < high, got {low} and {high}")
        clipped = bool(values.size) and bool(np.nanmin(values) < low or np.nanmax(values) > high)
        return ValueRange(low, high, "fixed", clipped)
    else:
        raise ValueError(f"unknown scaling {mode!r}; use one of {', '.join(SCALINGS)}")
    if source.size == 0:
        return ValueRange(0.0, 0.0, mode)
    return ValueRange(float(np.nanmin(source)), float(np.nanmax(source)), mode)


def shared_range(*maps: np.ndarray) -> ValueRange:
    """One range for several maps (their overall min and max), so their colours compare.

    >>> shared_range(np.array([0.0, 1.0]), np.array([3.0]))
    ValueRange(low=0.0, high=3.0, mode='shared', clipped=False)
    """
    low = min(float(np.nanmin(m)) for m in maps)
    high = max(float(np.nanmax(m)) for m in maps)
    return ValueRange(low, high, "shared")


def describe_range(vr: ValueRange, scale: ColourScale) -> str:
    """One sentence that says what the colours mean, true for what is drawn.

    >>> describe_range(ValueRange(0.0, 0.0, "per map"), LECTURE_BLUES)
    'Constant map: every cell is 0 (a dead channel for this image), drawn in one colour.'
    """
    if vr.constant:
        return f"Constant map: every cell is {_fmt(vr.low)} (a dead channel for this image), drawn in one colour."
    where = {
        "per map": "this map's own minimum and maximum",
        "per layer": "the minimum and maximum over all channels of this layer for this image",
        "fixed": "the range you set",
        "shared": "the minimum and maximum over all the maps shown, one scale for all",
    }.get(vr.mode, vr.mode)
    text = f"Colours span {_fmt(vr.low)} to {_fmt(vr.high)}: {where}."
    if scale.levels is not None:
        text += f" {scale.levels} equal bins of {_fmt((vr.high - vr.low) / scale.levels)} each."
    if vr.clipped:
        text += " Some values lie outside this range and are drawn in the end colours."
    return text


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.3g}"
    return f"{value:.3f}".rstrip("0").rstrip(".")


def level_indices(values: np.ndarray, vr: ValueRange, scale: ColourScale) -> np.ndarray:
    """Each value's palette index (uint8), clipping to the range.

    Discrete scales put ``[low, high]`` into ``levels`` equal bins (the top edge
    belongs to the last bin). A constant range gives index 0 everywhere.
    """
    n = palette_size(scale)
    if vr.constant:
        return np.zeros(values.shape, dtype=np.uint8)
    unit = (np.asarray(values, dtype=np.float64) - vr.low) / (vr.high - vr.low)
    unit = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 1.0)
    index = np.minimum(np.floor(unit * n), n - 1) if scale.discrete else np.round(unit * (n - 1))
    return index.astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _palette_bytes(scale: ColourScale) -> bytes:
    # Once per scale: a grid encodes up to 128 tiles with the same palette.
    return palette(scale).tobytes()


def palette_size(scale: ColourScale) -> int:
    return scale.levels if scale.levels is not None else CONTINUOUS_STEPS


def colourise(values: np.ndarray, vr: ValueRange, scale: ColourScale) -> np.ndarray:
    """A 2-D map as an RGB uint8 picture ``(rows, cols, 3)``, row 0 at the top."""
    return palette(scale)[level_indices(values, vr, scale)]
