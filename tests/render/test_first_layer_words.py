"""The Model page's sentence about the first layer's filters says what the measures found, no more."""

from __future__ import annotations

from featapp.engine.filters import FirstLayerSummary
from featapp.render.words import first_layer_words


def test_edges_colours_and_the_start_are_each_said_from_the_numbers():
    text = first_layer_words(FirstLayerSummary(32, (0, 4), 0.55, colour_like=(4, 7, 9)))
    assert text.startswith("2 of the 32 filters are oriented edges")
    assert ": 1, 5." in text
    # Channel 5 is an edge and counts there only; 8 and 10 are the colour detectors.
    assert "2 others are colour detectors" in text and ": 8, 10." in text
    assert "correlate only 0.55 with epoch 0" in text


def test_a_random_layer_is_called_random_and_claims_no_detectors():
    text = first_layer_words(FirstLayerSummary(32, (), 0.99))
    assert text.startswith("0 of the 32 filters are oriented edges (") and "direction)." in text
    assert "colour detector" not in text
    assert "Training barely changed this layer" in text
    one = first_layer_words(FirstLayerSummary(32, (), 0.7, colour_like=(2,)))
    assert "1 other is a colour detector" in one and "changed this layer partly" in one
