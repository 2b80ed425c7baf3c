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
from dataclasses import asdict, dataclass, field
from typing import Any

from featapp.geometry import LayerGeometry, ReceptiveField, propagate
from featapp.images import InputSpec

__all__ = ["METADATA_KEY", "SCHEMA_VERSION", "LayerInfo", "ModelSpec", "MetadataError"]

METADATA_KEY = "featapp"
SCHEMA_VERSION = 1

SPATIAL_LAYOUT = "NCHW"
"""Layout of every 4-D output in the ONNX graph and of every map featapp returns:
(image, channel, row, column). ONNX Runtime's convolutions are NCHW natively, so no
transposes are added, and ``maps[i, c]`` is one image's 2-D map for channel ``c``."""


class MetadataError(ValueError):
    """The metadata is missing or does not describe the file it is in."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer, as the lecture's ``model.summary()`` would describe it, plus geometry.

    ``output_shape`` is per image and channels-last, as Keras prints it:
    ``(148, 148, 32)`` for a map, ``(512,)`` for a vector. ``receptive_field`` is the
    size, jump and offset per axis for spatial layers, and ``None`` for the others.
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
    """Everything featapp reads from a converted model's metadata."""

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

    @property
    def has_classifier(self) -> bool:
        """True when the last layer gives class probabilities (sigmoid or softmax)."""
        return self.output_activation in ("sigmoid", "softmax") and not self.layers[-1].is_spatial

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
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
            )
        except MetadataError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MetadataError(f"featapp metadata is damaged ({type(err).__name__}: {err}).") from None


def _pair(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _field(value: Any) -> ReceptiveField | None:
    if value is None:
        return None
    return ReceptiveField(
        size=_pair(value["size"]),  # type: ignore[arg-type]
        jump=_pair(value["jump"]),  # type: ignore[arg-type]
        offset=(float(value["offset"][0]), float(value["offset"][1])),
    )


def with_receptive_fields(layers: list[LayerInfo], input_hw: tuple[int, int]) -> tuple[LayerInfo, ...]:
    """Fill in every layer's receptive field from its kernel, stride and padding."""
    geometry = [
        LayerGeometry(
            name=layer.name,
            kernel=layer.kernel,
            stride=layer.stride,
            padding=layer.padding or "valid",
            spatial=layer.is_spatial,
        )
        for layer in layers
    ]
    fields = propagate(geometry, input_hw)
    return tuple(
        LayerInfo(**{**layer.__dict__, "receptive_field": rf}) for layer, rf in zip(layers, fields, strict=True)
    )
