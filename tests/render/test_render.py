"""featapp.render: colours, ranges, pictures and chart specs, against hand-computed values."""

from __future__ import annotations

import base64
import io

import jsonschema
import numpy as np
import pandas as pd
import pytest
from altair.vegalite.schema import load_schema  # the Vega-Lite version this Altair (and Streamlit) uses
from PIL import Image

from featapp import render
from featapp.engine.geometry import ReceptiveField
from featapp.render import LECTURE_BLUES, VIRIDIS, ValueRange
from featapp.render.pictures import STRIP_LINE_PX


def decode_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def hexes(colours: np.ndarray) -> list[str]:
    return ["#" + "".join(f"{v:02x}" for v in row) for row in colours]


VEGA_LITE = jsonschema.Draft7Validator(load_schema())


def valid(spec: dict) -> dict:
    """``spec`` checked against the Vega-Lite schema Altair ships (tables as records), returned as is."""
    plain = dict(spec)
    plain["datasets"] = {name: frame.to_dict("records") for name, frame in spec.get("datasets", {}).items()}
    errors = sorted(VEGA_LITE.iter_errors(plain), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]
    return spec


def records(spec: dict, view: dict) -> list[dict]:
    frame = spec["datasets"][view["data"]["name"]]
    assert isinstance(frame, pd.DataFrame)
    return frame.to_dict("records")


def layers_of(spec: dict) -> list[dict]:
    """Every single view of a (possibly concatenated or layered) Vega-Lite spec."""
    found = []
    for key in ("hconcat", "vconcat", "concat", "layer"):
        for child in spec.get(key, []):
            found.extend(layers_of(child))
    if "mark" in spec:
        found.append(spec)
    return found


def mark_type(view: dict) -> str:
    mark = view["mark"]
    return mark if isinstance(mark, str) else mark["type"]


# -- palettes and ranges ------------------------------------------------------------------------------


def test_palettes_end_on_their_stops():
    assert hexes(render.palette(LECTURE_BLUES)) == list(LECTURE_BLUES.stops)
    table = render.palette(VIRIDIS)
    assert table.shape == (256, 3)
    assert hexes(table[[0, -1]]) == [VIRIDIS.stops[0], VIRIDIS.stops[-1]]
    # Viridis gets lighter from dark purple to yellow: luminance rises monotonically.
    luminance = table @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > -1.0)


def test_value_range_modes():
    values = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    layer = np.array([0.0, 10.0])
    assert render.value_range(values, "per map") == ValueRange(1.0, 5.0, "per map")
    assert render.value_range(values, "per layer", layer_values=layer) == ValueRange(0.0, 10.0, "per layer")
    assert render.value_range(values, "fixed", fixed=(0, 4)) == ValueRange(0.0, 4.0, "fixed", clipped=True)
    assert render.value_range(values, "fixed", fixed=(0, 9)).clipped is False
    with pytest.raises(ValueError, match="low < high"):
        render.value_range(values, "fixed", fixed=(2, 2))
    with pytest.raises(ValueError, match="unknown scaling"):
        render.value_range(values, "per galaxy")


def test_four_level_bins_are_equal_quarters_of_the_range():
    # Range 0..8: bins [0,2) [2,4) [4,6) [6,8]; the top edge belongs to the last bin.
    values = np.array([0.0, 1.99, 2.0, 3.9, 4.0, 6.0, 7.99, 8.0, -1.0, 9.0])
    indices = render.level_indices(values, ValueRange(0.0, 8.0, "fixed"), LECTURE_BLUES)
    assert indices.tolist() == [0, 0, 1, 1, 2, 3, 3, 3, 0, 3]


def test_continuous_scale_maps_ends_and_middle():
    values = np.array([0.0, 0.5, 1.0])
    assert render.level_indices(values, ValueRange(0.0, 1.0, "per map"), VIRIDIS).tolist() == [0, 128, 255]


def test_constant_map_is_one_colour_and_said_to_be_dead():
    values = np.full((5, 7), 0.0, np.float32)
    vr = render.value_range(values, "per map")
    assert vr.constant
    assert render.is_constant(values)
    picture = render.colourise(values, vr, VIRIDIS)
    assert np.all(picture == picture[0, 0])
    assert "Constant map" in render.describe_range(vr, VIRIDIS)
    legend = valid(render.legend_chart(vr, VIRIDIS))
    assert legend["datasets"]["legend_labels"]["label"].tolist() == ["constant 0"]


def test_describe_range_matches_what_is_drawn():
    text = render.describe_range(ValueRange(0.0, 2.0, "per layer"), LECTURE_BLUES)
    assert "0 to 2" in text and "all channels of this layer" in text and "4 equal bins of 0.5" in text
    clipped = render.describe_range(ValueRange(0.0, 1.0, "fixed", clipped=True), VIRIDIS)
    assert "outside this range" in clipped and "bins" not in clipped


def test_shared_range_covers_every_map():
    vr = render.shared_range(np.array([[1.0, 2.0]]), np.array([[-3.0, 0.5]]))
    assert (vr.low, vr.high, vr.mode) == (-3.0, 2.0, "shared")


# -- pictures -----------------------------------------------------------------------------------------


def test_map_png_is_a_palette_png_with_the_exact_colours():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    vr = render.value_range(values, "per map")
    png = render.map_png(values, vr, LECTURE_BLUES)
    image = Image.open(io.BytesIO(png))
    assert image.mode == "P" and image.size == (4, 3)
    assert np.array_equal(np.asarray(image.convert("RGB")), render.colourise(values, vr, LECTURE_BLUES))
    # Row 0 is at the top: the smallest values (top-left) get the lightest blue.
    assert hexes(np.asarray(image.convert("RGB"))[0, :1])[0] == LECTURE_BLUES.stops[0]
    assert hexes(np.asarray(image.convert("RGB"))[2, 3:])[0] == LECTURE_BLUES.stops[3]


def test_map_picture_enlarges_by_whole_factors():
    values = np.eye(7, dtype=np.float32)
    picture = render.map_picture(values, render.value_range(values, "per map"), VIRIDIS, min_px=20)
    assert picture.shape == (21, 21, 3)  # factor 3: the smallest whole factor reaching 20 px
    assert np.all(picture[0:3, 0:3] == picture[0, 0]) and not np.all(picture[0:3, 3:6] == picture[0, 0])


def test_png_bytes_round_trip_gray_and_rgb():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(render.png_bytes(gray)))), gray[:, :, 0])
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(render.png_bytes(rgb)))), rgb)


# -- the heatmap chart ------------------------------------------------------------------------------------


def test_small_heatmap_has_one_hover_cell_per_map_cell():
    values = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], np.float32)
    vr = render.value_range(values, "per map")
    spec = valid(render.heatmap_chart(values, vr, LECTURE_BLUES))
    views = layers_of(spec)
    assert [mark_type(v) for v in views][:2] == ["image", "rect"]
    image_view, cells_view = views[0], views[1]
    assert image_view["mark"]["smooth"] is False
    assert image_view["encoding"]["y"]["scale"]["reverse"] is True  # row 1 at the top, like the photo
    cells = records(spec, cells_view)
    assert len(cells) == 6
    by_position = {(c["r"], c["c"]): c for c in cells}
    assert by_position[(1, 2)]["value"] == 5.0
    assert by_position[(1, 2)]["row"] == 2 and by_position[(1, 2)]["column"] == 3  # 1-based in the tooltip
    assert {t["field"] for t in cells_view["encoding"]["tooltip"]} == {"row", "column", "value"}
    params = cells_view["params"]
    assert params[0]["name"] == "cell" and params[0]["select"]["fields"] == ["r", "c"]
    picture = decode_url(records(spec, image_view)[0]["url"])
    assert np.array_equal(picture, render.colourise(values, vr, LECTURE_BLUES))


def test_heatmap_spec_depends_only_on_the_map_shape():
    """Another channel of the same layer changes data, not the chart: the browser updates it in place."""
    rng = np.random.default_rng(3)
    first, second = rng.random((2, 30, 40)).astype(np.float32)
    one = render.heatmap_chart(first, render.value_range(first, "per map"), LECTURE_BLUES, selected_cell=(1, 2))
    two = render.heatmap_chart(second, ValueRange(-5.0, 9.0, "fixed", clipped=True), VIRIDIS)
    assert {k: v for k, v in one.items() if k != "datasets"} == {k: v for k, v in two.items() if k != "datasets"}
    assert not one["datasets"]["picture"].equals(two["datasets"]["picture"])


def test_large_heatmap_answers_per_block_with_the_strongest_cell():
    rng = np.random.default_rng(1)
    values = rng.random((148, 148)).astype(np.float32)
    values[100, 7] = 5.0
    spec = valid(render.heatmap_chart(values, render.value_range(values, "per map"), VIRIDIS))
    cells_view = layers_of(spec)[1]
    cells = records(spec, cells_view)
    assert len(cells) <= render.MAX_CHART_CELLS
    block = cells[0]["r1"] - cells[0]["r0"]
    assert block == 5  # ceil(sqrt(148 * 148 / 1024))
    for cell in cells[:: len(cells) // 50]:
        patch = values[cell["r0"] : cell["r1"], cell["c0"] : cell["c1"]]
        assert cell["value"] == pytest.approx(float(patch.max()), abs=1e-4)
        assert values[cell["r"], cell["c"]] == patch.max()
    winner = [c for c in cells if c["r0"] <= 100 < c["r1"] and c["c0"] <= 7 < c["c1"]][0]
    assert (winner["r"], winner["c"], winner["value"]) == (100, 7, 5.0)
    # Every cell of the map belongs to exactly one block.
    covered = np.zeros(values.shape, int)
    for cell in cells:
        covered[cell["r0"] : cell["r1"], cell["c0"] : cell["c1"]] += 1
    assert np.all(covered == 1)


def test_selected_cell_is_outlined_and_legend_is_the_palette():
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    vr = ValueRange(0.0, 16.0, "fixed")
    spec = valid(render.heatmap_chart(values, vr, LECTURE_BLUES, selected_cell=(2, 1)))
    views = layers_of(spec)
    outline = [v for v in views if mark_type(v) == "rect" and v["mark"].get("filled") is False]
    # Two tones: a white halo under the red outline, both on the same one-row dataset.
    assert [v["mark"]["stroke"] for v in outline] == ["#ffffff", "#d62728"]
    assert {v["data"]["name"] for v in outline} == {"outline"}
    box = records(spec, outline[0])[0]
    assert (box["r0"], box["r1"], box["c0"], box["c1"]) == (2, 3, 1, 2)
    bands = spec["datasets"]["legend"].to_dict("records")
    assert [b["colour"] for b in bands] == list(LECTURE_BLUES.stops)
    assert [b["y0"] for b in bands] == [0.0, 4.0, 8.0, 12.0] and bands[-1]["y1"] == 16.0
    assert spec["datasets"]["legend_labels"]["label"].tolist() == ["0", "4", "8", "12", "16"]  # the bin edges
    unselected = render.heatmap_chart(values, vr, LECTURE_BLUES)
    assert unselected["datasets"]["outline"].empty


def test_continuous_legend_uses_the_palette_over_the_range():
    vr = ValueRange(-1.0, 3.0, "per map")
    spec = valid(render.legend_chart(vr, VIRIDIS))
    bands = spec["datasets"]["legend"].to_dict("records")
    assert bands[0]["y0"] == -1.0 and bands[-1]["y1"] == 3.0
    # Each band shows the colour the picture gives a value in the middle of that band.
    middles = np.array([(b["y0"] + b["y1"]) / 2 for b in bands])
    assert [b["colour"] for b in bands] == hexes(render.colourise(middles, vr, VIRIDIS))


# -- grids ----------------------------------------------------------------------------------------------------


def test_order_channels_by_index_mean_and_max():
    maps = np.zeros((4, 2, 2), np.float32)
    maps[0] = [[0, 9], [0, 0]]  # max 9, mean 2.25
    maps[1] = [[3, 3], [3, 3]]  # max 3, mean 3
    maps[2] = [[1, 1], [1, 1]]
    maps[3] = [[3, 3], [3, 3]]  # ties with channel 1: index order kept
    assert render.order_channels(maps, [0, 1, 2, 3], "index") == [0, 1, 2, 3]
    assert render.order_channels(maps, [0, 1, 2, 3], "max") == [0, 1, 3, 2]
    assert render.order_channels(maps, [0, 1, 2, 3], "mean") == [1, 3, 0, 2]
    assert render.order_channels(maps, [2, 0], "max") == [0, 2]


def test_tiles_flag_dead_channels_and_share_a_layer_range():
    maps = np.zeros((3, 4, 4), np.float32)
    maps[1] = np.arange(16).reshape(4, 4)
    maps[2] = 2 * np.arange(16).reshape(4, 4)
    tiles = render.make_tiles(maps, [0, 1, 2], VIRIDIS, "per layer")
    assert [t.dead for t in tiles] == [True, False, False]
    assert tiles[2].maximum == 30.0 and tiles[1].mean == pytest.approx(7.5)
    # One range for the layer: channel 1's brightest cell (15) is mid-scale, channel 2's (30) the top.
    top = render.palette(VIRIDIS)[255]
    assert np.array_equal(decode_url(tiles[2].url)[3, 3], top)
    assert not np.array_equal(decode_url(tiles[1].url)[3, 3], top)
    # Per map, each tile reaches the top colour.
    own = render.make_tiles(maps, [1, 2], VIRIDIS, "per map")
    assert all(np.array_equal(decode_url(t.url)[3, 3], top) for t in own)


@pytest.mark.parametrize(("mode", "fixed"), [("per map", None), ("per layer", None), ("fixed", (0.2, 0.7))])
def test_tiles_match_each_map_taken_on_its_own(mode, fixed):
    """The grid's statistics, made for all tiles at once, are each map's own: the same
    range, picture, minimum, mean, maximum and dead flag as one map at a time."""
    maps = np.random.default_rng(11).normal(size=(9, 13, 7)).astype(np.float32)
    maps[4] = 0.0  # dead
    maps[6, 2, 3] = np.nan
    channels = [8, 0, 4, 6, 2]
    tiles = render.make_tiles(maps, channels, LECTURE_BLUES, mode, fixed=fixed)
    assert [t.channel for t in tiles] == channels
    for tile in tiles:
        values = maps[tile.channel]
        vr = render.value_range(values, mode, layer_values=maps, fixed=fixed)
        assert tile.url == render.data_url(render.map_png(values, vr, LECTURE_BLUES))
        assert (tile.minimum, tile.maximum) == (float(values.min()), float(values.max())) or np.isnan(tile.minimum)
        assert tile.mean == float(values.mean()) or np.isnan(tile.mean)
        assert tile.dead == render.is_constant(values)
    assert [t.dead for t in tiles] == [False, False, True, False, False]


def test_tile_grid_chart_places_every_tile_and_selects_by_channel():
    maps = np.random.default_rng(2).random((40, 5, 5)).astype(np.float32)
    maps[7] = 0.0
    tiles = render.make_tiles(maps, range(40), LECTURE_BLUES, "per map")
    spec = valid(render.tile_grid_chart(tiles))
    views = layers_of(spec)
    images = [v for v in views if mark_type(v) == "image"][0]
    rows = records(spec, images)
    assert [r["ch"] for r in rows] == list(range(40))
    assert rows[7]["label"] == "8 dead" and rows[0]["label"] == "1"
    assert images["params"][0]["select"]["fields"] == ["ch"]
    positions = {(r["x"], r["y"]) for r in rows}
    assert len(positions) == 40  # no two tiles on top of each other
    assert len({r["x"] for r in rows}) == render.grid_columns(40) == 8


def test_grid_png_has_one_tile_per_channel():
    maps = np.zeros((3, 2, 2), np.float32)
    maps[1] = [[0, 1], [2, 3]]
    png = render.grid_png(maps, [0, 1, 2], LECTURE_BLUES, "per map", columns=3, cell_px=10)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    gap, label = 4, 12
    assert image.shape == (gap + 20 + label + gap, 3 * (20 + gap) + gap, 3)
    x1 = gap + (20 + gap)  # tile of channel 2 (index 1)
    assert hexes(image[[gap + 5], [x1 + 5]])[0] == LECTURE_BLUES.stops[0]  # its 0 at the top left
    assert hexes(image[[gap + 15], [x1 + 15]])[0] == LECTURE_BLUES.stops[3]  # its 3 at the bottom right


def test_vector_charts():
    values = np.array([0.0, 3.0, 1.0, 2.0], np.float32)
    spec = valid(render.vector_chart(values, title="all"))
    rows = records(spec, spec)
    assert [r["unit"] for r in rows] == [1, 2, 3, 4] and [r["value"] for r in rows] == [0.0, 3.0, 1.0, 2.0]
    top = valid(render.vector_chart(values, top=2))
    assert [r["unit"] for r in records(top, top)] == [2, 4]
    strip, vr = render.vector_strip_chart(np.arange(300, dtype=np.float32), VIRIDIS, per_row=128)
    image_view = layers_of(valid(strip))[0]
    picture = decode_url(records(strip, image_view)[0]["url"])
    assert picture.shape == (3, 128, 3) and (vr.low, vr.high) == (0.0, 299.0)


# -- on the photo ---------------------------------------------------------------------------------------------------


def test_overlay_follows_receptive_field_centres():
    photo = np.zeros((40, 40, 3), np.uint8)
    # A deep layer: 2 x 2 cells, 16 pixels apart, centred at 12.5 + 16 k (like max_pooling2d_3's 22.5 + 16 k).
    field = ReceptiveField(size=(20, 20), jump=(16, 16), offset=(12.5, 12.5))
    values = np.ones((2, 2), np.float32)
    out = render.overlay_map(photo, values, field, ValueRange(0.0, 1.0, "fixed"), LECTURE_BLUES, alpha=1.0)
    painted = np.any(out > 0, axis=2)
    rows = np.where(painted.any(axis=1))[0]
    # Cell centres 12.5 and 28.5, each covering +-8 pixels: rows 5..36 are painted, the edges keep the photo.
    assert rows.min() == 5 and rows.max() == 36
    assert not painted[0].any() and not painted[39].any()


def test_overlay_on_layer_one_is_shifted_by_one_pixel():
    photo = np.zeros((6, 6, 1), np.uint8)
    field = ReceptiveField(size=(3, 3), jump=(1, 1), offset=(1.0, 1.0))
    values = np.zeros((4, 4), np.float32)
    values[0, 0] = 1.0
    out = render.overlay_map(photo, values, field, ValueRange(0.0, 1.0, "fixed"), LECTURE_BLUES, alpha=1.0)
    assert out.shape == (6, 6, 3)
    assert hexes(out[[1], [1]])[0] == LECTURE_BLUES.stops[3]  # cell (0, 0) sits on pixel (1, 1)
    assert np.all(out[0] == 0) and np.all(out[:, 5] == 0)


def test_outline_box_draws_exact_edges_and_points_at_small_boxes():
    photo = np.zeros((40, 40, 3), np.uint8)
    out = render.outline_box(photo, (10, 12, 13, 15), thickness=1)
    red = out[:, :, 0] > 0
    assert red[10, 12:15].all() and red[12, 12:15].all() and red[10:13, 12].all() and red[10:13, 14].all()
    assert not red[11, 13]  # inside the box stays the photo
    assert red[0:7, 13].any() and red[16:26, 13].any()  # ticks above and below a 3 x 3 box
    big = render.outline_box(photo, (5, 5, 30, 30), thickness=2)
    assert not (big[0:5, :, 0] > 0).any()  # no ticks for a box that is easy to see


def test_layer_table_of_the_committed_model(model):
    table = render.layer_table(model.layers)
    assert list(table["#"]) == list(range(1, len(model.layers) + 1))
    first = table.iloc[0]
    layer = model.layers[0]
    assert first["layer"] == layer.name and first["output shape"] == layer.shape_text
    assert first["receptive field"] == f"{layer.receptive_field.size[0]} x {layer.receptive_field.size[1]}"
    vectors = table[[not layer.is_spatial for layer in model.layers]]
    assert set(vectors["receptive field"]) == {"(not a map)"}


def test_scaling_text():
    assert render.scaling_text(1 / 255) == "x / 255 (0 to 1)"
    assert render.scaling_text(1 / 127.5, -1.0) == "x / 127.5 - 1 (-1 to 1)"


def test_an_enlarged_palette_png_is_the_same_picture_as_map_picture():
    # The app sends map_png(min_px=...) where it sent png_bytes(map_picture(...)): same pixels, a tenth of the work.
    values = np.random.default_rng(3).random((17, 23)).astype(np.float32)
    for scale in (LECTURE_BLUES, VIRIDIS):
        vr = render.value_range(values, "per map")
        fast = np.asarray(Image.open(io.BytesIO(render.map_png(values, vr, scale, min_px=200))).convert("RGB"))
        slow = render.map_picture(values, vr, scale, min_px=200)
        assert fast.shape == slow.shape == (17 * 9, 23 * 9, 3)  # whole factor 9 = ceil(200 / 23)
        np.testing.assert_array_equal(fast, slow)


def test_fit_width_enlarges_crisply_and_then_scales_to_the_width():
    checker = np.array([[0, 255], [255, 0]], np.uint8)[..., np.newaxis].repeat(3, axis=2)
    exact = render.fit_width(checker, 6)  # a whole factor (3): square blocks, no blending
    assert exact.shape == (6, 6, 3)
    assert (exact[:3, :3] == 0).all() and (exact[:3, 3:] == 255).all() and (exact[3:, :3] == 255).all()
    squeezed = render.fit_width(checker, 5)  # enlarged to 6, then scaled to 5: the seam is blended
    assert squeezed.shape == (5, 5, 3)
    assert set(np.unique(squeezed)) - {0, 255}
    assert render.fit_width(np.zeros((3, 4, 1), np.uint8), 10).shape == (8, 10, 1)  # grey stays one channel


def test_heatmaps_draw_on_a_canvas_without_per_cell_descriptions():
    values = np.random.default_rng(4).random((148, 148)).astype(np.float32)
    spec = render.heatmap_chart(values, render.value_range(values, "per map"), LECTURE_BLUES)
    # Streamlit would pick SVG below 2,000 rows of data, and Vega writes a spoken description per mark unless told not to.
    assert spec["usermeta"]["embedOptions"]["renderer"] == "canvas"
    assert spec["config"]["aria"] is False


# -- the training strip as one picture ------------------------------------------------------------------------


def strip_pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P"  # palette PNG: a third of RGB's encoding time
        return np.asarray(image.convert("RGB"))


def test_strip_png_shows_each_map_on_its_own_range_side_by_side():
    small = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    large = small * 100 + 50  # same pattern, other range: per-map scaling makes the tiles equal
    flat = np.full((2, 2), 7.0, dtype=np.float32)
    pixels = strip_pixels(
        render.strip_png([("a", small), ("b", large), ("c", flat)], LECTURE_BLUES, min_px=10, gap_px=3)
    )
    tile = render.map_picture(small, render.value_range(small, "per map"), LECTURE_BLUES, min_px=10)  # 10 x 10
    assert tile.shape == (10, 10, 3)
    np.testing.assert_array_equal(pixels[:10, 0:10], tile)
    np.testing.assert_array_equal(pixels[:10, 13:23], tile)
    dead = render.map_picture(flat, render.value_range(flat, "per map"), LECTURE_BLUES, min_px=10)
    np.testing.assert_array_equal(pixels[:10, 26:36], dead)
    assert pixels.shape[1] == 36 and (pixels[:10, 10:13] == 255).all()  # white gaps
    label_band = pixels[10:]
    assert label_band.shape[0] >= STRIP_LINE_PX and (label_band < 128).any()  # text was drawn


def test_strip_png_continuous_scale_stays_within_a_step_of_the_heatmap_colours():
    values = np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20)
    pixels = strip_pixels(render.strip_png([("only", values)], VIRIDIS, min_px=20))
    exact = render.map_picture(values, render.value_range(values, "per map"), VIRIDIS, min_px=20)
    difference = np.abs(pixels[:20].astype(int) - exact.astype(int))
    assert difference.max() <= 6  # 248 of 256 steps; neighbouring viridis steps differ by up to ~3 per channel


def test_strip_png_labels_wrap_instead_of_running_into_the_next_map():
    long_label = "epoch 50 (best): 83% on validation"
    one = strip_pixels(render.strip_png([("x", np.eye(30))], LECTURE_BLUES, min_px=60))
    wrapped = strip_pixels(render.strip_png([(long_label, np.eye(30))], LECTURE_BLUES, min_px=60))
    assert wrapped.shape[1] == one.shape[1] == 60
    assert wrapped.shape[0] - 60 >= 3 * STRIP_LINE_PX > one.shape[0] - 60


def test_strip_png_refuses_mixed_shapes_and_no_maps():
    with pytest.raises(ValueError, match="map 2 is"):
        render.strip_png([("a", np.eye(3)), ("b", np.eye(4))], LECTURE_BLUES)
    with pytest.raises(ValueError, match="at least one map"):
        render.strip_png([], LECTURE_BLUES)


@pytest.mark.parametrize(
    ("shape", "vr", "scale", "selected"),
    [
        ((148, 148), None, VIRIDIS, (100, 7)),
        ((4, 4), ValueRange(0.0, 16.0, "fixed", clipped=True), LECTURE_BLUES, None),
        ((5, 3), ValueRange(2.0, 2.0, "per map"), LECTURE_BLUES, (0, 2)),  # a dead map: one legend block
    ],
)
def test_heatmap_arrow_tables_hold_the_same_data_as_the_frames(shape, vr, scale, selected):
    """``arrow=True`` (what the app sends, without pandas on the way) is the same chart:
    the same spec and, table by table, the same columns, types and values."""
    import pyarrow as pa

    values = np.random.default_rng(7).random(shape).astype(np.float32)
    if vr is not None and vr.constant:
        values[:] = 2.0
    vr = vr or render.value_range(values, "per map")
    frames = render.heatmap_chart(values, vr, scale, selected_cell=selected)
    tables = render.heatmap_chart(values, vr, scale, selected_cell=selected, arrow=True)
    assert {k: v for k, v in frames.items() if k != "datasets"} == {k: v for k, v in tables.items() if k != "datasets"}
    assert set(frames["datasets"]) == set(tables["datasets"])
    for name, frame in frames["datasets"].items():
        table = tables["datasets"][name]
        assert isinstance(table, pa.Table)
        reference = pa.Table.from_pandas(frame, preserve_index=False)
        assert table.column_names == reference.column_names, name
        # pandas 3 stores text as large_string; Arrow's plain string is the same text.
        assert [pa.string() if t == pa.large_string() else t for t in reference.schema.types] == table.schema.types
        assert table.to_pylist() == reference.to_pylist(), name
    assert tables["datasets"]["outline"].num_rows == (0 if selected is None else 1)
