""""Everyone, open layer 3, channel 5": a whole class making the same change at the same moment.

    python -m bench.class_at_once --app before=/tmp/featapp-base --app after=. --students 25 --waves 6 \\
        --out bench/results/class_at_once.md

For each app (``NAME=DIR``) it starts one ``streamlit run`` and connects ``--students``
protocol clients (``streamlit_client.py``, as ``server_cpu.py``'s students), all on the
Feature map page of the same photo (the gallery's first, every student's start). Then, in
waves, every student makes the same change at once (``asyncio.gather``): the next
channel, the next layer, the next colour scale. It reports, per interaction kind, the
latency every student saw (from the wave's start to their run's last message and
pictures: p50, p95, the slowest) and the server's CPU time per student for the wave. Apps
take turns wave by wave, so a busy moment on the machine hits both alike.

Unlike ``load_test.py``, where each student looks at a photo of their own, here the views
are the same, which is what a lesson looks like when the teacher leads it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import load_test
from bench.machine import cpu_features, cpu_name
from bench.server_cpu import Student

REPO_ROOT = Path(__file__).resolve().parent.parent

KINDS = ("change_channel", "change_layer", "change_colours")


async def wave(students: list[Student], kind: str) -> tuple[list[float], float]:
    """Every student makes ``kind`` at once: their latencies (s) and the server's CPU ms per student."""
    server = students[0].server
    before = server.cpu_seconds()
    started = time.perf_counter()

    async def one(student: Student) -> float:
        await student.change(kind)
        return time.perf_counter() - started

    latencies = await asyncio.gather(*(one(student) for student in students))
    await asyncio.sleep(0.05)
    return list(latencies), (server.cpu_seconds() - before) * 1000 / len(students)


async def measure(servers, count: int, waves: int):
    classes = {server.name: [Student(server) for _ in range(count)] for server in servers}
    for students in classes.values():
        await asyncio.gather(*(student.open() for student in students))
        for kind in KINDS:  # warm, as a class that has been clicking for a minute
            await wave(students, kind)
    latency = {name: collections.defaultdict(list) for name in classes}
    cpu = {name: collections.defaultdict(list) for name in classes}
    for _ in range(waves):
        for kind in KINDS:
            for name, students in classes.items():
                seen, per_student = await wave(students, kind)
                latency[name][kind].extend(seen)
                cpu[name][kind].append(per_student)
    for students in classes.values():
        await asyncio.gather(*(student.client.close() for student in students))
    return latency, cpu


def markdown(latency, cpu, apps, count: int, waves: int) -> str:
    names = list(latency)
    lines = [
        f"# A class of {count} making the same change at once, one `streamlit run`",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu_name()}, {cpu_features()}); load average at the end {os.getloadavg()[0]:.2f}. "
        f"{waves} waves per interaction kind, every student at once, on the same photo; apps take turns wave by "
        "wave. Latency: from the wave's start to each student's run's last message and pictures. CPU: the server's "
        "CPU time for the wave divided by the students (10 ms ticks). `bench/class_at_once.py`.",
        "",
        "Apps: " + ", ".join(f"`{name}` = {apps[name]}" for name in names),
        "",
        "| interaction | app | p50 (s) | p95 (s) | slowest (s) | server CPU per student (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        for name in names:
            values = latency[name][kind]
            lines.append(
                f"| {kind} | {name} | {statistics.median(values):.2f} | {load_test.percentile(values, 95):.2f} | "
                f"{max(values):.2f} | {statistics.fmean(cpu[name][kind]):.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--app",
        action="append",
        metavar="NAME=DIR[:FLAGS]",
        help="repeatable; FLAGS as in load_test.py (FEATAPP_MAP_VIEW=server, say); default: this checkout",
    )
    parser.add_argument("--students", type=int, default=25)
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.students <= load_test.MAX_SESSIONS:
        parser.error(f"--students must be 1 to {load_test.MAX_SESSIONS}")
    apps = dict(app.split("=", 1) for app in (args.app or [f"this={REPO_ROOT}"]))
    work = Path(tempfile.mkdtemp(prefix="featapp-class-"))
    servers = []
    try:
        servers = [load_test.start_app(name, spec, work) for name, spec in apps.items()]
        latency, cpu = asyncio.run(measure(servers, args.students, args.waves))
    finally:
        for server in servers:
            load_test.stop_server(server)
    text = markdown(latency, cpu, apps, args.students, args.waves)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
