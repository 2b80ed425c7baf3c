"""Download the course photos in one step: ``python -m featapp download-photos``.

Two sources, both drawn from the Kaggle Dogs vs. Cats photos (Asirra, Microsoft Research):

* ``tf-filtered`` (the default): the TensorFlow tutorials' 2,000 training and 1,000
  validation photos, already in the ``<split>/<class>/`` layout. No checksum is
  published, so the archive is accepted only with the exact size, every member's CRC
  intact and the expected number of photos in each folder.
* ``microsoft``: Microsoft's 25,000 ``PetImages`` photos, pinned by sha256. About 1,600
  are not valid images; they are skipped (through :func:`featapp.engine.images.prepare_image`)
  and counted, and the rest are laid out as ``train``/``validation``/``test``.

What happens, in order, so that a failure at any step leaves nothing half-made:

1. The archive is streamed to ``<cache>/downloads/<name>.part``, outside the dataset. A
   transfer that breaks off keeps what arrived, and the next run asks the server for the
   rest (an HTTP ``Range`` request); with no network at all, nothing is left behind.
2. The whole archive is checked before anything is extracted: size, sha256 where one is
   pinned, every member's CRC, member names (no absolute paths, no ``..``, no links),
   the total uncompressed size and compression ratio (zip bombs), and the photo counts.
3. Photos are extracted into a hidden sibling folder of the destination, which is renamed
   into place only when complete (``os.replace``): a killed extraction leaves the old
   state, never a half folder.

The standard library does all of it (``urllib``, ``zipfile``): resuming and these checks
are a few lines each, and no well-kept library bundles them for ZIP archives.

>>> SOURCES["tf-filtered"].size
68606236
>>> sorted(SOURCES)
['microsoft', 'tf-filtered']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _replace_fields
from pathlib import Path, PurePosixPath

from featapp import settings
from featapp.cache import folder_mode
from featapp.errors import FeatappError

__all__ = [
    "DownloadError",
    "Source",
    "SOURCES",
    "DEFAULT_SOURCE",
    "DATA_HOME_ENV",
    "data_home",
    "default_destination",
    "download_photos",
    "DownloadResult",
    "Progress",
]

DATA_HOME_ENV = settings.DATA_HOME_ENV
DEFAULT_SOURCE = "tf-filtered"

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stage is ``"download"`` (bytes), ``"verify"`` (members)
or ``"extract"`` (photos)."""

_CHUNK = 1 << 20
_TIMEOUT_S = 30


class DownloadError(FeatappError, RuntimeError):
    """A download that cannot be done or an archive that is refused; the message says what to do."""


@dataclass(frozen=True)
class Source:
    """Where a photo archive comes from and what it must contain."""

    name: str
    url: str
    size: int
    """The archive's exact size in bytes."""
    sha256: str | None
    """The archive's sha256, where one is pinned; ``None`` means size, CRCs and counts only."""
    layout: str
    """``"splits"`` (``<top>/<split>/<class>/<photo>``) or ``"petimages"`` (``PetImages/{Cat,Dog}/<n>.jpg``)."""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Expected photos per folder of the archive, e.g. ``{"train/cats": 1000}`` or ``{"Cat": 12500}``."""
    licence: str = ""
    description: str = ""
    max_ratio: float = 50.0
    """Largest uncompressed/compressed ratio of a member (JPEGs barely compress)."""
    max_unpacked: int = 0
    """Largest total uncompressed size; 0 means four times the archive's size."""

    @property
    def filename(self) -> str:
        return PurePosixPath(urllib.parse.urlparse(self.url).path).name or f"{self.name}.zip"

    @property
    def unpacked_limit(self) -> int:
        return self.max_unpacked or 4 * self.size

    def with_(self, **changes) -> Source:
        """A copy with some fields changed (tests point a source at a local server)."""
        return _replace_fields(self, **changes)


SOURCES: dict[str, Source] = {
    "tf-filtered": Source(
        name="tf-filtered",
        url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
        size=68_606_236,
        sha256=None,
        layout="splits",
        counts={"train/cats": 1000, "train/dogs": 1000, "validation/cats": 500, "validation/dogs": 500},
        licence=(
            "none stated with the archive; a subset of the Kaggle Dogs vs. Cats photos (Microsoft Research's "
            "Asirra, photos from Petfinder.com) made for the TensorFlow tutorials"
        ),
        description="2,000 training and 1,000 validation photos (69 MB), the TensorFlow tutorials' set",
    ),
    "microsoft": Source(
        name="microsoft",
        url=(
            "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
            "kagglecatsanddogs_5340.zip"
        ),
        size=824_887_076,
        sha256="b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9",
        layout="petimages",
        counts={"Cat": 12500, "Dog": 12500},
        licence="Community Data License Agreement - Permissive 2.0 (the licence file in the archive)",
        description="25,000 photos (825 MB) of which about 1,600 are broken and skipped; split 80/10/10 here",
    ),
}

# PetImages photo numbers 0..12499 per class: a fixed split, the same on every machine.
_PETIMAGES_SPLITS = (("train", 10_000), ("validation", 11_250), ("test", 12_500))
_PETIMAGES_CLASSES = {"Cat": ("cats", "cat"), "Dog": ("dogs", "dog")}
_PETIMAGE_NAME = re.compile(r"^(\d+)\.jpg$", re.IGNORECASE)
_PHOTO_SUFFIXES = (".jpg", ".jpeg")


def data_home() -> Path:
    """Where downloaded photos go: ``$FEATAPP_DATA_HOME``, else ``$XDG_DATA_HOME/featapp``,
    else ``~/.local/share/featapp``.

    >>> os.environ[DATA_HOME_ENV] = "/tmp/featapp-data"
    >>> data_home()
    PosixPath('/tmp/featapp-data')
    >>> del os.environ[DATA_HOME_ENV]
    """
    return settings.data_home()


def default_destination(source: str = DEFAULT_SOURCE) -> Path:
    """The folder a source is laid out in when no ``--dest`` is given; the dataset
    lookup (:func:`featapp.data.dataset.resolve_data_dir`) checks these folders too.

    >>> default_destination("tf-filtered").name
    'cats_vs_dogs'
    """
    return data_home() / ("cats_vs_dogs" if source == DEFAULT_SOURCE else f"cats_vs_dogs_{source}")


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_photos` made."""

    destination: Path
    photos: dict[str, int]
    """Photos written per ``<split>/<class>``."""
    skipped: int
    """Broken photos left out (``microsoft`` only)."""
    downloaded_bytes: int
    """Bytes fetched by this run (0 with ``--archive`` or when the archive was complete)."""
    resumed_from: int
    """Bytes kept from an earlier, interrupted run."""

    @property
    def total(self) -> int:
        return sum(self.photos.values())


def _quiet(stage: str, done: int, total: int) -> None:
    pass


# -- 1. fetching ---------------------------------------------------------------------------------


def _fetch(source: Source, part: Path, progress: Progress) -> tuple[int, int]:
    """Bring ``part`` up to the source's size; returns (bytes fetched now, bytes kept from before)."""
    have = part.stat().st_size if part.exists() else 0
    if have > source.size:
        part.unlink()
        have = 0
    kept = have
    if have == source.size:
        return 0, kept
    host = urllib.parse.urlparse(source.url).netloc or source.url
    request = urllib.request.Request(source.url, headers={"User-Agent": "featapp"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    created = not part.exists()
    fetched = 0
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            status = getattr(response, "status", 200)
            if have and status != 206:
                have = kept = 0  # the server ignored the Range: start again
            elif have and not _range_starts_at(response.headers.get("Content-Range", ""), have):
                raise DownloadError(f"{host} sent the wrong part of {source.filename}; run the command again.")
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and have + int(length) != source.size:
                raise DownloadError(
                    f"{host} offers {source.filename} with {have + int(length):,} bytes, not the expected "
                    f"{source.size:,}: it has changed, so featapp refuses it."
                )
            with part.open("ab" if have else "wb") as out:
                done = have
                progress("download", done, source.size)
                while True:
                    chunk = response.read(min(_CHUNK, source.size - done + 1))
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    fetched += len(chunk)
                    if done > source.size:
                        raise DownloadError(
                            f"{host} sent more than the expected {source.size:,} bytes of {source.filename}; "
                            "featapp refuses it."
                        )
                    progress("download", done, source.size)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        if created and fetched == 0:
            part.unlink(missing_ok=True)
        if isinstance(err, urllib.error.HTTPError):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{host} answered {err.code} ({err.reason}) for {source.url}.") from None
        got = part.stat().st_size if part.exists() else 0
        if got:
            raise DownloadError(
                f"The download from {host} stopped after {got:,} of {source.size:,} bytes ({reason}). "
                "Run the same command again to fetch the rest."
            ) from None
        if not isinstance(err, urllib.error.URLError):
            # urllib wraps what fails while connecting in URLError; anything else came after
            # the server had accepted the request.
            raise DownloadError(
                f"Connected to {host}, but the download stalled before any photo data came ({reason}); the "
                f"server may be busy. Run the same command again later, or download {source.url} on another "
                "machine and pass the file with --archive FILE. Nothing was written."
            ) from None
        raise DownloadError(
            f"Cannot reach {host} ({reason}). Check the network connection, or download {source.url} "
            "on another machine and pass the file with --archive FILE. Nothing was written."
        ) from None
    final = part.stat().st_size
    if final != source.size:
        raise DownloadError(
            f"The download from {host} ended after {final:,} of {source.size:,} bytes. "
            "Run the same command again to fetch the rest."
        )
    return fetched, kept


def _range_starts_at(content_range: str, start: int) -> bool:
    match = re.match(r"bytes (\d+)-", content_range.strip())
    return match is not None and int(match.group(1)) == start


# -- 2. checking ----------------------------------------------------------------------------------


def _sha256(path: Path, progress: Progress) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress("verify", done, size)
    return digest.hexdigest()


def _unsafe_name(name: str) -> bool:
    if not name or "\\" in name or "\0" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in PurePosixPath(name).parts)


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


_ENCRYPTED = 0x1
"""The ZIP flag bit of a password-protected member (PKWARE's APPNOTE, "general purpose bit 0")."""


def _plan(source: Source, infos: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, where it goes under the destination) for every photo, after refusing unsafe members."""
    total = 0
    for info in infos:
        if _unsafe_name(info.filename):
            raise DownloadError(f"The archive holds an unsafe path '{info.filename}'; featapp refuses it.")
        if _is_link(info):
            raise DownloadError(f"The archive holds a link '{info.filename}'; featapp refuses it.")
        if info.flag_bits & _ENCRYPTED:
            raise DownloadError(
                f"The archive's member '{info.filename}' is locked with a password, which the real photo "
                "archives never are: this is not the archive featapp expects, so it refuses it. Download the "
                "photos again from the source."
            )
        total += info.file_size
        if info.file_size > (1 << 20) and info.file_size > source.max_ratio * max(1, info.compress_size):
            raise DownloadError(
                f"'{info.filename}' would unpack to {info.file_size:,} bytes from {info.compress_size:,}: "
                "this looks like a zip bomb, so featapp refuses the archive."
            )
    if total > source.unpacked_limit:
        raise DownloadError(
            f"The archive would unpack to {total:,} bytes, more than the {source.unpacked_limit:,} expected: "
            "featapp refuses it."
        )
    plan: list[tuple[zipfile.ZipInfo, str]] = []
    found: dict[str, int] = {}
    for info in infos:
        if info.is_dir():
            continue
        path = PurePosixPath(info.filename)
        if source.layout == "splits":
            # <top>/<split>/<class>/<photo>
            if len(path.parts) != 4 or path.suffix.lower() not in _PHOTO_SUFFIXES or path.name.startswith("."):
                continue
            folder = "/".join(path.parts[1:3])
            target = "/".join(path.parts[1:])
        else:
            # PetImages/<Cat|Dog>/<n>.jpg, laid out as <split>/<cats|dogs>/<cat|dog>.<n>.jpg
            if len(path.parts) != 3 or path.parts[1] not in _PETIMAGES_CLASSES:
                continue
            match = _PETIMAGE_NAME.match(path.name)
            if not match:
                continue
            folder = path.parts[1]
            number = int(match.group(1))
            split = next((name for name, end in _PETIMAGES_SPLITS if number < end), None)
            if split is None:
                continue
            class_dir, prefix = _PETIMAGES_CLASSES[folder]
            target = f"{split}/{class_dir}/{prefix}.{number}.jpg"
        if folder not in source.counts:
            continue
        found[folder] = found.get(folder, 0) + 1
        plan.append((info, target))
    if found != dict(source.counts):
        expected = ", ".join(f"{name}: {count:,}" for name, count in source.counts.items())
        got = ", ".join(f"{name}: {found.get(name, 0):,}" for name in source.counts) or "none"
        raise DownloadError(
            f"The archive does not hold the expected photos (expected {expected}; found {got}); featapp refuses it."
        )
    targets = [target for _, target in plan]
    if len(set(targets)) != len(targets):
        raise DownloadError("The archive holds the same photo twice; featapp refuses it.")
    return plan


def _verify(source: Source, archive: Path, progress: Progress) -> None:
    size = archive.stat().st_size
    if size != source.size:
        raise DownloadError(
            f"'{archive.name}' has {size:,} bytes, not the expected {source.size:,}: it is cut off or a "
            "different file, so featapp refuses it."
        )
    if source.sha256 is not None and _sha256(archive, progress) != source.sha256:
        raise DownloadError(f"'{archive.name}' does not have the expected sha256 {source.sha256[:16]}...; refused.")


@contextlib.contextmanager
def _open_zip(archive: Path) -> Iterator[zipfile.ZipFile]:
    try:
        with zipfile.ZipFile(archive) as zf:
            yield zf
    except zipfile.BadZipFile as err:
        raise DownloadError(f"'{archive.name}' is not a readable ZIP archive ({err}); featapp refuses it.") from None


def _check_crcs(zf: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, str]], progress: Progress) -> None:
    """Read every member through once: zipfile checks each CRC and size when a member is read to its end."""
    infos = zf.infolist()
    for number, info in enumerate(infos, start=1):
        if not info.is_dir():
            try:
                with zf.open(info) as member:
                    while member.read(_CHUNK):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
                raise DownloadError(
                    f"The archive's member '{info.filename}' is damaged ({err}); featapp refuses the archive."
                ) from None
        progress("verify", number, len(infos))


# -- 3. extracting --------------------------------------------------------------------------------


def _extract(
    source: Source,
    zf: zipfile.ZipFile,
    plan: list[tuple[zipfile.ZipInfo, str]],
    staging: Path,
    progress: Progress,
) -> tuple[dict[str, int], int]:
    written: dict[str, int] = {}
    skipped = 0
    check = _image_check() if source.layout == "petimages" else None
    root = staging.resolve()
    for number, (info, target) in enumerate(plan, start=1):
        out = (staging / target).resolve()
        if root not in out.parents:  # cannot happen after _plan; checked again where it matters
            raise DownloadError(f"The archive's member '{info.filename}' points outside the folder; refused.")
        data = zf.read(info)
        if check is not None and not check(data):
            skipped += 1
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("xb") as handle:
                handle.write(data)
            folder = str(PurePosixPath(target).parent)
            written[folder] = written.get(folder, 0) + 1
        progress("extract", number, len(plan))
    return written, skipped


def _image_check() -> Callable[[bytes], bool]:
    from featapp.engine.images import ImageError, InputSpec, prepare_image

    spec = InputSpec(32, 32, 3)  # decoding is the check; the size only keeps it cheap

    def check(data: bytes) -> bool:
        try:
            prepare_image(data, spec)
        except ImageError:
            return False
        return True

    return check


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def download_photos(
    source: str | Source = DEFAULT_SOURCE,
    dest: str | os.PathLike | None = None,
    *,
    archive: str | os.PathLike | None = None,
    replace: bool = False,
    keep_archive: bool = False,
    downloads_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> DownloadResult:
    """Download (or take ``archive``), verify and lay out a photo source at ``dest``.

    ``dest`` defaults to :func:`default_destination`; a folder that already holds files is
    left alone unless ``replace``. The partial download lives in ``downloads_dir``
    (default ``<featapp cache>/downloads``) and is removed once the photos are in place,
    unless ``keep_archive``. Raises :class:`DownloadError` with a message for the user.

    >>> download_photos("tf-filtered", "/tmp/photos")         # doctest: +SKIP
    DownloadResult(destination=PosixPath('/tmp/photos'), photos={'train/cats': 1000, ...}, ...)
    """
    if isinstance(source, str):
        if source not in SOURCES:
            raise DownloadError(f"Unknown photo source '{source}'; choose one of: {', '.join(sorted(SOURCES))}.")
        source = SOURCES[source]
    report = progress or _quiet
    destination = Path(dest).expanduser() if dest is not None else default_destination(source.name)
    if _has_files(destination) and not replace:
        raise DownloadError(
            f"'{destination}' already holds files; choose another --dest, or pass --replace to replace them."
        )
    if destination.exists() and not destination.is_dir():
        raise DownloadError(f"'{destination}' is a file, not a folder; choose another --dest.")

    fetched = kept = 0
    part: Path | None = None
    made_folder: Path | None = None
    if archive is not None:
        archive_path = Path(archive).expanduser()
        if not archive_path.is_file():
            raise DownloadError(f"There is no archive at '{archive_path}'.")
    else:
        from featapp.cache import default_cache_dir

        folder = Path(downloads_dir).expanduser() if downloads_dir is not None else default_cache_dir() / "downloads"
        made_folder = None if folder.exists() else folder
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{source.filename}.part"
        try:
            fetched, kept = _fetch(source, part, report)
        except DownloadError:
            _remove_if_empty(made_folder)
            raise
        archive_path = part

    try:
        _verify(source, archive_path, report)
        with _open_zip(archive_path) as zf:
            plan = _plan(source, zf.infolist())
            _check_crcs(zf, plan, report)
            destination.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
            # mkdtemp's folder is private (0700); the photos are for a server that may run as
            # another user of the group, so the folder gets what mkdir would have given it.
            staging.chmod(folder_mode())
            try:
                written, skipped = _extract(source, zf, plan, staging, report)
                _move_into_place(staging, destination)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except DownloadError:
        if part is not None:
            part.unlink(missing_ok=True)  # a complete but refused download: fetching it again is the fix
            _remove_if_empty(made_folder)
        raise
    if part is not None and not keep_archive:
        part.unlink(missing_ok=True)
    return DownloadResult(destination, dict(sorted(written.items())), skipped, fetched, kept)


def _remove_if_empty(folder: Path | None) -> None:
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _move_into_place(staging: Path, destination: Path) -> None:
    """Rename the finished folder over ``destination``; an old folder is moved aside first, then removed."""
    old: Path | None = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, old)
    try:
        os.replace(staging, destination)
    except OSError:
        if old is not None:
            os.replace(old, destination)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
