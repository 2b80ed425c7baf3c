"""Dead channels and constant maps, on values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.stats.liveness import LivenessCounter, layer_liveness, liveness_of


def test_a_channel_that_fires_once_on_one_photo_is_alive():
    maps = np.zeros((3, 2, 5, 5), np.float32)
    maps[2, 1, 4, 4] = 1e-3
    live = layer_liveness(maps)
    assert live.never_active_channels == (0,)
    assert live.never_active == 1 and live.never_active_share == 0.5
    # Six maps; the one with a single nonzero value is the only non-constant one.
    assert live.constant_map_share == pytest.approx(5 / 6)
    assert live.sparsity == pytest.approx(1 - 1 / maps.size)


def test_negative_values_are_not_firing_and_a_flat_nonzero_map_is_constant():
    maps = np.full((1, 3, 2, 2), -1.0, np.float32)
    maps[0, 1] = 2.0  # fires everywhere, but one value: alive and constant
    maps[0, 2, 0, 0] = 0.5
    live = layer_liveness(maps)
    assert live.never_active_channels == (0,)
    assert live.constant_map_share == pytest.approx(2 / 3)
    assert live.sparsity == 0.0  # -1 is not exactly zero


def test_batches_accumulate_like_one_big_batch():
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(-1.5, 1, size=(10, 8, 4, 4)), 0).astype(np.float32)
    counter = LivenessCounter()
    for start in range(0, 10, 3):
        counter.update(maps[start : start + 3])
    assert counter.result() == layer_liveness(maps)


def test_channels_last_matches_channels_first():
    rng = np.random.default_rng(1)
    maps = np.maximum(rng.normal(-1, 1, size=(4, 6, 3, 3)), 0)
    maps[:, 2] = 0
    assert layer_liveness(np.moveaxis(maps, 1, -1), channels_last=True) == layer_liveness(maps)


def test_vectors_count_units_and_have_no_constant_maps():
    units = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    live = layer_liveness(units)
    assert live.never_active_channels == (0, 2) and live.constant_map_share == 0.0


def test_as_dict_counts_channels_from_one():
    maps = np.zeros((1, 4, 2, 2))
    maps[0, 1] = 1
    assert layer_liveness(maps).as_dict()["never_active_channels"] == [1, 3, 4]


def test_a_layer_whose_width_changes_is_an_error():
    counter = LivenessCounter()
    counter.update(np.zeros((1, 3, 2, 2)))
    with pytest.raises(ValueError, match="3 channels"):
        counter.update(np.zeros((1, 4, 2, 2)))
    with pytest.raises(ValueError, match="no images"):
        LivenessCounter().result()


def test_liveness_of_the_committed_model_on_real_photos(model, dataset):
    photos = [image.path for image in dataset.sample("test", per_class=4, seed=0)]
    conv = [layer.name for layer in model.layers if layer.name.startswith("conv2d")]
    chunks = (model.activations(photos[i : i + 4], layers=conv) for i in range(0, len(photos), 4))
    result = liveness_of(chunks)
    assert list(result) == conv
    for name, live in result.items():
        acts = model.activations(photos, layers=[name])[name]
        fired = (acts > 0).any(axis=(0, 2, 3))
        assert live.never_active_channels == tuple(np.flatnonzero(~fired)), name
        assert live.images == 8 and live.channels == acts.shape[1]


def test_a_health_table_lists_a_few_dead_channels_and_counts_the_rest():
    # A list of every dead channel made the table's last column wider than the page, which cut it.
    from featapp.stats.classes import HEALTH_LISTED, health_table

    maps = np.zeros((2, 20, 3, 3), np.float32)
    maps[:, 0] = 1.0  # channel 1 fires; channels 2 to 20 never do
    table = health_table({"conv": layer_liveness(maps)}, ["conv"])
    listed = table["never-firing channels"][0]
    assert listed == ", ".join(str(c) for c in range(2, 2 + HEALTH_LISTED)) + f" and {19 - HEALTH_LISTED} more"
