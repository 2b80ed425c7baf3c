"""The app never trusts a damaged or out-of-date neuron-statistics file (AppTest).

``tests/stats/test_analysis.py`` checks the library: damaged files (cut off, garbled, empty, not a
zip), another model, another format version and a changed dataset are detected, and
``load_or_scan`` scans again. Here the same happens through the app's "One neuron, many
images" page: it offers a new scan instead of ranking from a bad file, and the scan
replaces the file with a good one.
"""

from __future__ import annotations

import shutil

import pytest

from featapp.data.dataset import Dataset
from featapp.engine.model import load_model
from featapp.stats.analysis import NeuronStats, cache_path
from tests.helpers.appmodels import COMMITTED_MODEL
from tests.helpers.apptest import captions, main_text, open_app


@pytest.fixture
def small_dataset(app_env, monkeypatch, dataset):
    """Six test photos, linked (not copied) into a dataset folder of their own."""
    root = app_env / "small"
    for item in dataset.sample("test", per_class=3, seed=5):
        target = root / "test" / item.class_name / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(item.path)
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(root))
    return root


def ranked(at) -> list[str]:
    return [c for c in captions(at) if c.startswith("#")]


def scan_in_the_app(at, count: int, notice: str = "have not been scanned") -> None:
    at.radio(key="neuron.source").set_value("dataset").run()
    assert notice in main_text(at) + " ".join(w.value for w in at.warning)
    # The page counts the photos of its cached listing (kept 10 minutes), which may not
    # have the newest file yet; the scan itself always lists the folder again.
    next(b for b in at.button if b.label.startswith("Scan the ")).click().run()
    assert not at.exception
    assert len(ranked(at)) == count


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut-off", "garbled", "another-model"])
def test_a_bad_statistics_file_is_scanned_again(app_env, small_dataset, damage):
    path = cache_path(load_model(COMMITTED_MODEL, provider="cpu"), Dataset(small_dataset), "test", app_env / "cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    at = open_app("neuron")
    scan_in_the_app(at, 6)
    good = path.read_bytes()
    if damage == "cut-off":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbled":
        middle = len(good) // 2
        path.write_bytes(good[:middle] + bytes(b ^ 0x5A for b in good[middle : middle + 64]) + good[middle + 64 :])
    else:  # a file that is fine, but for another model: copied over from a colleague's cache
        stats = NeuronStats.load(path, relative_to=small_dataset)
        stats.model_sha256 = "0" * 64
        stats.save(path, relative_to=small_dataset)
    at = open_app("neuron")  # a new visit: the file is looked at again
    # Not trusted: the page says a damaged file is damaged (a stale one is simply not
    # scanned yet), offers a new scan, and the scan works.
    scan_in_the_app(at, 6, "have not been scanned" if damage == "another-model" else "cannot be used")
    assert NeuronStats.load(path, relative_to=small_dataset).model_sha256 == load_model(COMMITTED_MODEL).sha256


@pytest.mark.slow
def test_a_changed_dataset_is_scanned_again(app_env, small_dataset, dataset):
    at = open_app("neuron")
    scan_in_the_app(at, 6)
    extra = dataset.sample("test", per_class=4, seed=5)[-1]  # a seventh photo arrives
    target = small_dataset / "test" / extra.class_name / f"new-{extra.name}"
    shutil.copyfile(extra.path, target)
    at = open_app("neuron")
    scan_in_the_app(at, 7)


def test_an_unwritable_cache_is_found_before_the_neuron_pages_scan(app_env, small_dataset, monkeypatch):
    import featapp.stats.analysis as analysis

    blocker = app_env / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(blocker / "cache"))  # a folder inside a file cannot exist
    monkeypatch.setattr(analysis, "scan", lambda *a, **k: pytest.fail("the scan started"))
    at = open_app("neuron")
    at.radio(key="neuron.source").set_value("dataset").run()
    next(b for b in at.button if b.label.startswith("Scan the ")).click().run()
    assert not at.exception
    assert "FEATAPP_CACHE_DIR" in " ".join(e.value for e in at.error)
    assert not ranked(at)
