"""The one image-preparation path: bytes, files or Pillow images in, model-ready uint8 arrays out.

Gallery photos, uploads, the camera, the command line, training and the tests all go
through :func:`prepare_image`, so what the network sees in the app is exactly what it
saw during training.

Policy, in order:

1. **Size checks before decoding.** At most ``max_bytes`` of input, and at most
   ``max_pixels`` pixels as declared by the file's header. A PNG that declares
   30000x30000 pixels is refused before a single pixel is decoded. JPEGs are decoded
   with Pillow's draft mode, which lets libjpeg scale large photos down by 2, 4 or 8
   while decoding, so a 48-megapixel phone photo costs about 3 MB, not 150 MB.
2. **First frame** of animated GIF, WebP and PNG files.
3. **EXIF orientation** is applied, so a phone photo taken sideways stands upright.
4. **Mode conversion** to the model's channels (1 = grayscale, 3 = RGB). Transparent
   pixels (RGBA, LA, palette with transparency) are composited on
   :data:`TRANSPARENCY_BACKGROUND` (white). 16- and 32-bit integer images are scaled
   from 0..65535 to 0..255; float images are read as 0..1 when their maximum is at
   most 1, else as 0..255.
5. **Resize** to the model's input size with bilinear filtering, stretching the whole
   photo as Keras' ``image_dataset_from_directory`` did in the lecture. With
   ``center_crop=True`` the largest centred box of the model's aspect ratio is cut
   out first, so nothing is stretched.

Every refusal is an :class:`ImageError` whose message is written for a student. No
other exception escapes on any input bytes.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Union

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ImageError",
    "InputSpec",
    "ImageSource",
    "prepare_image",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "TRANSPARENCY_BACKGROUND",
    "SUPPORTED_FORMATS",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
"""Largest input accepted, in bytes (20 MiB; the app's upload limit is lower)."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image accepted, in pixels as declared by the header (after JPEG draft scaling)."""

TRANSPARENCY_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white, the colour most cut-out pet photos assume."""

SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""Pillow formats that are decoded. MPO is what many phones write for a JPEG."""

# Pillow's own bomb check warns at 89 MP and raises at twice that; ours is stricter and
# runs first, so Pillow's warning would only be noise.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An input that cannot be used as a picture, with a message a student can act on."""


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: ``height`` x ``width`` x ``channels`` (1 or 3)."""

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


ImageSource = Union[bytes, bytearray, memoryview, str, os.PathLike, Image.Image, io.IOBase]

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    # (magic bytes, offset, what it is) for formats we refuse by name.
    (b"ftypheic", 4, "an HEIC photo (the iPhone's format)"),
    (b"ftypheix", 4, "an HEIC photo (the iPhone's format)"),
    (b"ftypmif1", 4, "an HEIF/HEIC photo (the iPhone's format)"),
    (b"ftypmsf1", 4, "an HEIF/HEIC photo (the iPhone's format)"),
    (b"ftypavif", 4, "an AVIF image"),
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
)


def _describe_unsupported(head: bytes) -> str | None:
    for magic, offset, what in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return what
    text = head[:512].lstrip().lower()
    if text.startswith(b"<?xml") or text.startswith(b"<svg") or b"<svg" in text:
        return "an SVG drawing (vector graphics)"
    if text.startswith(b"<!doctype html") or text.startswith(b"<html"):
        return "a web page (HTML)"
    return None


def _read_bytes(source: ImageSource, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError:
            raise ImageError(f"Cannot open '{path}': no such file.") from None
        if not path.is_file():
            raise ImageError(f"Cannot open '{path}': it is not a file.")
        if size > max_bytes:
            raise ImageError(_too_many_bytes(size, max_bytes))
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError(f"Cannot read '{path}': {err.strerror or err}.") from None
    elif hasattr(source, "read"):
        # Uploaded files (Streamlit's UploadedFile) and other file objects: read one
        # byte past the limit, so an oversized stream is refused without reading it all.
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except (OSError, ValueError):
                pass
        try:
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as err:
            raise ImageError(f"Cannot read the uploaded file: {err}.") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("The file object did not give bytes; open it in binary mode ('rb').")
        data = bytes(data)
    else:
        raise ImageError(
            f"Cannot use a {type(source).__name__} as an image: give bytes, a file path, "
            "a file object or a Pillow image."
        )
    if len(data) > max_bytes:
        raise ImageError(_too_many_bytes(len(data), max_bytes))
    if not data:
        raise ImageError("The file is empty (0 bytes).")
    return data


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return (
        f"The file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
        "Save a smaller copy of the photo and try again."
    )


def _too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
        f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and try again."
    )


def _open(data: bytes, target: tuple[int, int], max_pixels: int) -> Image.Image:
    what = _describe_unsupported(data[:512])
    if what is not None:
        raise ImageError(f"This file is {what}, not a photo this app can read. {_formats_hint()}")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageError("The image declares an enormous size and was refused.") from None
    except Exception:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image
        raise ImageError(f"This file is not an image this app can read. {_formats_hint()}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels (its width or height is 0).")
    if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale for almost nothing; keep at least
        # twice the model's size so the later bilinear resize still antialiases.
        try:
            image.draft(image.mode, (max(2 * target[0], 1), max(2 * target[1], 1)))
        except Exception:  # noqa: BLE001
            raise ImageError("This JPEG file is damaged and cannot be read.") from None
        width, height = image.size
    if width * height > max_pixels:
        raise ImageError(_too_many_pixels(width, height, max_pixels))
    return image


def _formats_hint() -> str:
    return "Use a JPEG, PNG, WebP, GIF, BMP or TIFF file."


def _to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth single-channel modes to 8-bit grayscale (``L``)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image.convert("I") if mode != "I" else image, dtype=np.float64)
        return Image.fromarray(np.clip(array / 257.0, 0, 255).round().astype(np.uint8), "L")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(array.max()) if array.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8), "L")
    return image


def _flatten_transparency(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, TRANSPARENCY_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    image = _to_8bit(image)
    image = _flatten_transparency(image)
    target_mode = "L" if channels == 1 else "RGB"
    if image.mode != target_mode:
        image = image.convert(target_mode)
    return image


def _center_crop_box(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    target_ratio = target_w / target_h
    if width / height > target_ratio:
        new_w = max(1, round(height * target_ratio))
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = max(1, round(width / target_ratio))
    top = (height - new_h) // 2
    return 0, top, width, top + new_h


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
    or a Pillow image. ``model`` is a loaded model or an :class:`InputSpec`.

    >>> spec = InputSpec(150, 150, 3)
    >>> prepare_image(Image.new("RGBA", (640, 480)), spec).shape
    (150, 150, 3)

    Raises :class:`ImageError`, and only that, for anything that is not a usable image.
    """
    spec = model if isinstance(model, InputSpec) else model.input_spec
    target = (spec.width, spec.height)
    if isinstance(source, Image.Image):
        width, height = source.size
        if width < 1 or height < 1:
            raise ImageError("The image has no pixels (its width or height is 0).")
        if width * height > max_pixels:
            raise ImageError(_too_many_pixels(width, height, max_pixels))
        image = source
    else:
        image = _open(_read_bytes(source, max_bytes), target, max_pixels)
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image) or image
        image = _to_channels(image, spec.channels)
        if center_crop:
            image = image.crop(_center_crop_box(*image.size, *target))
        if image.size != target:
            image = image.resize(target, Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("The image is too large to decode in the memory available.") from None
    except Exception as err:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image
        if "truncated" in str(err).lower() or isinstance(err, EOFError):
            raise ImageError(
                "The file seems to be cut off (truncated): only part of the image is there. "
                "Download or copy it again."
            ) from None
        raise ImageError(f"This image is damaged and cannot be read. {_formats_hint()}") from None
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return np.ascontiguousarray(array)
