"""Where featapp keeps what it computes, and how it writes files without half-written results.

Every file featapp writes (the neuron-statistics cache, activation exports, pictures)
goes through :func:`atomic_write`: the bytes go to a hidden temporary file in the same
folder, are flushed to disk, and only then renamed over the target with
:func:`os.replace`. A crash or Ctrl+C leaves either the old file or the new one, never
a torn one. A hard kill can leave a stray ``.<name>.<random>.tmp``; the app and the
command line remove such files older than :data:`STALE_AFTER_S` when they start
(:func:`remove_stale_temporaries`), and ``.gitignore`` ignores the pattern.

Written files get the mode an ordinary ``open()`` would give under the process's umask
(``tempfile.mkstemp`` makes them 0600), so a server running as another user of the group
can read a cache the command line made.

Before a long job writes, :func:`check_writable` finds a read-only or full cache folder and
says where to point ``FEATAPP_CACHE_DIR`` (:class:`CacheFolderError`). Cache files are read
back with :func:`read_npz`, which refuses a damaged one (:class:`CacheFileError`) before it
allocates what its headers declare.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write_bytes(folder / "hello.txt", b"hi").name
'hello.txt'
>>> (folder / "hello.txt").read_bytes()
b'hi'
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from featapp import settings
from featapp.errors import FeatappError

__all__ = [
    "CACHE_DIR_ENV",
    "STALE_AFTER_S",
    "CacheFolderError",
    "CacheFileError",
    "default_cache_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_path",
    "check_writable",
    "remove_stale_temporaries",
    "read_npz",
    "file_mode",
    "folder_mode",
]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = settings.CACHE_DIR_ENV

STALE_AFTER_S = 15 * 60
"""A temporary file this old is left over from a killed write: no write featapp makes takes so long."""

_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
"""``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")``'s names, as :func:`atomic_path` makes them."""


class CacheFolderError(FeatappError, RuntimeError):
    """The cache folder cannot take what featapp is about to write (read-only, full, not a folder)."""


class CacheFileError(FeatappError, ValueError):
    """A cache file is damaged or not one featapp wrote; computing it again replaces it."""


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
    try:
        os.fchmod(handle, file_mode())
    finally:
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


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
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


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it, which
    would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # no /proc: the usual default


def file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (0644 under 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder under this process's umask (0755 under 022)."""
    return 0o777 & ~_umask()


def _move_advice() -> str:
    return (
        f"Point {CACHE_DIR_ENV} at a folder you can write to with some free space, for example "
        f"`{CACHE_DIR_ENV}=/tmp/featapp-cache`, and start again."
    )


def check_writable(folder: str | os.PathLike, need_bytes: int = 0) -> Path:
    """``folder`` (created if missing) when featapp can write ``need_bytes`` there, else
    :class:`CacheFolderError` saying where to point ``FEATAPP_CACHE_DIR``. Called before a
    long job, so a read-only or full folder is found before the work, not after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / ".featapp-write-check") as probe:
            probe.write_bytes(b"featapp")
        (folder / ".featapp-write-check").unlink(missing_ok=True)  # another session may check at once
        free = shutil.disk_usage(folder).free
    except OSError as err:
        reasons: dict[int | None, str | None] = {
            errno.EROFS: "it is on a read-only disk",
            errno.ENOSPC: "its disk is full",
        }
        why = reasons.get(
            err.errno, "featapp may not write there" if err.errno in (errno.EACCES, errno.EPERM) else err.strerror
        )
        raise CacheFolderError(f"featapp cannot save its results in {folder}: {why}. {_move_advice()}") from None
    if free < need_bytes:
        raise CacheFolderError(
            f"featapp cannot save its results in {folder}: its disk has {free / 1e6:.0f} MB free and this needs "
            f"about {need_bytes / 1e6:.0f} MB. {_move_advice()}"
        )
    return folder


def remove_stale_temporaries(folder: str | os.PathLike[str], older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove :func:`atomic_path`'s temporary files under ``folder`` older than ``older_than_s``
    (left by a killed write); only files named as featapp names them. Returns what was removed."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if not _TEMP_NAME.match(name):
                continue
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
    if removed:
        log.info("Removed %d temporary file(s) left by an interrupted write in %s", len(removed), folder)
    return removed


def _member_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise CacheFileError(f"{name} has an unknown .npy version {version}")
    if dtype.hasobject:
        raise CacheFileError(f"{name} holds Python objects, which featapp never writes")
    return shape, fortran, dtype


def _read_member(member: IO[bytes], name: str, declared: int) -> np.ndarray:
    """The array in one ``.npy`` member, read into one buffer of the size its header
    declares once that size is checked against the member's own."""
    shape, fortran, dtype = _member_header(member, name)
    size = math.prod(shape) * dtype.itemsize
    if size > declared - member.tell():
        raise CacheFileError(f"{name} declares {size:,} bytes but holds fewer")
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = array.reshape(-1, order="A").view(np.uint8).data if size else memoryview(b"")
    filled = 0
    while filled < size:
        # ZipFile.open gives a ZipExtFile, which has readinto; its stub says IO[bytes], which has not.
        count = member.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            raise CacheFileError(f"{name} is cut short")
        filled += count
    return array


def read_npz(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file featapp wrote, or :class:`CacheFileError` when it is
    damaged: not a zip, encrypted, a member that is not an array, arrays declaring more than
    ``max_bytes`` in all or more than the member holds (a forged header), a member that
    unpacks to more than it declares (a zip bomb stops at the declared size), a short read.

    ``max_bytes`` defaults to the file's own size: featapp writes its caches with
    ``np.savez``, which stores arrays uncompressed, so a real one never unpacks to more.

    Nothing is allocated before the headers are checked, so a header declaring 10**12
    values costs nothing.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        if max_bytes is None:
            max_bytes = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(info.file_size for info in members)
            if declared > max_bytes:
                raise CacheFileError(
                    f"it says it unpacks to {declared:,} bytes, more than such a file ever holds ({max_bytes:,})"
                )
            for info in members:
                if info.flag_bits & 0x1:
                    raise CacheFileError(f"{info.filename} is encrypted")
                if not info.filename.endswith(".npy"):
                    raise CacheFileError(f"{info.filename} is not an array")
                with archive.open(info) as member:
                    arrays[info.filename[: -len(".npy")]] = _read_member(member, info.filename, info.file_size)
    except CacheFileError as err:
        raise CacheFileError(f"'{path}' is damaged: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, NotImplementedError, RuntimeError) as err:
        # Everything a truncated or garbled zip or .npy header raises (RuntimeError: an
        # encrypted member, NotImplementedError: an unknown compression).
        raise CacheFileError(f"'{path}' is damaged ({type(err).__name__}: {err})") from None
    return arrays
