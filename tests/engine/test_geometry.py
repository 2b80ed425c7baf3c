"""Receptive fields: hand-computed cases, an exhaustive dependency check on random
layer stacks, and the brute-force check on the real model in ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featapp.engine.geometry import (
    INPUT_FIELD,
    LayerGeometry,
    ReceptiveField,
    propagate,
    receptive_box,
    same_padding_before,
    step,
    union,
    whole_map,
)

# -- by hand -------------------------------------------------------------------------


def conv(kernel=3, stride=1, padding="valid", dilation=1) -> LayerGeometry:
    return LayerGeometry("conv", (kernel, kernel), (stride, stride), padding, dilation=(dilation, dilation))


def test_one_3x3_valid_convolution():
    (field,) = propagate([conv(3)], (150, 150))
    assert field == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    assert receptive_box(field, 0, 0, (150, 150)) == (0, 0, 3, 3)
    assert receptive_box(field, 5, 7, (150, 150)) == (5, 7, 8, 10)
    assert receptive_box(field, 147, 147, (150, 150)) == (147, 147, 150, 150)


def test_3x3_convolution_then_2x2_pooling():
    # size 3 + (2 - 1) * 1 = 4, jump 1 * 2 = 2, offset 1 + (1/2 - 0) * 1 = 1.5
    fields = propagate([conv(3), LayerGeometry("pool", (2, 2), (2, 2))], (150, 150))
    assert fields[1] == ReceptiveField((4, 4), (2, 2), (1.5, 1.5))
    assert receptive_box(fields[1], 0, 0, (150, 150)) == (0, 0, 4, 4)
    assert receptive_box(fields[1], 1, 2, (150, 150)) == (2, 4, 6, 8)
    assert receptive_box(fields[1], 73, 73, (150, 150)) == (146, 146, 150, 150)


def test_the_lecture_model_by_hand():
    """conv3-pool2 four times: sizes 3, 4, 8, 10, 18, 22, 38, 46; jumps 1, 2, 2, 4, 4, 8, 8, 16."""
    layers = []
    for _ in range(4):
        layers += [conv(3), LayerGeometry("pool", (2, 2), (2, 2))]
    fields = propagate(
        layers + [LayerGeometry("flatten", spatial=False), LayerGeometry("dense", spatial=False)], (150, 150)
    )
    assert [f.size[0] for f in fields[:8]] == [3, 4, 8, 10, 18, 22, 38, 46]
    assert [f.jump[0] for f in fields[:8]] == [1, 2, 2, 4, 4, 8, 8, 16]
    # offset = (size - 1) / 2 for valid layers: the first cell's box starts at pixel 0
    assert [f.offset[0] for f in fields[:8]] == [(s - 1) / 2 for s in [3, 4, 8, 10, 18, 22, 38, 46]]
    assert fields[8:] == [None, None]
    # The last 7x7 cell: centre 22.5 + 6 * 16 = 118.5, 46 wide: pixels 96..141.
    assert receptive_box(fields[7], 6, 6, (150, 150)) == (96, 96, 142, 142)


def test_same_padding_as_tensorflow_pads_it():
    # TensorFlow: out = ceil(n / s), total = max((out - 1) * s + k - n, 0), before = total // 2
    assert same_padding_before(150, 3, 1) == 1
    assert same_padding_before(7, 3, 2) == 1  # total 2
    assert same_padding_before(8, 3, 2) == 0  # total 1: the extra row goes after
    assert same_padding_before(10, 4, 1) == 1  # total 3
    assert same_padding_before(5, 1, 1) == 0


def test_same_padding_box_is_clipped_at_the_border():
    (field,) = propagate([conv(3, padding="same")], (150, 150))
    assert field == ReceptiveField((3, 3), (1, 1), (0.0, 0.0))
    assert receptive_box(field, 0, 0, (150, 150)) == (0, 0, 2, 2)
    assert receptive_box(field, 10, 20, (150, 150)) == (9, 19, 12, 22)
    assert receptive_box(field, 149, 149, (150, 150)) == (148, 148, 150, 150)


def test_strided_convolutions():
    (valid,) = propagate([conv(3, stride=2)], (7, 7))  # 3 outputs at 0..2, 2..4, 4..6
    assert valid == ReceptiveField((3, 3), (2, 2), (1.0, 1.0))
    assert [receptive_box(valid, i, i, (7, 7))[::2] for i in range(3)] == [(0, 3), (2, 5), (4, 7)]
    (same,) = propagate([conv(3, stride=2, padding="same")], (7, 7))  # 4 outputs, 1 row padded before
    assert same.offset == (0.0, 0.0)
    assert [receptive_box(same, i, i, (7, 7))[::2] for i in range(4)] == [(0, 2), (1, 4), (3, 6), (5, 7)]


def test_non_square_kernels_strides_and_inputs():
    layer = LayerGeometry("conv", (3, 5), (1, 2), "valid")
    (field,) = propagate([layer], (10, 20))
    assert field == ReceptiveField((3, 5), (1, 2), (1.0, 2.0))
    assert receptive_box(field, 2, 3, (10, 20)) == (2, 6, 5, 11)


def test_dilation_widens_the_kernel():
    (field,) = propagate([conv(3, dilation=2)], (20, 20))
    assert field == ReceptiveField((5, 5), (1, 1), (2.0, 2.0))


def test_layers_without_kernels_keep_the_field_and_flatten_ends_it():
    fields = propagate(
        [conv(3), LayerGeometry("relu"), LayerGeometry("flatten", spatial=False), LayerGeometry("relu")], (9, 9)
    )
    assert fields[0] == fields[1]
    assert fields[2] is None and fields[3] is None


def test_explicit_pads_replace_same_padding():
    # PyTorch's padding=1 on a stride-2 conv over 8 rows pads one row before; TensorFlow's
    # 'same' (the same 4 outputs) pads none before: the boxes differ by a row.
    (torch_like,) = propagate([LayerGeometry("conv", (3, 3), (2, 2), pads=(1, 1, 1, 1))], (8, 8))
    (tf_same,) = propagate([conv(3, stride=2, padding="same")], (8, 8))
    assert torch_like.offset == (0.0, 0.0) and tf_same.offset == (1.0, 1.0)
    assert receptive_box(torch_like, 1, 1, (8, 8)) == (1, 1, 4, 4)


def test_a_padding_layer_shifts_the_cells_and_a_crop_shifts_them_back():
    pad = LayerGeometry("pad", pads=(1, 0, 2, 3))
    field, extent = step(INPUT_FIELD, (5, 6), pad)
    assert (field, extent) == (ReceptiveField((1, 1), (1, 1), (-1.0, 0.0)), (8, 9))
    assert receptive_box(field, 0, 0, (5, 6)) == (0, 0, 0, 1)  # on padding: an empty box
    assert receptive_box(field, 1, 0, (5, 6)) == (0, 0, 1, 1)
    crop = LayerGeometry("crop", pads=(-1, 0, -2, -3))
    assert step(field, extent, crop) == (INPUT_FIELD, (5, 6))


def test_whole_map_is_one_cell_that_sees_every_cell():
    field, extent = step(INPUT_FIELD, (10, 12), conv(3))  # 8 x 10 cells, pixels 0..9 and 0..11
    everything = whole_map(field, extent)
    assert receptive_box(everything, 0, 0, (10, 12)) == (0, 0, 10, 12)


def test_union_of_equal_jumps_is_exact():
    # rows: a branch that sees pixels 0..2 and one that sees pixel 3 give 0..3 (cell 0)
    wide = ReceptiveField((3, 3), (2, 2), (1.0, 1.0))
    shifted = ReceptiveField((1, 1), (2, 2), (3.0, 1.0))
    merged = union([(wide, (4, 4)), (shifted, (4, 4))], (4, 4))
    assert merged == ReceptiveField((4, 3), (2, 2), (1.5, 1.0))
    assert receptive_box(merged, 1, 1, (20, 20)) == (2, 2, 6, 5)


def test_union_with_a_broadcast_gate_covers_the_gate_for_every_cell():
    cells = ReceptiveField((3, 3), (2, 2), (1.0, 1.0))  # 5 x 5 cells over pixels 0..10
    gate = whole_map(cells, (5, 5))
    merged = union([(cells, (5, 5)), (gate, (1, 1))], (5, 5))
    assert merged is not None and merged.jump == cells.jump and merged.offset == cells.offset
    assert all(receptive_box(merged, r, c, (11, 11)) == (0, 0, 11, 11) for r in range(5) for c in range(5))


def test_union_refuses_inputs_of_another_size():
    field = ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    assert union([(field, (4, 4)), (field, (3, 4))], (4, 4)) is None


field_strategy = st.builds(
    lambda size, jump, start, extent: (size, jump, start + (size - 1) / 2, extent),
    st.integers(1, 30),
    st.integers(1, 8),
    st.integers(-10, 10),
    st.sampled_from([1, 1, 6]),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(field_strategy, min_size=2, max_size=4), count=st.sampled_from([1, 6]))
def test_every_union_box_holds_its_inputs_boxes(parts, count):
    """For every cell: the merged box holds each input's box for that cell (cell 0 for a
    broadcast input); with one jump among full-size inputs it is exactly their bounding box."""
    inputs = [
        (ReceptiveField((size, size), (jump, jump), (offset, offset)), (extent, extent))
        for size, jump, offset, extent in parts
        if extent in (1, count)
    ]
    if len(inputs) < 2:
        return
    merged = union(inputs, (count, count))
    if merged is None:  # only broadcast inputs: nothing to place the cells by
        assert count > 1 and all(extent == (1, 1) for _, extent in inputs)
        return
    huge = (10_000, 10_000)
    shift = 1_000  # keep every box away from the clipping at 0

    def box(field, index):
        moved = ReceptiveField(field.size, field.jump, (field.offset[0] + shift, field.offset[1] + shift))
        return receptive_box(moved, index, index, huge)

    exact = count == 1 or len({field.jump for field, extent in inputs if extent[0] == count}) == 1
    exact = exact and all(extent[0] == count for _, extent in inputs)
    for index in range(count):
        got = box(merged, index)
        wanted = [box(field, index if extent[0] == count else 0) for field, extent in inputs]
        assert got[0] <= min(w[0] for w in wanted) and got[2] >= max(w[2] for w in wanted)
        if exact:
            assert (got[0], got[2]) == (min(w[0] for w in wanted), max(w[2] for w in wanted))


# -- exhaustive dependency check on random stacks ----------------------------------------


def depends(layers: list[tuple[int, int, str, int]], size: int, pixel: int) -> list[set[int]]:
    """Per layer, the output indices (along one axis) that depend on input ``pixel``,
    found by following every kernel tap, with TensorFlow's padding."""
    reach = {pixel}
    out: list[set[int]] = []
    for kernel, stride, padding, dilation in layers:
        span = (kernel - 1) * dilation + 1
        if padding == "same":
            count = math.ceil(size / stride)
            before = max((count - 1) * stride + span - size, 0) // 2
        else:
            count = (size - span) // stride + 1
            before = 0
        reach = {i for i in range(count) if any(i * stride - before + j * dilation in reach for j in range(kernel))}
        size = count
        out.append(reach)
    return out


layer_strategy = st.tuples(
    st.integers(1, 4), st.integers(1, 3), st.sampled_from(["valid", "same"]), st.sampled_from([1, 1, 1, 2])
)


@settings(max_examples=200, deadline=None)
@given(stack=st.lists(layer_strategy, min_size=1, max_size=4), size=st.integers(12, 40))
def test_boxes_match_brute_force_dependencies(stack, size):
    extents, extent = [], size
    for kernel, stride, padding, dilation in stack:
        extent = (
            math.ceil(extent / stride) if padding == "same" else (extent - (kernel - 1) * dilation - 1) // stride + 1
        )
        if extent < 1:
            return  # the stack eats the whole input: nothing to check
        extents.append(extent)
    geometry = [LayerGeometry("l", (k, k), (s, s), p, dilation=(d, d)) for k, s, p, d in stack]
    fields = propagate(geometry, (size, size))
    gapless = all(s <= (k - 1) * d + 1 and d == 1 for k, s, _, d in stack)
    all_valid = all(p == "valid" for _, _, p, _ in stack)
    reached = [depends(stack, size, pixel) for pixel in range(size)]
    for depth, field in enumerate(fields):
        for cell in range(extents[depth]):
            top, left, bottom, right = receptive_box(field, cell, cell, (size, size))
            assert (top, bottom) == (left, right)
            seen_by = [pixel for pixel in range(size) if cell in reached[pixel][depth]]
            if not seen_by:  # a dilated kernel can sit wholly on padding
                assert not all_valid
                continue
            # Every pixel the cell depends on is in its box, which is no wider than the field.
            assert top <= min(seen_by) and max(seen_by) < bottom
            assert bottom - top <= field.size[0]
            if gapless:
                # Without holes the box starts at the first pixel seen. At the far border it
                # may hold pixels that a strided 'valid' layer dropped before a 'same' layer
                # padded there: less than one jump of them.
                assert top == min(seen_by)
                assert bottom - (max(seen_by) + 1) < field.jump[0]
                if all_valid:
                    assert seen_by == list(range(top, bottom))


# -- the real model, brute force ------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(model, cat_photo) -> np.ndarray:
    return model.prepare([cat_photo])[0]


def spatial_layers(model):
    return [layer for layer in model.layers if layer.is_spatial]


def boxes_of(layer, hw) -> np.ndarray:
    """(rows, cols, 4) array of every cell's receptive box from the layer's metadata."""
    rows, cols = layer.output_shape[:2]
    return np.array([[receptive_box(layer.receptive_field, r, c, hw) for c in range(cols)] for r in range(rows)])


def test_metadata_fields_are_the_hand_computed_ones(model):
    sizes = [layer.receptive_field.size[0] for layer in spatial_layers(model)]
    assert sizes == [3, 4, 8, 10, 18, 22, 38, 46]
    assert [layer.receptive_field.jump[0] for layer in spatial_layers(model)] == [1, 2, 2, 4, 4, 8, 8, 16]
    assert all(layer.receptive_field is None for layer in model.layers if not layer.is_spatial)


@pytest.mark.slow
def test_one_pixel_changes_only_cells_whose_box_holds_it(model, photo):
    """Change one pixel of a real photo; every cell that changes, in every spatial layer,
    must have that pixel in its receptive box (and cells whose box holds no such pixel,
    like the 7x7 layer's for pixel (149, 149), must not change at all)."""
    hw = (model.input_spec.height, model.input_spec.width)
    pixels = [(0, 0), (0, 149), (75, 75), (149, 149), (40, 111), (1, 2), (143, 5)]
    batch = [photo]
    for row, col in pixels:
        changed = photo.copy()
        changed[row, col] = 255 - changed[row, col]
        batch.append(changed)
    layers = spatial_layers(model)
    acts = model.activations(np.stack(batch), layers=[layer.name for layer in layers])
    reachable, reached = 0, 0
    for layer in layers:
        boxes = boxes_of(layer, hw)
        maps = acts[layer.name]
        for index, (row, col) in enumerate(pixels, start=1):
            moved = (maps[index] != maps[0]).any(axis=0)  # any channel, per cell
            inside = (boxes[..., 0] <= row) & (row < boxes[..., 2]) & (boxes[..., 1] <= col) & (col < boxes[..., 3])
            assert not (moved & ~inside).any(), f"{layer.name}: pixel {(row, col)} changed cells outside their boxes"
            if inside.any():
                reachable += 1
                reached += bool(moved.any())
                if layer is layers[0]:  # 32 linear filters then ReLU: some channel must see the flip
                    assert moved.any(), f"{layer.name}: pixel {(row, col)} changed no cell at all"
    # Deeper down, a pixel that a cell can see need not change it: ReLU may keep it at 0 and
    # a max-pool may pick another input (this model's max_pooling2d_1 ignores the corner
    # pixel (149, 149)). Most must, or the check above would be vacuous.
    assert reached >= 0.8 * reachable, (reached, reachable)
    # Pixel (149, 149) is beyond the last 7x7 cell (its box ends at 141): no change there.
    last = acts[layers[-1].name]
    assert np.array_equal(last[pixels.index((149, 149)) + 1], last[0])


@pytest.mark.slow
def test_each_cells_box_is_exact_on_the_real_model(model, photo):
    """For cells of every spatial layer: noise everywhere outside the box never changes
    the cell; each edge of the box (a row or column of pixels on it) and, for the middle
    cell, each corner pixel can change it, so the box is no larger than needed."""
    hw = (model.input_spec.height, model.input_spec.width)
    rng = np.random.default_rng(0)
    for layer in spatial_layers(model):
        rows, cols = layer.output_shape[:2]
        batch, probes = [photo], []
        for row, col in [(0, 0), (rows // 2, cols // 3), (rows - 1, cols - 1)]:
            top, left, bottom, right = receptive_box(layer.receptive_field, row, col, hw)
            for seed in range(2):
                noisy = rng.integers(0, 256, photo.shape, dtype=np.uint8)
                noisy[top:bottom, left:right] = photo[top:bottom, left:right]
                batch.append(noisy)
                probes.append(("outside", row, col, seed))
            edges = {
                "top": (slice(top, top + 1), slice(left, right)),
                "bottom": (slice(bottom - 1, bottom), slice(left, right)),
                "left": (slice(top, bottom), slice(left, left + 1)),
                "right": (slice(top, bottom), slice(right - 1, right)),
            }
            for side, where in edges.items():
                changed = photo.copy()
                changed[where] = 255 - changed[where]
                batch.append(changed)
                probes.append((side, row, col, 0))
            if row == rows // 2:
                for corner in [(top, left), (top, right - 1), (bottom - 1, left), (bottom - 1, right - 1)]:
                    for value in (0, 255):
                        changed = photo.copy()
                        changed[corner] = value
                        batch.append(changed)
                        probes.append((f"corner {corner}", row, col, value))
        maps = model.activations(np.stack(batch), layers=[layer.name])[layer.name]
        corners_that_moved = set()
        for index, (probe, row, col, _) in enumerate(probes, start=1):
            moved = not np.array_equal(maps[index][:, row, col], maps[0][:, row, col])
            if probe == "outside":
                assert not moved, f"{layer.name} cell {(row, col)} changed when only pixels outside its box changed"
            elif probe.startswith("corner"):
                corners_that_moved |= {probe} if moved else set()
            else:
                assert moved, f"{layer.name} cell {(row, col)}: its {probe} edge never changes it (box too big?)"
        assert corners_that_moved, f"{layer.name}: no corner pixel of the middle cell's box changes it"
