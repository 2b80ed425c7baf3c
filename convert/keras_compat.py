"""Read model files written by Keras 2 (``tf.keras`` up to TF 2.15, or ``tf_keras``) with Keras 3.

Keras 3 loads most Keras-2 ``.h5`` files itself, but not all, and no Keras-2 ``.keras``
file. The differences are in the saved *configuration* only; the weights are stored the
same way. So this module rewrites the configuration in a temporary copy of the file
and lets Keras 3 load the copy. Every rewrite below fixes one difference that was
observed with ``tf_keras`` 2.21 files (the tests write such files and compare Keras 3's
outputs with the ``tf_keras`` outputs, so a wrong rewrite fails a test):

* Keras-2 ``Random*`` augmentation layers save ``rng_type``, which Keras 3 refuses.
* A nested functional model, and a nested ``Sequential`` that has an input layer, start
  with a built-in node in Keras 2, so the outer graph refers to their first call as
  node 1; Keras 3 numbers that call node 0. (Keras 3 itself corrects the references in
  a model's ``output_layers`` for nested functional models, not for ``Sequential``.)
* A nested functional model with one input and one output saves them as one-element
  lists, which Keras 3 then passes on as a list instead of a tensor.
* ``SeparableConv2D`` and ``DepthwiseConv2D`` save ``groups=1``, and ``SeparableConv2D``
  also the unused ``kernel_*`` settings of its parent class; Keras 3 refuses both.
* ``BatchNormalization`` saves ``axis`` as a one-element list; ``LeakyReLU`` calls its
  slope ``alpha`` (Keras 3: ``negative_slope``).
* Layers of a ``Sequential`` repeat the input layer's ``batch_input_shape``, which Keras 3
  only accepts on input layers.
* In ``.keras`` files the functional model class is saved under ``tf_keras``'s module
  name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})

_UNUSED_IN_KERAS3: dict[str, tuple[str, ...]] = {
    "SeparableConv1D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "SeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
}


def is_keras2(version: str | None) -> bool:
    """True for a ``keras_version`` recorded by Keras 2 (``"2.15.0"``, ``"2.21.0"``)."""
    return bool(version) and str(version).split(".")[0] == "2"


def patch_keras2_config(config: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a Keras-2 model configuration, in place, into one Keras 3 reads the same way.

    >>> cfg = {"class_name": "RandomFlip", "config": {"name": "f", "rng_type": "stateful"}}
    >>> patch_keras2_config(cfg)["config"]
    {'name': 'f'}
    """
    _patch_object(config, top_level=True)
    return config


def _patch_object(obj: dict[str, Any], top_level: bool = False) -> None:
    class_name = obj.get("class_name")
    config = obj.get("config")
    module = obj.get("module")
    if isinstance(module, str) and module.startswith("tf_keras") and class_name in MODEL_CLASSES:
        obj["module"] = "keras" if class_name == "Sequential" else "keras.src.models.functional"
    if not isinstance(config, dict):
        return
    if isinstance(class_name, str) and class_name.startswith("Random"):
        config.pop("rng_type", None)
    if (
        class_name in ("SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D")
        and config.get("groups", 1) == 1
    ):
        config.pop("groups", None)
    for key in _UNUSED_IN_KERAS3.get(str(class_name), ()):
        config.pop(key, None)
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = int(config["axis"][0])
    if class_name == "LeakyReLU" and "alpha" in config:
        config["negative_slope"] = config.pop("alpha")
    if class_name in MODEL_CLASSES and isinstance(config.get("layers"), list):
        layers = config["layers"]
        if (
            class_name == "Sequential"
            and layers
            and isinstance(layers[0], dict)
            and layers[0].get("class_name") == "InputLayer"
        ):
            for layer in layers[1:]:
                if isinstance(layer, dict) and isinstance(layer.get("config"), dict):
                    layer["config"].pop("batch_input_shape", None)
        _patch_model(config, top_level)


def _starts_with_builtin_node(layer: dict[str, Any]) -> bool:
    """Whether Keras 2 gave this nested model a node of its own before it was called."""
    if layer.get("class_name") in ("Functional", "Model"):
        return True
    inner = layer.get("config", {}).get("layers") or []
    return layer.get("class_name") == "Sequential" and bool(inner) and inner[0].get("class_name") == "InputLayer"


def _patch_model(config: dict[str, Any], top_level: bool) -> None:
    layers = config["layers"]
    shifted: dict[str, str] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        _patch_object(layer)
        if _starts_with_builtin_node(layer):
            shifted[str(layer.get("config", {}).get("name", layer.get("name")))] = str(layer.get("class_name"))

    def shift(ref: Any, in_outputs: bool = False) -> None:
        if not (isinstance(ref, list) and len(ref) >= 3 and isinstance(ref[0], str) and ref[0] in shifted):
            return
        if in_outputs and shifted[ref[0]] != "Sequential":
            return  # Keras 3 shifts these itself
        ref[1] = max(int(ref[1]) - 1, 0)

    for layer in layers:
        for node in layer.get("inbound_nodes", []) if isinstance(layer, dict) else []:
            if isinstance(node, list):
                for ref in node:
                    shift(ref)
    for key in ("input_layers", "output_layers"):
        refs = config.get(key)
        if not isinstance(refs, list) or not refs:
            continue
        if isinstance(refs[0], str):
            shift(refs, in_outputs=True)
            continue
        for ref in refs:
            shift(ref, in_outputs=True)
        if not top_level and len(refs) == 1 and isinstance(refs[0], list):
            config[key] = refs[0]


def patched_copy(path: Path, container: str, folder: Path) -> Path:
    """A copy of a Keras-2 model file in ``folder`` with its configuration patched.

    ``container`` is ``"h5"`` or ``"zip"`` (a ``.keras`` file).
    """
    if container == "h5":
        import h5py

        target = folder / "model.h5"
        shutil.copyfile(path, target)
        with h5py.File(target, "r+") as handle:
            raw = handle.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            handle.attrs["model_config"] = json.dumps(patch_keras2_config(config))
        return target
    target = folder / "model.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
        for name in source.namelist():
            data = source.read(name)
            if name == "config.json":
                data = json.dumps(patch_keras2_config(json.loads(data))).encode()
            copy.writestr(name, data)
    return target


def load_keras2_file(path: Path, container: str):
    """Load a Keras-2 model file with Keras 3 through a patched temporary copy."""
    import keras

    with tempfile.TemporaryDirectory(prefix="featapp-keras2-") as folder:
        copy = patched_copy(path, container, Path(folder))
        return keras.saving.load_model(str(copy), compile=False)
