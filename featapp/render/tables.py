"""Tables and short texts about a model: its layers, and how its input is scaled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from featapp.engine.metadata import LayerInfo

# pandas is imported inside the functions that build tables: the Gallery, the app's first
# page, draws no chart, and importing pandas was a large part of the app's cold start
# (bench/results/cold_start_lazy_tabs.md).
if TYPE_CHECKING:
    import pandas as pd

from featapp.render.colours import _fmt

# -- the layer table ---------------------------------------------------------------------------


def scaling_text(scale: float, offset: float = 0.0) -> str:
    """How the model scales pixels, in words.

    >>> scaling_text(1 / 255)
    'x / 255 (0 to 1)'
    >>> scaling_text(1 / 127.5, -1.0)
    'x / 127.5 - 1 (-1 to 1)'
    """
    divisor = 1 / scale if scale else float("inf")
    text = f"x / {divisor:.6g}" if math.isfinite(divisor) else f"x * {scale:g}"
    if offset:
        text += f" {'+' if offset > 0 else '-'} {abs(offset):g}"
    return f"{text} ({_fmt(offset)} to {_fmt(255 * scale + offset)})"


def layer_table(layers: Sequence[LayerInfo]) -> pd.DataFrame:
    """The model's layers as the Model page lists them, numbered from 1 as in the lecture."""
    import pandas as pd

    rows = []
    for number, layer in enumerate(layers, start=1):
        field = layer.receptive_field
        rows.append(
            {
                "#": number,
                "layer": layer.name,
                "kind": layer.kind,
                "output shape": layer.shape_text,
                "parameters": layer.params,
                "receptive field": f"{field.size[0]} x {field.size[1]}" if field else "(not a map)",
                "jump": f"{field.jump[0]} x {field.jump[1]}" if field else "",
            }
        )
    return pd.DataFrame.from_records(rows)
