"""The page chrome: the pages' files and navigation, the error page for a missing model,
the sidebar (with "Share this view"), a shared link opened, pictures sent as cached PNGs,
and the warm-up before the first visitor."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import streamlit as st

from featapp import settings
from featapp.app import caches, share, view
from featapp.app.appstate import CurrentImage, set_current
from featapp.app.captions import describe_prediction, markdown_literal, match_classes, photo_alt
from featapp.cache import remove_stale_temporaries
from featapp.data.dataset import Dataset, DatasetError
from featapp.engine.images import ImageError, prepare_image
from featapp.engine.model import FeatureModel, ModelError, Prediction
from featapp.render import COLOUR_SCALES, SCALINGS

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
    "open_shared_view",
    "forget_link_notes_elsewhere",
    "title",
    "shared_view",
    "share_section",
    "keep_share_link_current",
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
QR_SIDEBAR_MODULE_PX = 5
QR_LARGE_MODULE_PX = 14

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


def sidebar(model: FeatureModel, page: str = "") -> None:
    """Current image, its prediction, where the model runs, and "Share this view": on every
    page (``page`` is the page's URL path, for the link)."""
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
        share_section(model, image, page)
        st.html(FOCUS_TITLE_SCRIPT, unsafe_allow_javascript=True)


# -- a view shared as a link (featapp.app.share) --------------------------------------------------------


def dataset_or_none() -> Dataset | None:
    try:
        return caches.dataset()
    except DatasetError:
        return None


def open_shared_view(model: FeatureModel, page: str) -> None:
    """Make a shared link's view (:mod:`featapp.app.share`) the session's view, once.

    The one place the app reads the address's query (``st.query_params``): only
    :data:`featapp.app.share.SHARE_KEYS` are read, then removed from the address, so the
    address bar never shows a view the student has since left and a rerun does not apply
    it again; other keys (another feature's) stay as they are. ``page`` is the page the
    link opened (its URL path). What the link asked for and did not get is said on that
    page (:func:`title`).
    """
    present = [key for key in share.SHARE_KEYS if key in st.query_params]
    if not present:
        return
    query = {key: st.query_params.get_all(key) for key in present}
    for key in present:
        del st.query_params[key]
    data = dataset_or_none()
    read = share.read_query(
        query,
        page=page,
        model=model,
        dataset=data,
        probe_names=[probe.name for probe in caches.probes(model)],
        current_layer=st.session_state.get(view.LAYER),
    )
    found, ignored = read.view, list(read.ignored)
    if found.photo is not None and data is not None:
        photo = data.find(found.photo)  # read_query found it in this listing
        try:
            pixels = prepare_image(photo.path, model)
        except ImageError as err:
            ignored.append(f"The photo {markdown_literal(photo.name)} could not be read: {markdown_literal(str(err))}")
        else:
            title = f"{photo.name} ({photo.split})"
            set_current(
                st.session_state,
                CurrentImage.from_array(pixels, "gallery", title, photo.class_name, origin=photo.reference),
            )
    elif found.probe is not None:
        probe = next(probe for probe in caches.probes(model) if probe.name == found.probe)
        set_current(st.session_state, CurrentImage.from_array(probe.image, "probe", probe.title, origin=probe.name))
    st.session_state[view.CELL] = None  # a cell belongs to another image or layer
    if found.layer is not None:
        st.session_state[view.LAYER] = found.layer
    if found.channel is not None:
        st.session_state[view.CHANNEL] = found.channel
    if found.colours is not None:
        st.session_state[view.COLOURS] = found.colours
    if found.scaling is not None:
        st.session_state[view.SCALING] = found.scaling
    if found.fixed_range is not None:
        st.session_state[view.FIXED_LOW], st.session_state[view.FIXED_HIGH] = found.fixed_range
    st.session_state[view.SHARE_NOTES] = (page, tuple(ignored))


def forget_link_notes_elsewhere(page: str) -> None:
    """A shared link's notes belong to the page it opened; moving to another page drops them."""
    notes = st.session_state.get(view.SHARE_NOTES)
    if notes and notes[0] != page:
        del st.session_state[view.SHARE_NOTES]


def title(text: str) -> None:
    """The page's title, then what a shared link that opened this page asked for and did not
    get, so that the title stays the first thing a student (or a screen reader) meets."""
    st.title(text)
    notes = st.session_state.get(view.SHARE_NOTES)
    if notes and notes[1]:
        lines = "\n".join(f"- {sentence}" for sentence in notes[1])
        st.info(f"This page opened from a shared link; part of the link was ignored, and the rest is shown:\n\n{lines}")


def shared_view(model: FeatureModel, image: CurrentImage, page: str) -> share.ViewState:
    """The view this session shows, as a link carries it: the values the pages would use
    now (a layer or channel the pages would correct, corrected the same way), so that
    another browser opening it sees what this one does."""
    layers = [layer for layer in model.layers if layer.is_spatial or page not in share.SPATIAL_PAGES]
    chosen = st.session_state.get(view.LAYER)
    layer = next((item for item in layers if item.name == chosen), layers[0] if layers else None)
    channel = None
    if layer is not None:
        try:
            channel = min(max(int(st.session_state.get(view.CHANNEL, 1)), 1), layer.channels)
        except (TypeError, ValueError):
            channel = 1
    colours = st.session_state.get(view.COLOURS, "blues4")
    scaling = st.session_state.get(view.SCALING, "per map")
    low, high = st.session_state.get(view.FIXED_LOW, 0.0), st.session_state.get(view.FIXED_HIGH, 1.0)
    fixed_range = None
    if scaling == "fixed":
        if isinstance(low, int | float) and isinstance(high, int | float) and high > low:
            fixed_range = (float(low), float(high))
        else:
            scaling = "per map"  # what the pages show for a range that runs the wrong way
    return share.ViewState(
        page=page,
        photo=image.origin if image.source == "gallery" and image.shareable else None,
        probe=image.origin if image.source == "probe" and image.shareable else None,
        layer=None if layer is None else layer.name,
        channel=channel,
        colours=colours if colours in COLOUR_SCALES else "blues4",
        scaling=scaling if scaling in SCALINGS else "per map",
        fixed_range=fixed_range,
    )


def _page_address(page: str) -> str:
    """The app's address as this browser reached it (``""`` when the browser did not say)."""
    url = st.context.url
    return share.app_root(url, page) if url else ""


@st.dialog("Scan to open this view", width="large")
def _large_code(url: str) -> None:
    show_image(
        caches.qr_code(url, QR_LARGE_MODULE_PX),
        width="content",
        alt=f"QR code of the link {url}",
    )
    st.code(url, language=None, wrap_lines=True)


def share_section(model: FeatureModel, image: CurrentImage, page: str) -> None:
    """ "Share this view": a link to this page with this image, layer, channel, colours and
    scale, and its QR code for the projector. Drawn only while open (one rerun to open it)."""
    box = view.synced(st.expander, "Share this view", key="share.box", shared=view.SHARE_OPEN, default=False, icon="🔗")
    if not box.open:
        st.session_state.pop(view.SHARE_SHOWN, None)
        return
    state = shared_view(model, image, page)
    st.session_state[view.SHARE_SHOWN] = state
    root = _page_address(page)
    url = share.link(root, state)
    with box:
        st.caption(
            "Anyone who opens this link, or scans the code, sees this page with the same image, layer, "
            "channel, colours and scale (in their own session: what they change is theirs)."
        )
        st.code(url, language=None, wrap_lines=True)
        if not image.shareable:
            kept = {"upload": "your upload", "camera": "a camera photo"}.get(image.source)
            st.caption(
                (
                    f"The current image is {kept}: it stays in this session, so the link cannot show it."
                    if kept
                    else "A link cannot name the current image, so it leaves it out."
                )
                + " It opens the rest of this view on the other browser's current image."
            )
        if st.session_state.get(view.SNAPSHOT, view.FINAL) != view.FINAL:
            st.caption("The training progress is not in the link: it opens the final model.")
        if not root:
            st.caption("This browser did not tell the server its address: put the app's address before the link.")
        elif share.is_local_address(root):
            st.caption("This address works only on this computer: students need the server's address on the network.")
        show_image(
            caches.qr_code(url, QR_SIDEBAR_MODULE_PX),
            width="stretch",
            alt=f"QR code of the link {url}",
        )
        if st.button("Show the code large (for the projector)", key="share.large"):
            _large_code(url)


def keep_share_link_current(model: FeatureModel, page: str) -> None:
    """While "Share this view" is open, redraw it when this run changed the view after the
    sidebar was drawn: the page applies the browser's reports (and a fragment reruns alone),
    so without this the link would show the view before the change."""
    shown = st.session_state.get(view.SHARE_SHOWN)
    if shown is None:
        return
    now = shared_view(model, view.current_image(model), page)
    if now != shown:
        st.session_state[view.SHARE_SHOWN] = now  # one rerun per change, never a loop
        st.rerun(scope="app")


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
