"""A real ``streamlit run`` server and Debian's Chromium, for the end-to-end tests and the
browser benchmarks (``bench/``), so that both start them the same way.

Playwright never downloads a browser here: ``playwright install`` cannot reach its CDN,
so it drives ``/usr/bin/chromium`` (``apt-get install chromium``) with the flags below.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Many contexts in one browser (the load test): keep background tabs running at full speed.
NO_BACKGROUND_THROTTLING = (
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
)


# The sidebar's photo and the gallery's 20, every one decoded: until the browser has
# Streamlit's image code, the page shows grey placeholders even after the text below them.
PHOTOS_SHOWN = """() => {
  const images = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
  return images.length >= 21 && images.every(image => image.complete && image.naturalWidth > 0);
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_streamlit(
    port: int, env: dict[str, str], flags: Sequence[str] = (), *, app_dir: Path = REPO_ROOT, log=subprocess.DEVNULL
) -> subprocess.Popen:
    """``streamlit run streamlit_app.py`` headless on ``127.0.0.1:port``; returns at once."""
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", *flags,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 120, log_path: Path | None = None) -> None:
    """Until the server answers ``/_stcore/health``; raises if it exits or does not answer."""
    where = f"; see {log_path}" if log_path else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}{where}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s{where}")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_env(**settings: str) -> dict[str, str]:
    """A server's environment: the caller's without its ``FEATAPP_*`` settings, on the CPU,
    plus ``settings`` (an AppTest run in this process takes the ``app_env`` fixture instead)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
    env.update(FEATAPP_PROVIDER="cpu", **settings)
    return env


@contextlib.contextmanager
def streamlit_server(
    log_path: Path, env: dict[str, str], flags: Sequence[str] = (), *, app_dir: Path = REPO_ROOT, base_path: str = ""
) -> Iterator[str]:
    """A server for the ``with`` block; yields its URL (under ``base_path``, which is
    passed on as ``--server.baseUrlPath``). The log is complete once it stops."""
    with log_path.open("w") as log:
        port = free_port()
        if base_path:
            flags = [*flags, "--server.baseUrlPath", base_path]
        process = start_streamlit(port, env, flags, app_dir=app_dir, log=log)
        url = f"http://127.0.0.1:{port}" + (f"/{base_path.strip('/')}" if base_path else "")
        try:
            wait_for_health(url, process, log_path=log_path)
            yield url
        finally:
            stop(process)


def launch_chromium(playwright, extra_flags: Sequence[str] = ()):
    """Debian's Chromium through Playwright; a clear error when it is not installed."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_FLAGS, *extra_flags])
