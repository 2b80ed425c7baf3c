"""The page chrome: the pages' files and navigation, the error page for a missing model,
the sidebar, pictures sent as cached PNGs, and the warm-up before the first visitor."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from featapp import settings
from featapp.app.captions import describe_prediction, markdown_literal
from featapp.data.dataset import DatasetError
from featapp.engine.model import FeatureModel, ModelError, Prediction
from featapp.app import caches, view

__all__ = [
    "PAGE_FILES",
    "SIDEBAR_PICTURE_PX",
    "goto",
    "model_or_error_page",
    "show_image",
    "prediction_text",
    "sidebar",
    "warm_up",
]

PAGE_FILES = {
    "gallery": "featapp/app/pages/gallery.py",
    "feature_map": "featapp/app/pages/feature_map.py",
    "layer_grid": "featapp/app/pages/layer_grid.py",
    "neuron": "featapp/app/pages/neuron.py",
    "model": "featapp/app/pages/model.py",
    "classes": "featapp/app/pages/classes.py",
}
"""Page scripts, relative to ``streamlit_app.py`` (as ``st.Page`` and ``st.switch_page`` want them)."""

SIDEBAR_PICTURE_PX = 180


def goto(page: str) -> None:
    """Open another page (``page`` is a key of :data:`PAGE_FILES`)."""
    st.switch_page(PAGE_FILES[page])


def model_or_error_page() -> FeatureModel:
    """The app's model, or an error page that says how to fix it (and the run stops)."""
    try:
        return caches.model_at(settings.model_path())
    except ModelError as err:
        st.title("featapp cannot start: the model file is missing or damaged")
        st.error(str(err))
        st.markdown(
            "**How to fix it**\n\n"
            "- Get the committed model back: `git checkout -- models/cats_dogs_small.onnx` "
            "(a fresh `git clone` has it).\n"
            f"- Or point the app at another converted model: set the environment variable `{settings.MODEL_ENV}` "
            "to its path (on Streamlit Community Cloud, put it in the app's secrets).\n"
            "- To convert a Keras model: `python -m convert export MODEL.keras --out MODEL.onnx` "
            "(see the README).\n\n"
            "Then reload this page."
        )
        st.stop()
        raise  # unreachable: st.stop() ends the run


def show_image(array: np.ndarray, *, width: int | str = "content", **kwargs: Any) -> None:
    """``st.image`` for uint8 pictures of 1 or 3 channels, encoded once as PNG and shown
    from the picture shelf (:func:`featapp.app.caches.picture_url`).

    An integer ``width`` is the shown width in pixels: the picture is made that wide here
    (crisp when enlarged).
    """
    st.image(caches.picture_url(array, width if isinstance(width, int) else None), width=width, **kwargs)


def prediction_text(pred: Prediction | None, model: FeatureModel) -> str:
    """The model's answer in words, or why there is none."""
    if pred is None:
        return (
            f"No prediction: '{model.path.name}' has no classifier (a training snapshot keeps only the "
            "convolutional layers). Its feature maps can still be explored."
        )
    return describe_prediction(pred.probabilities[0], pred.class_names)


def sidebar(model: FeatureModel) -> None:
    """Current image, its prediction, and where the model runs: on every page."""
    image = view.current_image(model)
    with st.sidebar:
        st.markdown("**Current image**")
        show_image(
            image.array, caption=f"{markdown_literal(image.title)} · {image.source_text}", width=SIDEBAR_PICTURE_PX
        )
        if image.true_label is not None:
            st.caption(f"True label: {image.true_label}")
        st.markdown(prediction_text(caches.prediction(model, image), model))
        st.caption(f"Model `{model.path.name}` runs on the **{model.provider.upper()}** (ONNX Runtime).")
        if model.provider_note:
            st.caption(model.provider_note)


def warm_up() -> str:
    """Do the first visitor's work before anyone visits: load the model, read and predict
    the gallery's first sample, and encode what the gallery page and the sidebar send.

    :mod:`featapp.app.server` runs this in a thread when the server starts, so the first
    student's browser, still loading Streamlit's JavaScript, finds it done; everything
    lands in the same caches the pages read. A visitor who arrives mid-way waits on
    Streamlit's per-entry lock for the result, not for a second computation. A
    missing model or dataset is not an error here (the pages explain them to the
    visitor). Returns one line for the server's console.
    """
    started = time.perf_counter()
    try:
        model = caches.model_at(settings.model_path())
    except ModelError as err:
        return f"featapp: no model to load before the first visitor ({err})"
    image = view.default_image(model, view.DEFAULT_SEED)
    caches.prediction(model, image)
    caches.activations(model, image)
    caches.picture_png(image.array, SIDEBAR_PICTURE_PX)
    try:
        data = caches.dataset()
    except DatasetError:
        # The gallery page says how to get a dataset; the first probe is ready instead.
        return f"featapp: model loaded ({model.provider.upper()}); no dataset, so no gallery to prepare"
    split = caches.default_split(data)
    _, pixels = caches.gallery(model, data, split, view.DEFAULT_SEED)
    if pixels is not None:
        caches.gallery_prediction(model, pixels)
        caches.gallery_cards(model, data, split, view.DEFAULT_SEED)
    return (
        f"featapp: model loaded ({model.provider.upper()}) and the first gallery ready "
        f"({time.perf_counter() - started:.1f} s)"
    )


def warm_up_gradients() -> str:
    """Load the gradient model (the Feature map's "what this channel looks for") before a
    student needs it: its first load imports onnx, most of a second holding the GIL, which
    every other student's click in a class waited behind. :mod:`featapp.app.server` runs it a few
    seconds after :func:`warm_up`, so a first visitor's gallery does not wait for it either.
    Returns one line for the server's console."""
    from featapp.app.sections import gradients_or_message

    try:
        model = caches.model_at(settings.model_path())
    except ModelError:
        return "featapp: no model, so no gradient model to load"
    grads = gradients_or_message(model)
    caches.layer_ops(model)  # the cell arithmetic's weights: read from the file once, before the first click
    return (
        f"featapp: gradient views unavailable ({grads})" if isinstance(grads, str) else "featapp: gradient model loaded"
    )
