"""One neuron, many images: which photos make one channel fire most, and where (where the lecture goes next)."""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import streamlit as st

from featapp import render
from featapp.app import caches, chrome, quiz, sections, view
from featapp.app.appstate import CurrentImage, SourceKind, image_key, set_current
from featapp.app.captions import EXEMPLARS_FIRST, markdown_literal
from featapp.cache import CacheFolderError
from featapp.data.dataset import Dataset, DatasetError, DatasetImage
from featapp.engine.images import ImageError, prepare_image
from featapp.render.describe import box_words, describe_map, map_alt, summarise_map
from featapp.stats import analysis
from featapp.stats.ranking import RankedHit, rank_by_activation

COLUMNS = 4  # in the four fifths of the page beside the synthetic picture
SOURCE, RANK_BY, SCAN_SPLIT = view.RANK_SOURCE, view.RANK_BY, view.SCAN_SPLIT
SOURCES = {"gallery": "the gallery's photos", "dataset": "a whole dataset split (scanned once, then cached)"}
RANKINGS = {"max": "strongest cell (max)", "mean": "whole map (mean)"}
TOP_K = 10

model = chrome.model_or_error_page()
image = view.current_image(model)
spec = model.input_spec
input_hw = (spec.height, spec.width)


def _use(array, title: str, label: str | None, path=None, source: SourceKind = "gallery") -> None:
    origin = None if path is None else view.dataset_origin(path)
    set_current(st.session_state, CurrentImage.from_array(array, source, title, label, origin=origin))
    st.session_state[view.CELL] = None


class _Shown(NamedTuple):
    """A ranked image as the page shows it: the hit, the photo and its map of the channel."""

    key: str
    hit: RankedHit
    pixels: np.ndarray
    values: np.ndarray


def _show_ranked(entries: list[_Shown], scale, vr, score_name: str) -> None:
    """Each photo with its peak's box, then its map."""
    for start in range(0, len(entries), COLUMNS):
        columns = st.columns(COLUMNS)
        for offset, column in enumerate(columns):
            if start + offset >= len(entries):
                break
            key, hit, pixels, values = entries[start + offset]
            title, label, box, value = hit.name, hit.class_name, hit.box, hit.value
            with column:
                picture = render.outline_box(pixels, box) if box is not None else pixels
                rank = f"Number {start + offset + 1}: {' '.join(title.split())} ({label}), {score_name} {value:.3g}"
                chrome.show_image(
                    render.enlarge(picture, 2),
                    caption=f"#{start + offset + 1} {markdown_literal(title)}",
                    width="stretch",
                    output_format="PNG",
                    alt=rank + (f"; a red box around {box_words(box)}: what its strongest cell sees." if box else "."),
                )
                st.image(
                    render.map_png(values, vr, scale, min_px=200),
                    caption=f"{score_name} {value:.3g}",
                    width="stretch",
                    output_format="PNG",
                    alt=map_alt(f"This channel's map for {' '.join(title.split())}", summarise_map(values, vr, scale)),
                )
                st.button(
                    chrome.look_inside_label(title),
                    key=f"neuron.use_{key}",
                    on_click=_use,
                    args=(pixels, title, label, hit.path),
                )


def _gallery_ranking(
    items: Sequence[DatasetImage], pixels: np.ndarray, layer: str, channel: int, rank_by: str, scale, seed: int
) -> None:
    """The gallery's photos ranked by the channel, strongest first."""
    maps = caches.gallery_layer(model, pixels, layer)[:, channel]
    ranked = rank_by_activation(maps, model.layer(layer).receptive_field, input_hw, by=rank_by)
    vr = render.shared_range(maps)
    st.caption(
        f"The gallery's {len(items)} photos (seed {seed}), strongest first. "
        f"All maps share one scale. {render.describe_range(vr, scale)}"
    )
    entries = []
    for hit in ranked:
        item = items[hit.index]
        hit = dataclasses.replace(hit, path=item.path, class_name=item.class_name, label=item.label)
        entries.append(_Shown(f"g{hit.index}", hit, pixels[hit.index], maps[hit.index]))
    _show_ranked(entries, scale, vr, rank_by)


def _dataset_ranking(data: Dataset, layer: str, channel: int, rank_by: str, scale) -> None:
    """The channel's top photos over a scanned split (the scan is made on request, then kept)."""
    scan_split = view.pick_scan_split(data, key="neuron.split", label="Split to scan")
    stats = caches.neuron_stats(model, data, scan_split)
    if stats is None:
        count = len(data.images(scan_split))
        # One placeholder for the notice, the button and the progress bar, emptied once the
        # scan is done: otherwise "not scanned yet" stays above the results it just made.
        notice = st.empty()
        damaged = caches.damaged_scan_note(model, data, scan_split)
        with notice.container():
            if damaged is not None:
                st.warning(damaged)
            else:
                st.info(
                    f"The {count} photos of the {scan_split} split have not been scanned with this model yet. A "
                    "scan runs every photo through the network once and keeps, for every channel, its strongest "
                    f"images; it is saved in {analysis.default_cache_dir()} and reused by everyone afterwards."
                )
            scan_now = st.button(f"Scan the {count} photos now", type="primary")
            bar = st.progress(0.0, text="Scanning...") if scan_now else None
        if scan_now:
            try:
                stats = caches.run_scan(model, data, scan_split, bar)
                notice.empty()
            except CacheFolderError as err:
                notice.empty()
                st.error(str(err))
    if stats is None:
        return
    hits = stats.top_k(layer, channel, k=TOP_K, by=rank_by)
    entries, top_maps = [], []
    for number, hit in enumerate(hits):
        assert hit.path is not None  # top_k gives each hit its photo's path
        try:
            pixels = prepare_image(hit.path, model)
        except ImageError as err:
            st.error(f"{hit.path.name} could not be read again: {err}")
            continue
        photo = CurrentImage.from_array(pixels, "gallery", hit.path.name, hit.class_name)
        values = caches.activations(model, photo)[layer][channel]
        top_maps.append(values)
        entries.append(_Shown(f"d{number}", hit, pixels, values))
    if entries:
        vr = render.shared_range(*top_maps)
        st.caption(
            f"The top {len(entries)} of {len(stats.paths)} scanned photos ({scan_split}), strongest first. "
            f"All maps share one scale. {render.describe_range(vr, scale)}"
        )
        _show_ranked(entries, scale, vr, rank_by)


chrome.title("🎯 One neuron, many images")
st.markdown(
    "So far we looked at many channels for one image. Now turn it around: pick **one channel** and ask "
    "*which images make it fire most, and where?* The red box on each photo is the part of the image the "
    "strongest cell can see (its receptive field). If the top images share an eye, a fur texture or an "
    "edge in the boxes, that is what this channel detects. This is the road the lecture points to next: "
    "finding the inputs that maximise a neuron."
)

data: Dataset | None
dataset_note: str | None = None
try:
    data = caches.dataset()
except DatasetError as err:
    data = None
    dataset_note = str(err)

controls_left, controls_right = st.columns(2)
with controls_left:
    layer = view.pick_layer(model, key="neuron.layer", spatial_only=True)
    if layer is None:
        st.info("This model has no layers with 2-D feature maps to rank by.")
        st.stop()
    channel = view.pick_channel(layer, key="neuron.channel")
with controls_right:
    # The instructor's scan, where there is one, gives the channel's top photos over a whole split:
    # the page leads with them (a gallery of 20 rarely holds a channel's best).
    scanned = data is not None and analysis.cache_path(model, data, view.scan_split(data)).is_file()
    source = view.synced(
        st.radio,
        "Rank",
        key="neuron.source",
        shared=SOURCE,
        default="dataset" if scanned else "gallery",
        options=list(SOURCES),
        format_func=lambda k: SOURCES[k],
    )
    rank_by = view.synced(
        st.radio,
        "by",
        key="neuron.rank_by",
        shared=RANK_BY,
        default="max",
        options=list(RANKINGS),
        format_func=lambda k: RANKINGS[k],
        horizontal=True,
    )
    scale = view.pick_colours(key="neuron.colours")

layer_number = model.layer_names.index(layer.name) + 1
if dataset_note is not None:
    st.info(
        f"{dataset_note}\n\nWithout a dataset there are no photos to rank; the comparison below still works for "
        "the current image."
    )

gallery_items: Sequence[DatasetImage]
gallery_pixels: np.ndarray | None
gallery_items, gallery_pixels = ([], None)
if data is not None:
    split = (
        cast(str, st.session_state.get(view.SPLIT))  # a split name: it is one of data.splits
        if st.session_state.get(view.SPLIT) in data.splits
        else caches.default_split(data)
    )
    gallery_seed = int(st.session_state.get(view.SEED, view.DEFAULT_SEED))
    gallery_items, gallery_pixels = caches.gallery(model, data, split, gallery_seed)

st.subheader(f"Layer {layer_number} ({layer.name}), channel {channel + 1}: what it responds to")
st.markdown(EXEMPLARS_FIRST)
photos_column, picture_column = st.columns([4, 1], gap="medium")
with photos_column:
    st.markdown("### The photos it likes most")
    if data is not None and source == "gallery" and gallery_items:
        assert gallery_pixels is not None  # gallery() gives pixels whenever it gives items
        _gallery_ranking(gallery_items, gallery_pixels, layer.name, channel, rank_by, scale, gallery_seed)
    elif data is not None and source == "dataset":
        _dataset_ranking(data, layer.name, channel, rank_by, scale)
with picture_column:
    st.markdown("### Its synthetic picture")
    sections.channel_picture_part(model, layer, channel, key="neuron.featurevis")

sections.channel_section(model, layer, channel, key="neuron.featurevis_layer", picture=False)

# -- predict, then reveal ---------------------------------------------------------------------------------------
quiz_split = view.scan_split(data) if data is not None else None
quiz.channel_quiz_section(model, data, quiz_split, layer, channel, rank_by, scale)
quiz.occlusion_quiz_section(model, image)

# -- compare two images on the same channel ---------------------------------------------------------------
st.subheader("Compare two images on this channel")
st.markdown("Both maps use **one** colour scale, so the same colour means the same activation in both.")
choices = {"current": f"current image ({image.title})"}
for index, item in enumerate(gallery_items):
    choices[f"g{index}"] = f"{item.name} ({item.class_name})"


def _pixels_of(choice: str) -> CurrentImage:
    if choice == "current":
        return image
    assert gallery_pixels is not None  # gallery() gives pixels whenever it gives items
    index = int(choice[1:])
    item = gallery_items[index]
    return CurrentImage.from_array(gallery_pixels[index], "gallery", item.name, item.class_name)


left_col, right_col = st.columns(2)
options = list(choices)
# The current image is usually gallery photo 1 (the default), so "the next option" would
# compare it with itself: start the right side on the first gallery photo that differs.
current_key = image_key(image.array)
other = (
    None  # no gallery photos
    if gallery_pixels is None
    else next(
        (f"g{index}" for index in range(len(gallery_items)) if image_key(gallery_pixels[index]) != current_key),
        None,
    )
)
if st.session_state.get("neuron.compare_right") not in options:
    st.session_state.pop("neuron.compare_right", None)
right_default = options.index(other) if other in options else min(1, len(options) - 1)
with left_col:
    first = st.selectbox("Left", options, format_func=lambda k: choices[k], key="neuron.compare_left")
with right_col:
    second = st.selectbox(
        "Right", options, index=right_default, format_func=lambda k: choices[k], key="neuron.compare_right"
    )
pair = [_pixels_of(first), _pixels_of(second)]
pair_maps = [caches.activations(model, photo)[layer.name][channel] for photo in pair]
pair_range = render.shared_range(*pair_maps)
for column, photo, values in zip((left_col, right_col), pair, pair_maps, strict=False):
    with column:
        chrome.show_image(
            photo.array, caption=markdown_literal(photo.title), width=300, alt=f"Photo {' '.join(photo.title.split())}."
        )
        st.vega_lite_chart(
            render.heatmap_chart(values, pair_range, scale, width_px=300, selection=None), width="content"
        )
        st.caption(describe_map(summarise_map(values, pair_range, scale)))
st.caption(render.describe_range(pair_range, scale))
