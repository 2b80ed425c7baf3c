"""featapp: look inside a convnet, layer by layer.

>>> import featapp
>>> model = featapp.load_model()                       # doctest: +SKIP
>>> acts = model.activations(["cat.1.jpg"])            # doctest: +SKIP
>>> acts["conv2d"][0, 0].shape   # image 0, channel 1 of layer 1   # doctest: +SKIP
(148, 148)
"""

from featapp.dataset import Dataset, DatasetError, DatasetImage
from featapp.geometry import ReceptiveField, receptive_box
from featapp.images import ImageError, InputSpec, prepare_image
from featapp.metadata import LayerInfo, ModelSpec
from featapp.model import FeatureModel, ModelError, Prediction, load_model

__all__ = [
    "load_model",
    "FeatureModel",
    "Prediction",
    "ModelError",
    "prepare_image",
    "ImageError",
    "InputSpec",
    "LayerInfo",
    "ModelSpec",
    "ReceptiveField",
    "receptive_box",
    "Dataset",
    "DatasetImage",
    "DatasetError",
]
