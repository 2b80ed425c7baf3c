"""The Streamlit pages (scripts run by ``st.navigation``) and their shared page-edge helpers.

Only ``streamlit_app.py`` and the page scripts import this package; the library
(``featapp`` itself) never imports Streamlit.
"""
