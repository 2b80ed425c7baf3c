"""Students opening the app take turns: a few first runs draw at once, the others wait in order.

A class opens the app within seconds of each other, and every open is a full run of the script.
Python runs one thread at a time, so fifty first runs sharing the interpreter all finish late,
and so does every click made meanwhile by a student whose page is already open: the click shares
the interpreter with all of them. Letting :func:`featapp.settings.opening_sessions` first runs
draw at a time and queueing the rest (first come, first served: :class:`threading.Semaphore`
wakes its waiters in order) finishes the early opens sooner, leaves the last one about where it
was (the same work is done), and lets a click wait behind a couple of opens instead of dozens.

Only a session's first full run waits; once it has drawn its page, its clicks never do. A first
run that has waited :data:`MOST_WAIT_S` goes ahead anyway, so a slow open (a shared link to a
heavy view) cannot hold the class up for long. A standard-library semaphore is the whole
mechanism; Streamlit has no admission control of its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

from featapp import settings

__all__ = ["MOST_WAIT_S", "OPENED_KEY", "OpeningGate", "first_run"]

MOST_WAIT_S = 15.0
"""Seconds a first run waits for its turn before it goes ahead regardless."""

OPENED_KEY = "_featapp_page_drawn"
"""Session-state key set once a session's first run has drawn its page."""


class OpeningGate:
    """At most ``at_once`` first runs at a time (``0``: no limit)."""

    def __init__(self, at_once: int, most_wait_s: float = MOST_WAIT_S) -> None:
        self.at_once = at_once
        self.most_wait_s = most_wait_s
        self._turns = threading.Semaphore(at_once) if at_once > 0 else None

    @contextlib.contextmanager
    def first_run(self, session_state: MutableMapping[str, Any]) -> Iterator[bool]:
        """Around a session's run: waits for a turn if the session has not drawn its page yet.
        Yields whether it took a turn. A run that ends in an exception (Streamlit stops or
        reruns a script by raising one) leaves the session unopened, so its next run waits again."""
        if self._turns is None or session_state.get(OPENED_KEY):
            yield False
            return
        took_turn = self._turns.acquire(timeout=self.most_wait_s)
        try:
            yield took_turn
            session_state[OPENED_KEY] = True
        finally:
            if took_turn:
                self._turns.release()


_gate: OpeningGate | None = None
_gate_lock = threading.Lock()


def first_run(session_state: MutableMapping[str, Any]) -> contextlib.AbstractContextManager[bool]:
    """:meth:`OpeningGate.first_run` of the process's gate, sized by the setting when first asked."""
    global _gate
    with _gate_lock:
        if _gate is None:
            _gate = OpeningGate(settings.opening_sessions())
    return _gate.first_run(session_state)
