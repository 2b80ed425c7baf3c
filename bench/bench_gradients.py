"""Benchmark the gradient views against a forward pass, side by side, in one run.

    /work/with_training_paused.sh python -m bench.bench_gradients      # writes bench/results/gradients.md
    python -m bench.bench_gradients --quick                             # smoke run, numbers not for quoting

What it measures (issue 14, "Targets"), all on the committed model and one test photo,
interleaved repeats, medians (and interquartile range):

1. a forward pass of one image (the forward model, every layer), the reference;
2. one backward pass: the logit target's pruned gradient graph (forward + backward) for
   one image, as a ratio to (1) (target <= 3x); and the same for a channel of ``conv2d``
   and of ``conv2d_2``, to show that ONNX Runtime only runs the graph below the target;
   and the unpruned gradient file (every target's chain), to show why it is pruned;
3. saliency (plain gradient) and Grad-CAM for one photo through the library (< 100 ms),
   SmoothGrad with 16 samples (< 1 s);
4. feature visualisation of one channel, 128 steps at 150 x 150, for ``conv2d`` and
   ``conv2d_3`` (< 3 s), and a whole 128-channel layer batched (< 60 s): timed on a batch
   of 32 channels for a few steps, and extrapolated to 128 channels x 128 steps (said so).

Timings are ratios measured in this run; the machine is described in the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featapp.data.dataset import Dataset
from featapp.engine.model import load_model
from featapp.explain.backward import gradient_path
from featapp.explain.featurevis import visualize
from featapp.explain.gradcam import gradcam
from featapp.explain.gradients import load_gradients
from featapp.explain.saliency import saliency, smoothgrad

REPO = Path(__file__).resolve().parent.parent


def summary(times: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return float(median), float(q1), float(q3)


def machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import onnxruntime

    return f"{cpu}, {os.cpu_count()} logical CPUs, ONNX Runtime {onnxruntime.__version__} (CPU provider), no GPU"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gradients.md"))
    args = parser.parse_args()
    repeats = 3 if args.quick else 15
    vis_steps = 8 if args.quick else 128
    batch_steps = 2 if args.quick else 4

    model = load_model(REPO / "models" / "cats_dogs_small.onnx", provider="cpu")
    grads = load_gradients(model)
    photo = model.prepare(Dataset(REPO.parent / "shared" / "data" / "cats_vs_dogs").images("test")[0].path)
    scaled = model._scaled(photo)
    rows: list[tuple[str, list[float], str]] = []

    def forward() -> None:
        model._session.run(model.layer_names, {"input": scaled})

    logit_seed = np.ones((1, 1), np.float32)
    conv1_seed = grads.channel_seed("conv2d", [0], 1)
    conv3_seed = grads.channel_seed("conv2d_2", [0], 1)

    # The unpruned file: ONNX Runtime runs every node of it whatever is asked for.
    import onnxruntime as ort

    full = ort.InferenceSession(str(gradient_path(model.path)), providers=["CPUExecutionProvider"])
    full_feed = {"input": scaled}
    for value in full.get_inputs()[1:]:
        full_feed[value.name] = np.zeros([1, *value.shape[1:]], np.float32)
    full_feed["seed/dense_1"] = logit_seed

    cases: list[tuple[str, Callable[[], object], str]] = [
        ("forward pass, 1 image (every layer)", forward, "reference"),
        (
            "d logit / d input and every layer, 1 image",
            lambda: grads.run_scaled(scaled, "dense_1", logit_seed),
            "<= 3x",
        ),
        (
            "d mean(conv2d ch 1) / d input (pruned below layer 1)",
            lambda: grads.run_scaled(scaled, "conv2d", conv1_seed),
            "",
        ),
        (
            "d mean(conv2d_2 ch 1) / d input (pruned below layer 5)",
            lambda: grads.run_scaled(scaled, "conv2d_2", conv3_seed),
            "",
        ),
        (
            "unpruned gradient file, every target at once",
            lambda: full.run([grads._targets["dense_1"]["gradients"]["input"]], full_feed),
            "",
        ),
        ("saliency (plain), 1 photo, library", lambda: saliency(grads, photo), "< 100 ms"),
        ("Grad-CAM, 1 photo, library", lambda: gradcam(grads, photo), "< 100 ms"),
        ("SmoothGrad, 16 samples, library", lambda: smoothgrad(grads, photo, samples=16), "< 1 s"),
    ]
    results = {name: [] for name, _, _ in cases}
    for _name, fn, _ in cases:
        fn()  # warm-up: sessions, allocations
    for _ in range(repeats):  # interleaved: each case once per round
        for name, fn, _ in cases:
            start = time.perf_counter()
            fn()
            results[name].append(time.perf_counter() - start)
    for name, _, target in cases:
        rows.append((name, results[name], target))

    vis_rows = []
    for layer in ("conv2d", "conv2d_3"):
        start = time.perf_counter()
        visualize(grads, layer, [0], steps=vis_steps)
        vis_rows.append((f"feature vis, {layer} channel 1, {vis_steps} steps at 150x150", time.perf_counter() - start))
    start = time.perf_counter()
    visualize(grads, "conv2d_3", list(range(32)), steps=batch_steps, scale_every=0)
    per_image_step = (time.perf_counter() - start) / (32 * batch_steps)
    whole = per_image_step * 128 * 128

    forward_median = summary(results[cases[0][0]])[0]
    lines = [
        "# Gradient views: timings beside a forward pass",
        "",
        f"Machine: {machine()}. Training paused during the run (`/work/with_training_paused.sh`).",
        f"Command: `python -m bench.bench_gradients{' --quick' if args.quick else ''}`; {repeats} interleaved rounds, "
        "medians (interquartile range). No GPU is lent to this task, so there are no CUDA numbers.",
        "",
        "| what | median | IQR | x forward | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, times, target in rows:
        median, q1, q3 = summary(times)
        lines.append(
            f"| {name} | {median * 1e3:.1f} ms | {q1 * 1e3:.1f}-{q3 * 1e3:.1f} | {median / forward_median:.2f} | {target} |"
        )
    lines += ["", "| feature visualisation | time | target |", "|---|---:|---|"]
    for name, seconds in vis_rows:
        lines.append(f"| {name} | {seconds:.2f} s | < 3 s |")
    lines.append(
        f"| whole 128-channel layer (conv2d_3), batched 32 at a time: {per_image_step * 1e3:.1f} ms per image-step "
        f"measured on 32 channels x {batch_steps} steps, extrapolated to 128 x 128 | {whole:.0f} s | < 60 s |"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
