"""The converter on an app-only install (no TensorFlow, Keras, tf2onnx): one line saying what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# An import blocker: these packages behave as if they were not installed.
BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from convert.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_blocked(blocked: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, blocked, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
    )


@pytest.mark.parametrize(
    ("blocked", "command", "missing"),
    [
        (
            "tensorflow,keras,tf2onnx,tf_keras",
            ["export", "models/cats_dogs_small.keras", "--out", "x.onnx"],
            "tensorflow",
        ),
        ("tensorflow,keras,tf2onnx,tf_keras", ["train", "data", "--out", "run", "--epochs", "1"], "tensorflow"),
        ("tensorflow,keras,tf2onnx,tf_keras", ["evaluate", "models/cats_dogs_small.keras"], "tensorflow"),
        ("keras", ["export", "models/cats_dogs_small.keras", "--out", "x.onnx"], "keras"),
        ("tf2onnx", ["snapshots", "runs/none/selection", "--out", "snaps"], "tf2onnx"),
    ],
)
def test_converter_without_its_packages_says_what_to_install(blocked, command, missing, tmp_path):
    run = run_blocked(blocked, *command)
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert lines == [
        f"error: the converter needs {missing}, which is not installed; install its packages with: "
        "pip install -r requirements-convert.txt (from a clone) or pip install 'featapp[convert]'"
    ], run.stderr
    assert not (ROOT / "x.onnx").exists()


def test_an_onnx_file_converts_on_an_app_only_install(tmp_path):
    """onnx and ONNX Runtime come with the app: an ONNX file needs nothing else."""
    out = tmp_path / "legacy_featapp.onnx"
    fixture = ROOT / "tests" / "fixtures" / "onnx" / "torch_legacy.onnx"
    run = run_blocked("tensorflow,keras,tf2onnx,tf_keras,torch", "export", str(fixture), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert out.is_file() and out.with_name("legacy_featapp.grad.onnx").is_file()


def test_gradients_of_a_model_converted_from_onnx_need_no_tensorflow(tmp_path):
    out = tmp_path / "legacy_featapp.onnx"
    fixture = ROOT / "tests" / "fixtures" / "onnx" / "torch_legacy.onnx"
    blocked = "tensorflow,keras,tf2onnx,tf_keras,torch"
    assert run_blocked(blocked, "export", str(fixture), "--out", str(out), "--no-gradients").returncode == 0
    assert not out.with_name("legacy_featapp.grad.onnx").exists()
    run = run_blocked(blocked, "gradients", str(out))
    assert run.returncode == 0, run.stderr
    assert "finite differences" in run.stdout and out.with_name("legacy_featapp.grad.onnx").is_file()
