"""featapp: look inside a small convnet, layer by layer. Run with ``streamlit run streamlit_app.py``.

This file starts the server; ``app_script.py`` is the script every browser session
runs. The server is a Streamlit ``st.App`` so that it can start work before any browser
connects: a plain script runs only for a visitor, and the first one waited for the
model and the gallery's predictions after their page had loaded (BENCHMARKS.md, cold
start). It also keeps uploaded photos in memory (:func:`keep_uploads_in_memory`).
"""

import threading
from contextlib import asynccontextmanager

import streamlit as st
from starlette.formparsers import MultiPartParser


def keep_uploads_in_memory() -> None:
    """Starlette writes an uploaded file over 1 MB (``spool_max_size``) to a temporary
    file, and this app promises that students' photos never touch the disk. Streamlit
    refuses uploads over ``server.maxUploadSize`` (MB), so a spool that size keeps every
    accepted upload in memory."""
    limit_mb = int(st.get_option("server.maxUploadSize"))
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, (limit_mb + 1) * 1024 * 1024)


def _warm_up() -> None:
    from featapp.pages.shared import warm_up

    try:
        print(warm_up(), flush=True)
    except Exception as err:  # noqa: BLE001 - a thread's last stop; the first visitor retries and sees the error
        print(f"featapp: could not prepare before the first visitor: {type(err).__name__}: {err}", flush=True)


@asynccontextmanager
async def _prepare_in_background(_app):
    keep_uploads_in_memory()  # here, not at import: the command line's options are parsed by now
    # A thread, so the server answers at once; a visitor who comes early waits only for what is left.
    threading.Thread(target=_warm_up, name="featapp-warm-up", daemon=True).start()
    yield


app = st.App("app_script.py", lifespan=_prepare_in_background)
