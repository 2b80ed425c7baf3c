"""Vega-Lite specs (Altair): the heatmap with hover and click, its legend, the layer grid, and dense layers' bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

# pandas is imported inside the functions that build tables: the Gallery, the app's first
# page, draws no chart, and importing pandas was a large part of the app's cold start
# (bench/results/cold_start_lazy_tabs.md).
if TYPE_CHECKING:
    pass

from featapp.render.colours import ColourScale, ValueRange, _fmt, _rgb_to_hex, palette, value_range
from featapp.render.pictures import VegaLiteSpec, data_url, grid_columns, map_png
from featapp.render.tiles import Tile

MAX_CHART_CELLS = 1024
"""Most hover/click cells a heatmap chart carries. Larger maps are shown in full as a
picture, with hover and click answered per block of cells (see :func:`heatmap_chart`),
because every Vega mark is re-encoded on every update in the browser, so a channel change
takes longer with more cells (``bench/profile_channel_change.py``, BENCHMARKS.md). For the
lecture's model, blocks are 5 x 5 cells in layer 1, 3 x 3 in layers 2-3, 2 x 2 in
layers 4-5 and single cells from layer 6 on."""


# -- heatmap of one map ---------------------------------------------------------------------


def _frame(columns: dict, arrow: bool):
    """A dataset from its columns: a pandas frame, or with ``arrow`` a pyarrow table.
    Streamlit sends a table as it is and converts a frame to Arrow first, which was most of a
    layer-1 heatmap's cost (bench/results/channel_change_profile.md)."""
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
    building the same chart from Altair objects was far slower on every update. The
    datasets are pandas frames, or with ``arrow`` pyarrow tables (cheaper for Streamlit).

    >>> from featapp.render import LECTURE_BLUES
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
        steps = scale.levels if scale.levels is not None else 64
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
