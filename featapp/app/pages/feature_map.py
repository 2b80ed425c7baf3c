"""Feature map: the current image beside one channel's map (the lecture's Figure 2)."""

from functools import partial

import streamlit as st

from featapp import render, settings
from featapp.app import caches, chrome, explorer, sections, view
from featapp.app.captions import markdown_literal
from featapp.app.map_explorer import parse_report
from featapp.engine.geometry import receptive_box
from featapp.engine.model import ModelError
from featapp.render import words as render_words
from featapp.render.describe import box_words, describe_map, summarise_map

HEATMAP_NONCE = "feature_map.chart_nonce"
EXPLORER = "feature_map.explorer"
OVERLAY = "feature_map.overlay"
STRIP_KEY = "feature_map.strip"
PICTURE_PX = 360

model = chrome.model_or_error_page()
image = view.current_image(model)
spec = model.input_spec


def _chart_key() -> str:
    # A new key gives a fresh chart, whose own selection is empty again.
    return f"feature_map.chart_{st.session_state.get(HEATMAP_NONCE, 0)}"


def _clear_cell() -> None:
    st.session_state[view.CELL] = None
    st.session_state[HEATMAP_NONCE] = st.session_state.get(HEATMAP_NONCE, 0) + 1


def _on_cell(layer_name: str) -> None:
    state = st.session_state.get(_chart_key()) or {}
    points = (state.get("selection") or {}).get("cell") or []
    st.session_state[view.CELL] = (layer_name, int(points[0]["r"]), int(points[0]["c"])) if points else None


def _apply_report(layer) -> None:
    """The browser reported the view a student settled on: make it the shared view, so the
    server's parts (the strip, the download, other pages) follow. Each report is applied
    once (the component keeps its last value, and another page may have changed the view
    since); a report about another layer, or one that is not a view, is ignored."""
    value = explorer.new_report(EXPLORER)
    if value is None:
        return
    rows, cols = layer.output_shape[0], layer.output_shape[1]
    report = parse_report(value, layer_name=layer.name, channels=layer.channels, rows=rows, cols=cols)
    if report is None:
        return
    st.session_state[view.CHANNEL] = report.channel
    st.session_state[view.COLOURS] = report.colours
    st.session_state[view.SCALING] = report.scaling
    st.session_state[view.FIXED_LOW] = report.fixed_low
    st.session_state[view.FIXED_HIGH] = report.fixed_high
    st.session_state[view.CELL] = None if report.cell is None else (layer.name, *report.cell)
    st.session_state[OVERLAY] = report.overlay


def _shared_view(layer) -> dict:
    """The view the server holds, as the explorer's ``state``."""
    count = layer.channels
    channel = min(max(int(st.session_state.get(view.CHANNEL, 1)), 1), count)
    st.session_state[view.CHANNEL] = channel
    cell = st.session_state.get(view.CELL)
    return {
        "layer_name": layer.name,
        "channel": channel,
        **explorer.shared_display(),
        "cell": [int(cell[1]), int(cell[2])] if cell and cell[0] == layer.name else None,
        "overlay": bool(st.session_state.get(OVERLAY, False)),
    }


def _browser_view() -> None:
    """The map drawn in the browser: the channel, colours, scaling, overlay and chosen cell
    change there at once; the server hears the settled view and draws what is below."""
    controls_left, controls_right = st.columns([1, 1])
    with controls_left:
        layer = view.pick_layer(model, key="feature_map.layer", spatial_only=True)
    if layer is None:
        st.info("This model has no layers with 2-D feature maps to show.")
        return
    with controls_right:
        view_model, snapshot = view.pick_snapshot(model, key="feature_map.snapshot", layer=layer.name)
    if layer.receptive_field is None:
        st.caption(
            "This model's file does not describe this layer's geometry, so the map cannot be placed on the photo."
        )
    _apply_report(layer)
    state = _shared_view(layer)
    payload = caches.explorer(view_model, image, layer.name)
    if snapshot is not None:
        st.caption(f"Showing {view.model_label(snapshot)}.")
    explorer.show(payload, state, key=EXPLORER)
    channel = state["channel"] - 1
    layer_maps = caches.activations(view_model, image)[layer.name]
    values = layer_maps[channel]
    scale = render.COLOUR_SCALES[state["colours"]]
    fixed = (state["fixed_low"], state["fixed_high"]) if state["fixed_high"] > state["fixed_low"] else None
    mode = state["scaling"] if state["scaling"] != "fixed" or fixed else "per map"
    vr = render.value_range(values, mode, layer_values=layer_maps, fixed=fixed)
    _below_the_map(view_model, layer, channel, values, vr, scale)


chrome.title("🔥 Feature map")
st.markdown(
    "One channel of one layer, for the current image. Each cell is one neuron: the same small filter, "
    "applied at that place in the picture. A **layer 1** cell sees only a few pixels, so it can answer only "
    "simple questions about light, colour and the steps between them; deeper cells see larger parts of the "
    "photo, and their maps get smaller and harder to read. Click a cell to see which part of the photo it looks at."
)

DETECTOR_NOTE = "feature_map.detector_note"


def _go_to_detector(match) -> None:
    """Runs before the page (a button's callback), so the layer and channel pickers open on it."""
    st.session_state[view.LAYER] = match.layer
    st.session_state[view.CHANNEL] = match.channel + 1
    st.session_state[view.CELL] = None
    st.session_state[DETECTOR_NOTE] = match


def _lecture_detectors() -> None:
    """The lecture's Figure 2 is channel 1 of another network: find this network's counterparts."""
    try:
        matches = caches.detectors(model)
    except ValueError:
        return  # no convolution: nothing to look for
    with st.expander("Find the lecture's detectors in this network", icon="🧭"):
        st.markdown(
            "The lecture's Figure 2 shows channel 1 of layer 1 of *another* network, a horizontal-edge detector. "
            "Channel numbers are arbitrary, so this network's channel 1 need not be one. These buttons show each "
            "first-layer channel a horizontal edge, a vertical edge and colour patches (the probes on the "
            "Gallery page), and open the channel that prefers one over the other most."
        )
        columns = st.columns(len(matches))
        for column, match in zip(columns, matches, strict=True):
            column.button(
                f"Its {match.kind} detector",
                key=f"feature_map.detector.{match.kind}",
                on_click=_go_to_detector,
                args=(match,),
            )
        note = st.session_state.get(DETECTOR_NOTE)
        if note is not None and note.layer in model.layer_names:
            try:
                summary = caches.first_layer_summary(model)
            except ModelError:
                summary = None  # filters that cannot be read: the match is still told, without them
            st.markdown(render_words.detector_words(note, summary))
            if summary is not None:
                st.caption(render_words.first_layer_words(summary))


def _below_the_map(view_model, layer, channel: int, values, vr, scale) -> None:
    """The download, what the channel looks for, and the map across training: drawn on the server."""
    # A fragment's rerun leaves the sidebar as it was: its share link follows the view from here.
    chrome.keep_share_link_current(model, "feature_map")
    st.download_button(
        "Download this map (PNG)",
        data=lambda: render.png_bytes(render.map_picture(values, vr, scale, min_px=300)),  # made on click
        file_name=f"{layer.name}_channel{channel + 1}.png",
        mime="image/png",
    )
    sections.how_this_channel_works(view_model, image, layer, channel)

    _lecture_detectors()
    sections.channel_section(view_model, layer, channel, key="feature_map.featurevis")

    # -- the same map across training (issue 6) -------------------------------------------------------------
    snaps = caches.snapshots(model)
    if not snaps:
        return
    # Closed until a student opens it, and drawn only while open: each new photo and layer
    # runs every snapshot, which was the largest share of the server's time with a class
    # clicking at once (bench/results/load_profile.md). Open, it stays open on every page visit.
    across = view.synced(
        st.expander, "This map across training", key=STRIP_KEY, shared=view.STRIP_OPEN, default=False, icon="🎞️"
    )
    if not across.open:
        return
    with across:
        st.markdown(
            "The same image, layer and channel, saved while the network learned. At epoch 0 the filters are "
            "random: a random filter still passes on some of the photo's light and dark (most visibly in "
            "layer 1), but it is tuned to nothing. Where a later map differs from epoch 0, training changed "
            "what this channel detects; where they look alike, it still answers much as its random start did. "
            "Each map is scaled to its own range: compare patterns, not brightness."
        )
        strip_models = []
        final_shown = False
        for snap in snaps:
            try:
                snap_model = caches.model_at(snap.path)
            except ModelError as err:
                st.error(f"{view.model_label(snap)} cannot be loaded: {err}")
                continue
            if layer.name in snap_model.layer_names and caches.spec_key(snap_model.input_spec) == caches.spec_key(spec):
                # Training keeps its best epoch: that snapshot and the final model are one
                # network, so one tile, the final model's (its maps are the page's), says so.
                if snap.is_best and not final_shown and caches.same_network(snap_model, model):
                    strip_models.append((f"{view.model_label(snap)} = the {view.model_label(None)}", model))
                    final_shown = True
                else:
                    strip_models.append((view.model_label(snap), snap_model))
        if not final_shown:
            strip_models.append((view.model_label(None), model))
        st.image(
            caches.training_strip(image, layer.name, channel, scale, strip_models, final=model),
            caption="Left to right: " + ", ".join(label for label, _ in strip_models) + ".",
            width="stretch",
            output_format="PNG",
            alt=f"Channel {channel + 1} of {layer.name} for this image, saved during training, left to right: "
            + ", ".join(label for label, _ in strip_models)
            + ".",
        )


@st.fragment
def _map_view() -> None:
    """Everything that depends on the layer and channel. A fragment: changing them reruns
    only this, not the sidebar, the navigation and the page's text, so the browser redraws
    less (the time from a new channel to its map drawn is in ``bench/profile_channel_change.py``).
    """
    controls_left, controls_mid, controls_right = st.columns([3, 4, 3])
    with controls_left:
        layer = view.pick_layer(model, key="feature_map.layer", spatial_only=True)
        if layer is None:
            st.info("This model has no layers with 2-D feature maps to show.")
            return
        channel = view.pick_channel(layer, key="feature_map.channel")
    with controls_mid:
        scale = view.pick_colours(key="feature_map.colours")
        mode, fixed = view.pick_scaling(key="feature_map.scaling")
    with controls_right:
        show_overlay = st.toggle("Lay the map over the photo", key="feature_map.overlay")
        view_model, snapshot = view.pick_snapshot(model, key="feature_map.snapshot", layer=layer.name)

    layer_maps = caches.activations(view_model, image)[layer.name]
    values = layer_maps[channel]
    vr = render.value_range(values, mode, layer_values=layer_maps, fixed=fixed)
    cell = st.session_state.get(view.CELL)
    selected = (
        (cell[1], cell[2])
        if cell and cell[0] == layer.name and cell[1] < values.shape[0] and cell[2] < values.shape[1]
        else None
    )
    if layer.receptive_field is None:
        # Geometry comes from the model's metadata; without it there is nothing true to draw on the photo.
        st.caption(
            "This model's file does not describe this layer's geometry, so the map cannot be placed on the photo."
        )
        show_overlay, selected = False, None

    photo_col, map_col = st.columns([1, 1.4])
    with map_col:
        title = f"Layer {model.layer_names.index(layer.name) + 1} ({layer.name}), channel {channel + 1}"
        if snapshot is not None:
            title += f", {view.model_label(snapshot)}"
        st.markdown(f"**{title}**")
        chart = caches.heatmap_spec(
            view_model, image, layer.name, channel, vr, scale, width_px=PICTURE_PX, selected_cell=selected
        )
        st.vega_lite_chart(chart, on_select=partial(_on_cell, layer.name), key=_chart_key(), width="content")
        st.caption(render.describe_range(vr, scale))
        st.markdown(describe_map(summarise_map(values, vr, scale)))
        if render.is_constant(values):
            st.warning(
                f"Channel {channel + 1} is **dead** for this image: every one of its "
                f"{values.shape[0]} x {values.shape[1]} cells is {float(values.flat[0]):.3g}. "
                "Its filter found nothing it responds to (after the ReLU, everything below zero becomes 0)."
            )
    with photo_col:
        picture = image.array
        if show_overlay:
            assert layer.receptive_field is not None  # both are off without it (above)
            picture = render.overlay_map(picture, values, layer.receptive_field, vr, scale)
        caption = f"{markdown_literal(image.title)} ({spec.width} x {spec.height})"
        alt = f"{' '.join(image.title.split())} ({spec.width} x {spec.height} pixels)"
        alt += ", with the map laid over it." if show_overlay else "."
        if selected is not None:
            assert layer.receptive_field is not None  # both are off without it (above)
            box = receptive_box(layer.receptive_field, selected[0], selected[1], (spec.height, spec.width))
            picture = render.outline_box(picture, box)
            caption += " · red box: what the chosen cell sees"
            alt += f" A red box around {box_words(box)}: what the chosen cell sees."
        chrome.show_image(picture, caption=caption, width=PICTURE_PX, alt=alt)

    if selected is not None:
        top, left, bottom, right = box
        field = layer.receptive_field
        assert field is not None  # both are off without it (above)
        st.markdown(
            f"Cell **row {selected[0] + 1}, column {selected[1] + 1}** has value **{float(values[selected]):.4g}**. "
            f"It sees input rows {top + 1}-{bottom} and columns {left + 1}-{right} "
            f"(its receptive field is {field.size[0]} x {field.size[1]} pixels; neighbouring cells are "
            f"{field.jump[0]} pixel{'s' if field.jump[0] > 1 else ''} apart)."
        )
        st.button("Clear the chosen cell", on_click=_clear_cell)
    else:
        st.caption("Click a cell of the map to outline, on the photo, the pixels that cell can see.")

    _below_the_map(view_model, layer, channel, values, vr, scale)


if settings.map_view() == "browser":
    st.fragment(_browser_view)()
else:
    _map_view()
