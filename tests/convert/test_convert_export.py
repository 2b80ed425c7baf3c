"""The Keras -> ONNX exporter on tiny models built here: names, NCHW shapes, metadata,
receptive fields and agreement with Keras, through ONNX Runtime and featapp.load_model.

The exporter verifies itself; these tests check its results independently (other
images, Keras run on its own, hand-computed geometry), and that its refusals work.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convert.errors import ConversionError  # noqa: E402
from convert.export import ExportOptions, export, export_model  # noqa: E402
from featapp.engine.geometry import ReceptiveField, receptive_box  # noqa: E402
from featapp.engine.metadata import METADATA_KEY, ModelSpec  # noqa: E402
from featapp.engine.model import ModelError, load_model  # noqa: E402
from featapp.explain.backward import gradient_path  # noqa: E402
from tests.helpers.keras_builders import (  # noqa: E402
    branchy,
    grayscale_nonsquare,
    keras_layer_outputs,
    lecture_like,
    nchw,
    nested_book_style,
    uint8_images,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _export(model_or_path, out: Path, **options) -> tuple[ModelSpec, list[str]]:
    lines: list[str] = []
    opts = ExportOptions(**options)
    if isinstance(model_or_path, (str, Path)):
        spec = export(model_or_path, out, opts, log=lines.append)
    else:
        spec = export_model(model_or_path, out, opts, log=lines.append)
    return spec, lines


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _spec_in_file(path: Path) -> ModelSpec:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ModelSpec.from_json(props[METADATA_KEY])


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-6)


def test_keras3_sequential_outputs_names_shapes_metadata(tmp_path):
    model = lecture_like()
    source = tmp_path / "tiny.keras"
    model.save(source)
    out = tmp_path / "tiny.onnx"
    spec, lines = _export(source, out)

    session = _session(out)
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape == ["batch", 32, 32, 3]
    names = ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "flatten", "dropout", "dense", "dense_1"]
    assert [o.name for o in session.get_outputs()] == names
    shapes = {o.name: o.shape[1:] for o in session.get_outputs()}
    assert shapes["conv2d"] == [4, 30, 30]  # NCHW
    assert shapes["max_pooling2d_1"] == [8, 6, 6]
    assert shapes["flatten"] == [288] and shapes["dense_1"] == [1]
    assert onnx.load(str(out)).opset_import[0].version == 17

    assert spec == _spec_in_file(out)
    assert (spec.input.height, spec.input.width, spec.input.channels) == (32, 32, 3)
    assert spec.input_scale == pytest.approx(1 / 255) and spec.input_offset == 0
    assert spec.class_names == ("cat", "dog") and spec.output_activation == "sigmoid"
    assert spec.layout == "NCHW" and spec.input_name == "input"
    layers = {layer.name: layer for layer in spec.layers}
    assert [layer.kind for layer in spec.layers][:2] == ["Conv2D", "MaxPooling2D"]
    assert layers["conv2d"].kernel == (3, 3) and layers["conv2d"].stride == (1, 1)
    assert layers["conv2d"].padding == "valid" and layers["conv2d"].activation == "relu"
    assert layers["max_pooling2d"].kernel == (2, 2) and layers["max_pooling2d"].stride == (2, 2)
    assert layers["conv2d"].params == 3 * 3 * 3 * 4 + 4
    assert layers["dense"].params == 288 * 8 + 8
    assert layers["flatten"].output_shape == (288,) and layers["conv2d_1"].output_shape == (13, 13, 8)
    # by hand: conv 3 -> (3, 1, 1.0); pool 2 -> (4, 2, 1.5); conv 3 -> (4+2*2, 2, 1.5+2) = (8, 2, 3.5)
    assert layers["conv2d"].receptive_field == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    assert layers["max_pooling2d"].receptive_field == ReceptiveField((4, 4), (2, 2), (1.5, 1.5))
    assert layers["conv2d_1"].receptive_field == ReceptiveField((8, 8), (2, 2), (3.5, 3.5))
    assert layers["dense"].receptive_field is None
    assert spec.source_file == "tiny.keras"
    assert spec.source_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(spec.versions)
    assert spec.extra["trunk"] is False and "Keras 3" in spec.extra["source_format"]
    assert any(line.startswith("Verifying") for line in lines) and any(line.startswith("Wrote") for line in lines)

    # Independent check: other images, every layer computed by Keras alone.
    images = uint8_images((32, 32, 3))
    want = keras_layer_outputs(model, names, images.astype(np.float32) / 255)
    feature_model = load_model(out, provider="cpu")
    got = feature_model.activations(images)
    for name in names:
        assert got[name].shape == nchw(want[name]).shape
        assert _relative(nchw(want[name]), got[name]) < 1e-5, name
    probabilities = feature_model.predict(images).probabilities
    assert np.allclose(probabilities[:, 1], want["dense_1"][:, 0], atol=1e-6)


def test_legacy_h5_written_by_keras3(tmp_path):
    model = lecture_like()
    source = tmp_path / "tiny.h5"
    model.save(source)
    spec, _ = _export(source, tmp_path / "tiny.onnx")
    assert "HDF5" in spec.extra["source_format"] and "Keras 3" in spec.extra["source_format"]
    images = uint8_images((32, 32, 3))
    got = load_model(tmp_path / "tiny.onnx", provider="cpu").activations(images, layers=["dense_1"])["dense_1"]
    want = model.predict(images.astype(np.float32) / 255, verbose=0)
    assert np.allclose(got, want, atol=1e-6)


def test_files_are_read_by_their_content_not_their_name(tmp_path):
    model = lecture_like()
    model.save(tmp_path / "real.keras")
    model.save(tmp_path / "real.h5")
    (tmp_path / "real.keras").rename(tmp_path / "zip_named.h5")
    (tmp_path / "real.h5").rename(tmp_path / "hdf5_named.model")
    for name, kind in [("zip_named.h5", ".keras file"), ("hdf5_named.model", "HDF5")]:
        spec, _ = _export(tmp_path / name, tmp_path / f"{name}.onnx")
        assert kind in spec.extra["source_format"]
        assert [layer.name for layer in spec.layers][-1] == "dense_1"


def test_receptive_fields_match_what_the_network_really_sees(tmp_path):
    """Changing pixels outside a cell's receptive box never changes the cell; the box's corner pixel does."""
    model = grayscale_nonsquare()
    out = tmp_path / "gray.onnx"
    spec, _ = _export(model, out)
    feature_model = load_model(out, provider="cpu")
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (1, 64, 48, 1)).astype(np.uint8)
    reference = feature_model.activations(base)
    for layer in [layer for layer in spec.layers if layer.is_spatial]:
        rows, cols = layer.output_shape[:2]
        for row, col in [(0, 0), (rows // 2, cols // 3), (rows - 1, cols - 1)]:
            top, left, bottom, right = receptive_box(layer.receptive_field, row, col, (64, 48))
            outside = rng.integers(0, 256, base.shape).astype(np.uint8)
            outside[0, top:bottom, left:right] = base[0, top:bottom, left:right]
            changed = feature_model.activations(outside, layers=[layer.name])[layer.name]
            assert np.array_equal(changed[0, :, row, col], reference[layer.name][0, :, row, col]), (
                layer.name,
                row,
                col,
            )
    # The first convolution is linear, so its box is also tight: its corner pixel matters.
    first = spec.layers[0]
    top, left, bottom, right = receptive_box(first.receptive_field, 5, 5, (64, 48))
    for y, x in [(top, left), (bottom - 1, right - 1)]:
        poked = base.copy()
        poked[0, y, x] = 255 - poked[0, y, x]
        value = feature_model.activations(poked, layers=[first.name])[first.name][0, :, 5, 5]
        assert not np.allclose(value, reference[first.name][0, :, 5, 5])


def test_grayscale_non_square_input(tmp_path, cat_photo):
    model = grayscale_nonsquare()
    out = tmp_path / "gray.onnx"
    spec, _ = _export(model, out)
    assert (spec.input.height, spec.input.width, spec.input.channels) == (64, 48, 1)
    session = _session(out)
    assert session.get_inputs()[0].shape == ["batch", 64, 48, 1]
    assert {o.name: o.shape[1:] for o in session.get_outputs()} == {
        "conv_s2": [4, 32, 24],
        "conv_same": [4, 32, 24],
        "pool": [4, 16, 12],
        "flatten": [768],
        "probs": [2],
    }
    layers = {layer.name: layer for layer in spec.layers}
    # by hand (see tests/engine/test_metadata.py): k5 s2 same pads 1 pixel before on both axes
    assert layers["conv_s2"].receptive_field == ReceptiveField((5, 5), (2, 2), (1.0, 1.0))
    assert layers["pool"].receptive_field == ReceptiveField((11, 11), (4, 4), (2.0, 2.0))
    assert spec.class_names == ("class 0", "class 1") and spec.output_activation == "softmax"
    # A real photo through featapp's own preparation (grayscale, resized to 64 x 48).
    feature_model = load_model(out, provider="cpu")
    batch = feature_model.prepare([cat_photo])
    assert batch.shape == (1, 64, 48, 1)
    want = model.predict(batch.astype(np.float32) / 255, verbose=0)
    assert np.allclose(feature_model.predict(batch).probabilities, want, atol=1e-6)


def test_functional_model_with_branches(tmp_path):
    model = branchy()
    source = tmp_path / "branchy.keras"
    model.save(source)
    spec, lines = _export(source, tmp_path / "branchy.onnx", class_names=("cat", "dog", "bird"))
    # Concatenate and the dilated conv are differentiated, and checked against tf.GradientTape.
    assert gradient_path(tmp_path / "branchy.onnx").is_file()
    assert any(line.startswith("  d(logit of probs)") for line in lines)
    names = ["stem", "bn", "relu", "sep", "dilated", "add", "avg", "max", "concat", "gap", "probs"]
    assert [layer.name for layer in spec.layers] == names
    assert spec.class_names == ("cat", "dog", "bird") and spec.output_activation == "softmax"
    layers = {layer.name: layer for layer in spec.layers}
    assert layers["dilated"].dilation == (2, 2)
    # 'same' with stride 1 keeps cells centred on pixels: stem 3 pads 1 -> (3, 1, 0+(1-1)*1 = 0);
    # sep 3 -> (5, 1, 0); dilated 3 with rate 2 spans 5 and pads 2 -> (5+4 = 9, 1, 0+(2-2) = 0)
    assert layers["stem"].receptive_field == ReceptiveField((3, 3), (1, 1), (0.0, 0.0))
    assert layers["dilated"].receptive_field == ReceptiveField((9, 9), (1, 1), (0.0, 0.0))
    assert layers["add"].receptive_field == layers["dilated"].receptive_field  # the wider branch
    # pool 2/2 after the add: (9+1 = 10, 2, 0+0.5 = 0.5)
    assert layers["concat"].receptive_field == ReceptiveField((10, 10), (2, 2), (0.5, 0.5))
    images = uint8_images((24, 24, 3))
    want = keras_layer_outputs(model, names, images.astype(np.float32) / 255)
    got = load_model(tmp_path / "branchy.onnx", provider="cpu").activations(images)
    for name in names:
        assert _relative(nchw(want[name]), got[name]) < 1e-5, name


def test_default_softmax_class_names_and_wrong_counts(tmp_path):
    spec, _ = _export(branchy(), tmp_path / "b.onnx")
    assert spec.class_names == ("class 0", "class 1", "class 2")
    with pytest.raises(ConversionError, match="3 output classes, but 2 class names"):
        _export(branchy(), tmp_path / "c.onnx", class_names=("a", "b"))
    with pytest.raises(ConversionError, match="needs 2 class names"):
        _export(lecture_like(), tmp_path / "d.onnx", class_names=("a", "b", "c"))
    spec, _ = _export(lecture_like(), tmp_path / "e.onnx", class_names=("negative", "positive"))
    assert spec.class_names == ("negative", "positive")
    assert not (tmp_path / "c.onnx").exists() and not (tmp_path / "d.onnx").exists()


def test_nested_model_with_augmentation_and_rescaling(tmp_path):
    model = nested_book_style()
    source = tmp_path / "book.keras"
    model.save(source)
    spec, lines = _export(source, tmp_path / "book.onnx")
    assert [layer.name for layer in spec.layers] == ["base_conv", "base_pool", "head_conv", "flatten", "p_dog"]
    assert spec.extra["dropped_layers"] == ["flip", "rotate"]
    assert spec.extra["folded_rescaling"] == {"layer": "rescaling", "scale": pytest.approx(1 / 255), "offset": 0.0}
    assert spec.input_scale == pytest.approx(1 / 255) and spec.input_offset == 0
    assert any("left out 2 augmentation layer(s)" in line for line in lines)
    # The model takes 0..255 itself; featapp feeds pixels * input_scale to the unpacked graph.
    images = uint8_images((28, 28, 3))
    want = model.predict(images.astype(np.float32), verbose=0)
    feature_model = load_model(tmp_path / "book.onnx", provider="cpu")
    assert np.allclose(feature_model.predict(images).probabilities[:, 1], want[:, 0], atol=1e-6)
    inner = keras.Model(model.get_layer("base").inputs, model.get_layer("base").get_layer("base_conv").output)
    want_conv = inner.predict(images.astype(np.float32) / 255, verbose=0)
    got_conv = feature_model.activations(images, layers=["base_conv"])["base_conv"]
    assert _relative(nchw(want_conv), got_conv) < 1e-5


def test_a_rescaling_that_is_not_the_only_reader_of_the_input_stays_a_layer(tmp_path):
    from keras import layers

    inputs = keras.Input((16, 16, 3))
    scaled = layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inputs)
    raw = layers.Conv2D(2, 3, padding="same", name="raw_conv")(inputs)
    x = layers.Concatenate(name="both")([scaled, raw])
    x = layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="out")(x))
    spec, _ = _export(model, tmp_path / "r.onnx")
    assert "scale" in [layer.name for layer in spec.layers]
    assert "folded_rescaling" not in spec.extra
    assert spec.input_scale == 1.0 and spec.input_offset == 0.0  # the model takes 0..255 itself
    images = uint8_images((16, 16, 3))
    got = load_model(tmp_path / "r.onnx", provider="cpu").predict(images).probabilities[:, 1]
    # Raw 0..255 pixels reach the dense layer unscaled, so its logit is hundreds of times
    # larger than in a model that scales first, and float32 summation order alone moved p by
    # 1.4e-5 in one CI run (unseeded weights): 1e-4 still catches any real disagreement.
    assert np.allclose(got, model.predict(images.astype(np.float32), verbose=0)[:, 0], atol=1e-4)


def test_layer_name_clashes_between_nested_models_get_paths(tmp_path):
    from keras import layers

    def block(name):
        return keras.Sequential([keras.Input((12, 12, 3)), layers.Conv2D(3, 3, padding="same", name="conv")], name=name)

    inputs = keras.Input((12, 12, 3))
    x = block("first")(inputs)
    x = block("second")(x)
    x = layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="out")(x))
    spec, _ = _export(model, tmp_path / "n.onnx")
    assert [layer.name for layer in spec.layers] == ["first/conv", "second/conv", "flatten", "out"]
    assert [o.name for o in _session(tmp_path / "n.onnx").get_outputs()][:2] == ["first/conv", "second/conv"]


def test_trunk_export_has_no_classifier(tmp_path):
    out = tmp_path / "trunk.onnx"
    spec, _ = _export(lecture_like(), out, trunk=True)
    assert [layer.name for layer in spec.layers] == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]
    assert spec.extra["trunk"] is True and spec.class_names == () and spec.output_activation is None
    assert [o.name for o in _session(out).get_outputs()] == [layer.name for layer in spec.layers]
    trunk = load_model(out, provider="cpu")
    assert not trunk.has_classifier
    assert trunk.activations(uint8_images((32, 32, 3), count=1))["max_pooling2d_1"].shape == (1, 8, 6, 6)
    with pytest.raises(ModelError, match="no classifier"):
        trunk.predict(uint8_images((32, 32, 3), count=1))
    with pytest.raises(ConversionError, match="no classifier"):
        _export(lecture_like(), tmp_path / "t2.onnx", trunk=True, class_names=("a", "b"))


def test_keras2_files_written_by_tf_keras(tmp_path):
    """Keras-2 .h5 and .keras files (nested augmentation, residual block) agree with tf_keras itself."""
    tf_keras = pytest.importorskip("tf_keras")
    L = tf_keras.layers
    augmentation = tf_keras.Sequential([L.RandomFlip("horizontal"), L.RandomZoom(0.2)], name="augmentation")
    inputs = tf_keras.Input((20, 20, 3))
    x = augmentation(inputs)
    x = L.Rescaling(1 / 255)(x)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(x)
    branch = L.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    branch = L.BatchNormalization(name="bn")(branch)
    x = L.Add(name="add")([x, branch])
    x = L.LeakyReLU(0.1, name="leaky")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    book = tf_keras.Model(inputs, L.Dense(1, activation="sigmoid", name="p")(x))
    sequential = tf_keras.Sequential(
        [
            L.Conv2D(4, 3, activation="relu", input_shape=(20, 20, 3), name="c1"),
            L.MaxPooling2D(2, name="pool"),
            L.Flatten(name="flatten"),
            L.Dense(3, activation="softmax", name="p"),
        ]
    )
    images = uint8_images((20, 20, 3))
    for name, model, scale in [("book", book, 1.0), ("seq", sequential, 1 / 255)]:
        want = model.predict(images.astype(np.float32) * scale, verbose=0)
        for suffix in (".h5", ".keras"):
            source = tmp_path / f"{name}{suffix}"
            model.save(source)
            spec, _ = _export(source, tmp_path / f"{name}{suffix}.onnx")
            assert "Keras 2" in spec.extra["source_format"]
            feature_model = load_model(tmp_path / f"{name}{suffix}.onnx", provider="cpu")
            got = feature_model.activations(images, layers=["p"])["p"]
            assert np.allclose(got, want, atol=1e-5), (name, suffix)
            if name == "book":
                assert [layer.name for layer in spec.layers][:4] == ["c1", "sep", "bn", "add"]
                assert len(spec.extra["dropped_layers"]) == 2 and spec.input_scale == pytest.approx(1 / 255)


def test_mixed_precision_model_is_exported_in_float32(tmp_path):
    from convert.flatten import compute_in_float32

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = lecture_like()
        model.save(tmp_path / "mixed.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    spec, lines = _export(tmp_path / "mixed.keras", tmp_path / "mixed.onnx")
    assert "conv2d" in spec.extra["float32_instead_of_mixed_precision"]
    assert any("half precision" in line for line in lines)
    reference = keras.saving.load_model(tmp_path / "mixed.keras")
    assert reference.get_layer("conv2d").dtype_policy.compute_dtype == "bfloat16"
    images = uint8_images((32, 32, 3))
    x = images.astype(np.float32) / 255
    in_bfloat16 = keras.ops.convert_to_numpy(reference(x, training=False)).astype(np.float32)
    compute_in_float32(reference)
    in_float32 = keras.ops.convert_to_numpy(reference(x, training=False))
    assert in_float32.dtype == np.float32
    got = load_model(tmp_path / "mixed.onnx", provider="cpu").activations(images, layers=["dense_1"])["dense_1"]
    assert np.allclose(got, in_float32, atol=1e-6)
    assert np.allclose(got, in_bfloat16, atol=0.05)  # the same model, only computed more precisely


def _multi_input():
    from keras import layers

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    return keras.Model([a, b], layers.Flatten()(layers.Add()([a, b])))


def _two_outputs():
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Flatten()(inputs)
    return keras.Model(inputs, [layers.Dense(1)(x), layers.Dense(2)(x)])


@pytest.mark.parametrize(
    "build, message",
    [
        (_multi_input, "has 2 inputs"),
        (lambda: keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)]), "not an image"),
        (lambda: keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(1, 3)]), "4 channels"),
        (lambda: keras.Sequential([keras.Input((3, 8, 8)), keras.layers.Conv2D(1, 3)]), "looks channels-first"),
        (lambda: keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 3)]), "any size"),
        (_two_outputs, "has 2 outputs"),
        (lambda: keras.Sequential([keras.layers.Dense(1)]), "no defined input"),
    ],
)
def test_models_that_are_not_single_image_classifiers_are_refused(tmp_path, build, message):
    with pytest.raises(ConversionError, match=message):
        _export(build(), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_verification_refuses_a_graph_that_disagrees(tmp_path, monkeypatch):
    import convert.export as exporter

    real = exporter.to_onnx

    def damaged(*args, **kwargs):
        proto = real(*args, **kwargs)
        for tensor in proto.graph.initializer:
            values = onnx.numpy_helper.to_array(tensor)
            if values.ndim == 4:  # a convolution kernel: nudge it
                tensor.CopyFrom(onnx.numpy_helper.from_array(values + np.float32(0.05), tensor.name))
                break
        return proto

    monkeypatch.setattr(exporter, "to_onnx", damaged)
    with pytest.raises(ConversionError, match=r"disagree on layer 'conv2d(_1)?'.*nothing written"):
        _export(lecture_like(), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    import convert.export as exporter

    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")

    def fail(fd):
        raise failure

    monkeypatch.setattr(exporter.os, "fsync", fail)
    with pytest.raises(type(failure)):
        _export(lecture_like(), out)
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]

    monkeypatch.undo()
    fresh = tmp_path / "fresh" / "model.onnx"
    monkeypatch.setattr(exporter.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError, match="crash"):
        _export(lecture_like(), fresh)
    assert list(fresh.parent.iterdir()) == []


def test_written_file_is_readable_by_everyone(tmp_path):
    _export(lecture_like(), tmp_path / "m.onnx")
    assert os.stat(tmp_path / "m.onnx").st_mode & 0o044 == 0o044


def test_an_unadapted_normalization_layer_is_stored_in_the_file(tmp_path):
    """keras.applications.EfficientNetB0(weights=None) starts with a Normalization layer that
    was never adapted: its mean and variance are plain tensors, which tf2onnx left as graph
    inputs (one 10,000-character error). They are now weights in the file."""
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Normalization(axis=-1, name="normalise")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="probs")(x))
    source = tmp_path / "normalised.keras"
    model.save(source)
    spec, _ = _export(source, tmp_path / "normalised.onnx")
    assert [layer.name for layer in spec.layers] == ["normalise", "conv", "pool", "probs"]
    images = uint8_images((16, 16, 3))
    feature_model = load_model(tmp_path / "normalised.onnx", provider="cpu")
    want = model.predict(images.astype(np.float32), verbose=0)
    assert np.allclose(feature_model.predict(images).probabilities, want, atol=1e-6)
    assert (tmp_path / "normalised.grad.onnx").is_file()


def test_a_graph_that_does_not_match_is_named_in_one_short_line(tmp_path, monkeypatch):
    import convert.export as export_module

    monkeypatch.setattr(export_module, "_store_captured_constants", lambda proto, concrete: None)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Normalization(axis=-1, name="normalise")(inp)
    x = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(2, 3, name="conv")(x))
    keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="p")(x)).save(tmp_path / "m.keras")
    with pytest.raises(ConversionError) as caught:
        _export(tmp_path / "m.keras", tmp_path / "m.onnx")
    message = str(caught.value)
    assert "normalise" in message and len(message) < 400 and "\n" not in message
