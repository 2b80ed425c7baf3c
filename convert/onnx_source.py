"""Convert any ONNX image classifier for featapp, with onnx and ONNX Runtime only.

``python -m convert export MODEL.onnx --out FEATAPP.onnx [flags]``

The source can come from ``torch.onnx.export`` (either exporter), from Keras'
``model.export(format="onnx")`` or from any other tool. The converted file is the source
graph with:

* one input ``input``: float32 NHWC photos, scaled by the metadata (range, per-channel
  mean and standard deviation, RGB or BGR); a channels-first source gets a ``Transpose``
  in front of its own input;
* every tensor worth showing as an output named after the layer (:data:`SHOWN_OPS`):
  convolutions, batch norms, activations, pooling, adds, concatenations and the head,
  named from the source's own names (the legacy PyTorch exporter's module paths
  ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``; the dynamo exporter's
  ``pkg.torch.onnx.name_scopes``; tf2onnx's Keras layer scopes). Maps are NCHW
  (a channels-last map gets a ``Transpose``), a global average pool is a vector;
* a softmax (or sigmoid, for one logit) after a head that gives logits, since featapp
  shows probabilities and differentiates the logit under them.

It is checked against the source file in ONNX Runtime on the converter's test images
(the class scores must agree), then written with the featapp metadata and the gradient
model, which is checked against finite differences (no TensorFlow here).
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.common import cpu_session
from convert.errors import ConversionError
from featapp.engine.images import InputSpec
from featapp.engine.metadata import METADATA_KEY, LayerInfo, MetadataError, ModelSpec, with_receptive_fields

__all__ = ["OnnxOptions", "export_onnx", "layer_names", "parse_input_size"]

SHOWN_OPS = {
    "Conv": "Conv2D",
    "BatchNormalization": "BatchNormalization",
    "Relu": "ReLU",
    "LeakyRelu": "LeakyReLU",
    "Clip": "ReLU6",
    "Sigmoid": "Activation",
    "HardSigmoid": "Activation",
    "HardSwish": "Activation",
    "Tanh": "Activation",
    "Elu": "ELU",
    "MaxPool": "MaxPooling2D",
    "AveragePool": "AveragePooling2D",
    "GlobalAveragePool": "GlobalAveragePooling2D",
    "GlobalMaxPool": "GlobalMaxPooling2D",
    "ReduceMean": "GlobalAveragePooling2D",
    "Add": "Add",
    "Concat": "Concatenate",
    "Gemm": "Dense",
    "MatMul": "Dense",
    "Softmax": "Softmax",
}
"""ONNX operators whose float outputs are shown as layers, and the Keras-style kind featapp
names them by (the app picks Grad-CAM's layer and the filter pages by kind)."""
_ACTIVATIONS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Clip": "relu6", "Sigmoid": "sigmoid", "Softmax": "softmax"}
_KINDS_WITH_WEIGHTS = ("Conv2D", "DepthwiseConv2D", "GroupConv2D", "Dense", "BatchNormalization")
_POOLS_TO_VECTORS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean")
_LAYOUT_KEEPING = {
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Identity",
    "Dropout",
    "Concat",
    "Pad",
    "ReduceMean",
}
_NCHW_OPS = {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
FLOAT = 1  # onnx.TensorProto.FLOAT
MAX_IR_VERSION = 10  # ONNX Runtime 1.31 refuses the IR versions newer onnx releases write


@dataclass
class OnnxOptions:
    """What the file cannot say about itself. ``input_range`` is a key of
    :data:`convert.export.INPUT_RANGES`; ``mean``/``std`` are per channel in the model's
    channel order, in the units of that range (0.485 for torchvision on 0..1; 103.939 for
    Keras' caffe style on 0..255)."""

    class_names: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    input_range: str | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    channel_order: str = "RGB"
    layout: str | None = None  # "NCHW" or "NHWC"; None: from the input's shape
    tolerance: float = 1e-4
    gradients: bool = True
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_input_size(text: str) -> tuple[int, int]:
    """``224`` or ``224x160`` (height x width).

    >>> parse_input_size("224"), parse_input_size("96x128")
    ((224, 224), (96, 128))
    """
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"an input size is SIZE or HEIGHTxWIDTH in pixels (224, 96x128), not '{text}'")
    return (int(parts[0]), int(parts[-1]))


# -- reading the source ---------------------------------------------------------------------------
@dataclass
class _Source:
    model: Any  # onnx.ModelProto, with shapes inferred for the chosen input size
    input_name: str
    layout: str
    height: int
    width: int
    channels: int
    output_name: str


def _dims(value) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def _read_source(path: Path, options: OnnxOptions) -> _Source:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - onnx raises DecodeError and others for a file it cannot parse
        raise ConversionError(f"'{path.name}' is not an ONNX file onnx can read ({type(err).__name__}).") from err
    if any(p.key == METADATA_KEY for p in model.metadata_props):
        raise ConversionError(
            f"'{path.name}' is already converted for featapp: open it with featapp directly "
            "(featapp info --model FILE), or pass the original file to convert it again."
        )
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    images = [value for value in inputs if _looks_like_images(_dims(value))]
    if len(inputs) > 1 and len(images) == 1:
        others = ", ".join(f"{v.name} {_dims(v)}" for v in inputs if v is not images[0])
        raise ConversionError(
            f"'{path.name}' asks for more than the image: also {others}. Those are values the exporter left as "
            "inputs instead of storing them (Keras' Normalization layer does this in model.export): store them "
            "in the model (e.g. give the layer its mean and variance) and export again."
        )
    if len(inputs) != 1:
        raise ConversionError(
            f"'{path.name}' has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); featapp needs an image "
            "classifier with one image input."
        )
    if len(model.graph.output) != 1:
        raise ConversionError(
            f"'{path.name}' has {len(model.graph.output)} outputs; featapp needs one output of class scores."
        )
    source_input = inputs[0]
    dims = _dims(source_input)
    if len(dims) != 4 or source_input.type.tensor_type.elem_type != FLOAT:
        raise ConversionError(
            f"'{path.name}' takes {len(dims)}-D input '{source_input.name}'; featapp needs a float32 batch of "
            "images (batch, channels, height, width) or (batch, height, width, channels)."
        )
    layout = options.layout or _guess_layout(dims, path)
    channel_axis, spatial_axes = (1, (2, 3)) if layout == "NCHW" else (3, (1, 2))
    channels = dims[channel_axis]
    if channels not in (1, 3):
        raise ConversionError(
            f"'{path.name}' reads {channels} channels on axis {channel_axis} ({layout}); featapp shows models of "
            "1 (grey) or 3 (colour) channels. If the layout is the other one, say --layout NHWC or NCHW."
        )
    file_hw = tuple(dims[a] for a in spatial_axes)
    if all(isinstance(d, int) and d > 0 for d in file_hw):
        height, width = int(file_hw[0]), int(file_hw[1])  # type: ignore[arg-type]
        if options.input_size and options.input_size != (height, width):
            raise ConversionError(
                f"'{path.name}' takes {height}x{width} pixels, but --input-size says "
                f"{options.input_size[0]}x{options.input_size[1]}; leave the flag out or export the model again."
            )
    elif options.input_size:
        height, width = options.input_size
    else:
        raise ConversionError(
            f"'{path.name}' does not fix its input size ({file_hw[0]} x {file_hw[1]}): say the size it was "
            "trained on, e.g. --input-size 224 (or HEIGHTxWIDTH)."
        )
    return _Source(model, source_input.name, layout, height, width, int(channels), model.graph.output[0].name)


def _looks_like_images(dims: Sequence[int | str | None]) -> bool:
    """A 4-D input with two sides that are free or larger than a channel count."""
    return len(dims) == 4 and sum(not isinstance(d, int) or d > 4 for d in dims[1:]) >= 2


def _guess_layout(dims: Sequence[int | str | None], path: Path) -> str:
    first, last = dims[1] in (1, 3), dims[3] in (1, 3)
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    raise ConversionError(
        f"'{path.name}' takes input of shape {list(dims)}: featapp cannot tell where the channels are; "
        "say --layout NCHW (PyTorch) or --layout NHWC (Keras, TensorFlow)."
    )


# -- naming ---------------------------------------------------------------------------------------
def _scope_of(node) -> tuple[list[str], str, bool]:
    """(module path parts, what the op is called inside it, from dynamo metadata)."""
    props = {p.key: p.value for p in node.metadata_props}
    if NAME_SCOPES_KEY in props:
        try:
            scopes = ast.literal_eval(props[NAME_SCOPES_KEY])
        except (ValueError, SyntaxError):
            scopes = None
        if isinstance(scopes, list) and scopes and all(isinstance(s, str) for s in scopes):
            modules = [s for s in scopes[:-1] if s]
            # Each entry is the full path from the root ('layer1', 'layer1.0', 'layer1.0.conv1').
            return (modules[-1].split(".") if modules else []), scopes[-1], True
    name = node.name or (node.output[0] if node.output else node.op_type)
    parts = [p for p in re.split(r"[/]", name) if p]
    if len(parts) <= 1:
        return [], parts[0] if parts else node.op_type, False
    return parts[:-1], parts[-1], False  # the scopes as written; layer_names reads them per exporter


def _join_module_parts(parts: Sequence[str]) -> list[str]:
    """The legacy exporter's scopes repeat the path (``layer1``, ``layer1.0``, ``conv1``):
    a part that starts with the path so far replaces it.

    >>> _join_module_parts(["layer1", "layer1.0", "conv1"])
    ['layer1', '0', 'conv1']
    """
    if not parts:
        return []
    path = ""
    for part in parts:
        joined = f"{path}.{part}" if path else part
        path = part if path and part.startswith(path + ".") else joined
    return path.split(".")


def _strip_op_suffix(text: str) -> str:
    """tf2onnx's ``:0`` and the op-type part of a node name, lowered: ``Add_1`` -> ``add_1``."""
    return text.split(":")[0].lower()


def layer_names(nodes: Sequence[Any], producer: str = "") -> list[str]:
    """The featapp name of each node's output, from the source's own names.

    A module that computes one shown tensor gives it its path (``layer1.0.conv1``); a
    module that computes several (a Keras ``Conv2D`` with its activation) gives its path
    to the last (its output) and ``path.op`` to the others; an operation written in a
    container's ``forward`` (a residual ``+``) is ``path.op`` (``layer1.0.add``). For tf2onnx
    files the path is the Keras layer (:func:`_keras_layer`).
    """
    scoped = []
    for parts, op, dynamo in (_scope_of(node) for node in nodes):
        if not dynamo:
            parts = _keras_layer(parts) if producer == "tf2onnx" else _join_module_parts(parts)
        scoped.append((parts, op, dynamo))
    paths = [".".join(parts) for parts, _, _ in scoped]
    containers = {p for p in paths if p} | set()
    has_children = {q for q in containers if any(p.startswith(q + ".") for p in containers)}
    names = []
    for index, ((_, op, dynamo), path) in enumerate(zip(scoped, paths, strict=True)):
        # The dynamo exporter's FX names count each operator over the whole graph
        # ('add_45'); the block's own count (_unique below) reads as the legacy exporter's.
        local = re.sub(r"_\d+$", "", op) if dynamo else _strip_op_suffix(op)
        # One call of a module computes consecutive tensors; its output is the last of them.
        inside_one_call = index + 1 < len(paths) and paths[index + 1] == path
        if not path:
            names.append(local)
        elif path in has_children or inside_one_call:
            names.append(f"{path}.{local}")
        else:
            names.append(path)
    return _unique(names)


def _keras_layer(parts: Sequence[str]) -> list[str]:
    """The Keras layer in a tf2onnx node's scope (``model_1/conv2d_1/batchnorm/mul``): the part
    after the model's name. Keras traces a called model in a second name scope, which adds
    ``_1`` to the model and to each layer: that suffix is taken off again.

    >>> _keras_layer(["mobilenetv2_1.00_224_1", "block_1_project_BN_1", "batchnorm"])
    ['block_1_project_BN']
    """
    if not parts:
        return []
    layer = parts[1] if len(parts) > 1 else parts[0]
    traced = parts[0].endswith("_1")
    return [layer[:-2] if traced and layer.endswith("_1") else layer]


def _unique(names: list[str]) -> list[str]:
    """Later repeats get ``_1``, ``_2`` (a ReLU module called twice), as the legacy exporter does."""
    seen: dict[str, int] = {}
    result = []
    taken = set(names)
    for name in names:
        if name not in seen:
            seen[name] = 0
            result.append(name)
            continue
        while True:
            seen[name] += 1
            candidate = f"{name}_{seen[name]}"
            if candidate not in taken:
                break
        taken.add(candidate)
        result.append(candidate)
    return result


# -- the graph ------------------------------------------------------------------------------------
@dataclass
class _Layer:
    tensor: str  # the source tensor
    node: Any
    layout: str | None  # "NCHW", "NHWC" for maps; None for vectors
    shape: tuple[int, ...]  # per image, as in the source tensor
    name: str = ""
    vector_from_map: bool = False
    kind: str | None = None  # overrides SHOWN_OPS (a Mul that is swish or a gate)
    activation: str | None = None


def _infer(model, input_name: str, dims: list[int | str]) -> Any:
    import onnx

    model = _copy(model)
    for value in model.graph.input:
        if value.name == input_name:
            _set_dims(value, dims)
    del model.graph.value_info[:]
    for value in model.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:  # noqa: BLE001 - onnx raises InferenceError and others
        raise ConversionError(f"onnx cannot work out the shapes of the graph ({str(err)[:200]}).") from err


def _copy(model):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _set_dims(value, dims: Sequence[int | str]) -> None:
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d


def _shapes(model) -> dict[str, tuple[tuple[int | None, ...], int]]:
    found = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        found[value.name] = (dims, tensor.elem_type)
    return found


def _layouts(model, input_name: str, layout: str) -> dict[str, str]:
    """Which 4-D tensors are channels-first and which channels-last, followed from the
    input through transposes and the (always channels-first) ONNX convolutions."""
    import onnx

    found = {input_name: layout}
    for node in model.graph.node:
        known = [found[name] for name in node.input if name in found]
        if not node.output:
            continue
        result: str | None
        if node.op_type in _NCHW_OPS:
            result = "NCHW"
        elif node.op_type == "Transpose" and known:
            perm = list(next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), []))
            result = {(0, 3, 1, 2): "NCHW", (0, 2, 3, 1): "NHWC"}.get(tuple(perm))
            if perm == [0, 1, 2, 3]:
                result = known[0]
        elif node.op_type in _LAYOUT_KEEPING and known:
            result = known[0]
        else:
            result = None
        if result:
            found[node.output[0]] = result
    return found


def _products(graph) -> tuple[dict[str, tuple[str, str | None]], set[str]]:
    """Products of two computed tensors worth showing: swish and hard swish
    (``x * sigmoid(x)``, shown instead of their sigmoid) and gates (squeeze-and-excitation,
    attention). A product with a weight (a batch norm written as Mul + Add) is not one.
    Returns {Mul output: (kind, activation)} and the sigmoids that swish replaces."""
    constant = {init.name for init in graph.initializer}
    constant |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    products: dict[str, tuple[str, str | None]] = {}
    hidden: set[str] = set()
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2 or any(name in constant for name in node.input):
            continue
        kind: tuple[str, str | None] = ("Multiply", None)
        for gate, other in (node.input, reversed(node.input)):
            source = producer.get(gate)
            if source is not None and source.op_type in ("Sigmoid", "HardSigmoid") and source.input[0] == other:
                kind = ("Activation", "swish" if source.op_type == "Sigmoid" else "hard_swish")
                if readers.get(gate, 0) == 1:
                    hidden.add(gate)
                break
        products[node.output[0]] = kind
    return products, hidden


def _pick_layers(source: _Source, shapes, layouts) -> list[_Layer]:
    layers: list[_Layer] = []
    products, hidden = _products(source.model.graph)
    for node in source.model.graph.node:
        if not node.output:
            continue
        tensor = node.output[0]
        is_output = tensor == source.output_name
        if (node.op_type not in SHOWN_OPS and tensor not in products and not is_output) or tensor in hidden:
            continue
        dims, elem = shapes.get(tensor, ((), 0))
        if elem != FLOAT or not dims or any(d is None for d in dims[1:]):
            if is_output:
                raise ConversionError(
                    f"the output '{tensor}' has no fixed size per image {dims}; featapp needs one vector of class scores."
                )
            continue
        per_image = tuple(int(d) for d in dims[1:])
        if len(per_image) == 3 and layouts.get(tensor):
            layout = layouts[tensor]
            rows, cols = per_image[1:] if layout == "NCHW" else per_image[:2]
            vector = node.op_type in _POOLS_TO_VECTORS and rows == cols == 1
            kind, activation = products.get(tensor, (None, None))
            layers.append(
                _Layer(
                    tensor,
                    node,
                    None if vector else layout,
                    per_image,
                    vector_from_map=vector,
                    kind=kind,
                    activation=activation,
                )
            )
        elif len(per_image) == 1:
            layers.append(_Layer(tensor, node, None, per_image))
        elif is_output:
            raise ConversionError(
                f"the output '{tensor}' has shape {list(dims)}; featapp needs a classifier whose output is one "
                "vector of class scores per image."
            )
    if not layers or layers[-1].tensor != source.output_name:
        raise ConversionError("the graph's output is not computed last; featapp cannot tell its layers apart.")
    return layers


def _channels_last(layer: _Layer) -> tuple[int, ...]:
    if layer.layout is None:
        return (int(np.prod(layer.shape)),)
    if layer.layout == "NCHW":
        channels, rows, cols = layer.shape
        return (rows, cols, channels)
    return layer.shape


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _geometry(
    layer: _Layer,
    in_hw: tuple[int, int] | None,
    weights: dict[str, np.ndarray],
    extra_pads: Sequence[int] = (0, 0, 0, 0),
) -> dict[str, Any]:
    """Kernel, stride, padding and dilation of a window op: ``"valid"``, ``"same"`` where the
    pads are TensorFlow's, else ``"explicit"`` with the ``pads`` (top, left, bottom, right),
    ``None`` where they cannot be told (opaque); ``extra_pads`` come from a ``Pad`` just before it."""
    node = layer.node
    if node.op_type not in ("Conv", "MaxPool", "AveragePool") or layer.layout is None or in_hw is None:
        return {}
    a = _attrs(node)
    kernel = a.get("kernel_shape")
    if kernel is None and node.op_type == "Conv" and node.input[1] in weights:
        kernel = weights[node.input[1]].shape[2:]
    if kernel is None or len(kernel) != 2:
        return {}
    stride = tuple(int(v) for v in a.get("strides", (1, 1)))
    dilation = tuple(int(v) for v in a.get("dilations", (1, 1)))
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    own: list[int] = [int(v) for v in a.get("pads", (0, 0, 0, 0))]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        own = _same_pads(in_hw, kernel, stride, dilation, lower=auto_pad == "SAME_LOWER")
    elif auto_pad == "VALID":
        own = [0, 0, 0, 0]
    elif auto_pad != "NOTSET" or len(own) != 4:
        own = []
    pads = tuple(mine + extra for mine, extra in zip(own, extra_pads, strict=True)) if own else None
    padding: str | None
    if pads is None:
        padding = None
    elif not any(pads):
        padding = "valid"
    elif list(pads) == _same_pads(in_hw, kernel, stride, dilation, lower=False):
        padding = "same"
    else:
        padding = "explicit"
    return {
        "kernel": (int(kernel[0]), int(kernel[1])),
        "stride": (stride[0], stride[1]),
        "padding": padding,
        "pads": pads if padding == "explicit" else None,
        "dilation": (dilation[0], dilation[1]) if node.op_type == "Conv" else None,
    }


def _same_pads(
    in_hw: tuple[int, int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], *, lower: bool
) -> list[int]:
    """(top, left, bottom, right) of TensorFlow's ``"same"`` (ONNX ``SAME_UPPER``: the odd
    row after) or of ``SAME_LOWER`` (the odd row before)."""
    before, after = [], []
    for axis in (0, 1):
        span = (int(kernel[axis]) - 1) * dilation[axis] + 1
        out = math.ceil(in_hw[axis] / stride[axis])
        total = max((out - 1) * stride[axis] + span - in_hw[axis], 0)
        small = total // 2
        before.append(total - small if lower else small)
        after.append(small if lower else total - small)
    return [before[0], before[1], after[0], after[1]]


def _describe(
    layers: list[_Layer], source: _Source, weights: dict[str, np.ndarray], layouts: dict[str, str]
) -> tuple[list[LayerInfo], list[list[int | None]], set[str]]:
    """Each layer's :class:`LayerInfo`, the layers it reads, and those whose geometry is opaque."""
    graph = source.model.graph
    producer = {out: node for node in graph.node for out in node.output}
    index_of = {layer.tensor: i for i, layer in enumerate(layers)}
    infos: list[LayerInfo] = []
    reads: list[list[int | None]] = []
    opaque: set[str] = set()
    for position, layer in enumerate(layers):
        sources, movers = _layer_inputs(layer.node, producer, index_of, source.input_name)
        reads.append(sources)
        parent = sources[0] if sources else None
        in_hw = (source.height, source.width) if parent is None else infos[parent].output_shape[:2]
        # A zero Pad before a window op is its padding; before anything else on one map
        # (a batch norm, an activation), the layer's own pads. Before a merge it cannot be
        # told which input it pads.
        extra = _zero_pads(movers, weights, layouts) if len(sources) == 1 else None
        is_window = layer.node.op_type in _WINDOW_OPS
        map_hw = (int(in_hw[0]), int(in_hw[1])) if len(in_hw) == 2 else None
        geometry = _geometry(layer, map_hw, weights, (extra or (0, 0, 0, 0)) if is_window else (0, 0, 0, 0))
        if geometry.get("padding", "valid") is None or (movers and extra is None):
            opaque.add(layer.name)
        elif movers and extra is not None and not is_window and any(extra):
            if layer.layout is None:
                opaque.add(layer.name)  # a padded map read as a vector: nothing to place
            geometry = {"pads": extra}
        geometry = {k: v for k, v in geometry.items() if v is not None}
        op = layer.node.op_type
        kind = layer.kind or SHOWN_OPS.get(op, "Dense" if layer.layout is None else op)
        if op == "Add" and layer.layout is None and sources[0] is not None and infos[sources[0]].kind == "Dense":
            kind = "Dense"  # the bias of a linear layer written as MatMul + Add
        group = int(_attrs(layer.node).get("group", 1)) if op == "Conv" else 1
        if op == "Conv" and group > 1:
            kind = "DepthwiseConv2D" if group == layer.shape[0 if layer.layout == "NCHW" else -1] else "GroupConv2D"
        params = sum(int(weights[name].size) for name in layer.node.input if name in weights and op != "Reshape")
        infos.append(
            LayerInfo(
                name=layer.name,
                kind=kind,
                output_shape=_channels_last(layer),
                params=params if kind in _KINDS_WITH_WEIGHTS else 0,
                activation=layer.activation or _ACTIVATIONS.get(op),
                **geometry,
            )
        )
        del position
    return infos, reads, opaque


_WINDOW_OPS = ("Conv", "MaxPool", "AveragePool")


def _zero_pads(movers: list[Any], constants: dict[str, np.ndarray], layouts: dict[str, str]) -> tuple[int, ...] | None:
    """(top, left, bottom, right) of one zero ``Pad`` of rows and columns only (Keras'
    ZeroPadding2D, PyTorch's ZeroPad2d) before a window op: the window sees it as its own
    padding. ``None`` for anything else that moves pixels."""
    if not movers:
        return (0, 0, 0, 0)
    if len(movers) != 1 or movers[0].op_type != "Pad":
        return None
    pad = movers[0]
    a = _attrs(pad)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    amounts = a.get("pads") if "pads" in a else constants.get(pad.input[1]) if len(pad.input) > 1 else None
    value = constants.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
    layout = layouts.get(pad.input[0])
    if mode != "constant" or amounts is None or len(amounts) != 8 or layout is None:
        return None
    if value is not None and float(np.ravel(value)[0]) != 0.0:
        return None
    amounts = [int(v) for v in np.ravel(amounts)]
    rows, cols = (2, 3) if layout == "NCHW" else (1, 2)
    if any(amounts[axis] or amounts[axis + 4] for axis in range(4) if axis not in (rows, cols)):
        return None
    return (amounts[rows], amounts[cols], amounts[rows + 4], amounts[cols + 4])


def _layer_inputs(node, producer, index_of: dict[str, int], input_name: str) -> tuple[list[int | None], list[Any]]:
    """The layers (``None``: the input) whose tensors reach ``node`` through unshown ops, and
    the nodes between that move pixels (``Pad``, ``Resize`` and the like)."""
    found: list[int | None] = []
    movers: list[Any] = []
    stack = [name for name in node.input if name]
    seen: set[str] = set()
    while stack:
        tensor = stack.pop(0)  # breadth first: the inputs in the node's order
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in index_of:
            found.append(index_of[tensor])
            continue
        if tensor == input_name:
            found.append(None)
            continue
        upstream = producer.get(tensor)
        if upstream is None:
            continue
        if upstream.op_type in ("Pad", "Resize", "Upsample", "Slice", "SpaceToDepth", "DepthToSpace"):
            movers.append(upstream)
        stack.extend(name for name in upstream.input if name)
    unique = list(dict.fromkeys(found))
    return (unique or [None]), movers


# -- building the featapp graph ---------------------------------------------------------------------
def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _build(source: _Source, layers: list[_Layer], head: str | None, spec: ModelSpec):
    """The featapp graph: NHWC ``input``, one NCHW/vector output per layer, the metadata."""
    import onnx
    from onnx import helper

    model = _copy(source.model)
    graph = model.graph
    del graph.value_info[:]
    taken = {init.name for init in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {i for n in graph.node for i in n.input}
    # The input: NHWC photos; a channels-first graph reads them through a Transpose.
    internal = source.input_name
    if internal == "input" or internal in {layer.name for layer in layers}:
        internal = _free(f"{source.input_name}__source", taken)
        _rename(graph, source.input_name, internal)
    new_input = helper.make_tensor_value_info(
        "input", FLOAT, ["batch", spec.input.height, spec.input.width, spec.input.channels]
    )
    front = []
    if source.layout == "NCHW":
        front.append(
            helper.make_node("Transpose", ["input"], [internal], name="featapp/input_to_nchw", perm=[0, 3, 1, 2])
        )
    elif internal != "input":
        _rename(graph, internal, "input")
    kept_inputs = [v for v in graph.input if v.name != source.input_name and v.name != internal]
    del graph.input[:]
    graph.input.extend([new_input, *kept_inputs])
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    outputs = []
    extra_nodes = []
    for layer, info in zip(layers, spec.layers, strict=False):
        if (layer.layout == "NHWC" or layer.vector_from_map) and layer.tensor == info.name:
            # The layer's name is its source tensor's ('mean' from a ReduceMean), and the
            # transposed or flattened copy takes it: the source tensor moves aside.
            taken = {out for node in graph.node for out in node.output} | {v.name for v in graph.input}
            layer.tensor = _free(f"{info.name}/source", taken)
            _rename(graph, info.name, layer.tensor)
        if layer.layout == "NHWC":
            extra_nodes.append(
                helper.make_node(
                    "Transpose", [layer.tensor], [info.name], name=f"featapp/{info.name}", perm=[0, 3, 1, 2]
                )
            )
        elif layer.vector_from_map:
            extra_nodes.append(
                helper.make_node("Flatten", [layer.tensor], [info.name], name=f"featapp/{info.name}", axis=1)
            )
        elif layer.tensor != info.name:
            _rename(graph, layer.tensor, info.name)
        outputs.append(_value(info))
    if head:
        last = spec.layers[-2].name
        op = "Softmax" if head == "softmax" else "Sigmoid"
        attrs: dict[str, Any] = {"axis": 1} if op == "Softmax" else {}  # the node's attributes
        extra_nodes.append(helper.make_node(op, [last], [spec.layers[-1].name], name=f"featapp/{head}", **attrs))
        outputs.append(_value(spec.layers[-1]))
    graph.node.extend(extra_nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    model.ir_version = min(model.ir_version or MAX_IR_VERSION, MAX_IR_VERSION)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ConversionError(f"the converted graph is not valid ONNX ({str(err).splitlines()[0][:200]}).") from err
    return model


def _free(name: str, taken: set[str]) -> str:
    candidate, count = name, 0
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    taken.add(candidate)
    return candidate


def _value(info: LayerInfo):
    from onnx import helper

    if info.is_spatial:
        rows, cols, channels = info.output_shape
        return helper.make_tensor_value_info(info.name, FLOAT, ["batch", channels, rows, cols])
    return helper.make_tensor_value_info(info.name, FLOAT, ["batch", *info.output_shape])


# -- the classifier and the preprocessing -------------------------------------------------------------
def _head(last: _Layer) -> str | None:
    """The activation featapp appends: ``None`` when the graph already ends in one."""
    if last.node.op_type in ("Softmax", "Sigmoid"):
        return None
    return "sigmoid" if _channels_last(last)[0] == 1 else "softmax"


def _class_names(units: int, activation: str, options: OnnxOptions) -> tuple[str, ...]:
    given = tuple(options.class_names) if options.class_names else None
    if activation == "sigmoid" and units == 1:
        names = given or ("negative", "positive")
        if len(names) != 2:
            raise ConversionError(
                f"the model gives one score (a sigmoid), so it needs 2 class names (negative, positive), not {len(names)}."
            )
        return names
    names = given or tuple(f"class {i}" for i in range(units))
    if len(names) != units:
        raise ConversionError(
            f"the model gives {units} class scores, but {len(names)} class names were given "
            "(--class-names NAME ... or --class-names-file FILE with one name a line)."
        )
    return names


def _spec(source: _Source, infos: list[LayerInfo], head: str | None, options: OnnxOptions, path: Path) -> ModelSpec:
    from convert.common import sha256_file
    from convert.export import INPUT_RANGES

    last = infos[-1]
    activation = head or (last.activation or "softmax")
    if head:
        infos = [
            *infos,
            LayerInfo(
                name=_free(head, {i.name for i in infos}),
                kind="Softmax" if head == "softmax" else "Activation",
                output_shape=last.output_shape,
                activation=head,
            ),
        ]
    input_range = options.input_range or "0..1"
    if input_range not in INPUT_RANGES:
        raise ConversionError(f"unknown input range '{input_range}': use one of {', '.join(INPUT_RANGES)}.")
    scale, offset = INPUT_RANGES[input_range]
    import onnx
    import onnxruntime

    extra = {
        "source_format": _source_format(source.model),
        "source_layout": source.layout,
        "input_range": input_range,
        **options.extra,
    }
    try:
        return ModelSpec(
            input=InputSpec(source.height, source.width, source.channels),
            layers=tuple(infos),
            input_scale=scale,
            input_offset=offset,
            output_activation=activation,
            class_names=_class_names(infos[-1].channels, activation, options),
            source_file=path.name,
            source_sha256=sha256_file(path),
            versions={"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
            extra=extra,
            input_mean=tuple(options.mean),
            input_std=tuple(options.std),
            channel_order=options.channel_order.upper(),
        )
    except MetadataError as err:
        raise ConversionError(f"{err} (--mean, --std and --channel-order describe the model's input)") from None


def _source_format(model) -> str:
    producer = f"{model.producer_name} {model.producer_version}".strip() or "an unknown tool"
    dynamo = any(p.key == NAME_SCOPES_KEY for node in model.graph.node for p in node.metadata_props)
    how = " (dynamo exporter)" if dynamo else ""
    return f"ONNX file written by {producer}{how}, IR {model.ir_version}, opset {_opset(model)}"


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# -- verification ---------------------------------------------------------------------------------
def _session(model_or_bytes, what: str):
    import onnxruntime as ort

    data = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return cpu_session(data, options)
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        # ONNX Runtime's messages start with its source path: the reason is at the end.
        raise ConversionError(f"ONNX Runtime cannot run {what} (...{first[-240:]}).") from err


def _run_source(session, source: _Source, fed_nhwc: np.ndarray) -> np.ndarray:
    feed = np.ascontiguousarray(np.transpose(fed_nhwc, (0, 3, 1, 2))) if source.layout == "NCHW" else fed_nhwc
    name = session.get_inputs()[0].name
    try:
        return session.run([source.output_name], {name: feed})[0]
    except Exception:  # noqa: BLE001 - a graph exported for batches of one: run the images one at a time
        pass
    try:
        return np.concatenate([session.run([source.output_name], {name: feed[i : i + 1]})[0] for i in range(len(feed))])
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConversionError(
            f"ONNX Runtime cannot run the source file on a test image ({first}); check the input size, layout "
            "and channels it was exported with (--input-size, --layout)."
        ) from err


def verify_against_source(
    source_bytes: bytes,
    source: _Source,
    converted,
    spec: ModelSpec,
    compared: str,
    tolerance: float,
    log: Callable[[str], None],
) -> float:
    """Run the source file and the converted graph on the test images; their class scores
    must agree within the tolerance (see :func:`convert.verification.allowed_error`)."""
    from convert.common import verification_images
    from convert.verification import allowed_error, relative_error
    from featapp.engine.model import graph_input

    images = verification_images(spec.input.height, spec.input.width, spec.input.channels)
    fed = graph_input(spec, images)
    want = _run_source(_session(source_bytes, "the source file"), source, fed)
    session = _session(converted, "the converted graph")
    try:
        got = session.run([compared], {"input": fed})[0]
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise ConversionError(
            f"the converted graph does not run on a batch of {len(fed)} images ({str(err).splitlines()[0][:200]}); "
            "export the model with a free batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))."
        ) from err
    want = want.reshape(got.shape)
    error = relative_error(want, got)
    allowed = allowed_error(tolerance, accumulation=_longest_sum(spec))
    log(f"  class scores vs the source file: max error {error:.1e} of their largest value (allowed {allowed:.1e})")
    if not error <= allowed:
        raise ConversionError(
            f"ONNX Runtime gives the converted graph other class scores than the source file (error {error:.2e}, "
            f"allowed {allowed:.1e}); nothing written. This is a converter bug: please report it with the file."
        )
    return error


def _longest_sum(spec: ModelSpec) -> int:
    """The most terms any one layer adds up (a global pool sums a whole map)."""
    longest = 1
    previous: tuple[int, ...] = (spec.input.height, spec.input.width, spec.input.channels)
    for layer in spec.layers:
        if layer.kernel:
            longest = max(longest, layer.kernel[0] * layer.kernel[1] * previous[-1])
        if layer.kind.startswith("Global") and len(previous) == 3:
            longest = max(longest, previous[0] * previous[1])
        if layer.kind == "Dense":
            longest = max(longest, int(np.prod(previous)))
        previous = layer.output_shape
    return longest


# -- the entry point ------------------------------------------------------------------------------
def export_onnx(
    source_path: str | os.PathLike,
    out_path: str | os.PathLike,
    options: OnnxOptions | None = None,
    log: Callable[[str], None] = print,
) -> ModelSpec:
    """Convert an ONNX image classifier; see the module docstring. Returns the metadata written."""
    from convert.common import size_text, write_atomically

    options = options or OnnxOptions()
    source_path, out_path = Path(source_path), Path(out_path)
    if not source_path.is_file():
        raise ConversionError(f"No such file: '{source_path}'.")
    if source_path.resolve() == out_path.resolve():
        raise ConversionError("--out must be a new file, not the source ONNX file itself.")
    raw = _read_source(source_path, options)
    # From the loaded model, not the file: PyTorch's dynamo exporter keeps the weights in a
    # separate .onnx.data file, which ONNX Runtime cannot find for a model given as bytes.
    source_bytes = raw.model.SerializeToString()
    log(f"Reading {source_path} ({_source_format(raw.model)}) ...")
    dims: list[int | str] = (
        ["batch", raw.channels, raw.height, raw.width]
        if raw.layout == "NCHW"
        else ["batch", raw.height, raw.width, raw.channels]
    )
    inferred = _infer(raw.model, raw.input_name, dims)
    source = _Source(inferred, raw.input_name, raw.layout, raw.height, raw.width, raw.channels, raw.output_name)
    shapes = _shapes(inferred)
    layouts = _layouts(inferred, raw.input_name, raw.layout)
    layers = _pick_layers(source, shapes, layouts)
    names = layer_names([layer.node for layer in layers], inferred.producer_name)
    names[-1] = names[-1] if layers[-1].node.op_type in SHOWN_OPS else "logits"
    _name_layers(layers, names, inferred.graph)
    from onnx import numpy_helper

    weights = {init.name: numpy_helper.to_array(init) for init in inferred.graph.initializer}
    weights.update(_identity_weights(inferred, weights))
    for node in inferred.graph.node:  # constants written as nodes (a Pad's amounts)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights.setdefault(node.output[0], numpy_helper.to_array(node.attribute[0].t))
    infos, reads, opaque = _describe(layers, source, weights, layouts)
    infos = list(with_receptive_fields(infos, (raw.height, raw.width), inputs=reads, opaque=opaque))
    head = _head(layers[-1])
    from convert.export import with_identity

    spec = with_identity(_spec(source, infos, head, options, source_path), options.run_id)
    log(
        f"  input: {raw.height}x{raw.width}x{raw.channels} ({raw.layout} in the file), "
        f"{spec.channel_order}, range {spec.extra['input_range']}"
        + (f", mean {list(spec.input_mean)}" if spec.input_mean else "")
        + (f", std {list(spec.input_std)}" if spec.input_std else "")
    )
    log(
        f"  {len(spec.layers)} layers shown, from '{spec.layers[0].name}' to '{spec.layers[-1].name}'"
        + (f" ({head} added after the class scores)" if head else "")
    )
    converted = _build(source, layers, head, spec)
    log("Verifying the converted graph against the source file in ONNX Runtime ...")
    compared = spec.layers[-2].name if head else spec.layers[-1].name
    verify_against_source(source_bytes, source, converted, spec, compared, options.tolerance, log)
    data = converted.SerializeToString()
    write_atomically(out_path, data)
    log(f"Wrote {out_path} ({size_text(len(data))}, {sum(i.params for i in spec.layers):,} parameters)")
    if options.gradients:
        from convert.gradients import write_gradient_model_checked_numerically

        log("Writing the gradient model (saliency, Grad-CAM, feature visualisation) ...")
        write_gradient_model_checked_numerically(out_path, log=log)
    return spec


def _name_layers(layers: list[_Layer], names: list[str], graph) -> None:
    """Give each layer its name; a name that another tensor of the graph already has (or
    ``input``, the new input's) gets a suffix, since each layer's tensor is renamed to it."""
    taken = {"input"} | {init.name for init in graph.initializer} | {value.name for value in graph.input}
    taken |= {out for node in graph.node for out in node.output}
    chosen: set[str] = set()
    for layer, name in zip(layers, names, strict=True):
        if (name in taken and name != layer.tensor) or name in chosen:
            name = _free(name, taken | chosen)
        chosen.add(name)
        layer.name = name


def _identity_weights(model, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights the legacy exporter passes through an ``Identity`` (a parameter used twice)."""
    found = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in weights:
            found[node.output[0]] = weights[node.input[0]]
    return found
