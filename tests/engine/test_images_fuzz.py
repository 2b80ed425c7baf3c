"""Property: whatever the bytes, prepare_image gives a model-shaped uint8 array or an
ImageError, and nothing else (issue 3: "It never raises any other exception on any
input bytes").

Two streams of inputs, 1,000 examples each: arbitrary bytes (plain, and behind the
magic numbers of the formats we read, so the decoders are reached), and small valid
JPEG, PNG, GIF, WebP, BMP and TIFF files with bytes flipped, overwritten, inserted,
deleted or cut off, with most edits in the headers, where the sizes and modes live.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from featapp.engine.images import ImageError, InputSpec, prepare_image
from tests.helpers import imagefactory as factory

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")

SPECS = (InputSpec(150, 150, 3), InputSpec(20, 30, 1))
# FEATAPP_FUZZ_EXAMPLES raises the count for a longer campaign by hand; CI runs 1,000.
FUZZ = settings(
    max_examples=int(os.environ.get("FEATAPP_FUZZ_EXAMPLES", "1000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (12, 16, 4), dtype=np.uint8), "RGBA")
    palette = photo.convert("P")
    palette.info["transparency"] = 3
    upright = factory.asymmetric(32, 32)
    seeds = [
        factory.encode(photo, "JPEG", quality=80),
        factory.encode(photo, "JPEG", quality=80, progressive=True),
        factory.encode(photo.convert("L"), "JPEG"),
        factory.encode(photo.convert("CMYK"), "JPEG"),
        factory.jpeg_with_orientation(upright, 6, quality=70),
        factory.encode(photo, "PNG"),
        factory.encode(rgba, "PNG"),
        factory.encode(palette, "PNG"),
        factory.encode(photo.convert("LA"), "PNG"),
        factory.png(rng.integers(0, 65536, (8, 10, 3), dtype=np.uint16)),
        factory.png(rng.integers(0, 65536, (8, 10), dtype=np.uint16)),
        factory.animation("GIF", [(255, 0, 0), (0, 255, 0)], size=(12, 10)),
        factory.encode(palette, "GIF"),
        factory.animation("WEBP", [(255, 0, 0), (0, 255, 0)], size=(12, 10)),
        factory.encode(photo, "WEBP", quality=70),
        factory.encode(rgba, "WEBP", lossless=True),
        factory.animation("PNG", [(255, 0, 0), (0, 255, 0)], size=(12, 10)),
        factory.encode(photo, "BMP"),
        factory.encode(palette, "BMP"),
        factory.encode(photo, "TIFF"),
        factory.encode(photo, "TIFF", compression="tiff_lzw"),
        factory.encode(photo, "TIFF", compression="tiff_deflate"),
        factory.encode(Image.fromarray(rng.random((6, 7), dtype=np.float32)), "TIFF"),
        factory.encode(photo.convert("CMYK"), "TIFF"),
    ]
    return seeds


SEEDS = _seeds()
MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
]


def check(data: bytes, spec: InputSpec, center_crop: bool) -> None:
    try:
        array = prepare_image(data, spec, center_crop=center_crop)
    except ImageError as err:
        assert str(err), "an ImageError needs a message"
        event(f"ImageError: {' '.join(str(err).split()[:5])}")
        return
    event("array")
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (spec.height, spec.width, spec.channels)


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    edits = draw(st.integers(1, 6))
    for _ in range(edits):
        if not data:
            break
        # Half the edits land in bytes 8-63, just past the magic numbers: sizes, modes,
        # chunk lengths. Cuts are rarer, since one cut ends the interesting part.
        header = st.integers(min(8, len(data) - 1), min(63, len(data) - 1))
        at = draw(st.one_of(header, st.integers(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "flip", "set", "set", "insert", "delete", "cut", "big", "big"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "cut":
            del data[at:]
        else:  # a large number where a size might be
            data[at : at + 2] = draw(st.sampled_from([b"\xff\xff", b"\x7f\xff", b"\x00\x00", b"\x80\x00"]))
    return bytes(data)


@pytest.mark.slow
@FUZZ
@given(data=mutated_images(), spec=st.sampled_from(SPECS), center_crop=st.booleans())
def test_mutated_images_give_an_array_or_an_image_error(data, spec, center_crop):
    check(data, spec, center_crop)


@pytest.mark.slow
@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=512), st.builds(lambda m, b: m + b, st.sampled_from(MAGICS), st.binary(max_size=512))
    ),
    spec=st.sampled_from(SPECS),
    center_crop=st.booleans(),
)
def test_arbitrary_bytes_give_an_array_or_an_image_error(data, spec, center_crop):
    check(data, spec, center_crop)


def test_seeds_are_valid_images():
    """The mutations start from files that decode: otherwise the fuzzing proves little."""
    for data in SEEDS:
        Image.open(io.BytesIO(data)).load()
        for spec in SPECS:
            assert prepare_image(data, spec).shape == (spec.height, spec.width, spec.channels)
