"""featapp: look inside a convnet, layer by layer.

The lecture's ``activation_model.predict(img_tensor)``, in ONNX Runtime:

>>> import featapp
>>> model = featapp.load_model()                               # doctest: +SKIP
>>> photo = featapp.prepare_image("cat.1700.jpg", model)       # doctest: +SKIP
>>> acts = model.activations(photo)                            # doctest: +SKIP
>>> acts["conv2d"][0, 0].shape   # image 0, channel 1 of layer 1  # doctest: +SKIP
(148, 148)

Everything a user can get wrong raises :class:`ImageError`, :class:`ModelError` or
:class:`DatasetError`, with a message written for a student.
"""

from featapp.analysis import NeuronHit, NeuronStats, StatsFileError, load_cached, load_or_scan, scan
from featapp.cache import default_cache_dir
from featapp.classes import SeparationTable, contributions, layer_separation, network_health, output_weights
from featapp.dataset import Dataset, DatasetError, DatasetImage
from featapp.download import DownloadError, download_photos
from featapp.featurevis import FeatureVisualization, visualize
from featapp.geometry import ReceptiveField, receptive_box
from featapp.gradcam import GradCAM, gradcam
from featapp.gradients import GradientError, GradientResult, Gradients, load_gradients
from featapp.images import ImageError, InputSpec, prepare_image
from featapp.metadata import LayerInfo, ModelSpec
from featapp.model import FeatureModel, ModelError, Prediction, load_model
from featapp.occlusion import OcclusionMap, occlusion_sensitivity
from featapp.probes import Probe, probe, probe_images
from featapp.projection import Projection, load_or_fit, nearest
from featapp.provenance import file_sha256, trained_on
from featapp.saliency import SaliencyMap, saliency, smoothgrad
from featapp.snapshots import Snapshot, load_snapshots

__all__ = [
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
    "NeuronHit",
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
