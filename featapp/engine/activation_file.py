"""One ``.npz`` layout for activations, written by ``python -m featapp activations`` and by
the Model page's download alike, so a notebook reads both the same way.

The file holds, for N images:

* ``<layer name>``: float32, one array per layer: maps ``(N, channels, rows, cols)`` (row 0
  at the top), vectors ``(N, units)``, the layout of :meth:`featapp.FeatureModel.activations`;
* ``layer_names``, ``layer_kinds``, ``layer_shapes``: each layer's name in model order (the
  lecture's ``layer_names``), its kind, and its output shape per image, channels last, as
  Keras prints it;
* ``files``: the input files (or the image's title), in the order of the first axis;
* ``images``: uint8 ``(N, height, width, channels)``: what the model saw.

>>> from featapp.engine.metadata import LayerInfo
>>> data = activations_npz([LayerInfo("conv", "Conv2D", (2, 2, 1))], ["x.png"],
...                        np.zeros((1, 4, 4, 3), np.uint8), {"conv": np.ones((1, 1, 2, 2), np.float32)})
>>> loaded = np.load(io.BytesIO(data))
>>> sorted(loaded.files), loaded["conv"].shape, loaded["files"].tolist()
(['conv', 'files', 'images', 'layer_kinds', 'layer_names', 'layer_shapes'], (1, 1, 2, 2), ['x.png'])
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from featapp.engine.metadata import LayerInfo

__all__ = ["META_KEYS", "LAYOUT", "reserved_layer_names", "activations_npz", "write_activations"]

META_KEYS = ("layer_names", "layer_kinds", "layer_shapes", "files", "images")
"""Arrays in an activations file besides one array per layer."""

LAYOUT = """\
The .npz file holds, for the N images that could be read:
  <layer name>   float32, one array per layer: maps (N, channels, rows, cols), row 0 at
                 the top, vectors (N, units) - the layout of featapp's model.activations
  layer_names    the layer names in model order (like the lecture's layer_names)
  layer_kinds    each layer's kind (Conv2D, MaxPooling2D, ...)
  layer_shapes   each layer's output shape per image, channels last, as Keras prints it
  files          the input files, in the order of the first axis
  images         uint8 (N, height, width, channels): what the model saw
Read it with:  acts = np.load("acts.npz"); acts["conv2d"][0, 0] is image 1's map of
channel 1 of layer 1 (0-based indices in numpy)."""


def reserved_layer_names(layers: Sequence[LayerInfo]) -> list[str]:
    """Layers whose names the layout's own arrays would overwrite."""
    return [layer.name for layer in layers if layer.name in META_KEYS]


def _meta(layers: Sequence[LayerInfo], files: Sequence[str], images: np.ndarray) -> dict[str, np.ndarray]:
    clash = reserved_layer_names(layers)
    if clash:
        raise ValueError(f"this model has layers called {', '.join(clash)}, which the .npz layout reserves")
    return {
        "layer_names": np.array([layer.name for layer in layers]),
        "layer_kinds": np.array([layer.kind for layer in layers]),
        "layer_shapes": np.array([layer.shape_text for layer in layers]),
        "files": np.array(list(files)),
        "images": np.asarray(images),
    }


def activations_npz(
    layers: Sequence[LayerInfo], files: Sequence[str], images: np.ndarray, activations: Mapping[str, np.ndarray]
) -> bytes:
    """A batch already in memory (the Model page's one image) as the bytes of a compressed file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **_meta(layers, files, images), **activations)  # type: ignore[arg-type]  # mypy holds each value against savez's allow_pickle: bool
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_activations(model, files: Sequence[str], batch: np.ndarray, out: Path, batch_size: int) -> None:
    """Any number of images: every layer streamed to a memory-mapped ``.npy``, then zipped
    into ``out`` atomically, so memory stays bounded however many images there are."""
    from featapp.cache import atomic_write

    extras = _meta(model.layers, files, batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = len(batch)
    # Named like the other temporary files (.gitignore has .*.tmp*): a killed run leaves it behind.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.", suffix=".scratch.tmp") as scratch:
        maps: dict[str, np.ndarray] = {}
        for start in range(0, count, batch_size):
            outputs = model.activations(batch[start : start + batch_size], batch_size=batch_size)
            for number, (name, value) in enumerate(outputs.items()):
                if name not in maps:
                    maps[name] = np.lib.format.open_memmap(
                        Path(scratch) / f"{number}.npy", mode="w+", dtype=np.float32, shape=(count, *value.shape[1:])
                    )
                maps[name][start : start + len(value)] = value
        for array in maps.values():
            array.flush()  # type: ignore[attr-defined]

        def write(handle) -> None:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for number, name in enumerate(maps):
                    archive.write(Path(scratch) / f"{number}.npy", arcname=f"{name}.npy")
                for key, array in extras.items():
                    archive.writestr(f"{key}.npy", _npy_bytes(array))

        atomic_write(out, write)
        maps.clear()
