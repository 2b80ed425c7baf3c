"""Turn activations into pictures: colour scales, value ranges, PNGs and Altair charts.

Everything a page shows about a map goes through here, so the colours in a picture and
the numbers in its legend always come from the same :class:`ValueRange` and the same
:class:`ColourScale`:

>>> import numpy as np
>>> values = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
>>> value_range(values, "per map")
ValueRange(low=0.0, high=4.0, mode='per map', clipped=False)
>>> level_indices(values, value_range(values, "per map"), LECTURE_BLUES).tolist()
[[0, 1], [2, 3]]

Two colour scales: the lecture's 4-level Blues (each cell falls into one of four equal
bins between the range's low and high) and a continuous viridis. Three ways to choose
the range: ``"per map"`` (this map's own min and max), ``"per layer"`` (min and max
over every channel of the layer for this image, so maps can be compared) and
``"fixed"`` (a range the student types; values outside it are clipped, and the legend
says so). A constant map (a "dead" channel) is never stretched into noise: it is drawn
in one colour and :func:`describe_range` says it is constant.

Pictures are palette PNGs (one byte per cell, so a 148 x 148 map is a few kB) shown
with ``smooth=False``, so one cell is one crisp square at any zoom. Charts take their
data as pandas frames, which Streamlit sends as Arrow tables rather than JSON.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from featapp.engine.geometry import ReceptiveField
from featapp.engine.metadata import LayerInfo

# pandas is imported inside the functions that build tables: the Gallery, the app's first
# page, draws no chart, and importing pandas was 0.3-1.2 s of the app's cold start.
if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ColourScale",
    "LECTURE_BLUES",
    "VIRIDIS",
    "COLOUR_SCALES",
    "Scaling",
    "SCALINGS",
    "ValueRange",
    "value_range",
    "describe_range",
    "shared_range",
    "is_constant",
    "level_indices",
    "palette",
    "colourise",
    "map_png",
    "png_bytes",
    "data_url",
    "heatmap_chart",
    "legend_chart",
    "Tile",
    "make_tiles",
    "order_channels",
    "tile_grid_chart",
    "grid_png",
    "strip_png",
    "vector_chart",
    "vector_strip_chart",
    "overlay_map",
    "outline_box",
    "overlay_pixels",
    "enlarge",
    "fit_width",
    "whole_factor",
    "map_picture",
    "map_png",
    "layer_table",
    "scaling_text",
    "MAX_CHART_CELLS",
]

Scaling = Literal["per map", "per layer", "fixed"]
SCALINGS: tuple[Scaling, ...] = ("per map", "per layer", "fixed")

MAX_CHART_CELLS = 1024
"""Most hover/click cells a heatmap chart carries. Larger maps are shown in full as a
picture, with hover and click answered per block of cells (see :func:`heatmap_chart`),
because every Vega mark is re-encoded on every update in the browser. Measured with
``bench/profile_channel_change.py``, three interleaved runs each: a layer-1 channel
change took 296-331 ms (median) with 2,500 cells and 211-249 ms with 1,024. For the
lecture's model, blocks are 5 x 5 cells in layer 1, 3 x 3 in layers 2-3, 2 x 2 in
layers 4-5 and single cells from layer 6 on."""


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
    if scale.discrete:
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


def map_picture(values: np.ndarray, vr: ValueRange, scale: ColourScale, *, min_px: int = 200) -> np.ndarray:
    """The coloured map, enlarged by a whole factor so its longer side is at least ``min_px``.

    Whole-factor nearest enlargement keeps every cell a crisp square in ``st.image``.
    """
    return enlarge(colourise(values, vr, scale), whole_factor(max(values.shape), min_px))


# -- PNG ----------------------------------------------------------------------------------


def png_bytes(picture: np.ndarray) -> bytes:
    """A uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array as PNG bytes."""
    array = np.asarray(picture)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def map_png(values: np.ndarray, vr: ValueRange, scale: ColourScale, *, min_px: int = 0) -> bytes:
    """A 2-D map as a palette PNG: one byte per pixel, the palette is the colour scale.

    With ``min_px``, enlarged like :func:`map_picture` (whole factor, crisp cells). The
    same picture as ``png_bytes(map_picture(...))`` at about a tenth of the cost (one
    byte per pixel instead of three, and Streamlit passes PNG bytes through unchanged
    instead of encoding an array again).

    >>> vr = value_range(np.eye(2), "per map")
    >>> Image.open(io.BytesIO(map_png(np.eye(2), vr, LECTURE_BLUES, min_px=5))).size
    (6, 6)
    """
    factor = whole_factor(max(values.shape), min_px)
    image = Image.fromarray(enlarge(level_indices(values, vr, scale), factor), mode="P")
    image.putpalette(_palette_bytes(scale), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    """PNG bytes as a ``data:`` URL (charts embed pictures this way; nothing is fetched)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fit_width(picture: np.ndarray, width_px: int) -> np.ndarray:
    """The picture at exactly ``width_px`` wide (height in proportion): enlarged by a
    whole factor first (crisp pixels), then scaled down smoothly to the width. This is
    what ``st.image(..., width=width_px)`` shows for the enlarged picture, done once here
    so the app can send ready-made PNG bytes.

    >>> fit_width(np.zeros((150, 100, 3), np.uint8), 360).shape
    (540, 360, 3)
    """
    array = np.asarray(picture, dtype=np.uint8)
    rows, cols = array.shape[:2]
    enlarged = enlarge(array, whole_factor(cols, width_px))
    if enlarged.shape[1] == width_px:
        return enlarged
    height = max(1, round(rows * width_px / cols))
    squeezed = enlarged[:, :, 0] if enlarged.ndim == 3 and enlarged.shape[2] == 1 else enlarged
    resized = np.asarray(Image.fromarray(squeezed).resize((width_px, height), resample=Image.BILINEAR))
    return resized[:, :, np.newaxis] if array.ndim == 3 and resized.ndim == 2 else resized


def whole_factor(size: int, min_px: int) -> int:
    """The smallest whole enlargement that makes ``size`` pixels at least ``min_px`` (1 at least).

    >>> whole_factor(148, 200), whole_factor(17, 200), whole_factor(300, 200)
    (2, 12, 1)
    """
    return max(1, -(-min_px // size))


def enlarge(picture: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (crisp cells, no blur)."""
    if factor <= 1:
        return picture
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


# -- heatmap of one map ---------------------------------------------------------------------


def _frame(columns: dict, arrow: bool):
    """A dataset from its columns: a pandas frame, or with ``arrow`` a pyarrow table.
    Streamlit sends a table as it is and converts a frame to Arrow first; for a layer-1
    heatmap, making five small frames and converting them took 5 of its 7 ms here."""
    if arrow:
        import pyarrow as pa

        return pa.table(columns)
    import pandas as pd

    return pd.DataFrame(columns)


def _cell_frame(values: np.ndarray, block: int, arrow: bool = False):
    """One row per block of ``block`` x ``block`` cells: its bounds and its strongest cell."""
    rows, cols = values.shape
    block_rows, block_cols = math.ceil(rows / block), math.ceil(cols / block)
    # Pad with -inf to whole blocks, so the strongest cell of an edge block is a real one.
    padded = np.full((block_rows * block, block_cols * block), -np.inf, dtype=np.float32)
    padded[:rows, :cols] = values
    blocks = (
        padded.reshape(block_rows, block, block_cols, block)
        .transpose(0, 2, 1, 3)
        .reshape(block_rows, block_cols, block * block)
    )
    flat = blocks.argmax(axis=2)
    r0 = np.arange(block_rows)[:, None] * block
    c0 = np.arange(block_cols)[None, :] * block
    r = (r0 + flat // block).reshape(-1)
    c = (c0 + flat % block).reshape(-1)
    r0 = np.broadcast_to(r0, flat.shape).reshape(-1)
    c0 = np.broadcast_to(c0, flat.shape).reshape(-1)
    return _frame(
        {
            "r0": r0,
            "r1": np.minimum(r0 + block, rows),
            "c0": c0,
            "c1": np.minimum(c0 + block, cols),
            "r": r,
            "c": c,
            "row": r + 1,
            "column": c + 1,
            "value": np.round(values[r, c].astype(np.float64), 4),
        },
        arrow,
    )


VegaLiteSpec = dict
"""A Vega-Lite spec as a plain dict, for ``st.vega_lite_chart``. Tables are pandas frames
under ``"datasets"`` (Streamlit sends them as Arrow)."""


def _q(field: str, **extra) -> dict:
    return {"field": field, "type": "quantitative", **extra}


def heatmap_chart(
    values: np.ndarray,
    vr: ValueRange,
    scale: ColourScale,
    *,
    width_px: int = 360,
    selection: str | None = "cell",
    selected_cell: tuple[int, int] | None = None,
    max_cells: int = MAX_CHART_CELLS,
    legend: bool = True,
    legend_title: str = "activation",
    arrow: bool = False,
    description: str | None = None,
) -> VegaLiteSpec:
    """One 2-D map as a Vega-Lite spec, oriented like the photo (row 1 at the top).

    ``description`` is the chart's name for screen readers. It depends on the shape alone,
    as the rest of the spec does; the map's numbers in words
    (:func:`featapp.render.describe.describe_map`) belong in the text beside the chart.

    The map itself is one crisp picture (an ``image`` mark). On top lies a transparent
    layer of rectangles for hover and click: one per cell when the map has at most
    ``max_cells`` cells, else one per block of cells, and then the tooltip names the
    block's strongest cell. ``selection`` names a point selection on the fields ``r``
    and ``c`` (0-based row and column of the clicked cell, or of the strongest cell of
    the clicked block). ``selected_cell`` is outlined in red. With ``legend``, a colour
    bar beside it shows exactly the palette and range of the picture.

    The spec depends only on the map's shape: values, colours and the outline travel in
    the named datasets ``picture``, ``cells``, ``outline`` and ``legend``, so choosing
    another channel of the same layer changes data, not the chart (the browser updates it
    in place). It is written as a plain dict, the JSON Altair would produce, because
    building the same chart from Altair objects took about 90 ms per update here. The
    datasets are pandas frames, or with ``arrow`` pyarrow tables (cheaper for Streamlit).

    >>> spec = heatmap_chart(np.eye(3), value_range(np.eye(3), "per map"), LECTURE_BLUES)
    >>> [layer["mark"]["type"] for layer in spec["hconcat"][0]["layer"]]
    ['image', 'rect', 'rect', 'rect']
    """
    values = np.asarray(values, dtype=np.float32)
    rows, cols = values.shape
    height_px = max(1, round(width_px * rows / cols))
    block = max(1, math.ceil(math.sqrt(rows * cols / max_cells)))
    x_scale = {"domain": [0, cols], "nice": False, "zero": False}
    y_scale = {"domain": [0, rows], "nice": False, "zero": False, "reverse": True}
    x_axis = {"title": "column", "values": _ticks(cols)}
    y_axis = {"title": "row", "values": _ticks(rows)}
    image_layer = {
        "data": {"name": "picture"},
        "mark": {
            "type": "image",
            "width": width_px,
            "height": height_px,
            "align": "left",
            "baseline": "top",
            "smooth": False,
            "aspect": False,
        },
        "encoding": {
            "x": _q("x", scale=x_scale, axis=x_axis),
            "y": _q("y", scale=y_scale, axis=y_axis),
            "url": {"field": "url", "type": "nominal"},
        },
    }
    strongest = "" if block == 1 else " (strongest in block)"
    cell_layer: dict = {
        "data": {"name": "cells"},
        "mark": {"type": "rect", "fill": "#ffffff", "fillOpacity": 0, "cursor": "pointer"},
        "encoding": {
            "x": _q("c0", scale=x_scale, axis=x_axis),
            "x2": {"field": "c1"},
            "y": _q("r0", scale=y_scale, axis=y_axis),
            "y2": {"field": "r1"},
            "tooltip": [
                _q("row", title="row" + strongest),
                _q("column", title="column" + strongest),
                _q("value", title="value", format=".4g"),
            ],
        },
    }
    if selection:
        cell_layer["params"] = [{"name": selection, "select": {"type": "point", "fields": ["r", "c"], "on": "click"}}]
    outline_encoding = {
        "x": _q("c0", scale=x_scale),
        "x2": {"field": "c1"},
        "y": _q("r0", scale=y_scale),
        "y2": {"field": "r1"},
    }
    # Two tones: red alone nearly vanishes on the darkest blue; the white halo does not.
    halo_layer = {
        "data": {"name": "outline"},
        "mark": {"type": "rect", "filled": False, "stroke": "#ffffff", "strokeWidth": 5},
        "encoding": outline_encoding,
    }
    outline_layer = {
        "data": {"name": "outline"},
        "mark": {"type": "rect", "filled": False, "stroke": "#d62728", "strokeWidth": 2},
        "encoding": outline_encoding,
    }
    box = np.zeros(0, dtype=np.int64)
    box_r = box_c = box
    if selected_cell is not None and 0 <= selected_cell[0] < rows and 0 <= selected_cell[1] < cols:
        box_r, box_c = np.array([selected_cell[0]], np.int64), np.array([selected_cell[1]], np.int64)
    outline = _frame({"r0": box_r, "r1": box_r + 1, "c0": box_c, "c1": box_c + 1}, arrow)
    heat = {"layer": [image_layer, cell_layer, halo_layer, outline_layer], "width": width_px, "height": height_px}
    datasets = {
        "picture": _frame({"url": [data_url(map_png(values, vr, scale))], "x": [0], "y": [0]}, arrow),
        "cells": _cell_frame(values, block, arrow),
        "outline": outline,
    }
    if description is None:
        description = f"A map of {rows} x {cols} cells, coloured by value" + (
            ", with a colour legend." if legend else "."
        )
    if not legend:
        return {**heat, "datasets": datasets, "description": description, **HEATMAP_OPTIONS}
    bar = legend_chart(vr, scale, height_px=height_px, title=legend_title, arrow=arrow)
    datasets.update(bar.pop("datasets"))
    bar.pop("config", None)
    bar.pop("description")  # its numbers change with the map: the chart's name does not
    return {"hconcat": [heat, bar], "spacing": 12, "datasets": datasets, "description": description, **HEATMAP_OPTIONS}


HEATMAP_OPTIONS = {
    # A dark frame around the map and the legend: the lowest blue is close to the page's white.
    "config": {"view": {"stroke": "#31333f", "strokeWidth": 1}, "aria": False},
    "usermeta": {"embedOptions": {"renderer": "canvas"}},
}
"""What makes a heatmap update fast in the browser. ``aria: False``: otherwise Vega writes
a spoken description, with formatted numbers, for each of the up to
:data:`MAX_CHART_CELLS` invisible hover cells on every update (Streamlit turns it off only above 5,000 marks). A canvas renderer
always: Streamlit picks one only above 2,000 rows of data, and SVG is slower for these
charts; the screen reader still gets the chart's ``description`` (the map in words) and the
caption under it."""


def _ticks(n: int) -> list[int]:
    """Axis ticks at cell edges, at a round step (0, 50, 100 for 148 rows)."""
    step = max(1, round(n / 5))
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500):
        if nice >= step:
            step = nice
            break
    return sorted(set([0] + list(range(step, n, step))))


LEGEND_TICKS = 5
"""Labels on a colour bar: both ends and three between (the four bins' edges for the Blues)."""


def legend_chart(
    vr: ValueRange,
    scale: ColourScale,
    *,
    height_px: int = 300,
    width_px: int = 18,
    title: str = "activation",
    arrow: bool = False,
) -> VegaLiteSpec:
    """A colour bar drawn with exactly the palette and range the picture uses.

    Continuous scales get a smooth bar, the lecture's Blues four blocks with the bin
    edges labelled, a constant range a single block labelled with its value. Every number
    comes from the datasets ``legend`` and ``legend_labels``, so the spec stays the same.
    They are pandas frames, or with ``arrow`` pyarrow tables.
    """
    colours = palette(scale)
    if vr.constant:
        bands = _frame({"y0": [0.0], "y1": [1.0], "colour": [_rgb_to_hex(colours[0])]}, arrow)
        labels = _frame({"y": [0.5], "label": [f"constant {_fmt(vr.low)}"]}, arrow)
    else:
        steps = scale.levels if scale.discrete else 64
        edges = np.linspace(vr.low, vr.high, steps + 1)
        if scale.discrete:
            hexes = [_rgb_to_hex(c) for c in colours]
        else:
            middles = (np.arange(steps) + 0.5) / steps
            hexes = [_rgb_to_hex(colours[int(round(m * (len(colours) - 1)))]) for m in middles]
        bands = _frame({"y0": edges[:-1], "y1": edges[1:], "colour": hexes}, arrow)
        ticks = np.linspace(vr.low, vr.high, LEGEND_TICKS)
        text = [_fmt(float(t)) for t in ticks]
        if vr.clipped:
            text[0], text[-1] = "≤ " + text[0], "≥ " + text[-1]
        labels = _frame({"y": ticks, "label": text}, arrow)
    y_scale = {"nice": False, "zero": False}
    if vr.constant:
        description = f"Colour legend: one colour, every cell is {_fmt(vr.low)}."
    else:
        kind = f"{scale.levels} colour levels" if scale.discrete else "continuous colours"
        description = f"Colour legend, {scale.label}: {kind}, from {text[0]} at the bottom to {text[-1]} at the top."
    return {
        "description": description,
        "title": {"text": title, "fontSize": 11, "fontWeight": "normal", "anchor": "start"},
        "layer": [
            {
                "data": {"name": "legend"},
                "mark": {"type": "rect"},
                "encoding": {
                    "y": _q("y0", scale=y_scale, axis=None),
                    "y2": {"field": "y1"},
                    "color": {"field": "colour", "type": "nominal", "scale": None},
                },
            },
            {
                "data": {"name": "legend_labels"},
                "mark": {"type": "text", "align": "left", "baseline": "middle", "dx": 4, "fontSize": 10},
                "encoding": {
                    "x": {"value": width_px},
                    "y": _q("y", scale=y_scale, axis=None),
                    "text": {"field": "label", "type": "nominal"},
                },
            },
        ],
        "width": width_px,
        "height": height_px,
        "datasets": {"legend": bands, "legend_labels": labels},
        "config": {"view": {"strokeWidth": 0}},
    }


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


def grid_columns(count: int) -> int:
    """How many tiles per row: 8 for up to 64 tiles, then 16 (the lecture uses 16)."""
    if count <= 8:
        return max(count, 1)
    return 8 if count <= 64 else 16


def tile_grid_chart(
    tiles: Sequence[Tile],
    *,
    columns: int | None = None,
    width_px: int = 960,
    map_aspect: float = 1.0,
    selection: str | None = "tile",
) -> VegaLiteSpec:
    """A grid of channel tiles as one chart of pictures, with a label under each tile.

    Dead (constant) channels get a grey dashed frame and "dead" in their label. Clicking
    a tile selects it: the selection ``selection`` has the field ``ch`` (0-based
    channel). ``map_aspect`` is rows / columns of one map. Everything that changes with
    the channels is in the dataset ``tiles``.
    """
    import pandas as pd

    count = len(tiles)
    columns = columns or grid_columns(count)
    gap = 6
    label_px = 14
    tile_w = max(8, (width_px - gap * (columns - 1)) // columns)
    tile_h = max(8, round(tile_w * map_aspect))
    rows = max(1, math.ceil(count / columns))
    total_w = columns * tile_w + (columns - 1) * gap
    total_h = rows * (tile_h + label_px + gap)
    records = []
    for i, tile in enumerate(tiles):
        x = (i % columns) * (tile_w + gap)
        y = (i // columns) * (tile_h + label_px + gap)
        records.append(
            {
                "ch": tile.channel,
                "channel": tile.channel + 1,
                "url": tile.url,
                "x": x,
                "y": y,
                "x2": x + tile_w,
                "y2": y + tile_h,
                "label_y": y + tile_h + 2,
                "label_x": x + tile_w / 2,
                "label": f"{tile.channel + 1}" + (" dead" if tile.dead else ""),
                "min": round(tile.minimum, 4),
                "mean": round(tile.mean, 4),
                "max": round(tile.maximum, 4),
                "status": "dead (constant)" if tile.dead else "active",
            }
        )
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "ch",
            "channel",
            "url",
            "x",
            "y",
            "x2",
            "y2",
            "label_y",
            "label_x",
            "label",
            "min",
            "mean",
            "max",
            "status",
        ],
    )
    x_scale = {"domain": [0, total_w], "nice": False, "zero": False}
    y_scale = {"domain": [0, total_h], "nice": False, "zero": False, "reverse": True}
    images: dict = {
        "data": {"name": "tiles"},
        "mark": {
            "type": "image",
            "width": tile_w,
            "height": tile_h,
            "align": "left",
            "baseline": "top",
            "smooth": False,
            "aspect": False,
            "cursor": "pointer",
        },
        "encoding": {
            "x": _q("x", scale=x_scale, axis=None),
            "y": _q("y", scale=y_scale, axis=None),
            "url": {"field": "url", "type": "nominal"},
            "tooltip": [
                _q("channel"),
                _q("min", format=".4g"),
                _q("mean", format=".4g"),
                _q("max", format=".4g"),
                {"field": "status", "type": "nominal"},
            ],
        },
    }
    if selection:
        images["params"] = [{"name": selection, "select": {"type": "point", "fields": ["ch"], "on": "click"}}]
    frames = {
        "data": {"name": "tiles"},
        "transform": [{"filter": "datum.status !== 'active'"}],
        "mark": {"type": "rect", "filled": False, "stroke": "#7f7f7f", "strokeWidth": 2, "strokeDash": [4, 2]},
        "encoding": {
            "x": _q("x", scale=x_scale, axis=None),
            "x2": {"field": "x2"},
            "y": _q("y", scale=y_scale, axis=None),
            "y2": {"field": "y2"},
        },
    }
    labels = {
        "data": {"name": "tiles"},
        "mark": {"type": "text", "baseline": "top", "fontSize": 10},
        "encoding": {
            "x": _q("label_x", scale=x_scale, axis=None),
            "y": _q("label_y", scale=y_scale, axis=None),
            "text": {"field": "label", "type": "nominal"},
            "color": {
                "condition": {"test": "datum.status === 'active'", "value": "#333333"},
                "value": "#b22222",
            },
        },
    }
    dead = [tile.channel + 1 for tile in tiles if tile.dead]
    description = f"{count} channel tiles, channels {', '.join(str(tile.channel + 1) for tile in tiles[:40])}"
    description += " ..." if count > 40 else "."
    if dead:
        description += f" {len(dead)} dead (constant): {', '.join(map(str, dead[:40]))}."
    if tiles:
        strongest = max(tiles, key=lambda tile: tile.maximum)
        description += f" Strongest: channel {strongest.channel + 1}, max {_fmt(strongest.maximum)}."
    return {
        "description": description,
        "layer": [images, frames, labels],
        "width": total_w,
        "height": total_h,
        "datasets": {"tiles": frame},
        "config": {"view": {"strokeWidth": 0}},
    }


def grid_png(
    maps: np.ndarray,
    channels: Sequence[int],
    scale: ColourScale,
    mode: str,
    *,
    fixed: tuple[float, float] | None = None,
    columns: int | None = None,
    cell_px: int | None = None,
) -> bytes:
    """The same grid as one PNG file (for downloading), each tile labelled with its channel."""
    channels = list(channels)
    count = len(channels)
    columns = columns or grid_columns(count)
    rows_of_tiles = max(1, math.ceil(count / columns))
    map_h, map_w = maps.shape[1], maps.shape[2]
    factor = cell_px or max(1, 96 // max(map_h, map_w))
    tile_h, tile_w = map_h * factor, map_w * factor
    gap, label_px = 4, 12
    canvas = Image.new(
        "RGB",
        (columns * (tile_w + gap) + gap, rows_of_tiles * (tile_h + label_px + gap) + gap),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    layer_range = value_range(maps, "per layer") if mode == "per layer" else None
    for i, channel in enumerate(channels):
        values = maps[channel]
        vr = layer_range if layer_range is not None else value_range(values, mode, fixed=fixed)
        picture = Image.fromarray(enlarge(colourise(values, vr, scale), factor))
        x = gap + (i % columns) * (tile_w + gap)
        y = gap + (i // columns) * (tile_h + label_px + gap)
        canvas.paste(picture, (x, y))
        label = f"{channel + 1}" + (" dead" if is_constant(values) else "")
        draw.text((x, y + tile_h), label, fill=(40, 40, 40), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


STRIP_LINE_PX = 16
"""Height of one line of the labels under the maps of :func:`strip_png` (the font is a little smaller)."""


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width_px: int) -> list[str]:
    """Greedy word wrap to ``width_px`` (a word longer than the width gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


STRIP_TEXT_RGB = (49, 51, 63)
STRIP_TEXT_SHADES = 8
"""Palette entries for the labels' anti-aliased text, from the text colour to white."""


def strip_png(
    maps: Sequence[tuple[str, np.ndarray]], scale: ColourScale, *, min_px: int = 140, gap_px: int = 10
) -> bytes:
    """Maps of the same shape side by side, each on its own range and labelled under it, as one PNG.

    One picture instead of one per map: the browser fetches and lays out one element
    instead of seven images in seven columns (``bench/profile_channel_change.py``). Each
    map is enlarged by the same whole factor (crisp cells) to at least ``min_px``; labels
    wrap to the map's width; a constant map is labelled "dead". The file is a palette PNG
    (the scale's colours, then shades for the text), three times faster to encode than
    RGB; a continuous scale keeps 248 of its 256 steps for that, which no eye can tell.

    >>> maps = [("epoch 0", np.eye(7)), ("final", np.zeros((7, 7)))]
    >>> Image.open(io.BytesIO(strip_png(maps, LECTURE_BLUES))).size  # 2 tiles of 7 x 20 = 140, one line
    (290, 156)
    """
    if not maps:
        raise ValueError("strip_png needs at least one map")
    rows, cols = np.shape(maps[0][1])
    factor = whole_factor(max(rows, cols), min_px)
    tile_h, tile_w = rows * factor, cols * factor
    for i, (_, values) in enumerate(maps):
        if np.shape(values) != (rows, cols):
            raise ValueError(f"strip_png: map {i + 1} is {np.shape(values)}, the first is {(rows, cols)}")
    labels = tuple(label + (" · dead" if is_constant(np.asarray(values)) else "") for label, values in maps)
    coverage = _label_coverage(labels, tile_w, gap_px)
    width = len(maps) * (tile_w + gap_px) - gap_px

    colours = palette(scale)
    kept = min(len(colours), 256 - STRIP_TEXT_SHADES)
    if kept < len(colours):
        colours = colours[np.round(np.linspace(0, len(colours) - 1, kept)).astype(int)]
    # Shade k of the text: k = 0 is the text colour, the last is white (the background).
    weights = np.linspace(0.0, 1.0, STRIP_TEXT_SHADES)[:, None]
    shades = np.round((1 - weights) * np.array(STRIP_TEXT_RGB) + weights * 255).astype(np.uint8)
    white = kept + STRIP_TEXT_SHADES - 1

    canvas = np.full((tile_h + coverage.shape[0], width), white, dtype=np.uint8)
    for i, (_, values) in enumerate(maps):
        values = np.asarray(values)
        index = level_indices(values, value_range(values, "per map"), scale).astype(np.int64)
        if kept < palette_size(scale):
            index = np.round(index * (kept - 1) / (palette_size(scale) - 1)).astype(np.int64)
        x = i * (tile_w + gap_px)
        canvas[:tile_h, x : x + tile_w] = enlarge(index.astype(np.uint8), factor)
    canvas[tile_h:] = kept + np.round((1 - coverage / 255) * (STRIP_TEXT_SHADES - 1)).astype(np.uint8)

    image = Image.fromarray(canvas, mode="P")
    image.putpalette(np.concatenate([colours, shades]).reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@functools.lru_cache(maxsize=64)
def _label_coverage(labels: tuple[str, ...], tile_w: int, gap_px: int) -> np.ndarray:
    """The labels under a strip's tiles, wrapped and centred, as text coverage 0-255 (read-only).

    Cached: the same labels come back on every channel of a layer, and drawing text is a
    third of a strip's cost.
    """
    font = ImageFont.load_default(size=STRIP_LINE_PX - 3)
    wrapped = [_wrap(label, font, tile_w) for label in labels]
    text = Image.new("L", (len(labels) * (tile_w + gap_px) - gap_px, max(map(len, wrapped)) * STRIP_LINE_PX), 0)
    draw = ImageDraw.Draw(text)
    for i, lines in enumerate(wrapped):
        for j, line in enumerate(lines):
            draw.text(
                (i * (tile_w + gap_px) + tile_w / 2, 1 + j * STRIP_LINE_PX), line, fill=255, font=font, anchor="ma"
            )
    coverage = np.asarray(text, dtype=np.uint8).copy()
    coverage.flags.writeable = False
    return coverage


# -- vectors (flatten, dense) -----------------------------------------------------------------


def vector_chart(values: np.ndarray, *, title: str = "", top: int | None = None, width_px: int = 720) -> VegaLiteSpec:
    """A vector of unit values as bars (unit numbers from 1). ``top`` keeps only the strongest units."""
    import pandas as pd

    values = np.asarray(values, dtype=np.float32).reshape(-1)
    units = np.arange(values.size)
    if top is not None and top < values.size:
        units = np.argsort(-values, kind="stable")[:top]
    frame = pd.DataFrame({"unit": units + 1, "value": values[units].astype(float)})
    spec: dict = {
        "data": {"name": "units"},
        "mark": {"type": "bar", "color": "#2171b5"},
        "encoding": {
            "x": {
                "field": "unit",
                "type": "ordinal",
                "sort": None if top is None else "-y",
                "axis": {"labels": bool(frame.shape[0] <= 64), "title": "unit"},
            },
            "y": _q("value", title="activation"),
            "tooltip": [_q("unit"), _q("value", format=".4g")],
        },
        "width": width_px,
        "height": 180,
        "datasets": {"units": frame},
    }
    if title:
        spec["title"] = title
    if values.size:
        best = int(np.argmax(values))
        spec["description"] = (
            f"Bar chart{': ' + title if title else ''}, {frame.shape[0]} of {values.size} units, values "
            f"{_fmt(float(values.min()))} to {_fmt(float(values.max()))}; strongest unit {best + 1} "
            f"({_fmt(float(values[best]))})."
        )
    return spec


def vector_strip_chart(
    values: np.ndarray, scale: ColourScale, *, per_row: int = 128, width_px: int = 960
) -> tuple[VegaLiteSpec, ValueRange]:
    """A long vector as a picture: units in rows of ``per_row``, unit 1 at the top left."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    per_row = max(1, min(per_row, values.size))
    rows = math.ceil(values.size / per_row)
    padded = np.full(rows * per_row, np.nan, dtype=np.float32)
    padded[: values.size] = values
    grid = padded.reshape(rows, per_row)
    vr = value_range(values, "per map")
    filled = np.where(np.isnan(grid), vr.low, grid)
    description = f"{values.size} unit values in rows of {per_row}, unit 1 at the top left, coloured by value."
    chart = heatmap_chart(filled, vr, scale, width_px=width_px, selection=None, description=description)
    return chart, vr


# -- on the photo -----------------------------------------------------------------------------


def overlay_map(
    image: np.ndarray,
    values: np.ndarray,
    field: ReceptiveField,
    vr: ValueRange,
    scale: ColourScale,
    *,
    alpha: float = 0.6,
) -> np.ndarray:
    """The map laid over the photo, each cell painted over the input pixels nearest its centre.

    Cell ``(r, c)`` is centred at input pixel ``offset + (r, c) * jump`` (its receptive
    field's centre), so a deep 7 x 7 map covers the middle of the photo, not the edges
    its receptive fields never reach; uncovered pixels keep the photo. Returns RGB uint8.

    >>> image = np.zeros((4, 4, 3), np.uint8)
    >>> rf = ReceptiveField(size=(3, 3), jump=(1, 1), offset=(1.0, 1.0))
    >>> out = overlay_map(image, np.ones((2, 2)), rf, ValueRange(0, 1, "fixed"), LECTURE_BLUES, alpha=1)
    >>> (out[:, :, 2] > 0).astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    photo = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    height, width = photo.shape[:2]
    rows, cols = values.shape
    colours = colourise(values, vr, scale).astype(np.float32)

    def nearest(extent: int, count: int, offset: float, jump: int) -> np.ndarray:
        pixels = np.arange(extent, dtype=np.float64)
        index = np.floor((pixels - offset) / jump + 0.5).astype(np.int64)
        centre = offset + index * jump
        inside = (index >= 0) & (index < count) & (np.abs(pixels - centre) <= jump / 2)
        return np.where(inside, index, -1)

    row_index = nearest(height, rows, field.offset[0], field.jump[0])
    col_index = nearest(width, cols, field.offset[1], field.jump[1])
    covered = (row_index[:, None] >= 0) & (col_index[None, :] >= 0)
    painted = colours[np.clip(row_index, 0, None)[:, None], np.clip(col_index, 0, None)[None, :]]
    blended = photo.astype(np.float32)
    blended[covered] = (1 - alpha) * blended[covered] + alpha * painted[covered]
    return np.round(blended).astype(np.uint8)


def overlay_pixels(
    image: np.ndarray, values: np.ndarray, vr: ValueRange, scale: ColourScale, *, alpha: float = 0.5
) -> np.ndarray:
    """A per-pixel map ``(H, W)`` (the photo's own size) blended over the photo; RGB uint8."""
    photo = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    painted = colourise(values, vr, scale).astype(np.float32)
    return np.round((1 - alpha) * photo.astype(np.float32) + alpha * painted).astype(np.uint8)


def outline_box(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    *,
    colour: tuple[int, int, int] = (214, 39, 40),
    thickness: int = 2,
    pointer_below: int = 12,
) -> np.ndarray:
    """A copy of the photo (as RGB) with ``box = (top, left, bottom, right)`` (exclusive ends) outlined.

    A box smaller than ``pointer_below`` pixels (layer 1's fields are 3 x 3) is hard to
    spot, so four short ticks point at it from outside; the box itself stays exact.

    >>> out = outline_box(np.zeros((5, 5, 3), np.uint8), (1, 1, 4, 4), thickness=1, pointer_below=0)
    >>> (out[:, :, 0] > 0).astype(int).tolist()[2]
    [0, 1, 0, 1, 0]
    """
    picture = image.copy() if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    top, left, bottom, right = box
    height, width = picture.shape[:2]
    top, left = max(0, top), max(0, left)
    bottom, right = min(height, bottom), min(width, right)
    if bottom <= top or right <= left:
        return picture
    t = max(1, min(thickness, (bottom - top + 1) // 2, (right - left + 1) // 2))
    rgb = np.array(colour, dtype=np.uint8)
    picture[top : top + t, left:right] = rgb
    picture[bottom - t : bottom, left:right] = rgb
    picture[top:bottom, left : left + t] = rgb
    picture[top:bottom, right - t : right] = rgb
    if max(bottom - top, right - left) < pointer_below:
        gap, length = 3, 10
        middle_row, middle_col = (top + bottom) // 2, (left + right) // 2
        picture[max(0, top - gap - length) : max(0, top - gap), middle_col : middle_col + 1] = rgb
        picture[min(height, bottom + gap) : min(height, bottom + gap + length), middle_col : middle_col + 1] = rgb
        picture[middle_row : middle_row + 1, max(0, left - gap - length) : max(0, left - gap)] = rgb
        picture[middle_row : middle_row + 1, min(width, right + gap) : min(width, right + gap + length)] = rgb
    return picture


# -- the layer table ---------------------------------------------------------------------------


def scaling_text(scale: float, offset: float = 0.0) -> str:
    """How the model scales pixels, in words.

    >>> scaling_text(1 / 255)
    'x / 255 (0 to 1)'
    >>> scaling_text(1 / 127.5, -1.0)
    'x / 127.5 - 1 (-1 to 1)'
    """
    divisor = 1 / scale if scale else float("inf")
    text = f"x / {divisor:.6g}" if math.isfinite(divisor) else f"x * {scale:g}"
    if offset:
        text += f" {'+' if offset > 0 else '-'} {abs(offset):g}"
    return f"{text} ({_fmt(offset)} to {_fmt(255 * scale + offset)})"


def layer_table(layers: Sequence[LayerInfo]) -> pd.DataFrame:
    """The model's layers as the Model page lists them, numbered from 1 as in the lecture."""
    import pandas as pd

    rows = []
    for number, layer in enumerate(layers, start=1):
        field = layer.receptive_field
        rows.append(
            {
                "#": number,
                "layer": layer.name,
                "kind": layer.kind,
                "output shape": layer.shape_text,
                "parameters": layer.params,
                "receptive field": f"{field.size[0]} x {field.size[1]}" if field else "(not a map)",
                "jump": f"{field.jump[0]} x {field.jump[1]}" if field else "",
            }
        )
    return pd.DataFrame.from_records(rows)


MOSAIC_MAX_PX = 1400
"""The layer grid's widest picture: the page shows it about 1,000 px wide, and 128 pictures at
full size made a 2,460 px mosaic of several MB for every student's browser."""


def picture_mosaic(images: np.ndarray, gap: int = 4, max_px: int = MOSAIC_MAX_PX) -> np.ndarray:
    """Pictures ``(N, H, W, C)`` in rows on white, each shrunk by the same whole factor (block
    means) until a row is at most ``max_px`` wide."""
    count, height, width, depth = images.shape
    columns = grid_columns(count)
    # Shrink every picture by the same whole factor (block means) until the row fits.
    factor = 1
    while factor < min(height, width) and columns * (width // factor + gap) - gap > max_px:
        factor += 1
    if factor > 1:
        h, w = height // factor, width // factor
        blocks = images[:, : h * factor, : w * factor].reshape(count, h, factor, w, factor, depth)
        images = np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
        height, width = h, w
    rows = -(-count // columns)
    canvas = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for i, picture in enumerate(images):
        r, c = divmod(i, columns)
        tile = picture if depth == 3 else np.repeat(picture, 3, axis=2)
        canvas[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = tile
    return canvas
