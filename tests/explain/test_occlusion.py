"""Occlusion sensitivity, checked by hand on a tiny model and for its two limits on the real one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featapp.engine.images import prepare_image
from featapp.engine.model import load_model
from featapp.explain.occlusion import occlusion_sensitivity, patch_starts
from tests.helpers.modelfactory import build_red_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """48x48 RGB model whose p(red) is the mean of the red channel / 255."""
    return load_model(build_red_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx"), provider="cpu")


@pytest.fixture(scope="module")
def tiny_wide(tmp_path_factory):
    """The same model on a 40 x 64 (rows x cols) input, to tell rows from columns."""
    path = build_red_model(tmp_path_factory.mktemp("tiny_wide") / "wide.onnx", height=40, width=64)
    return load_model(path, provider="cpu")


def expected_drop(image: np.ndarray, top: int, left: int, patch: int, fill: int) -> float:
    """By hand: greying a patch changes the mean red by (fill - red) / 255 per pixel."""
    height, width = image.shape[:2]
    red = image[top : top + patch, left : left + patch, 0].astype(np.float64)
    return float((red - fill).sum() / (255.0 * height * width))


def test_uniform_red_image_drops_by_the_patch_area(tiny):
    image = np.zeros((48, 48, 3), np.uint8)
    image[:, :, 0] = 255
    result = occlusion_sensitivity(tiny, image, patch=8, stride=8)
    assert result.class_name == "red" and result.class_index == 1
    assert result.base_probability == pytest.approx(1.0, abs=1e-6)
    assert result.drop.shape == (6, 6)
    # 64 of 2304 pixels go from 255 to 128.
    assert np.allclose(result.drop, 64 * 127 / (255 * 2304), atol=1e-6)
    assert np.allclose(result.occluded_probability, result.base_probability - result.drop)
    # Every patch drops the same, so every pixel's mean drop is that number too.
    assert np.allclose(result.per_pixel(), 64 * 127 / (255 * 2304), atol=1e-6)


def test_drop_matches_the_hand_computation_on_an_uneven_image(tiny):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    image[:, :24, 0] = np.clip(image[:, :24, 0].astype(int) + 120, 0, 255)  # a redder left half
    patch, stride, fill = 10, 8, 128
    result = occlusion_sensitivity(tiny, image, patch=patch, stride=stride, fill=fill)
    base = image[:, :, 0].mean() / 255
    assert result.class_name == ("red" if base > 0.5 else "other")
    sign = 1 if result.class_name == "red" else -1  # p(other) = 1 - p(red)
    assert result.tops == result.lefts == (0, 8, 16, 24, 32, 38)
    for i, top in enumerate(result.tops):
        for j, left in enumerate(result.lefts):
            assert result.drop[i, j] == pytest.approx(sign * expected_drop(image, top, left, patch, fill), abs=2e-6)
    # per_pixel: the mean drop of the patches covering each pixel, by brute force.
    heat = result.per_pixel()
    for y, x in [(0, 0), (9, 9), (20, 40), (47, 47), (38, 5)]:
        covering = [
            result.drop[i, j]
            for i, top in enumerate(result.tops)
            for j, left in enumerate(result.lefts)
            if top <= y < top + patch and left <= x < left + patch
        ]
        assert covering and heat[y, x] == pytest.approx(np.mean(covering), abs=1e-6)


def test_rows_are_rows_on_a_non_square_input(tiny_wide):
    image = np.full((40, 64, 3), 255, np.uint8)
    image[:, :, 1:] = 0
    image[30:, :, 0] = 0  # the bottom rows are black: greying them raises p(red)
    result = occlusion_sensitivity(tiny_wide, image, patch=10, stride=10)
    assert result.drop.shape == (4, 7)
    assert result.input_hw == (40, 64) and result.per_pixel().shape == (40, 64)
    assert (result.drop[:3] > 0).all() and (result.drop[3] < 0).all()


@pytest.mark.parametrize(("patch", "stride"), [(20, 10), (15, 7), (10, 10), (1, 50), (37, 37), (48, 5), (100, 3)])
def test_grid_shapes_cover_every_pixel_and_stay_inside(tiny, patch, stride):
    image = np.full((48, 48, 3), 200, np.uint8)
    result = occlusion_sensitivity(tiny, image, patch=patch, stride=stride)
    expected = 1 if patch >= 48 else math.ceil((48 - patch) / stride) + 1
    assert result.drop.shape == (expected, expected)
    assert result.tops[0] == 0 and list(result.tops) == sorted(set(result.tops))
    effective = min(patch, 48)
    assert result.tops[-1] + effective == 48, "the last patch ends exactly at the border"
    assert all(b - a <= stride for a, b in zip(result.tops, result.tops[1:], strict=False))
    heat = result.per_pixel()
    assert heat.shape == (48, 48) and np.isfinite(heat).all()


def test_patch_starts_examples():
    assert patch_starts(150, 20, 10) == list(range(0, 131, 10))
    assert patch_starts(10, 4, 4) == [0, 4, 6]
    assert patch_starts(10, 10, 3) == [0]


def test_batch_size_does_not_change_the_result(tiny):
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    small = occlusion_sensitivity(tiny, image, patch=12, stride=6, batch_size=5)
    large = occlusion_sensitivity(tiny, image, patch=12, stride=6, batch_size=500)
    assert np.allclose(small.drop, large.drop, atol=1e-7)


def test_bad_arguments_are_refused(tiny):
    image = np.zeros((48, 48, 3), np.uint8)
    for kwargs in ({"patch": 0}, {"stride": 0}, {"batch_size": 0}, {"fill": 256}, {"patch": 2.5}):
        with pytest.raises(ValueError):
            occlusion_sensitivity(tiny, image, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        occlusion_sensitivity(tiny, np.zeros((50, 48, 3), np.uint8))


# -- the real model ---------------------------------------------------------------------------
def test_occluding_nothing_changes_nothing(model):
    """A grey patch on a grey image is no change at all: the drop is exactly zero."""
    spec = model.input_spec
    grey = np.full((spec.height, spec.width, spec.channels), 128, np.uint8)
    result = occlusion_sensitivity(model, grey, patch=20, stride=10, fill=128)
    assert result.drop.shape == (14, 14)
    assert (result.drop == 0).all()


def test_occluding_the_whole_image_gives_the_grey_images_prediction(model, dog_photo):
    photo = prepare_image(dog_photo, model)
    spec = model.input_spec
    grey = np.full_like(photo, 128)
    result = occlusion_sensitivity(model, photo, patch=max(spec.height, spec.width) + 5, stride=10)
    assert result.drop.shape == (1, 1)
    base = model.predict(photo[np.newaxis])
    grey_prediction = model.predict(grey[np.newaxis])
    assert result.class_index == int(base.indices[0])
    assert result.base_probability == pytest.approx(float(base.confidences[0]), abs=1e-6)
    assert result.occluded_probability[0, 0] == pytest.approx(
        float(grey_prediction.probabilities[0, result.class_index]), abs=1e-6
    )
    assert result.drop[0, 0] == pytest.approx(
        result.base_probability - float(grey_prediction.probabilities[0, result.class_index]), abs=1e-6
    )


def test_real_photo_map(model, cat_photo):
    photo = prepare_image(cat_photo, model)
    result = occlusion_sensitivity(model, photo)
    assert result.drop.shape == (14, 14) and np.isfinite(result.drop).all()
    assert result.class_name in model.class_names
    assert result.patch == 20 and result.stride == 10
    assert result.per_pixel().shape == photo.shape[:2]
    assert not (result.drop == 0).all(), "covering parts of a real photo changes the probability somewhere"


def test_grayscale_model(tmp_path):
    gray = load_model(build_red_model(tmp_path / "gray.onnx", height=32, width=32, channels=1), provider="cpu")
    image = np.full((32, 32, 1), 200, np.uint8)
    result = occlusion_sensitivity(gray, image, patch=8, stride=8, fill=128)
    assert result.drop.shape == (4, 4) and result.class_name == "red"
    assert np.allclose(result.drop, 64 * (200 - 128) / (255 * 32 * 32), atol=1e-6)
