"""``python -m featapp`` through subprocess: output, files written, messages and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featapp.cli.commands import SALIENCY_ALPHA
from featapp.data.dataset import Dataset
from featapp.stats.analysis import load_cached

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


def run(
    *args: str, cache: Path | None = None, check_no_traceback: bool = True, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
    env["FEATAPP_PROVIDER"] = "cpu"
    env["FEATAPP_THREADS"] = "2"
    env.update(env_extra or {})
    if cache is not None:
        env["FEATAPP_CACHE_DIR"] = str(cache)
    result = subprocess.run(
        [sys.executable, "-m", "featapp", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check_no_traceback:
        assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "notes.jpg"
    path.write_text("these are lecture notes, not a photo")
    return path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, dataset):
    """3 cats and 3 dogs from the shared test split, copied to a temporary dataset."""
    root = tmp_path_factory.mktemp("small-data")
    for image in dataset.sample("test", per_class=3, seed=2):
        target = root / "test" / image.class_name / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    return root


def test_help_for_every_command():
    top_level = run("--help")
    assert top_level.returncode == 0
    for command in ("predict", "activations", "scan", "top", "info", "saliency", "visualize"):
        assert command in top_level.stdout
        result = run(command, "--help")
        assert result.returncode == 0 and result.stdout.startswith("usage: python -m featapp " + command)
    assert "counted from 1" in run("top", "--help").stdout
    assert "layer_names" in run("activations", "--help").stdout


def test_wrong_usage_exits_2_with_argparse_message():
    result = run("top", "--layer", "conv2d", "--channel", "0")
    assert result.returncode == 2 and "from 1 up" in result.stderr
    assert run("predict").returncode == 2
    assert run("fly").returncode == 2


def test_predict_reports_each_file_and_fails_only_the_bad_ones(model, cat_photo, dog_photo, bad_file, tmp_path):
    missing = tmp_path / "missing.jpg"
    result = run("predict", str(cat_photo), str(bad_file), str(dog_photo), str(missing))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(cat_photo)) and lines[1].startswith(str(dog_photo))
    expected = model.predict([cat_photo, dog_photo])
    for line, label, confidence in zip(lines, expected.labels, expected.confidences, strict=True):
        fields = line.split()
        assert fields[1] == label and float(fields[2]) == pytest.approx(float(confidence), abs=1e-3)
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert [e.split(": error: ")[0] for e in errors] == [str(bad_file), str(missing)]
    assert "2 of 4 files failed" in result.stderr
    assert run("predict", str(cat_photo)).returncode == 0


def test_predict_json_matches_the_library(model, cat_photo, dog_photo, bad_file):
    result = run("predict", "--json", str(cat_photo), str(dog_photo), str(bad_file))
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    expected = model.predict([cat_photo, dog_photo])
    assert [row["file"] for row in rows] == [str(cat_photo), str(dog_photo), str(bad_file)]
    assert set(rows[2]) == {"file", "error"} and rows[2]["error"] in result.stderr
    for row, probabilities in zip(rows[:2], expected.probabilities, strict=True):
        assert list(row["probabilities"]) == list(model.class_names)
        assert list(row["probabilities"].values()) == pytest.approx(probabilities.tolist(), abs=1e-5)
        assert row["label"] == model.class_names[int(np.argmax(probabilities))]
        assert row["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)


def test_model_errors_are_one_line_and_verbose_shows_the_traceback(cat_photo, tmp_path):
    missing_model = tmp_path / "nothing.onnx"
    result = run("predict", "--model", str(missing_model), str(cat_photo))
    assert result.returncode == 1
    assert result.stderr.startswith("error: No model file at") and len(result.stderr.strip().splitlines()) == 1
    verbose = run("predict", "--verbose", "--model", str(missing_model), str(cat_photo), check_no_traceback=False)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    before = run("--verbose", "predict", "--model", str(missing_model), str(cat_photo), check_no_traceback=False)
    assert before.returncode == 1 and "Traceback" in before.stderr


def test_activations_writes_every_layer_like_the_library(model, cat_photo, dog_photo, bad_file, tmp_path):
    out = tmp_path / "out" / "acts.npz"
    result = run("activations", str(cat_photo), str(bad_file), str(dog_photo), "--out", str(out), "--batch-size", "1")
    assert result.returncode == 1, "one file failed"
    assert f"{bad_file}: error:" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["acts.npz"], "no temporary files left behind"
    expected = model.activations([cat_photo, dog_photo])
    with np.load(out, allow_pickle=False) as saved:
        assert saved["layer_names"].tolist() == model.layer_names
        assert saved["layer_shapes"].tolist() == [layer.shape_text for layer in model.layers]
        assert saved["layer_kinds"].tolist() == [layer.kind for layer in model.layers]
        assert saved["files"].tolist() == [str(cat_photo), str(dog_photo)]
        assert saved["images"].dtype == np.uint8 and np.array_equal(
            saved["images"], model.prepare([cat_photo, dog_photo])
        )
        for name, array in expected.items():
            assert saved[name].dtype == np.float32 and saved[name].shape == array.shape
            assert np.allclose(saved[name], array, atol=1e-5), name
    assert str(out) in result.stdout


def test_activations_with_no_readable_file_writes_nothing(bad_file, tmp_path):
    out = tmp_path / "acts.npz"
    result = run("activations", str(bad_file), "--out", str(out))
    assert result.returncode == 1 and "nothing written" in result.stderr
    assert not out.exists()
    wrong_suffix = run("activations", str(bad_file), "--out", str(tmp_path / "acts.txt"))
    assert wrong_suffix.returncode == 1 and ".npz" in wrong_suffix.stderr


def test_info_prints_the_layer_table(model):
    result = run("info")
    assert result.returncode == 0
    spec = model.input_spec
    assert f"{spec.height} x {spec.width} x {spec.channels}" in result.stdout
    assert ", ".join(model.class_names) in result.stdout
    assert "Provider: cpu" in result.stdout
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines() if line[:2].strip().isdigit()}
    assert list(rows) == model.layer_names
    for layer in model.layers:
        row = rows[layer.name]
        assert row[2] == layer.kind
        assert f"{layer.params:,}" in row
        if layer.receptive_field is not None:
            size, jump = layer.receptive_field.size[0], layer.receptive_field.jump[0]
            assert row[-2:] == [str(size), str(jump)]


def test_scan_then_top_with_a_picture(model, small_data, cache_dir, tmp_path):
    scanned = run("scan", str(small_data), "--split", "test", cache=cache_dir)
    assert scanned.returncode == 0, scanned.stderr
    assert "scanning: 6/6 images (100%)" in scanned.stderr
    assert "Scanned 6 images (0 unreadable)" in scanned.stdout
    again = run("scan", str(small_data), "--split", "test", cache=cache_dir)
    assert again.returncode == 0 and "Already scanned: 6 images" in again.stdout
    assert list(small_data.rglob("*.npz")) == [], "nothing written into the dataset"

    grid = tmp_path / "grid.png"
    top = run(
        "top", "--layer", "conv2d_2", "--channel", "5", "--k", "3", "--data-dir", str(small_data),
        "--split", "test", "--out", str(grid), cache=cache_dir,
    )  # fmt: skip
    assert top.returncode == 0, top.stderr
    assert "scanning" not in top.stderr, "top reads the statistics the scan cached"
    assert "conv2d_2 channel 5 (index 4)" in top.stdout
    stats = load_cached(model, Dataset(small_data), "test", cache_dir)
    hits = stats.top_k("conv2d_2", 4, k=3)
    rows = [line for line in top.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    for row, hit in zip(rows, hits, strict=True):
        assert row.endswith(str(hit.path))
        assert f"{hit.value:.4f}" in row and f"({hit.cell[0]}, {hit.cell[1]})" in row
        assert "(" + ", ".join(map(str, hit.box)) + ")" in row
    picture = np.asarray(Image.open(grid).convert("RGB"))
    assert picture.shape[0] > model.input_spec.height and picture.shape[1] > 2 * model.input_spec.width
    yellow = (picture[:, :, 0] == 255) & (picture[:, :, 1] == 220) & (picture[:, :, 2] == 0)
    assert yellow.sum() > 3 * 4 * 10, "each image has its receptive-field box drawn"


def test_top_on_a_vector_layer_and_its_errors(small_data, cache_dir, tmp_path):
    common = ("--data-dir", str(small_data), "--split", "test")
    dense = run("top", "--layer", "dense_1", "--channel", "1", "--k", "6", *common, cache=cache_dir)
    assert dense.returncode == 0, dense.stderr
    assert "dense_1 unit 1 (index 0)" in dense.stdout
    assert len([line for line in dense.stdout.splitlines() if line.strip()[:1].isdigit()]) == 6
    too_far = run("top", "--layer", "conv2d", "--channel", "33", *common, cache=cache_dir)
    assert too_far.returncode == 1 and "channels 1 to 32" in too_far.stderr
    no_layer = run("top", "--layer", "conv9", "--channel", "1", *common, cache=cache_dir)
    assert no_layer.returncode == 1 and "conv2d_1" in no_layer.stderr
    bad_split = run("scan", str(small_data), "--split", "holiday", cache=cache_dir)
    assert bad_split.returncode == 1 and "no split 'holiday'" in bad_split.stderr
    no_data = run("scan", str(tmp_path / "nowhere"), cache=cache_dir)
    assert no_data.returncode == 1 and "No dataset folder" in no_data.stderr
    jpeg_out = run(
        "top", "--layer", "conv2d", "--channel", "1", "--out", str(tmp_path / "g.jpg"), *common, cache=cache_dir
    )
    assert jpeg_out.returncode == 1 and ".png" in jpeg_out.stderr


def test_saliency_and_visualize_write_pictures(model, cat_photo, tmp_path):
    from featapp.explain.gradients import load_gradients
    from featapp.explain.saliency import saliency

    out = tmp_path / "saliency.png"
    result = run("saliency", str(cat_photo), "--out", str(out), "--method", "plain")
    assert result.returncode == 0, result.stderr
    picture = np.asarray(Image.open(out))
    assert picture.shape == (300, 300, 3)
    # The colour laid over the photo (the picture less the photo's share) is brightest (viridis:
    # yellow is high) where the library's saliency is highest, however dark the photo is there.
    expected = saliency(load_gradients(model), cat_photo).per_pixel
    y, x = np.unravel_index(expected.argmax(), expected.shape)
    photo = model.prepare(cat_photo)[0].astype(float)
    painted = (picture[::2, ::2].astype(float) - (1 - SALIENCY_ALPHA) * photo) / SALIENCY_ALPHA
    assert painted[y, x].sum() > np.percentile(painted.sum(axis=2), 99)
    vis = tmp_path / "channel.png"
    result = run("visualize", "--layer", "conv2d_1", "--channel", "3", "--steps", "4", "--out", str(vis))
    assert result.returncode == 0, result.stderr
    assert "conv2d_1 channel 3" in result.stdout and Image.open(vis).size == (300, 300)
    result = run("visualize", "--layer", "conv2d_1", "--channel", "65", "--steps", "2", "--out", str(vis))
    assert result.returncode == 1 and "channels 1 to 64" in result.stderr


def test_saliency_on_a_trunk_snapshot_is_one_clear_line(cat_photo, tmp_path):
    snapshot = REPO_ROOT / "models" / "snapshots" / "epoch_000.onnx"
    result = run("saliency", str(cat_photo), "--out", str(tmp_path / "s.png"), "--model", str(snapshot))
    assert result.returncode == 1 and "no classifier" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "s.png").exists()


def test_visualize_on_a_grayscale_model_writes_a_picture(tmp_path):
    """Feature visualisation of a one-channel model: the CLI saves a grey picture (Pillow
    refuses (H, W, 1) arrays, which the app's view never handed it)."""
    import hashlib

    import onnx

    from featapp.engine.metadata import METADATA_KEY
    from featapp.explain.backward import build_gradient_model, gradient_path
    from tests.helpers.modelfactory import TinyNet, build

    path = build(TinyNet(channels=1), tmp_path / "gray.onnx")
    forward = onnx.load(path)
    spec_json = {p.key: p.value for p in forward.metadata_props}[METADATA_KEY]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    onnx.save(build_gradient_model(forward, spec_json, sha), gradient_path(path))
    out = tmp_path / "gray_channel.png"
    result = run(
        "visualize", "--model", str(path), "--layer", "conv2d", "--channel", "1", "--steps", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).mode == "L"


def test_atlas_writes_every_conv_channel_beside_the_model_and_goes_on_after_a_partial_run(tmp_path):
    """``featapp atlas MODEL``: the file the app reads, with the model's hash and the app's settings
    (FEATAPP_VIS_STEPS here); a first run limited to one layer, then the rest kept and added."""
    from featapp.engine.model import load_model
    from featapp.explain.atlas import read_atlas, usable_atlas
    from featapp.explain.featurevis import picture_settings
    from tests.helpers.modelfactory import Conv, TinyNet, build, with_gradients

    net = TinyNet(height=20, width=24, channels=3, convs=(Conv(4), Conv(5)))
    path = with_gradients(build(net, tmp_path / "tiny.onnx"))
    env = {"FEATAPP_VIS_STEPS": "3"}
    first = run("atlas", str(path), "--layers", "2", env_extra=env)
    assert first.returncode == 0, first.stderr
    assert "layer 2 conv2d_1: 5 channels (its whole map)" in first.stderr
    assert "atlas: 5.0/5.0 channels (100%)" in first.stderr
    out = tmp_path / "tiny.atlas.zip"
    assert list(read_atlas(out).layers) == ["conv2d_1"]
    second = run("atlas", str(path), env_extra=env)
    assert second.returncode == 0, second.stderr
    assert "layer 1 conv2d: 4 channels (its centre cell)" in second.stderr
    assert "layer 2 conv2d_1: 5 channels (its whole map), 5 kept from before" in second.stderr
    assert f"{out}: 9 pictures in 2 layers" in second.stdout and "copy it there" not in second.stdout
    atlas = read_atlas(out)
    model = load_model(path, provider="cpu")
    assert atlas.model_sha256 == model.sha256 and atlas.settings == picture_settings(3, 0)
    assert usable_atlas(model, steps=3) is not None
    # The same file, wherever --out puts it (the app reads it only beside the model).
    elsewhere = run("atlas", "--model", str(path), "--out", str(tmp_path / "copy.zip"), "--steps", "3")
    assert elsewhere.returncode == 0 and "The app reads it from" in elsewhere.stdout
    copy = read_atlas(tmp_path / "copy.zip")
    assert all(
        np.array_equal(copy.layers[name].pictures.images, layer.pictures.images) for name, layer in atlas.layers.items()
    )


def test_atlas_refuses_clearly(tmp_path):
    from tests.helpers.modelfactory import TinyNet, build

    no_gradients = build(TinyNet(), tmp_path / "plain.onnx")
    result = run("atlas", str(no_gradients))
    assert result.returncode == 1 and "gradient views unavailable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    out = str(tmp_path / "lecture.atlas.zip")
    wrong = run("atlas", "--layers", "99", "--steps", "1", "--out", out)
    assert wrong.returncode == 1 and "layers are numbered 1 to 12" in wrong.stderr
    dense = run("atlas", "--layers", "dense", "--steps", "1", "--out", out)
    assert dense.returncode == 1 and "dense has no 2-D maps" in dense.stderr
    two = run("atlas", str(no_gradients), "--model", "other.onnx")
    assert two.returncode == 1 and "two models" in two.stderr
    assert not list(tmp_path.glob("*.atlas.zip"))


def test_a_scan_waits_for_the_same_scan_in_another_process(model, small_data, tmp_path):
    import threading

    from featapp.stats import analysis

    cache = tmp_path / "cache"
    path = analysis.cache_path(model, Dataset(small_data), "test", cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
    env.update(FEATAPP_PROVIDER="cpu", FEATAPP_THREADS="2", FEATAPP_CACHE_DIR=str(cache))
    told = threading.Event()
    with analysis._file_lock(path, on_wait=lambda: None):  # this test is the process already scanning
        scan = subprocess.Popen(
            [sys.executable, "-m", "featapp", "scan", str(small_data), "--split", "test"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: list[str] = []

        def read() -> None:
            for line in scan.stderr:  # type: ignore[union-attr]
                lines.append(line)
                if "waiting for it" in line:
                    told.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert told.wait(timeout=120), "".join(lines)
        assert scan.poll() is None  # still waiting while the lock is held
    stdout = scan.stdout.read()  # type: ignore[union-attr]
    assert scan.wait(timeout=300) == 0
    reader.join(timeout=10)
    assert "Scanned 6 images" in stdout  # nothing was saved meanwhile, so it scanned after the wait
    assert sorted(p.name for p in cache.iterdir()) == [path.name]
