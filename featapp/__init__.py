"""featapp: look inside a convnet, layer by layer.

The lecture's ``activation_model.predict(img_tensor)``, in ONNX Runtime:

>>> import featapp
>>> model = featapp.load_model()                               # doctest: +SKIP
>>> photo = featapp.prepare_image("cat.1700.jpg", model)       # doctest: +SKIP
>>> acts = model.activations(photo)                            # doctest: +SKIP
>>> acts["conv2d"][0, 0].shape   # image 0, channel 1 of layer 1  # doctest: +SKIP
(148, 148)

Everything a user can get wrong raises a :class:`FeatappError` (:class:`ImageError`,
:class:`ModelError`, :class:`DatasetError`, :class:`DownloadError`, :class:`GradientError`,
:class:`StatsFileError` and the rest), with a message written for a student.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featapp.cache import default_cache_dir
    from featapp.data.dataset import Dataset, DatasetError, DatasetImage
    from featapp.data.download import DownloadError, download_photos
    from featapp.data.provenance import file_sha256, trained_on
    from featapp.engine.geometry import ReceptiveField, receptive_box
    from featapp.engine.images import ImageError, InputSpec, prepare_image
    from featapp.engine.metadata import LayerInfo, ModelSpec
    from featapp.engine.model import FeatureModel, ModelError, Prediction, load_model
    from featapp.engine.probes import Probe, probe, probe_images
    from featapp.engine.snapshots import Snapshot, load_snapshots
    from featapp.errors import FeatappError
    from featapp.explain.featurevis import FeatureVisualization, visualize
    from featapp.explain.gradcam import GradCAM, gradcam
    from featapp.explain.gradients import GradientError, GradientResult, Gradients, load_gradients
    from featapp.explain.occlusion import OcclusionMap, occlusion_sensitivity
    from featapp.explain.saliency import SaliencyMap, saliency, smoothgrad
    from featapp.stats.analysis import NeuronStats, StatsFileError, load_cached, load_or_scan, scan
    from featapp.stats.classes import SeparationTable, contributions, layer_separation, network_health, output_weights
    from featapp.stats.projection import Projection, load_or_fit, nearest
    from featapp.stats.ranking import RankedHit

__all__ = [
    # every error a user can cause
    "FeatappError",
    # the model
    "load_model",
    "FeatureModel",
    "Prediction",
    "LayerInfo",
    "ModelSpec",
    "ModelError",
    # images
    "prepare_image",
    "InputSpec",
    "ImageError",
    "probe_images",
    "probe",
    "Probe",
    # datasets and one neuron across many images
    "Dataset",
    "DatasetImage",
    "DatasetError",
    "scan",
    "load_or_scan",
    "load_cached",
    "NeuronStats",
    "RankedHit",
    "StatsFileError",
    "default_cache_dir",
    # what tells the classes apart, and a map of the feature space
    "layer_separation",
    "SeparationTable",
    "output_weights",
    "contributions",
    "network_health",
    "Projection",
    "load_or_fit",
    "nearest",
    # the course photos, and which of them the model has seen
    "download_photos",
    "DownloadError",
    "trained_on",
    "file_sha256",
    # where a cell looks, and what the prediction depends on
    "ReceptiveField",
    "receptive_box",
    "occlusion_sensitivity",
    "OcclusionMap",
    # gradients (from MODEL.grad.onnx): saliency, Grad-CAM, what a channel looks for
    "load_gradients",
    "Gradients",
    "GradientResult",
    "GradientError",
    "saliency",
    "smoothgrad",
    "SaliencyMap",
    "gradcam",
    "GradCAM",
    "visualize",
    "FeatureVisualization",
    # features emerging over training
    "load_snapshots",
    "Snapshot",
]


# Public names are loaded on first use (PEP 562), so that importing one module of the
# library (``featapp.engine.images`` in a training loop, ``featapp.render`` in a test) does
# not load every folder, and the folder rules of docs/architecture.md can be checked.
_EXPORTS = {
    "RankedHit": "featapp.stats.ranking",
    "NeuronStats": "featapp.stats.analysis",
    "StatsFileError": "featapp.stats.analysis",
    "load_cached": "featapp.stats.analysis",
    "load_or_scan": "featapp.stats.analysis",
    "scan": "featapp.stats.analysis",
    "default_cache_dir": "featapp.cache",
    "SeparationTable": "featapp.stats.classes",
    "contributions": "featapp.stats.classes",
    "layer_separation": "featapp.stats.classes",
    "network_health": "featapp.stats.classes",
    "output_weights": "featapp.stats.classes",
    "Dataset": "featapp.data.dataset",
    "DatasetError": "featapp.data.dataset",
    "DatasetImage": "featapp.data.dataset",
    "DownloadError": "featapp.data.download",
    "download_photos": "featapp.data.download",
    "FeatureVisualization": "featapp.explain.featurevis",
    "visualize": "featapp.explain.featurevis",
    "ReceptiveField": "featapp.engine.geometry",
    "receptive_box": "featapp.engine.geometry",
    "GradCAM": "featapp.explain.gradcam",
    "gradcam": "featapp.explain.gradcam",
    "GradientError": "featapp.explain.gradients",
    "GradientResult": "featapp.explain.gradients",
    "Gradients": "featapp.explain.gradients",
    "load_gradients": "featapp.explain.gradients",
    "ImageError": "featapp.engine.images",
    "InputSpec": "featapp.engine.images",
    "prepare_image": "featapp.engine.images",
    "LayerInfo": "featapp.engine.metadata",
    "ModelSpec": "featapp.engine.metadata",
    "FeatureModel": "featapp.engine.model",
    "ModelError": "featapp.engine.model",
    "Prediction": "featapp.engine.model",
    "load_model": "featapp.engine.model",
    "OcclusionMap": "featapp.explain.occlusion",
    "occlusion_sensitivity": "featapp.explain.occlusion",
    "Probe": "featapp.engine.probes",
    "probe": "featapp.engine.probes",
    "probe_images": "featapp.engine.probes",
    "Projection": "featapp.stats.projection",
    "load_or_fit": "featapp.stats.projection",
    "nearest": "featapp.stats.projection",
    "file_sha256": "featapp.data.provenance",
    "trained_on": "featapp.data.provenance",
    "SaliencyMap": "featapp.explain.saliency",
    "saliency": "featapp.explain.saliency",
    "smoothgrad": "featapp.explain.saliency",
    "Snapshot": "featapp.engine.snapshots",
    "load_snapshots": "featapp.engine.snapshots",
    "FeatappError": "featapp.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featapp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
