"""The one image-preparation path: bytes, files or Pillow images in, model-ready uint8 arrays out.

Gallery photos, uploads, the camera, the command line, training and the tests all go
through :func:`prepare_image`, so what the network sees in the app is exactly what it
saw during training.

Policy, in order:

1. **Size checks before decoding.** At most ``max_bytes`` of input
   (:data:`DEFAULT_MAX_BYTES`, 20 MiB), and at most ``max_pixels`` pixels
   (:data:`DEFAULT_MAX_PIXELS`, 40 megapixels) as declared by the file's header. A PNG
   that declares 30000x30000 pixels is refused before a single pixel is decoded. JPEGs
   are decoded with Pillow's draft mode, which lets libjpeg scale large photos down by
   2, 4 or 8 while decoding (never below twice the model's size), so a 48-megapixel
   phone photo costs about 3 MB, not 150 MB; for JPEGs the pixel limit applies to the
   drafted size.
2. **First frame** of animated GIF, WebP and PNG files, and the first page of a TIFF.
3. **Early shrink.** Other formats must be decoded whole; a decoded image larger than
   twice the model's size on both sides is at once shrunk by an integer factor with a
   box filter (``Image.reduce``; premultiplied for transparency), so the steps below
   work on a small copy. With draft mode this is one rule for every format: big
   pictures are box-reduced to no less than twice the model size before the resize.
   Pictures over :data:`LARGE_DECODE_PIXELS` (4 megapixels) at full size are decoded
   and shrunk one at a time per process, so many large uploads at once cannot add up.
   A progressive (or multi-scan) JPEG also needs coefficient buffers for its whole
   full-size picture, whatever the draft scale: they count towards that line, and a JPEG
   whose buffers would exceed :data:`MAX_COEFFICIENT_BYTES` is refused before decoding.
4. **EXIF orientation** is applied (tag 1-8, also when stored in XMP), so a phone
   photo taken sideways stands upright. An unreadable EXIF block is ignored, not fatal.
5. **Mode conversion** to the model's channels (1 = grayscale, 3 = RGB). Transparent
   pixels (RGBA, LA, palette or single-colour transparency) are composited on
   :data:`TRANSPARENCY_BACKGROUND` (white). 16- and 32-bit integer images are scaled
   from 0..65535 to 0..255 (``round(v / 257)``, clipped); float images are read as
   0..1 when their largest finite value is at most 1, else as 0..255 (NaN -> 0).
   CMYK, YCbCr, LAB and HSV are converted by Pillow; colour to grayscale uses
   Pillow's ITU-R 601-2 luma, grayscale to colour copies the grey into R, G and B.
6. **Resize** to the model's input size with Pillow's bilinear filter (which
   antialiases when shrinking), stretching the whole photo as Keras'
   ``image_dataset_from_directory`` did in the lecture. With ``center_crop=True`` the
   largest centred box of the model's aspect ratio is cut out first, so nothing is
   stretched.

Formats read: JPEG (and MPO, what many phones write), PNG (and APNG), GIF, WebP, BMP
and TIFF. Refused by name: SVG, HEIC/HEIF, AVIF, HTML, PDF, ZIP/Office, videos and text.

Every refusal is an :class:`ImageError` whose message is written for a student. No
other exception escapes on any input bytes. The returned array is a fresh, writable
copy, owned by the caller.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from featapp.errors import FeatappError

__all__ = [
    "ImageError",
    "InputSpec",
    "ImageSource",
    "prepare_image",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "TRANSPARENCY_BACKGROUND",
    "SUPPORTED_FORMATS",
    "LARGE_DECODE_PIXELS",
    "LARGE_DECODE_BYTES",
    "MAX_COEFFICIENT_BYTES",
    "MAX_LARGE_DECODES",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
"""Largest input accepted, in bytes (20 MiB; the app's upload limit may be lower)."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image accepted, in pixels as declared by the header (after JPEG draft scaling)."""

TRANSPARENCY_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white, the colour most cut-out pet photos assume."""

SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""Pillow formats that are decoded. MPO is what many phones write for a JPEG."""

# What Image.open is told to try. Pillow's JPEG opener returns MPO files itself, and
# Pillow 13 no longer registers MPO as a format of its own: naming it there raises
# KeyError for every file that is not a JPEG.
_OPEN_FORMATS = tuple(name for name in SUPPORTED_FORMATS if name != "MPO")

# Pillow's own bomb check warns at 89 MP and raises at twice that; ours is stricter and
# runs first, so Pillow's warning would only be noise.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_FORMATS_HINT = "Use a JPEG, PNG, WebP, GIF, BMP or TIFF file."
_TRUNCATED = "The {what} seems to be cut off (truncated): only part of the image is there. Download or copy it again."
_DAMAGED = "The {what} is damaged and cannot be read. " + _FORMATS_HINT

# Pixel budget of one strip when high-bit-depth images are scaled to 8 bits, so the
# temporary float copy stays small whatever the image size.
_STRIP_PIXELS = 1 << 20

LARGE_DECODE_PIXELS = 4_000_000
"""Pictures with more pixels than this at full size (after JPEG draft scaling) are decoded
one at a time per process (see :data:`MAX_LARGE_DECODES`)."""

LARGE_DECODE_BYTES = 4 * LARGE_DECODE_PIXELS
"""The same line in bytes of decoder memory (Pillow keeps a pixel in 4 bytes), which also
counts a progressive JPEG's coefficient buffers (:data:`MAX_COEFFICIENT_BYTES`)."""

MAX_COEFFICIENT_BYTES = 256 * 1024 * 1024
"""The most memory a JPEG's whole-picture coefficient buffers may take. libjpeg keeps a
progressive (or multi-scan) JPEG's DCT coefficients for every block of the full-size picture
until the last scan, 2 bytes per pixel per full-resolution component, even when it decodes
at 1/8 scale: a small file can declare gigabytes. Ordinary (baseline, one-scan) JPEGs are
decoded a strip at a time and never need them."""

MAX_LARGE_DECODES = 1
"""How many large pictures one process decodes at once. A large picture holds all its
pixels while it is decoded and shrunk (a 40-megapixel RGBA PNG can be a 165 KB file), and a
progressive JPEG its coefficient buffers too. In the app a whole class shares one process, so
without this limit a few such uploads at the same moment would multiply that. Smaller
pictures, and baseline JPEGs, which libjpeg shrinks while decoding, never wait
(bench/results/decode_memory.md)."""

_large_decodes = threading.BoundedSemaphore(MAX_LARGE_DECODES)


class ImageError(FeatappError, ValueError):
    """An input that cannot be used as a picture, with a message a student can act on."""


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: ``height`` x ``width`` x ``channels`` (1 or 3).

    >>> InputSpec(150, 150, 3)
    InputSpec(height=150, width=150, channels=3)
    """

    height: int
    width: int
    channels: int

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"input size must be positive, not {self.height}x{self.width}")


class HasInputSpec(Protocol):
    @property
    def input_spec(self) -> InputSpec: ...


ImageSource = bytes | bytearray | memoryview | str | os.PathLike | Image.Image | io.IOBase

# -- recognising what a file is ------------------------------------------------------

_KNOWN_FORMATS: tuple[tuple[bytes, int, str], ...] = (
    # (magic bytes, offset, name) of the formats we read, to word errors about them.
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WebP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_VIDEO_BRANDS = (b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5", b"avc1", b"dash")

_UNSUPPORTED: tuple[tuple[bytes, int, str], ...] = (
    # (magic bytes, offset, what it is) for formats we refuse by name.
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
    (b"8BPS", 0, "a Photoshop document (PSD)"),
    (b"\x1f\x8b", 0, "a gzip-compressed file"),
    (b"AVI ", 8, "a video (AVI)"),
    (b"WAVE", 8, "a sound file (WAV)"),
    (b"\x1aE\xdf\xa3", 0, "a video (WebM/MKV)"),
)


def _known_format(head: bytes) -> str | None:
    for magic, offset, name in _KNOWN_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            if name == "WebP" and head[:4] != b"RIFF":
                continue
            return name
    return None


def _describe_unsupported(head: bytes) -> str | None:
    """A student-readable name for a file type we recognise but do not read."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "an HEIC/HEIF photo (the iPhone's format)"
        if brand in (b"avif", b"avis"):
            # Refused although Pillow 13 reads AVIF: requirements.txt allows Pillow 11, which may not.
            return "an AVIF image"
        if brand in _VIDEO_BRANDS:
            return "a video (MP4/MOV)"
    for magic, offset, what in _UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            return what
    text = head[:1024].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if b"<svg" in text:
        return "an SVG drawing (vector graphics)"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:200]:
        return "a web page (HTML)"
    if text.startswith(b"<?xml"):
        return "an XML document"
    if _looks_like_text(head):
        return "a text file"
    return None


def _looks_like_text(head: bytes) -> bool:
    sample = head[:1024]
    try:
        decoded = sample.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            decoded = sample[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(decoded) and all(ch.isprintable() or ch in "\t\r\n\f" for ch in decoded)


# -- reading the bytes -----------------------------------------------------------------


def _size_text(size: int) -> str:
    # Binary megabytes, as file managers and Streamlit's upload limit count them.
    if size >= 2**20:
        return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"
    return f"{max(size, 1) / 2**10:.1f}".removesuffix(".0") + " KB"


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return (
        f"The file is {_size_text(size)}; the limit is {_size_text(max_bytes)}. "
        "Save a smaller copy of the photo and try again."
    )


def _too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
        f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and try again."
    )


def _quoted(path: Path) -> str:
    text = str(path)
    return f"'{text}'" if text.isprintable() else repr(text)


def _read_path(path: Path, max_bytes: int) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageError(f"Cannot open {_quoted(path)}: there is no such file.") from None
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ImageError(f"Cannot open {_quoted(path)}: {reason}.") from None
    if not path.is_file():
        raise ImageError(f"Cannot open {_quoted(path)}: it is a folder or a device, not a file.")
    if info.st_size > max_bytes:
        raise ImageError(_too_many_bytes(info.st_size, max_bytes))
    try:
        with path.open("rb") as handle:
            # The file may grow after stat(): read one byte past the limit at most.
            return handle.read(max_bytes + 1)
    except OSError as err:
        raise ImageError(f"Cannot read {_quoted(path)}: {err.strerror or err}.") from None


def _read_stream(source, max_bytes: int) -> bytes:
    # Uploaded files (Streamlit's UploadedFile) and other binary file objects. Rewind,
    # since the app may already have read it, and read one byte past the limit at most,
    # so an oversized stream is refused without reading it all.
    if isinstance(source, io.TextIOBase):
        raise ImageError("The file was opened as text; open it in binary mode ('rb') to read an image.")
    try:
        if getattr(source, "seekable", lambda: False)():
            source.seek(0)
    except (OSError, ValueError):
        pass
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        try:
            chunk = source.read(max_bytes + 1 - total)
        except (OSError, ValueError) as err:
            raise ImageError(f"Cannot read the uploaded file: {err}.") from None
        if chunk is None:  # a non-blocking stream with nothing ready yet
            raise ImageError("Cannot read the uploaded file: it gave no data (a non-blocking stream?).")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise ImageError("The file object did not give bytes; open it in binary mode ('rb').")
        if not chunk:
            break
        chunks.append(bytes(chunk))
        total += len(chunks[-1])
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_bytes(source: ImageSource, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = source.nbytes if isinstance(source, memoryview) else len(source)
        if size > max_bytes:
            raise ImageError(_too_many_bytes(size, max_bytes))
        data = source if isinstance(source, bytes) else bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _read_path(Path(source), max_bytes)
    elif hasattr(source, "read"):
        data = _read_stream(source, max_bytes)
    elif isinstance(source, np.ndarray):
        raise ImageError(
            "Cannot use a numpy array here: give bytes, a file path, a file object or a Pillow image "
            "(for an array of pixels, use PIL.Image.fromarray(array))."
        )
    else:
        raise ImageError(
            f"Cannot use a {type(source).__name__} as an image: give bytes, a file path, "
            "a file object or a Pillow image."
        )
    if len(data) > max_bytes:
        raise ImageError(_too_many_bytes(len(data), max_bytes))
    if not data:
        raise ImageError("The file is empty (0 bytes): there is no picture in it.")
    return data


# -- decoding ------------------------------------------------------------------------


def _what(fmt: str | None) -> str:
    return f"{fmt} file" if fmt else "image"


def _decode_error(err: BaseException, fmt: str | None) -> ImageError:
    """The student-facing error for a decoder failure on untrusted bytes."""
    if isinstance(err, ImageError):
        return err
    if isinstance(err, MemoryError):
        return ImageError("The image is too large to decode in the memory available. Resize it and try again.")
    text = str(err).lower()
    if isinstance(err, EOFError) or "truncated" in text or "premature end" in text:
        return ImageError(_TRUNCATED.format(what=_what(fmt)))
    return ImageError(_DAMAGED.format(what=_what(fmt)))


def _bomb_error(err: Exception, max_pixels: int) -> ImageError:
    found = re.search(r"\((\d+) pixels\)", str(err))
    declared = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "an enormous size"
    return ImageError(
        f"The image declares {declared}; the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and try again."
    )


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""Where entropy-coded JPEG data ends: 0xFF then a byte that is not stuffing (00), a restart
marker (D0-D7) or a fill byte (FF)."""

_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg_scans(data: bytes, enough: int = 2) -> tuple[int, bool]:
    """(how many scans, up to ``enough``; whether the frame is progressive) of the first
    picture in JPEG ``data``, by walking its markers: APP segments (an EXIF thumbnail is a
    whole JPEG of its own) are skipped by their length. A malformed file stops the walk;
    the decoder judges it."""
    position, scans, progressive = 2, 0, False
    while position + 4 <= len(data) and scans < enough:
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker == 0xD9:  # end of the picture
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        progressive = progressive or marker in _PROGRESSIVE_SOF
        if marker == 0xDA:
            scans += 1
            after = _NEXT_MARKER.search(data, position)
            if after is None:
                break
            position = after.start()
    return scans, progressive


def _coefficient_bytes(image: Image.Image, data: bytes) -> int:
    """What libjpeg allocates for the whole-picture coefficient buffers of a progressive or
    multi-scan JPEG (0 for a baseline one-scan JPEG): 64 16-bit coefficients per 8 x 8
    block of each component at its own resolution, the block grid rounded up to whole
    sampling units as libjpeg does."""
    scans, progressive = _jpeg_scans(data)
    layers = getattr(image, "layer", None) or []
    if not (progressive or scans > 1) or not layers:
        return 0
    width, height = image.size  # the full size: called before draft()
    h_max = max(max(int(layer[1]), 1) for layer in layers)
    v_max = max(max(int(layer[2]), 1) for layer in layers)
    total = 0
    for layer in layers:
        h, v = max(int(layer[1]), 1), max(int(layer[2]), 1)
        blocks_w = math.ceil(math.ceil(width * h / h_max) / 8)
        blocks_h = math.ceil(math.ceil(height * v / v_max) / 8)
        total += math.ceil(blocks_w / h) * h * math.ceil(blocks_h / v) * v * 64 * 2
    return total


def _too_costly(width: int, height: int, cost: int) -> str:
    return (
        f"This photo is a progressive JPEG of {width} x {height} pixels. Reading one of those takes about "
        f"{cost / 2**20:,.0f} MB of memory however small it is shown, more than the "
        f"{MAX_COEFFICIENT_BYTES / 2**20:.0f} MB the app allows one photo. Make it smaller (or save it as an "
        "ordinary, baseline JPEG) and try again."
    )


def _open(data: bytes, draft_side: int, max_pixels: int) -> tuple[Image.Image, int]:
    """Open ``data`` lazily (header only), check its declared size and cost, and return the
    picture with the bytes its decoder will hold beyond its pixels (a progressive JPEG's
    coefficient buffers; 0 for every other picture)."""
    fmt = _known_format(data[:16])
    # A file that starts like a format we read goes to its decoder, even if its first
    # kilobyte happens to look like text.
    what = None if fmt else _describe_unsupported(data[:1024])
    if what is not None:
        raise ImageError(f"This file is {what}, not a photo this app can read. {_FORMATS_HINT}")
    try:
        image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as err:
        raise _bomb_error(err, max_pixels) from None
    except Exception as err:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image
        if fmt is None:
            raise ImageError(f"This file is not an image this app can read. {_FORMATS_HINT}") from None
        raise _decode_error(err, fmt) from None
    fmt = fmt or image.format
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels (its width or height is 0).")
    coefficients = 0
    if image.format in ("JPEG", "MPO"):
        coefficients = _coefficient_bytes(image, data)
        if coefficients > MAX_COEFFICIENT_BYTES:
            raise ImageError(_too_costly(width, height, coefficients))
    if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale for almost nothing; keep at least
        # twice the model's size (either way round) so the bilinear resize still antialiases.
        try:
            image.draft(image.mode, (draft_side, draft_side))
        except Exception as err:  # noqa: BLE001 - draft reads JPEG markers from untrusted bytes
            raise _decode_error(err, fmt) from None
        width, height = image.size
    if width * height > max_pixels:
        raise ImageError(_too_many_pixels(width, height, max_pixels))
    return image, coefficients


def _load_first_frame(image: Image.Image, fmt: str | None) -> Image.Image:
    # A freshly opened file is on its first frame already; counting frames would read
    # (and could fail on) the whole animation.
    try:
        image.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image
        raise _decode_error(err, fmt) from None
    return image


_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), or 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not cost the student the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# -- pixels ---------------------------------------------------------------------------


def _map_strips(image: Image.Image, to_uint8: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """Apply ``to_uint8`` to horizontal strips of a single-band image, giving mode L."""
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = to_uint8(np.asarray(image.crop((0, top, width, bottom))))
    return Image.fromarray(out, "L")


def _finite_peak(image: Image.Image) -> float:
    width, height = image.size
    peak = -math.inf
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=np.float64)
        finite = strip[np.isfinite(strip)]
        if finite.size:
            peak = max(peak, float(finite.max()))
    return peak


def _to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth single-band modes (I;16*, I, F) to 8-bit grayscale (``L``)."""
    if image.mode.startswith("I"):
        return _map_strips(image, lambda a: np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8))
    scale = 255.0 if _finite_peak(image) <= 1.0 else 1.0

    def floats(a: np.ndarray) -> np.ndarray:
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0 / scale, neginf=0.0)
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)

    return _map_strips(image, floats)


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Any Pillow mode to one of L, LA, RGB, RGBA (alpha kept, for compositing later)."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_8bit(image)
    if mode in ("L", "LA", "RGB", "RGBA"):
        if mode in ("L", "RGB") and "transparency" in image.info:
            return image.convert(mode + "A" if mode == "L" else "RGBA")
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "La":
        return image.convert("LA")
    if mode in ("P", "PA"):
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    if mode == "RGBa":
        return image.convert("RGBA")
    # RGBX, CMYK, YCbCr, LAB, HSV: Pillow converts these to RGB itself.
    return image.convert("RGB")


def _shrink(image: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps both sides >= ``min_side``."""
    factor = min(image.width // min_side, image.height // min_side)
    if factor < 2:
        return image
    if image.mode in ("LA", "RGBA"):
        return _reduce_in_strips(image, factor)
    return image.reduce(factor)


def _reduce_in_strips(image: Image.Image, factor: int) -> Image.Image:
    """``image.reduce(factor)``, pixel for pixel, a band of rows at a time. Pillow reduces a
    transparent picture through a premultiplied copy of all of it, which doubled the peak of
    a large PNG; bands whose height is a multiple of ``factor`` keep the boxes where they were."""
    rows = max(factor, _STRIP_PIXELS // image.width // factor * factor)
    reduced = Image.new(image.mode, (-(-image.width // factor), -(-image.height // factor)))
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(top + rows, image.height)))
        reduced.paste(band.reduce(factor), (0, top // factor))
    return reduced


def _flatten(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("LA", "RGBA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENCY_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _center_crop_box(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    target_ratio = target_w / target_h
    if width / height > target_ratio:
        new_w = max(1, round(height * target_ratio))
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = max(1, round(width / target_ratio))
    top = (height - new_h) // 2
    return 0, top, width, top + new_h


def _from_pillow(source: Image.Image, max_pixels: int) -> Image.Image:
    width, height = source.size
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels (its width or height is 0).")
    if width * height > max_pixels:
        raise ImageError(_too_many_pixels(width, height, max_pixels))
    frame = source.tell() if hasattr(source, "tell") else 0
    if frame == 0:
        return _load_first_frame(source, source.format)
    # The caller's image is left on the frame it was on; we take frame 0 of a copy.
    try:
        source.seek(0)
        first = source.copy()
    except Exception as err:  # noqa: BLE001 - a lazily opened file is still untrusted bytes
        raise _decode_error(err, source.format) from None
    finally:
        with contextlib.suppress(Exception):  # restoring the caller's frame is best effort
            source.seek(frame)
    return first


def prepare_image(
    source: ImageSource,
    model: InputSpec | HasInputSpec,
    *,
    center_crop: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Turn a photo into the uint8 array ``(height, width, channels)`` the model expects.

    ``source`` is bytes, a file path, a binary file object (such as a Streamlit upload)
    or a Pillow image. ``model`` is a loaded model or an :class:`InputSpec`. The
    policy (limits, orientation, transparency, resizing) is in this module's docstring.

    >>> spec = InputSpec(150, 150, 3)
    >>> prepare_image(Image.new("RGBA", (640, 480)), spec).shape
    (150, 150, 3)
    >>> try:
    ...     prepare_image(b"", spec)
    ... except ImageError as err:
    ...     print(err)
    The file is empty (0 bytes): there is no picture in it.

    Raises :class:`ImageError`, and only that, for anything that is not a usable image.
    """
    spec = model if isinstance(model, InputSpec) else model.input_spec
    target = (spec.width, spec.height)
    # Twice the larger side, on both axes, so that a rotation by the EXIF orientation
    # or a centre crop never leaves fewer than two source pixels per output pixel.
    min_side = 2 * max(target)
    full_size: contextlib.AbstractContextManager[object]
    if isinstance(source, Image.Image):
        fmt = source.format
        image = _from_pillow(source, max_pixels)
        full_size = contextlib.nullcontext()  # the caller holds its pixels already
    else:
        data = _read_bytes(source, max_bytes)
        fmt = _known_format(data[:16])
        image, coefficients = _open(data, min_side, max_pixels)
        large = 4 * image.width * image.height + coefficients > LARGE_DECODE_BYTES
        full_size = _large_decodes if large else contextlib.nullcontext()
    with full_size:  # everything that works on the picture at full size
        if not isinstance(source, Image.Image):
            image = _load_first_frame(image, fmt)
        orientation = _orientation(image)
        try:
            image = _normalise_mode(image)
        except MemoryError:
            raise _decode_error(MemoryError(), fmt) from None
        image = _shrink(image, min_side)
    if orientation != 1:
        image = image.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
    image = _flatten(image, spec.channels)
    if center_crop:
        image = image.crop(_center_crop_box(*image.size, *target))
    if image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return array
