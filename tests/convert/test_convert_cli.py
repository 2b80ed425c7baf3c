"""Every refusal of ``python -m convert export`` through the real command line, in a subprocess:
one ``error:`` line on stderr, exit status 1, no traceback, and no output file left behind.

Most refusals come from reading the file's configuration before TensorFlow loads, so
these runs take about a second each; the Keras-2 custom layer needs Keras to know its
class is unknown, so that one loads TensorFlow.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_convert(*args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    return subprocess.run(
        [sys.executable, "-m", "convert", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@keras.saving.register_keras_serializable(package="featapp_tests")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2


def _save(model, path: Path) -> Path:
    model.save(path)
    return path


def _jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    return path


def _zip_without_config(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return path


def _weights_only(path: Path) -> Path:
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    model.save_weights(path)
    return path


def _savedmodel(path: Path) -> Path:
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.layers.Conv2D(2, 3, input_shape=(8, 8, 3))])
    model.save(str(path), save_format="tf")
    return path


def _keras2_custom(path: Path) -> Path:
    tf_keras = pytest.importorskip("tf_keras")

    class Brighten(tf_keras.layers.Layer):
        def call(self, x):
            return x + 1

    inputs = tf_keras.Input((8, 8, 3))
    x = Brighten(name="brighten")(inputs)
    x = tf_keras.layers.Flatten()(x)
    return _save(tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation="sigmoid")(x)), path)


def _with_layer(layer, shape=(8, 8, 3)):
    inputs = keras.Input(shape)
    x = layer(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def _multi_input():
    a, b = keras.Input((8, 8, 3), name="left"), keras.Input((8, 8, 3), name="right")
    x = keras.layers.Flatten()(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], keras.layers.Dense(1, activation="sigmoid")(x))


def _nested_custom():
    inner = keras.Sequential([keras.Input((8, 8, 3)), Doubler(name="double_it")], name="block")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inner(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def _conv(shape):
    return keras.Sequential(
        [keras.Input(shape), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(1)]
    )


CASES = {
    "missing file": (lambda d: d / "nowhere.keras", ["No such file", "nowhere.keras"]),
    "a JPEG renamed .keras": (
        lambda d: _jpeg(d / "photo.keras"),
        ["'photo.keras' is not a Keras model file", "JPEG image"],
    ),
    "random bytes renamed .h5": (
        lambda d: (d / "noise.h5").write_bytes(np.random.default_rng(0).bytes(4096)) and d / "noise.h5",
        ["'noise.h5' is not a Keras model file", "neither a ZIP archive"],
    ),
    "an empty file": (lambda d: (d / "empty.keras").write_bytes(b"") == 0 and d / "empty.keras", ["is empty"]),
    "a ZIP that is no model": (
        lambda d: _zip_without_config(d / "archive.keras"),
        ["a ZIP archive without a model configuration"],
    ),
    "weights only": (lambda d: _weights_only(d / "tiny.weights.h5"), ["holds only weights", "model.save("]),
    "a SavedModel folder": (lambda d: _savedmodel(d / "saved"), ["TensorFlow SavedModel folder", "model.save("]),
    "a custom layer (Keras 3)": (
        lambda d: _save(_with_layer(Doubler(name="double_it")), d / "custom.keras"),
        [
            "custom layer 'double_it'",
            "class Doubler",
            "registered as 'featapp_tests>Doubler'",
            "Replace it with built-in",
            "export_model",
        ],
    ),
    "a custom layer inside a nested model": (
        lambda d: _save(_nested_custom(), d / "nested_custom.keras"),
        ["custom layer 'double_it' (inside 'block')", "class Doubler"],
    ),
    "a custom layer (Keras 2 .h5)": (
        lambda d: _keras2_custom(d / "custom2.h5"),
        ["layer 'brighten' of class Brighten", "Keras 3 does not have", "Replace it with built-in", "export_model"],
    ),
    "a Lambda layer": (
        lambda d: _save(_with_layer(keras.layers.Lambda(lambda t: t * 2, name="times_two")), d / "lambda.keras"),
        ["Lambda layer 'times_two'", "Python code", "Replace it with built-in"],
    ),
    "input that is no image": (
        lambda d: _save(keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)]), d / "table.keras"),
        ["(None, 10)", "not an image", "1 (grayscale) or 3 (RGB)"],
    ),
    "four channels": (lambda d: _save(_conv((8, 8, 4)), d / "rgba.keras"), ["4 channels", "(None, 8, 8, 4)"]),
    "channels first": (lambda d: _save(_conv((3, 16, 16)), d / "chw.keras"), ["looks channels-first"]),
    "any image size": (lambda d: _save(_with_gap(), d / "anysize.keras"), ["any size", "fixed height and width"]),
    "two inputs": (lambda d: _save(_multi_input(), d / "two.keras"), ["has 2 inputs", "single image input"]),
    "two inputs (.h5)": (lambda d: _save(_multi_input(), d / "two.h5"), ["has 2 inputs"]),
}


def _with_gap():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(x))


@pytest.mark.parametrize("case", list(CASES))
def test_export_refuses_with_one_line(tmp_path, case):
    make, expected = CASES[case]
    source = make(tmp_path)
    out_dir = tmp_path / "out"
    result = run_convert("export", source, "--out", out_dir / "model.onnx")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in result.stdout + result.stderr
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_verbose_shows_the_traceback(tmp_path):
    source = _jpeg(tmp_path / "photo.h5")
    result = run_convert("export", source, "--out", tmp_path / "m.onnx", "--verbose")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_evaluate_and_snapshots_refuse_with_one_line(tmp_path):
    result = run_convert("evaluate", tmp_path / "m.onnx", "--data-dir", tmp_path / "no_data")
    assert result.returncode == 1 and result.stderr.startswith("error: No dataset folder")
    (tmp_path / "data" / "test" / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "test" / "cats" / "c.png")
    result = run_convert("evaluate", tmp_path / "m.onnx", "--data-dir", tmp_path / "data")
    assert result.returncode == 1 and result.stderr.startswith("error: No model file")
    result = run_convert("evaluate", tmp_path / "m.onnx", "--data-dir", tmp_path / "data", "--split", "validation")
    assert result.returncode == 1 and "has no split 'validation'" in result.stderr
    result = run_convert("snapshots", tmp_path, "--out", tmp_path / "snaps")
    assert result.returncode == 1 and "has no snapshots/index.json" in result.stderr
    assert not (tmp_path / "snaps").exists()


@pytest.mark.parametrize("spelling", [["--input-range", "-1..1"], ["--input-range=-1..1"]])
def test_input_range_starting_with_minus_is_accepted_as_documented(spelling):
    from convert.cli import parse_arguments

    args = parse_arguments(["export", "model.keras", "--out", "model.onnx", *spelling])
    assert args.input_range == "-1..1"
    args = parse_arguments(["evaluate", "model.keras", *spelling])
    assert args.input_range == "-1..1"
