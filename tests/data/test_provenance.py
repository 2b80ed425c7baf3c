"""Honest predictions: the committed list of photos the model was fitted on, and the gallery's use of it."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from featapp.app.captions import TRAINED_ON_TEXT, WRONG_MARK
from featapp.cli import main
from featapp.data.dataset import Dataset
from featapp.engine.model import DEFAULT_MODEL_PATH
from featapp.data.provenance import file_sha256, hash_folders, hashes_path, read_hashes, trained_on, write_hashes
from tests.helpers.apptest import APP, TIMEOUT, assert_clean, captions, main_text

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _manifest(folder: Path, splits: tuple[str, ...]) -> set[str]:
    with (folder / "MANIFEST.tsv").open(encoding="utf-8") as handle:
        return {row["sha256"] for row in csv.DictReader(handle, delimiter="\t") if row["split"] in splits}


def test_committed_list_holds_every_photo_the_model_was_fitted_on_and_no_test_photo(data_dir):
    committed = trained_on(DEFAULT_MODEL_PATH)
    assert committed is not None and len(committed) > 0
    assert hashes_path(DEFAULT_MODEL_PATH).name == "cats_dogs_small.trained_on.sha256.gz"
    fitted = _manifest(data_dir, ("train", "validation"))
    extra = SHARED / "cats_vs_dogs_extra"
    if (extra / "MANIFEST.tsv").is_file():
        assert committed == fitted | _manifest(extra, ("train",))
    else:  # a machine without the extra training photos can check the course's part only
        assert fitted <= committed
    assert not committed & _manifest(data_dir, ("test",))
    # the manifest's sums are the files' own bytes
    photo = Dataset(data_dir).images("validation")[0].path
    assert file_sha256(photo) in committed


def test_list_is_regenerated_from_folders_byte_for_byte(tmp_path, data_dir, capsys):
    out = tmp_path / "m.trained_on.sha256.gz"
    folders = [data_dir / "train", data_dir / "validation"]
    extra = SHARED / "cats_vs_dogs_extra" / "train"
    if not extra.is_dir():
        pytest.skip(f"the extra training photos the model was fitted on are not here ({extra})")
    folders.insert(1, extra)
    assert main(["trained-on-hashes", *map(str, folders), "--out", str(out)]) == 0
    assert "photo hashes written" in capsys.readouterr().out
    assert out.read_bytes() == hashes_path(DEFAULT_MODEL_PATH).read_bytes()


def test_hashes_follow_the_file_not_its_name(tmp_path):
    (tmp_path / "a").mkdir()
    photo = tmp_path / "a" / "cat.1.jpg"
    photo.write_bytes(b"first")
    model = tmp_path / "net.onnx"
    assert trained_on(model) is None  # no list: nothing can be said
    write_hashes([tmp_path / "a"], hashes_path(model))
    seen = trained_on(model)
    assert seen == read_hashes(hashes_path(model)) and len(seen) == 1
    renamed = tmp_path / "renamed.jpg"
    shutil.copy(photo, renamed)
    assert file_sha256(renamed) in seen
    photo.write_bytes(b"other bytes")
    os.utime(photo, ns=(1, 1))  # a new modification time and size: hashed again, not cached
    assert file_sha256(photo) not in seen
    assert hash_folders([tmp_path / "a"]) == [file_sha256(photo)]


@pytest.fixture
def mixed_photos(tmp_path, data_dir):
    """A "test" split holding 5 photos per class the model was fitted on and 5 it never saw."""
    root = tmp_path / "mixed"
    source = Dataset(data_dir)
    for class_name in ("cats", "dogs"):
        folder = root / "test" / class_name
        folder.mkdir(parents=True)
        seen = [i for i in source.images("train") if i.class_name == class_name][:5]
        fresh = [i for i in source.images("test") if i.class_name == class_name][:5]
        for image in seen + fresh:
            shutil.copy(image.path, folder / image.name)
    return root


def test_gallery_marks_trained_on_photos_and_leaves_them_out_of_the_score(monkeypatch, app_env, mixed_photos, model):
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(mixed_photos))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert_clean(at)
    photo_captions = [c for c in captions(at) if "p(dog)" in c]
    assert len(photo_captions) == 20
    items = Dataset(mixed_photos).sample("test", per_class=10, seed=0)
    seen = trained_on(DEFAULT_MODEL_PATH)
    expected_seen = [file_sha256(item.path) in seen for item in items]
    assert sum(expected_seen) == 10
    assert [TRAINED_ON_TEXT in c for c in photo_captions] == expected_seen
    probabilities = model.predict([item.path for item in items]).probabilities
    right = sum(
        item.label == int(p.argmax())
        for item, p, was_seen in zip(items, probabilities, expected_seen, strict=True)
        if not was_seen
    )
    text = main_text(at)
    assert f"**{right} of 10** right" in text and "10 of these photos are ones the model was trained" in text
    assert WRONG_MARK in text


def test_gallery_of_training_photos_gives_no_score(app_env):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key="gallery.split").set_value("train").run()
    assert_clean(at)
    photo_captions = [c for c in captions(at) if "p(dog)" in c]
    assert len(photo_captions) == 20 and all(TRAINED_ON_TEXT in c for c in photo_captions)
    text = main_text(at)
    assert "trained or selected on all of these photos" in text and " of 20** right" not in text
