"""A big model's layers grouped into its blocks, from the layer names its source gave them.

A MobileNet or a ResNet has 100 to 300 layers: too many for one dropdown. Their builders
name every layer after the block it belongs to, so the block can be read off the name:

* Keras applications: ``block_3_expand`` -> ``block_3`` (MobileNetV2),
  ``conv2_block1_1_conv`` -> ``conv2_block1`` (ResNet, DenseNet), ``block2a_dwconv`` ->
  ``block2a`` (EfficientNet), ``expanded_conv_4_expand`` -> ``expanded_conv_4``
  (MobileNetV3), ``stem_conv`` -> ``stem``, ``mixed9_0`` -> ``mixed9`` (Inception);
* PyTorch module paths: ``layer1.0.conv1`` -> ``layer1.0`` (ResNet),
  ``features.3.conv.0.0`` -> ``features.3`` (MobileNetV2), ``features.2.0.block.1.0`` ->
  ``features.2.0`` (EfficientNet), ``Mixed_5b.branch1x1.conv`` -> ``Mixed_5b``.

Layers whose names say nothing (``conv1``, ``fc``, Keras' ``conv2d_5``) take the block of
the named layers around them when those agree, or the Inception module their run ends in
(Keras names a module's closing concatenation ``mixedN`` and leaves its branches
unnamed); the rest form groups of consecutive layers named after their first and last.

>>> [block.name for block in group_blocks(["conv1", "bn1", "layer1.0.conv1", "layer1.0.add", "fc"])]
['conv1 to bn1', 'layer1.0', 'fc']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Block", "block_of", "group_blocks", "RUN_LENGTH"]

RUN_LENGTH = 20
"""At most this many layers with no block in their names form one group."""

_KERAS_BLOCKS = (
    re.compile(r"^(?P<block>.*?block_?\d+[a-z]?)(?:_|$)"),
    re.compile(r"^(?P<block>expanded_conv(?:_\d+)?)(?:_|$)"),
    re.compile(r"^(?P<block>mixed\d+)(?:_|$)"),
    re.compile(r"^(?P<block>stem|top)(?:_|$)"),
)
_CLOSING = re.compile(r"^mixed\d+$")  # a block that ends with the layer named like it


@dataclass(frozen=True)
class Block:
    """Consecutive layers of one block: their names and their numbers in the model (from 1)."""

    name: str
    layers: tuple[str, ...]
    numbers: tuple[int, ...]

    @property
    def label(self) -> str:
        """The block as a picker shows it: ``block_3 (layers 28-36)``."""
        first, last = self.numbers[0], self.numbers[-1]
        return f"{self.name} (layer {first})" if first == last else f"{self.name} (layers {first}-{last})"


def block_of(name: str) -> str | None:
    """The block a layer's name puts it in, or ``None`` when the name does not say.

    >>> block_of("block_3_expand"), block_of("conv2_block1_1_conv"), block_of("layer1.0.conv1")
    ('block_3', 'conv2_block1', 'layer1.0')
    >>> block_of("features.3.conv.0.0"), block_of("features.2.0.block.1.0"), block_of("conv2d_5")
    ('features.3', 'features.2.0', None)
    """
    parts = name.split(".")
    if len(parts) > 1:
        numbered = next((i for i, part in enumerate(parts) if i > 0 and part.isdigit()), None)
        if numbered is not None:
            end = numbered + 1
            # A run of numbers goes on the path (features.2.0) while a name follows it.
            while end + 1 < len(parts) and parts[end].isdigit():
                end += 1
            if end == len(parts):  # the layer is the numbered module itself (features.0)
                end -= 1
            return ".".join(parts[:end])
    for pattern in _KERAS_BLOCKS:
        found = pattern.match(parts[0])
        if found:
            return found.group("block")
    return parts[0] if len(parts) > 1 else None


def group_blocks(names: Sequence[str], numbers: Sequence[int] | None = None) -> list[Block]:
    """``names`` (in model order) as consecutive blocks; ``numbers`` are their numbers in
    the model (by default 1, 2, ...), for the labels. A block whose layers are not all
    consecutive (a layer of another block in between) is split, and its parts keep the name.

    >>> [b.label for b in group_blocks(["conv2d", "mixed0_a", "conv2d_1", "mixed0", "conv2d_2", "mixed1"])]
    ['mixed0 (layers 1-4)', 'mixed1 (layers 5-6)']
    """
    numbers = list(numbers) if numbers is not None else list(range(1, len(names) + 1))
    if len(numbers) != len(names):
        raise ValueError(f"{len(numbers)} numbers for {len(names)} layers")
    blocks: list[str | None] = [block_of(name) for name in names]
    _fill_unnamed(blocks)
    groups: list[Block] = []
    start = 0
    while start < len(names):
        end = start + 1
        while end < len(names) and blocks[end] == blocks[start] and (blocks[start] or end - start < RUN_LENGTH):
            end += 1
        label = blocks[start] or (names[start] if end - start == 1 else f"{names[start]} to {names[end - 1]}")
        groups.append(Block(label, tuple(names[start:end]), tuple(numbers[start:end])))
        start = end
    return groups


def _fill_unnamed(blocks: list[str | None]) -> None:
    """Give runs of unnamed layers the block around them, or the closing block they end in."""
    index = 0
    while index < len(blocks):
        if blocks[index] is not None:
            index += 1
            continue
        end = index
        while end < len(blocks) and blocks[end] is None:
            end += 1
        before = blocks[index - 1] if index > 0 else None
        after = blocks[end] if end < len(blocks) else None
        if after is not None and (after == before or _CLOSING.match(after)):
            blocks[index:end] = [after] * (end - index)
        index = end
