"""Export a Keras image classifier to ONNX with every layer's output exposed.

``python -m convert export MODEL.keras --out MODEL.onnx``

* The input is ``input``: float32 NHWC, ``uint8 pixels * input_scale + input_offset``.
* Every layer's output is a graph output named after the layer (nested models are
  unpacked, see :mod:`convert.flatten`); opset 17.
* 4-D outputs are NCHW (:data:`featapp.engine.metadata.SPATIAL_LAYOUT`): ONNX Runtime's
  convolutions are NCHW, so the graph needs no transposes inside and runs faster, and
  ``maps[i, c]`` is a 2-D map.
* The featapp metadata (:mod:`featapp.engine.metadata`) goes into ``metadata_props``.
* Before writing, ONNX Runtime is compared with Keras on every output, and the flat
  graph with the original model; the file is written atomically, and only when all agree.
* Then the gradient model ``MODEL.grad.onnx`` is written beside it (:mod:`convert.gradients`),
  verified against ``tf.GradientTape``; a model with a layer that cannot be differentiated
  still exports, without it (the log names the layer).

From Python, for models with custom layers the command line cannot load::

    model = keras.saving.load_model("model.keras", custom_objects={"MyLayer": MyLayer})
    export_model(model, "model.onnx", ExportOptions(class_names=("cat", "dog")))
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.common import (
    cpu_session,
    sha256_file,
    size_text,
    verification_images,
    write_atomically,
    written_without_gradients,
)
from convert.errors import ConversionError
from convert.flatten import FlatLayer, FlatModel, compute_in_float32, flatten_model
from convert.inspect_keras import KerasFile, check_input_shapes, check_known_classes, inspect_keras_file
from convert.verification import accumulation_lengths, allowed_error, relative_error
from featapp.engine.images import InputSpec
from featapp.engine.metadata import (
    IDENTITY_KEY,
    METADATA_KEY,
    LayerInfo,
    ModelSpec,
    architecture_id,
    with_receptive_fields,
)

__all__ = [
    "ConversionError",
    "ExportOptions",
    "INPUT_RANGES",
    "OPSET",
    "export",
    "export_model",
    "load_keras_file",
    "verification_images",
    "write_atomically",
]

OPSET = 17

INPUT_RANGES: dict[str, tuple[float, float]] = {
    "0..1": (1 / 255, 0.0),
    "0..255": (1.0, 0.0),
    "-1..1": (2 / 255, -1.0),
}
"""What the model's input expects, as ``(scale, offset)`` applied to uint8 pixels."""

# Layers whose geometry featapp.engine.geometry follows, and the config key of their window.
_GEOMETRY_KEYS = {
    "Conv2D": "kernel_size",
    "SeparableConv2D": "kernel_size",
    "DepthwiseConv2D": "kernel_size",
    "MaxPooling2D": "pool_size",
    "AveragePooling2D": "pool_size",
}
# Layers that only pad or crop, and the config key of their ((top, bottom), (left, right)) and its sign.
_PAD_KEYS = {"ZeroPadding2D": ("padding", 1), "Cropping2D": ("cropping", -1)}
# Config keys of other layers that move pixels in ways the receptive-field numbers cannot
# describe. (A Reshape needs none: one that keeps the map's height and width keeps its
# pixels, and with_receptive_fields follows a vector reshaped to 1 x 1.)
_OPAQUE_KEYS = ("kernel_size", "pool_size", "strides", "size", "cropping", "padding", "height", "dims")
_ACTIVATION_KINDS = {"ReLU": "relu", "Softmax": "softmax", "ELU": "elu", "LeakyReLU": "leaky_relu", "PReLU": "prelu"}


@dataclass
class ExportOptions:
    """How to export. ``input_range`` is a key of :data:`INPUT_RANGES`; ``None`` means
    ``"0..1"``, or ``"0..255"`` when a ``Rescaling`` layer of the model reads its input."""

    class_names: tuple[str, ...] | None = None
    trunk: bool = False
    input_range: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 1e-4
    fold_rescaling: bool = True
    gradients: bool = True  # also write <name>.grad.onnx (convert.gradients), when differentiable
    run_id: str = ""  # the training run (see featapp.engine.metadata.model_identity); "" when unknown


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


# -- loading ------------------------------------------------------------------------------
def load_keras_file(info: KerasFile):
    """Load an inspected file with Keras 3, through a patched copy for Keras-2 files."""
    import keras

    from convert.keras_compat import load_keras2_file

    check_known_classes(info, is_known=lambda name: isinstance(getattr(keras.layers, name, None), type))
    try:
        if info.is_keras2:
            return load_keras2_file(info.path, info.container)
        # Keras picks the reader by the file's extension: give it one that matches the content.
        suffixes = (".keras",) if info.container == "zip" else (".h5", ".hdf5")
        if info.path.name.lower().endswith(suffixes):
            return keras.saving.load_model(str(info.path), compile=False)
        with tempfile.TemporaryDirectory(prefix="featapp-load-") as folder:
            copy = Path(folder) / f"model{suffixes[0]}"
            shutil.copyfile(info.path, copy)
            return keras.saving.load_model(str(copy), compile=False)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConversionError(f"Keras could not load '{info.path.name}' ({info.format_text}): {first}") from err


def _input_shapes(model) -> list[tuple[int | None, ...]]:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ConversionError(
            f"'{model.name}' has no defined input (a Sequential model that was never built): "
            "start it with keras.Input(shape=(height, width, channels)) and save it again."
        )
    return [tuple(None if d is None else int(d) for d in tensor.shape) for tensor in inputs]


# -- describing the layers -------------------------------------------------------------------
def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    return (int(value[0]), int(value[1]))


def _pads(value: Any, sign: int) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) from Keras' ``((top, bottom), (left, right))`` (or one
    number, or one per axis), times ``sign`` (-1: cropping)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    rows, cols = _pair(value[0]), _pair(value[1])
    if rows is None or cols is None:
        return None
    return (sign * rows[0], sign * cols[0], sign * rows[1], sign * cols[1])


def _config(op) -> dict[str, Any]:
    try:
        config = op.get_config()
    except NotImplementedError:
        return {}
    return config if isinstance(config, dict) else {}


def describe_layer(layer: FlatLayer) -> tuple[LayerInfo, bool]:
    """The layer's :class:`LayerInfo`, and whether its geometry is opaque to receptive fields."""
    import keras

    config = _config(layer.op)
    kind = layer.kind
    shape = tuple(layer.output.shape[1:])
    if any(d is None for d in shape):
        raise ConversionError(f"layer '{layer.name}' ({kind}) has an output of unknown size {shape}.")
    channels_last = config.get("data_format", "channels_last") in (None, "channels_last")
    kernel = stride = padding = dilation = pads = None
    key = _GEOMETRY_KEYS.get(kind)
    if key and channels_last:
        kernel = _pair(config.get(key))
        stride = _pair(config.get("strides")) or kernel
        padding = str(config.get("padding", "valid")).lower()
        dilation = _pair(config.get("dilation_rate")) if key == "kernel_size" else None
    if kind in _PAD_KEYS and channels_last:
        pads = _pads(config.get(_PAD_KEYS[kind][0]), _PAD_KEYS[kind][1])
    opaque = len(shape) == 3 and kernel is None and pads is None and any(k in config for k in _OPAQUE_KEYS)
    activation = config.get("activation")
    if not isinstance(activation, str):
        activation = _ACTIVATION_KINDS.get(kind)
    params = int(layer.op.count_params()) if isinstance(layer.op, keras.layers.Layer) and layer.op.built else 0
    info = LayerInfo(
        name=layer.name,
        kind=kind,
        output_shape=tuple(int(d) for d in shape),
        params=params,
        kernel=kernel,
        stride=stride,
        padding=padding,
        activation=activation,
        dilation=dilation,
        pads=pads,
    )
    return info, opaque


def describe_layers(flat: FlatModel, input_hw: tuple[int, int]) -> tuple[LayerInfo, ...]:
    described = [describe_layer(layer) for layer in flat.layers]
    opaque = {info.name for info, is_opaque in described if is_opaque}
    return with_receptive_fields(
        [info for info, _ in described], input_hw, inputs=[layer.inputs for layer in flat.layers], opaque=opaque
    )


def _class_names(
    last: LayerInfo, options: ExportOptions, log: Callable[[str], None]
) -> tuple[str | None, tuple[str, ...]]:
    activation = last.activation if not last.is_spatial and last.activation in ("sigmoid", "softmax") else None
    given = tuple(options.class_names) if options.class_names else None
    if activation is None:
        if given:
            raise ConversionError(
                f"--class-names was given, but the last layer '{last.name}' ({last.kind}, activation "
                f"{last.activation or 'none'}) is not a sigmoid or softmax classifier."
            )
        log(
            f"Note: the last layer '{last.name}' has no sigmoid or softmax; the model will show feature maps, "
            "but featapp will not predict classes with it."
        )
        return None, ()
    units = last.channels
    if activation == "sigmoid" and units == 1:
        names = given or ("cat", "dog")
        if len(names) != 2:
            raise ConversionError(
                f"the model ends in one sigmoid unit, so it needs 2 class names (negative, positive), not {len(names)}."
            )
        return activation, names
    names = given or tuple(f"class {i}" for i in range(units))
    if len(names) != units:
        raise ConversionError(f"the model has {units} output classes, but {len(names)} class names were given.")
    return activation, names


# -- conversion ------------------------------------------------------------------------------
def to_onnx(flat: FlatModel, count: int, input_shape: tuple[int, int, int], nchw: list[str]):
    """The first ``count`` flat layers as an ONNX graph with one output per layer."""
    import tensorflow as tf
    import tf2onnx

    activation_model = flat.keras_model(count)
    names = flat.names[:count]

    @tf.function
    def activations(x):
        outputs = activation_model(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(names, outputs, strict=True))

    signature = [tf.TensorSpec((None, *input_shape), tf.float32, name="input")]
    try:
        proto, _ = tf2onnx.convert.from_function(
            activations, input_signature=signature, opset=OPSET, outputs_as_nchw=nchw
        )
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types; the cause stays chained
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConversionError(f"tf2onnx could not convert the model: {first}") from err
    _store_captured_constants(proto, activations.get_concrete_function(*signature))
    # tf2onnx orders outputs by name; put them in layer order, and name the batch axis.
    by_name = {output.name: output for output in proto.graph.output}
    inputs = [i.name for i in proto.graph.input]
    if set(by_name) != set(names) or inputs != ["input"]:
        missing, extra = sorted(set(names) - set(by_name)), sorted(set(by_name) - set(names))
        raise ConversionError(
            f"tf2onnx's graph does not match the model: inputs {_few(inputs)}, layers missing {_few(missing)}, "
            f"outputs that are not layers {_few(extra)}."
        )
    ordered = [by_name[name] for name in names]
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


def _store_captured_constants(proto, concrete) -> None:
    """Turn graph inputs that are constants captured by the traced function into weights.

    A Keras ``Normalization`` layer that was never adapted (EfficientNet built with
    ``weights=None``) holds its mean and variance as plain tensors, not variables; the traced
    function captures them, and tf2onnx, which freezes only variables, leaves them as graph
    inputs. Their values are the captures' own.
    """
    import tensorflow as tf
    from onnx import numpy_helper

    captured = {
        internal.name: external
        for external, internal in concrete.graph.captures
        if internal.dtype != tf.resource and hasattr(external, "numpy")
    }
    used = {name for node in proto.graph.node for name in node.input}
    kept = []
    for value in proto.graph.input:
        constant = next((captured[name] for name in captured if value.name.endswith(name)), None)
        if value.name == "input" or constant is None:
            kept.append(value)
        elif value.name in used:  # (TensorFlow may have folded it into another constant already)
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(constant.numpy()), value.name))
    del proto.graph.input[:]
    proto.graph.input.extend(kept)


def _few(names: list[str], shown: int = 5) -> str:
    """At most ``shown`` names of a list, and how many more: an error message stays one line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(f"'{n}'" for n in names[:shown]) or "none") + more


def verify(
    model,
    flat: FlatModel,
    proto,
    names: list[str],
    spec: ModelSpec,
    model_scaling: tuple[float, float],
    tolerance: float,
    log: Callable[[str], None],
) -> dict[str, float]:
    """Compare ONNX Runtime with the flat Keras graph on every output, and the flat graph
    with the original model on its output. Raises :class:`ConversionError` when they disagree."""
    import keras

    images = verification_images(spec.input.height, spec.input.width, spec.input.channels)
    fed = images.astype(np.float32) * np.float32(spec.input_scale) + np.float32(spec.input_offset)
    original_input = images.astype(np.float32) * np.float32(model_scaling[0]) + np.float32(model_scaling[1])
    try:
        session = cpu_session(proto.SerializeToString())
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types; the cause stays chained
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConversionError(f"ONNX Runtime cannot run the converted graph ({first}); nothing written.") from err
    got = dict(zip(names, session.run(names, {"input": fed}), strict=True))
    reference = flat.keras_model()(fed, training=False)
    reference = reference if isinstance(reference, (list, tuple)) else [reference]
    want = {layer.name: keras.ops.convert_to_numpy(value) for layer, value in zip(flat.layers, reference, strict=True)}
    errors: dict[str, float] = {}
    shape = (spec.input.height, spec.input.width, spec.input.channels)
    reads = [list(layer.inputs) for layer in flat.layers[: len(spec.layers)]]
    allowed = {
        layer.name: allowed_error(tolerance, length)
        for layer, length in zip(spec.layers, accumulation_lengths(spec.layers, shape, reads), strict=True)
    }
    for name in names:
        expected = want[name]
        if expected.ndim == 4:
            expected = np.transpose(expected, (0, 3, 1, 2))
        if got[name].shape != expected.shape:
            raise ConversionError(
                f"ONNX Runtime gives layer '{name}' the shape {got[name].shape}, Keras {expected.shape}; nothing written."
            )
        errors[name] = relative_error(expected, got[name])
        log(f"  {name:24s} {str(got[name].shape[1:]):18s} max error {errors[name]:.1e} of the layer's largest value")
        if not errors[name] <= allowed[name]:
            raise ConversionError(
                f"ONNX Runtime and Keras disagree on layer '{name}' (error {errors[name]:.2e} of its largest value, "
                f"allowed {allowed[name]:.1e}: the tolerance, or float32 rounding of the sums behind it); "
                "nothing written."
            )
    final = flat.layers[flat.output_index].name
    with warnings.catch_warnings():
        # Keras warns when a functional model saved with a list of inputs gets a bare tensor.
        warnings.filterwarnings("ignore", message=".*structure", category=UserWarning)
        warnings.filterwarnings("ignore", message="Expected: ", category=UserWarning)
        original = keras.ops.convert_to_numpy(model(original_input, training=False))
    unpacked = relative_error(original, want[final])
    log(f"  unpacked graph vs the original model's output: max error {unpacked:.1e}")
    if not unpacked <= allowed.get(final, tolerance):
        raise ConversionError(
            f"unpacking the model changed its output (error {unpacked:.2e}); this is a converter bug, please report it. "
            "Nothing written."
        )
    return errors


# -- the two entry points -----------------------------------------------------------------
def export(
    keras_path: str | os.PathLike,
    onnx_path: str | os.PathLike,
    options: ExportOptions | None = None,
    log: Callable[[str], None] = print,
) -> ModelSpec:
    """Convert a ``.keras``/``.h5`` file; see the module docstring. Returns the metadata written."""
    keras_path = Path(keras_path)
    info = inspect_keras_file(keras_path)
    log(f"Reading {keras_path} ({info.format_text}) ...")
    model = load_keras_file(info)
    return export_model(model, onnx_path, options, log, source=info)


def export_model(
    model,
    onnx_path: str | os.PathLike,
    options: ExportOptions | None = None,
    log: Callable[[str], None] = print,
    source: KerasFile | None = None,
) -> ModelSpec:
    """Convert an already loaded Keras 3 model (e.g. one with custom layers, loaded with ``custom_objects``)."""
    import onnx

    options = options or ExportOptions()
    onnx_path = Path(onnx_path)
    name = source.path.name if source else model.name
    check_input_shapes(name, _input_shapes(model))
    try:
        output_count = len(model.outputs)
    except (AttributeError, ValueError):
        output_count = 1
    if output_count != 1:
        raise ConversionError(f"'{name}' has {output_count} outputs; featapp needs a model with one classifier output.")
    if options.trunk and options.class_names:
        raise ConversionError("--class-names makes no sense with --trunk: a trunk has no classifier.")
    if options.input_range is not None and options.input_range not in INPUT_RANGES:
        raise ConversionError(f"unknown input range '{options.input_range}': use one of {', '.join(INPUT_RANGES)}.")
    _, height, width, channels = _input_shapes(model)[0]
    assert height is not None and width is not None and channels is not None

    log(f"Unpacking the layers of '{model.name}' (input {height}x{width}x{channels}) ...")
    switched = compute_in_float32(model)
    if switched:
        log(f"  {len(switched)} layer(s) computed in half precision (mixed precision); exporting them in float32")
    flat = flatten_model(model, fold_rescaling=options.fold_rescaling)
    if flat.dropped:
        log(
            f"  left out {len(flat.dropped)} augmentation layer(s) that do nothing at inference: {', '.join(flat.dropped)}"
        )
    default_range = flat.default_input_range
    model_scaling = INPUT_RANGES[options.input_range or default_range]
    scale, offset = model_scaling
    if flat.folded_rescaling:
        layer_name, r_scale, r_offset = flat.folded_rescaling
        scale, offset = model_scaling[0] * r_scale, model_scaling[1] * r_scale + r_offset
        log(
            f"  moved the leading Rescaling layer '{layer_name}' (x * {r_scale:.6g} + {r_offset:.6g}) into the input scaling"
        )
    log(
        f"  input: uint8 pixels * {scale:.6g} + {offset:.6g} (the model expects {options.input_range or default_range})"
    )

    infos = describe_layers(flat, (height, width))
    count = len(infos)
    if options.trunk:
        spatial = [i for i, info in enumerate(infos) if info.is_spatial]
        if not spatial:
            raise ConversionError(f"'{name}' has no layer with a 2-D feature map, so it has no trunk to export.")
        count = spatial[-1] + 1
        infos = infos[:count]
        log(f"  trunk only: {count} layers, up to '{infos[-1].name}' ({infos[-1].shape_text})")
        output_activation = None
        class_names: tuple[str, ...] = ()
    else:
        if flat.output_index != count - 1:
            raise ConversionError(
                f"the model's output comes from layer '{flat.layers[flat.output_index].name}', which is not its last layer."
            )
        output_activation, class_names = _class_names(infos[-1], options, log)

    extra: dict[str, Any] = {"trunk": bool(options.trunk)}
    if switched:
        extra["float32_instead_of_mixed_precision"] = switched
    if flat.dropped:
        extra["dropped_layers"] = list(flat.dropped)
    if flat.folded_rescaling:
        extra["folded_rescaling"] = {
            "layer": flat.folded_rescaling[0],
            "scale": flat.folded_rescaling[1],
            "offset": flat.folded_rescaling[2],
        }
    if source:
        extra["source_format"] = source.format_text
    extra.update(options.extra)
    spec = ModelSpec(
        input=InputSpec(height, width, channels),
        layers=tuple(infos),
        input_scale=scale,
        input_offset=offset,
        output_activation=output_activation,
        class_names=tuple(class_names),
        source_file=source.path.name if source else "",
        source_sha256=sha256_file(source.path) if source else "",
        versions=converter_versions(),
        extra=extra,
    )

    spec = with_identity(spec, options.run_id)
    names = [info.name for info in infos]
    nchw = [info.name for info in infos if info.is_spatial]
    log(f"Converting {count} layers to ONNX (opset {OPSET}, maps as {spec.layout}) ...")
    proto = to_onnx(flat, count, (height, width, channels), nchw)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    onnx.checker.check_model(proto)

    log(f"Verifying ONNX Runtime against Keras on every output ({len(verification_images(2, 2, 1))} test images) ...")
    verify(model, flat, proto, names, spec, model_scaling, options.tolerance, log)

    data = proto.SerializeToString()
    write_atomically(onnx_path, data)
    log(f"Wrote {onnx_path} ({size_text(len(data))}, {sum(i.params for i in infos):,} parameters)")
    if options.gradients:
        from convert.gradients import write_gradient_model

        log("Writing the gradient model (saliency, Grad-CAM, feature visualisation) ...")
        try:
            write_gradient_model(onnx_path, log=log)
        except ConversionError as err:
            raise ConversionError(written_without_gradients(onnx_path, err)) from err
    return spec


def with_identity(spec: ModelSpec, run_id: str = "") -> ModelSpec:
    """``spec`` with its identity in ``extra`` (:func:`featapp.engine.metadata.model_identity`)."""
    from dataclasses import replace

    identity = {"architecture": architecture_id(spec), "run": run_id}
    return replace(spec, extra={**spec.extra, IDENTITY_KEY: identity})
