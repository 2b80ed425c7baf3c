"""A map and a photo in words (issue 27): featapp.render.describe, featapp.app.captions.photo_alt,
and the descriptions the Vega-Lite specs carry for screen readers."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.app.captions import photo_alt
from featapp.render import (
    LECTURE_BLUES,
    VIRIDIS,
    Tile,
    heatmap_chart,
    legend_chart,
    tile_grid_chart,
    value_range,
    vector_chart,
    vector_strip_chart,
)
from featapp.render.describe import MapSummary, describe_map, map_alt, summarise_map


def test_the_summary_finds_the_strongest_cell_and_counts_cells_per_level():
    values = np.zeros((4, 5), dtype=np.float32)
    values[2, 3] = 8.0
    values[0, :] = 3.0  # bin 2 of 4 (2..4)
    summary = summarise_map(values, value_range(values, "per map"), LECTURE_BLUES)
    assert (summary.rows, summary.cols) == (4, 5)
    assert (summary.peak_row, summary.peak_col, summary.peak_value) == (2, 3, 8.0)
    assert summary.level_shares == pytest.approx((14 / 20, 5 / 20, 0.0, 1 / 20))
    assert sum(summary.level_shares) == pytest.approx(1.0)
    assert not summary.dead
    assert describe_map(summary) == (
        "Strongest at row 3, column 4 (value 8). Cells per colour level, lowest to highest: 70%, 25%, 0%, 5%."
    )


def test_a_tie_names_the_first_cell_in_reading_order():
    values = np.array([[0.0, 2.0], [2.0, 1.0]])
    summary = summarise_map(values, value_range(values, "per map"), VIRIDIS)
    assert (summary.peak_row, summary.peak_col) == (0, 1)


def test_a_continuous_scale_is_counted_in_four_bands_and_a_fixed_range_clips():
    values = np.array([[-5.0, 0.1, 0.6, 9.0]])
    summary = summarise_map(values, value_range(values, "fixed", fixed=(0.0, 1.0)), VIRIDIS)
    assert summary.level_shares == pytest.approx((0.5, 0.0, 0.25, 0.25))
    assert (summary.low, summary.high) == (0.0, 1.0)


def test_a_dead_map_says_so_and_nothing_about_a_strongest_cell():
    values = np.zeros((3, 3))
    summary = summarise_map(values, value_range(values, "per map"), LECTURE_BLUES)
    assert summary.dead and summary.level_shares == (1.0, 0.0, 0.0, 0.0)
    assert describe_map(summary) == "Dead for this image: every one of its 3 x 3 cells is 0."
    assert map_alt("Layer 3, channel 7", summary) == (
        "Layer 3, channel 7: a 3 x 3 map. Dead for this image: every one of its 3 x 3 cells is 0."
    )


def test_percentages_round_half_up_as_the_browser_does():
    summary = MapSummary(8, 1, 0, 0, 1.0, 0.0, 1.0, (0.125, 0.375, 0.5, 0.0), False)
    assert describe_map(summary).endswith("13%, 38%, 50%, 0%.")
    few = MapSummary(100, 100, 0, 0, 1.0, 0.0, 1.0, (0.9999, 0.0, 0.0, 0.0001), False)
    assert describe_map(few).endswith("100%, 0%, 0%, under 1%.")


def test_nan_cells_are_never_the_strongest():
    values = np.array([[np.nan, 1.0], [0.5, 0.0]])
    summary = summarise_map(values, value_range(values, "per map"), LECTURE_BLUES)
    assert (summary.peak_row, summary.peak_col) == (0, 1)


@pytest.mark.parametrize("shape", [(0, 3), (3,), (2, 2, 2)])
def test_only_a_2d_map_is_summarised(shape):
    with pytest.raises(ValueError):
        summarise_map(np.zeros(shape), value_range(np.ones((2, 2)), "per map"), LECTURE_BLUES)


def test_photo_alt_says_name_class_answer_and_right_or_wrong():
    probs = np.array([0.06, 0.94])
    assert photo_alt("dog.1880.jpg", probs, ["cat", "dog"], true_class="dogs", wrong=False) == (
        "Photo dog.1880.jpg, true class dogs. The model says dog, p(dog) 0.94: right."
    )
    wrong = photo_alt("cat.3.jpg", probs, ["cat", "dog"], true_class="cats", wrong=True, trained_on=True)
    assert wrong.endswith(": wrong. The model trained on this photo.")
    three = photo_alt("x.png", np.array([0.1, 0.7, 0.2]), ["a", "b", "c"], kind="Your upload")
    assert three == "Your upload x.png. The model says b, p = 0.70."
    assert photo_alt("odd\nname.png", None, ["cat", "dog"]) == "Photo odd name.png."


def test_every_chart_spec_has_a_description():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    vr = value_range(values, "per map")
    heat = heatmap_chart(values, vr, LECTURE_BLUES)
    # The heatmap's name depends on its shape only: a new channel changes its data, not the chart.
    assert heat["description"] == "A map of 3 x 4 cells, coloured by value, with a colour legend."
    assert heatmap_chart(values[::-1] * 3, vr, VIRIDIS)["description"] == heat["description"]
    assert heatmap_chart(values, vr, LECTURE_BLUES, legend=False, description="x")["description"] == "x"
    assert legend_chart(vr, VIRIDIS)["description"] == (
        "Colour legend, Viridis, continuous: continuous colours, from 0 at the bottom to 11 at the top."
    )
    assert legend_chart(value_range(np.zeros(2), "per map"), LECTURE_BLUES)["description"] == (
        "Colour legend: one colour, every cell is 0."
    )
    assert "strongest unit 12" in vector_chart(values.reshape(-1), title="dense")["description"]
    strip, _ = vector_strip_chart(values.reshape(-1), VIRIDIS, per_row=4)
    assert strip["description"].startswith("12 unit values in rows of 4")
    tiles = [Tile(0, "data:,", 0.0, 0.0, 0.0, True), Tile(1, "data:,", 0.0, 1.0, 3.0, False)]
    grid = tile_grid_chart(tiles)["description"]
    assert grid == "2 channel tiles, channels 1, 2. 1 dead (constant): 1. Strongest: channel 2, max 3."
