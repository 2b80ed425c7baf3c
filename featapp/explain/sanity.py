"""A sanity check for saliency and Grad-CAM (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

An explanation of what a network learned should change when what it learned is destroyed.
Here the weights of the top ``k`` layers that have weights are replaced by random numbers
of the same scale (a seeded normal with each tensor's own standard deviation), cascading
from the classifier down as the paper does, and both maps are computed again for the same
photo and class. Their Spearman rank correlation with the trained network's maps says how
much of each map survives: near 1, the map barely depends on the learned weights (it shows
the photo's edges rather than the network's reasons); near 0, it does.

The randomised network is written as a copy of the ONNX file with its gradient model
(rebuilt by :func:`featapp.explain.backward.build_gradient_model`, so its backward pass uses the
random weights too), into featapp's cache folder; the same model, ``k`` and seed reuse it.

>>> result = sanity_check(model, photo, top=6, seed=0)          # doctest: +SKIP
>>> result.saliency_correlation, result.gradcam_correlation    # doctest: +SKIP
(0.41, -0.05)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featapp.cache import atomic_write_bytes, default_cache_dir
from featapp.engine.images import ImageSource
from featapp.engine.metadata import METADATA_KEY
from featapp.engine.model import FeatureModel, load_model
from featapp.explain.backward import GRADIENTS_KEY, build_gradient_model, gradient_path
from featapp.explain.gradcam import gradcam
from featapp.explain.gradients import GradientError, Gradients
from featapp.explain.saliency import smoothgrad

__all__ = [
    "SanityCheck",
    "weighted_layers",
    "randomised_copy",
    "randomised_gradients",
    "sanity_check",
    "spearman",
    "SALIENCY_SAMPLES",
]

SALIENCY_SAMPLES = 16
"""Noisy copies SmoothGrad averages over (as the Model page's saliency)."""


@dataclass(frozen=True)
class SanityCheck:
    """The trained and randomised maps of one photo (``(H, W)`` each), for the same class."""

    randomised: tuple[str, ...]
    class_index: int
    cam_layer: str
    saliency: np.ndarray
    saliency_random: np.ndarray
    gradcam: np.ndarray
    gradcam_random: np.ndarray

    @property
    def saliency_correlation(self) -> float:
        return spearman(self.saliency, self.saliency_random)

    @property
    def gradcam_correlation(self) -> float:
        return spearman(self.gradcam, self.gradcam_random)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as Spearman's coefficient needs)."""
    flat = np.asarray(values, np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    sorted_values = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(flat)]
    average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(flat))
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same shape (0 when either is constant).

    >>> spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 45]))
    1.0
    >>> spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1]))
    -1.0
    >>> round(spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])), 4)
    0.9487
    """
    if np.shape(a) != np.shape(b):
        raise ValueError(f"maps of different shapes: {np.shape(a)} and {np.shape(b)}")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    scale = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / scale) if scale > 0 else 0.0


def _layer_weights(proto, layer_names: list[str], input_name: str) -> dict[str, list[str]]:
    """For each layer, the float initializers of the operators between the layers below it and its output."""
    producers = {output: node for node in proto.graph.node for output in node.output}
    floats = {init.name for init in proto.graph.initializer if init.data_type == 1}  # TensorProto.FLOAT
    stop = set(layer_names) | {input_name}
    found: dict[str, list[str]] = {}
    claimed: set[str] = set()
    for name in layer_names:
        names: list[str] = []
        pending, seen = [name], set()
        while pending:
            tensor = pending.pop()
            node = producers.get(tensor)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            for source in node.input:
                if source in floats and source not in claimed:
                    names.append(source)
                    claimed.add(source)
                elif source and source not in stop:
                    pending.append(source)
        found[name] = names
    return found


def weighted_layers(model: FeatureModel) -> list[str]:
    """The layers with weights, bottom to top: the order the cascade undoes from the top."""
    import onnx

    proto = onnx.load(str(model.path), load_external_data=False)
    found = _layer_weights(proto, model.layer_names, model.spec.input_name)
    return [name for name in model.layer_names if found[name]]


def _randomise(proto, layers: list[str], model: FeatureModel, seed: int) -> None:
    from onnx import numpy_helper

    owned = _layer_weights(proto, model.layer_names, model.spec.input_name)
    wanted = {name for layer in layers for name in owned[layer]}
    rng = np.random.default_rng(seed)
    for init in proto.graph.initializer:
        if init.name not in wanted:
            continue
        values = numpy_helper.to_array(init)
        spread = float(values.std())
        if values.size > 1 and spread > 0:
            random = rng.normal(0.0, spread, values.shape).astype(values.dtype)
        else:  # a single number or a constant tensor (a zero bias): its own scale is 0, keep it
            random = values
        init.CopyFrom(numpy_helper.from_array(random, init.name))


def _cache_folder() -> Path:
    return default_cache_dir() / "sanity"


def randomised_copy(model: FeatureModel, top: int, seed: int = 0, folder: str | os.PathLike | None = None) -> Path:
    """A copy of ``model``'s file with the top ``top`` weighted layers re-randomised (seeded), and
    its gradient model beside it. Made once per model, ``top`` and seed; returns the copy's path."""
    import onnx

    layers = weighted_layers(model)
    if not 1 <= top <= len(layers):
        raise ValueError(f"{model.path.name} has {len(layers)} layers with weights; top must be 1 to {len(layers)}")
    folder = Path(folder) if folder is not None else _cache_folder()
    path = folder / f"{model.sha256[:16]}-top{top}-seed{seed}.onnx"
    if path.is_file() and gradient_path(path).is_file():
        return path
    proto = onnx.load(str(model.path), load_external_data=False)
    _randomise(proto, layers[-top:], model, seed)
    data = proto.SerializeToString()
    spec_json = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
    grad = build_gradient_model(proto, spec_json, hashlib.sha256(data).hexdigest())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(gradient_path(path), grad.SerializeToString())
    atomic_write_bytes(path, data)  # last: a copy without its gradient model is made again
    return path


def randomised_gradients(model: FeatureModel, top: int, seed: int = 0, folder=None) -> Gradients:
    """The randomised copy's gradients, in a session of their own (not kept by
    :func:`featapp.explain.gradients.load_gradients`, which holds every model it loads)."""
    import onnx

    path = randomised_copy(model, top, seed, folder)
    randomised = load_model(path, provider=model.provider)
    proto = onnx.load(str(gradient_path(path)))
    info = json.loads({p.key: p.value for p in proto.metadata_props}[GRADIENTS_KEY])
    return Gradients(randomised, proto, info)


def sanity_check(
    grads: Gradients, image: np.ndarray | ImageSource, top: int, seed: int = 0, folder=None
) -> SanityCheck:
    """SmoothGrad and Grad-CAM of ``image`` for the trained network (``grads``) and for it with
    its top ``top`` weighted layers re-randomised, both for the class the trained network predicts.

    Raises :class:`GradientError` for a model without a classifier or gradient model.
    """
    model = grads.model
    grads.require_classifier("sanity-check maps")
    batch = model.prepare(image)
    if len(batch) != 1:
        raise ValueError(f"one image at a time, not {len(batch)}")
    class_index = int(model.predict(batch).indices[0])
    layers = weighted_layers(model)
    if not layers:
        raise GradientError(f"'{model.path.name}' has no layers with weights to randomise.")
    top = min(max(top, 1), len(layers))
    random_grads = randomised_gradients(model, top, seed, folder)
    trained_sal = smoothgrad(grads, batch, class_index, samples=SALIENCY_SAMPLES, seed=seed)
    random_sal = smoothgrad(random_grads, batch, class_index, samples=SALIENCY_SAMPLES, seed=seed)
    trained_cam = gradcam(grads, batch, class_index=class_index)
    random_cam = gradcam(random_grads, batch, layer=trained_cam.layer, class_index=class_index)
    return SanityCheck(
        randomised=tuple(layers[-top:]),
        class_index=class_index,
        cam_layer=trained_cam.layer,
        saliency=trained_sal.per_pixel,
        saliency_random=random_sal.per_pixel,
        gradcam=trained_cam.per_pixel,
        gradcam_random=random_cam.per_pixel,
    )
