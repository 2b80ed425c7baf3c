"""Gallery: choose the image to look inside (the lecture's Figure 1), a probe, an upload or a camera photo."""

import random

import streamlit as st

from featapp.app import caches, chrome, view
from featapp.app.appstate import CurrentImage, SourceKind, from_upload, set_current
from featapp.app.captions import TRAINED_ON_TEXT, WRONG_MARK, markdown_literal, match_classes, photo_alt
from featapp.data.dataset import DatasetError
from featapp.data.download import SOURCES, DownloadError, download_photos
from featapp.engine.images import ImageError
from featapp.render import outline_box

# Every format featapp.prepare_image reads, and that its error messages offer (TIFF too).
# (A comment, not a docstring: Streamlit's magic would print a bare string on the page.)
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
# With MIME types in the list, the browser's file dialog still filters by them, and
# Streamlit leaves every file that does arrive to featapp.prepare_image, whose refusals
# are messages for students (an extension check alone raises an exception instead).
UPLOAD_ACCEPT = UPLOAD_TYPES + ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff"]
UPLOAD_ERROR = "gallery.upload_error"
DOWNLOADED = "gallery.downloaded"
COLUMNS = 5
PROBE_FRAME = (150, 150, 150)
PHOTOS = "gallery-photos"  # the photos' container (its CSS class is st-key-gallery-photos)

model = chrome.model_or_error_page()
spec = model.input_spec


def _choose(image: CurrentImage) -> None:
    set_current(st.session_state, image)
    st.session_state[view.CELL] = None
    st.session_state.pop(UPLOAD_ERROR, None)


def _choose_gallery(index: int, split: str, seed: int) -> None:
    items, pixels = caches.gallery(model, caches.dataset(), split, seed)
    assert pixels is not None  # gallery() gives pixels whenever it gives items
    item = items[index]
    _choose(
        CurrentImage.from_array(
            pixels[index], "gallery", f"{item.name} ({split})", item.class_name, origin=item.reference
        )
    )


def _choose_probe(index: int) -> None:
    probe = caches.probes(model)[index]
    _choose(CurrentImage.from_array(probe.image, "probe", probe.title, origin=probe.name))


def _take_photo(widget_key: str, kind: SourceKind) -> None:
    """Decode an upload or camera photo in memory; a bad file leaves a message, not a crash."""
    uploaded = st.session_state.get(widget_key)
    if uploaded is None:
        return
    try:
        image = from_upload(uploaded, spec, name=uploaded.name if kind == "upload" else "camera photo", kind=kind)
    except ImageError as err:
        st.session_state[UPLOAD_ERROR] = f"'{markdown_literal(uploaded.name)}' cannot be used: {err}"
        return
    _choose(image)


def _new_sample() -> None:
    st.session_state[view.SEED] = random.randrange(10_000)


chrome.title("🖼️ Gallery")
st.markdown(
    "Choose the image to look inside: a photo from the dataset, a synthetic probe, your own photo or the "
    "camera. Every other page shows what the network does with it. As in the lecture's first figure, the "
    "model's answer is printed under each photo."
)
current = view.current_image(model)
notice_col, link_col = st.columns([3, 1], vertical_alignment="center")
with notice_col:
    st.success(f"Current image: **{markdown_literal(current.title)}** ({current.source_text}).")
with link_col:
    st.page_link(chrome.PAGE_FILES["feature_map"], label="Look at its feature maps", icon="🔥")
if st.session_state.get(UPLOAD_ERROR):
    st.error(st.session_state[UPLOAD_ERROR])


# -- dataset photos --------------------------------------------------------------------------------------
def _dataset_photos() -> None:
    """The lecture's Figure 1: a seeded sample of dataset photos, each with the model's answer."""
    try:
        data = caches.dataset()
    except DatasetError as err:
        data = None
        st.info(
            f"{err}\n\nWithout a dataset you can still use the probes, your own photos and the camera (the other tabs)."
        )
        _download_photos()

    if data is not None:
        if st.session_state.get(DOWNLOADED):
            st.success(st.session_state.pop(DOWNLOADED))
        splits = list(data.splits)
        if st.session_state.get(view.SPLIT) not in splits:
            st.session_state[view.SPLIT] = caches.default_split(data)
        st.session_state.setdefault(view.SEED, view.DEFAULT_SEED)
        split_col, seed_col, button_col = st.columns([2, 2, 2], vertical_alignment="bottom")
        with split_col:
            split = view.synced(
                st.selectbox,
                "Split",
                key="gallery.split",
                shared=view.SPLIT,
                default=splits[0],
                options=splits,
                help="The test photos were never seen in training, so the model's answers there are honest.",
            )
        with seed_col:
            seed = view.synced(
                st.number_input,
                "Sample seed",
                key="gallery.seed",
                shared=view.SEED,
                default=view.DEFAULT_SEED,
                min_value=0,
                max_value=9_999,
                step=1,
            )
        with button_col:
            st.button("🎲 New random sample", on_click=_new_sample)
        seed = int(seed)
        cards = caches.gallery_cards(model, data, split, seed)
        st.caption(
            f"Sample seed **{seed}** from the {split} split: type this number in to see the same "
            f"{len(cards)} photos on any machine."
        )
        # One tab stop per photo (its button): the photos' fullscreen buttons are hidden
        # here, where a photo is a thumbnail to choose, not a picture to study.
        with st.container(key=PHOTOS):
            for start in range(0, len(cards), COLUMNS):
                for offset, column in enumerate(st.columns(COLUMNS)):
                    index = start + offset
                    if index >= len(cards):
                        break
                    card = cards[index]
                    with column:
                        st.image(caches.card_url(card), caption=card.caption, width="stretch", alt=card.alt)
                        st.button(
                            chrome.look_inside_label(
                                card.item.name, chosen=current.title == f"{card.item.name} ({split})"
                            ),
                            key=f"gallery.use_{index}",
                            on_click=_choose_gallery,
                            args=(index, split, seed),
                            type="primary" if current.title == f"{card.item.name} ({split})" else "secondary",
                        )
        seen_before = sum(card.trained_on for card in cards)
        wrong_count = sum(bool(card.wrong) and not card.trained_on for card in cards)
        if not (model.has_classifier and cards):
            st.caption("This model has no classifier, so there are no predictions to show.")
        elif match_classes(data.classes(split), model.class_names) is None:
            st.caption("The dataset's folders do not match the model's classes, so right and wrong are not marked.")
        else:
            fresh = len(cards) - seen_before
            line = (
                f"The model gets **{fresh - wrong_count} of {fresh}** right; the ones it gets wrong are marked "
                f"{WRONG_MARK} with a red frame."
            )
            if fresh == 0:
                line = (
                    f"The model was trained or selected on all of these photos (marked *{TRAINED_ON_TEXT}*), so "
                    "its answers here say little about how well it does: for an honest score, choose photos it "
                    "has not seen (the course's test split, for example)."
                )
            elif seen_before:
                line += (
                    f" {seen_before} of these photos are ones the model was trained or selected on "
                    f"(marked *{TRAINED_ON_TEXT}*); they are not counted, since its answers on them say little."
                )
            st.markdown(line)


def _download_photos() -> None:
    """The course photos in one click (featapp.data.download); the gallery appears when they are in place."""
    source_name = st.radio(
        "Photos to download",
        list(SOURCES),
        format_func=lambda name: f"{name}: {SOURCES[name].description}",
        key="gallery.download_source",
    )
    source = SOURCES[source_name]
    dest = caches.download_destination(source_name)
    st.caption(f"Licence: {source.licence}. From {source.url}, into `{dest}`.")
    if not st.button("⬇️ Download the course photos", key="gallery.download", type="primary"):
        return
    lock = caches.download_lock()
    if not lock.acquire(blocking=False):
        st.warning("Another visitor is downloading the photos right now; reload this page in a minute.")
        return
    bar = st.progress(0.0, text="Starting the download...")
    stages = {"download": "Downloading", "verify": "Checking the archive", "extract": "Laying out the photos"}

    def progress(stage: str, done: int, total: int) -> None:
        fraction = min(1.0, done / total) if total else 1.0
        amount = f"{done / 1e6:.0f} of {total / 1e6:.0f} MB" if stage == "download" else f"{done:,} of {total:,}"
        bar.progress(fraction, text=f"{stages.get(stage, stage)}: {amount}")

    try:
        result = download_photos(source, dest, progress=progress)
    except (DownloadError, OSError) as err:
        # OSError: a folder that cannot be written, a full disk (the message names the file).
        bar.empty()
        st.error(f"The photos could not be downloaded: {err}")
        return
    finally:
        lock.release()
    st.session_state[DOWNLOADED] = f"{result.total:,} photos downloaded into `{result.destination}`" + (
        f" ({result.skipped:,} broken ones skipped)." if result.skipped else "."
    )
    st.rerun()


# -- probes ----------------------------------------------------------------------------------------------
def _probes() -> None:
    """The synthetic probe images."""
    st.markdown(
        "Simple synthetic pictures: each one asks a clear question, such as *which channels like vertical edges?*"
    )
    probe_list = caches.probes(model)
    for start in range(0, len(probe_list), COLUMNS):
        columns = st.columns(COLUMNS)
        for offset, column in enumerate(columns):
            index = start + offset
            if index >= len(probe_list):
                break
            probe = probe_list[index]
            # A thin grey frame: a probe's white half would otherwise melt into the white page.
            framed = outline_box(
                probe.image, (0, 0, *probe.image.shape[:2]), colour=PROBE_FRAME, thickness=2, pointer_below=0
            )
            with column:
                chrome.show_image(
                    framed,
                    caption=markdown_literal(probe.title),
                    width="stretch",
                    alt=photo_alt(probe.title, None, model.class_names, kind="Synthetic probe")
                    + f" {probe.description}",
                )
                st.button(
                    chrome.look_inside_label(probe.title, chosen=current.title == probe.title),
                    key=f"gallery.probe_{index}",
                    on_click=_choose_probe,
                    args=(index,),
                    help=probe.description,
                )


# -- your own photo --------------------------------------------------------------------------------------
def _own_photo() -> None:
    """The upload box and the camera."""
    st.caption(
        f"It is resized to {spec.width} x {spec.height} pixels, as the network expects. "
        "Photos stay in this server's memory only; they are never saved."
    )
    upload_col, camera_col = st.columns(2)
    with upload_col:
        st.file_uploader(
            "Upload a photo",
            type=UPLOAD_ACCEPT,
            key="gallery.upload",
            on_change=_take_photo,
            args=("gallery.upload", "upload"),
        )
    with camera_col:
        if st.toggle("Use the camera", key="gallery.camera_on"):
            st.camera_input(
                "Take a photo", key="gallery.camera", on_change=_take_photo, args=("gallery.camera", "camera")
            )


# Only the open tab is drawn: a first visit then loads the dataset photos and nothing else
# (the probes' 20 pictures and the uploader's code wait until their tab is opened).
tabs = st.tabs(list(view.GALLERY_TABS), key=view.GALLERY_TAB, on_change="rerun")
for tab, draw in zip(tabs, (_dataset_photos, _probes, _own_photo), strict=True):
    if tab.open:
        with tab:
            draw()
