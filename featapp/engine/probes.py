"""Synthetic probe images, generated in code: test a claim about what a channel detects.

"Channel 1 of layer 1 is a horizontal-edge detector" is a claim a student can check:
show the model a horizontal edge and a vertical edge and compare the channel's
responses. The probes are made with numpy at the model's input size and channel count
(a grayscale model gets grayscale probes), so they work with or without a dataset.

The set (names are stable ids, the app and the CLI use them):

* ``edge-horizontal``, ``edge-vertical``, ``edge-diagonal-down``, ``edge-diagonal-up``:
  one straight step from black to white through the centre, anti-aliased over one
  pixel. A horizontal edge is dark above and bright below.
* ``grating-<orientation>-<period>px``: a sinusoidal grating (stripes) with
  orientation ``horizontal``, ``vertical``, ``diagonal-down`` or ``diagonal-up`` and a
  period of 4, 8 or 16 pixels. "Horizontal" is the direction of the stripes, so its
  brightness varies from row to row.
* ``checkerboard``: black and white squares, ten across the shorter side.
* ``dot``: one small bright disc in the centre of a black image.
* ``colour-red``, ``colour-green``, ``colour-blue``, ``colour-yellow``: a saturated
  square covering the middle half of the image on mid-grey (128). For a grayscale
  model these become grey squares of the colour's luminance (ITU-R 601, as Pillow and
  :func:`featapp.prepare_image` convert colour photos), and the description says so.

>>> from featapp.engine.images import InputSpec
>>> [p.name for p in probe_images(InputSpec(150, 150, 3))][:2]
['edge-horizontal', 'edge-vertical']
>>> probe("dot", InputSpec(64, 64, 1)).image.shape
(64, 64, 1)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from featapp.engine.images import InputSpec

__all__ = ["Probe", "probe_images", "probe", "probe_names", "GRATING_PERIODS", "COLOURS", "BACKGROUND_GREY"]

GRATING_PERIODS: tuple[int, ...] = (4, 8, 16)
"""Grating periods in input pixels: fine, medium and coarse stripes."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
}
"""Colour patches, as RGB."""

BACKGROUND_GREY = 128
"""Background of the colour patches (also the occlusion fill): the middle of 0..255."""

_ORIENTATIONS: dict[str, float] = {
    # Angle of the direction along which brightness changes (the stripes' normal), in
    # image coordinates (x to the right, y down).
    "horizontal": 90.0,
    "vertical": 0.0,
    "diagonal-down": -45.0,  # stripes run from top-left to bottom-right (constant along x = y)
    "diagonal-up": 45.0,  # stripes run from bottom-left to top-right (constant along x = -y)
}


@dataclass(frozen=True, eq=False)
class Probe:
    """One synthetic stimulus.

    ``image`` is uint8 ``(height, width, channels)``, ready for ``model.activations``.
    Probes compare by identity (the image is an array).
    """

    name: str
    title: str
    description: str
    image: np.ndarray
    group: str = ""
    """``"edge"``, ``"grating"``, ``"checkerboard"``, ``"dot"`` or ``"colour"``."""


def _grid(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to the image centre: (y down, x right)."""
    y = np.arange(spec.height, dtype=np.float64) - (spec.height - 1) / 2
    x = np.arange(spec.width, dtype=np.float64) - (spec.width - 1) / 2
    return y[:, np.newaxis], x[np.newaxis, :]


def _to_image(gray: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Gray levels in 0..1, shape (H, W), to uint8 (H, W, C)."""
    levels = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(levels[:, :, np.newaxis], spec.channels, axis=2))


def _step(distance: np.ndarray) -> np.ndarray:
    """0 (black) on the negative side, 1 (white) on the positive, a one-pixel ramp between."""
    return np.clip(distance + 0.5, 0.0, 1.0)


def _edge(spec: InputSpec, normal_y: float, normal_x: float) -> np.ndarray:
    y, x = _grid(spec)
    length = math.hypot(normal_y, normal_x)
    return _to_image(_step((y * normal_y + x * normal_x) / length), spec)


def _grating(spec: InputSpec, angle_degrees: float, period: int) -> np.ndarray:
    # Measured from pixel (0, 0), which is white, so every period hits full black and white.
    y = np.arange(spec.height, dtype=np.float64)[:, np.newaxis]
    x = np.arange(spec.width, dtype=np.float64)[np.newaxis, :]
    theta = math.radians(angle_degrees)
    # Snap tiny cos/sin values to 0 so axis-aligned gratings are exactly constant
    # along their stripes.
    along_x = round(math.cos(theta), 12)
    along_y = round(math.sin(theta), 12)
    phase = 2 * math.pi * (x * along_x + y * along_y) / period
    return _to_image(0.5 + 0.5 * np.cos(phase), spec)


def _checkerboard(spec: InputSpec) -> tuple[np.ndarray, int]:
    square = max(1, min(spec.height, spec.width) // 10)
    rows = np.arange(spec.height)[:, np.newaxis] // square
    cols = np.arange(spec.width)[np.newaxis, :] // square
    return _to_image(((rows + cols) % 2).astype(np.float64), spec), square


def dot_radius(spec: InputSpec) -> float:
    """Radius of the dot probe in pixels: about 2% of the shorter side, at least 1."""
    return max(1.0, min(spec.height, spec.width) / 50)


def _dot(spec: InputSpec) -> np.ndarray:
    y, x = _grid(spec)
    # For an even size the centre falls between pixels; the disc is centred there.
    return _to_image((y**2 + x**2 <= dot_radius(spec) ** 2).astype(np.float64), spec)


def _luminance(rgb: tuple[int, int, int]) -> int:
    """Pillow's RGB -> L conversion (ITU-R 601-2 luma), the one prepare_image uses."""
    r, g, b = rgb
    return (r * 299 + g * 587 + b * 114 + 500) // 1000


def colour_patch_box(spec: InputSpec) -> tuple[int, int, int, int]:
    """Box ``(top, left, bottom, right)`` of a colour probe's patch: the middle half."""
    top, left = spec.height // 4, spec.width // 4
    return top, left, spec.height - top, spec.width - left


def _colour(spec: InputSpec, rgb: tuple[int, int, int]) -> np.ndarray:
    image = np.full((spec.height, spec.width, spec.channels), BACKGROUND_GREY, dtype=np.uint8)
    top, left, bottom, right = colour_patch_box(spec)
    image[top:bottom, left:right] = rgb if spec.channels == 3 else _luminance(rgb)
    return image


_Maker = Callable[[InputSpec], Probe]


def _makers() -> dict[str, _Maker]:
    makers: dict[str, _Maker] = {}

    def add(name: str, title: str, description: str, group: str, draw: Callable[[InputSpec], np.ndarray]) -> None:
        makers[name] = lambda spec: Probe(name, title, description, draw(spec), group)

    add(
        "edge-horizontal",
        "Horizontal edge",
        "A horizontal-edge detector lights up along the middle row, where dark (above) meets bright (below).",
        "edge",
        lambda spec: _edge(spec, 1.0, 0.0),
    )
    add(
        "edge-vertical",
        "Vertical edge",
        "A vertical-edge detector lights up along the middle column, where dark (left) meets bright (right).",
        "edge",
        lambda spec: _edge(spec, 0.0, 1.0),
    )
    add(
        "edge-diagonal-down",
        "Diagonal edge (\\)",
        "A detector of this diagonal lights up along the line from top-left to bottom-right; "
        "the lower-left side is bright.",
        "edge",
        lambda spec: _edge(spec, spec.width, -spec.height),
    )
    add(
        "edge-diagonal-up",
        "Diagonal edge (/)",
        "A detector of this diagonal lights up along the line from bottom-left to top-right; "
        "the lower-right side is bright.",
        "edge",
        lambda spec: _edge(spec, spec.width, spec.height),
    )
    words = {
        "horizontal": "horizontal",
        "vertical": "vertical",
        "diagonal-down": "diagonal (\\)",
        "diagonal-up": "diagonal (/)",
    }
    for orientation, angle in _ORIENTATIONS.items():
        for period in GRATING_PERIODS:
            add(
                f"grating-{orientation}-{period}px",
                f"{words[orientation].capitalize()} stripes, every {period} px",
                f"A detector of {words[orientation]} texture at this scale responds all over these stripes, "
                f"which repeat every {period} pixels.",
                "grating",
                functools.partial(_grating, angle_degrees=angle, period=period),
            )
    add(
        "checkerboard",
        "Checkerboard",
        "A corner or grid detector lights up where the black and white squares meet at their corners.",
        "checkerboard",
        lambda spec: _checkerboard(spec)[0],
    )
    add(
        "dot",
        "Single bright dot",
        "A spot detector lights up only at the centre; in layer 1 the map around the dot shows the filter itself.",
        "dot",
        _dot,
    )
    for colour, rgb in COLOURS.items():
        add(
            f"colour-{colour}",
            f"{colour.capitalize()} patch",
            f"A {colour} detector lights up over the square in the middle and stays quiet on the grey around it.",
            "colour",
            functools.partial(_colour, rgb=rgb),
        )
    return makers


_MAKERS = _makers()


def probe_names() -> list[str]:
    """Every probe's name, in the order :func:`probe_images` returns them."""
    return list(_MAKERS)


def _for_spec(probe_: Probe, spec: InputSpec) -> Probe:
    if probe_.group == "colour" and spec.channels == 1:
        return Probe(
            probe_.name,
            probe_.title + " (in grey)",
            "This model sees no colour, so the patch is the grey of the colour's brightness; "
            "a channel that reacts responds to that brightness.",
            probe_.image,
            probe_.group,
        )
    return probe_


def probe_images(spec: InputSpec) -> list[Probe]:
    """All probes at the model's input size and channel count.

    >>> probes = probe_images(InputSpec(150, 150, 3))
    >>> len(probes), probes[0].image.dtype
    (22, dtype('uint8'))
    """
    return [_for_spec(make(spec), spec) for make in _MAKERS.values()]


def probe(name: str, spec: InputSpec) -> Probe:
    """The probe called ``name``; :class:`KeyError` lists the names that exist.

    >>> probe("edge-vertical", InputSpec(8, 8, 1)).image[0, :, 0].tolist()
    [0, 0, 0, 0, 255, 255, 255, 255]
    """
    try:
        make = _MAKERS[name]
    except KeyError:
        raise KeyError(f"no probe {name!r}; the probes are: {', '.join(_MAKERS)}") from None
    return _for_spec(make(spec), spec)
