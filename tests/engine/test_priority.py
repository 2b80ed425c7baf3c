"""Heavy runs at a lower CPU priority than clicks (issue 28, featapp.engine.priority).

Each case runs in a fresh Python process on the committed model, so the threads it counts are
that process's own: the thread that makes the heavy runs and every ONNX Runtime thread of the
sessions heavy runs use must have the lower priority; the click session's threads must not.
Priorities, never times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from featapp.engine.priority import on_heavy_thread, run_at_heavy_priority, thread_nice
from featapp.settings import heavy_nice

REPO_ROOT = Path(__file__).resolve().parents[2]

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")

THREADS_BY_SESSION = textwrap.dedent(
    """
    import json, os, threading
    import numpy as np
    from featapp.engine.model import load_model
    from featapp.engine.priority import run_at_heavy_priority, thread_nice
    from featapp.explain.gradients import load_gradients
    from featapp.explain.saliency import saliency

    def tasks():  # ONNX Runtime's threads: the process's threads that Python did not start
        python = {thread.native_id for thread in threading.enumerate()}
        ids = (int(t) for t in os.listdir("/proc/self/task"))
        return {t: os.getpriority(os.PRIO_PROCESS, t) for t in ids if t not in python}

    before = tasks()
    model = load_model(provider="cpu")
    photo = np.random.default_rng(0).integers(0, 256, (150, 150, 3), np.uint8)
    model.activations(photo)                      # a click
    after_click = tasks()
    heavy = run_at_heavy_priority(thread_nice)    # starts the heavy thread
    after_worker = tasks()
    model.predict(np.stack([photo, photo]))       # a batch run: the batch session
    after_batch = tasks()
    saliency(load_gradients(model), photo)        # a gradient run: a gradient session
    after_gradient = tasks()

    def new(later, earlier):
        return sorted(later[t] for t in later if t not in earlier)

    print(json.dumps({
        "main": thread_nice(),
        "heavy": heavy,
        "click": new(after_click, before),
        "batch": new(after_batch, after_worker),
        "gradient": new(after_gradient, after_batch),
    }))
    """
)


def threads_by_session(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("FEATAPP_HEAVY_NICE", "FEATAPP_THREADS")}
    environment.update(env, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, "-c", THREADS_BY_SESSION],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_only
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="ONNX Runtime makes worker threads only with 2+ cores")
def test_heavy_runs_and_their_onnx_runtime_threads_run_at_a_lower_priority_than_clicks():
    seen = threads_by_session(FEATAPP_THREADS="2")
    lowered = min(19, seen["main"] + 10)
    assert seen["heavy"] == lowered
    # ONNX Runtime made worker threads for each session (2 threads: the caller and one more).
    assert seen["click"] and seen["batch"] and seen["gradient"], seen
    assert set(seen["click"]) == {seen["main"]}, "a click's ONNX Runtime threads were slowed"
    assert set(seen["batch"]) == {lowered}, "the batch session's ONNX Runtime threads kept the clicks' priority"
    assert set(seen["gradient"]) == {lowered}, "a gradient session's threads kept the clicks' priority"


@linux_only
def test_heavy_nice_zero_keeps_everything_at_one_priority():
    seen = threads_by_session(FEATAPP_THREADS="2", FEATAPP_HEAVY_NICE="0")
    assert seen["heavy"] == seen["main"]
    assert set(seen["batch"] + seen["gradient"]) <= {seen["main"]}


def test_heavy_work_returns_its_result_and_raises_its_errors_in_the_caller():
    assert run_at_heavy_priority(on_heavy_thread) is True
    assert on_heavy_thread() is False
    # A heavy run inside another runs at once rather than waiting for itself.
    assert run_at_heavy_priority(lambda: run_at_heavy_priority(lambda: 41) + 1) == 42
    with pytest.raises(ZeroDivisionError):
        run_at_heavy_priority(lambda: 1 / 0)
    assert run_at_heavy_priority(lambda: "still serving") == "still serving"


@linux_only
def test_the_heavy_thread_is_lowered_in_this_process_too():
    assert run_at_heavy_priority(thread_nice) == min(19, thread_nice() + heavy_nice())
