"""The Layer grid's tiles (``render.make_tiles``) of this checkout against another, side by side.

    python -m bench.bench_tiles --before /tmp/featapp-base [--repeats 7] [--out bench/results/tiles.md]

Both ``featapp/render/`` files are loaded into this one process (``--before``'s under
another module name) and run on the same activations: every spatial layer of the committed
model for one test photo, all channels, each scaling mode, alternating before and after,
``--repeats`` times; the median per grid is reported. One photo's grids are new to the
process every time a student uploads a photo, so this is the grid's cost under a class.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

from featapp import render
from featapp.data.dataset import Dataset
from featapp.engine.images import prepare_image
from featapp.engine.model import load_model

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_render(folder: Path):
    spec = importlib.util.spec_from_file_location("render_before", folder / "featapp" / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_before"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    before = load_render(args.before.resolve())
    model = load_model(provider="cpu")
    data = Dataset(os.environ.get("FEATAPP_DATA_DIR") or REPO_ROOT.parent / "shared/data/cats_vs_dogs")
    item = data.sample("test", per_class=1, seed=0)[0]
    acts = model.activations(prepare_image(item.path, model.input_spec)[None])
    lines = [
        "# Layer grid tiles: `render.make_tiles`, before and after, one process",
        "",
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; every channel of each spatial layer of the "
        f"committed model for one test photo, the median of {args.repeats} runs, before and after alternating. "
        "`bench/bench_tiles.py`.",
        "",
        "| layer | channels x map | mode | before (ms) | after (ms) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    totals = {"before": 0.0, "after": 0.0}
    for layer in model.layers:
        if not layer.is_spatial:
            continue
        maps = acts[layer.name][0]
        for mode in ("per map", "per layer"):
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name, module in (("before", before), ("after", render)):
                    scale = module.COLOUR_SCALES["blues4"]
                    started = time.perf_counter()
                    module.make_tiles(maps, range(maps.shape[0]), scale, mode)
                    times[name].append((time.perf_counter() - started) * 1000)
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            totals["before"] += b
            totals["after"] += a
            lines.append(
                f"| {layer.name} | {maps.shape[0]} x {maps.shape[1]}x{maps.shape[2]} | {mode} | {b:.1f} | {a:.1f} | "
                f"{a / b:.2f} |"
            )
    lines.append(
        f"| all | | | {totals['before']:.0f} | {totals['after']:.0f} | {totals['after'] / totals['before']:.2f} |"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
