"""Streamlit's frontend files and the app's shared pictures, answered from memory before
the request reaches Streamlit.

Every new browser asks for the page's scripts, styles and font: 62 files, 2.3 MB, named by
their content's hash. Streamlit serves them with Starlette's ``StaticFiles``, behind its
session, security and proxy middleware, reading each file in a worker thread on every
request, uncompressed. That was most of the server's CPU for a new browser, so a class
opening the app at once queued behind it (``bench/results/server_cpu.md``, "open_app"). Starlette has no
in-memory, precompressed file responder, so this small ASGI middleware is one: it answers
``GET``/``HEAD`` for the files under Streamlit's ``static/`` folder, each read and
gzip-compressed once, and passes every other request through untouched.

It answers only names it found in that folder when it started (a dictionary lookup: no path
from a request ever reaches the file system), with the headers Streamlit gives the same
files (``Cache-Control: public, immutable``: the names change when the content does).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FrontendAssets", "PictureShelf", "Asset", "CACHE_CONTROL", "COMPRESSIBLE", "SHELF_PATH"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CACHE_CONTROL = "public, immutable, max-age=31536000"
"""What Streamlit sends for its hashed bundles too (a year; the name changes with the content)."""
COMPRESSIBLE = (".js", ".css", ".json", ".svg", ".map", ".txt", ".html")
"""Text, which gzip shrinks to about a third; fonts and pictures are compressed already."""
SHELF_PATH = "/app/static/_featapp/"
"""Where a :class:`PictureShelf`'s pictures are served (under ``server.baseUrlPath``)."""
_GZIP_LEVEL = 6


@dataclass(frozen=True)
class Asset:
    """One file, as sent: its bytes, their gzip form (``None`` where that would not help) and headers."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "text/javascript"):
        content_type += "; charset=utf-8"
    gzipped = None
    if path.suffix in COMPRESSIBLE and len(body) > 1000:
        packed = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    return Asset(body, gzipped, content_type, etag)


class PictureShelf:
    """Pictures held in memory, each at a URL named by its content (:data:`SHELF_PATH`).

    Bounded by ``max_bytes``: the least recently added or served go first. A page shows a
    picture with :meth:`url` on every rerun, which puts it back if it had gone, so a URL
    the page sends is always answered. Thread-safe (pages run in threads; the server in its
    event loop)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, Asset] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def name_of(data: bytes, suffix: str = ".png") -> str:
        """The file name ``data`` is served under: its content hash."""
        return hashlib.blake2b(data, digest_size=16).hexdigest() + suffix

    def url(self, data: bytes, *, name: str | None = None, content_type: str = "image/png") -> str:
        """The URL path ``data`` is served at (put on the shelf if it is not there).
        ``name``: :meth:`name_of` computed before (the pages keep it, so a rerun hashes nothing)."""
        name = name or self.name_of(data)
        with self._lock:
            if name in self._items:
                self._items.move_to_end(name)
            else:
                etag = '"' + name.split(".")[0] + '"'
                self._items[name] = Asset(data, None, content_type, etag)
                self._bytes += len(data)
                while self._bytes > self.max_bytes and len(self._items) > 1:
                    _, gone = self._items.popitem(last=False)
                    self._bytes -= len(gone.body)
        return SHELF_PATH + name

    def get(self, name: str) -> Asset | None:
        """The picture served as ``name``, or ``None``."""
        with self._lock:
            found = self._items.get(name)
            if found is not None:
                self._items.move_to_end(name)
            return found

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """The bytes held."""
        return self._bytes


SHELF = PictureShelf()
"""The process's shelf: what the pages put there, the server's middleware serves."""


class FrontendAssets:
    """ASGI middleware: answer ``<base>/static/<file>`` from memory for every file found
    under ``directory`` (Streamlit's ``static/static`` folder), and ``<base>/app/static/_featapp/<name>``
    from ``shelf``; pass the rest to ``app``.

    ``base_path`` is called on the first request (Streamlit parses ``server.baseUrlPath``
    after this object is built). A file is read and compressed when it is first asked for,
    then kept: the bundle a browser loads is a few MB, not the whole 25 MB folder.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        directory: Path | None,
        base_path: Callable[[], str] = lambda: "",
        shelf: PictureShelf | None = None,
    ) -> None:
        self.app = app
        self.shelf = shelf
        self.directory = None if directory is None else Path(directory)
        self._base_path = base_path
        self._prefix: str | None = None
        self._shelf_prefix = SHELF_PATH
        self._names: frozenset[str] = frozenset(
            ()
            if self.directory is None or not self.directory.is_dir()
            else (path.relative_to(self.directory).as_posix() for path in self.directory.rglob("*") if path.is_file())
        )
        self._assets: dict[str, Asset] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> frozenset[str]:
        """The files it answers for, relative to ``directory``."""
        return self._names

    def _prefix_now(self) -> str:
        if self._prefix is None:
            base = (self._base_path() or "").strip("/")
            self._prefix = f"/{base}/static/" if base else "/static/"
            self._shelf_prefix = f"/{base}{SHELF_PATH}" if base else SHELF_PATH
        return self._prefix

    def asset(self, name: str) -> Asset | None:
        """The file ``name`` (relative to ``directory``), loaded once; ``None`` if it is not one of them."""
        if name not in self._names:
            return None
        found = self._assets.get(name)
        if found is None:
            with self._lock:
                found = self._assets.get(name)
                if found is None:
                    found = self._assets[name] = _load(self.directory / name)  # type: ignore[operator]
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        prefix = self._prefix_now()
        if path.startswith(prefix):
            asset = self.asset(path[len(prefix) :])
        elif self.shelf is not None and path.startswith(self._shelf_prefix):
            asset = self.shelf.get(path[len(self._shelf_prefix) :])
            if asset is None:  # the shelf's own path: Streamlit would answer with its page
                await _not_found(send)
                return
        else:
            asset = None
        if asset is None:
            await self.app(scope, receive, send)
            return
        await _respond(asset, scope, send)


async def _not_found(send: Send) -> None:
    body = b"Not on the picture shelf (the page that named it is out of date: reload it)."
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _respond(asset: Asset, scope: Scope, send: Send) -> None:
    headers = [
        (b"cache-control", CACHE_CONTROL.encode()),
        (b"etag", asset.etag.encode()),
        (b"vary", b"Accept-Encoding"),
    ]
    if asset.etag in _header(scope, b"if-none-match"):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    body = asset.body
    if asset.gzipped is not None and "gzip" in _header(scope, b"accept-encoding").lower():
        body = asset.gzipped
        headers.append((b"content-encoding", b"gzip"))
    headers += [(b"content-type", asset.content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
