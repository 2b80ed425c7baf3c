"""The Feature map's browser view as the server runs it (AppTest, no JavaScript): what it
sends to the browser, and how it takes the view a browser reports back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featapp.app.map_explorer import dequantise
from tests.helpers.apptest import channel_picture_shown, go, main_text, open_app, open_tab, png_upload, upload

EXPLORER = "feature_map.explorer"


@pytest.fixture
def browser_view(app_env, monkeypatch):
    monkeypatch.setenv("FEATAPP_MAP_VIEW", "browser")
    return app_env


def component(at):
    found = [e for e in at.main if type(e).__name__ == "UnknownElement" and e.type == "component_instance"]
    assert len(found) == 1, [type(e).__name__ for e in at.main]
    proto = found[0].proto
    args = json.loads(proto.json_args)
    args.update({special.key: special.bytes for special in proto.special_args})
    return args


def report(**change) -> dict:
    view = {
        "layer_name": "conv2d",
        "channel": 1,
        "colours": "blues4",
        "scaling": "per map",
        "fixed_low": 0.0,
        "fixed_high": 1.0,
        "cell": None,
        "overlay": False,
    }
    return {**view, **change}


def test_the_page_sends_the_layer_once_with_the_shared_view(browser_view, first_photo):
    item, pixels = first_photo
    at = open_app("feature_map")
    args = component(at)
    assert args["layer_name"] == "conv2d" and args["shape"] == [32, 148, 148]
    assert args["state"]["channel"] == 1 and args["state"]["colours"] == "blues4"
    assert item.name in args["title"]
    # The steps are the committed model's maps of the first photo.
    from featapp.engine.model import load_model
    from tests.helpers.appmodels import COMMITTED_MODEL

    maps = load_model(COMMITTED_MODEL, provider="cpu").activations(pixels[np.newaxis])["conv2d"][0]
    steps = np.frombuffer(args["steps"], "<u2").reshape(32, 148, 148)
    back = dequantise(steps, args["lows"], args["highs"])
    assert np.abs(back - maps).max() <= (maps.max() - maps.min()) / 65535
    # No Vega-Lite heatmap and no channel box: those are the server view's.
    assert not at.number_input and not at.radio
    assert channel_picture_shown(at, 1)


def test_a_report_becomes_the_shared_view_and_the_server_parts_follow(browser_view):
    at = open_app("feature_map")
    at.session_state[EXPLORER] = report(channel=7, colours="viridis", scaling="per layer", cell=[3, 4], overlay=True)
    at.run()
    assert not at.exception
    assert at.session_state["view.channel"] == 7
    assert at.session_state["view.colours"] == "viridis"
    assert at.session_state["view.cell"] == ("conv2d", 3, 4)
    # The browser drew that view itself: the component's arguments, maps and all, stay as sent.
    assert component(at)["state"]["channel"] == 1
    assert channel_picture_shown(at, 7)
    # The Layer grid, another page, sees the same view.
    go(at, "layer_grid")
    assert at.session_state["view.channel"] == 7


@pytest.mark.parametrize(
    "bad",
    [
        report(channel=99),
        report(layer_name="conv2d_3"),
        report(colours="<script>"),
        report(cell=[500, 1]),
        "channel=7",
        {"channel": 7},
    ],
)
def test_a_bad_report_changes_nothing_and_the_page_keeps_running(browser_view, bad):
    at = open_app("feature_map")
    at.session_state[EXPLORER] = bad
    at.run()
    assert not at.exception
    assert at.session_state["view.channel"] == 1
    assert component(at)["state"]["channel"] == 1


def test_a_report_is_applied_once_so_another_page_can_change_the_view(browser_view):
    at = open_app("feature_map")
    at.session_state[EXPLORER] = report(channel=4)
    at.run()
    assert at.session_state["view.channel"] == 4
    at.session_state["view.channel"] = 9  # as the Layer grid's "open this tile" does
    at.run()
    assert component(at)["state"]["channel"] == 9


def test_a_new_layer_sends_new_maps_and_keeps_the_channel(browser_view):
    at = open_app("feature_map")
    at.session_state[EXPLORER] = report(channel=5)
    at.run()
    at.selectbox(key="feature_map.layer").select("max_pooling2d_2").run()
    args = component(at)
    assert args["layer_name"] == "max_pooling2d_2" and args["shape"] == [128, 17, 17]
    assert args["state"]["channel"] == 5 and args["state"]["cell"] is None


def test_an_upload_is_shown_from_memory(browser_view):
    at = open_app()
    open_tab(at, 2)
    stripes = np.zeros((120, 200, 3), np.uint8)
    stripes[:, ::10] = 255
    upload(at, png_upload(stripes, "stripes.png"))
    go(at, "feature_map")
    args = component(at)
    assert "stripes.png" in args["title"]
    assert args["photo"].startswith(b"\x89PNG")
    assert "Feature map" in main_text(at)


def grid_report(**change) -> dict:
    view = {
        "layer_name": "conv2d",
        "colours": "blues4",
        "scaling": "per map",
        "fixed_low": 0.0,
        "fixed_high": 1.0,
        "first": 1,
        "last": 32,
        "order": "index",
        "open_channel": None,
    }
    return {**view, **change}


def test_the_layer_grid_sends_the_same_layer_in_grid_mode(browser_view):
    at = open_app("layer_grid")
    args = component(at)
    assert args["mode"] == "grid" and args["layer_name"] == "conv2d" and args["shape"] == [32, 148, 148]
    assert args["state"]["first"] == 1 and args["state"]["last"] == 32 and args["state"]["order"] == "index"
    assert len(args["means"]) == 32
    assert [b.label for b in at.get("download_button")] == ["Download this grid (PNG)"]


def test_a_grid_report_is_kept_per_layer_and_a_tile_opens_the_feature_map(browser_view):
    at = open_app("layer_grid")
    at.session_state["layer_grid.explorer"] = grid_report(first=3, last=12, order="max", colours="viridis")
    at.run()
    assert not at.exception
    assert at.session_state["view.grid_first.conv2d"] == 3 and at.session_state["view.grid_last.conv2d"] == 12
    assert at.session_state["view.grid_order"] == "max" and at.session_state["view.colours"] == "viridis"
    assert component(at)["state"]["first"] == 1  # the browser shows 3 to 12 already: nothing to send
    at.session_state["layer_grid.explorer"] = grid_report(first=3, last=12, order="max", open_channel=7)
    at.run()
    assert not at.exception
    assert "Feature map" in main_text(at)
    args = component(at)
    assert args.get("mode") == "map" and args["state"]["channel"] == 7


@pytest.mark.parametrize(
    "bad",
    [grid_report(last=33), grid_report(order="random"), grid_report(open_channel=0), grid_report(first="1"), [1]],
)
def test_a_bad_grid_report_changes_nothing(browser_view, bad):
    at = open_app("layer_grid")
    at.session_state["layer_grid.explorer"] = bad
    at.run()
    assert not at.exception
    assert "Layer grid" in main_text(at)
    assert component(at)["state"]["first"] == 1 and component(at)["state"]["last"] == 32


def test_reports_leave_the_components_message_unchanged_and_a_server_change_is_sent(browser_view):
    """The component's arguments are one message with the layer's maps: a report the browser
    drew itself must not make a new one (Streamlit then sends a short reference instead of the
    maps again, and a burst of reports cannot strand the browser on a copy it dropped)."""
    at = open_app("feature_map")
    first = component(at)
    for channel in (7, 3, 12, 7):  # a student stepping through channels in the browser
        at.session_state[EXPLORER] = report(channel=channel)
        at.run()
        assert not at.exception and at.session_state["view.channel"] == channel
        assert component(at) == first
    at.session_state["view.channel"] = 20  # the server changes the view (a detector's button, a tile)
    at.run()
    changed = component(at)
    assert changed["state"]["channel"] == 20 and changed["steps"] == first["steps"]
    at.run()  # nothing new: the same arguments again
    assert component(at) == changed
    at.session_state["view.channel"] = 7  # back to the browser's last report, by the server: sent again
    at.run()
    assert component(at)["state"]["channel"] == 7
    at.session_state[EXPLORER] = report(channel=7, colours="viridis")  # a report that differs: kept as is
    at.run()
    assert component(at)["state"]["channel"] == 7 and component(at)["state"]["colours"] == "blues4"
