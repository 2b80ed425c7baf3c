"""The dataset reader, on the real shared photos and on small copies in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from featapp.data.dataset import DATA_DIR_ENV, DEFAULT_DATA_DIR, Dataset, DatasetError, resolve_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_splits_classes_and_labels_follow_the_folders(dataset, data_dir):
    assert dataset.splits == ("test", "train", "validation")
    for split in dataset.splits:
        assert dataset.classes(split) == ("cats", "dogs")
        images = dataset.images(split)
        on_disk = sorted(p for p in (data_dir / split).glob("*/*") if p.suffix.lower() == ".jpg")
        assert sorted(image.path for image in images) == on_disk
        for image in images:
            assert image.split == split
            assert image.class_name == image.path.parent.name
            assert image.label == ("cats", "dogs").index(image.class_name)
            assert image.name.startswith(image.class_name[:-1] + ".")  # Kaggle names: cat.N.jpg


def test_images_are_in_class_then_natural_file_order(dataset):
    images = dataset.images("test")
    labels = [image.label for image in images]
    assert labels == sorted(labels)
    cats = [int(image.name.split(".")[1]) for image in images if image.label == 0]
    assert cats == sorted(cats)


def test_default_sample_is_ten_cats_then_ten_dogs(dataset):
    sample = dataset.sample("train")
    assert [image.class_name for image in sample] == ["cats"] * 10 + ["dogs"] * 10
    assert len({image.path for image in sample}) == 20
    everything = set(dataset.images("train"))
    assert all(image in everything for image in sample)


def test_sample_is_deterministic_per_seed(dataset):
    first = dataset.sample("train", per_class=10, seed=0)
    assert first == dataset.sample("train", per_class=10, seed=0)
    assert first == Dataset(dataset.root).sample("train", per_class=10, seed=0)
    other = dataset.sample("train", per_class=10, seed=1)
    assert other != first
    assert len({image.path for image in first} & {image.path for image in other}) < 10


def test_sample_is_the_same_in_another_process(dataset):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from featapp.data.dataset import Dataset;"
        "print(' '.join(i.name for i in Dataset(sys.argv[2]).sample('test', per_class=4, seed=5)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT), str(dataset.root)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [image.name for image in dataset.sample("test", per_class=4, seed=5)]


def test_sample_sizes(dataset):
    assert [image.class_name for image in dataset.sample("test", per_class=1)] == ["cats", "dogs"]
    assert dataset.sample("test", per_class=0) == []
    assert len(dataset.sample("test", per_class=10_000)) == len(dataset.images("test"))
    with pytest.raises(DatasetError, match="0 or more"):
        dataset.sample("test", per_class=-1)


def test_unknown_split_names_the_splits_there_are(dataset):
    with pytest.raises(DatasetError, match="no split 'training'.*test, train, validation"):
        dataset.images("training")


def test_folder_comes_from_argument_then_environment_then_default(monkeypatch, tmp_path, data_dir):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert Dataset().root == data_dir
    assert resolve_data_dir(tmp_path) == tmp_path  # the argument wins
    monkeypatch.setenv(DATA_DIR_ENV, "  ")
    assert resolve_data_dir() == DEFAULT_DATA_DIR
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir() == DEFAULT_DATA_DIR
    assert resolve_data_dir("") == DEFAULT_DATA_DIR


def test_missing_folder_says_how_to_get_data(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError) as caught:
        Dataset()
    message = str(caught.value)
    assert "No dataset folder" in message and "nowhere" in message
    assert DATA_DIR_ENV in message and "<split>/<class>/<image>" in message


@pytest.mark.parametrize("layout", ["empty", "no-images", "flat-images", "split-without-images"])
def test_empty_folders_say_how_to_get_data(tmp_path, layout):
    if layout == "no-images":
        (tmp_path / "train" / "cats").mkdir(parents=True)
        (tmp_path / "train" / "cats" / "notes.txt").write_text("no pictures here")
        (tmp_path / "train" / "cats" / ".hidden.jpg").write_bytes(b"x")
    elif layout == "flat-images":
        (tmp_path / "cat.1.jpg").write_bytes(b"x")
    elif layout == "split-without-images":
        (tmp_path / "train" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetError) as caught:
        Dataset(tmp_path)
    assert "holds no images" in str(caught.value) and DATA_DIR_ENV in str(caught.value)


def test_a_single_split_given_as_root_gets_a_hint(data_dir):
    with pytest.raises(DatasetError, match="single split.*cats, dogs.*folder above"):
        Dataset(data_dir / "test")


def test_a_file_as_root(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="No dataset folder"):
        Dataset(path)


@pytest.fixture
def small_copy(tmp_path, dataset) -> Path:
    """Three cats and three dogs of two splits, copied to tmp (never into the repo)."""
    root = tmp_path / "cats_vs_dogs"
    for split in ("train", "test"):
        for image in dataset.sample(split, per_class=3, seed=0):
            target = root / split / image.class_name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image.path, target)
    return root


def test_small_copy_reads_like_the_original(small_copy):
    copy = Dataset(small_copy)
    assert copy.splits == ("test", "train")
    assert [image.class_name for image in copy.sample("train")] == ["cats"] * 3 + ["dogs"] * 3


def test_non_images_and_hidden_files_are_skipped(small_copy):
    (small_copy / "train" / "cats" / "Thumbs.db").write_bytes(b"x")
    (small_copy / "train" / "cats" / ".cat.9.jpg").write_bytes(b"x")
    (small_copy / "train" / "cats" / "sub").mkdir()
    (small_copy / "train" / "empty_class").mkdir()
    copy = Dataset(small_copy)
    assert copy.classes("train") == ("cats", "dogs")
    assert len(copy.images("train")) == 6


def test_fingerprint_is_stable_and_changes_when_files_change(small_copy):
    copy = Dataset(small_copy)
    before = copy.fingerprint()
    assert before == copy.fingerprint() == Dataset(small_copy).fingerprint()
    assert copy.fingerprint("train") != copy.fingerprint("test") != before
    cats = small_copy / "train" / "cats"
    first = sorted(cats.iterdir())[0]
    seen = {before}

    def changed() -> str:
        now = copy.fingerprint()  # the same Dataset object: it must look again
        assert now not in seen, "the fingerprint did not change"
        seen.add(now)
        return now

    shutil.copy2(first, cats / "cat.99999.jpg")  # a file added
    changed()
    (cats / "cat.99999.jpg").rename(cats / "cat.99998.jpg")  # renamed
    changed()
    (cats / "cat.99998.jpg").unlink()  # removed again: back to the start
    assert copy.fingerprint() == before
    with first.open("ab") as handle:  # a file rewritten, longer
        handle.write(b"\0")
    changed()
    test_before = copy.fingerprint("test")
    assert test_before == Dataset(small_copy).fingerprint("test")  # other splits untouched


def test_fingerprint_ignores_timestamps_and_content_mode_sees_same_size_edits(small_copy, tmp_path):
    copy = Dataset(small_copy)
    before, before_content = copy.fingerprint(), copy.fingerprint(content=True)
    moved = tmp_path / "moved"
    shutil.copytree(small_copy, moved, copy_function=shutil.copy)  # new timestamps
    assert Dataset(moved).fingerprint() == before
    assert Dataset(moved).fingerprint(content=True) == before_content
    photo = sorted((small_copy / "test" / "dogs").iterdir())[0]
    data = bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    photo.write_bytes(bytes(data))
    assert copy.fingerprint() == before
    assert copy.fingerprint(content=True) != before_content


def test_a_reference_finds_its_image_and_nothing_outside_the_listing(small_copy, tmp_path):
    copy = Dataset(small_copy)
    image = copy.images("test")[-1]
    assert image.reference == f"test/{image.class_name}/{image.name}"
    assert copy.find(image.reference) == image
    assert copy.reference_of(image.path) == image.reference
    assert copy.reference_of(small_copy / "test" / image.class_name / ".." / image.class_name / image.name) is None
    # A file beside the dataset, a hidden file and a non-image inside it: none is listed, so none is found.
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"x")
    (small_copy / "test" / "cats" / ".hidden.jpg").write_bytes(b"x")
    (small_copy / "test" / "cats" / "notes.txt").write_bytes(b"x")
    for reference in (
        "../secret.jpg",
        "test/../../secret.jpg",
        "test/cats/../../../secret.jpg",
        str(secret),
        "test/cats/.hidden.jpg",
        "test/cats/notes.txt",
        "test/cats",
        "nosplit/cats/" + image.name,
        f"test/{image.class_name}/{image.name}/",
        "",
    ):
        with pytest.raises(DatasetError):
            copy.find(reference)
    assert copy.reference_of(secret) is None
    assert copy.reference_of(small_copy / "test" / "cats" / "notes.txt") is None
