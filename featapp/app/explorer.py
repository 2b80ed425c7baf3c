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

__all__ = ["FRONTEND", "show", "state_to_send", "new_report", "shared_display"]

FRONTEND = Path(__file__).resolve().parent / "components" / "map_explorer"
"""The component's one file, served by Streamlit from this folder (no build step)."""

_component = components.declare_component("map_explorer", path=str(FRONTEND))
widget_guard.install()  # the component's value is parsed before any of this module's code sees it


def show(payload: ExplorerPayload, state: dict, *, key: str, mode: str = "map") -> object:
    """Draw the explorer: ``mode`` ``"map"`` (the Feature map: one channel beside the photo)
    or ``"grid"`` (the Layer grid: every channel as a tile). Returns the last reported view
    (a dict from the browser, untrusted; also in ``st.session_state[key]``) or ``None``
    before the first report. ``state`` is the view the server holds.

    The component gets ``state`` only when the server changed the view itself (a new layer,
    a detector's button, a tile opened on the grid, a shared link): when the server's view
    is what the browser last reported, the browser already shows it, and the component's
    arguments stay as they were (:func:`state_to_send`)."""
    return _component(**payload.args(), state=state_to_send(state, key), mode=mode, key=key, default=None)


def state_to_send(state: dict, key: str) -> dict:
    """The ``state`` argument for the explorer under ``key``: what it was last given while the
    server's view is the one the browser reported after that, else ``state``.

    Why: the component's arguments are one Streamlit message with the layer's maps (up to
    about 1.4 MB for layer 1), which Streamlit sends whole when any argument changes and as a short
    reference to the browser's copy when none does. Passing each reported view back made
    every report a new message, and a burst of reports (a student clicking fast, or a forged
    burst) could make Streamlit's frontend drop a copy the server had just been told it held:
    its "Cached ForwardMsg MISS" error, which locks the page until it is reloaded (the app's
    ``.streamlit/config.toml`` also lets the browser keep such copies longer)."""
    sent_key, mark_key = f"{key}_sent", f"{key}_report_at_send"
    sent: dict | None = st.session_state.get(sent_key)
    reported = bounded_report(st.session_state.get(key))
    report_text = "" if reported is None else json.dumps(reported, sort_keys=True)
    browser_shows_it = (
        reported is not None
        and report_text != st.session_state.get(mark_key)  # reported after `sent` went out
        and all(reported.get(name) == value for name, value in state.items())
    )
    if sent is not None and browser_shows_it:
        return sent
    if state != sent:
        st.session_state[sent_key] = dict(state)
        st.session_state[mark_key] = report_text
    return state


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
