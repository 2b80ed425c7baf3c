"""Pictures as arrays and PNGs: maps, enlargements, tile grids, training strips, overlays and boxes on the photo, and picture mosaics."""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from featapp.engine.geometry import ReceptiveField

if TYPE_CHECKING:
    pass

from featapp.render.colours import (
    ColourScale,
    ValueRange,
    _palette_bytes,
    colourise,
    is_constant,
    level_indices,
    palette,
    palette_size,
    value_range,
)


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

    >>> from featapp.render import LECTURE_BLUES, value_range
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
    resized = np.asarray(Image.fromarray(squeezed).resize((width_px, height), resample=Image.Resampling.BILINEAR))
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


VegaLiteSpec = dict
"""A Vega-Lite spec as a plain dict, for ``st.vega_lite_chart``. Tables are pandas frames
under ``"datasets"`` (Streamlit sends them as Arrow)."""


def labelled_grid(
    tiles: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    columns: int,
    title: str = "",
    gap: int = 4,
    label_px: int = 12,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont | None = None,
    title_font: ImageFont.FreeTypeFont | ImageFont.ImageFont | None = None,
) -> Image.Image:
    """Pictures of one size in rows on white, each with its label under it, and an optional
    title above: the one grid builder behind the grid download and the command line's top images."""
    tile_h, tile_w = tiles[0].shape[:2]
    rows = max(1, math.ceil(len(tiles) / columns))
    header = 30 if title else 0
    canvas = Image.new(
        "RGB", (columns * (tile_w + gap) + gap, header + rows * (tile_h + label_px + gap) + gap), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    font = font or ImageFont.load_default()
    if title:
        draw.text((gap, 6), title, fill=(0, 0, 0), font=title_font or font)
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        x = gap + (i % columns) * (tile_w + gap)
        y = header + gap + (i // columns) * (tile_h + label_px + gap)
        canvas.paste(
            Image.fromarray(tile[:, :, 0] if tile.ndim == 3 and tile.shape[2] == 1 else tile).convert("RGB"), (x, y)
        )
        draw.text((x, y + tile_h), label, fill=(40, 40, 40), font=font)
    return canvas


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
    map_h, map_w = maps.shape[1], maps.shape[2]
    factor = cell_px or max(1, 96 // max(map_h, map_w))
    layer_range = value_range(maps, "per layer") if mode == "per layer" else None
    tiles, labels = [], []
    for channel in channels:
        values = maps[channel]
        vr = layer_range if layer_range is not None else value_range(values, mode, fixed=fixed)
        tiles.append(enlarge(colourise(values, vr, scale), factor))
        labels.append(f"{channel + 1}" + (" dead" if is_constant(values) else ""))
    canvas = labelled_grid(tiles, labels, columns=columns or grid_columns(len(channels)))
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

    >>> from featapp.render import LECTURE_BLUES
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

    >>> from featapp.render import LECTURE_BLUES, ValueRange
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


def grid_columns(count: int) -> int:
    """How many tiles per row: 8 for up to 64 tiles, then 16 (the lecture uses 16)."""
    if count <= 8:
        return max(count, 1)
    return 8 if count <= 64 else 16
