"""The server's CPU for a new browser's files: a new connection per request, or a browser's few kept-alive ones.

    python -m bench.bench_http_connections [--visits 10] [--trials 5] --out bench/results/http_connections.md

Starts one ``streamlit run`` (as ``load_test.py`` does) and fetches the page and every script
and style it names, as a new browser does on its first visit, in two ways, interleaved trial
by trial: a new TCP connection for every request (Python's ``urllib``, the protocol client's
way before) and :class:`bench.streamlit_client.ConnectionPool`'s kept-alive connections (a
browser's way). Around each trial it reads the server process's CPU time (``psutil``).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import urllib.request
from pathlib import Path

import psutil

from bench import load_test
from bench.machine import cpu_features, cpu_name, load_average
from bench.streamlit_client import BROWSER_CONNECTIONS, GZIP, ConnectionPool

REPO_ROOT = Path(__file__).resolve().parent.parent


def _new_connections(url: str, paths: list[str]) -> None:
    for path in paths:
        with urllib.request.urlopen(urllib.request.Request(url + path, headers=GZIP), timeout=60) as response:
            response.read()


def _kept_alive(pool: ConnectionPool, paths: list[str]) -> None:
    for path in paths:
        status, _, _ = pool.request("GET", path, GZIP)
        assert status == 200, f"{path}: {status}"
    pool.close()  # the next visit is a new browser


def _load() -> str:
    load = load_average()
    return "unknown" if load is None else ", ".join(f"{value:.1f}" for value in load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=10, help="new browsers per trial")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/http_connections.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="featapp-http-"))
    server = load_test.start_server("http", REPO_ROOT, [], work)
    try:
        process = psutil.Process(server.pid)
        page = urllib.request.urlopen(urllib.request.Request(server.url + "/", headers=GZIP)).read().decode()
        paths = ["/"] + ["/" + p for p in dict.fromkeys(re.findall(r'(?:src|href)="\./(static/[^"]+)"', page))]
        port = int(server.url.rsplit(":", 1)[1])
        costs: dict[str, list[float]] = {"a new connection per request": [], "kept-alive connections": []}
        for _ in range(args.trials):
            for way, fetch in costs.items():
                before = sum(process.cpu_times()[:2])
                for _ in range(args.visits):
                    if way.startswith("a new"):
                        _new_connections(server.url, paths)
                    else:
                        _kept_alive(ConnectionPool("127.0.0.1", port, 60), paths)
                fetch.append(1000 * (sum(process.cpu_times()[:2]) - before) / args.visits)
    finally:
        load_test.stop_server(server)
    base = statistics.median(costs["a new connection per request"])
    lines = [
        "# A new browser's files: the server's CPU per visit, by how the client connects",
        "",
        f"Machine: {cpu_name()} ({cpu_features()}); load average at the end {_load()}. "
        f"`python -m bench.bench_http_connections --visits {args.visits} --trials {args.trials}`: one "
        f"`streamlit run`, the page and the {len(paths) - 1} files it names, fetched {args.visits} times per trial "
        f"each way, the ways interleaved trial by trial. Kept-alive: a pool of at most {BROWSER_CONNECTIONS} "
        "connections, emptied after each visit (each visit is a new browser); fetched one after another, so "
        "one connection carries a visit.",
        "",
        "| client | server CPU per visit, median of trials (ms) | all trials (ms) | ratio |",
        "|---|---|---|---|",
    ]
    for way, values in costs.items():
        median = statistics.median(values)
        lines.append(f"| {way} | {median:.1f} | {', '.join(f'{v:.0f}' for v in values)} | {median / base:.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
