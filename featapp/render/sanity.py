"""The sanity check's result in words (:mod:`featapp.explain.sanity`): what the student should notice.

The thresholds that decide a word are named here, so the page says only what the numbers bear out.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SURVIVES_ABOVE", "DESTROYED_BELOW", "sanity_words", "correlation_words"]

SURVIVES_ABOVE = 0.6
"""A rank correlation above this with the trained map: the map mostly survives random weights."""
DESTROYED_BELOW = 0.3
"""Below this: the map changed almost completely, so it depended on what the network learned."""


def correlation_words(name: str, correlation: float) -> str:
    """One map's verdict.

    >>> correlation_words("Saliency", 0.82)[:60]
    'Saliency: rank correlation **0.82** with the trained network'
    """
    if correlation > SURVIVES_ABOVE:
        verdict = (
            "it **barely changed**. Much of this map is the photo itself (its edges and contrast), "
            "not what the network learned: be careful reading it as the network's reasons"
        )
    elif correlation < DESTROYED_BELOW:
        verdict = (
            "it **changed almost completely**, so this map does depend on the learned weights: it passes the check"
        )
    else:
        verdict = "it **partly changed**: some of it depends on the learned weights, some is the photo itself"
    return f"{name}: rank correlation **{correlation:.2f}** with the trained network's map; {verdict}."


def sanity_words(saliency: float, gradcam: float, randomised: Sequence[str]) -> str:
    """What to notice, for both maps, with which layers were randomised."""
    layers = ", ".join(randomised)
    return "\n\n".join(
        [
            f"The weights of **{layers}** were replaced by random numbers of the same size. The network now "
            "recognises nothing, so an explanation of *what it learned* should change completely. "
            "A rank correlation of 1 means the same pixels rank highest in both maps; 0 means no relation.",
            "- " + correlation_words("Saliency (SmoothGrad)", saliency),
            "- " + correlation_words("Grad-CAM", gradcam),
            "An explanation that looks the same for a trained and a random network cannot tell you what the "
            "network learned (Adebayo et al., *Sanity Checks for Saliency Maps*, 2018).",
        ]
    )
