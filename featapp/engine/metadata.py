"""What a converted model says about itself, stored in the ONNX file's ``metadata_props``.

One JSON document under the key :data:`METADATA_KEY` carries everything the app needs,
so nothing about the model is hard-coded: input size and channels, how pixels are
scaled, class names, every layer's kind, shape, parameters and geometry, where the
model came from and which packages converted it.

This module is the single reader and writer: ``convert`` builds a :class:`ModelSpec`
and calls :meth:`ModelSpec.to_json`; ``featapp`` calls :meth:`ModelSpec.from_json`.
It imports neither Keras nor ONNX Runtime.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from featapp.engine.geometry import INPUT_FIELD, LayerGeometry, ReceptiveField, step, union, whole_map
from featapp.engine.images import InputSpec
from featapp.errors import FeatappError

__all__ = [
    "METADATA_KEY",
    "SCHEMA_VERSION",
    "SPATIAL_LAYOUT",
    "LayerInfo",
    "ModelSpec",
    "MetadataError",
    "with_receptive_fields",
    "activation_bytes",
    "architecture_id",
    "model_identity",
    "IDENTITY_KEY",
]

METADATA_KEY = "featapp"
SCHEMA_VERSION = 1
CHANNEL_ORDERS = ("RGB", "BGR")

SPATIAL_LAYOUT = "NCHW"
"""Layout of every 4-D output in the ONNX graph and of every map featapp returns:
(image, channel, row, column). ONNX Runtime's convolutions are NCHW natively, so no
transposes are added, and ``maps[i, c]`` is one image's 2-D map for channel ``c``.
The graph's *input* stays NHWC (image, row, column, channel), the layout of photos
and of Keras; ``LayerInfo.output_shape`` is also written channels-last, as Keras
prints it. The converter asks tf2onnx for NCHW outputs (``outputs_as_nchw``)."""


class MetadataError(FeatappError, ValueError):
    """The metadata is missing or does not describe the file it is in."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer, as the lecture's ``model.summary()`` would describe it, plus geometry.

    ``output_shape`` is per image and channels-last, as Keras prints it:
    ``(148, 148, 32)`` for a map, ``(512,)`` for a vector. ``kernel``, ``stride``,
    ``padding`` (``"valid"``/``"same"``, or ``"explicit"`` with ``pads``) and ``dilation``
    are set for convolutions and pooling, ``None`` for the rest. ``pads`` are explicit
    ``(top, left, bottom, right)`` rows and columns of padding (PyTorch's ``padding=1``,
    an ONNX ``Pad``); on a layer without a kernel they are all it does (``ZeroPadding2D``;
    negative for ``Cropping2D``). ``receptive_field`` is the size, jump and offset per
    axis for spatial layers, and ``None`` for vectors and for maps after a layer whose
    geometry the converter cannot follow (e.g. ``UpSampling2D``). ``inputs`` names the
    layers it reads (``None`` in the tuple: the model's input), in the graph's order;
    ``None`` in files written before it was recorded, which are read as plain stacks.

    >>> LayerInfo("conv2d", "Conv2D", (148, 148, 32), kernel=(3, 3), stride=(1, 1)).shape_text
    '148 x 148 x 32'
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int = 0
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: str | None = None
    activation: str | None = None
    receptive_field: ReceptiveField | None = None
    dilation: tuple[int, int] | None = None
    pads: tuple[int, int, int, int] | None = None
    inputs: tuple[str | None, ...] | None = None

    @property
    def is_spatial(self) -> bool:
        """True for feature maps (height, width, channels)."""
        return len(self.output_shape) == 3

    @property
    def channels(self) -> int:
        """Channels of a map, or units of a vector."""
        return int(self.output_shape[-1])

    @property
    def shape_text(self) -> str:
        """The shape as the lecture writes it, e.g. ``148 x 148 x 32``."""
        return " x ".join(str(d) for d in self.output_shape)


@dataclass(frozen=True)
class ModelSpec:
    """Everything featapp reads from a converted model's metadata.

    The graph takes ``input_name`` = ``uint8 pixels * input_scale + input_offset``
    (NHWC, float32) and has one output per entry of ``layers``, named like it. Models
    trained on normalised photos (torchvision's ImageNet mean and standard deviation,
    Keras' caffe-style BGR with the mean subtracted) also say ``input_mean`` and
    ``input_std`` per channel of the graph (in ``channel_order``: B, G, R for BGR) and
    ``channel_order``: the graph then takes
    ``(pixels[channel_order] * input_scale + input_offset - input_mean) / input_std``;
    :attr:`pixel_scales` and :attr:`pixel_offsets` fold that into one scale and offset per
    channel. Empty ``input_mean``/``input_std`` mean 0 and 1 (files written before these
    fields existed load unchanged).
    ``class_names`` are the classifier's classes in output order; for one sigmoid unit
    they are (negative, positive). ``output_activation`` is ``"sigmoid"``, ``"softmax"``
    or ``None`` (no classifier, e.g. a trunk-only snapshot).

    ``extra`` holds facts about where the model came from, all optional:
    ``trunk`` (True when only the layers up to the last map were exported),
    ``epoch`` and ``val_accuracy`` (for training snapshots), ``is_best`` (the epoch
    chosen on validation), ``dropped_layers`` (augmentation layers left out because
    they do nothing at inference), ``folded_rescaling`` (a leading ``Rescaling``
    layer moved into ``input_scale``/``input_offset``), ``float32_instead_of_mixed_precision``
    (layers of a mixed-precision model exported computing in float32) and ``source_format``.

    >>> spec = ModelSpec(InputSpec(8, 8, 1), (LayerInfo("conv2d", "Conv2D", (6, 6, 4)),))
    >>> ModelSpec.from_json(spec.to_json()) == spec
    True
    """

    input: InputSpec
    layers: tuple[LayerInfo, ...]
    input_name: str = "input"
    input_scale: float = 1 / 255
    input_offset: float = 0.0
    output_activation: str | None = "sigmoid"
    class_names: tuple[str, ...] = ("cat", "dog")
    layout: str = SPATIAL_LAYOUT
    source_file: str = ""
    source_sha256: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        channels = self.input.channels
        for label, values in (("input_mean", self.input_mean), ("input_std", self.input_std)):
            if values and len(values) != channels:
                raise MetadataError(f"{label} has {len(values)} values, but the input has {channels} channel(s).")
        if any(not math.isfinite(v) or v == 0 for v in self.input_std):
            raise MetadataError(f"input_std must be finite and non-zero, not {list(self.input_std)}.")
        if self.channel_order not in CHANNEL_ORDERS or (self.channel_order == "BGR" and channels != 3):
            raise MetadataError(f"channel_order {self.channel_order!r} is not RGB, or BGR for a 3-channel input.")

    @property
    def reverses_channels(self) -> bool:
        """True when the graph takes blue, green, red (photos are read as red, green, blue)."""
        return self.channel_order == "BGR"

    @property
    def pixel_scales(self) -> tuple[float, ...]:
        """Per graph channel: graph input = pixel (0..255) * scale + offset.

        >>> spec = ModelSpec(InputSpec(2, 2, 3), (), input_scale=1 / 255, input_mean=(0.5,) * 3, input_std=(0.25,) * 3)
        >>> [round(v * 255, 6) for v in spec.pixel_scales], spec.pixel_offsets
        ([4.0, 4.0, 4.0], (-2.0, -2.0, -2.0))
        """
        stds = self.input_std or (1.0,) * self.input.channels
        return tuple(self.input_scale / std for std in stds)

    @property
    def pixel_offsets(self) -> tuple[float, ...]:
        """Per graph channel; see :attr:`pixel_scales`."""
        means = self.input_mean or (0.0,) * self.input.channels
        stds = self.input_std or (1.0,) * self.input.channels
        return tuple((self.input_offset - mean) / std for mean, std in zip(means, stds, strict=True))

    @property
    def has_classifier(self) -> bool:
        """True when the last layer gives class probabilities (sigmoid or softmax)."""
        return self.output_activation in ("sigmoid", "softmax") and not self.layers[-1].is_spatial

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
            if data.get("schema") != SCHEMA_VERSION:
                raise MetadataError(
                    f"featapp metadata schema {data.get('schema')!r} is not the supported {SCHEMA_VERSION}; "
                    "convert the model again with this version (python -m convert export)."
                )
            layers = tuple(
                LayerInfo(
                    name=str(row["name"]),
                    kind=str(row["kind"]),
                    output_shape=tuple(int(d) for d in row["output_shape"]),
                    params=int(row.get("params", 0)),
                    kernel=_pair(row.get("kernel")),
                    stride=_pair(row.get("stride")),
                    padding=row.get("padding"),
                    activation=row.get("activation"),
                    receptive_field=_field(row.get("receptive_field")),
                    dilation=_pair(row.get("dilation")),
                    pads=_pads(row.get("pads")),
                    inputs=_inputs(row.get("inputs")),
                )
                for row in data["layers"]
            )
            return cls(
                input=InputSpec(**data["input"]),
                layers=layers,
                input_name=str(data["input_name"]),
                input_scale=float(data["input_scale"]),
                input_offset=float(data["input_offset"]),
                output_activation=data.get("output_activation"),
                class_names=tuple(str(c) for c in data.get("class_names", ())),
                layout=str(data.get("layout", SPATIAL_LAYOUT)),
                source_file=str(data.get("source_file", "")),
                source_sha256=str(data.get("source_sha256", "")),
                versions={str(k): str(v) for k, v in data.get("versions", {}).items()},
                extra=dict(data.get("extra", {})),
                input_mean=tuple(float(v) for v in data.get("input_mean", ())),
                input_std=tuple(float(v) for v in data.get("input_std", ())),
                channel_order=str(data.get("channel_order", "RGB")),
            )
        except MetadataError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MetadataError(f"featapp metadata is damaged ({type(err).__name__}: {err}).") from None


def _pair(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _pads(value: Any) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    if len(value) != 4:
        raise ValueError(f"pads must be (top, left, bottom, right), not {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]), int(value[3]))


def _inputs(value: Any) -> tuple[str | None, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"inputs must be a list of layer names, not {value!r}")
    return tuple(None if name is None else str(name) for name in value)


def _field(value: Any) -> ReceptiveField | None:
    if value is None:
        return None
    return ReceptiveField(
        size=_pair(value["size"]),  # type: ignore[arg-type]
        jump=_pair(value["jump"]),  # type: ignore[arg-type]
        offset=(float(value["offset"][0]), float(value["offset"][1])),
    )


def with_receptive_fields(
    layers: Sequence[LayerInfo],
    input_hw: tuple[int, int],
    inputs: Sequence[Sequence[int | None]] | None = None,
    opaque: Collection[str] = (),
) -> tuple[LayerInfo, ...]:
    """Fill in every layer's receptive field from its kernel, stride, padding and dilation,
    following the graph, and record what each layer reads (:attr:`LayerInfo.inputs`).

    ``inputs[i]`` lists the indices of the layers whose outputs layer ``i`` reads
    (``None`` stands for the model's input); by default the layers' own recorded
    :attr:`LayerInfo.inputs`, or, when a layer has none, the layer before it. A layer that
    merges several maps (``Add``, ``Concatenate``, ``Multiply``) sees the union of what
    they see (:func:`featapp.engine.geometry.union`). A vector (a global pooling, a dense
    layer) sees everything the maps it reads see, so a map made from one again (the gate of
    a squeeze-and-excitation block, reshaped to 1 x 1) sees that too; so does a map that a
    layer without a kernel shrinks to 1 x 1 (a global pooling that keeps its dimensions).
    A layer named in ``opaque``, or one without a kernel or pads that changes the height
    or width of its map otherwise, moves pixels in a way these numbers cannot describe:
    it, and every layer that reads it, gets ``None``; vectors always get ``None``.

    >>> conv = LayerInfo("conv2d", "Conv2D", (6, 6, 4), kernel=(3, 3), stride=(1, 1), padding="valid")
    >>> pool = LayerInfo("pool", "MaxPooling2D", (3, 3, 4), kernel=(2, 2), stride=(2, 2), padding="valid")
    >>> [layer.receptive_field.size for layer in with_receptive_fields([conv, pool], (8, 8))]
    [(3, 3), (4, 4)]
    """
    layers = list(layers)
    if inputs is None:
        inputs = _recorded_inputs(layers)
    if len(inputs) != len(layers):
        raise ValueError(f"inputs given for {len(inputs)} layers, but there are {len(layers)}")
    # Per layer: its field and map size (a vector is one cell that sees all it reads), or None.
    seen: list[tuple[ReceptiveField, tuple[int, int]] | None] = []
    fields: list[ReceptiveField | None] = []
    for index, layer in enumerate(layers):
        sources = list(inputs[index]) or [None]
        for source in sources:
            if source is not None and not 0 <= source < index:
                raise ValueError(f"layer {layer.name!r} must read earlier layers, not index {source}")
        state = _seen_by(layer, [(INPUT_FIELD, input_hw) if s is None else seen[s] for s in sources], opaque)
        seen.append(state)
        fields.append(state[0] if state is not None and layer.is_spatial else None)
    names = [layer.name for layer in layers]
    return tuple(
        LayerInfo(
            **{
                **layer.__dict__,
                "receptive_field": rf,
                "inputs": tuple(None if s is None else names[s] for s in (list(reads) or [None])),
            }
        )
        for layer, rf, reads in zip(layers, fields, inputs, strict=True)
    )


def _recorded_inputs(layers: Sequence[LayerInfo]) -> list[list[int | None]]:
    """Each layer's recorded inputs as indices; the layer before it where none are recorded
    (files written before they were) or where they name no earlier layer."""
    index_of: dict[str, int] = {}
    found: list[list[int | None]] = []
    for index, layer in enumerate(layers):
        reads = layer.inputs
        if reads is None or any(name is not None and name not in index_of for name in reads):
            found.append([index - 1 if index else None])
        else:
            found.append([None if name is None else index_of[name] for name in reads])
        index_of.setdefault(layer.name, index)
    return found


def _seen_by(
    layer: LayerInfo, reads: Sequence[tuple[ReceptiveField, tuple[int, int]] | None], opaque: Collection[str]
) -> tuple[ReceptiveField, tuple[int, int]] | None:
    """What ``layer``'s cells see and its map size, from those of the layers it reads."""
    known = [state for state in reads if state is not None]
    if len(known) < len(reads) or layer.name in opaque:
        return None
    if not layer.is_spatial:
        return _one_cell(known), (1, 1)
    out_hw = (int(layer.output_shape[0]), int(layer.output_shape[1]))
    if len(known) == 1:
        field, extent = known[0]
    else:
        merged = union(known, out_hw)
        if merged is None:
            return None
        field, extent = merged, out_hw
    if layer.kernel is not None or layer.pads is not None:
        geometry = LayerGeometry(
            name=layer.name,
            kernel=layer.kernel,
            stride=layer.stride,
            padding=layer.padding or "valid",
            dilation=layer.dilation or (1, 1),
            pads=layer.pads,
        )
        field, extent = step(field, extent, geometry)
        if layer.kernel is None and extent != out_hw:
            return None  # pads that do not give this map's size: not what the metadata says
        return field, out_hw
    if extent == out_hw:
        return field, out_hw
    if out_hw == (1, 1):
        return whole_map(field, extent), out_hw
    return None


def _one_cell(known: Sequence[tuple[ReceptiveField, tuple[int, int]]]) -> ReceptiveField:
    """The field of a value that may depend on every cell of all the maps it reads."""
    cells = [(whole_map(field, extent), (1, 1)) for field, extent in known]
    merged = union(cells, (1, 1)) if len(cells) > 1 else cells[0][0]
    assert merged is not None  # one-cell maps always merge
    return merged


def activation_bytes(layers: Sequence[LayerInfo]) -> int:
    """Bytes of float32 activations one image produces over all ``layers``.

    >>> activation_bytes([LayerInfo("conv", "Conv2D", (2, 2, 3)), LayerInfo("dense", "Dense", (5,))])
    68
    """
    return sum(4 * math.prod(layer.output_shape) for layer in layers)


IDENTITY_KEY = "model_identity"
"""Key in :attr:`ModelSpec.extra` (and in a snapshot folder's ``index.json``) of
:func:`model_identity`: ``{"architecture": ..., "run": ...}``."""


def architecture_id(spec: ModelSpec) -> str:
    """A hash of the convolutional trunk: the input, then each layer up to the last map
    (name, kind, shape, window). A model and its training snapshots (trunks) share it; a
    model that merely begins with a layer called ``conv2d`` does not.

    >>> a = ModelSpec(InputSpec(8, 8, 1), (LayerInfo("conv2d", "Conv2D", (6, 6, 4), kernel=(3, 3)),))
    >>> b = ModelSpec(InputSpec(8, 8, 1), (LayerInfo("conv2d", "Conv2D", (6, 6, 8), kernel=(3, 3)),))
    >>> architecture_id(a) == architecture_id(a), architecture_id(a) == architecture_id(b)
    (True, False)
    """
    import hashlib

    spatial = [i for i, layer in enumerate(spec.layers) if layer.is_spatial]
    trunk = spec.layers[: spatial[-1] + 1] if spatial else ()
    rows = [
        [layer.name, layer.kind, list(layer.output_shape), layer.kernel, layer.stride, layer.padding, layer.dilation]
        for layer in trunk
    ]
    text = json.dumps({"input": asdict(spec.input), "trunk": rows}, sort_keys=True)
    return "arch-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(spec: ModelSpec) -> dict[str, str]:
    """The model's identity: :func:`architecture_id` (always computed from the layers, so
    files written before identities existed have one too) and the training run it came
    from (``""`` when the converter was not told)."""
    stored = spec.extra.get(IDENTITY_KEY)
    recorded: dict[str, Any] = stored if isinstance(stored, dict) else {}
    return {"architecture": architecture_id(spec), "run": str(recorded.get("run", "") or "")}
