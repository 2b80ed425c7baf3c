"""prepare_image: every mode and every failure, on images made in code (tests/helpers/imagefactory.py).

Each case ends in a correct array (shape, dtype and, where they can be worked out by
hand, pixel values) or in an ImageError whose message names the problem.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featapp.engine.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    TRANSPARENCY_BACKGROUND,
    ImageError,
    InputSpec,
    prepare_image,
)
from tests.helpers import imagefactory as factory

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = InputSpec(150, 150, 3)
GRAY = InputSpec(150, 150, 1)


def prepared(source, spec: InputSpec = SPEC, **options) -> np.ndarray:
    array = prepare_image(source, spec, **options)
    assert array.dtype == np.uint8
    assert array.shape == (spec.height, spec.width, spec.channels)
    assert array.flags.writeable and array.flags.c_contiguous
    return array


def refused(source, *words: str, spec: InputSpec = SPEC, **options) -> str:
    """Assert ``source`` is refused with an ImageError that mentions every word."""
    with pytest.raises(ImageError) as caught:
        prepare_image(source, spec, **options)
    message = str(caught.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert "Traceback" not in message and len(message) < 300
    return message


def only_colour(array: np.ndarray) -> tuple[int, ...]:
    """The single colour of a uniform array (fails when the array is not uniform)."""
    colours = np.unique(array.reshape(-1, array.shape[-1]), axis=0)
    assert len(colours) == 1, f"expected one colour, found {len(colours)}: {colours[:5].tolist()}"
    return tuple(int(v) for v in colours[0])


# -- files that are not pictures -------------------------------------------------------


def test_zero_bytes_is_refused_as_empty():
    refused(b"", "empty", "0 bytes")


def test_zero_byte_file_on_disk_is_refused_as_empty(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    refused(path, "empty")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (factory.HTML, ["web page", "HTML", "JPEG"]),
        (factory.TEXT, ["text file"]),
        (b"\xef\xbb\xbf<!doctype html><html></html>", ["web page"]),
        (factory.SVG, ["SVG", "vector"]),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', ["SVG"]),
        (factory.HEIC, ["HEIC", "iPhone"]),
        (b"\x00\x00\x00\x1cftypavif" + bytes(100), ["AVIF"]),
        (b"\x00\x00\x00\x18ftypisom" + bytes(100), ["video"]),
        (b"%PDF-1.7\n" + bytes(100), ["PDF"]),
        (b"PK\x03\x04" + bytes(100), ["ZIP"]),
        (bytes(range(256)) * 4, ["not an image"]),
    ],
    ids=["html", "text", "html-bom", "svg", "svg-no-xml", "heic", "avif", "mp4", "pdf", "zip", "binary"],
)
def test_files_that_are_not_photos_are_refused_by_name(tmp_path, data, words):
    refused(data, *words)
    # The same with an image extension on disk: the name does not matter, the bytes do.
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    refused(path, *words)


# -- damaged and oversized files -------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return factory.encode(Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)), "JPEG", quality=90)


@pytest.mark.parametrize("fraction", [0.002, 0.02, 0.1, 0.5, 0.9, 0.999])
def test_truncated_jpeg_is_refused_as_cut_off(noisy_jpeg, fraction):
    cut = max(4, int(len(noisy_jpeg) * fraction))
    refused(noisy_jpeg[:cut], "JPEG", "cut off", "truncated")


def test_jpeg_cut_in_its_first_bytes_is_refused(noisy_jpeg):
    refused(noisy_jpeg[:3], "JPEG", "damaged")
    refused(noisy_jpeg[:1], "not an image")


def test_truncated_png_is_refused_as_cut_off():
    data = factory.png(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    refused(data[: len(data) // 2], "PNG", "truncated")


def test_png_declaring_30000_by_30000_is_refused_with_its_size():
    data = factory.png_declaring(30000, 30000)
    assert len(data) < 5000
    refused(data, "900 megapixels", "limit is 40 megapixels")


def test_png_over_the_pixel_limit_is_refused_with_its_size():
    refused(factory.png_stream(9000, 9000), "9000 x 9000", "81 megapixels", "40 megapixels")


def test_pixel_limit_is_a_parameter():
    data = factory.encode(Image.new("RGB", (100, 100)), "PNG")
    refused(data, "100 x 100", spec=SPEC, max_pixels=5000)
    prepared(data, max_pixels=10_000)


def test_file_over_the_byte_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.jpg"
    with path.open("wb") as handle:  # a sparse file: big on paper, nothing to read
        handle.truncate(DEFAULT_MAX_BYTES + 1)
    refused(path, "MB", "limit is 20 MB")
    refused(b"\xff\xd8\xff" + bytes(DEFAULT_MAX_BYTES), "limit is 20 MB")
    small = factory.encode(Image.new("RGB", (64, 64), (9, 9, 9)), "PNG")
    refused(small, "limit", max_bytes=len(small) - 1)
    assert only_colour(prepared(small, max_bytes=len(small))) == (9, 9, 9)


def test_oversized_stream_is_not_read_to_the_end():
    class Endless(io.RawIOBase):
        """A stream that never ends, like a pipe fed by a hostile client."""

        def __init__(self) -> None:
            self.served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            buffer[:] = b"\xff" * len(buffer)
            self.served += len(buffer)
            return len(buffer)

    stream = Endless()
    refused(stream, "limit", max_bytes=1000)
    assert stream.served <= 1001


def _peak_rss_of(snippet: str, *argv: str, env: dict[str, str] | None = None) -> dict:
    """Run ``snippet`` in a fresh Python and return how much its peak RSS grew.

    The snippet gets ``data`` (bytes built before the baseline is taken) and must set
    ``outcome``; ``argv`` become its ``sys.argv[1:]``; ``env`` is added to its environment.
    The peak is Linux's VmHWM, the high-water mark of this process's own
    memory, so any allocation during the decode shows up even if it is freed at once.
    Not ru_maxrss: Linux carries it over from the parent through fork and exec, so a
    child of a big pytest process would start at the parent's peak and never grow.
    """
    setup, body = (textwrap.dedent(part).strip() for part in snippet.split("---\n"))
    code = "\n".join(
        [
            "import json, resource, sys",
            f"sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / 'tests' / 'helpers')!r}]",
            "import numpy, PIL.Image, imagefactory",
            "from featapp.engine.images import ImageError, InputSpec, prepare_image",
            setup,
            "def peak_mb():",
            "    try:",
            "        with open('/proc/self/status') as status:",
            "            return next(int(l.split()[1]) / 1024 for l in status if l.startswith('VmHWM:'))",
            "    except (OSError, StopIteration):",
            "        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
            "        return value / 2**20 if sys.platform == 'darwin' else value / 1024",
            "before = peak_mb()",
            body,
            "print(json.dumps({'grew_mb': peak_mb() - before, 'outcome': outcome}))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="uses the resource module")
def test_9000_by_9000_png_is_refused_before_decoding():
    """The issue's bomb: a small PNG that decodes to 81 megapixels (243 MB as RGB)."""
    result = _peak_rss_of(
        """
        data = imagefactory.png_stream(9000, 9000, bands=3)
        assert len(data) < 300_000
        ---
        try:
            prepare_image(data, InputSpec(150, 150, 3))
            outcome = "accepted"
        except ImageError as err:
            outcome = str(err)
        """
    )
    assert "81 megapixels" in result["outcome"]
    assert result["grew_mb"] < 100, result


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="uses the resource module")
def test_peak_rss_measurement_sees_a_naive_decode():
    """Control for the test above: the same bytes decoded naively do grow the peak,
    so a bounded peak there is evidence, not an insensitive probe."""
    result = _peak_rss_of(
        """
        import io
        data = imagefactory.png_stream(9000, 9000, bands=3)
        ---
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
        outcome = image.size
        """
    )
    assert result["grew_mb"] > 200, result


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="uses the resource module")
def test_largest_accepted_png_costs_little_more_than_its_pixels():
    """A 36-megapixel RGB PNG is accepted; decoding needs its 108 MB of pixels, and the
    early shrink keeps every later step small (the first version peaked at 2.6x)."""
    result = _peak_rss_of(
        """
        data = imagefactory.png_stream(6000, 6000, bands=3, row=[10, 20, 30] * 6000)
        ---
        array = prepare_image(data, InputSpec(150, 150, 3))
        outcome = [int(v) for v in numpy.unique(array.reshape(-1, 3), axis=0)[0]]
        """
    )
    assert result["outcome"] == [10, 20, 30]
    assert result["grew_mb"] < 108 * 1.5, result


# -- modes ----------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels():
    array = prepared(factory.encode(factory.uniform("L", (80, 60), 77), "PNG"))
    assert only_colour(array) == (77, 77, 77)


def test_grayscale_jpeg_becomes_three_equal_channels():
    grey = factory.noisy(96, 64)[:, :, 0]
    data = factory.encode(Image.fromarray(grey), "JPEG", quality=90)
    assert Image.open(io.BytesIO(data)).mode == "L"
    array = prepare_image(data, InputSpec(64, 96, 3))  # the photo's own size: no resize
    assert (array[:, :, 0] == array[:, :, 1]).all() and (array[:, :, 1] == array[:, :, 2]).all()
    assert np.abs(array[:, :, 0].astype(int) - grey).mean() < 20  # noise through JPEG at quality 90


def test_colour_to_grayscale_model_uses_luma():
    # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B = 0.299 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2
    array = prepared(factory.encode(factory.uniform("RGB", (40, 30), (200, 100, 50)), "PNG"), GRAY)
    assert only_colour(array) == (124,)


def test_bilevel_image():
    image = Image.new("1", (30, 20), 1)
    assert only_colour(prepared(factory.encode(image, "PNG"))) == (255, 255, 255)


@pytest.mark.parametrize("value", [0, 100, 255])
def test_16_bit_grayscale_png_is_scaled_to_8_bits(value):
    data = factory.png(np.full((40, 50), 257 * value, dtype=np.uint16))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert only_colour(prepared(data)) == (value,) * 3


def test_16_bit_grayscale_png_keeps_its_gradient():
    ramp = np.tile((np.arange(256, dtype=np.uint16) * 257)[np.newaxis, :], (4, 1))  # 0..65535
    array = prepare_image(factory.png(ramp), InputSpec(4, 256, 1))
    np.testing.assert_array_equal(array[0, :, 0], np.arange(256))


def test_16_bit_rgb_png():
    pixels = np.zeros((30, 40, 3), dtype=np.uint16)
    pixels[...] = (257 * 10, 257 * 128, 65535)
    assert only_colour(prepared(factory.png(pixels))) == (10, 128, 255)


def test_16_bit_rgba_png_is_composited():
    pixels = np.zeros((30, 40, 4), dtype=np.uint16)
    pixels[...] = (65535, 0, 0, 0)  # fully transparent red
    assert only_colour(prepared(factory.png(pixels))) == TRANSPARENCY_BACKGROUND


def test_cmyk_jpeg():
    image = factory.uniform("CMYK", (48, 32), (0, 255, 255, 0))  # full magenta + yellow = red
    data = factory.encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    red, green, blue = only_colour(prepared(data))
    assert red >= 250 and green <= 5 and blue <= 5


def test_rgba_png_is_composited_on_white():
    # By hand: out = colour * a + 255 * (1 - a) with a = 128 / 255:
    # R = 200 * 0.502 + 127 = 227.4, G = 100 * 0.502 + 127 = 177.2, B = 0 + 127 = 127
    data = factory.encode(factory.uniform("RGBA", (64, 48), (200, 100, 0, 128)), "PNG")
    assert only_colour(prepared(data)) == (227, 177, 127)
    assert only_colour(prepared(data, GRAY)) == (round(0.299 * 227 + 0.587 * 177 + 0.114 * 127),)


def test_rgba_png_opaque_and_transparent_pixels():
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (10, 20, 30, 255)  # opaque: unchanged
    pixels[0, 1] = (10, 20, 30, 0)  # transparent: the background
    pixels[1, 0] = (0, 0, 0, 255)
    pixels[1, 1] = (255, 0, 0, 0)
    array = prepare_image(factory.png(pixels), InputSpec(2, 2, 3))
    assert array[0, 0].tolist() == [10, 20, 30]
    assert array[0, 1].tolist() == list(TRANSPARENCY_BACKGROUND)
    assert array[1, 0].tolist() == [0, 0, 0]
    assert array[1, 1].tolist() == list(TRANSPARENCY_BACKGROUND)


def test_la_png_is_composited_on_white():
    # 100 * 128/255 + 255 * 127/255 = 50.2 + 127 = 177.2
    data = factory.encode(factory.uniform("LA", (64, 48), (100, 128)), "PNG")
    assert only_colour(prepared(data)) == (177, 177, 177)
    assert only_colour(prepared(data, GRAY)) == (177,)


def test_palette_png_with_transparency():
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 255, 200, 100, 0] + [0] * 762)
    image.paste(1, (2, 0, 4, 2))  # right half: palette entry 1
    image.info["transparency"] = 0  # entry 0 (the left half) is transparent
    data = factory.encode(image, "PNG")
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "P" and "transparency" in reopened.info
    array = prepare_image(data, InputSpec(2, 4, 3))
    assert array[:, :2].reshape(-1, 3).tolist() == [list(TRANSPARENCY_BACKGROUND)] * 4
    assert array[:, 2:].reshape(-1, 3).tolist() == [[200, 100, 0]] * 4


def test_palette_png_with_partial_alpha():
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 100, 0] + [0] * 762)
    image.info["transparency"] = bytes([255, 128])  # entry 1 is half transparent
    assert only_colour(prepared(factory.encode(image, "PNG"))) == (227, 177, 127)


def test_grayscale_png_with_transparent_grey_level():
    image = Image.new("L", (8, 8), 7)
    data = factory.encode(image, "PNG", transparency=7)
    assert only_colour(prepared(data)) == TRANSPARENCY_BACKGROUND


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.full((6, 8), 257 * 50, np.int32), 50),  # I: 0..65535 scale, like 16-bit
        (np.full((6, 8), 10**9, np.int32), 255),  # clipped
        (np.full((6, 8), -5, np.int32), 0),
    ],
    ids=["I-mid", "I-huge", "I-negative"],
)
def test_32_bit_integer_mode(values, expected):
    image = Image.fromarray(values)
    assert image.mode == "I"
    assert only_colour(prepared(image)) == (expected,) * 3
    assert only_colour(prepared(factory.encode(image, "TIFF"))) == (expected,) * 3


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.full((6, 8), 0.5, np.float32), 128),  # at most 1: read as 0..1 (0.5 * 255 = 127.5)
        (np.full((6, 8), 100.0, np.float32), 100),  # above 1: read as 0..255
        (np.full((6, 8), 1e9, np.float32), 255),
        (np.full((6, 8), np.nan, np.float32), 0),
    ],
    ids=["F-unit", "F-255", "F-huge", "F-nan"],
)
def test_float_mode(values, expected):
    image = Image.fromarray(values)
    assert image.mode == "F"
    assert only_colour(prepared(image)) == (expected,) * 3


def test_float_mode_with_nan_and_infinity_next_to_values():
    values = np.array([[0.0, 0.25, 1.0, np.nan, np.inf, -np.inf]], np.float32)
    array = prepare_image(Image.fromarray(values), InputSpec(1, 6, 1))
    assert array[0, :, 0].tolist() == [0, 64, 255, 0, 255, 0]


# -- animations: the first frame ---------------------------------------------------------

FRAMES = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_gives_its_first_frame(fmt):
    data = factory.animation(fmt, FRAMES)
    opened = Image.open(io.BytesIO(data))
    assert opened.n_frames == 3 and opened.is_animated
    red, green, blue = only_colour(prepared(data))
    assert red >= 245 and green <= 5 and blue <= 5


def test_animation_given_as_pillow_image_on_a_later_frame():
    image = Image.open(io.BytesIO(factory.animation("GIF", FRAMES)))
    image.seek(2)
    red, green, blue = only_colour(prepared(image))
    assert red >= 245 and green <= 5 and blue <= 5
    assert image.tell() == 2  # the caller's image is left where it was


def test_multi_page_tiff_gives_its_first_page():
    pages = [factory.uniform("RGB", (20, 20), colour) for colour in FRAMES]
    data = factory.encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert only_colour(prepared(data)) == FRAMES[0]


# -- orientation --------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_phone_jpeg_is_turned_upright(orientation):
    upright = factory.asymmetric(64, 48)
    data = factory.jpeg_with_orientation(upright, orientation)
    stored = Image.open(io.BytesIO(data))
    assert stored.getexif()[0x0112] == orientation
    assert stored.size == ((64, 48) if orientation <= 4 else (48, 64))
    array = prepare_image(data, InputSpec(48, 64, 3))  # exactly the upright size: no resize
    assert np.abs(array.astype(int) - upright).mean() < 3
    for row, col in ((12, 16), (12, 48), (36, 16), (36, 48)):  # one pixel inside each quarter
        assert np.abs(array[row, col].astype(int) - upright[row, col]).max() < 12


def test_orientation_in_a_png_exif_chunk():
    upright = factory.asymmetric(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = factory.encode(Image.fromarray(factory.upright_to_stored(upright, 6)), "PNG", exif=exif.tobytes())
    np.testing.assert_array_equal(prepare_image(data, InputSpec(48, 64, 3)), upright)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_damaged_exif_is_ignored_not_fatal():
    image = factory.uniform("RGB", (32, 32), (40, 50, 60))
    data = bytearray(factory.encode(image, "JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff garbage"))
    red, green, blue = only_colour(prepared(bytes(data)))
    assert abs(red - 40) <= 2 and abs(green - 50) <= 2 and abs(blue - 60) <= 2


def test_out_of_range_orientation_is_ignored():
    upright = factory.asymmetric(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 9
    data = factory.encode(Image.fromarray(upright), "PNG", exif=exif.tobytes())
    np.testing.assert_array_equal(prepare_image(data, InputSpec(48, 64, 3)), upright)


# -- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (10000, 40), (40, 10000), (150, 150), (3, 7)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_extreme_sizes(size, fmt):
    data = factory.encode(
        factory.uniform("RGB", size, (30, 120, 210)), fmt, **({"quality": 95} if fmt == "JPEG" else {})
    )
    array = prepared(data)
    assert np.abs(array.astype(int) - (30, 120, 210)).max() <= 3


def test_thin_image_keeps_its_stripes_when_stretched():
    pixels = np.zeros((40, 10000, 3), np.uint8)
    pixels[:20] = 255  # top half white, bottom half black
    array = prepared(factory.png(pixels))
    assert (array[:70] == 255).all() and (array[80:] == 0).all()


def test_center_crop_cuts_the_middle_square():
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255  # only the middle third is white
    photo = factory.png(pixels)
    assert (prepared(photo, center_crop=True) == 255).all()
    stretched = prepared(photo)
    assert (stretched[:, :45] == 0).all() and (stretched[:, 55:95] == 255).all()


def test_center_crop_of_a_tall_image_and_a_wide_model():
    pixels = np.zeros((300, 100, 3), np.uint8)
    pixels[100:200] = 200  # middle third of the rows
    spec = InputSpec(50, 100, 3)  # a wide model: crop 100 x 50 from the middle
    array = prepare_image(factory.png(pixels), spec, center_crop=True)
    assert array.shape == (50, 100, 3) and (array == 200).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_other_model_sizes(channels):
    spec = InputSpec(32, 48, channels)
    array = prepared(factory.encode(factory.uniform("RGB", (500, 300), (90, 90, 90)), "PNG"), spec)
    assert only_colour(array) == (90,) * channels


# -- formats --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {"lossless": True}), ("GIF", {})],
)
def test_other_supported_formats(fmt, options):
    assert only_colour(prepared(factory.encode(factory.uniform("RGB", (30, 20), (0, 0, 0)), fmt, **options))) == (
        0,
        0,
        0,
    )


def test_16_bit_and_cmyk_tiff():
    data = factory.encode(Image.fromarray(np.full((20, 30), 257 * 33, np.uint16)), "TIFF")
    assert only_colour(prepared(data)) == (33, 33, 33)
    cmyk = factory.encode(factory.uniform("CMYK", (20, 20), (0, 0, 0, 255)), "TIFF")
    assert only_colour(prepared(cmyk)) == (0, 0, 0)


def test_formats_pillow_reads_but_the_app_does_not_are_refused():
    for fmt in ("ICO", "PPM", "TGA"):
        data = factory.encode(factory.uniform("RGB", (16, 16), (1, 2, 3)), fmt)
        refused(data, "JPEG, PNG")


# -- where the picture comes from --------------------------------------------------------


@pytest.fixture(scope="module")
def small_png() -> bytes:
    return factory.encode(factory.uniform("RGB", (20, 10), (5, 6, 7)), "PNG")


def test_sources_bytes_bytearray_memoryview(small_png):
    for source in (small_png, bytearray(small_png), memoryview(small_png)):
        assert only_colour(prepared(source)) == (5, 6, 7)


def test_sources_paths(tmp_path, small_png):
    path = tmp_path / "photo.png"
    path.write_bytes(small_png)
    for source in (path, str(path)):
        assert only_colour(prepared(source)) == (5, 6, 7)


def test_sources_file_objects(tmp_path, small_png):
    stream = io.BytesIO(small_png)
    stream.read()  # already read by someone else: prepare_image rewinds
    assert only_colour(prepared(stream)) == (5, 6, 7)
    path = tmp_path / "photo.png"
    path.write_bytes(small_png)
    with path.open("rb") as handle:
        assert only_colour(prepared(handle)) == (5, 6, 7)
    with path.open("rb", buffering=0) as raw:
        assert only_colour(prepared(raw)) == (5, 6, 7)


def test_streamlit_uploaded_file(small_png):
    from streamlit.proto.Common_pb2 import FileURLs
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    upload = UploadedFile(UploadedFileRec("id-1", "cat.png", "image/png", small_png), FileURLs())
    assert only_colour(prepared(upload)) == (5, 6, 7)
    assert only_colour(prepared(upload)) == (5, 6, 7)  # twice: a rerun reads it again
    bad = UploadedFile(UploadedFileRec("id-2", "cat.jpg", "image/jpeg", factory.HTML), FileURLs())
    refused(bad, "web page")


def test_stream_that_returns_short_reads(small_png):
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            piece, self.data = self.data[:7], self.data[7:]
            buffer[: len(piece)] = piece
            return len(piece)

    assert only_colour(prepared(Trickle(small_png))) == (5, 6, 7)


def test_pillow_images_in_any_mode_are_not_changed():
    image = factory.uniform("RGBA", (30, 20), (1, 2, 3, 255))
    before = image.tobytes()
    assert only_colour(prepared(image)) == (1, 2, 3)
    assert image.tobytes() == before and image.mode == "RGBA"


@pytest.mark.parametrize("mode", ["RGBX", "YCbCr", "LAB", "HSV", "PA", "La", "RGBa", "I;16", "I;16B"])
def test_unusual_pillow_modes_give_an_array(mode):
    prepared(Image.new(mode, (12, 9)))


def test_wrong_source_types_are_refused_clearly(tmp_path):
    refused(3, "int", "bytes", "file path")
    refused(None, "NoneType")
    refused(np.zeros((4, 4, 3), np.uint8), "numpy array", "fromarray")
    refused(tmp_path / "missing.jpg", "no such file")
    refused(tmp_path, "folder")
    refused("bad\0name.jpg", "cannot open")
    with open(os.devnull) as text:
        refused(text, "binary mode")


def test_a_model_object_gives_the_input_spec(model):
    assert prepared(factory.encode(factory.uniform("RGB", (9, 9), (1, 1, 1)), "PNG"), model.input_spec).shape == (
        150,
        150,
        3,
    )
    assert prepare_image(factory.encode(factory.uniform("RGB", (9, 9), (1, 1, 1)), "PNG"), model).shape == (150, 150, 3)


def test_pixel_limit_default_is_documented():
    assert DEFAULT_MAX_PIXELS == 40_000_000 and DEFAULT_MAX_BYTES == 20 * 2**20


# -- the resize policy: the same as training, and as documented ----------------------------


def documented_policy(path_or_bytes, target: tuple[int, int] = (150, 150)) -> np.ndarray:
    """The module docstring's policy, written again with plain Pillow calls."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    image = Image.open(source)
    need = 2 * max(target)
    if image.format == "JPEG":
        image.draft("RGB", (need, need))
    image.load()
    orientation = image.getexif().get(0x0112, 1)
    image = image.convert("RGB")
    factor = min(image.width // need, image.height // need)
    if factor >= 2:
        image = image.reduce(factor)
    turn = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
    if orientation in turn:
        image = image.transpose(turn[orientation])
    return np.asarray(image.resize(target, Image.Resampling.BILINEAR))


def test_dataset_photos_match_the_documented_policy(dataset):
    for image in dataset.sample("test", per_class=5, seed=3):
        array = prepare_image(image.path, SPEC)
        np.testing.assert_array_equal(array, documented_policy(image.path))
        np.testing.assert_array_equal(array, prepare_image(image.path, SPEC))  # and the same twice
        np.testing.assert_array_equal(array, prepare_image(image.path.read_bytes(), SPEC))


def test_training_reads_images_through_prepare_image(dataset):
    from convert.train import INPUT_SPEC, load_split

    assert INPUT_SPEC == SPEC
    arrays, labels = load_split(dataset, "validation", limit_per_class=2)
    chosen = [image for image in dataset.images("validation") if image.label == 0][:2]
    chosen += [image for image in dataset.images("validation") if image.label == 1][:2]
    assert labels.tolist() == [0, 0, 1, 1]
    for array, image in zip(arrays, chosen, strict=True):
        np.testing.assert_array_equal(array, prepare_image(image.path, SPEC))


@pytest.fixture(scope="module")
def big_photo() -> np.ndarray:
    """A smooth 2400 x 1800 'photo' with detail at every scale (rings and a ramp)."""
    rows, cols = np.mgrid[0:1800, 0:2400].astype(np.float32)
    radius = np.hypot(rows - 900, cols - 1200)
    red = 127 + 120 * np.sin(radius / 40)
    green = cols / 2400 * 255
    blue = 127 + 120 * np.cos(rows / 25)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def test_big_jpeg_is_drafted_then_resized_as_documented(big_photo):
    data = factory.encode(Image.fromarray(big_photo), "JPEG", quality=92)
    np.testing.assert_array_equal(prepare_image(data, SPEC), documented_policy(data))


def test_big_phone_jpeg_is_drafted_and_turned(big_photo):
    data = factory.jpeg_with_orientation(big_photo, 6, quality=92)
    array = prepare_image(data, SPEC)
    np.testing.assert_array_equal(array, documented_policy(data))
    # And it is the upright photo: compare with the upright JPEG, resized alike.
    plain = prepare_image(factory.encode(Image.fromarray(big_photo), "JPEG", quality=92), SPEC)
    assert np.abs(array.astype(int) - plain).mean() < 4


def test_big_png_is_reduced_then_resized_as_documented(big_photo):
    data = factory.png(big_photo)
    array = prepare_image(data, SPEC)
    np.testing.assert_array_equal(array, documented_policy(data))
    # The early box reduce changes the result by rounding only, against a direct resize.
    direct = np.asarray(Image.fromarray(big_photo).resize((150, 150), Image.Resampling.BILINEAR))
    assert np.abs(array.astype(int) - direct).max() <= 3


_CONCURRENT_DECODES = """
    import threading
    from featapp.engine import images
    data = imagefactory.png_stream(6000, 6600, bands=4, row=[200, 100, 0, 128] * 6000)
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    if len(sys.argv) > 2:  # the control: let every thread decode at full size at once
        images._large_decodes = threading.BoundedSemaphore(threads)
    ---
    results = []
    workers = [
        threading.Thread(target=lambda: results.append(prepare_image(data, InputSpec(150, 150, 3))))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    outcome = [len(results), [int(v) for v in numpy.unique(results[0].reshape(-1, 3), axis=0)[0]]]
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="reads /proc")
def test_large_decodes_at_the_same_time_do_not_add_up():
    """Three threads (three students) decode a 40-megapixel RGBA PNG (a 165 KB file) at
    once: the peak stays that of one decode, not three. The control lets them overlap.

    With one malloc arena: otherwise glibc gives each thread its own arena, and memory a
    finished decode freed in one thread's arena is not reused by the next thread's
    decode, which blurs the measurement (340-474 MB instead of 304 MB here; the control
    reaches 850 MB). That retention is a separate effect of glibc's per-thread arenas; the
    app's memory under load still levels off (BENCHMARKS.md, "Many students at once")."""
    one_arena = {"MALLOC_ARENA_MAX": "1"}
    one = _peak_rss_of(_CONCURRENT_DECODES, "1", env=one_arena)
    three = _peak_rss_of(_CONCURRENT_DECODES, "3", env=one_arena)
    overlapping = _peak_rss_of(_CONCURRENT_DECODES, "3", "control", env=one_arena)
    # 200, 100, 0 at alpha 128 on white: 227, 177, 127 (see test_rgba_png_is_composited_on_white)
    assert one["outcome"] == [1, [227, 177, 127]]
    assert three["outcome"] == overlapping["outcome"] == [3, [227, 177, 127]]
    assert one["grew_mb"] > 145  # the decode is big: at least its 151 MiB (158 MB) of RGBA pixels
    assert three["grew_mb"] < one["grew_mb"] * 1.2 + 20, (one, three)
    assert overlapping["grew_mb"] > one["grew_mb"] * 2, (one, overlapping)
