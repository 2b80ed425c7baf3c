"""Neuron statistics: hand-checked on a tiny model and a generated dataset, the cache's
validity checks, and the real model on a few real photos."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import featapp.stats.analysis as analysis
from featapp.cache import default_cache_dir
from featapp.data.dataset import Dataset, DatasetError
from featapp.engine.geometry import receptive_box
from featapp.engine.images import ImageError, InputSpec, prepare_image
from featapp.engine.model import load_model
from featapp.stats.analysis import NeuronStats, cache_path, load_cached, load_or_scan, scan
from tests.helpers.modelfactory import build_red_model

SIZE = 48


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(build_red_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx"), provider="cpu")


def make_dot_dataset(root: Path, per_class: int = 6, seed: int = 0) -> dict[str, dict]:
    """PNG photos whose red channel is dim noise (0..59) plus one bright red dot.

    Returns, per relative path, the dot's (row, col), its brightness and the red channel,
    so every statistic can be computed by hand.
    """
    rng = np.random.default_rng(seed)
    truth: dict[str, dict] = {}
    brightness = iter(rng.permutation(np.arange(100, 250, 3))[: 2 * per_class].tolist())
    for class_name in ("blobs", "plain"):
        folder = root / "train" / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            row, col = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE))
            value = next(brightness)
            image[row, col, 0] = value
            path = folder / f"{class_name}.{number}.png"
            Image.fromarray(image).save(path)
            truth[path.relative_to(root).as_posix()] = {"cell": (row, col), "value": value, "red": image[:, :, 0]}
    return truth


@pytest.fixture()
def dot_data(tmp_path):
    root = tmp_path / "dots"
    truth = make_dot_dataset(root)
    first = root / next(iter(truth))
    # The hand checks need lossless PNGs; if prepare_image cannot read them, say so
    # here rather than through empty statistics further down.
    prepare_image(first, InputSpec(SIZE, SIZE, 3))
    return Dataset(root), truth


def relative(stats: NeuronStats, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in stats.paths]


def test_scan_records_hand_computable_max_mean_and_position(tiny, dot_data):
    dataset, truth = dot_data
    calls = []
    stats = scan(tiny, dataset.images("train"), batch_size=5, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5, 12), (10, 12), (12, 12)]
    assert len(stats) == 12 and stats.class_names == ["blobs", "plain"]
    assert stats.image_classes == ["blobs"] * 6 + ["plain"] * 6
    assert stats.labels.tolist() == [0] * 6 + [1] * 6
    names = relative(stats, dataset.root)
    reds = np.stack([truth[n]["red"] for n in names]).astype(np.float64) / 255
    assert np.allclose(stats.values("red", "max")[:, 0], reds.max(axis=(1, 2)), atol=1e-6)
    assert np.allclose(stats.values("red", "mean")[:, 0], reds.mean(axis=(1, 2)), atol=1e-6)
    assert [tuple(c) for c in stats.max_cells("red")[:, 0]] == [truth[n]["cell"] for n in names]
    # 2x2 pooling: the max moves to cell (row // 2, col // 2).
    assert [tuple(c) for c in stats.max_cells("pool")[:, 0]] == [
        (truth[n]["cell"][0] // 2, truth[n]["cell"][1] // 2) for n in names
    ]
    # Vector layers keep the value; red_mean is the map's mean.
    assert np.allclose(stats.values("red_mean")[:, 0], reds.mean(axis=(1, 2)), atol=1e-6)
    assert np.allclose(stats.values("probs")[:, 1], reds.mean(axis=(1, 2)), atol=1e-6)
    assert stats.storage("red") == "spatial" and stats.storage("red_mean") == "vector"
    assert stats.storage("flat") == "top", "2,304 units is a wide layer"
    assert stats.storage("flat_copy") == "alias", "an Identity of flat is stored once"


def test_top_k_ranks_by_the_brightest_dot_with_its_receptive_box(tiny, dot_data):
    dataset, truth = dot_data
    stats = scan(tiny, dataset.images("train"), batch_size=4)
    ranked = sorted(truth, key=lambda n: -truth[n]["value"])
    hits = stats.top_k("red", 0, k=3)
    assert [h.path.relative_to(dataset.root).as_posix() for h in hits] == ranked[:3]
    assert [h.rank for h in hits] == [0, 1, 2]
    for hit in hits:
        found = truth[hit.path.relative_to(dataset.root).as_posix()]
        assert hit.value == pytest.approx(found["value"] / 255, abs=1e-6)
        assert hit.cell == found["cell"]
        row, col = found["cell"]
        assert hit.box == (row, col, row + 1, col + 1), "a 1x1 layer sees exactly its pixel"
        assert hit.class_name == hit.path.parent.name and hit.label == stats.class_names.index(hit.class_name)
    for hit in stats.top_k("pool", 0, k=12):
        row, col = truth[hit.path.relative_to(dataset.root).as_posix()]["cell"]
        top, left, bottom, right = hit.box
        assert (bottom - top, right - left) == (2, 2) and top <= row < bottom and left <= col < right
    # by="mean" ranks by the map's average instead.
    means = stats.values("red", "mean")[:, 0]
    assert [h.index for h in stats.top_k("red", 0, k=12, by="mean")] == np.argsort(-means, kind="stable").tolist()
    # k larger than the dataset gives every image once.
    assert len(stats.top_k("red", 0, k=50)) == 12


def test_wide_layer_keeps_each_units_top_images_across_batches(tiny, dot_data, monkeypatch):
    monkeypatch.setattr(analysis, "KEPT_PER_UNIT", 4)
    dataset, truth = dot_data
    stats = scan(tiny, dataset.images("train"), batch_size=3)  # 4 batches: the top-4 is merged 4 times
    names = relative(stats, dataset.root)
    for name in names[:4]:
        row, col = truth[name]["cell"]
        unit = row * SIZE + col
        column = np.array([truth[n]["red"][row, col] for n in names], np.float64) / 255
        expected = np.argsort(-column, kind="stable")[:4].tolist()
        for layer in ("flat", "flat_copy"):
            hits = stats.top_k(layer, unit, k=4)
            assert [h.index for h in hits] == expected
            assert [h.value for h in hits] == pytest.approx(column[expected].tolist(), abs=1e-6)
            assert hits[0].cell is None and hits[0].box is None
    with pytest.raises(ValueError, match="top 4"):
        stats.top_k("flat", 0, k=5)
    with pytest.raises(ValueError, match="top 4"):
        stats.values("flat")


def test_unknown_layer_channel_and_options_are_explained(tiny, dot_data):
    dataset, _ = dot_data
    stats = scan(tiny, dataset.images("train"))
    with pytest.raises(KeyError, match="no layer 'conv9'.*red, pool"):
        stats.top_k("conv9", 0)
    with pytest.raises(IndexError, match="1 channels, numbered 0 to 0"):
        stats.top_k("red", 1)
    with pytest.raises(IndexError, match="2304 units"):
        stats.top_k("flat", 2304)
    with pytest.raises(IndexError):
        stats.top_k("red", -1)
    with pytest.raises(ValueError, match="max, mean"):
        stats.top_k("red", 0, by="median")
    with pytest.raises(ValueError, match="at least 1"):
        stats.top_k("red", 0, k=0)
    with pytest.raises(TypeError):
        stats.top_k("red", "0")  # type: ignore[arg-type]


def test_unreadable_images_are_skipped_and_listed(tiny, dot_data):
    dataset, _ = dot_data
    broken = dataset.root / "train" / "plain" / "plain.99.png"
    broken.write_bytes(b"this is not a png")
    dataset = Dataset(dataset.root)
    stats = scan(tiny, dataset.images("train"), batch_size=4)
    assert len(stats) == 12
    assert [p for p, _ in stats.skipped] == [broken]
    assert broken not in stats.paths
    with pytest.raises(ImageError) as refusal:
        prepare_image(broken, tiny)
    assert stats.skipped[0][1] == str(refusal.value), "the student-readable reason is kept"


# -- the cache -------------------------------------------------------------------------------
def counting_progress():
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


def assert_same_stats(a: NeuronStats, b: NeuronStats) -> None:
    assert a.paths == b.paths and a.class_names == b.class_names
    assert np.array_equal(a.labels, b.labels)
    for layer in a.layer_names:
        assert a.storage(layer) == b.storage(layer)
        for channel in range(min(a.units(layer), 3)):
            assert a.top_k(layer, channel, k=5) == b.top_k(layer, channel, k=5)
        if a.storage(layer) in ("spatial", "vector"):
            assert np.array_equal(a.values(layer), b.values(layer))


def test_load_or_scan_scans_once_then_reads_the_cache(tiny, dot_data, tmp_path):
    dataset, _ = dot_data
    cache = tmp_path / "cache"
    assert load_cached(tiny, dataset, "train", cache) is None
    calls, progress = counting_progress()
    first = load_or_scan(tiny, dataset, "train", cache, progress=progress)
    assert calls and calls[-1] == (12, 12)
    files = sorted(p.name for p in cache.iterdir())
    assert files == [cache_path(tiny, dataset, "train", cache).name], "one file, no temporary leftovers"
    assert files[0].startswith(f"neurons-{tiny.sha256[:16]}-") and files[0].endswith("-train.npz")
    calls.clear()
    second = load_or_scan(tiny, Dataset(dataset.root), "train", cache, progress=progress)
    assert calls == [], "the second call reads the cache instead of scanning"
    assert second.dataset_fingerprint == dataset.fingerprint("train") and second.model_sha256 == tiny.sha256
    assert_same_stats(first, second)
    # The dataset folder itself was not written to.
    assert sorted(p.suffix for p in dataset.root.rglob("*") if p.is_file()) == [".png"] * 12


def test_cache_survives_the_dataset_moving(tiny, dot_data, tmp_path):
    dataset, _ = dot_data
    cache = tmp_path / "cache"
    stats = load_or_scan(tiny, dataset, "train", cache)
    moved = tmp_path / "moved"
    shutil.copytree(dataset.root, moved)
    moved_path = cache_path(tiny, Dataset(moved), "train", cache)
    shutil.copy(cache_path(tiny, dataset, "train", cache), moved_path)
    reread = load_cached(tiny, Dataset(moved), "train", cache)
    assert reread is not None, "paths are stored relative to the dataset, so a copy at another place matches"
    assert reread.paths == [moved / p.relative_to(dataset.root) for p in stats.paths]


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "not_a_zip"])
def test_a_damaged_cache_is_detected_and_rebuilt(tiny, dot_data, tmp_path, damage):
    dataset, _ = dot_data
    cache = tmp_path / "cache"
    good = load_or_scan(tiny, dataset, "train", cache)
    path = cache_path(tiny, dataset, "train", cache)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
    elif damage == "garble":
        for offset in range(len(data) // 3, len(data) // 3 + 64):
            data[offset] ^= 0x5A
        path.write_bytes(bytes(data))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x93NUMPY not really" * 100)
    with pytest.raises(analysis.StatsFileError):
        NeuronStats.load(path, relative_to=dataset.root)
    assert load_cached(tiny, dataset, "train", cache) is None
    calls, progress = counting_progress()
    rebuilt = load_or_scan(tiny, dataset, "train", cache, progress=progress)
    assert calls, "a damaged file is never trusted: the dataset was scanned again"
    assert_same_stats(good, rebuilt)
    assert load_cached(tiny, dataset, "train", cache) is not None, "and the file was replaced by a good one"


def test_a_changed_dataset_makes_the_cache_stale(tiny, dot_data, tmp_path):
    dataset, _ = dot_data
    cache = tmp_path / "cache"
    load_or_scan(tiny, dataset, "train", cache)
    # A new photo: the file list changes.
    extra = dataset.root / "train" / "blobs" / "blobs.50.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 255, np.uint8)).save(extra)
    changed = Dataset(dataset.root)
    assert load_cached(tiny, changed, "train", cache) is None
    calls, progress = counting_progress()
    stats = load_or_scan(tiny, changed, "train", cache, progress=progress)
    assert calls and len(stats) == 13 and extra in stats.paths
    assert stats.top_k("red", 0, k=1)[0].path == extra, "the all-white photo has the brightest red"
    # A photo replaced by another of a different size: same names, new fingerprint.
    load_or_scan(tiny, Dataset(dataset.root), "train", cache)
    size_before = extra.stat().st_size
    noise = np.random.default_rng(7).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(extra)
    assert extra.stat().st_size != size_before
    assert load_cached(tiny, Dataset(dataset.root), "train", cache) is None


def test_other_model_or_format_version_is_not_trusted(tiny, dot_data, tmp_path, monkeypatch):
    dataset, _ = dot_data
    cache = tmp_path / "cache"
    load_or_scan(tiny, dataset, "train", cache)
    path = cache_path(tiny, dataset, "train", cache)
    # The same file under another model's name (as if two models shared a hash prefix).
    other = load_model(build_red_model(tmp_path / "other.onnx", channels=1), provider="cpu")
    shutil.copy(path, cache_path(other, dataset, "train", cache))
    assert load_cached(other, dataset, "train", cache) is None
    monkeypatch.setattr(analysis, "FORMAT_VERSION", analysis.FORMAT_VERSION + 1)
    assert load_cached(tiny, dataset, "train", cache) is None


def test_splits_are_cached_separately_and_all_splits_together(tiny, tmp_path, dot_data):
    root = tmp_path / "two_splits"
    make_dot_dataset(root, per_class=2)
    shutil.copytree(root / "train", root / "test")
    dataset = Dataset(root)
    cache = tmp_path / "cache"
    everything = load_or_scan(tiny, dataset, None, cache)
    train = load_or_scan(tiny, dataset, "train", cache)
    assert len(everything) == 8 and len(train) == 4
    assert everything.split is None and train.split == "train"
    assert cache_path(tiny, dataset, None, cache) != cache_path(tiny, dataset, "train", cache)
    assert load_cached(tiny, dataset, None, cache) is not None


def test_the_cache_is_never_written_into_the_dataset(tiny, dot_data):
    dataset, _ = dot_data
    with pytest.raises(DatasetError, match="inside the dataset"):
        load_or_scan(tiny, dataset, "train", dataset.root / "cache")
    assert not (dataset.root / "cache").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("FEATAPP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "featapp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "featapp"


# -- the real model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def few_photos(tmp_path_factory, dataset):
    """4 cats and 4 dogs from the shared test split, copied into a temporary folder."""
    root = tmp_path_factory.mktemp("photos")
    for image in dataset.sample("test", per_class=4, seed=1):
        target = root / "test" / image.class_name / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    return Dataset(root)


def test_real_model_statistics_match_its_activations(model, few_photos, tmp_path):
    stats = load_or_scan(model, few_photos, "test", tmp_path / "cache")
    assert stats.layer_names == model.layer_names
    assert len(stats) == 8 and stats.class_names == ["cats", "dogs"]
    acts = model.activations([p for p in stats.paths])
    for layer in model.layers:
        if layer.is_spatial:
            flat = acts[layer.name].reshape(len(stats), layer.channels, -1)
            assert np.allclose(stats.values(layer.name, "max"), flat.max(axis=2), atol=1e-5)
            assert np.allclose(stats.values(layer.name, "mean"), flat.mean(axis=2), atol=1e-5)
            rows, cols = np.divmod(flat.argmax(axis=2), layer.output_shape[1])
            assert np.array_equal(stats.max_cells(layer.name), np.stack([rows, cols], axis=-1))
        elif stats.storage(layer.name) == "vector":
            assert np.allclose(stats.values(layer.name), acts[layer.name], atol=1e-5)
    # dropout is the identity at inference, so it is stored as flatten's twin.
    if "dropout" in stats.layer_names and "flatten" in stats.layer_names:
        assert stats.storage("dropout") == "alias"
    # Boxes come from the layer's receptive field.
    deepest = [layer for layer in model.layers if layer.is_spatial][-1]
    for hit in stats.top_k(deepest.name, 3, k=4):
        assert hit.box == receptive_box(
            deepest.receptive_field, *hit.cell, (model.input_spec.height, model.input_spec.width)
        )
        image_index = stats.paths.index(hit.path)
        assert hit.value == pytest.approx(float(acts[deepest.name][image_index, 3].max()), abs=1e-5)


# -- one scan per file at a time ---------------------------------------------------------------
class CountingModel:
    """A real model whose ``activations`` calls are counted, with a hook run before each."""

    def __init__(self, model, before=lambda: None) -> None:
        self._model, self._before, self.calls = model, before, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def activations(self, *args, **kwargs):
        self.calls += 1
        self._before()
        return self._model.activations(*args, **kwargs)


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory, dataset):
    """2 cats and 2 dogs in each of a train and a test split, real photos copied from the shared test split."""
    root = tmp_path_factory.mktemp("two_splits")
    for split, seed in (("train", 2), ("test", 3)):
        for image in dataset.sample("test", per_class=2, seed=seed):
            target = root / split / image.class_name / image.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(image.path, target)
    return Dataset(root)


def run_together(*jobs):
    results, errors = [None] * len(jobs), []

    def run(i):
        try:
            results[i] = jobs[i]()
        except Exception as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_two_callers_of_the_same_scan_share_one_run(tiny, two_splits, tmp_path):
    cache = tmp_path / "cache"
    second_waits = threading.Event()
    # The first scan's model holds on until the second caller has arrived, so they overlap.
    first = CountingModel(tiny, before=lambda: second_waits.wait(timeout=5))
    second = CountingModel(tiny)
    heard = []

    def second_caller():
        while not first.calls:  # the first scan is under way
            time.sleep(0.01)
        return load_or_scan(
            second, two_splits, "test", cache, batch_size=2, waiting=lambda *_: (heard.append(_), second_waits.set())
        )

    a, b = run_together(lambda: load_or_scan(first, two_splits, "test", cache, batch_size=2), second_caller)
    assert second_waits.is_set() and heard, "the second caller was never told it waits"
    assert first.calls == 2 and second.calls == 0  # 4 photos, 2 a batch: one scan in all
    assert_same_stats(a, b)
    assert len(a) == 4


def test_scans_of_different_splits_do_not_wait_on_each_other(tiny, two_splits, tmp_path):
    cache = tmp_path / "cache"
    test_ran = threading.Event()
    overlapped = []
    train = CountingModel(tiny, before=lambda: overlapped.append(test_ran.wait(timeout=10)))
    test = CountingModel(tiny, before=test_ran.set)
    a, b = run_together(
        lambda: load_or_scan(train, two_splits, "train", cache, batch_size=4),
        lambda: load_or_scan(test, two_splits, "test", cache, batch_size=4),
    )
    assert overlapped == [True]  # the test split ran while the train scan was in its model call
    assert train.calls == test.calls == 1
    assert len(a) == len(b) == 4 and a.split == "train" and b.split == "test"


def test_a_forced_scan_after_waiting_takes_the_fresh_result(tiny, two_splits, tmp_path):
    cache = tmp_path / "cache"
    load_or_scan(tiny, two_splits, "test", cache)
    running = analysis._running_scan(cache_path(tiny, two_splits, "test", cache))
    counted = CountingModel(tiny)
    with running.lock:
        waiter = threading.Thread(target=lambda: load_or_scan(counted, two_splits, "test", cache, force=True))
        waiter.start()
        time.sleep(0.3)
    waiter.join(timeout=30)
    assert counted.calls == 0


def test_a_scan_running_in_another_process_is_waited_for(tiny, two_splits, tmp_path):
    # flock locks conflict between two opens of the file even in one process, as between processes.
    cache = tmp_path / "cache"
    path = cache_path(tiny, two_splits, "train", cache)
    counted, heard, holding = CountingModel(tiny), [], threading.Event()

    def other_process():
        with analysis._file_lock(path, on_wait=lambda: None):
            holding.set()
            while not heard:
                time.sleep(0.01)
            analysis._scan_and_save(tiny, two_splits, "train", path, lambda *_: None, 32)

    def caller():
        holding.wait(timeout=10)
        return load_or_scan(counted, two_splits, "train", cache, waiting=lambda *numbers: heard.append(numbers))

    _, stats = run_together(other_process, caller)
    assert heard[0] == (0, 0) and counted.calls == 0 and len(stats) == 4
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # the lock file is gone
