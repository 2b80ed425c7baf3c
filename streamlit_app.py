"""featapp: look inside a small convnet, layer by layer. Run with ``streamlit run streamlit_app.py``.

Streamlit reads this file two ways:

* ``streamlit run`` imports it to find the server, ``app`` (an ``st.App``). When the
  server starts it loads the model and the first gallery in a thread, before any browser
  connects: a plain script runs only for a visitor, and the first one used to wait for
  all of that after their page had loaded (BENCHMARKS.md, cold start). It also keeps
  uploaded photos in memory (:func:`keep_uploads_in_memory`) and answers the requests for
  Streamlit's own scripts from memory (:func:`frontend_assets`).
* For every browser session it runs the file as the app's script (``__name__`` is
  ``"__main__"``, in AppTest too): the model or a page that says how to fix it,
  ``st.navigation`` over the pages in ``featapp/pages/``, and the sidebar.
"""

import threading
from contextlib import asynccontextmanager

import streamlit as st


def run_session() -> None:
    from featapp.app import chrome, widget_guard

    widget_guard.install()  # before a browser's malformed component value can reach a rerun
    st.set_page_config(page_title="featapp: look inside a convnet", page_icon="🔎", layout="wide")
    model = chrome.model_or_error_page()
    pages = [
        st.Page(chrome.PAGE_FILES["gallery"], title="Gallery", icon="🖼️", url_path="gallery", default=True),
        st.Page(chrome.PAGE_FILES["feature_map"], title="Feature map", icon="🔥", url_path="feature_map"),
        st.Page(chrome.PAGE_FILES["layer_grid"], title="Layer grid", icon="🔲", url_path="layer_grid"),
        st.Page(chrome.PAGE_FILES["neuron"], title="One neuron, many images", icon="🎯", url_path="neuron"),
        st.Page(chrome.PAGE_FILES["classes"], title="Cats vs dogs", icon="🐾", url_path="classes"),
        st.Page(chrome.PAGE_FILES["model"], title="Model", icon="🧠", url_path="model"),
    ]
    page = st.navigation(pages)
    chrome.sidebar(model)
    page.run()


def keep_uploads_in_memory() -> None:
    """Starlette, Streamlit's web server, writes an uploaded file over 1 MB
    (``spool_max_size``) to a temporary file, and this app promises that students' photos
    never touch the disk. Streamlit refuses uploads over ``server.maxUploadSize`` (MB), so
    a spool that size keeps every accepted upload in memory."""
    from starlette.formparsers import MultiPartParser

    limit_mb = int(st.get_option("server.maxUploadSize"))
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, (limit_mb + 1) * 1024 * 1024)


# Seconds between the first gallery being ready and the gradient model's load (see
# featapp.app.chrome.warm_up_gradients): a visitor who came at once has their gallery by then.
GRADIENTS_AFTER_S = 5.0


def _warm_up() -> None:
    import time

    from featapp.app.chrome import warm_up, warm_up_gradients

    try:
        print(warm_up(), flush=True)
        time.sleep(GRADIENTS_AFTER_S)
        print(warm_up_gradients(), flush=True)
    except Exception as err:  # noqa: BLE001 - a thread's last stop; the first visitor retries and sees the error
        print(f"featapp: could not prepare before the first visitor: {type(err).__name__}: {err}", flush=True)


@asynccontextmanager
async def _prepare_in_background(_app):
    keep_uploads_in_memory()  # here, not at import: the command line's options are parsed by now
    # A thread, so the server answers at once; a visitor who comes early waits only for what is left.
    threading.Thread(target=_warm_up, name="featapp-warm-up", daemon=True).start()
    yield


def frontend_assets() -> list:
    """Streamlit's frontend files served from memory, compressed, and the pages' shared
    pictures (:mod:`featapp.app.asset_server`)."""
    from starlette.middleware import Middleware

    return [Middleware(_AssetsOnFirstUse)]


class _AssetsOnFirstUse:
    """:class:`featapp.app.asset_server.FrontendAssets`, made on the first request for a static
    file. Importing ``featapp`` (numpy and the library, about 0.1 s) here, when the server
    builds its middleware, made every start answer that much later; by the first browser's
    first script request the warm-up thread has imported it."""

    def __init__(self, app) -> None:
        self.app = app
        self.assets = None

    async def __call__(self, scope, receive, send) -> None:
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


if __name__ == "__main__":
    run_session()
else:
    app = st.App("streamlit_app.py", lifespan=_prepare_in_background, middleware=frontend_assets())
