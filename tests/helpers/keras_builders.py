"""Tiny Keras models for the converter's tests, built in the test run (never trained).

Layer names are given explicitly, so they do not depend on how many models this
process built before (Keras numbers default names per process).
"""

from __future__ import annotations

import numpy as np


def lecture_like(shape=(32, 32, 3), activation: str = "relu"):
    """The lecture's architecture in miniature: 2 x (Conv 3x3 + MaxPool 2), Flatten, Dropout, Dense, Dense sigmoid."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=shape),
            layers.Conv2D(4, 3, activation=activation, name="conv2d"),
            layers.MaxPooling2D(2, name="max_pooling2d"),
            layers.Conv2D(8, 3, activation=activation, name="conv2d_1"),
            layers.MaxPooling2D(2, name="max_pooling2d_1"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(8, activation="relu", name="dense"),
            layers.Dense(1, activation="sigmoid", name="dense_1"),
        ],
        name="tiny_lecture",
    )


def branchy(classes: int = 3):
    """Functional, with a residual Add, a Concatenate of two poolings, BatchNorm, dilation and softmax."""
    import keras
    from keras import layers

    inputs = keras.Input((24, 24, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    branch = layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    branch = layers.Conv2D(6, 3, padding="same", dilation_rate=2, name="dilated")(branch)
    x = layers.Add(name="add")([x, branch])
    pooled = layers.Concatenate(name="concat")(
        [layers.AveragePooling2D(2, name="avg")(x), layers.MaxPooling2D(2, name="max")(x)]
    )
    x = layers.GlobalAveragePooling2D(name="gap")(pooled)
    outputs = layers.Dense(classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="branchy")
    # Non-trivial BatchNorm statistics, so that folding them into the convolution matters.
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.1, 6), rng.normal(0, 0.1, 6), rng.uniform(0.5, 2, 6)])
    return model


def mobilenet_block(classes: int = 3):
    """MobileNetV2's pieces in miniature: ZeroPadding2D + stride-2 conv, BatchNorm, ReLU6,
    depthwise conv, a residual Add, hard sigmoid, a Concatenate, global pooling, softmax."""
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(inputs)
    x = layers.Conv2D(8, 3, strides=2, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    branch = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    branch = layers.ReLU(6.0, name="depthwise_relu")(branch)
    branch = layers.Conv2D(8, 1, name="project")(branch)
    x = layers.Add(name="add")([x, branch])
    gate = layers.Conv2D(4, 1, activation="hard_sigmoid", name="gate")(x)
    x = layers.Concatenate(name="concat")([x, gate])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="mobilenet_block")
    # Statistics that spread the stem over both bounds of its ReLU6 (0 and 6) on test images.
    bn = model.get_layer("stem_bn")
    rng = np.random.default_rng(2)
    bn.set_weights([rng.uniform(3, 6, 8), rng.normal(2.0, 3.0, 8), rng.normal(0, 0.1, 8), rng.uniform(0.05, 0.2, 8)])
    return model


def nested_book_style():
    """The book's 2nd-edition pattern: augmentation and Rescaling inside the model, a nested base model."""
    import keras
    from keras import layers

    augmentation = keras.Sequential(
        [layers.RandomFlip("horizontal", name="flip"), layers.RandomRotation(0.1, name="rotate")], name="augmentation"
    )
    base_in = keras.Input((28, 28, 3))
    b = layers.Conv2D(4, 3, activation="relu", name="base_conv")(base_in)
    b = layers.MaxPooling2D(2, name="base_pool")(b)
    base = keras.Model(base_in, b, name="base")
    inputs = keras.Input((28, 28, 3), name="pixels")
    x = augmentation(inputs)
    x = layers.Rescaling(1.0 / 255, name="rescaling")(x)
    x = base(x)
    x = layers.Conv2D(6, 3, activation="relu", name="head_conv")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_dog")(x)
    return keras.Model(inputs, outputs, name="book_style")


def grayscale_nonsquare():
    """64 x 48 x 1 input, 'same' padding with stride 2, then a 2 x 2 pooling; linear, so every pixel counts."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(64, 48, 1)),
            layers.Conv2D(4, 5, strides=2, padding="same", name="conv_s2"),
            layers.Conv2D(4, 3, padding="same", name="conv_same"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(2, activation="softmax", name="probs"),
        ],
        name="gray",
    )


def graph_zoo():
    """Linear, functional, 21 x 22 x 3: one of each thing receptive fields must follow.

    An asymmetric ZeroPadding2D, a 'valid' conv, a stride-2 'same' conv, a dilated conv
    added back to it (a residual Add), a Concatenate of a 1x1 and a 3x3 branch, an
    asymmetric Cropping2D, an average pooling, and a squeeze-and-excitation gate: global
    pooling, Reshape to 1 x 1, a 1x1 conv with a sigmoid, Multiply.
    """
    import keras
    from keras import layers

    inputs = keras.Input((21, 22, 3), name="image")
    x = layers.ZeroPadding2D(((1, 2), (0, 1)), name="pad")(inputs)  # 24 x 23
    x = layers.Conv2D(4, 3, name="conv_after_pad")(x)  # 22 x 21
    s2 = layers.Conv2D(4, 3, strides=2, padding="same", name="conv_s2_same")(x)  # 11 x 11
    dilated = layers.Conv2D(4, 3, dilation_rate=2, padding="same", name="dilated")(s2)
    x = layers.Add(name="residual")([s2, dilated])
    one = layers.Conv2D(3, 1, name="branch_1x1")(x)
    three = layers.Conv2D(3, 3, padding="same", name="branch_3x3")(x)
    x = layers.Concatenate(name="concat")([one, three])
    x = layers.Cropping2D(((1, 0), (0, 1)), name="crop")(x)  # 10 x 10
    x = layers.AveragePooling2D(2, name="pool")(x)  # 5 x 5
    gate = layers.GlobalAveragePooling2D(name="squeeze")(x)
    gate = layers.Reshape((1, 1, 6), name="squeeze_map")(gate)
    gate = layers.Conv2D(6, 1, activation="sigmoid", name="gate")(gate)
    x = layers.Multiply(name="scaled")([x, gate])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="graph_zoo")


def uint8_images(shape, count: int = 3, seed: int = 7) -> np.ndarray:
    """Random uint8 images ``(count, *shape)``, not the exporter's own verification images."""
    return np.random.default_rng(seed).integers(0, 256, (count, *shape)).astype(np.uint8)


def keras_layer_outputs(model, names, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the named (top-level) layers of ``model`` on ``x``, computed by Keras alone."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    values = probe(x, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {name: keras.ops.convert_to_numpy(v) for name, v in zip(names, values, strict=True)}


def nchw(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, (0, 3, 1, 2)) if array.ndim == 4 else array
