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

The package's modules, each one kind of output (their public names are re-exported here):
:mod:`~featapp.render.colours` (scales and ranges), :mod:`~featapp.render.pictures` (arrays
and PNGs, the one picture mosaic), :mod:`~featapp.render.charts` (Vega-Lite specs),
:mod:`~featapp.render.tiles` (a layer's channels as tiles), :mod:`~featapp.render.tables`,
:mod:`~featapp.render.describe` (maps in words, alt text) and :mod:`~featapp.render.words`
(sentences about what the model's numbers show).
"""

from __future__ import annotations

from featapp.render.charts import (
    MAX_CHART_CELLS,
    heatmap_chart,
    legend_chart,
    tile_grid_chart,
    vector_chart,
    vector_strip_chart,
)
from featapp.render.colours import (
    COLOUR_SCALES,
    LECTURE_BLUES,
    SCALINGS,
    VIRIDIS,
    ColourScale,
    Scaling,
    ValueRange,
    colourise,
    describe_range,
    is_constant,
    level_indices,
    palette,
    palette_size,
    shared_range,
    value_range,
)
from featapp.render.pictures import (
    MOSAIC_MAX_PX,
    data_url,
    enlarge,
    fit_width,
    grid_columns,
    grid_png,
    labelled_grid,
    map_picture,
    map_png,
    outline_box,
    overlay_map,
    overlay_pixels,
    picture_mosaic,
    png_bytes,
    strip_png,
    whole_factor,
)
from featapp.render.tables import layer_table, scaling_text
from featapp.render.tiles import Tile, make_tiles, order_channels

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
    "labelled_grid",
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
    "layer_table",
    "scaling_text",
    "MAX_CHART_CELLS",
    "MOSAIC_MAX_PX",
    "picture_mosaic",
    "grid_columns",
    "palette_size",
]
