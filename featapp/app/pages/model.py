"""Model: the layer table, the first-layer filters, the prediction with occlusion, saliency and
Grad-CAM, and downloads."""

import numpy as np
import streamlit as st

from featapp import render
from featapp.app import caches, chrome, sections, view
from featapp.app.captions import markdown_literal
from featapp.data.dataset import Dataset, DatasetError
from featapp.engine.filters import filter_pictures
from featapp.engine.model import ModelError
from featapp.render import words as render_words
from featapp.render.describe import describe_map, summarise_map
from featapp.stats.classes import health_table, network_health

FILTER_PX = 72
FILTER_GAP = 12  # white between filters: at the mosaic's default gap the 3 x 3 filters ran into one checkerboard

model = chrome.model_or_error_page()
image = view.current_image(model)
spec = model.input_spec

chrome.title("🧠 Model")
_fields = [layer.receptive_field.size for layer in model.layers if layer.receptive_field is not None]
st.markdown(
    "The network every page looks inside. Convolution layers hold the learned filters; each pooling layer "
    "halves the map, so every cell of the next layer sees a larger part of the photo (its **receptive "
    "field** grows)."
    + (
        f" In this network a layer-1 cell sees {_fields[0][0]} x {_fields[0][1]} pixels, so it can answer only "
        f"about light, colour and small steps between them; a cell of the last map sees {_fields[-1][0]} x "
        f"{_fields[-1][1]} of the photo's {spec.height} x {spec.width}."
        if _fields
        else ""
    )
)

colour_text = "RGB" if spec.channels == 3 else "grayscale"
classes = ", ".join(model.class_names) if model.has_classifier else "none (no classifier)"
st.markdown(
    f"**Input:** {spec.height} x {spec.width} x {spec.channels} ({colour_text}), pixel values "
    f"{render.scaling_text(model.spec.input_scale, model.spec.input_offset)}. **Classes:** {classes}. **Layers:** {len(model.layers)}. "
    f"**File:** `{model.path.name}` (sha256 `{model.sha256[:12]}`)."
)
table = render.layer_table(model.layers)
st.dataframe(table, hide_index=True, width="stretch", height="content")
st.caption(
    "Output shape is per image, channels last, as Keras prints it. Receptive field: how many input pixels one "
    "cell of the layer's map can see. Jump: how many input pixels apart two neighbouring cells are."
)

# -- liveness ------------------------------------------------------------------------------------------------
st.subheader("How alive each layer is")
health, where = None, ""
data: Dataset | None
try:
    data = caches.dataset()
except DatasetError:
    data = None
if data is not None:
    split = st.session_state.get(view.SCAN_SPLIT)
    split = split if split in data.splits else caches.default_split(data)
    stats = caches.neuron_stats(model, data, split)
    if stats is not None:
        health, where = network_health(stats), f"all {len(stats)} scanned photos of the {split} split"
    else:
        gallery_split = st.session_state.get(view.SPLIT)
        gallery_split = gallery_split if gallery_split in data.splits else caches.default_split(data)
        seed = int(st.session_state.get(view.SEED, view.DEFAULT_SEED))
        items, pixels = caches.gallery(model, data, gallery_split, seed)
        if items:
            assert pixels is not None  # gallery() gives pixels whenever it gives items
            health = caches.gallery_liveness(model, pixels)
            where = (
                f"the gallery's {len(items)} photos ({gallery_split}, seed {seed}); scan the split on the "
                "'Cats vs dogs' page to count over all its photos"
            )
if health is None:
    st.info("Liveness is counted over photos; without a dataset there are none to count on.")
else:
    spatial_layers = [layer.name for layer in model.layers if layer.is_spatial]
    st.markdown(
        f"Counted on {where}. A channel that **never fires** is zero on every photo, so it carries nothing; "
        "a **constant map** has one value everywhere for a photo; **zeros** is the share of all activations "
        "that are exactly 0. A model converted from your own training shows its dead channels here."
    )
    st.dataframe(health_table(health, spatial_layers), hide_index=True, width="stretch", height="content")

# -- first-layer filters ---------------------------------------------------------------------------------------
st.subheader("What layer 1 looks for: its filters")
filter_model, filter_snapshot = view.pick_snapshot(model, key="model.snapshot")
shared_scale = st.toggle("One scale for all filters (compare their strength)", key="model.filters_shared")
try:
    filters = caches.first_layer_filters(filter_model)
except ModelError as err:
    st.info(str(err))
else:
    rows, cols = filters.kernel
    pictures = [
        render.enlarge(p, max(1, FILTER_PX // max(rows, cols)))
        for p in filter_pictures(filters, shared_scale=shared_scale)
    ]
    st.markdown(
        f"{filters.count} filters of {rows} x {cols} pixels x {filters.weights.shape[1]} colour channel"
        f"{'s' if filters.weights.shape[1] > 1 else ''} ({view.model_label(filter_snapshot)}). Grey is a weight of 0; lighter means "
        "the filter adds that colour at that place, darker that it subtracts it. A filter that is light on one "
        "side and dark on the other is an edge detector. "
        + render_words.first_layer_words(caches.first_layer_summary(filter_model))
    )
    # One picture in rows of equal length: 32 separate images wrapped unevenly with the page width.
    columns = render.grid_columns(len(pictures))
    rows_of_filters = -(-len(pictures) // columns)
    st.image(
        render.picture_mosaic(np.stack(pictures), gap=FILTER_GAP),
        caption=f"Filters 1 to {len(pictures)}, {columns} per row, numbered left to right from the top left.",
        output_format="PNG",
        alt=f"The {len(pictures)} first-layer filters, each {rows} x {cols} pixels, in {rows_of_filters} rows of "
        f"{columns}, filter 1 at the top left. Grey is a weight of 0; lighter adds that colour, darker subtracts it.",
    )

# -- prediction and occlusion -----------------------------------------------------------------------------------
st.subheader("The prediction, and what it depends on")
prediction = caches.prediction(model, image)
st.markdown(f"Current image: **{markdown_literal(image.title)}**. " + chrome.prediction_text(prediction, model))
if prediction is None:
    st.info("Occlusion sensitivity needs a prediction, so it is unavailable for a model without a classifier.")
else:
    st.markdown(
        "**Occlusion sensitivity:** cover one grey square of the photo at a time and watch how much the "
        "probability of the predicted class drops. Where it drops most, the model was looking."
    )
    if caches.has_occlusion(model, image) or st.button("Compute the occlusion map (a few seconds)"):
        with st.spinner("Covering the photo square by square..."):
            occ = caches.occlusion(model, image)
        caches.mark_occlusion(model, image)
        drop = occ.per_pixel()
        drop_range = render.value_range(drop, "per map")
        scale = render.VIRIDIS
        map_col, photo_col = st.columns([1.3, 1])
        with map_col:
            st.markdown(f"**Drop in p({occ.class_name})** when each area is covered")
            st.vega_lite_chart(
                render.heatmap_chart(
                    drop, drop_range, scale, width_px=300, selection=None, legend_title=f"drop in p({occ.class_name})"
                ),
                width="content",
            )
        with photo_col:
            chrome.show_image(
                render.enlarge(render.overlay_pixels(image.array, drop, drop_range, scale, alpha=0.45), 2),
                caption=f"Drop in p({occ.class_name}) laid over the photo",
                width=300,
                alt=f"Drop in p({occ.class_name}) laid over the photo. "
                + describe_map(summarise_map(drop, drop_range, scale)).replace("colour level", "brightness level"),
            )
            st.caption(describe_map(summarise_map(drop, drop_range, scale)).replace("Strongest", "Largest drop"))
        st.caption(
            f"p({occ.class_name}) is {occ.base_probability:.2f} for the whole photo. A {occ.patch} x {occ.patch} "
            f"grey square was moved in steps of {occ.stride} pixels; each pixel shows the mean drop of the squares "
            f"that covered it. {render.describe_range(drop_range, scale)} "
            "Negative values: covering that area made the model *more* sure."
        )

sections.saliency_section(model, image)
sections.sanity_section(model, image)

# -- downloads ------------------------------------------------------------------------------------------------------
st.subheader("Downloads")
view_layer = st.session_state.get(view.LAYER)
layer = (
    model.layer(view_layer)
    if view_layer in model.layer_names
    else next((item for item in model.layers if item.is_spatial), None)
)
outputs = caches.activations(model, image)
scale = render.COLOUR_SCALES.get(st.session_state.get(view.COLOURS, "blues4"), render.LECTURE_BLUES)
download_cols = st.columns(3)
if layer is not None and layer.is_spatial:
    channel = min(max(int(st.session_state.get(view.CHANNEL, 1)), 1), layer.channels) - 1
    values = outputs[layer.name][channel]
    with download_cols[0]:
        st.download_button(
            f"Map: {layer.name}, channel {channel + 1} (PNG)",
            data=lambda: render.png_bytes(
                render.map_picture(values, render.value_range(values, "per map"), scale, min_px=300)
            ),
            file_name=f"{layer.name}_channel{channel + 1}.png",
            mime="image/png",
        )
    with download_cols[1]:
        grid_layer = layer  # not None here; the lambda, run on a click, sees only this name's type
        st.download_button(
            f"Grid: all {layer.channels} channels of {layer.name} (PNG)",
            data=lambda: render.grid_png(outputs[grid_layer.name], range(grid_layer.channels), scale, "per map"),
            file_name=f"{layer.name}_grid.png",
            mime="image/png",
        )
with download_cols[2]:
    st.download_button(
        "All activations of the current image (.npz)",
        data=lambda: caches.activations_file(model, image),
        file_name=f"activations_{image.key[:8]}.npz",
        mime="application/octet-stream",
    )
st.caption(
    "The map and grid are the layer and channel last chosen on the Feature map or Layer grid page, each map "
    "scaled to its own range. The .npz file holds one array per layer (maps as channels x rows x columns) "
    "and the input pixels; open it with `numpy.load`."
)
st.caption(caches.cache_summary(model))
