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
from pathlib import Path

from bench.bench_threads import MEASURE, best_of_alternated, write_single_user_report

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
    same, lowered = best_of_alternated({"same": lambda: measure("0"), "lowered": lambda: measure("10")})
    write_single_user_report(
        "One student alone: heavy views at a lower priority",
        "python -m bench.bench_heavy_priority",
        " A photo's activations is a click (never moved); the rest are heavy.",
        ("the clicks' priority", "lowered"),
        same,
        lowered,
        "heavy_priority_single_user.md",
    )


if __name__ == "__main__":
    main()
