"""Where a channel change's time goes: the browser, the websocket, the server's rerun, the drawing.

    python -m bench.profile_channel_change [--runs 20] [--py-spy bench/results/channel_change.svg]

It opens the Feature map page in Debian's headless Chromium, types other layer-1 channels
as ``bench_browser.py`` does, and timestamps, in the page's own clock
(``performance.now()``), each step of every change:

* **Enter -> rerun sent**: the number box's key handler until Streamlit sends the rerun
  request on its websocket;
* **sent -> first reply**: the server receives it and its script reaches the first element
  that changed;
* **first -> last reply**: the rest of the script run, streamed element by element;
* **last reply -> pixels**: React and Vega draw the new map (the chart's final picture
  first appears, as ``bench_browser.py`` times it).

With ``--browser-profile`` the page's JavaScript CPU profile is saved (open it in
Chromium's DevTools, Performance tab). With ``--py-spy`` the server runs under ``py-spy record`` and the flame graph of its CPU
time during the changes is written there (a ``.txt`` name gives collapsed stacks) (``pip install py-spy``; not needed otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_browser import RECORD_CANVAS, add_app_arguments, app_environment, final_picture_time, live_channels
from tests.helpers.browsing import free_port, launch_chromium, start_streamlit, stop, wait_for_health

REPO_ROOT = Path(__file__).resolve().parent.parent

# Logs every websocket send and message with the page's clock; Streamlit opens one socket.
RECORD_WEBSOCKET = """
(() => {
  const Original = window.WebSocket;
  window.__ws = [];
  window.WebSocket = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => window.__ws.push(['recv', performance.now()]));
    }
    send(data) {
      window.__ws.push(['send', performance.now()]);
      return super.send(data);
    }
  };
})();
"""

PHASES = ("Enter -> rerun sent", "sent -> first reply", "first -> last reply", "last reply -> pixels", "total")


def profile(page, channels: list[int]) -> list[dict[str, float]]:
    box = page.locator('[data-testid="stNumberInput"] input').first
    rows = []
    for channel in channels:
        box.fill(str(channel))
        enter = page.evaluate("() => { window.__ws.length = 0; return performance.now(); }")
        box.press("Enter")
        drawn = final_picture_time(page, since=enter)
        log = page.evaluate("() => window.__ws")
        sends = [t for kind, t in log if kind == "send"]
        received = [t for kind, t in log if kind == "recv" and sends and t > sends[0]]
        if not sends or not received:
            continue
        before_draw = [t for t in received if t <= drawn] or received[:1]
        rows.append(
            {
                "Enter -> rerun sent": sends[0] - enter,
                "sent -> first reply": received[0] - sends[0],
                "first -> last reply": before_draw[-1] - received[0],
                "last reply -> pixels": drawn - before_draw[-1],
                "total": drawn - enter,
                "script end": received[-1] - sends[0],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="write the server's samples here: a flame graph (.svg) or collapsed stacks (.txt)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    parser.add_argument(
        "--browser-profile", type=Path, default=None, help="write the page's JavaScript CPU profile here (.cpuprofile)"
    )
    add_app_arguments(parser)
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from featapp.engine.model import load_model

    model = load_model(provider="cpu")
    live = live_channels(model, args.data)[1:]
    channels = [live[i % len(live)] for i in range(args.runs)]
    env = app_environment(args.data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_streamlit(port, env, app_dir=args.app_dir)
    spy = None
    try:
        wait_for_health(url, server)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            context.add_init_script(RECORD_WEBSOCKET)
            context.add_init_script(RECORD_CANVAS)
            page = context.new_page()
            page.goto(url + "/feature_map")
            final_picture_time(page, since=0, timeout_s=120)
            profile(page, channels[:3])  # warm: the first changes fill the caches
            if args.py_spy:
                py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                spy = subprocess.Popen(
                    [py_spy, "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw" if args.py_spy.suffix == ".txt" else "flamegraph",
                     "--output", str(args.py_spy), "--idle"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                )  # fmt: skip
                time.sleep(1.5)
            cdp = None
            if args.browser_profile:
                cdp = context.new_cdp_session(page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.setSamplingInterval", {"interval": 500})
                cdp.send("Profiler.start")
            rows = profile(page, channels)
            if cdp:
                args.browser_profile.write_text(json.dumps(cdp.send("Profiler.stop")["profile"]), encoding="utf-8")
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            browser.close()
    finally:
        stop(server)

    lines = [
        f"Channel changes on the Feature map page of `{os.path.relpath(args.app_dir, REPO_ROOT)}`, layer 1, {len(rows)} runs; load average "
        f"{os.getloadavg()[0]:.2f}. Milliseconds in the page's clock.",
        "",
        "| phase | median | min | max |",
        "|---|---|---|---|",
    ]
    for phase in (*PHASES, "script end"):
        values = [row[phase] for row in rows]
        lines.append(f"| {phase} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    lines.append("")
    lines.append('"script end" is the rerun request until the last message of the rerun arrived.')
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
