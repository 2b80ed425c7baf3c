"""Everything Streamlit: the caches (every ``st.cache_*``), the view and session state the
pages share, the page chrome, the map explorer component, the asset server and the
server's warm-up. The page scripts are in :mod:`featapp.app.pages`.

Only ``streamlit_app.py`` and the page scripts import this package; the rest of the library
never imports Streamlit.
"""
