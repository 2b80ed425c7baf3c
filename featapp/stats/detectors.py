"""This network's counterparts of the lecture's layer-1 detectors, found with probes.

The lecture's Figure 2 shows "a horizontal-edge detector": channel 1 of layer 1 of
*another* network. Channel numbers are arbitrary, so the same channel of this network
need not detect anything like it. Here each first-layer channel is shown the probes
(:mod:`featapp.engine.probes`) and the channel that answers a horizontal edge most
strongly *relative to* a vertical one is this network's counterpart; likewise for a
vertical edge, and for one colour patch relative to the other colours.

An edge has two polarities (dark above bright, or bright above dark) and a ReLU channel
answers only one of them, so each edge probe is shown both ways and the stronger answer
counts. A response is the channel's peak over its map minus its answer to plain grey,
so a channel that is simply bright everywhere does not win.

>>> matches = lecture_detectors(model)                              # doctest: +SKIP
>>> matches[0].kind, matches[0].channel, round(matches[0].selectivity, 2)  # doctest: +SKIP
('horizontal edge', 7, 0.71)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featapp.engine.model import FeatureModel
from featapp.engine.probes import BACKGROUND_GREY, COLOURS, colour_patch_box, probe

__all__ = ["DetectorMatch", "lecture_detectors", "CLEAR_SELECTIVITY"]

CLEAR_SELECTIVITY = 0.5
"""A selectivity ``(a - b) / (a + b)`` of at least this (``a`` at least 3x ``b``) makes a clear detector."""


@dataclass(frozen=True)
class DetectorMatch:
    """The first-layer channel (0-based) that answers ``kind`` best relative to ``other``.

    ``response`` and ``other_response`` are the two answers (peak above grey);
    ``selectivity`` is ``(response - other_response) / (response + other_response)``, from
    -1 to 1: 1 means it answers only ``kind``.
    """

    kind: str
    other: str
    layer: str
    channel: int
    response: float
    other_response: float
    selectivity: float

    @property
    def clear(self) -> bool:
        return self.selectivity >= CLEAR_SELECTIVITY and self.response > 0


def _selectivity(response: np.ndarray, other: np.ndarray) -> np.ndarray:
    response, other = np.maximum(response, 0.0), np.maximum(other, 0.0)
    total = response + other
    return np.divide(response - other, total, out=np.zeros_like(total), where=total > 1e-9)


def _best(kind: str, other: str, layer: str, response: np.ndarray, other_response: np.ndarray) -> DetectorMatch:
    selectivity = _selectivity(response, other_response)
    # Most selective first; among near-ties (within 0.05) the strongest answer.
    candidates = np.flatnonzero(selectivity >= selectivity.max() - 0.05)
    channel = int(candidates[np.argmax(response[candidates])])
    return DetectorMatch(
        kind,
        other,
        layer,
        channel,
        float(response[channel]),
        float(other_response[channel]),
        float(selectivity[channel]),
    )


def lecture_detectors(model: FeatureModel, layer: str | None = None) -> list[DetectorMatch]:
    """The horizontal-edge, vertical-edge and colour counterparts in ``layer`` (default:
    the first convolution). A model without 2-D maps there raises ``ValueError``."""
    spec = model.spec.input
    if layer is None:
        layer = next((info.name for info in model.layers if info.kind == "Conv2D"), None)
        if layer is None:
            raise ValueError("this model has no convolution to look for edge detectors in")
    names = ["edge-horizontal", "edge-vertical", *(f"colour-{c}" for c in COLOURS)]
    images = [probe(name, spec).image for name in names]
    flat_grey = np.full_like(images[0], BACKGROUND_GREY)
    batch = np.stack([*images, *(255 - image for image in images[:2]), flat_grey])
    maps = model.activations(batch, layers=[layer])[layer]
    if maps.ndim != 4:
        raise ValueError(f"{layer!r} has no 2-D maps, so there are no edge detectors to find in it")
    grey = maps[-1].reshape(maps.shape[1], -1).mean(axis=1)
    peak = maps.reshape(len(maps), maps.shape[1], -1).max(axis=2) - grey
    horizontal = np.maximum(peak[0], peak[len(names)])
    vertical = np.maximum(peak[1], peak[len(names) + 1])
    matches = [
        _best("horizontal edge", "vertical edge", layer, horizontal, vertical),
        _best("vertical edge", "horizontal edge", layer, vertical, horizontal),
    ]
    matches.append(_colour_match(model, layer, maps[2 : 2 + len(COLOURS)], grey))
    return matches


def _colour_match(model: FeatureModel, layer: str, colour_maps: np.ndarray, grey: np.ndarray) -> DetectorMatch:
    """The channel whose answer inside one colour's patch most exceeds its answer to the others'."""
    top, left, bottom, right = colour_patch_box(model.spec.input)
    rows, cols = colour_maps.shape[2:]
    height, width = model.spec.input.height, model.spec.input.width
    # The patch's box in map cells, a little inside it so the patch's border does not count.
    r0, r1 = int(top * rows / height) + 1, max(int(bottom * rows / height) - 1, int(top * rows / height) + 2)
    c0, c1 = int(left * cols / width) + 1, max(int(right * cols / width) - 1, int(left * cols / width) + 2)
    inside = colour_maps[:, :, r0:r1, c0:c1].mean(axis=(2, 3)) - grey  # (colours, channels)
    best_colour = np.argmax(inside, axis=0)
    response = inside[best_colour, np.arange(inside.shape[1])]
    others = (inside.sum(axis=0) - response) / max(len(inside) - 1, 1)
    match = _best("colour patch", "other colour patches", layer, response, others)
    colour = list(COLOURS)[int(best_colour[match.channel])]
    return DetectorMatch(
        f"{colour} patch",
        "other colour patches",
        layer,
        match.channel,
        match.response,
        match.other_response,
        match.selectivity,
    )
