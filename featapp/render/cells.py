"""How a cell was computed, as Markdown tables and one sentence per step, from
:func:`featapp.engine.arithmetic.explain_cell`. Rows, columns and channels are counted from 1,
as the app counts them; the numbers are the library's, rounded only for reading.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featapp.engine.arithmetic import GRAPH_INPUT, ConvArithmetic, PoolArithmetic
from featapp.stats.circuits import ChannelCircuit, InputLink, UnitInputs

__all__ = ["TOP_INPUTS", "cell_steps", "colour_names", "source_label", "circuit_words", "link_words", "dense_words"]

TOP_INPUTS = 6
"""Input channels listed one by one for a deeper convolution cell; the others are summed."""


def _n(value: float) -> str:
    """A number for reading: 4 significant digits, a real minus sign."""
    return f"{value:.4g}".replace("-", "\u2212")


def colour_names(channels: int) -> list[str]:
    """What the photo's input channels are called.

    >>> colour_names(3), colour_names(1)
    (['red', 'green', 'blue'], ['grey'])
    """
    if channels == 3:
        return ["red", "green", "blue"]
    if channels == 1:
        return ["grey"]
    return [f"input {i + 1}" for i in range(channels)]


def source_label(source: str, layer_names: Sequence[str]) -> str:
    """``layer 2 (max_pooling2d)``, or ``the photo`` for the graph's input."""
    if source == GRAPH_INPUT:
        return "the photo"
    return f"layer {list(layer_names).index(source) + 1} ({source})" if source in layer_names else source


def _span(positions: Sequence[int]) -> str:
    return f"{positions[0] + 1}-{positions[-1] + 1}" if len(positions) > 1 else str(positions[0] + 1)


def _grid(cells: np.ndarray, rows: Sequence[int], cols: Sequence[int], text) -> str:
    """A Markdown table of a 2-D window, its row and column headers the input positions (from 1)."""
    header = "| row \\ col | " + " | ".join(str(c + 1) for c in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    body = [f"| **{r + 1}** | " + " | ".join(text(i, j) for j in range(len(cols))) + " |" for i, r in enumerate(rows)]
    return "\n".join([header, rule, *body])


def _first_layer_tables(cell: ConvArithmetic, scale: float, offset: float) -> list[str]:
    names = colour_names(len(cell.window))
    tables = []
    for k, name in enumerate(names):
        pixels = cell.pixels[k] if cell.pixels is not None else None

        def text(i: int, j: int, k: int = k, pixels=pixels) -> str:
            shown = f"{int(pixels[i, j])} → " if pixels is not None else ""
            return f"{shown}{_n(cell.window[k, i, j])} × {_n(cell.kernel[k, i, j])} = **{_n(cell.products[k, i, j])}**"

        tables.append(
            f"**{name.capitalize()}** (pixel → pixel × {_n(scale)}"
            + (f" + {_n(offset)}" if offset else "")
            + f", times the kernel's weight; these 9 products sum to {_n(cell.contributions[k])}):\n\n"
            + _grid(cell.window[k], cell.rows, cell.cols, text)
        )
    return tables


def _deeper_table(cell: ConvArithmetic, source: str) -> str:
    top, rest = cell.strongest(TOP_INPUTS)
    others = len(cell.window) - len(top)
    lines = [
        "| input channel | its window (rows, left to right) | kernel slice | contribution |",
        "|---|---|---|---|",
    ]
    for channel, value in top:
        window = " / ".join(" ".join(_n(v) for v in row) for row in cell.window[channel])
        kernel = " / ".join(" ".join(_n(v) for v in row) for row in cell.kernel[channel])
        lines.append(f"| {channel + 1} of {source} | {window} | {kernel} | **{_n(value)}** |")
    if others:
        lines.append(f"| the other {others} channels | | | {_n(rest)} |")
    lines.append(f"| bias | | | {_n(cell.bias)} |")
    lines.append(f"| **sum = pre-activation** | | | **{_n(cell.preactivation)}** |")
    return "\n".join(lines)


def _closing_steps(cell: ConvArithmetic) -> list[str]:
    steps = [
        f"Add the bias, {_n(cell.bias)}: the **pre-activation** is {_n(cell.total)} "
        f"{'+' if cell.bias >= 0 else '−'} {_n(abs(cell.bias))} = **{_n(cell.preactivation)}**."
    ]
    if cell.relu:
        verdict = (
            "it is above zero, so it passes unchanged"
            if cell.preactivation > 0
            else "it is below zero, so the cell is **0** (silent here)"
        )
        steps.append(f"The **ReLU** keeps positive numbers and turns negative ones into 0: {verdict}.")
    steps.append(
        f"Result: **{_n(cell.value)}**. The model returned **{_n(cell.model_value)}** for this cell "
        f"(they differ by {abs(cell.value - cell.model_value):.1e}, the rounding of 32-bit arithmetic)."
    )
    return steps


def _conv_steps(cell: ConvArithmetic, layer_names: Sequence[str], scale: float, offset: float) -> list[str]:
    source = source_label(cell.source, layer_names)
    channels, rows, cols = cell.window.shape
    if cell.source == GRAPH_INPUT:
        intro = (
            f"This cell looks at a {rows} x {cols} patch of {source}: rows {_span(cell.rows)}, columns "
            f"{_span(cell.cols)}, in each of its {channels} colour channel{'s' if channels > 1 else ''}. "
            f"The network first rescales each pixel (0-255) to pixel × {_n(scale)}"
            + (f" + {_n(offset)}" if offset else "")
            + f". Each of the {channels * rows * cols} numbers is multiplied by the kernel's weight at the same "
            "place:"
        )
        body = _first_layer_tables(cell, scale, offset)
        total = f"Add all {channels * rows * cols} products: **{_n(cell.total)}**."
    else:
        intro = (
            f"This cell looks at a {rows} x {cols} window (rows {_span(cell.rows)}, columns {_span(cell.cols)}) "
            f"of all {channels} channels of {source}: {channels * rows * cols} numbers, each multiplied by its "
            "own kernel weight. Grouped by input channel, each channel's **contribution** is the sum over its "
            f"window of weight × input. The {min(TOP_INPUTS, channels)} largest (by size, positive or negative), "
            "then the rest:"
        )
        body = [_deeper_table(cell, source)]
        total = f"All {channels} contributions add up to **{_n(cell.total)}**."
    return [intro, *body, total, *_closing_steps(cell)]


def _pool_steps(cell: PoolArithmetic, layer_names: Sequence[str]) -> list[str]:
    source = source_label(cell.source, layer_names)
    rows, cols = cell.window.shape

    def text(i: int, j: int) -> str:
        value = _n(cell.window[i, j])
        return f"**{value}** ✔" if cell.winner == (i, j) else value

    intro = (
        f"A pooling cell does no multiplying: it looks at a {rows} x {cols} window of the same channel "
        f"({cell.channel + 1}) of {source}, rows {_span(cell.rows)} and columns {_span(cell.cols)}:"
    )
    if cell.kind == "max":
        assert cell.winner is not None
        winner = (cell.rows[cell.winner[0]] + 1, cell.cols[cell.winner[1]] + 1)
        result = (
            f"It keeps the **largest**, {_n(cell.value)} (row {winner[0]}, column {winner[1]}, ✔), and drops the "
            "rest: the map halves in size but keeps the strongest answer in each window."
        )
    else:
        result = f"It keeps the **average** of the {cell.window.size} values, {_n(cell.value)}."
    return [
        intro,
        _grid(cell.window, cell.rows, cell.cols, text),
        result,
        f"The model returned **{_n(cell.model_value)}** for this cell.",
    ]


def cell_steps(
    cell: ConvArithmetic | PoolArithmetic,
    layer_names: Sequence[str],
    input_scale: float = 1 / 255,
    input_offset: float = 0.0,
) -> list[str]:
    """One Markdown block per step, from the input window to the value the model returned."""
    if isinstance(cell, PoolArithmetic):
        return _pool_steps(cell, layer_names)
    return _conv_steps(cell, layer_names, input_scale, input_offset)


def circuit_words(circuit: ChannelCircuit, below_number: int) -> str:
    """What the list of input channels means, for one channel's circuit."""
    through = f", through {' and '.join(circuit.via)} (which keeps each channel apart)" if circuit.via else ""
    return (
        f"Channel {circuit.channel + 1} of {circuit.layer} is a weighted sum of all {circuit.inputs} channels of "
        f"layer {below_number} ({circuit.below}){through}. Each input channel has its own small kernel slice here: "
        "the larger its weights (their L2 norm), the more that channel matters; if its weights sum to more than "
        "zero, that channel lighting up tends to **excite** this one, and if less, to **inhibit** it. "
        "The pictures show what each input channel looks for, where one was computed; a button opens that channel."
    )


def link_words(link: InputLink) -> str:
    """One input channel's weight, for a caption.

    >>> link_words(InputLink(3, 0.5, -0.25))
    'norm 0.5, sum −0.25'
    """
    return f"norm {_n(link.norm)}, sum {_n(link.total)}"


def dense_words(inputs: UnitInputs, owner: str, photo: str) -> str:
    """What a dense unit's inputs are, for the current photo."""
    total = float(inputs.contributions[0].sum())
    pre = total + inputs.bias
    channels = inputs.contributions.shape[1]
    via = f" (channels of {owner}, pooled)" if owner != inputs.maps else ""
    return (
        f"Unit {inputs.unit + 1} of {inputs.layer} adds up every cell of every channel of {inputs.maps}{via}, "
        f"each times its own weight. Grouped by channel, on **{photo}** the {channels} channels contribute "
        f"{_n(total)} in all; with the bias {_n(inputs.bias)} that is {_n(pre)} before the ReLU, so the unit "
        + (f"fires at {_n(pre)}." if pre > 0 else "is silent (0).")
        + " The channels with the largest pushes either way (a button opens one on the Feature map):"
    )
