"""featapp: look inside a small convnet, layer by layer. Run with ``streamlit run streamlit_app.py``.

The pages live in ``featapp/pages/``; this script loads the model once (or shows how
to fix a missing one), draws the sidebar and runs the chosen page.
"""

import streamlit as st

from featapp.pages import shared

st.set_page_config(page_title="featapp: look inside a convnet", page_icon="🔎", layout="wide")

model = shared.model_or_error_page()

pages = [
    st.Page(shared.PAGE_FILES["gallery"], title="Gallery", icon="🖼️", url_path="gallery", default=True),
    st.Page(shared.PAGE_FILES["feature_map"], title="Feature map", icon="🔥", url_path="feature_map"),
    st.Page(shared.PAGE_FILES["layer_grid"], title="Layer grid", icon="🔲", url_path="layer_grid"),
    st.Page(shared.PAGE_FILES["neuron"], title="One neuron, many images", icon="🎯", url_path="neuron"),
    st.Page(shared.PAGE_FILES["model"], title="Model", icon="🧠", url_path="model"),
]
page = st.navigation(pages)
shared.sidebar(model)
page.run()
