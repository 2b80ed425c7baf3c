"""The browser view's payload (featapp.app.map_explorer): what the browser draws must be what the
library would draw, for the committed model's real maps of a real photo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featapp.app.map_explorer import (
    REPORT_BYTES,
    REPORT_KEYS,
    STEPS,
    bounded_report,
    box_edges,
    dequantise,
    explorer_payload,
    nearest_cells,
    parse_grid_report,
    parse_report,
    quantise,
)
from featapp.engine.geometry import ReceptiveField, receptive_box
from featapp.render import COLOUR_SCALES, LECTURE_BLUES, ValueRange, overlay_map, palette


@pytest.fixture(scope="module")
def real_maps(first_photo):
    from featapp.engine.model import load_model
    from tests.helpers.appmodels import COMMITTED_MODEL

    model = load_model(COMMITTED_MODEL, provider="cpu")
    _, pixels = first_photo
    return model, pixels, model.activations(pixels[np.newaxis])


def test_quantised_values_are_within_half_a_step_of_the_real_ones(real_maps):
    model, _, acts = real_maps
    for layer in model.layers:
        if not layer.is_spatial:
            continue
        maps = acts[layer.name][0]
        steps, lows, highs = quantise(maps)
        back = dequantise(steps, lows, highs)
        span = (np.asarray(highs) - np.asarray(lows))[:, None, None]
        # Half a step, plus float32's own rounding of the maps.
        assert np.all(np.abs(back - maps) <= span / STEPS / 2 + 1e-6 * np.abs(maps) + 1e-12), layer.name
        # The extremes are exact: the legend's ends and the dead test read them.
        assert lows == [float(m.min()) for m in maps]
        assert highs == [float(m.max()) for m in maps]


def test_four_significant_digits_survive_quantisation(real_maps):
    # The tooltip shows 4 significant digits: they must be the real value's (or one off in the
    # last digit where the value lies on a rounding edge).
    model, _, acts = real_maps
    maps = acts["conv2d"][0]
    back = dequantise(*quantise(maps))
    live = maps > 0.05 * maps.max()
    relative = np.abs(back[live] - maps[live]) / np.abs(maps[live])
    assert relative.max() < 5e-4


def test_a_constant_channel_stays_exactly_constant():
    maps = np.zeros((2, 5, 5), np.float32)
    maps[1] = 0.25
    steps, lows, highs = quantise(maps)
    assert not steps.any()
    assert lows == highs == [0.0, 0.25]
    assert dequantise(steps, lows, highs)[1].tolist() == maps[1].tolist()


def test_nan_becomes_the_channel_minimum_not_a_crash():
    maps = np.array([[[1.0, np.nan], [3.0, 2.0]]], np.float32)
    steps, lows, highs = quantise(maps)
    assert (lows, highs) == ([1.0], [3.0])
    assert steps[0, 0, 1] == 0


def test_box_edges_are_the_library_receptive_boxes(real_maps):
    model, _, _ = real_maps
    hw = (model.input_spec.height, model.input_spec.width)
    for layer in model.layers:
        if not layer.is_spatial:
            continue
        rows, cols = layer.output_shape[:2]
        row_edges, col_edges = box_edges(layer.receptive_field, rows, cols, hw)
        for r, c in [(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 3), (1, cols - 2)]:
            top, left, bottom, right = receptive_box(layer.receptive_field, r, c, hw)
            assert (row_edges[r], col_edges[c]) == ([top, bottom], [left, right]), (layer.name, r, c)


def test_overlay_lookup_paints_what_overlay_map_paints(real_maps):
    # Rebuild overlay_map's picture from the per-axis lookup, as the browser does.
    model, pixels, acts = real_maps
    photo = pixels
    for name in ("conv2d", "max_pooling2d_1", "max_pooling2d_3"):
        layer = model.layer(name)
        maps = acts[name][0]
        values = maps[int(np.argmax(maps.max(axis=(1, 2))))]  # a live channel
        vr = ValueRange(float(values.min()), float(values.max()), "per map")
        field = layer.receptive_field
        rows = nearest_cells(photo.shape[0], values.shape[0], field.offset[0], field.jump[0])
        cols = nearest_cells(photo.shape[1], values.shape[1], field.offset[1], field.jump[1])
        expected = overlay_map(photo, values, field, vr, LECTURE_BLUES)
        colours = palette(LECTURE_BLUES).astype(np.float64)
        unit = np.clip((values - vr.low) / (vr.high - vr.low), 0, 1)
        index = np.minimum(np.floor(unit * 4), 3).astype(int)
        got = photo.astype(np.float64).copy()
        for y, r in enumerate(rows):
            for x, c in enumerate(cols):
                if r >= 0 and c >= 0:
                    got[y, x] = 0.4 * got[y, x] + 0.6 * colours[index[r, c]]
        assert np.array_equal(np.round(got).astype(np.uint8), expected), name


def test_nearest_cells_by_hand():
    # 7 cells 16 pixels apart starting at 22.5 (the lecture's last 7 x 7 layer): pixel 22 and 23
    # are cell 0's centre pair, pixel 15 is 7.5 from it (inside half a jump), pixel 14 8.5 (outside).
    lookup = nearest_cells(150, 7, 22.5, 16)
    assert lookup[22] == lookup[23] == 0
    assert lookup[15] == 0 and lookup[14] == -1
    assert lookup[30] == 0 and lookup[31] == 1
    assert lookup[22 + 16] == 1 and lookup[22 + 6 * 16] == 6
    assert lookup[149] == -1


def test_payload_carries_the_palettes_and_the_geometry(real_maps):
    model, pixels, acts = real_maps
    layer = model.layer("max_pooling2d_3")
    payload = explorer_payload(
        acts[layer.name][0],
        pixels,
        layer.receptive_field,
        data_key="k",
        title="a photo",
        layer_number=8,
        layer_name=layer.name,
    )
    args = payload.args()
    assert args["shape"] == [128, 7, 7]
    assert len(args["steps"]) == 128 * 7 * 7 * 2
    assert args["photo"].startswith(b"\x89PNG")
    assert set(args["palettes"]) == set(COLOUR_SCALES)
    assert args["palettes"]["blues4"]["rgb"] == palette(LECTURE_BLUES).reshape(-1).tolist()
    assert args["palettes"]["blues4"]["levels"] == 4
    assert args["field_size"] == list(layer.receptive_field.size)
    assert len(args["row_edges"]) == 7 and len(args["overlay_cols"]) == 150
    assert payload.layer_low == float(acts[layer.name][0].min())


def test_a_layer_without_geometry_has_no_box_and_no_overlay():
    payload = explorer_payload(
        np.ones((2, 3, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        None,
        data_key="k",
        title="t",
        layer_number=1,
        layer_name="x",
    )
    assert payload.row_edges is None and payload.overlay_rows is None and payload.field_size is None


GOOD = {
    "layer_name": "conv2d",
    "channel": 3,
    "colours": "viridis",
    "scaling": "fixed",
    "fixed_low": 0.0,
    "fixed_high": 2,
    "cell": [4, 147],
    "overlay": True,
}


def parse(value):
    return parse_report(value, layer_name="conv2d", channels=32, rows=148, cols=148)


def test_a_good_report_is_the_view():
    view = parse(GOOD)
    assert (view.channel, view.colours, view.scaling, view.cell, view.overlay) == (
        3,
        "viridis",
        "fixed",
        (4, 147),
        True,
    )
    assert (view.fixed_low, view.fixed_high) == (0.0, 2.0)
    assert parse(view.state()) == view


@pytest.mark.parametrize(
    "change",
    [
        {"layer_name": "conv2d_1"},  # a report about another layer (a late one, after a layer change)
        {"channel": 0},
        {"channel": 33},
        {"channel": "3"},
        {"channel": True},
        {"channel": 2.5},
        {"colours": "rainbow"},
        {"scaling": "log"},
        {"fixed_low": "0"},
        {"fixed_high": math.inf},
        {"fixed_low": math.nan},
        {"cell": [148, 0]},
        {"cell": [-1, 0]},
        {"cell": [1]},
        {"cell": [1.0, 2]},
        {"cell": "1,2"},
        {"overlay": "yes"},
    ],
)
def test_a_bad_report_is_ignored(change):
    assert parse({**GOOD, **change}) is None


@pytest.mark.parametrize("value", [None, [], "channel 3", 3, {"channel": 3}])
def test_a_report_that_is_not_a_view_is_ignored(value):
    assert parse(value) is None


def test_no_cell_is_a_view_too():
    assert parse({**GOOD, "cell": None}).cell is None


def test_a_field_box_by_hand():
    field = ReceptiveField(size=(46, 46), jump=(16, 16), offset=(22.5, 22.5))
    rows, cols = box_edges(field, 7, 7, (150, 150))
    assert rows[6] == cols[6] == [96, 142]
    assert rows[0] == [0, 46]


GRID = {
    "layer_name": "conv2d",
    "colours": "blues4",
    "scaling": "per layer",
    "fixed_low": 0,
    "fixed_high": 1,
    "first": 2,
    "last": 9,
    "order": "mean",
    "open_channel": None,
}


def test_a_good_grid_report():
    view = parse_grid_report(GRID, layer_name="conv2d", channels=32)
    assert (view.first, view.last, view.order, view.scaling, view.open_channel) == (2, 9, "mean", "per layer", None)
    assert parse_grid_report({**GRID, "open_channel": 32}, layer_name="conv2d", channels=32).open_channel == 32


@pytest.mark.parametrize(
    "change",
    [
        {"first": 0},
        {"last": 33},
        {"first": 2.0},
        {"order": "random"},
        {"open_channel": 33},
        {"open_channel": "5"},
        {"colours": None},
        {"layer_name": "conv2d_1"},
    ],
)
def test_a_bad_grid_report_is_ignored(change):
    assert parse_grid_report({**GRID, **change}, layer_name="conv2d", channels=32) is None


def test_means_are_the_ones_order_channels_ranks_by(real_maps):
    from featapp.render import order_channels

    model, pixels, acts = real_maps
    maps = acts["conv2d_2"][0]
    payload = explorer_payload(maps, pixels, None, data_key="k", title="t", layer_number=5, layer_name="conv2d_2")
    by_mean = sorted(range(len(maps)), key=lambda c: -payload.means[c])  # stable, as the browser's sort
    assert by_mean == order_channels(maps, range(len(maps)), "mean")


# Every value JSON can carry, as Python's json module reads it: any length of integer (up to
# Python's 4,300-digit limit), NaN and infinities, nested lists and objects.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
FIELD_NAMES = st.sampled_from(sorted(REPORT_KEYS) + ["junk"])


@given(st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=12))
@settings(max_examples=400, deadline=None)
def test_no_value_json_can_carry_raises(changes):
    # Forged fields laid over a good report, so the parser gets past its first checks.
    for value in ({**GOOD, **changes}, {**GRID, **changes}, changes):
        view = parse(value)
        grid = parse_grid_report(value, layer_name="conv2d", channels=32)
        for parsed in (view, grid):
            if parsed is not None:
                assert math.isfinite(parsed.fixed_low) and math.isfinite(parsed.fixed_high)
        kept = bounded_report(value)
        assert kept is None or set(kept) <= REPORT_KEYS


@given(JSON_VALUES)
@settings(max_examples=200, deadline=None)
def test_any_json_value_as_the_whole_report_is_ignored_or_a_view(value):
    assert parse(value) is None or isinstance(value, dict)
    assert parse_grid_report(value, layer_name="conv2d", channels=32) is None or isinstance(value, dict)


@pytest.mark.parametrize(
    "change",
    [
        {"fixed_high": 10**400},  # an integer JSON allows but a float cannot hold
        {"fixed_low": -(10**400)},
        {"fixed_high": 1e300},  # finite, but past any range the colour scale can divide by
        {"colours": ["viridis"]},  # a list is not hashable: no TypeError from "in COLOUR_SCALES"
        {"scaling": {"per map": 1}},
        {"layer_name": ["conv2d"]},
        {"channel": 10**400},
        {"cell": [[1], 2]},
        {"overlay": None},
    ],
)
def test_a_hostile_field_is_ignored(change):
    assert parse({**GOOD, **change}) is None
    grid = parse_grid_report({**GRID, **change}, layer_name="conv2d", channels=32)
    assert grid is None or set(change) <= {"cell", "channel", "overlay"}  # fields a grid report has not


def test_a_report_keeps_only_its_fields_and_a_heavy_one_is_dropped():
    assert bounded_report({**GOOD, "junk": "x" * 100}) == GOOD
    assert bounded_report({**GRID, "junk": 1}) == GRID
    assert bounded_report({**GOOD, "title": "x" * 10_000_000}) == GOOD  # an unknown key: dropped, not measured
    assert bounded_report({**GOOD, "layer_name": "x" * (REPORT_BYTES + 1)}) is None
    assert bounded_report([GOOD]) is None
