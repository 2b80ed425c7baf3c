"""Benchmark the activation engine, side by side, in one run.

    python -m bench.bench_engine                       # full run, writes bench/results/engine.md
    python -m bench.bench_engine --quick               # a smoke run (a minute), numbers not for quoting

What it measures (issue 3, "Speed"):

1. All activations (every layer) for the 20-image gallery batch: featapp's
   ``model.activations`` against a bare ONNX Runtime ``session.run`` on the same, already
   scaled float batch (the overhead ratio, target <= 1.10), and against the Keras
   multi-output model the lecture used (``keras.Model(inputs, [layer.output ...])``),
   through ``predict`` as in the lecture and through a direct call. Interleaved repeats;
   median and interquartile range; ratios of medians.
2. Single-image latency: the same, for one image, plus ``predict`` from a JPEG path.
3. Scan throughput over the shared photos (4,000): JPEG decode + preparation alone,
   the model alone (all activations, batches of 32), and both together, in images/s,
   with where the time goes.
4. Memory of one 20-image activation set: the arrays' bytes and the process's RSS growth,
   measured in a fresh subprocess.

Results go to stdout and, as Markdown with a description of the machine, to ``--out``.
Run it on an idle machine: the numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.machine import cpu_features, cpu_name, memory_gib
from featapp.data.dataset import Dataset
from featapp.engine.images import prepare_image
from featapp.engine.model import load_model

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_KERAS = [
    REPO_ROOT / "models" / "cats_dogs_small.keras",
    *sorted(Path("/work/main/runs/cats_dogs_small/selection/snapshots").glob("epoch_*.keras"))[:1],
]


# -- timing ------------------------------------------------------------------------------


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Time each method ``repeats`` times, taking turns, so that a slow moment of the
    machine hits every method alike. Returns wall seconds per call; the process's CPU
    seconds (all threads) go into ``CPU_SECONDS``, which a busy machine disturbs less."""
    for _ in range(warmup):
        for run in methods.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for name in methods:
        CPU_SECONDS[name] = []
    for _ in range(repeats):
        for name, run in methods.items():
            gc.collect()
            cpu = time.process_time()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            CPU_SECONDS[name].append(time.process_time() - cpu)
    return times


CPU_SECONDS: dict[str, list[float]] = {}


def stats(seconds: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = np.percentile(seconds, [25, 50, 75])
    return float(median), float(q1), float(q3)


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def timing_table(times: dict[str, list[float]], baseline: str, per: int = 1) -> list[str]:
    base = stats(times[baseline])[0]
    base_cpu = float(np.median(CPU_SECONDS[baseline]))
    rows = [
        f"| method | median ms | IQR ms | per image ms | ratio to {baseline} | CPU ms (all threads) | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, seconds in times.items():
        median, q1, q3 = stats(seconds)
        cpu = float(np.median(CPU_SECONDS[name]))
        rows.append(
            f"| {name} | {ms(median)} | {ms(q1)}-{ms(q3)} | {ms(median / per)} | {median / base:.2f} "
            f"| {ms(cpu)} | {cpu / base_cpu:.2f} |"
        )
    return rows


# -- the machine -------------------------------------------------------------------------


def machine() -> list[str]:
    import onnxruntime
    import PIL

    cpu = f"{cpu_name()} ({cpu_features()})"
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    gib = memory_gib()
    ram = "unknown" if gib is None else f"{gib:.1f} GiB"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({physical} physical); RAM {ram}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- numpy {np.__version__}, onnxruntime {onnxruntime.__version__} "
        f"(available providers: {', '.join(onnxruntime.get_available_providers())}), Pillow {PIL.__version__}",
        f"- FEATAPP_THREADS={os.environ.get('FEATAPP_THREADS', '(unset: ONNX Runtime decides)')}",
    ]
    if load is not None:
        busy = " **(busy machine: numbers are not for quoting)**" if load[0] > 0.5 * (os.cpu_count() or 1) else ""
        lines.append(f"- Load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}{busy}")
    return lines


# -- the Keras baseline --------------------------------------------------------------------


def keras_activation_model(path: Path):
    """The lecture's multi-output model: every layer's output of the trained model."""
    import keras

    model = keras.saving.load_model(str(path), compile=False)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype="float32")
    x, outputs = inputs, []
    for layer in layers:
        x = layer(x)
        outputs.append(x)
    import tensorflow as tf

    return keras.Model(inputs, outputs), f"keras {keras.__version__}, tensorflow {tf.__version__}"


# -- sections ------------------------------------------------------------------------------


def gallery_section(model, dataset: Dataset, keras_model, repeats: int) -> tuple[list[str], dict]:
    paths = [image.path for image in dataset.sample("train", per_class=10, seed=0)]
    batch = model.prepare(paths)
    floats = batch.astype(np.float32) / np.float32(255)
    session = model._session
    names = model.layer_names
    methods: dict[str, Callable[[], object]] = {
        "bare session.run": lambda: session.run(names, {"input": floats}),
        "featapp activations": lambda: model.activations(batch),
    }
    if keras_model is not None:
        methods["keras predict (lecture)"] = lambda: keras_model.predict(floats, verbose=0)
        methods["keras call"] = lambda: [t.numpy() for t in keras_model(floats, training=False)]
    times = interleaved(methods, repeats)
    featapp_median = stats(times["featapp activations"])[0]
    bare_median = stats(times["bare session.run"])[0]
    featapp_cpu = float(np.median(CPU_SECONDS["featapp activations"]))
    bare_cpu = float(np.median(CPU_SECONDS["bare session.run"]))
    lines = [
        f"### All activations, 20-image gallery batch ({len(names)} layers, {repeats} interleaved repeats)",
        "",
        *timing_table(times, "featapp activations", per=len(paths)),
        "",
        f"- featapp overhead over bare `session.run` on the same float batch: "
        f"**{featapp_median / bare_median:.3f}x** wall time, {featapp_cpu / bare_cpu:.3f}x CPU time (target <= 1.10)",
    ]
    if keras_model is not None:
        keras_median = stats(times["keras predict (lecture)"])[0]
        lines.append(
            f"- featapp speed-up over the lecture's Keras `predict`: **{keras_median / featapp_median:.1f}x** (target >= 5x)"
        )
    return lines, {"batch": batch, "paths": paths}


def single_section(model, gallery: dict, keras_model, repeats: int) -> list[str]:
    one = gallery["batch"][:1]
    floats = one.astype(np.float32) / np.float32(255)
    path = gallery["paths"][0]
    session, names = model._session, model.layer_names
    methods: dict[str, Callable[[], object]] = {
        "bare session.run, all layers": lambda: session.run(names, {"input": floats}),
        "featapp activations, all layers": lambda: model.activations(one),
        "featapp predict from a JPEG path": lambda: model.predict([path]),
        "prepare_image (decode + resize) alone": lambda: prepare_image(path, model),
    }
    if keras_model is not None:
        methods["keras predict (lecture), all layers"] = lambda: keras_model.predict(floats, verbose=0)
    times = interleaved(methods, repeats)
    return [
        f"### Single image ({repeats} interleaved repeats)",
        "",
        *timing_table(times, "featapp activations, all layers"),
    ]


def scan_section(model, dataset: Dataset, limit: int, batch_size: int = 32) -> list[str]:
    paths = [image.path for split in dataset.splits for image in dataset.images(split)]
    if limit:
        paths = paths[:limit]
    count = len(paths)

    start = time.perf_counter()
    arrays = [prepare_image(path, model) for path in paths]
    decode_s = time.perf_counter() - start

    workers = os.cpu_count() or 1
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda path: prepare_image(path, model), paths))
    decode_parallel_s = time.perf_counter() - start

    stacked = np.stack(arrays)
    del arrays
    start = time.perf_counter()
    for first in range(0, count, batch_size):
        model.activations(stacked[first : first + batch_size])
    model_s = time.perf_counter() - start

    start = time.perf_counter()
    for first in range(0, count, batch_size):
        model.predict(stacked[first : first + batch_size])
    predict_s = time.perf_counter() - start

    start = time.perf_counter()
    for first in range(0, count, batch_size):
        model.activations(paths[first : first + batch_size])
    both_s = time.perf_counter() - start

    def rate(seconds: float) -> str:
        return f"{count / seconds:.1f}"

    decode_share = decode_s / (decode_s + model_s)
    return [
        f"### Scan throughput over {count} shared photos (batches of {batch_size})",
        "",
        "| stage | seconds | images/s |",
        "|---|---:|---:|",
        f"| JPEG decode + prepare_image, 1 thread | {decode_s:.1f} | {rate(decode_s)} |",
        f"| JPEG decode + prepare_image, {workers} threads | {decode_parallel_s:.1f} | {rate(decode_parallel_s)} |",
        f"| model only: all activations | {model_s:.1f} | {rate(model_s)} |",
        f"| model only: predict (the graph up to the last layer, one output) | {predict_s:.1f} | {rate(predict_s)} |",
        f"| end to end: activations from JPEG paths | {both_s:.1f} | {rate(both_s)} |",
        "",
        f"- Where the time goes (one thread each, measured apart): decoding and preparing "
        f"{decode_share:.0%}, the network {1 - decode_share:.0%}. End to end "
        f"({both_s:.1f} s) against the sum of the parts ({decode_s + model_s:.1f} s).",
    ]


MEMORY_CHILD = """
import gc, json, os, resource, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, psutil
from featapp.data.dataset import Dataset
from featapp.engine.model import load_model
model = load_model(sys.argv[2] or None, provider=sys.argv[4])
paths = [i.path for i in Dataset(sys.argv[3]).sample("train", per_class=10, seed=0)]
batch = model.prepare(paths)
gc.collect()
process = psutil.Process()
cold_rss = process.memory_info().rss
warm = model.activations(batch)  # sizes ONNX Runtime's arena, which it keeps for the next run
del warm
gc.collect()
arena = process.memory_info().rss - cold_rss
def peak():
    # VmHWM: this process's own high-water mark (ru_maxrss is inherited from the parent).
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before_rss = process.memory_info().rss
before_peak = peak()
acts = model.activations(batch)
after_rss = process.memory_info().rss
after_peak = peak()
print(json.dumps({
    "nbytes": sum(a.nbytes for a in acts.values()),
    "per_layer": {k: v.nbytes for k, v in acts.items()},
    "rss_held": after_rss - before_rss,
    "peak_growth": after_peak - before_peak,
    "arena": arena,
}))
"""


def memory_section(model_path: str, data_dir: Path, provider: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(REPO_ROOT), model_path, str(data_dir), provider],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mb = 1e6
    biggest = sorted(result["per_layer"].items(), key=lambda item: -item[1])[:3]
    return [
        "### Memory of one 20-image activation set (fresh process)",
        "",
        f"- Sum of the arrays' bytes: **{result['nbytes'] / mb:.1f} MB** "
        f"({result['nbytes'] / 20 / mb:.2f} MB per image; largest: "
        + ", ".join(f"{name} {size / mb:.1f} MB" for name, size in biggest)
        + ")",
        f"- A second call, once ONNX Runtime's arena is sized: RSS grows by {result['rss_held'] / mb:.1f} MB "
        f"while the result is held; the peak grows by {result['peak_growth'] / mb:.1f} MB during the call",
        f"- The first call also leaves {result['arena'] / mb:.1f} MB in ONNX Runtime's memory arena (its working "
        "space, kept and reused by the session, one per process, not per set)",
    ]


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="ONNX model (default: the committed one, or $FEATAPP_MODEL)")
    parser.add_argument("--keras", default="", help="Keras model for the lecture baseline (skipped when absent)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("FEATAPP_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs"),
    )
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats for the gallery batch")
    parser.add_argument("--single-repeats", type=int, default=40)
    parser.add_argument("--scan-limit", type=int, default=0, help="photos to scan (0 = all)")
    parser.add_argument("--quick", action="store_true", help="small counts, to check that the script runs")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "engine.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.single_repeats, args.scan_limit = 3, 5, args.scan_limit or 64

    keras_path = Path(args.keras) if args.keras else next((p for p in DEFAULT_KERAS if p.is_file()), None)
    model = load_model(args.model or None, provider=args.provider)
    dataset = Dataset(args.data_dir)
    lines = ["# featapp engine benchmark", "", "## Machine", "", *machine()]
    lines.append(
        f"- Model: {os.path.relpath(model.path, REPO_ROOT)} ({model.path.stat().st_size / 1e6:.1f} MB), provider **{model.provider}** "
        f"({', '.join(model.providers)}){'; ' + model.provider_note if model.provider_note else ''}"
    )
    lines.append(
        "- CUDA: not run. No GPU was lent to the session that wrote this script; "
        "run with `--provider cuda` on a GPU machine to add CUDA numbers."
        if model.provider == "cpu"
        else "- CUDA: this run is on the GPU."
    )
    keras_model = None
    if keras_path is not None and keras_path.is_file():
        keras_model, keras_versions = keras_activation_model(keras_path)
        lines.append(f"- Keras baseline: {keras_path} ({keras_versions})")
    else:
        lines.append("- Keras baseline: skipped (no .keras file; pass --keras PATH)")
    if args.quick:
        lines.append("- **Quick run** (--quick): few repeats, a partial scan; for checking the script only.")
    lines += ["", "## Results", ""]
    print("\n".join(lines), flush=True)

    def report(section: list[str]) -> None:
        print("\n".join(section) + "\n", flush=True)
        lines.extend([*section, ""])

    report(memory_section(args.model, Path(args.data_dir), args.provider))
    gallery_lines, gallery = gallery_section(model, dataset, keras_model, args.repeats)
    report(gallery_lines)
    report(single_section(model, gallery, keras_model, args.single_repeats))
    report(scan_section(model, dataset, args.scan_limit))
    if hasattr(os, "getloadavg"):
        lines.append(f"Load average at the end: {os.getloadavg()[0]:.2f}")
    write_atomically(Path(args.out), "\n".join(lines) + "\n")
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
