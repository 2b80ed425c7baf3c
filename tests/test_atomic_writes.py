"""Every file featapp and the converter write survives a kill in the middle of the write (issue 5).

Each writer runs in a child process on a large enough payload that the write takes a
while; the test watches the folder for the writer's temporary file and, once it has grown,
kills the child with SIGKILL (no cleanup code runs). The temporary file is still there
afterwards, half written, which proves the kill came mid-write. The target must then hold
the previous good file, byte for byte, or nothing if there was none, and the real reader
must accept it. Writers:

* the neuron-statistics cache (``NeuronStats.save``, through ``featapp.cache.atomic_write``);
* ``python -m featapp activations --out`` (the real command);
* ``top --out`` pictures (``featapp.cli.commands._save_png``);
* exported ONNX files (``convert.common.write_atomically``, which ``convert export`` and
  ``convert snapshots`` use);
* training checkpoints (``convert.train._atomic_save``: ``best.keras``, snapshots) and the
  run's JSON files (``_atomic_write_text``: ``history.json``, ``best.json``, ...);
* Keras' resume checkpoint (``backup/``), which Keras itself wrote in place: the control
  shows a kill then broke every resume; ``convert.train.atomic_backup_and_restore`` fixes it.

Corrupt and stale neuron-statistics files being detected and rebuilt is tested in
``tests/stats/test_analysis.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featapp.stats.analysis import NeuronStats
from tests.helpers.appmodels import COMMITTED_MODEL

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


class Child:
    """A Python child process whose stdout lines can be awaited while the test polls files."""

    def __init__(self, code: str, *argv: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
        env.update(FEATAPP_PROVIDER="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.lines.get(timeout=0.5) == text:
                    return
            except queue.Empty:
                if self.process.poll() is not None:
                    break
        self.process.kill()
        raise AssertionError(f"no {text!r} from the child: {self.process.stderr.read()[-3000:]}")

    def kill_when_growing(self, folder: Path, pattern: str, min_bytes: int, timeout: float = 300) -> Path:
        """SIGKILL the child once a file matching ``pattern`` in ``folder`` has ``min_bytes``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in folder.glob(pattern):
                try:
                    big_enough = path.is_file() and path.stat().st_size >= min_bytes
                except FileNotFoundError:
                    continue
                if big_enough:
                    self.process.send_signal(signal.SIGKILL)
                    self.process.wait()
                    return path
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the writer ended before it could be killed: {self.process.stderr.read()[-3000:]}"
                )
            time.sleep(0.002)
        self.process.kill()
        raise AssertionError(f"no {pattern} in {folder} within {timeout} s")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_killed_mid_write(tmp: Path, full_size: int | None = None) -> None:
    assert tmp.exists(), "the temporary file was renamed: the write had finished"
    if full_size is not None:
        assert tmp.stat().st_size < full_size


# -- the neuron-statistics cache -------------------------------------------------------------------------

_STATS_WRITER = """
    import sys
    from pathlib import Path
    import numpy as np
    from featapp.stats.analysis import NeuronStats, _Layer

    def stats(count, units, value):
        layer = _Layer("dense", "vector", units, values=np.full((count, units), value, np.float32))
        return NeuronStats(model_sha256="m" * 64, dataset_fingerprint="d", paths=[Path(f"{i}.jpg") for i in range(count)],
                           class_names=["cats"], labels=np.zeros(count, np.int32), layers=[layer], input_hw=(150, 150))

    target = Path(sys.argv[1])
    if sys.argv[2] == "replace":
        stats(10, 4, 1.0).save(target)
        print("v1 written", flush=True)
    stats(100_000, 1000, 2.0).save(target)  # 400 MB
    print("v2 written", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-file", "previous-file"])
def test_neuron_statistics_cache(tmp_path, previous):
    target = tmp_path / "neurons-x.npz"
    child = Child(_STATS_WRITER, str(target), "replace" if previous else "first")
    if previous:
        child.wait_for_line("v1 written")
        before = digest(target)
    tmp = child.kill_when_growing(tmp_path, ".neurons-x.npz.*.tmp", 20 * 2**20)
    assert_killed_mid_write(tmp, 400 * 10**6)
    if not previous:
        assert not target.exists()
        return
    assert digest(target) == before
    stats = NeuronStats.load(target)
    assert len(stats) == 10 and stats.values("dense").max() == 1.0


# -- python -m featapp activations --out -----------------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
    env["FEATAPP_PROVIDER"] = "cpu"
    return subprocess.run(
        [sys.executable, "-m", "featapp", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_activations_out(tmp_path):
    photos = []
    for index in range(40):  # 40 images x 6.1 MB of activations: a 245 MB file
        path = tmp_path / f"photo{index}.png"
        Image.fromarray(np.full((60, 80, 3), index * 6, np.uint8)).save(path)
        photos.append(str(path))
    out = tmp_path / "out" / "acts.npz"
    first = _run_cli("activations", photos[0], "--out", str(out))
    assert first.returncode == 0, first.stderr
    before = digest(out)
    child = Child("import sys, runpy; sys.argv[0] = 'featapp'; runpy.run_module('featapp', run_name='__main__')",
                  "activations", *photos, "--out", str(out))  # fmt: skip
    tmp = child.kill_when_growing(out.parent, ".acts.npz.*.tmp", 20 * 2**20)  # files only: not the scratch folder
    assert_killed_mid_write(tmp, 240 * 10**6)
    assert digest(out) == before
    with np.load(out) as archive:
        assert archive["files"].tolist() == [photos[0]]
    # What a killed run leaves behind is hidden and matches .gitignore's .*.tmp*.
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in out.parent.iterdir() if p != out)


# -- top --out pictures ----------------------------------------------------------------------------------------------

_PNG_WRITER = """
    import sys
    from pathlib import Path
    import numpy as np
    from PIL import Image
    from featapp.cli.commands import _save_png

    target = Path(sys.argv[1])
    if sys.argv[2] == "replace":
        _save_png(Image.new("RGB", (30, 20), (1, 2, 3)), target)
        print("v1 written", flush=True)
    noise = np.random.default_rng(0).integers(0, 256, (6000, 6000, 3), dtype=np.uint8)  # 108 MB of noise
    _save_png(Image.fromarray(noise), target)
    print("v2 written", flush=True)
"""


@pytest.mark.slow
def test_top_out_picture(tmp_path):
    target = tmp_path / "top.png"
    child = Child(_PNG_WRITER, str(target), "replace")
    child.wait_for_line("v1 written")
    before = digest(target)
    tmp = child.kill_when_growing(tmp_path, ".top.png.*.tmp", 5 * 2**20)
    assert_killed_mid_write(tmp, 108 * 10**6)
    assert digest(target) == before
    with Image.open(target) as picture:
        picture.load()
        assert picture.size == (30, 20)


# -- exported ONNX files ----------------------------------------------------------------------------------------------

_BYTES_WRITER = """
    import sys
    from pathlib import Path
    from {module} import {function} as write

    target = Path(sys.argv[1])
    if sys.argv[2] == "replace":
        write(target, Path(sys.argv[3]).read_{kind}())
        print("v1 written", flush=True)
    write(target, {payload})
    print("v2 written", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-file", "previous-file"])
def test_exported_onnx_file(tmp_path, previous):
    from featapp.engine.model import load_model

    target = tmp_path / "model.onnx"
    code = _BYTES_WRITER.format(
        module="convert.export", function="write_atomically", kind="bytes", payload="bytes(600 * 10**6)"
    )
    child = Child(code, str(target), "replace" if previous else "first", str(COMMITTED_MODEL))
    if previous:
        child.wait_for_line("v1 written")
    tmp = child.kill_when_growing(tmp_path, ".model.onnx.*.tmp", 20 * 2**20)
    assert_killed_mid_write(tmp, 600 * 10**6)
    if not previous:
        assert not target.exists()
        return
    assert digest(target) == digest(COMMITTED_MODEL)
    assert load_model(target, provider="cpu").layer_names  # the previous model still loads


# -- training: checkpoints and JSON files --------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_json_files(tmp_path):
    target = tmp_path / "history.json"
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps([{"epoch": 1, "val_accuracy": 0.5}]))
    code = _BYTES_WRITER.format(
        module="convert.train",
        function="_atomic_write_text",
        kind="text",
        payload="'[' + ','.join(['{\"epoch\": 1, \"loss\": 0.123456789}'] * 4_000_000) + ']'",  # 140 MB
    )
    child = Child(code, str(target), "replace", str(v1))
    child.wait_for_line("v1 written")
    tmp = child.kill_when_growing(tmp_path, ".history.json.tmp", 10 * 2**20)
    assert_killed_mid_write(tmp, 140 * 10**6)
    assert json.loads(target.read_text()) == [{"epoch": 1, "val_accuracy": 0.5}]


_KERAS_CHECKPOINT_WRITER = """
    import sys
    from pathlib import Path
    import keras
    import numpy as np
    from convert.train import _atomic_save

    inputs = keras.Input((4000,))
    model = keras.Model(inputs, keras.layers.Dense(6000)(inputs))  # 24 M weights: a 96 MB file
    target = Path(sys.argv[1])
    model.set_weights([np.full(w.shape, 1.0, np.float32) for w in model.get_weights()])
    _atomic_save(model, target)
    print("v1 written", flush=True)
    model.set_weights([np.full(w.shape, 2.0, np.float32) for w in model.get_weights()])
    _atomic_save(model, target)
    print("v2 written", flush=True)
"""


@pytest.mark.slow
def test_training_checkpoint(tmp_path):
    target = tmp_path / "best.keras"
    child = Child(_KERAS_CHECKPOINT_WRITER, str(target))
    child.wait_for_line("v1 written")
    before = digest(target)
    tmp = child.kill_when_growing(tmp_path, ".best.tmp.keras", 5 * 2**20)
    assert_killed_mid_write(tmp, target.stat().st_size)
    assert digest(target) == before
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None and "config.json" in archive.namelist()


_KERAS_BACKUP = """
    import json
    import sys
    import keras
    import numpy as np
    from convert.train import atomic_backup_and_restore

    backup, how, mode = sys.argv[1:4]
    inputs = keras.Input((4000,))
    model = keras.Model(inputs, keras.layers.Dense(6000)(inputs))  # 24 M weights: a 96 MB checkpoint
    model.compile(optimizer="sgd", loss="mse")
    callback = (
        atomic_backup_and_restore(backup) if how == "featapp"
        else keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)
    )
    callback.set_model(model)
    if mode == "save":
        for epoch in range(1, 1000):  # epoch e's weights are all e; Keras records e + 1 epochs done
            model.set_weights([np.full(w.shape, float(epoch), np.float32) for w in model.get_weights()])
            callback.on_epoch_end(epoch)
            print(f"saved {epoch}", flush=True)
    else:
        try:
            callback.on_train_begin()
        except OSError as err:
            print("resume failed:", err, flush=True)
        else:
            print(json.dumps({"epoch": model._initial_epoch, "weights": np.unique(model.get_weights()[0]).tolist()}))
"""


def _kill_during_backup(backup: Path, how: str) -> subprocess.CompletedProcess:
    child = Child(_KERAS_BACKUP, str(backup), how, "save")
    child.wait_for_line("saved 2")
    weights = backup / "latest.weights.h5"
    full = weights.stat().st_size
    # Keras rewrites the file in place (it shrinks, then grows); ours writes a temporary file.
    pattern = ".latest.tmp.weights.h5" if how == "featapp" else "latest.weights.h5"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        candidates = list(backup.glob(pattern))
        sizes = [p.stat().st_size for p in candidates if p.exists()]
        if sizes and full * 0.1 < sizes[0] < full * 0.6:
            child.process.send_signal(signal.SIGKILL)
            child.process.wait()
            break
        assert child.process.poll() is None
        time.sleep(0.001)
    else:
        raise AssertionError("never caught a backup being written")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KERAS_BACKUP), str(backup), how, "resume"],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_resume_checkpoint_survives_a_kill(tmp_path):
    resumed = _kill_during_backup(tmp_path / "backup", "featapp")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = json.loads(resumed.stdout.strip().splitlines()[-1])
    # A complete epoch: its weights are all the same number, and Keras resumes after it.
    assert len(state["weights"]) == 1
    assert state["epoch"] == state["weights"][0] + 1
    leftovers = sorted(p.name for p in (tmp_path / "backup").iterdir())
    assert leftovers == [".latest.tmp.weights.h5", "latest.weights.h5", "training_metadata.json"]


@pytest.mark.slow
def test_control_keras_own_resume_checkpoint_breaks_on_a_kill(tmp_path):
    """Why convert.train has its own: Keras' BackupAndRestore, killed the same way, leaves
    a checkpoint that stops every resume."""
    resumed = _kill_during_backup(tmp_path / "backup", "keras")
    assert "resume failed" in resumed.stdout, resumed.stdout + resumed.stderr[-2000:]


def test_training_uses_the_atomic_resume_checkpoint(tmp_path):
    from convert.train import TrainConfig, _callbacks

    callbacks = _callbacks(
        TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path)), tmp_path, with_validation=True, model=None
    )
    backups = [c for c in callbacks if c is not None and type(c).__name__.endswith("BackupAndRestore")]
    assert [type(c).__name__ for c in backups] == ["AtomicBackupAndRestore"]
    # The Keras internals it relies on are there in this Keras version.
    for name in ("_weights_path", "_training_metadata_path", "_current_epoch", "_last_batch_seen", "backup_dir"):
        assert hasattr(backups[0], name), name
    shutil.rmtree(tmp_path, ignore_errors=True)
