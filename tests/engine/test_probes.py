"""Synthetic probes: each one has the property its name claims, at any size and channel count."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featapp.engine.images import InputSpec
from featapp.engine.probes import (
    COLOURS,
    GRATING_PERIODS,
    colour_patch_box,
    dot_radius,
    probe,
    probe_images,
    probe_names,
)

SPECS = [InputSpec(150, 150, 3), InputSpec(64, 96, 1), InputSpec(33, 47, 3)]


def gray(image: np.ndarray) -> np.ndarray:
    return image[:, :, 0].astype(np.float64)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_every_probe_is_a_uint8_image_at_the_models_size(spec):
    probes = probe_images(spec)
    assert [p.name for p in probes] == probe_names()
    assert len({p.name for p in probes}) == len(probes)
    groups = {p.group for p in probes}
    assert groups == {"edge", "grating", "checkerboard", "dot", "colour"}
    for p in probes:
        assert p.image.dtype == np.uint8
        assert p.image.shape == (spec.height, spec.width, spec.channels), p.name
        assert p.title and p.description.endswith("."), p.name
        assert p.image.min() < p.image.max(), f"{p.name} is blank"
        if p.group != "colour":
            # Achromatic probes: every channel is the same picture.
            assert (p.image == p.image[:, :, :1]).all(), p.name


def test_probe_by_name_matches_the_list_and_unknown_names_are_listed():
    spec = SPECS[0]
    for listed in probe_images(spec):
        assert np.array_equal(probe(listed.name, spec).image, listed.image)
    with pytest.raises(KeyError) as err:
        probe("edge-wobbly", spec)
    assert "edge-wobbly" in str(err.value) and "edge-horizontal" in str(err.value) and "dot" in str(err.value)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_horizontal_edge_changes_only_from_row_to_row(spec):
    image = gray(probe("edge-horizontal", spec).image)
    assert (np.diff(image, axis=1) == 0).all(), "a horizontal edge has no horizontal gradient"
    vertical = np.diff(image, axis=0)
    assert (vertical >= 0).all() and (vertical.sum(axis=0) == 255).all(), "one dark-to-bright step, top to bottom"
    step_row = int(np.argmax(vertical[:, 0]))
    assert abs(step_row - (spec.height - 2) / 2) <= 1, "through the centre"
    assert image[0, 0] == 0 and image[-1, 0] == 255


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_vertical_edge_changes_only_from_column_to_column(spec):
    image = gray(probe("edge-vertical", spec).image)
    assert (np.diff(image, axis=0) == 0).all()
    horizontal = np.diff(image, axis=1)
    assert (horizontal >= 0).all() and (horizontal.sum(axis=1) == 255).all()
    assert image[0, 0] == 0 and image[0, -1] == 255


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize(("name", "bright_corner"), [("edge-diagonal-down", (-1, 0)), ("edge-diagonal-up", (-1, -1))])
def test_diagonal_edges_run_corner_to_corner(spec, name, bright_corner):
    image = gray(probe(name, spec).image)
    gy = np.diff(image, axis=0).mean() * spec.height  # per image height
    gx = np.diff(image, axis=1).mean() * spec.width
    assert gy > 0, "brighter towards the bottom"
    assert (gx < 0) if name.endswith("down") else (gx > 0)
    # Corner to corner: the mean gradient, measured per image side, is balanced.
    assert abs(abs(gy) - abs(gx)) <= 0.1 * abs(gy)
    assert image[bright_corner] == 255
    dark_corner = (0, -1) if name.endswith("down") else (0, 0)
    assert image[dark_corner] == 0


def fft_peak(image: np.ndarray) -> tuple[int, int]:
    """(ky, kx): the strongest frequency in cycles per image, signed."""
    spectrum = np.abs(np.fft.fft2(image - image.mean()))
    ky, kx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    height, width = image.shape
    signed = lambda k, n: int(k) if k <= n // 2 else int(k) - n  # noqa: E731
    return signed(ky, height), signed(kx, width)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("period", GRATING_PERIODS)
def test_grating_frequency_and_orientation_from_the_fft_peak(spec, period):
    for orientation in ("horizontal", "vertical", "diagonal-down", "diagonal-up"):
        image = gray(probe(f"grating-{orientation}-{period}px", spec).image)
        ky, kx = fft_peak(image)
        # Cycles per pixel along each axis; one FFT bin of slack for sizes that are
        # not a whole number of periods.
        fy, fx = ky / spec.height, kx / spec.width
        frequency = float(np.hypot(fy, fx))
        bin_width = 1 / min(spec.height, spec.width)
        assert abs(frequency - 1 / period) <= 1.5 * bin_width, (orientation, period, ky, kx)
        if orientation == "horizontal":
            assert kx == 0 and (np.ptp(image, axis=1) == 0).all(), "horizontal stripes are constant along rows"
        elif orientation == "vertical":
            assert ky == 0 and (np.ptp(image, axis=0) == 0).all()
        else:
            assert abs(abs(fy) - abs(fx)) <= 1.5 * bin_width, "45 degrees"
            # Stripes along x = y (down) vary along (1, -1): ky and kx have opposite signs.
            assert (fy * fx < 0) if orientation == "diagonal-down" else (fy * fx > 0), (orientation, ky, kx)
        # Full contrast: exactly for axis-aligned stripes; diagonal ones are sampled
        # off their peaks at a 4-pixel period.
        assert image.max() == 255 and image.min() <= (0 if orientation in ("horizontal", "vertical") else 16)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_checkerboard_alternates_black_and_white_squares(spec):
    image = gray(probe("checkerboard", spec).image)
    assert set(np.unique(image)) == {0.0, 255.0}
    square = min(spec.height, spec.width) // 10
    assert image[0, 0] == 0 and image[0, square] == 255 and image[square, 0] == 255 and image[square, square] == 0
    # Inside a square all pixels agree; the next square along a row is the opposite colour.
    assert (image[:square, :square] == 0).all()
    row_changes = np.count_nonzero(np.diff(image[0]))
    assert row_changes == (spec.width - 1) // square


def connected_bright_regions(mask: np.ndarray) -> int:
    """Number of 4-connected regions of True (a tiny flood fill, no scipy)."""
    seen = np.zeros_like(mask)
    regions = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        regions += 1
        stack = [start]
        while stack:
            y, x = stack.pop()
            if not (0 <= y < mask.shape[0] and 0 <= x < mask.shape[1]) or seen[y, x] or not mask[y, x]:
                continue
            seen[y, x] = True
            stack.extend([(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)])
    return regions


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dot_is_one_small_bright_spot_in_the_centre(spec):
    image = gray(probe("dot", spec).image)
    bright = image > 127
    assert connected_bright_regions(bright) == 1
    assert set(np.unique(image)) == {0.0, 255.0}, "everything else is black"
    ys, xs = np.nonzero(bright)
    assert abs(ys.mean() - (spec.height - 1) / 2) <= 0.5 and abs(xs.mean() - (spec.width - 1) / 2) <= 0.5
    radius = dot_radius(spec)
    assert bright.sum() <= np.pi * (radius + 1) ** 2 and bright.sum() >= 1
    assert bright.sum() < 0.01 * spec.height * spec.width, "a dot, not a blob"


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("colour", list(COLOURS))
def test_colour_patches_have_the_right_colour_on_grey(spec, colour):
    found = probe(f"colour-{colour}", spec)
    top, left, bottom, right = colour_patch_box(spec)
    rgb = COLOURS[colour]
    if spec.channels == 3:
        expected = np.array(rgb, np.uint8)
    else:
        # What a colour photo of this colour becomes in a grayscale model (Pillow's L).
        expected = np.asarray(Image.new("RGB", (1, 1), rgb).convert("L"), np.uint8).reshape(1)
        assert "grey" in found.title and "no colour" in found.description
    assert (found.image[top:bottom, left:right] == expected).all()
    outside = np.ones(found.image.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert (found.image[outside] == 128).all()
    assert (bottom - top) * (right - left) >= 0.2 * spec.height * spec.width


def test_real_model_layer_1_has_channels_that_prefer_horizontal_or_vertical_edges(model):
    """The claim a student tests: "channel c of layer 1 is a horizontal-edge detector".

    Response of a channel to an edge = the strongest cell in its map on the edge probe
    (either polarity: dark-to-bright and its inverse), minus its strongest cell on plain
    black and plain white, which the edge probe is also made of. A channel "strongly
    prefers" horizontal edges when that response is at least twice its vertical one,
    and not negligible (a quarter of the layer's strongest edge response).
    """
    spec = model.input_spec
    first_map = next(layer for layer in model.layers if layer.is_spatial)
    horizontal = probe("edge-horizontal", spec).image
    vertical = probe("edge-vertical", spec).image
    black = np.zeros_like(horizontal)
    batch = np.stack([horizontal, 255 - horizontal, vertical, 255 - vertical, black, black + 255])
    maps = model.activations(batch, layers=[first_map.name])[first_map.name]
    peak = maps.reshape(len(batch), first_map.channels, -1).max(axis=2)
    plain = np.maximum(peak[4], peak[5])
    to_horizontal = np.maximum(peak[0], peak[1]) - plain
    to_vertical = np.maximum(peak[2], peak[3]) - plain
    strong = 0.25 * max(to_horizontal.max(), to_vertical.max())
    assert strong > 0, "layer 1 does not respond to edges at all"
    prefers_horizontal = np.nonzero((to_horizontal >= 2 * to_vertical) & (to_horizontal >= strong))[0]
    prefers_vertical = np.nonzero((to_vertical >= 2 * to_horizontal) & (to_vertical >= strong))[0]
    assert len(prefers_horizontal) >= 1, f"no channel of {first_map.name} prefers horizontal edges"
    assert len(prefers_vertical) >= 1, f"no channel of {first_map.name} prefers vertical edges"


def test_a_grayscale_model_takes_its_probes(tmp_path):
    from featapp.engine.model import load_model
    from tests.helpers.modelfactory import build_red_model

    gray = load_model(build_red_model(tmp_path / "gray.onnx", height=32, width=40, channels=1), provider="cpu")
    probes = probe_images(gray.input_spec)
    means = gray.activations(np.stack([p.image for p in probes]))["red_mean"][:, 0]
    # The model's mean brightness equals the probe's, so each probe arrived intact.
    assert np.allclose(means, [p.image.mean() / 255 for p in probes], atol=1e-5)
