"""How much memory the app's caches take: resident memory while more and more images are viewed.

    python -m bench.bench_app_memory [--images 48] [--out bench/results/app_memory.md]

Runs the real app in-process with ``streamlit.testing.v1.AppTest``: opens it, then for
each of ``--images`` different photos (generated, so every one is a new cache entry)
uploads it and opens its Feature map and Layer grid pages, which computes and caches
its activations. The resident set size (RSS) is recorded after each image. It should
grow by about one image's activations per image until the activation cache is full
(``activation_cache_images`` in ``featapp/app/caches.py``: a byte budget), then stay flat. Memory is
not a timing: this can run on a busy machine.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "app_memory.md")
    args = parser.parse_args(argv)

    import numpy as np
    import psutil
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from featapp.app.caches import activation_cache_images
    from featapp.app.chrome import PAGE_FILES
    from featapp.engine.metadata import activation_bytes
    from featapp.engine.model import load_model

    os.environ.setdefault("FEATAPP_PROVIDER", "cpu")
    model = load_model(provider="cpu")
    per_image = activation_bytes(model.layers)
    process = psutil.Process()
    rng = np.random.default_rng(0)

    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=120).run()
    start_rss = process.memory_info().rss
    samples = []
    for number in range(1, args.images + 1):
        pixels = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        at.switch_page(PAGE_FILES["gallery"]).run()
        at.file_uploader(key="gallery.upload").set_value((f"noise{number}.png", buffer.getvalue(), "image/png")).run()
        at.switch_page(PAGE_FILES["feature_map"]).run()
        at.switch_page(PAGE_FILES["layer_grid"]).run()
        assert not at.exception, [e.value for e in at.exception]
        samples.append((number, process.memory_info().rss))

    def mb(value: float) -> str:
        return f"{value / 1e6:.0f}"

    rows = [
        f"| {n} | {mb(rss)} | {mb(rss - start_rss)} |"
        for n, rss in samples
        if n in (1, 2, 4, 8, 16, 24, 32, 40, 48) or n == len(samples)
    ]
    kept = activation_cache_images(model)
    full = kept * per_image
    lines = [
        "# App memory while viewing more and more images (bench/bench_app_memory.py)",
        "",
        f"Model `{model.path.name}`: one image's activations are {per_image / 1e6:.1f} MB of float32; the "
        f"activation cache keeps {kept} images, at most {full / 1e6:.0f} MB.",
        "",
        f"Resident memory of the process (AppTest, in-process) with the app open: {mb(start_rss)} MB.",
        "",
        "| images viewed | RSS (MB) | growth since opening (MB) |",
        "|---|---|---|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
