"""What the photo download and the trained-on marks cost, side by side in one run.

1. The Gallery's trained-on marks per rerun: hashing its 20 photos the first time against
   the cached lookups of every later rerun (featapp.data.provenance caches by path, mtime, size).
2. The broken-photo check of the ``microsoft`` source (featapp.data.download._image_check, a
   prepare_image at 32 x 32) per photo, against reading the same bytes only; extrapolated
   to the archive's 25,000 photos.
3. The CRC pass and extraction of a local ``tf-filtered``-shaped archive made from the
   course photos (3,000 members), against copying the same bytes.

Run:  /work/with_training_paused.sh .venv/bin/python -m bench.bench_photos
Writes bench/results/photos.md.
"""

from __future__ import annotations

import io
import platform
import shutil
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

from featapp.data import download as dl
from featapp.data.dataset import Dataset
from featapp.data.provenance import _sha256_cached, file_sha256, trained_on

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "cats_vs_dogs"


def timed(function, repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    data = Dataset(DATA)
    seen = trained_on(ROOT / "models" / "cats_dogs_small.onnx")
    lines = [f"# Photos: download checks and trained-on marks ({platform.processor() or platform.machine()})", ""]

    sample = data.sample("test", per_class=10, seed=0)

    def cold() -> None:
        _sha256_cached.cache_clear()
        [file_sha256(item.path) in seen for item in sample]

    def warm() -> None:
        [file_sha256(item.path) in seen for item in sample]

    cold_s, warm_s = timed(cold, 9), timed(warm, 9)
    lines += [
        "## Trained-on marks for the gallery's 20 photos",
        "",
        "| | median of 9 |",
        "|---|---|",
        f"| first rerun (hash 20 files) | {cold_s * 1e3:.2f} ms |",
        f"| later reruns (cached by path, mtime, size) | {warm_s * 1e3:.3f} ms |",
        f"| ratio | {cold_s / warm_s:.0f}x |",
        "",
    ]

    photos = [image.path for image in data.images("train")[:300]]
    blobs = [path.read_bytes() for path in photos]
    check = dl._image_check()
    check_s = timed(lambda: [check(blob) for blob in blobs], 3)
    read_s = timed(lambda: [path.read_bytes() for path in photos], 3)
    lines += [
        "## Broken-photo check of the microsoft source (300 course photos)",
        "",
        f"- decode check: {check_s / len(blobs) * 1e3:.2f} ms a photo; reading the file only: "
        f"{read_s / len(blobs) * 1e3:.3f} ms ({check_s / read_s:.0f}x)",
        f"- for 25,000 photos: about {check_s / len(blobs) * 25_000:.0f} s of decode checks",
        "",
    ]

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        members = {}
        for split, per_class in (("train", 1000), ("validation", 500)):
            for image in data.sample(split, per_class=per_class, seed=0):
                members[f"cats_and_dogs_filtered/{split}/{image.class_name}/{image.name}"] = image.path.read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)
        archive = work_dir / "filtered.zip"
        archive.write_bytes(buffer.getvalue())
        source = dl.SOURCES["tf-filtered"].with_(size=archive.stat().st_size)

        def unpack() -> None:
            dest = work_dir / "photos"
            dl.download_photos(source, dest, archive=archive, replace=True)

        def copy() -> None:
            dest = work_dir / "copy"
            shutil.rmtree(dest, ignore_errors=True)
            for name, blob in members.items():
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)

        unpack_s, copy_s = timed(unpack, 3), timed(copy, 3)
        lines += [
            f"## Checking and extracting a tf-filtered-shaped archive ({len(members):,} photos, "
            f"{archive.stat().st_size / 1e6:.0f} MB)",
            "",
            f"- download_photos(archive=...): {unpack_s:.2f} s (size, every CRC, counts, names, then extract "
            f"atomically); writing the same files directly: {copy_s:.2f} s ({unpack_s / copy_s:.1f}x)",
            "",
        ]
    out = ROOT / "bench" / "results" / "photos.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
