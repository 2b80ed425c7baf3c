"""Accuracy and confusion matrix of a model on one split of a dataset folder.

``python -m convert evaluate MODEL --split test [--data-dir DIR]``

``MODEL`` is a Keras file (``.keras``/``.h5``, run by Keras, loaded like the exporter
loads it) or a converted ``.onnx`` (run by ONNX Runtime through :func:`featapp.load_model`,
exactly as the app runs it). Every photo goes through :func:`featapp.prepare_image`,
the path training used. The dataset's class ``k`` (folders in sorted order: ``cats``
= 0, ``dogs`` = 1) is compared with the model's output ``k`` (for one sigmoid unit:
0 = negative, 1 = positive).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featapp.data.dataset import Dataset, DatasetError, DatasetImage
from featapp.engine.images import InputSpec, prepare_image


@dataclass(frozen=True)
class Evaluation:
    """``confusion[i, j]``: images of true class ``i`` predicted as class ``j``."""

    model: str
    runtime: str
    split: str
    data_dir: str
    class_names: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]

    @property
    def total(self) -> int:
        return int(np.sum(self.confusion))

    @property
    def correct(self) -> int:
        return int(np.trace(np.array(self.confusion)))

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def report(self) -> str:
        """The accuracy and the confusion matrix as plain text.

        >>> print(Evaluation("m.onnx", "onnxruntime", "test", "d", ("cats", "dogs"), ((3, 1), (0, 4))).report())
        accuracy: 0.8750 (7 of 8 test images)
        confusion matrix (rows: true class, columns: predicted class):
                    cats   dogs
          cats         3      1
          dogs         0      4
        """
        width = max(6, *(len(name) for name in self.class_names)) + 1
        lines = [
            f"accuracy: {self.accuracy:.4f} ({self.correct} of {self.total} {self.split} images)",
            "confusion matrix (rows: true class, columns: predicted class):",
            " " * (width + 2) + "".join(f"{name:>{width}}" for name in self.class_names),
        ]
        for name, row in zip(self.class_names, self.confusion, strict=True):
            lines.append(f"  {name:<{width}}" + "".join(f"{count:>{width}d}" for count in row))
        return "\n".join(lines)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(accuracy=self.accuracy, correct=self.correct, total=self.total)
        return json.dumps(data, indent=2)


def _prepare_all(images: list[DatasetImage], spec: InputSpec) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(lambda image: prepare_image(image.path, spec), images))
    return np.stack(arrays)


def _keras_predictor(path: Path, input_range: str | None, log: Callable[[str], None]):
    from convert.export import INPUT_RANGES, load_keras_file
    from convert.flatten import flatten_model
    from convert.inspect_keras import check_input_shapes, inspect_keras_file

    info = inspect_keras_file(path)
    log(f"Loading {path} ({info.format_text}) with Keras ...")
    model = load_keras_file(info)
    shapes = [tuple(None if d is None else int(d) for d in t.shape) for t in model.inputs]
    check_input_shapes(path.name, shapes)
    _, height, width, channels = shapes[0]
    assert height is not None and width is not None and channels is not None  # check_input_shapes refuses them
    # The same rule as the exporter: a model that rescales its own input takes 0..255.
    default_range = flatten_model(model).default_input_range
    scale, offset = INPUT_RANGES[input_range or default_range]

    def predict(batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32) * np.float32(scale) + np.float32(offset)
        scores = np.asarray(model.predict(x, verbose=0, batch_size=32))
        if scores.ndim == 2 and scores.shape[1] == 1:  # one sigmoid unit: p(positive)
            return (scores[:, 0] >= 0.5).astype(int)
        return scores.argmax(axis=1)

    return InputSpec(int(height), int(width), int(channels)), predict, f"Keras ({input_range or default_range} input)"


def _onnx_predictor(path: Path, log: Callable[[str], None]):
    from featapp.engine.model import load_model

    model = load_model(path)
    log(f"Loading {path} with ONNX Runtime ({model.provider}) ...")

    def predict(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch).indices

    return model.input_spec, predict, f"ONNX Runtime ({model.provider})"


def evaluate(
    model_path: str | os.PathLike,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    input_range: str | None = None,
    limit_per_class: int | None = None,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Run the model on every image of ``split`` and count what it gets right."""
    path = Path(model_path)
    dataset = Dataset(data_dir)
    images = dataset.images(split)
    if limit_per_class is not None:
        taken: dict[int, int] = {}
        kept = []
        for image in images:
            if taken.get(image.label, 0) < limit_per_class:
                taken[image.label] = taken.get(image.label, 0) + 1
                kept.append(image)
        images = kept
    class_names = dataset.classes(split)
    if path.suffix.lower() == ".onnx":
        spec, predict, runtime = _onnx_predictor(path, log)
    else:
        spec, predict, runtime = _keras_predictor(path, input_range, log)
    log(
        f"Evaluating on the {split} split of {dataset.root}: {len(images)} images, classes {', '.join(class_names)} ..."
    )
    confusion = np.zeros((len(class_names), len(class_names)), dtype=int)
    chunk = 256
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        predicted = predict(_prepare_all(part, spec))
        if predicted.size and predicted.max() >= len(class_names):
            raise DatasetError(
                f"the model predicts class {int(predicted.max())}, but the {split} split has only "
                f"{len(class_names)} classes ({', '.join(class_names)})."
            )
        for image, guess in zip(part, predicted, strict=True):
            confusion[image.label, int(guess)] += 1
    return Evaluation(
        model=str(path),
        runtime=runtime,
        split=split,
        data_dir=str(dataset.root),
        class_names=tuple(class_names),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )
