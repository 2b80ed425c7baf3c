"""Benchmark the analysis tools: occlusion, neuron-statistics scan, cache file, top-k.

    python -m bench.bench_analysis [--data-dir D] [--scan-images 400] [--out bench/results/analysis.md]

Everything is measured in one run on one machine, and the Markdown report (stdout and
``--out``) starts with that machine's description and its load average, because numbers
from a busy machine are not worth comparing. Targets from the project brief:

* occlusion, patch 20 / stride 10 on a 150x150 photo (196 model runs): < 1.5 s;
* top-k for any (layer, channel) over the 4,000 shared photos: < 50 ms;
* the statistics file for 4,000 photos: well under 100 MB, quick to load.

The scan is timed on ``--scan-images`` photos (0 = all of them), split into its parts
(JPEG decoding alone, the model alone, the whole scan) so it says where the time goes.
Top-k and the file size are measured on statistics for 4,000 images: the scanned rows
repeated up to 4,000 when fewer were scanned (ranking cost depends on the row count,
not on the values).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

from bench.machine import cpu_features, cpu_name, memory_gib
from featapp.cache import atomic_write_bytes
from featapp.data.dataset import Dataset
from featapp.engine.images import prepare_image
from featapp.engine.model import load_model
from featapp.explain.occlusion import occlusion_sensitivity
from featapp.stats.analysis import NeuronStats, _Layer, scan

FULL_DATASET = 4000


def machine() -> list[str]:
    cpu = f"{cpu_name()} ({cpu_features()})"
    gib = memory_gib()
    memory = "unknown" if gib is None else f"{gib:.0f} GiB"
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    return [
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; memory {memory}",
        f"- Load average before the run (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        if isinstance(load[0], float)
        else "- Load average: unknown",
        f"- {platform.platform()}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"onnxruntime {onnxruntime.__version__}",
    ]


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_occlusion(model, photo: np.ndarray, repeats: int) -> list[str]:
    lines = [
        "## Occlusion sensitivity (patch 20, stride 10, 150x150: 14 x 14 = 196 occluded copies)",
        "",
        "| batch size | median | best | target |",
        "|---:|---:|---:|---|",
    ]
    occlusion_sensitivity(model, photo, batch_size=64)  # warm-up: session arenas, page cache
    medians = {}
    for batch_size in (16, 32, 64):
        times = timed(
            lambda b=batch_size: occlusion_sensitivity(model, photo, patch=20, stride=10, batch_size=b), repeats
        )
        medians[batch_size] = statistics.median(times)
        verdict = "met" if medians[batch_size] < 1.5 else "**missed**"
        lines.append(f"| {batch_size} | {medians[batch_size]:.3f} s | {min(times):.3f} s | < 1.5 s: {verdict} |")
    copies = np.repeat(photo[np.newaxis], 197, axis=0)
    model_only = statistics.median(timed(lambda: model.predict(copies, batch_size=64), repeats))
    lines += [
        "",
        f"Model alone on the same 197 images (196 copies + the original), batch 64: {model_only:.3f} s, "
        f"so occlusion (batch 64) costs {medians[64] / model_only:.2f}x the bare inference; the rest is making "
        "the copies.",
        "",
    ]
    return lines


def bench_scan(model, dataset: Dataset, count: int, batch_size: int) -> tuple[list[str], NeuronStats]:
    images = [image for split in dataset.splits for image in dataset.images(split)]
    if count:
        # An even spread over splits and classes, the same on every run.
        images = images[:: max(1, len(images) // count)][:count]
    started = time.perf_counter()
    decoded = np.stack([prepare_image(image.path, model) for image in images])
    decode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(decoded), batch_size):
        model.activations(decoded[start : start + batch_size], batch_size=batch_size)
    model_seconds = time.perf_counter() - started
    started = time.perf_counter()
    stats = scan(model, images, batch_size=batch_size)
    scan_seconds = time.perf_counter() - started
    n = len(images)
    lines = [
        f"## Neuron-statistics scan ({n} photos, batch {batch_size})",
        "",
        "| part | time | images/s |",
        "|---|---:|---:|",
        f"| JPEG decoding + resizing alone (`prepare_image`) | {decode_seconds:.2f} s | {n / decode_seconds:.1f} |",
        f"| model alone, all layers (`activations`) | {model_seconds:.2f} s | {n / model_seconds:.1f} |",
        f"| whole scan (decoding overlapped in a thread, plus statistics) | {scan_seconds:.2f} s | {n / scan_seconds:.1f} |",
        "",
        f"The scan takes {scan_seconds / model_seconds:.2f}x the model alone; decoding alone would add "
        f"{decode_seconds / model_seconds:.2f}x if it were not overlapped. At this rate the 4,000 shared photos take "
        f"about {FULL_DATASET / (n / scan_seconds) / 60:.1f} minutes, once (then cached).",
        "",
    ]
    return lines, stats


def tiled(stats: NeuronStats, rows: int) -> NeuronStats:
    """The statistics with their images repeated up to ``rows`` images (for timing only)."""
    repeat = -(-rows // len(stats))
    layers = []
    for name in stats.layer_names:
        layer = stats._layers[name]
        copy = _Layer(layer.name, layer.storage, layer.units, layer.rows, layer.cols, layer.field, layer.alias_of)
        for key, array in layer.arrays().items():
            if key.startswith("top_"):
                setattr(copy, key, array)
            else:
                setattr(copy, key, np.concatenate([array] * repeat)[:rows])
        layers.append(copy)
    return NeuronStats(
        model_sha256=stats.model_sha256,
        dataset_fingerprint=stats.dataset_fingerprint,
        paths=(stats.paths * repeat)[:rows],
        class_names=stats.class_names,
        labels=np.concatenate([stats.labels] * repeat)[:rows],
        layers=layers,
        input_hw=stats.input_hw,
        split=stats.split,
    )


def bench_file_and_top_k(stats: NeuronStats, model) -> list[str]:
    big = tiled(stats, FULL_DATASET) if len(stats) < FULL_DATASET else stats
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "neurons.npz"
        save_seconds = statistics.median(timed(lambda: big.save(path), 3))
        size = path.stat().st_size
        load_seconds = statistics.median(timed(lambda: NeuronStats.load(path), 5))
    lines = [
        f"## Statistics file and top-k ({len(big)} images{' (scanned rows repeated)' if big is not stats else ''})",
        "",
        f"File: {size / 1e6:.1f} MB (target: well under 100 MB); save {ms(save_seconds)}, load {ms(load_seconds)}.",
        "",
        "| layer | stored as | top-9 median | worst of 200 | target |",
        "|---|---|---:|---:|---|",
    ]
    for layer in model.layers:
        channel = min(3, layer.channels - 1)
        times = timed(lambda name=layer.name, c=channel: big.top_k(name, c, k=9), 200)
        worst = max(times)
        verdict = "met" if worst < 0.05 else "**missed**"
        lines.append(
            f"| {layer.name} | {big.storage(layer.name)} | {ms(statistics.median(times))} | {ms(worst)} | < 50 ms: {verdict} |"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = Path(__file__).resolve().parent.parent
    parser.add_argument(
        "--data-dir", default=os.environ.get("FEATAPP_DATA_DIR") or repo.parent / "shared/data/cats_vs_dogs"
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--provider", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--scan-images", type=int, default=400, help="photos to scan (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(repo / "bench" / "results" / "analysis.md"))
    args = parser.parse_args(argv)

    model = load_model(args.model, provider=args.provider)
    dataset = Dataset(args.data_dir)
    photo = prepare_image(dataset.images(dataset.splits[0])[0].path, model)
    report = ["# featapp analysis benchmark", "", *machine()]
    report += [f"- Model: {model.path.name} (sha256 {model.sha256[:12]}), provider {model.provider}", ""]
    report += bench_occlusion(model, photo, args.repeats)
    scan_lines, stats = bench_scan(model, dataset, args.scan_images, args.batch_size)
    report += scan_lines
    report += bench_file_and_top_k(stats, model)
    text = "\n".join(report) + "\n"
    print(text)
    atomic_write_bytes(Path(args.out), text.encode())
    print(f"(written to {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
