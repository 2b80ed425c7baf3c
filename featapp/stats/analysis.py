"""Neuron statistics across a dataset: which images drive a channel hardest, and where.

One pass over the dataset (:func:`scan`) records, for every layer and channel, each
image's **max** and **mean** activation and the **(row, col) of the max**; vector layers
(flatten, dense) record each unit's value. After that, :meth:`NeuronStats.top_k` answers
"which 9 photos excite channel 12 of conv2d_2 most, and which part of each photo did
it?" in well under a millisecond, without running the model again. The part of the
photo is the receptive field of the winning cell (:func:`featapp.engine.geometry.receptive_box`).

>>> stats = load_or_scan(model, Dataset("../shared/data/cats_vs_dogs"), split="train")  # doctest: +SKIP
>>> hit = stats.top_k("conv2d_2", 12, k=9)[0]                                        # doctest: +SKIP
>>> hit.path.name, hit.class_name, hit.cell, hit.box                                   # doctest: +SKIP
('dog.412.jpg', 'dogs', (20, 7), (80, 28, 98, 46))

Channels and units are 0-based here, as in ``acts["conv2d"][i, c]``.

**What is stored, and why.** For the lecture's model and the 4,000 shared photos:

* spatial layers (704 channels): max, mean and min as float32, the position of the max
  as uint16 (a flat index into the map) and how many cells are exactly zero (uint16) -
  16 bytes per image and channel, 45 MB. The min and the zero count say whether a map is
  constant and how sparse a layer is (:meth:`NeuronStats.liveness`);
* vector layers up to :data:`WIDE_LAYER_UNITS` units (dense: 512, dense_1: 1): every
  value as float32 - 8 MB;
* wider vector layers (flatten and dropout: 6,272 units, each a copy of one
  max_pooling2d_3 cell): only each unit's top :data:`KEPT_PER_UNIT` images and values -
  5 MB instead of 100 MB for all values, plus each image's count of zero units. ``top_k`` works for ``k`` up to that number;
  :meth:`NeuronStats.values` explains that the full table was not kept;
* a layer whose output equals an earlier layer's on every scanned image (dropout is the
  identity at inference, so it equals flatten) is stored once, as a reference.

That is about 57 MB, one uncompressed ``.npz`` (about 0.1 s to load).

**The cache.** :func:`load_or_scan` keeps one file per model, dataset folder and split
in :func:`featapp.cache.default_cache_dir`. Inside it records the format version, the
model's SHA-256 and the dataset's fingerprint (its file list and sizes, see
:meth:`featapp.data.dataset.Dataset.fingerprint`). A file that is truncated, garbled (the
zip CRC and a structural check catch it), from another format version, another model or
an older state of the dataset is never used: :func:`load_cached` returns ``None`` and
:func:`load_or_scan` scans again and replaces it atomically.

**One scan per file at a time.** When several visitors ask for the same scan together,
the first one scans and the others wait for it, then read its file: a process keeps one
lock per cache file (which names the model, the dataset folder and the split), and
processes sharing a cache folder also take a lock file beside it (``fcntl.flock``, where
the system has it). Scans of other splits or models do not wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from featapp.cache import CacheFileError, atomic_write, check_writable, default_cache_dir, read_npz
from featapp.data.dataset import Dataset, DatasetError, DatasetImage
from featapp.engine.geometry import ReceptiveField, receptive_box
from featapp.engine.images import ImageError, prepare_image
from featapp.stats.liveness import LayerLiveness
from featapp.stats.ranking import RankedHit

__all__ = [
    "RankedHit",
    "NeuronStats",
    "StatsFileError",
    "cache_damage",
    "scan",
    "load_or_scan",
    "load_cached",
    "cache_path",
    "default_cache_dir",
    "FORMAT_VERSION",
    "WIDE_LAYER_UNITS",
    "KEPT_PER_UNIT",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Version of the statistics file layout; a file with another version is rebuilt.
Version 2 added each map's minimum and zero count (spatial) and each image's zero count (wide vectors)."""

WIDE_LAYER_UNITS = 2048
"""Vector layers with more units than this keep only each unit's top images."""

KEPT_PER_UNIT = 100
"""How many top images each unit of a wide vector layer keeps (the largest ``k``)."""

BY_CHOICES = ("max", "mean")

Progress = Callable[[int, int], None]

SAVED_BYTES_PER_IMAGE = 32 * 1024
"""A generous bound on what a scan saves per photo, for the free-space check before a scan."""


class StatsFileError(CacheFileError):
    """A statistics file that is damaged, from another format, or does not match."""


@dataclass
class _Layer:
    """One layer's stored statistics. ``storage`` is one of:

    ``"spatial"`` (maxima, means, argmax, minima, zeros), ``"vector"`` (values), ``"top"``
    (top_index, top_value: each unit's best images, strongest first; zeros: each image's
    count of zero units) or ``"alias"`` (same as ``alias_of``)."""

    name: str
    storage: str
    units: int
    rows: int = 0
    cols: int = 0
    field: ReceptiveField | None = None
    alias_of: str | None = None
    maxima: np.ndarray | None = None
    means: np.ndarray | None = None
    argmax: np.ndarray | None = None
    values: np.ndarray | None = None
    top_index: np.ndarray | None = None
    top_value: np.ndarray | None = None
    minima: np.ndarray | None = None
    zeros: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        names = {
            "spatial": ("maxima", "means", "argmax", "minima", "zeros"),
            "vector": ("values",),
            "top": ("top_index", "top_value", "zeros"),
            "alias": (),
        }[self.storage]
        return {name: getattr(self, name) for name in names}


class NeuronStats:
    """Per-image statistics of every layer and channel over a set of images.

    Build it with :func:`scan` or :func:`load_or_scan`. ``paths``, ``labels`` and
    :attr:`image_classes` are per image; ``class_names`` are the dataset's classes in
    label order, so ``class_names[labels[i]]`` is image ``i``'s class.

    >>> stats.top_k("conv2d", 0, k=3)       # doctest: +SKIP
    [RankedHit(index=26, value=0.93, cell=(88, 14), box=(85, 11, 93, 19), rank=0, path=PosixPath('.../cat.27.jpg'), ...), ...]
    """

    def __init__(
        self,
        *,
        model_sha256: str,
        dataset_fingerprint: str,
        paths: list[Path],
        class_names: list[str],
        labels: np.ndarray,
        layers: list[_Layer],
        input_hw: tuple[int, int],
        split: str | None = None,
        skipped: list[tuple[Path, str]] | None = None,
    ) -> None:
        self.model_sha256 = model_sha256
        self.dataset_fingerprint = dataset_fingerprint
        self.paths = paths
        self.class_names = class_names
        self.labels = labels
        self.input_hw = input_hw
        self.split = split
        self.skipped: list[tuple[Path, str]] = list(skipped or [])
        """Images that could not be read, with the reason; they are not in ``paths``."""
        self._layers: dict[str, _Layer] = {layer.name: layer for layer in layers}

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"NeuronStats({len(self)} images, {len(self._layers)} layers, split={self.split!r})"

    @property
    def layer_names(self) -> list[str]:
        """Layers in model order."""
        return list(self._layers)

    @property
    def image_classes(self) -> list[str]:
        """Each image's class name (``class_names[labels[i]]``)."""
        return [self.class_names[label] for label in self.labels]

    def units(self, layer: str) -> int:
        """Channels of a map, or units of a vector."""
        return self._layer(layer).units

    def storage(self, layer: str) -> str:
        """How ``layer`` is kept: ``"spatial"``, ``"vector"``, ``"top"`` or ``"alias"`` (see the module doc)."""
        return self._layer(layer).storage

    def _layer(self, name: str) -> _Layer:
        try:
            return self._layers[name]
        except KeyError:
            raise KeyError(f"no layer {name!r}; the layers are: {', '.join(self._layers)}") from None

    def _resolved(self, name: str) -> _Layer:
        layer = self._layer(name)
        while layer.storage == "alias":
            layer = self._layers[layer.alias_of]  # type: ignore[index]
        return layer

    def _check_channel(self, layer: _Layer, name: str, channel: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise TypeError(f"channel must be an integer, not {type(channel).__name__}")
        if not 0 <= channel < layer.units:
            what = "channels" if layer.storage == "spatial" else "units"
            raise IndexError(
                f"layer {name!r} has {layer.units} {what}, numbered 0 to {layer.units - 1} here; got {channel}"
            )
        return int(channel)

    def values(self, layer: str, by: str = "max") -> np.ndarray:
        """The ``(images, channels)`` table behind :meth:`top_k`: each image's max or mean
        per channel (spatial layers), or each unit's value (vector layers). Read-only.

        >>> stats.values("dense_1")[:, 0]        # p(dog) per image  # doctest: +SKIP
        """
        if by not in BY_CHOICES:
            raise ValueError(f"by must be one of {', '.join(BY_CHOICES)}, not {by!r}")
        stored = self._resolved(layer)
        if stored.storage == "top":
            raise ValueError(
                f"layer {layer!r} has {stored.units} units, too many to keep every image's value; "
                f"only each unit's top {stored.top_index.shape[0]} images were kept (use top_k)."  # type: ignore[union-attr]
            )
        table = stored.values if stored.storage == "vector" else (stored.maxima if by == "max" else stored.means)
        view = table.view()  # type: ignore[union-attr]
        view.flags.writeable = False
        return view

    def is_spatial(self, layer: str) -> bool:
        """True for a layer of feature maps (it has cells, maxima and means)."""
        return self._resolved(layer).storage == "spatial"

    def receptive_field(self, layer: str) -> ReceptiveField | None:
        """The receptive field of a feature-map layer's cells (``None`` for vectors)."""
        return self._resolved(layer).field

    def max_cells(self, layer: str) -> np.ndarray:
        """``(images, channels, 2)``: row and col of each image's max, for spatial layers."""
        stored = self._resolved(layer)
        if stored.storage != "spatial":
            raise ValueError(f"layer {layer!r} is not a feature map; it has no cells")
        rows, cols = np.divmod(stored.argmax.astype(np.int64), stored.cols)  # type: ignore[union-attr]
        return np.stack([rows, cols], axis=-1)

    def liveness(self, layer: str) -> LayerLiveness:
        """How alive ``layer`` is on the scanned images (:class:`featapp.stats.liveness.LayerLiveness`):
        channels that never fire, the share of constant maps, and the share of zeros.

        A channel fires when some cell of some image is above zero; a map is constant when
        its min equals its max. Vector units have no maps, so their constant share is 0.

        >>> stats.liveness("conv2d_3").never_active_share     # doctest: +SKIP
        0.117
        """
        stored = self._resolved(layer)
        count = len(self)
        if stored.storage == "spatial":
            assert stored.maxima is not None and stored.minima is not None and stored.zeros is not None  # see _Layer
            ever = (stored.maxima > 0).any(axis=0)
            maps = count * stored.units
            constant = int((stored.maxima == stored.minima).sum()) / maps if maps else 0.0
            cells = maps * stored.rows * stored.cols
            sparsity = float(stored.zeros.sum(dtype=np.int64)) / cells if cells else 0.0
        elif stored.storage == "vector":
            assert stored.values is not None  # see _Layer
            ever = (stored.values > 0).any(axis=0)
            constant = 0.0
            sparsity = float(np.count_nonzero(stored.values == 0)) / stored.values.size if count else 0.0
        else:
            assert stored.top_value is not None and stored.zeros is not None  # see _Layer
            # Each unit's strongest image is kept, so "ever above zero" is its first value.
            ever = stored.top_value[0] > 0 if count else np.zeros(stored.units, bool)
            constant = 0.0
            values = count * stored.units
            sparsity = float(stored.zeros.sum(dtype=np.int64)) / values if values else 0.0
        return LayerLiveness(
            channels=stored.units,
            images=count,
            never_active_channels=tuple(int(c) for c in np.flatnonzero(~ever)),
            constant_map_share=float(constant),
            sparsity=sparsity,
        )

    def top_k(self, layer: str, channel: int, k: int = 9, by: str = "max") -> list[RankedHit]:
        """The ``k`` images on which ``channel`` of ``layer`` responds most, strongest first.

        ``by="max"`` ranks by each image's strongest cell, ``by="mean"`` by the map's
        average; either way ``cell`` and ``box`` locate the image's max. Ties go to the
        earlier image. Channels are 0-based.

        >>> [hit.path.name for hit in stats.top_k("conv2d_3", 5, k=3)]   # doctest: +SKIP
        ['dog.87.jpg', 'dog.1043.jpg', 'cat.311.jpg']
        """
        if by not in BY_CHOICES:
            raise ValueError(f"by must be one of {', '.join(BY_CHOICES)}, not {by!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a whole number of images, at least 1, not {k!r}")
        stored = self._resolved(layer)
        channel = self._check_channel(stored, layer, channel)
        if stored.storage == "top":
            kept = stored.top_index.shape[0]  # type: ignore[union-attr]
            if k > kept and kept < len(self):
                raise ValueError(
                    f"layer {layer!r} keeps only each unit's top {kept} images (it has {stored.units} units); "
                    f"ask for k <= {kept}"
                )
            indices = stored.top_index[:k, channel]  # type: ignore[index]
            values = stored.top_value[:k, channel]  # type: ignore[index]
        else:
            if stored.storage == "vector":
                column = stored.values[:, channel]  # type: ignore[index]
            else:
                column = (stored.maxima if by == "max" else stored.means)[:, channel]  # type: ignore[index]
            # A stable sort of a few thousand numbers is cheap and, unlike
            # argpartition, always breaks ties (dead ReLU channels: all zeros) the same way.
            indices = np.argsort(-column, kind="stable")[:k]
            values = column[indices]
        hits = []
        for rank, (index, value) in enumerate(zip(indices.tolist(), values.tolist(), strict=True)):
            cell = box = None
            if stored.storage == "spatial":
                row, col = divmod(int(stored.argmax[index, channel]), stored.cols)  # type: ignore[index]
                cell = (row, col)
                box = receptive_box(stored.field, row, col, self.input_hw)  # type: ignore[arg-type]
            label = int(self.labels[index])
            hits.append(
                RankedHit(
                    path=self.paths[index],
                    class_name=self.class_names[label],
                    label=label,
                    value=float(value),
                    cell=cell,
                    box=box,
                    rank=rank,
                    index=int(index),
                )
            )
        return hits

    # -- saving and loading ----------------------------------------------------------------
    def save(self, path: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> Path:
        """Write the statistics to one ``.npz`` file, atomically.

        With ``relative_to`` (the dataset folder) paths are stored relative to it, so
        the file stays valid when the dataset moves.
        """
        root = Path(relative_to) if relative_to is not None else None
        stored_paths = [p.relative_to(root).as_posix() if root else str(p) for p in self.paths]
        layer_rows = []
        arrays: dict[str, np.ndarray] = {"labels": np.asarray(self.labels, dtype=np.int32)}
        for number, layer in enumerate(self._layers.values()):
            layer_rows.append(
                {
                    "name": layer.name,
                    "storage": layer.storage,
                    "units": layer.units,
                    "rows": layer.rows,
                    "cols": layer.cols,
                    "alias_of": layer.alias_of,
                    "field": None
                    if layer.field is None
                    else {"size": layer.field.size, "jump": layer.field.jump, "offset": layer.field.offset},
                }
            )
            for key, array in layer.arrays().items():
                arrays[f"{number}.{key}"] = array
        meta = {
            "format": FORMAT_VERSION,
            "model_sha256": self.model_sha256,
            "dataset_fingerprint": self.dataset_fingerprint,
            "split": self.split,
            "relative": root is not None,
            "paths": stored_paths,
            "class_names": self.class_names,
            "input_hw": list(self.input_hw),
            "layers": layer_rows,
            "skipped": [[p.relative_to(root).as_posix() if root else str(p), why] for p, why in self.skipped],
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        return atomic_write(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]  # mypy holds each value against savez's allow_pickle: bool

    @classmethod
    def load(cls, path: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> NeuronStats:
        """Read a file written by :meth:`save`; :class:`StatsFileError` if it is damaged."""
        try:
            contents = read_npz(path)
            meta = json.loads(contents.pop("meta").tobytes().decode("utf-8"))
            return cls._from_parts(meta, contents, relative_to)
        except StatsFileError as err:
            raise StatsFileError(f"'{path}' is damaged: {err}") from None
        except CacheFileError as err:  # read_npz's own message names the file
            raise StatsFileError(str(err)) from None
        except (
            OSError,
            EOFError,
            zipfile.BadZipFile,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
            RecursionError,
        ) as err:
            # Everything a truncated or garbled zip, npy header or JSON can raise.
            raise StatsFileError(f"'{path}' is damaged ({type(err).__name__}: {err})") from None

    @classmethod
    def _from_parts(cls, meta: dict, arrays: dict[str, np.ndarray], relative_to) -> NeuronStats:
        if meta.get("format") != FORMAT_VERSION:
            raise StatsFileError(f"format {meta.get('format')!r}, not {FORMAT_VERSION}")
        root = Path(relative_to) if relative_to is not None else None
        if bool(meta["relative"]) != (root is not None):
            raise StatsFileError("paths are stored relative to a folder that was not given, or the other way round")
        if root is not None:
            _check_inside(meta["paths"], [p for p, _why in meta["skipped"]])
        paths = [root / p if root else Path(p) for p in meta["paths"]]
        count = len(paths)
        class_names = [str(c) for c in meta["class_names"]]
        labels = arrays.pop("labels")
        if labels.shape != (count,) or (count and not (labels.min() >= 0 and labels.max() < len(class_names))):
            raise StatsFileError("labels do not match the image list")
        layers: list[_Layer] = []
        names: set[str] = set()
        for number, row in enumerate(meta["layers"]):
            field = row["field"]
            layer = _Layer(
                name=str(row["name"]),
                storage=str(row["storage"]),
                units=int(row["units"]),
                rows=int(row["rows"]),
                cols=int(row["cols"]),
                alias_of=row["alias_of"],
                field=None
                if field is None
                else ReceptiveField(tuple(field["size"]), tuple(field["jump"]), tuple(field["offset"])),
            )
            if layer.storage not in ("spatial", "vector", "top", "alias"):
                raise StatsFileError(f"unknown storage {layer.storage!r}")
            if layer.storage == "alias" and layer.alias_of not in names:
                raise StatsFileError(f"layer {layer.name!r} refers to an unknown layer")
            for key in layer.arrays():
                setattr(layer, key, arrays.pop(f"{number}.{key}"))
            _check_shapes(layer, count)
            _check_finite(layer)
            layers.append(layer)
            names.add(layer.name)
        if arrays:
            raise StatsFileError(f"unexpected arrays {sorted(arrays)}")
        return cls(
            model_sha256=str(meta["model_sha256"]),
            dataset_fingerprint=str(meta["dataset_fingerprint"]),
            paths=paths,
            class_names=class_names,
            labels=labels,
            layers=layers,
            input_hw=(int(meta["input_hw"][0]), int(meta["input_hw"][1])),
            split=meta["split"],
            skipped=[(root / p if root else Path(p), str(why)) for p, why in meta["skipped"]],
        )


def _check_inside(*path_lists: list) -> None:
    """Stored paths are relative and stay inside the dataset: a file that names
    ``../../etc/passwd`` or ``/etc/passwd`` was not written by featapp."""
    for stored in (p for paths in path_lists for p in paths):
        parts = PurePosixPath(stored).parts if isinstance(stored, str) else None
        if not parts or parts[0] == "/" or ".." in parts:
            raise StatsFileError(f"it names a photo outside the dataset ({str(stored)[:80]!r})")


def _check_finite(layer: _Layer) -> None:
    """Every stored value is a number: a scan never stores NaN or infinity (the model's
    outputs are finite), so one means the file was damaged or forged."""
    for key, array in layer.arrays().items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise StatsFileError(f"layer {layer.name!r}: its {key} include NaN or infinity")


def _check_shapes(layer: _Layer, count: int) -> None:
    expected = (count, layer.units)
    if layer.storage == "spatial":
        if layer.field is None or layer.rows < 1 or layer.cols < 1:
            raise StatsFileError(f"layer {layer.name!r} lacks its geometry")
        for key in ("maxima", "means", "argmax", "minima", "zeros"):
            if getattr(layer, key).shape != expected:
                raise StatsFileError(f"layer {layer.name!r}: {key} has the wrong shape")
        if count and int(layer.argmax.max()) >= layer.rows * layer.cols:  # type: ignore[union-attr]
            raise StatsFileError(f"layer {layer.name!r}: a max lies outside the map")
    elif layer.storage == "vector":
        if layer.values.shape != expected:  # type: ignore[union-attr]
            raise StatsFileError(f"layer {layer.name!r}: values have the wrong shape")
    elif layer.storage == "top":
        kept = layer.top_index.shape[0]  # type: ignore[union-attr]
        if layer.top_index.shape != (kept, layer.units) or layer.top_value.shape != (kept, layer.units):  # type: ignore[union-attr]
            raise StatsFileError(f"layer {layer.name!r}: top images have the wrong shape")
        if kept > count or (kept and not (layer.top_index.min() >= 0 and layer.top_index.max() < count)):  # type: ignore[union-attr]
            raise StatsFileError(f"layer {layer.name!r}: top images point outside the image list")
        if layer.zeros.shape != (count,):  # type: ignore[union-attr]
            raise StatsFileError(f"layer {layer.name!r}: zero counts have the wrong shape")


# -- scanning ---------------------------------------------------------------------------------
class _Accumulator:
    """Collects one layer's statistics batch by batch."""

    def __init__(self, name: str, shape: tuple[int, ...], field: ReceptiveField | None, count: int) -> None:
        self.name = name
        self.shape = shape
        if len(shape) == 3:
            rows, cols, channels = shape
            index_type = np.uint16 if rows * cols <= np.iinfo(np.uint16).max + 1 else np.uint32
            self.layer = _Layer(
                name,
                "spatial",
                channels,
                rows,
                cols,
                field,
                maxima=np.empty((count, channels), np.float32),
                means=np.empty((count, channels), np.float32),
                argmax=np.empty((count, channels), index_type),
                minima=np.empty((count, channels), np.float32),
                zeros=np.empty((count, channels), np.uint16 if rows * cols <= np.iinfo(np.uint16).max else np.uint32),
            )
        elif shape[0] <= WIDE_LAYER_UNITS:
            self.layer = _Layer(name, "vector", shape[0], values=np.empty((count, shape[0]), np.float32))
        else:
            self.layer = _Layer(
                name,
                "top",
                shape[0],
                top_index=np.empty((0, shape[0]), np.int32),
                top_value=np.empty((0, shape[0]), np.float32),
                zeros=np.empty(count, np.int32),
            )

    def add(self, start: int, output: np.ndarray) -> None:
        layer = self.layer
        stop = start + len(output)
        if layer.storage == "spatial":
            flat = output.reshape(len(output), layer.units, -1)
            where = flat.argmax(axis=2)
            layer.argmax[start:stop] = where  # type: ignore[index]
            layer.maxima[start:stop] = np.take_along_axis(flat, where[:, :, np.newaxis], axis=2)[:, :, 0]  # type: ignore[index]
            layer.means[start:stop] = flat.mean(axis=2)  # type: ignore[index]
            layer.minima[start:stop] = flat.min(axis=2)  # type: ignore[index]
            layer.zeros[start:stop] = np.count_nonzero(flat == 0, axis=2)  # type: ignore[index]
        elif layer.storage == "vector":
            layer.values[start:stop] = output  # type: ignore[index]
        else:
            layer.zeros[start:stop] = np.count_nonzero(output == 0, axis=1)  # type: ignore[index]
            # Running top-KEPT_PER_UNIT per unit. The kept rows come first and hold
            # earlier images, so a stable sort keeps ties deterministic (earlier wins).
            values = np.concatenate([layer.top_value, output.astype(np.float32)])
            batch_index = np.broadcast_to(np.arange(start, stop, dtype=np.int32)[:, np.newaxis], output.shape)
            indices = np.concatenate([layer.top_index, batch_index])
            order = np.argsort(-values, axis=0, kind="stable")[:KEPT_PER_UNIT]
            layer.top_value = np.take_along_axis(values, order, axis=0)
            layer.top_index = np.take_along_axis(indices, order, axis=0)

    def finish(self, count: int) -> _Layer:
        layer = self.layer
        if layer.storage in ("spatial", "vector"):
            for key in layer.arrays():
                setattr(layer, key, getattr(layer, key)[:count].copy())
        else:
            for key in ("zeros",):
                setattr(layer, key, getattr(layer, key)[:count].copy())
        return layer


def _decode(images: Sequence[DatasetImage], spec) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    arrays, kept, skipped = [], [], []
    for position, image in enumerate(images):
        try:
            arrays.append(prepare_image(image.path, spec))
            kept.append(position)
        except ImageError as err:
            skipped.append((image.path, str(err)))
    batch = np.stack(arrays) if arrays else np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
    return batch, kept, skipped


SCAN_BATCH = 8
"""Images per model run in a scan. Every layer of a batch is held at once, with the statistics'
working arrays: at 32 a scan in the app took the server's memory hundreds of MB higher than at
8, for the same CPU time (bench/results/arena_memory.md)."""


def scan(
    model,
    images: Sequence[DatasetImage],
    batch_size: int = SCAN_BATCH,
    progress: Progress | None = None,
) -> NeuronStats:
    """Run every image through ``model`` once and record every layer's statistics.

    Images that cannot be read are skipped and listed in :attr:`NeuronStats.skipped`.
    ``progress(done, total)`` is called after each batch. JPEG decoding of the next
    batch overlaps with the model running on this one. A batch's every layer is in memory at
    once (:data:`SCAN_BATCH`).

    >>> stats = scan(model, Dataset(data_dir).sample("test", per_class=5))   # doctest: +SKIP
    >>> len(stats), stats.layer_names[0]                                      # doctest: +SKIP
    (10, 'conv2d')
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    images = list(images)
    total = len(images)
    spec = model.input_spec
    layers = list(model.layers)
    accumulators = [
        _Accumulator(layer.name, tuple(layer.output_shape), layer.receptive_field, total) for layer in layers
    ]
    # Which layers might just repeat an earlier one (dropout after flatten): same shape,
    # and still equal on every batch so far.
    maybe_same: dict[str, list[str]] = {
        later.name: [earlier.name for earlier in layers[:i] if earlier.output_shape == later.output_shape]
        for i, later in enumerate(layers)
    }
    skipped: list[tuple[Path, str]] = []
    kept_images: list[DatasetImage] = []
    batches = [images[start : start + batch_size] for start in range(0, total, batch_size)]
    done = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="featapp-decode") as pool:
        upcoming = pool.submit(_decode, batches[0], spec) if batches else None
        for number, batch_images in enumerate(batches):
            batch, kept, bad = upcoming.result()  # type: ignore[union-attr]
            upcoming = pool.submit(_decode, batches[number + 1], spec) if number + 1 < len(batches) else None
            skipped.extend(bad)
            if len(batch):
                outputs = model.activations(batch, batch_size=len(batch))
                start = len(kept_images)
                for accumulator in accumulators:
                    accumulator.add(start, outputs[accumulator.name])
                for name, candidates in maybe_same.items():
                    maybe_same[name] = [c for c in candidates if np.array_equal(outputs[name], outputs[c])]
                kept_images.extend(batch_images[i] for i in kept)
            done += len(batch_images)
            if progress is not None:
                progress(done, total)
    count = len(kept_images)
    stored_layers = []
    for accumulator in accumulators:
        same_as = maybe_same[accumulator.name]
        if same_as and count:
            stored_layers.append(_Layer(accumulator.name, "alias", accumulator.layer.units, alias_of=same_as[0]))
        else:
            stored_layers.append(accumulator.finish(count))
    class_names = sorted({image.class_name for image in kept_images})
    label_of = {name: i for i, name in enumerate(class_names)}
    return NeuronStats(
        model_sha256=model.sha256,
        dataset_fingerprint=_list_fingerprint(images),
        paths=[image.path for image in kept_images],
        class_names=class_names,
        labels=np.array([label_of[image.class_name] for image in kept_images], dtype=np.int32),
        layers=stored_layers,
        input_hw=(spec.height, spec.width),
        split=_common_split(kept_images),
        skipped=skipped,
    )


def _list_fingerprint(images: Sequence[DatasetImage]) -> str:
    digest = hashlib.sha256()
    for image in images:
        try:
            size = image.path.stat().st_size
        except OSError:
            size = -1
        digest.update(f"{image.path}\0{size}\n".encode())
    return digest.hexdigest()


def _common_split(images: Sequence[DatasetImage]) -> str | None:
    splits = {image.split for image in images}
    return splits.pop() if len(splits) == 1 else None


# -- the cache -------------------------------------------------------------------------------
def _as_dataset(dataset: Dataset | str | os.PathLike) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset(dataset)


def _images_of(dataset: Dataset, split: str | None) -> list[DatasetImage]:
    if split is not None:
        return dataset.images(split)
    return [image for name in dataset.splits for image in dataset.images(name)]


def cache_path(
    model, dataset: Dataset | str | os.PathLike, split: str | None = None, cache_dir: Path | None = None
) -> Path:
    """The statistics file for this model, dataset folder and split (it may not exist yet).

    >>> cache_path(model, "../shared/data/cats_vs_dogs", "train").name   # doctest: +SKIP
    'neurons-3f2a9c0d1e2b4f5a-7c1d2e3f4a5b-train.npz'
    """
    dataset = _as_dataset(dataset)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root_key = hashlib.sha256(str(dataset.root.resolve()).encode()).hexdigest()[:12]
    return folder / f"neurons-{model.sha256[:16]}-{root_key}-{split or 'all'}.npz"


def load_cached(
    model, dataset: Dataset | str | os.PathLike, split: str | None = None, cache_dir: Path | None = None
) -> NeuronStats | None:
    """The cached statistics if a valid, current file exists, else ``None``.

    "Valid" means readable, this format version, this model's hash, and the dataset's
    current fingerprint (same files, same sizes). Never scans.
    """
    dataset = _as_dataset(dataset)
    path = cache_path(model, dataset, split, cache_dir)
    if not path.is_file():
        return None
    try:
        stats = NeuronStats.load(path, relative_to=dataset.root)
    except StatsFileError as err:
        log.warning("Ignoring the neuron statistics in %s: %s", path, err)
        return None
    fingerprint = dataset.fingerprint(split)
    problems = []
    if stats.model_sha256 != model.sha256:
        problems.append("another model")
    if stats.dataset_fingerprint != fingerprint:
        problems.append("an older state of the dataset")
    if stats.split != split:
        problems.append(f"split {stats.split!r}")
    if stats.layer_names != model.layer_names or any(
        stats.units(layer.name) != layer.channels for layer in model.layers
    ):
        problems.append("other layers")
    if problems:
        log.info("Neuron statistics in %s are stale (%s); they will be rebuilt.", path, ", ".join(problems))
        return None
    return stats


def cache_damage(
    model, dataset: Dataset | str | os.PathLike, split: str | None = None, cache_dir: Path | None = None
) -> str | None:
    """Why the saved statistics cannot be read, or ``None`` when there are none or they read
    (stale ones read: they are simply rebuilt). A page says this and offers to scan again,
    rather than "not scanned yet"."""
    dataset = _as_dataset(dataset)
    path = cache_path(model, dataset, split, cache_dir)
    if not path.is_file():
        return None
    try:
        NeuronStats.load(path, relative_to=dataset.root)
    except StatsFileError as err:
        return str(err)
    return None


@dataclass
class _RunningScan:
    """The in-process lock of one cache file, and how far the scan holding it has got."""

    lock: threading.Lock
    done: int = 0
    total: int = 0


_RUNNING: dict[Path, _RunningScan] = {}
_RUNNING_GUARD = threading.Lock()

WAIT_POLL_SECONDS = 0.25
"""How often a waiting caller hears how far the running scan has got."""


def _running_scan(path: Path) -> _RunningScan:
    # Entries are never removed: one small object per cache file this process has scanned.
    with _RUNNING_GUARD:
        return _RUNNING.setdefault(path.resolve(), _RunningScan(threading.Lock()))


@contextlib.contextmanager
def _file_lock(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """An exclusive ``flock`` on ``<cache file>.lock``, for processes sharing the cache folder;
    ``on_wait()`` is called once if another process holds it. Skipped where there is no
    ``fcntl`` or the lock file cannot be made (a read-only folder: the scan's own
    writability check then says so).

    The holder removes the lock file before letting go, so none is left in the folder; a
    waiter that then finds its locked file gone or replaced tries again on the new one."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    told = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+b")  # noqa: SIM115 - closed below
        except OSError:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not told:
                on_wait()
                told = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(handle.fileno())):
            break
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()  # releases the lock


def load_or_scan(
    model,
    dataset: Dataset | str | os.PathLike,
    split: str | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    batch_size: int = SCAN_BATCH,
    force: bool = False,
    waiting: Progress | None = None,
) -> NeuronStats:
    """Cached statistics for ``dataset`` (one ``split``, or all splits when ``None``),
    scanning and caching them first if there is no valid cache (or if ``force``).

    While another caller is scanning the same model, dataset and split, this one waits
    for it and returns its result; ``waiting(done, total)`` is called meanwhile with that
    scan's progress (``0, 0`` when it runs in another process).

    >>> stats = load_or_scan(model, "../shared/data/cats_vs_dogs", split="validation")  # doctest: +SKIP
    """
    dataset = _as_dataset(dataset)
    path = cache_path(model, dataset, split, cache_dir)
    _refuse_inside(path.parent, dataset.root)
    cached = None if force else load_cached(model, dataset, split, cache_dir)
    if cached is not None:
        return cached
    running = _running_scan(path)
    waited = False
    while not running.lock.acquire(timeout=WAIT_POLL_SECONDS):
        waited = True
        if waiting is not None:
            waiting(running.done, running.total)
    try:
        running.done = running.total = 0
        other_process = [False]

        def _other_process() -> None:
            other_process[0] = True
            if waiting is not None:
                waiting(0, 0)

        with _file_lock(path, _other_process):
            # Whoever held the lock may just have saved this very scan (even when forced:
            # a scan that finished while we waited is as fresh as ours would be).
            if waited or other_process[0] or not force:
                cached = load_cached(model, dataset, split, cache_dir)
                if cached is not None:
                    return cached

            def _tracked(done: int, total: int) -> None:
                running.done, running.total = done, total
                if progress is not None:
                    progress(done, total)

            return _scan_and_save(model, dataset, split, path, _tracked, batch_size)
    finally:
        running.lock.release()


def _scan_and_save(
    model, dataset: Dataset, split: str | None, path: Path, progress: Progress, batch_size: int
) -> NeuronStats:
    # Fingerprint first, then a fresh listing: a file added in between makes the next
    # load see a changed dataset and scan again, never trust a list that missed it.
    fingerprint = dataset.fingerprint(split)
    images = _images_of(Dataset(dataset.root), split)
    if not images:
        raise DatasetError(f"The dataset at '{dataset.root}' has no images to scan.")
    # A read-only or full cache folder is found now, not after the whole scan.
    check_writable(path.parent, need_bytes=len(images) * SAVED_BYTES_PER_IMAGE)
    stats = scan(model, images, batch_size=batch_size, progress=progress)
    stats.dataset_fingerprint = fingerprint
    stats.split = split
    stats.save(path, relative_to=dataset.root)
    return stats


def _refuse_inside(folder: Path, dataset_root: Path) -> None:
    folder, root = folder.resolve(), dataset_root.resolve()
    if folder == root or root in folder.parents:
        raise DatasetError(
            f"The cache folder '{folder}' is inside the dataset '{root}'; featapp never writes into the "
            "dataset. Choose another folder (FEATAPP_CACHE_DIR)."
        )
