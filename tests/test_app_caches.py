"""The app's shared caches (featapp/pages/shared.py), called directly: one copy of an image's
activations for every session, which no page can change, and pictures encoded once."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from featapp.appstate import CurrentImage
from featapp.images import prepare_image

# Outside `streamlit run` the caches still work, in memory; Streamlit says so once per cache.
logging.getLogger("streamlit.runtime.caching").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def shared():
    from featapp.pages import shared

    return shared


@pytest.fixture
def photo(model, cat_photo) -> CurrentImage:
    return CurrentImage.from_array(prepare_image(cat_photo, model.input_spec), "dataset", cat_photo.name)


def test_activations_are_computed_once_shared_and_read_only(shared, model, photo):
    first = shared.activations(model, photo)
    assert shared.activations(model, photo) is first  # every session reads the same arrays, no copy
    name = model.layers[0].name
    expected = model.activations(photo.array[np.newaxis])[name][0]
    np.testing.assert_array_equal(first[name], expected)
    with pytest.raises(ValueError, match="read-only"):
        first[name][0, 0, 0] = 1.0  # a page writing into the map would change it for every student
    with pytest.raises(TypeError):
        first["extra"] = expected  # type: ignore[index]
    np.testing.assert_array_equal(shared.activations(model, photo)[name], expected)


def test_a_picture_is_encoded_once_as_png_and_sized_for_its_place(shared):
    picture = np.random.default_rng(5).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    data = shared.picture_png(picture)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG"
    np.testing.assert_array_equal(np.asarray(decoded), picture)  # lossless
    assert shared.picture_png(picture.copy()) == data  # the same pixels are the same cached bytes
    other = picture.copy()
    other[0, 0, 0] ^= 1
    assert shared.picture_png(other) != data  # one changed pixel is another picture
    sized = Image.open(io.BytesIO(shared.picture_png(picture, 360)))
    assert sized.size == (360, 360)
