"""Every channel's "what this channel looks for" in one small file beside the model.

``featapp atlas`` (:func:`build_atlas`) runs :func:`featapp.explain.featurevis.visualize` for
every channel of the model's convolutions at exactly the settings the app uses (each layer's
:func:`~featapp.explain.featurevis.default_objective`, the steps, the seed and the regularisers
of :func:`~featapp.explain.featurevis.picture_settings`) and writes ``<model>.atlas.zip``:

* ``atlas.json``, the index: the model file's sha256, the settings, and per layer its objective,
  the neuron's input box and, per finished channel, its picture's file and its activations;
* one lossless WebP per channel (``layer007/channel0001.webp``), of the part the app shows: a
  neuron picture's receptive field with its margin (:func:`~featapp.explain.featurevis.shown_region`,
  a few pixels), a channel picture whole. Its pixel values are rounded to ``bits`` bits (default
  :data:`BITS`: every value within one level of 255 of the computed picture, which takes the
  lecture model's atlas under 5 MB; at 8 bits the very pixels computed). WebP, because it is
  smaller than PNG for these pictures; lossless, because its lossy mode halves the colour
  resolution, which these pictures do not survive.

The file is written atomically after every few channels, so an interrupted build keeps what
it finished and the same command goes on from there. The app (:func:`usable_atlas`) shows a
stored layer only when the file's model hash and settings are those it would compute with; a
file made for another model or other settings, or a damaged one, is logged and ignored, and
pictures are computed on demand as without it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from featapp.cache import atomic_write, check_writable
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import FeatureModel
from featapp.errors import FeatappError
from featapp.explain.featurevis import (
    APP_STEPS,
    FeatureVisualization,
    default_objective,
    picture_activations,
    picture_settings,
    shown_region,
    visualize,
)
from featapp.explain.gradients import Gradients

__all__ = [
    "ATLAS_SUFFIX",
    "BITS",
    "Atlas",
    "AtlasError",
    "AtlasFileError",
    "AtlasLayer",
    "atlas_layers",
    "atlas_path",
    "build_atlas",
    "read_atlas",
    "usable_atlas",
]

log = logging.getLogger(__name__)

ATLAS_SUFFIX = ".atlas.zip"
INDEX_NAME = "atlas.json"
FORMAT = "featapp-atlas"
VERSION = 1
SAVE_EVERY = 8
"""Channels computed between two saves of the file by default (a save rewrites the whole file)."""
BITS = 7
"""Bits per colour value of a stored picture by default. The last bit of an optimised picture is
mostly noise, which lossless compression has to keep; rounding it away takes the lecture model's
atlas under 5 MB, and no one can see a difference of one level (bench/results/atlas.md)."""

_PICTURE_NAME = re.compile(r"^layer\d{3}/channel\d{4,6}\.webp$")
_MAX_INDEX_BYTES = 32 << 20
_MAX_SIDE = 8192
_MAX_PIXEL_BYTES = 2 << 30
"""What the decoded pictures of one atlas may take: far above any real one, far below a machine's memory."""
_NEUTRAL = 128
"""What a stored neuron picture holds outside the part it shows (the start noise there is not kept)."""


class AtlasError(FeatappError, ValueError):
    """An atlas cannot be made as asked (a layer without maps or gradients, a wrong option)."""


class AtlasFileError(AtlasError):
    """An atlas file is damaged or not one featapp wrote."""


@dataclass(frozen=True)
class AtlasLayer:
    """One layer of an atlas: its number of channels, objective and neuron box, and the
    pictures of the channels finished so far (``pictures.channels``, in order)."""

    name: str
    channels: int
    objective: str
    box: tuple[int, int, int, int] | None
    pictures: FeatureVisualization
    files: tuple[str, ...] = ()  # each picture's name in the file, in the order of pictures.channels

    @property
    def complete(self) -> bool:
        return len(self.pictures.channels) == self.channels


@dataclass(frozen=True)
class Atlas:
    """A read atlas file (:func:`read_atlas`)."""

    path: Path
    model_sha256: str
    model_file: str
    input_shape: tuple[int, int, int]
    settings: dict[str, object]
    layers: dict[str, AtlasLayer]
    files: dict[str, bytes] = field(repr=False, compare=False, default_factory=dict)
    bits: int = 8  # each stored value is within 2 ** (8 - bits) / 2 levels of the computed picture's

    @property
    def picture_count(self) -> int:
        return sum(len(layer.pictures.channels) for layer in self.layers.values())

    def complete_layer(self, name: str) -> FeatureVisualization | None:
        """Every channel's picture of layer ``name``, or ``None`` if the atlas lacks some."""
        layer = self.layers.get(name)
        return layer.pictures if layer is not None and layer.complete else None

    def mismatch(self, model: FeatureModel, steps: int = APP_STEPS, seed: int = 0) -> str | None:
        """Why this atlas does not hold ``model``'s pictures at these settings, or ``None`` when it does."""
        if self.model_sha256 != model.sha256:
            return (
                f"it was made for another model file (sha256 {self.model_sha256[:12]}..., "
                f"'{model.path.name}' has {model.sha256[:12]}...)"
            )
        spec = model.spec.input
        if self.input_shape != (spec.height, spec.width, spec.channels):
            return "its pictures have another size than the model's input"
        wanted = picture_settings(steps, seed)
        if self.settings != wanted:
            differ = sorted(k for k in set(wanted) | set(self.settings) if self.settings.get(k) != wanted.get(k))
            said = ", ".join(f"{k} {self.settings.get(k)!r} instead of {wanted.get(k)!r}" for k in differ)
            return f"it was made with other settings ({said})"
        for layer in self.layers.values():
            try:
                info = model.layer(layer.name)
            except KeyError:
                return f"the model has no layer {layer.name!r}"
            if info.channels != layer.channels or default_objective(info, (spec.height, spec.width)) != layer.objective:
                return f"its layer {layer.name!r} differs from the model's"
        return None


def atlas_path(model_path: str | os.PathLike) -> Path:
    """Where a model's atlas lives: beside it, named after it.

    >>> atlas_path("models/cats_dogs_small.onnx").name
    'cats_dogs_small.atlas.zip'
    """
    path = Path(model_path)
    return path.with_name(path.stem + ATLAS_SUFFIX)


def atlas_layers(model: FeatureModel) -> list[LayerInfo]:
    """The layers an atlas holds by default: every convolution with 2-D maps."""
    return [layer for layer in model.layers if layer.is_spatial and "Conv" in layer.kind]


# -- reading ---------------------------------------------------------------------------------------------
def _fail(path: Path, why: str) -> AtlasFileError:
    return AtlasFileError(f"the atlas '{path}' is damaged or not one featapp wrote: {why}")


def _number(value: object, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, f"{what} is not a number")
    return float(value)


def _whole(value: object, what: str, path: Path, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(path, f"{what} is not a whole number from {low}")
    return value


def _decode(data: bytes, size: tuple[int, int], depth: int, name: str, path: Path) -> np.ndarray:
    """A stored picture as uint8 (H, W, depth); its size is checked before it is decoded."""
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as picture:
            if picture.size != (size[1], size[0]):
                raise _fail(path, f"{name} is {picture.size[0]} x {picture.size[1]}, not {size[1]} x {size[0]}")
            pixels = np.asarray(picture.convert("RGB"))
    except AtlasFileError:
        raise
    except (OSError, ValueError, SyntaxError) as err:  # what Pillow raises for a broken picture
        raise _fail(path, f"{name} is not a picture ({type(err).__name__})") from None
    return np.ascontiguousarray(pixels[:, :, :depth])


def _layer_from_index(
    row: object, height: int, width: int, depth: int, files: dict[str, bytes], used: set[str], path: Path
) -> AtlasLayer:
    if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("pictures"), list):
        raise _fail(path, "a layer entry lacks its name or pictures")
    name = row["name"]
    channels = _whole(row.get("channels"), f"{name}'s channel count", path, 1)
    objective = row.get("objective")
    if objective not in ("channel", "neuron"):
        raise _fail(path, f"{name}'s objective is {objective!r}")
    box = None
    if objective == "neuron":
        raw = row.get("box")
        if not isinstance(raw, list) or len(raw) != 4:
            raise _fail(path, f"{name}'s neuron has no input box")
        top, left, bottom, right = (_whole(v, f"{name}'s box", path) for v in raw)
        if not (top < bottom <= height and left < right <= width):
            raise _fail(path, f"{name}'s box lies outside the picture")
        box = (top, left, bottom, right)
    region = shown_region(box, (height, width)) if box is not None else (0, 0, height, width)
    size = (region[2] - region[0], region[3] - region[1])
    seen: set[int] = set()
    entries = []
    for entry in row["pictures"]:
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or file not in files:
            raise _fail(path, f"a picture of {name} is missing from the file")
        if file in used:
            raise _fail(path, f"'{file}' is listed twice")
        used.add(file)
        channel = _whole(entry.get("channel"), f"a channel of {name}", path)
        if channel >= channels or channel in seen:
            raise _fail(path, f"{name} lists channel {channel + 1} twice or beyond its {channels}")
        seen.add(channel)
        values = (
            _number(entry.get("activation"), f"{name}'s activation", path),
            _number(entry.get("start_activation"), f"{name}'s start activation", path),
        )
        entries.append((channel, entry["file"], values))
    entries.sort()
    images = np.full((len(entries), height, width, depth), _NEUTRAL, np.uint8)
    for i, (_channel, name_in_zip, _values) in enumerate(entries):
        images[i, region[0] : region[2], region[1] : region[3]] = _decode(
            files[name_in_zip], size, depth, name_in_zip, path
        )
    pictures = FeatureVisualization(
        name,
        tuple(e[0] for e in entries),
        images,
        np.array([e[2][0] for e in entries], np.float64),
        np.array([e[2][1] for e in entries], np.float64),
        objective,
        box,
    )
    return AtlasLayer(name, channels, objective, box, pictures, tuple(e[1] for e in entries))


def read_atlas(path: str | os.PathLike) -> Atlas:
    """The atlas at ``path``, every picture decoded and checked; :class:`AtlasFileError` when
    the file is damaged or not an atlas (a missing file raises ``FileNotFoundError``)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if INDEX_NAME not in members:
                raise _fail(path, f"it has no {INDEX_NAME}")
            if members[INDEX_NAME].file_size > _MAX_INDEX_BYTES:
                raise _fail(path, f"its {INDEX_NAME} is implausibly large")
            index = json.loads(archive.read(INDEX_NAME))
            if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
                raise _fail(path, f"its {INDEX_NAME} is not a version-{VERSION} featapp atlas")
            shape = index.get("input")
            if not isinstance(shape, list) or len(shape) != 3:
                raise _fail(path, "it does not say its pictures' size")
            height, width, depth = (_whole(v, "the picture size", path, 1) for v in shape)
            if depth not in (1, 3) or max(height, width) > _MAX_SIDE:
                raise _fail(path, f"its pictures are {height} x {width} x {depth}, which no model here takes")
            files: dict[str, bytes] = {}
            for name, info in members.items():
                if name == INDEX_NAME:
                    continue
                if not _PICTURE_NAME.match(name) or info.flag_bits & 0x1:
                    raise _fail(path, f"it holds '{name}', which featapp never writes")
                if info.file_size > height * width * 4 + 4096:  # more than any lossless picture of this size
                    raise _fail(path, f"'{name}' is implausibly large")
                files[name] = archive.read(info)
            if len(files) * height * width * depth > _MAX_PIXEL_BYTES:
                raise _fail(path, f"its {len(files):,} pictures would take more memory than any atlas needs")
    except AtlasFileError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, NotImplementedError, RuntimeError) as err:
        # Everything a truncated or garbled zip or JSON raises (RuntimeError: an encrypted
        # member, or JSON nested too deep; NotImplementedError: an unknown compression;
        # ValueError: bad JSON).
        raise _fail(path, f"{type(err).__name__}: {err}") from None
    model = index.get("model")
    settings = index.get("settings")
    bits = index.get("bits", 8)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise _fail(path, f"its pictures' precision is {bits!r} bits")
    rows = index.get("layers")
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str) or not isinstance(settings, dict):
        raise _fail(path, "its index does not name its model and settings")
    if not isinstance(rows, list):
        raise _fail(path, "its index has no layers")
    layers = {}
    used: set[str] = set()  # each file holds one channel's picture: a file listed twice is not ours
    for row in rows:
        layer = _layer_from_index(row, height, width, depth, files, used, path)
        if layer.name in layers:
            raise _fail(path, f"it lists layer {layer.name!r} twice")
        layers[layer.name] = layer
    return Atlas(
        path, model["sha256"], str(model.get("file", "")), (height, width, depth), settings, layers, files, bits
    )


def usable_atlas(
    model: FeatureModel, steps: int = APP_STEPS, seed: int = 0, path: str | os.PathLike | None = None
) -> Atlas | None:
    """The atlas beside ``model`` (or at ``path``) when it holds this model's pictures at these
    settings; otherwise ``None``, with one log line saying why when a file is there but cannot be used."""
    where = Path(path) if path is not None else atlas_path(model.path)
    try:
        atlas = read_atlas(where)
    except FileNotFoundError:
        return None
    except AtlasFileError as err:
        log.warning("Ignoring %s; pictures are computed on demand.", err)
        return None
    why = atlas.mismatch(model, steps, seed)
    if why is not None:
        log.warning("Ignoring the atlas '%s': %s; pictures are computed on demand.", where, why)
        return None
    return atlas


# -- building --------------------------------------------------------------------------------------------
@dataclass
class _Building:
    """The atlas as it grows: per layer its entry for the index, and every picture's bytes."""

    layers: dict[str, dict] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    unsaved: bool = False  # pictures changed since the file was written (rounded to fewer bits)

    def done(self, layer: str) -> set[int]:
        entry = self.layers.get(layer)
        return set() if entry is None else {p["channel"] for p in entry["pictures"]}


def _quantise(images: np.ndarray, bits: int) -> np.ndarray:
    """uint8 pictures rounded to ``bits`` bits per value (each within half a step of its own)."""
    if bits == 8:
        return images
    step = 1 << (8 - bits)
    return np.clip(np.round(images.astype(np.float64) / step) * step, 0, 255).astype(np.uint8)


def _encode(picture: np.ndarray) -> bytes:
    handle = io.BytesIO()
    image = Image.fromarray(picture[:, :, 0] if picture.shape[2] == 1 else picture)
    image.save(handle, format="WEBP", lossless=True, quality=100, method=4)
    return handle.getvalue()


def _write(out: Path, model: FeatureModel, settings: dict[str, object], bits: int, building: _Building) -> None:
    spec = model.spec.input
    order = {name: i for i, name in enumerate(model.layer_names)}
    index = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"file": model.path.name, "sha256": model.sha256},
        "input": [spec.height, spec.width, spec.channels],
        "settings": settings,
        "bits": bits,
        "layers": sorted(building.layers.values(), key=lambda row: order.get(row["name"], len(order))),
    }

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w") as archive:
            archive.writestr(INDEX_NAME, json.dumps(index, indent=1), compress_type=zipfile.ZIP_DEFLATED)
            for name in sorted(building.files):
                archive.writestr(name, building.files[name], compress_type=zipfile.ZIP_STORED)

    atomic_write(out, write)


def _resume_from(out: Path, grads: Gradients, steps: int, seed: int, bits: int) -> _Building:
    """What an earlier run left in ``out`` for this model and these settings (else nothing).
    Pictures stored at more bits than ``bits`` are rounded to ``bits`` (no optimisation again)."""
    model = grads.model
    building = _Building()
    if not out.exists():
        return building
    try:
        old = read_atlas(out)
    except AtlasFileError as err:
        log.warning("Starting the atlas again: %s.", err)
        return building
    why = old.mismatch(model, steps, seed)
    if why is None and old.bits < bits:
        why = f"its pictures are stored at {old.bits} bits, fewer than {bits}"
    if why is not None:
        log.warning("Starting the atlas '%s' again: %s.", out, why)
        return building
    for layer in old.layers.values():
        number = model.layer_names.index(layer.name) + 1
        pictures = layer.pictures if old.bits == bits else _rounded(grads, layer, bits)
        rows = []
        for i, channel in enumerate(pictures.channels):
            name = _picture_file(number, channel)
            building.files[name] = old.files[layer.files[i]] if old.bits == bits else _encode(_stored_part(pictures, i))
            rows.append(_picture_row(channel, name, pictures, i))
        building.layers[layer.name] = _layer_row(layer.name, layer.channels, layer.objective, layer.box, rows)
    building.unsaved = old.bits != bits
    return building


def _rounded(grads: Gradients, layer: AtlasLayer, bits: int, batch: int = 16) -> FeatureVisualization:
    """A layer's stored pictures rounded to ``bits`` bits, with the activations of the rounded pictures."""
    pictures = layer.pictures
    images = _quantise(pictures.images, bits)
    activations = np.concatenate(
        [
            picture_activations(
                grads, layer.name, pictures.channels[i : i + batch], images[i : i + batch], layer.objective
            )
            for i in range(0, len(images), batch)
        ]
    )
    return replace(pictures, images=images, activations=activations)


def _stored_part(pictures: FeatureVisualization, i: int) -> np.ndarray:
    """The part of picture ``i`` an atlas stores: a neuron's receptive field with its margin, else all of it."""
    if pictures.box is None:
        return pictures.images[i]
    top, left, bottom, right = shown_region(pictures.box, pictures.images.shape[1:3])
    return pictures.images[i, top:bottom, left:right]


def _picture_file(layer_number: int, channel: int) -> str:
    return f"layer{layer_number:03d}/channel{channel + 1:04d}.webp"


def _picture_row(channel: int, name: str, result: FeatureVisualization, i: int) -> dict:
    return {
        "channel": int(channel),
        "file": name,
        "activation": float(result.activations[i]),
        "start_activation": float(result.start_activations[i]),
    }


def _layer_row(name: str, channels: int, objective: str, box, rows: list[dict]) -> dict:
    return {
        "name": name,
        "channels": int(channels),
        "objective": objective,
        "box": None if box is None else [int(v) for v in box],
        "pictures": rows,
    }


def _chosen_layers(grads: Gradients, layers: Iterable[str] | None) -> list[LayerInfo]:
    model = grads.model
    if layers is None:
        chosen = atlas_layers(model)
        if not chosen:
            raise AtlasError(f"'{model.path.name}' has no convolution with 2-D maps to make an atlas of.")
    else:
        chosen = []
        for name in layers:
            try:
                chosen.append(model.layer(name))
            except KeyError as err:
                raise AtlasError(str(err.args[0])) from None
    for layer in chosen:
        if not layer.is_spatial:
            raise AtlasError(f"{layer.name} has no 2-D maps; an atlas holds pictures of channels of maps.")
        if layer.name not in grads.targets:
            raise AtlasError(f"the gradient model cannot differentiate {layer.name}, so it has no pictures.")
    return chosen


def build_atlas(
    grads: Gradients,
    out: str | os.PathLike | None = None,
    layers: Iterable[str] | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    save_every: int = SAVE_EVERY,
    bits: int = BITS,
    progress: Callable[[int, int], None] | None = None,
    on_layer: Callable[[LayerInfo, int], None] | None = None,
) -> Atlas:
    """Compute the pictures of every channel of ``layers`` (default :func:`atlas_layers`) and
    write them to ``out`` (default :func:`atlas_path` beside the model), saving after every
    ``save_every`` channels. Channels an earlier run finished in ``out`` for the same model and
    settings are kept, not computed again, and so are its other layers.

    Pictures are stored at ``bits`` bits per value (:data:`BITS`; 8: exactly as computed), with
    the activations of the pictures as stored. ``progress(done, total)`` counts gradient steps
    (channels x ``steps``) over what is left; ``on_layer(layer, finished)`` is called as each
    layer starts, with its channels already done.
    """
    if save_every < 1:
        raise AtlasError("save_every must be at least 1")
    if not 1 <= bits <= 8:
        raise AtlasError(f"bits must be 1 to 8, not {bits}")
    model = grads.model
    out = Path(out) if out is not None else atlas_path(model.path)
    chosen = _chosen_layers(grads, layers)
    check_writable(out.parent)  # before the minutes of work, not after
    settings = picture_settings(steps, seed)
    building = _resume_from(out, grads, steps, seed, bits)
    spec = model.spec.input
    todo = {layer.name: [c for c in range(layer.channels) if c not in building.done(layer.name)] for layer in chosen}
    total = steps * sum(len(channels) for channels in todo.values())
    finished_steps = 0
    for layer in chosen:
        left = todo[layer.name]
        if on_layer is not None:
            on_layer(layer, layer.channels - len(left))
        objective = default_objective(layer, (spec.height, spec.width))
        number = model.layer_names.index(layer.name) + 1
        for first in range(0, len(left), save_every):
            chunk: Sequence[int] = left[first : first + save_every]
            before = finished_steps

            def report(fraction: float, before: int = before, size: int = len(chunk)) -> None:
                if progress is not None:
                    progress(before + round(fraction * size * steps), total)

            result = visualize(
                grads, layer.name, chunk, steps=steps, seed=seed, objective=objective, batch_size=len(chunk),
                progress=report,
            )  # fmt: skip
            finished_steps += len(chunk) * steps
            stored = _quantise(result.images, bits)
            if bits < 8:  # the caption's numbers are those of the picture shown
                activations = picture_activations(grads, layer.name, result.channels, stored, objective)
                result = replace(result, images=stored, activations=activations)
            entry = building.layers.setdefault(
                layer.name, _layer_row(layer.name, layer.channels, objective, result.box, [])
            )
            for i, channel in enumerate(result.channels):
                name = _picture_file(number, channel)
                building.files[name] = _encode(_stored_part(result, i))
                entry["pictures"].append(_picture_row(channel, name, result, i))
            entry["pictures"].sort(key=lambda row: row["channel"])
            _write(out, model, settings, bits, building)
            building.unsaved = False
    if building.unsaved:  # nothing was left to compute, but the kept pictures were rounded
        _write(out, model, settings, bits, building)
    if progress is not None and total == 0:
        progress(0, 0)
    return read_atlas(out)
