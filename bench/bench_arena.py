"""Memory one process keeps after the heavy views (saliency and Grad-CAM, occlusion, one
channel's optimised picture), before and after the heavy runs stopped using ONNX Runtime's
memory arena (issue 28), side by side in one run; and what it cost in time.

Each repeat runs "before" and "after" in turn, each in a fresh Python process that loads the
committed model and its gradient model, runs one photo through the model (a click), then
SmoothGrad and Grad-CAM, occlusion sensitivity and one channel's picture of the last
convolution (the Model page's two buttons and the Feature map's "what this channel looks
for"), a scan of part of the test split (the Cats-vs-dogs page's), then 20 single-image runs
(the clicks after). It reads each step's peak memory (VmHWM, reset before the step) and the
resident memory (VmRSS) a few seconds after, and times each step in wall-clock and CPU seconds. "Before" is ``featapp/`` at ``--before`` (from ``git archive``), "after"
the working tree's; each uses its own defaults (batch sizes included).

    python -m bench.bench_arena                    # writes bench/results/arena_memory.md
    python -m bench.bench_arena --repeats 1 --steps 32 --out /tmp/arena.md   # a quick look

Memory does not depend on how busy the machine is; the times do (the CPU seconds less so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "arena_memory.md"

_CHILD = """
import gc, json, os, resource, sys, time
model_path, data_dir, steps, pause, scanned = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])

def memory():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

from featapp.data.dataset import Dataset
from featapp.engine.images import prepare_image
from featapp.engine.model import load_model
from featapp.explain.featurevis import visualize
from featapp.explain.gradcam import gradcam
from featapp.explain.gradients import load_gradients
from featapp.explain.occlusion import occlusion_sensitivity
from featapp.explain.saliency import smoothgrad
from featapp.stats.analysis import scan

report = {}

def step(name, work):
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM starts again from the resident memory now: each step's own peak
    started_cpu, started = cpu(), time.perf_counter()
    work()
    report[name] = {"wall_s": time.perf_counter() - started, "cpu_s": cpu() - started_cpu}
    gc.collect()
    time.sleep(pause)  # memory is read as a student would find it a moment later
    report[name].update(memory())

model = load_model(model_path, provider="cpu")
grads = load_gradients(model)
photos = Dataset(data_dir).images("test")
image = prepare_image([p for p in photos if p.class_name == "dogs"][0].path, model)
last_conv = [layer.name for layer in model.layers if layer.is_spatial and "conv" in layer.name][-1]
step("load", lambda: model.activations(image[None]))
step("saliency_gradcam", lambda: (smoothgrad(grads, image, samples=16, seed=0), gradcam(grads, image)))
step("occlusion", lambda: occlusion_sensitivity(model, image))
step("featurevis", lambda: visualize(grads, last_conv, [5], steps=steps))
step("scan", lambda: scan(model, photos[:scanned]))
light = []
def clicks():
    for _ in range(20):
        started = time.perf_counter()
        model.activations(image[None])
        light.append(time.perf_counter() - started)
step("light_runs", clicks)
report["light_runs"]["median_ms"] = 1000 * sorted(light)[len(light) // 2]
print(json.dumps(report))
"""

STEPS = (
    ("load", "loading and one click"),
    ("saliency_gradcam", "SmoothGrad (16 copies) and Grad-CAM"),
    ("occlusion", "occlusion (196 covered copies)"),
    ("featurevis", "one channel's picture"),
    ("scan", "a scan of photos (the app's scan, on part of the test split)"),
    ("light_runs", "20 more clicks"),
)


def before_tree(commit: str, folder: Path) -> Path:
    """``featapp/`` as it was at ``commit``, unpacked into ``folder``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "featapp"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    path = folder / "archive.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(folder / "before", filter="data")
    return folder / "before"


def measure(root: Path, data_dir: Path, steps: int, pause: float, scanned: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), FEATAPP_PROVIDER="cpu")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(REPO_ROOT / "models" / "cats_dogs_small.onnx"),
            str(data_dir),
            str(steps),
            str(pause),
            str(scanned),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=root,
    )
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(runs: list[dict], step: str, field: str) -> float:
    return statistics.median(run[step][field] for run in runs)


def markdown(runs: dict[str, list[dict]], args, load: tuple[float, float, float]) -> str:
    from bench.machine import cpu_features, cpu_name

    before, after = runs["before"], runs["after"]
    lines = [
        "# ONNX Runtime's arena and the heavy views (issue 28)",
        "",
        f"Machine: {cpu_name()} ({cpu_features()}), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"load average at start {', '.join(f'{v:.1f}' for v in load)}. Made by `python -m bench.bench_arena "
        f"--repeats {args.repeats} --steps {args.steps} --pause {args.pause:g} --scanned {args.scanned}`: each repeat is one fresh process for `featapp/` at "
        f"`{args.before}` (before) and one for this tree (after), in turn; figures are medians over the "
        f"{args.repeats} repeat{'s' if args.repeats > 1 else ''}, memory in MB of 2**20 bytes.",
        "",
        "Each process loads the committed model and its gradient model, runs one photo through the model, "
        "then SmoothGrad with Grad-CAM, occlusion and one channel's picture of the last convolution "
        f"({args.steps} gradient steps), scans {args.scanned} photos of the test split as the app's scan does, "
        f"then runs 20 single images. Memory is read {args.pause:g} s after each step; its peak is the step's "
        "own (the high-water mark is reset before each step).",
        "",
        "## Resident memory",
        "",
        "| step | before: peak during / resident after (MB) | after: peak during / resident after (MB) |",
        "|---|---|---|",
    ]
    for step, label in STEPS:
        lines.append(
            f"| {label} | {median(before, step, 'VmHWM'):,.0f} / {median(before, step, 'VmRSS'):,.0f} | "
            f"{median(after, step, 'VmHWM'):,.0f} / {median(after, step, 'VmRSS'):,.0f} |"
        )
    lines += [
        "",
        "## Time",
        "",
        "| step | before: wall / CPU (s) | after: wall / CPU (s) | after / before (CPU) |",
        "|---|---|---|---|",
    ]
    for step, label in STEPS[1:]:
        b_wall, b_cpu = median(before, step, "wall_s"), median(before, step, "cpu_s")
        a_wall, a_cpu = median(after, step, "wall_s"), median(after, step, "cpu_s")
        lines.append(f"| {label} | {b_wall:.2f} / {b_cpu:.2f} | {a_wall:.2f} / {a_cpu:.2f} | {a_cpu / b_cpu:.2f} |")
    lines.append(
        f"| one click after the heavy views (median of 20, ms) | {median(before, 'light_runs', 'median_ms'):.1f} | "
        f"{median(after, 'light_runs', 'median_ms'):.1f} | "
        f"{median(after, 'light_runs', 'median_ms') / median(before, 'light_runs', 'median_ms'):.2f} (wall) |"
    )
    if load[0] > (os.cpu_count() or 1):
        lines += [
            "",
            "Other work shared the machine (the load average above): the wall-clock times are noisy, the CPU "
            "seconds less so, the memory not at all.",
        ]
    lines += [
        "",
        textwrap.fill(
            "Before, every session kept ONNX Runtime's CPU memory arena, which holds on to the working memory of "
            "the largest run it has seen for the life of the process: occlusion's batches of 64 covered copies, "
            "SmoothGrad's 16 noisy copies and a scan's batches of 32 stayed resident after the work was done. "
            "After, single-image runs keep their arena (their working memory is small and reused on every "
            "click); runs of several images use a second session of the model, whose arena is shrunk once such "
            "runs pause; gradient runs go without an arena; occlusion runs 8 copies at a time, SmoothGrad 4 and "
            "a scan 8; what the C library kept of the freed memory is given back once runs pause; and such runs "
            "take one slot per process "
            "(`featapp.engine.model.batch_run_slot`), so a class's heavy clicks do not add their peaks up.",
            width=110,
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f24dd97", help="the commit whose featapp/ is 'before'")
    parser.add_argument("--repeats", type=int, default=3, help="before/after pairs, interleaved")
    parser.add_argument("--steps", type=int, default=128, help="gradient steps of the channel's picture (the app's)")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds after each step before its memory is read")
    parser.add_argument("--scanned", type=int, default=400, help="photos of the test split the scan step scans")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.data_dir / "test" / "dogs").is_dir():
        raise SystemExit(f"no test photos in {args.data_dir}: pass --data-dir")
    load = os.getloadavg()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="arena-") as work:
        roots = {"before": before_tree(args.before, Path(work)), "after": REPO_ROOT}
        for repeat in range(args.repeats):
            for name in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
                runs[name].append(measure(roots[name], args.data_dir, args.steps, args.pause, args.scanned))
                print(name, json.dumps(runs[name][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(runs, args, load))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
