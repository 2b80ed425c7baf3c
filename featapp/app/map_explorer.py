"""Everything the browser needs to change channel, colours and scaling by itself.

The Feature map page sends one layer's maps for one image once, and the browser draws any
channel, in any colour scale and scaling, and answers hover and click, without asking the
server (the frontend is ``featapp/app/components/map_explorer/index.html``). So a class changing
channels costs the server nothing; only the settled view is reported back, for the parts
drawn on the server (the training strip, the download, the URL).

What this module decides, so that the browser only looks things up and never invents a
number:

- **Values** travel as 16-bit steps between each channel's exact minimum and maximum
  (:func:`quantise`): within 1/131070 of a channel's range of the true value, which is
  below the 4 significant digits the tooltip shows. A constant channel is exact.
- **Ranges** per channel and per layer are the float32 extremes, as
  :func:`featapp.render.value_range` computes them.
- **Palettes** are :func:`featapp.render.palette`'s tables.
- **Receptive boxes** and the **overlay's** pixel-to-cell lookup come from
  :func:`featapp.engine.geometry.receptive_box` and the same nearest-centre rule as
  :func:`featapp.render.overlay_map`, per row and per column (the box and the overlay
  factor into rows and columns), so the page's red box is the library's.

>>> import numpy as np
>>> maps = np.array([[[0.0, 1.0], [2.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]], np.float32)
>>> steps, lows, highs = quantise(maps)
>>> steps[0].tolist(), lows, highs
([[0, 16384], [32768, 65535]], [0.0, 3.0], [4.0, 3.0])
>>> dequantise(steps, lows, highs)[0].tolist()
[[0.0, 1.0000152590218967], [2.0000305180437934, 4.0]]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from featapp.engine.geometry import ReceptiveField, receptive_box
from featapp.render import COLOUR_SCALES, palette, png_bytes

__all__ = [
    "STEPS",
    "ExplorerPayload",
    "quantise",
    "dequantise",
    "box_edges",
    "nearest_cells",
    "explorer_payload",
    "ExplorerView",
    "parse_report",
    "REPORT_KEYS",
    "REPORT_BYTES",
    "bounded_report",
    "GridView",
    "GRID_ORDERS",
    "parse_grid_report",
]

STEPS = 65535
"""The largest quantised step: values travel as uint16."""


def quantise(maps: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """``(C, H, W)`` maps as uint16 steps from each channel's minimum (0) to its maximum
    (:data:`STEPS`), with those minima and maxima. NaN becomes the minimum."""
    values = np.asarray(maps, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"expected maps shaped (channels, rows, cols), got shape {values.shape}")
    flat = values.reshape(values.shape[0], -1)
    lows = np.nanmin(flat, axis=1) if flat.shape[1] else np.zeros(values.shape[0], np.float32)
    highs = np.nanmax(flat, axis=1) if flat.shape[1] else np.zeros(values.shape[0], np.float32)
    lows = np.nan_to_num(lows, nan=0.0)
    highs = np.nan_to_num(highs, nan=0.0)
    span = (highs - lows).astype(np.float64)
    scale = np.divide(STEPS, span, out=np.zeros_like(span), where=span > 0)
    unit = (np.nan_to_num(flat, nan=0.0).astype(np.float64) - lows[:, None]) * scale[:, None]
    steps = np.clip(np.round(unit), 0, STEPS).astype(np.uint16).reshape(values.shape)
    return steps, [float(v) for v in lows], [float(v) for v in highs]


def dequantise(steps: np.ndarray, lows: list[float], highs: list[float]) -> np.ndarray:
    """The values the browser shows for ``steps`` (the inverse of :func:`quantise`), float64."""
    low = np.asarray(lows, np.float64)[:, None, None]
    high = np.asarray(highs, np.float64)[:, None, None]
    return low + steps.astype(np.float64) / STEPS * (high - low)


def box_edges(field: ReceptiveField, rows: int, cols: int, input_hw: tuple[int, int]) -> tuple[list, list]:
    """Per map row ``[top, bottom)`` and per map column ``[left, right)`` of the input box
    each cell sees: :func:`featapp.engine.geometry.receptive_box` factored into its two axes."""
    row_edges = [list(receptive_box(field, r, 0, input_hw)[0::2]) for r in range(rows)]
    col_edges = [list(receptive_box(field, 0, c, input_hw)[1::2]) for c in range(cols)]
    return row_edges, col_edges


def nearest_cells(extent: int, count: int, offset: float, jump: int) -> list[int]:
    """For each input pixel along one axis, the map index whose receptive-field centre is
    nearest (within half a jump), else -1: the rule :func:`featapp.render.overlay_map` paints by.

    >>> nearest_cells(4, 2, 1.0, 1)
    [-1, 0, 1, -1]
    """
    pixels = np.arange(extent, dtype=np.float64)
    index = np.floor((pixels - offset) / jump + 0.5).astype(np.int64)
    centre = offset + index * jump
    inside = (index >= 0) & (index < count) & (np.abs(pixels - centre) <= jump / 2)
    return [int(v) for v in np.where(inside, index, -1)]


@dataclass(frozen=True)
class ExplorerPayload:
    """One (image, layer) for the browser: :meth:`args` are the component's arguments."""

    data_key: str
    title: str
    layer_number: int
    layer_name: str
    channels: int
    rows: int
    cols: int
    steps: bytes
    lows: list[float]
    highs: list[float]
    photo_png: bytes
    photo_hw: tuple[int, int]
    row_edges: list | None
    col_edges: list | None
    overlay_rows: list[int] | None
    overlay_cols: list[int] | None
    palettes: dict
    field_size: tuple[int, int] | None = None
    field_jump: tuple[int, int] | None = None
    means: list[float] | None = None
    """Each channel's mean, as :func:`featapp.render.order_channels` ranks by it."""

    @property
    def layer_low(self) -> float:
        return min(self.lows) if self.lows else 0.0

    @property
    def layer_high(self) -> float:
        return max(self.highs) if self.highs else 0.0

    def args(self) -> dict:
        """JSON-ready arguments, with the two byte strings sent as bytes (not base64)."""
        return {
            "data_key": self.data_key,
            "title": self.title,
            "layer_number": self.layer_number,
            "layer_name": self.layer_name,
            "shape": [self.channels, self.rows, self.cols],
            "steps": self.steps,
            "lows": self.lows,
            "highs": self.highs,
            "max_step": STEPS,
            "photo": self.photo_png,
            "photo_hw": list(self.photo_hw),
            "row_edges": self.row_edges,
            "col_edges": self.col_edges,
            "overlay_rows": self.overlay_rows,
            "overlay_cols": self.overlay_cols,
            "palettes": self.palettes,
            "field_size": None if self.field_size is None else list(self.field_size),
            "field_jump": None if self.field_jump is None else list(self.field_jump),
            "means": self.means,
        }


def _palettes() -> dict:
    return {
        key: {"label": scale.label, "levels": scale.levels, "rgb": palette(scale).reshape(-1).tolist()}
        for key, scale in COLOUR_SCALES.items()
    }


def explorer_payload(
    maps: np.ndarray,
    photo: np.ndarray,
    field: ReceptiveField | None,
    *,
    data_key: str,
    title: str,
    layer_number: int,
    layer_name: str,
) -> ExplorerPayload:
    """What the browser needs to show every channel of ``maps`` (``(C, H, W)``) beside
    ``photo`` (``(h, w, 3)`` uint8). Without ``field`` (a model file that does not describe
    the layer's geometry) there is no box and no overlay."""
    channels, rows, cols = np.asarray(maps).shape
    steps, lows, highs = quantise(maps)
    picture = np.asarray(photo)
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[:, :, 0]
    height, width = picture.shape[:2]
    row_edges = col_edges = overlay_rows = overlay_cols = None
    if field is not None:
        row_edges, col_edges = box_edges(field, rows, cols, (height, width))
        overlay_rows = nearest_cells(height, rows, field.offset[0], field.jump[0])
        overlay_cols = nearest_cells(width, cols, field.offset[1], field.jump[1])
    if math.prod((channels, rows, cols)) == 0:
        raise ValueError("there are no maps to show")
    return ExplorerPayload(
        data_key=data_key,
        title=title,
        layer_number=layer_number,
        layer_name=layer_name,
        channels=channels,
        rows=rows,
        cols=cols,
        # Little-endian, as the browser's Uint16Array reads it on every machine we serve.
        steps=steps.astype("<u2").tobytes(),
        lows=lows,
        highs=highs,
        photo_png=png_bytes(picture),
        photo_hw=(height, width),
        row_edges=row_edges,
        col_edges=col_edges,
        overlay_rows=overlay_rows,
        overlay_cols=overlay_cols,
        palettes=_palettes(),
        field_size=None if field is None else (int(field.size[0]), int(field.size[1])),
        field_jump=None if field is None else (int(field.jump[0]), int(field.jump[1])),
        means=[float(v) for v in np.asarray(maps, dtype=np.float32).mean(axis=(1, 2))],
    )


@dataclass(frozen=True)
class ExplorerView:
    """The view the browser reports once a student stops changing it (1-based channel)."""

    layer_name: str
    channel: int
    colours: str
    scaling: str
    fixed_low: float
    fixed_high: float
    cell: tuple[int, int] | None
    overlay: bool

    def state(self) -> dict:
        """The same view as the component's ``state`` argument."""
        return {
            "layer_name": self.layer_name,
            "channel": self.channel,
            "colours": self.colours,
            "scaling": self.scaling,
            "fixed_low": self.fixed_low,
            "fixed_high": self.fixed_high,
            "cell": None if self.cell is None else list(self.cell),
            "overlay": self.overlay,
        }


@dataclass(frozen=True)
class GridView:
    """The Layer grid's view as the browser reports it (channels 1-based, inclusive)."""

    layer_name: str
    colours: str
    scaling: str
    fixed_low: float
    fixed_high: float
    first: int
    last: int
    order: str
    open_channel: int | None
    """A tile the student clicked (1-based), to open on the Feature map; else ``None``."""


GRID_ORDERS = ("index", "mean", "max")


def parse_grid_report(value: object, *, layer_name: str, channels: int) -> GridView | None:
    """The grid's report as a view, or ``None`` when it is not one for this layer (the
    same distrust as :func:`parse_report`).

    >>> good = {"layer_name": "conv2d", "colours": "blues4", "scaling": "per map", "fixed_low": 0,
    ...         "fixed_high": 1, "first": 1, "last": 32, "order": "max", "open_channel": 5}
    >>> parse_grid_report(good, layer_name="conv2d", channels=32).open_channel
    5
    >>> parse_grid_report({**good, "last": 40}, layer_name="conv2d", channels=32) is None
    True
    """
    common = parse_report(
        {**value, "channel": 1, "cell": None, "overlay": False} if isinstance(value, dict) else value,
        layer_name=layer_name,
        channels=channels,
        rows=1,
        cols=1,
    )
    if common is None or not isinstance(value, dict):
        return None
    first, last, opened = value.get("first"), value.get("last"), value.get("open_channel")

    def whole(number: object) -> TypeGuard[int]:
        return type(number) is int and 1 <= number <= channels

    if not (whole(first) and whole(last)) or not _one_of(value.get("order"), GRID_ORDERS):
        return None
    if opened is not None and not whole(opened):
        return None
    return GridView(
        layer_name,
        common.colours,
        common.scaling,
        common.fixed_low,
        common.fixed_high,
        first,
        last,
        str(value["order"]),
        opened,
    )


REPORT_KEYS = frozenset(
    ("layer_name", "channel", "colours", "scaling", "fixed_low", "fixed_high", "cell", "overlay")
    + ("first", "last", "order", "open_channel")
)
"""Every field a map or grid report may carry; :func:`bounded_report` drops the rest."""

REPORT_BYTES = 2048
"""The most a report may weigh as JSON. A real one is a few hundred bytes; a bigger one is
junk that would otherwise sit in the session (and be copied by each rerun)."""

RANGE_LIMIT = 1e30
"""The largest magnitude a reported fixed range may have: far beyond any activation, and
small enough that the colour scale's arithmetic cannot overflow."""


def bounded_report(value: object) -> dict | None:
    """``value`` with only the fields a report may carry, or ``None`` when it is not a dict
    or is bigger than :data:`REPORT_BYTES` as JSON (nothing is kept from such a report).

    >>> bounded_report({"channel": 3, "junk": "x" * 10})
    {'channel': 3}
    >>> bounded_report({"channel": 3, "layer_name": "x" * 5000}) is None
    True
    """
    if not isinstance(value, dict):
        return None
    kept = {key: value[key] for key in REPORT_KEYS if key in value}
    try:
        size = len(json.dumps(kept, sort_keys=True, allow_nan=True))
    except (TypeError, ValueError, RecursionError):
        return None  # not something JSON carries, or nested past Python's recursion limit
    return kept if size <= REPORT_BYTES else None


def _finite(number: object) -> float | None:
    """``number`` as a float when it is a JSON number (not a bool) within :data:`RANGE_LIMIT`;
    an integer too big for a float (JSON allows any length) is refused, not an OverflowError."""
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return None
    if isinstance(number, int) and abs(number) > RANGE_LIMIT:
        return None
    value = float(number)
    return value if math.isfinite(value) and abs(value) <= RANGE_LIMIT else None


def _one_of(text: object, allowed: object) -> bool:
    """``text`` is a string among ``allowed`` (a list or dict in a report is not hashable)."""
    return isinstance(text, str) and text in allowed  # type: ignore[operator]


def parse_report(value: object, *, layer_name: str, channels: int, rows: int, cols: int) -> ExplorerView | None:
    """The browser's report as a view, or ``None`` when it is not one for this layer.

    The report comes from a browser, so nothing in it is trusted: a wrong type, an unknown
    colour scale or scaling, a channel or cell outside the layer, or a range that is not
    two finite numbers of sensible size, and the report is ignored (the page keeps its view).
    No value JSON can carry raises here.

    >>> good = {"layer_name": "conv2d", "channel": 3, "colours": "viridis", "scaling": "per map",
    ...         "fixed_low": 0, "fixed_high": 1, "cell": [4, 5], "overlay": False}
    >>> parse_report(good, layer_name="conv2d", channels=32, rows=148, cols=148).channel
    3
    >>> parse_report({**good, "channel": 33}, layer_name="conv2d", channels=32, rows=148, cols=148) is None
    True
    """
    from featapp.render import SCALINGS

    if not isinstance(value, dict) or not _one_of(value.get("layer_name"), (layer_name,)):
        return None
    channel, cell = value.get("channel"), value.get("cell")
    low, high = _finite(value.get("fixed_low")), _finite(value.get("fixed_high"))
    if type(channel) is not int or not 1 <= channel <= channels:
        return None
    if not (_one_of(value.get("colours"), COLOUR_SCALES) and _one_of(value.get("scaling"), SCALINGS)):
        return None
    if low is None or high is None:
        return None
    if cell is not None:
        if not (isinstance(cell, list) and len(cell) == 2 and all(type(v) is int for v in cell)):
            return None
        if not (0 <= cell[0] < rows and 0 <= cell[1] < cols):
            return None
        cell = (cell[0], cell[1])
    if not isinstance(value.get("overlay"), bool):
        return None
    return ExplorerView(
        layer_name,
        channel,
        str(value["colours"]),
        str(value["scaling"]),
        low,
        high,
        cell,
        value["overlay"],
    )
