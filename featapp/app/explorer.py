"""The Feature map's browser-side view: a Streamlit component (``components/map_explorer/index.html``)
that draws any channel of one layer, in any colour scale and scaling, from one payload
(:mod:`featapp.app.map_explorer`), and reports the view a student settles on."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from featapp.app import view, widget_guard
from featapp.app.map_explorer import ExplorerPayload, bounded_report
from featapp.render import COLOUR_SCALES, SCALINGS

__all__ = ["FRONTEND", "show", "new_report", "shared_display"]

FRONTEND = Path(__file__).resolve().parent / "components" / "map_explorer"
"""The component's one file, served by Streamlit from this folder (no build step)."""

_component = components.declare_component("map_explorer", path=str(FRONTEND))
widget_guard.install()  # the component's value is parsed before any of this module's code sees it


def show(payload: ExplorerPayload, state: dict, *, key: str, mode: str = "map") -> object:
    """Draw the explorer: ``mode`` ``"map"`` (the Feature map: one channel beside the photo)
    or ``"grid"`` (the Layer grid: every channel as a tile). Returns the last reported view
    (a dict from the browser, untrusted; also in ``st.session_state[key]``) or ``None``
    before the first report. ``state`` is the view the server holds."""
    return _component(**payload.args(), state=state, mode=mode, key=key, default=None)


def new_report(key: str) -> dict | None:
    """The component's last report (``st.session_state[key]``, untrusted, cut to the fields a
    report carries by :func:`~featapp.app.map_explorer.bounded_report`) if it has not been
    applied yet, else ``None``. The component keeps its last value across reruns, and another
    page may have changed the view since it was sent: each report is applied once."""
    value = bounded_report(st.session_state.get(key))
    if value is None:
        return None
    marker = json.dumps(value, sort_keys=True)
    if st.session_state.get(f"{key}_applied") == marker:
        return None
    st.session_state[f"{key}_applied"] = marker
    return value


def shared_display() -> dict:
    """The colours, scaling and fixed range every page shares, as the component's ``state``
    fields (unknown values fall back to the defaults)."""
    colours = st.session_state.get(view.COLOURS, "blues4")
    scaling = st.session_state.get(view.SCALING, "per map")
    return {
        "colours": colours if colours in COLOUR_SCALES else "blues4",
        "scaling": scaling if scaling in SCALINGS else "per map",
        "fixed_low": float(st.session_state.get(view.FIXED_LOW, 0.0)),
        "fixed_high": float(st.session_state.get(view.FIXED_HIGH, 1.0)),
    }
