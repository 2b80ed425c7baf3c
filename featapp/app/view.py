"""The view the pages agree on: the current image, and the layer, channel, colours,
scaling, chosen cell and training snapshot that every page shows and changes.

Streamlit forgets a widget's value when its page is left, so each value a page keeps
lives under its own ``st.session_state`` key and the widget that shows it mirrors it
(:func:`synced`). Every key is named ``<owner>.<thing>``: ``view.*`` for the values kept
across pages (the constants below), ``<page>.*`` for a page's widgets and its own state
(``feature_map.channel`` is the Feature map's channel box, which mirrors ``view.channel``).
Streamlit turns a widget key into the CSS class ``st-key-<key>`` with the dot as ``-``.

=====================  ====================  =================================================
Constant               Key                   Holds
=====================  ====================  =================================================
:data:`LAYER`          ``view.layer``        the layer shown (its name)
:data:`CHANNEL`        ``view.channel``      the channel shown, counted from 1
:data:`COLOURS`        ``view.colours``      the colour scale's key
:data:`SCALING`        ``view.scaling``      per map, per layer or fixed
:data:`FIXED_LOW`      ``view.fixed_low``    the fixed range's low end
:data:`FIXED_HIGH`     ``view.fixed_high``   the fixed range's high end
:data:`SNAPSHOT`       ``view.snapshot``     the snapshot's path, or :data:`FINAL`
:data:`CELL`           ``view.cell``         ``(layer, row, col)`` of the chosen cell, or None
:data:`SEED`           ``view.seed``         the gallery's sample seed
:data:`SPLIT`          ``view.split``        the gallery's split
:data:`SCAN_SPLIT`     ``view.scan_split``   the scanned split (One neuron and Cats vs dogs)
:data:`RANK_SOURCE`    ``view.rank_source``  rank the gallery or a scanned split
:data:`RANK_BY`        ``view.rank_by``      rank by a map's max or mean
:data:`GRID_FIRST`     ``view.grid_first``   + ``.<layer>``: the Layer grid's first channel
:data:`GRID_LAST`      ``view.grid_last``    + ``.<layer>``: the Layer grid's last channel
:data:`GRID_ORDER`     ``view.grid_order``   the Layer grid's channel order
:data:`STRIP_OPEN`     ``view.strip_open``   whether the map across training is open
:data:`GALLERY_TAB`    ``gallery.tab``       the Gallery's open tab (a widget key)
:data:`CLASSES_TAB`    ``classes.tab``       the Cats vs dogs page's open tab (a widget key)
:data:`CLASSES_LAYER`  ``classes.layer``     its ranked layer (a widget key)
:data:`SHARE_OPEN`     ``share.open``        whether the sidebar's "Share this view" is open
:data:`SHARE_SHOWN`    ``share.shown``       the view its link shows (while open)
:data:`SHARE_NOTES`    ``share.notes``       ``(page, sentences)``: what an opened link asked for and did not get
=====================  ====================  =================================================

The current image is under :data:`featapp.app.appstate.CURRENT_KEY` (the library's, so the
library's tests can use it without Streamlit).

A model with more than :data:`BLOCKS_ABOVE` layers to choose from is chosen in two steps,
its block, then a layer of it (:func:`pick_layer`); the block box (``<page>.layer_block``)
holds no value of its own: it shows the block of ``view.layer``, and choosing a block opens
its first layer there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from featapp.app import caches
from featapp.app.appstate import CurrentImage, get_current, set_current
from featapp.data.dataset import Dataset, DatasetError
from featapp.engine.blocks import Block, group_blocks
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import FeatureModel, ModelError
from featapp.engine.snapshots import Snapshot
from featapp.render import COLOUR_SCALES, SCALINGS, ColourScale

__all__ = [
    "FINAL",
    "FINAL_LABEL",
    "LAYER",
    "CHANNEL",
    "COLOURS",
    "SCALING",
    "FIXED_LOW",
    "FIXED_HIGH",
    "SNAPSHOT",
    "CELL",
    "SEED",
    "DEFAULT_SEED",
    "SPLIT",
    "SCAN_SPLIT",
    "RANK_SOURCE",
    "RANK_BY",
    "GRID_FIRST",
    "GRID_LAST",
    "GRID_ORDER",
    "STRIP_OPEN",
    "GALLERY_TAB",
    "GALLERY_TABS",
    "CLASSES_TAB",
    "CLASSES_TABS",
    "CLASSES_LAYER",
    "SHARE_OPEN",
    "SHARE_SHOWN",
    "SHARE_NOTES",
    "SCALING_LABELS",
    "current_image",
    "default_image",
    "dataset_origin",
    "synced",
    "layer_label",
    "layer_details",
    "BLOCKS_ABOVE",
    "layer_blocks",
    "pick_layer",
    "pick_channel",
    "pick_colours",
    "pick_scaling",
    "model_label",
    "pick_snapshot",
]

FINAL = "final"
"""The training-progress option (its value in ``st.session_state``) that means "the full, final model"."""
FINAL_LABEL = "final model"
"""How the page names the final model, beside the snapshots' epochs."""

# The values kept across pages (the table above; widgets mirror them, see synced()).
LAYER = "view.layer"
CHANNEL = "view.channel"  # 1-based, as students count channels
COLOURS = "view.colours"
SCALING = "view.scaling"
FIXED_LOW = "view.fixed_low"
FIXED_HIGH = "view.fixed_high"
SNAPSHOT = "view.snapshot"
CELL = "view.cell"  # (layer name, row, col), 0-based
SEED = "view.seed"
DEFAULT_SEED = 0
"""The gallery's sample seed until a student picks another (what :func:`featapp.app.chrome.warm_up` prepares)."""
SPLIT = "view.split"
SCAN_SPLIT = "view.scan_split"
RANK_SOURCE = "view.rank_source"
RANK_BY = "view.rank_by"
GRID_FIRST = "view.grid_first"
GRID_LAST = "view.grid_last"
GRID_ORDER = "view.grid_order"
STRIP_OPEN = "view.strip_open"
GALLERY_TAB = "gallery.tab"
GALLERY_TABS = ("📷 Dataset photos", "🧪 Probes", "⬆️ Your photo or the camera")
"""The gallery's tabs: the dataset photos, the probes, and uploads with the camera."""

CLASSES_TAB = "classes.tab"
CLASSES_TABS = (
    "🐾 Channels that tell them apart",
    "🔢 Dense units and this photo",
    "🗺️ Map of the feature space",
    "🩺 Health",
)
"""The 'Cats vs dogs' page's tabs (only the open one is drawn)."""
CLASSES_LAYER = "classes.layer"
SHARE_OPEN = "share.open"
SHARE_SHOWN = "share.shown"
SHARE_NOTES = "share.notes"

SCALING_LABELS = {
    "per map": "per map (its own min to max)",
    "per layer": "per layer (all channels, this image)",
    "fixed": "fixed (a range you set)",
}


# -- the current image ------------------------------------------------------------------------------


def current_image(model: FeatureModel) -> CurrentImage:
    """The image the pages look at; the first gallery photo (or first probe) until one is chosen."""
    image = get_current(st.session_state)
    if image is not None and image.fits(model.input_spec):
        return image
    image = default_image(model, int(st.session_state.get(SEED, DEFAULT_SEED)))
    set_current(st.session_state, image)
    return image


def default_image(model: FeatureModel, seed: int) -> CurrentImage:
    """The first photo of the gallery's sample ``seed``, else (no dataset) the first probe."""
    try:
        data = caches.dataset()
        split = caches.default_split(data)
        items, pixels = caches.gallery(model, data, split, seed)
        if items:
            assert pixels is not None  # gallery() gives pixels whenever it gives items
            item = items[0]
            return CurrentImage.from_array(
                pixels[0], "gallery", f"{item.name} ({split})", item.class_name, origin=item.reference
            )
    except DatasetError:
        pass
    probe = caches.probes(model)[0]
    return CurrentImage.from_array(probe.image, "probe", probe.title, origin=probe.name)


def dataset_origin(path: str | Path) -> str | None:
    """A dataset photo's ``<split>/<class>/<file>`` (its :attr:`CurrentImage.origin`), or
    ``None`` when ``path`` is not one the dataset lists (then no link can name it)."""
    try:
        return caches.dataset().reference_of(path)
    except DatasetError:
        return None


# -- synced widgets ---------------------------------------------------------------------------------------


def _copy(widget_key: str, shared_key: str, convert: Callable[[Any], Any] | None = None) -> None:
    value = st.session_state[widget_key]
    st.session_state[shared_key] = convert(value) if convert else value


def synced(widget: Callable[..., Any], label: str, *, key: str, shared: str, default: Any, **kwargs: Any) -> Any:
    """A widget that shows, and writes back to, a value every page shares.

    Streamlit forgets a widget's value when its page is left, so the shared value lives
    under its own key; the widget is set from it before it is drawn, and copies each
    change back (``on_change``).
    """
    if shared not in st.session_state:
        st.session_state[shared] = default
    st.session_state[key] = st.session_state[shared]
    return widget(label, key=key, on_change=_copy, args=(key, shared), **kwargs)


def layer_label(model: FeatureModel, layer: LayerInfo) -> str:
    """The layer's number and name: short enough for the dropdown's width (the kind and
    shape, which made labels like '8 · max_pooling2d_3 (MaxPooling2D, 7 x 7 x 128)' that
    the box cut off, are in :func:`layer_details` under it)."""
    number = model.layer_names.index(layer.name) + 1
    return f"{number} · {layer.name}"


def layer_details(layer: LayerInfo) -> str:
    """The layer's kind and output shape, shown under the layer chooser."""
    return f"{layer.kind}, output {layer.shape_text}"


BLOCKS_ABOVE = 30
"""A layer chooser with more layers than this comes in two steps: the block, then its layer."""


def layer_blocks(model: FeatureModel, layers: list[LayerInfo]) -> list[Block]:
    """``layers`` grouped by block (:func:`featapp.engine.blocks.group_blocks`), numbered as in the model."""
    number = {name: index + 1 for index, name in enumerate(model.layer_names)}
    return group_blocks([layer.name for layer in layers], [number[layer.name] for layer in layers])


def _open_block(block_key: str, blocks: dict[str, Block]) -> None:
    """A new block was chosen: show its first layer (the layer box then lists its layers)."""
    st.session_state[LAYER] = blocks[st.session_state[block_key]].layers[0]


def pick_layer(model: FeatureModel, *, key: str, spatial_only: bool, label: str = "Layer") -> LayerInfo | None:
    """A layer chooser (layers numbered from 1, as in the lecture); ``None`` if there is none to choose.

    With more than :data:`BLOCKS_ABOVE` layers (a MobileNet, a ResNet), a "Block" box comes
    first and the layer box lists that block's layers; both boxes filter as the student types.
    """
    layers = [layer for layer in model.layers if layer.is_spatial or not spatial_only]
    if not layers:
        return None
    names = [layer.name for layer in layers]
    if st.session_state.get(LAYER) not in names:
        st.session_state[LAYER] = names[0]
    options = names
    blocks = layer_blocks(model, layers) if len(names) > BLOCKS_ABOVE else []
    if len(blocks) > 1:
        by_label = {block.label: block for block in blocks}
        current = next(block.label for block in blocks if st.session_state[LAYER] in block.layers)
        block_key = f"{key}_block"
        st.session_state[block_key] = current
        chosen_block = st.selectbox(
            "Block",
            list(by_label),
            key=block_key,
            on_change=_open_block,
            args=(block_key, by_label),
            help=f"This model has {len(names)} layers here, in {len(blocks)} blocks: type to search either box.",
        )
        options = list(by_label[chosen_block].layers)
    chosen = synced(
        st.selectbox,
        label,
        key=key,
        shared=LAYER,
        default=names[0],
        options=options,
        format_func=lambda name: layer_label(model, model.layer(name)),
    )
    layer = model.layer(chosen)
    st.caption(layer_details(layer))
    return layer


def pick_channel(layer: LayerInfo, *, key: str, label: str | None = None) -> int:
    """A channel chooser (1 to C); returns the 0-based index."""
    count = layer.channels
    current = int(st.session_state.get(CHANNEL, 1))
    st.session_state[CHANNEL] = min(max(current, 1), count)
    chosen = synced(
        st.number_input,
        label or f"Channel (1 to {count})",
        key=key,
        shared=CHANNEL,
        default=1,
        min_value=1,
        max_value=count,
        step=1,
    )
    return int(chosen) - 1


def scan_split(data: Dataset) -> str:
    """The split the scan picker shows (the shared choice, else the default one)."""
    chosen = st.session_state.get(SCAN_SPLIT)
    return chosen if isinstance(chosen, str) and chosen in data.splits else caches.default_split(data)


def pick_scan_split(data: Dataset, *, key: str, label: str, help: str | None = None) -> str:
    """The split to scan, shared by "One neuron, many images" and "Cats vs dogs"."""
    return synced(
        st.selectbox,
        label,
        key=key,
        shared=SCAN_SPLIT,
        default=caches.default_split(data),
        options=list(data.splits),
        help=help,
    )


def pick_colours(*, key: str) -> ColourScale:
    """The colour-scale chooser."""
    chosen = synced(
        st.radio,
        "Colours",
        key=key,
        shared=COLOURS,
        default="blues4",
        options=list(COLOUR_SCALES),
        format_func=lambda k: COLOUR_SCALES[k].label,
        horizontal=True,
    )
    return COLOUR_SCALES[chosen]


def pick_scaling(*, key: str, per_map_label: str | None = None) -> tuple[str, tuple[float, float] | None]:
    """Scaling mode, and the fixed range when it is "fixed" (``None`` if the range is invalid)."""
    labels = dict(SCALING_LABELS)
    if per_map_label:
        labels["per map"] = per_map_label
    mode = synced(
        st.radio,
        "Scale",
        key=key,
        shared=SCALING,
        default="per map",
        options=list(SCALINGS),
        format_func=lambda k: labels[k],
        horizontal=True,
    )
    if mode != "fixed":
        return mode, None
    low_col, high_col = st.columns(2)
    with low_col:
        low = synced(
            st.number_input, "Range from", key=f"{key}_low", shared=FIXED_LOW, default=0.0, step=0.1, format="%.3f"
        )
    with high_col:
        high = synced(
            st.number_input, "Range to", key=f"{key}_high", shared=FIXED_HIGH, default=1.0, step=0.1, format="%.3f"
        )
    if not high > low:
        st.error(
            f"The range must go from a lower to a higher value (you set {low:g} to {high:g}); showing each map per map."
        )
        return "per map", None
    return mode, (float(low), float(high))


# -- training snapshots -----------------------------------------------------------------------------------


def model_label(snapshot: Snapshot | None) -> str:
    """How the page names the model it shows: the snapshot's epoch, or "final model" for ``None``."""
    return FINAL_LABEL if snapshot is None else snapshot.label


def pick_snapshot(model: FeatureModel, *, key: str, layer: str | None = None) -> tuple[FeatureModel, Snapshot | None]:
    """The "training progress" control: the model to show, and the snapshot it is (``None``
    for the final model; :func:`model_label` names either).

    With no snapshots there is nothing to choose and the final model is used. A snapshot
    that cannot show ``layer`` or takes other inputs falls back to the final model, and says so.
    """
    snaps, problem = caches.read_snapshots()
    if problem:
        st.warning(f"The training snapshots cannot be used: {problem}")
    snaps = caches.own_snapshots(snaps, model)  # another model's training is not this one's
    if not snaps:
        return model, None
    by_id = {str(Path(s.path)): s for s in snaps}
    options = list(by_id) + [FINAL]
    if st.session_state.get(SNAPSHOT) not in options:
        st.session_state[SNAPSHOT] = FINAL
    chosen = synced(
        st.select_slider,
        "Training progress",
        key=key,
        shared=SNAPSHOT,
        default=FINAL,
        options=options,
        format_func=lambda option: model_label(None if option == FINAL else by_id[option]),
        help="See the same map as the network learned: from random weights (epoch 0) to the trained model.",
    )
    if chosen == FINAL:
        return model, None
    snapshot = by_id[chosen]
    try:
        snap_model = caches.model_at(snapshot.path)
    except ModelError as err:
        st.error(f"This snapshot cannot be loaded: {err} Showing the final model.")
        return model, None
    if caches.spec_key(snap_model.input_spec) != caches.spec_key(model.input_spec):
        st.warning("This snapshot takes a different input size than the model; showing the final model.")
        return model, None
    if layer is not None and layer not in snap_model.layer_names:
        st.info(
            f"Layer {layer} is not in the snapshots (they keep only the convolutional layers); showing the final model."
        )
        return model, None
    return snap_model, snapshot
