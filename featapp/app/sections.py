"""The gradient views shared by the pages: saliency and Grad-CAM (Model page), and "what this
channel looks for" with the layer's grid of pictures (Feature map and One-neuron pages).

Layout and caching only; the computing is in :mod:`featapp.explain.saliency`, :mod:`featapp.explain.gradcam`
and :mod:`featapp.explain.featurevis`. Every reason a view cannot work (no gradient file, a layer
that cannot be differentiated, a trunk-only snapshot for class-based views) is shown as a
message in place of the view; the page goes on.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from featapp import render, settings
from featapp.app import caches
from featapp.app.appstate import CurrentImage
from featapp.app.asset_server import SHELF
from featapp.app.caches import ShownPicture
from featapp.cache import CacheFolderError
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
from featapp.render.describe import describe_map, summarise_map

__all__ = ["gradients_or_message", "saliency_section", "channel_section"]

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
            f"pixels it sees fixed ({vis_steps()} gradient steps). The picture is that patch, enlarged; in the "
            "first layer it is the filter itself. A cell this early sees only a few pixels, so optimising the "
            "channel's mean over its whole map would give a flat colour or a fine texture instead."
        )
    return (
        "Start from faint noise and change the picture, step by step, in the direction that raises this "
        f"channel's **mean activation over its whole map** ({vis_steps()} gradient steps, with small random "
        "shifts and rescaling so the picture cannot cheat with single pixels). What emerges is the pattern "
        "the channel responds to most, wherever it is in the picture."
    )


def channel_section(model: FeatureModel, layer: LayerInfo, channel: int, key: str) -> None:
    """ "What this channel looks for": the channel's optimised picture, and the layer's grid."""
    st.markdown("### What this channel looks for\n\n" + _objective_text(model, layer))
    grads = gradients_or_message(model)
    if isinstance(grads, str):
        st.info(grads)
        return
    if not layer.is_spatial:
        st.info("Feature visualisation is shown for layers with 2-D maps.")
        return
    grid = _kept_layer_pictures(grads, layer.name)
    shown = _kept_channel_picture(grads, layer.name, channel, grid)
    if shown is None and st.button(f"Optimise a picture for channel {channel + 1} (a few seconds)", key=key):
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
    _grid_part(grads, layer, key, grid)


# Pictures someone computed are on disk; a whole class's reruns read them from memory
# (caches.featurevis_*): read from the file and encoded on every rerun, a layer's grid was most of
# the server's time per click (bench/results/featurevis_reruns.md). The key holds the file's path,
# time stamp and size, so pictures computed again are read again.


def _file_version(path: Path) -> tuple[str, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (str(path), info.st_mtime_ns, info.st_size)


def _kept_channel_picture(grads: Gradients, layer: str, channel: int, grid: ShownPicture | None) -> ShownPicture | None:
    """The channel's picture, if it or its layer's ``grid`` (:func:`_kept_layer_pictures`) was
    computed: (result, shelf name, PNG)."""
    if grid is not None and channel in grid[0].channels:  # the layer's grid, already in memory
        return caches.featurevis_channel_of_grid(grid_name=grid[1], channel=channel, _grid=grid[0])
    steps = vis_steps()
    alone = _file_version(cache_file(grads, layer, channel, steps=steps))
    if alone is None:
        return None
    return caches.featurevis_channel_at(version=alone, layer=layer, channel=channel, steps=steps, _grads=grads)


def _kept_layer_pictures(grads: Gradients, layer: str) -> ShownPicture | None:
    """The layer's grid of pictures, if it was computed: (result, shelf name, PNG of the mosaic)."""
    steps = vis_steps()
    version = _file_version(cache_file(grads, layer, steps=steps))
    if version is None:
        return None
    return caches.featurevis_layer_at(version=version, layer=layer, steps=steps, _grads=grads)


def _grid_part(grads: Gradients, layer: LayerInfo, key: str, shown: ShownPicture | None) -> None:
    if shown is None:
        if not st.button(
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
