"""Looking for an upload's traces on disk: uploads are processed in memory only.

A test embeds a unique, random marker in a photo (:func:`imagefactory.with_marker`: a PNG
text chunk or a JPEG comment, bytes no decoder uses), uploads it under a unique file name,
and afterwards searches every file modified since the test started, under the given
folders, for the marker, the name and a row of the decoded pixels.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Secret:
    """What a private upload leaves behind, if anything: its marker and its file name."""

    marker: bytes
    filename: str

    @classmethod
    def new(cls, suffix: str) -> Secret:
        # Made at run time: a marker written in the test's source would be found in its .pyc.
        token = uuid.uuid4().hex
        return cls(f"featapp-private-marker-{token}".encode(), f"private-{token[:12]}{suffix}")

    @property
    def needles(self) -> list[bytes]:
        return [self.marker, self.filename.encode()]


def default_roots(*extra: Path) -> list[Path]:
    """Where a server could write: the repository, the temp folders, shared memory, the
    user's Streamlit and cache folders, plus ``extra`` (a test's cache or home folder)."""
    import tempfile

    repo = Path(__file__).resolve().parents[2]
    home = Path.home()
    roots = [repo, Path(tempfile.gettempdir()), Path("/tmp"), Path("/dev/shm"), home / ".streamlit", home / ".cache"]
    return [root for root in dict.fromkeys([*roots, *extra]) if root.exists()]


def _files(root: Path, since: float, skip: tuple[str, ...]) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root, onerror=lambda _: None):
        dirs[:] = [d for d in dirs if not any(part in d for part in skip)]
        for name in files:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if info.st_mtime >= since and path.is_file() and not path.is_symlink():
                yield path


def _contains(path: Path, needles: list[bytes]) -> list[bytes]:
    longest = max(len(n) for n in needles)
    found: set[bytes] = set()
    tail = b""
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                window = tail + chunk
                found.update(n for n in needles if n in window)
                tail = window[-longest:]
    except OSError:
        return []
    return sorted(found)


def find_traces(
    needles: list[bytes], since: float, roots: list[Path], skip: tuple[str, ...] = ()
) -> dict[str, list[bytes]]:
    """Files under ``roots`` modified at or after ``since`` (a time.time()) that contain any
    of ``needles``, with the needles each contains. Folders whose name contains one of
    ``skip`` are not searched (the test browser's own profile, which is the student's
    machine, not the server's)."""
    hits: dict[str, list[bytes]] = {}
    seen: set[Path] = set()
    for root in roots:
        for path in _files(root, since, skip):
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            found = _contains(path, needles)
            if found:
                hits[str(path)] = found
    return hits


def files_modified_since(since: float, roots: list[Path], skip: tuple[str, ...] = ()) -> int:
    """How many files were searched (a search that found no file proves nothing)."""
    return len({path.resolve() for root in roots for path in _files(root, since, skip)})
