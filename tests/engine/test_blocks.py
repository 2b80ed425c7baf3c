"""featapp.engine.blocks: block names from the layer names real model builders write.

The Keras names are those of ``keras.applications`` models (MobileNetV2's were read from a
converted ``MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35)``); the PyTorch
ones are torchvision's module paths as ``convert export`` names them.
"""

from __future__ import annotations

import pytest

from featapp.engine.blocks import RUN_LENGTH, Block, block_of, group_blocks


@pytest.mark.parametrize(
    ("name", "block"),
    [
        # Keras MobileNetV2
        ("block_3_expand", "block_3"),
        ("block_16_project_BN", "block_16"),
        ("block_1_pad", "block_1"),
        ("expanded_conv_depthwise_relu", "expanded_conv"),
        ("Conv1", None),
        ("out_relu", None),
        # Keras MobileNetV3, ResNet50, DenseNet121, EfficientNetB0, VGG16, Xception, InceptionV3, ConvNeXt
        ("expanded_conv_4_squeeze_excite_conv", "expanded_conv_4"),
        ("conv2_block1_1_conv", "conv2_block1"),
        ("conv4_block12_0_bn", "conv4_block12"),
        ("block2a_se_squeeze", "block2a"),
        ("stem_activation", "stem"),
        ("top_conv", "top"),
        ("block1_conv2", "block1"),
        ("block13_sepconv2_act", "block13"),
        ("mixed9_1", "mixed9"),
        ("mixed10", "mixed10"),
        ("batch_normalization_93", None),
        ("convnext_tiny_stage_2_block_5_depthwise_conv", "convnext_tiny_stage_2_block_5"),
        # PyTorch: ResNet, MobileNetV2, EfficientNet, Inception v3, a head
        ("layer1.0.conv1", "layer1.0"),
        ("layer3.1.downsample.0", "layer3.1"),
        ("features.3.conv.0.0", "features.3"),
        ("features.0.0", "features.0"),
        ("features.2.0.block.1.0", "features.2.0"),
        ("Mixed_5b.branch1x1.conv", "Mixed_5b"),
        ("classifier.1", "classifier"),
        ("fc", None),
        # tf2onnx's names for a Keras file: the Keras layer, then the operation
        ("block_3_expand.convolution", "block_3"),
        ("conv_a.convolution", "conv_a"),
    ],
)
def test_block_of_reads_the_builders_names(name, block):
    assert block_of(name) == block


def test_a_mobilenet_v2_in_blocks():
    names = ["Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise", "expanded_conv_project"]
    for block in (1, 2):
        names += [f"block_{block}_{part}" for part in ("expand", "expand_relu", "depthwise", "project")]
    names += ["block_2_add", "Conv_1", "out_relu", "global_average_pooling2d", "predictions"]
    blocks = group_blocks(names)
    assert [(b.name, len(b.layers)) for b in blocks] == [
        ("Conv1 to Conv1_relu", 3),
        ("expanded_conv", 2),
        ("block_1", 4),
        ("block_2", 5),
        ("Conv_1 to predictions", 4),
    ]
    assert [name for block in blocks for name in block.layers] == names  # every layer once, in order
    assert blocks[2].label == "block_1 (layers 6-9)"


def test_unnamed_layers_join_the_block_around_them_or_the_inception_module_they_close():
    # MobileNetV3 leaves some activations unnamed inside a named block.
    names = ["expanded_conv_3_expand", "re_lu_5", "expanded_conv_3_depthwise", "multiply_2", "expanded_conv_3_add"]
    assert [b.name for b in group_blocks(names)] == ["expanded_conv_3"]
    # Keras' Inception: a module's branches are unnamed, its closing Concatenate is mixedN.
    names = ["conv2d", "activation", "max_pooling2d", "conv2d_5", "average_pooling2d", "mixed0", "conv2d_12", "mixed1"]
    assert [(b.name, b.numbers) for b in group_blocks(names)] == [
        ("mixed0", (1, 2, 3, 4, 5, 6)),
        ("mixed1", (7, 8)),
    ]


def test_long_runs_of_unnamed_layers_are_cut_into_groups():
    names = ["conv2d"] + [f"conv2d_{i}" for i in range(1, 45)]
    blocks = group_blocks(names)
    assert [len(b.layers) for b in blocks] == [RUN_LENGTH, RUN_LENGTH, 45 - 2 * RUN_LENGTH]
    assert blocks[0].name == f"conv2d to conv2d_{RUN_LENGTH - 1}"


def test_numbers_are_the_models_and_a_block_that_comes_back_is_split():
    blocks = group_blocks(["layer1.0.conv1", "layer2.0.conv1", "layer1.0.conv2"], numbers=[3, 9, 12])
    assert blocks == [
        Block("layer1.0", ("layer1.0.conv1",), (3,)),
        Block("layer2.0", ("layer2.0.conv1",), (9,)),
        Block("layer1.0", ("layer1.0.conv2",), (12,)),
    ]
    assert [b.label for b in blocks] == ["layer1.0 (layer 3)", "layer2.0 (layer 9)", "layer1.0 (layer 12)"]
    with pytest.raises(ValueError, match="2 numbers for 3 layers"):
        group_blocks(["a", "b", "c"], numbers=[1, 2])
