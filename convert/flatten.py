"""Unpack a Keras model into one flat graph in which every layer's output can be read.

A Sequential or functional model is replayed layer by layer on a new input named
``input``; a nested model (a ``Sequential`` augmentation block, a pretrained base) is
replayed in place, so its inner layers become layers of the flat graph. The weights are
the model's own: nothing is copied or rebuilt.

Two kinds of layers are not kept as layers, and the converter says so:

* **Augmentation layers** (``RandomFlip``, ``RandomRotation``, ``RandomZoom`` ...) do
  nothing at inference. Each one is called once on a test batch with ``training=False``;
  when its output equals its input exactly it is left out, since its "feature map" would
  only repeat the input. One that changes its input at inference (``RandomCrop`` resizes)
  stays.
* A **leading** ``Rescaling`` layer (``x / 255`` as the first thing the model does, after
  any augmentation) becomes part of the input scaling in the metadata, so the first layer
  students see is the first convolution, as in the lecture. It is only moved when the
  unscaled input is read by nothing else; otherwise it stays a layer.

The caller checks the result against the original model (:func:`convert.export.verify`).

Keras 3 offers no public way to run a functional graph node by node, so this uses
``Functional._run_through_graph`` (present from Keras 3.0 to 3.15, the versions
``requirements-convert.txt`` allows), which calls a function of our choosing on every
node.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convert.errors import ConversionError


@dataclass
class FlatLayer:
    """One layer of the flat graph."""

    name: str  # unique; the ONNX output name
    op: Any  # the Keras layer (or Keras-3 operation) itself
    output: Any  # its symbolic output in the flat graph
    inputs: tuple[int | None, ...]  # flat-layer indices it reads; None = the model input
    inside: tuple[str, ...]  # names of the models around it, outermost first

    @property
    def kind(self) -> str:
        return type(self.op).__name__


@dataclass
class FlatModel:
    """The flat graph: ``input`` -> every kept layer, plus what was left out and why."""

    input: Any
    layers: list[FlatLayer]
    output_index: int  # the layer that gives the model's output
    dropped: list[str] = field(default_factory=list)
    folded_rescaling: tuple[str, float, float] | None = None  # (layer name, scale, offset)
    rescales_input: bool = False  # a Rescaling layer reads the unscaled input: the model takes 0..255

    @property
    def default_input_range(self) -> str:
        """``"0..255"`` for a model that scales its own input with a Rescaling layer, else ``"0..1"``."""
        return "0..255" if self.rescales_input else "0..1"

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def keras_model(self, count: int | None = None):
        """A Keras model whose outputs are the first ``count`` layers' outputs (all by default)."""
        import keras

        chosen = self.layers if count is None else self.layers[:count]
        # Keras wants unique operation names in a model, and nested models may repeat
        # names ("conv" in two blocks). Rename such layers while the model is built, then
        # give the user's layers their names back; the ONNX outputs use FlatLayer.name.
        renamed: list[tuple[Any, str]] = []  # (Keras layer, its own name)
        taken = {"input"}
        for layer in self.layers:
            op = layer.op
            if any(op is other for other, _ in renamed):
                continue
            if op.name in taken:
                renamed.append((op, op.name))
                op.name = f"{op.name}__{len(renamed)}"
            taken.add(op.name)
        try:
            return keras.Model(self.input, [layer.output for layer in chosen], name="featapp_activations")
        finally:
            for op, name in renamed:
                op.name = name


class _FoldConflict(Exception):
    """The unscaled input is read after its Rescaling was folded: trace again without folding."""


class _Tracer:
    def __init__(self, fold_rescaling: bool) -> None:
        self.fold_rescaling = fold_rescaling
        self.layers: list[FlatLayer] = []
        self.producer: dict[int, int | None] = {}
        self.unscaled: set[int] = set()
        self.unscaled_read = False
        self.dropped: list[str] = []
        self.folded: tuple[str, float, float] | None = None
        self.rescales_input = False

    def run_model(self, model, inputs: list, inside: tuple[str, ...]):
        import keras
        from keras.src.models.functional import Functional

        inside = (*inside, model.name)
        if isinstance(model, keras.Sequential):
            if len(inputs) != 1:
                raise ConversionError(f"the nested Sequential model '{model.name}' is called with {len(inputs)} inputs")
            x = inputs[0]
            for layer in model.layers:
                x = self.call(layer, (x,), {}, inside)
            return x
        if isinstance(model, Functional):
            if not hasattr(model, "_run_through_graph"):
                raise ConversionError(
                    f"this Keras ({keras.__version__}) has no Functional._run_through_graph; "
                    "install a Keras from requirements-convert.txt."
                )
            return model._run_through_graph(inputs, operation_fn=lambda op: functools.partial(self._node, op, inside))
        raise ConversionError(
            f"'{model.name}' is a subclassed model ({type(model).__name__}): its layers are connected by Python code, "
            "not by a graph that can be unpacked. Rebuild it as a Sequential or functional model from the same layers."
        )

    def _node(self, op, inside, *args, **kwargs):
        return self.call(op, args, kwargs, inside)

    def call(self, op, args: tuple, kwargs: dict, inside: tuple[str, ...]):
        import keras

        tensors = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        if isinstance(op, keras.Model):
            return self.run_model(op, tensors, inside)
        if isinstance(op, keras.layers.InputLayer):
            return tensors[0]
        if self._is_dropped_augmentation(op, tensors):
            self.dropped.append(op.name)
            return tensors[0]
        reads_unscaled = any(id(t) in self.unscaled for t in tensors)
        if reads_unscaled and isinstance(op, keras.layers.Rescaling):
            self.rescales_input = True
        if self._can_fold(op, tensors, reads_unscaled):
            scale, offset = float(np.ravel(op.scale)[0]), float(np.ravel(op.offset)[0])
            self.folded = (op.name, scale, offset)
            # A distinct tensor, so that a later read of the unscaled input can be told apart.
            output = keras.layers.Identity(name=f"{op.name}_folded_into_input")(tensors[0])
            self.producer[id(output)] = None
            return output
        if reads_unscaled:
            if self.folded is not None:
                raise _FoldConflict()
            self.unscaled_read = True
        output = op(*args, **kwargs)
        outputs = keras.tree.flatten(output)
        if len(outputs) != 1:
            raise ConversionError(
                f"layer '{op.name}' ({type(op).__name__}) gives {len(outputs)} outputs; featapp shows one output per layer."
            )
        index = len(self.layers)
        sources = tuple(self.producer[id(t)] for t in tensors)
        self.layers.append(FlatLayer(name=op.name, op=op, output=outputs[0], inputs=sources, inside=inside))
        self.producer[id(outputs[0])] = index
        return output

    @staticmethod
    def _is_dropped_augmentation(op, tensors: list) -> bool:
        import keras

        if (
            not type(op).__name__.startswith("Random")
            or not type(op).__module__.startswith("keras.")
            or len(tensors) != 1
        ):
            return False
        shape = tuple(2 if d is None else int(d) for d in tensors[0].shape)
        sample = np.random.default_rng(0).random(shape).astype(np.float32)
        result = keras.ops.convert_to_numpy(op(sample, training=False))
        return result.shape == sample.shape and np.array_equal(result, sample)

    def _can_fold(self, op, tensors: list, reads_unscaled: bool) -> bool:
        import keras

        return (
            self.fold_rescaling
            and self.folded is None
            and isinstance(op, keras.layers.Rescaling)
            and len(tensors) == 1
            and reads_unscaled
            and not self.unscaled_read
            and np.size(op.scale) == 1
            and np.size(op.offset) == 1
        )


def _unique_names(layers: list[FlatLayer]) -> None:
    """Plain layer names where they are unique; ``outer/inner`` paths where nested models clash."""
    plain = Counter(layer.op.name for layer in layers)
    for layer in layers:
        if plain[layer.op.name] > 1 and len(layer.inside) > 1:
            layer.name = "/".join((*layer.inside[1:], layer.op.name))
        else:
            layer.name = layer.op.name
    seen: Counter[str] = Counter()
    for layer in layers:  # a layer called twice: name the later calls name_2, name_3 ...
        seen[layer.name] += 1
        if seen[layer.name] > 1 or layer.name == "input":
            layer.name = f"{layer.name}_{seen[layer.name] + (layer.name == 'input')}"


def _all_layers(model) -> list:
    import keras

    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_all_layers(layer))
    return found


def compute_in_float32(model) -> list[str]:
    """Switch layers that compute in float16/bfloat16 (a mixed-precision model) to float32.

    Mixed precision keeps the weights in float32 and only computes in half precision, for
    speed on GPUs; ONNX Runtime's CPU kernels have no half-precision convolutions, and
    students should see the most precise maps. The weights stay as they are. Returns the
    names of the switched layers. A model whose *weights* are half precision is refused.
    """
    switched = []
    for layer in _all_layers(model):
        policy = getattr(layer, "dtype_policy", None)
        if policy is None or policy.compute_dtype in (None, "float32"):
            continue
        if policy.variable_dtype not in (None, "float32"):
            raise ConversionError(
                f"layer '{layer.name}' stores its weights as {policy.variable_dtype}; featapp needs a float32 model: "
                "rebuild it with float32 layers and copy the weights in (set_weights) before saving."
            )
        layer.dtype_policy = "float32"
        switched.append(layer.name)
    return switched


def flatten_model(model, fold_rescaling: bool = True) -> FlatModel:
    """Replay ``model`` on a new input called ``input`` and record every layer's output."""
    import keras

    shape = tuple(model.inputs[0].shape[1:])
    for fold in (True, False) if fold_rescaling else (False,):
        tracer = _Tracer(fold_rescaling=fold)
        inp = keras.Input(shape=shape, name="input", dtype="float32")
        tracer.producer[id(inp)] = None
        tracer.unscaled.add(id(inp))
        try:
            output = tracer.run_model(model, [inp], ())
        except _FoldConflict:
            continue
        outputs = keras.tree.flatten(output)
        if len(outputs) != 1:
            raise ConversionError(f"'{model.name}' gives {len(outputs)} outputs; featapp needs one (the classifier's).")
        output_index = tracer.producer.get(id(outputs[0]))
        if output_index is None:
            raise ConversionError(f"'{model.name}' has no layers between its input and its output.")
        _unique_names(tracer.layers)
        return FlatModel(
            input=inp,
            layers=tracer.layers,
            output_index=output_index,
            dropped=tracer.dropped,
            folded_rescaling=tracer.folded,
            rescales_input=tracer.rescales_input,
        )
    raise AssertionError("tracing without folding cannot conflict")
