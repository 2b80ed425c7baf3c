"""Train several recipes side by side on one machine and keep the one validation prefers.

Written for a borrowed GPU machine with a hard time limit and no TensorFlow (Keras runs on
JAX there, see :mod:`convert.train`), but it runs anywhere ``python -m convert train`` runs::

    python -m convert.sweep pack ../shared/data/cats_vs_dogs --out .devdata/cats_vs_dogs
    python -m convert.sweep run .devdata/cats_vs_dogs --work /tmp/sweep --results OUT --budget 480

``pack`` writes the train and validation photos as they enter the network (each through
:func:`featapp.prepare_image`: 150 x 150, EXIF-rotated, RGB) into a folder of the same
layout, as 4:4:4 JPEG at quality 98, because the originals (73 MB) do not fit the 64 MiB
that travels to the GPU machine. The round trip changes a pixel by 0.8 of 255 on average
(measured), far less than the augmentation's own resampling. Nothing is packed from the
test split. The packed folder is for the journey only: keep it out of git.

``run`` first times two epochs of every recipe at once (so the time per epoch includes the
recipes slowing each other down), then sizes the longest recipes to the budget and runs
them all in parallel, each as its own ``python -m convert train --refit`` process. The
winner is the recipe whose selection run reached the highest validation accuracy, smoothed
over :data:`convert.train.REFIT_SMOOTHING` epochs, among those whose final fit finished;
the test split is never read. ``--results`` receives ``results.json`` (every recipe's
command, histories and score), the winner's final model and selection-best model, and its
snapshots in ``snapshots.tar.gz``. The snapshots' dense layers are zeroed there to make
the archive small: only their convolutional trunk is ever exported
(``python -m convert snapshots``), so nothing that uses them changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACK_QUALITY = 98
CALIBRATION_EPOCHS = 2
REFIT_COST = 1.5
"""A refit epoch sees train + validation (3,000 photos) against the selection's 2,000."""


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int | None  # None: as many as the budget allows
    learning_rate: float = 1e-3
    weight_decay: float = 0.02
    seed: int = 1337

    def arguments(self, epochs: int) -> list[str]:
        return [
            f"--epochs={epochs}",
            f"--learning-rate={self.learning_rate}",
            f"--weight-decay={self.weight_decay}",
            f"--seed={self.seed}",
        ]


RECIPES = (
    Recipe("book_length", 90),  # the CPU recipe, to compare backends and machines
    Recipe("long", None),
    Recipe("long_wd0.1", None, weight_decay=0.1),
    Recipe("long_lr5e-4_wd0.05", None, learning_rate=5e-4, weight_decay=0.05),
    Recipe("long_wd0.3", None, weight_decay=0.3),
    Recipe("long_seed7", None, seed=7),  # how much of a difference is chance
)


def pack(data_dir: Path, out: Path) -> None:
    from PIL import Image

    from featapp.data.dataset import Dataset
    from featapp.engine.images import InputSpec, prepare_image

    dataset = Dataset(data_dir)
    spec = InputSpec(150, 150, 3)
    errors = []
    for split in ("train", "validation"):
        for image in dataset.images(split):
            pixels = prepare_image(image.path, spec)
            target = out / split / image.path.parent.name / (image.path.stem + ".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target, "JPEG", quality=PACK_QUALITY, subsampling=0)
            back = np.asarray(Image.open(target))
            errors.append(float(np.abs(back.astype(np.int16) - pixels.astype(np.int16)).mean()))
    size = sum(p.stat().st_size for p in out.rglob("*.jpg"))
    print(f"{len(errors)} photos, {size / 2**20:.1f} MiB, mean |difference| {np.mean(errors):.2f} of 255")


def smoothed_best(history: list[dict], window: int) -> float:
    accuracy = np.array([row["val_accuracy"] for row in history if "val_accuracy" in row])
    if len(accuracy) == 0:
        return float("nan")
    width = min(window, len(accuracy))
    return float(np.convolve(accuracy, np.ones(width) / width, mode="valid").max())


def _train_command(data: Path, run: Path, arguments: list[str], *, refit: bool = True) -> list[str]:
    return [sys.executable, "-m", "convert", "train", str(data), "--out", str(run), *(["--refit"] * refit), *arguments]


def _run_all(commands: dict[str, list[str]], logs: Path, deadline: float) -> dict[str, int | None]:
    """Run the commands in parallel; kill what is still running at ``deadline``."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FEATAPP_TRAIN_QUIET": "1"}
    with ExitStack() as files:
        processes = {
            name: subprocess.Popen(
                command,
                stdout=files.enter_context(open(logs / f"{name}.log", "w")),
                stderr=subprocess.STDOUT,
                env=env,
            )
            for name, command in commands.items()
        }
        return _wait_all(processes, deadline)


def _wait_all(processes: dict[str, subprocess.Popen], deadline: float) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            process.kill()
            codes[name] = None
    return codes


def _history(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def _snapshots_archive(selection: Path, target: Path) -> None:
    import keras

    with tarfile.open(target, "w:gz") as archive:
        for name in ("best.json", "history.json", "snapshots/index.json"):
            if (selection / name).exists():
                archive.add(selection / name, arcname=name)
        for path in sorted((selection / "snapshots").glob("epoch_*.keras")):
            model = keras.models.load_model(path, compile=False)
            for layer in model.layers:
                if layer.name.startswith("dense"):
                    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
            zeroed = target.parent / f".{path.name}"
            model.save(zeroed)
            archive.add(zeroed, arcname=f"snapshots/{path.name}")
            zeroed.unlink()


def run(data: Path, work: Path, results: Path, budget: float, recipes: tuple[Recipe, ...] = RECIPES) -> int:
    from convert.train import REFIT_SMOOTHING

    started = time.monotonic()
    deadline = started + budget - 30  # then keep the winner's files
    results.mkdir(parents=True, exist_ok=True)
    report: dict = {"budget_s": budget, "recipes": {}}

    # Timing needs only selection epochs: no refit.
    calibration = {
        r.name: _train_command(data, work / "calibrate" / r.name, r.arguments(CALIBRATION_EPOCHS), refit=False)
        for r in recipes
    }
    _run_all(calibration, work / "logs_calibrate", deadline)
    per_epoch = [
        h[-1]["seconds"]
        for r in recipes
        if len(h := _history(work / "calibrate" / r.name / "selection" / "history.json")) == CALIBRATION_EPOCHS
    ]
    _copy_logs(work / "logs_calibrate", results)
    if not per_epoch:
        print("calibration failed; see logs_calibrate.tar.gz", flush=True)
        return 1
    seconds_per_epoch = max(per_epoch)
    left = deadline - time.monotonic() - 60  # loading the photos and compiling, twice; saving
    longest = int(left / (seconds_per_epoch * (1 + REFIT_COST)))
    report.update(seconds_per_epoch=seconds_per_epoch, longest_epochs=longest, calibration_s=time.monotonic() - started)
    print(
        f"{seconds_per_epoch:.2f} s per epoch with {len(recipes)} recipes at once; longest run {longest} epochs",
        flush=True,
    )

    if longest < 1:
        print("the budget does not leave time for one epoch of each recipe; nothing trained", flush=True)
        (results / "results.json").write_text(json.dumps(report, indent=1))
        return 1
    epochs = {r.name: (longest if r.epochs is None else min(r.epochs, longest)) for r in recipes}
    commands = {r.name: _train_command(data, work / r.name, r.arguments(epochs[r.name])) for r in recipes}
    codes = _run_all(commands, work / "logs", deadline)

    for recipe in recipes:
        run_dir = work / recipe.name
        selection = _history(run_dir / "selection" / "history.json")
        report["recipes"][recipe.name] = {
            "command": " ".join(
                ["python -m convert train DATA --out RUN --refit", *recipe.arguments(epochs[recipe.name])]
            ),
            "exit_code": codes[recipe.name],
            "finished": (run_dir / "summary.json").exists(),
            "score": smoothed_best(selection, REFIT_SMOOTHING),
            "selection_history": selection,
            "refit_history": _history(run_dir / "refit" / "history.json"),
            "summary": json.loads((run_dir / "summary.json").read_text())
            if (run_dir / "summary.json").exists()
            else None,
        }
    finished = {n: r for n, r in report["recipes"].items() if r["finished"]}
    if finished:
        winner = max(finished, key=lambda n: (finished[n]["score"], -epochs[n]))
        report["winner"] = winner
        shutil.copyfile(work / winner / "model.keras", results / "model.keras")
        shutil.copyfile(work / winner / "selection" / "best.keras", results / "selection_best.keras")
        _snapshots_archive(work / winner / "selection", results / "snapshots.tar.gz")
    report["seconds"] = time.monotonic() - started
    (results / "results.json").write_text(json.dumps(report, indent=1))
    _copy_logs(work / "logs", results)
    print(json.dumps({n: (r["score"], r["finished"]) for n, r in report["recipes"].items()}), report.get("winner"))
    return 0 if finished else 1


def _copy_logs(logs: Path, results: Path) -> None:
    with tarfile.open(results / f"{logs.name}.tar.gz", "w:gz") as archive:
        if logs.exists():
            archive.add(logs, arcname=logs.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the train/validation photos as the network sees them, for transport")
    p.add_argument("data_dir")
    p.add_argument("--out", required=True)
    p = sub.add_parser("run", help="run the recipes in parallel within a time budget")
    p.add_argument("data_dir")
    p.add_argument("--work", required=True, help="folder for the runs")
    p.add_argument("--results", required=True, help="folder for what to keep")
    p.add_argument("--budget", type=float, required=True, help="seconds, everything included")
    p.add_argument("--recipes", nargs="*", choices=[r.name for r in RECIPES], help="a subset (default: all)")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(Path(args.data_dir), Path(args.out))
        return 0
    chosen = tuple(r for r in RECIPES if not args.recipes or r.name in args.recipes)
    return run(Path(args.data_dir), Path(args.work), Path(args.results), args.budget, chosen)


if __name__ == "__main__":
    raise SystemExit(main())
