"""What the app remembers between pages, as plain data: no Streamlit here, so it is testable.

The words the app shows are in :mod:`featapp.app.captions`; the activations download in
:mod:`featapp.engine.activation_file`.

The current image is one :class:`CurrentImage`: the model-ready pixels, where they came
from (and, for a dataset photo or a probe, the name another browser can find it by), a
title, the true label when known, and a content hash that keys every cache about it. Pages read and write it through :func:`get_current` / :func:`set_current` on
any mapping (``st.session_state`` in the app, a ``dict`` in tests).

>>> import numpy as np
>>> state = {}
>>> image = CurrentImage.from_array(np.zeros((4, 4, 3), np.uint8), "probe", "black square")
>>> set_current(state, image)
>>> get_current(state).title, get_current(state).true_label
('black square', None)
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from featapp.engine.images import ImageSource, InputSpec, prepare_image

__all__ = [
    "SourceKind",
    "CurrentImage",
    "image_key",
    "get_current",
    "set_current",
    "CURRENT_KEY",
    "from_upload",
    "UPLOAD_MAX_BYTES",
]

SourceKind = Literal["gallery", "probe", "upload", "camera"]
CURRENT_KEY = "featapp.current_image"

UPLOAD_MAX_BYTES = 10 * 1024 * 1024
"""Uploads larger than this are refused by :func:`from_upload` (the server's own limit,
``server.maxUploadSize`` in ``.streamlit/config.toml``, is the same 10 MB)."""


def image_key(array: np.ndarray) -> str:
    """A short content hash of an image array (shape, type and pixels).

    >>> image_key(np.zeros((2, 2, 1), np.uint8)) == image_key(np.zeros((2, 2, 1), np.uint8))
    True
    >>> image_key(np.zeros((2, 2, 1), np.uint8)) == image_key(np.ones((2, 2, 1), np.uint8))
    False
    """
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class CurrentImage:
    """The image every page looks at.

    ``array`` is uint8 ``(H, W, C)`` at the model's input size; ``source`` is where it
    came from; ``true_label`` is the dataset's class folder name, or ``None`` for probes,
    uploads and camera photos. ``origin`` is how another browser finds the same image
    (what a shared link names, :mod:`featapp.app.share`): a dataset photo's
    ``<split>/<class>/<file>`` (:attr:`featapp.data.dataset.DatasetImage.reference`), a
    probe's name; ``None`` for uploads and camera photos, which stay in one session.
    """

    array: np.ndarray = field(repr=False)
    source: SourceKind
    title: str
    true_label: str | None = None
    key: str = ""
    origin: str | None = None

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        source: SourceKind,
        title: str,
        true_label: str | None = None,
        *,
        origin: str | None = None,
    ) -> CurrentImage:
        array = np.ascontiguousarray(array, dtype=np.uint8)
        if array.ndim != 3:
            raise ValueError(f"expected an (H, W, C) image, got shape {array.shape}")
        array.flags.writeable = False
        return cls(array=array, source=source, title=title, true_label=true_label, key=image_key(array), origin=origin)

    @property
    def shareable(self) -> bool:
        """Whether a link can name it: a dataset photo or a probe with its :attr:`origin`."""
        return self.source in ("gallery", "probe") and self.origin is not None

    def fits(self, spec: InputSpec) -> bool:
        """True when the pixels have the size and channels ``spec`` asks for."""
        return self.array.shape == (spec.height, spec.width, spec.channels)

    @property
    def source_text(self) -> str:
        return {
            "gallery": "dataset photo",
            "probe": "synthetic probe",
            "upload": "your upload",
            "camera": "camera photo",
        }[self.source]


def get_current(state: MutableMapping) -> CurrentImage | None:
    """The current image, or ``None`` when none was chosen yet."""
    value = state.get(CURRENT_KEY)
    return value if isinstance(value, CurrentImage) else None


def set_current(state: MutableMapping, image: CurrentImage) -> None:
    """Make ``image`` the current one for every page."""
    state[CURRENT_KEY] = image


def from_upload(source: ImageSource, spec: InputSpec, *, name: str, kind: SourceKind = "upload") -> CurrentImage:
    """An uploaded or camera photo as the current image, decoded in memory only.

    Raises :class:`featapp.ImageError` with a student-readable message for anything
    that is not a usable photo (it is :func:`featapp.prepare_image`'s message).
    """
    array = prepare_image(source, spec, max_bytes=UPLOAD_MAX_BYTES)
    return CurrentImage.from_array(array, kind, name or ("camera photo" if kind == "camera" else "upload"))
