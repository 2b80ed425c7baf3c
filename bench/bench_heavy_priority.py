"""One student alone: heavy views on the lowered worker thread against the clicks' priority (issue 28).

    python -m bench.bench_heavy_priority      # writes bench/results/heavy_priority_single_user.md

Heavy runs go to one worker thread at a lower priority (``featapp.engine.priority``,
``FEATAPP_HEAVY_NICE``). Alone on the server nothing competes with that thread, so its views should
take as long as at the clicks' priority; the hop to the worker thread is the one cost, paid once per
ONNX Runtime run (a channel's picture is 128 of them). Each setting in a fresh process, alternated,
best of several runs of each view. Run it on a quiet machine: a lowered thread yields to anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench.bench_threads import MEASURE

REPO = Path(__file__).resolve().parent.parent

PICTURE = """
from featapp.explain.featurevis import visualize
view = {"a channel's picture (128 steps)": best(lambda: visualize(grads, "conv2d_2", [5]), 3)}
print(json.dumps(view))
"""


def measure(nice: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
    env.update(FEATAPP_HEAVY_NICE=nice, FEATAPP_PROVIDER="cpu", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", MEASURE + PICTURE], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    return {**json.loads(lines[-2]), **json.loads(lines[-1])}


def main() -> None:
    from bench.machine import cpu_features, cpu_name, load_average

    load = load_average()
    runs: dict[str, list[dict[str, float]]] = {"the clicks' priority (0)": [], "lowered (10)": []}
    for _ in range(2):  # alternated, so a change in the machine's load falls on both
        runs["the clicks' priority (0)"].append(measure("0"))
        runs["lowered (10)"].append(measure("10"))
    best = {name: {view: min(r[view] for r in results) for view in results[0]} for name, results in runs.items()}
    same, lowered = best.values()
    lines = [
        "# One student alone: heavy views at a lower priority",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {cpu_name()} ({cpu_features()}), {os.cpu_count()} cores, "
        f"load average {load}; `python -m bench.bench_heavy_priority`. Best of each view's runs, in ms, two fresh "
        "processes per setting, alternated. A photo's activations is a click (never moved); the rest are heavy.",
        "",
        "| view | the clicks' priority | lowered | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {view} | {same[view]:.1f} | {lowered[view]:.1f} | {lowered[view] / same[view]:.2f}x |" for view in same),
        "",
    ]
    report = REPO / "bench" / "results" / "heavy_priority_single_user.md"
    report.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
