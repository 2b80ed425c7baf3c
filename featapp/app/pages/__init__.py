"""Page scripts only: run by ``st.navigation`` on every rerun (never imported). Each reads
its widgets, calls the library and draws; helpers live in :mod:`featapp.app`."""
