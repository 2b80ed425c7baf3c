"""Export a Keras image classifier to ONNX with every layer's output exposed.

``python -m convert export MODEL.keras --out MODEL.onnx``

* Every layer's output is a graph output named after the layer; the input is ``input``.
* 4-D outputs are NCHW (``outputs_as_nchw``): ONNX Runtime's convolutions are NCHW, so
  the graph needs no transposes and runs faster; featapp returns maps in this layout.
* The featapp metadata (:mod:`featapp.metadata`) goes into ``metadata_props``.
* Before writing, ONNX Runtime is compared with Keras on every output; the file is
  written atomically, and only when they agree.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from featapp.images import InputSpec
from featapp.metadata import METADATA_KEY, LayerInfo, ModelSpec, with_receptive_fields

OPSET = 17


class ConversionError(Exception):
    """A model that cannot be converted, with a one-line message for the user."""


@dataclass
class ExportOptions:
    class_names: tuple[str, ...] | None = None
    trunk_only: bool = False
    input_scale: float = 1 / 255
    input_offset: float = 0.0
    extra: dict | None = None
    verify_tolerance: float = 1e-4


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converter_versions() -> dict[str, str]:
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def load_keras_model(path: Path):
    import keras

    if not path.is_file():
        raise ConversionError(f"No such file: {path}")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001
        raise ConversionError(f"'{path}' could not be loaded as a Keras model: {err}") from None


def flat_layers(model) -> list:
    """Layers in order, with nested models replaced by their own layers."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(flat_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            found.append(layer)
    return found


def _pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def describe_layer(layer, output_shape: tuple[int, ...]) -> LayerInfo:
    config = layer.get_config()
    kernel = _pair(config.get("kernel_size") or config.get("pool_size"))
    stride = _pair(config.get("strides")) if kernel else None
    activation = config.get("activation")
    return LayerInfo(
        name=layer.name,
        kind=type(layer).__name__,
        output_shape=tuple(int(d) for d in output_shape),
        params=int(layer.count_params()),
        kernel=kernel,
        stride=stride,
        padding=config.get("padding") if kernel else None,
        activation=activation if isinstance(activation, str) else None,
    )


def build_activation_model(model, trunk_only: bool = False):
    """A Keras model whose outputs are every (flattened) layer's output."""
    import keras

    layers = flat_layers(model)
    if trunk_only:
        last_spatial = max(i for i, layer in enumerate(layers) if len(layer.output.shape) == 4)
        layers = layers[: last_spatial + 1]
    inputs = keras.Input(shape=model.inputs[0].shape[1:], name="input", dtype="float32")
    x = inputs
    outputs = []
    for layer in layers:
        x = layer(x)
        outputs.append(x)
    return keras.Model(inputs, outputs, name=f"{model.name}_activations"), layers


def export(
    keras_path: Path,
    onnx_path: Path,
    options: ExportOptions | None = None,
    log: Callable[[str], None] = print,
) -> ModelSpec:
    import onnx
    import tensorflow as tf
    import tf2onnx

    options = options or ExportOptions()
    keras_path, onnx_path = Path(keras_path), Path(onnx_path)
    log(f"Loading {keras_path} ...")
    model = load_keras_model(keras_path)
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    activation_model, layers = build_activation_model(model, options.trunk_only)
    shapes = [tuple(int(d) for d in out.shape[1:]) for out in activation_model.outputs]
    infos = [describe_layer(layer, shape) for layer, shape in zip(layers, shapes)]
    infos = list(with_receptive_fields(infos, (height, width)))
    last_activation = infos[-1].activation if not infos[-1].is_spatial else None
    output_activation = last_activation if last_activation in ("sigmoid", "softmax") else None
    class_names = options.class_names or (("cat", "dog") if output_activation == "sigmoid" else ())
    spec = ModelSpec(
        input=InputSpec(height, width, channels),
        layers=tuple(infos),
        input_scale=options.input_scale,
        input_offset=options.input_offset,
        output_activation=output_activation,
        class_names=tuple(class_names),
        source_file=keras_path.name,
        source_sha256=sha256_file(keras_path),
        versions=converter_versions(),
        extra=dict(options.extra or {}),
    )

    log(f"Converting {len(layers)} layers to ONNX (opset {OPSET}) ...")
    signature = (tf.TensorSpec((None, height, width, channels), tf.float32, name="input"),)
    nchw = [layer.name for layer, shape in zip(layers, shapes) if len(shape) == 3]
    proto, _ = tf2onnx.convert.from_keras(
        activation_model, input_signature=signature, opset=OPSET, outputs_as_nchw=nchw
    )
    output_names = [o.name for o in proto.graph.output]
    for name in output_names:
        if name not in {layer.name for layer in layers}:
            raise ConversionError(f"tf2onnx named an output '{name}', which is not a layer name")
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    onnx.checker.check_model(proto)

    log("Verifying ONNX Runtime against Keras on every output ...")
    verify(activation_model, proto, [layer.name for layer in layers], (height, width, channels), options, log)

    write_atomically(onnx_path, proto.SerializeToString())
    log(f"Wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")
    return spec


def verify(activation_model, proto, names, shape, options: ExportOptions, log) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    height, width, channels = shape
    # Random noise, and a smooth image that looks more like a photo (gradients, blobs).
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    smooth = np.stack([np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(channels)], axis=-1) * 0.5 + 0.5
    batch = np.concatenate([rng.random((3, height, width, channels)), smooth[None]]).astype(np.float32)
    expected = activation_model.predict(batch, verbose=0)
    actual = session.run(names, {"input": batch})
    for name, want, got in zip(names, expected, actual):
        if want.ndim == 4:
            want = np.transpose(want, (0, 3, 1, 2))
        scale = max(float(np.abs(want).max()), 1e-6)
        error = float(np.abs(want - got).max()) / scale
        if error > options.verify_tolerance:
            raise ConversionError(
                f"ONNX Runtime and Keras disagree on layer '{name}' (relative error {error:.2e}); nothing written"
            )
        log(f"  {name:20s} {str(got.shape[1:]):18s} max relative error {error:.1e}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
