"""One student alone: ONNX Runtime's own thread count against one thread per run (issue 28).

    python -m bench.bench_threads      # writes bench/results/threads_single_user.md

A server can run each ONNX Runtime call on one thread (``FEATAPP_THREADS=1``),
which the heavy-class runs tried (bench/results/load_50_heavy_one_thread_a.md). This measures what it costs a student who is
alone on the server: each setting in a fresh process, alternated, best of several runs of each view.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MEASURE = """
import json, time
import numpy as np
from featapp.engine.model import load_model
from featapp.explain.gradients import load_gradients
from featapp.explain.occlusion import occlusion_sensitivity
from featapp.explain.saliency import saliency

model = load_model(provider="cpu")
rng = np.random.default_rng(0)
image = rng.integers(0, 256, (150, 150, 3), np.uint8)
batch = rng.integers(0, 256, (32, 150, 150, 3), np.uint8)
grads = load_gradients(model)
model.activations(image[None]); model.predict(batch); saliency(grads, image)


def best(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
    return min(times) * 1000


print(json.dumps({
    "one photo's activations": best(lambda: model.activations(image[None]), 20),
    "32 photos (a scan's batch)": best(lambda: model.predict(batch), 5),
    "saliency": best(lambda: saliency(grads, image), 5),
    "occlusion": best(lambda: occlusion_sensitivity(model, image), 3),
}))
"""


def measure(threads: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "FEATAPP_THREADS"}
    if threads is not None:
        env["FEATAPP_THREADS"] = threads
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", MEASURE], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from bench.machine import cpu_features, cpu_name, load_average

    load = load_average()
    runs: dict[str, list[dict[str, float]]] = {"ONNX Runtime's choice": [], "one thread": []}
    for _ in range(2):  # alternated, so a change in the machine's load falls on both
        runs["ONNX Runtime's choice"].append(measure(None))
        runs["one thread"].append(measure("1"))
    best = {name: {view: min(r[view] for r in results) for view in results[0]} for name, results in runs.items()}
    default, single = best.values()
    lines = [
        "# One student alone: ONNX Runtime's threads against one thread per run",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {cpu_name()} ({cpu_features()}), {os.cpu_count()} cores, "
        f"load average {load}; `python -m bench.bench_threads`. Best of each view's runs, in ms, two fresh processes",
        "per setting, alternated.",
        "",
        "| view | ONNX Runtime's choice | one thread | ratio |",
        "|---|---:|---:|---:|",
        *(
            f"| {view} | {default[view]:.1f} | {single[view]:.1f} | {single[view] / default[view]:.2f}x |"
            for view in default
        ),
        "",
    ]
    report = REPO / "bench" / "results" / "threads_single_user.md"
    report.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
