"""Export a training run's snapshots as trunk-only ONNX files (``python -m convert snapshots``).

Reads what :mod:`convert.train` leaves in a run's ``selection`` folder:

* ``snapshots/epoch_XXX.keras`` and ``snapshots/index.json``
  (``{"5": {"epoch": 5, "val_accuracy": 0.71, "file": "epoch_005.keras"}, ...}``;
  ``val_accuracy`` is null for epoch 0, the initial weights);
* ``best.keras`` and ``best.json`` (``{"epoch": 37, "val_accuracy": 0.86}``), the epoch
  chosen on validation.

Each becomes ``epoch_XXX.onnx`` (and its gradient model ``epoch_XXX.grad.onnx``) in the output folder: the convolutional trunk (input
through the last pooling layer), converted and verified exactly like ``export --trunk``,
with ``epoch``, ``val_accuracy`` and ``is_best`` in the metadata's ``extra``. When the
best epoch is also a snapshot epoch, that snapshot is marked best instead of being
written twice. ``index.json`` (:func:`featapp.engine.snapshots.index_json`) is written last;
files listed by an earlier index and not by the new one are removed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from convert.common import write_atomically
from convert.errors import ConversionError
from convert.export import ExportOptions, export
from featapp.engine.metadata import IDENTITY_KEY
from featapp.engine.snapshots import INDEX_FILE, Snapshot, index_json
from featapp.explain.backward import gradient_path


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConversionError(f"cannot read '{path}': {err}") from None


def _run_snapshots(selection: Path) -> list[tuple[int, float | None, Path]]:
    index_path = selection / "snapshots" / "index.json"
    if not index_path.is_file():
        raise ConversionError(
            f"'{selection}' has no snapshots/index.json: pass the 'selection' folder of a training run "
            "(python -m convert train writes runs/NAME/selection/snapshots/)."
        )
    index = _read_json(index_path)
    if not isinstance(index, dict):
        raise ConversionError(f"'{index_path}' is not a JSON object of snapshots.")
    found = []
    for key, row in index.items():
        try:
            epoch = int(row["epoch"])
            accuracy = None if row.get("val_accuracy") is None else float(row["val_accuracy"])
            path = index_path.parent / str(row["file"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConversionError(f"'{index_path}' has a damaged entry {key!r} ({err}).") from None
        if not path.is_file():
            raise ConversionError(f"'{index_path}' lists {path.name}, which is missing.")
        found.append((epoch, accuracy, path))
    return sorted(found)


def _previously_listed(out: Path) -> set[str]:
    """Snapshot files an earlier index in ``out`` listed (only names this command writes)."""
    try:
        rows = json.loads((out / INDEX_FILE).read_text()).get("snapshots", [])
    except (OSError, ValueError, AttributeError):
        return set()  # no earlier index, or an unreadable one: nothing of ours to clean up
    names = {row.get("file") for row in rows if isinstance(row, dict)}
    return {n for n in names if isinstance(n, str) and re.fullmatch(r"epoch_\d{3,}\.onnx", n)}


@dataclass(frozen=True)
class SnapshotJob:
    """One file to export: the network after ``epoch`` epochs, from ``source``."""

    epoch: int
    val_accuracy: float | None
    source: Path
    is_best: bool


def run_id(jobs: list[SnapshotJob]) -> str:
    """The training run's id: a hash of its earliest snapshot file (the initial weights), which
    every snapshot and the final model of that run share, and another run does not."""
    import hashlib

    if not jobs:
        return ""
    first = min(jobs, key=lambda job: job.epoch)
    return "run-" + hashlib.sha256(Path(first.source).read_bytes()).hexdigest()[:16]


def plan_snapshots(selection_dir: str | os.PathLike, log: Callable[[str], None] = print) -> list[SnapshotJob]:
    """What :func:`export_snapshots` will export, read from the run folder (no TensorFlow needed)."""
    selection = Path(selection_dir)
    if not selection.is_dir():
        raise ConversionError(f"No such folder: '{selection}'.")
    jobs = {epoch: (accuracy, path) for epoch, accuracy, path in _run_snapshots(selection)}
    best_epoch = None
    if (selection / "best.json").is_file() and (selection / "best.keras").is_file():
        best = _read_json(selection / "best.json")
        try:
            best_epoch = int(best["epoch"])  # type: ignore[index]
            best_accuracy = float(best["val_accuracy"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError) as err:
            raise ConversionError(f"'{selection / 'best.json'}' is damaged ({err}).") from None
        if best_epoch not in jobs:
            jobs[best_epoch] = (best_accuracy, selection / "best.keras")
        log(f"Best epoch on validation: {best_epoch} (val_accuracy {best_accuracy:.4f})")
    else:
        log("No best.keras/best.json in the run yet: exporting the snapshots only.")
    return [SnapshotJob(epoch, *jobs[epoch], is_best=epoch == best_epoch) for epoch in sorted(jobs)]


def export_snapshots(
    selection_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    tolerance: float = 1e-4,
    log: Callable[[str], None] = print,
    jobs: list[SnapshotJob] | None = None,
) -> list[Snapshot]:
    """Export every snapshot and the best epoch of a run; returns what ``index.json`` lists."""
    out = Path(out_dir)
    jobs = plan_snapshots(selection_dir, log) if jobs is None else jobs
    previous = _previously_listed(out)
    written: list[Snapshot] = []
    run = run_id(jobs)
    identity: dict[str, str] | None = None
    for job in jobs:
        target = out / f"epoch_{job.epoch:03d}.onnx"
        log(f"\n== Snapshot epoch {job.epoch}{' (best)' if job.is_best else ''} from {job.source} ==")
        extra = {"epoch": job.epoch, "val_accuracy": job.val_accuracy, "is_best": job.is_best}
        options = ExportOptions(trunk=True, extra=extra, tolerance=tolerance, run_id=run)
        spec = export(job.source, target, options, log=log)
        identity = spec.extra.get(IDENTITY_KEY)
        written.append(Snapshot(epoch=job.epoch, val_accuracy=job.val_accuracy, path=target, is_best=job.is_best))

    write_atomically(out / INDEX_FILE, index_json(written, identity).encode())
    kept = {s.path.name for s in written}
    for name in sorted(previous - kept):
        (out / name).unlink(missing_ok=True)
        gradient_path(out / name).unlink(missing_ok=True)
        log(f"Removed {name}, which the new index no longer lists.")
    total = sum(s.path.stat().st_size for s in written)
    log(f"\nWrote {len(written)} snapshots and {out / INDEX_FILE} ({total / 1e6:.1f} MB in all).")
    log(
        f"They belong to training run {run}: export the final model with --run-id {run}, so that the app "
        "offers them with it and with no other model of this architecture."
    )
    return written
