"""Where a class's server CPU goes: py-spy on one ``streamlit run`` while a wave of students loads it.

    python -m bench.profile_load [--app DIR[:FLAGS]] [--sessions 50] [--rounds 2] \\
        --out bench/results/load_profile.md

It starts one server as ``load_test.py`` does, runs ``load_test.py --client protocol
--url ...`` against it (the issue's wave: every student opens the app, picks a photo,
uploads one of their own and goes through the Feature map, channel, layer and grid rounds)
with ``py-spy record --gil`` attached from the wave's start to its end. Only the thread
holding the GIL is sampled: that is what makes the other students wait. The report gives each part of the app's share of those samples (a
sample counts for every part on its stack, so the rows overlap) and the functions on the
stack in most samples (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import load_test
from bench.machine import cpu_features, cpu_name
from bench.server_cpu import top_functions

REPO_ROOT = Path(__file__).resolve().parent.parent

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):\d+\)$")

# (row, function name or "" for any, a fragment of the file's path). A stack counts for a row
# when one of its frames matches. Indented rows are parts of the row above them.
PARTS: list[tuple[str, str, str]] = [
    ("every page script (Streamlit's script thread)", "", "streamlit/runtime/scriptrunner/"),
    ("  Gallery page", "", "featapp/app/pages/gallery.py"),
    ("    the gallery's cards (`caches.gallery_cards`)", "gallery_cards", "featapp/app/caches.py"),
    ("    an upload decoded (`prepare_image`)", "prepare_image", "featapp/engine/images.py"),
    ("  Feature map page", "", "featapp/app/pages/feature_map.py"),
    ("    the explorer component (`explorer.show`)", "show", "featapp/app/explorer.py"),
    ("    the explorer's payload for a new (photo, layer) (`caches.explorer`)", "explorer", "featapp/app/caches.py"),
    ("  Layer grid page", "", "featapp/app/pages/layer_grid.py"),
    ("  the sidebar (`chrome`)", "sidebar", "featapp/app/chrome.py"),
    ("  pictures put on the shelf (`caches.picture_url`)", "picture_url", "featapp/app/caches.py"),
    (
        "  the model run on a photo (ONNX Runtime's Python; it computes without the GIL)",
        "InferenceSession.run",
        "onnxruntime/",
    ),
    ("  Streamlit's messages to the browser (protobuf, `ForwardMsg`)", "", "streamlit/runtime/forward_msg"),
    ("the ASGI server: HTTP, websocket, files (uvicorn, Starlette)", "", "uvicorn/"),
    (
        "  Streamlit's frontend files and the picture shelf (`featapp.app.asset_server`)",
        "",
        "featapp/app/asset_server.py",
    ),
    ("  Streamlit's websocket (messages in and out)", "", "streamlit/web/server/starlette/starlette_websocket.py"),
    ("  uploads, media and the page (Streamlit's routes)", "", "streamlit/web/server/starlette/starlette_routes.py"),
]


def _matches(frame: str, function: str, fragment: str) -> bool:
    parsed = FRAME.match(frame)
    if parsed is None:
        return False
    name = parsed["function"]  # py-spy names a method Class.method
    return fragment in parsed["file"] and (not function or name == function or name.endswith("." + function))


def shares(raw: Path) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(row, share of samples with a matching frame on the stack)]) from py-spy's raw output."""
    counts = [0] * len(PARTS)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        hits = int(number)
        total += hits
        frames = stack.split(";")
        for index, (_, function, fragment) in enumerate(PARTS):
            if any(_matches(frame, function, fragment) for frame in frames):
                counts[index] += hits
    return total, [(row, count / total if total else 0.0) for (row, _, _), count in zip(PARTS, counts, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default=str(REPO_ROOT), metavar="DIR[:FLAGS]", help="FLAGS as in load_test.py")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists() and shutil.which(py_spy) is None:
        parser.error("py-spy is not installed (pip install py-spy)")
    work = Path(tempfile.mkdtemp(prefix="featapp-profile-"))
    raw = work / "py-spy.txt"
    server = load_test.start_app("app", args.app, work)
    try:
        wave = subprocess.Popen(
            [sys.executable, "-m", "bench.load_test", "--client", "protocol", "--url", server.url,
             "--server-pid", str(server.pid), "--sessions", str(args.sessions), "--rounds", str(args.rounds),
             "--settle", "2", "--out", str(work / "wave.md")],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.pid), "--rate", "100", "--gil", "--nonblocking",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wave_output, _ = wave.communicate(timeout=900)
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
        spy.wait(timeout=60)
    finally:
        load_test.stop_server(server)
    if not raw.exists() or raw.stat().st_size == 0:
        print(
            f"py-spy wrote no samples (exit {spy.returncode}); on Linux it needs ptrace rights over the server",
            file=sys.stderr,
        )
        return 1
    total, rows = shares(raw)
    summary = [line for line in wave_output.splitlines() if line.startswith(("[", "RSS", "server CPU", "  "))]
    lines = [
        f"# Where a class's server CPU goes: py-spy during {args.sessions} protocol students",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu_name()}, {cpu_features()}). `python -m bench.profile_load "
        f"--sessions {args.sessions} --rounds {args.rounds}` (app: `{args.app if args.app != str(REPO_ROOT) else '.'}`): "
        f"`py-spy record --gil --rate 100` from the wave's start to its end; {total:,} samples of the thread "
        "holding the GIL. A sample counts for every row with a frame on its stack, so rows overlap; indented rows "
        "are parts of the row above.",
        "",
        "| where (a frame on the stack) | share of GIL samples |",
        "|---|---|",
        *(f"| {row.replace('  ', '&nbsp;&nbsp;')} | {share:.0%} |" for row, share in rows),
        "",
        "Functions on the stack in most samples:",
        "",
        "| function | on the stack | at the top |",
        "|---|---|---|",
        *(f"| `{frame[:110]}` | {inc:.0%} | {top:.0%} |" for frame, inc, top in top_functions(raw, 30)),
        "",
        "The wave (`load_test.py`'s summary):",
        "",
        "```",
        *summary,
        "```",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(text)
    os.replace(partial, args.out)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
