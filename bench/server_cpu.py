"""The server's CPU time per interaction kind, one student at a time, before and after a change.

    python -m bench.server_cpu --app before=/tmp/featapp-base --app after=. --changes 20 \\
        --out bench/results/server_cpu.md [--py-spy after]

For each app (``NAME=DIR``) it starts one ``streamlit run`` (as ``load_test.py`` does),
connects one client of Streamlit's websocket protocol (``streamlit_client.py``: what the
browser sends and fetches, without drawing), opens the Feature map page, warms its caches
with one change of each kind, then makes ``--changes`` changes of each kind, in turn:

* ``change_channel``: the channel number one up (wrapping);
* ``change_colours``: the next colour scale;
* ``change_scale``: the next scaling (per map, per layer);
* ``change_layer``: the next layer with 2-D maps;
* ``open_grid``: the Layer grid page (all channels of that layer);
* ``open_gallery``: the Gallery page (its 20 photos, fetched once by this client);
* ``open_feature_map``: back to the Feature map;
* ``open_app``: a new browser opens the app: the page, Streamlit's scripts and styles, the
  websocket, the first run (the gallery) and its pictures (then it leaves);
* ``upload``: on the Gallery, open the upload tab and upload a photo nobody uploaded before
  (``load_test.student_photo``), as ``load_test``'s students do; then back to the Feature map
  (not counted).

Where the Feature map is drawn in the browser (the default view), a channel, colour or
scale change costs the server nothing until the student stops: then the browser reports
the view, one rerun. Those kinds are measured as that report (an upper bound: a student
scrubbing through ten channels sends one). ``--app NAME=DIR:FEATAPP_MAP_VIEW=server``
measures the server-drawn view, where every change is a rerun.

Around each one it reads the server process's CPU time (user + system, ``psutil``) before
sending and after the run's last message and its new pictures arrived, so the figure is
everything the server spent on that click: the script, serialising, the websocket, the
media requests. Apps are measured in turn, interleaved change by change, so a busy moment
on the machine hits both alike. With ``--py-spy NAME`` that app's server is sampled by
``py-spy --gil`` (``pip install py-spy``: only the thread holding the GIL, which is what
queues the other students) and the functions holding most of its time are listed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import load_test
from bench.machine import cpu_features, cpu_name
from bench.streamlit_client import AppClient

REPO_ROOT = Path(__file__).resolve().parent.parent

KINDS = (
    "change_channel",
    "change_colours",
    "change_scale",
    "change_layer",
    "open_grid",
    "open_gallery",
    "open_feature_map",
    "open_app",
    "upload",
)


class Student:
    """One protocol client on the Feature map page, able to make each kind of change."""

    def __init__(self, server: load_test.Server) -> None:
        self.server = server
        self.client = AppClient(server.url, timeout=120)
        self.run = None
        self.layer_index = 0
        self.uploads = 0

    async def open(self) -> None:
        await self.client.open()
        self.run = await self.client.rerun(page="feature_map")

    def _widget(self, kind: str, starts: str):
        return next(w for w in self.run.widgets(kind) if w.label.startswith(starts))

    def _explorer(self):
        found = [w for w in self.run.widgets("component_instance") if w.proto.component_name.endswith("map_explorer")]
        return found[0] if found else None

    async def change(self, kind: str) -> None:
        client = self.client
        explorer = self._explorer() if kind in ("change_channel", "change_colours", "change_scale") else None
        if explorer is not None:
            args = json.loads(explorer.proto.json_args)
            state = dict(args["state"])
            if kind == "change_channel":
                state["channel"] = state["channel"] + 1 if state["channel"] < args["shape"][0] else 1
            elif kind == "change_colours":
                names = list(args["palettes"])
                state["colours"] = names[(names.index(state["colours"]) + 1) % len(names)]
            else:
                state["scaling"] = "per layer" if state["scaling"] == "per map" else "per map"
            client.set_value(explorer, json_value=json.dumps(state))
            self.run = await client.rerun(changed=explorer)
        elif kind == "change_channel":
            box = self._widget("number_input", "Channel")
            current = int(box.proto.value if box.proto.set_value else box.proto.default)
            client.set_value(box, double_value=current + 1 if current < box.proto.max else 1)
            self.run = await client.rerun(changed=box)
        elif kind in ("change_colours", "change_scale"):
            radio = self._widget("radio", "Colours" if kind == "change_colours" else "Scale")
            options = list(radio.proto.options)
            shown = radio.proto.raw_value if radio.proto.set_value else options[radio.proto.default]
            # Scale: per map <-> per layer only (fixed adds number boxes and is another view).
            count = len(options) if kind == "change_colours" else min(2, len(options))
            client.set_value(radio, string_value=options[(options.index(shown) + 1) % count])
            self.run = await client.rerun(changed=radio)
        elif kind == "change_layer":
            layers = self._widget("selectbox", "Layer")
            self.layer_index = (self.layer_index + 1) % len(layers.proto.options)
            client.set_value(layers, string_value=layers.proto.options[self.layer_index])
            self.run = await client.rerun(changed=layers)
        elif kind == "open_grid":
            grid = await client.rerun(page="layer_grid")
            if load_test.tile_count(grid) < 1:
                raise RuntimeError("open_grid: no grid in the page")
            return  # on the grid page now: open_feature_map comes next
        elif kind == "open_gallery":
            # The default page is listed under the empty path.
            gallery = await client.rerun(page="gallery" if "gallery" in client.pages else "")
            if len(gallery.widgets("button", "Look inside")) < 20:
                raise RuntimeError("open_gallery: the gallery does not show 20 photos")
            return
        elif kind == "open_feature_map":
            self.run = await client.rerun(page="feature_map")
        elif kind == "upload":  # on the Gallery (see timed)
            tabs, labels = self.run.tabs()
            client.set_value(tabs, string_value=next(label for label in labels if "Your photo" in label))
            with_uploader = await client.rerun(changed=tabs)
            self.uploads += 1
            name = f"server-cpu-{self.uploads}.png"
            self.run = run = await client.upload(
                with_uploader.widget("file_uploader"), name, load_test.student_photo(50_000 + self.uploads), "image/png"
            )
            shown = [image.caption for element, _ in run.elements if element.WhichOneof("type") == "imgs"
                     for image in element.imgs.imgs]  # fmt: skip
            if not any(caption.replace("\\", "").startswith(name) for caption in shown):
                raise RuntimeError(f"upload: the photo did not become the current image: {shown[:1]}")
            return
        elif kind == "open_app":
            newcomer = AppClient(self.server.url, timeout=120)
            first = await newcomer.open()
            await newcomer.close()
            if len(first.widgets("button", "Look inside")) < 20:
                raise RuntimeError("open_app: the gallery does not show 20 photos")
            return
        else:
            raise ValueError(kind)
        if self.run.count("vega_lite_chart") < 1 and self._explorer() is None:
            raise RuntimeError(f"{kind}: no heatmap in the page")

    async def timed(self, kind: str) -> float:
        """The server's CPU milliseconds for one change."""
        if kind == "upload":  # from the Gallery, as in load_test (opening it is open_gallery's)
            self.run = await self.client.rerun(page="gallery" if "gallery" in self.client.pages else "")
            await asyncio.sleep(0.05)
        before = self.server.cpu_seconds()
        await self.change(kind)
        await asyncio.sleep(0.05)  # the last media request's bookkeeping
        spent = (self.server.cpu_seconds() - before) * 1000
        if kind == "upload":  # the dataset photos' tab again (open_gallery counts those), then the Feature map
            tabs, labels = self.run.tabs()
            self.client.set_value(tabs, string_value=next(label for label in labels if "Dataset" in label))
            await self.client.rerun(changed=tabs)
            self.run = await self.client.rerun(page="feature_map")
        return spent


async def measure(
    servers: list[load_test.Server], changes: int, kinds: tuple[str, ...] = KINDS
) -> dict[str, dict[str, list[float]]]:
    students = [Student(server) for server in servers]
    for student in students:
        await student.open()
        for kind in KINDS:  # warm: the first of each fills the caches
            await student.timed(kind)
    samples: dict[str, dict[str, list[float]]] = {s.name: collections.defaultdict(list) for s in servers}
    for _ in range(changes):
        for kind in kinds:
            for student in students:
                samples[student.server.name][kind].append(await student.timed(kind))
    for student in students:
        await student.client.close()
    return samples


def top_functions(raw: Path, count: int = 25) -> list[tuple[str, float, float]]:
    """From py-spy's collapsed stacks: (function, share of samples with it on the stack,
    share with it at the top), the most inclusive first."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        hits = int(number)
        total += hits
        for frame in dict.fromkeys(frames):
            inclusive[frame] += hits
        own[frames[-1]] += hits
    return [(frame, hits / total, own[frame] / total) for frame, hits in inclusive.most_common(count)]


def markdown(samples, apps, changes: int, spy_lines: list[str]) -> str:
    names = list(samples)
    lines = [
        "# Server CPU per interaction, one student at a time",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu_name()}, {cpu_features()}), Python "
        f"{platform.python_version()}; load average at the end {os.getloadavg()[0]:.2f}. "
        f"{changes} changes of each kind per app, interleaved between the apps; milliseconds of the server "
        "process's CPU time (user + system; the kernel counts it in 10 ms ticks, so the mean of many changes is the figure to read) from sending the change to the run's last message and its pictures. "
        "`bench/server_cpu.py`.",
        "",
        "Apps: " + ", ".join(f"`{name}` = {apps[name]}" for name in names),
        "",
        "| interaction | " + " | ".join(f"{name} mean | {name} p90" for name in names) + " | ratio (mean) |",
        "|---|" + "---|---|" * len(names) + "---|",
    ]
    for kind in [kind for kind in KINDS if kind in samples[names[0]]]:
        cells, medians = [], []
        for name in names:
            values = samples[name][kind]
            medians.append(statistics.fmean(values))
            cells.append(f"{medians[-1]:.0f} | {load_test.percentile(values, 90):.0f}")
        ratio = f"{medians[-1] / medians[0]:.2f}" if len(names) > 1 and medians[0] else "-"
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines + ["", *spy_lines]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--app",
        action="append",
        metavar="NAME=DIR[:FLAGS]",
        help="repeatable; FLAGS as in load_test.py (NAME=VALUE environment variables, --x.y=z options); "
        "default: this checkout",
    )
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="interactions to measure")
    parser.add_argument("--py-spy", metavar="NAME", help="sample this app's server with py-spy")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    apps = dict(app.split("=", 1) for app in (args.app or [f"this={REPO_ROOT}"]))
    work = Path(tempfile.mkdtemp(prefix="featapp-cpu-"))
    servers, spy = [], None
    raw = work / "py-spy.txt"
    try:
        servers = []
        for name, spec in apps.items():
            folder, _, flags = spec.partition(":")
            servers.append(
                load_test.start_server(name, Path(folder).resolve(), flags.split(",") if flags else [], work)
            )
        if args.py_spy:
            target = next(server for server in servers if server.name == args.py_spy)
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(target.pid), "--rate", "250", "--gil", "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
            time.sleep(1.5)
        samples = asyncio.run(measure(servers, args.changes, tuple(args.kinds)))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        for server in servers:
            load_test.stop_server(server)
    spy_lines = []
    if args.py_spy and raw.exists():
        spy_lines = [
            f"py-spy on `{args.py_spy}` (all its changes, warm-up included): functions on the stack in most samples",
            "",
            "| function | on the stack | at the top |",
            "|---|---|---|",
            *(f"| `{frame[:110]}` | {inc:.0%} | {top:.0%} |" for frame, inc, top in top_functions(raw)),
        ]
    text = markdown(samples, apps, args.changes, spy_lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
