"""The page chrome: the pages' files and navigation, the error page for a missing model,
the sidebar, pictures sent as cached PNGs, and the warm-up before the first visitor."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import streamlit as st

from featapp import settings
from featapp.app import caches, view
from featapp.app.appstate import CurrentImage
from featapp.app.captions import describe_prediction, markdown_literal, match_classes, photo_alt
from featapp.cache import remove_stale_temporaries
from featapp.data.dataset import DatasetError
from featapp.engine.model import FeatureModel, ModelError, Prediction

__all__ = [
    "PAGE_FILES",
    "SIDEBAR_PICTURE_PX",
    "goto",
    "look_inside_label",
    "PAGE_STYLE",
    "FOCUS_TITLE_SCRIPT",
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

PAGE_STYLE = """<style>
/* A focus mark every keyboard user can see (WCAG 2.4.7, 1.4.11: at least 3:1 against the
   page): Streamlit's own is a faint tint on links and buttons. Two tones, so it shows on
   white, on the grey sidebar and on a dark primary button alike. */
a:focus-visible, button:focus-visible, [role="tab"]:focus-visible, [tabindex]:focus-visible,
input:focus-visible, [role="slider"]:focus-visible {
  outline: 3px solid #000 !important; outline-offset: 2px !important; box-shadow: 0 0 0 5px #fff !important;
}
/* The Gallery's photos are thumbnails to choose by their button: no fullscreen button (an
   invisible extra tab stop before each photo's button). */
.st-key-gallery-photos [data-testid="stElementToolbar"] { display: none !important; }
/* Code in a caption (a model's file name) faded twice, as code and as a caption, fell
   below 4.5:1: it takes the caption's colour, which passes. */
[data-testid="stCaptionContainer"] code { color: inherit !important; }
/* Captions wrap between words, never mid-name ("dog.1880.jp / g"): Streamlit's caption text
   breaks any word wider than its column, and a file name is one word. */
[data-testid="stImageCaption"], [data-testid="stImageCaption"] *, [data-testid="stCaptionContainer"],
[data-testid="stCaptionContainer"] * { overflow-wrap: normal !important; word-break: normal !important; }
/* A name wider than a narrow column is cut with an ellipsis rather than running into the
   next column's; the picture's alt text still says it whole. */
[data-testid="stImageCaption"] { overflow: hidden; text-overflow: ellipsis; }
/* A page link's label wraps in a narrow column (200% zoom) instead of being cut. */
[data-testid="stPageLink-NavLink"], [data-testid="stPageLink-NavLink"] * { white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; }
</style>"""
"""The app's own CSS, on every page (:func:`sidebar` adds it)."""

# After a change of page Streamlit leaves the keyboard's focus on the page's body (or on the
# link that was followed), so a screen reader says nothing and the next Tab starts from the top:
# this moves it to the new page's title (WCAG 2.4.3). Installed once per browser tab; it acts
# only when the title changes and the focus is nowhere else, so a rerun never takes the focus
# from a widget.
FOCUS_TITLE_SCRIPT = """<script>
if (!window.featappFocusTitle) {
  window.featappFocusTitle = true;
  const title = () => document.querySelector('[data-testid="stMainBlockContainer"] h1');
  let shown = title() ? title().innerText : null;
  new MutationObserver(() => {
    const h1 = title();
    if (!h1 || h1.innerText === shown) return;
    shown = h1.innerText;
    const active = document.activeElement;
    if (!active || active === document.body || active.closest('[data-testid="stSidebarNav"]')) {
      h1.tabIndex = -1;
      h1.focus();
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}
</script>"""
"""Focus on the page's title after a change of page (:func:`sidebar` adds it)."""


def goto(page: str) -> None:
    """Open another page (``page`` is a key of :data:`PAGE_FILES`)."""
    st.switch_page(PAGE_FILES[page])


def look_inside_label(name: str, *, chosen: bool = False) -> str:
    """A Gallery button's label, named after its photo, so a screen reader's list of buttons
    says which photo each one chooses; the current image's says so.

    >>> look_inside_label("dog.1880.jpg", chosen=True)
    'Look inside dog.1880.jpg (the current image)'
    """
    label = f"Look inside {' '.join(name.split())}"
    return f"{label} (the current image)" if chosen else label


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
            "- To convert your own model (a Keras file, or an ONNX file from PyTorch or any tool): "
            "`python -m convert export MODEL --out MODEL_featapp.onnx`, then point the app at the file it writes "
            "(see docs/convert.md).\n\n"
            "Then reload this page."
        )
        st.stop()
        raise  # unreachable: st.stop() ends the run


def show_image(array: np.ndarray, *, width: int | Literal["stretch", "content"] = "content", **kwargs: Any) -> None:
    """``st.image`` for uint8 pictures of 1 or 3 channels, encoded once as PNG and shown
    from the picture shelf (:func:`featapp.app.caches.picture_url`).

    An integer ``width`` is the shown width in pixels: the picture is made that wide here
    (crisp when enlarged).
    """
    st.image(caches.picture_url(array, width if isinstance(width, int) else None), width=width, **kwargs)


def image_alt(image: CurrentImage, pred: Prediction | None, model: FeatureModel) -> str:
    """Alt text for the current image: :func:`featapp.app.captions.photo_alt` with what is known of it."""
    kind = {"gallery": "Dataset photo", "probe": "Synthetic probe", "upload": "Your upload", "camera": "Camera photo"}
    probabilities = None if pred is None else pred.probabilities[0]
    wrong = None
    if probabilities is not None and image.true_label is not None:
        folders = match_classes([image.true_label], model.class_names)
        if folders is not None:
            wrong = folders[image.true_label] != int(np.argmax(probabilities))
    return photo_alt(
        image.title, probabilities, model.class_names, true_class=image.true_label, wrong=wrong, kind=kind[image.source]
    )


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
    st.html(PAGE_STYLE)
    pred = caches.prediction(model, image)
    with st.sidebar:
        st.markdown("**Current image**")
        show_image(
            image.array,
            caption=f"{markdown_literal(image.title)} · {image.source_text}",
            width=SIDEBAR_PICTURE_PX,
            alt=image_alt(image, pred, model),
        )
        if image.true_label is not None:
            st.caption(f"True label: {image.true_label}")
        st.markdown(prediction_text(pred, model))
        st.caption(f"Model `{model.path.name}` runs on the **{model.provider.upper()}** (ONNX Runtime).")
        if model.provider_note:
            st.caption(model.provider_note)
        st.html(FOCUS_TITLE_SCRIPT, unsafe_allow_javascript=True)


def _tidy_cache() -> None:
    """Remove temporary files a killed write left in the cache folder (:mod:`featapp.cache`)."""
    folder = settings.cache_dir()
    if folder.is_dir():
        remove_stale_temporaries(folder)


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
    _tidy_cache()
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
    """Load the gradient model (the Feature map's "what this channel looks for") and read the
    model's atlas before a student needs them: the gradient model's first load imports onnx, most
    of a second holding the GIL, which every other student's click in a class waited behind. :mod:`featapp.app.server` runs it a few
    seconds after :func:`warm_up`, so a first visitor's gallery does not wait for it either.
    Returns one line for the server's console."""
    from featapp.app.sections import gradients_or_message, vis_steps
    from featapp.explain.atlas import atlas_path

    try:
        model = caches.model_at(settings.model_path())
    except ModelError:
        return "featapp: no model, so no gradient model to load"
    grads = gradients_or_message(model)
    caches.layer_ops(model)  # the cell arithmetic's weights: read from the file once, before the first click
    # The atlas is read and checked once here (every picture decoded), not on a student's click;
    # a stale or damaged one has logged why just above this line.
    stored = caches.atlas(model, vis_steps())
    atlas = atlas_path(model.path)
    note = ""
    if stored is not None:
        note = f"; {stored.picture_count} pictures from {atlas.name}"
    elif atlas.exists():
        note = f"; {atlas.name} ignored"
    return (
        f"featapp: gradient views unavailable ({grads}){note}"
        if isinstance(grads, str)
        else f"featapp: gradient model loaded{note}"
    )
