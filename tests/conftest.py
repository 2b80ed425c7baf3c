"""Shared fixtures: the real committed model and the real shared photos, and the app's
environment for AppTest runs (the helpers that drive the app are in ``tests/helpers/apptest.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEST_DATA = REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs"


def _data_dir() -> Path:
    return Path(os.environ.get("FEATAPP_DATA_DIR") or DEFAULT_TEST_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared cats-vs-dogs photos (read-only). Tests never write into it."""
    path = _data_dir()
    if not (path / "test").is_dir():
        pytest.fail(f"The test photos are missing at {path}; set FEATAPP_DATA_DIR to the cats_vs_dogs folder.")
    return path


@pytest.fixture(scope="session")
def dataset(data_dir):
    from featapp.data.dataset import Dataset

    return Dataset(data_dir)


@pytest.fixture(scope="session")
def model():
    """The committed model, in ONNX Runtime on the CPU (one session for the whole run)."""
    from featapp.engine.model import load_model

    return load_model(REPO_ROOT / "models" / "cats_dogs_small.onnx", provider="cpu")


@pytest.fixture(scope="session")
def cat_photo(dataset):
    return dataset.images("test")[0].path


@pytest.fixture(scope="session")
def dog_photo(dataset):
    return [image for image in dataset.images("test") if image.class_name == "dogs"][0].path


@pytest.fixture(autouse=True)
def _no_downloaded_photos(monkeypatch, tmp_path_factory):
    """Photos a user downloaded on this machine (featapp.data.download) never leak into a test."""
    monkeypatch.setenv("FEATAPP_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))


@pytest.fixture
def app_env(monkeypatch, tmp_path, data_dir):
    """For an AppTest run: the shared photos, a private cache folder, no snapshots and the
    committed model on the CPU (servers in a subprocess take ``tests.helpers.browsing.server_env``)."""
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(tmp_path / "no-snapshots"))
    monkeypatch.setenv("FEATAPP_PROVIDER", "cpu")
    # An AppTest runs no JavaScript, so it drives the Feature map's server-drawn view; the
    # browser-drawn default is tested in a real browser (tests/e2e/test_map_explorer_browser.py)
    # and by tests/app/test_map_explorer_app.py, which asks for it.
    monkeypatch.setenv("FEATAPP_MAP_VIEW", "server")
    monkeypatch.delenv("FEATAPP_MODEL", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def first_photo(dataset):
    """What the app shows before anything is chosen: photo 1 of the default gallery (test
    split, seed 0), and its pixels as the committed model sees them."""
    from featapp.engine.images import prepare_image
    from featapp.engine.model import load_model
    from tests.helpers.appmodels import COMMITTED_MODEL

    item = dataset.sample("test", per_class=10, seed=0)[0]
    return item, prepare_image(item.path, load_model(COMMITTED_MODEL, provider="cpu"))
