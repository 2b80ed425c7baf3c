"""The first convolution's filters, read from the ONNX file's weights, as small pictures.

ONNX Runtime runs a model but does not hand out its weights, so the file is read with
the ``onnx`` package. The first ``Conv`` node in graph order (ONNX nodes are stored in
topological order) is the one that touches the input; its weight tensor has the layout
``(filters, input channels, kernel rows, kernel cols)``, and input channel order is the
photo's (R, G, B), because the exporter only transposes the pixel layout.

>>> filters = read_first_layer_filters("models/cats_dogs_small.onnx")   # doctest: +SKIP
>>> filters.weights.shape                                                # doctest: +SKIP
(32, 3, 3, 3)
>>> filter_pictures(filters)[0].shape     # 3 x 3 RGB, grey = 0        # doctest: +SKIP
(3, 3, 3)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featapp.engine.model import ModelError

__all__ = [
    "COLOUR_ENERGY_THRESHOLD",
    "EDGE_ENERGY_THRESHOLD",
    "FirstLayerFilters",
    "FirstLayerSummary",
    "colour_energy_shares",
    "colour_like_kernels",
    "edge_energy_shares",
    "edge_like_kernels",
    "filter_pictures",
    "first_layer_summary",
    "kernel_correlation",
    "read_first_layer_filters",
    "start_and_learned",
]


@dataclass(frozen=True)
class FirstLayerFilters:
    """Weights ``(filters, channels, rows, cols)`` and bias ``(filters,)`` of the first convolution."""

    weights: np.ndarray
    bias: np.ndarray | None
    node_name: str

    @property
    def count(self) -> int:
        return int(self.weights.shape[0])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weights.shape[2]), int(self.weights.shape[3])


def read_graph(path: str | os.PathLike):
    """An ONNX file's graph, its constant tensors by name, and each output's producing node:
    what reading any layer's weights needs. An unreadable file is a :class:`ModelError`."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises several types for an unreadable file
        raise ModelError(f"'{path.name}' could not be read as an ONNX file ({type(err).__name__}).") from None
    graph = model.graph
    return graph, _constant_tensors(graph), {output: node for node in graph.node for output in node.output}


def _constant_tensors(graph) -> dict[str, np.ndarray]:
    """Every tensor whose value is in the file: initializers, and Constant nodes' outputs."""
    from onnx import numpy_helper

    tensors = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    tensors[node.output[0]] = numpy_helper.to_array(attribute.t)
    return tensors


def _resolve(name: str, tensors: dict[str, np.ndarray], producers: dict[str, object]) -> np.ndarray | None:
    """The constant value behind ``name``, looking through Identity nodes."""
    seen = set()
    while name not in tensors and name in producers and name not in seen:
        seen.add(name)
        node = producers[name]
        if node.op_type != "Identity":  # type: ignore[attr-defined]
            return None
        name = node.input[0]  # type: ignore[attr-defined]
    return tensors.get(name)


def read_first_layer_filters(path: str | os.PathLike) -> FirstLayerFilters:
    """The first convolution's weights (and bias, if it has one) from an ONNX file.

    Raises :class:`ModelError` when the file cannot be read or has no convolution
    whose weights are stored in it.
    """
    graph, tensors, producers = read_graph(path)
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weights = _resolve(node.input[1], tensors, producers)
        if weights is None or weights.ndim != 4:
            break
        bias = _resolve(node.input[2], tensors, producers) if len(node.input) > 2 and node.input[2] else None
        return FirstLayerFilters(
            weights=np.asarray(weights, dtype=np.float32),
            bias=None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1),
            node_name=node.name or node.output[0],
        )
    raise ModelError(
        f"'{Path(path).name}' has no first convolution with stored weights, so there are no filters to show."
    )


def filter_pictures(filters: FirstLayerFilters, *, shared_scale: bool = False) -> list[np.ndarray]:
    """Each filter as a uint8 picture ``(rows, cols, channels)``: mid-grey is a weight of 0.

    Positive weights are lighter, negative darker, per colour channel, so a filter that
    responds to "red on the left, green on the right" looks like that. Each filter is
    scaled by its own largest absolute weight (``shared_scale=False``, to see every
    filter's pattern) or by the largest over all filters (to compare their strength).

    >>> w = np.zeros((1, 1, 1, 2), np.float32); w[0, 0, 0] = [1.0, -0.5]
    >>> filter_pictures(FirstLayerFilters(w, None, "conv"))[0][:, :, 0].tolist()
    [[255, 64]]
    """
    weights = filters.weights
    if shared_scale:
        peaks = np.full(weights.shape[0], np.abs(weights).max())
    else:
        peaks = np.abs(weights).reshape(weights.shape[0], -1).max(axis=1)
    pictures = []
    for weight, peak in zip(weights, peaks, strict=False):
        unit = weight / peak if peak > 0 else np.zeros_like(weight)
        picture = np.clip(np.round(127.5 + 127.5 * unit), 0, 255).astype(np.uint8)
        pictures.append(np.ascontiguousarray(picture.transpose(1, 2, 0)))
    return pictures


# The two 3x3 Sobel kernels (horizontal and vertical first derivatives): they are
# orthogonal and zero-mean, so their span is a 2-dimensional subspace of the 8-dimensional
# space of zero-mean 3x3 patterns; a random pattern puts about 2/8 of its energy there.
_SOBEL_VERTICAL_EDGE = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_BASIS = np.stack([_SOBEL_VERTICAL_EDGE.ravel(), _SOBEL_VERTICAL_EDGE.T.ravel()]) / np.sqrt(12.0)
EDGE_ENERGY_THRESHOLD = 0.7
"""A kernel is edge-like when at least this share of its luminance part's energy lies in the Sobel span."""


def edge_energy_shares(weights: np.ndarray) -> np.ndarray:
    """For each 3x3 kernel of ``weights`` ``(filters, channels, 3, 3)``, the share of its
    luminance part's energy in the span of the two Sobel kernels.

    The luminance part is the mean over the input channels, minus its own mean: the part of
    the kernel that answers to brightness patterns rather than to colour or overall light.

    >>> w = np.zeros((2, 3, 3, 3)); w[0, :] = _SOBEL_VERTICAL_EDGE; w[1, :, 1, 1] = 1.0
    >>> [round(float(s), 3) for s in edge_energy_shares(w)]
    [1.0, 0.0]
    """
    weights = np.asarray(weights, np.float64)
    if weights.shape[2:] != (3, 3):
        raise ValueError(f"edge shares are defined for 3x3 kernels, not {weights.shape[2:]}")
    luminance = weights.mean(axis=1).reshape(len(weights), 9)
    luminance -= luminance.mean(axis=1, keepdims=True)
    energy = (luminance**2).sum(axis=1)
    in_span = ((luminance @ _SOBEL_BASIS.T) ** 2).sum(axis=1)
    return np.divide(in_span, energy, out=np.zeros_like(energy), where=energy > 1e-12)


def edge_like_kernels(weights: np.ndarray, threshold: float = EDGE_ENERGY_THRESHOLD) -> np.ndarray:
    """Indices of the kernels of ``weights`` ``(filters, channels, 3, 3)`` that are oriented edges."""
    return np.flatnonzero(edge_energy_shares(weights) >= threshold)


COLOUR_ENERGY_THRESHOLD = 0.4
"""A kernel is a colour detector when at least this share of its energy is a flat colour contrast."""


def colour_energy_shares(weights: np.ndarray) -> np.ndarray:
    """For each kernel of ``weights`` ``(filters, channels, rows, cols)``, the share of its energy
    that is a flat colour contrast: each colour channel's mean weight, minus the mean over the
    channels, spread over the kernel. Such a kernel answers to a patch of one colour against
    another (red against green, blue against yellow) whatever its pattern of light and dark; a
    random 3x3x3 kernel puts about 2/27 of its energy there (2 of its 27 dimensions).

    >>> w = np.zeros((2, 3, 3, 3)); w[0, 0], w[0, 1] = 1.0, -1.0; w[1, :] = _SOBEL_VERTICAL_EDGE
    >>> [round(float(s), 3) for s in colour_energy_shares(w)]
    [1.0, 0.0]
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 4 or weights.shape[1] < 2:
        return np.zeros(len(weights))
    means = weights.mean(axis=(2, 3))  # (filters, channels)
    contrast = means - means.mean(axis=1, keepdims=True)
    flat = (contrast**2).sum(axis=1) * weights.shape[2] * weights.shape[3]
    energy = (weights**2).sum(axis=(1, 2, 3))
    return np.divide(flat, energy, out=np.zeros_like(energy), where=energy > 1e-12)


def colour_like_kernels(weights: np.ndarray, threshold: float = COLOUR_ENERGY_THRESHOLD) -> np.ndarray:
    """Indices of the kernels of ``weights`` ``(filters, channels, rows, cols)`` that are colour detectors."""
    return np.flatnonzero(colour_energy_shares(weights) >= threshold)


def kernel_correlation(kernel: np.ndarray, start: np.ndarray) -> float:
    """Pearson correlation of two kernels of the same shape, over all their weights.

    >>> w = np.arange(6.0).reshape(1, 2, 3)
    >>> kernel_correlation(w, w), kernel_correlation(w, -w), round(kernel_correlation(w, w * 2 + 1), 6)
    (1.0, -1.0, 1.0)
    """
    a = np.asarray(kernel, np.float64).ravel()
    b = np.asarray(start, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"kernels of different shapes: {kernel.shape} and {start.shape}")
    return float(np.corrcoef(a, b)[0, 1])


def start_and_learned(kernel: np.ndarray, start: np.ndarray) -> tuple[float, float]:
    """How much of ``start`` a trained kernel still holds, and how much it added to it.

    The kernel is split into ``a * start`` plus a part orthogonal to the start (what
    training added in new directions); returns ``a`` and that part's norm over the start's.
    The correlation with the start is about ``a / sqrt(a**2 + learned**2)``, so it stays high
    when training amplifies the start (``a > 1``) as much as when it barely moves it.

    >>> s = np.array([1.0, 0.0, -1.0, 0.0])
    >>> start_and_learned(2 * s + np.array([0.0, 1.0, 0.0, -1.0]), s)
    (2.0, 1.0)
    """
    k = np.asarray(kernel, np.float64).ravel()
    s = np.asarray(start, np.float64).ravel()
    if k.shape != s.shape:
        raise ValueError(f"kernels of different shapes: {kernel.shape} and {start.shape}")
    square = float(s @ s)
    if square == 0.0:
        raise ValueError("the start kernel is all zeros")
    share = float(k @ s) / square
    return share, float(np.linalg.norm(k - share * s) / np.sqrt(square))


@dataclass(frozen=True)
class FirstLayerSummary:
    """What the first layer's filters are, measured: which are oriented edges
    (:func:`edge_like_kernels`) and how far they are from the run's epoch-0 filters."""

    count: int
    edge_like: tuple[int, ...]
    correlation_with_start: float | None = None
    colour_like: tuple[int, ...] = ()


def first_layer_summary(filters: FirstLayerFilters, start: FirstLayerFilters | None = None) -> FirstLayerSummary:
    """The measures of ``filters``; ``start`` (the same layer at epoch 0) adds the correlation.
    Edges are measured on 3x3 kernels only (the Sobel span is 3x3); other sizes count none."""
    edges = tuple(int(i) for i in edge_like_kernels(filters.weights)) if filters.kernel == (3, 3) else ()
    correlation = None
    if start is not None and start.weights.shape == filters.weights.shape:
        correlation = kernel_correlation(filters.weights, start.weights)
    colours = tuple(int(i) for i in colour_like_kernels(filters.weights))
    return FirstLayerSummary(filters.count, edges, correlation, colours)
