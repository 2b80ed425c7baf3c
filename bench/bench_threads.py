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
from collections.abc import Callable
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


def best_of_alternated(settings: dict[str, Callable[[], dict[str, float]]], rounds: int = 2) -> list[dict[str, float]]:
    """Each setting's best time per view over ``rounds`` fresh processes, the settings alternated
    so that a change in the machine's load falls on all of them; in the order of ``settings``."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, run in settings.items():
            runs[name].append(run())
    return [{view: min(r[view] for r in results) for view in results[0]} for results in runs.values()]


def ratio_table(names: tuple[str, str], first: dict[str, float], second: dict[str, float]) -> list[str]:
    """Markdown rows: each view's two times in ms and the second's ratio to the first."""
    return [
        f"| view | {names[0]} | {names[1]} | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {view} | {first[view]:.1f} | {second[view]:.1f} | {second[view] / first[view]:.2f}x |" for view in first),
    ]


def write_single_user_report(title: str, command: str, note: str, names: tuple[str, str], first, second, name: str):
    """Write ``bench/results/NAME`` (and print it): the machine, then :func:`ratio_table`."""
    from bench.machine import cpu_features, cpu_name, load_average

    lines = [
        f"# {title}",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {cpu_name()} ({cpu_features()}), {os.cpu_count()} cores, "
        f"load average {load_average()}; `{command}`. Best of each view's runs, in ms, two fresh processes per "
        f"setting, alternated.{note}",
        "",
        *ratio_table(names, first, second),
        "",
    ]
    (REPO / "bench" / "results" / name).write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    default, single = best_of_alternated(
        {"ONNX Runtime's choice": lambda: measure(None), "one thread": lambda: measure("1")}
    )
    write_single_user_report(
        "One student alone: ONNX Runtime's threads against one thread per run",
        "python -m bench.bench_threads",
        "",
        ("ONNX Runtime's choice", "one thread"),
        default,
        single,
        "threads_single_user.md",
    )


if __name__ == "__main__":
    main()
