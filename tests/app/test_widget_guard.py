"""A browser's malformed component value (featapp.app.widget_guard): "no report" for that
rerun, nothing kept, and no later rerun on any page poisoned by it."""

from __future__ import annotations

import json

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetStates

from featapp.app import widget_guard
from featapp.app.widget_guard import JSON_VALUE_BYTES, read_json_value
from tests.helpers.apptest import PAGE_FILES, assert_clean, open_app

EXPLORER = "feature_map.explorer"

# What a page's frame can make Streamlit parse: each raised in Streamlit's own json.loads.
MALFORMED = {
    "not JSON": "{channel: 3",
    "empty": "",
    "an integer of 5,000 digits": "7" * 5000,
    "nested 1,000 deep": "[" * 1000 + "]" * 1000,
    "nested 900 deep": "[" * 900 + "]" * 900,
    "a 10 MB junk key": json.dumps({"layer_name": "conv2d", "junk": "x" * 10_000_000}),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_value_reads_as_no_value(text):
    assert read_json_value(text) is None


def test_a_real_report_reads_as_itself():
    report = {"layer_name": "conv2d", "channel": 3, "cell": [1, 2], "fixed_high": 1e38}
    assert read_json_value(json.dumps(report)) == report
    assert read_json_value("null") is None
    assert read_json_value(json.dumps({"k": "x" * (JSON_VALUE_BYTES - 20)})) is not None


def test_the_guard_wraps_streamlits_parse():
    # Fails when a Streamlit upgrade renames or moves the function the guard wraps.
    assert widget_guard.install()
    assert widget_guard.installed()
    assert widget_guard.install()  # a second call changes nothing


@pytest.fixture
def browser_view(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_MAP_VIEW", "browser")
    return app_env


def component_id(at) -> str:
    found = [e for e in at.main if type(e).__name__ == "UnknownElement" and e.type == "component_instance"]
    assert len(found) == 1
    return found[0].proto.id


def run_as_browser(at, widget_id: str, text: str, page: str | None = None):
    """A rerun whose widget values carry ``text`` as the component's raw JSON value, as a
    browser resends it with every rerun (AppTest's own run() would not: it does not know the
    component)."""
    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    bad = states.widgets.add()
    bad.id = widget_id
    bad.json_value = text
    if page is not None:
        at.switch_page(PAGE_FILES[page])
    return at._run(states)


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_component_value_never_poisons_a_rerun(browser_view, text):
    at = open_app("feature_map")
    widget_id = component_id(at)
    run_as_browser(at, widget_id, text)
    assert_clean(at)
    assert at.session_state[EXPLORER] is None  # "no report", and nothing of it kept
    assert at.session_state["view.channel"] == 1
    run_as_browser(at, widget_id, text)  # the browser sends it again
    assert_clean(at)
    run_as_browser(at, widget_id, text, page="layer_grid")  # and on another page
    assert_clean(at)
    run_as_browser(at, widget_id, text, page="gallery")
    assert_clean(at)
