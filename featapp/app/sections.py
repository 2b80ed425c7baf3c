"""The gradient views shared by the pages: saliency and Grad-CAM (Model page), and "what this
channel looks for" with the layer's grid of pictures (Feature map and One-neuron pages).

Layout and caching only; the computing is in :mod:`featapp.explain.saliency`, :mod:`featapp.explain.gradcam`
and :mod:`featapp.explain.featurevis`. Every reason a view cannot work (no gradient file, a layer
that cannot be differentiated, a trunk-only snapshot for class-based views) is shown as a
message in place of the view; the page goes on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from featapp import render, settings
from featapp.app import caches, chrome
from featapp.app.appstate import CurrentImage
from featapp.app.asset_server import SHELF
from featapp.app.caches import ShownPicture
from featapp.app.view import CELL, CHANNEL, LAYER, scan_split
from featapp.cache import CacheFolderError
from featapp.engine.arithmetic import GRAPH_INPUT, CannotExplain, ConvArithmetic, ConvOp, PoolOp, explain_cell
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import FeatureModel
from featapp.explain.featurevis import (
    APP_STEPS,
    FeatureVisualization,
    cache_file,
    channel_picture,
    default_objective,
    layer_pictures,
)
from featapp.explain.gradients import GradientError, Gradients
from featapp.render import cells as render_cells
from featapp.render.describe import describe_map, summarise_map
from featapp.render.sanity import sanity_words
from featapp.stats.circuits import ChannelCircuit, InputLink, channel_circuit, dense_unit_inputs

__all__ = [
    "gradients_or_message",
    "saliency_section",
    "channel_section",
    "channel_picture_part",
    "cell_arithmetic_section",
    "circuit_section",
    "how_this_channel_works",
    "sanity_section",
    "dense_inputs_section",
]

SALIENCY_DONE = "gradients.saliency_done"
PICTURE_PX = 200


def vis_steps() -> int:
    """Gradient steps per picture: ``$FEATAPP_VIS_STEPS`` (e.g. fewer on a slow server), else 128."""
    return settings.vis_steps(APP_STEPS)


def gradients_or_message(model: FeatureModel) -> Gradients | str:
    """The model's gradients, or the message saying why there are none (never raises)."""
    return caches.gradients(model_sha=model.sha256, _model=model)


def saliency_section(model: FeatureModel, image: CurrentImage) -> None:
    """SmoothGrad saliency and Grad-CAM for the current image, beside occlusion."""
    st.markdown(
        "**Saliency and Grad-CAM** ask the same question with the gradient instead of grey squares. "
        "*Saliency* (SmoothGrad): how much the class score changes when each pixel changes, averaged over 16 "
        "noisy copies of the photo. *Grad-CAM*: the last convolution's maps, each weighted by how much the "
        "class score rises with it, so only evidence *for* the class shows."
    )
    grads = gradients_or_message(model)
    if isinstance(grads, str):
        st.info(grads)
        return
    if not model.has_classifier:
        st.info(f"Saliency and Grad-CAM need a class score, and `{model.path.name}` has no classifier.")
        return
    key = (model.sha256, image.key)
    done = st.session_state.setdefault(SALIENCY_DONE, set())
    if key not in done and not st.button("Compute saliency and Grad-CAM (about a second)"):
        return
    with st.spinner("Differentiating the class score..."):
        try:
            sal, cam, layer, class_index = caches.class_maps(
                model_sha=model.sha256, image_key=image.key, _grads=grads, _image=image.array
            )
        except GradientError as err:
            st.info(str(err))
            return
    done.add(key)
    name = model.class_names[class_index] if class_index < len(model.class_names) else f"class {class_index}"
    left, right = st.columns(2)
    for column, values, title in (
        (left, sal, f"Saliency of '{name}' (SmoothGrad)"),
        (right, cam, f"Grad-CAM of '{name}' at {layer}"),
    ):
        vr = render.value_range(values, "per map")
        with column:
            st.image(
                render.enlarge(render.overlay_pixels(image.array, values, vr, render.VIRIDIS, alpha=0.55), 2),
                caption=title,
                width=300,
                output_format="PNG",
                alt=f"{title}, laid over the photo. "
                + describe_map(summarise_map(values, vr, render.VIRIDIS)).replace("colour level", "brightness level"),
            )
    st.caption(
        "Bright (yellow) is where the score of the predicted class depends most on the photo. Saliency is per "
        "pixel and speckled; Grad-CAM is coarse (one value per cell of the last map) but says *where*."
    )


def _picture_caption(result: FeatureVisualization, channel: int) -> str:
    what = "its centre cell" if result.objective == "neuron" else "mean activation"
    return (
        f"Channel {channel + 1}: {what} {result.start_activations[0]:.3f} on faint noise, "
        f"{result.activations[0]:.3f} on this picture"
    )


def _objective_text(model: FeatureModel, layer: LayerInfo) -> str:
    spec = model.spec.input
    if default_objective(layer, (spec.height, spec.width)) == "neuron":
        size = layer.receptive_field.size if layer.receptive_field else (0, 0)
        return (
            "Start from faint noise and change the picture, step by step, in the direction that raises the "
            f"activation of this channel's **centre cell**, keeping the contrast of the {size[0]} x {size[1]} "
            f"pixels it sees fixed ({vis_steps()} gradient steps). The picture is that patch with a margin around "
            "it (a quarter of its size: small shifts during the optimisation reach there), enlarged; in the "
            "first layer the patch is the filter itself. A cell this early sees only a few pixels, so optimising the "
            "channel's mean over its whole map would give a flat colour or a fine texture instead."
        )
    return (
        "Start from faint noise and change the picture, step by step, in the direction that raises this "
        f"channel's **mean activation over its whole map** ({vis_steps()} gradient steps, with small random "
        "shifts and rescaling so the picture cannot cheat with single pixels). What emerges is the pattern "
        "the channel responds to most, wherever it is in the picture."
    )


def channel_section(model: FeatureModel, layer: LayerInfo, channel: int, key: str, picture: bool = True) -> None:
    """ "What this channel looks for": the channel's optimised picture (unless ``picture`` is
    false: a page that shows it elsewhere with :func:`channel_picture_part`), and the layer's grid.
    From the model's atlas when it has the layer (no gradient model needed), else as computed."""
    st.markdown("### What this channel looks for\n\n" + _objective_text(model, layer))
    found = _layer_pictures_or_message(model, layer)
    if isinstance(found, str):
        st.info(found)
        return
    grads, grid = found
    if picture:
        _picture_part(grads, layer, channel, key, grid)
    _grid_part(grads, layer, key, grid)


def channel_picture_part(model: FeatureModel, layer: LayerInfo, channel: int, key: str) -> None:
    """The channel's optimised picture alone (or the button that computes it), for a page that
    puts it beside something else; the explanation and the grid stay in :func:`channel_section`."""
    found = _layer_pictures_or_message(model, layer)
    if isinstance(found, str):
        st.caption(found)
        return
    grads, grid = found
    _picture_part(grads, layer, channel, key, grid)


def _layer_pictures_or_message(
    model: FeatureModel, layer: LayerInfo
) -> tuple[Gradients | None, ShownPicture | None] | str:
    """The gradients (``None`` when the atlas has the layer: nothing is computed) and the layer's
    grid if there is one; or the message saying why there are no pictures."""
    if layer.is_spatial:
        stored = caches.atlas_layer(model, layer.name, vis_steps())
        if stored is not None:
            return None, stored
    grads = gradients_or_message(model)
    if isinstance(grads, str):
        return grads
    if not layer.is_spatial:
        return "Feature visualisation is shown for layers with 2-D maps."
    return grads, _kept_layer_pictures(grads, layer.name)


def _picture_part(grads: Gradients | None, layer: LayerInfo, channel: int, key: str, grid: ShownPicture | None) -> None:
    shown = _kept_channel_picture(grads, layer.name, channel, grid)
    if (
        shown is None
        and grads is not None
        and st.button(f"Optimise a picture for channel {channel + 1} (a few seconds)", key=key)
    ):
        try:
            with st.spinner(f"Optimising a picture for channel {channel + 1}..."):
                channel_picture(grads, layer.name, channel, steps=vis_steps())
        except CacheFolderError as err:
            st.error(str(err))
            return
        shown = _kept_channel_picture(grads, layer.name, channel, grid)
    if shown is not None:
        result, name, png = shown
        st.image(
            SHELF.url(png, name=name),
            caption=_picture_caption(result, channel),
            width=PICTURE_PX,
            alt=f"The picture optimised for channel {channel + 1} of {layer.name}. {_picture_caption(result, channel)}.",
        )


# Pictures someone computed are on disk; a whole class's reruns read them from memory
# (caches.featurevis_*): read from the file and encoded on every rerun, a layer's grid was most of
# the server's time per click (bench/results/featurevis_reruns.md). The key holds the file's path,
# time stamp and size, so pictures computed again are read again.


def _kept_channel_picture(
    grads: Gradients | None, layer: str, channel: int, grid: ShownPicture | None
) -> ShownPicture | None:
    """The channel's picture, if it or its layer's ``grid`` (the atlas's or :func:`_kept_layer_pictures`)
    was computed: (result, shelf name, PNG)."""
    if grid is not None and channel in grid[0].channels:  # the layer's grid, already in memory
        return caches.featurevis_channel_of_grid(grid_name=grid[1], channel=channel, _grid=grid[0])
    if grads is None:
        return None
    steps = vis_steps()
    alone = caches.file_version(cache_file(grads, layer, channel, steps=steps))
    if alone is None:
        return None
    return caches.featurevis_channel_at(version=alone, layer=layer, channel=channel, steps=steps, _grads=grads)


def _kept_layer_pictures(grads: Gradients, layer: str) -> ShownPicture | None:
    """The layer's grid of pictures, if it was computed: (result, shelf name, PNG of the mosaic)."""
    steps = vis_steps()
    version = caches.file_version(cache_file(grads, layer, steps=steps))
    if version is None:
        return None
    return caches.featurevis_layer_at(version=version, layer=layer, steps=steps, _grads=grads)


def _grid_part(grads: Gradients | None, layer: LayerInfo, key: str, shown: ShownPicture | None) -> None:
    if shown is None:
        if grads is None or not st.button(
            f"Compute pictures for all {layer.channels} channels of {layer.name} (once per model; minutes on a CPU)",
            key=f"{key}_grid",
        ):
            return
        bar = st.progress(0.0, text="Optimising the whole layer...")

        def _progress(fraction: float) -> None:
            bar.progress(min(fraction, 1.0), text=f"Optimising the whole layer: {fraction:.0%}")

        try:
            layer_pictures(grads, layer.name, steps=vis_steps(), progress=_progress)
        except CacheFolderError as err:
            bar.empty()
            st.error(str(err))
            return
        st.rerun()  # drawn again from the file: the channel's picture comes from the grid too
    whole, name, png = shown
    st.image(
        SHELF.url(png, name=name),
        caption=f"All {len(whole.channels)} channels of {layer.name}, channel 1 at the top left, row by row.",
        width="stretch",
        alt=f"The optimised pictures of all {len(whole.channels)} channels of {layer.name}, channel 1 at the top "
        "left, row by row.",
    )


# -- how the chosen cell's value was computed (issue 29) ---------------------------------------------


def cell_arithmetic_section(model: FeatureModel, image: CurrentImage, layer: LayerInfo, channel: int) -> None:
    """ "How this value was computed" for the chosen cell (``view.CELL``) of ``layer``, if one is chosen."""
    chosen = st.session_state.get(CELL)
    if not chosen or chosen[0] != layer.name:
        return
    st.markdown("### How this value was computed")
    ops = caches.layer_ops(model)
    if isinstance(ops, str):
        st.info(ops)
        return
    op = ops.get(layer.name, f"{layer.name} has no 2-D map, so it has no cells to recompute.")
    try:
        cell = explain_cell(op, model, caches.activations(model, image), image.array, channel, chosen[1], chosen[2])
    except CannotExplain as err:
        st.info(str(err))
        return
    spec = model.spec
    steps = render_cells.cell_steps(cell, model.layer_names, spec.input_scale, spec.input_offset)
    if isinstance(cell, ConvArithmetic) and cell.source == GRAPH_INPUT:
        _first_layer_cell(cell, steps)
        return
    for step in steps:
        st.markdown(step)


def _first_layer_cell(cell: ConvArithmetic, steps: list[str]) -> None:
    """The patch of the photo, enlarged, beside the introduction; one table per colour channel."""
    colours = len(cell.window)
    intro, tables, rest = steps[0], steps[1 : 1 + colours], steps[1 + colours :]
    picture_col, text_col = st.columns([1, 4])
    with picture_col:
        if cell.pixels is not None and colours in (1, 3):
            patch = np.ascontiguousarray(cell.pixels.transpose(1, 2, 0))
            patch = patch[:, :, 0] if colours == 1 else patch
            st.image(
                render.enlarge(patch, 30),
                caption="The patch, enlarged: each square is one pixel.",
                alt=f"The {patch.shape[0]} x {patch.shape[1]} pixels this cell sees, enlarged",
                output_format="PNG",
            )
    with text_col:
        st.markdown(intro)
    for step in [*tables, *rest]:
        st.markdown(step)


# -- which channels build this channel (issue 29) ------------------------------------------------------

CIRCUIT_LINKS = 4
"""Input channels listed on each side (exciting, inhibiting)."""
LINK_PICTURE_PX = 72


def how_this_channel_works(model: FeatureModel, image: CurrentImage, layer: LayerInfo, channel: int) -> None:
    """The Feature map's two views of how a channel is computed: the chosen cell's arithmetic and the channel's inputs."""
    cell_arithmetic_section(model, image, layer, channel)
    circuit_section(model, layer, channel)


def _open_channel(layer: str, channel: int) -> None:
    """A button's callback (runs before the page), so the layer and channel pickers open on it."""
    st.session_state[LAYER] = layer
    st.session_state[CHANNEL] = channel + 1
    st.session_state[CELL] = None


def circuit_section(model: FeatureModel, layer: LayerInfo, channel: int) -> None:
    """ "Which channels build this channel": the strongest exciting and inhibiting inputs from the conv below."""
    ops = caches.layer_ops(model)
    if isinstance(ops, str) or not isinstance(ops.get(layer.name), ConvOp):
        return  # only convolutions are built from channels; the arithmetic section already says why not
    with st.expander("Which channels build this channel", icon="🧩"):
        try:
            circuit = channel_circuit(ops, layer.name, channel, count=CIRCUIT_LINKS)
        except CannotExplain as err:
            st.info(str(err))
            return
        number = model.layer_names.index(circuit.below) + 1
        st.markdown(render_cells.circuit_words(circuit, number))
        grads = gradients_or_message(model)
        # The atlas has every input channel's picture; otherwise only those someone computed.
        grid = caches.atlas_layer(model, circuit.below, vis_steps())
        links = [*circuit.excitatory, *circuit.inhibitory]
        top, split_note = _top_photos(model, circuit.below, [link.channel for link in links])
        st.caption(split_note)
        for title, side in (("Excite it most", circuit.excitatory), ("Inhibit it most", circuit.inhibitory)):
            st.markdown(f"**{title}**")
            if not side:
                st.caption("None: every kernel slice of this channel sums to the other sign.")
                continue
            for column, link in zip(st.columns(len(side)), side, strict=False):
                with column:
                    _link(circuit, link, number, grads, grid, top.get(link.channel))


def _top_photos(model: FeatureModel, layer: str, channels: list[int]) -> tuple[dict[int, tuple[str, str]], str]:
    """Each channel's strongest photo in the split scanned for the One-neuron page, as (picture URL,
    file name), with its strongest cell's receptive field outlined; and a line saying where they
    come from. Only a scan already made is read: this section never starts one."""
    data = chrome.dataset_or_none()
    stats = caches.neuron_stats(model, data, scan_split(data)) if data is not None else None
    if stats is None:
        return {}, (
            "Each input channel's strongest photo shows here once a split has been scanned (on the One-neuron page)."
        )
    try:
        hits = {channel: stats.top_k(layer, channel, k=1)[0] for channel in channels}
    except (KeyError, ValueError, IndexError) as err:  # a scan without this layer, or without photos
        return {}, f"The scan of the {stats.split} split has no ranking for {layer}: {err}"
    names, pixels = caches.photos(model, [hit.path for hit in hits.values() if hit.path is not None])
    read = dict(zip(names, pixels, strict=True))
    top = {}
    for channel, hit in hits.items():
        photo = read.get(str(hit.path))
        if photo is None:
            continue
        if hit.box is not None:
            photo = render.outline_box(photo, hit.box)
        top[channel] = (caches.picture_url(photo, width_px=LINK_PICTURE_PX * 2), Path(str(hit.path)).name)
    return top, (
        f"Under each picture: the channel's strongest photo of the {len(stats)} scanned ({stats.split}), "
        "its strongest cell's field outlined."
    )


def _link(
    circuit: ChannelCircuit,
    link: InputLink,
    number: int,
    grads: Gradients | str,
    grid: ShownPicture | None,
    top_photo: tuple[str, str] | None,
) -> None:
    shown = _kept_channel_picture(None if isinstance(grads, str) else grads, circuit.below, link.channel, grid)
    if shown is not None:
        result, name, png = shown
        st.image(
            SHELF.url(png, name=name),
            width=LINK_PICTURE_PX,
            alt=f"What channel {link.channel + 1} of {circuit.below} looks for (its optimised picture)",
        )
    if top_photo is not None:
        url, photo_name = top_photo
        st.image(
            url,
            width=LINK_PICTURE_PX,
            alt=f"The photo that drives channel {link.channel + 1} of {circuit.below} hardest: {photo_name}, "
            "its strongest cell's field outlined in red",
        )
    st.button(
        f"Channel {link.channel + 1}",
        key=f"circuit.{circuit.layer}.{circuit.channel}.{link.channel}",
        help=f"Open channel {link.channel + 1} of layer {number} ({circuit.below}) on this page",
        on_click=_open_channel,
        args=(circuit.below, link.channel),
    )
    st.caption(render_cells.link_words(link))


# -- the sanity check (issue 29) ---------------------------------------------------------------------------

SANITY_DONE = "gradients.sanity_done"
SANITY_TOP = "gradients.sanity_top"


def sanity_section(model: FeatureModel, image: CurrentImage) -> None:
    """Saliency and Grad-CAM for the trained network beside the same network with random top layers."""
    grads = gradients_or_message(model)
    if isinstance(grads, str) or not model.has_classifier:
        return  # the saliency section above already says why there are no gradient maps
    st.markdown(
        "**Sanity check.** Do these maps show what the network *learned*, or just the photo? Replace the "
        "weights of the top layers by random numbers, from the classifier down (Adebayo et al. 2018), and "
        "compute both maps again for the same photo and class."
    )
    layers = caches.weighted_layer_names(model)
    top = st.select_slider(
        "Layers to randomise, from the top",
        options=list(range(1, len(layers) + 1)),
        value=len(layers),
        format_func=lambda k: f"{k} ({layers[-k]} and above)",
        key=SANITY_TOP,
    )
    key = (model.sha256, image.key, top)
    done = st.session_state.setdefault(SANITY_DONE, set())
    if key not in done and not st.button("Sanity check (a few seconds)"):
        return
    with st.spinner("Randomising the weights and differentiating again..."):
        try:
            check = caches.sanity(grads, image, top)
        except GradientError as err:
            st.info(str(err))
            return
    done.add(key)
    name = model.class_names[check.class_index] if check.class_index < len(model.class_names) else "the class"
    trained_col, random_col = st.columns(2)
    rows = (
        ("Saliency", check.saliency, check.saliency_random),
        (f"Grad-CAM at {check.cam_layer}", check.gradcam, check.gradcam_random),
    )
    for title, trained, random in rows:
        for column, values, which in ((trained_col, trained, "trained"), (random_col, random, "randomised")):
            vr = render.value_range(values, "per map")
            with column:
                st.image(
                    render.enlarge(render.overlay_pixels(image.array, values, vr, render.VIRIDIS, alpha=0.55), 2),
                    caption=f"{title} of '{name}', {which} network",
                    alt=f"{title} of '{name}' for the {which} network, laid over the photo; yellow is where it is high",
                    width=300,
                    output_format="PNG",
                )
    st.markdown(sanity_words(check.saliency_correlation, check.gradcam_correlation, check.randomised))


# -- which conv channels feed a dense unit (issue 29) -----------------------------------------------------

DENSE_UNIT = "circuits.dense_unit"
DENSE_GOTO = "circuits.goto_feature_map"


def _open_on_feature_map(layer: str, channel: int) -> None:
    _open_channel(layer, channel)
    st.session_state[DENSE_GOTO] = True


def dense_inputs_section(model: FeatureModel, image: CurrentImage, layer: str) -> None:
    """For one unit of dense ``layer``: the channels of the last maps that push it up and down on the current photo."""
    if st.session_state.pop(DENSE_GOTO, False):
        chrome.goto("feature_map")
    found = caches.dense_layer_weights(model, layer)
    maps_layer = next(
        (info.name for info in reversed(model.layers[: model.layer_names.index(layer)]) if info.is_spatial), None
    )
    if isinstance(found, str) or maps_layer is None:
        return
    weights, bias, source = found
    acts = caches.activations(model, image)
    if source not in acts:
        return
    with st.expander(f"Which channels feed a unit of {layer}", icon="🧩"):
        unit = int(st.number_input(f"Unit of {layer}", 1, weights.shape[1], 1, key=DENSE_UNIT)) - 1
        try:
            inputs = dense_unit_inputs(
                weights, bias, layer, unit, maps_layer, acts[maps_layer][None], acts[source][None]
            )
        except CannotExplain as err:
            st.info(str(err))
            return
        ops = caches.layer_ops(model)
        owner = maps_layer
        op = None if isinstance(ops, str) else ops.get(owner)
        while isinstance(op, PoolOp):  # a pooling keeps channels apart: open the convolution they come from
            owner = op.source
            op = None if isinstance(ops, str) else ops.get(owner)
        st.markdown(render_cells.dense_words(inputs, owner, image.title))
        up, down = inputs.strongest(CIRCUIT_LINKS)
        for title, links in (("Push it up most", up), ("Push it down most", down)):
            st.markdown(f"**{title}**")
            if not links:
                st.caption("None for this photo.")
                continue
            for column, (channel, value) in zip(st.columns(len(links)), links, strict=False):
                column.button(
                    f"Channel {channel + 1}",
                    key=f"dense.{layer}.{unit}.{channel}",
                    help=f"Open channel {channel + 1} of {owner} on the Feature map",
                    on_click=_open_on_feature_map,
                    args=(owner, channel),
                )
                column.caption(f"contribution {value:+.3f}")
