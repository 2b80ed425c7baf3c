"""What tells the classes apart: per channel, how differently it fires for cats and dogs.

Everything here reads a scan (:class:`featapp.stats.analysis.NeuronStats`), never the model, so
ranking a layer takes milliseconds. For each channel of a layer (each image's max or mean
of the map; for a vector layer each unit's value) :func:`separation` gives

* the **mean for each class**;
* the **AUC**: the chance that a random photo of the *positive* class (the model's
  output class, ``dogs``) scores higher on this channel than a random photo of the other
  class, ties counting half. 1 means the channel alone tells every dog from every cat,
  0 that it fires for every cat above every dog, 0.5 that it does not separate them;
* the **standardized difference** of the class means (Cohen's d: the difference in
  pooled standard deviations), which says how far apart the classes are, not just how
  well they are ordered.

>>> import numpy as np
>>> values = np.array([[0.0, 1.0], [0.1, 1.0], [2.0, 1.0], [3.0, 1.0]], np.float32)
>>> table = separation(values, np.array([0, 0, 1, 1]), ["cats", "dogs"], layer="toy")
>>> table.auc.tolist(), table.ranked()[0].channel
([1.0, 0.5], 0)

For the dense layer, :func:`output_weights` reads the last layer's weights from the ONNX
file so that :func:`contributions` can say which units push p(dog) up for one photo:
the output's logit is ``bias + sum(activation * weight)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featapp.engine.model import ModelError

__all__ = [
    "ChannelSeparation",
    "SeparationTable",
    "OutputWeights",
    "UnitContribution",
    "rank_sum_auc",
    "standardized_difference",
    "separation",
    "layer_separation",
    "output_weights",
    "contributions",
    "network_health",
    "health_table",
    "class_top",
]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N down each column, tied values sharing their average rank.

    By hand because numpy has no rankdata and SciPy (which has) is not otherwise needed
    at runtime. Sorted along rows of the transposed table, which is contiguous: a
    1,000 x 512 table takes a few tens of milliseconds instead of about 80.
    """
    rows = np.ascontiguousarray(values.T)
    count = rows.shape[1]
    order = np.argsort(rows, axis=1)
    ordered = np.take_along_axis(rows, order, axis=1)
    positions = np.arange(count)[np.newaxis, :]
    starts_group = np.ones(ordered.shape, dtype=bool)
    starts_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends_group = np.ones(ordered.shape, dtype=bool)
    ends_group[:, :-1] = starts_group[:, 1:]
    first = np.maximum.accumulate(np.where(starts_group, positions, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends_group, positions, count - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(rows.shape, np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.T


def rank_sum_auc(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUC of each column of ``values`` (images x channels) for telling ``positive`` images from the rest.

    The rank-sum (Mann-Whitney) formula: ``(R - n1 (n1 + 1) / 2) / (n1 n0)`` with ``R``
    the sum of the positive images' ranks, tied values sharing their average rank (so a
    tie between classes counts half). ``nan`` when either class is empty.

    >>> rank_sum_auc(np.array([1.0, 1.0, 2.0, 0.0]), np.array([True, False, True, False])).tolist()
    [0.875]
    """
    table = np.asarray(values)
    if table.ndim == 1:
        table = table[:, np.newaxis]
    positive = np.asarray(positive, dtype=bool)
    if positive.shape != (table.shape[0],):
        raise ValueError(f"expected one class flag per image ({table.shape[0]}), got shape {positive.shape}")
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return np.full(table.shape[1], np.nan)
    ranks = _average_ranks(table)
    rank_sum = ranks[positive].sum(axis=0)
    return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def standardized_difference(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Cohen's d per column: (positive mean - other mean) / pooled standard deviation.

    When both classes are constant the pooled deviation is 0: the result is 0 if the
    means are equal and +-inf if they differ.

    >>> standardized_difference(np.array([0.0, 2.0, 4.0, 6.0]), np.array([False, False, True, True])).tolist()
    [2.82842712474619]
    """
    table = np.asarray(values, dtype=np.float64)
    if table.ndim == 1:
        table = table[:, np.newaxis]
    positive = np.asarray(positive, dtype=bool)
    ones, zeros = table[positive], table[~positive]
    n1, n0 = len(ones), len(zeros)
    if n1 == 0 or n0 == 0:
        return np.full(table.shape[1], np.nan)
    difference = ones.mean(axis=0) - zeros.mean(axis=0)
    spread = (ones.var(axis=0, ddof=1) * (n1 - 1) if n1 > 1 else 0.0) + (
        zeros.var(axis=0, ddof=1) * (n0 - 1) if n0 > 1 else 0.0
    )
    pooled = np.sqrt(spread / max(n1 + n0 - 2, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = difference / pooled
    flat = pooled == 0
    d[flat] = np.where(difference[flat] == 0, 0.0, np.copysign(np.inf, difference[flat]))
    return d


@dataclass(frozen=True)
class ChannelSeparation:
    """One channel's row of a :class:`SeparationTable`. ``channel`` is 0-based."""

    layer: str
    channel: int
    class_means: tuple[float, ...]
    auc: float
    effect: float
    fires_for: str
    """The class with the higher mean (for a channel with equal means, the positive class)."""
    never_fires: bool
    """True when the channel is zero or below on every image (a dead ReLU)."""

    @property
    def strength(self) -> float:
        """How well the channel alone separates the classes, 0 (chance) to 1 (perfectly): ``|2 AUC - 1|``."""
        return abs(2.0 * self.auc - 1.0) if not math.isnan(self.auc) else 0.0

    def as_dict(self, class_names: Sequence[str]) -> dict:
        return {
            "layer": self.layer,
            "channel": self.channel + 1,
            "auc": round(self.auc, 4),
            "strength": round(self.strength, 4),
            "effect": None if not math.isfinite(self.effect) else round(self.effect, 4),
            "fires_for": self.fires_for,
            "never_fires": self.never_fires,
            "class_means": {name: round(mean, 6) for name, mean in zip(class_names, self.class_means, strict=True)},
        }


@dataclass(frozen=True)
class SeparationTable:
    """Per-channel class statistics of one layer over scanned images.

    ``class_means`` is ``(classes, channels)``; ``auc`` and ``effect`` are per channel,
    for ``positive`` against the other classes.
    """

    layer: str
    by: str
    class_names: tuple[str, ...]
    positive: str
    counts: tuple[int, ...]
    class_means: np.ndarray
    auc: np.ndarray
    effect: np.ndarray
    never_fires: np.ndarray

    @property
    def channels(self) -> int:
        return len(self.auc)

    @property
    def other(self) -> str:
        """The negative class's name (for two classes), else ``"the rest"``."""
        others = [name for name in self.class_names if name != self.positive]
        return others[0] if len(others) == 1 else "the rest"

    def row(self, channel: int) -> ChannelSeparation:
        auc = float(self.auc[channel])
        higher = self.positive if not auc < 0.5 else self.other
        return ChannelSeparation(
            layer=self.layer,
            channel=int(channel),
            class_means=tuple(float(m) for m in self.class_means[:, channel]),
            auc=auc,
            effect=float(self.effect[channel]),
            fires_for=higher,
            never_fires=bool(self.never_fires[channel]),
        )

    def order(self) -> np.ndarray:
        """Channels, best separating first: by ``|2 AUC - 1|``, then by ``|d|``; ties keep channel order."""
        strength = np.nan_to_num(np.abs(2 * self.auc - 1), nan=0.0)
        effect = np.nan_to_num(np.abs(self.effect), nan=0.0, posinf=np.finfo(np.float64).max)
        return np.lexsort((np.arange(self.channels), -effect, -strength))

    def ranked(self, limit: int | None = None) -> list[ChannelSeparation]:
        """Rows, best separating first (either class)."""
        return [self.row(c) for c in self.order()[:limit]]

    def top_for(self, class_name: str, limit: int = 10) -> list[ChannelSeparation]:
        """The ``limit`` channels that fire most for ``class_name`` over the other class, best first
        (with more than two classes: the positive class, or :attr:`other`, ``"the rest"``)."""
        if class_name not in self.class_names and class_name != self.other:
            raise ValueError(f"no class {class_name!r}; the classes are {', '.join(self.class_names)}")
        if class_name != self.positive and len(self.class_names) > 2 and class_name != self.other:
            raise ValueError(f"with {len(self.class_names)} classes, rank {self.positive!r} against 'the rest'")
        sign = 1.0 if class_name == self.positive else -1.0
        score = np.nan_to_num(sign * (self.auc - 0.5), nan=-1.0)
        effect = np.nan_to_num(sign * self.effect, nan=0.0, posinf=1e300, neginf=-1e300)
        order = np.lexsort((np.arange(self.channels), -effect, -score))
        return [self.row(c) for c in order[:limit] if score[c] > 0]

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "by": self.by,
            "classes": list(self.class_names),
            "positive": self.positive,
            "images": dict(zip(self.class_names, self.counts, strict=True)),
            "channels": [row.as_dict(self.class_names) for row in self.ranked()],
        }


def separation(
    values: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    layer: str = "",
    by: str = "max",
    positive: str | None = None,
) -> SeparationTable:
    """Class statistics of each column of ``values`` (images x channels); ``labels[i]``
    indexes ``class_names``. ``positive`` defaults to the last class (the one a sigmoid
    output's p stands for: ``dogs``)."""
    table = np.asarray(values, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"expected an images x channels table, got shape {table.shape}")
    labels = np.asarray(labels)
    if labels.shape != (table.shape[0],):
        raise ValueError(f"expected one label per image ({table.shape[0]}), got shape {labels.shape}")
    names = tuple(class_names)
    if len(names) < 2:
        raise ValueError("telling classes apart needs at least two classes")
    positive = names[-1] if positive is None else positive
    if positive not in names:
        raise ValueError(f"no class {positive!r}; the classes are {', '.join(names)}")
    counts = tuple(int((labels == i).sum()) for i in range(len(names)))
    with np.errstate(invalid="ignore"):
        means = np.stack(
            [
                table[labels == i].mean(axis=0) if counts[i] else np.full(table.shape[1], np.nan)
                for i in range(len(names))
            ]
        )
    flags = labels == names.index(positive)
    return SeparationTable(
        layer=layer,
        by=by,
        class_names=names,
        positive=positive,
        counts=counts,
        class_means=means,
        auc=rank_sum_auc(values, flags),
        effect=standardized_difference(table, flags),
        never_fires=~np.any(table > 0, axis=0) if len(table) else np.ones(table.shape[1], bool),
    )


def layer_separation(stats, layer: str, by: str = "max", positive: str | None = None) -> SeparationTable:
    """:func:`separation` for one layer of a scan (each image's max or mean per channel;
    a vector layer's values). Raises ``ValueError`` for a layer whose table was not kept."""
    return separation(
        stats.values(layer, by=by), stats.labels, stats.class_names, layer=layer, by=by, positive=positive
    )


# -- the output layer -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputWeights:
    """The last layer's weights ``(units,)`` and bias: ``logit = bias + activations @ weights``."""

    weights: np.ndarray
    bias: float
    node_name: str


def output_weights(path: str | os.PathLike, output_name: str | None = None) -> OutputWeights:
    """The weights of the dense layer that makes the model's single output, read from the ONNX file.

    Follows the graph back from the output (``output_name``, default the last graph
    output): through its activation (Sigmoid), a bias ``Add``, to the ``MatMul`` (or
    ``Gemm``) whose weight is stored in the file. :class:`ModelError` when the file has
    no such layer or it has more than one output unit.

    >>> w = output_weights("models/cats_dogs_small.onnx")    # doctest: +SKIP
    >>> w.weights.shape                                       # doctest: +SKIP
    (512,)
    """
    import onnx

    from featapp.engine.filters import _resolve, read_graph

    path = Path(path)
    graph, tensors, producers = read_graph(path)
    outputs = [output.name for output in graph.output]
    name = output_name if output_name is not None else (outputs[-1] if outputs else "")
    bias: np.ndarray | None = None
    for _ in range(16):
        node = producers.get(name)
        if node is None:
            break
        if node.op_type in ("Sigmoid", "Softmax", "Identity", "Relu"):
            name = node.input[0]
            continue
        if node.op_type == "Add":
            constants = [_resolve(i, tensors, producers) for i in node.input]
            if constants[1] is not None:
                bias, name = constants[1], node.input[0]
            elif constants[0] is not None:
                bias, name = constants[0], node.input[1]
            else:
                break
            continue
        if node.op_type in ("MatMul", "Gemm"):
            weights = _resolve(node.input[1], tensors, producers)
            if weights is None or weights.ndim != 2:
                break
            if node.op_type == "Gemm":
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                if attrs.get("transB", 0):
                    weights = weights.T
                if len(node.input) > 2 and node.input[2]:
                    bias = _resolve(node.input[2], tensors, producers)
            if weights.shape[1] != 1:
                raise ModelError(
                    f"'{path.name}': the output layer has {weights.shape[1]} units; contributions are shown only "
                    "for a single output (p of one class)."
                )
            total_bias = 0.0 if bias is None else float(np.asarray(bias, np.float64).reshape(-1)[0])
            return OutputWeights(np.asarray(weights[:, 0], np.float32), total_bias, node.name or node.output[0])
        break
    raise ModelError(f"'{path.name}' has no dense output layer with stored weights, so contributions are unavailable.")


@dataclass(frozen=True)
class UnitContribution:
    """One dense unit's push on the output's logit for one photo: ``activation * weight``."""

    unit: int
    activation: float
    weight: float

    @property
    def contribution(self) -> float:
        return self.activation * self.weight


def contributions(activations: np.ndarray, weights: OutputWeights) -> list[UnitContribution]:
    """Each unit's contribution to the logit for one photo, largest magnitude first (ties keep unit order).

    ``bias + sum(c.contribution)`` is the logit; its sigmoid is p of the positive class.

    >>> w = OutputWeights(np.array([1.0, -2.0, 0.5], np.float32), 0.0, "toy")
    >>> [(c.unit, c.contribution) for c in contributions(np.array([1.0, 1.0, 0.0]), w)]
    [(1, -2.0), (0, 1.0), (2, 0.0)]
    """
    values = np.asarray(activations, dtype=np.float64).reshape(-1)
    if values.shape != weights.weights.shape:
        raise ValueError(f"expected {weights.weights.shape[0]} activations, got {values.shape[0]}")
    pushes = values * weights.weights
    order = np.lexsort((np.arange(len(pushes)), -np.abs(pushes)))
    return [UnitContribution(int(u), float(values[u]), float(weights.weights[u])) for u in order]


def network_health(stats) -> dict:
    """Every layer's :class:`featapp.stats.liveness.LayerLiveness` on the scanned images, in model order."""
    return {name: stats.liveness(name) for name in stats.layer_names}


HEALTH_LISTED = 6
"""How many never-firing channels a health table row lists: a longer list made the last column
wider than the page, so the table cut it (the Layer grid lists them all for one layer)."""


def health_table(health: dict, spatial: Sequence[str] = ()):
    """A table (pandas) of :func:`network_health` or :func:`featapp.stats.liveness.liveness_of`:
    one row per layer, numbered from 1, with the shares as percentages. ``spatial`` names
    the layers with maps (the others have no constant-map share)."""
    import pandas as pd

    rows = []
    for number, (name, live) in enumerate(health.items(), start=1):
        dead = [c + 1 for c in live.never_active_channels]
        rows.append(
            {
                "#": number,
                "layer": name,
                "channels": live.channels,
                "never fire": live.never_active,
                "never fire %": round(100 * live.never_active_share, 1),
                "constant maps %": round(100 * live.constant_map_share, 1) if name in spatial else None,
                "zeros %": round(100 * live.sparsity, 1),
                "never-firing channels": ", ".join(map(str, dead[:HEALTH_LISTED]))
                + (f" and {len(dead) - HEALTH_LISTED} more" if len(dead) > HEALTH_LISTED else ""),
            }
        )
    return pd.DataFrame(rows)


def class_top(stats, layer: str, channel: int, class_name: str, k: int = 5, by: str = "max") -> list:
    """The ``k`` photos of ``class_name`` on which ``channel`` of ``layer`` fires most
    (:class:`featapp.stats.ranking.RankedHit`, strongest first, with the max's cell and box)."""
    from featapp.engine.geometry import receptive_box
    from featapp.stats.ranking import RankedHit

    if class_name not in stats.class_names:
        raise ValueError(f"no class {class_name!r}; the classes are {', '.join(stats.class_names)}")
    label = stats.class_names.index(class_name)
    column = np.asarray(stats.values(layer, by=by))[:, channel]
    members = np.flatnonzero(stats.labels == label)
    order = members[np.argsort(-column[members], kind="stable")][:k]
    spatial = stats.is_spatial(layer)
    cells = stats.max_cells(layer)[:, channel] if spatial else None
    field = stats.receptive_field(layer)
    hits = []
    for rank, index in enumerate(order):
        cell = (int(cells[index, 0]), int(cells[index, 1])) if cells is not None else None
        box = receptive_box(field, *cell, stats.input_hw) if cell is not None and field is not None else None
        hits.append(
            RankedHit(
                path=stats.paths[index],
                class_name=class_name,
                label=label,
                value=float(column[index]),
                cell=cell,
                box=box,
                rank=rank,
                index=int(index),
            )
        )
    return hits
