"""download-photos against a local HTTP server on 127.0.0.1 serving archives made here.

Never the internet: every source is the real one with its URL, size, checksum and
counts replaced by those of a small archive generated in the test.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from featapp.cli import main
from featapp.data import download as dl
from featapp.data.dataset import Dataset, resolve_data_dir
from featapp.data.download import SOURCES, DownloadError, download_photos
from tests.helpers.archives import FILTERED_COUNTS, ArchiveServer, filtered_members, jpeg, zip_bytes


@pytest.fixture
def server():
    running = ArchiveServer()
    yield running
    running.close()


@pytest.fixture
def places(tmp_path):
    return {"dest": tmp_path / "photos", "downloads": tmp_path / "downloads"}


def _source(server: ArchiveServer, data: bytes, name: str = "tf-filtered", **changes) -> dl.Source:
    url = server.serve(f"/{name}/archive.zip", data)
    base = SOURCES[name]
    fields = {"url": url, "size": len(data)}
    if name == "tf-filtered":
        fields["counts"] = FILTERED_COUNTS
    fields.update(changes)
    return base.with_(**fields)


def _left_behind(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def test_the_real_sources_are_pinned():
    assert SOURCES["tf-filtered"].url == "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
    assert SOURCES["tf-filtered"].size == 68_606_236 and SOURCES["tf-filtered"].sha256 is None
    assert sum(SOURCES["tf-filtered"].counts.values()) == 3000
    assert SOURCES["microsoft"].size == 824_887_076
    assert SOURCES["microsoft"].sha256 == "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9"
    assert SOURCES["microsoft"].url.endswith("/kagglecatsanddogs_5340.zip")


def test_good_archive_is_downloaded_checked_and_laid_out(server, places, tmp_path):
    members = filtered_members()
    source = _source(server, zip_bytes(members))
    seen: list[tuple[str, int, int]] = []
    result = download_photos(
        source, places["dest"], downloads_dir=places["downloads"], progress=lambda *a: seen.append(a)
    )
    assert result.photos == FILTERED_COUNTS and result.skipped == 0
    assert result.downloaded_bytes == source.size and result.resumed_from == 0
    data = Dataset(places["dest"])
    assert data.splits == ("train", "validation")
    assert data.classes("train") == ("cats", "dogs")
    written = (places["dest"] / "train" / "dogs" / "dog.2.jpg").read_bytes()
    assert written == members["cats_and_dogs_filtered/train/dogs/dog.2.jpg"]
    assert not (places["dest"] / "vectorize.py").exists()
    assert {stage for stage, _, _ in seen} == {"download", "verify", "extract"}
    assert ("download", source.size, source.size) in seen
    # the partial download is gone, and no staging folder is left beside the photos
    assert list(places["downloads"].iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", "photos"]


def test_interrupted_transfer_resumes_with_a_range_request(server, places):
    data = zip_bytes(filtered_members())
    source = _source(server, data)
    server.cut_after = len(data) // 3
    with pytest.raises(DownloadError, match="after [0-9,]+ of [0-9,]+ bytes.* Run the same command again"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    part = places["downloads"] / "archive.zip.part"
    assert part.stat().st_size == len(data) // 3
    assert not places["dest"].exists()
    result = download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert server.ranges == [None, f"bytes={len(data) // 3}-"]
    assert result.resumed_from == len(data) // 3 and result.downloaded_bytes == len(data) - len(data) // 3
    assert result.photos == FILTERED_COUNTS
    assert not part.exists()


def test_server_that_ignores_range_starts_again(server, places, monkeypatch):
    data = zip_bytes(filtered_members())
    source = _source(server, data)
    places["downloads"].mkdir()
    # a stale partial file of the right length but the wrong bytes would fail the CRCs:
    # the server's full answer (200, not 206) must replace it, not be appended to it
    (places["downloads"] / "archive.zip.part").write_bytes(b"x" * 100)
    original = server.httpd.RequestHandlerClass.do_GET

    def no_ranges(handler):
        del handler.headers["Range"]
        original(handler)

    monkeypatch.setattr(server.httpd.RequestHandlerClass, "do_GET", no_ranges)
    result = download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert result.resumed_from == 0 and result.photos == FILTERED_COUNTS


def test_truncated_archive_is_refused(server, places, tmp_path):
    data = zip_bytes(filtered_members())
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(data[: len(data) - 500])
    source = _source(server, data)
    with pytest.raises(DownloadError, match="not the expected"):
        download_photos(source, places["dest"], archive=truncated)
    assert truncated.exists()  # the user's own file is never deleted
    assert not places["dest"].exists()


def test_wrong_size_on_the_server_is_refused_and_nothing_is_left(server, places, tmp_path):
    data = zip_bytes(filtered_members())
    source = _source(server, data, size=len(data) + 10)
    with pytest.raises(DownloadError, match="not the expected"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


def test_wrong_crc_is_refused_before_anything_is_extracted(server, places, tmp_path):
    members = filtered_members()
    data = bytearray(zip_bytes(members))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("cats_and_dogs_filtered/train/cats/cat.1.jpg")
    # stored, not compressed: the photo's bytes start after the 30-byte local header, name and extra
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 200] ^= 0xFF
    source = _source(server, bytes(data))
    with pytest.raises(DownloadError, match="cat.1.jpg' is damaged"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize(
    "bad_name",
    ["cats_and_dogs_filtered/../../evil.jpg", "/etc/evil.jpg", "cats_and_dogs_filtered\\train\\cats\\x.jpg"],
)
def test_path_traversal_member_is_refused(server, places, tmp_path, bad_name):
    members = filtered_members()
    members[bad_name] = jpeg(99)
    source = _source(server, zip_bytes(members))
    with pytest.raises(DownloadError, match="unsafe path"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []
    assert not (tmp_path.parent / "evil.jpg").exists()


def test_symlink_member_is_refused(server, places, tmp_path):
    buffer = io.BytesIO(zip_bytes(filtered_members()))
    with zipfile.ZipFile(buffer, "a") as zf:
        link = zipfile.ZipInfo("cats_and_dogs_filtered/train/cats/link.jpg")
        link.create_system = 3
        link.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(link, "/etc/passwd")
    source = _source(server, buffer.getvalue())
    with pytest.raises(DownloadError, match="a link"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


def test_zip_bomb_is_refused(server, places, tmp_path):
    members = filtered_members()
    members["cats_and_dogs_filtered/train/cats/cat.bomb.jpg"] = bytes(20_000_000)
    source = _source(server, zip_bytes(members, zipfile.ZIP_DEFLATED), counts={**FILTERED_COUNTS, "train/cats": 4})
    with pytest.raises(DownloadError, match="zip bomb"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    # and the total size limit, with members that each compress little
    source = _source(server, zip_bytes(filtered_members()), max_unpacked=1000)
    with pytest.raises(DownloadError, match="would unpack to"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


def test_wrong_counts_are_refused(server, places, tmp_path):
    members = filtered_members()
    del members["cats_and_dogs_filtered/validation/dogs/dog.1.jpg"]
    source = _source(server, zip_bytes(members))
    with pytest.raises(DownloadError, match=r"validation/dogs: 1\b"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


def test_no_network_says_so_and_leaves_nothing(places, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = SOURCES["tf-filtered"].with_(url=f"http://127.0.0.1:{port}/cats_and_dogs_filtered.zip")
    with pytest.raises(DownloadError, match="Cannot reach 127.0.0.1.*--archive FILE. Nothing was written"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


def test_killed_extraction_leaves_no_half_folder(server, places, tmp_path):
    source = _source(server, zip_bytes(filtered_members()))

    def kill_midway(stage: str, done: int, total: int) -> None:
        if stage == "extract" and done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_photos(source, places["dest"], downloads_dir=places["downloads"], progress=kill_midway)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]  # no photos/, no .photos.partial-*


def test_existing_photos_are_kept_unless_replace(server, places):
    places["dest"].mkdir()
    (places["dest"] / "mine.txt").write_text("keep me")
    source = _source(server, zip_bytes(filtered_members()))
    with pytest.raises(DownloadError, match="already holds files.*--replace"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert (places["dest"] / "mine.txt").exists()
    download_photos(source, places["dest"], downloads_dir=places["downloads"], replace=True)
    assert not (places["dest"] / "mine.txt").exists() and (places["dest"] / "train" / "cats").is_dir()
    assert sorted(p.name for p in places["dest"].parent.iterdir()) == ["downloads", "photos"]


def _petimages(cats: int, dogs: int) -> tuple[dict[str, bytes], int]:
    """A PetImages archive like Microsoft's: Thumbs.db files, a licence, and some broken photos."""
    members = {"CDLA-Permissive-2.0.pdf": b"%PDF-1.4 licence", "readme[1].txt": b"readme"}
    broken = 0
    for folder, count in (("Cat", cats), ("Dog", dogs)):
        members[f"PetImages/{folder}/Thumbs.db"] = b"\0" * 64
        for number in range(count):
            photo = jpeg(number + (0 if folder == "Cat" else 1000))
            if number % 4 == 1:
                photo, broken = b"", broken + 1  # an empty file, as Microsoft's archive has
            elif number % 4 == 2:
                photo, broken = photo[:40], broken + 1  # cut off in its header
            members[f"PetImages/{folder}/{number}.jpg"] = photo
    return members, broken


def test_microsoft_layout_skips_broken_photos_and_checks_the_sha256(server, places, monkeypatch):
    monkeypatch.setattr(dl, "_PETIMAGES_SPLITS", (("train", 4), ("validation", 5), ("test", 8)))
    members, broken = _petimages(8, 8)
    data = zip_bytes(members)
    source = _source(
        server, data, name="microsoft", sha256=hashlib.sha256(data).hexdigest(), counts={"Cat": 8, "Dog": 8}
    )
    result = download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert result.skipped == broken == 8
    assert result.total == 16 - broken
    assert sorted(os.listdir(places["dest"])) == ["test", "train", "validation"]
    assert sorted(os.listdir(places["dest"] / "train" / "dogs")) == ["dog.0.jpg", "dog.3.jpg"]
    assert sorted(os.listdir(places["dest"] / "validation" / "cats")) == ["cat.4.jpg"]
    assert sorted(os.listdir(places["dest"] / "test" / "cats")) == ["cat.7.jpg"]

    wrong = source.with_(sha256="0" * 64)
    with pytest.raises(DownloadError, match="sha256"):
        download_photos(wrong, places["dest"], downloads_dir=places["downloads"], replace=True)
    assert (places["dest"] / "train" / "dogs" / "dog.0.jpg").exists()  # the old photos are untouched


def test_cli_downloads_with_a_text_progress_bar(server, tmp_path, monkeypatch, capsys):
    source = _source(server, zip_bytes(filtered_members()))
    monkeypatch.setitem(SOURCES, "tf-filtered", source)
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "cache"))
    dest = tmp_path / "photos"
    assert main(["download-photos", "--dest", str(dest)]) == 0
    out, err = capsys.readouterr()
    assert "10 photos in" in out and str(dest) in out
    assert "downloading:" in err and "MB (100%)" in err and "extracting: 10/10 photos (100%)" in err
    assert "Licence:" in err


def test_cli_default_destination_is_where_the_app_looks(server, tmp_path, monkeypatch, capsys):
    data = zip_bytes(filtered_members())
    archive = tmp_path / "cats_and_dogs_filtered.zip"
    archive.write_bytes(data)
    monkeypatch.setitem(SOURCES, "tf-filtered", _source(server, data))
    monkeypatch.delenv("FEATAPP_DATA_DIR", raising=False)
    monkeypatch.setattr("featapp.data.dataset.DEFAULT_DATA_DIR", tmp_path / "no-repo-data")
    assert main(["download-photos", "--archive", str(archive)]) == 0
    assert server.ranges == []  # offline: the archive was used, the server never asked
    assert resolve_data_dir() == dl.default_destination("tf-filtered")
    assert Dataset().splits == ("train", "validation")
    assert archive.exists()


def test_cli_failure_is_one_line(tmp_path, capsys):
    assert main(["download-photos", "--archive", str(tmp_path / "missing.zip"), "--dest", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: There is no archive at")
    assert "Traceback" not in err


def _encrypted(data: bytes, name: str) -> bytes:
    """``data`` with ``name``'s "encrypted" flag set in its local and central headers, as a
    password-protected archive has it (zipfile cannot write one)."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    out[info.header_offset + 6] |= 0x1  # local header: general purpose flags at offset 6
    encoded = name.encode()
    central = 0
    while (central := data.find(b"PK\x01\x02", central + 1)) != -1:
        length = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + length] == encoded:
            out[central + 8] |= 0x1  # central header: flags at offset 8
            break
    return bytes(out)


def test_an_encrypted_member_is_refused_with_a_reason(server, places, tmp_path):
    name = "cats_and_dogs_filtered/train/cats/cat.1.jpg"
    source = _source(server, _encrypted(zip_bytes(filtered_members()), name))
    with pytest.raises(DownloadError, match="cat.1.jpg' is locked with a password"):
        download_photos(source, places["dest"], downloads_dir=places["downloads"])
    assert _left_behind(tmp_path) == []


def test_a_stalled_download_says_it_connected(places, tmp_path, monkeypatch):
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()  # accepts, never answers
    monkeypatch.setattr(dl, "_TIMEOUT_S", 1)
    port = listener.getsockname()[1]
    source = SOURCES["tf-filtered"].with_(url=f"http://127.0.0.1:{port}/cats_and_dogs_filtered.zip")
    try:
        with pytest.raises(DownloadError, match="Connected to 127.0.0.1.*stalled") as caught:
            download_photos(source, places["dest"], downloads_dir=places["downloads"])
    finally:
        listener.close()
        for connection in held:
            connection.close()
    assert "Cannot reach" not in str(caught.value)
    assert _left_behind(tmp_path) == []


def test_the_photo_folder_follows_the_umask(server, places):
    previous = os.umask(0o022)
    try:
        download_photos(
            _source(server, zip_bytes(filtered_members())), places["dest"], downloads_dir=places["downloads"]
        )
    finally:
        os.umask(previous)
    assert places["dest"].stat().st_mode & 0o777 == 0o755
    assert (places["dest"] / "train" / "dogs" / "dog.2.jpg").stat().st_mode & 0o777 == 0o644
