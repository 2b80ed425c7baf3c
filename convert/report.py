"""What training did to the network: per snapshot, how far each conv layer's filters moved
from their random start, and how many of its channels are alive.

``python -m convert report RUN_DIR --data-dir DATA [--split test] [--onnx MODEL.onnx] --out REPORT.json``

For each ``.keras`` snapshot of the run's selection (``selection/snapshots/epoch_XXX.keras``)
and its best epoch (``selection/best.keras``):

* the Pearson correlation of each conv layer's kernel with the same layer at epoch 0: near 1
  means the filters are still their random initialisation (nothing learned), lower means
  features were learned;
* which first-layer kernels are oriented edges (:func:`featapp.engine.filters.edge_like_kernels`) and which
  colour detectors (:func:`featapp.engine.filters.colour_like_kernels`);
* each conv layer's liveness on the photos of one split (:mod:`featapp.stats.liveness`): the
  channels that never fire, the share of constant maps per photo.

``--onnx`` adds the same liveness for converted models, run through ONNX Runtime exactly as
the app runs them (repeatable: the new model and the one it replaces, side by side).
The photos are read once and reused for every snapshot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featapp.data.dataset import Dataset
from featapp.engine.filters import colour_like_kernels, edge_like_kernels, kernel_correlation, start_and_learned
from featapp.engine.images import InputSpec, prepare_image
from featapp.stats.liveness import LivenessCounter

INPUT_SPEC = InputSpec(150, 150, 3)


def _photos(data_dir: str, split: str, limit: int | None) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    images = Dataset(data_dir).images(split)
    if limit is not None:
        images = images[:limit]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return np.stack(list(pool.map(lambda image: prepare_image(image.path, INPUT_SPEC), images)))


def _keras_liveness(model, photos: np.ndarray) -> dict[str, dict]:
    import keras

    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    trunk = keras.Model(model.inputs, [layer.output for layer in conv])
    counters = [LivenessCounter(channels_last=True) for _ in conv]
    for start in range(0, len(photos), 50):
        outputs = trunk(photos[start : start + 50].astype(np.float32) / 255.0, training=False)
        for counter, maps in zip(counters, outputs, strict=True):
            counter.update(keras.ops.convert_to_numpy(maps))
    return {layer.name: counter.result().as_dict() for layer, counter in zip(conv, counters, strict=True)}


def onnx_liveness(path: str | os.PathLike, photos: np.ndarray) -> dict[str, dict]:
    """Liveness of every conv layer of a converted model, through ONNX Runtime."""
    from featapp.engine.model import load_model

    model = load_model(path, provider="cpu")
    conv = [layer.name for layer in model.layers if layer.kind == "Conv2D"]
    counters = {name: LivenessCounter() for name in conv}
    for start in range(0, len(photos), 50):
        for name, maps in model.activations(photos[start : start + 50], layers=conv).items():
            counters[name].update(maps)
    return {name: counter.result().as_dict() for name, counter in counters.items()}


def training_report(
    run_dir: str | os.PathLike,
    data_dir: str,
    split: str = "test",
    onnx_models: tuple[str, ...] = (),
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    import keras

    selection = Path(run_dir) / "selection"
    index = json.loads((selection / "snapshots" / "index.json").read_text())
    files = {int(epoch): selection / "snapshots" / entry["file"] for epoch, entry in index.items()}
    best = json.loads((selection / "best.json").read_text())
    log(f"Reading the {split} photos of {data_dir} ...")
    photos = _photos(data_dir, split, limit)
    start = keras.models.load_model(files[0], compile=False)
    conv_names = [layer.name for layer in start.layers if isinstance(layer, keras.layers.Conv2D)]
    rows = []
    entries = sorted(files.items()) + [(best["epoch"], selection / "best.keras")]
    for epoch, path in entries:
        log(f"epoch {epoch}: {path.name}")
        model = keras.models.load_model(path, compile=False)
        correlation = {
            name: kernel_correlation(model.get_layer(name).kernel.numpy(), start.get_layer(name).kernel.numpy())
            for name in conv_names
        }
        first_kernel = model.get_layer(conv_names[0]).kernel.numpy()  # (rows, cols, in, out)
        start_share, learned = start_and_learned(first_kernel, start.get_layer(conv_names[0]).kernel.numpy())
        rows.append(
            {
                "epoch": epoch,
                "first_layer_edge_kernels": [int(i) for i in edge_like_kernels(first_kernel.transpose(3, 2, 0, 1))],
                "first_layer_colour_kernels": [int(i) for i in colour_like_kernels(first_kernel.transpose(3, 2, 0, 1))],
                "first_layer_start_share": start_share,
                "first_layer_learned_over_start": learned,
                "file": path.name,
                "is_best": path.name == "best.keras",
                "val_accuracy": index.get(str(epoch), {}).get("val_accuracy")
                if path.name != "best.keras"
                else best["val_accuracy"],
                "weight_correlation_with_epoch_0": correlation,
                "liveness": _keras_liveness(model, photos),
            }
        )
    onnx = {}
    for path in onnx_models:
        log(f"ONNX Runtime: {path}")
        onnx[str(path)] = onnx_liveness(path, photos)
    return {"split": split, "images": len(photos), "snapshots": rows, "onnx": onnx}


def report_markdown(report: dict) -> str:
    """The report as Markdown tables, for the model card."""
    conv = list(report["snapshots"][0]["liveness"])
    head = (
        "| epoch | val acc. | layer-1 edge-like kernels | layer-1 colour detectors | layer-1 start kept / learned | "
        + " | ".join(f"{n}: corr. / never active / constant" for n in conv)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(conv))]
    for row in report["snapshots"]:
        cells = []
        for name in conv:
            live = row["liveness"][name]
            cells.append(
                f"{row['weight_correlation_with_epoch_0'][name]:.2f} / "
                f"{live['never_active']} of {live['channels']} / {100 * live['constant_map_share']:.0f}%"
            )
        label = f"{row['epoch']} (best)" if row["is_best"] else str(row["epoch"])
        acc = "-" if row["val_accuracy"] is None else f"{100 * row['val_accuracy']:.1f}%"
        edges = row.get("first_layer_edge_kernels")
        channels = row["liveness"][conv[0]]["channels"]
        edge_cell = "-" if edges is None else f"{len(edges)} of {channels}"
        colours = row.get("first_layer_colour_kernels")
        colour_cell = "-" if colours is None else f"{len(colours)} of {channels}"
        share, learned = row.get("first_layer_start_share"), row.get("first_layer_learned_over_start")
        split_cell = "-" if share is None or learned is None else f"{share:.2f} / {learned:.2f}"
        lines.append(f"| {label} | {acc} | {edge_cell} | {colour_cell} | {split_cell} | " + " | ".join(cells) + " |")
    for path, layers in report["onnx"].items():
        lines += ["", f"ONNX Runtime, `{Path(path).name}`, {report['images']} {report['split']} photos:", ""]
        lines += ["| layer | never active | constant maps per photo | zero activations |", "|---|---|---|---|"]
        for name, live in layers.items():
            lines.append(
                f"| {name} | {live['never_active']} of {live['channels']} ({100 * live['never_active_share']:.1f}%) "
                f"| {100 * live['constant_map_share']:.1f}% | {100 * live['sparsity']:.1f}% |"
            )
    return "\n".join(lines) + "\n"
