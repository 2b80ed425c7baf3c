"""The atlas (``featapp atlas``): how long a build takes, how big the file is, and what reading it costs.

    python -m bench.bench_atlas MODEL [MODEL ...]          # build each into a temporary folder, timed
    python -m bench.bench_atlas --sizes-of FILE.atlas.zip  # only the file: per layer, WebP beside PNG

A build runs the real command line (``python -m featapp atlas MODEL --out ...``) in a child
process at the app's settings (``FEATAPP_VIS_STEPS`` unset: 128 steps) and reports its wall
and CPU time; the machine line says which machine and how busy it was (the load average), since
the build is CPU-bound. The sizes compare the stored lossless WebP pictures with the same pixels
as optimised PNGs, and time :func:`featapp.explain.atlas.read_atlas` (what a server does once).
Markdown goes to stdout; bench/results/atlas.md holds the figures BENCHMARKS.md cites.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

from PIL import Image

from bench import machine
from featapp.explain.atlas import INDEX_NAME, read_atlas


def machine_line() -> str:
    load = machine.load_average()
    memory = machine.memory_gib()
    return (
        f"Machine: {machine.cpu_name()} ({machine.cpu_features()}), {os.cpu_count()} logical CPUs"
        + (f", {memory:.0f} GiB" if memory else "")
        + (f"; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)" if load else "")
    )


def build(model: Path, folder: Path) -> tuple[Path, float, float]:
    """Build ``model``'s atlas into ``folder`` with the command line: (file, wall s, CPU s of the child)."""
    out = folder / (model.stem + ".atlas.zip")
    env = {k: v for k, v in os.environ.items() if k != "FEATAPP_VIS_STEPS"}
    env.setdefault("FEATAPP_PROVIDER", "cpu")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "featapp", "atlas", str(model), "--out", str(out)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)  # its progress stays on stderr
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, wall, cpu


def _png_size(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as picture:
        handle = io.BytesIO()
        picture.save(handle, format="PNG", optimize=True)
        return len(handle.getvalue())


def sizes(path: Path) -> str:
    """Markdown: the file's size per layer, WebP beside PNG, and the time to read and check it."""
    started = time.perf_counter()
    atlas = read_atlas(path)
    read_s = time.perf_counter() - started
    webp: dict[str, int] = defaultdict(int)
    png: dict[str, int] = defaultdict(int)
    with zipfile.ZipFile(path) as archive:
        index_bytes = archive.getinfo(INDEX_NAME).compress_size
        for layer in atlas.layers.values():
            for name in layer.files:
                data = archive.read(name)
                webp[layer.name] += len(data)
                png[layer.name] += _png_size(data)
    rows = [
        "| layer | objective | channels | stored picture (px) | WebP, lossless | as PNG (optimised) |",
        "|---|---|---:|---|---:|---:|",
    ]
    for layer in atlas.layers.values():
        shown = layer.pictures.shown(min_px=1)
        count = len(layer.pictures.channels)
        rows.append(
            f"| {layer.name} | {layer.objective} | {count} | {shown.shape[2]} x {shown.shape[1]} | "
            f"{webp[layer.name] / 1e6:.3f} MB ({webp[layer.name] / count / 1e3:.1f} kB each) | "
            f"{png[layer.name] / 1e6:.3f} MB |"
        )
    rows.append(
        f"| **all** | | {atlas.picture_count} | | **{sum(webp.values()) / 1e6:.2f} MB** | "
        f"{sum(png.values()) / 1e6:.2f} MB |"
    )
    return (
        f"`{path.name}`: {path.stat().st_size / 1e6:.2f} MB on disk ({path.stat().st_size:,} bytes; the index "
        f"{index_bytes / 1e3:.1f} kB compressed). Reading and checking it (`read_atlas`, every picture decoded): "
        f"{read_s:.2f} s.\n\n" + "\n".join(rows)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, help="converted ONNX models to build atlases of")
    parser.add_argument("--sizes-of", type=Path, action="append", default=[], help="an atlas file to describe")
    args = parser.parse_args(argv)
    print(machine_line(), "\n")
    for path in args.sizes_of:
        print(sizes(path), "\n")
    for model in args.models:
        with tempfile.TemporaryDirectory() as folder:
            out, wall, cpu = build(model, Path(folder))
            print(f"`featapp atlas {model.name}`: {wall:.1f} s wall, {cpu:.1f} s CPU. {machine_line()}\n")
            print(sizes(out), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
