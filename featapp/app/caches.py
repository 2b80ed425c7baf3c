"""Every ``st.cache_*`` wrapper of the app: model sessions, activations and predictions,
scans and the class-level views over them, the dataset and the gallery, encoded pictures,
charts, and the training-snapshot index.

Caching lives here and only here, so the library stays free of Streamlit:

* ``st.cache_resource`` holds each ONNX Runtime session, one per model file per process.
* It also holds one image's activations (all layers), keyed by the model's hash and the
  image's content hash, shared by every session of the process and bounded in bytes by
  :data:`ACTIVATION_CACHE_BYTES` (and in images by :data:`ACTIVATION_CACHE_IMAGES`): the
  least recently used image goes first, so a model with bigger maps keeps fewer images.
  For the lecture's model one image is about 6.1 MB of float32 (see
  :func:`featapp.engine.metadata.activation_bytes`), so it keeps 32. Not ``st.cache_data``: that unpickles a fresh copy on every read,
  and the Feature map page reads seven images' activations per rerun (its training
  strip), a large part of every channel change (bench/results/channel_change_profile.md). The arrays are shared, so
  they are made read-only (:func:`_read_only`): a page that wrote into one would change
  it for every student.
* The gallery's 20 photos and one layer of their activations are held the same way, by
  sample; :data:`GALLERY_LAYER_CACHE_BYTES` bounds the layers in bytes (layer 1 of 20 photos
  is 56 MB, which ``st.cache_data`` copied on every rerun of the Neuron page; a deep layer
  is a small fraction of that). The training strip's snapshot layers
  (:data:`STRIP_CACHE_BYTES`) and what a scan keeps in memory (its statistics, map and
  thumbnails, :data:`SCAN_CACHE_BYTES`) are bounded in bytes too (:class:`_ByteBudget`).
* What a view sends is made once per view, for every session: the Feature map's chart
  (:func:`heatmap_spec`, :data:`HEATMAP_CACHE_ENTRIES`), the Layer grid's
  (:func:`tile_grid`), the training strip (:func:`training_strip`) and the gallery's
  photos (:func:`gallery_cards`). When a teacher says "everyone, channel 5", the first
  student's click builds the view and the class reuses it (``bench/class_at_once.py``).

The public function beside each private cached one builds the cache key (hashes, not
arrays: arguments starting with ``_`` are not hashed by Streamlit), and calls it with
keyword arguments: for each positional one Streamlit reads the function's signature again
to learn its name, which made a cached call about three times as slow (``inspect.signature``
was 4% of the server's time with a class, ``bench/results/load_profile.md``).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import streamlit as st

from featapp import render, settings
from featapp.app.appstate import CurrentImage, image_key
from featapp.app.asset_server import SHELF, PictureShelf
from featapp.app.captions import gallery_caption, match_classes, photo_alt
from featapp.app.map_explorer import ExplorerPayload, explorer_payload
from featapp.app.share import qr_picture
from featapp.data.dataset import Dataset, DatasetImage, resolve_data_dir
from featapp.data.download import default_destination
from featapp.data.provenance import file_sha256
from featapp.data.provenance import trained_on as hashes_of
from featapp.engine import snapshots as snapshots_module
from featapp.engine.activation_file import activations_npz
from featapp.engine.arithmetic import CannotExplain, ConvOp, PoolOp, read_layer_ops
from featapp.engine.filters import FirstLayerFilters, FirstLayerSummary, read_first_layer_filters
from featapp.engine.filters import first_layer_summary as first_layer_summary_of
from featapp.engine.images import ImageError, InputSpec, prepare_image
from featapp.engine.metadata import activation_bytes
from featapp.engine.model import FeatureModel, ModelError, Prediction, load_model
from featapp.engine.probes import Probe, probe_images
from featapp.engine.snapshots import INDEX_FILE, Snapshot, load_snapshots
from featapp.explain.atlas import Atlas, atlas_path, usable_atlas
from featapp.explain.featurevis import FeatureVisualization, cached_layer_pictures, channel_picture
from featapp.explain.gradcam import gradcam
from featapp.explain.gradients import GradientError, Gradients, load_gradients
from featapp.explain.occlusion import OcclusionMap, occlusion_sensitivity
from featapp.explain.saliency import smoothgrad
from featapp.explain.sanity import SanityCheck, sanity_check, weighted_layers
from featapp.render import (
    COLOUR_SCALES,
    ColourScale,
    ValueRange,
    fit_width,
    heatmap_chart,
    make_tiles,
    order_channels,
    outline_box,
    png_bytes,
    strip_png,
    tile_grid_chart,
)
from featapp.stats import analysis, classes
from featapp.stats import projection as projection_module
from featapp.stats.analysis import NeuronStats
from featapp.stats.circuits import dense_weights
from featapp.stats.classes import OutputWeights, SeparationTable
from featapp.stats.detectors import DetectorMatch, lecture_detectors
from featapp.stats.liveness import LayerLiveness, liveness_of
from featapp.stats.projection import Projection

__all__ = [
    "ACTIVATION_CACHE_IMAGES",
    "ACTIVATION_CACHE_BYTES",
    "GALLERY_CACHE_SAMPLES",
    "GALLERY_LAYER_CACHE_BYTES",
    "STRIP_CACHE_BYTES",
    "SCAN_CACHE_BYTES",
    "GALLERY_SIZE",
    "PNG_CACHE_ENTRIES",
    "HEATMAP_CACHE_ENTRIES",
    "model_at",
    "spec_key",
    "activations",
    "prediction",
    "activations_file",
    "occlusion",
    "has_occlusion",
    "mark_occlusion",
    "first_layer_filters",
    "layer_ops",
    "dense_layer_weights",
    "first_layer_summary",
    "detectors",
    "gradients",
    "class_maps",
    "weighted_layer_names",
    "sanity",
    "featurevis_channel_of_grid",
    "featurevis_channel_at",
    "featurevis_layer_at",
    "file_version",
    "atlas",
    "atlas_layer",
    "ShownPicture",
    "neuron_stats",
    "run_scan",
    "SCAN_WAITING",
    "separation",
    "projection",
    "thumbnails",
    "output_weights",
    "photos",
    "channel_maps",
    "gallery_liveness",
    "cache_summary",
    "activation_cache_images",
    "dataset",
    "download_lock",
    "download_destination",
    "trained_on",
    "default_split",
    "gallery",
    "GalleryCard",
    "gallery_cards",
    "card_url",
    "gallery_prediction",
    "gallery_layer",
    "probes",
    "picture_png",
    "qr_code",
    "picture_url",
    "heatmap_spec",
    "tile_grid",
    "training_strip",
    "strip_layer",
    "read_snapshots",
    "snapshots",
    "own_snapshots",
]

ACTIVATION_CACHE_IMAGES = settings.cache_images()
"""At most this many images' activations stay in memory; ``$FEATAPP_CACHE_IMAGES`` changes it
(read once, when the app starts)."""
ACTIVATION_CACHE_BYTES = settings.cache_mb() * 1_000_000
"""At most this many bytes of activations stay in memory, over all models (about 6.1 MB an image
for the lecture's model); ``$FEATAPP_CACHE_MB`` changes it (read once, when the app starts)."""
GALLERY_CACHE_SAMPLES = 4
"""Gallery samples (20 photos each, 1.35 MB of pixels) kept decoded."""
GALLERY_LAYER_CACHE_BYTES = 120_000_000
"""Bytes of gallery layers kept (one layer of every gallery photo): two of the largest (layer 1
for 20 photos, 56 MB), or many deeper ones."""
STRIP_CACHE_BYTES = 100_000_000
"""Bytes of snapshot layers kept for the training strip (six per strip; layer 1 of one image is
2.8 MB a snapshot, a deep layer a few kB)."""
SCAN_CACHE_BYTES = 150_000_000
"""Bytes of scans kept in memory: their statistics (41 MB for the lecture's model and 4,000
photos), their maps of the feature space and their thumbnails."""
GALLERY_SIZE = 20
"""Photos in one gallery sample, split over the classes."""

PNG_CACHE_ENTRIES = 256
"""Encoded pictures kept (photos, thumbnails, overlays: 20-300 kB each, so at most about 40 MB)."""
HEATMAP_CACHE_ENTRIES = 256
"""Heatmap chart specs kept, each one map's picture and cells (at most about 60 kB: layer 1)."""

OCCLUSION_DONE = "model.occlusion_done"
SCANS_CHECKED = "caches.scans_checked"
"""The scans this session has checked against their folder's listing (:func:`neuron_stats`)."""


# -- models --------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=12)
def _model_at(path: str, mtime_ns: int, size: int) -> FeatureModel:
    # mtime and size are in the key so a replaced file gets a fresh session.
    return load_model(path)


_RECENT_MODELS: dict[str, tuple[tuple[int, int, int, int], FeatureModel]] = {}
"""Path as given -> (the file's identity, its model): the Feature map asks for the model and each
training snapshot on every rerun, and resolving the path and Streamlit's cache lookup cost about
0.1 ms each time, on the lock every student's script shares; one ``stat`` is enough to know the
file has not changed."""


def model_at(path: str | os.PathLike) -> FeatureModel:
    """The model in ``path``, loaded once per process. Raises :class:`ModelError`."""
    given = os.fspath(path)
    try:
        info = os.stat(os.path.expanduser(given))  # follows links, like resolve() below
    except OSError:
        info = None
    if info is not None:
        recent = _RECENT_MODELS.get(given)
        if recent is not None and recent[0] == _file_key(info):
            return recent[1]
    resolved = Path(given).expanduser().resolve()
    try:
        info = resolved.stat()
    except OSError:
        return load_model(resolved)  # raises ModelError with the "no model file" message
    model = _model_at(path=str(resolved), mtime_ns=info.st_mtime_ns, size=info.st_size)
    if len(_RECENT_MODELS) >= 32:
        _RECENT_MODELS.clear()
    _RECENT_MODELS[given] = (_file_key(info), model)
    return model


def _file_key(info: os.stat_result) -> tuple[int, int, int, int]:
    """A file's identity: another file, or the same one written again, has another."""
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


def spec_key(spec: InputSpec) -> tuple[int, int, int]:
    """The input size as a hashable cache key: ``(height, width, channels)``."""
    return (spec.height, spec.width, spec.channels)


# -- activations and predictions --------------------------------------------------------------------


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


K = TypeVar("K", bound=Hashable)


class _ByteLedger(Generic[K]):
    """The bytes of each cached entry (an image's activations, say), least recently used first.

    Streamlit's caches count entries, not bytes, so this keeps the sum and names the
    entries to drop; Streamlit tells it (``on_release``) when it drops one itself (its
    entry limit, "Clear caches")."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.sizes: OrderedDict[K, int] = OrderedDict()
        self.total = 0
        self._lock = threading.Lock()

    def used(self, key: K, size: int) -> list[K]:
        """Count a read of ``key``; returns the entries to drop to get back within the budget
        (never the one just read: a page needs at least that)."""
        with self._lock:
            if key in self.sizes:
                self.sizes.move_to_end(key)
            else:
                self.sizes[key] = size
                self.total += size
            dropped = []
            while self.total > self.budget and len(self.sizes) > 1:
                old, old_size = self.sizes.popitem(last=False)
                self.total -= old_size
                dropped.append(old)
            return dropped

    def released(self, key: K) -> None:
        with self._lock:
            self.total -= self.sizes.pop(key, 0)


_ACTIVATION_BYTES: _ByteLedger[tuple[str, str]] = _ByteLedger(ACTIVATION_CACHE_BYTES)

T = TypeVar("T")


@dataclass(frozen=True)
class _Sized(Generic[T]):
    """A value cached under a :class:`_ByteBudget`: its key there and its size."""

    key: tuple
    value: T
    nbytes: int


class _ByteBudget:
    """Bounds one or more ``st.cache_resource`` functions in bytes, as the activation cache is:
    each read of an entry counts it as used, and past the budget the least recently used ones
    are cleared from their caches (never the one just read). The cached functions return
    :class:`_Sized` entries and name :meth:`released` as their ``on_release``, so entries that
    Streamlit drops itself (its entry limit, time limit, "Clear caches") leave the count too."""

    def __init__(self, budget: int) -> None:
        self.ledger: _ByteLedger[Hashable] = _ByteLedger(budget)
        self._clear: dict[Hashable, Callable[[], None]] = {}
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Bytes counted now."""
        return self.ledger.total

    def read(self, entry: _Sized[T], clear: Callable[[], None]) -> T:
        """``entry``'s value, counted as just used; ``clear`` removes it from its cache."""
        with self._lock:
            self._clear[entry.key] = clear
        for key in self.ledger.used(entry.key, entry.nbytes):
            with self._lock:
                drop = self._clear.pop(key, None)
            if drop is not None:
                drop()
        return entry.value

    def released(self, entry: _Sized) -> None:
        self.ledger.released(entry.key)
        with self._lock:
            self._clear.pop(entry.key, None)


def _nbytes(value: object, seen: set[int] | None = None) -> int:
    """The bytes of the arrays, strings and bytes that ``value`` holds, through containers,
    dataclasses and plain objects' attributes (each array's memory counted once)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        base = value
        while isinstance(base.base, np.ndarray):
            base = base.base
        if base is not value:
            return _nbytes(base, seen)
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_nbytes(k, seen) + _nbytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(_nbytes(item, seen) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(_nbytes(getattr(value, f.name), seen) for f in fields(value))
    attributes = getattr(value, "__dict__", None)
    return _nbytes(attributes, seen) if isinstance(attributes, dict) else 0


_GALLERY_LAYER_BYTES = _ByteBudget(GALLERY_LAYER_CACHE_BYTES)
_STRIP_BYTES = _ByteBudget(STRIP_CACHE_BYTES)
_SCAN_BYTES = _ByteBudget(SCAN_CACHE_BYTES)


# Looked up when called, so a test can put a smaller budget in their place.
def _release_gallery_layer(entry: _Sized) -> None:
    _GALLERY_LAYER_BYTES.released(entry)


def _release_strip_layer(entry: _Sized) -> None:
    _STRIP_BYTES.released(entry)


def _release_scan_part(entry: _Sized) -> None:
    _SCAN_BYTES.released(entry)


@dataclass(frozen=True)
class _CachedActivations:
    key: tuple[str, str]
    maps: Mapping[str, np.ndarray]
    nbytes: int


def _release_activations(entry: _CachedActivations) -> None:
    _ACTIVATION_BYTES.released(entry.key)


@st.cache_resource(max_entries=ACTIVATION_CACHE_IMAGES, show_spinner=False, on_release=_release_activations)
def _activations(model_sha: str, image_key: str, _model: FeatureModel, _image: np.ndarray) -> _CachedActivations:
    batch = _model.activations(_image[np.newaxis])
    maps = {name: _read_only(np.ascontiguousarray(values[0])) for name, values in batch.items()}
    return _CachedActivations((model_sha, image_key), MappingProxyType(maps), sum(a.nbytes for a in maps.values()))


def activations(model: FeatureModel, image: CurrentImage) -> Mapping[str, np.ndarray]:
    """Every layer's output for one image: maps ``(C, H, W)``, vectors ``(units,)``.

    Shared by every session and read-only: copy an array before changing it.
    """
    entry = _activations(model_sha=model.sha256, image_key=image.key, _model=model, _image=image.array)
    for model_sha, key in _ACTIVATION_BYTES.used(entry.key, entry.nbytes):
        _activations.clear(model_sha=model_sha, image_key=key, _model=None, _image=None)
    return entry.maps


def activation_cache_images(model: FeatureModel) -> int:
    """How many images' activations the cache keeps when all are ``model``'s."""
    per_image = max(1, activation_bytes(model.layers))
    return max(1, min(ACTIVATION_CACHE_IMAGES, ACTIVATION_CACHE_BYTES // per_image))


@st.cache_data(max_entries=256, show_spinner=False)
def _prediction(model_sha: str, image_key: str, _model: FeatureModel, _image: np.ndarray) -> Prediction:
    return _model.predict(_image[np.newaxis])


def prediction(model: FeatureModel, image: CurrentImage) -> Prediction | None:
    """The model's class probabilities for the image, or ``None`` for a model without a classifier."""
    if not model.has_classifier:
        return None
    return _prediction(model_sha=model.sha256, image_key=image.key, _model=model, _image=image.array)


@st.cache_data(max_entries=4, show_spinner=False)
def _npz(model_sha: str, image_key: str, _model: FeatureModel, _image: CurrentImage) -> bytes:
    # The command line's layout, with N = 1: one file format for activations.
    batch = {name: values[np.newaxis] for name, values in activations(_model, _image).items()}
    return activations_npz(_model.layers, [_image.title], _image.array[np.newaxis], batch)


def activations_file(model: FeatureModel, image: CurrentImage) -> bytes:
    """The image's activations as ``.npz`` bytes (cached: compressing takes a moment)."""
    return _npz(model_sha=model.sha256, image_key=image.key, _model=model, _image=image)


@st.cache_data(max_entries=16, show_spinner=False)
def _occlusion(model_sha: str, image_key: str, _model: FeatureModel, _image: np.ndarray) -> OcclusionMap:
    return occlusion_sensitivity(_model, _image)


def occlusion(model: FeatureModel, image: CurrentImage) -> OcclusionMap:
    """The image's occlusion-sensitivity map (:mod:`featapp.explain.occlusion`), computed once per image."""
    return _occlusion(model_sha=model.sha256, image_key=image.key, _model=model, _image=image.array)


def has_occlusion(model: FeatureModel, image: CurrentImage) -> bool:
    """True when the occlusion map of this image is already computed (so it shows without asking)."""
    return (model.sha256, image.key) in st.session_state.get(OCCLUSION_DONE, set())


def mark_occlusion(model: FeatureModel, image: CurrentImage) -> None:
    """Remember, for this session, that the image's occlusion map was asked for."""
    st.session_state.setdefault(OCCLUSION_DONE, set()).add((model.sha256, image.key))


@st.cache_data(max_entries=16, show_spinner=False)
def _filters(model_sha: str, _path: str) -> FirstLayerFilters:
    return read_first_layer_filters(_path)


def first_layer_filters(model: FeatureModel) -> FirstLayerFilters:
    """The model's first-layer filters (:mod:`featapp.engine.filters`). Raises :class:`ModelError`."""
    return _filters(model_sha=model.sha256, _path=str(model.path))


@st.cache_resource(max_entries=16, show_spinner=False)
def _layer_ops(model_sha: str, _model: FeatureModel) -> Mapping[str, ConvOp | PoolOp | str] | str:
    try:
        return MappingProxyType(read_layer_ops(_model))
    except ModelError as err:
        return str(err)


def layer_ops(model: FeatureModel) -> Mapping[str, ConvOp | PoolOp | str] | str:
    """Each spatial layer's operator and weights as the file stores them (shared by every session:
    reading the file takes far longer than a click may), or why the file cannot be read."""
    return _layer_ops(model_sha=model.sha256, _model=model)


@st.cache_resource(max_entries=16, show_spinner=False)
def _dense_weights(model_sha: str, layer: str, _model: FeatureModel) -> tuple[np.ndarray, np.ndarray, str] | str:
    try:
        return dense_weights(_model.path, layer)
    except (CannotExplain, ModelError) as err:
        return str(err)


def dense_layer_weights(model: FeatureModel, layer: str) -> tuple[np.ndarray, np.ndarray, str] | str:
    """Dense ``layer``'s weights, bias and input tensor from the file (read once per model), or why not."""
    return _dense_weights(model_sha=model.sha256, layer=layer, _model=model)


def first_layer_summary(model: FeatureModel) -> FirstLayerSummary:
    """:func:`featapp.engine.filters.first_layer_summary` of ``model``, against the training
    snapshot of epoch 0 when there is one with filters of the same shape. Raises :class:`ModelError`."""
    start = next((snap for snap in snapshots() if snap.epoch == 0), None)
    start_filters = None
    if start is not None:
        try:
            start_filters = _filters(model_sha=f"snapshot:{start.path}", _path=str(start.path))
        except ModelError:
            start_filters = None  # an unreadable snapshot: the summary says nothing about training
    return first_layer_summary_of(first_layer_filters(model), start_filters)


@st.cache_data(max_entries=8, show_spinner=False)
def _detectors(model_sha: str, _model: FeatureModel) -> list[DetectorMatch]:
    return lecture_detectors(_model)


def detectors(model: FeatureModel) -> list[DetectorMatch]:
    """This model's counterparts of the lecture's layer-1 detectors (:mod:`featapp.stats.detectors`),
    once per model. Raises ``ValueError`` for a model without a convolution."""
    return _detectors(model_sha=model.sha256, _model=model)


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False, on_release=_release_scan_part)
def _neuron_stats(
    model_sha: str, root: str, split: str, mtime_ns: int, _model: FeatureModel, _data: Dataset
) -> _Sized[NeuronStats | None]:
    stats = analysis.load_cached(_model, _data, split=split)
    return _Sized(("stats", model_sha, root, split, mtime_ns), stats, _nbytes(stats))


def neuron_stats(model: FeatureModel, data: Dataset, split: str) -> NeuronStats | None:
    """The scanned neuron statistics of a split (:mod:`featapp.stats.analysis`), or ``None`` before a scan.

    Kept in memory once loaded (about 41 MB for the lecture's model and 4,000 photos), within
    :data:`SCAN_CACHE_BYTES`; the cache file's time stamp is in the key, so a new scan is picked
    up. Photos added to or removed from the split after the scan was loaded do not change that
    key, so each session checks the folder's listing against the scan once (its first call)
    and gets ``None``, a scan to redo, when they differ.
    """
    path = analysis.cache_path(model, data, split)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    key: dict[str, Any] = {"model_sha": model.sha256, "root": str(data.root), "split": split, "mtime_ns": mtime}
    entry = _neuron_stats(**key, _model=model, _data=data)
    stats = _SCAN_BYTES.read(entry, lambda: _neuron_stats.clear(**key, _model=None, _data=None))
    if stats is None:
        return None
    checked = st.session_state.setdefault(SCANS_CHECKED, set())
    token = (model.sha256, str(data.root), split, mtime)
    if token not in checked:
        if stats.dataset_fingerprint != data.fingerprint(split):  # lists the folder again
            return None
        checked.add(token)
    return stats


def damaged_scan_note(model: FeatureModel, data: Dataset, split: str) -> str | None:
    """When :func:`neuron_stats` found no usable scan because the saved one is damaged, what
    a page says instead of "not scanned yet" (its scan button then replaces the file)."""
    damage = analysis.cache_damage(model, data, split)
    if damage is None:
        return None
    return (
        f"The saved scan of the {split} split cannot be used: {damage}. Scanning again replaces it "
        "(the damage was logged for whoever runs the app)."
    )


SCAN_WAITING = "Another visitor started this very scan; waiting for it to finish (its result is shared)"
"""What a page's progress bar says while it waits for someone else's scan of the same split."""


def run_scan(model: FeatureModel, data: Dataset, split: str, bar) -> NeuronStats:
    """Scan ``split`` (:func:`featapp.stats.analysis.load_or_scan`) with its progress on ``bar``
    (an ``st.progress``). When another session is already scanning the same split with the
    same model, this one waits for that scan, and ``bar`` says so and follows it. Raises
    :class:`featapp.cache.CacheFolderError`."""

    def progress(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"Scanned {done} of {total} photos")

    def waiting(done: int, total: int) -> None:
        # total is 0 when the scan runs in another process, which does not say how far it is.
        so_far = f": {done} of {total} photos so far" if total else "..."
        bar.progress(min(done / max(total, 1), 1.0), text=SCAN_WAITING + so_far)

    return analysis.load_or_scan(model, data, split=split, progress=progress, waiting=waiting)


# -- class-level views over a scan (featapp.stats.classes, featapp.stats.projection) ----------------------------------
# Keyed by the scan's model hash and dataset fingerprint: a new scan (a new fingerprint or
# model) makes new entries; the tables are small, so st.cache_data's copy on read is cheap.


@st.cache_data(max_entries=64, show_spinner=False)
def _separation(
    model_sha: str, fingerprint: str, split: str, layer: str, by: str, positive: str | None, _stats: NeuronStats
) -> SeparationTable:
    return classes.layer_separation(_stats, layer, by=by, positive=positive)


def separation(stats: NeuronStats, layer: str, by: str, positive: str | None = None) -> SeparationTable:
    """:func:`featapp.stats.classes.layer_separation` of a scan, computed once per layer, score and positive class."""
    return _separation(
        model_sha=stats.model_sha256,
        fingerprint=stats.dataset_fingerprint,
        split=str(stats.split),
        layer=layer,
        by=by,
        positive=positive,
        _stats=stats,
    )


@st.cache_resource(max_entries=16, show_spinner=False, on_release=_release_scan_part)
def _projection(
    model_sha: str, fingerprint: str, split: str, layer: str, method: str, _stats: NeuronStats
) -> _Sized[Projection]:
    fitted = projection_module.load_or_fit(_stats, layer, method)
    return _Sized(("projection", model_sha, fingerprint, split, layer, method), fitted, _nbytes(fitted))


def projection(stats: NeuronStats, layer: str = "dense", method: str = "pca") -> Projection:
    """The scan's 2-D map (:func:`featapp.stats.projection.load_or_fit`: fitted once, cached on
    disk and here, within :data:`SCAN_CACHE_BYTES`)."""
    key = {
        "model_sha": stats.model_sha256,
        "fingerprint": stats.dataset_fingerprint,
        "split": str(stats.split),
        "layer": layer,
        "method": method,
    }
    entry = _projection(**key, _stats=stats)
    return _SCAN_BYTES.read(entry, lambda: _projection.clear(**key, _stats=None))


@st.cache_resource(max_entries=16, show_spinner=False, on_release=_release_scan_part)
def _thumbnails(fingerprint: str, split: str, count: int, _paths: tuple) -> _Sized[list[str | None]]:
    urls = projection_module.thumbnail_data_urls(_paths)
    return _Sized(("thumbnails", fingerprint, split, count), urls, _nbytes(urls))


def thumbnails(stats: NeuronStats) -> list[str | None]:
    """A small JPEG data URL per scanned photo, for the map's tooltips (made once per scan, about
    2 kB each; within :data:`SCAN_CACHE_BYTES`)."""
    key: dict[str, Any] = {"fingerprint": stats.dataset_fingerprint, "split": str(stats.split), "count": len(stats)}
    entry = _thumbnails(**key, _paths=tuple(stats.paths))
    return _SCAN_BYTES.read(entry, lambda: _thumbnails.clear(**key, _paths=None))


@st.cache_data(max_entries=16, show_spinner=False)
def _output_weights(model_sha: str, _path: str) -> OutputWeights:
    return classes.output_weights(_path)


def output_weights(model: FeatureModel) -> OutputWeights:
    """The output layer's weights (:func:`featapp.stats.classes.output_weights`). Raises :class:`ModelError`."""
    return _output_weights(model_sha=model.sha256, _path=str(model.path))


@st.cache_data(max_entries=64, show_spinner=False)
def _photos(spec: tuple[int, int, int], paths: tuple, _model: FeatureModel) -> tuple[tuple[str, ...], np.ndarray]:
    pixels, kept = [], []
    for path in paths:
        try:
            pixels.append(prepare_image(path, _model))
            kept.append(path)
        except ImageError:
            continue
    batch = np.stack(pixels) if pixels else np.zeros((0, *spec), np.uint8)
    return tuple(kept), batch


def photos(model: FeatureModel, paths: Iterable[str | os.PathLike]) -> tuple[tuple[str, ...], np.ndarray]:
    """A few photo files as the model sees them: the paths that could be read, and their pixels."""
    return _photos(spec=spec_key(model.input_spec), paths=tuple(str(p) for p in paths), _model=model)


@st.cache_data(max_entries=32, show_spinner=False)
def _channel_maps(
    model_sha: str, paths: tuple, layer: str, channel: int, _model: FeatureModel
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    kept, batch = photos(_model, paths)
    if not kept:
        return (), batch, np.zeros((0,), np.float32)
    maps = _model.activations(batch, layers=[layer])[layer][:, channel]
    return kept, batch, maps


def channel_maps(
    model: FeatureModel, paths: Iterable[str | os.PathLike], layer: str, channel: int
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """For a few photo files: the ones that could be read, their pixels, and ``channel`` of
    ``layer`` for each (one model run for all; only that channel is kept)."""
    return _channel_maps(
        model_sha=model.sha256, paths=tuple(str(p) for p in paths), layer=layer, channel=channel, _model=model
    )


@st.cache_data(max_entries=8, show_spinner=False)
def _gallery_liveness(
    model_sha: str, sample_key: str, _model: FeatureModel, _pixels: np.ndarray
) -> dict[str, LayerLiveness]:
    return liveness_of(_model.activations(_pixels[i : i + 8]) for i in range(0, len(_pixels), 8))


def gallery_liveness(model: FeatureModel, pixels: np.ndarray) -> dict[str, LayerLiveness]:
    """:func:`featapp.stats.liveness.liveness_of` over the gallery's photos (all layers, eight photos at a time)."""
    key = hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).hexdigest()
    return _gallery_liveness(model_sha=model.sha256, sample_key=key, _model=model, _pixels=pixels)


def cache_summary(model: FeatureModel) -> str:
    """One sentence on the activation cache's size for this model (the Model page's last line)."""
    per_image = activation_bytes(model.layers)
    images = activation_cache_images(model)
    return (
        f"Activations are cached for up to {images} images of this model ({per_image / 1e6:.1f} MB each, "
        f"{images * per_image / 1e6:.0f} MB), shared by everyone using this server; the cache holds at most "
        f"{ACTIVATION_CACHE_BYTES / 1e6:.0f} MB."
    )


# -- dataset and gallery ------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=4, ttl=600)
def _dataset_at(root: str) -> Dataset:
    return Dataset(root)


def dataset() -> Dataset:
    """The dataset folder (:func:`featapp.data.dataset.resolve_data_dir`: ``$FEATAPP_DATA_DIR``, ``data/cats_vs_dogs``,
    then the download folders). Raises :class:`DatasetError`."""
    return _dataset_at(root=str(resolve_data_dir().resolve()))


@st.cache_resource(show_spinner=False)
def download_lock() -> threading.Lock:
    """One photo download per server at a time: every visitor without a dataset sees the button."""
    return threading.Lock()


def download_destination(source: str) -> Path:
    """Where the Gallery's download button puts the photos: the folder the app reads
    (``$FEATAPP_DATA_DIR`` when set), else the folder the dataset lookup checks."""
    configured = settings.configured(settings.DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else default_destination(source)


def trained_on(model: FeatureModel, items: Sequence[DatasetImage]) -> list[bool]:
    """For each dataset image, whether the model was trained or selected on that photo
    (its file's sha256 is in the model's list, :mod:`featapp.data.provenance`); all ``False``
    when the model ships no list."""
    hashes = hashes_of(model.path)
    if not hashes:
        return [False] * len(items)
    return [file_sha256(item.path) in hashes for item in items]


def default_split(data: Dataset) -> str:
    """The test split when there is one (photos the model never trained on), else the first."""
    return "test" if "test" in data.splits else data.splits[0]


@st.cache_resource(max_entries=GALLERY_CACHE_SAMPLES, show_spinner=False)
def _gallery(
    root: str, split: str, seed: int, per_class: int, spec: tuple[int, int, int], _data: Dataset
) -> tuple[tuple[DatasetImage, ...], np.ndarray | None]:
    items = tuple(_data.sample(split, per_class=per_class, seed=seed))
    input_spec = InputSpec(*spec)
    pixels = _read_only(np.stack([prepare_image(item.path, input_spec) for item in items])) if items else None
    return items, pixels


def gallery(
    model: FeatureModel, data: Dataset, split: str, seed: int
) -> tuple[tuple[DatasetImage, ...], np.ndarray | None]:
    """The gallery sample: (dataset images, their pixels ``(N, H, W, C)``); 20 photos split over the classes."""
    per_class = max(1, GALLERY_SIZE // max(1, len(data.classes(split))))
    return _gallery(
        root=str(data.root),
        split=split,
        seed=int(seed),
        per_class=per_class,
        spec=spec_key(model.input_spec),
        _data=data,
    )


@dataclass(frozen=True)
class GalleryCard:
    """One gallery photo as the page shows it: its PNG (framed in red where the model is
    wrong), the name it has on the picture shelf, its caption, the marks behind them, and its
    alt text (:func:`featapp.app.captions.photo_alt`)."""

    item: DatasetImage
    png: bytes
    name: str
    caption: str
    wrong: bool | None
    trained_on: bool
    alt: str = ""


@st.cache_resource(max_entries=GALLERY_CACHE_SAMPLES, show_spinner=False)
def _gallery_cards(model_sha: str, sample: tuple, _model: FeatureModel, _data: Dataset) -> tuple[GalleryCard, ...]:
    _, split, seed, _, _ = sample
    items, pixels = gallery(_model, _data, split, seed)
    if not items:
        return ()
    assert pixels is not None  # gallery() gives pixels whenever it gives items
    prediction = gallery_prediction(_model, pixels)
    folders = match_classes(_data.classes(split), _model.class_names)
    seen_before = trained_on(_model, items)
    cards = []
    for index, (item, picture) in enumerate(zip(items, pixels, strict=True)):
        probabilities = None if prediction is None else prediction.probabilities[index]
        caption, wrong = gallery_caption(
            item.class_name, probabilities, _model.class_names, folders, trained_on=seen_before[index]
        )
        if wrong:  # a red frame as well as the words: neither needs an emoji font
            picture = outline_box(picture, (0, 0, *picture.shape[:2]), thickness=6, pointer_below=0)
        png = png_bytes(picture)
        alt = photo_alt(
            item.name,
            probabilities,
            _model.class_names,
            true_class=item.class_name,
            wrong=wrong,
            trained_on=seen_before[index],
        )
        cards.append(GalleryCard(item, png, PictureShelf.name_of(png), caption, wrong, seen_before[index], alt))
    return tuple(cards)


def gallery_cards(model: FeatureModel, data: Dataset, split: str, seed: int) -> tuple[GalleryCard, ...]:
    """The gallery sample's photos as the page shows them (:class:`GalleryCard`), made once
    per (model, sample) for every student: captions, frames and PNGs. The page shows each at
    :func:`card_url`. Through ``st.image``'s bytes each of the 20 was hashed and registered
    again on every rerun, for every student, and fetched by every new browser through
    Streamlit's media route (``bench/results/server_cpu.md``, ``open_app``, ``open_gallery``)."""
    per_class = max(1, GALLERY_SIZE // max(1, len(data.classes(split))))
    sample = (str(data.root), split, int(seed), per_class, spec_key(model.input_spec))
    return _gallery_cards(model_sha=model.sha256, sample=sample, _model=model, _data=data)


def card_url(card: GalleryCard) -> str:
    """Where the browser gets the card's picture: the process's picture shelf
    (:data:`featapp.app.asset_server.SHELF`), put back there if it had made room since."""
    return SHELF.url(card.png, name=card.name)


@st.cache_data(max_entries=GALLERY_CACHE_SAMPLES * 2, show_spinner=False)
def _gallery_prediction(model_sha: str, sample_key: str, _model: FeatureModel, _pixels: np.ndarray) -> Prediction:
    return _model.predict(_pixels)


def gallery_prediction(model: FeatureModel, pixels: np.ndarray) -> Prediction | None:
    """The model's answers for the gallery's photos, or ``None`` for a model without a classifier."""
    if not model.has_classifier:
        return None
    return _gallery_prediction(model_sha=model.sha256, sample_key=image_key(pixels), _model=model, _pixels=pixels)


@st.cache_resource(max_entries=64, show_spinner=False, on_release=_release_gallery_layer)
def _gallery_layer(
    model_sha: str, sample_key: str, layer: str, _model: FeatureModel, _pixels: np.ndarray
) -> _Sized[np.ndarray]:
    maps = _read_only(_model.activations(_pixels, layers=[layer])[layer])
    return _Sized((model_sha, sample_key, layer), maps, maps.nbytes)


def gallery_layer(model: FeatureModel, pixels: np.ndarray, layer: str) -> np.ndarray:
    """One layer's output for every gallery photo: ``(N, C, H, W)`` or ``(N, units)``; shared
    and read-only, within :data:`GALLERY_LAYER_CACHE_BYTES`."""
    key = {"model_sha": model.sha256, "sample_key": image_key(pixels), "layer": layer}
    entry = _gallery_layer(**key, _model=model, _pixels=pixels)
    return _GALLERY_LAYER_BYTES.read(entry, lambda: _gallery_layer.clear(**key, _model=None, _pixels=None))


@st.cache_data(max_entries=4, show_spinner=False)
def _probes(spec: tuple[int, int, int]) -> list[Probe]:
    return probe_images(InputSpec(*spec))


def probes(model: FeatureModel) -> list[Probe]:
    """The synthetic probe images at the model's input size (:mod:`featapp.engine.probes`)."""
    return _probes(spec=spec_key(model.input_spec))


# -- pictures and charts -------------------------------------------------------------------------------


@st.cache_data(max_entries=PNG_CACHE_ENTRIES, show_spinner=False)
def _png(content_key: str, width_px: int | None, _picture: np.ndarray) -> bytes:
    return png_bytes(_picture if width_px is None else fit_width(_picture, width_px))


@st.cache_data(max_entries=32, show_spinner=False)
def qr_code(text: str, module_px: int) -> np.ndarray:
    """:func:`featapp.app.share.qr_picture`, made once per link and size: segno encodes in
    pure Python, and the open "Share this view" box draws its code on every rerun."""
    return qr_picture(text, module_px=module_px)


def picture_png(picture: np.ndarray, width_px: int | None = None) -> bytes:
    """PNG bytes of a uint8 picture (at ``width_px`` wide, if given), encoded once per
    distinct picture. Given an array, ``st.image`` encodes it again on every rerun (twenty
    times for the gallery), and given a picture wider than its ``width`` it scales and
    encodes it once more.
    """
    return _picture(picture, width_px)[1]


def _picture(picture: np.ndarray, width_px: int | None) -> tuple[str, bytes]:
    array = np.ascontiguousarray(picture)
    digest = hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()
    png = _png(content_key=f"{array.shape}{array.dtype}{digest}", width_px=width_px, _picture=array)
    # Named by the picture's content (and width): the PNG is hashed by no one.
    return f"{digest}-{width_px or 0}.png", png


def picture_url(picture: np.ndarray, width_px: int | None = None) -> str:
    """Where the browser gets :func:`picture_png`'s picture: the process's picture shelf
    (:data:`featapp.app.asset_server.SHELF`), at a URL named by its content. Through
    ``st.image``'s bytes Streamlit hashed and registered it again on every rerun, and a
    browser fetched it again for every session; from the shelf it keeps it."""
    name, png = _picture(picture, width_px)
    return SHELF.url(png, name=name)


@st.cache_resource(max_entries=HEATMAP_CACHE_ENTRIES, show_spinner=False)
def _heatmap(
    map_key: tuple, scale_key: str, vr: tuple, selected: tuple[int, int] | None, width_px: int, _values: np.ndarray
) -> dict:
    # Arrow tables: Streamlit converts pandas frames to Arrow on every call, tables it only writes out.
    return heatmap_chart(
        _values, ValueRange(*vr), COLOUR_SCALES[scale_key], width_px=width_px, selected_cell=selected, arrow=True
    )


def _with_arrow_tables(spec: dict) -> dict:
    """The spec with its datasets as Arrow tables, not pandas frames: Streamlit converts a
    frame to Arrow on every call, a table it only writes out, so a cached spec costs almost
    nothing to send again (bench/results/channel_change_profile.md)."""
    spec["datasets"] = {
        name: pa.Table.from_pandas(frame, preserve_index=False) for name, frame in spec["datasets"].items()
    }
    return spec


def heatmap_spec(
    model: FeatureModel,
    image: CurrentImage,
    layer: str,
    channel: int,
    vr: ValueRange,
    scale: ColourScale,
    *,
    width_px: int,
    selected_cell: tuple[int, int] | None = None,
) -> dict:
    """:func:`featapp.render.heatmap_chart` of one channel's map, made once per (model,
    image, layer, channel, range, colours, chosen cell, width) in this process: a class
    looking at the same view costs one chart, and going back to a channel costs none.

    The spec is shared: pass it to ``st.vega_lite_chart`` (which copies what it changes),
    never change it.
    """
    values = activations(model, image)[layer][channel]
    vr_key = (float(vr.low), float(vr.high), vr.mode, bool(vr.clipped))
    cell = None if selected_cell is None else (int(selected_cell[0]), int(selected_cell[1]))
    return _heatmap(
        map_key=(model.sha256, image.key, layer, int(channel)),
        scale_key=scale.key,
        vr=vr_key,
        selected=cell,
        width_px=int(width_px),
        _values=values,
    )


@st.cache_resource(max_entries=HEATMAP_CACHE_ENTRIES // 4, show_spinner=False)
def _tile_grid(view: tuple, _maps: np.ndarray) -> tuple[dict, tuple[int, ...], tuple[int, ...]]:
    _, _, _, first, last, order, scale_key, mode, fixed, width_px = view
    ordered = order_channels(_maps, range(first - 1, last), order)
    tiles = make_tiles(_maps, ordered, COLOUR_SCALES[scale_key], mode, fixed=fixed)
    rows, cols = _maps.shape[1:]
    chart = _with_arrow_tables(tile_grid_chart(tiles, map_aspect=rows / cols, width_px=width_px))
    return chart, tuple(ordered), tuple(tile.channel for tile in tiles if tile.dead)


def tile_grid(
    model: FeatureModel,
    image: CurrentImage,
    layer: str,
    channels: tuple[int, int],
    order: str,
    scale: ColourScale,
    mode: str,
    fixed: tuple[float, float] | None,
    *,
    width_px: int,
) -> tuple[dict, list[int], list[int]]:
    """The Layer grid's chart for channels ``first..last`` (1-based, inclusive), made once
    per view in this process, with the channels in their shown order and the dead ones
    (both 0-based). The chart is shared: never change it."""
    first, last = int(channels[0]), int(channels[1])
    fixed_key = None if fixed is None else (float(fixed[0]), float(fixed[1]))
    view = (model.sha256, image.key, layer, first, last, order, scale.key, mode, fixed_key, int(width_px))
    chart, ordered, dead = _tile_grid(view=view, _maps=activations(model, image)[layer])
    return chart, list(ordered), list(dead)


@st.cache_resource(max_entries=1024, show_spinner=False, on_release=_release_strip_layer)
def _layer_maps(
    model_sha: str, image_key: str, layer: str, _model: FeatureModel, _image: np.ndarray
) -> _Sized[np.ndarray]:
    maps = _read_only(np.ascontiguousarray(_model.activations(_image[np.newaxis], layers=[layer])[layer][0]))
    return _Sized((model_sha, image_key, layer), maps, maps.nbytes)


def strip_layer(model: FeatureModel, image: CurrentImage, layer: str) -> np.ndarray:
    """One layer's maps of one image under a training snapshot, cached apart from
    :func:`activations`. The strip runs every snapshot on each new photo but needs one
    layer of each: stored there, six snapshots' whole activations (5.5 MB each) pushed the
    students' own photos out of that cache, so with a class each of their clicks ran the
    model again (seen in a py-spy profile of 50 students, ``bench/results/load_profile.md``).
    Within :data:`STRIP_CACHE_BYTES`."""
    key = {"model_sha": model.sha256, "image_key": image.key, "layer": layer}
    entry = _layer_maps(**key, _model=model, _image=image.array)
    return _STRIP_BYTES.read(entry, lambda: _layer_maps.clear(**key, _model=None, _image=None))


@st.cache_data(max_entries=PNG_CACHE_ENTRIES, show_spinner=False)
def _strip(view: tuple, models_key: tuple, _image: CurrentImage, _models: tuple, _final: FeatureModel) -> bytes:
    _, layer, channel, scale_key = view
    maps = [
        (label, (activations(model, _image)[layer] if model is _final else strip_layer(model, _image, layer))[channel])
        for label, model in _models
    ]
    return strip_png(maps, COLOUR_SCALES[scale_key])


def training_strip(
    image: CurrentImage,
    layer: str,
    channel: int,
    scale: ColourScale,
    models: list[tuple[str, FeatureModel]],
    final: FeatureModel,
) -> bytes:
    """:func:`featapp.render.strip_png` of one channel under each ``(label, model)``, left to
    right; where that model is ``final`` (the model the page shows) its activations are the
    page's, not a run of their own. Made once per (image, layer, channel, colours, models): an
    unchanged view (a cell clicked, the overlay toggled, another student on the same channel)
    costs no drawing."""
    models_key = tuple((label, model.sha256) for label, model in models)
    return _strip(
        view=(image.key, layer, int(channel), scale.key),
        models_key=models_key,
        _image=image,
        _models=tuple(models),
        _final=final,
    )


# -- training snapshots -----------------------------------------------------------------------------------


def read_snapshots() -> tuple[list[Snapshot], str | None]:
    """The snapshot index and the problem that kept it from being read (``None`` when none),
    read once per version of its file (the Feature map page asks for it twice per rerun:
    the training-progress control and the strip)."""
    folder = settings.snapshots_dir()
    try:
        info = (folder / INDEX_FILE).stat()
    except OSError:
        return [], None
    if not stat.S_ISREG(info.st_mode):
        return [], None
    snaps, problem = _snapshots_at(folder=str(folder), mtime_ns=info.st_mtime_ns, size=info.st_size)
    return list(snaps), problem


@st.cache_resource(max_entries=4, show_spinner=False)
def _snapshots_at(folder: str, mtime_ns: int, size: int) -> tuple[tuple[Snapshot, ...], str | None]:
    # The index's time stamp and size are in the key, so a rewritten index is read again.
    try:
        return tuple(load_snapshots(folder)), None
    except ModelError as err:
        return (), str(err)


def same_network(snapshot_model: FeatureModel, model: FeatureModel) -> bool:
    """:func:`featapp.engine.snapshots.same_network`, decided once per pair of model files."""
    return _same_network(files=(snapshot_model.sha256, model.sha256), _snapshot=snapshot_model, _model=model)


@st.cache_resource(max_entries=32, show_spinner=False)
def _same_network(files: tuple[str, str], _snapshot: FeatureModel, _model: FeatureModel) -> bool:
    return snapshots_module.same_network(_snapshot, _model)


def snapshots(model: FeatureModel | None = None) -> list[Snapshot]:
    """The training snapshots (:func:`featapp.engine.snapshots.load_snapshots`); empty when there are none.
    With ``model``, only that model's own (:func:`own_snapshots`).

    No snapshot folder is normal (a model converted without them). A damaged index is
    reported by :func:`featapp.app.view.pick_snapshot`, the control that would use it.
    """
    snaps = read_snapshots()[0]
    return snaps if model is None else own_snapshots(snaps, model)


def own_snapshots(snaps: list[Snapshot], model: FeatureModel) -> list[Snapshot]:
    """The snapshots of ``model``'s own training (:func:`featapp.engine.snapshots.own_snapshots`):
    another model that merely starts with a layer called ``conv2d`` gets none."""
    return snapshots_module.own_snapshots(snaps, model, spec_of=lambda snap: model_at(snap.path).spec)


@st.cache_resource(max_entries=64, show_spinner=False)
def _explorer(view: tuple, _model: FeatureModel, _image: CurrentImage) -> ExplorerPayload:
    _, _, layer_name, title = view
    layer = _model.layer(layer_name)
    return explorer_payload(
        activations(_model, _image)[layer_name],
        _image.array,
        layer.receptive_field,
        data_key=":".join(view[:3]),
        title=title,
        layer_number=_model.layer_names.index(layer_name) + 1,
        layer_name=layer_name,
    )


def explorer(model: FeatureModel, image: CurrentImage, layer: str) -> ExplorerPayload:
    """One layer's maps of one image, quantised for the browser (:mod:`featapp.app.map_explorer`),
    made once per (model, image, layer) in this process and shared: a class on one photo
    costs one payload. Never change it."""
    return _explorer(view=(model.sha256, image.key, layer, image.title), _model=model, _image=image)


# -- gradient views (Model, Feature map and One-neuron pages: featapp.app.sections) ----------------------------
ShownPicture = tuple[FeatureVisualization, str, bytes]
"""A feature visualisation with the shelf name and PNG of what is shown of it."""


@st.cache_resource(max_entries=8, show_spinner=False)
def gradients(model_sha: str, _model: FeatureModel) -> Gradients | str:
    try:
        return load_gradients(_model)
    except GradientError as err:
        return str(err)


@st.cache_data(max_entries=16, show_spinner=False)
def class_maps(model_sha: str, image_key: str, _grads: Gradients, _image: np.ndarray):
    smooth = smoothgrad(_grads, _image, samples=16, seed=0)
    cam = gradcam(_grads, _image)
    return smooth.per_pixel, cam.per_pixel, cam.layer, smooth.class_index


@st.cache_data(max_entries=16, show_spinner=False)
def _weighted_layers(model_sha: str, _model: FeatureModel) -> list[str]:
    return weighted_layers(_model)


def weighted_layer_names(model: FeatureModel) -> list[str]:
    """The layers with weights, bottom to top (what the sanity check can randomise)."""
    return _weighted_layers(model_sha=model.sha256, _model=model)


@st.cache_data(max_entries=16, show_spinner=False)
def _sanity(model_sha: str, image_key: str, top: int, seed: int, _grads: Gradients, _image: np.ndarray) -> SanityCheck:
    return sanity_check(_grads, _image, top=top, seed=seed)


def sanity(grads: Gradients, image: CurrentImage, top: int, seed: int = 0) -> SanityCheck:
    """The sanity check of ``image`` with the top ``top`` weighted layers randomised (seconds; then kept)."""
    return _sanity(
        model_sha=grads.model.sha256, image_key=image.key, top=top, seed=seed, _grads=grads, _image=image.array
    )


def _shown(result: FeatureVisualization, picture: np.ndarray) -> ShownPicture:
    png = render.png_bytes(picture)
    return result, "featurevis-" + hashlib.blake2b(png, digest_size=16).hexdigest() + ".png", png


@st.cache_resource(max_entries=64, show_spinner=False)
def featurevis_channel_of_grid(grid_name: str, channel: int, _grid: FeatureVisualization) -> ShownPicture:
    result = _grid.of_channel(channel)
    return _shown(result, result.shown()[0])


@st.cache_resource(max_entries=64, show_spinner=False)
def featurevis_channel_at(
    version: tuple, layer: str, channel: int, steps: int, _grads: Gradients
) -> ShownPicture | None:
    result = channel_picture(_grads, layer, channel, steps=steps, compute=False)
    return None if result is None else _shown(result, result.shown()[0])


@st.cache_resource(max_entries=16, show_spinner=False)
def featurevis_layer_at(version: tuple, layer: str, steps: int, _grads: Gradients) -> ShownPicture | None:
    whole = cached_layer_pictures(_grads, layer, steps=steps)
    if whole is None:
        return None
    return _shown(whole, render.picture_mosaic(whole.shown()))


def file_version(path: Path) -> tuple[str, int, int] | None:
    """``(path, mtime_ns, size)`` of a file, or ``None`` when there is none: a cache key that
    changes when the file is written again."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (str(path), info.st_mtime_ns, info.st_size)


# The atlas beside the model (featapp atlas): read and checked once per file version, model and
# steps, then every student's rerun shows its pictures from memory.
@st.cache_resource(max_entries=4, show_spinner=False)
def _atlas_at(version: tuple, model_sha: str, steps: int, _model: FeatureModel) -> Atlas | None:
    return usable_atlas(_model, steps=steps, path=version[0])


def atlas(model: FeatureModel, steps: int) -> Atlas | None:
    """The atlas beside ``model`` if it holds this model's pictures at ``steps`` (else ``None``;
    a stale or damaged file is logged once and ignored)."""
    version = file_version(atlas_path(model.path))
    if version is None:
        return None
    return _atlas_at(version=version, model_sha=model.sha256, steps=steps, _model=model)


@st.cache_resource(max_entries=16, show_spinner=False)
def _atlas_layer(version: tuple, layer: str, _atlas: Atlas) -> ShownPicture | None:
    whole = _atlas.complete_layer(layer)
    if whole is None:
        return None
    return _shown(whole, render.picture_mosaic(whole.shown()))


def atlas_layer(model: FeatureModel, layer: str, steps: int) -> ShownPicture | None:
    """Every channel's picture of ``layer`` from the atlas, as the layer's grid (``None`` when the
    atlas is missing, unusable or lacks some of the layer's channels)."""
    stored = atlas(model, steps)
    if stored is None:
        return None
    version = (str(stored.path), model.sha256, steps, *(file_version(stored.path) or ()))
    return _atlas_layer(version=version, layer=layer, _atlas=stored)
