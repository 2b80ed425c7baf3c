"""Grad-CAM (Selvaraju et al. 2017): where in the image a conv layer's evidence for a class lies.

Each channel of the layer is weighted by the mean gradient of the class logit over its
map; the weighted sum of the maps, with negative values cut to zero, is the class
activation map, upsampled to the photo.

>>> cam = gradcam(featapp.load_gradients(model), "cat.1700.jpg")   # doctest: +SKIP
>>> cam.layer, cam.map.shape, cam.per_pixel.shape                 # doctest: +SKIP
('conv2d_3', (15, 15), (150, 150))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from featapp.engine.images import ImageSource
from featapp.explain.gradients import GradientError, Gradients

__all__ = ["GradCAM", "default_cam_layer", "gradcam"]


@dataclass(frozen=True)
class GradCAM:
    """``map``: the class activation map at the layer's resolution (>= 0);
    ``per_pixel``: it resized to the input; ``weights``: one per channel."""

    layer: str
    map: np.ndarray
    per_pixel: np.ndarray
    weights: np.ndarray
    class_index: int


def default_cam_layer(grads: Gradients) -> str:
    """The last convolution of the model: the usual Grad-CAM layer."""
    convs = [layer.name for layer in grads.model.layers if layer.is_spatial and layer.kind.endswith("Conv2D")]
    spatial = [layer.name for layer in grads.model.layers if layer.is_spatial]
    if not (convs or spatial):
        raise GradientError("Grad-CAM needs a layer with 2-D maps, and this model has none.")
    return (convs or spatial)[-1]


def gradcam(
    grads: Gradients,
    image: np.ndarray | ImageSource,
    layer: str | None = None,
    class_index: int | None = None,
) -> GradCAM:
    """Grad-CAM of ``class_index`` (default: the predicted class) at ``layer`` (default: the last conv)."""
    grads.require_classifier("Grad-CAM maps")
    batch = grads.model.prepare(image)
    if len(batch) != 1:
        raise ValueError(f"one image at a time, not {len(batch)}")
    layer = layer or default_cam_layer(grads)
    if not grads.model.layer(layer).is_spatial:
        raise GradientError(
            f"Grad-CAM needs a layer with 2-D maps; {layer!r} is {grads.model.layer(layer).shape_text}."
        )
    result = grads.class_gradient(batch, class_index)
    assert result.class_indices is not None  # class_gradient records the class of each image
    class_index = int(result.class_indices[0])
    maps = result.activations[layer][0]
    gradient = result.gradients[layer][0]
    weights = gradient.mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(weights, maps, axes=1), 0.0).astype(np.float32)
    spec = grads.model.input_spec
    per_pixel = np.asarray(Image.fromarray(cam).resize((spec.width, spec.height), Image.Resampling.BILINEAR))
    return GradCAM(layer, cam, per_pixel, weights, class_index)
