"""The server's half of the app: what ``streamlit run streamlit_app.py`` builds once per process.

* :func:`lifespan`: when the server starts it loads the model and the first gallery in a
  thread, before any browser connects (a plain script runs only for a visitor, so the first
  one would wait for all of that after their page loaded), and keeps uploaded photos in memory.
* :func:`middleware`: Streamlit's frontend files and the pages' shared pictures answered from
  memory (:mod:`featapp.app.asset_server`), made on the first request for a static file.

Nothing here runs per session; ``streamlit_app.py`` holds the session's entry.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st

__all__ = [
    "GRADIENTS_AFTER_S",
    "MALLOC_ARENAS",
    "fewer_malloc_arenas",
    "keep_uploads_in_memory",
    "lifespan",
    "middleware",
]

GRADIENTS_AFTER_S = 5.0
"""Seconds between the first gallery being ready and the gradient model's load (see
:func:`featapp.app.chrome.warm_up_gradients`): a visitor who came at once has their gallery by then."""


MALLOC_ARENAS = 2
"""glibc's malloc arenas for the server process (its default is 8 per core)."""

_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def fewer_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Limit glibc to ``count`` malloc arenas, as ``MALLOC_ARENA_MAX`` would at start.

    Every thread that allocates while others do gets an arena of its own, and memory freed
    in one arena serves only that arena's threads: with one script thread per student and
    ONNX Runtime's own threads, a class leaves hundreds of MB freed but kept in arenas no
    later request uses (bench/results/load_50_heavy.md has the run with and without). Called
    at import, before the sessions' threads exist; an explicit ``MALLOC_ARENA_MAX`` wins.
    Returns whether the limit was set (only with glibc)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_ARENA_MAX, count))


def keep_uploads_in_memory() -> None:
    """Starlette, Streamlit's web server, writes an uploaded file over 1 MB
    (``spool_max_size``) to a temporary file, and this app promises that students' photos
    never touch the disk. Streamlit refuses uploads over ``server.maxUploadSize`` (MB), so
    a spool that size keeps every accepted upload in memory."""
    from starlette.formparsers import MultiPartParser

    limit_mb = int(st.get_option("server.maxUploadSize"))
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, (limit_mb + 1) * 1024 * 1024)


def _warm_up() -> None:
    from featapp.app.chrome import warm_up, warm_up_gradients

    try:
        print(warm_up(), flush=True)
        time.sleep(GRADIENTS_AFTER_S)
        print(warm_up_gradients(), flush=True)
    except Exception as err:  # noqa: BLE001 - a thread's last stop; the first visitor retries and sees the error
        print(f"featapp: could not prepare before the first visitor: {type(err).__name__}: {err}", flush=True)


@asynccontextmanager
async def lifespan(_app: Any):
    keep_uploads_in_memory()  # here, not at import: the command line's options are parsed by now
    # A thread, so the server answers at once; a visitor who comes early waits only for what is left.
    threading.Thread(target=_warm_up, name="featapp-warm-up", daemon=True).start()
    yield


def middleware() -> list:
    """The ASGI middleware in front of Streamlit's: :class:`AssetsOnFirstUse`."""
    from starlette.middleware import Middleware

    return [Middleware(AssetsOnFirstUse)]


class AssetsOnFirstUse:
    """:class:`featapp.app.asset_server.FrontendAssets`, made on the first request for a static
    file. Importing the library and numpy when the server builds its middleware made every
    start answer later; by the first browser's first script request the warm-up thread has
    imported them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.assets: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.assets is None and (scope["type"] != "http" or "/static/" not in scope.get("path", "")):
            await self.app(scope, receive, send)  # the health check, the page, websockets, lifespan
            return
        if self.assets is None:
            from pathlib import Path

            from streamlit import file_util

            from featapp.app.asset_server import SHELF, FrontendAssets

            folder = Path(file_util.get_static_dir()) / "static"  # a missing one leaves them to Streamlit
            base_path = lambda: st.get_option("server.baseUrlPath")  # noqa: E731 - read on the first request
            self.assets = FrontendAssets(self.app, directory=folder, base_path=base_path, shelf=SHELF)
        await self.assets(scope, receive, send)
