"""featapp.app.appstate: the current image, uploads, class matching and captions (plain data, no Streamlit)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from featapp.app.appstate import UPLOAD_MAX_BYTES, CurrentImage, from_upload, get_current, image_key, set_current
from featapp.app.captions import describe_prediction, gallery_caption, match_classes
from featapp.engine.images import ImageError, InputSpec
from featapp.engine.metadata import LayerInfo, activation_bytes
from tests.helpers import imagefactory


def test_current_image_round_trip_and_key():
    state: dict = {}
    assert get_current(state) is None
    pixels = np.zeros((4, 5, 3), np.uint8)
    image = CurrentImage.from_array(pixels, "gallery", "cat.1.jpg", "cats")
    set_current(state, image)
    assert get_current(state) is image
    assert image.key == image_key(pixels) and len(image.key) == 24
    assert image.fits(InputSpec(4, 5, 3)) and not image.fits(InputSpec(5, 4, 3))
    assert not image.array.flags.writeable  # shared by every page: nobody may change it
    other = pixels.copy()
    other[0, 0, 0] = 1
    assert image_key(other) != image.key
    assert image_key(pixels.reshape(5, 4, 3)) != image.key  # same bytes, other shape


def test_upload_is_decoded_to_the_model_size():
    spec = InputSpec(30, 20, 1)
    data = imagefactory.encode(imagefactory.uniform("RGB", (64, 48), (255, 0, 0)), "PNG")
    image = from_upload(io.BytesIO(data), spec, name="red.png")
    assert image.array.shape == (30, 20, 1) and image.source == "upload" and image.title == "red.png"
    assert image.true_label is None
    assert int(image.array[0, 0, 0]) == 76  # ITU-R 601 luma of pure red


@pytest.mark.parametrize(
    "data, message",
    [
        (imagefactory.TEXT, "text file"),
        (imagefactory.HEIC, "HEIC"),
        (b"", "empty"),
        (imagefactory.png_declaring(30000, 30000), "megapixels"),
        (imagefactory.encode(imagefactory.uniform("RGB", (64, 48), (1, 2, 3)), "JPEG")[:200], "cut off|damaged"),
    ],
)
def test_bad_uploads_raise_image_error_with_a_message(data, message):
    with pytest.raises(ImageError, match=message):
        from_upload(io.BytesIO(data), InputSpec(150, 150, 3), name="x.jpg")


def test_upload_limit_is_the_server_limit():
    too_big = b"\xff\xd8" + bytes(UPLOAD_MAX_BYTES)
    with pytest.raises(ImageError, match="limit is 10 MB"):
        from_upload(io.BytesIO(too_big), InputSpec(150, 150, 3), name="huge.jpg")


def test_match_classes():
    assert match_classes(["cats", "dogs"], ["cat", "dog"]) == {"cats": 0, "dogs": 1}
    assert match_classes(["Dogs", "cats"], ["cat", "dog"]) == {"Dogs": 1, "cats": 0}
    assert match_classes(["a", "b"], ["cat", "dog"]) == {"a": 0, "b": 1}  # by order when counts agree
    assert match_classes(["a", "b", "c"], ["cat", "dog"]) is None


def test_captions_and_predictions_in_words():
    folders = {"cats": 0, "dogs": 1}
    assert gallery_caption("cats", np.array([0.8, 0.2]), ["cat", "dog"], folders) == ("cats · p(dog) 0.20", False)
    assert gallery_caption("cats", np.array([0.3, 0.7]), ["cat", "dog"], folders) == (
        ":red[**wrong**] · cats · p(dog) 0.70",
        True,
    )
    seen = gallery_caption("cats", np.array([0.8, 0.2]), ["cat", "dog"], folders, trained_on=True)
    assert seen == ("cats · p(dog) 0.20 · the model trained on this photo", False)
    assert gallery_caption("birds", np.array([0.3, 0.7]), ["cat", "dog"], folders)[1] is None
    three = gallery_caption("a", np.array([0.2, 0.5, 0.3]), ["x", "y", "z"], None)
    assert three == ("a · y 0.50", None)
    assert describe_prediction(np.array([0.9, 0.1]), ["cat", "dog"]) == "The model says **cat**: p(dog) = 0.10."


def test_activation_bytes_of_the_committed_model(model):
    expected = sum(4 * int(np.prod(layer.output_shape)) for layer in model.layers)
    assert activation_bytes(model.layers) == expected
    spec = model.input_spec
    one = model.activations(np.zeros((1, spec.height, spec.width, spec.channels), np.uint8))
    assert sum(v.nbytes for v in one.values()) == expected
    assert activation_bytes([LayerInfo("c", "Conv2D", (148, 148, 32))]) == 148 * 148 * 32 * 4


def test_activations_npz_holds_every_layer_and_the_pixels():
    from featapp.engine.activation_file import activations_npz

    image = CurrentImage.from_array(np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "probe", "x")
    layers = [LayerInfo("conv", "Conv2D", (2, 2, 2)), LayerInfo("dense", "Dense", (1,))]
    maps = {"conv": np.ones((1, 2, 2, 2), np.float32), "dense": np.array([[0.5]], np.float32)}
    loaded = np.load(io.BytesIO(activations_npz(layers, [image.title], image.array[None], maps)))
    assert set(loaded.files) == {"images", "files", "layer_names", "layer_kinds", "layer_shapes", "conv", "dense"}
    assert np.array_equal(loaded["images"][0], image.array) and np.array_equal(loaded["conv"], maps["conv"])
    assert loaded["layer_names"].tolist() == ["conv", "dense"] and loaded["files"].tolist() == ["x"]
    with pytest.raises(ValueError, match="reserves"):
        activations_npz([LayerInfo("images", "Dense", (1,))], ["x"], image.array[None], {"images": np.zeros((1, 1))})


def test_markdown_literal_escapes_what_markdown_and_streamlit_would_interpret() -> None:
    from featapp.app.captions import markdown_literal

    name = "cat *final* [v2] $5 :red[x] `code` # 1.png"
    escaped = markdown_literal(name)
    for special in "*[]$:`#.":
        assert f"\\{special}" in escaped
    # Removing the escapes gives the name back, so nothing is lost.
    assert escaped.replace("\\", "") == name
    assert markdown_literal("two\nlines") == "two lines"


def test_every_shared_session_key_is_in_the_views_table():
    """view.py's docstring is where a newcomer reads which session-state keys the pages share:
    every key constant it defines, and every "view.*" key any app module spells out, is there."""
    import re
    from pathlib import Path

    from featapp.app import view

    table = view.__doc__ or ""
    constants = {name: value for name, value in vars(view).items() if name.isupper() and isinstance(value, str)}
    keys = {value for value in constants.values() if re.fullmatch(r"(view|gallery|classes)\.[a-z_]+", value)}
    assert "view.layer" in keys and "view.channel" in keys
    missing = sorted(key for key in keys if f"``{key}``" not in table)
    assert missing == [], f"keys missing from view.py's table: {missing}"
    app = Path(view.__file__).parent
    spelled = {m for path in app.rglob("*.py") for m in re.findall(r'"(view\.[a-z_]+)', path.read_text())}
    assert spelled <= keys, f"view.* keys not defined in view.py: {sorted(spelled - keys)}"
