"""What the app remembers between pages, as plain data: no Streamlit here, so it is testable.

The current image is one :class:`CurrentImage`: the model-ready pixels, where they came
from, a title, the true label when known, and a content hash that keys every cache
about it. Pages read and write it through :func:`get_current` / :func:`set_current` on
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
import io
import math
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from featapp.images import ImageSource, InputSpec, prepare_image
from featapp.metadata import LayerInfo

__all__ = [
    "SourceKind",
    "CurrentImage",
    "image_key",
    "get_current",
    "set_current",
    "CURRENT_KEY",
    "from_upload",
    "match_classes",
    "UPLOAD_MAX_BYTES",
    "activation_bytes",
    "describe_prediction",
    "gallery_caption",
    "WRONG_MARK",
    "TRAINED_ON_TEXT",
    "activations_npz",
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


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def markdown_literal(text: str) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it character for character.

    File names come from students' machines: ``cat *final* $5.png`` must not turn into
    italics or a LaTeX formula (Streamlit renders ``$...$`` as maths and ``:red[...]``
    as colour), and a newline must not start a new block.

    >>> markdown_literal("cat *final* [v2] $5.png")
    'cat \\\\*final\\\\* \\\\[v2\\\\] \\\\$5\\\\.png'
    """
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(text.split()))


@dataclass(frozen=True)
class CurrentImage:
    """The image every page looks at.

    ``array`` is uint8 ``(H, W, C)`` at the model's input size; ``source`` is where it
    came from; ``true_label`` is the dataset's class folder name, or ``None`` for probes,
    uploads and camera photos.
    """

    array: np.ndarray = field(repr=False)
    source: SourceKind
    title: str
    true_label: str | None = None
    key: str = ""

    @classmethod
    def from_array(
        cls, array: np.ndarray, source: SourceKind, title: str, true_label: str | None = None
    ) -> CurrentImage:
        array = np.ascontiguousarray(array, dtype=np.uint8)
        if array.ndim != 3:
            raise ValueError(f"expected an (H, W, C) image, got shape {array.shape}")
        array.flags.writeable = False
        return cls(array=array, source=source, title=title, true_label=true_label, key=image_key(array))

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


def _singular(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith("s") and len(name) > 1 else name


def match_classes(dataset_classes: Sequence[str], model_classes: Sequence[str]) -> dict[str, int] | None:
    """Which model class each dataset folder is, or ``None`` when they cannot be matched.

    Folders match classes by name, ignoring case and a plural "s" ("dogs" is "dog");
    when the names differ but the counts agree, folders match classes in order (the
    order the model was trained in).

    >>> match_classes(["cats", "dogs"], ["cat", "dog"])
    {'cats': 0, 'dogs': 1}
    >>> match_classes(["a", "b", "c"], ["cat", "dog"]) is None
    True
    """
    by_name = {_singular(name): index for index, name in enumerate(model_classes)}
    matched = {folder: by_name[_singular(folder)] for folder in dataset_classes if _singular(folder) in by_name}
    if len(matched) == len(dataset_classes) and len(set(matched.values())) == len(matched):
        return matched
    if len(dataset_classes) == len(model_classes):
        return {folder: index for index, folder in enumerate(dataset_classes)}
    return None


def activation_bytes(layers: Sequence[LayerInfo]) -> int:
    """Bytes of float32 activations one image produces over all ``layers``.

    >>> from featapp.metadata import LayerInfo
    >>> activation_bytes([LayerInfo("conv", "Conv2D", (2, 2, 3)), LayerInfo("dense", "Dense", (5,))])
    68
    """
    return sum(4 * math.prod(layer.output_shape) for layer in layers)


def describe_prediction(probabilities: np.ndarray, class_names: Sequence[str]) -> str:
    """The model's answer for one image, in words (Markdown).

    >>> describe_prediction(np.array([0.25, 0.75]), ["cat", "dog"])
    'The model says **dog**: p(dog) = 0.75.'
    >>> describe_prediction(np.array([0.1, 0.2, 0.7]), ["a", "b", "c"])
    'The model says **c** (p = 0.70); next: b (0.20).'
    """
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    best = int(probabilities.argmax())
    if len(probabilities) == 2:
        positive = class_names[1]
        return f"The model says **{class_names[best]}**: p({positive}) = {probabilities[1]:.2f}."
    order = np.argsort(-probabilities, kind="stable")
    text = f"The model says **{class_names[best]}** (p = {probabilities[best]:.2f})"
    if len(order) > 1:
        second = int(order[1])
        text += f"; next: {class_names[second]} ({probabilities[second]:.2f})"
    return text + "."


WRONG_MARK = ":red[**wrong**]"
"""How a gallery caption marks a wrong answer: a word, in red (no emoji font needed)."""
TRAINED_ON_TEXT = "the model trained on this photo"


def gallery_caption(
    true_folder: str,
    probabilities: np.ndarray | None,
    class_names: Sequence[str],
    classes_of_folders: dict[str, int] | None,
    trained_on: bool = False,
) -> tuple[str, bool | None]:
    """A gallery photo's caption and whether the model got it wrong (``None``: cannot tell).

    A wrong answer is marked in words (red where colours show), not by an emoji that a
    browser without an emoji font draws as an empty box; the gallery also frames the
    photo in red. A photo the model was trained on says so.

    >>> gallery_caption("dogs", np.array([0.9, 0.1]), ["cat", "dog"], {"cats": 0, "dogs": 1})
    (':red[**wrong**] · dogs · p(dog) 0.10', True)
    >>> gallery_caption("cats", None, ["cat", "dog"], {"cats": 0, "dogs": 1}, trained_on=True)
    ('cats · the model trained on this photo', None)
    """
    seen = f" · {TRAINED_ON_TEXT}" if trained_on else ""
    if probabilities is None:
        return true_folder + seen, None
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    best = int(probabilities.argmax())
    if len(probabilities) == 2:
        score = f"p({class_names[1]}) {probabilities[1]:.2f}"
    else:
        score = f"{class_names[best]} {probabilities[best]:.2f}"
    wrong = (
        None
        if classes_of_folders is None or true_folder not in classes_of_folders
        else (classes_of_folders[true_folder] != best)
    )
    mark = f"{WRONG_MARK} · " if wrong else ""
    return f"{mark}{true_folder} · {score}{seen}", wrong


def activations_npz(image: CurrentImage, activations: Mapping[str, np.ndarray]) -> bytes:
    """One image's activations as a compressed ``.npz`` file (bytes): one array per layer
    (maps ``(channels, rows, cols)``, vectors ``(units,)``), plus ``input`` (the uint8 pixels).

    >>> data = activations_npz(CurrentImage.from_array(np.zeros((2, 2, 1), np.uint8), "probe", "x"),
    ...                        {"conv": np.ones((1, 2, 2), np.float32)})
    >>> sorted(np.load(io.BytesIO(data)).files)
    ['conv', 'input']
    """
    if "input" in activations:
        raise ValueError("a layer called 'input' would clash with the input pixels in the file")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, input=image.array, **activations)
    return buffer.getvalue()
