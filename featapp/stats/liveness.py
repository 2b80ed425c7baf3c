"""Dead channels and constant maps: how much of a layer is alive on a set of images.

A ReLU channel whose output is zero for every position of every image *never fires*:
it carries nothing, and its tiles in the Layer grid are blank. A map that has one value
over the whole image (usually all zeros) is *constant* for that photo. Both are counted
by streaming batches through :class:`LivenessCounter`, so a split of any size needs one
batch of memory, and training can measure them after every epoch.

>>> counter = LivenessCounter()
>>> maps = np.zeros((2, 3, 4, 4), np.float32)    # 2 photos, 3 channels of 4x4
>>> maps[0, 0, 1, 1] = 1.0                       # channel 1 fires once, on photo 1
>>> maps[:, 1] = 0.5                             # channel 2 is a flat 0.5 on both photos
>>> counter.update(maps)
>>> live = counter.result()
>>> live.never_active, live.channels, round(live.constant_map_share, 3)
(1, 3, 0.833)
>>> live.never_active_channels                   # 0-based: channel 3 never fires
(2,)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["LayerLiveness", "LivenessCounter", "layer_liveness", "liveness_of"]


@dataclass(frozen=True)
class LayerLiveness:
    """How alive one layer is over ``images`` images.

    ``never_active_channels`` are 0-based; the app shows them counted from 1.
    ``constant_map_share`` is the share of (image, channel) maps with one value
    everywhere; ``sparsity`` the share of all activations that are exactly zero.
    """

    channels: int
    images: int
    never_active_channels: tuple[int, ...]
    constant_map_share: float
    sparsity: float

    @property
    def never_active(self) -> int:
        return len(self.never_active_channels)

    @property
    def never_active_share(self) -> float:
        return self.never_active / self.channels if self.channels else 0.0

    def as_dict(self) -> dict:
        return {
            "channels": self.channels,
            "images": self.images,
            "never_active": self.never_active,
            "never_active_share": round(self.never_active_share, 4),
            "never_active_channels": [c + 1 for c in self.never_active_channels],
            "constant_map_share": round(self.constant_map_share, 4),
            "sparsity": round(self.sparsity, 4),
        }


class LivenessCounter:
    """Accumulates one layer's liveness over batches of ``(N, C, H, W)`` maps or ``(N, C)`` vectors.

    ``channels_last=True`` takes ``(N, H, W, C)`` (Keras' layout) instead.
    """

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = channels_last
        self._ever_active: np.ndarray | None = None
        self._images = 0
        self._constant_maps = 0
        self._zeros = 0
        self._values = 0

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch)
        if batch.ndim < 2:
            raise ValueError(f"expected a batch of maps or vectors, got shape {batch.shape}")
        if self.channels_last and batch.ndim > 2:
            batch = np.moveaxis(batch, -1, 1)
        count, channels = batch.shape[:2]
        flat = batch.reshape(count, channels, -1)
        active = (flat > 0).any(axis=2).any(axis=0)
        if self._ever_active is None:
            self._ever_active = np.zeros(channels, bool)
        elif len(self._ever_active) != channels:
            raise ValueError(f"this layer had {len(self._ever_active)} channels, this batch has {channels}")
        self._ever_active |= active
        self._images += count
        if flat.shape[2] > 1:
            self._constant_maps += int((flat.max(axis=2) == flat.min(axis=2)).sum())
        self._zeros += int(np.count_nonzero(flat == 0))
        self._values += flat.size

    def result(self) -> LayerLiveness:
        if self._ever_active is None:
            raise ValueError("no images were counted")
        maps = self._images * len(self._ever_active)
        return LayerLiveness(
            channels=len(self._ever_active),
            images=self._images,
            never_active_channels=tuple(int(c) for c in np.flatnonzero(~self._ever_active)),
            constant_map_share=self._constant_maps / maps if maps else 0.0,
            sparsity=self._zeros / self._values if self._values else 0.0,
        )


def layer_liveness(maps: np.ndarray, channels_last: bool = False) -> LayerLiveness:
    """Liveness of one layer's outputs for a batch held in memory."""
    counter = LivenessCounter(channels_last)
    counter.update(maps)
    return counter.result()


def liveness_of(batches: Iterable[Mapping[str, np.ndarray]], channels_last: bool = False) -> dict[str, LayerLiveness]:
    """Liveness of every layer in a stream of ``{layer name: batch}`` dictionaries
    (for example :meth:`featapp.FeatureModel.activations` over chunks of a split)."""
    counters: dict[str, LivenessCounter] = {}
    for batch in batches:
        for name, maps in batch.items():
            counters.setdefault(name, LivenessCounter(channels_last)).update(maps)
    return {name: counter.result() for name, counter in counters.items()}
