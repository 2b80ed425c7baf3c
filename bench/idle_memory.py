"""What one app process holds at idle: resident memory after ``streamlit run`` starts, and
after one visitor has opened the app and left.

    python -m bench.idle_memory [--port 8597] [--out bench/results/idle_memory.md]

Starts the app headless on 127.0.0.1, waits for ``/_stcore/health``, settles 5 s and reads
the server's resident set size (RSS); then one protocol client (``bench/streamlit_client.py``)
opens the app (the gallery, with its photos and their activations), closes, and the RSS is
read again after 5 s. Memory is not a timing: this can run on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the app stopped while starting")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the app did not answer within two minutes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8597)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "idle_memory.md")
    args = parser.parse_args(argv)

    import psutil

    from bench.machine import cpu_features, cpu_name
    from bench.streamlit_client import AppClient

    url = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true"]
    command += ["--server.port", str(args.port), "--server.address", "127.0.0.1"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(url, process)
        time.sleep(5)
        server = psutil.Process(process.pid)
        started = server.memory_info().rss

        async def visit() -> None:
            client = AppClient(url)
            await client.open()
            await client.close()

        asyncio.run(visit())
        time.sleep(5)
        visited = server.memory_info().rss
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [
        "# One app process at idle",
        "",
        f"`python -m bench.idle_memory` on {cpu_name()} ({cpu_features()}), {os.cpu_count()} CPUs, "
        "the committed model, the shared photos.",
        "",
        "| moment | resident memory |",
        "|---|---|",
        f"| after start, no visitor | {started / 1e6:.0f} MB |",
        f"| after one visitor opened the app and left | {visited / 1e6:.0f} MB |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
