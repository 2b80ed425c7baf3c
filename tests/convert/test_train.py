"""Training smoke test, and the whole pipeline after it, through the real commands:
``train`` (one epoch on a handful of shared photos) -> ``evaluate`` (Keras) -> ``export``
-> ``evaluate`` (ONNX) -> ``snapshots``. Nothing here trains a useful model; it checks
that every command runs end to end and that what it writes is right.

The tiny dataset is made of symbolic links to the shared photos in a temporary folder
outside the repository (the photos are never copied).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.appmodels import LECTURE_OUTPUT_SHAPES as LECTURE

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_convert(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEATAPP_TRAIN_QUIET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "convert", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def tiny_dataset(dataset, tmp_path_factory) -> Path:
    """2 photos per class in each split, linked from the shared data set."""
    root = tmp_path_factory.mktemp("tiny_cats_dogs")
    for split in ("train", "validation", "test"):
        for image in dataset.sample(split, per_class=2, seed=1):
            target = root / split / image.class_name / image.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(image.path.resolve())
    return root


EXTRA_TRAIN = REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs_extra" / "train"


@pytest.fixture(scope="module")
def tiny_extra(tmp_path_factory) -> Path:
    """3 photos per class from the extra training folder, linked, in its ``<class>/`` layout."""
    if not EXTRA_TRAIN.is_dir():
        pytest.skip(f"the extra training photos are not at {EXTRA_TRAIN}")
    root = tmp_path_factory.mktemp("tiny_extra")
    for name in ("cats", "dogs"):
        (root / name).mkdir()
        for photo in sorted((EXTRA_TRAIN / name).iterdir())[:3]:
            (root / name / photo.name).symlink_to(photo.resolve())
    return root


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tiny_extra, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_convert(
        "train", tiny_dataset, "--out", out, "--epochs", "1", "--snapshot-epochs", "0", "1",
        "--weight-decay", "0.05", "--warmup-epochs", "0", "--extra-train", tiny_extra,
        "--first-layer-kernel-scale", "10", "--centre-inputs",
    )  # fmt: skip
    (out / "stdout.txt").write_text(result.stdout)
    return out


@pytest.mark.slow
def test_train_writes_model_history_curve_and_snapshots(run_dir):
    selection = run_dir / "selection"
    history = json.loads((selection / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"} <= set(history[0])
    # Liveness on the validation photos, per conv layer, logged with the curve.
    for layer in ("conv2d", "conv2d_1", "conv2d_2", "conv2d_3"):
        assert 0 <= history[0][f"dead_{layer}"] <= 1 and 0 <= history[0][f"constant_{layer}"] <= 1
    stdout = (run_dir / "stdout.txt").read_text()
    # 2 + 3 photos per class: the extra folder was read.
    assert "train: 10 images, validation: 4 images" in stdout
    assert "channels never active on validation" in stdout
    assert "Training in mixed_bfloat16" in stdout or "Training in float32" in stdout
    assert 0 <= history[0]["val_accuracy"] <= 1 and np.isfinite(history[0]["loss"])
    with Image.open(selection / "learning_curve.png") as curve:
        assert curve.format == "PNG" and curve.size[0] > 1500  # three panels: accuracy, loss, liveness
        assert len(np.unique(np.asarray(curve.convert("L")))) > 10  # something was drawn
    best = json.loads((selection / "best.json").read_text())
    assert best == {"epoch": 1, "val_accuracy": history[0]["val_accuracy"]}
    index = json.loads((selection / "snapshots" / "index.json").read_text())
    assert index["0"] == {"epoch": 0, "val_accuracy": None, "file": "epoch_000.keras"}
    assert index["1"]["val_accuracy"] == history[0]["val_accuracy"]
    for name in ("epoch_000.keras", "epoch_001.keras"):
        assert (selection / "snapshots" / name).stat().st_size > 1_000_000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["selection"] == best and (run_dir / "model.keras").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["epochs"], config["weight_decay"], config["warmup_epochs"]) == (1, 0.05, 0)
    assert summary["keras_backend"] == "tensorflow"
    assert (config["first_layer_kernel_scale"], config["centre_inputs"]) == (10.0, True)


@pytest.mark.slow
def test_the_first_layers_measures_are_logged_and_the_saved_models_are_plain(run_dir):
    import keras

    selection = run_dir / "selection"
    history = json.loads((selection / "history.json").read_text())
    assert -1.0 <= history[0]["first_layer_correlation_with_start"] < 1.0
    assert 0 <= history[0]["first_layer_edge_kernels"] <= 32
    assert "first layer's correlation with its start" in (run_dir / "stdout.txt").read_text()
    start = np.load(selection / "first_layer_start.npy")
    # Kernel scale and centring are folded away: every saved model is the lecture's plain network,
    # and the epoch-0 snapshot's first layer is the start the measures compare with.
    for path in (run_dir / "model.keras", selection / "snapshots" / "epoch_000.keras"):
        saved = keras.models.load_model(path, compile=False)
        assert [type(layer).__name__ for layer in saved.layers][:2] == ["Conv2D", "MaxPooling2D"]
    epoch0 = keras.models.load_model(selection / "snapshots" / "epoch_000.keras", compile=False)
    assert np.allclose(epoch0.get_layer("conv2d").kernel.numpy(), start, atol=1e-6)


def test_kernel_scale_and_centring_fold_into_the_plain_model_exactly():
    import keras

    from convert.train import build_model, first_layer_kernel, float32_copy, unfold_first_layer

    trained = build_model("float32", "he_uniform", None, first_layer_kernel_scale=10.0, centre_inputs=True)
    rng = np.random.default_rng(0)
    trained.set_weights([w + 0.01 * rng.standard_normal(w.shape).astype(np.float32) for w in trained.get_weights()])
    plain = float32_copy(trained)
    assert [type(layer).__name__ for layer in plain.layers][0] == "Conv2D" and len(plain.layers) == 12
    pixels = rng.random((2, 150, 150, 3)).astype(np.float32)
    first = keras.Model(trained.inputs, trained.get_layer("conv2d").output)(pixels).numpy()
    assert np.allclose(keras.Model(plain.inputs, plain.get_layer("conv2d").output)(pixels).numpy(), first, atol=1e-5)
    assert np.allclose(plain(pixels).numpy(), trained(pixels).numpy(), atol=1e-6)
    assert np.allclose(first_layer_kernel(trained), plain.get_layer("conv2d").kernel.numpy(), atol=1e-6)
    back = unfold_first_layer(plain.get_weights(), 10.0, True)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(back, trained.get_weights(), strict=True))


@pytest.mark.slow
def test_evaluate_export_and_evaluate_again(run_dir, tiny_dataset, tmp_path):
    keras_json, onnx_json, onnx_path = tmp_path / "keras.json", tmp_path / "onnx.json", tmp_path / "model.onnx"
    result = run_convert(
        "evaluate", run_dir / "model.keras", "--data-dir", tiny_dataset, "--split", "test", "--json", keras_json
    )
    assert "accuracy:" in result.stdout and "confusion matrix" in result.stdout
    result = run_convert("export", run_dir / "model.keras", "--out", onnx_path, "--class-names", "cat", "dog")
    for step in ("Reading", "Unpacking", "Converting 12 layers", "Verifying", "Wrote"):
        assert any(line.startswith(step) for line in result.stdout.splitlines()), step
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert {o.name: o.shape[1:] for o in session.get_outputs()} == LECTURE
    run_convert("evaluate", onnx_path, "--data-dir", tiny_dataset, "--json", onnx_json)
    by_keras, by_onnx = json.loads(keras_json.read_text()), json.loads(onnx_json.read_text())
    assert by_keras["total"] == by_onnx["total"] == 4
    assert by_keras["class_names"] == ["cats", "dogs"]
    assert by_keras["confusion"] == by_onnx["confusion"]


@pytest.mark.slow
def test_snapshots_command_exports_trunks(run_dir, tmp_path, dataset):
    from featapp.engine.snapshots import load_snapshots

    out = tmp_path / "snapshots"
    (out).mkdir()
    (out / "epoch_099.onnx").write_bytes(b"stale")
    (out / "index.json").write_text(json.dumps({"schema": 1, "snapshots": [{"epoch": 99, "file": "epoch_099.onnx"}]}))
    result = run_convert("snapshots", run_dir / "selection", "--out", out)
    snapshots = load_snapshots(out)
    # Tied to their run: the index and every snapshot's metadata say the same identity.
    identity = snapshots[0].identity
    assert identity["architecture"].startswith("arch-") and identity["run"].startswith("run-")
    assert f"--run-id {identity['run']}" in result.stdout
    history = json.loads((run_dir / "selection" / "history.json").read_text())
    assert [(s.epoch, s.is_best) for s in snapshots] == [(0, False), (1, True)]  # best = epoch 1, not written twice
    assert snapshots[1].val_accuracy == history[0]["val_accuracy"] and snapshots[0].val_accuracy is None
    # Each snapshot with its gradient model; the stale file the old index listed is gone.
    assert sorted(p.name for p in out.iterdir()) == [
        "epoch_000.grad.onnx", "epoch_000.onnx", "epoch_001.grad.onnx", "epoch_001.onnx", "index.json",
    ]  # fmt: skip
    photo = dataset.images("test")[0].path
    first_maps = []
    for snapshot in snapshots:
        model = snapshot.load(provider="cpu")
        assert model.layer_names == list(LECTURE)[:8] and not model.has_classifier
        assert model.spec.extra["epoch"] == snapshot.epoch and model.spec.extra["is_best"] == snapshot.is_best
        assert model.spec.extra["trunk"] is True
        assert model.spec.extra["model_identity"] == identity
        assert snapshot.path.stat().st_size < 1_100_000  # the trunk's 240,832 weights, under 1 MB of float32
        first_maps.append(model.activations([photo], layers=["conv2d"])["conv2d"])
    assert not np.array_equal(first_maps[0], first_maps[1])  # one epoch of training changed layer 1


@pytest.mark.slow
def test_rerun_with_a_warm_start_refit_keeps_the_selection_and_fine_tunes_its_best_model(run_dir):
    """Adding ``--refit`` to a finished run fits train + validation from the best model;
    the selection run is not trained again."""
    selection = run_dir / "selection"
    history_before = (selection / "history.json").read_bytes()
    result = run_convert(
        "train",
        json.loads((run_dir / "config.json").read_text())["data_dir"],
        "--out",
        run_dir,
        "--epochs",
        "1",
        "--refit",
        "--refit-epochs",
        "2",
        "--refit-warm-start",
        "--refit-learning-rate",
        "1e-4",
    )
    assert "not training it again" in result.stdout
    assert (selection / "history.json").read_bytes() == history_before
    refit_history = json.loads((run_dir / "refit" / "history.json").read_text())
    assert [row["epoch"] for row in refit_history] == [1, 2]
    # Cosine from the peak (no warm-up) over the refit's own 2 epochs: half-way after the first
    # (a warm-up would put it at the peak; a 1-epoch-long schedule from the selection near 0).
    assert refit_history[0]["learning_rate"] == pytest.approx(0.5e-4, rel=0.1)
    assert refit_history[1]["learning_rate"] < 0.05e-4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["refit"]["warm_start"].endswith("best.keras") and summary["refit"]["epochs"] == 2


def test_resumed_epoch_is_the_one_keras_backed_up(run_dir, tmp_path):
    from convert.train import resumed_epoch

    assert resumed_epoch(run_dir / "selection" / "backup") == 1  # the fixture's run: 1 epoch done
    assert resumed_epoch(tmp_path / "no-backup") == 0
    (tmp_path / "training_metadata.json").write_text("{not json")
    assert resumed_epoch(tmp_path) == 0


def _first_batches_order(seed: int) -> list[float]:
    """The first batch's images in the order the training pipeline gives them, seeded as ``_fit`` does.

    Each image is one flat grey level, which flips, turns, zooms and shifts with nearest-pixel
    fill leave alone, so the batch names the shuffle's order exactly."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    from convert.train import make_datasets

    keras.utils.set_random_seed(seed)
    levels = np.arange(64, dtype=np.uint8) * 3
    images = np.repeat(levels[:, None, None, None], 150 * 150 * 3).reshape(64, 150, 150, 3)
    train, _ = make_datasets(images, np.zeros(64, np.float32), None, None, 32, seed)
    batch = next(iter(train))[0].numpy()
    return [round(float(image.mean()) * 255) for image in batch]


def test_a_resumed_run_draws_batches_of_its_own_not_the_ones_it_trained_on():
    from convert.train import data_seed

    fresh = _first_batches_order(data_seed(1337, 0))
    assert data_seed(1337, 0) == 1337 and fresh == _first_batches_order(1337)  # a fresh run: as before
    # Seeded with --seed alone (before the fix), every resume replayed the first epochs' batches.
    resumed = [_first_batches_order(data_seed(1337, epoch)) for epoch in (1, 43)]
    assert all(order != fresh for order in resumed) and resumed[0] != resumed[1]


@pytest.mark.slow
def test_a_resumed_run_says_so_and_goes_on_from_its_backup(run_dir, tiny_dataset, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(run_dir / "selection" / "backup", out / "selection" / "backup")
    result = run_convert(
        "train", tiny_dataset, "--out", out, "--epochs", "2", "--snapshot-epochs", "2", "--weight-decay", "0.05",
        "--warmup-epochs", "0", "--first-layer-kernel-scale", "10", "--centre-inputs",
    )  # fmt: skip
    assert "Resuming after epoch 1: new batches and augmentations" in result.stdout
    assert json.loads((out / "selection" / "history.json").read_text())[-1]["epoch"] == 2


def test_mix_blends_images_and_labels_with_their_partners():
    tf = pytest.importorskip("tensorflow")
    from convert.train import mix

    images = tf.constant([[[[0.0]]], [[[1.0]]], [[[0.5]]]])  # three 1 x 1 x 1 images
    labels = tf.constant([0.0, 1.0, 1.0])
    mixed, soft = mix(images, labels, tf.constant([0.75, 1.0, 0.5]), tf.constant([1, 0, 0]))
    # 0.75 * 0 + 0.25 * 1; image 2 kept whole; 0.5 * 0.5 + 0.5 * 0
    np.testing.assert_allclose(mixed.numpy().ravel(), [0.25, 1.0, 0.25])
    np.testing.assert_allclose(soft.numpy(), [0.25, 1.0, 0.5])


def test_mixup_softens_training_labels_and_leaves_validation_alone(dataset):
    pytest.importorskip("tensorflow")
    import keras

    from convert.train import load_split, make_datasets

    keras.utils.set_random_seed(0)
    pixels, labels = load_split(dataset, "validation", limit_per_class=32)
    plain, _ = make_datasets(pixels, labels, pixels, labels, batch_size=32, seed=0)
    mixed, validation = make_datasets(pixels, labels, pixels, labels, batch_size=32, seed=0, mixup_alpha=0.2)
    plain_labels = np.concatenate([y.numpy() for _, y in plain])
    batches = [(x.numpy(), y.numpy()) for x, y in mixed]
    mixed_images = np.concatenate([x for x, _ in batches])
    mixed_labels = np.concatenate([y for _, y in batches])
    assert set(np.unique(plain_labels)) == {0.0, 1.0}
    # Beta(0.2, 0.2) puts about 40% of weights within 0.01 of 0 or 1, and a cat mixed with a
    # cat stays a cat: about 18 of 64 labels are expected to be clearly soft.
    assert ((mixed_labels > 0.01) & (mixed_labels < 0.99)).sum() >= 5
    assert mixed_labels.min() >= 0 and mixed_labels.max() <= 1
    assert mixed_images.min() >= 0 and mixed_images.max() <= 1
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in validation]), labels)


def test_extra_training_folder_reads_its_classes_in_the_dataset_order(tiny_extra):
    from convert.train import load_extra_train

    images, labels = load_extra_train(tiny_extra, ("cats", "dogs"))
    assert images.shape == (6, 150, 150, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_extra_training_folder_with_other_classes_is_a_clear_error(tmp_path, tiny_extra):
    from convert.train import load_extra_train
    from featapp.data.dataset import DatasetError

    (tmp_path / "cats").symlink_to(tiny_extra / "cats")
    (tmp_path / "birds").mkdir()
    with pytest.raises(DatasetError, match="birds, cats.*must be the same"):
        load_extra_train(tmp_path, ("cats", "dogs"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_extra_train(tmp_path / "missing", ("cats", "dogs"))


def test_precision_is_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    import convert.train as train

    monkeypatch.setattr(train, "native_bfloat16", lambda: True)
    assert train.choose_precision("auto") == "mixed_bfloat16"
    assert train.choose_precision("float32") == "float32"
    monkeypatch.setattr(train, "native_bfloat16", lambda: False)
    assert train.choose_precision("auto") == "float32"
    assert train.choose_precision("bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="unknown precision"):
        train.choose_precision("fp8")


def test_native_bfloat16_reads_this_machines_cpu_flags():
    import convert.train as train

    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert train.native_bfloat16() == bool(flags & {"amx_bf16", "avx512_bf16"})


@pytest.mark.slow
def test_report_compares_each_snapshot_with_epoch_0_and_counts_live_channels(run_dir, tiny_dataset, tmp_path):
    out = tmp_path / "report.json"
    run_convert("report", run_dir, "--data-dir", tiny_dataset, "--out", out)
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["images"] == 4
    epochs = [(row["epoch"], row["is_best"]) for row in report["snapshots"]]
    assert epochs == [(0, False), (1, False), (1, True)]
    first, last = report["snapshots"][0], report["snapshots"][-1]
    assert all(c == pytest.approx(1.0) for c in first["weight_correlation_with_epoch_0"].values())
    # One epoch of AdamW moves every layer's filters, a little.
    assert all(c < 1.0 for c in last["weight_correlation_with_epoch_0"].values())
    for live in last["liveness"].values():
        assert live["images"] == 4 and 0 <= live["never_active"] <= live["channels"]
    assert "| 1 (best) |" in (tmp_path / "report.md").read_text()
    assert all(0 <= len(row["first_layer_edge_kernels"]) <= 32 for row in report["snapshots"])
    # Epoch 0 is all start and nothing learned; one epoch keeps most of the start and adds a little.
    assert first["first_layer_start_share"] == pytest.approx(1.0) and first["first_layer_learned_over_start"] < 1e-6
    assert 0.5 < last["first_layer_start_share"] < 1.5 and 0 < last["first_layer_learned_over_start"] < 0.5


def test_the_first_layer_can_start_from_its_own_initializer():
    import numpy as np

    from convert.train import build_model

    model = build_model("float32", "he_uniform", first_layer_initializer="glorot_uniform")
    first, second = model.get_layer("conv2d").kernel.numpy(), model.get_layer("conv2d_1").kernel.numpy()
    # Glorot's limit for 3x3x3 -> 32 is sqrt(6 / (27 + 288)) = 0.138; He's for 3x3x32 inputs, sqrt(6 / 288) = 0.144.
    assert np.abs(first).max() <= np.sqrt(6 / (27 + 288)) + 1e-6
    assert np.abs(first).max() > 0.12
    he_first = build_model("float32", "he_uniform").get_layer("conv2d").kernel.numpy()
    assert np.abs(he_first).max() > 0.2  # He's limit for 27 inputs is sqrt(6 / 27) = 0.47
    assert np.abs(second).max() <= np.sqrt(6 / 288) + 1e-6


def _kernel_norm_ratios(weight_decay: float, first_layer_rate: float | None) -> tuple[float, float]:
    """How much the first and second conv kernels' norms change in 3 steps at a constant 1e-2
    learning rate on 4 real photos, with these decays (30 x 1e-2 shrinks a weight to 0.7x a step)."""
    import keras

    from convert.train import build_model, first_layer_weight_decay

    keras.utils.set_random_seed(0)
    model = build_model("float32", "he_uniform")
    optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=weight_decay)
    decay = first_layer_weight_decay(model, optimizer, first_layer_rate)
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    kernels = [model.get_layer(name).kernel for name in ("conv2d", "conv2d_1")]
    before = [np.linalg.norm(k.numpy()) for k in kernels]
    photos = sorted((REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs" / "train" / "dogs").iterdir())[:4]
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((150, 150)), np.float32) / 255 for p in photos])
    model.fit(x, np.ones(4), batch_size=4, epochs=3, verbose=0, callbacks=[decay] if decay else [])
    first, second = (np.linalg.norm(k.numpy()) / b for k, b in zip(kernels, before, strict=True))
    return float(first), float(second)


def test_the_first_layer_decays_at_its_own_rate_and_the_others_at_adamws():
    # The first layer's own rate, and nothing from AdamW's: it shrinks (0.7^3 = 0.34, give or
    # take the three steps the gradient takes), the second layer keeps its size.
    first, second = _kernel_norm_ratios(weight_decay=0.0, first_layer_rate=30.0)
    assert first < 0.5 and second > 0.8
    # Excluded from AdamW's decay: a strong global decay shrinks the second layer only.
    first, second = _kernel_norm_ratios(weight_decay=30.0, first_layer_rate=0.0)
    assert first > 0.8 and second < 0.5
    # Without a rate of its own the first layer decays with the rest, as before.
    first, second = _kernel_norm_ratios(weight_decay=30.0, first_layer_rate=None)
    assert first < 0.5 and second < 0.5
