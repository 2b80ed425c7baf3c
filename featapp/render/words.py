"""Sentences about what the network's numbers show: the app says only what they bear out.

Each function takes measurements from the library and returns Markdown; thresholds that
decide a word ("barely", "partly") are named constants here, so a page never states a
claim about a layer that its model does not support.
"""

from __future__ import annotations

from featapp.engine.filters import COLOUR_ENERGY_THRESHOLD, EDGE_ENERGY_THRESHOLD, FirstLayerSummary
from featapp.stats.detectors import DetectorMatch

__all__ = ["LEARNED_BELOW", "BARELY_ABOVE", "first_layer_words", "detector_words"]

BARELY_ABOVE = 0.9
"""A correlation with the epoch-0 filters above this: training barely changed them."""
LEARNED_BELOW = 0.6
"""A correlation below this: the filters are mostly learned, not their random start."""


def first_layer_words(summary: FirstLayerSummary) -> str:
    """What the first layer's filters are, in words, from :func:`featapp.engine.filters.first_layer_summary`.

    >>> first_layer_words(FirstLayerSummary(32, (3, 14), 0.99))[:60]
    '2 of the 32 filters are oriented edges (at least 70% of the '
    """
    edges = len(summary.edge_like)
    listed = ", ".join(str(i + 1) for i in summary.edge_like[:12]) + (", ..." if edges > 12 else "")
    verb = "is an oriented edge" if edges == 1 else "are oriented edges"
    text = (
        f"{edges} of the {summary.count} filters {verb} (at least {EDGE_ENERGY_THRESHOLD:.0%} of the light-and-dark "
        "pattern is a step from dark to light in one direction)" + (f": {listed}." if edges else ".")
    )
    colours = [i for i in summary.colour_like if i not in summary.edge_like]
    if colours:
        named = ", ".join(str(i + 1) for i in colours[:12]) + (", ..." if len(colours) > 12 else "")
        verb = "is a colour detector" if len(colours) == 1 else "are colour detectors"
        text += (
            f" {len(colours)} other{'' if len(colours) == 1 else 's'} {verb} (at least "
            f"{COLOUR_ENERGY_THRESHOLD:.0%} of the filter is one colour against another, the same all over its "
            f"patch): {named}."
        )
    corr = summary.correlation_with_start
    if corr is None:
        return text
    if corr > BARELY_ABOVE:
        return text + (
            f" Training barely changed this layer: its filters correlate {corr:.2f} with their random start "
            "(epoch 0), so what they respond to is mostly what random 3 x 3 filters respond to."
        )
    if corr >= LEARNED_BELOW:
        return text + f" Training changed this layer partly: its filters correlate {corr:.2f} with epoch 0."
    return text + (
        f" Training replaced the random start: the filters correlate only {corr:.2f} with epoch 0, so their "
        "patterns were learned from the photos."
    )


def detector_words(match: DetectorMatch, summary: FirstLayerSummary | None = None) -> str:
    """Which channel is this network's counterpart of the lecture's detector, and how clearly."""
    other = match.other if match.other.endswith("patches") else f"a {match.other}"
    if match.other_response > 1e-9:
        strength = f"{match.response / match.other_response:.1f} times as strongly as {other}"
    else:
        strength = f"and not {other} at all"
    channel = f"channel {match.channel + 1} of {match.layer}"
    if not match.clear:
        text = (
            f"No channel of {match.layer} is a clear {match.kind} detector: the most selective, {channel}, "
            f"answers a {match.kind} {strength}."
        )
    else:
        text = f"This network's {match.kind} detector is {channel}: it answers a {match.kind} {strength}."
    if summary is not None and match.channel in summary.edge_like and "edge" in match.kind:
        text += " Its filter is an oriented edge by the Sobel measure."
    elif summary is not None and "edge" in match.kind and match.clear:
        text += " Its filter is not a clean edge by the Sobel measure: the preference comes from a rougher pattern."
    return text
