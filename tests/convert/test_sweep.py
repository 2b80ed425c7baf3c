"""The recipe sweep's pure parts, the transport packing, and the training wrapper used on
backends without tf.data (checked here on TensorFlow, the backend CI has)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from convert.sweep import PACK_QUALITY, RECIPES, Recipe, pack, smoothed_best
from featapp.engine.images import InputSpec, prepare_image


def test_smoothed_best_is_the_best_mean_of_consecutive_epochs():
    history = [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate([0.5, 0.7, 0.6, 0.9, 0.8])]
    # windows of 3: (0.5+0.7+0.6)/3 = 0.6, (0.7+0.6+0.9)/3 = 0.7333, (0.6+0.9+0.8)/3 = 0.7667
    assert smoothed_best(history, 3) == pytest.approx(2.3 / 3)
    assert smoothed_best(history, 1) == pytest.approx(0.9)
    assert smoothed_best(history[:2], 5) == pytest.approx(0.6)  # shorter than the window: the mean of all


def test_smoothed_best_without_validation_is_nan():
    assert math.isnan(smoothed_best([{"epoch": 1, "loss": 0.7}], 5))
    assert math.isnan(smoothed_best([], 5))


def test_recipes_have_unique_names_and_one_is_the_cpu_recipe():
    assert len({r.name for r in RECIPES}) == len(RECIPES)
    assert Recipe("book_length", 90) in RECIPES
    assert Recipe("x", None, 5e-4, 0.1, 7).arguments(12) == [
        "--epochs=12",
        "--learning-rate=0.0005",
        "--weight-decay=0.1",
        "--seed=7",
    ]


def test_pack_writes_train_and_validation_as_the_network_sees_them(dataset, tmp_path):
    source = tmp_path / "source"
    for split in ("train", "validation", "test"):
        for image in dataset.sample(split, per_class=1, seed=3):
            link = source / split / image.class_name / image.path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(image.path.resolve())
    out = tmp_path / "packed"
    pack(source, out)

    written = sorted(p.relative_to(out).parts[:2] for p in out.rglob("*.jpg"))
    assert written == [("train", "cats"), ("train", "dogs"), ("validation", "cats"), ("validation", "dogs")]
    assert not (out / "test").exists()  # the test split never travels
    for original in (source / "train").rglob("*.jpg"):
        packed = out / "train" / original.parent.name / original.name
        with Image.open(packed) as image:
            assert (image.format, image.size, image.mode) == ("JPEG", (150, 150), "RGB")
            pixels = np.asarray(image).astype(int)
        expected = prepare_image(original, InputSpec(150, 150, 3)).astype(int)
        assert np.abs(pixels - expected).mean() < 1.5, f"quality {PACK_QUALITY} should change pixels by under 1.5"


@pytest.mark.slow
def test_augmentation_wrapper_changes_training_inputs_only(tmp_path):
    import keras

    from convert.train import build_model, with_augmentation

    keras.utils.set_random_seed(0)
    model = build_model("float32")
    wrapper = with_augmentation(model)
    x = np.random.default_rng(0).random((4, 150, 150, 3)).astype("float32")
    # Inference (validation, prediction) sees the photo itself...
    np.testing.assert_allclose(wrapper.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # ...and the weights trained are the saved model's own.
    assert {id(v) for v in wrapper.trainable_variables} == {id(v) for v in model.trainable_variables}
    # In training, and only then, the augmentation layers in front move the pixels.
    augment = next(layer for layer in wrapper.layers if layer.name == "augmentation")
    np.testing.assert_array_equal(augment(x, training=False), x)
    assert not np.allclose(augment(x, training=True), x)
