"""featapp.engine.snapshots: the index of training snapshots, and trunk-only models loaded like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featapp.engine.model import ModelError
from featapp.engine.snapshots import SNAPSHOTS_ENV, Snapshot, index_json, load_snapshots, same_network


@pytest.fixture(scope="module")
def trunk_file(tmp_path_factory) -> Path:
    """A real trunk-only ONNX file, exported from a tiny Keras model."""
    pytest.importorskip("tensorflow")
    from convert.export import ExportOptions, export_model
    from tests.helpers.keras_builders import lecture_like

    path = tmp_path_factory.mktemp("trunk") / "trunk.onnx"
    export_model(lecture_like(), path, ExportOptions(trunk=True), log=lambda line: None)
    return path


def _folder(tmp_path: Path, trunk_file: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for row in rows:
        if isinstance(row.get("file"), str) and "/" not in row["file"]:
            shutil.copyfile(trunk_file, folder / row["file"])
    (folder / "index.json").write_text(json.dumps({"schema": 1, "snapshots": rows}))
    return folder


GOOD = [
    {"epoch": 5, "val_accuracy": 0.7125, "file": "epoch_005.onnx", "is_best": False},
    {"epoch": 0, "val_accuracy": None, "file": "epoch_000.onnx", "is_best": False},
    {"epoch": 12, "val_accuracy": 0.8, "file": "epoch_012.onnx", "is_best": True},
]


def test_snapshots_load_in_epoch_order_and_have_no_classifier(tmp_path, trunk_file):
    folder = _folder(tmp_path, trunk_file, GOOD)
    snapshots = load_snapshots(folder)
    assert [s.epoch for s in snapshots] == [0, 5, 12]
    assert [s.is_best for s in snapshots] == [False, False, True]
    assert snapshots[0].val_accuracy is None and snapshots[1].val_accuracy == 0.7125
    assert snapshots[2].path == folder / "epoch_012.onnx"
    assert [s.label for s in snapshots] == [
        "epoch 0 (initial weights)",
        "epoch 5: 71% on validation",
        "epoch 12 (best): 80% on validation",
    ]
    model = snapshots[1].load(provider="cpu")
    assert not model.has_classifier
    assert model.layer_names == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]
    images = np.zeros((1, 32, 32, 3), np.uint8)
    assert model.activations(images)["conv2d"].shape == (1, 4, 30, 30)
    with pytest.raises(ModelError, match="no classifier"):
        model.predict(images)


def test_the_folder_comes_from_the_environment(tmp_path, trunk_file, monkeypatch):
    folder = _folder(tmp_path, trunk_file, GOOD)
    monkeypatch.setenv(SNAPSHOTS_ENV, str(folder))
    assert [s.epoch for s in load_snapshots()] == [0, 5, 12]


def test_index_round_trip(tmp_path, trunk_file):
    folder = _folder(tmp_path, trunk_file, GOOD)
    snapshots = load_snapshots(folder)
    (folder / "index.json").write_text(index_json(reversed(snapshots)))
    assert load_snapshots(folder) == snapshots
    with pytest.raises(ValueError, match="nan"):
        index_json([Snapshot(3, float("nan"), Path("epoch_003.onnx"))])


def _row(**changes):
    return [{**GOOD[0], **changes}]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "lists no snapshots"),
        (_row(epoch=-1), "epoch -1 is not a whole number"),
        (_row(epoch="5"), "epoch '5' is not a whole number"),
        (_row(val_accuracy=1.5), "val_accuracy 1.5 of epoch 5 is not between 0 and 1"),
        (_row(file="../elsewhere.onnx"), "is not a plain file name"),
        (_row(is_best="yes"), "is_best 'yes'"),
        ([GOOD[0], {**GOOD[0]}], "lists an epoch twice"),
        ([{**GOOD[0], "is_best": True}, GOOD[2]], "more than one epoch as the best"),
        ([{"epoch": 1, "file": "epoch_001.onnx"}, {"epoch": 2}], "damaged"),
    ],
)
def test_damaged_indexes_are_refused(tmp_path, trunk_file, rows, message):
    folder = _folder(tmp_path, trunk_file, rows)
    with pytest.raises(ModelError, match=message) as caught:
        load_snapshots(folder)
    assert "python -m convert snapshots" in str(caught.value)


def test_missing_folder_index_or_file(tmp_path, trunk_file):
    with pytest.raises(ModelError, match="No snapshot folder at"):
        load_snapshots(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no index.json"):
        load_snapshots(tmp_path / "empty")
    folder = _folder(tmp_path, trunk_file, GOOD)
    (folder / "epoch_005.onnx").unlink()
    with pytest.raises(ModelError, match="lacks epoch_005.onnx"):
        load_snapshots(folder)
    (folder / "index.json").write_text("{broken")
    with pytest.raises(ModelError, match="is damaged"):
        load_snapshots(folder)
    (folder / "index.json").write_text(json.dumps({"schema": 2, "snapshots": GOOD}))
    with pytest.raises(ModelError, match="schema 2 is not the supported 1"):
        load_snapshots(folder)


# -- the best snapshot and the final model -----------------------------------------------------------------


def test_the_committed_model_is_its_best_snapshot_and_no_other():
    """The committed model kept its best epoch, which is also a snapshot: one network saved twice."""
    from featapp.engine.model import load_model

    model = load_model(provider="cpu")
    snaps = load_snapshots()
    best = [s for s in snaps if s.is_best]
    assert len(best) == 1
    assert same_network(load_model(best[0].path, provider="cpu"), model)
    assert not any(same_network(load_model(s.path, provider="cpu"), model) for s in snaps if not s.is_best)


def test_one_filter_changed_is_another_network(tmp_path):
    import onnx
    from onnx import numpy_helper

    from featapp.engine.model import load_model
    from tests.helpers.appmodels import COMMITTED_MODEL, trunk_of

    model = load_model(COMMITTED_MODEL, provider="cpu")
    same = trunk_of(COMMITTED_MODEL, tmp_path / "same.onnx")
    nudged = onnx.load(str(same))
    # Layer 1's filters take the photo's 3 colours; nudge the centre weight of the one that
    # responds most to a photo, so the change shows in its map (a dead filter's would not).
    photo = np.asarray(np.random.default_rng(7).integers(0, 256, (150, 150, 3)), dtype=np.uint8)
    liveliest = int(model.activations(photo)[model.layers[0].name][0].mean(axis=(1, 2)).argmax())
    index = next(
        i for i, init in enumerate(nudged.graph.initializer) if numpy_helper.to_array(init).shape[1:] == (3, 3, 3)
    )
    weights = numpy_helper.to_array(nudged.graph.initializer[index]).copy()
    weights[liveliest, :, 1, 1] += 0.05
    nudged.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights, nudged.graph.initializer[index].name))
    onnx.save(nudged, str(tmp_path / "nudged.onnx"))
    assert same_network(load_model(same, provider="cpu"), model)
    assert not same_network(load_model(tmp_path / "nudged.onnx", provider="cpu"), model)


def test_snapshots_belong_to_their_model_only(tmp_path):
    """The committed snapshots go with the lecture's model, not with another model whose first
    layer is also called conv2d; an index with an identity is matched by architecture and,
    when both say one, by training run."""
    from dataclasses import replace

    from featapp.engine.metadata import IDENTITY_KEY, model_identity
    from featapp.engine.model import load_model
    from featapp.engine.snapshots import belongs_to, own_snapshots
    from tests.helpers import modelfactory
    from tests.helpers.appmodels import COMMITTED_MODEL

    lecture = load_model(COMMITTED_MODEL, provider="cpu")
    committed = load_snapshots(COMMITTED_MODEL.parent / "snapshots")
    assert own_snapshots(committed, lecture) == committed
    other = load_model(modelfactory.build(modelfactory.TinyNet(channels=3), tmp_path / "other.onnx"), provider="cpu")
    assert other.layer_names[0] == lecture.layer_names[0] == "conv2d"
    assert own_snapshots(committed, other) == []

    architecture = model_identity(lecture.spec)["architecture"]
    run_a = replace(committed[0], identity={"architecture": architecture, "run": "run-a"})
    no_run = replace(committed[0], identity={"architecture": architecture})
    saved = lecture.spec.extra.get(IDENTITY_KEY)
    try:
        for said, belongs in ({"run": "run-a"}, True), ({"run": "run-b"}, False), ({}, True):
            lecture.spec.extra[IDENTITY_KEY] = said  # as if the converter had recorded this run
            vars(lecture).pop("identity", None)  # a loaded model's identity is computed once
            assert belongs_to(run_a, lecture) is belongs, said  # a model that says no run: the architecture decides
            assert belongs_to(no_run, lecture)  # nor does a snapshot that says none
    finally:
        lecture.spec.extra[IDENTITY_KEY] = saved
        vars(lecture).pop("identity", None)
    assert not belongs_to(run_a, other)


def test_index_keeps_the_model_identity(tmp_path, trunk_file):
    identity = {"architecture": "arch-0123456789abcdef", "run": "run-1"}
    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(trunk_file, folder / "epoch_000.onnx")
    (folder / "index.json").write_text(index_json([Snapshot(0, None, folder / "epoch_000.onnx")], identity))
    assert load_snapshots(folder)[0].identity == identity
