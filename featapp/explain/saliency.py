"""Saliency maps: which pixels the class score is most sensitive to.

Plain saliency is ``|d logit / d pixel|`` (the largest over colour channels); SmoothGrad
(Smilkov et al. 2017) averages it over copies of the image with Gaussian noise added,
which removes most of the speckle of the plain gradient.

>>> grads = featapp.load_gradients(model)                        # doctest: +SKIP
>>> saliency(grads, "cat.1700.jpg").per_pixel.shape               # doctest: +SKIP
(150, 150)
>>> smoothgrad(grads, "cat.1700.jpg", samples=16, seed=0)         # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featapp.engine.images import ImageSource
from featapp.explain.gradients import Gradients

__all__ = ["SaliencyMap", "saliency", "smoothgrad"]


@dataclass(frozen=True)
class SaliencyMap:
    """``per_pixel[y, x]``: the largest absolute gradient over colour channels;
    ``gradient``: the raw (averaged) gradient, like the input (H, W, C);
    ``class_index``: the class whose logit was differentiated."""

    per_pixel: np.ndarray
    gradient: np.ndarray
    class_index: int
    samples: int = 1


def _one_image(grads: Gradients, image: np.ndarray | ImageSource) -> np.ndarray:
    batch = grads.model.prepare(image)
    if len(batch) != 1:
        raise ValueError(f"one image at a time, not {len(batch)}")
    return batch


def saliency(grads: Gradients, image: np.ndarray | ImageSource, class_index: int | None = None) -> SaliencyMap:
    """Plain gradient saliency of ``class_index`` (default: the predicted class)."""
    grads.require_classifier("saliency maps")
    batch = _one_image(grads, image)
    result = grads.class_gradient(batch, class_index)
    assert result.class_indices is not None  # class_gradient records the class of each image
    gradient = result.gradients["input"][0]
    return SaliencyMap(np.abs(gradient).max(axis=-1), gradient, int(result.class_indices[0]))


def smoothgrad(
    grads: Gradients,
    image: np.ndarray | ImageSource,
    class_index: int | None = None,
    samples: int = 16,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int = 4,
) -> SaliencyMap:
    """SmoothGrad: saliency averaged over ``samples`` noisy copies, ``batch_size`` at a time.

    ``noise`` is the standard deviation as a fraction of the input's range (0..255 pixels);
    the same ``seed`` gives the same map. Each copy's gradient is its own, so the batch size
    changes only the working memory, and all 16 of the app's copies at once made the largest
    peak of its heavy views (bench/results/arena_memory.md).
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    grads.require_classifier("saliency maps")
    batch = _one_image(grads, image)
    if class_index is None:
        class_index = int(grads.model.predict(batch).indices[0])
    spec = grads.model.spec
    clean = grads.scaled(batch)
    sigma = noise * 255.0 * np.abs(np.asarray(spec.pixel_scales, np.float64))  # per graph channel
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0.0, sigma, (samples, *clean.shape[1:])).astype(np.float32)
    gradient = np.concatenate(
        [
            grads.class_gradient(batch, class_index, scaled=noisy[start : start + batch_size]).gradients["input"]
            for start in range(0, samples, batch_size)
        ]
    )
    per_pixel = np.abs(gradient).max(axis=-1).mean(axis=0)
    return SaliencyMap(per_pixel, gradient.mean(axis=0), class_index, samples)
