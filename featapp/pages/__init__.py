"""The Streamlit pages (scripts run by ``st.navigation``) and their page-edge helpers:
:mod:`~featapp.pages.caches` (every ``st.cache_*`` wrapper), :mod:`~featapp.pages.view`
(the view and session-state keys the pages share, the synced pickers) and
:mod:`~featapp.pages.chrome` (navigation, the missing-model page, the sidebar, warm-up).

Only ``streamlit_app.py`` and the page scripts import this package; the library
(``featapp`` itself) never imports Streamlit.
"""
