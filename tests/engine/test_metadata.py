"""featapp.engine.metadata: the JSON schema in the ONNX file, and receptive fields against hand-computed values.

Receptive fields follow the recurrence in featapp.engine.geometry: a layer with kernel k,
stride s and p pixels of padding before the first row maps (size, jump, offset) to
(size + (k-1)*jump, jump*s, offset + ((k-1)/2 - p)*jump). The expected values below
were worked out by hand with it (see the comments), not copied from the output.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from featapp.engine.geometry import ReceptiveField, receptive_box
from featapp.engine.images import InputSpec
from featapp.engine.metadata import (
    METADATA_KEY,
    SCHEMA_VERSION,
    LayerInfo,
    MetadataError,
    ModelSpec,
    with_receptive_fields,
)


def conv(name, shape, k=3, s=1, padding="valid", dilation=None):
    return LayerInfo(name, "Conv2D", shape, kernel=(k, k), stride=(s, s), padding=padding, dilation=dilation)


def pool(name, shape, k=2):
    return LayerInfo(name, "MaxPooling2D", shape, kernel=(k, k), stride=(k, k), padding="valid")


LECTURE = [
    conv("conv2d", (148, 148, 32)),
    pool("max_pooling2d", (74, 74, 32)),
    conv("conv2d_1", (72, 72, 64)),
    pool("max_pooling2d_1", (36, 36, 64)),
    conv("conv2d_2", (34, 34, 128)),
    pool("max_pooling2d_2", (17, 17, 128)),
    conv("conv2d_3", (15, 15, 128)),
    pool("max_pooling2d_3", (7, 7, 128)),
    LayerInfo("flatten", "Flatten", (6272,)),
    LayerInfo("dropout", "Dropout", (6272,)),
    LayerInfo("dense", "Dense", (512,), activation="relu"),
    LayerInfo("dense_1", "Dense", (1,), activation="sigmoid"),
]


def test_lecture_model_receptive_fields_by_hand():
    fields = {layer.name: layer.receptive_field for layer in with_receptive_fields(LECTURE, (150, 150))}
    # conv 3/1: size 1+2*1=3, offset 0+1*1=1, jump 1
    assert fields["conv2d"] == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    # pool 2/2: size 3+1*1=4, offset 1+0.5*1=1.5, jump 2
    assert fields["max_pooling2d"] == ReceptiveField((4, 4), (2, 2), (1.5, 1.5))
    # conv: size 4+2*2=8, offset 1.5+1*2=3.5
    assert fields["conv2d_1"] == ReceptiveField((8, 8), (2, 2), (3.5, 3.5))
    # pool: 8+1*2=10, offset 3.5+0.5*2=4.5, jump 4; conv: 10+2*4=18, 4.5+4=8.5
    assert fields["conv2d_2"] == ReceptiveField((18, 18), (4, 4), (8.5, 8.5))
    # pool: 18+4=22, 8.5+2=10.5, jump 8; conv: 22+16=38, 10.5+8=18.5; pool: 38+8=46, 18.5+4=22.5, jump 16
    assert fields["max_pooling2d_3"] == ReceptiveField((46, 46), (16, 16), (22.5, 22.5))
    assert fields["flatten"] is None and fields["dense_1"] is None


def test_same_padding_stride_two_on_a_non_square_input():
    layers = [
        conv("s2", (32, 24, 4), k=5, s=2, padding="same"),
        conv("same", (32, 24, 4), k=3, padding="same"),
        pool("pool", (16, 12, 4)),
    ]
    fields = [layer.receptive_field for layer in with_receptive_fields(layers, (64, 48))]
    # 64 rows, k5 s2 same: 32 out, total pad (31*2+5-64)=3, 1 before -> offset (2-1)*1=1
    # 48 cols: 24 out, total pad (23*2+5-48)=3, 1 before -> the same
    assert fields[0] == ReceptiveField((5, 5), (2, 2), (1.0, 1.0))
    # k3 s1 same on 32: 1 pixel before -> offset unchanged, size 5+2*2=9
    assert fields[1] == ReceptiveField((9, 9), (2, 2), (1.0, 1.0))
    # pool: size 9+1*2=11, offset 1+0.5*2=2, jump 4
    assert fields[2] == ReceptiveField((11, 11), (4, 4), (2.0, 2.0))


def test_dilation_widens_the_kernel():
    (layer,) = with_receptive_fields([conv("d", (6, 6, 1), k=3, dilation=(2, 2))], (10, 10))
    # effective kernel (3-1)*2+1 = 5: size 5, offset 2
    assert layer.receptive_field == ReceptiveField((5, 5), (1, 1), (2.0, 2.0))


def test_a_merge_sees_the_union_of_its_inputs():
    layers = [
        conv("c1", (8, 8, 4)),
        LayerInfo("shift", "ZeroPadding2D", (8, 8, 4), pads=(-1, -1, 1, 1)),  # one row and column later
        LayerInfo("add", "Add", (8, 8, 4)),
        LayerInfo("add_input", "Add", (8, 8, 4)),
    ]
    inputs = [[None], [0], [0, 1], [0, 0]]
    fields = [layer.receptive_field for layer in with_receptive_fields(layers, (10, 10), inputs=inputs)]
    # c1's cell 0 sees pixels 0..2, shift's 1..3: the Add's sees 0..3
    assert fields[0] == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    assert fields[1] == ReceptiveField((3, 3), (1, 1), (2.0, 2.0))
    assert fields[2] == ReceptiveField((4, 4), (1, 1), (1.5, 1.5))
    assert fields[3] == fields[0]


def test_a_squeeze_and_excitation_gate_makes_every_cell_see_the_whole_map():
    layers = [
        conv("c1", (8, 8, 4)),  # pixels 0..9
        LayerInfo("squeeze", "GlobalAveragePooling2D", (4,)),
        LayerInfo("squeeze_map", "Reshape", (1, 1, 4)),
        conv("gate", (1, 1, 4), k=1),
        LayerInfo("scaled", "Multiply", (8, 8, 4)),
        LayerInfo("keepdims", "GlobalAveragePooling2D", (1, 1, 4)),
    ]
    inputs = [[None], [0], [1], [2], [0, 3], [4]]
    fields = {layer.name: layer.receptive_field for layer in with_receptive_fields(layers, (10, 10), inputs=inputs)}
    assert fields["squeeze"] is None  # a vector has no map to place
    assert receptive_box(fields["gate"], 0, 0, (10, 10)) == (0, 0, 10, 10)
    scaled = fields["scaled"]
    assert scaled.jump == (1, 1) and scaled.offset == (1.0, 1.0)  # the map's cells, where they were
    assert {receptive_box(scaled, r, c, (10, 10)) for r in range(8) for c in range(8)} == {(0, 0, 10, 10)}
    assert receptive_box(fields["keepdims"], 0, 0, (10, 10)) == (0, 0, 10, 10)


def test_inputs_are_recorded_and_read_back():
    layers = [conv("c1", (8, 8, 4)), conv("c2", (8, 8, 4), padding="same"), LayerInfo("add", "Add", (8, 8, 4))]
    described = with_receptive_fields(layers, (10, 10), inputs=[[None], [0], [0, 1]])
    assert [layer.inputs for layer in described] == [(None,), ("c1",), ("c1", "c2")]
    # The recorded inputs are the graph from then on: the same fields without being told.
    assert with_receptive_fields(described, (10, 10)) == described
    # A file from before inputs were recorded reads as a plain stack (the Add reads c2 alone).
    old = [dataclasses.replace(layer, inputs=None) for layer in described]
    assert [layer.inputs for layer in with_receptive_fields(old, (10, 10))] == [(None,), ("c1",), ("c2",)]


def test_pads_that_do_not_give_the_maps_size_end_the_receptive_fields():
    layers = [conv("c1", (8, 8, 4)), LayerInfo("pad", "ZeroPadding2D", (9, 9, 4), pads=(1, 1, 1, 1))]
    assert with_receptive_fields(layers, (10, 10))[1].receptive_field is None


def test_layers_whose_geometry_is_unknown_end_the_receptive_fields():
    layers = [
        conv("c1", (8, 8, 4)),
        LayerInfo("upsample", "UpSampling2D", (16, 16, 4)),  # no kernel, size changed
        conv("after", (14, 14, 4)),
    ]
    fields = [layer.receptive_field for layer in with_receptive_fields(layers, (10, 10))]
    assert fields[0] is not None and fields[1] is None and fields[2] is None

    same_size = [conv("c1", (8, 8, 4)), LayerInfo("shift", "Custom", (8, 8, 4)), conv("after", (6, 6, 4))]
    fields = [layer.receptive_field for layer in with_receptive_fields(same_size, (10, 10), opaque={"shift"})]
    assert fields == [fields[0], None, None] and fields[0] is not None

    elementwise = [conv("c1", (8, 8, 4)), LayerInfo("bn", "BatchNormalization", (8, 8, 4))]
    fields = [layer.receptive_field for layer in with_receptive_fields(elementwise, (10, 10))]
    assert fields[1] == fields[0]


def test_bad_graph_descriptions_are_refused():
    layers = [conv("c1", (8, 8, 4)), conv("c2", (6, 6, 4))]
    with pytest.raises(ValueError, match="inputs given for 1 layers"):
        with_receptive_fields(layers, (10, 10), inputs=[[None]])
    with pytest.raises(ValueError, match="must read earlier layers"):
        with_receptive_fields(layers, (10, 10), inputs=[[1], [0]])


def _spec(**changes) -> ModelSpec:
    layers = with_receptive_fields(
        [conv("c1", (8, 6, 2), dilation=(1, 1)), LayerInfo("flat", "Flatten", (96,)), LayerInfo("p", "Dense", (1,))],
        (10, 8),
    )
    values = dict(
        input=InputSpec(10, 8, 1),
        layers=layers,
        input_scale=2 / 255,
        input_offset=-1.0,
        output_activation="sigmoid",
        class_names=("no", "yes"),
        source_file="m.keras",
        source_sha256="ab" * 32,
        versions={"keras": "3.15.1"},
        extra={"epoch": 5, "val_accuracy": 0.75, "is_best": True, "trunk": False},
    )
    values.update(changes)
    return ModelSpec(**values)


def test_round_trip_keeps_everything():
    spec = _spec()
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.layers[0].receptive_field == ReceptiveField((3, 3), (1, 1), (1.0, 1.0))
    assert again.layers[0].dilation == (1, 1)
    assert again.extra["epoch"] == 5 and again.has_classifier
    assert json.loads(spec.to_json())["schema"] == SCHEMA_VERSION
    assert METADATA_KEY == "featapp"


def test_files_written_before_dilation_existed_still_read():
    data = json.loads(_spec().to_json())
    for row in data["layers"]:
        del row["dilation"]
    assert ModelSpec.from_json(json.dumps(data)).layers[0].dilation is None


def test_pads_and_inputs_round_trip_and_files_without_them_still_read():
    padded = LayerInfo("pad", "ZeroPadding2D", (10, 8, 1), pads=(1, 0, 1, 0))
    layers = with_receptive_fields([padded, conv("c1", (8, 6, 2))], (8, 8))
    spec = _spec(layers=layers, input=InputSpec(8, 8, 1), output_activation=None, class_names=())
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.layers[0].pads == (1, 0, 1, 0) and again.layers[1].inputs == ("pad",)
    data = json.loads(spec.to_json())
    for row in data["layers"]:
        del row["pads"], row["inputs"]
    old = ModelSpec.from_json(json.dumps(data))
    assert [(layer.pads, layer.inputs) for layer in old.layers] == [(None, None), (None, None)]
    assert old.layers[1].receptive_field == spec.layers[1].receptive_field  # stored, not recomputed


def test_a_trunk_has_no_classifier():
    trunk = _spec(layers=_spec().layers[:1], output_activation=None, class_names=())
    assert not ModelSpec.from_json(trunk.to_json()).has_classifier


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d.update(schema=99), "schema 99 is not the supported"),
        (lambda d: d.pop("layers"), "damaged"),
        (lambda d: d["layers"][0].update(output_shape="wide"), "damaged"),
        (lambda d: d["input"].update(channels=4), "damaged"),
        (lambda d: d["layers"][0].update(pads=[1, 2]), "damaged"),
        (lambda d: d["layers"][0].update(inputs="c0"), "damaged"),
    ],
)
def test_damaged_metadata_is_refused_with_a_message(damage, message):
    data = json.loads(_spec().to_json())
    damage(data)
    with pytest.raises(MetadataError, match=message):
        ModelSpec.from_json(json.dumps(data))
    with pytest.raises(MetadataError, match="damaged"):
        ModelSpec.from_json("{not json")
