"""The server's CPU time for "How this value was computed" (issue 29, item 1), one student at a time.

    python -m bench.bench_computation --clicks 15 --out bench/results/computation.md

Starts one ``streamlit run`` of this checkout (the default, browser-drawn Feature map, as
``server_cpu.py`` does), opens the Feature map with one protocol client, and for each of
layers 1, 3 and 7 (conv2d, conv2d_1, conv2d_3) and the first pooling layer reports a chosen
cell from the map explorer, as the browser does after a click: one rerun, which now draws the
arithmetic. Each click picks a new cell. As a baseline, the same report with no cell chosen
and the channel changed (the rerun the page did before this view existed). Around each it
reads the server's CPU time (user + system) from the send to the run's last message.

It also times the library's part alone in this process (``explain_cell`` and the sentences),
warm, so the two can be told apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import load_test
from bench.machine import cpu_features, cpu_name
from bench.streamlit_client import AppClient

LAYERS = ("conv2d", "max_pooling2d", "conv2d_1", "conv2d_3")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _explorer(run):
    return next(w for w in run.widgets("component_instance") if w.proto.component_name.endswith("map_explorer"))


async def _report(client: AppClient, run, change: dict):
    widget = _explorer(run)
    state = {**json.loads(widget.proto.json_args)["state"], **change}
    client.set_value(widget, json_value=json.dumps(state))
    return await client.rerun(changed=widget)


async def measure(server: load_test.Server, clicks: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    client = AppClient(server.url, timeout=120)
    await client.open()
    run = await client.rerun(page="feature_map")
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    for layer in LAYERS:
        box = next(w for w in run.widgets("selectbox") if w.label.startswith("Layer"))
        client.set_value(box, string_value=next(o for o in box.proto.options if o.split(" · ")[-1] == layer))
        run = await client.rerun(changed=box)
        shape = json.loads(_explorer(run).proto.json_args)["shape"]
        for kind in ("cell", "no cell"):
            key = f"{layer}: {kind}"
            samples[key], walls[key] = [], []
            for click in range(clicks + 1):  # the first warms the caches (not counted)
                if kind == "cell":
                    change = {"cell": [int(rng.integers(shape[1])), int(rng.integers(shape[2]))]}
                else:
                    change = {"cell": None, "channel": 1 + (click % shape[0])}
                before, started = server.cpu_seconds(), time.perf_counter()
                run = await _report(client, run, change)
                wall = (time.perf_counter() - started) * 1000
                await asyncio.sleep(0.05)
                spent = (server.cpu_seconds() - before) * 1000
                if kind == "cell" and "How this value was computed" not in run.texts():
                    raise RuntimeError(f"{layer}: no arithmetic in the page after a click")
                if click:
                    samples[key].append(spent)
                    walls[key].append(wall)
    await client.close()
    return samples, walls


def library_times(clicks: int) -> dict[str, list[float]]:
    from featapp.engine.arithmetic import explain_cell, read_layer_ops
    from featapp.engine.model import load_model
    from featapp.render.cells import cell_steps

    model = load_model(provider="cpu")
    pixels = np.random.default_rng(1).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    acts = model.activations(pixels[np.newaxis])
    ops = read_layer_ops(model)
    rng = np.random.default_rng(2)
    found: dict[str, list[float]] = {}
    for layer in LAYERS:
        maps = acts[layer][0]
        found[layer] = []
        for _ in range(clicks):
            c, r, q = (int(rng.integers(n)) for n in maps.shape)
            start = time.perf_counter()
            cell = explain_cell(ops[layer], model, acts, pixels, c, r, q)
            cell_steps(cell, model.layer_names, model.spec.input_scale)
            found[layer].append((time.perf_counter() - start) * 1000)
    return found


def _row(name: str, values: list[float], digits: int = 0) -> str:
    cells = [statistics.fmean(values), statistics.median(values), load_test.percentile(values, 90), max(values)]
    return f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    library = library_times(args.clicks * 4)
    work = Path(tempfile.mkdtemp(prefix="featapp-computation-"))
    server = load_test.start_server("this", REPO_ROOT, [], work)
    try:
        samples, walls = asyncio.run(measure(server, args.clicks))
    finally:
        load_test.stop_server(server)
    lines = [
        "# How this value was computed: server CPU per click",
        "",
        f"Machine: {cpu_name()} ({cpu_features()}), {os.cpu_count()} cores, "
        f"`python -m bench.bench_computation --clicks {args.clicks}`.",
        "One client, the default browser-drawn Feature map; each click is the explorer's report of a new cell",
        "(one rerun). Server CPU = user + system time of the `streamlit run` process, send to last message",
        "(the kernel counts it in 10 ms ticks, so single clicks read 0, 10 or 20: the mean is the figure).",
        "Wall = send to the run's last message, as the client saw it.",
        "",
        "| rerun: server CPU | mean ms | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|",
        *(_row(name, values) for name, values in samples.items()),
        "",
        "| rerun: wall | mean ms | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|",
        *(_row(name, values) for name, values in walls.items()),
        "",
        "The library's part alone (explain_cell + the sentences), wall ms in this process:",
        "",
        "| layer | mean ms | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|",
        *(_row(name, values, 2) for name, values in library.items()),
        "",
        "Not counted above: the first click after the server starts, if it comes before the warm-up thread has",
        "read the weights from the file (caches.layer_ops, about as long as loading the gradient model).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
