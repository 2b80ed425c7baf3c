"""Test images made in code, at test time: no third-party files are committed.

Everything returns ``bytes`` (what an upload gives) or a Pillow image. Large images are
written by :func:`png_stream`, which compresses row by row, so a 9000 x 9000 PNG costs
the test a few hundred kilobytes, not 243 MB.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

__all__ = [
    "encode",
    "asymmetric",
    "upright_to_stored",
    "jpeg_with_orientation",
    "png",
    "png_stream",
    "png_declaring",
    "animation",
    "noisy",
    "with_marker",
    "uniform",
    "SVG",
    "HTML",
    "HEIC",
    "TEXT",
]

SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    b'<circle cx="50" cy="50" r="40" fill="orange"/></svg>\n'
)
HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>\n"
TEXT = b"This is not a picture of a cat.\nIt is a text file with .jpg at the end of its name.\n"
# An ISO-BMFF box header with the 'heic' brand, as an iPhone writes it, then filler.
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(2000)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """``image`` saved as ``fmt`` (``"PNG"``, ``"JPEG"``, ...) into bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def uniform(mode: str, size: tuple[int, int], colour) -> Image.Image:
    """An image of one colour: after any resize its pixels keep that colour exactly."""
    return Image.new(mode, size, colour)


def asymmetric(width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB uint8 array whose every flip and rotation looks different.

    Grey background; the top-left quarter is red, the top-right green, the bottom-left
    blue and the bottom-right yellow. Quarters are whole 16-pixel blocks when the sides
    are multiples of 32, so JPEG's 8x8 and 16x16 blocks do not blur across them.
    """
    array = np.full((height, width, 3), 128, dtype=np.uint8)
    h2, w2 = height // 2, width // 2
    array[:h2, :w2] = (220, 30, 30)
    array[:h2, w2:] = (30, 200, 30)
    array[h2:, :w2] = (30, 30, 220)
    array[h2:, w2:] = (230, 220, 40)
    return array


def upright_to_stored(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for a scene that looks like ``upright``, under EXIF
    ``orientation`` (1-8), from the EXIF 2.32 definitions of where row 0 and column 0
    of the stored image lie in the visual image. Independent of Pillow's transposes."""
    u = upright
    stored = {
        1: u,  # row 0 top, column 0 left
        2: u[:, ::-1],  # row 0 top, column 0 right
        3: u[::-1, ::-1],  # row 0 bottom, column 0 right
        4: u[::-1, :],  # row 0 bottom, column 0 left
        5: np.swapaxes(u, 0, 1),  # row 0 left, column 0 top
        6: np.rot90(u, 1),  # row 0 right, column 0 top (shown after a clockwise turn)
        7: np.swapaxes(u[::-1, ::-1], 0, 1),  # row 0 right, column 0 bottom
        8: np.rot90(u, -1),  # row 0 left, column 0 bottom (shown after an anticlockwise turn)
    }[orientation]
    return np.ascontiguousarray(stored)


def jpeg_with_orientation(upright: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """A phone-style JPEG: pixels stored sideways or mirrored, and the EXIF tag that says so."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "featapp test camera"
    stored = Image.fromarray(upright_to_stored(upright, orientation), "RGB")
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes(), subsampling=0)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # bands -> PNG colour type (gray, gray+alpha, RGB, RGBA)


def png(array: np.ndarray) -> bytes:
    """A PNG written by hand: any of 8 or 16 bits (from the dtype) and 1-4 bands.

    Pillow cannot write 16-bit colour PNGs; cameras and scanners do.
    """
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    height, width, bands = array.shape
    bit_depth = 16 if array.dtype == np.uint16 else 8
    raw = array.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), raw.reshape(height, -1)], axis=1)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, _COLOUR_TYPES[bands], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def png_stream(width: int, height: int, bands: int = 3, row: Iterable[int] | None = None, bit_depth: int = 8) -> bytes:
    """A ``width`` x ``height`` PNG (8 or 16 bits) whose rows are all the same (default
    black), compressed row by row: it is tiny on disk and huge when decoded. ``row``
    gives the row's samples (0-255, or 0-65535 for 16 bits)."""
    sample = np.dtype(">u2") if bit_depth == 16 else np.dtype(np.uint8)
    samples = np.zeros(width * bands, sample) if row is None else np.asarray(list(row), dtype=sample)
    line = bytes([0]) + samples.tobytes()
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(line) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, _COLOUR_TYPES[bands], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header that declares ``width`` x ``height`` RGB pixels, followed by
    one short row of data: only a decoder that trusts the header would allocate it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(1 + 3 * min(width, 1000))))
        + _chunk(b"IEND", b"")
    )


def animation(fmt: str, colours: list[tuple[int, int, int]], size: tuple[int, int] = (40, 30)) -> bytes:
    """An animated GIF or WebP whose frames are the given solid colours, in order."""
    frames = [Image.new("RGB", size, colour) for colour in colours]
    options = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt.upper() == "WEBP":
        options["lossless"] = True
    return encode(frames[0], fmt, **options)


def noisy(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Uniform RGB noise: every byte of its JPEG or PNG carries picture data, so a cut
    anywhere in the file loses pixels."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def with_marker(data: bytes, marker: bytes) -> bytes:
    """``data`` (a PNG or a JPEG) with ``marker`` stored in it where no decoder looks at
    it: a PNG ``tEXt`` chunk after the header, or a JPEG comment (COM) segment after the
    start marker. Tests search files and logs for the marker to prove an upload's bytes
    were not written anywhere."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        end_of_ihdr = 8 + 8 + 13 + 4
        return data[:end_of_ihdr] + _chunk(b"tEXt", b"Comment\x00" + marker) + data[end_of_ihdr:]
    if data.startswith(b"\xff\xd8"):
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(marker) + 2) + marker + data[2:]
    raise ValueError("with_marker takes PNG or JPEG bytes")
