"""The atlas (issue 29, item 5): every channel's picture computed once, at the app's settings, in
a file beside the model; what the app then shows, stale and damaged files, and resuming."""

from __future__ import annotations

import io
import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featapp.engine.model import load_model
from featapp.explain import atlas as atlas_module
from featapp.explain import featurevis
from featapp.explain.atlas import AtlasError, atlas_path, build_atlas, read_atlas, usable_atlas
from featapp.explain.gradients import load_gradients
from tests.helpers.modelfactory import Conv, TinyNet, build, with_gradients

STEPS = 4  # the app's steps here (FEATAPP_VIS_STEPS); the settings are what is compared, not their size


def _tiny(folder, channels: int = 3, seed: int = 0, name: str = "tiny.onnx"):
    # 20 x 24: layer 1's cells see 3 x 3 pixels (the centre-neuron objective), layer 2's 5 x 5,
    # a quarter of the shorter side (the whole-map objective): both kinds of picture.
    folder.mkdir(parents=True, exist_ok=True)
    net = TinyNet(height=20, width=24, channels=channels, convs=(Conv(4), Conv(5)), seed=seed)
    return load_gradients(load_model(with_gradients(build(net, folder / name)), provider="cpu"))


@pytest.fixture
def grads(tmp_path):
    return _tiny(tmp_path)


def _spy(monkeypatch) -> list[tuple[str, tuple[int, ...]]]:
    """Record every call of the optimisation the atlas makes (and let it run)."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    real = atlas_module.visualize

    def spy(grads, layer, channels, **kwargs):
        calls.append((layer, tuple(channels)))
        return real(grads, layer, channels, **kwargs)

    monkeypatch.setattr(atlas_module, "visualize", spy)
    return calls


@pytest.mark.parametrize("colours", [3, 1])
def test_an_atlas_at_8_bits_holds_exactly_what_the_app_computes_on_demand(tmp_path, colours):
    grads = _tiny(tmp_path, channels=colours)
    built = build_atlas(grads, steps=STEPS, save_every=3, bits=8)
    assert built.path == atlas_path(grads.model.path) == tmp_path / "tiny.atlas.zip"
    assert built.model_sha256 == grads.model.sha256 and built.bits == 8
    assert built.settings == featurevis.picture_settings(STEPS, 0)
    assert {name: layer.objective for name, layer in built.layers.items()} == {
        "conv2d": "neuron",
        "conv2d_1": "channel",
    }
    for name, layer in built.layers.items():
        assert layer.complete and layer.pictures.channels == tuple(range(layer.channels))
        # What the app computes when there is no atlas: the layer's grid, and one channel alone.
        grid = featurevis.layer_pictures(grads, name, cache_dir=tmp_path / "cache", steps=STEPS)
        assert np.array_equal(layer.pictures.shown(), grid.shown())
        np.testing.assert_array_equal(layer.pictures.activations, grid.activations)
        np.testing.assert_array_equal(layer.pictures.start_activations, grid.start_activations)
        alone = featurevis.channel_picture(grads, name, 2, cache_dir=tmp_path / "alone", steps=STEPS)
        assert alone is not None
        assert np.array_equal(layer.pictures.of_channel(2).shown(), alone.shown())
        assert layer.pictures.box == grid.box and layer.pictures.shown().shape[-1] == colours
    assert usable_atlas(grads.model, steps=STEPS) is not None


def test_at_7_bits_every_value_is_within_one_level_and_the_activations_are_the_stored_pictures(tmp_path, grads):
    built = build_atlas(grads, steps=STEPS)  # the default
    assert built.bits == atlas_module.BITS == 7
    for name, layer in built.layers.items():
        grid = featurevis.layer_pictures(grads, name, cache_dir=tmp_path / "cache", steps=STEPS)
        stored = layer.pictures.shown()
        assert np.abs(stored.astype(int) - grid.shown()).max() == 1  # rounded, and by no more than one level
        assert set(np.unique(stored)) <= set(range(0, 256, 2)) | {255}
        measured = featurevis.picture_activations(
            grads, name, layer.pictures.channels, layer.pictures.images, layer.objective
        )
        np.testing.assert_array_equal(layer.pictures.activations, measured)  # what the caption says is of this picture
        np.testing.assert_allclose(layer.pictures.activations, grid.activations, rtol=0.05, atol=1e-3)


def test_an_8_bit_atlas_is_stored_at_fewer_bits_without_optimising_again(tmp_path, grads, monkeypatch):
    build_atlas(grads, tmp_path / "exact.atlas.zip", steps=STEPS, bits=8)
    direct = build_atlas(grads, tmp_path / "direct.atlas.zip", steps=STEPS, bits=6)
    calls = _spy(monkeypatch)
    rounded = build_atlas(grads, tmp_path / "exact.atlas.zip", steps=STEPS, bits=6)
    assert calls == [] and rounded.bits == 6
    for name, layer in direct.layers.items():
        assert np.array_equal(rounded.layers[name].pictures.shown(), layer.pictures.shown())
        np.testing.assert_array_equal(rounded.layers[name].pictures.activations, layer.pictures.activations)
    build_atlas(grads, tmp_path / "exact.atlas.zip", steps=STEPS, bits=8)  # more bits than stored: optimised again
    assert [layer for layer, _ in calls] == ["conv2d", "conv2d_1"]


def test_a_stored_neuron_picture_keeps_only_what_is_shown(grads):
    layer = build_atlas(grads, steps=STEPS, layers=["conv2d"]).layers["conv2d"]
    with zipfile.ZipFile(atlas_path(grads.model.path)) as archive:
        names = [n for n in archive.namelist() if n.startswith("layer001/")]
        sizes = {_picture_size(archive.read(n)) for n in names}
    top, left, bottom, right = featurevis.shown_region(layer.box, (20, 24))
    assert len(names) == 4 and sizes == {(right - left, bottom - top)}


def _picture_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.size


def test_an_atlas_for_another_model_or_other_settings_is_ignored_with_a_log_line(tmp_path, grads, caplog):
    other = _tiny(tmp_path / "other", seed=7)
    build_atlas(other, steps=STEPS)
    shutil.copyfile(atlas_path(other.model.path), atlas_path(grads.model.path))
    with caplog.at_level(logging.WARNING, logger="featapp.explain.atlas"):
        assert usable_atlas(grads.model, steps=STEPS) is None
    assert "made for another model file" in caplog.text and str(atlas_path(grads.model.path)) in caplog.text
    caplog.clear()
    build_atlas(grads, steps=STEPS)  # started again for this model: the stale pictures are not kept
    assert "Starting the atlas" in caplog.text
    assert usable_atlas(grads.model, steps=STEPS) is not None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="featapp.explain.atlas"):
        assert usable_atlas(grads.model, steps=STEPS + 1) is None  # a server with FEATAPP_VIS_STEPS=5
    assert f"steps {STEPS} instead of {STEPS + 1}" in caplog.text


def _rewrite(path, change) -> None:
    """Rewrite the atlas zip with ``change(name, data)`` applied to each member (None drops it)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            new = change(name, data)
            if new is not None:
                archive.writestr(name, new)


def _other_index(data: bytes, edit) -> bytes:
    index = json.loads(data)
    edit(index)
    return json.dumps(index).encode()


DAMAGE = {
    "cut-off": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "not a zip": lambda path: path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n"),
    "empty": lambda path: path.write_bytes(b""),
    "garbled picture": lambda path: path.write_bytes(
        (lambda raw, at: raw[:at] + bytes(b ^ 0x5A for b in raw[at : at + 32]) + raw[at + 32 :])(
            path.read_bytes(), path.read_bytes().index(b"VP8L") + 8
        )
    ),
    "picture missing": lambda path: _rewrite(path, lambda n, d: None if n == "layer002/channel0003.webp" else d),
    "foreign member": lambda path: _add(path, "../../evil.txt", b"x"),
    "wrong picture size": lambda path: _rewrite(
        path, lambda n, d: atlas_module._encode(np.zeros((3, 3, 3), np.uint8)) if n.startswith("layer002/") else d
    ),
    "not a number": lambda path: _rewrite(
        path,
        lambda n, d: (
            _other_index(d, lambda i: i["layers"][0]["pictures"][0].update(activation="NaN"))
            if n == "atlas.json"
            else d
        ),
    ),
    "channel twice": lambda path: _rewrite(
        path,
        lambda n, d: (
            _other_index(d, lambda i: i["layers"][1]["pictures"][1].update(channel=0)) if n == "atlas.json" else d
        ),
    ),
    "zip bomb": lambda path: _add(path, "layer009/channel0001.webp", bytes(10_000_000)),
    "index not JSON": lambda path: _rewrite(path, lambda n, d: b"[" * 100_000 if n == "atlas.json" else d),
    "one file for two channels": lambda path: _rewrite(
        path,
        lambda n, d: (
            _other_index(d, lambda i: i["layers"][1]["pictures"][1].update(file="layer002/channel0001.webp"))
            if n == "atlas.json"
            else d
        ),
    ),
    "a model no one makes": lambda path: _rewrite(
        path, lambda n, d: _other_index(d, lambda i: i.update(input=[10**6, 10**6, 3])) if n == "atlas.json" else d
    ),
}


def _add(path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_atlas_is_ignored_with_a_log_line(grads, caplog, damage):
    build_atlas(grads, steps=STEPS)
    path = atlas_path(grads.model.path)
    DAMAGE[damage](path)
    with caplog.at_level(logging.WARNING, logger="featapp.explain.atlas"):
        assert usable_atlas(grads.model, steps=STEPS) is None
    assert f"the atlas '{path}' is damaged or not one featapp wrote" in caplog.text
    assert "Traceback" not in caplog.text and len(caplog.records) == 1
    # Building again starts afresh over the damaged file (and says so).
    caplog.clear()
    again = build_atlas(grads, steps=STEPS)
    assert again.picture_count == 9 and "Starting the atlas again" in caplog.text


def test_an_interrupted_build_keeps_its_finished_channels_and_goes_on(tmp_path, grads, monkeypatch):
    whole = build_atlas(grads, tmp_path / "whole.atlas.zip", steps=STEPS)
    out = tmp_path / "interrupted.atlas.zip"

    def stop_in_the_third_save(done: int, total: int) -> None:
        if done > 4 * STEPS:  # two saves of 2 channels are written; the third is being computed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atlas(grads, out, steps=STEPS, save_every=2, progress=stop_in_the_third_save)
    kept = read_atlas(out)
    assert kept.layers["conv2d"].pictures.channels == (0, 1, 2, 3) and "conv2d_1" not in kept.layers
    calls = _spy(monkeypatch)
    finished = build_atlas(grads, out, steps=STEPS, save_every=2)
    assert calls == [("conv2d_1", (0, 1)), ("conv2d_1", (2, 3)), ("conv2d_1", (4,))]  # only what was left
    for name, layer in whole.layers.items():
        assert np.array_equal(finished.layers[name].pictures.shown(), layer.pictures.shown())
        np.testing.assert_array_equal(finished.layers[name].pictures.activations, layer.pictures.activations)
    calls.clear()
    assert build_atlas(grads, out, steps=STEPS).picture_count == 9 and calls == []  # nothing left to do


def test_layers_limit_a_build_and_a_later_build_adds_the_rest(grads, monkeypatch):
    first = build_atlas(grads, layers=["conv2d_1"], steps=STEPS)
    assert list(first.layers) == ["conv2d_1"] and first.complete_layer("conv2d") is None
    calls = _spy(monkeypatch)
    both = build_atlas(grads, steps=STEPS)
    assert [layer for layer, _ in calls] == ["conv2d"]
    assert list(both.layers) == ["conv2d", "conv2d_1"]  # in the model's order


def test_layers_without_maps_or_names_are_refused(grads):
    with pytest.raises(AtlasError, match="flatten has no 2-D maps"):
        build_atlas(grads, layers=["flatten"], steps=STEPS)
    with pytest.raises(AtlasError, match="no layer 'conv9'"):
        build_atlas(grads, layers=["conv9"], steps=STEPS)
    assert not atlas_path(grads.model.path).exists()


def test_a_model_converted_from_pytorch_gets_an_atlas(tmp_path):
    """Any converted model: the PyTorch-style ResNet fixture (layer names with dots, convolutions
    without their ReLU, a residual Add), converted with its gradient model and no TensorFlow."""
    from convert.onnx_source import OnnxOptions, export_onnx

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "onnx" / "torch_legacy.onnx"
    options = OnnxOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    export_onnx(fixture, tmp_path / "torch.onnx", options, log=lambda _: None)
    grads = load_gradients(load_model(tmp_path / "torch.onnx", provider="cpu"))
    built = build_atlas(grads, steps=STEPS)
    assert list(built.layers) == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert [layer.objective for layer in built.layers.values()] == ["neuron", "channel", "channel"]
    grid = featurevis.layer_pictures(grads, "layer1.0.conv2", cache_dir=tmp_path / "cache", steps=STEPS)
    assert np.abs(built.layers["layer1.0.conv2"].pictures.shown().astype(int) - grid.shown()).max() <= 1
    assert usable_atlas(grads.model, steps=STEPS) is not None
