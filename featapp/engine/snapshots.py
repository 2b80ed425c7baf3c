"""The network as it was during training: trunk-only ONNX snapshots at chosen epochs.

``python -m convert snapshots runs/cats_dogs_small/selection --out models/snapshots``
exports, from one training run, the network at initialisation (epoch 0), after the
snapshot epochs (1, 2, 5 and 10 by default) and at the best epoch on validation. Each
snapshot is the convolutional trunk only (input through the last pooling layer): it
loads with :func:`featapp.load_model` like any model, shows every map, and has no
classifier (``has_classifier`` is False and ``predict`` raises :class:`ModelError`).

The folder holds the ``.onnx`` files and ``index.json``::

    {"schema": 1,
     "model_identity": {"architecture": "arch-...", "run": "run-..."},
     "snapshots": [{"epoch": 0, "val_accuracy": null, "file": "epoch_000.onnx", "is_best": false}, ...]}

``model_identity`` (:func:`featapp.engine.metadata.model_identity`) ties the snapshots to
the model they trained into: :func:`own_snapshots` offers them only with a model of that
architecture and, when both say it, that training run. An index written before it
existed is matched by the architecture of its snapshot files.

This module is the one reader and writer of that index.

>>> snapshots = load_snapshots()                           # doctest: +SKIP
>>> [s.label for s in snapshots]                           # doctest: +SKIP
['epoch 0 (initial weights)', 'epoch 1: 61% on validation', ..., 'epoch 37 (best): 86% on validation']
>>> model = snapshots[0].load()                            # doctest: +SKIP
>>> model.has_classifier                                   # doctest: +SKIP
False
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featapp import settings
from featapp.engine.metadata import ModelSpec, model_identity
from featapp.engine.model import FeatureModel, ModelError, load_model

__all__ = [
    "Snapshot",
    "load_snapshots",
    "same_network",
    "belongs_to",
    "own_snapshots",
    "index_json",
    "INDEX_FILE",
    "INDEX_SCHEMA",
    "SNAPSHOTS_ENV",
    "DEFAULT_SNAPSHOTS_DIR",
]

SNAPSHOTS_ENV = settings.SNAPSHOTS_ENV
DEFAULT_SNAPSHOTS_DIR = settings.models_dir() / "snapshots"
INDEX_FILE = "index.json"
INDEX_SCHEMA = 1

_HOW_TO_MAKE = (
    "Export them from a training run with 'python -m convert snapshots runs/cats_dogs_small/selection "
    "--out models/snapshots' (see docs/model.md)."
)


@dataclass(frozen=True)
class Snapshot:
    """One exported snapshot: the trunk after ``epoch`` epochs of training (0 = initial weights)."""

    epoch: int
    val_accuracy: float | None
    path: Path
    is_best: bool = False
    identity: dict[str, str] | None = None  # the index's model_identity; None in an older index

    @property
    def label(self) -> str:
        """A short caption for a slider or a strip.

        >>> Snapshot(5, 0.7125, Path("epoch_005.onnx")).label
        'epoch 5: 71% on validation'
        >>> Snapshot(0, None, Path("epoch_000.onnx")).label
        'epoch 0 (initial weights)'
        """
        name = f"epoch {self.epoch}" + (" (best)" if self.is_best else "")
        if self.epoch == 0 and self.val_accuracy is None:
            return f"{name} (initial weights)"
        if self.val_accuracy is None:
            return name
        return f"{name}: {self.val_accuracy:.0%} on validation"

    def load(self, provider: str = "auto") -> FeatureModel:
        """The snapshot in ONNX Runtime (see :func:`featapp.load_model`)."""
        return load_model(self.path, provider=provider)


def _folder(folder: str | os.PathLike | None) -> Path:
    if folder is not None and str(folder) != "":
        return Path(folder).expanduser()
    return settings.snapshots_dir()


def _identity(data: dict) -> dict[str, str] | None:
    value = data.get("model_identity")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("architecture"), str):
        raise ValueError(f"model_identity {value!r} is not an object with an 'architecture'")
    return {"architecture": value["architecture"], "run": str(value.get("run", "") or "")}


def _entry(row: Any, folder: Path, identity: dict[str, str] | None = None) -> Snapshot:
    if not isinstance(row, dict):
        raise TypeError(f"an entry is {type(row).__name__}, not an object")
    epoch = row["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(f"epoch {epoch!r} is not a whole number >= 0")
    accuracy = row.get("val_accuracy")
    if accuracy is not None:
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
            raise ValueError(f"val_accuracy {accuracy!r} of epoch {epoch} is not between 0 and 1")
        accuracy = float(accuracy)
    name = row["file"]
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"file {name!r} of epoch {epoch} is not a plain file name")
    is_best = row.get("is_best", False)
    if not isinstance(is_best, bool):
        raise ValueError(f"is_best {is_best!r} of epoch {epoch} is not true or false")
    return Snapshot(epoch=epoch, val_accuracy=accuracy, path=folder / name, is_best=is_best, identity=identity)


def load_snapshots(folder: str | os.PathLike | None = None) -> list[Snapshot]:
    """The snapshots listed in ``folder/index.json``, in epoch order.

    ``folder`` defaults to ``$FEATAPP_SNAPSHOTS``, then to the committed
    ``models/snapshots``. Raises :class:`ModelError` when the folder or index is missing
    or damaged, or a listed file is missing. The models themselves are not loaded here:
    call :meth:`Snapshot.load`.
    """
    where = _folder(folder)
    index_path = where / INDEX_FILE
    if not where.is_dir():
        raise ModelError(f"No snapshot folder at '{where}'. {_HOW_TO_MAKE}")
    if not index_path.is_file():
        raise ModelError(f"The snapshot folder '{where}' has no {INDEX_FILE}. {_HOW_TO_MAKE}")
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else None
            raise ValueError(f"schema {found!r} is not the supported {INDEX_SCHEMA}")
        rows = data["snapshots"]
        if not isinstance(rows, list):
            raise TypeError("'snapshots' is not a list")
        identity = _identity(data)
        snapshots = [_entry(row, where, identity) for row in rows]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ModelError(f"'{index_path}' is damaged ({type(err).__name__}: {err}). {_HOW_TO_MAKE}") from None
    if not snapshots:
        raise ModelError(f"'{index_path}' lists no snapshots. {_HOW_TO_MAKE}")
    epochs = [s.epoch for s in snapshots]
    if len(set(epochs)) != len(epochs):
        raise ModelError(f"'{index_path}' lists an epoch twice ({sorted(epochs)}). {_HOW_TO_MAKE}")
    if sum(s.is_best for s in snapshots) > 1:
        raise ModelError(f"'{index_path}' marks more than one epoch as the best. {_HOW_TO_MAKE}")
    missing = [s.path.name for s in snapshots if not s.path.is_file()]
    if missing:
        raise ModelError(
            f"The snapshot folder '{where}' lacks {', '.join(missing)}, listed in {INDEX_FILE}. {_HOW_TO_MAKE}"
        )
    return sorted(snapshots, key=lambda s: s.epoch)


def index_json(snapshots: Iterable[Snapshot], identity: dict[str, str] | None = None) -> str:
    """The ``index.json`` text for ``snapshots`` (files are stored by name, relative to the folder).

    >>> print(index_json([Snapshot(0, None, Path("epoch_000.onnx"))]))
    {
      "schema": 1,
      "snapshots": [
        {
          "epoch": 0,
          "file": "epoch_000.onnx",
          "is_best": false,
          "val_accuracy": null
        }
      ]
    }
    """
    rows = []
    for snapshot in sorted(snapshots, key=lambda s: s.epoch):
        accuracy = snapshot.val_accuracy
        if accuracy is not None and not math.isfinite(accuracy):
            raise ValueError(f"val_accuracy of epoch {snapshot.epoch} is {accuracy}")
        rows.append(
            {"epoch": snapshot.epoch, "val_accuracy": accuracy, "file": snapshot.path.name, "is_best": snapshot.is_best}
        )
    data: dict[str, Any] = {"schema": INDEX_SCHEMA, "snapshots": rows}
    if identity is not None:
        data["model_identity"] = {"architecture": identity["architecture"], "run": identity.get("run", "")}
    return json.dumps(data, indent=2, sort_keys=True)


def belongs_to(snapshot: Snapshot, model: FeatureModel, snapshot_spec: ModelSpec | None = None) -> bool:
    """Whether ``snapshot`` is a moment of ``model``'s own training: the same architecture
    (:func:`featapp.engine.metadata.architecture_id`) and, when both record one, the same
    run. ``snapshot_spec`` (the snapshot file's metadata) stands in for an older index
    without ``model_identity``; without either, it is not the model's."""
    ours = model.identity
    theirs = snapshot.identity or (model_identity(snapshot_spec) if snapshot_spec is not None else None)
    if theirs is None or theirs["architecture"] != ours["architecture"]:
        return False
    return not (theirs.get("run") and ours["run"] and theirs["run"] != ours["run"])


def own_snapshots(
    snapshots: Iterable[Snapshot], model: FeatureModel, spec_of: Callable[[Snapshot], ModelSpec] | None = None
) -> list[Snapshot]:
    """The snapshots of ``model``'s own training (:func:`belongs_to`), for the training
    slider and strip. ``spec_of`` reads a snapshot file's metadata when the index has no
    identity (default: loading it)."""
    own = []
    for snapshot in snapshots:
        spec = None
        if snapshot.identity is None:
            try:
                spec = spec_of(snapshot) if spec_of else snapshot.load(provider="cpu").spec
            except ModelError:
                continue
        if belongs_to(snapshot, model, spec):
            own.append(snapshot)
    return own


def same_network(snapshot: FeatureModel, model: FeatureModel) -> bool:
    """Whether ``snapshot`` computes the same maps as ``model`` on every layer it has.

    Training keeps its best epoch, and that epoch is also a snapshot, so the final model
    and the best snapshot are usually one network saved twice (the snapshot only its
    trunk). Decided on one fixed pseudo-random input: two different sets of weights agree
    there only by accident, while the same weights exported twice agree to float rounding.
    False when the inputs differ or no layer is shared.
    """
    spec = model.input_spec
    if snapshot.input_spec != spec:
        return False
    shared = [name for name in snapshot.layer_names if name in model.layer_names]
    if not shared:
        return False
    probe = np.random.default_rng(0).integers(0, 256, size=(spec.height, spec.width, spec.channels), dtype=np.uint8)
    theirs, ours = snapshot.activations(probe), model.activations(probe)
    return all(np.allclose(theirs[name], ours[name], rtol=1e-5, atol=1e-6) for name in shared)
