"""The Feature map's browser-side view: a Streamlit component (``map_explorer/index.html``)
that draws any channel of one layer, in any colour scale and scaling, from one payload
(:mod:`featapp.map_explorer`), and reports the view a student settles on."""

from __future__ import annotations

from pathlib import Path

import streamlit.components.v1 as components

from featapp.map_explorer import ExplorerPayload

__all__ = ["FRONTEND", "show"]

FRONTEND = Path(__file__).resolve().parent / "map_explorer"
"""The component's one file, served by Streamlit from this folder (no build step)."""

_component = components.declare_component("map_explorer", path=str(FRONTEND))


def show(payload: ExplorerPayload, state: dict, *, key: str, mode: str = "map") -> object:
    """Draw the explorer: ``mode`` ``"map"`` (the Feature map: one channel beside the photo)
    or ``"grid"`` (the Layer grid: every channel as a tile). Returns the last reported view
    (a dict from the browser, untrusted; also in ``st.session_state[key]``) or ``None``
    before the first report. ``state`` is the view the server holds."""
    return _component(**payload.args(), state=state, mode=mode, key=key, default=None)
