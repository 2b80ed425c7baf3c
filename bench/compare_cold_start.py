"""Cold starts of two versions of the app, interleaved, with the time split into phases.

    python -m bench.compare_cold_start before=/tmp/old-checkout after=. [--rounds 5] [--out FILE.md]

Each round starts ``streamlit run streamlit_app.py`` once per version, in turn (so a
change in the machine's load hits both alike), and opens the gallery in a new tab of
Debian's headless Chromium, as ``bench_browser.py``'s cold start does. Seconds from
launching the server to:

* **health**: the server answers ``/_stcore/health`` (then the browser is sent there);
* **page loaded**: the browser's ``load`` event (Streamlit's HTML and JavaScript);
* **title**: the gallery's heading is in the page (the script has started drawing);
* **gallery text**: the line under the 20 photos is in the page (the photos may still be
  grey placeholders while the browser loads Streamlit's image code);
* **photos shown**: the 20 photos and the sidebar's are decoded in the page, the end of
  ``bench_browser.py``'s cold start.

With ``--returning`` the browser has visited the app before: each round first starts the
version once in a fresh browser context (untimed), stops it, and times a second cold start
of the same server on the same port in that context, with Streamlit's code and the photos it
may keep in the browser's cache (``bench_browser.py``'s "cold start, browser cache warm").

Make the old version with ``git worktree add /tmp/old-checkout COMMIT`` and link this
checkout's ``.venv`` into it.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench.bench_browser import COLD_START_PHASES as PHASES
from bench.bench_browser import app_environment, cold_start_phases, returning_cold_start_phases
from tests.helpers.browsing import launch_chromium

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs=2, metavar="LABEL=APP_DIR", help="two app checkouts to compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs"))
    parser.add_argument("--returning", action="store_true", help="a browser that visited the app before (cache warm)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    versions = dict(version.split("=", 1) for version in args.versions)

    from playwright.sync_api import sync_playwright

    env = app_environment(args.data)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[tuple[float, ...]]] = {label: [] for label in versions}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for round_number in range(args.rounds):
                for label, app_dir in versions.items():
                    timed = returning_cold_start_phases if args.returning else cold_start_phases
                    phases = timed(browser, env, Path(app_dir).resolve())
                    runs[label].append(phases)
                    print(f"round {round_number + 1} {label}: " + ", ".join(f"{p:.2f}" for p in phases), flush=True)
        finally:
            browser.close()

    lines = [
        f"Cold start{', a browser that visited before (cache warm)' if args.returning else ''}, "
        f"{args.rounds} interleaved rounds; 2-CPU load average {load_before:.2f} at the start. "
        "Median seconds from `streamlit run` to each phase (min-max of the last in brackets).",
        "",
        "| version | " + " | ".join(PHASES) + " |",
        "|---|" + "---|" * len(PHASES),
    ]
    for label, rows in runs.items():
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        finals = [row[-1] for row in rows]
        cells = [f"{m:.2f}" for m in medians[:-1]] + [f"**{medians[-1]:.2f}** ({min(finals):.2f}-{max(finals):.2f})"]
        lines.append(f"| {label} (`{versions[label]}`) | " + " | ".join(cells) + " |")
    (first, first_rows), (second, second_rows) = runs.items()
    ratio = statistics.median(r[-1] for r in second_rows) / statistics.median(r[-1] for r in first_rows)
    lines += ["", f"{second} / {first}, photos shown: **{ratio:.2f}x** the time."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
