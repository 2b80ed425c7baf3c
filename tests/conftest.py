"""Shared fixtures: the real committed model and the real shared photos."""

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
    from featapp.dataset import Dataset

    return Dataset(data_dir)


@pytest.fixture(scope="session")
def model():
    """The committed model, in ONNX Runtime on the CPU (one session for the whole run)."""
    from featapp.model import load_model

    return load_model(REPO_ROOT / "models" / "cats_dogs_small.onnx", provider="cpu")


@pytest.fixture(scope="session")
def cat_photo(dataset):
    return dataset.images("test")[0].path


@pytest.fixture(scope="session")
def dog_photo(dataset):
    return [image for image in dataset.images("test") if image.class_name == "dogs"][0].path


@pytest.fixture(autouse=True)
def _no_downloaded_photos(monkeypatch, tmp_path_factory):
    """Photos a user downloaded on this machine (featapp.download) never leak into a test."""
    monkeypatch.setenv("FEATAPP_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
