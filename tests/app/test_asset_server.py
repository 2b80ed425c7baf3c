"""featapp.app.asset_server: Streamlit's frontend files answered from memory, everything else passed on.

Driven as ASGI (scope, receive, send) over real files: Streamlit's own ``static`` folder and a
small one made here. The app behind it records what reaches it.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from streamlit import file_util

from featapp.app.asset_server import CACHE_CONTROL, SHELF_PATH, FrontendAssets, PictureShelf
from tests.helpers import browsing

STREAMLIT_STATIC = Path(file_util.get_static_dir()) / "static"


class Behind:
    """The app behind the middleware (Streamlit's, in the real server): says who reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"from behind"})


def request(app, path: str, *, method: str = "GET", headers: dict[str, str] | None = None):
    """(status, headers, body) of one HTTP request to the ASGI ``app``."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "index.abc123.js").write_text("console.log('featapp');\n" * 400)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "font.woff2").write_bytes(bytes(range(256)) * 20)
    (tmp_path / "js" / "tiny.js").write_text("x")
    return tmp_path


def test_a_frontend_file_comes_from_memory_compressed_and_cacheable(folder):
    behind = Behind()
    assets = FrontendAssets(behind, directory=folder)
    original = (folder / "js" / "index.abc123.js").read_bytes()
    status, headers, body = request(assets, "/static/js/index.abc123.js", headers={"Accept-Encoding": "gzip, br"})
    assert status == 200 and behind.paths == []
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == original
    assert len(body) < len(original) / 5 and headers["content-length"] == str(len(body))
    assert headers["cache-control"] == CACHE_CONTROL and headers["vary"] == "Accept-Encoding"
    assert headers["content-type"].startswith(("application/javascript", "text/javascript"))
    # A client that does not take gzip gets the bytes as they are on disk.
    status, headers, plain = request(assets, "/static/js/index.abc123.js")
    assert status == 200 and plain == original and "content-encoding" not in headers


def test_files_that_do_not_compress_are_sent_as_they_are(folder):
    assets = FrontendAssets(Behind(), directory=folder)
    for name in ("media/font.woff2", "js/tiny.js"):  # a font (compressed already); a file too small to gain
        status, headers, body = request(assets, f"/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and body == (folder / name).read_bytes() and "content-encoding" not in headers


def test_a_browser_that_has_the_file_gets_304_and_head_gets_no_body(folder):
    assets = FrontendAssets(Behind(), directory=folder)
    _, headers, _ = request(assets, "/static/js/index.abc123.js")
    status, _, body = request(assets, "/static/js/index.abc123.js", headers={"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""
    status, head_headers, body = request(assets, "/static/js/index.abc123.js", method="HEAD")
    assert status == 200 and body == b"" and head_headers["content-length"] == headers["content-length"]


@pytest.mark.parametrize(
    "path",
    [
        "/",  # the page itself: Streamlit's, never cached
        "/static/js/missing.js",  # not a file here: Streamlit answers (its page, for client-side routes)
        "/static/../js/index.abc123.js",  # no path from a request reaches the file system
        "/static/js/../js/index.abc123.js",
        "/static//js/index.abc123.js",
        "/media/abc.png",  # the app's pictures
        "/_stcore/health",
        "/js/index.abc123.js",
    ],
)
def test_everything_else_reaches_streamlit(folder, path):
    behind = Behind()
    status, _, body = request(FrontendAssets(behind, directory=folder), path)
    assert (status, body, behind.paths) == (299, b"from behind", [path])


def test_uploads_and_other_methods_reach_streamlit(folder):
    behind = Behind()
    status, _, _ = request(FrontendAssets(behind, directory=folder), "/static/js/index.abc123.js", method="POST")
    assert status == 299 and behind.paths == ["/static/js/index.abc123.js"]


def test_under_a_url_path_only_that_path_is_answered(folder):
    behind = Behind()
    assets = FrontendAssets(behind, directory=folder, base_path=lambda: "/course/")
    assert request(assets, "/course/static/js/index.abc123.js")[0] == 200
    assert request(assets, "/static/js/index.abc123.js")[0] == 299 and behind.paths == ["/static/js/index.abc123.js"]


def test_every_file_streamlit_names_in_its_page_is_answered_as_streamlit_has_it():
    """Against the installed Streamlit: the scripts its page asks for are all found, byte for byte."""
    page = (STREAMLIT_STATIC.parent / "index.html").read_text(encoding="utf-8")
    named = re.findall(r'(?:src|href)="\./static/([^"]+)"', page)
    assert len(named) > 10
    assets = FrontendAssets(Behind(), directory=STREAMLIT_STATIC)
    for name in named:
        status, headers, body = request(assets, f"/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert status == 200, name
        sent = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
        assert sent == (STREAMLIT_STATIC / name).read_bytes(), name


# -- the picture shelf ----------------------------------------------------------------------------------


def test_a_shelved_picture_is_served_at_its_url_under_the_base_path(folder):
    shelf = PictureShelf()
    png = b"\x89PNG fake picture bytes" * 10
    url = shelf.url(png)
    assert url == SHELF_PATH + PictureShelf.name_of(png) and shelf.url(png) == url  # named by content
    behind = Behind()
    assets = FrontendAssets(behind, directory=folder, base_path=lambda: "course", shelf=shelf)
    status, headers, body = request(assets, "/course" + url, headers={"Accept-Encoding": "gzip"})
    assert (status, body) == (200, png) and headers["content-type"] == "image/png"
    assert headers["cache-control"] == CACHE_CONTROL and "content-encoding" not in headers
    status, _, _ = request(assets, "/course" + url, headers={"If-None-Match": headers["etag"]})
    assert status == 304
    # Not on the shelf: a 404 (Streamlit would answer with its page, which no <img> can show).
    status, _, body = request(assets, "/course" + SHELF_PATH + "0" * 32 + ".png")
    assert status == 404 and b"reload" in body
    # Outside the base path: Streamlit's to answer.
    assert request(assets, url)[0] == 299 and behind.paths == [url]


def test_the_shelf_makes_room_and_a_page_puts_back_what_it_shows():
    shelf = PictureShelf(max_bytes=3_000)
    pictures = [bytes([i]) * 1_000 for i in range(5)]
    urls = [shelf.url(p) for p in pictures]
    assert len(shelf) == 3 and shelf.nbytes == 3_000  # the two added first have gone
    assert shelf.get(urls[0].removeprefix(SHELF_PATH)) is None
    assert shelf.get(urls[4].removeprefix(SHELF_PATH)).body == pictures[4]
    # A rerun showing the first picture again puts it back (and the least recently used goes).
    assert shelf.url(pictures[0], name=PictureShelf.name_of(pictures[0])) == urls[0]
    assert shelf.get(urls[0].removeprefix(SHELF_PATH)).body == pictures[0]
    assert shelf.get(urls[2].removeprefix(SHELF_PATH)) is None and len(shelf) == 3


def test_without_streamlits_folder_the_shelf_is_still_served(tmp_path):
    shelf = PictureShelf()
    url = shelf.url(b"picture")
    assets = FrontendAssets(Behind(), directory=tmp_path / "missing", shelf=shelf)
    assert request(assets, url)[0] == 200 and request(assets, "/static/js/index.js")[0] == 299


# -- in the running app ---------------------------------------------------------------------------------


@pytest.mark.parametrize("base_path", ["", "course/featapp"])
def test_the_running_app_answers_streamlits_scripts_from_memory(tmp_path, base_path):
    """``streamlit run streamlit_app.py`` puts the middleware in front of Streamlit (it is made on
    the first script request, not at start): a script the page names comes gzip-compressed with
    this module's headers, which Streamlit's own file serving does not send, and a name the shelf
    does not hold is a 404, not Streamlit's page."""
    env = browsing.server_env(FEATAPP_CACHE_DIR=str(tmp_path / "cache"))
    with browsing.streamlit_server(tmp_path / "streamlit.log", env, base_path=base_path) as url:
        with urllib.request.urlopen(url + "/", timeout=30) as response:
            page = response.read().decode("utf-8")
        name = re.findall(r'src="\./static/([^"]+\.js)"', page)[0]
        scripted = urllib.request.Request(f"{url}/static/{name}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(scripted, timeout=30) as response:
            headers, body = response.headers, response.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}{SHELF_PATH}{'0' * 32}.png", timeout=30)
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Cache-Control"] == CACHE_CONTROL
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["ETag"])
    assert gzip.decompress(body) == (STREAMLIT_STATIC / name).read_bytes()
    assert missing.value.code == 404
