"""Which photos the model has already seen: honest predictions on any folder.

Every photo source featapp can download is drawn from the same Kaggle photos as the
course folder, so a "new" photo may be one the model was trained on (or whose
validation score chose the epoch). The model ships with the sha256 of each such photo's
file bytes, in ``<model stem>.trained_on.sha256.gz`` next to the model file: one hash a
line, sorted, gzip'd (hashes only; no photo and no file name). The gallery marks those
photos and leaves them out of its "N of 20 right" line.

The list is made from the folders the model was fitted on, with
``python -m featapp trained-on-hashes FOLDER... --out FILE`` (:func:`write_hashes`).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "cat.1.jpg").write_bytes(b"meow")
>>> out = write_hashes([folder], folder / "m.trained_on.sha256.gz")
>>> seen = read_hashes(out)
>>> len(seen), file_sha256(folder / "cat.1.jpg") in seen
(1, True)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "HASHES_SUFFIX",
    "hashes_path",
    "read_hashes",
    "trained_on",
    "file_sha256",
    "write_hashes",
    "hash_folders",
]

HASHES_SUFFIX = ".trained_on.sha256.gz"
_HEX = re.compile(r"^[0-9a-f]{64}$")


def hashes_path(model_path: str | os.PathLike) -> Path:
    """The trained-on list of a model file: ``models/cats_dogs_small.onnx`` ->
    ``models/cats_dogs_small.trained_on.sha256.gz``.

    >>> hashes_path("models/cats_dogs_small.onnx").name
    'cats_dogs_small.trained_on.sha256.gz'
    """
    path = Path(model_path)
    return path.with_name(path.stem + HASHES_SUFFIX)


def read_hashes(path: str | os.PathLike) -> frozenset[str]:
    """The hashes in a list file; lines that are not a sha256 in hex are ignored."""
    with gzip.open(path, "rt", encoding="ascii") as handle:
        return frozenset(line.strip() for line in handle if _HEX.match(line.strip()))


def trained_on(model_path: str | os.PathLike) -> frozenset[str] | None:
    """The hashes of the photos ``model_path`` was trained or selected on; ``None`` when
    the model ships no list (then nothing can be said either way)."""
    path = hashes_path(model_path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    return read_hashes(path)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, computed once per (path, modification time, size)."""
    # abspath, not resolve(): one stat per call instead of one per path component, and the
    # gallery asks for its 20 photos on every rerun.
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    return _sha256_cached(absolute, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=65_536)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def hash_folders(folders: Iterable[str | os.PathLike]) -> list[str]:
    """The sorted, distinct sha256 of every image file under the folders (recursively)."""
    from featapp.data.dataset import IMAGE_SUFFIXES

    found: set[str] = set()
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"No folder at '{root}'.")
        for path in root.rglob("*"):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                found.add(file_sha256(path))
    return sorted(found)


def write_hashes(folders: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the trained-on list for the photos under ``folders`` to ``out`` (atomically;
    gzip without a time stamp, so the same photos give the same bytes)."""
    from featapp.cache import atomic_write

    text = "".join(f"{digest}\n" for digest in hash_folders(folders)).encode("ascii")
    return atomic_write(out, lambda handle: handle.write(gzip.compress(text, mtime=0)))
