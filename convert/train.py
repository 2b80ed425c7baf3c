"""Train the lecture's small cats-vs-dogs convnet (``python -m convert train``).

The architecture is the lecture's, layer for layer, with Keras' default layer names.
Augmentation runs in the input pipeline, not inside the model, so the saved model
starts at ``conv2d`` exactly like the lecture's and its layer 1 is 148x148x32.

Any Keras 3 backend trains it. With TensorFlow (``requirements-convert.txt``) the
augmentation runs in a ``tf.data`` pipeline beside the model, on the CPU. With JAX or
PyTorch (``KERAS_BACKEND=jax``, for a GPU machine that has no TensorFlow) it runs as
the first layers of a training-only wrapper, on the accelerator; the model that is
saved is still the one without them. The saved ``.keras`` files do not depend on the
backend that trained them.

Recipe (see ``models/MODEL_CARD.md`` for the numbers it gave):

* every image goes through :func:`featapp.prepare_image`, the same function the app
  uses, so training and inspection see identical pixels (150x150, stretched, bilinear);
  pixels are scaled to [0, 1] by dividing by 255;
* the book's augmentation: horizontal flips, rotations of up to 0.1 turn, zooms of up to
  20 % and shifts of up to 10 %; optionally (``--mixup ALPHA``, TensorFlow backend) MixUp
  after it, which blends pairs of training images and their labels (:func:`mix`);
* binary cross-entropy, AdamW with a linear warm-up then cosine decay, batch 32, in
  float32 (``--bfloat16`` trains in mixed precision, which is faster only on CPUs with
  native bfloat16, such as AVX512-BF16 or AMX, and several times slower elsewhere (the model
  card's "Training time"); every saved model is plain float32;
* the best epoch is chosen on validation accuracy;
* optionally (``--refit``) a final fit on train + validation, with the same schedule,
  for the number of epochs where validation accuracy peaked once smoothed over
  :data:`REFIT_SMOOTHING` epochs (1,000 validation photos make single epochs noisy by
  about one point, so the raw best epoch is mostly chance); the test split is never
  looked at.

The run folder keeps everything: ``best.keras`` (the best epoch so far, updated as it
goes, so an interrupted run still leaves its best model), ``backup/`` (Keras'
BackupAndRestore, written atomically: run the same command again to resume), ``history.json``,
``learning_curve.png`` and ``snapshots/`` (the network at chosen epochs, for watching
features emerge).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from featapp.data.dataset import Dataset
from featapp.engine.images import InputSpec, prepare_image

INPUT_SPEC = InputSpec(150, 150, 3)
DEFAULT_SNAPSHOT_EPOCHS = (0, 1, 2, 5, 10)
REFIT_SMOOTHING = 5
"""Epochs in the centred moving average of validation accuracy that sets the refit's length."""

# Explicit names equal to the names Keras gives a fresh session, so that the names do
# not drift when a process builds the model twice (Keras numbers layers per process).
LAYER_NAMES = (
    "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2",
    "conv2d_3", "max_pooling2d_3", "flatten", "dropout", "dense", "dense_1",
)  # fmt: skip


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str
    epochs: int = 90
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.02
    warmup_epochs: int = 3
    seed: int = 1337
    mixed_precision: bool = False
    refit: bool = False
    refit_epochs: int | None = None
    refit_warm_start: bool = False
    refit_learning_rate: float | None = None
    limit_per_class: int | None = None
    mixup_alpha: float = 0.0
    snapshot_epochs: tuple[int, ...] = field(default=DEFAULT_SNAPSHOT_EPOCHS)
    extra_train: tuple[str, ...] = ()
    kernel_initializer: str = "glorot_uniform"
    # None: the first conv layer starts like the others. A smaller start there (Glorot's
    # limit is 3.4x below He's for 27 inputs and 32 outputs) lets AdamW's steps, whose size
    # does not depend on the weights' scale, move those 864 weights further from where
    # they began.
    first_layer_initializer: str | None = None
    label_smoothing: float = 0.0
    liveness_images: int = 1000
    # The first layer's kernel is trained as ``scale * w`` (w starts at init / scale): AdamW's
    # step on w, whose size does not depend on the gradient's, then moves the kernel ``scale``
    # times further per step, in the first layer only. Folded away when the model is saved.
    first_layer_kernel_scale: float = 1.0
    # Train on pixels centred to [-1, 1] (2x - 1): the first layer then sees inputs of both
    # signs, so a ReLU channel is less easily pushed to never firing. Folded into the first
    # layer's kernel and bias when the model is saved, which keeps the [0, 1] input contract.
    centre_inputs: bool = False
    # None: the first layer's kernel decays at ``weight_decay`` like every other weight. A
    # rate of its own (decoupled, AdamW's form: w -= lr * rate * w each step) lets its random
    # start fade while the gradient keeps what it learns: AdamW's steps add the learned part on
    # top of the start, which a weak decay barely shrinks.
    first_layer_weight_decay: float | None = None


def native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 natively (AMX or AVX512-BF16), where mixed
    bfloat16 training is several times faster than float32; elsewhere it is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be safe, train in float32
        return False
    words = set(flags.split())
    return bool(words & {"amx_bf16", "avx512_bf16"})


def choose_precision(requested: str) -> str:
    """``"float32"`` or ``"mixed_bfloat16"`` for ``requested`` in auto, float32, bfloat16."""
    if requested == "auto":
        return "mixed_bfloat16" if native_bfloat16() else "float32"
    if requested in ("bfloat16", "mixed_bfloat16"):
        return "mixed_bfloat16"
    if requested == "float32":
        return "float32"
    raise ValueError(f"unknown precision {requested!r}: use auto, float32 or bfloat16")


def build_model(
    dtype: str | None = None,
    kernel_initializer: str = "glorot_uniform",
    first_layer_initializer: str | None = None,
    first_layer_kernel_scale: float = 1.0,
    centre_inputs: bool = False,
):
    """The lecture's convnet: 4 x (Conv2D 3x3 relu + MaxPool 2x2), Flatten, Dropout 0.5,
    Dense 512 relu, Dense 1 sigmoid = p(dog). Input 150x150x3 in [0, 1].

    ``first_layer_kernel_scale`` and ``centre_inputs`` build the network as it is trained
    with those options (see :class:`TrainConfig`); :func:`float32_copy` folds both away, so
    every saved model is the plain one."""
    import keras
    from keras import layers

    init = {"kernel_initializer": kernel_initializer}
    first_init = {"kernel_initializer": first_layer_initializer or kernel_initializer}

    class ScaledKernelConv2D(layers.Conv2D):
        """A Conv2D whose kernel is ``kernel_scale * self.kernel``, starting where the plain one starts."""

        kernel_scale = first_layer_kernel_scale

        def build(self, input_shape):
            super().build(input_shape)
            self.kernel.assign(self.kernel / self.kernel_scale)

        def convolution_op(self, inputs, kernel):
            return super().convolution_op(inputs, kernel * self.kernel_scale)

    first_conv = layers.Conv2D if first_layer_kernel_scale == 1.0 else ScaledKernelConv2D
    # With mixed precision the classifier's output stays float32 for a stable loss.
    head_dtype = "float32" if dtype == "mixed_bfloat16" else dtype
    centre = [layers.Rescaling(2.0, offset=-1.0, name="centre", dtype=dtype)] if centre_inputs else []
    n = iter(LAYER_NAMES)
    return keras.Sequential(
        [
            keras.Input(shape=(INPUT_SPEC.height, INPUT_SPEC.width, INPUT_SPEC.channels), name="input"),
            *centre,
            first_conv(32, 3, activation="relu", name=next(n), dtype=dtype, **first_init),
            layers.MaxPooling2D(2, name=next(n), dtype=dtype),
            layers.Conv2D(64, 3, activation="relu", name=next(n), dtype=dtype, **init),
            layers.MaxPooling2D(2, name=next(n), dtype=dtype),
            layers.Conv2D(128, 3, activation="relu", name=next(n), dtype=dtype, **init),
            layers.MaxPooling2D(2, name=next(n), dtype=dtype),
            layers.Conv2D(128, 3, activation="relu", name=next(n), dtype=dtype, **init),
            layers.MaxPooling2D(2, name=next(n), dtype=dtype),
            layers.Flatten(name=next(n), dtype=dtype),
            layers.Dropout(0.5, name=next(n), dtype=dtype),
            layers.Dense(512, activation="relu", name=next(n), dtype=dtype, **init),
            layers.Dense(1, activation="sigmoid", name=next(n), dtype=head_dtype),
        ],
        name="cats_dogs_small",
    )


def fold_first_layer(weights: list[np.ndarray], kernel_scale: float, centred: bool) -> list[np.ndarray]:
    """The weights of the network :func:`build_model` trains as the plain model's.

    With a kernel scale the kernel is ``scale * w``. With centred inputs the layer computes
    ``K * (2x - 1) + b = (2K) * x + (b - sum K)``: the window of a 'valid' convolution always
    lies inside the image, so the sum over the kernel is exact at every position.
    """
    kernel, bias, *rest = [np.asarray(w, np.float64) for w in weights]
    kernel = kernel * kernel_scale
    if centred:
        bias = bias - kernel.sum(axis=(0, 1, 2))
        kernel = 2.0 * kernel
    return [np.asarray(w, np.float32) for w in (kernel, bias, *rest)]


def unfold_first_layer(weights: list[np.ndarray], kernel_scale: float, centred: bool) -> list[np.ndarray]:
    """The inverse of :func:`fold_first_layer`: a plain model's weights for the training network."""
    kernel, bias, *rest = [np.asarray(w, np.float64) for w in weights]
    if centred:
        kernel = kernel / 2.0
        bias = bias + kernel.sum(axis=(0, 1, 2))
    return [np.asarray(w, np.float32) for w in (kernel / kernel_scale, bias, *rest)]


def first_layer_kernel(model) -> np.ndarray:
    """The first conv layer's effective kernel ``(rows, cols, in, out)`` as the plain model has it."""
    scale, centred = _reparametrisation(model)
    return fold_first_layer(model.get_weights()[:2], scale, centred)[0]


def _reparametrisation(model) -> tuple[float, bool]:
    import keras

    centred = any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    return float(getattr(conv, "kernel_scale", 1.0)), centred


def float32_copy(model):
    """A plain float32 model with ``model``'s weights: what gets saved and exported."""
    copy = build_model("float32")
    scale, centred = _reparametrisation(model)
    copy.set_weights(fold_first_layer(model.get_weights(), scale, centred))
    return copy


def load_split(dataset: Dataset, split: str, limit_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split as uint8 ``(N, 150, 150, 3)`` and labels ``(N,)``."""
    images = dataset.images(split)
    if limit_per_class is not None:
        per_class: dict[int, int] = {}
        kept = []
        for image in images:
            if per_class.get(image.label, 0) < limit_per_class:
                per_class[image.label] = per_class.get(image.label, 0) + 1
                kept.append(image)
        images = kept
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(lambda image: prepare_image(image.path, INPUT_SPEC), images))
    return np.stack(arrays), np.array([image.label for image in images], dtype=np.float32)


def load_extra_train(folder: str | os.PathLike, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A further training folder in the ``<class>/`` layout (``cats_vs_dogs_extra/train``),
    as uint8 images and labels in the main dataset's class order. Its class folders must
    be the main dataset's, or the labels would silently mean something else."""
    from featapp.data.dataset import DatasetError, _is_image, _natural_key

    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"extra training folder '{root}' does not exist")
    found = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if found != tuple(sorted(classes)):
        raise DatasetError(
            f"extra training folder '{root}' has the class folders {', '.join(found) or 'none'}, "
            f"but the dataset's are {', '.join(classes)}: they must be the same"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((p for p in (root / name).iterdir() if _is_image(p)), key=_natural_key)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetError(f"extra training folder '{root}' has no images")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(lambda path: prepare_image(path, INPUT_SPEC), paths))
    return np.stack(arrays), np.array(labels, dtype=np.float32)


def augmentation():
    """The book's augmentation for this model, applied to batches in [0, 1]."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.1, fill_mode="nearest"),
            layers.RandomZoom(0.2, fill_mode="nearest"),
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
        ],
        name="augmentation",
    )


def mix(images, labels, weights, partners):
    """MixUp (Zhang et al., 2018) on a batch of tensors: image ``i`` becomes
    ``w_i * image_i + (1 - w_i) * image_partners[i]``, and its label likewise, so labels
    become soft (binary cross-entropy takes them as they are). Training accuracy then
    counts only unmixed labels as hits; validation is never mixed."""
    import tensorflow as tf

    image_weights = tf.reshape(weights, tf.concat([[-1], tf.ones(tf.rank(images) - 1, tf.int32)], 0))
    return (
        image_weights * images + (1 - image_weights) * tf.gather(images, partners),
        weights * labels + (1 - weights) * tf.gather(labels, partners),
    )


def make_datasets(x_train, y_train, x_val, y_val, batch_size: int, seed: int, mixup_alpha: float = 0.0):
    import tensorflow as tf

    augment = augmentation()

    def scale(x, y):
        return tf.cast(x, tf.float32) / 255.0, y

    def augment_batch(x, y):
        return augment(x, training=True), y

    def mixup_batch(x, y):
        # Beta(alpha, alpha) weights from two Gamma draws; partners are the batch shuffled.
        size = tf.shape(x)[0]
        first = tf.random.gamma([size], mixup_alpha)
        second = tf.random.gamma([size], mixup_alpha)
        weights = first / (first + second)
        return mix(x, y, weights, tf.random.shuffle(tf.range(size)))

    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(scale, num_parallel_calls=tf.data.AUTOTUNE)
        .map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    )
    if mixup_alpha > 0:
        train = train.map(mixup_batch, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)
    val = None
    if x_val is not None:
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(128).map(scale).cache().prefetch(2)
    return train, val


def with_augmentation(model):
    """A training-only wrapper: the book's augmentation, then ``model`` (for backends without tf.data)."""
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    # No training=True here: Keras passes fit's training flag down, so validation sees plain images.
    return keras.Model(inputs, model(augmentation()(inputs)), name="augmented_for_training")


def _unit_range(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / 255.0


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    import keras

    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, total // 2)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=max(total - warmup, 1),
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
        alpha=0.01,
    )


def _callbacks(config: TrainConfig, run_dir: Path, with_validation: bool, model, liveness_images=None):
    """``model`` is the network that is saved; Keras may be fitting a wrapper around it."""
    import keras

    class SaveFloat32(keras.callbacks.Callback):
        """Keep the best epoch and the snapshot epochs as float32 ``.keras`` files."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -1.0
            state = run_dir / "best.json"
            if state.exists():
                self.best = json.loads(state.read_text())["val_accuracy"]

        def on_train_begin(self, logs=None):
            if 0 in config.snapshot_epochs and not (run_dir / "snapshots" / "epoch_000.keras").exists():
                self._snapshot(0, None)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            done = epoch + 1
            val = logs.get("val_accuracy")
            if done in config.snapshot_epochs:
                self._snapshot(done, val)
            if with_validation and val is not None and val > self.best:
                self.best = float(val)
                _atomic_save(float32_copy(model), run_dir / "best.keras")
                _atomic_write_text(run_dir / "best.json", json.dumps({"epoch": done, "val_accuracy": float(val)}))
                print(f"\nEpoch {done}: val_accuracy improved to {val:.4f}; saved {run_dir / 'best.keras'}")

        def _snapshot(self, epoch: int, val_accuracy: float | None) -> None:
            folder = run_dir / "snapshots"
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_save(float32_copy(model), folder / f"epoch_{epoch:03d}.keras")
            index_path = folder / "index.json"
            index = json.loads(index_path.read_text()) if index_path.exists() else {}
            index[str(epoch)] = {"epoch": epoch, "val_accuracy": val_accuracy, "file": f"epoch_{epoch:03d}.keras"}
            _atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))

    class HistoryFile(keras.callbacks.Callback):
        """Append each epoch to ``history.json`` so an interrupted run keeps its curve."""

        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            history = json.loads(self.path.read_text()) if self.path.exists() else []
            history = [row for row in history if row["epoch"] < epoch + 1]
            row = {"epoch": epoch + 1, "seconds": round(time.monotonic() - self.started, 1)}
            row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
            row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            history.append(row)
            _atomic_write_text(self.path, json.dumps(history, indent=1))
            self.started = time.monotonic()

    class Liveness(keras.callbacks.Callback):
        """After each epoch, how alive each conv layer is on the validation photos; the
        numbers go into the epoch's logs, so HistoryFile (next) writes them with the curve."""

        def __init__(self, images: np.ndarray) -> None:
            super().__init__()
            self.images = images
            conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
            self.names = [layer.name for layer in conv]
            self.trunk = keras.Model(model.inputs, [layer.output for layer in conv])

        def measure(self) -> dict[str, dict]:
            from featapp.stats.liveness import LivenessCounter

            counters = [LivenessCounter(channels_last=True) for _ in self.names]
            for start in range(0, len(self.images), 64):
                batch = _unit_range(self.images[start : start + 64])
                outputs = self.trunk(batch, training=False)
                for counter, maps in zip(counters, outputs, strict=True):
                    counter.update(keras.ops.convert_to_numpy(keras.ops.cast(maps, "float32")))
            return {name: counter.result().as_dict() for name, counter in zip(self.names, counters, strict=True)}

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            for name, live in self.measure().items():
                logs[f"dead_{name}"] = live["never_active_share"]
                logs[f"constant_{name}"] = live["constant_map_share"]
            summary = ", ".join(f"{logs[f'dead_{n}']:.0%}" for n in self.names)
            print(f"\nEpoch {epoch + 1}: channels never active on validation: {summary}", flush=True)

    class FirstLayerMeasures(keras.callbacks.Callback):
        """After each epoch, how far the first layer is from its start and how many of its
        kernels are oriented edges (:mod:`featapp.engine.filters`); into the epoch's logs, like liveness."""

        start_file = run_dir / "first_layer_start.npy"

        def on_train_begin(self, logs=None):
            # Runs after BackupAndRestore: on a resume the start file is already there.
            if not self.start_file.exists():
                _atomic_write_npy(self.start_file, first_layer_kernel(model))
            self.start = np.load(self.start_file)

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            from featapp.engine.filters import edge_like_kernels, kernel_correlation

            kernel = first_layer_kernel(model)
            logs["first_layer_correlation_with_start"] = kernel_correlation(kernel, self.start)
            logs["first_layer_edge_kernels"] = float(len(edge_like_kernels(kernel.transpose(3, 2, 0, 1))))
            print(
                f"\nEpoch {epoch + 1}: first layer's correlation with its start "
                f"{logs['first_layer_correlation_with_start']:.3f}, "
                f"edge-like kernels {int(logs['first_layer_edge_kernels'])} of {kernel.shape[-1]}",
                flush=True,
            )

    liveness = None
    if with_validation and liveness_images is not None and len(liveness_images):
        liveness = Liveness(liveness_images)
    return [
        atomic_backup_and_restore(run_dir / "backup"),
        FirstLayerMeasures(),
        liveness,
        SaveFloat32() if with_validation or config.snapshot_epochs else None,
        HistoryFile(run_dir / "history.json"),
    ]


def atomic_backup_and_restore(backup_dir: Path):
    """Keras' ``BackupAndRestore`` (resume an interrupted run), writing its files atomically.

    Keras writes ``latest.weights.h5`` in place: a run killed while it writes (Ctrl+C
    twice, an out-of-memory kill, a closed laptop lid on a laptop that then powers off)
    leaves a truncated file, and every later resume stops with ``OSError: Unable to
    synchronously open file``. Here the weights and the epoch go to temporary files that
    are renamed over the old ones, weights first: a kill between the two renames makes
    the resume repeat one epoch rather than skip one.
    """
    import keras

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _save_model(self) -> None:
            folder = Path(self.backup_dir)
            folder.mkdir(parents=True, exist_ok=True)
            weights_tmp = folder / ".latest.tmp.weights.h5"  # Keras insists on the .weights.h5 ending
            self.model.save_weights(filepath=str(weights_tmp), overwrite=True)
            _fsync(weights_tmp)
            metadata_tmp = folder / ".training_metadata.json.tmp"
            metadata_tmp.write_text(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))
            _fsync(metadata_tmp)
            os.replace(weights_tmp, self._weights_path)
            os.replace(metadata_tmp, self._training_metadata_path)

    return AtomicBackupAndRestore(str(backup_dir), delete_checkpoint=False)


def _fsync(path: Path) -> None:
    # On disk before the rename, so a power cut cannot leave a renamed but empty file.
    with open(path, "rb+") as written:
        os.fsync(written.fileno())


def _atomic_save(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save(tmp, include_optimizer=False) if path.suffix == ".h5" else model.save(tmp)
    _fsync(tmp)
    os.replace(tmp, path)


def _atomic_write_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, array)
    _fsync(tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def _fit(
    config: TrainConfig,
    run_dir: Path,
    train_xy: tuple[np.ndarray, np.ndarray],
    val_xy: tuple[np.ndarray, np.ndarray] | None,
    epochs: int,
    snapshots: bool,
    start_from: Path | None = None,
):
    import keras

    keras.utils.set_random_seed(config.seed)
    policy = "mixed_bfloat16" if config.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(
        policy,
        config.kernel_initializer,
        config.first_layer_initializer,
        config.first_layer_kernel_scale,
        config.centre_inputs,
    )
    if start_from is not None:
        # A resumed run then overwrites these with its own backup, as it should.
        plain = keras.models.load_model(start_from, compile=False).get_weights()
        model.set_weights(unfold_first_layer(plain, config.first_layer_kernel_scale, config.centre_inputs))
    steps = int(np.ceil(len(train_xy[0]) / config.batch_size))
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(config, steps), weight_decay=config.weight_decay
    )
    first_layer_decay = first_layer_weight_decay(model, optimizer, config.first_layer_weight_decay)
    resumed_at = resumed_epoch(run_dir / "backup")
    seed = data_seed(config.seed, resumed_at)
    if resumed_at:
        # Reseeded after the model is built, before the augmentation layers are: their random
        # streams, and the shuffle's, start from the seed given here.
        keras.utils.set_random_seed(seed)
        print(f"Resuming after epoch {resumed_at}: new batches and augmentations (seed {seed}).", flush=True)
    if keras.backend.backend() == "tensorflow":
        x_val, y_val = val_xy or (None, None)
        train_ds, val_ds = make_datasets(*train_xy, x_val, y_val, config.batch_size, seed, config.mixup_alpha)
        fitted, data = model, {"x": train_ds, "validation_data": val_ds}
    else:
        fitted = with_augmentation(model)
        data = {
            "x": _unit_range(train_xy[0]),
            "y": train_xy[1],
            "batch_size": config.batch_size,
            "shuffle": True,
            "validation_data": None if val_xy is None else (_unit_range(val_xy[0]), val_xy[1]),
        }
    loss = keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
    fitted.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    local = TrainConfig(**{**asdict(config), "snapshot_epochs": config.snapshot_epochs if snapshots else ()})
    liveness_images = None if val_xy is None else val_xy[0][: config.liveness_images]
    callbacks = [first_layer_decay, *_callbacks(local, run_dir, val_xy is not None, model, liveness_images)]
    fitted.fit(
        **data,
        epochs=epochs,
        callbacks=[c for c in callbacks if c is not None],
        verbose=2 if os.environ.get("FEATAPP_TRAIN_QUIET") else 1,
    )
    keras.mixed_precision.set_global_policy("float32")
    return model


def first_layer_weight_decay(model, optimizer, rate: float | None):
    """Give the first conv layer's kernel a decoupled weight decay of its own.

    Removes the kernel from ``optimizer``'s decay (call before the optimizer is built) and
    returns a callback that, after each step, multiplies it by ``1 - lr * rate`` (AdamW's
    decoupled form, at the optimizer's current learning rate); ``None`` when ``rate`` is
    None. Keras' AdamW has one rate for all the weights it decays, hence the callback.
    """
    import keras

    if rate is None:
        return None
    kernel = model.get_layer(LAYER_NAMES[0]).kernel
    optimizer.exclude_from_weight_decay(var_list=[kernel])

    class FirstLayerWeightDecay(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            kernel.assign(kernel * (1.0 - learning_rate * rate))

    return FirstLayerWeightDecay()


def resumed_epoch(backup_dir: Path) -> int:
    """The epoch a run in ``backup_dir``'s folder resumes after: the number Keras'
    ``BackupAndRestore`` reads to skip the epochs done; 0 for a fresh run."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def data_seed(seed: int, resumed_at: int) -> int:
    """The seed of the shuffles and augmentations of a run that resumes after ``resumed_at`` epochs.

    The data pipeline is built afresh in every process, so seeding it with ``seed`` alone made a
    resumed run repeat, batch for batch, the shuffles and augmentations of the epochs it had
    already trained on (the model then fits those exact images better and generalises worse). A
    fresh run keeps ``seed``; a resumed one gets a stream of its own, from ``seed`` and the epoch.
    """
    if resumed_at <= 0:
        return seed
    return int(np.random.SeedSequence([seed, resumed_at]).generate_state(1)[0] % 2**31)


def selection_finished(selection_dir: Path, epochs: int) -> bool:
    """True when the selection run in ``selection_dir`` completed all ``epochs``."""
    try:
        history = json.loads((selection_dir / "history.json").read_text())
    except (OSError, ValueError):
        return False
    return len(history) >= epochs and (selection_dir / "best.keras").is_file()


def smoothed_best_epoch(history: list[dict], window: int = REFIT_SMOOTHING) -> int:
    """The epoch (1-based) where validation accuracy, averaged over a centred window of
    ``window`` epochs (shorter at the ends), is highest; the earliest one on ties.

    >>> smoothed_best_epoch([{"epoch": e, "val_accuracy": v} for e, v in enumerate([0.5, 0.9, 0.5, 0.7, 0.8, 0.8], 1)], 3)
    6
    """
    values = [row["val_accuracy"] for row in history]
    half = window // 2
    smoothed = [np.mean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]
    return int(history[int(np.argmax(smoothed))]["epoch"])


def plot_learning_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    dead_keys = [key for key in history[0] if key.startswith("dead_")]
    fig, axes = plt.subplots(1, 3 if dead_keys else 2, figsize=(16 if dead_keys else 11, 4))
    ax_acc, ax_loss = axes[0], axes[1]
    if dead_keys:
        ax_live = axes[2]
        for key in dead_keys:
            ax_live.plot(epochs, [100 * row.get(key, float("nan")) for row in history], label=key[len("dead_") :])
        ax_live.set(xlabel="epoch", ylabel="% of channels", title="Channels never active on validation", ylim=(0, None))
        ax_live.legend()
    ax_acc.plot(epochs, [row["accuracy"] for row in history], label="training")
    if "val_accuracy" in history[0]:
        ax_acc.plot(epochs, [row["val_accuracy"] for row in history], label="validation")
        best = max(history, key=lambda row: row["val_accuracy"])
        ax_acc.axvline(best["epoch"], color="grey", linestyle=":", label=f"best epoch {best['epoch']}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.legend()
    ax_loss.plot(epochs, [row["loss"] for row in history], label="training")
    if "val_loss" in history[0]:
        ax_loss.plot(epochs, [row["val_loss"] for row in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="binary cross-entropy", title="Loss")
    ax_loss.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def train(config: TrainConfig) -> Path:
    """Run the recipe; returns the path of the final model (``model.keras`` in the run folder)."""
    started = time.time()
    if config.mixup_alpha > 0:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ValueError("--mixup needs the TensorFlow backend (its tf.data pipeline mixes the batches)")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = Dataset(config.data_dir)
    print(f"Reading and resizing images from {dataset.root} ...", flush=True)
    train_xy = load_split(dataset, "train", config.limit_per_class)
    for folder in config.extra_train:
        print(f"Reading and resizing extra training images from {folder} ...", flush=True)
        extra = load_extra_train(folder, dataset.classes("train"))
        train_xy = (np.concatenate([train_xy[0], extra[0]]), np.concatenate([train_xy[1], extra[1]]))
    val_xy = load_split(dataset, "validation", config.limit_per_class)
    precision = "mixed_bfloat16" if config.mixed_precision else "float32"
    why = "this CPU has native bfloat16" if native_bfloat16() else "this CPU has no native bfloat16"
    print(f"Training in {precision} ({why}); the saved models are float32.", flush=True)
    print(f"train: {len(train_xy[0])} images, validation: {len(val_xy[0])} images", flush=True)
    _atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=2))

    selection_dir = out / "selection"
    if selection_finished(selection_dir, config.epochs):
        # Rerunning a finished run (say, to add --refit) must not train the selection again.
        print(
            f"The selection run in {selection_dir} has all {config.epochs} epochs; not training it again.", flush=True
        )
    else:
        _fit(config, selection_dir, train_xy, val_xy, config.epochs, snapshots=True)
    history = json.loads((selection_dir / "history.json").read_text())
    plot_learning_curve(history, selection_dir / "learning_curve.png", "Selection run: train vs. validation")
    best = json.loads((selection_dir / "best.json").read_text())
    print(f"Best epoch on validation: {best['epoch']} (val_accuracy {best['val_accuracy']:.4f})", flush=True)

    final_source = selection_dir / "best.keras"
    summary = {"selection": best, "refit": None}
    if config.refit:
        both = (np.concatenate([train_xy[0], val_xy[0]]), np.concatenate([train_xy[1], val_xy[1]]))
        refit_epochs = config.refit_epochs or smoothed_best_epoch(history)
        start_from = selection_dir / "best.keras" if config.refit_warm_start else None
        why = (
            "as asked"
            if config.refit_epochs
            else f"validation accuracy peaks there when smoothed over {REFIT_SMOOTHING} epochs"
        )
        print(
            f"Final fit on train + validation ({len(both[0])} images) for {refit_epochs} epochs ({why}), "
            + (f"starting from {start_from}" if start_from else "from scratch"),
            flush=True,
        )
        refit_dir = out / "refit"
        # The schedule decays over the refit's own length, not the selection run's; from
        # already trained weights a warm-up from zero would only waste epochs.
        refit_config = replace(
            config,
            epochs=refit_epochs,
            learning_rate=config.refit_learning_rate or config.learning_rate,
            warmup_epochs=0 if config.refit_warm_start else config.warmup_epochs,
        )
        model = _fit(refit_config, refit_dir, both, None, refit_epochs, snapshots=False, start_from=start_from)
        _atomic_save(float32_copy(model), refit_dir / "final.keras")
        refit_history = json.loads((refit_dir / "history.json").read_text())
        plot_learning_curve(refit_history, refit_dir / "learning_curve.png", "Final fit on train + validation")
        final_source = refit_dir / "final.keras"
        summary["refit"] = {
            "epochs": refit_epochs,
            "smoothing": None if config.refit_epochs else REFIT_SMOOTHING,
            "images": len(both[0]),
            "warm_start": str(start_from) if start_from else None,
            "learning_rate": refit_config.learning_rate,
        }

    final = out / "model.keras"
    import shutil

    shutil.copyfile(final_source, final)
    import keras

    summary["keras_backend"] = keras.backend.backend()
    summary["seconds"] = round(time.time() - started, 1)
    summary["final_model"] = str(final)
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"Done in {summary['seconds'] / 60:.1f} min. Final model: {final}", flush=True)
    return final
