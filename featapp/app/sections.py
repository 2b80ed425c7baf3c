"""The gradient views shared by the pages: saliency and Grad-CAM (Model page), and "what this
channel looks for" with the layer's grid of pictures (Feature map and One-neuron pages).

Layout and caching only; the computing is in :mod:`featapp.explain.saliency`, :mod:`featapp.explain.gradcam`
and :mod:`featapp.explain.featurevis`. Every reason a view cannot work (no gradient file, a layer
that cannot be differentiated, a trunk-only snapshot for class-based views) is shown as a
message in place of the view; the page goes on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import streamlit as st

from featapp import render, settings
from featapp.app.appstate import CurrentImage
from featapp.app.asset_server import SHELF
from featapp.cache import CacheFolderError
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import FeatureModel
from featapp.explain.featurevis import (
    APP_STEPS,
    FeatureVisualization,
    cache_file,
    cached_layer_pictures,
    channel_picture,
    layer_pictures,
)
from featapp.explain.gradcam import gradcam
from featapp.explain.gradients import GradientError, Gradients, load_gradients
from featapp.explain.saliency import smoothgrad

__all__ = ["gradients_or_message", "saliency_section", "channel_section"]

SALIENCY_DONE = "gradients.saliency_done"
PICTURE_PX = 200


def vis_steps() -> int:
    """Gradient steps per picture: ``$FEATAPP_VIS_STEPS`` (e.g. fewer on a slow server), else 128."""
    return settings.vis_steps(APP_STEPS)


@st.cache_resource(max_entries=8, show_spinner=False)
def _gradients(model_sha: str, _model: FeatureModel) -> Gradients | str:
    try:
        return load_gradients(_model)
    except GradientError as err:
        return str(err)


def gradients_or_message(model: FeatureModel) -> Gradients | str:
    """The model's gradients, or the message saying why there are none (never raises)."""
    return _gradients(model_sha=model.sha256, _model=model)


@st.cache_data(max_entries=16, show_spinner=False)
def _class_maps(model_sha: str, image_key: str, _grads: Gradients, _image: np.ndarray):
    smooth = smoothgrad(_grads, _image, samples=16, seed=0)
    cam = gradcam(_grads, _image)
    return smooth.per_pixel, cam.per_pixel, cam.layer, smooth.class_index


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
            sal, cam, layer, class_index = _class_maps(
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
            )
    st.caption(
        "Bright (yellow) is where the score of the predicted class depends most on the photo. Saliency is per "
        "pixel and speckled; Grad-CAM is coarse (one value per cell of the last map) but says *where*."
    )


def _picture_caption(result, channel: int) -> str:
    return (
        f"Channel {channel + 1}: mean activation {result.start_activations[0]:.3f} on faint noise, "
        f"{result.activations[0]:.3f} on this picture"
    )


def channel_section(model: FeatureModel, layer: LayerInfo, channel: int, key: str) -> None:
    """ "What this channel looks for": the channel's optimised picture, and the layer's grid."""
    st.markdown(
        "### What this channel looks for\n\n"
        "Start from faint noise and change the picture, step by step, in the direction that raises this "
        f"channel's mean activation ({vis_steps()} gradient steps, with small random shifts and rescaling so "
        "the picture cannot cheat with single pixels). What emerges is the pattern the channel responds to "
        "most: colours and edges in layer 1, textures deeper, parts of animals at the end."
    )
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
        st.image(SHELF.url(png, name=name), caption=_picture_caption(result, channel), width=PICTURE_PX)
    _grid_part(grads, layer, key, grid)


# Pictures someone computed are on disk; a whole class's reruns read them from here. Read from
# the file and encoded on every rerun, a layer's grid cost the server about a third of a second
# per click (bench/results/featurevis_reruns.md). The key holds the file's path, time stamp and
# size, so pictures computed again are read again.
_Shown = tuple[FeatureVisualization, str, bytes]


def _file_version(path: Path) -> tuple[str, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (str(path), info.st_mtime_ns, info.st_size)


def _shown(result: FeatureVisualization, picture: np.ndarray) -> _Shown:
    png = render.png_bytes(picture)
    return result, "featurevis-" + hashlib.blake2b(png, digest_size=16).hexdigest() + ".png", png


def _kept_channel_picture(grads: Gradients, layer: str, channel: int, grid: _Shown | None) -> _Shown | None:
    """The channel's picture, if it or its layer's ``grid`` (:func:`_kept_layer_pictures`) was
    computed: (result, shelf name, PNG)."""
    if grid is not None and channel in grid[0].channels:  # the layer's grid, already in memory
        return _channel_of_grid(grid_name=grid[1], channel=channel, _grid=grid[0])
    steps = vis_steps()
    alone = _file_version(cache_file(grads, layer, channel, steps=steps))
    if alone is None:
        return None
    return _channel_at(version=alone, layer=layer, channel=channel, steps=steps, _grads=grads)


@st.cache_resource(max_entries=64, show_spinner=False)
def _channel_of_grid(grid_name: str, channel: int, _grid: FeatureVisualization) -> _Shown:
    result = _grid.of_channel(channel)
    return _shown(result, result.images[0])


@st.cache_resource(max_entries=64, show_spinner=False)
def _channel_at(version: tuple, layer: str, channel: int, steps: int, _grads: Gradients) -> _Shown | None:
    result = channel_picture(_grads, layer, channel, steps=steps, compute=False)
    return None if result is None else _shown(result, result.images[0])


def _kept_layer_pictures(grads: Gradients, layer: str) -> _Shown | None:
    """The layer's grid of pictures, if it was computed: (result, shelf name, PNG of the mosaic)."""
    steps = vis_steps()
    version = _file_version(cache_file(grads, layer, steps=steps))
    if version is None:
        return None
    return _layer_at(version=version, layer=layer, steps=steps, _grads=grads)


@st.cache_resource(max_entries=16, show_spinner=False)
def _layer_at(version: tuple, layer: str, steps: int, _grads: Gradients) -> _Shown | None:
    whole = cached_layer_pictures(_grads, layer, steps=steps)
    if whole is None:
        return None
    return _shown(whole, _mosaic(whole.images))


def _grid_part(grads: Gradients, layer: LayerInfo, key: str, shown: _Shown | None) -> None:
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
    )


MOSAIC_MAX_PX = 1400
"""The layer grid's widest picture: the page shows it about 1,000 px wide, and 128 pictures at
full size made a 2,460 px mosaic of several MB for every student's browser."""


def _mosaic(images: np.ndarray, gap: int = 4, max_px: int = MOSAIC_MAX_PX) -> np.ndarray:
    count, height, width, depth = images.shape
    columns = render.grid_columns(count)
    # Shrink every picture by the same whole factor (block means) until the row fits.
    factor = 1
    while factor < min(height, width) and columns * (width // factor + gap) - gap > max_px:
        factor += 1
    if factor > 1:
        h, w = height // factor, width // factor
        blocks = images[:, : h * factor, : w * factor].reshape(count, h, factor, w, factor, depth)
        images = np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
        height, width = h, w
    rows = -(-count // columns)
    canvas = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for i, picture in enumerate(images):
        r, c = divmod(i, columns)
        tile = picture if depth == 3 else np.repeat(picture, 3, axis=2)
        canvas[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = tile
    return canvas
