"""The Feature map drawn in the browser (the default view), in Debian's headless Chromium.

What a student does on the page, and what must hold: changing channel, colours, scaling or
the overlay redraws at once without a message to the server; the view is reported once the
student stops, and the server's parts follow; the numbers on the page are the library's
(hover value, legend, range sentence, receptive box); the layer chooser and the Layer grid's
"open this tile" still reach it. Screenshots go to ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from featapp.engine.geometry import receptive_box
from featapp.render import COLOUR_SCALES, describe_range, legend_chart, value_range
from tests.e2e.steps import SLOW, channel_picture_part, choose, no_exception, photos_app, shot, wait_until

pytestmark = pytest.mark.e2e

FRAME = 'iframe[src*="map_explorer"]'  # titled by its own script once it runs


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, data_dir):
    yield from photos_app(tmp_path_factory.mktemp("explorer"), data_dir)


@pytest.fixture(scope="module")
def photo_maps(first_photo):
    from featapp.engine.model import load_model
    from tests.helpers.appmodels import COMMITTED_MODEL

    model = load_model(COMMITTED_MODEL, provider="cpu")
    _, pixels = first_photo
    return model, {name: maps[0] for name, maps in model.activations(pixels[np.newaxis]).items()}


def sent_frames(page) -> list:
    """Every websocket frame the page sends from now on (the browser's messages to the server)."""
    frames: list = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(payload)))
    return frames


def legend_labels(vr, scale) -> list[str]:
    table = legend_chart(vr, scale)["datasets"]["legend_labels"]
    return list(table["label"])


def explorer(page, canvas: str = "#map"):
    """The browser view's frame once it has drawn: the Feature map's (``#map``) or the grid's (``#grid``)."""
    frame = page.frame_locator(FRAME)
    frame.locator(canvas).wait_for(timeout=SLOW)
    wait_until(lambda: frame.locator("body").get_attribute("data-draws") not in (None, "0"), 60, "the first draw")
    return frame


def draws(frame) -> int:
    return int(frame.locator("body").get_attribute("data-draws"))


def test_channel_colours_and_scaling_change_in_the_browser(app_url, page, photo_maps):
    model, maps = photo_maps
    frames = sent_frames(page)
    page.goto(app_url + "/feature_map")
    page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    frame = explorer(page)
    channel_picture_part(page, 1).wait_for(timeout=SLOW)
    page.wait_for_timeout(1500)  # the page settles: no more messages of its own
    shot(page, "explorer_01_channel1")
    first_map = frame.locator("#map").evaluate("c => c.toDataURL()")
    values = maps["conv2d"]

    # 1. The next channel is drawn at once, and nothing is sent to the server while the
    #    student keeps changing; once they stop, one report, and the server's parts follow.
    before, drawn = len(frames), draws(frame)
    frame.locator("#next").click()
    frame.locator("#next").click()
    wait_until(lambda: draws(frame) >= drawn + 2, 5, "two redraws")
    assert frame.locator("body").get_attribute("data-channel") == "3"
    assert len(frames) == before, "a channel change reached the server before the student stopped"
    assert frame.locator("#map").evaluate("c => c.toDataURL()") != first_map
    assert frame.locator("#title").inner_text() == "Layer 1 (conv2d), channel 3"
    channel_picture_part(page, 3).wait_for(timeout=SLOW)
    assert len(frames) > before
    reports = frame.locator("body").evaluate("() => window.featappExplorer.reports")
    assert reports == 1, f"{reports} reports for one settled change"

    # 2. The range sentence and the legend are the library's for this map.
    vr = value_range(values[2], "per map")
    assert frame.locator("#range-caption").inner_text() == describe_range(vr, COLOUR_SCALES["blues4"])
    labels = json.loads(frame.locator("#legend").get_attribute("data-labels"))
    assert labels == legend_labels(vr, COLOUR_SCALES["blues4"])

    # 3. Colours and scaling: per layer, viridis; then a fixed range that clips.
    frame.get_by_label("per layer (all channels, this image)").check()
    frame.get_by_label("Viridis, continuous").check()
    layer_vr = value_range(values[2], "per layer", layer_values=values)
    wait_until(
        lambda: frame.locator("#range-caption").inner_text() == describe_range(layer_vr, COLOUR_SCALES["viridis"]),
        5,
        "the per-layer sentence",
    )
    assert json.loads(frame.locator("#legend").get_attribute("data-labels")) == legend_labels(
        layer_vr, COLOUR_SCALES["viridis"]
    )
    frame.get_by_label("fixed (a range you set)").check()
    frame.locator("#fixed-low").fill("0")
    frame.locator("#fixed-high").fill("0.1")
    fixed_vr = value_range(values[2], "fixed", fixed=(0.0, 0.1))
    assert fixed_vr.clipped
    wait_until(
        lambda: (
            json.loads(frame.locator("#legend").get_attribute("data-labels"))
            == legend_labels(fixed_vr, COLOUR_SCALES["viridis"])
        ),
        5,
        "the clipped legend",
    )
    frame.locator("#fixed-high").fill("-1")
    frame.get_by_text("The range must go from a lower to a higher value").wait_for(timeout=5000)
    frame.locator("#fixed-high").fill("0.1")
    shot(page, "explorer_02_fixed")

    # 4. Hover shows the cell's value as the library has it (4 significant digits).
    box = frame.locator("#map").bounding_box()
    rows, cols = values.shape[1:]
    map_width = box["width"] - 34
    r, c = 70, 40
    x = box["x"] + 34 + (c + 0.5) * map_width / cols
    y = box["y"] + (r + 0.5) * (box["height"] - 34) / rows
    page.mouse.move(x, y)
    tip = frame.locator("#tooltip")
    wait_until(lambda: tip.is_visible(), 5, "the tooltip")
    assert tip.inner_text() == f"row {r + 1}, column {c + 1}: {float(values[2, r, c]):.4g}"

    # 5. Click: the box on the photo is featapp.engine.geometry's, and the text says it.
    page.mouse.click(x, y)
    photo_box = wait_until(lambda: frame.locator("#photo").get_attribute("data-box"), 5, "the box")
    field = model.layer("conv2d").receptive_field
    assert json.loads(photo_box) == list(receptive_box(field, r, c, (150, 150)))
    assert (
        f"Cell row {r + 1}, column {c + 1} has value {float(values[2, r, c]):.4g}."
        in frame.locator("#cell-text").inner_text()
    )
    frame.locator("#overlay").check()
    page.wait_for_timeout(800)
    shot(page, "explorer_03_cell_overlay")
    frame.get_by_role("button", name="Clear the chosen cell").click()
    wait_until(lambda: frame.locator("#photo").get_attribute("data-box") == "", 5, "the box to go")
    no_exception(page)

    # 6. A new layer (a server widget) brings that layer's maps, keeping the channel.
    choose(page, "Layer", "6 · max_pooling2d_2")
    wait_until(lambda: frame.locator("body").get_attribute("data-layer") == "max_pooling2d_2", 60, "layer 6")
    assert frame.locator("#title").inner_text() == "Layer 6 (max_pooling2d_2), channel 3"
    assert frame.locator("#channel-label").inner_text() == "Channel (1 to 128)"
    no_exception(page)


def test_a_dead_channel_says_so(app_url, page, photo_maps):
    model, maps = photo_maps
    dead = [name for name in model.layer_names if maps[name].ndim == 3 and (maps[name].max(axis=(1, 2)) == 0).any()]
    if not dead:
        pytest.skip("no channel of the committed model is dead on this photo")
    name = dead[0]
    channel = int(np.flatnonzero(maps[name].max(axis=(1, 2)) == 0)[0])
    page.goto(app_url + "/feature_map")
    frame = explorer(page)
    choose(page, "Layer", f"{model.layer_names.index(name) + 1} · {name}")
    wait_until(lambda: frame.locator("body").get_attribute("data-layer") == name, 60, "the layer")
    frame.locator("#channel-number").fill(str(channel + 1))
    frame.locator("#dead").wait_for(timeout=5000)
    rows, cols = maps[name].shape[1:]
    assert (
        frame.locator("#dead")
        .inner_text()
        .startswith(f"Channel {channel + 1} is dead for this image: every one of its {rows} x {cols} cells is 0.")
    )


def test_opening_a_tile_opens_its_channel_here(app_url, page):
    page.goto(app_url + "/layer_grid")
    frame = explorer(page, "#grid")
    frame.get_by_text("One tile is one channel").wait_for(timeout=SLOW)
    frame.get_by_label("channel number").check()
    grid = frame.locator("#grid").bounding_box()
    tile = grid["width"] / 8  # 32 channels: 8 tiles a row, the fifth is channel 5
    page.mouse.click(grid["x"] + 4.5 * tile, grid["y"] + 5)
    page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    feature = explorer(page)
    wait_until(lambda: feature.locator("body").get_attribute("data-channel") == "5", 30, "channel 5")
    assert feature.locator("#channel-number").input_value() == "5"
    no_exception(page)


def test_the_layer_grid_is_drawn_in_the_browser_too(app_url, page, photo_maps):
    from featapp.render import order_channels

    model, maps = photo_maps
    frames = sent_frames(page)
    page.goto(app_url + "/layer_grid")
    page.get_by_role("heading", name="Layer grid").wait_for(timeout=SLOW)
    frame = explorer(page, "#grid")
    choose(page, "Layer", "6 · max_pooling2d_2")
    wait_until(lambda: frame.locator("body").get_attribute("data-layer") == "max_pooling2d_2", 60, "layer 6")
    values = maps["max_pooling2d_2"]
    page.wait_for_timeout(1500)
    before = len(frames)
    frame.get_by_label("max activation (strongest first)").check()
    order = json.loads(frame.locator("#grid").get_attribute("data-order"))
    assert order == [c + 1 for c in order_channels(values, range(128), "max")]
    assert len(frames) == before  # reordering is the browser's alone until the student stops
    frame.get_by_label("mean activation (strongest first)").check()
    order = json.loads(frame.locator("#grid").get_attribute("data-order"))
    assert order == [c + 1 for c in order_channels(values, range(128), "mean")]
    dead = json.loads(frame.locator("#grid").get_attribute("data-dead"))
    expected_dead = sorted(c + 1 for c in range(128) if values[c].max() == values[c].min())
    assert sorted(dead) == expected_dead
    if expected_dead:
        frame.get_by_text(f"{len(expected_dead)} of 128").wait_for(timeout=5000)
    frame.locator("#grid-first").fill("10")
    frame.locator("#grid-last").fill("5")
    frame.get_by_text("'From channel' (10) is after 'To channel' (5); showing channels 5 to 10.").wait_for(timeout=5000)
    assert len(json.loads(frame.locator("#grid").get_attribute("data-order"))) == 6
    # A number past the layer is taken as its last channel, and leaving the field shows that.
    frame.locator("#grid-last").fill("500")
    frame.locator("#grid-last").press("Tab")
    wait_until(lambda: frame.locator("#grid-last").input_value() == "128", 5, "the clamped range")
    assert len(json.loads(frame.locator("#grid").get_attribute("data-order"))) == 128 - 10 + 1
    frame.locator("#grid-last").fill("5")
    wait_until(lambda: len(json.loads(frame.locator("#grid").get_attribute("data-order"))) == 6, 5, "the range")
    shot(page, "explorer_04_grid")
    # Hover the first tile: its channel's numbers, as the library has them.
    first_tile = json.loads(frame.locator("#grid").get_attribute("data-order"))[0]
    grid = frame.locator("#grid").bounding_box()
    page.mouse.move(grid["x"] + 5, grid["y"] + 5)
    wait_until(lambda: frame.locator("#tooltip").is_visible(), 5, "the tile's tooltip")
    tile_values = values[first_tile - 1]
    assert frame.locator("#tooltip").inner_text() == (
        f"channel {first_tile}: min {float(tile_values.min()):.4g}, mean {float(tile_values.mean()):.4g}, "
        f"max {float(tile_values.max()):.4g}, {'dead (constant)' if tile_values.max() == tile_values.min() else 'active'}"
    )
    page.mouse.move(grid["x"] - 40, grid["y"] - 40)  # off the grid: the tooltip goes
    wait_until(lambda: not frame.locator("#tooltip").is_visible(), 5, "the tooltip gone")
    # Click the first tile: it opens on the Feature map, in the browser view there.
    page.mouse.click(grid["x"] + 5, grid["y"] + 5)
    page.get_by_role("heading", name="Feature map").wait_for(timeout=SLOW)
    feature = explorer(page)
    wait_until(lambda: feature.locator("body").get_attribute("data-channel") == str(first_tile), 30, "the tile")
    assert feature.locator("#title").inner_text() == f"Layer 6 (max_pooling2d_2), channel {first_tile}"
    no_exception(page)
