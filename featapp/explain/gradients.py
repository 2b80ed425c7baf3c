"""Gradients of a converted model in ONNX Runtime, from its ``MODEL.grad.onnx``.

The converter writes the backward pass in plain ONNX operators next to the model
(:mod:`featapp.explain.backward`, checked against ``tf.GradientTape`` before it is written), so
gradients run wherever the model runs, on the CPU or CUDA, with no TensorFlow.

>>> grads = load_gradients(model)                                   # doctest: +SKIP
>>> result = grads.class_gradient(["cat.1700.jpg"])   # the predicted class  # doctest: +SKIP
>>> result.gradients["input"].shape   # d logit / d input, like the input (NHWC)  # doctest: +SKIP
(1, 150, 150, 3)
>>> grads.channel_gradient(photo, "conv2d_2", channels=[4]).shape      # doctest: +SKIP
(1, 150, 150, 3)

Channels here are counted from 0 (the UI and the CLI count from 1). Gradients are with
respect to the graph's float input (``pixels * input_scale + input_offset``); the
forward activations of the same run come with them, so Grad-CAM needs one run.

Every reason gradient views cannot work raises :class:`GradientError` (a
:class:`~featapp.engine.model.ModelError`) with a message for a student: no gradient file, a
layer that cannot be differentiated, a file made for another version of the model, or a
class-based view on a model without a classifier (a trunk-only snapshot).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featapp.engine.images import ImageSource
from featapp.engine.model import FeatureModel, ModelError, _session_options, run_heavy
from featapp.engine.priority import run_at_heavy_priority
from featapp.explain.backward import GRADIENTS_KEY, UnsupportedLayer, build_gradient_model, gradient_path, target_graph

__all__ = ["GradientError", "GradientResult", "Gradients", "load_gradients", "class_seed"]

_MAKE_HINT = "make it with 'python -m convert gradients {name}' (or export the model again)"


class GradientError(ModelError):
    """Gradient views cannot work for this model; the message says why."""


@dataclass(frozen=True)
class GradientResult:
    """One run: the forward ``activations`` up to the target layer (as
    :meth:`FeatureModel.activations` gives them) and ``gradients`` of the target scalar
    with respect to ``"input"`` (NHWC) and every layer below the target (NCHW maps)."""

    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    class_indices: np.ndarray | None = None
    """For a class gradient: the class differentiated for each image."""


def class_seed(spec_units: int, output_activation: str | None, class_indices: np.ndarray) -> np.ndarray:
    """The seed on the logits that gives each image's class score (before the activation).

    One sigmoid unit is p(positive): its logit scores the positive class, minus it the negative one.

    >>> class_seed(1, "sigmoid", np.array([1, 0])).ravel().tolist()
    [1.0, -1.0]
    >>> class_seed(3, "softmax", np.array([2])).tolist()
    [[0.0, 0.0, 1.0]]
    """
    class_indices = np.asarray(class_indices, dtype=np.int64)
    if output_activation == "sigmoid" and spec_units == 1:
        return np.where(class_indices == 1, 1.0, -1.0).astype(np.float32)[:, None]
    return np.eye(spec_units, dtype=np.float32)[class_indices]


class Gradients:
    """A model's gradient graph. Build it with :func:`load_gradients`."""

    def __init__(self, model: FeatureModel, proto, info: dict) -> None:
        self.model = model
        self._proto = proto
        self._targets = {t.get("name", t["layer"]): t for t in info["targets"]}
        self._sessions: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def targets(self) -> list[str]:
        """What can be differentiated: layer names (the logit for the classifier), and
        ``<layer>:preact`` for the value before a layer's ReLU."""
        return list(self._targets)

    def _session(self, layer: str):
        import onnxruntime as ort

        with self._lock:
            if layer not in self._sessions:
                pruned = target_graph(self._proto, layer, self.model.layer_names)
                # Made on the heavy-run thread: ONNX Runtime's threads inherit its lower priority.
                self._sessions[layer] = run_at_heavy_priority(
                    lambda: ort.InferenceSession(
                        pruned.SerializeToString(),
                        # No arena: every gradient run is heavy work (bench/results/arena_memory.md).
                        sess_options=_session_options(quiet=True, arena=False),
                        providers=self.model.providers,
                    )
                )
            return self._sessions[layer]

    def run_scaled(self, inputs: np.ndarray, layer: str, seed: np.ndarray) -> GradientResult:
        """Run on float32 inputs already scaled for the graph (NHWC), seeding ``layer``'s
        output (its logit for the classifier; ``<layer>:preact`` for the value before its
        ReLU) with ``seed`` (same shape as that output)."""
        if layer not in self._targets:
            raise GradientError(f"gradient views unavailable for {layer!r}: no such target in this model's gradients.")
        target = self._targets[layer]
        names = self.model.layer_names
        forward = names[: names.index(target["layer"]) + 1]
        grad_names = list(target["gradients"].values())
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        seed = np.ascontiguousarray(seed, dtype=np.float32)
        if len(seed) != len(inputs):
            raise ValueError(f"one seed per image: {len(inputs)} images, {len(seed)} seeds")
        session = self._session(layer)
        feed = {self.model.spec.input_name: inputs, target["seed"]: seed}
        outputs = run_heavy(lambda: session.run([*forward, *grad_names], feed))
        activations = dict(zip(forward, outputs[: len(forward)], strict=True))
        gradients = dict(zip(target["gradients"], outputs[len(forward) :], strict=True))
        return GradientResult(activations, gradients)

    def scaled(self, images: np.ndarray | Sequence[ImageSource] | ImageSource) -> np.ndarray:
        """Images as the float32 input the graph takes."""
        return self.model._scaled(self.model.prepare(images))

    def channel_seed(self, layer: str, channels: Sequence[int] | int, count: int) -> np.ndarray:
        """Seed for the mean of one channel per image (0-based), 1/(rows*cols) on that channel."""
        info = self.model.layer(self._targets[layer]["layer"] if layer in self._targets else layer)
        shape = (info.output_shape[2], *info.output_shape[:2]) if info.is_spatial else tuple(info.output_shape)
        chosen = np.broadcast_to(np.asarray(channels, dtype=np.int64), (count,))
        if np.any(chosen < 0) or np.any(chosen >= shape[0]):
            raise GradientError(
                f"layer {layer!r} has channels 1 to {shape[0]}; asked for {', '.join(str(c + 1) for c in chosen)}."
            )
        seed = np.zeros((count, *shape), np.float32)
        area = float(np.prod(shape[1:])) if len(shape) > 1 else 1.0
        seed[np.arange(count), chosen] = 1.0 / area
        return seed

    def channel_gradient(
        self,
        images: np.ndarray | Sequence[ImageSource] | ImageSource,
        layer: str,
        channels: Sequence[int] | int,
    ) -> np.ndarray:
        """d(mean of ``channels[i]`` of ``layer``) / d input, for each image ``i`` (NHWC)."""
        inputs = self.scaled(images)
        seed = self.channel_seed(layer, channels, len(inputs))
        return self.run_scaled(inputs, layer, seed).gradients["input"]

    def require_classifier(self, view: str = "saliency and Grad-CAM maps") -> str:
        """The classifier layer's name, or a :class:`GradientError` saying why there is none."""
        last = self.model.layers[-1]
        if not self.model.has_classifier or not self._targets.get(last.name, {}).get("logit"):
            raise GradientError(
                f"{view} need a class score, and '{self.model.path.name}' has no classifier "
                f"(it ends at {last.name}, {last.shape_text}: a trunk-only model such as a training snapshot). "
                "What a channel looks for works on it."
            )
        return last.name

    def class_gradient(
        self,
        images: np.ndarray | Sequence[ImageSource] | ImageSource,
        class_index: int | Sequence[int] | None = None,
        scaled: np.ndarray | None = None,
    ) -> GradientResult:
        """Gradients of each image's class logit (the predicted class unless ``class_index``)."""
        last = self.require_classifier()
        inputs = self.scaled(images) if scaled is None else scaled
        units = self.model.layers[-1].channels
        if class_index is None and scaled is None and self.model.spec.output_activation == "sigmoid" and units == 1:
            # One run, no separate prediction: the gradient is linear in the seed, so seed the
            # logit with +1, read p(positive) from the same run, and flip the sign of the
            # gradients of the images whose predicted class is the negative one.
            result = self.run_scaled(inputs, last, np.ones((len(inputs), 1), np.float32))
            positive = result.activations[last][:, 0] > 0.5  # as Prediction.indices decides
            sign = np.where(positive, 1.0, -1.0).astype(np.float32)
            flipped = {
                name: grad * sign.reshape((-1,) + (1,) * (grad.ndim - 1)) for name, grad in result.gradients.items()
            }
            return GradientResult(result.activations, flipped, positive.astype(np.int64))
        if class_index is None:
            probabilities = self.model.predict(self.model.prepare(images)).probabilities
            class_index = probabilities.argmax(axis=1)
        chosen = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (len(inputs),))
        classes = len(self.model.class_names) or self.model.layers[-1].channels
        if np.any(chosen < 0) or np.any(chosen >= max(classes, 2)):
            raise GradientError(f"class index must be 0 to {max(classes, 2) - 1}.")
        seed = class_seed(units, self.model.spec.output_activation, chosen)
        result = self.run_scaled(inputs, last, seed)
        return GradientResult(result.activations, result.gradients, np.array(chosen))


def _explain_missing(model: FeatureModel) -> str:
    import onnx

    try:
        forward = onnx.load(str(model.path))
        build_gradient_model(forward, model.spec.to_json())
    except UnsupportedLayer as err:
        return f"gradient views unavailable: {err}."
    except Exception as err:  # noqa: BLE001 - only to explain; the missing file is the message
        return f"gradient views unavailable: no gradient model next to '{model.path.name}' ({type(err).__name__})."
    grad = gradient_path(model.path)
    return (
        f"gradient views unavailable: no gradient model '{grad.name}' next to '{model.path.name}'; "
        + _MAKE_HINT.format(name=model.path)
        + "."
    )


_LOADED: dict[tuple[str, str], Gradients] = {}
_LOADED_LOCK = threading.Lock()


def load_gradients(model: FeatureModel) -> Gradients:
    """The gradient graph of ``model`` (``<name>.grad.onnx`` beside it), loaded once per model file.

    Raises :class:`GradientError` naming the reason when gradient views cannot work.
    """
    import onnx

    path = gradient_path(model.path)
    key = (str(model.path), model.sha256)
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
    if not path.is_file():
        raise GradientError(_explain_missing(model))
    try:
        proto = onnx.load(str(path))
        info = json.loads({p.key: p.value for p in proto.metadata_props}[GRADIENTS_KEY])
    except Exception as err:  # noqa: BLE001 - a damaged file of any kind gets one message
        raise GradientError(
            f"gradient views unavailable: '{path.name}' is damaged ({type(err).__name__}); "
            + _MAKE_HINT.format(name=model.path)
            + "."
        ) from None
    if info.get("forward_sha256") and info["forward_sha256"] != model.sha256:
        raise GradientError(
            f"gradient views unavailable: '{path.name}' was made for another version of '{model.path.name}'; "
            + _MAKE_HINT.format(name=model.path)
            + "."
        )
    gradients = Gradients(model, proto, info)
    with _LOADED_LOCK:
        _LOADED[key] = gradients
    return gradients
