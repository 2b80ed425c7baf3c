"""featapp.stats.ranking: images ranked by one channel, with the cell and box of each image's peak."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.geometry import ReceptiveField, receptive_box
from featapp.stats.ranking import rank_by_activation


def test_rank_by_max_and_mean_by_hand():
    maps = np.zeros((3, 4, 5), np.float32)
    maps[0, 1, 2] = 2.0  # max 2, mean 0.1
    maps[1] += 0.5  # max 0.5, mean 0.5
    maps[2, 3, 4] = 9.0  # max 9, mean 0.45
    by_max = rank_by_activation(maps)
    assert [(r.index, r.value, r.cell) for r in by_max] == [(2, 9.0, (3, 4)), (0, 2.0, (1, 2)), (1, 0.5, (0, 0))]
    by_mean = rank_by_activation(maps, by="mean")
    assert [r.index for r in by_mean] == [1, 2, 0]
    assert by_mean[0].value == pytest.approx(0.5)


def test_boxes_are_the_receptive_fields_of_the_peaks():
    field = ReceptiveField(size=(8, 8), jump=(2, 2), offset=(3.5, 3.5))
    maps = np.zeros((1, 6, 6), np.float32)
    maps[0, 4, 1] = 1.0
    hit = rank_by_activation(maps, field, (20, 20))[0]
    assert hit.box == receptive_box(field, 4, 1, (20, 20)) == (8, 2, 16, 10)


def test_ties_keep_batch_order_and_bad_input_is_refused():
    maps = np.ones((3, 2, 2), np.float32)
    assert [r.index for r in rank_by_activation(maps)] == [0, 1, 2]
    with pytest.raises(ValueError, match="images, rows, cols"):
        rank_by_activation(np.ones((2, 2)))
    with pytest.raises(ValueError, match="'max' or 'mean'"):
        rank_by_activation(maps, by="median")
