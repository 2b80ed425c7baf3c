"""The hostile and odd upload corpus (issue 5): every case once, with one expected outcome.

Each :class:`Case` is a file a student might upload or pass to the command line, built in
code at test time from :mod:`imagefactory` (nothing third-party is committed), and what
must come of it: a picture (``refusal is None``) or a refusal whose message contains
every word of ``refusal``. Paths with another limit say so: the app refuses uploads
over 10 MB (``UPLOAD_MAX_BYTES``), the library and the command line at 20 MB.

The same cases run through each path:

* the library, ``prepare_image``: ``tests/engine/test_images.py`` covers every case (named in
  ``covered["library"]``), with pixel values worked out by hand;
* ``python -m featapp predict`` in a subprocess, and the app through AppTest uploads:
  ``tests/test_hostile_inputs.py``, except where ``covered`` names a test that already
  runs the same case on that path.

:func:`markdown_table` prints the README's table from this list, so the table and the
tests cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

from tests.helpers import imagefactory as factory

PATHS = ("library", "cli", "app")

APP_LIMIT_WORDS = ("limit is 10 MB",)
CLI_LIMIT_WORDS = ("limit is 20 MB",)

# Colours of the animation frames; the first frame is red.
FRAMES = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]


@dataclass(frozen=True)
class Case:
    """One file and what it must give."""

    name: str
    filename: str
    mime: str
    build: Callable[[], bytes] = field(repr=False)
    refusal: tuple[str, ...] | None
    """Words the refusal must contain, or ``None``: the file gives a picture."""
    outcome: str
    """What happens, in words, for the README's table."""
    app_refusal: tuple[str, ...] | None = None
    """The app's refusal when it differs (the 10 MB upload limit)."""
    upright: bool = False
    """An EXIF-rotated photo: the picture must equal the upright original's."""
    covered: dict[str, str] = field(default_factory=dict)
    """Paths on which another test already runs this exact case: path -> that test."""

    def expected(self, path: str) -> tuple[str, ...] | None:
        """The refusal words on ``path`` ("library", "cli" or "app"), ``None`` for a picture."""
        if path == "app" and self.app_refusal is not None:
            return self.app_refusal
        return self.refusal

    def data(self) -> bytes:
        return _built(self.name)


@cache
def _built(name: str) -> bytes:
    return BY_NAME[name].build()


def _noisy_jpeg() -> bytes:
    return factory.encode(Image.fromarray(factory.noisy(160, 120)), "JPEG", quality=90)


def _truncated(fraction: float) -> Callable[[], bytes]:
    def build() -> bytes:
        whole = _built("jpeg-whole")
        return whole[: max(4, int(len(whole) * fraction))]

    return build


def _upright() -> np.ndarray:
    # A phone-shaped photo (4:3) whose every flip and turn looks different.
    return factory.asymmetric(320, 240)


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (64, 48), 1)
    image.putpalette([0, 0, 255, 200, 100, 0] + [0] * 762)
    image.paste(0, (0, 0, 32, 48))  # left half: palette entry 0, which is transparent
    image.info["transparency"] = 0
    return factory.encode(image, "PNG")


def _over_the_upload_limit() -> bytes:
    # A photo-sized PNG of noise, which does not compress: 2048 x 1800 RGB is about
    # 11 MB, over the app's 10 MB and under the library's 20 MB. The left half is dark
    # noise (0-127), the right half bright (128-255), so the picture is checkable.
    pixels = factory.noisy(2048, 1800, seed=3) // 2
    pixels[:, 1024:] += 128
    data = factory.png(pixels)
    assert 10 * 2**20 < len(data) < 20 * 2**20, len(data)
    return data


def _over_every_limit() -> bytes:
    return b"\xff\xd8\xff" + bytes(21 * 2**20)


_TEST_IMAGES = "tests/engine/test_images.py"

CASES: list[Case] = [
    Case(
        "zero-bytes",
        "empty.jpg",
        "image/jpeg",
        lambda: b"",
        ("empty", "0 bytes"),
        "refused: the file is empty",
        covered={
            "library": f"{_TEST_IMAGES}::test_zero_bytes_is_refused_as_empty",
            "app": "tests/app/test_app.py::BAD_FILES['empty file']",
        },
    ),
    Case(
        "text-as-jpg",
        "notes.jpg",
        "image/jpeg",
        lambda: factory.TEXT,
        ("text file",),
        "refused: a text file",
        covered={
            "library": f"{_TEST_IMAGES}::test_files_that_are_not_photos_are_refused_by_name[text]",
            "cli": "tests/cli/test_cli.py::test_predict_reports_each_file_and_fails_only_the_bad_ones",
            "app": "tests/app/test_app.py::BAD_FILES['text named .jpg']",
        },
    ),
    Case(
        "html-as-png",
        "cat.png",
        "image/png",
        lambda: factory.HTML,
        ("web page", "HTML"),
        "refused: a web page (HTML)",
        covered={"library": f"{_TEST_IMAGES}::test_files_that_are_not_photos_are_refused_by_name[html]"},
    ),
    Case("jpeg-whole", "whole.jpg", "image/jpeg", _noisy_jpeg, None, "a picture (the untruncated file, for reference)"),
    *[
        Case(
            f"jpeg-truncated-{percent}",
            f"cut-{percent}.jpg",
            "image/jpeg",
            _truncated(percent / 100),
            ("JPEG", "cut off"),
            f"refused: the JPEG is cut off (truncated) (cut at {percent}% of its bytes)",
            covered={"library": f"{_TEST_IMAGES}::test_truncated_jpeg_is_refused_as_cut_off"},
        )
        for percent in (2, 10, 50, 90, 99)
    ],
    Case(
        "jpeg-first-3-bytes",
        "cut-3-bytes.jpg",
        "image/jpeg",
        lambda: _built("jpeg-whole")[:3],
        ("JPEG", "damaged"),
        "refused: the JPEG is damaged (only its 3-byte signature)",
        covered={"library": f"{_TEST_IMAGES}::test_jpeg_cut_in_its_first_bytes_is_refused"},
    ),
    Case(
        "png-declares-30000x30000",
        "huge.png",
        "image/png",
        lambda: factory.png_declaring(30000, 30000),
        ("900 megapixels", "limit is 40 megapixels"),
        "refused from the header, before decoding: 900 megapixels, the limit is 40",
        covered={"library": f"{_TEST_IMAGES}::test_png_declaring_30000_by_30000_is_refused_with_its_size"},
    ),
    Case(
        "png-9000x9000-small-file",
        "bomb.png",
        "image/png",
        lambda: factory.png_stream(9000, 9000),
        ("9000 x 9000", "81 megapixels"),
        "refused from the header, before decoding: 81 megapixels (the file is 240 KB)",
        covered={"library": f"{_TEST_IMAGES}::test_9000_by_9000_png_is_refused_before_decoding"},
    ),
    Case(
        "png-16-bit",
        "scan-16bit.png",
        "image/png",
        lambda: factory.png(np.tile(np.array([257 * 10, 257 * 128, 65535], np.uint16), (120, 160, 1))),
        None,
        "a picture: 16-bit values v become round(v / 257)",
        covered={"library": f"{_TEST_IMAGES}::test_16_bit_rgb_png"},
    ),
    Case(
        "jpeg-cmyk",
        "print-cmyk.jpg",
        "image/jpeg",
        lambda: factory.encode(factory.uniform("CMYK", (96, 64), (0, 255, 255, 0)), "JPEG", quality=95),
        None,
        "a picture: converted to RGB",
        covered={"library": f"{_TEST_IMAGES}::test_cmyk_jpeg"},
    ),
    Case(
        "png-palette-transparent",
        "sticker.png",
        "image/png",
        _palette_with_transparency,
        None,
        "a picture: transparent pixels become white",
        covered={"library": f"{_TEST_IMAGES}::test_palette_png_with_transparency"},
    ),
    Case(
        "png-rgba",
        "cutout.png",
        "image/png",
        lambda: factory.encode(factory.uniform("RGBA", (64, 48), (200, 100, 0, 128)), "PNG"),
        None,
        "a picture: composited on white",
        covered={"library": f"{_TEST_IMAGES}::test_rgba_png_is_composited_on_white"},
    ),
    Case(
        "gif-animated",
        "dance.gif",
        "image/gif",
        lambda: factory.animation("GIF", FRAMES),
        None,
        "a picture: the first frame",
        covered={"library": f"{_TEST_IMAGES}::test_animation_gives_its_first_frame[GIF]"},
    ),
    Case(
        "webp-animated",
        "dance.webp",
        "image/webp",
        lambda: factory.animation("WEBP", FRAMES),
        None,
        "a picture: the first frame",
        covered={"library": f"{_TEST_IMAGES}::test_animation_gives_its_first_frame[WEBP]"},
    ),
    *[
        Case(
            f"phone-jpeg-orientation-{orientation}",
            f"IMG_000{orientation}.jpg",
            "image/jpeg",
            (lambda o=orientation: factory.jpeg_with_orientation(_upright(), o)),
            None,
            "a picture, turned upright" if orientation > 1 else "a picture (stored upright)",
            upright=True,
            covered={"library": f"{_TEST_IMAGES}::test_phone_jpeg_is_turned_upright[{orientation}]"},
        )
        for orientation in range(1, 9)
    ],
    *[
        Case(
            f"png-{width}x{height}",
            f"size-{width}x{height}.png",
            "image/png",
            (lambda w=width, h=height: factory.encode(factory.uniform("RGB", (w, h), (30, 120, 210)), "PNG")),
            None,
            "a picture: stretched to 150 x 150",
            covered={"library": f"{_TEST_IMAGES}::test_extreme_sizes"},
        )
        for width, height in ((1, 1), (10000, 40), (40, 10000))
    ],
    Case(
        "jpeg-grayscale",
        "grey.jpg",
        "image/jpeg",
        lambda: factory.encode(Image.fromarray(factory.noisy(96, 64)[:, :, 0]), "JPEG", quality=90),
        None,
        "a picture: the grey copied into R, G and B",
        covered={"library": f"{_TEST_IMAGES}::test_grayscale_jpeg_becomes_three_equal_channels"},
    ),
    Case(
        "png-grayscale",
        "grey.png",
        "image/png",
        lambda: factory.encode(factory.uniform("L", (80, 60), 77), "PNG"),
        None,
        "a picture: the grey copied into R, G and B",
        covered={"library": f"{_TEST_IMAGES}::test_grayscale_becomes_three_equal_channels"},
    ),
    Case(
        "svg",
        "drawing.svg",
        "image/svg+xml",
        lambda: factory.SVG,
        ("SVG", "vector"),
        "refused (not supported): an SVG drawing",
        covered={
            "library": f"{_TEST_IMAGES}::test_files_that_are_not_photos_are_refused_by_name[svg]",
            "app": "tests/app/test_app.py::BAD_FILES['SVG drawing']",
        },
    ),
    Case(
        "heic",
        "IMG_0001.heic",
        "image/heic",
        lambda: factory.HEIC,
        ("HEIC", "iPhone"),
        "refused (not supported): an HEIC/HEIF photo",
        covered={
            "library": f"{_TEST_IMAGES}::test_files_that_are_not_photos_are_refused_by_name[heic]",
            "app": "tests/app/test_app.py::BAD_FILES['iPhone HEIC']",
        },
    ),
    Case(
        "tiff",
        "scan.tif",
        "image/tiff",
        lambda: factory.encode(factory.uniform("RGB", (64, 48), (0, 90, 180)), "TIFF", compression="tiff_lzw"),
        None,
        "a picture (TIFF is supported; the first page of a multi-page file)",
        covered={"library": f"{_TEST_IMAGES}::test_other_supported_formats"},
    ),
    Case(
        "over-the-upload-limit",
        "big-photo.png",
        "image/png",
        _over_the_upload_limit,
        None,
        "a picture (the limit there is 20 MB)",
        app_refusal=APP_LIMIT_WORDS,
    ),
    Case(
        "over-every-limit",
        "21mb.jpg",
        "image/jpeg",
        _over_every_limit,
        CLI_LIMIT_WORDS,
        "refused before reading it all: over the limit (10 MB in the app, 20 MB elsewhere)",
        app_refusal=APP_LIMIT_WORDS,
        covered={"library": f"{_TEST_IMAGES}::test_file_over_the_byte_limit_is_refused_before_reading"},
    ),
]

BY_NAME = {case.name: case for case in CASES}


def cases_for(path: str) -> list[Case]:
    """The cases no other test runs on ``path``."""
    return [case for case in CASES if path not in case.covered]


def markdown_table() -> str:
    """The README's table: each case and what it gives, with the real messages
    (``python tests/helpers/uploadcorpus.py``)."""
    from featapp.app.appstate import UPLOAD_MAX_BYTES
    from featapp.engine.images import ImageError, InputSpec, prepare_image

    def result(case: Case, **limits) -> str:
        try:
            prepare_image(case.data(), InputSpec(150, 150, 3), **limits)
        except ImageError as err:
            return f"refused: {err}"
        return case.outcome

    rows = [
        "| File | Case | Library and `featapp predict` | App upload (the message follows \"'FILE' cannot be used:\") |"
    ]
    rows.append("|---|---|---|---|")
    for case in CASES:
        if case.name == "jpeg-whole":
            continue
        library, app = result(case), result(case, max_bytes=UPLOAD_MAX_BYTES)
        rows.append(f"| `{case.filename}` | {case.name} | {library} | {'the same' if app == library else app} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
