"""Benchmark the class-level views: ranking a layer, the projection, and the map in the app and a browser.

    /work/with_training_paused.sh python -m bench.bench_classes --cache-dir /tmp/featapp-classes-cache \\
        [--data-dir D] [--split test] [--out bench/results/classes.md]

Targets from issue 18, all from the cached scan (scanned first if it is not there):

* ranking a layer (:func:`featapp.stats.classes.layer_separation`) < 100 ms;
* the projection (PCA by SVD) computed once < 10 s for 4,000 photos: timed on the
  scan's dense table repeated to 4,000 rows with a little noise (the SVD's cost depends
  on the table's shape, not on which photos it holds), beside the scanned rows alone;
* the 2-D map of 1,000 photos drawn < 1 s warm: the map tab's script run in AppTest
  (the server's side), and in headless Chromium from the tab click to the 1,000 points
  in the page's SVG, first (cold: projection and thumbnails computed) and again (warm).

Ratios are measured side by side: the rank-sum AUC beside the pairwise definition it
replaces, warm beside cold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_analysis import machine, ms, timed
from featapp.data.dataset import Dataset, resolve_data_dir
from featapp.engine.model import load_model
from featapp.stats import classes, projection
from featapp.stats.analysis import load_or_scan

REPO_ROOT = Path(__file__).resolve().parent.parent

ROWS = 4000


def pairwise_auc(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    ones, zeros = values[positive], values[~positive]
    out = np.empty(values.shape[1])
    for c in range(values.shape[1]):
        a, b = ones[:, c][:, None], zeros[:, c][None, :]
        out[c] = (a > b).mean() + 0.5 * (a == b).mean()
    return out


def bench_ranking(stats, repeats: int) -> list[str]:
    lines = [
        f"## Ranking a layer from the cached scan ({len(stats)} photos)",
        "",
        "| layer | channels | rank-sum AUC + d (median) | pairwise definition | ratio | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    positive = stats.labels == len(stats.class_names) - 1
    for name in stats.layer_names:
        try:
            values = stats.values(name)
        except ValueError:
            continue
        fast = statistics.median(timed(lambda n=name: classes.layer_separation(stats, n), repeats))
        slow = statistics.median(timed(lambda v=values: pairwise_auc(v, positive), 1))
        assert np.allclose(classes.layer_separation(stats, name).auc, pairwise_auc(values, positive))
        lines.append(
            f"| {name} | {values.shape[1]} | {ms(fast)} | {ms(slow)} | {slow / fast:.0f}x | "
            f"< 100 ms: {'met' if fast < 0.1 else 'MISSED'} |"
        )
    return lines + [""]


def bench_projection(stats) -> list[str]:
    dense = np.asarray(stats.values("dense"), dtype=np.float64)
    rng = np.random.default_rng(0)
    repeats = -(-ROWS // len(dense))
    big = np.tile(dense, (repeats, 1))[:ROWS] + rng.normal(0, 1e-3, size=(ROWS, dense.shape[1]))
    small_s = statistics.median(timed(lambda: projection.fit_pca(dense), 3))
    big_s = statistics.median(timed(lambda: projection.fit_pca(big), 3))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        projection.load_or_fit(stats, "dense", cache_dir=Path(folder))
        fit_and_save = time.perf_counter() - started
        load_s = statistics.median(timed(lambda: projection.load_or_fit(stats, "dense", cache_dir=Path(folder)), 5))
    single = _single_thread_fit(big)
    fitted = projection.fit_pca(dense)
    one = statistics.median(timed(lambda: fitted.place(dense[:1]), 50))
    return [
        "## The projection (PCA by numpy SVD of the dense layer's 512 values)",
        "",
        "| table | median | target |",
        "|---|---:|---|",
        f"| {len(dense)} scanned photos x 512 | {ms(small_s)} | |",
        f"| {ROWS} rows x 512 (the scan repeated, plus noise) | {ms(big_s)} | < 10 s: {'met' if big_s < 10 else 'MISSED'} |",
        f"| {ROWS} rows x 512, BLAS on one thread (a subprocess with OPENBLAS_NUM_THREADS=1) | {ms(single)} "
        f"({big_s / single:.1f}x faster than the default threads on this busy machine) | |",
        f"| {len(dense)} photos: fit and write the cache file | {ms(fit_and_save)} | |",
        f"| {len(dense)} photos: read the cache file again | {ms(load_s)} ({fit_and_save / load_s:.0f}x faster) | |",
        f"| one new photo placed on the fitted map (a 512 x 2 product) | {one * 1e6:.0f} us | |",
        "",
    ]


def _single_thread_fit(table: np.ndarray) -> float:
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.npy"
        np.save(path, table)
        code = (
            "import sys, time, numpy as np; sys.path.insert(0, sys.argv[2]); from featapp.stats.projection import fit_pca; "
            "t = np.load(sys.argv[1]); fit_pca(t); s = time.perf_counter(); [fit_pca(t) for _ in range(3)]; "
            "print((time.perf_counter() - s) / 3)"
        )
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        result = subprocess.run(
            [sys.executable, "-c", code, str(path), str(REPO_ROOT)], env=env, capture_output=True, text=True, check=True
        )
        return float(result.stdout.strip())


def bench_apptest(data_dir: Path, split: str, cache_dir: Path) -> list[str]:
    from streamlit.testing.v1 import AppTest

    from featapp.app.chrome import PAGE_FILES
    from featapp.app.view import CLASSES_TAB, CLASSES_TABS, SCAN_SPLIT

    os.environ.update(
        FEATAPP_DATA_DIR=str(data_dir),
        FEATAPP_CACHE_DIR=str(cache_dir),
        FEATAPP_PROVIDER="cpu",
        FEATAPP_SNAPSHOTS=str(cache_dir / "no-snapshots"),
    )
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=300).run()
    at.session_state[SCAN_SPLIT] = split
    at.switch_page(PAGE_FILES["classes"]).run()
    rows = [
        "## The page's script (AppTest: the server's side of a rerun)",
        "",
        "| tab | first run | warm rerun (median of 5) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in CLASSES_TABS:
        at.session_state[CLASSES_TAB] = name
        started = time.perf_counter()
        at.run()
        first = time.perf_counter() - started
        assert not at.exception, [e.value for e in at.exception]
        warm = statistics.median(timed(at.run, 5))
        rows.append(f"| {name[2:]} | {ms(first)} | {ms(warm)} | {first / warm:.1f}x |")
    return rows + [""]


def bench_browser(data_dir: Path, split: str, cache_dir: Path, count: int) -> list[str]:
    from playwright.sync_api import sync_playwright

    from tests.helpers.browsing import launch_chromium, server_env, streamlit_server

    env = server_env(
        FEATAPP_DATA_DIR=str(data_dir), FEATAPP_CACHE_DIR=str(cache_dir), FEATAPP_SNAPSHOTS=str(cache_dir / "none")
    )
    times = []
    with (
        tempfile.TemporaryDirectory() as folder,
        streamlit_server(Path(folder) / "server.log", env) as url,
        sync_playwright() as pw,
    ):
        browser = launch_chromium(pw)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.goto(url + "/classes")
        page.get_by_text("its top photos of each class").first.wait_for(timeout=300_000)
        points = page.locator('[data-testid="stVegaLiteChart"] svg g.mark-symbol').first.locator("path")
        for _ in range(4):
            page.get_by_role("tab", name="Health").click()
            page.get_by_text("How much of each layer is alive").first.wait_for(timeout=300_000)
            started = time.perf_counter()
            page.get_by_role("tab", name="Map of the feature space").click()
            deadline = time.perf_counter() + 300
            while points.count() < count and time.perf_counter() < deadline:
                page.wait_for_timeout(20)
            page.get_by_text("photos nearest to the current image").first.wait_for(timeout=300_000)
            times.append(time.perf_counter() - started)
        browser.close()
    warm = statistics.median(times[1:])
    return [
        f"## The map of {count} photos in headless Chromium (tab click to every point drawn, and the neighbours)",
        "",
        "| | time | target |",
        "|---|---:|---|",
        f"| first time (computes or loads the projection, makes {count} thumbnails) | {ms(times[0])} | |",
        f"| warm (median of {len(times) - 1}) | {ms(warm)} | < 1 s: {'met' if warm < 1 else 'MISSED'} |",
        f"| ratio first / warm | {times[0] / warm:.1f}x | |",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--cache-dir", type=Path, required=True, help="where the scan is (or will be) cached")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "classes.md")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    data_dir = args.data_dir or resolve_data_dir()
    model = load_model(provider="cpu")
    started = time.perf_counter()
    stats = load_or_scan(model, Dataset(data_dir), args.split, args.cache_dir)
    loaded = time.perf_counter() - started
    lines = [
        "# Class-level views (issue 18)",
        "",
        *machine(),
        f"- Scan of {len(stats)} photos ({args.split}) loaded in {ms(loaded)}",
        "",
    ]
    lines += bench_ranking(stats, args.repeats)
    lines += bench_projection(stats)
    lines += bench_apptest(data_dir, args.split, args.cache_dir)
    if not args.no_browser:
        lines += bench_browser(data_dir, args.split, args.cache_dir, len(stats))
    report = "\n".join(lines)
    print(report)
    from featapp.cache import atomic_write_bytes

    atomic_write_bytes(args.out, (report + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
