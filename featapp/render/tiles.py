"""A layer's channels as tiles: their order and the grid's shape."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

from featapp.render.colours import ColourScale, ValueRange, value_range
from featapp.render.pictures import data_url, map_png

# -- grids of tiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One channel's map, ready to place in a grid."""

    channel: int
    """0-based channel index (shown to students as ``channel + 1``)."""
    url: str
    minimum: float
    mean: float
    maximum: float
    dead: bool


def order_channels(maps: np.ndarray, channels: Sequence[int], order: str) -> list[int]:
    """``channels`` (0-based) ordered by ``"index"``, or by ``"mean"`` or ``"max"`` activation, strongest first.

    >>> maps = np.stack([np.full((2, 2), v) for v in (1.0, 3.0, 2.0)])
    >>> order_channels(maps, [0, 1, 2], "max")
    [1, 2, 0]
    """
    channels = list(channels)
    if order == "index":
        return channels
    if order not in ("mean", "max"):
        raise ValueError(f"unknown order {order!r}; use index, mean or max")
    stat = maps[channels].mean(axis=(1, 2)) if order == "mean" else maps[channels].max(axis=(1, 2))
    # A stable sort on the negated statistic keeps ties in index order.
    ranked = np.argsort(-stat, kind="stable")
    return [channels[i] for i in ranked]


def make_tiles(
    maps: np.ndarray,
    channels: Sequence[int],
    scale: ColourScale,
    mode: str,
    *,
    fixed: tuple[float, float] | None = None,
) -> list[Tile]:
    """One :class:`Tile` per channel of ``maps`` ``(C, H, W)``.

    ``mode`` ``"per map"`` scales each tile to its own min and max (as the lecture's
    grids do); ``"per layer"`` uses one range for all channels of the layer;
    ``"fixed"`` the range ``fixed``.
    """
    layer_range = value_range(maps, "per layer") if mode == "per layer" else None
    channels = [int(channel) for channel in channels]
    # Every tile's statistics in a few whole-array passes: one by one they were a dozen
    # small reductions per tile, a third of a 128-tile grid's time here.
    flat = np.asarray(maps)[channels].reshape(len(channels), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN map: nanmin is NaN, as one by one
        nan_lows, nan_highs = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
    lows, highs, means = flat.min(axis=1), flat.max(axis=1), flat.mean(axis=1)
    tiles = []
    for i, channel in enumerate(channels):
        values = maps[channel]
        if mode == "per layer":
            vr = layer_range
        elif mode == "per map":
            vr = ValueRange(float(nan_lows[i]), float(nan_highs[i]), "per map")
        else:
            vr = value_range(values, mode, fixed=fixed)
        tiles.append(
            Tile(
                channel=channel,
                url=data_url(map_png(values, vr, scale)),  # type: ignore[arg-type]
                minimum=float(lows[i]),
                mean=float(means[i]),
                maximum=float(highs[i]),
                dead=bool(nan_highs[i] == nan_lows[i]),
            )
        )
    return tiles
