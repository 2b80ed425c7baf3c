"""A class opening the app takes turns (featapp.app.opening_gate): a few first runs at once, the
rest in order; a session that has drawn its page never waits again; a long wait goes ahead."""

from __future__ import annotations

import threading
import time

import pytest

from featapp.app import opening_gate
from featapp.app.opening_gate import OPENED_KEY, OpeningGate
from tests.helpers.apptest import assert_clean, main_text, open_app


def open_in_thread(gate: OpeningGate, state: dict, order: list[str], name: str, hold: threading.Event):
    def run() -> None:
        with gate.first_run(state):
            order.append(name)
            hold.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_first_runs_beyond_the_limit_wait_their_turn_in_order():
    gate, order, release = OpeningGate(at_once=1), [], threading.Event()
    states = [{}, {}, {}]
    first = open_in_thread(gate, states[0], order, "first", release)
    time.sleep(0.2)
    second = open_in_thread(gate, states[1], order, "second", release)
    time.sleep(0.2)
    third = open_in_thread(gate, states[2], order, "third", release)
    time.sleep(0.3)
    assert order == ["first"], "the second and third opens must wait while the first draws"
    release.set()
    for thread in (first, second, third):
        thread.join(5)
    assert order == ["first", "second", "third"]
    assert all(state.get(OPENED_KEY) for state in states)


def test_a_session_that_drew_its_page_never_waits():
    gate = OpeningGate(at_once=1, most_wait_s=5)
    state: dict = {}
    with gate.first_run(state) as took_turn:
        assert took_turn
    assert state[OPENED_KEY]
    assert gate._turns is not None and gate._turns.acquire(timeout=0.1)  # the only turn, held by someone else
    started = time.monotonic()
    with gate.first_run(state) as took_turn:
        assert not took_turn
    assert time.monotonic() - started < 0.5


def test_a_run_stopped_by_an_exception_leaves_the_session_unopened_and_frees_its_turn():
    gate, state = OpeningGate(at_once=1, most_wait_s=0.5), {}
    with pytest.raises(RuntimeError), gate.first_run(state):
        raise RuntimeError("Streamlit stops or reruns a script this way")
    assert OPENED_KEY not in state
    with gate.first_run(state) as took_turn:
        assert took_turn, "the stopped run's turn must be free again"


def test_a_first_run_that_waited_too_long_goes_ahead():
    gate = OpeningGate(at_once=1, most_wait_s=0.3)
    assert gate._turns is not None and gate._turns.acquire()
    started = time.monotonic()
    state: dict = {}
    with gate.first_run(state) as took_turn:
        assert not took_turn
    assert 0.25 < time.monotonic() - started < 2
    assert state[OPENED_KEY]


def test_no_limit_when_the_setting_is_zero():
    gate, state = OpeningGate(at_once=0), {}
    with gate.first_run(state) as took_turn:
        assert not took_turn


def test_the_apps_first_run_waits_for_a_turn_and_its_clicks_do_not(app_env, monkeypatch):
    gate = OpeningGate(at_once=1, most_wait_s=2.0)
    monkeypatch.setattr(opening_gate, "_gate", gate)
    assert gate._turns is not None and gate._turns.acquire()  # another student's open is drawing
    started = time.monotonic()
    at = open_app()
    assert time.monotonic() - started >= 2.0, "the first run did not wait for its turn"
    assert "Gallery" in at.main.title[0].value and "photo" in main_text(at)
    started = time.monotonic()
    at.run()
    assert_clean(at)
    assert time.monotonic() - started < 2.0, "a rerun of an opened session waited for a turn"
