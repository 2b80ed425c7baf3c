"""Models and snapshot folders for the app's tests, made at test time from the committed model.

:func:`trunk_of` cuts the committed model down to its convolutional trunk (input through
the last pooling layer), as the training snapshots are, optionally with its convolution
weights replaced by seeded random ones (what "epoch 0" looks like). :func:`snapshot_folder`
writes such trunks and an ``index.json`` with :func:`featapp.engine.snapshots.index_json`, so the
app reads them exactly as it will read the real ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from featapp.engine.metadata import METADATA_KEY, ModelSpec
from featapp.engine.snapshots import INDEX_FILE, Snapshot, index_json

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_MODEL = REPO_ROOT / "models" / "cats_dogs_small.onnx"
# The lecture's layer outputs (channels first, as exported), in layer order.
LECTURE_OUTPUT_SHAPES = {
    "conv2d": [32, 148, 148],
    "max_pooling2d": [32, 74, 74],
    "conv2d_1": [64, 72, 72],
    "max_pooling2d_1": [64, 36, 36],
    "conv2d_2": [128, 34, 34],
    "max_pooling2d_2": [128, 17, 17],
    "conv2d_3": [128, 15, 15],
    "max_pooling2d_3": [128, 7, 7],
    "flatten": [6272],
    "dropout": [6272],
    "dense": [512],
    "dense_1": [1],
}


def trunk_of(source: Path, target: Path, *, random_seed: int | None = None) -> Path:
    """Write the spatial layers of ``source`` as a model without a classifier."""
    model = onnx.load(str(source))
    spec = ModelSpec.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    trunk_layers = []
    for layer in spec.layers:
        if not layer.is_spatial:
            break
        trunk_layers.append(layer)
    names = [layer.name for layer in trunk_layers]
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.utils.extract_model(str(source), str(target), [spec.input_name], names)
    trunk = onnx.load(str(target))
    if random_seed is not None:
        rng = np.random.default_rng(random_seed)
        for index, init in enumerate(trunk.graph.initializer):
            values = numpy_helper.to_array(init)
            if values.ndim == 4:  # convolution weights (filters, channels, rows, cols)
                fan_in = values.shape[1] * values.shape[2] * values.shape[3]
                noise = rng.normal(0.0, np.sqrt(2.0 / fan_in), values.shape).astype(values.dtype)
                trunk.graph.initializer[index].CopyFrom(numpy_helper.from_array(noise, init.name))
    trunk_spec = replace(spec, layers=tuple(trunk_layers), output_activation=None, class_names=())
    del trunk.metadata_props[:]
    entry = trunk.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, trunk_spec.to_json()
    onnx.save(trunk, str(target))
    return target


def snapshot_folder(folder: Path, epochs: dict[int, int | None], best: int | None = None) -> Path:
    """Trunk snapshots in ``folder``: ``epochs`` maps epoch -> random seed (``None``: the
    committed weights). Validation accuracies are made up: 0.5 + epoch / 100."""
    snapshots = []
    for epoch, seed in epochs.items():
        path = trunk_of(COMMITTED_MODEL, folder / f"epoch_{epoch:03d}.onnx", random_seed=seed)
        accuracy = None if epoch == 0 else 0.5 + epoch / 100
        snapshots.append(Snapshot(epoch=epoch, val_accuracy=accuracy, path=path, is_best=epoch == best))
    (folder / INDEX_FILE).write_text(index_json(snapshots), encoding="utf-8")
    return folder
