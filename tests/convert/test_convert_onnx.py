"""``python -m convert export MODEL.onnx``: any ONNX image classifier, with onnx and ONNX
Runtime only, on the committed fixtures (tests/fixtures/make_onnx_fixtures.py): the same
tiny ResNet-style network as PyTorch's legacy and dynamo exporters write it, and a Keras
model saved by ``model.export(format="onnx")``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from convert.errors import ConversionError
from convert.onnx_source import OnnxOptions, export_onnx, layer_names
from featapp.engine.model import ModelError, load_model

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "onnx"
TORCH_LAYERS = [
    "conv1",
    "relu",
    "maxpool",
    "layer1.0.conv1",
    "layer1.0.relu",
    "layer1.0.conv2",
    "layer1.0.add",
    "layer1.0.relu_1",
    "avgpool",
    "fc",
    "softmax",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    paths = {}
    for name in ("torch_legacy", "torch_dynamo", "keras_export"):
        paths[name] = out / f"{name}_featapp.onnx"
        export_onnx(FIXTURES / f"{name}.onnx", paths[name], OnnxOptions(), log=lambda _: None)
    return paths


def _photos(height: int, width: int, count: int = 3) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_layers_are_named_after_the_pytorch_modules(converted):
    legacy = load_model(converted["torch_legacy"], provider="cpu")
    assert legacy.layer_names == TORCH_LAYERS
    dynamo = load_model(converted["torch_dynamo"], provider="cpu")
    # The dynamo exporter keeps batch norm as its own operator, and writes the head as MatMul + Add.
    assert [n for n in dynamo.layer_names if ".bn" not in n and n != "bn1" and n != "fc.linear"] == TORCH_LAYERS
    keras = load_model(converted["keras_export"], provider="cpu")
    assert keras.layer_names == [
        "conv_a.convolution",
        "conv_a",
        "pool_a",
        "conv_b.convolution",
        "conv_b",
        "gap",
        "probs.matmul",
        "probs",
    ]
    assert [layer.kind for layer in legacy.layers][:3] == ["Conv2D", "ReLU", "MaxPooling2D"]
    assert legacy.layer("layer1.0.conv2").receptive_field.size == (12, 12)
    assert legacy.layer("avgpool").output_shape == (8,)  # a global pool is a vector, as in Keras


def test_both_pytorch_exporters_give_the_source_network(converted):
    """The two files hold one network (same weights): featapp's probabilities agree with each
    other and with softmax(source logits) on photos scaled 0..1, NCHW."""
    photos = _photos(32, 32)
    legacy = load_model(converted["torch_legacy"], provider="cpu").predict(photos).probabilities
    dynamo = load_model(converted["torch_dynamo"], provider="cpu").predict(photos).probabilities
    source = ort.InferenceSession(str(FIXTURES / "torch_legacy.onnx"), providers=["CPUExecutionProvider"])
    logits = source.run(None, {"input": np.transpose(photos / np.float32(255), (0, 3, 1, 2)).astype(np.float32)})[0]
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(legacy, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dynamo, want, rtol=1e-4, atol=1e-5)


def test_maps_are_the_source_tensors_in_nchw(converted):
    photos = _photos(32, 32, 2)
    maps = load_model(converted["keras_export"], provider="cpu").activations(photos)
    source = onnx.load(str(FIXTURES / "keras_export.onnx"))
    source.graph.output.append(
        onnx.helper.make_tensor_value_info("keras_tiny_1/conv_b_1/Relu:0", onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"])
    relu = session.run(["keras_tiny_1/conv_b_1/Relu:0"], {"keras_tensor": photos.astype(np.float32) / 255})[0]
    np.testing.assert_allclose(maps["conv_b"], relu, rtol=1e-6, atol=1e-6)
    assert maps["conv_b"].shape == (2, 8, 15, 15)


def test_every_gradient_view_runs(converted):
    from featapp.explain.featurevis import visualize
    from featapp.explain.gradcam import gradcam
    from featapp.explain.gradients import load_gradients
    from featapp.explain.saliency import saliency, smoothgrad

    photo = _photos(32, 32, 1)[0]
    for path in converted.values():
        model = load_model(path, provider="cpu")
        grads = load_gradients(model)
        assert saliency(grads, photo).per_pixel.shape == (32, 32)
        assert smoothgrad(grads, photo, samples=2).per_pixel.shape == (32, 32)
        assert gradcam(grads, photo).per_pixel.shape == (32, 32)
        conv = next(layer.name for layer in model.layers if layer.kind == "Conv2D")
        assert visualize(grads, conv, [0], steps=2).images.shape == (1, 32, 32, 3)


def test_torchvision_mean_std_and_caffe_bgr_come_from_the_flags(tmp_path):
    """What featapp feeds the graph is what the instructor's training fed it."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = tmp_path / "normalised.onnx"
    export_onnx(FIXTURES / "torch_legacy.onnx", out, OnnxOptions(mean=mean, std=std), log=lambda _: None)
    caffe = tmp_path / "caffe.onnx"
    caffe_mean = (103.939, 116.779, 123.68)
    options = OnnxOptions(input_range="0..255", mean=caffe_mean, channel_order="BGR", gradients=False)
    export_onnx(FIXTURES / "torch_legacy.onnx", caffe, options, log=lambda _: None)
    photos = _photos(32, 32)
    source = ort.InferenceSession(str(FIXTURES / "torch_legacy.onnx"), providers=["CPUExecutionProvider"])
    for path, fed in (
        (out, (photos / 255.0 - np.array(mean)) / np.array(std)),
        (caffe, photos[..., ::-1] - np.array(caffe_mean)),
    ):
        logits = source.run(None, {"input": np.transpose(fed, (0, 3, 1, 2)).astype(np.float32)})[0]
        got = load_model(path, provider="cpu").activations(photos, layers=["fc"])["fc"]
        np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-4)


def test_an_unconverted_file_names_the_one_command(tmp_path):
    source = FIXTURES / "torch_dynamo.onnx"
    with pytest.raises(ModelError) as caught:
        load_model(source, provider="cpu")
    command = (
        f"python -m convert export {source.as_posix()} --out {(FIXTURES / 'torch_dynamo_featapp.onnx').as_posix()}"
    )
    assert command in str(caught.value)
    result = subprocess.run(
        [sys.executable, "-m", "featapp", "info", "--model", str(source)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and command in result.stderr


def test_the_command_line_converts_without_tensorflow(tmp_path):
    out = tmp_path / "legacy.onnx"
    code = (
        "import sys; from convert.cli import main; "
        f"status = main(['export', {str(FIXTURES / 'torch_legacy.onnx')!r}, '--out', {str(out)!r}, "
        "'--input-range', '0..1', '--class-names', *[f'c{i}' for i in range(10)]]); "
        "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(status)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no tensorflow" in result.stdout and "nothing written" not in result.stdout
    assert load_model(out, provider="cpu").class_names == tuple(f"c{i}" for i in range(10))
    assert out.with_name("legacy.grad.onnx").is_file()


def test_a_free_input_size_must_be_given(tmp_path):
    model = onnx.load(str(FIXTURES / "torch_legacy.onnx"))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "size"
    free = tmp_path / "free.onnx"
    onnx.save(model, free)
    with pytest.raises(ConversionError, match="--input-size 224"):
        export_onnx(free, tmp_path / "out.onnx", OnnxOptions(), log=lambda _: None)
    spec = export_onnx(
        free, tmp_path / "out.onnx", OnnxOptions(input_size=(48, 40), gradients=False), log=lambda _: None
    )
    assert (spec.input.height, spec.input.width) == (48, 40)
    assert spec.layers[0].output_shape == (48, 40, 8)


def test_refusals_read_as_advice(tmp_path, converted):
    with pytest.raises(ConversionError, match="already converted for featapp"):
        export_onnx(converted["torch_legacy"], tmp_path / "again.onnx", log=lambda _: None)
    with pytest.raises(ConversionError, match="10 class scores, but 2 class names"):
        export_onnx(FIXTURES / "torch_legacy.onnx", tmp_path / "x.onnx", OnnxOptions(class_names=("a", "b")))
    with pytest.raises(ConversionError, match="input_mean has 2 values"):
        export_onnx(FIXTURES / "torch_legacy.onnx", tmp_path / "x.onnx", OnnxOptions(mean=(0.5, 0.5)))
    assert not (tmp_path / "x.onnx").exists()


def test_layer_names_from_each_exporters_scopes():
    def node(name: str, scopes: list[str] | None = None):
        made = onnx.helper.make_node("Relu", ["a"], ["b"], name=name)
        if scopes is not None:
            entry = made.metadata_props.add()
            entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(scopes)
        return made

    legacy = [
        node("/features/features.0/features.0.0/Conv"),
        node("/features/features.0/features.0.2/Clip"),
        node("/Flatten"),
    ]
    assert layer_names(legacy) == ["features.0.0", "features.0.2", "flatten"]
    dynamo = [
        node("node_Conv_1", ["", "layer1", "layer1.0", "layer1.0.conv1", "conv2d_1"]),
        node("node_Relu_2", ["", "layer1", "layer1.0", "layer1.0.relu", "relu_1"]),
        node("node_Add_3", ["", "layer1", "layer1.0", "add"]),
        node("node_Relu_4", ["", "layer1", "layer1.0", "layer1.0.relu", "relu_2"]),
    ]
    assert layer_names(dynamo) == ["layer1.0.conv1", "layer1.0.relu", "layer1.0.add", "layer1.0.relu_1"]
    keras = [node("model_1/conv2d_1/convolution"), node("model_1/conv2d_1/Relu"), node("model_1/conv2d_1_1/Relu")]
    assert layer_names(keras, "tf2onnx") == ["conv2d.convolution", "conv2d", "conv2d_1"]


def test_a_layer_name_that_is_another_tensors_name_gets_a_suffix(tmp_path):
    """Each layer's tensor is renamed to the layer's name: a name some other tensor already
    has must not merge the two."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["t1"], name="/y/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t1"], ["y"], name="/b/Relu"),
        helper.make_node("GlobalAveragePool", ["y"], ["pooled"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(5, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=(4, 5)).astype(np.float32), "fc.weight"),
        ],
    )
    source = tmp_path / "clash.onnx"
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    made.ir_version = 8  # what exporters write; onnx's own default is newer than ONNX Runtime reads
    onnx.save(made, source)
    spec = export_onnx(source, tmp_path / "out.onnx", OnnxOptions(gradients=False), log=lambda _: None)
    assert [layer.name for layer in spec.layers] == ["y_1", "b", "pool", "fc", "softmax"]
    model = load_model(tmp_path / "out.onnx", provider="cpu")
    photos = _photos(8, 8, 2)
    maps = model.activations(photos)
    fed = np.transpose(photos / np.float32(255), (0, 3, 1, 2)).astype(np.float32)
    np.testing.assert_allclose(maps["b"], np.maximum(maps["y_1"], 0), rtol=1e-6)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(maps["fc"], session.run(None, {"x": fed})[0], rtol=1e-5, atol=1e-6)


def test_values_left_as_inputs_are_named_with_advice(tmp_path):
    """Keras' model.export leaves a Normalization layer's mean and variance as graph inputs."""
    model = onnx.load(str(FIXTURES / "keras_export.onnx"))
    model.graph.input.append(onnx.helper.make_tensor_value_info("norm/Sub/y:0", onnx.TensorProto.FLOAT, [1, 1, 1, 3]))
    extra = tmp_path / "extra_input.onnx"
    onnx.save(model, extra)
    with pytest.raises(ConversionError, match=r"also norm/Sub/y:0 \[1, 1, 1, 3\].*store them"):
        export_onnx(extra, tmp_path / "out.onnx", log=lambda _: None)


def _tiny_graph(tmp_path: Path, nodes: list, name: str) -> Path:
    """NCHW 3x8x8 input 'x' and 4 logits 'logits'; weights 'w' (5x3x3x3) and 'fc.weight' (4x5)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(5, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=(4, 5)).astype(np.float32), "fc.weight"),
        ],
    )
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    made.ir_version = 8
    path = tmp_path / name
    onnx.save(made, path)
    return path


def test_swish_is_one_layer_with_gradients(tmp_path):
    """SiLU (EfficientNet) exports as x * sigmoid(x): featapp shows the product, not the gate."""
    from onnx import helper

    source = _tiny_graph(
        tmp_path,
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="/block/conv/Conv", pads=[1, 1, 1, 1]),
            helper.make_node("Sigmoid", ["c"], ["s"], name="/block/act/Sigmoid"),
            helper.make_node("Mul", ["c", "s"], ["m"], name="/block/act/Mul"),
            helper.make_node("GlobalAveragePool", ["m"], ["p"], name="/pool/GlobalAveragePool"),
            helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
            helper.make_node("Gemm", ["f", "fc.weight"], ["logits"], name="/fc/Gemm", transB=1),
        ],
        "swish.onnx",
    )
    out = tmp_path / "swish_featapp.onnx"
    spec = export_onnx(source, out, log=lambda _: None)
    assert [(layer.name, layer.kind, layer.activation) for layer in spec.layers[:2]] == [
        ("block.conv", "Conv2D", None),
        ("block.act", "Activation", "swish"),
    ]
    assert out.with_name("swish_featapp.grad.onnx").is_file()
    maps = load_model(out, provider="cpu").activations(_photos(8, 8, 1))
    conv = maps["block.conv"]
    np.testing.assert_allclose(maps["block.act"], conv / (1 + np.exp(-conv)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("fill", "has_field"), [(0.0, True), (1.0, False)])
def test_zero_padding_before_a_strided_conv_keeps_receptive_fields(tmp_path, fill, has_field):
    """Keras' ZeroPadding2D (a Pad node) before a stride-2 'valid' conv is that conv's padding:
    its maps keep their receptive fields. A pad with another value moves pixels: none."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("Pad", ["x", "pads", "fill"], ["padded"], name="/pad/Pad"),
        helper.make_node("Conv", ["padded", "w"], ["c"], name="/conv/Conv", strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    source = _tiny_graph(tmp_path, nodes, "padded.onnx")
    model = onnx.load(str(source))
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
            numpy_helper.from_array(np.array(fill, np.float32), "fill"),
        ]
    )
    onnx.save(model, source)
    spec = export_onnx(source, tmp_path / "out.onnx", OnnxOptions(gradients=False), log=lambda _: None)
    conv = spec.layers[0]
    assert (conv.name, conv.output_shape) == ("conv", (4, 4, 5))
    if has_field:
        assert conv.receptive_field.size == (3, 3) and conv.receptive_field.jump == (2, 2)
        assert spec.layers[1].receptive_field == conv.receptive_field
    else:
        assert conv.receptive_field is None


def test_weights_in_a_separate_data_file_are_read(tmp_path, monkeypatch):
    """PyTorch's dynamo exporter keeps the weights in ``NAME.onnx.data`` beside the file: the
    converter reads them from there wherever it is run from, and the result holds them itself."""
    source = onnx.load(str(FIXTURES / "torch_dynamo.onnx"))
    folder = tmp_path / "export"
    folder.mkdir()
    onnx.save_model(
        source, str(folder / "net.onnx"), save_as_external_data=True, location="net.onnx.data", size_threshold=0
    )
    assert any(
        init.external_data for init in onnx.load(str(folder / "net.onnx"), load_external_data=False).graph.initializer
    )
    monkeypatch.chdir(tmp_path)  # not the file's folder, so a relative lookup would miss it
    export_onnx(folder / "net.onnx", tmp_path / "net_featapp.onnx", OnnxOptions(), log=lambda _: None)
    (folder / "net.onnx.data").unlink()  # the converted file needs nothing beside it
    photos = _photos(32, 32)
    got = load_model(tmp_path / "net_featapp.onnx", provider="cpu").predict(photos).probabilities
    want = load_model(tmp_path / "net_featapp.onnx", provider="cpu")  # reloaded: same numbers
    np.testing.assert_allclose(want.predict(photos).probabilities, got)
    reference = export_onnx(FIXTURES / "torch_dynamo.onnx", tmp_path / "ref.onnx", OnnxOptions(), log=lambda _: None)
    assert reference.layers[-1].name == "softmax"
    np.testing.assert_allclose(
        got, load_model(tmp_path / "ref.onnx", provider="cpu").predict(photos).probabilities, rtol=1e-6, atol=1e-7
    )


def test_a_global_pool_named_like_its_own_tensor_keeps_its_name(tmp_path):
    """torchvision's MobileNetV2 calls its pool functionally: the dynamo exporter names the
    node's scope and its output both 'mean'. The flattened copy takes that name, and the
    graph stays valid (one writer per tensor)."""
    source = onnx.load(str(FIXTURES / "torch_dynamo.onnx"))
    pool = next(node for node in source.graph.node if node.op_type == "ReduceMean")
    del pool.metadata_props[:]
    pool.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'mean']")
    onnx.save(source, str(tmp_path / "net.onnx"))
    export_onnx(tmp_path / "net.onnx", tmp_path / "out.onnx", OnnxOptions(), log=lambda _: None)
    model = load_model(tmp_path / "out.onnx", provider="cpu")
    assert "mean" in model.layer_names and "mean_1" not in model.layer_names
    assert model.activations(_photos(32, 32, 1))["mean"].shape == (1, 8)


REAL_TORCH = FIXTURES / "pytorch_2.14"


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_files_written_by_pytorch_itself_convert_with_every_view(tmp_path, exporter):
    """The fixtures' network exported by PyTorch 2.14's own exporters (make_torch_fixtures.py,
    run by hand): the dynamo file keeps its weights in a .onnx.data file, opset 20, and folds
    each batch norm into the convolution before it, naming the result after the batch norm."""
    out = tmp_path / f"{exporter}.onnx"
    export_onnx(REAL_TORCH / f"torch_{exporter}.onnx", out, OnnxOptions(), log=lambda _: None)
    model = load_model(out, provider="cpu")
    if exporter == "legacy":
        assert model.layer_names == TORCH_LAYERS
    else:
        renamed = {"conv1": "bn1", "layer1.0.conv1": "layer1.0.bn1", "layer1.0.conv2": "layer1.0.bn2"}
        assert model.layer_names == [renamed.get(name, name) for name in TORCH_LAYERS]
    photos = _photos(32, 32)
    source = ort.InferenceSession(str(REAL_TORCH / f"torch_{exporter}.onnx"), providers=["CPUExecutionProvider"])
    feed = np.transpose(photos / np.float32(255), (0, 3, 1, 2)).astype(np.float32)
    logits = source.run(None, {source.get_inputs()[0].name: feed})[0]
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(photos).probabilities, want, rtol=1e-5, atol=1e-6)
    # The same network as the committed look-alikes (same weights, make_onnx_fixtures.py).
    look_alike = tmp_path / "look_alike.onnx"
    export_onnx(FIXTURES / "torch_legacy.onnx", look_alike, OnnxOptions(gradients=False), log=lambda _: None)
    np.testing.assert_allclose(
        model.predict(photos).probabilities,
        load_model(look_alike, provider="cpu").predict(photos).probabilities,
        rtol=1e-4,
        atol=1e-5,
    )
    assert out.with_suffix(".grad.onnx").is_file()


# -- a MobileNet-style network: depthwise convs, ReLU6, Pad, Concat, HardSwish, a gate ------------------
@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Path:
    from tests.helpers.gradgraphs import mobilenet_like

    folder = tmp_path_factory.mktemp("mobilenet")
    out = folder / "mobilenet_featapp.onnx"
    export_onnx(mobilenet_like(folder / "mobilenet_like.onnx"), out, OnnxOptions(), log=lambda _: None)
    return out


def test_a_mobilenet_like_network_gets_its_gradient_model(mobilenet):
    from featapp.explain.backward import gradient_path
    from featapp.explain.gradients import load_gradients

    assert gradient_path(mobilenet).is_file()
    model = load_model(mobilenet, provider="cpu")
    kinds = {layer.name: (layer.kind, layer.activation) for layer in model.layers}
    assert kinds["features.1.dw"] == ("DepthwiseConv2D", None)
    assert kinds["features.0.act"] == ("ReLU6", "relu6")
    assert kinds["features.1.se.mul"] == ("Multiply", None)
    assert kinds["features.concat"] == ("Concatenate", None)
    assert kinds["features.3.act"] == ("Activation", None)
    grad_ops = {node.op_type for node in onnx.load(str(gradient_path(mobilenet))).graph.node}
    assert {"Clip", "Pad", "Concat", "HardSwish", "HardSigmoid", "ConvTranspose", "ReduceSum", "Slice"} <= grad_ops
    assert set(model.layer_names) <= set(load_gradients(model).targets)


def test_mobilenet_like_saliency_and_gradcam_match_finite_differences(mobilenet):
    """Saliency is d logit / d input and Grad-CAM's weights come from d logit / d layer: both
    checked cell by cell against central differences of the forward graph, computed in float64
    by onnx's reference evaluator (one pixel's share of a logit is too small for float32)."""
    from featapp.explain.gradcam import gradcam
    from featapp.explain.gradients import load_gradients
    from featapp.explain.saliency import saliency
    from tests.helpers.gradgraphs import in_float64, with_offset

    model = load_model(mobilenet, provider="cpu")
    grads = load_gradients(model)
    photo = _photos(32, 32, 1)[0]
    scaled = grads.scaled(model.prepare(photo)).astype(np.float64)
    logits = model.layer_names[-2]
    forward = onnx.load(str(mobilenet))
    h = 1e-4  # of the 0..1 input range: no ReLU6 or HardSwish kink is that close at these cells

    def difference(evaluator, class_index: int, feeds: dict[str, np.ndarray], name: str, at: tuple) -> float:
        """Central difference of the class logit for a nudge of cell ``at`` of the fed tensor ``name``."""
        values = []
        for sign in (1, -1):
            moved = feeds[name].copy()
            moved[at] += sign * h
            values.append(float(evaluator.run([logits], {**feeds, name: moved})[0][0, class_index]))
        return (values[0] - values[1]) / (2 * h)

    plain = saliency(grads, photo)
    assert np.isfinite(plain.gradient).all() and plain.per_pixel.max() > 0
    largest = float(np.abs(plain.gradient).max())
    run = in_float64(forward)
    strongest = np.argsort(np.abs(plain.gradient).ravel())[-3:]
    some = np.random.default_rng(3).choice(plain.gradient.size, 3, replace=False)
    for flat in [*strongest, *some]:
        cell = tuple(int(i) for i in np.unravel_index(flat, plain.gradient.shape))
        numeric = difference(run, plain.class_index, {"input": scaled}, "input", (0, *cell))
        assert numeric == pytest.approx(float(plain.gradient[cell]), rel=1e-3, abs=1e-4 * largest), cell

    cam = gradcam(grads, photo)
    assert cam.layer == "features.3.conv"
    assert np.isfinite(cam.per_pixel).all() and cam.per_pixel.max() > 0 and np.abs(cam.weights).max() > 0
    at_layer = grads.class_gradient(model.prepare(photo), np.array([cam.class_index])).gradients[cam.layer][0]
    np.testing.assert_allclose(cam.weights, at_layer.mean(axis=(1, 2)), rtol=1e-6)
    largest = float(np.abs(at_layer).max())
    nudged = in_float64(with_offset(forward, cam.layer))
    zero = np.zeros((1, *at_layer.shape), np.float64)
    for cell in [
        (0, 0, 0),
        (3, 2, 5),
        (15, 7, 7),
        tuple(int(i) for i in np.unravel_index(np.abs(at_layer).argmax(), at_layer.shape)),
    ]:
        offset = f"{cam.layer}__offset"
        numeric = difference(nudged, cam.class_index, {"input": scaled, offset: zero}, offset, (0, *cell))
        assert numeric == pytest.approx(float(at_layer[cell]), rel=1e-3, abs=1e-4 * largest), cell
