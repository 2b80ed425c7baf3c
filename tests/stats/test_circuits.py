"""Which channels build a channel (issue 29, item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.arithmetic import CannotExplain, read_layer_ops
from featapp.engine.model import load_model
from featapp.stats.circuits import channel_circuit
from tests.helpers.modelfactory import Conv, TinyNet, build


@pytest.fixture(scope="module")
def committed_ops(model):
    return read_layer_ops(model)


def test_a_channel_of_the_committed_model_is_built_from_the_conv_below_through_its_pooling(committed_ops):
    circuit = channel_circuit(committed_ops, "conv2d_3", 6, count=5)
    assert circuit.below == "conv2d_2" and circuit.via == ("max_pooling2d_2",) and circuit.inputs == 128
    assert len(circuit.excitatory) == 5 and len(circuit.inhibitory) == 5
    weights = committed_ops["conv2d_3"].weights[6].astype(np.float64)
    norms = np.sqrt((weights**2).sum(axis=(1, 2)))
    sums = weights.sum(axis=(1, 2))
    positive = [int(i) for i in np.argsort(-norms) if sums[i] >= 0][:5]
    negative = [int(i) for i in np.argsort(-norms) if sums[i] < 0][:5]
    assert [link.channel for link in circuit.excitatory] == positive
    assert [link.channel for link in circuit.inhibitory] == negative
    assert all(link.signed > 0 for link in circuit.excitatory) and all(link.signed < 0 for link in circuit.inhibitory)
    assert circuit.excitatory[0].norm == pytest.approx(norms[positive[0]])


def test_a_hand_made_kernel_ranks_as_built(tmp_path):
    net = TinyNet(height=10, width=10, channels=1, convs=(Conv(3), Conv(2)), pool=False)
    net.weights["conv2d_1/W"][:] = 0.0
    net.weights["conv2d_1/W"][1, 0] = 0.1  # weak, excites
    net.weights["conv2d_1/W"][1, 1] = -1.0  # strong, inhibits
    net.weights["conv2d_1/W"][1, 2, 1, 1] = 2.0  # strongest, excites
    small = load_model(build(net, tmp_path / "tiny.onnx"), provider="cpu")
    circuit = channel_circuit(read_layer_ops(small), "conv2d_1", 1, count=3)
    assert circuit.below == "conv2d" and circuit.via == ()
    assert [link.channel for link in circuit.excitatory] == [2, 0]
    assert [link.channel for link in circuit.inhibitory] == [1]
    assert circuit.inhibitory[0].norm == pytest.approx(3.0)


def test_layers_without_channels_below_say_why(committed_ops):
    with pytest.raises(CannotExplain, match="first convolution"):
        channel_circuit(committed_ops, "conv2d", 0)
    with pytest.raises(CannotExplain, match="pooling layer"):
        channel_circuit(committed_ops, "max_pooling2d", 0)
    with pytest.raises(CannotExplain, match="channels 1-64"):
        channel_circuit(committed_ops, "conv2d_1", 64)


def test_the_feature_map_lists_the_inputs_and_a_button_opens_one(app_env, committed_ops):
    from tests.helpers.apptest import main_text, open_app

    at = open_app("feature_map")
    at.selectbox(key="feature_map.layer").set_value("conv2d_1").run()
    at.session_state["view.channel"] = 3
    at.run()
    text = main_text(at)
    assert (
        "Channel 3 of conv2d_1 is a weighted sum of all 32 channels of layer 1 (conv2d), through max_pooling2d" in text
    )
    circuit = channel_circuit(committed_ops, "conv2d_1", 2, count=4)
    target = circuit.inhibitory[0].channel
    button = next(b for b in at.button if b.key == f"circuit.conv2d_1.2.{target}")
    assert button.label == f"Channel {target + 1}"
    button.click().run()
    assert not at.exception
    assert at.session_state["view.layer"] == "conv2d" and at.session_state["view.channel"] == target + 1
    assert "Layer 1 (conv2d), channel " + str(target + 1) in main_text(at)


def test_the_first_layer_has_no_circuit_section(app_env):
    from tests.helpers.apptest import main_text, open_app

    assert "weighted sum of all" not in main_text(open_app("feature_map"))


def test_an_input_channel_s_picture_shows_once_it_was_computed(app_env, model, committed_ops, monkeypatch):
    from featapp.explain.featurevis import channel_picture
    from featapp.explain.gradients import load_gradients
    from tests.helpers.apptest import open_app

    monkeypatch.setenv("FEATAPP_VIS_STEPS", "4")  # a few steps: this checks where the picture shows, not its look
    target = channel_circuit(committed_ops, "conv2d_1", 2, count=4).excitatory[0].channel
    channel_picture(load_gradients(model), "conv2d", target, steps=4)  # into app_env's cache folder
    at = open_app("feature_map")
    at.selectbox(key="feature_map.layer").set_value("conv2d_1").run()
    at.session_state["view.channel"] = 3
    at.run()
    assert not at.exception
    alts = [image.proto.imgs[0].alt for image in at.main.image]
    wanted = f"What channel {target + 1} of conv2d looks for (its optimised picture)"
    assert wanted in alts, alts


def test_a_dense_unit_s_channel_contributions_add_up_to_its_value(model, dataset):
    from featapp.engine.images import prepare_image
    from featapp.stats.circuits import dense_unit_inputs, dense_weights

    weights, bias, source = dense_weights(model.path, "dense")
    assert weights.shape == (6272, 512) and bias.shape == (512,) and source == "flatten"
    pixels = np.stack([prepare_image(item.path, model) for item in dataset.sample("test", per_class=2, seed=7)])
    acts = model.activations(pixels)
    for unit in (0, 5, 300):
        inputs = dense_unit_inputs(
            weights, bias, "dense", unit, "max_pooling2d_3", acts["max_pooling2d_3"], acts["flatten"]
        )
        assert inputs.contributions.shape == (4, 128)
        value = np.maximum(inputs.contributions.sum(axis=1) + inputs.bias, 0.0)
        assert np.allclose(value, acts["dense"][:, unit], atol=1e-5)
        up, down = inputs.strongest(3)
        assert all(v > 0 for _, v in up) and all(v < 0 for _, v in down)
    out_weights, out_bias, out_source = dense_weights(model.path, "dense_1")
    assert out_weights.shape == (512, 1) and out_source == "dense"
    with pytest.raises(CannotExplain, match="not the 128 x 7 x 7"):
        dense_unit_inputs(
            out_weights, out_bias, "dense_1", 0, "max_pooling2d_3", acts["max_pooling2d_3"], acts["dense"]
        )


def test_a_channels_first_flatten_is_read_in_its_own_order():
    from featapp.stats.circuits import dense_unit_inputs

    rng = np.random.default_rng(0)
    maps = rng.random((2, 3, 2, 2))
    weights = rng.normal(size=(12, 2))
    flat = maps.reshape(2, -1)  # as PyTorch flattens
    inputs = dense_unit_inputs(weights, np.zeros(2), "fc", 1, "pool", maps, flat)
    assert np.allclose(inputs.contributions.sum(axis=1), flat @ weights[:, 1])
    with pytest.raises(CannotExplain, match="in any order"):
        dense_unit_inputs(weights, np.zeros(2), "fc", 1, "pool", maps, flat[:, ::-1])


def test_each_input_channel_shows_its_strongest_scanned_photo(monkeypatch, tmp_path, dataset, model, committed_ops):
    from featapp.data.dataset import Dataset
    from featapp.stats.analysis import load_cached
    from tests.helpers.apptest import main_text, open_app
    from tests.helpers.samples import scanned_sample

    photos, cache = scanned_sample(tmp_path / "scan", dataset, model, per_class=4)
    for name, value in {
        "FEATAPP_DATA_DIR": photos,
        "FEATAPP_CACHE_DIR": tmp_path / "empty-cache",
        "FEATAPP_SNAPSHOTS": tmp_path / "no-snapshots",
        "FEATAPP_PROVIDER": "cpu",
        "FEATAPP_MAP_VIEW": "server",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("FEATAPP_MODEL", raising=False)

    def conv2d_1_channel_3():
        at = open_app("feature_map")
        at.selectbox(key="feature_map.layer").set_value("conv2d_1").run()
        at.session_state["view.channel"] = 3
        at.run()
        assert not at.exception
        return at

    at = conv2d_1_channel_3()  # not scanned yet: the section says where the photos come from
    assert "strongest photo shows here once a split has been scanned" in main_text(at)
    assert not [image for image in at.main.image if "drives channel" in image.proto.imgs[0].alt]

    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(cache))
    at = conv2d_1_channel_3()
    stats = load_cached(model, Dataset(photos), "test", cache)
    circuit = channel_circuit(committed_ops, "conv2d_1", 2, count=4)
    alts = [image.proto.imgs[0].alt for image in at.main.image]
    for link in [*circuit.excitatory, *circuit.inhibitory]:
        top = stats.top_k("conv2d", link.channel, k=1)[0]
        wanted = f"The photo that drives channel {link.channel + 1} of conv2d hardest: {top.path.name}"
        assert any(alt.startswith(wanted) for alt in alts), (wanted, alts)
    assert "strongest photo of the 8 scanned (test)" in main_text(at)
