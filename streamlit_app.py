"""featapp: look inside a small convnet, layer by layer. Run with ``streamlit run streamlit_app.py``.

Streamlit reads this file two ways: ``streamlit run`` imports it to find the server, ``app``
(built by :mod:`featapp.app.server`); and for every browser session it runs it as the app's
script (``__name__`` is ``"__main__"``, in AppTest too), which calls :func:`run_session`.
"""

import streamlit as st


def run_session() -> None:
    """One session's script: the model (or a page that says how to fix it), the pages, the sidebar."""
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
    chrome.open_shared_view(model, page.url_path)  # a shared link's view, before anything shows the view
    chrome.sidebar(model, page.url_path)
    chrome.forget_link_notes_elsewhere(page.url_path)
    page.run()
    chrome.keep_share_link_current(model, page.url_path)


if __name__ == "__main__":
    run_session()
else:
    from featapp.app.server import fewer_malloc_arenas, lifespan, middleware

    fewer_malloc_arenas()  # at import: before the sessions' and ONNX Runtime's threads start
    app = st.App("streamlit_app.py", lifespan=lifespan, middleware=middleware())
