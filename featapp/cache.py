"""Where featapp keeps what it computes, and how it writes files without half-written results.

Every file featapp writes (the neuron-statistics cache, activation exports, pictures)
goes through :func:`atomic_write`: the bytes go to a hidden temporary file in the same
folder, are flushed to disk, and only then renamed over the target with
:func:`os.replace`. A crash or Ctrl+C leaves either the old file or the new one, never
a torn one. (A stray ``.<name>.*.tmp`` can remain after a hard kill; ``.gitignore``
ignores that pattern and the next write does not care.)

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write_bytes(folder / "hello.txt", b"hi").name
'hello.txt'
>>> (folder / "hello.txt").read_bytes()
b'hi'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from featapp import settings

__all__ = ["CACHE_DIR_ENV", "default_cache_dir", "atomic_write", "atomic_write_bytes", "atomic_path"]

CACHE_DIR_ENV = settings.CACHE_DIR_ENV


def default_cache_dir() -> Path:
    """The folder for featapp's caches: ``$FEATAPP_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/featapp``, else ``~/.cache/featapp``.

    It is never inside the dataset or the repository unless you point it there; the
    neuron-statistics code refuses a cache folder inside the dataset.

    >>> import os; os.environ["FEATAPP_CACHE_DIR"] = "/tmp/featapp-cache"
    >>> default_cache_dir()
    PosixPath('/tmp/featapp-cache')
    >>> del os.environ["FEATAPP_CACHE_DIR"]
    """
    return settings.cache_dir()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``target``; on success it replaces ``target`` atomically.

    For writers that want a file *name* (``np.savez``, ``Image.save``). If the block
    raises, the temporary file is removed and ``target`` is untouched.

    >>> with atomic_path(folder / "grid.png") as tmp:     # doctest: +SKIP
    ...     image.save(tmp, format="PNG")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary binary file, then move it to ``target``.

    >>> atomic_write(folder / "acts.npz", lambda f: np.savez(f, x=np.zeros(3)))  # doctest: +SKIP
    """
    target = Path(target)
    with atomic_path(target) as tmp, tmp.open("wb") as handle:
        write(handle)
        handle.flush()
    return target


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_write`)."""

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    return atomic_write(target, write)
