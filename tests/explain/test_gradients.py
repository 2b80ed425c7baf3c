"""Gradients in ONNX Runtime: the converter's backward graph, and the views built on it.

Tiny Keras models are built and exported here (never trained); the committed model and
its snapshots are checked with their committed gradient files, on real photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featapp.engine.model import load_model
from featapp.explain.backward import gradient_path
from featapp.explain.gradients import GradientError, load_gradients

REPO_ROOT = Path(__file__).resolve().parents[2]


def _export(model, path: Path) -> Path:
    from convert.export import ExportOptions, export_model

    lines: list[str] = []
    export_model(model, path, ExportOptions(), log=lines.append)
    return path


def _small_model(shape=(17, 17, 1), seed: int = 3):
    """One 3x3 conv + ReLU + 2x2 max pool (15 -> 7: the last row and column are dropped),
    then Flatten and one sigmoid unit; random weights, a negative bias so some cells are off."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=shape),
            layers.Conv2D(3, 3, activation="relu", name="conv2d", bias_initializer=keras.initializers.Constant(-0.1)),
            layers.MaxPooling2D(2, name="max_pooling2d"),
            layers.Flatten(name="flatten"),
            layers.Dense(1, activation="sigmoid", name="dense"),
        ],
        name="small",
    )
    return model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model = _small_model()
    path = _export(model, tmp_path_factory.mktemp("small") / "small.onnx")
    return model, load_model(path, provider="cpu")


def test_export_writes_a_gradient_model_beside_the_forward_one(small):
    _, feature_model = small
    assert gradient_path(feature_model.path).is_file()
    grads = load_gradients(feature_model)
    assert {"conv2d", "conv2d:preact", "max_pooling2d", "flatten", "dense"} <= set(grads.targets)


def test_channel_mean_gradient_matches_the_hand_computed_rule(small):
    """d mean(pool channel c) / d x: each pool cell sends 1/cells to its argmax conv cell;
    a conv cell that is on (ReLU > 0) sends its filter back over its 3x3 window."""
    keras_model, feature_model = small
    grads = load_gradients(feature_model)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 17, 17, 1)).astype(np.uint8)
    x = pixels.astype(np.float32) / 255
    kernel, bias = (np.asarray(w) for w in keras_model.get_layer("conv2d").get_weights())  # (3, 3, 1, 3), (3,)
    channel = 1
    got = grads.channel_gradient(pixels, "max_pooling2d", [channel, channel])
    for i in range(2):
        conv = np.zeros((15, 15))
        for r in range(15):
            for c in range(15):
                conv[r, c] = (x[i, r : r + 3, c : c + 3, :] * kernel[:, :, :, channel]).sum() + bias[channel]
        want = np.zeros((17, 17, 1))
        for pr in range(7):
            for pc in range(7):
                window = conv[2 * pr : 2 * pr + 2, 2 * pc : 2 * pc + 2]
                r, c = np.unravel_index(window.argmax(), window.shape)
                r, c = 2 * pr + r, 2 * pc + c
                if conv[r, c] > 0:
                    want[r : r + 3, c : c + 3, :] += kernel[:, :, :, channel] / 49
        np.testing.assert_allclose(got[i], want, atol=1e-6)
        # Row 14 and column 14 of the conv map are dropped by the pooling: pixels seen only
        # by them (row 16, column 16) get no gradient.
        assert not got[i, 16].any() and not got[i, :, 16].any()


def test_logit_gradient_matches_finite_differences(small):
    _, feature_model = small
    grads = load_gradients(feature_model)
    rng = np.random.default_rng(1)
    x = rng.random((1, 17, 17, 1)).astype(np.float32)
    dog = np.ones(1, np.int64)
    result = grads.class_gradient(np.zeros((1, 17, 17, 1), np.uint8), dog, scaled=x)
    gradient = result.gradients["input"][0].astype(np.float64)

    def logit(inputs: np.ndarray) -> float:
        p = float(feature_model._session.run(["dense"], {"input": inputs.astype(np.float32)})[0][0, 0])
        return float(np.log(p / (1 - p)))

    # Directional derivatives along random directions: exact for a piecewise-linear net
    # as long as no ReLU or max switches within the step.
    for k in range(3):
        direction = np.random.default_rng(10 + k).normal(size=x.shape)
        h = 1e-3
        numeric = (logit(x + h * direction) - logit(x - h * direction)) / (2 * h)
        assert numeric == pytest.approx(float((gradient * direction[0]).sum()), rel=2e-2, abs=1e-3)


def test_verification_refuses_a_wrong_backward_graph(small, tmp_path):
    """The converter's check compares with tf.GradientTape: a gradient graph with a
    changed weight in one backward node must be refused."""
    import onnx
    from onnx import numpy_helper

    from convert.errors import ConversionError
    from convert.gradients import verify_gradients
    from featapp.engine.metadata import METADATA_KEY
    from featapp.explain.backward import build_gradient_model

    _, feature_model = small
    forward = onnx.load(str(feature_model.path))
    meta = {p.key: p.value for p in forward.metadata_props}
    grad = build_gradient_model(forward, meta[METADATA_KEY])
    images = np.random.default_rng(2).random((2, 17, 17, 1)).astype(np.float32)
    assert verify_gradients(forward, grad, images, log=lambda _: None)
    # The backward Gemm reads the dense weights: give it a copy with one weight changed.
    gemm = next(n for n in grad.graph.node if n.op_type == "Gemm" and n.name.startswith("grad/dense"))
    weights = next(i for i in grad.graph.initializer if i.name == gemm.input[1])
    changed = numpy_helper.to_array(weights).copy()
    changed.flat[5] += 0.5
    grad.graph.initializer.append(numpy_helper.from_array(changed, "changed_weights"))
    gemm.input[1] = "changed_weights"
    with pytest.raises(ConversionError, match="disagree"):
        verify_gradients(forward, grad, images, log=lambda _: None)


def test_an_unsupported_layer_exports_without_gradients_and_says_which(tmp_path):
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input(shape=(12, 12, 3)),
            layers.Conv2D(2, 3, name="conv2d"),
            layers.Activation("elu", name="odd_activation"),
            layers.Flatten(name="flatten"),
            layers.Dense(1, activation="sigmoid", name="dense"),
        ]
    )
    path = _export(model, tmp_path / "odd.onnx")
    assert path.is_file() and not gradient_path(path).exists()
    feature_model = load_model(path, provider="cpu")
    with pytest.raises(GradientError, match=r"gradient views unavailable: layer odd_activation \(Activation\)"):
        load_gradients(feature_model)


# -- the committed model and its snapshots ----------------------------------------------------
@pytest.fixture(scope="module")
def committed_grads(model):
    return load_gradients(model)


def test_committed_gradients_agree_with_tensorflow_on_real_photos(model, dataset):
    """The converter's own check (tf.GradientTape on a replay of the forward graph), on two photos."""
    import onnx

    from convert.gradients import verify_gradients

    photos = [dataset.images("test")[0].path, next(i for i in dataset.images("test") if i.class_name == "dogs").path]
    inputs = model._scaled(model.prepare(photos))
    forward = onnx.load(str(model.path))
    grad = onnx.load(str(gradient_path(model.path)))
    errors = verify_gradients(forward, grad, inputs, tolerance=1e-4, log=lambda _: None)
    assert any(label.startswith("logit") for label in errors)
    assert sum(label.endswith("mean") for label in errors) >= 4


def test_gradcam_concentrates_on_the_animal_where_occlusion_agrees(model, committed_grads, dataset):
    from featapp.explain.gradcam import gradcam
    from featapp.explain.occlusion import occlusion_sensitivity

    def centre_vs_border(values: np.ndarray) -> float:
        h, w = values.shape
        centre = values[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean()
        ring = np.ones_like(values, bool)
        ring[h // 8 : 7 * h // 8, w // 8 : 7 * w // 8] = False
        return float(centre - values[ring].mean())

    checked = 0
    agreeing = 0
    for image in dataset.images("test")[:24:2]:
        photo = model.prepare(image.path)
        occlusion = occlusion_sensitivity(model, photo[0], patch=30, stride=20)
        if centre_vs_border(np.maximum(occlusion.per_pixel(), 0)) <= 0:
            continue  # occlusion does not place the evidence in the middle: no claim here
        cam = gradcam(committed_grads, photo)
        checked += 1
        agreeing += centre_vs_border(cam.per_pixel / (cam.per_pixel.max() + 1e-12)) > 0
        if checked == 4:
            break
    assert checked >= 2
    assert agreeing >= checked - 1


def test_layer1_neuron_picture_is_the_filter_pattern(model, committed_grads):
    """The app's objective for layer 1 is the centre neuron, and its picture's receptive patch is
    the channel's kernel (correlation at least 0.9 for every channel), not a flat colour."""
    from featapp.engine.filters import read_first_layer_filters
    from featapp.explain.featurevis import default_objective, visualize

    layer = model.layer("conv2d")
    assert default_objective(layer, (150, 150)) == "neuron"
    assert default_objective(model.layer("conv2d_3"), (150, 150)) == "channel"
    filters = read_first_layer_filters(model.path).weights  # (out, in, 3, 3)
    result = visualize(committed_grads, "conv2d", range(layer.channels), steps=16, objective="neuron")
    rows, cols = layer.output_shape[:2]
    r, c = rows // 2, cols // 2
    assert result.box == (r, c, r + 3, c + 3)  # the centre cell's receptive field (valid conv)
    for channel in range(layer.channels):
        picture = result.images[channel].astype(np.float64)
        patch = picture[r : r + 3, c : c + 3, :]
        pattern = np.transpose(filters[channel], (1, 2, 0))
        correlation = np.corrcoef(patch.ravel(), pattern.ravel())[0, 1]
        assert correlation >= 0.9, (channel, correlation)
    # At a fixed contrast a channel with a strongly negative bias may stay at 0 after the ReLU.
    assert np.all(result.activations >= result.start_activations)
    assert np.mean(result.activations > result.start_activations) > 0.9
    # What a student sees is that patch, enlarged by a whole factor, with a one-pixel margin.
    shown = result.shown()
    assert shown.shape[1] == shown.shape[2] >= 96 and shown.shape[1] % 5 == 0


def test_feature_visualisation_raises_the_channel_and_is_deterministic(committed_grads, model):
    from featapp.explain.featurevis import visualize

    layer = "conv2d_1"
    # Two channels that respond to faint noise at all (picked by what the model computes).
    noise = np.clip(128 + np.random.default_rng(0).normal(0, 5, (1, 150, 150, 3)), 0, 255).astype(np.uint8)
    means = model.activations(noise, layers=[layer])[layer][0].mean(axis=(1, 2))
    channels = [int(c) for c in np.argsort(means)[-2:]]
    one = visualize(committed_grads, layer, channels, steps=6, seed=5)
    two = visualize(committed_grads, layer, channels, steps=6, seed=5)
    np.testing.assert_array_equal(one.images, two.images)
    assert np.all(one.activations > one.start_activations)
    other = visualize(committed_grads, layer, channels, steps=6, seed=6)
    assert not np.array_equal(one.images, other.images)


def test_saliency_and_smoothgrad_on_a_photo(committed_grads, cat_photo):
    from featapp.explain.saliency import saliency, smoothgrad

    plain = saliency(committed_grads, cat_photo)
    smooth = smoothgrad(committed_grads, cat_photo, samples=4, seed=1)
    assert plain.per_pixel.shape == smooth.per_pixel.shape == (150, 150)
    assert plain.per_pixel.max() > 0 and smooth.per_pixel.max() > 0
    np.testing.assert_array_equal(smooth.per_pixel, smoothgrad(committed_grads, cat_photo, samples=4, seed=1).per_pixel)


def test_gradient_sessions_have_no_arena(committed_grads, cat_photo):
    from featapp.explain.saliency import saliency

    saliency(committed_grads, cat_photo)
    sessions = list(committed_grads._sessions.values())
    assert sessions and not any(s.get_session_options().enable_cpu_mem_arena for s in sessions)


def test_smoothgrad_in_small_batches_is_the_same_map(committed_grads, cat_photo):
    """SmoothGrad's copies run a few at a time (issue 28: the working memory of 16 at once);
    each copy's gradient is its own, so the map is the one batch's."""
    from featapp.explain.saliency import smoothgrad

    one_batch = smoothgrad(committed_grads, cat_photo, samples=6, seed=3, batch_size=6)
    for batch_size in (1, 4):
        chunked = smoothgrad(committed_grads, cat_photo, samples=6, seed=3, batch_size=batch_size)
        np.testing.assert_allclose(chunked.per_pixel, one_batch.per_pixel, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(chunked.gradient, one_batch.gradient, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="batch_size"):
        smoothgrad(committed_grads, cat_photo, batch_size=0)


def test_trunk_snapshot_gives_a_clear_message_for_class_views_only():
    from featapp.engine.snapshots import load_snapshots
    from featapp.explain.featurevis import visualize
    from featapp.explain.gradcam import gradcam
    from featapp.explain.saliency import saliency

    snapshot = load_snapshots()[0].load(provider="cpu")
    grads = load_gradients(snapshot)
    photo = np.full((150, 150, 3), 100, np.uint8)
    for view in (saliency, gradcam):
        with pytest.raises(GradientError, match="no classifier"):
            view(grads, photo)
    assert visualize(grads, snapshot.layers[0].name, [0], steps=2).images.shape == (1, 150, 150, 3)


def test_missing_or_stale_gradient_file_is_explained(tmp_path, model):
    import shutil

    copy = tmp_path / "copy.onnx"
    shutil.copyfile(model.path, copy)
    with pytest.raises(GradientError, match=r"python -m convert gradients"):
        load_gradients(load_model(copy, provider="cpu"))
    shutil.copyfile(gradient_path(model.path), gradient_path(copy))
    with open(copy, "ab") as handle:
        handle.write(b"")  # same bytes: same hash, accepted
    assert load_gradients(load_model(copy, provider="cpu")).targets
    other = tmp_path / "other.onnx"
    shutil.copyfile(next((REPO_ROOT / "models" / "snapshots").glob("epoch_[0-9][0-9][0-9].onnx")), other)
    shutil.copyfile(gradient_path(model.path), gradient_path(other))
    with pytest.raises(GradientError, match="another version"):
        load_gradients(load_model(other, provider="cpu"))


def test_class_gradient_in_one_run_equals_seeding_the_predicted_class(model, committed_grads, dataset):
    """Without a class, the sigmoid model is differentiated in one run and the sign flipped
    for images predicted negative: the same as seeding each image's predicted class."""
    photos = [image.path for image in dataset.sample("test", per_class=2, seed=4)]
    predicted = model.predict(photos).indices
    assert len(set(predicted)) == 2  # both classes among these photos, or the flip is not tested
    quick = committed_grads.class_gradient(photos)
    seeded = committed_grads.class_gradient(photos, predicted)
    np.testing.assert_array_equal(quick.class_indices, predicted)
    for name, grad in seeded.gradients.items():
        np.testing.assert_allclose(quick.gradients[name], grad, rtol=1e-6, atol=1e-12)


def _relu_graph():
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_a_relu_input_at_rounding_distance_from_zero_follows_onnx_runtime():
    """A trained network has ReLU inputs a rounding step from zero: ONNX Runtime may see one
    negative where TensorFlow sees it positive, and route the gradient elsewhere. The check
    follows ONNX Runtime there, and only there."""
    import tensorflow as tf

    from convert.errors import ConversionError
    from convert.gradients import _replay

    x = tf.Variable(np.array([[3e-8, 0.5, -0.5, 2.0]], np.float32))
    ort_says = np.array([[0.0, 0.5, 0.0, 2.0]], np.float32)  # the first cell fell on the other side
    with tf.GradientTape() as tape:
        y = _replay(_relu_graph(), x, relu_outputs={"y": ort_says})["y"]
        total = tf.reduce_sum(y)
    assert tape.gradient(total, x).numpy().tolist() == [[0.0, 1.0, 0.0, 1.0]]
    with pytest.raises(ConversionError, match="more than rounding"):
        _replay(_relu_graph(), x, relu_outputs={"y": np.array([[3e-8, 0.0, 0.0, 2.0]], np.float32)})


def test_a_failed_gradient_check_never_says_nothing_written(tmp_path, monkeypatch):
    """The forward model is written before its gradient model is checked: the message says
    what was written and what was not."""
    import convert.gradients as gradients
    from convert.errors import ConversionError

    def disagree(*args, **kwargs):
        raise ConversionError("ONNX Runtime and tf.GradientTape disagree (test); the gradient model was not written.")

    monkeypatch.setattr(gradients, "write_gradient_model", disagree)
    out = tmp_path / "small.onnx"
    with pytest.raises(ConversionError) as caught:
        _export(_small_model(), out)
    message = str(caught.value)
    assert "nothing written" not in message and f"{out} was written" in message
    assert out.is_file() and not gradient_path(out).exists()


def test_the_finite_difference_check_refuses_a_wrong_backward_graph(small):
    """The ONNX path has no TensorFlow: its check must still catch a changed backward weight."""
    import onnx
    from onnx import numpy_helper

    from convert.errors import ConversionError
    from convert.gradients import check_gradients_numerically
    from featapp.engine.metadata import METADATA_KEY
    from featapp.explain.backward import build_gradient_model

    _, feature_model = small
    forward = onnx.load(str(feature_model.path))
    grad = build_gradient_model(forward, {p.key: p.value for p in forward.metadata_props}[METADATA_KEY])
    images = np.random.default_rng(2).random((2, 17, 17, 1)).astype(np.float32)
    assert max(check_gradients_numerically(forward, grad, images, log=lambda _: None).values()) < 1e-2
    gemm = next(n for n in grad.graph.node if n.op_type == "Gemm" and n.name.startswith("grad/dense"))
    weights = next(i for i in grad.graph.initializer if i.name == gemm.input[1])
    changed = numpy_helper.to_array(weights) * np.float32(-1.0)
    grad.graph.initializer.append(numpy_helper.from_array(changed, "changed_weights"))
    gemm.input[1] = "changed_weights"
    with pytest.raises(ConversionError, match="finite differences"):
        check_gradients_numerically(forward, grad, images, log=lambda _: None)


def test_a_mobilenet_style_keras_model_is_checked_against_the_tape(tmp_path):
    """ZeroPadding2D (Pad), ReLU6 (Clip, at both bounds on these images), a depthwise conv,
    hard sigmoid (Keras writes relu6(x + 3) / 6) and Concatenate: the gradient model is written
    only after tf.GradientTape agrees."""
    import onnx

    from tests.helpers.keras_builders import mobilenet_block, uint8_images

    lines: list[str] = []
    from convert.export import ExportOptions, export_model

    export_model(mobilenet_block(), tmp_path / "block.onnx", ExportOptions(), log=lines.append)
    assert gradient_path(tmp_path / "block.onnx").is_file()
    checked = [line for line in lines if line.startswith("  d(")]
    assert any("logit of probs" in line for line in checked) and len(checked) >= 4
    nodes = onnx.load(str(tmp_path / "block.onnx")).graph.node
    assert {"Pad", "Clip", "Concat"} <= {node.op_type for node in nodes}
    assert any(
        attr.name == "group" and attr.i == 8 for node in nodes if node.op_type == "Conv" for attr in node.attribute
    )
    model = load_model(tmp_path / "block.onnx", provider="cpu")
    relu6 = model.activations(uint8_images((16, 16, 3)), layers=["stem_relu"])["stem_relu"]
    assert (relu6 == 0).any() and (relu6 == 6).any() and ((relu6 > 0) & (relu6 < 6)).any()


def test_a_relu6_input_at_rounding_distance_from_a_bound_follows_onnx_runtime():
    """As for a ReLU: where ONNX Runtime clipped a value TensorFlow sees a rounding step inside
    (or the other way round), the check takes ONNX Runtime's side; farther apart, it refuses."""
    import onnx
    import tensorflow as tf
    from onnx import TensorProto, helper, numpy_helper

    from convert.errors import ConversionError
    from convert.gradients import _replay

    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="relu6")],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")],
    )
    relu6 = helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    x = tf.Variable(np.array([[6 - 4e-6, 0.5, 7.0, 3e-8]], np.float32))
    ort_says = np.array([[6.0, 0.5, 6.0, 0.0]], np.float32)  # cells 1 and 4 on the other side of a bound
    with tf.GradientTape() as tape:
        y = _replay(relu6, x, relu_outputs={"y": ort_says})["y"]
        total = tf.reduce_sum(y)
    assert tape.gradient(total, x).numpy().tolist() == [[0.0, 1.0, 0.0, 0.0]]
    np.testing.assert_allclose(y.numpy(), ort_says, atol=1e-5)
    with pytest.raises(ConversionError, match="Clip 'relu6'.*more than rounding"):
        _replay(relu6, x, relu_outputs={"y": np.array([[6.0, 0.0, 6.0, 0.0]], np.float32)})
