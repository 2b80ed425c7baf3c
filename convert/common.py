"""What the converter's steps share: atomic writes (featapp's own), the verification images,
file hashes and sizes, and the message for a model written without its gradient model.

``convert.export`` (Keras), ``convert.onnx_source`` (any ONNX file) and ``convert.gradients``
all import from here, so none of them imports another for a helper.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from featapp.cache import atomic_write_bytes

__all__ = [
    "cpu_session",
    "sha256_file",
    "size_text",
    "verification_images",
    "write_atomically",
    "written_without_gradients",
]


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or none, never half a file
    (:func:`featapp.cache.atomic_write_bytes`: the umask's mode, like any file the user writes)."""
    atomic_write_bytes(path, data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verification_images(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 test batch: uniform noise, two photo-like scenes (smooth shading, edges, texture), flat grey.

    >>> verification_images(8, 6, 3).shape, verification_images(8, 6, 3).dtype
    ((4, 8, 6, 3), dtype('uint8'))
    """
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, channels))
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width, 1)
    scenes = []
    for k in range(2):
        shade = np.stack([0.5 + 0.4 * np.sin(3 * xx + c + k) * np.cos(2 * yy - c) for c in range(channels)], axis=-1)
        for _ in range(4):  # a few flat-coloured blobs with hard edges
            cy, cx, ry, rx = rng.random(4) * [1, 1, 0.3, 0.3] + [0, 0, 0.05, 0.05]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            shade[inside] = rng.random(channels)
        texture = rng.normal(0, 0.03, shade.shape)
        scenes.append(np.clip(shade + texture, 0, 1) * 255)
    grey = np.full((height, width, channels), 128)
    return np.stack([noise, *scenes, grey]).round().astype(np.uint8)


def written_without_gradients(onnx_path: Path, err: Exception) -> str:
    """The message for a model that was written but whose gradient model was not: what works."""
    return (
        f"{onnx_path} was written and shows every view but saliency, Grad-CAM and feature visualisation; "
        f"its gradient model was not written: {err}"
    )


def size_text(size: int) -> str:
    if size < 1_000_000:
        return f"{math.ceil(size / 1000)} kB"
    return f"{size / 1e6:.1f} MB"


def cpu_session(model: bytes, options=None):
    """An ONNX Runtime session on the CPU for a serialized model, with ONNX Runtime's
    telemetry off first (:func:`featapp.engine.model.telemetry_off`), as for the app's sessions."""
    import onnxruntime as ort

    from featapp.engine.model import telemetry_off

    telemetry_off()
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
