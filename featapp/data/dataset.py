"""Read an image folder in the Kaggle layout: ``root/<split>/<class>/<file>``.

The shared cats-vs-dogs set has ``train``, ``validation`` and ``test`` splits, each
with ``cats/`` and ``dogs/``. Classes are the sub-folder names in sorted order, so
``cats`` is class 0 and ``dogs`` class 1, which is the order the model was trained in.

The folder comes from an argument, else from ``FEATAPP_DATA_DIR``, else from
``data/cats_vs_dogs`` in the repository (git-ignored), else from the folder that
``python -m featapp download-photos`` fills (:mod:`featapp.data.download`). A missing or empty folder raises
:class:`DatasetError` with a message that says how to get the data; nothing else in
featapp needs a dataset.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from featapp import settings
from featapp.errors import FeatappError

__all__ = [
    "DatasetError",
    "Dataset",
    "DatasetImage",
    "resolve_data_dir",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "IMAGE_SUFFIXES",
]

DATA_DIR_ENV = settings.DATA_DIR_ENV
DEFAULT_DATA_DIR = settings.REPO_DATA_DIR
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

_HOW_TO_GET_DATA = (
    "Point featapp at a folder laid out as <split>/<class>/<image>, for example "
    "cats_vs_dogs/train/cats/cat.1.jpg: pass it as an argument or set the "
    f"{DATA_DIR_ENV} environment variable. Or download the course photos in one step: "
    "python -m featapp download-photos (see docs/photos.md; the course's photos are described in docs/data.md)."
)


class DatasetError(FeatappError, ValueError):
    """A dataset folder that is missing, empty or not in the expected layout."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of the dataset, with its true class."""

    path: Path
    split: str
    class_name: str
    label: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def reference(self) -> str:
        """Where it sits in its dataset, ``<split>/<class>/<file>``: what a shared link names
        (:meth:`Dataset.find` turns it back into the image)."""
        return f"{self.split}/{self.class_name}/{self.name}"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The dataset folder: the argument, else ``$FEATAPP_DATA_DIR``, else the repository's
    ``data/cats_vs_dogs`` when it exists, else the folder ``download-photos`` fills
    (:func:`featapp.data.download.default_destination`, first source found), else the
    repository's default in a checkout and the download folder in an installed package
    (whose absence the error message explains)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = settings.configured(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    if DEFAULT_DATA_DIR.is_dir():
        return DEFAULT_DATA_DIR
    from featapp.data.download import SOURCES, default_destination

    for source in SOURCES:
        downloaded = default_destination(source)
        if downloaded.is_dir():
            return downloaded
    # An installed package has no repository around it: its "data/" would be inside
    # site-packages. There the folder download-photos fills is the one to name.
    return DEFAULT_DATA_DIR if settings.in_checkout() else default_destination(next(iter(SOURCES)))


class Dataset:
    """A folder of labelled images in the Kaggle layout.

    >>> ds = Dataset("../shared/data/cats_vs_dogs")          # doctest: +SKIP
    >>> [image.class_name for image in ds.sample("train", per_class=1)]  # doctest: +SKIP
    ['cats', 'dogs']
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = resolve_data_dir(root)
        if not self.root.is_dir():
            raise DatasetError(f"No dataset folder at '{self.root}'. {_HOW_TO_GET_DATA}")
        self.splits: tuple[str, ...] = tuple(
            sorted(entry.name for entry in self.root.iterdir() if entry.is_dir() and self._classes_in(entry))
        )
        if not self.splits:
            classes = self._classes_in(self.root)
            if classes:
                raise DatasetError(
                    f"'{self.root}' looks like a single split (it has the class folders {', '.join(classes)}); "
                    f"point featapp at the folder above it, which holds the splits. {_HOW_TO_GET_DATA}"
                )
            raise DatasetError(
                f"The folder '{self.root}' holds no images in <split>/<class>/ folders. {_HOW_TO_GET_DATA}"
            )
        self._cache: dict[str, list[DatasetImage]] = {}

    @staticmethod
    def _classes_in(split_dir: Path) -> list[str]:
        return sorted(
            entry.name
            for entry in split_dir.iterdir()
            if entry.is_dir() and any(_is_image(path) for path in entry.iterdir())
        )

    def classes(self, split: str) -> tuple[str, ...]:
        """Class folder names of a split, in label order."""
        return tuple(self._classes_in(self._split_dir(split)))

    def _split_dir(self, split: str) -> Path:
        if split not in self.splits:
            raise DatasetError(
                f"The dataset at '{self.root}' has no split '{split}'; it has: {', '.join(self.splits)}."
            )
        return self.root / split

    def images(self, split: str) -> list[DatasetImage]:
        """Every image of a split, sorted by class, then by file name (numbers in order).

        The listing is read once per :class:`Dataset`; make a new one to see new files.
        """
        if split not in self._cache:
            self._cache[split] = self._scan(split)
        return list(self._cache[split])

    def _scan(self, split: str) -> list[DatasetImage]:
        split_dir = self._split_dir(split)
        found: list[DatasetImage] = []
        for label, class_name in enumerate(self._classes_in(split_dir)):
            paths = sorted((p for p in (split_dir / class_name).iterdir() if _is_image(p)), key=_natural_key)
            found.extend(DatasetImage(p, split, class_name, label) for p in paths)
        return found

    def find(self, reference: str) -> DatasetImage:
        """The listed image at ``<split>/<class>/<file>`` (a :attr:`DatasetImage.reference`).

        Only a name this dataset lists is found: the path is never built from
        ``reference``, so ``../`` or an absolute path cannot reach outside the folder.
        Anything else raises :class:`DatasetError`.
        """
        parts = reference.split("/")
        if len(parts) != 3 or parts[0] not in self.splits:
            raise DatasetError(f"'{reference}' is not a <split>/<class>/<image> name of the dataset at '{self.root}'.")
        split, class_name, name = parts
        for image in self.images(split):
            if image.class_name == class_name and image.name == name:
                return image
        raise DatasetError(f"The dataset at '{self.root}' has no image '{reference}'.")

    def reference_of(self, path: str | os.PathLike) -> str | None:
        """The :attr:`DatasetImage.reference` of a file this dataset lists, else ``None``."""
        path = Path(path)
        for root in (self.root, self.root.resolve()):
            try:
                relative = path.relative_to(root)
            except ValueError:
                continue
            try:
                return self.find(relative.as_posix()).reference
            except DatasetError:
                return None
        return None

    def sample(self, split: str = "train", per_class: int = 10, seed: int = 0) -> list[DatasetImage]:
        """``per_class`` images of each class, the same for the same seed on every machine.

        The default is the lecture's gallery: 10 cats, then 10 dogs. Within a class the
        chosen images keep the dataset's order.

        >>> [image.name for image in Dataset(root).sample("test", per_class=1)]  # doctest: +SKIP
        ['cat.1933.jpg', 'dog.1702.jpg']
        """
        if per_class < 0:
            raise DatasetError(f"Cannot sample {per_class} images per class; use a number of 0 or more.")
        rng = random.Random(seed)
        chosen: list[DatasetImage] = []
        by_class: dict[str, list[DatasetImage]] = {}
        for image in self.images(split):
            by_class.setdefault(image.class_name, []).append(image)
        for class_name in sorted(by_class):
            pool = by_class[class_name]
            picked = rng.sample(range(len(pool)), min(per_class, len(pool)))
            chosen.extend(pool[i] for i in sorted(picked))
        return chosen

    def fingerprint(self, split: str | None = None, content: bool = False) -> str:
        """A hash of the file list (relative paths and sizes), to key caches on.

        It lists the folder again, so added, removed, renamed or resized files change it,
        even on a :class:`Dataset` made before the change. It ignores modification times,
        so a copy of the same photos on another machine has the same fingerprint. A file
        rewritten with the same size is noticed only with ``content=True``, which hashes
        every file's bytes (about a second for the 4,000 course photos).

        >>> Dataset(root).fingerprint("test")[:12]             # doctest: +SKIP
        'c406fa2ecd6a'
        """
        digest = hashlib.sha256()
        for name in [split] if split else list(self.splits):
            for image in self._scan(name):
                relative = image.path.relative_to(self.root).as_posix()
                digest.update(f"{relative}\0{image.path.stat().st_size}\n".encode())
                if content:
                    digest.update(hashlib.sha256(image.path.read_bytes()).digest())
        return digest.hexdigest()


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _natural_key(path: Path) -> tuple:
    parts: list[object] = []
    digits = ""
    text = ""
    for char in path.name:
        if char.isdigit():
            if text:
                parts.append(text)
                text = ""
            digits += char
        else:
            if digits:
                parts.append(int(digits))
                digits = ""
            text += char
    if digits:
        parts.append(int(digits))
    if text:
        parts.append(text)
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)
