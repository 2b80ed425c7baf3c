"""Occlusion sensitivity: which part of the photo does the prediction depend on?

Cover one square of the photo with grey, ask the model again, and see how much the
probability of its answer drops. Slide the square over the whole photo and the drops
form a map: large where the model was looking (Zeiler & Fergus, 2014). It needs no
gradients, so it runs in ONNX Runtime like everything else.

Patch positions: along each axis the patch starts at ``0, stride, 2*stride, ...`` and
the last position is moved back so the patch ends exactly at the border (it never hangs
over it). With ``stride`` dividing ``size - patch`` the grid is perfectly regular; for
150 pixels, patch 20 and stride 10 that is 14 x 14 = 196 positions. A patch at least as
large as the image covers all of it (one position).

>>> result = occlusion_sensitivity(model, photo, patch=20, stride=10)   # doctest: +SKIP
>>> result.drop.shape, result.class_name                                # doctest: +SKIP
((14, 14), 'dog')
>>> overlay = result.per_pixel()      # (150, 150), for drawing over the photo  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OcclusionMap", "occlusion_sensitivity", "patch_starts"]


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Where the patches start along one axis of ``size`` pixels.

    >>> patch_starts(150, 20, 10)[-3:]
    [110, 120, 130]
    >>> patch_starts(10, 4, 4)        # the last one is moved back to end at the border
    [0, 4, 6]
    >>> patch_starts(10, 30, 5)       # a patch larger than the image covers all of it
    [0]
    """
    if patch >= size:
        return [0]
    steps = math.ceil((size - patch) / stride)
    return [min(i * stride, size - patch) for i in range(steps + 1)]


@dataclass(frozen=True, eq=False)
class OcclusionMap:
    """The drop in the predicted class's probability for each patch position.

    ``drop[i, j]`` belongs to the patch with top-left corner ``(tops[i], lefts[j])``.
    Positive: covering it made the model less sure; negative: more sure.
    """

    drop: np.ndarray
    patch: int
    stride: int
    class_index: int
    class_name: str
    base_probability: float
    tops: tuple[int, ...] = ()
    lefts: tuple[int, ...] = ()
    input_hw: tuple[int, int] = (0, 0)
    occluded_probability: np.ndarray | None = None
    """``(rows, cols)``: the class's probability with that patch grey (``base - drop``)."""
    fill: int = 128

    def per_pixel(self) -> np.ndarray:
        """``(H, W)`` float32: for each input pixel, the mean drop over the patches covering it.

        Every pixel is covered by at least one patch, so there are no holes.

        >>> heat = result.per_pixel()          # doctest: +SKIP
        >>> heat.shape                         # doctest: +SKIP
        (150, 150)
        """
        height, width = self.input_hw
        total = np.zeros((height, width), np.float64)
        count = np.zeros((height, width), np.float64)
        for i, top in enumerate(self.tops):
            for j, left in enumerate(self.lefts):
                total[top : top + self.patch, left : left + self.patch] += self.drop[i, j]
                count[top : top + self.patch, left : left + self.patch] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)


def occlusion_sensitivity(
    model,
    image: np.ndarray,
    patch: int = 20,
    stride: int = 10,
    fill: int = 128,
    batch_size: int = 8,
) -> OcclusionMap:
    """Slide a ``patch`` x ``patch`` square of grey ``fill`` over ``image`` in steps of
    ``stride`` and record how much the predicted class's probability drops.

    ``image`` is one uint8 ``(H, W, C)`` photo at the model's input size (from
    :func:`featapp.prepare_image`). The occluded copies run through the model in batches
    of ``batch_size``, so memory stays bounded: the working memory grows with the batch, and
    larger batches were no faster (bench/results/arena_memory.md).

    >>> photo = prepare_image("dog.jpg", model)                              # doctest: +SKIP
    >>> occlusion_sensitivity(model, photo).drop.max()                       # doctest: +SKIP
    0.41
    """
    for name, value in (("patch", patch), ("stride", stride), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number of pixels, at least 1, not {value!r}")
    if not 0 <= fill <= 255:
        raise ValueError(f"fill must be a grey level from 0 to 255, not {fill!r}")
    photo = model.prepare(image)
    if len(photo) != 1:
        raise ValueError(f"expected one image, got {len(photo)}")
    photo = photo[0]
    height, width = photo.shape[:2]
    base = model.predict(photo[np.newaxis])
    class_index = int(base.indices[0])
    tops = patch_starts(height, patch, stride)
    lefts = patch_starts(width, patch, stride)
    positions = [(top, left) for top in tops for left in lefts]
    probabilities = np.empty(len(positions), np.float64)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        copies = np.repeat(photo[np.newaxis], len(chunk), axis=0)
        for copy, (top, left) in zip(copies, chunk, strict=True):
            copy[top : top + patch, left : left + patch] = fill
        probabilities[start : start + len(chunk)] = model.predict(copies, batch_size=len(chunk)).probabilities[
            :, class_index
        ]
    base_probability = float(base.probabilities[0, class_index])
    occluded = probabilities.reshape(len(tops), len(lefts))
    return OcclusionMap(
        drop=base_probability - occluded,
        patch=patch,
        stride=stride,
        class_index=class_index,
        class_name=base.class_names[class_index],
        base_probability=base_probability,
        tops=tuple(tops),
        lefts=tuple(lefts),
        input_hw=(height, width),
        occluded_probability=occluded,
        fill=int(fill),
    )
