"""Export checks without false alarms: the allowed error grows with the float32 sums behind a layer."""

from __future__ import annotations

from convert.verification import accumulation_lengths, allowed_error
from featapp.engine.metadata import LayerInfo


def test_a_global_pool_over_148_by_148_is_not_a_false_alarm():
    """ONNX Runtime and TensorFlow sum a near-constant 148x148 map in different orders:
    1.5e-4 apart, with the default tolerance 1e-4. That is rounding, not a wrong graph."""
    layers = [
        LayerInfo("conv2d", "Conv2D", (148, 148, 32), kernel=(3, 3), stride=(1, 1)),
        LayerInfo("gap", "GlobalAveragePooling2D", (32,)),
        LayerInfo("dense", "Dense", (1,), activation="sigmoid"),
    ]
    conv, gap, dense = accumulation_lengths(layers, (150, 150, 3))
    assert allowed_error(1e-4, gap) >= 1.5e-4
    assert allowed_error(1e-4, dense) >= 1.5e-4  # what reads the pool inherits its rounding
    assert not allowed_error(1e-4, conv) >= 1.5e-4  # a 3x3x3 sum must still meet the tolerance
    assert allowed_error(1e-4, gap) < 1e-2  # and a real mistake is far beyond rounding


def test_branches_take_the_longest_sum_they_read():
    layers = [
        LayerInfo("a", "Conv2D", (8, 8, 4), kernel=(3, 3)),
        LayerInfo("b", "Conv2D", (8, 8, 4), kernel=(5, 5)),
        LayerInfo("add", "Add", (8, 8, 4)),
    ]
    assert accumulation_lengths(layers, (10, 10, 3), inputs=[[None], [None], [0, 1]]) == [27, 75, 75]
