"""The page edge: what every page shares. Cached models and activations, the current
image, the sidebar, and the view (layer, channel, colours, snapshot) the pages agree on.

Caching lives here and only here, so the library stays free of Streamlit:

* ``st.cache_resource`` holds each ONNX Runtime session, one per model file per process.
* It also holds one image's activations (all layers), keyed by the model's hash and the
  image's content hash, shared by every session of the process and bounded by
  :data:`ACTIVATION_CACHE_IMAGES` entries. For the lecture's model one image is about
  6.1 MB of float32 (see :func:`featapp.metadata.activation_bytes`), so the cache holds
  at most about 195 MB. Not ``st.cache_data``: that unpickles a fresh copy on every read,
  and the Feature map page reads seven images' activations per rerun (its training
  strip), which cost about 30 ms of every channel change. The arrays are shared, so
  they are made read-only (:func:`_read_only`): a page that wrote into one would change
  it for every student.
* The gallery's 20 photos and one layer of their activations are held the same way, by
  sample; :data:`GALLERY_LAYER_CACHE` bounds the largest of these (layer 1 of 20 photos
  is 56 MB, which ``st.cache_data`` copied on every rerun of the Neuron page).
* What a view sends is made once per view, for every session: the Feature map's chart
  (:func:`heatmap_spec`, :data:`HEATMAP_CACHE_ENTRIES`), the Layer grid's
  (:func:`tile_grid`), the training strip (:func:`training_strip`) and the gallery's
  pictures (:func:`gallery_pictures`). When a teacher says "everyone, channel 5", the first
  student's click builds the view and the class reuses it (``bench/class_at_once.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import streamlit as st

from featapp.appstate import CurrentImage, get_current, set_current
from featapp.captions import markdown_literal
from featapp.dataset import Dataset, DatasetError, resolve_data_dir
from featapp.images import InputSpec
from featapp.metadata import LayerInfo, activation_bytes
from featapp.model import DEFAULT_MODEL_PATH, MODEL_ENV, FeatureModel, ModelError, Prediction, load_model
from featapp.render import COLOUR_SCALES, SCALINGS, ColourScale, ValueRange

PAGE_FILES = {
    "gallery": "featapp/pages/gallery.py",
    "feature_map": "featapp/pages/feature_map.py",
    "layer_grid": "featapp/pages/layer_grid.py",
    "neuron": "featapp/pages/neuron.py",
    "model": "featapp/pages/model_page.py",
    "classes": "featapp/pages/classes_page.py",
}
"""Page scripts, relative to ``streamlit_app.py`` (as ``st.Page`` and ``st.switch_page`` want them)."""

CACHE_IMAGES_ENV = "FEATAPP_CACHE_IMAGES"
_cache_images_text = os.environ.get(CACHE_IMAGES_ENV, "").strip()
ACTIVATION_CACHE_IMAGES = max(1, int(_cache_images_text)) if _cache_images_text.isdigit() else 32
"""Images whose activations stay in memory (about 6.1 MB each for the lecture's model);
``$FEATAPP_CACHE_IMAGES`` changes it (read once, when the app starts)."""
GALLERY_CACHE_SAMPLES = 4
"""Gallery samples (20 photos each, 1.35 MB of pixels) kept decoded."""
GALLERY_LAYER_CACHE = 2
"""Layers of gallery activations kept (at most 56 MB each: layer 1 for 20 photos)."""

PNG_CACHE_ENTRIES = 256
"""Encoded pictures kept (photos, thumbnails, overlays: 20-300 kB each, so at most about 40 MB)."""
HEATMAP_CACHE_ENTRIES = 256
"""Heatmap chart specs kept, each one map's picture and cells (at most about 60 kB: layer 1)."""

GALLERY_SIZE = 20
FINAL = "final"
"""The training-progress option that means "the full, final model"."""

# Keys in st.session_state that the pages share (widgets mirror them; see synced()).
LAYER = "view.layer"
CHANNEL = "view.channel"  # 1-based, as students count channels
COLOURS = "view.colours"
SCALING = "view.scaling"
FIXED_LOW = "view.fixed_low"
FIXED_HIGH = "view.fixed_high"
SNAPSHOT = "view.snapshot"
CELL = "view.cell"  # (layer name, row, col), 0-based
SEED = "gallery.seed"
DEFAULT_SEED = 0
"""The gallery's sample seed until a student picks another (what :func:`warm_up` prepares)."""
SPLIT = "gallery.split"
GALLERY_TAB = "gallery_tab"
GALLERY_TABS = ("📷 Dataset photos", "🧪 Probes", "⬆️ Your photo or the camera")
"""The gallery's tabs: the dataset photos, the probes, and uploads with the camera."""

CLASSES_TAB = "classes.tab"
CLASSES_TABS = (
    "🐾 Channels that tell them apart",
    "🔢 Dense units and this photo",
    "🗺️ Map of the feature space",
    "🩺 Health",
)
"""The 'Cats vs dogs' page's tabs (only the open one is drawn)."""
CLASSES_LAYER = "classes.layer"

SCALING_LABELS = {
    "per map": "per map (its own min to max)",
    "per layer": "per layer (all channels, this image)",
    "fixed": "fixed (a range you set)",
}


# -- models --------------------------------------------------------------------------------------


def main_model_path() -> Path:
    """``$FEATAPP_MODEL``, else the committed model (the same rule as :func:`featapp.load_model`)."""
    return Path(os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL_PATH).expanduser()


@st.cache_resource(show_spinner=False, max_entries=12)
def _model_at(path: str, mtime_ns: int, size: int) -> FeatureModel:
    # mtime and size are in the key so a replaced file gets a fresh session.
    return load_model(path)


def model_at(path: str | os.PathLike) -> FeatureModel:
    """The model in ``path``, loaded once per process. Raises :class:`ModelError`."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return load_model(resolved)  # raises ModelError with the "no model file" message
    return _model_at(str(resolved), stat.st_mtime_ns, stat.st_size)


def model_or_error_page() -> FeatureModel:
    """The app's model, or an error page that says how to fix it (and the run stops)."""
    try:
        return model_at(main_model_path())
    except ModelError as err:
        st.title("featapp cannot start: the model file is missing or damaged")
        st.error(str(err))
        st.markdown(
            "**How to fix it**\n\n"
            "- Get the committed model back: `git checkout -- models/cats_dogs_small.onnx` "
            "(a fresh `git clone` has it).\n"
            f"- Or point the app at another converted model: set the environment variable `{MODEL_ENV}` "
            "to its path (on Streamlit Community Cloud, put it in the app's secrets).\n"
            "- To convert a Keras model: `python -m convert export MODEL.keras --out MODEL.onnx` "
            "(see the README).\n\n"
            "Then reload this page."
        )
        st.stop()
        raise  # unreachable: st.stop() ends the run


def spec_key(spec: InputSpec) -> tuple[int, int, int]:
    return (spec.height, spec.width, spec.channels)


# -- activations and predictions --------------------------------------------------------------------


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@st.cache_resource(max_entries=ACTIVATION_CACHE_IMAGES, show_spinner=False)
def _activations(model_sha: str, image_key: str, _model: FeatureModel, _image: np.ndarray) -> Mapping[str, np.ndarray]:
    batch = _model.activations(_image[np.newaxis])
    return MappingProxyType({name: _read_only(np.ascontiguousarray(values[0])) for name, values in batch.items()})


def activations(model: FeatureModel, image: CurrentImage) -> Mapping[str, np.ndarray]:
    """Every layer's output for one image: maps ``(C, H, W)``, vectors ``(units,)``.

    Shared by every session and read-only: copy an array before changing it.
    """
    return _activations(model.sha256, image.key, model, image.array)


@st.cache_data(max_entries=256, show_spinner=False)
def _prediction(model_sha: str, image_key: str, _model: FeatureModel, _image: np.ndarray) -> Prediction:
    return _model.predict(_image[np.newaxis])


def prediction(model: FeatureModel, image: CurrentImage) -> Prediction | None:
    """The model's class probabilities for the image, or ``None`` for a model without a classifier."""
    if not model.has_classifier:
        return None
    return _prediction(model.sha256, image.key, model, image.array)


@st.cache_data(max_entries=4, show_spinner=False)
def _npz(model_sha: str, image_key: str, _model: FeatureModel, _image: CurrentImage) -> bytes:

    from featapp.activation_file import activations_npz

    # The command line's layout, with N = 1: one file format for activations.
    batch = {name: values[np.newaxis] for name, values in activations(_model, _image).items()}
    return activations_npz(_model.layers, [_image.title], _image.array[np.newaxis], batch)


def activations_file(model: FeatureModel, image: CurrentImage) -> bytes:
    """The image's activations as ``.npz`` bytes (cached: compressing takes a moment)."""
    return _npz(model.sha256, image.key, model, image)


@st.cache_data(max_entries=16, show_spinner=False)
def _occlusion(model_sha: str, image_key: str, _model: FeatureModel, _image: np.ndarray):
    from featapp.occlusion import occlusion_sensitivity

    return occlusion_sensitivity(_model, _image)


def occlusion(model: FeatureModel, image: CurrentImage):
    """The image's occlusion-sensitivity map (:mod:`featapp.occlusion`), computed once per image."""
    return _occlusion(model.sha256, image.key, model, image.array)


def has_occlusion(model: FeatureModel, image: CurrentImage) -> bool:
    """True when the occlusion map of this image is already computed (so it shows without asking)."""
    return (model.sha256, image.key) in st.session_state.get("model.occlusion_done", set())


def mark_occlusion(model: FeatureModel, image: CurrentImage) -> None:
    st.session_state.setdefault("model.occlusion_done", set()).add((model.sha256, image.key))


@st.cache_data(max_entries=16, show_spinner=False)
def _filters(model_sha: str, _path: str):
    from featapp.filters import read_first_layer_filters

    return read_first_layer_filters(_path)


def first_layer_filters(model: FeatureModel):
    """The model's first-layer filters (:mod:`featapp.filters`). Raises :class:`ModelError`."""
    return _filters(model.sha256, str(model.path))


@st.cache_resource(max_entries=2, ttl=3600, show_spinner=False)
def _neuron_stats(model_sha: str, root: str, split: str, mtime_ns: int, _model: FeatureModel, _data: Dataset):
    from featapp.analysis import load_cached

    return load_cached(_model, _data, split=split)


def neuron_stats(model: FeatureModel, data: Dataset, split: str):
    """The scanned neuron statistics of a split (:mod:`featapp.analysis`), or ``None`` before a scan.

    Kept in memory once loaded (about 41 MB for the lecture's model and 4,000 photos);
    the cache file's time stamp is in the key, so a new scan is picked up.
    """
    from featapp.analysis import cache_path

    path = cache_path(model, data, split)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _neuron_stats(model.sha256, str(data.root), split, mtime, model, data)


# -- class-level views over a scan (featapp.classes, featapp.projection) ----------------------------------
# Keyed by the scan's model hash and dataset fingerprint: a new scan (a new fingerprint or
# model) makes new entries; the tables are small, so st.cache_data's copy on read is cheap.


@st.cache_data(max_entries=64, show_spinner=False)
def _separation(model_sha: str, fingerprint: str, split: str, layer: str, by: str, positive: str | None, _stats):
    from featapp.classes import layer_separation

    return layer_separation(_stats, layer, by=by, positive=positive)


def separation(stats, layer: str, by: str, positive: str | None = None):
    """:func:`featapp.classes.layer_separation` of a scan, computed once per layer, score and positive class."""
    return _separation(stats.model_sha256, stats.dataset_fingerprint, str(stats.split), layer, by, positive, stats)


@st.cache_resource(max_entries=4, show_spinner=False)
def _projection(model_sha: str, fingerprint: str, split: str, layer: str, method: str, _stats):
    from featapp.projection import load_or_fit

    return load_or_fit(_stats, layer, method)


def projection(stats, layer: str = "dense", method: str = "pca"):
    """The scan's 2-D map (:func:`featapp.projection.load_or_fit`: fitted once, cached on disk and here)."""
    return _projection(stats.model_sha256, stats.dataset_fingerprint, str(stats.split), layer, method, stats)


@st.cache_resource(max_entries=2, show_spinner=False)
def _thumbnails(fingerprint: str, split: str, count: int, _paths: tuple) -> list:
    from featapp.projection import thumbnail_data_urls

    return thumbnail_data_urls(_paths)


def thumbnails(stats) -> list:
    """A small JPEG data URL per scanned photo, for the map's tooltips (made once per scan, about 2 kB each)."""
    return _thumbnails(stats.dataset_fingerprint, str(stats.split), len(stats), tuple(stats.paths))


@st.cache_data(max_entries=16, show_spinner=False)
def _output_weights(model_sha: str, _path: str):
    from featapp.classes import output_weights

    return output_weights(_path)


def output_weights(model: FeatureModel):
    """The output layer's weights (:func:`featapp.classes.output_weights`). Raises :class:`ModelError`."""
    return _output_weights(model.sha256, str(model.path))


@st.cache_data(max_entries=64, show_spinner=False)
def _photos(spec: tuple[int, int, int], paths: tuple, _model: FeatureModel) -> tuple:
    from featapp.images import ImageError, prepare_image

    pixels, kept = [], []
    for path in paths:
        try:
            pixels.append(prepare_image(path, _model))
            kept.append(path)
        except ImageError:
            continue
    batch = np.stack(pixels) if pixels else np.zeros((0, *spec), np.uint8)
    return tuple(kept), batch


def photos(model: FeatureModel, paths) -> tuple:
    """A few photo files as the model sees them: the paths that could be read, and their pixels."""
    return _photos(spec_key(model.input_spec), tuple(str(p) for p in paths), model)


@st.cache_data(max_entries=32, show_spinner=False)
def _channel_maps(model_sha: str, paths: tuple, layer: str, channel: int, _model: FeatureModel) -> tuple:
    kept, batch = photos(_model, paths)
    if not kept:
        return (), batch, np.zeros((0,), np.float32)
    maps = _model.activations(batch, layers=[layer])[layer][:, channel]
    return kept, batch, maps


def channel_maps(model: FeatureModel, paths, layer: str, channel: int):
    """For a few photo files: the ones that could be read, their pixels, and ``channel`` of
    ``layer`` for each (one model run for all; only that channel is kept)."""
    return _channel_maps(model.sha256, tuple(str(p) for p in paths), layer, channel, model)


@st.cache_data(max_entries=8, show_spinner=False)
def _gallery_liveness(model_sha: str, sample_key: str, _model: FeatureModel, _pixels: np.ndarray) -> dict:
    from featapp.liveness import liveness_of

    return liveness_of(_model.activations(_pixels[i : i + 8]) for i in range(0, len(_pixels), 8))


def gallery_liveness(model: FeatureModel, pixels: np.ndarray) -> dict:
    """:func:`featapp.liveness.liveness_of` over the gallery's photos (all layers, eight photos at a time)."""
    import hashlib

    key = hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).hexdigest()
    return _gallery_liveness(model.sha256, key, model, pixels)


def cache_summary(model: FeatureModel) -> str:
    per_image = activation_bytes(model.layers)
    return (
        f"Activations are cached for up to {ACTIVATION_CACHE_IMAGES} images, shared by everyone using this "
        f"server: {per_image / 1e6:.1f} MB per image for this model, so at most "
        f"{ACTIVATION_CACHE_IMAGES * per_image / 1e6:.0f} MB."
    )


# -- dataset and gallery ------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=4, ttl=600)
def _dataset_at(root: str) -> Dataset:
    return Dataset(root)


def dataset() -> Dataset:
    """The dataset folder (:func:`featapp.dataset.resolve_data_dir`: ``$FEATAPP_DATA_DIR``, ``data/cats_vs_dogs``,
    then the download folders). Raises :class:`DatasetError`."""
    return _dataset_at(str(resolve_data_dir().resolve()))


@st.cache_resource(show_spinner=False)
def download_lock():
    """One photo download per server at a time: every visitor without a dataset sees the button."""
    import threading

    return threading.Lock()


def download_destination(source: str) -> Path:
    """Where the Gallery's download button puts the photos: the folder the app reads
    (``$FEATAPP_DATA_DIR`` when set), else the folder the dataset lookup checks."""
    from featapp.dataset import DATA_DIR_ENV
    from featapp.download import default_destination

    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else default_destination(source)


def trained_on(model: FeatureModel, items) -> list[bool]:
    """For each dataset image, whether the model was trained or selected on that photo
    (its file's sha256 is in the model's list, :mod:`featapp.provenance`); all ``False``
    when the model ships no list."""
    from featapp.provenance import file_sha256
    from featapp.provenance import trained_on as hashes_of

    hashes = hashes_of(model.path)
    if not hashes:
        return [False] * len(items)
    return [file_sha256(item.path) in hashes for item in items]


def default_split(data: Dataset) -> str:
    """The test split when there is one (photos the model never trained on), else the first."""
    return "test" if "test" in data.splits else data.splits[0]


@st.cache_resource(max_entries=GALLERY_CACHE_SAMPLES, show_spinner=False)
def _gallery(root: str, split: str, seed: int, per_class: int, spec: tuple[int, int, int], _data: Dataset):
    from featapp.images import prepare_image

    items = tuple(_data.sample(split, per_class=per_class, seed=seed))
    input_spec = InputSpec(*spec)
    pixels = _read_only(np.stack([prepare_image(item.path, input_spec) for item in items])) if items else None
    return items, pixels


def gallery(model: FeatureModel, data: Dataset, split: str, seed: int):
    """The gallery sample: (dataset images, their pixels ``(N, H, W, C)``); 20 photos split over the classes."""
    per_class = max(1, GALLERY_SIZE // max(1, len(data.classes(split))))
    return _gallery(str(data.root), split, int(seed), per_class, spec_key(model.input_spec), data)


@st.cache_resource(max_entries=GALLERY_CACHE_SAMPLES, show_spinner=False)
def _gallery_pngs(sample: tuple, _pixels: np.ndarray | None) -> tuple[bytes, ...]:
    from featapp.render import png_bytes

    return () if _pixels is None else tuple(png_bytes(picture) for picture in _pixels)


def gallery_pictures(model: FeatureModel, data: Dataset, split: str, seed: int) -> tuple[bytes, ...]:
    """PNG bytes of each gallery photo (as :func:`picture_png` makes them), encoded once per
    sample and found with one cache lookup: through :func:`picture_png` each of the 20 was
    hashed and looked up again on every rerun of the gallery, for every student."""
    per_class = max(1, GALLERY_SIZE // max(1, len(data.classes(split))))
    sample = (str(data.root), split, int(seed), per_class, spec_key(model.input_spec))
    return _gallery_pngs(sample, gallery(model, data, split, seed)[1])


@st.cache_data(max_entries=GALLERY_CACHE_SAMPLES * 2, show_spinner=False)
def _gallery_prediction(model_sha: str, sample_key: str, _model: FeatureModel, _pixels: np.ndarray) -> Prediction:
    return _model.predict(_pixels)


def gallery_prediction(model: FeatureModel, pixels: np.ndarray) -> Prediction | None:
    if not model.has_classifier:
        return None
    from featapp.appstate import image_key

    return _gallery_prediction(model.sha256, image_key(pixels), model, pixels)


@st.cache_resource(max_entries=GALLERY_LAYER_CACHE, show_spinner=False)
def _gallery_layer(
    model_sha: str, sample_key: str, layer: str, _model: FeatureModel, _pixels: np.ndarray
) -> np.ndarray:
    return _read_only(_model.activations(_pixels, layers=[layer])[layer])


def gallery_layer(model: FeatureModel, pixels: np.ndarray, layer: str) -> np.ndarray:
    """One layer's output for every gallery photo: ``(N, C, H, W)`` or ``(N, units)``."""
    from featapp.appstate import image_key

    return _gallery_layer(model.sha256, image_key(pixels), layer, model, pixels)


@st.cache_data(max_entries=4, show_spinner=False)
def _probes(spec: tuple[int, int, int]) -> list:
    from featapp.probes import probe_images

    return probe_images(InputSpec(*spec))


def probes(model: FeatureModel) -> list:
    """The synthetic probe images at the model's input size (:mod:`featapp.probes`)."""
    return _probes(spec_key(model.input_spec))


# -- the current image ------------------------------------------------------------------------------


def current_image(model: FeatureModel) -> CurrentImage:
    """The image the pages look at; the first gallery photo (or first probe) until one is chosen."""
    image = get_current(st.session_state)
    if image is not None and image.fits(model.input_spec):
        return image
    image = _default_image(model, int(st.session_state.get(SEED, DEFAULT_SEED)))
    set_current(st.session_state, image)
    return image


def _default_image(model: FeatureModel, seed: int) -> CurrentImage:
    try:
        data = dataset()
        split = default_split(data)
        items, pixels = gallery(model, data, split, seed)
        if items:
            item = items[0]
            return CurrentImage.from_array(pixels[0], "gallery", f"{item.name} ({split})", item.class_name)
    except DatasetError:
        pass
    probe = probes(model)[0]
    return CurrentImage.from_array(probe.image, "probe", probe.title)


@st.cache_data(max_entries=PNG_CACHE_ENTRIES, show_spinner=False)
def _png(content_key: str, width_px: int | None, _picture: np.ndarray) -> bytes:
    from featapp.render import fit_width, png_bytes

    return png_bytes(_picture if width_px is None else fit_width(_picture, width_px))


def picture_png(picture: np.ndarray, width_px: int | None = None) -> bytes:
    """PNG bytes of a uint8 picture (at ``width_px`` wide, if given), encoded once per
    distinct picture. Given an array, ``st.image`` encodes it again on every rerun (8 ms
    for one 150 x 150 photo here, so 160 ms for the gallery's 20), and given a picture
    wider than its ``width`` it scales and encodes it once more.
    """
    import hashlib

    array = np.ascontiguousarray(picture)
    digest = hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()
    return _png(f"{array.shape}{array.dtype}{digest}", width_px, array)


@st.cache_resource(max_entries=HEATMAP_CACHE_ENTRIES, show_spinner=False)
def _heatmap(
    map_key: tuple, scale_key: str, vr: tuple, selected: tuple[int, int] | None, width_px: int, _values: np.ndarray
) -> dict:
    from featapp.render import heatmap_chart

    # Arrow tables: Streamlit converts pandas frames to Arrow on every call, tables it only writes out.
    return heatmap_chart(
        _values, ValueRange(*vr), COLOUR_SCALES[scale_key], width_px=width_px, selected_cell=selected, arrow=True
    )


def _with_arrow_tables(spec: dict) -> dict:
    """The spec with its datasets as Arrow tables, not pandas frames: Streamlit converts a
    frame to Arrow on every call (1.4-3 ms per heatmap here), a table it only writes out
    (0.1 ms), so a cached spec costs almost nothing to send again."""
    import pyarrow as pa

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
    return _heatmap((model.sha256, image.key, layer, int(channel)), scale.key, vr_key, cell, int(width_px), values)


@st.cache_resource(max_entries=HEATMAP_CACHE_ENTRIES // 4, show_spinner=False)
def _tile_grid(view: tuple, _maps: np.ndarray) -> tuple[dict, tuple[int, ...], tuple[int, ...]]:
    from featapp.render import make_tiles, order_channels, tile_grid_chart

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
    chart, ordered, dead = _tile_grid(view, activations(model, image)[layer])
    return chart, list(ordered), list(dead)


@st.cache_data(max_entries=PNG_CACHE_ENTRIES, show_spinner=False)
def _strip(view: tuple, models_key: tuple, _image: CurrentImage, _models: tuple) -> bytes:
    from featapp.render import strip_png

    _, layer, channel, scale_key = view
    maps = [(label, activations(model, _image)[layer][channel]) for label, model in _models]
    return strip_png(maps, COLOUR_SCALES[scale_key])


def training_strip(
    image: CurrentImage, layer: str, channel: int, scale: ColourScale, models: list[tuple[str, FeatureModel]]
) -> bytes:
    """:func:`featapp.render.strip_png` of one channel under each ``(label, model)``, made
    once per (image, layer, channel, colours, models): an unchanged view (a cell clicked,
    the overlay toggled, another student on the same channel) costs no drawing."""
    models_key = tuple((label, model.sha256) for label, model in models)
    return _strip((image.key, layer, int(channel), scale.key), models_key, image, tuple(models))


def show_image(array: np.ndarray, *, width: int | str = "content", **kwargs: Any) -> None:
    """``st.image`` for uint8 pictures of 1 or 3 channels, sent as cached PNG bytes.

    An integer ``width`` is the shown width in pixels: the picture is made that wide here
    (crisp when enlarged), so Streamlit passes the bytes through untouched.
    """
    # PNG named explicitly: with "auto", Streamlit re-encodes an opaque picture as JPEG on every rerun.
    kwargs.setdefault("output_format", "PNG")
    st.image(picture_png(array, width if isinstance(width, int) else None), width=width, **kwargs)


def prediction_text(pred: Prediction | None, model: FeatureModel) -> str:
    from featapp.captions import describe_prediction

    if pred is None:
        return (
            f"No prediction: '{model.path.name}' has no classifier (a training snapshot keeps only the "
            "convolutional layers). Its feature maps can still be explored."
        )
    return describe_prediction(pred.probabilities[0], pred.class_names)


def sidebar(model: FeatureModel) -> None:
    """Current image, its prediction, and where the model runs: on every page."""
    image = current_image(model)
    with st.sidebar:
        st.markdown("**Current image**")
        show_image(
            image.array, caption=f"{markdown_literal(image.title)} · {image.source_text}", width=SIDEBAR_PICTURE_PX
        )
        if image.true_label is not None:
            st.caption(f"True label: {image.true_label}")
        st.markdown(prediction_text(prediction(model, image), model))
        st.caption(f"Model `{model.path.name}` runs on the **{model.provider.upper()}** (ONNX Runtime).")
        if model.provider_note:
            st.caption(model.provider_note)


# -- before the first visitor ---------------------------------------------------------------------------

SIDEBAR_PICTURE_PX = 180


def warm_up() -> str:
    """Do the first visitor's work before anyone visits: load the model, read and predict
    the gallery's first sample, and encode what the gallery page and the sidebar send.

    ``streamlit_app.py`` runs this in a thread when the server starts, so the first
    student's browser, still loading Streamlit's JavaScript, finds it done; everything
    lands in the same caches the pages read. A visitor who arrives mid-way waits on
    Streamlit's per-entry lock for the result, not for a second computation. A
    missing model or dataset is not an error here (the pages explain them to the
    visitor). Returns one line for the server's console.
    """
    started = time.perf_counter()
    try:
        model = model_at(main_model_path())
    except ModelError as err:
        return f"featapp: no model to load before the first visitor ({err})"
    image = _default_image(model, DEFAULT_SEED)
    prediction(model, image)
    activations(model, image)
    picture_png(image.array, SIDEBAR_PICTURE_PX)
    try:
        data = dataset()
    except DatasetError:
        # The gallery page says how to get a dataset; the first probe is ready instead.
        return f"featapp: model loaded ({model.provider.upper()}); no dataset, so no gallery to prepare"
    _, pixels = gallery(model, data, default_split(data), DEFAULT_SEED)
    if pixels is not None:
        gallery_prediction(model, pixels)
        gallery_pictures(model, data, default_split(data), DEFAULT_SEED)
    return (
        f"featapp: model loaded ({model.provider.upper()}) and the first gallery ready "
        f"({time.perf_counter() - started:.1f} s)"
    )


# -- the shared view -------------------------------------------------------------------------------------


def _copy(widget_key: str, shared_key: str, convert: Callable[[Any], Any] | None = None) -> None:
    value = st.session_state[widget_key]
    st.session_state[shared_key] = convert(value) if convert else value


def synced(widget: Callable[..., Any], label: str, *, key: str, shared: str, default: Any, **kwargs: Any) -> Any:
    """A widget that shows, and writes back to, a value every page shares.

    Streamlit forgets a widget's value when its page is left, so the shared value lives
    under its own key; the widget is set from it before it is drawn, and copies each
    change back (``on_change``).
    """
    if shared not in st.session_state:
        st.session_state[shared] = default
    st.session_state[key] = st.session_state[shared]
    return widget(label, key=key, on_change=_copy, args=(key, shared), **kwargs)


def layer_label(model: FeatureModel, layer: LayerInfo) -> str:
    """The layer's number and name: short enough for the dropdown's width (the kind and
    shape, which made labels like '8 · max_pooling2d_3 (MaxPooling2D, 7 x 7 x 128)' that
    the box cut off, are in :func:`layer_details` under it)."""
    number = model.layer_names.index(layer.name) + 1
    return f"{number} · {layer.name}"


def layer_details(layer: LayerInfo) -> str:
    return f"{layer.kind}, output {layer.shape_text}"


def pick_layer(model: FeatureModel, *, key: str, spatial_only: bool, label: str = "Layer") -> LayerInfo | None:
    """A layer chooser (layers numbered from 1, as in the lecture); ``None`` if there is none to choose."""
    layers = [layer for layer in model.layers if layer.is_spatial or not spatial_only]
    if not layers:
        return None
    names = [layer.name for layer in layers]
    if st.session_state.get(LAYER) not in names:
        st.session_state[LAYER] = names[0]
    chosen = synced(
        st.selectbox,
        label,
        key=key,
        shared=LAYER,
        default=names[0],
        options=names,
        format_func=lambda name: layer_label(model, model.layer(name)),
    )
    layer = model.layer(chosen)
    st.caption(layer_details(layer))
    return layer


def pick_channel(layer: LayerInfo, *, key: str, label: str | None = None) -> int:
    """A channel chooser (1 to C); returns the 0-based index."""
    count = layer.channels
    current = int(st.session_state.get(CHANNEL, 1))
    st.session_state[CHANNEL] = min(max(current, 1), count)
    chosen = synced(
        st.number_input,
        label or f"Channel (1 to {count})",
        key=key,
        shared=CHANNEL,
        default=1,
        min_value=1,
        max_value=count,
        step=1,
    )
    return int(chosen) - 1


def pick_colours(*, key: str) -> ColourScale:
    chosen = synced(
        st.radio,
        "Colours",
        key=key,
        shared=COLOURS,
        default="blues4",
        options=list(COLOUR_SCALES),
        format_func=lambda k: COLOUR_SCALES[k].label,
        horizontal=True,
    )
    return COLOUR_SCALES[chosen]


def pick_scaling(*, key: str, per_map_label: str | None = None) -> tuple[str, tuple[float, float] | None]:
    """Scaling mode, and the fixed range when it is "fixed" (``None`` if the range is invalid)."""
    labels = dict(SCALING_LABELS)
    if per_map_label:
        labels["per map"] = per_map_label
    mode = synced(
        st.radio,
        "Scale",
        key=key,
        shared=SCALING,
        default="per map",
        options=list(SCALINGS),
        format_func=lambda k: labels[k],
        horizontal=True,
    )
    if mode != "fixed":
        return mode, None
    low_col, high_col = st.columns(2)
    with low_col:
        low = synced(
            st.number_input, "Range from", key=f"{key}_low", shared=FIXED_LOW, default=0.0, step=0.1, format="%.3f"
        )
    with high_col:
        high = synced(
            st.number_input, "Range to", key=f"{key}_high", shared=FIXED_HIGH, default=1.0, step=0.1, format="%.3f"
        )
    if not high > low:
        st.error(
            f"The range must go from a lower to a higher value (you set {low:g} to {high:g}); showing each map per map."
        )
        return "per map", None
    return mode, (float(low), float(high))


# -- training snapshots -----------------------------------------------------------------------------------


def snapshots_folder() -> Path:
    """Where the snapshots are: ``$FEATAPP_SNAPSHOTS``, else ``models/snapshots`` (as :mod:`featapp.snapshots`)."""
    from featapp.snapshots import DEFAULT_SNAPSHOTS_DIR, SNAPSHOTS_ENV

    return Path(os.environ.get(SNAPSHOTS_ENV, "").strip() or DEFAULT_SNAPSHOTS_DIR).expanduser()


def _read_snapshots() -> tuple[list, str | None]:
    """The snapshot index, read once per version of its file (the Feature map page asks
    for it twice per rerun: the training-progress control and the strip)."""
    import stat

    from featapp.snapshots import INDEX_FILE

    folder = snapshots_folder()
    try:
        info = (folder / INDEX_FILE).stat()
    except OSError:
        return [], None
    if not stat.S_ISREG(info.st_mode):
        return [], None
    snaps, problem = _snapshots_at(str(folder), info.st_mtime_ns, info.st_size)
    return list(snaps), problem


@st.cache_resource(max_entries=4, show_spinner=False)
def _snapshots_at(folder: str, mtime_ns: int, size: int) -> tuple[tuple, str | None]:
    # The index's time stamp and size are in the key, so a rewritten index is read again.
    from featapp.snapshots import load_snapshots

    try:
        return tuple(load_snapshots(folder)), None
    except ModelError as err:
        return (), str(err)


def snapshots() -> list:
    """The training snapshots (:func:`featapp.snapshots.load_snapshots`); empty when there are none.

    No snapshot folder is normal (a model converted without them). A damaged index is
    reported by :func:`pick_snapshot`, the control that would use it.
    """
    return _read_snapshots()[0]


def snapshot_label(snapshot: Any) -> str:
    return str(snapshot.label)


def pick_snapshot(model: FeatureModel, *, key: str, layer: str | None = None) -> tuple[FeatureModel, str]:
    """The "training progress" control: the model to show (a snapshot or the final one) and its label.

    With no snapshots there is nothing to choose and the final model is used. A snapshot
    that cannot show ``layer`` or takes other inputs falls back to the final model, and says so.
    """
    snaps, problem = _read_snapshots()
    if problem:
        st.warning(f"The training snapshots cannot be used: {problem}")
    if not snaps:
        return model, "final model"
    by_id = {str(Path(s.path)): s for s in snaps}
    options = list(by_id) + [FINAL]
    if st.session_state.get(SNAPSHOT) not in options:
        st.session_state[SNAPSHOT] = FINAL
    chosen = synced(
        st.select_slider,
        "Training progress",
        key=key,
        shared=SNAPSHOT,
        default=FINAL,
        options=options,
        format_func=lambda option: "final model" if option == FINAL else snapshot_label(by_id[option]),
        help="See the same map as the network learned: from random weights (epoch 0) to the trained model.",
    )
    if chosen == FINAL:
        return model, "final model"
    snapshot = by_id[chosen]
    try:
        snap_model = model_at(snapshot.path)
    except ModelError as err:
        st.error(f"This snapshot cannot be loaded: {err} Showing the final model.")
        return model, "final model"
    if spec_key(snap_model.input_spec) != spec_key(model.input_spec):
        st.warning("This snapshot takes a different input size than the model; showing the final model.")
        return model, "final model"
    if layer is not None and layer not in snap_model.layer_names:
        st.info(
            f"Layer {layer} is not in the snapshots (they keep only the convolutional layers); showing the final model."
        )
        return model, "final model"
    return snap_model, snapshot_label(snapshot)


def goto(page: str) -> None:
    """Open another page (``page`` is a key of :data:`PAGE_FILES`)."""
    st.switch_page(PAGE_FILES[page])
