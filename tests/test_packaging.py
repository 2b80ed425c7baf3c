"""`pip install .` for real: a wheel built from the tracked files, installed into a folder
of its own and used from another directory, finds the committed model and runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the tracked files, so the checkout gets no build/ or egg-info.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(out), "-q"],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("featapp-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_the_packages_the_model_and_the_scripts(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(zf.read(n).decode() for n in names if n.endswith("METADATA"))
    for expected in (
        "featapp/cli/__init__.py",
        "featapp/app/pages/gallery.py",
        "convert/cli.py",
        "featapp/models/cats_dogs_small.onnx",
        "featapp/models/cats_dogs_small.trained_on.sha256.gz",
        "featapp/models/snapshots/index.json",
    ):
        assert expected in names
    # Every model file the library looks for: the model, its gradient model (saliency and
    # feature visualisation), the trained-on hashes, and each snapshot the index names with its own.
    import json

    index = json.loads((ROOT / "models" / "snapshots" / "index.json").read_text())
    for row in index["snapshots"]:
        onnx_file = f"featapp/models/snapshots/{row['file']}"
        assert onnx_file in names and onnx_file.replace(".onnx", ".grad.onnx") in names
    assert "featapp/models/cats_dogs_small.grad.onnx" in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    assert "featapp = featapp.cli:main" in entry_points and "featapp-convert = convert.cli:main" in entry_points
    assert "Provides-Extra: convert" in metadata and "Provides-Extra: cuda" in metadata
    assert 'tf2onnx==1.17.0; extra == "convert"' in metadata
    assert "onnxruntime-gpu[cuda,cudnn]" in metadata
    # the runtime requirements are requirements.txt's, markers and all
    assert 'Requires-Dist: onnxruntime<1.32,>=1.20; (sys_platform != "linux"' in metadata
    assert "tensorflow" not in metadata.split("Provides-Extra: convert")[0]


@pytest.mark.slow
def test_installed_package_finds_its_model_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel), "-q"],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "FEATAPP_PROVIDER": "cpu"}
    env.pop("FEATAPP_MODEL", None)
    code = (
        "import featapp, featapp.engine.model as m; model = featapp.load_model(); "
        "print(featapp.__file__); print(model.path); print(model.has_classifier)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    package_file, model_path, has_classifier = run.stdout.split()
    assert Path(package_file).is_relative_to(target)
    assert Path(model_path) == target / "featapp" / "models" / "cats_dogs_small.onnx"
    assert has_classifier == "True"
    for command in ([sys.executable, "-m", "featapp", "info"], [str(target / "bin" / "featapp"), "info"]):
        info = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
        assert info.returncode == 0, info.stderr
        assert str(target / "featapp" / "models" / "cats_dogs_small.onnx") in info.stdout
        assert "conv2d" in info.stdout
    # Run as the installed script, its help names it so; without --data-dir it looks for the
    # downloaded photos, never inside site-packages.
    usage = subprocess.run(
        [str(target / "bin" / "featapp"), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert usage.stdout.startswith("usage: featapp "), usage.stdout[:80]
    no_data = {**env, "XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    info = subprocess.run(
        [str(target / "bin" / "featapp"), "info", "--split", "test"], cwd=elsewhere, env=no_data,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert info.returncode == 1 and "site-packages" not in info.stderr and str(target) not in info.stderr, info.stderr
    convert = subprocess.run(
        [str(target / "bin" / "featapp-convert"), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert convert.returncode == 0 and "export" in convert.stdout, convert.stderr
    # The gradient views work from the wheel too (its gradient model is installed with it).
    out = elsewhere / "channel.png"
    visualize = subprocess.run(
        [str(target / "bin" / "featapp"), "visualize", "--layer", "conv2d", "--channel", "1", "--steps", "4",
         "--out", str(out)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert visualize.returncode == 0, visualize.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
