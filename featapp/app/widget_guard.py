"""A browser's JSON widget value read without trusting it.

A custom component (the map explorer) sends its value as JSON text, and Streamlit parses it
with ``json.loads`` when the rerun starts, before any of the app's code runs and before the
component's own deserializer sees it. Text that is not JSON, empty, an integer past Python's
4,300-digit limit or nested past its recursion limit (all of which a page's frame can post)
made that parse raise on the rerun and on every later one, on every page, until the student
reloaded: the browser sends its widget values again with each rerun.

:func:`install` puts :func:`read_json_value` in front of Streamlit's parse: such a value, or
one heavier or deeper than any the app's components send, reads as ``None`` ("no report")
and is stored as ``None``, so the session holds nothing of it and later reruns are clean.
There is no public hook for this, so :func:`install` wraps Streamlit's
``unpack_widget_state_value``; ``tests/app/test_widget_guard.py`` fails if a Streamlit upgrade
moves it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["JSON_VALUE_BYTES", "JSON_VALUE_DEPTH", "read_json_value", "within_depth", "install", "installed"]

_LOG = logging.getLogger(__name__)

JSON_VALUE_BYTES = 16 * 1024
"""The most JSON text a widget value may be. featapp's only JSON widgets are the map
explorer's reports, a few hundred bytes; anything bigger is junk, never parsed or kept."""

JSON_VALUE_DEPTH = 16
"""The deepest nesting a widget value may have (a report nests two deep)."""

_JSON_FIELDS = frozenset({"json_value", "json_trigger_value"})
_MODULES = (
    "streamlit.runtime.state.common",
    "streamlit.runtime.state.session_state",
    "streamlit.runtime.agent.widget_writes",
)
"""Where Streamlit binds ``unpack_widget_state_value`` (imported by name, so each is wrapped)."""


def within_depth(value: object, limit: int) -> bool:
    """``value`` nests no deeper than ``limit`` lists and dicts (walked without recursion).

    >>> within_depth({"cell": [1, 2]}, 2), within_depth([[[1]]], 2)
    (True, False)
    """
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth + 1 > limit:
            return False
        pending.extend((child, depth + 1) for child in children)
    return True


def read_json_value(text: str) -> object:
    """``text`` as JSON, or ``None`` when it is not JSON, too heavy or too deep.

    >>> read_json_value('{"channel": 3}'), read_json_value(""), read_json_value("1" * 5000)
    ({'channel': 3}, None, None)
    """
    if len(text) > JSON_VALUE_BYTES:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError: not JSON, or an integer over Python's digit limit; RecursionError: nested
        # past the parser's limit.
        return None
    return value if within_depth(value, JSON_VALUE_DEPTH) else None


def _guarded(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def unpack_widget_state_value(widget_state: Any) -> Any:
        field = widget_state.WhichOneof("value")
        if field in _JSON_FIELDS:
            value = read_json_value(getattr(widget_state, field))
            if value is None and getattr(widget_state, field) not in ("null", ""):
                _LOG.info("ignored a malformed or oversized value for widget %s", widget_state.id)
            return value
        return original(widget_state)

    unpack_widget_state_value.featapp_original = original  # type: ignore[attr-defined]
    return unpack_widget_state_value


def installed() -> bool:
    """Whether Streamlit's session state reads JSON widget values through :func:`read_json_value`."""
    from streamlit.runtime.state import session_state

    return hasattr(getattr(session_state, "unpack_widget_state_value", None), "featapp_original")


def install() -> bool:
    """Put :func:`read_json_value` in front of Streamlit's parse of JSON widget values (once per
    process; later calls do nothing). ``False`` when this Streamlit has no such function to
    wrap, which is logged: the app still runs, without the guard."""
    import importlib

    wrapped = False
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        current = getattr(module, "unpack_widget_state_value", None)
        if current is None:
            continue
        if not hasattr(current, "featapp_original"):
            module.unpack_widget_state_value = _guarded(current)  # type: ignore[attr-defined]
        wrapped = True
    if not installed():
        _LOG.warning("Streamlit's unpack_widget_state_value was not found: malformed component values are not guarded")
        return False
    return wrapped
