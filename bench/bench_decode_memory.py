"""Peak memory of decoding large pictures, before and after counting a progressive JPEG's
coefficient buffers (issue 28), side by side in one run.

Each figure is one fresh Python process that reads the file, takes its memory high-water mark
(Linux's VmHWM), decodes the picture with ``prepare_image`` in 1 or 5 threads at once (five
students uploading it together) and reports how much the high-water mark grew. "Before" is
``featapp/engine/images.py`` at ``--before`` (fetched with ``git show``), "after" the working
tree's. Memory only; no timings.

    python bench/bench_decode_memory.py                 # writes bench/results/decode_memory.md

The pictures are made here, in their own processes, into a temporary folder, and removed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import cpu_name, memory_gib  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "decode_memory.md"

PICTURES = {
    "issue's progressive JPEG, 13,370 x 13,370, 4:4:4": (
        'Image.new("RGB", (13370, 13370)).save(PATH, "JPEG", progressive=True, quality=10, subsampling=0)'
    ),
    "largest accepted progressive JPEG, 6,680 x 6,680, 4:4:4": (
        'Image.new("RGB", (6680, 6680)).save(PATH, "JPEG", progressive=True, quality=10, subsampling=0)'
    ),
    "the same 13,370 x 13,370 as a baseline JPEG": (
        'Image.new("RGB", (13370, 13370)).save(PATH, "JPEG", quality=10, subsampling=0)'
    ),
    "40-megapixel RGBA PNG (6,000 x 6,600)": ('Image.new("RGBA", (6000, 6600), (200, 100, 0, 128)).save(PATH, "PNG")'),
}

_CHILD = """
import importlib.util, json, sys, threading
module_path, picture, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("images_under_test", module_path)
images = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = images  # dataclasses look their module up while the file runs
spec.loader.exec_module(images)

def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))

data = open(picture, "rb").read()
before = peak_mb()
outcomes = []

def decode():
    try:
        outcomes.append(images.prepare_image(data, images.InputSpec(150, 150, 3)).shape == (150, 150, 3))
    except images.ImageError as err:
        outcomes.append(str(err))

workers = [threading.Thread(target=decode) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps({"grew_mb": peak_mb() - before, "outcomes": outcomes}))
"""


def make_picture(folder: Path, name: str, recipe: str) -> Path:
    path = folder / f"{abs(hash(name))}.{'png' if 'PNG' in recipe else 'jpg'}"
    code = "from PIL import Image\n" + recipe.replace("PATH", repr(str(path)))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=900)
    return path


def measure(module: Path, picture: Path, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(module), str(picture), str(threads)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(result: dict) -> str:
    refused = [o for o in result["outcomes"] if isinstance(o, str)]
    what = f"refused ({len(refused)})" if refused else "decoded"
    return f"+{result['grew_mb']:,.0f} MB, {what}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="d0757cf", help="the commit whose images.py is 'before'")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as work:
        folder = Path(work)
        before = folder / "images_before.py"
        before.write_text(
            subprocess.run(
                ["git", "show", f"{args.before}:featapp/engine/images.py"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        after = REPO_ROOT / "featapp" / "engine" / "images.py"
        rows = []
        refusal = ""
        for name, recipe in PICTURES.items():
            picture = make_picture(folder, name, recipe)
            size_mb = picture.stat().st_size / 1e6
            figures = []
            for module in (before, after):
                for threads in (1, 5):
                    result = measure(module, picture, threads)
                    figures.append(cell(result))
                    refusal = refusal or next((o for o in result["outcomes"] if isinstance(o, str)), "")
                    print(name, module.name, threads, result, flush=True)
            rows.append(f"| {name} ({size_mb:.1f} MB file) | " + " | ".join(figures) + " |")
            picture.unlink()
    memory = memory_gib()
    text = (
        textwrap.dedent(f"""\
        # Decode memory: progressive JPEGs (issue 28)

        Machine: {cpu_name()}, {len(__import__("os").sched_getaffinity(0))} CPUs, \
{f"{memory:.0f} GiB" if memory else "unknown"} memory, Python {sys.version.split()[0]}.
        Made by `python bench/bench_decode_memory.py`: each figure is one fresh process's growth of
        its memory high-water mark (VmHWM) while `prepare_image` decodes the file, in 1 thread or
        in 5 threads at once (five students uploading it together), in MB of 2**20 bytes. Before: `images.py` at
        `{args.before}`; after: this branch. Target: one accepted upload at most +300 MB, five at
        once at most +600 MB.

        | picture | before, 1 | before, 5 at once | after, 1 | after, 5 at once |
        |---|---|---|---|---|
        """)
        + "\n".join(rows)
        + textwrap.dedent(f"""

        libjpeg keeps the DCT coefficients of every block of a progressive JPEG's full-size picture
        until its last scan, 2 bytes per pixel per full-resolution component, even at 1/8 draft
        scale. After: those buffers are counted from the header; a picture whose buffers pass
        `MAX_COEFFICIENT_BYTES` (256 MiB) is refused before decoding, one under it waits in the same
        one-at-a-time queue as other large decodes. A transparent picture is box-reduced a band of
rows at a time (Pillow's `reduce` premultiplies a copy of the whole picture first). The refusal reads:

        > {refusal}
        """)
    )
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
