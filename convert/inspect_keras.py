"""Look at a Keras model file before loading it, to refuse what cannot work with a clear message.

Nothing here imports TensorFlow or Keras, so ``python -m convert export`` answers in
well under a second for a missing file, a photo renamed ``.keras``, a weights-only
file, a TensorFlow SavedModel folder, a Lambda or custom layer, or a model whose input
is not one image. What Keras itself would say about these is long, and for custom
layers it names neither the layer nor a way forward.

Accepted files (each checked by its content, not its name):

* ``.keras`` (a ZIP archive with ``config.json``), written by Keras 3, or by Keras 2
  (``tf_keras``/``tf.keras`` 2.13 and later); Keras-2 files are read through
  :mod:`convert.keras_compat`;
* legacy ``.h5``/``.hdf5`` (an HDF5 file with a ``model_config`` attribute), written by
  Keras 2 or Keras 3.

>>> info = inspect_keras_file("models/cats_dogs_small.keras")      # doctest: +SKIP
>>> info.container, info.writer, info.input_shapes                  # doctest: +SKIP
('zip', 'Keras 3.15.1', ((None, 150, 150, 3),))
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.errors import ConversionError
from convert.keras_compat import MODEL_CLASSES, is_keras2

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"),
    (b"GIF8", 0, "a GIF image"),
    (b"WEBP", 8, "a WebP image"),
    (b"BM", 0, "a BMP image"),
    (b"%PDF", 0, "a PDF document"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"\x93NUMPY", 0, "a NumPy array file"),
)

_HOW_TO_SAVE = "Save the whole model with model.save('model.keras') (Keras 3) or model.save('model.h5') (Keras 2)."


@dataclass(frozen=True)
class LayerEntry:
    """One layer as the saved configuration describes it, before anything is loaded."""

    name: str
    class_name: str
    module: str | None
    registered_name: str | None
    inside: tuple[str, ...]  # names of the models around it, outermost first


@dataclass(frozen=True)
class KerasFile:
    """What a Keras model file holds, read without Keras."""

    path: Path
    container: str  # "zip" (.keras) or "h5"
    keras_version: str | None
    config: dict[str, Any]
    layers: tuple[LayerEntry, ...]
    input_shapes: tuple[tuple[int | None, ...], ...] | None  # batch axis included; None if unknown

    @property
    def is_keras2(self) -> bool:
        return is_keras2(self.keras_version)

    @property
    def writer(self) -> str:
        """``"Keras 3.15.1"``, ``"Keras 2.21.0"`` or ``"an unknown Keras version"``."""
        return f"Keras {self.keras_version}" if self.keras_version else "an unknown Keras version"

    @property
    def format_text(self) -> str:
        """How the file is described in progress output, e.g. ``.keras file written by Keras 3.15.1``."""
        kind = ".keras file" if self.container == "zip" else "legacy HDF5 (.h5) file"
        return f"{kind} written by {self.writer}"


def _what_is(head: bytes, path: Path) -> str:
    for magic, offset, what in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return what
    if path.suffix.lower() == ".onnx":
        return "an ONNX file (convert it with 'python -m convert export FILE.onnx --out FILE_featapp.onnx')"
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "a JSON or text file (a model's configuration alone is not enough; the weights are needed too)"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return "neither a ZIP archive (.keras) nor an HDF5 file (.h5)"


def _not_a_model(path: Path, what: str) -> ConversionError:
    return ConversionError(f"'{path.name}' is not a Keras model file: it is {what}. {_HOW_TO_SAVE}")


def _read_zip(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ConversionError(f"'{path.name}' looks like a .keras file but the archive is damaged ({err}).") from None
    with archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            raise _not_a_model(path, "a ZIP archive without a model configuration (config.json)")
        if "model.weights.h5" not in names:
            raise ConversionError(
                f"'{path.name}' has a model configuration but no weights (model.weights.h5): the file is incomplete. "
                + _HOW_TO_SAVE
            )
        try:
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
        except (ValueError, zipfile.BadZipFile, OSError) as err:
            raise ConversionError(
                f"'{path.name}' is a damaged .keras file: its configuration cannot be read ({err})."
            ) from None
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return config, (str(version) if version else None)


def _read_h5(path: Path) -> tuple[dict[str, Any], str | None]:
    import h5py  # comes with Keras; no TensorFlow

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ConversionError(f"'{path.name}' is a damaged HDF5 file and cannot be opened ({err}).") from None
    with handle:
        attrs = handle.attrs
        if "model_config" not in attrs:
            if "layer_names" in attrs or "layers" in handle or "vars" in handle:
                raise ConversionError(
                    f"'{path.name}' holds only weights (saved with save_weights), not the model's architecture. "
                    + _HOW_TO_SAVE
                )
            raise _not_a_model(path, "an HDF5 file without a Keras model configuration")
        raw = attrs["model_config"]
        version = attrs.get("keras_version")
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConversionError(
            f"'{path.name}' is a damaged .h5 model: its configuration cannot be read ({err})."
        ) from None
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return config, (str(version) if version is not None else None)


def _walk(obj: Any, inside: tuple[str, ...]) -> Iterator[LayerEntry]:
    if not isinstance(obj, dict) or "class_name" not in obj:
        return
    raw_config = obj.get("config")
    config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    name = str(config.get("name") or obj.get("name") or obj["class_name"])
    yield LayerEntry(
        name=name,
        class_name=str(obj["class_name"]),
        module=obj.get("module") if isinstance(obj.get("module"), str) else None,
        registered_name=obj.get("registered_name") if isinstance(obj.get("registered_name"), str) else None,
        inside=inside,
    )
    if isinstance(config.get("layers"), list):
        for layer in config["layers"]:
            yield from _walk(layer, (*inside, name))
    if isinstance(config.get("layer"), dict):  # wrappers such as TimeDistributed
        yield from _walk(config["layer"], (*inside, name))


def _shape_of_input_layer(layer: dict[str, Any]) -> tuple[int | None, ...] | None:
    config = layer.get("config", {})
    for key in ("batch_shape", "batch_input_shape"):
        if isinstance(config.get(key), list):
            return tuple(None if d is None else int(d) for d in config[key])
    return None


def _input_shapes(config: dict[str, Any]) -> tuple[tuple[int | None, ...], ...] | None:
    """Declared input shapes of the outermost model, when the configuration states them."""
    model = config.get("config", {})
    layers = model.get("layers") if isinstance(model, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    if config.get("class_name") == "Sequential":
        first = layers[0] if isinstance(layers[0], dict) else {}
        if first.get("class_name") == "InputLayer":
            shape = _shape_of_input_layer(first)
        else:
            shape = _shape_of_input_layer({"config": first.get("config", {})})
        if shape is None and isinstance(model.get("build_input_shape"), list):
            shape = tuple(None if d is None else int(d) for d in model["build_input_shape"])
        return None if shape is None else (shape,)
    refs = model.get("input_layers")
    if not isinstance(refs, list) or not refs:
        return None
    if isinstance(refs[0], str):  # one input, written as a single [name, node, tensor]
        refs = [refs]
    by_name = {
        layer.get("config", {}).get("name", layer.get("name")): layer for layer in layers if isinstance(layer, dict)
    }
    shapes = []
    for ref in refs:
        layer = by_name.get(ref[0]) if isinstance(ref, list) and ref else None
        shape = _shape_of_input_layer(layer) if layer else None
        if shape is None:
            return None
        shapes.append(shape)
    return tuple(shapes)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def check_input_shapes(name: str, shapes: list[tuple[int | None, ...]] | tuple[tuple[int | None, ...], ...]) -> None:
    """Refuse anything but one image input ``(batch, height, width, 1 or 3)`` of fixed size."""
    if len(shapes) != 1:
        listed = ", ".join(_shape_text(s) for s in shapes)
        raise ConversionError(
            f"'{name}' has {len(shapes)} inputs {listed}; featapp needs a model with a single image input."
        )
    shape = tuple(shapes[0])
    need = "featapp needs one image input of shape (height, width, channels) with 1 (grayscale) or 3 (RGB) channels"
    if len(shape) != 4:
        raise ConversionError(f"'{name}' takes input of shape {_shape_text(shape)}, which is not an image: {need}.")
    _, height, width, channels = shape
    if channels not in (1, 3):
        if shape[1] in (1, 3):
            raise ConversionError(
                f"'{name}' takes input of shape {_shape_text(shape)}, which looks channels-first: {need} (channels last)."
            )
        raise ConversionError(f"'{name}' takes images with {channels} channels {_shape_text(shape)}: {need}.")
    if height is None or width is None:
        raise ConversionError(
            f"'{name}' accepts images of any size {_shape_text(shape)}, but featapp needs a fixed height and width: "
            "build the same model with keras.Input(shape=(height, width, channels)), copy the weights in "
            "(set_weights) and save it again."
        )


def _custom_reason(entry: LayerEntry, path: Path) -> str | None:
    where = f" (inside '{'/'.join(entry.inside[1:])}')" if len(entry.inside) > 1 else ""
    from_python = (
        "or export from Python, where the class is defined: "
        "convert.export.export_model(keras.saving.load_model(path, custom_objects={...}), 'model.onnx')"
    )
    if entry.class_name == "Lambda":
        return (
            f"'{path.name}' has a Lambda layer '{entry.name}'{where}: it stores Python code, which is not safe to load "
            "from a file. Replace it with built-in Keras layers (e.g. Rescaling for scaling) and save the model again, "
            "or, if you trust the file, export from Python: "
            "convert.export.export_model(keras.saving.load_model(path, safe_mode=False), 'model.onnx')."
        )
    if entry.class_name in ("TFOpLambda", "SlicingOpLambda"):
        return (
            f"'{path.name}' calls a TensorFlow function directly in layer '{entry.name}'{where} (a Keras-2 "
            f"{entry.class_name}), which Keras 3 cannot load. Replace it with Keras layers and save the model again."
        )
    module = entry.module
    custom_name = (entry.registered_name and ">" in entry.registered_name) or ">" in entry.class_name
    custom_module = module is not None and not (module == "keras" or module.startswith(("keras.", "tf_keras")))
    if custom_name or custom_module:
        origin = f" from module '{module}'" if module else ""
        if entry.registered_name and entry.registered_name != entry.class_name:
            origin += f", registered as '{entry.registered_name}'"
        if not entry.inside:
            return (
                f"'{path.name}' is a custom model class ({entry.class_name}{origin}), a subclassed model whose layers "
                "are connected by Python code, not by a saved graph. Rebuild it as a Sequential or functional model "
                "from the same layers, or " + from_python + "."
            )
        return (
            f"'{path.name}' uses the custom layer '{entry.name}'{where} (class {entry.class_name}{origin}). "
            "The command line cannot load custom layers: it does not have their Python code. "
            "Replace it with built-in Keras layers, " + from_python + "."
        )
    return None


def inspect_keras_file(path: str | Path) -> KerasFile:
    """Read a model file's configuration and refuse, with a :class:`ConversionError`, what cannot be converted."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"No such file: '{path}'.")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise ConversionError(
                f"'{path.name}' is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model. "
                "Load it with the Keras that wrote it and save it as a file: model.save('model.keras') or model.save('model.h5')."
            )
        raise ConversionError(f"'{path}' is a folder, not a Keras model file (.keras or .h5).")
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head:
        raise ConversionError(f"'{path.name}' is empty (0 bytes). {_HOW_TO_SAVE}")
    if head.startswith(ZIP_MAGIC):
        container = "zip"
        config, version = _read_zip(path)
    elif head.startswith(HDF5_MAGIC):
        container = "h5"
        config, version = _read_h5(path)
    else:
        raise _not_a_model(path, _what_is(head, path))
    if not isinstance(config, dict) or "class_name" not in config:
        raise ConversionError(f"'{path.name}' has a configuration that does not describe a Keras model.")
    layers = tuple(_walk(config, ()))
    for entry in layers:
        reason = _custom_reason(entry, path)
        if reason:
            raise ConversionError(reason)
    shapes = _input_shapes(config)
    if shapes is not None:
        check_input_shapes(path.name, shapes)
    return KerasFile(
        path=path, container=container, keras_version=version, config=config, layers=layers, input_shapes=shapes
    )


def check_known_classes(info: KerasFile, is_known: Callable[[str], bool]) -> None:
    """Refuse layer classes that this Keras does not have (a Keras-2 file names classes without modules)."""
    for entry in info.layers:
        if entry.class_name in MODEL_CLASSES or entry.class_name == "InputLayer":
            continue
        if entry.module is None and not is_known(entry.class_name):
            where = f" (inside '{'/'.join(entry.inside[1:])}')" if len(entry.inside) > 1 else ""
            raise ConversionError(
                f"'{info.path.name}' uses layer '{entry.name}'{where} of class {entry.class_name}, which Keras 3 does not "
                "have: a custom layer, or one Keras 3 dropped. Replace it with built-in Keras layers, or export from "
                "Python, where the class is defined: convert.export.export_model(keras.saving.load_model(path, "
                "custom_objects={...}), 'model.onnx')."
            )
