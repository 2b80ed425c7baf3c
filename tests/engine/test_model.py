"""The model runtime: loading, providers, activations and predictions, on the real
committed model with real photos, and on tiny ONNX models built in the test."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featapp.engine.images import ImageError, InputSpec, prepare_image
from featapp.engine.model import (
    DEFAULT_MODEL_PATH,
    MODEL_ENV,
    PROVIDER_ENV,
    THREADS_ENV,
    FeatureModel,
    ModelError,
    Prediction,
    load_model,
)
from tests.helpers import imagefactory as factory
from tests.helpers import modelfactory as tiny

REPO_ROOT = Path(__file__).resolve().parents[2]
LECTURE_LAYERS = [
    ("conv2d", (148, 148, 32)),
    ("max_pooling2d", (74, 74, 32)),
    ("conv2d_1", (72, 72, 64)),
    ("max_pooling2d_1", (36, 36, 64)),
    ("conv2d_2", (34, 34, 128)),
    ("max_pooling2d_2", (17, 17, 128)),
    ("conv2d_3", (15, 15, 128)),
    ("max_pooling2d_3", (7, 7, 128)),
    ("flatten", (6272,)),
    ("dropout", (6272,)),
    ("dense", (512,)),
    ("dense_1", (1,)),
]


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    for name in (MODEL_ENV, PROVIDER_ENV, THREADS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def photos(dataset) -> list[Path]:
    return [image.path for image in dataset.sample("test", per_class=4, seed=11)]


# -- loading ----------------------------------------------------------------------------


def test_default_model_is_the_committed_file():
    model = load_model(provider="cpu")
    assert model.path == DEFAULT_MODEL_PATH == REPO_ROOT / "models" / "cats_dogs_small.onnx"
    assert [(layer.name, layer.output_shape) for layer in model.layers] == LECTURE_LAYERS
    assert model.input_spec == InputSpec(150, 150, 3)
    assert model.class_names == ("cat", "dog") and model.has_classifier
    assert model.layer_names == [name for name, _ in LECTURE_LAYERS]
    assert model.layer("conv2d_1").params == 3 * 3 * 32 * 64 + 64
    assert len(model.sha256) == 64 and "150x150x3" in repr(model)


def test_layer_lookup_names_the_layers_there_are(model):
    with pytest.raises(KeyError, match="conv2d, max_pooling2d"):
        model.layer("conv9")


def test_model_environment_variable_overrides_the_default(monkeypatch, tmp_path):
    path = tiny.build(tiny.TinyNet(height=20, width=24), tmp_path / "tiny.onnx")
    monkeypatch.setenv(MODEL_ENV, str(path))
    model = load_model(provider="cpu")
    assert model.path == path and model.input_spec == InputSpec(20, 24, 1)
    assert load_model(DEFAULT_MODEL_PATH, provider="cpu").path == DEFAULT_MODEL_PATH  # an argument wins


@pytest.mark.parametrize("asked", ["cpu", "CPU", "auto"])
def test_cpu_and_auto_run_on_the_cpu_here(asked):
    model = load_model(provider=asked)
    assert model.provider == "cpu" and model.providers[-1] == "CPUExecutionProvider"
    assert model.provider_note == ""


def test_cuda_without_a_gpu_runs_on_the_cpu_and_says_so():
    model = load_model(provider="cuda")
    assert model.provider == "cpu"
    assert "CUDA" in model.provider_note and "CPU" in model.provider_note


def test_provider_environment_variable_overrides_the_argument(monkeypatch):
    monkeypatch.setenv(PROVIDER_ENV, "cpu")
    assert load_model(provider="cuda").provider_note == ""  # cpu asked by the environment
    monkeypatch.setenv(PROVIDER_ENV, "cuda")
    assert "CUDA" in load_model(provider="cpu").provider_note


@pytest.mark.parametrize("provider", ["tpu", "gpu", "", 3, None])
def test_unknown_provider_is_a_model_error(provider):
    with pytest.raises(ModelError, match="auto, cpu or cuda"):
        load_model(provider=provider)


def test_unknown_provider_from_the_environment_says_where_it_came_from(monkeypatch):
    monkeypatch.setenv(PROVIDER_ENV, "metal")
    with pytest.raises(ModelError, match=f"'metal'.*{PROVIDER_ENV}"):
        load_model()


def test_threads_environment_variable(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert load_model(provider="cpu").predict(np.zeros((1, 150, 150, 3), np.uint8)).probabilities.shape == (1, 2)
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ModelError, match=THREADS_ENV):
        load_model(provider="cpu")


@pytest.mark.parametrize("preload_fails", [False, True])
def test_auto_loads_pip_cuda_libraries_before_the_cuda_session_and_survives_a_failure(monkeypatch, preload_fails):
    """What can be checked without a GPU: once a GPU answers the driver, ``auto`` calls
    onnxruntime.preload_dlls() before it starts the CUDA session; a failed preload is
    harmless (the model still loads, on the CPU here) and the note says how to fix it."""
    import onnxruntime as ort

    import featapp.engine.model as model_module

    order: list[str] = []
    monkeypatch.setattr(model_module, "cuda_usable", lambda: order.append("gpu found") or True)

    def preload(*args, **kwargs):
        order.append("preload")
        if preload_fails:
            raise OSError("libcudnn.so.9: cannot open shared object file")

    real_session = ort.InferenceSession

    def session(*args, **kwargs):
        order.append(f"session {kwargs['providers'][0]}")
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(ort, "InferenceSession", session)
    model = load_model(provider="auto")
    assert order == ["gpu found", "preload", "session CUDAExecutionProvider"]
    assert model.provider == "cpu"  # no GPU really here: ONNX Runtime fell back
    assert model.predict(np.zeros((1, 150, 150, 3), np.uint8)).probabilities.shape == (1, 2)
    assert "featapp[cuda]" in model.provider_note and "running on the CPU" in model.provider_note
    assert ("libcudnn.so.9" in model.provider_note) == preload_fails


def test_no_gpu_means_no_preload(monkeypatch):
    import onnxruntime as ort

    called = []
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: called.append(1), raising=False)
    assert load_model(provider="auto").provider == "cpu"
    assert called == []  # 2 GB of CUDA libraries are not loaded on a machine without a GPU


@pytest.mark.parametrize("provider", ["cuda", "auto"])
def test_no_cuda_error_text_on_a_machine_without_a_gpu(provider):
    """In a fresh process (nothing imported before), asking for CUDA must not make
    ONNX Runtime print CUDA library errors."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from featapp.engine.model import load_model;"
        "import numpy as np;"
        "m = load_model(provider=sys.argv[2]);"
        "m.predict(np.zeros((1, 150, 150, 3), np.uint8));"
        "print(m.provider); print(m.provider_note)"
    )
    env = {k: v for k, v in os.environ.items() if k not in (MODEL_ENV, PROVIDER_ENV)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT), provider], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "cpu"
    for word in ("cuda", "cudnn", "libcu", "gpu", "error"):
        assert word not in done.stderr.lower(), done.stderr


# -- bad model files ----------------------------------------------------------------------


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="No model file.*nothing.onnx.*convert export"):
        load_model(tmp_path / "nothing.onnx")
    with pytest.raises(ModelError, match="No model file"):
        load_model(tmp_path)  # a folder


@pytest.mark.parametrize(
    "content",
    [
        b"",
        os.urandom(4096),
        factory.encode(Image.new("RGB", (32, 32), (200, 10, 10)), "JPEG"),
        b"<html>404</html>",
    ],
    ids=["empty", "random", "jpeg", "html"],
)
def test_files_that_are_not_onnx(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as caught:
        load_model(path, provider="cpu")
    message = str(caught.value)
    assert "not a model ONNX Runtime can load" in message and "model.onnx" in message
    assert "convert export" in message and len(message) < 600


def test_onnx_without_featapp_metadata(tmp_path):
    path = tiny.build(tiny.TinyNet(), tmp_path / "plain.onnx", metadata=None)
    with pytest.raises(ModelError, match="not one converted for featapp.*'featapp' metadata"):
        load_model(path, provider="cpu")


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ("{not json", ["metadata is damaged"]),
        (lambda spec: spec.to_json().replace('"schema": 1', '"schema": 99'), ["schema 99"]),
        (lambda spec: json.dumps({**json.loads(spec.to_json()), "layers": "none"}), ["damaged"]),
        (lambda spec: spec.to_json().replace('"channels": 1', '"channels": 2'), ["damaged"]),
    ],
    ids=["not-json", "schema", "layers", "channels"],
)
def test_damaged_metadata(tmp_path, metadata, words):
    path = tiny.build(tiny.TinyNet(), tmp_path / "bad.onnx", metadata=metadata)
    with pytest.raises(ModelError) as caught:
        load_model(path, provider="cpu")
    for word in words:
        assert word in str(caught.value)


def _edit(spec_json: str, **changes) -> str:
    data = json.loads(spec_json)
    for key, value in changes.items():
        if key == "first_layer":
            data["layers"][0].update(value)
        elif key == "extra_layer":
            data["layers"].append(value)
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"first_layer": {"name": "conv_renamed"}}, ["conv_renamed", "no such outputs"]),
        ({"extra_layer": {"name": "dense_9", "kind": "Dense", "output_shape": [3]}}, ["dense_9", "no such outputs"]),
        ({"input": {"height": 21, "width": 24, "channels": 1}}, ["21x24x1", "do not match"]),
        ({"input": {"height": 20, "width": 24, "channels": 3}}, ["20x24x3", "do not match"]),
        ({"input_name": "image"}, ["one input called 'image'"]),
        ({"first_layer": {"output_shape": [18, 22, 5]}}, ["'conv2d'", "do not match"]),
        ({"first_layer": {"output_shape": [18, 22]}}, ["'conv2d'", "do not match"]),
    ],
    ids=["renamed-layer", "extra-layer", "input-height", "input-channels", "input-name", "channels", "rank"],
)
def test_metadata_that_does_not_match_the_graph(tmp_path, change, words):
    path = tiny.build(tiny.TinyNet(), tmp_path / "mismatch.onnx", metadata=lambda spec: _edit(spec.to_json(), **change))
    with pytest.raises(ModelError) as caught:
        load_model(path, provider="cpu")
    for word in words:
        assert word in str(caught.value), str(caught.value)


# -- other geometries work unchanged -----------------------------------------------------------

OTHER_NETS = {
    "gray-20x24-one-conv": tiny.TinyNet(height=20, width=24, channels=1),
    "rgb-64x48-same-stride-softmax": tiny.TinyNet(
        height=64,
        width=48,
        channels=3,
        convs=(tiny.Conv(6, 3, 2, "same"), tiny.Conv(5, 2)),
        head="softmax",
        class_names=("bird", "cat", "dog"),
    ),
    "gray-33x17-three-convs-no-pool": tiny.TinyNet(
        height=33, width=17, channels=1, convs=(tiny.Conv(3), tiny.Conv(4, 3, 2), tiny.Conv(2, 1)), pool=False
    ),
    "trunk-only": tiny.TinyNet(height=16, width=16, channels=3, head=None),
    "scaled-to-minus-1-plus-1": tiny.TinyNet(height=18, width=18, channels=3, input_scale=2 / 255, input_offset=-1.0),
}


@pytest.fixture(scope="module", params=list(OTHER_NETS))
def other(request, tmp_path_factory):
    net = OTHER_NETS[request.param]
    path = tiny.build(net, tmp_path_factory.mktemp("nets") / f"{request.param}.onnx")
    return net, load_model(path, provider="cpu")


def test_other_geometries_read_everything_from_metadata(other):
    net, model = other
    assert model.input_spec == InputSpec(net.height, net.width, net.channels)
    assert [(layer.name, layer.output_shape) for layer in model.layers] == [(n, s) for n, _, s in net.shapes()]
    assert model.has_classifier == (net.head is not None)


def test_other_geometries_prepare_photos_to_their_input(other, cat_photo):
    net, model = other
    batch = model.prepare([cat_photo, cat_photo.read_bytes(), Image.open(cat_photo)])
    assert batch.shape == (3, net.height, net.width, net.channels) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], prepare_image(cat_photo, InputSpec(net.height, net.width, net.channels)))


def test_other_geometries_activations_match_numpy(other, cat_photo, dog_photo):
    net, model = other
    rng = np.random.default_rng(3)
    batch = np.concatenate(
        [
            model.prepare([cat_photo, dog_photo]),
            rng.integers(0, 256, (3, net.height, net.width, net.channels), np.uint8),
        ]
    )
    acts = model.activations(batch)
    expected = tiny.reference(net, batch)
    assert list(acts) == [name for name, _, _ in net.shapes()]
    for name, value in acts.items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_other_geometries_predict(other, cat_photo):
    net, model = other
    if net.head is None:
        with pytest.raises(ModelError, match="no classifier"):
            model.predict([cat_photo])
        return
    prediction = model.predict([cat_photo, cat_photo])
    assert prediction.class_names == net.class_names
    assert prediction.probabilities.shape == (2, len(net.class_names))
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    reference = tiny.reference(net, model.prepare([cat_photo]))["dense"][0]
    if net.head == "sigmoid":
        reference = np.array([1 - reference[0], reference[0]])
    np.testing.assert_allclose(prediction.probabilities[0], reference, rtol=1e-4)
    assert prediction.labels[0] == net.class_names[int(np.argmax(reference))]


def test_class_names_that_do_not_fit_the_output(tmp_path):
    net = tiny.TinyNet(head="softmax", class_names=("a", "b", "c"))
    path = tiny.build(net, tmp_path / "names.onnx", metadata=lambda spec: _edit(spec.to_json(), class_names=["x", "y"]))
    prediction = load_model(path, provider="cpu").predict(np.zeros((1, 20, 24, 1), np.uint8))
    assert prediction.class_names == ("class 0", "class 1", "class 2")


# -- activations on the real model --------------------------------------------------------------


def test_activation_layout_is_nchw_float32_in_model_order(model, photos):
    acts = model.activations(photos[:2])
    assert list(acts) == model.layer_names
    for layer in model.layers:
        value = acts[layer.name]
        assert value.dtype == np.float32 and value.flags.c_contiguous
        if layer.is_spatial:
            rows, cols, channels = layer.output_shape
            assert value.shape == (2, channels, rows, cols)
        else:
            assert value.shape == (2, *layer.output_shape)


def test_maps_are_oriented_like_the_photo(model):
    """A bright band across the top rows of a black image: cells whose receptive box is
    wholly black equal the all-black image's cells; cells on the band differ. Swapped
    rows and columns, or channels in the wrong axis, would break both."""
    black = np.zeros((150, 150, 3), np.uint8)
    banded = black.copy()
    banded[:20, :] = 255
    acts = model.activations(np.stack([black, banded]), layers=["conv2d", "max_pooling2d_1"])
    for name, value in acts.items():
        field = model.layer(name).receptive_field
        rows = value.shape[2]
        first_clear_row = next(
            r for r in range(rows) if field.offset[0] + r * field.jump[0] - (field.size[0] - 1) / 2 >= 20
        )
        np.testing.assert_array_equal(value[1][:, first_clear_row:, :], value[0][:, first_clear_row:, :])
        assert (value[1][:, 0, :] != value[0][:, 0, :]).any(), name
    # The first layer on a uniform image is the same everywhere within a channel.
    conv = acts["conv2d"][0]
    assert np.allclose(conv, conv[:, :1, :1])


def test_batch_and_single_runs_agree(model, photos):
    together = model.activations(photos)
    for index in (0, len(photos) - 1):
        alone = model.activations(photos[index])
        for name in model.layer_names:
            np.testing.assert_allclose(alone[name][0], together[name][index], rtol=1e-5, atol=1e-6, err_msg=name)


def test_chunks_give_the_same_result_as_one_batch(model, photos):
    seven = model.prepare(photos[:7])
    one_batch = model.activations(seven)
    chunked = model.activations(seven, batch_size=3)  # chunks of 3, 3 and 1
    assert list(chunked) == list(one_batch)
    for name in one_batch:
        assert chunked[name].shape == one_batch[name].shape
        np.testing.assert_allclose(chunked[name], one_batch[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_selected_layers_come_in_model_order(model, photos):
    acts = model.activations(photos[:1], layers=["dense_1", "conv2d", "conv2d"])
    assert list(acts) == ["conv2d", "dense_1"]
    full = model.activations(photos[:1])
    np.testing.assert_array_equal(acts["dense_1"], full["dense_1"])
    assert list(model.activations(photos[:1], layers="flatten")) == ["flatten"]
    with pytest.raises(KeyError, match="no layer 'conv7'"):
        model.activations(photos[:1], layers=["conv7"])


def test_scaling_is_x_over_255(model, photos):
    batch = model.prepare(photos[:2])
    outputs = model._session.run(["conv2d", "dense_1"], {"input": batch.astype(np.float32) / np.float32(255)})
    acts = model.activations(batch, layers=["conv2d", "dense_1"])
    # The library multiplies by 1/255 where this divides by 255: one rounding apart per pixel,
    # carried through the filters, so the tolerance is two millionths of the layer's largest value.
    for got, want in zip((acts["conv2d"], acts["dense_1"]), outputs, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * float(np.abs(want).max()))


def test_every_kind_of_image_source(model, photos, tmp_path):
    path = photos[0]
    expected = prepare_image(path, model)
    sources = [
        path,
        str(path),
        path.read_bytes(),
        bytearray(path.read_bytes()),
        io.BytesIO(path.read_bytes()),
        Image.open(path),
        expected,
        expected[np.newaxis],
    ]
    for source in sources:
        batch = model.prepare(source)
        assert batch.shape == (1, 150, 150, 3), type(source)
        np.testing.assert_array_equal(batch[0], expected)
    mixed = model.prepare([path, path.read_bytes(), Image.open(path), expected])
    assert mixed.shape == (4, 150, 150, 3) and (mixed == expected).all()
    assert model.prepare([]).shape == (0, 150, 150, 3)
    assert model.prepare(p for p in [path]).shape == (1, 150, 150, 3)


def test_empty_batch_gives_empty_arrays_of_the_right_shape(model):
    acts = model.activations([])
    assert acts["conv2d"].shape == (0, 32, 148, 148) and acts["dense_1"].shape == (0, 1)
    assert model.predict([]).probabilities.shape == (0, 2)


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((2, 150, 150, 3), np.float32), ["uint8", "float32", "* 255"]),
        (np.zeros((2, 3, 150, 150), np.uint8), ["(N, 150, 150, 3)", "channels-first"]),
        (np.zeros((150, 150), np.uint8), ["(N, 150, 150, 3)", "(150, 150)"]),
        (np.zeros((2, 150, 150, 1), np.uint8), ["(2, 150, 150, 1)"]),
        (np.zeros((1, 224, 224, 3), np.uint8), ["prepare_image"]),
        (np.zeros((150, 150, 3), np.int64), ["uint8", "int64"]),
    ],
    ids=["float", "nchw", "2d", "gray", "size", "int64"],
)
def test_wrong_arrays_are_refused_clearly(model, array, words):
    with pytest.raises(ImageError) as caught:
        model.activations(array)
    for word in words:
        assert word in str(caught.value), str(caught.value)
    with pytest.raises(ValueError):  # ImageError is a ValueError
        model.prepare([array[0] if array.ndim == 4 else array])


def test_bad_photos_in_a_batch_raise_image_error(model, photos):
    with pytest.raises(ImageError, match="web page"):
        model.activations([photos[0], factory.HTML])
    with pytest.raises(ValueError, match="batch_size"):
        model.activations(photos[:1], batch_size=0)


# -- predictions on real photos ------------------------------------------------------------------


def test_predict_on_real_photos(model, photos):
    prediction = model.predict(photos)
    assert isinstance(prediction, Prediction)
    assert prediction.probabilities.shape == (len(photos), 2)
    assert ((prediction.probabilities >= 0) & (prediction.probabilities <= 1)).all()
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0)
    p_dog = model.activations(photos, layers=["dense_1"])["dense_1"][:, 0]
    np.testing.assert_allclose(prediction.probabilities[:, 1], p_dog, rtol=1e-6)
    assert prediction.labels == ["dog" if p > 0.5 else "cat" for p in p_dog]
    assert prediction.indices.tolist() == [int(p > 0.5) for p in p_dog]
    np.testing.assert_allclose(prediction.confidences, np.maximum(p_dog, 1 - p_dog), rtol=1e-6)
    assert model.predict(photos, batch_size=3).labels == prediction.labels


def test_feature_model_is_exported():
    import featapp

    assert featapp.FeatureModel is FeatureModel and featapp.load_model is load_model


def test_per_channel_mean_std_and_bgr_from_the_metadata(tmp_path):
    """A model trained on normalised BGR photos (torchvision's mean/std, Keras' caffe style)
    gets ``(pixels[BGR] * scale + offset - mean) / std`` from the metadata, not plain scaling."""
    from dataclasses import replace

    net = tiny.TinyNet(channels=3, seed=3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def normalised(spec):
        return replace(spec, input_mean=mean, input_std=std, channel_order="BGR").to_json()

    model = load_model(tiny.build(net, tmp_path / "bgr.onnx", metadata=normalised), provider="cpu")
    assert model.spec.channel_order == "BGR" and model.spec.input_mean == mean
    pixels = np.random.default_rng(0).integers(0, 256, (2, net.height, net.width, 3), dtype=np.uint8)
    fed = (pixels[..., ::-1].astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    want = tiny.reference(net, fed.astype(np.float32) * 255)  # the reference scales by 1/255 itself
    got = model.activations(pixels)
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-4, atol=1e-4)


def test_files_without_per_channel_fields_load_as_before(tmp_path):
    model = load_model(tiny.build(tiny.TinyNet(), tmp_path / "plain.onnx"), provider="cpu")
    assert model.spec.input_mean == () and model.spec.input_std == () and model.spec.channel_order == "RGB"
    pixels = np.full((1, model.input_spec.height, model.input_spec.width, 1), 51, np.uint8)
    assert model._scaled(pixels).ravel()[0] == np.float32(51) * np.float32(1 / 255)
