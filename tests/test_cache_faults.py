"""Faults around featapp's cache folder (issue 28): a read-only or full folder is found before
the work starts and the message says where to point FEATAPP_CACHE_DIR; damaged files of every
kind are refused with a message (not a MemoryError, not "not scanned yet") and a scan replaces
them; temporary files a killed write left are removed at start; written files follow the umask."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import featapp.stats.analysis as analysis
from featapp.cache import (
    CACHE_DIR_ENV,
    CacheFileError,
    CacheFolderError,
    atomic_write,
    atomic_write_bytes,
    check_writable,
    read_npz,
    remove_stale_temporaries,
)
from featapp.data.dataset import Dataset
from featapp.stats.analysis import NeuronStats, cache_damage, cache_path, load_cached, load_or_scan
from tests.app.test_classes_app import env, six_photos  # noqa: F401 - fixtures
from tests.stats.test_analysis import dot_data, tiny  # noqa: F401 - fixtures

# -- the cache folder ------------------------------------------------------------------------------------------


def refuse_writes(monkeypatch, code: int) -> None:
    """Every new file in any folder fails as on a read-only (EROFS) or full (ENOSPC) disk
    (the tests run as root, for whom a 0555 folder is still writable)."""

    def mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code, why", [(errno.EROFS, "read-only"), (errno.ENOSPC, "full")])
def test_an_unwritable_folder_is_named_with_the_way_out(tmp_path, monkeypatch, code, why):
    refuse_writes(monkeypatch, code)
    with pytest.raises(CacheFolderError) as caught:
        check_writable(tmp_path / "cache")
    message = str(caught.value)
    assert why in message and str(tmp_path / "cache") in message and CACHE_DIR_ENV in message


def test_a_folder_without_the_space_a_job_needs_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    assert check_writable(tmp_path, need_bytes=10**5) == tmp_path
    with pytest.raises(CacheFolderError, match=f"1 MB free.*{CACHE_DIR_ENV}"):
        check_writable(tmp_path, need_bytes=10**8)
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind


def test_a_scan_finds_an_unwritable_folder_before_it_scans(tiny, dot_data, tmp_path, monkeypatch):  # noqa: F811
    dataset, _ = dot_data
    monkeypatch.setattr(analysis, "scan", lambda *a, **k: pytest.fail("the scan started"))
    refuse_writes(monkeypatch, errno.EROFS)
    with pytest.raises(CacheFolderError, match=CACHE_DIR_ENV):
        load_or_scan(tiny, dataset, "train", tmp_path / "cache")


def test_the_cli_scan_says_where_to_point_the_cache(tiny, dot_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    from featapp.cli import main

    dataset, _ = dot_data
    monkeypatch.setattr(analysis, "scan", lambda *a, **k: pytest.fail("the scan started"))
    refuse_writes(monkeypatch, errno.EROFS)
    code = main(["scan", str(dataset.root), "--model", str(tiny.path), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 1 and CACHE_DIR_ENV in err and "bug" not in err


# -- stale temporary files and file modes --------------------------------------------------------------------------


def test_stale_temporary_files_are_removed_and_nothing_else(tmp_path):
    old = time.time() - 3600
    stale = tmp_path / "featurevis" / ".channel3.npz.ab_12cd9.tmp"
    fresh = tmp_path / ".neurons.npz.zz99yy88.tmp"
    other = tmp_path / ".notes.tmp"  # not the pattern featapp's writes use
    kept = tmp_path / "neurons.npz"
    stale.parent.mkdir()
    for path in (stale, fresh, other, kept):
        path.write_bytes(b"x" * 100)
    for path in (stale, other, kept):
        os.utime(path, (old, old))
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists() and other.exists() and kept.exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        target = atomic_write_bytes(tmp_path / "a.bin", b"hi")
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == mode


# -- damaged files -------------------------------------------------------------------------------------------------


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, parts: dict[str, bytes], deflated: frozenset[str] = frozenset()) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED)


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def huge_header() -> bytes:
    """An .npy header declaring 10**12 float32 values, followed by a few bytes."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    return out.getvalue() + b"\0" * 64


def test_read_npz_reads_what_featapp_writes(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.asfortranarray(np.eye(3)), "e": np.zeros(0)}
    atomic_write(tmp_path / "x.npz", lambda handle: np.savez(handle, **arrays))
    back = read_npz(tmp_path / "x.npz")
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


@pytest.mark.parametrize("damage", ["huge header", "zip bomb", "object array", "not an array", "short member"])
def test_read_npz_refuses_before_allocating(tmp_path, damage):
    path = tmp_path / "x.npz"
    parts = {"a.npy": npy(np.zeros(4, np.float32))}
    if damage == "huge header":
        parts["b.npy"] = huge_header()
    elif damage == "zip bomb":
        parts["b.npy"] = npy(np.zeros(50_000_000, np.uint8))  # 50 MB of zeros deflate to about 50 KB
    elif damage == "object array":
        parts["b.npy"] = npy(np.array([None, 1], dtype=object))
    elif damage == "not an array":
        parts["b.txt"] = b"hello"
    else:
        parts["b.npy"] = npy(np.zeros(100, np.float64))[:-8]
    write_zip(path, parts, deflated=frozenset({"b.npy"}) if damage == "zip bomb" else frozenset())
    with pytest.raises(CacheFileError, match="is damaged"):
        read_npz(path)


def damage_scan(path: Path, damage: str) -> None:
    parts = members(path)
    if damage == "huge header":
        parts["labels.npy"] = huge_header()
    elif damage == "zip bomb":
        parts["junk.npy"] = npy(np.zeros(50_000_000, np.uint8))
    elif damage in ("nan", "infinity"):
        name = next(n for n in parts if n.endswith(".max.npy") or n.endswith(".values.npy"))
        array = np.load(io.BytesIO(parts[name])).copy()
        array.flat[0] = np.nan if damage == "nan" else np.inf
        parts[name] = npy(array)
    else:
        meta = json.loads(np.load(io.BytesIO(parts["meta.npy"])).tobytes())
        meta["paths"][0] = {"outside": "../../../../etc/passwd", "absolute": "/etc/passwd"}[damage]
        parts["meta.npy"] = npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    write_zip(path, parts, deflated=frozenset({"junk.npy"}))


@pytest.mark.parametrize("damage", ["huge header", "zip bomb", "nan", "infinity", "outside", "absolute"])
def test_a_damaged_scan_is_refused_with_a_reason_and_rebuilt(tiny, dot_data, tmp_path, damage):  # noqa: F811
    dataset, _ = dot_data
    cache = tmp_path / "cache"
    load_or_scan(tiny, dataset, "train", cache)
    path = cache_path(tiny, dataset, "train", cache)
    damage_scan(path, damage)
    with pytest.raises(analysis.StatsFileError):
        NeuronStats.load(path, relative_to=dataset.root)
    assert load_cached(tiny, dataset, "train", cache) is None
    reason = cache_damage(tiny, dataset, "train", cache)
    assert reason and str(path) in reason
    load_or_scan(tiny, dataset, "train", cache)  # scanned again, and the file replaced
    assert cache_damage(tiny, dataset, "train", cache) is None
    assert load_cached(tiny, Dataset(dataset.root), "train", cache) is not None


def test_the_cli_says_what_is_wrong_with_a_damaged_scan(tiny, dot_data, tmp_path, capsys):  # noqa: F811
    from featapp.cli import main

    dataset, _ = dot_data
    cache = tmp_path / "cache"
    load_or_scan(tiny, dataset, "train", cache)
    damage_scan(cache_path(tiny, dataset, "train", cache), "huge header")
    assert (
        main(["scan", str(dataset.root), "--model", str(tiny.path), "--split", "train", "--cache-dir", str(cache)]) == 0
    )
    err = capsys.readouterr().err
    assert "is damaged" in err and "bug" not in err


# -- the pages ------------------------------------------------------------------------------------------------------


def test_the_classes_page_says_a_scan_is_damaged_and_offers_to_scan_again(env, model, six_photos):  # noqa: F811
    from tests.helpers.apptest import main_text, open_app

    path = cache_path(model, Dataset(six_photos), "test", env)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not a scan")
    at = open_app("classes")
    assert not at.exception
    assert "cannot be used" in " ".join(w.value for w in at.warning)
    assert "have not been scanned" not in main_text(at)
    next(b for b in at.button if b.label.startswith("Scan the 6 photos")).click().run()
    assert not at.exception
    assert cache_damage(model, Dataset(six_photos), "test", env) is None


def test_the_classes_page_finds_an_unwritable_cache_before_scanning(env, model, six_photos, monkeypatch, tmp_path):  # noqa: F811
    from tests.helpers.apptest import open_app

    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))  # a folder inside a file cannot exist
    monkeypatch.setattr(analysis, "scan", lambda *a, **k: pytest.fail("the scan started"))
    at = open_app("classes")
    next(b for b in at.button if b.label.startswith("Scan the 6 photos")).click().run()
    assert not at.exception
    assert CACHE_DIR_ENV in " ".join(e.value for e in at.error)


def test_the_cli_removes_stale_temporaries_when_it_starts(tmp_path, monkeypatch, capsys):
    from featapp.cli import main

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    stale = tmp_path / ".neurons-x.npz.k1ll3d00.tmp"
    stale.write_bytes(b"half a scan")
    os.utime(stale, (time.time() - 3600,) * 2)
    assert main(["info"]) == 0
    assert not stale.exists()


def test_optimise_a_picture_finds_an_unwritable_cache_before_the_work(tmp_path, monkeypatch):
    from featapp.engine.model import load_model
    from featapp.explain import featurevis
    from featapp.explain.gradients import load_gradients
    from tests.helpers.appmodels import COMMITTED_MODEL

    grads = load_gradients(load_model(COMMITTED_MODEL, provider="cpu"))
    monkeypatch.setattr(featurevis, "visualize", lambda *a, **k: pytest.fail("the optimisation started"))
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(CacheFolderError, match=CACHE_DIR_ENV):
        featurevis.channel_picture(grads, "conv2d", 0, cache_dir=blocker / "cache")
    with pytest.raises(CacheFolderError, match=CACHE_DIR_ENV):
        featurevis.layer_pictures(grads, "conv2d", cache_dir=blocker / "cache")


@pytest.mark.parametrize("damage", ["huge header", "nan", "zip bomb"])
def test_damaged_projection_and_picture_caches_are_computed_again(tmp_path, damage):
    from featapp.explain import featurevis
    from featapp.stats import projection

    expected = {"format": projection.FORMAT_VERSION, "images": 3, "layer": "dense", "method": "pca"}
    coords = np.zeros((3, 2), np.float32)
    pictures = {
        "channels": np.arange(2),
        "images": np.zeros((2, 8, 8, 3), np.uint8),
        "activations": np.ones(2, np.float32),
        "start_activations": np.zeros(2, np.float32),
    }
    meta = np.frombuffer(json.dumps(expected).encode(), np.uint8)
    good = {"projection": {"coords": coords, "meta": meta}, "pictures": pictures}
    for name, arrays in good.items():
        atomic_write(tmp_path / f"{name}.npz", lambda handle, arrays=arrays: np.savez(handle, **arrays))
    assert projection._load(tmp_path / "projection.npz", expected) is not None
    assert featurevis._read_cached(tmp_path / "pictures.npz") is not None
    for name, target in (("projection", "coords.npy"), ("pictures", "activations.npy")):
        path = tmp_path / f"{name}.npz"
        parts = members(path)
        if damage == "huge header":
            parts[target] = huge_header()
        elif damage == "nan":
            parts[target] = npy(np.full_like(np.load(io.BytesIO(parts[target])), np.nan))
        else:
            parts["junk.npy"] = npy(np.zeros(50_000_000, np.uint8))
        write_zip(path, parts, deflated=frozenset({"junk.npy"}))
    assert projection._load(tmp_path / "projection.npz", expected) is None
    assert featurevis._read_cached(tmp_path / "pictures.npz") is None
