"""Layer grid: every channel of a layer at once (the lecture's Figures 3 and 4)."""

from functools import partial

import streamlit as st

from featapp import render, settings
from featapp.app import caches, chrome, explorer, view
from featapp.app.map_explorer import parse_grid_report

GOTO = "layer_grid.goto_feature_map"
NONCE = "layer_grid.chart_nonce"
EXPLORER = "layer_grid.explorer"
FIRST, LAST, ORDER = view.GRID_FIRST, view.GRID_LAST, view.GRID_ORDER
ORDERS = {
    "index": "channel number",
    "mean": "mean activation (strongest first)",
    "max": "max activation (strongest first)",
}
VECTOR_BARS = 600
GRID_PX = 880  # fits the main column of a 1400-pixel-wide window beside the sidebar

if st.session_state.pop(GOTO, False):
    chrome.goto("feature_map")

model = chrome.model_or_error_page()
image = view.current_image(model)


def _on_tile(layer_name: str, chart_key: str) -> None:
    state = st.session_state.get(chart_key) or {}
    points = (state.get("selection") or {}).get("tile") or []
    if not points:
        return
    st.session_state[view.LAYER] = layer_name
    st.session_state[view.CHANNEL] = int(points[0]["ch"]) + 1
    st.session_state[view.CELL] = None
    st.session_state[GOTO] = True
    # A fresh chart key next time, so coming back does not replay this click.
    st.session_state[NONCE] = st.session_state.get(NONCE, 0) + 1


def _apply_grid_report(layer) -> None:
    """The browser's grid reported a settled view, or a tile to open: make it the shared
    view (each report once; one about another layer, or not a view, is ignored)."""
    value = explorer.new_report(EXPLORER)
    if value is None:
        return
    report = parse_grid_report(value, layer_name=layer.name, channels=layer.channels)
    if report is None:
        return
    st.session_state[view.COLOURS] = report.colours
    st.session_state[view.SCALING] = report.scaling
    st.session_state[view.FIXED_LOW] = report.fixed_low
    st.session_state[view.FIXED_HIGH] = report.fixed_high
    st.session_state[f"{FIRST}.{layer.name}"] = report.first
    st.session_state[f"{LAST}.{layer.name}"] = report.last
    st.session_state[ORDER] = report.order
    if report.open_channel is not None:
        st.session_state[view.LAYER] = layer.name
        st.session_state[view.CHANNEL] = report.open_channel
        st.session_state[view.CELL] = None
        chrome.goto("feature_map")


def _browser_grid(layer, view_model, layer_number: int, at: str) -> None:
    """The grid drawn in the browser from the layer's maps (the Feature map's payload):
    range, order, colours and scaling change there; a clicked tile opens on the Feature map."""
    rows, cols, count = layer.output_shape
    _apply_grid_report(layer)
    first_key, last_key = f"{FIRST}.{layer.name}", f"{LAST}.{layer.name}"
    order = st.session_state.get(ORDER, "index")
    state = {
        "layer_name": layer.name,
        **explorer.shared_display(),
        "first": min(max(int(st.session_state.get(first_key, 1)), 1), count),
        "last": min(max(int(st.session_state.get(last_key, count)), 1), count),
        "order": order if order in ORDERS else "index",
        "open_channel": None,
    }
    st.markdown(
        f"**Layer {layer_number} ({layer.name}, {layer.kind}){at}.** For the current image its activation is "
        f"`1 x {rows} x {cols} x {count}`: 1 image x {rows} rows x {cols} columns x {count} channels, as "
        f"Keras prints it. (For the gallery's 20 photos at once it would be `20 x {rows} x {cols} x {count}`.)"
    )
    explorer.show(caches.explorer(view_model, image, layer.name), state, key=EXPLORER, mode="grid")
    first, last = sorted((state["first"], state["last"]))
    output = caches.activations(view_model, image)[layer.name]
    ordered = render.order_channels(output, range(first - 1, last), state["order"])
    fixed = (state["fixed_low"], state["fixed_high"]) if state["fixed_high"] > state["fixed_low"] else None
    mode = state["scaling"] if state["scaling"] != "fixed" or fixed else "per map"
    scale = render.COLOUR_SCALES[state["colours"]]
    st.download_button(
        "Download this grid (PNG)",
        data=lambda: render.grid_png(output, ordered, scale, mode, fixed=fixed),  # made on click
        file_name=f"{layer.name}_channels{first}-{last}.png",
        mime="image/png",
    )


chrome.title("🔲 Layer grid")
st.markdown(
    "All channels of one layer for the current image, side by side. In layer 1 most tiles still look like "
    "the photo: each channel keeps the picture but stresses edges or colours. Deeper, the tiles get smaller "
    "and more abstract, and more of them stay blank: those channels look for something this image does "
    "not have. Click a tile to open it on the Feature map page."
)

in_browser = settings.map_view() == "browser"
controls_left, controls_mid, controls_right = st.columns([3, 4, 3])
with controls_left:
    layer = view.pick_layer(model, key="layer_grid.layer", spatial_only=False)
if layer is None:
    st.info("This model has no layers to show.")
    st.stop()
if not (in_browser and layer.is_spatial):
    with controls_mid:
        scale = view.pick_colours(key="layer_grid.colours")
        mode, fixed = view.pick_scaling(key="layer_grid.scaling", per_map_label="per tile (each its own min to max)")
with controls_right:
    view_model, snapshot = view.pick_snapshot(model, key="layer_grid.snapshot", layer=layer.name)

layer_number = model.layer_names.index(layer.name) + 1
output = caches.activations(view_model, image)[layer.name]
at = f" at {view.model_label(snapshot)}" if snapshot is not None else ""

if in_browser and layer.is_spatial:
    _browser_grid(layer, view_model, layer_number, at)
elif layer.is_spatial:
    rows, cols, count = layer.output_shape
    with controls_left:
        first_col, last_col = st.columns(2)
        # The range is remembered per layer: a new layer starts with all its channels.
        first_key, last_key = f"{FIRST}.{layer.name}", f"{LAST}.{layer.name}"
        st.session_state[first_key] = min(max(int(st.session_state.get(first_key, 1)), 1), count)
        st.session_state[last_key] = min(max(int(st.session_state.get(last_key, count)), 1), count)
        with first_col:
            first = view.synced(
                st.number_input,
                "From channel",
                key="layer_grid.first",
                shared=first_key,
                default=1,
                min_value=1,
                max_value=count,
                step=1,
            )
        with last_col:
            last = view.synced(
                st.number_input,
                "To channel",
                key="layer_grid.last",
                shared=last_key,
                default=count,
                min_value=1,
                max_value=count,
                step=1,
            )
        order = view.synced(
            st.radio,
            "Order",
            key="layer_grid.order",
            shared=ORDER,
            default="index",
            options=list(ORDERS),
            format_func=lambda k: ORDERS[k],
            horizontal=True,
        )
    if first > last:
        st.error(f"'From channel' ({first}) is after 'To channel' ({last}); showing channels {last} to {first}.")
        first, last = last, first
    st.markdown(
        f"**Layer {layer_number} ({layer.name}, {layer.kind}){at}.** For the current image its activation is "
        f"`1 x {rows} x {cols} x {count}`: 1 image x {rows} rows x {cols} columns x {count} channels, as "
        f"Keras prints it. (For the gallery's 20 photos at once it would be `20 x {rows} x {cols} x {count}`.)"
    )
    st.caption(
        f"One tile is one channel: a {rows} x {cols} map of what that channel's filter found at each place "
        f"of the image. Showing channels {first} to {last} ({last - first + 1} of {count}), ordered by {ORDERS[order]}."
    )
    chart, ordered, dead_channels = caches.tile_grid(
        view_model, image, layer.name, (first, last), order, scale, mode, fixed, width_px=GRID_PX
    )
    chart_key = f"layer_grid.chart_{st.session_state.get(NONCE, 0)}"
    st.vega_lite_chart(chart, on_select=partial(_on_tile, layer.name, chart_key), key=chart_key, width="content")
    dead = [channel + 1 for channel in dead_channels]
    if mode == "per layer":
        st.caption(render.describe_range(render.value_range(output, "per layer"), scale))
    elif mode == "fixed":
        st.caption(render.describe_range(render.value_range(output, "fixed", fixed=fixed), scale))
    else:
        st.caption(
            "Each tile is scaled to its own minimum and maximum (hover a tile for its numbers), as in the lecture."
        )
    if dead:
        listed = ", ".join(str(c) for c in dead[:40]) + (" ..." if len(dead) > 40 else "")
        st.warning(
            f"**{len(dead)} of {len(ordered)}** channels shown are dead for this image (constant, usually all 0), "
            f"framed in grey and labelled 'dead': {listed}."
        )
    else:
        st.caption("No channel shown is dead (constant) for this image.")
    st.download_button(
        "Download this grid (PNG)",
        data=lambda: render.grid_png(output, ordered, scale, mode, fixed=fixed),  # made on click
        file_name=f"{layer.name}_channels{first}-{last}.png",
        mime="image/png",
    )
else:
    units = layer.channels
    st.markdown(
        f"**Layer {layer_number} ({layer.name}, {layer.kind}){at}** is not a map but a list of numbers: its "
        f"activation is `1 x {units}` for the current image (`20 x {units}` for the gallery's 20 photos). "
        "Here every unit sees the whole image at once, so there is no picture to lay over the photo."
    )
    zeros = int((output == 0).sum())
    st.caption(f"{zeros} of {units} units are exactly 0 for this image.")
    if units <= VECTOR_BARS:
        st.vega_lite_chart(
            render.vector_chart(output, title=f"All {units} units", width_px=GRID_PX - 80), width="content"
        )
    else:
        strip, strip_range = render.vector_strip_chart(output, scale, width_px=GRID_PX - 80)
        st.markdown(f"All {units} units as a strip, 128 per row (unit 1 at the top left):")
        st.vega_lite_chart(strip, width="content")
        st.caption(render.describe_range(strip_range, scale))
        st.vega_lite_chart(
            render.vector_chart(output, title="The 40 strongest units", top=40, width_px=GRID_PX - 80), width="content"
        )
