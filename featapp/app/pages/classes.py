"""Cats vs dogs: which channels tell the classes apart, a map of the feature space, and the network's health."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from featapp import render
from featapp.app import caches, chrome, sections, view
from featapp.app.appstate import CurrentImage, set_current
from featapp.app.captions import markdown_literal
from featapp.cache import CacheFolderError
from featapp.data.dataset import DatasetError
from featapp.engine.images import ImageError, prepare_image
from featapp.engine.model import ModelError
from featapp.render.describe import box_words, map_alt, summarise_map
from featapp.stats import analysis
from featapp.stats.classes import class_top, contributions, health_table, network_health
from featapp.stats.projection import METHODS, available_methods, image_features, nearest, predicted_labels

GOTO = "classes.goto"
SCAN_SPLIT = view.SCAN_SPLIT  # the scanned split, shared with "One neuron, many images"
LAYER_KEY, BY_KEY = view.CLASSES_LAYER, "classes.by"
MAP_LAYER, MAP_METHOD, MAP_NONCE = "classes.map_layer", "classes.map_method", "classes.map_nonce"
TAB_KEY, TABS = view.CLASSES_TAB, view.CLASSES_TABS
PER_CLASS = 5
CHART_CHANNELS = 10
NEIGHBOURS = 8
MAP_PX = 480
# Cats warm, dogs cool, on every chart of the page (Streamlit's default palette gives two blues).
CLASS_COLOURS = ("#e8833a", "#2f6db5", "#6aa84f", "#a64d79")

if GOTO in st.session_state:
    chrome.goto(st.session_state.pop(GOTO))

model = chrome.model_or_error_page()
image = view.current_image(model)
scale = render.COLOUR_SCALES.get(st.session_state.get(view.COLOURS, "blues4"), render.LECTURE_BLUES)


def _make_current(path: str, class_name: str, split: str) -> bool:
    try:
        pixels = prepare_image(path, model)
    except ImageError as err:
        st.session_state["classes.error"] = f"That photo could not be read again: {err}"
        return False
    name = path.rsplit("/", 1)[-1]
    photo = CurrentImage.from_array(
        pixels, "gallery", f"{name} ({split})", class_name, origin=view.dataset_origin(path)
    )
    set_current(st.session_state, photo)
    st.session_state[view.CELL] = None
    return True


def _open(page: str | None, path: str, class_name: str, split: str, layer: str, channel: int, cell=None) -> None:
    """Make the photo current, point the shared view at this layer and channel, and open ``page`` (if any)."""
    if not _make_current(path, class_name, split):
        return
    st.session_state[view.LAYER] = layer
    st.session_state[view.CHANNEL] = channel + 1
    st.session_state[view.CELL] = (layer, *cell) if cell is not None else None
    if page == "neuron":
        st.session_state[view.RANK_SOURCE] = "dataset"
        st.session_state[SCAN_SPLIT] = split
    if page is not None:
        st.session_state[GOTO] = page


def _on_map_click(chart_key: str, paths: list, classes: list, split: str) -> None:
    state = st.session_state.get(chart_key) or {}
    points = (state.get("selection") or {}).get("photo") or []
    if points and "index" in points[0]:
        index = int(points[0]["index"])
        _make_current(str(paths[index]), classes[index], split)
        st.session_state[MAP_NONCE] = st.session_state.get(MAP_NONCE, 0) + 1


chrome.title("🐾 What tells a cat from a dog")
st.markdown(
    "The other pages look at one photo, or one channel across photos. Here the whole scanned split answers "
    'the student\'s next questions: **which channels does the network use to say "dog"?** And **which photos '
    "does it think are alike?** For each channel, the **AUC** is the chance that a random dog photo makes it "
    "fire more than a random cat photo: 1 means the channel alone tells every dog from every cat, 0 that it "
    "fires for every cat above every dog, 0.5 that it is no help. **d** is how far apart the two classes' "
    "means are, in standard deviations."
)
if "classes.error" in st.session_state:
    st.error(st.session_state.pop("classes.error"))

try:
    data = caches.dataset()
except DatasetError as err:
    st.info(f"{err}\n\nThis page needs a dataset to scan; the other pages still work with your own photos.")
    st.stop()

split = view.pick_scan_split(
    data,
    key="classes.split",
    label="Split",
    help="All photos of this split, scanned once with this model (shared with 'One neuron, many images').",
)
scanned = caches.neuron_stats(model, data, split)
if scanned is None:
    count = len(data.images(split))
    damaged = caches.damaged_scan_note(model, data, split)
    if damaged is not None:
        st.warning(damaged)
    else:
        st.info(
            f"The {count} photos of the {split} split have not been scanned with this model yet. A scan runs every "
            "photo through the network once and keeps each channel's max and mean per photo; it is saved in "
            f"{analysis.default_cache_dir()} and reused by everyone afterwards."
        )
    if st.button(f"Scan the {count} photos now", type="primary"):
        bar = st.progress(0.0, text="Scanning...")
        try:
            caches.run_scan(model, data, split, bar)
        except CacheFolderError as err:
            bar.empty()
            st.error(str(err))
            st.stop()
        bar.empty()
        st.rerun()
    st.stop()
stats = scanned  # not None from here on: the tabs' functions below see it so
if len(stats.class_names) < 2:
    st.info(f"The {split} split has only one class ({stats.class_names[0]}), so there is nothing to tell apart.")
    st.stop()

positive = stats.class_names[-1]
if len(stats.class_names) > 2:
    positive = st.selectbox(
        "Tell this class from the rest", stats.class_names, index=len(stats.class_names) - 1, key="classes.positive"
    )
other = stats.class_names[0] if len(stats.class_names) == 2 else "the rest"
counts = ", ".join(f"{int((stats.labels == i).sum())} {name}" for i, name in enumerate(stats.class_names))
st.caption(f"{len(stats)} scanned photos of the {split} split ({counts}).")
ranked_layers = []
for name in stats.layer_names:
    try:
        stats.values(name)
    except ValueError:
        continue  # flatten and dropout: too wide to keep every photo's value
    ranked_layers.append(name)
spatial = [name for name in stats.layer_names if stats.is_spatial(name)]
deepest_conv = next((layer.name for layer in reversed(model.layers) if layer.kind == "Conv2D"), ranked_layers[0])


def _class_scale(names) -> alt.Scale:
    names = list(names)
    order = list(stats.class_names) + [n for n in names if n not in stats.class_names]
    return alt.Scale(domain=names, range=[CLASS_COLOURS[order.index(n) % len(CLASS_COLOURS)] for n in names])


def _layer_text(name: str) -> str:
    return view.layer_label(model, model.layer(name))


tabs = st.tabs(list(TABS), key=TAB_KEY, on_change="rerun")


# -- channels that tell the classes apart --------------------------------------------------------------------------
def _channels_tab() -> None:
    left, right = st.columns([2, 1])
    with left:
        if st.session_state.get(LAYER_KEY) not in ranked_layers:
            st.session_state[LAYER_KEY] = deepest_conv if deepest_conv in ranked_layers else ranked_layers[0]
        layer = st.selectbox("Layer", ranked_layers, key=LAYER_KEY, format_func=_layer_text)
    is_map = stats.is_spatial(layer)
    with right:
        by = (
            st.radio(
                "Score each photo by",
                ["max", "mean"],
                key=BY_KEY,
                horizontal=True,
                format_func={"max": "strongest cell (max)", "mean": "whole map (mean)"}.get,
            )
            if is_map
            else "max"
        )
    table = caches.separation(stats, layer, by, positive)
    word = "channel" if is_map else "unit"
    number = model.layer_names.index(layer) + 1

    top_positive, top_other = table.top_for(positive, CHART_CHANNELS), table.top_for(other, CHART_CHANNELS)
    st.markdown(
        f"**Layer {number} ({layer}):** the {len(top_positive)} {word}s that fire most for **{positive}** and the "
        f"{len(top_other)} that fire most for **{other}**, by AUC. Click a bar or a row of the table to see its photos."
    )
    frame = pd.DataFrame(
        [
            {
                word: f"{row.channel + 1}",
                "AUC": round(row.auc, 3),
                "d": None if not np.isfinite(row.effect) else round(row.effect, 2),
                "fires for": row.fires_for,
                **{f"mean ({n})": round(m, 4) for n, m in zip(table.class_names, row.class_means, strict=True)},
            }
            for row in [*top_positive, *top_other]
        ]
    )
    if len(frame):
        bars = (
            alt.Chart(frame)
            .mark_bar()
            .encode(
                x=alt.X("AUC:Q", scale=alt.Scale(domain=[0, 1]), title=f"AUC ({positive} above {other})"),
                y=alt.Y(
                    f"{word}:N",
                    sort=alt.EncodingSortField("AUC", order="descending"),
                    title=word,
                    axis=alt.Axis(labelOverlap=False),
                ),
                color=alt.Color("fires for:N", scale=_class_scale([positive, other])),
                tooltip=list(frame.columns),
            )
        )
        half = alt.Chart(pd.DataFrame({"AUC": [0.5]})).mark_rule(strokeDash=[4, 4], color="grey").encode(x="AUC:Q")
        best = frame.iloc[int(frame["AUC"].to_numpy().argmax())]
        described = (
            f"Bar chart of {len(frame)} {word}s by AUC ({positive} above {other}), with a dashed line at 0.5 "
            f"(no better than chance); highest: {word} {best[word]} at {float(best['AUC']):.2f}."
        )
        st.altair_chart((bars + half).properties(height=20 * len(frame) + 40, description=described), width="stretch")

    rows = table.ranked()
    ranked = pd.DataFrame(
        [
            {
                "rank": rank,
                word: row.channel + 1,
                "AUC": round(row.auc, 3),
                "d": None if not np.isfinite(row.effect) else round(row.effect, 2),
                "fires for": "(never fires)" if row.never_fires else row.fires_for,
                **{f"mean ({n})": round(m, 4) for n, m in zip(table.class_names, row.class_means, strict=True)},
            }
            for rank, row in enumerate(rows, start=1)
        ]
    )
    event = st.dataframe(
        ranked,
        hide_index=True,
        height=260,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=f"classes.table_{layer}_{by}",
    )
    dead = int(table.never_fires.sum())
    st.caption(
        f"All {table.channels} {word}s, best separating first (|2 AUC - 1|, then |d|). Each photo is scored by "
        f"{'its ' + by + ' over the map' if is_map else 'the unit value'}."
        + (f" {dead} {word}s never fire on these photos and cannot help." if dead else "")
    )
    picked = event.selection.rows if event is not None else []
    channel = rows[picked[0]].channel if picked else rows[0].channel
    _channel_photos(layer, channel, by, is_map, word, table.row(channel))


def _channel_photos(layer: str, channel: int, by: str, is_map: bool, word: str, row) -> None:
    st.subheader(
        f"{word.capitalize()} {channel + 1} of layer {model.layer_names.index(layer) + 1}: its top photos of each class"
    )
    st.markdown(
        f"AUC **{row.auc:.2f}**, d **{row.effect:.2f}**: it fires more for **{row.fires_for}**. "
        + ("The box on each photo is what its strongest cell sees; all maps share one colour scale." if is_map else "")
    )
    hits = {name: class_top(stats, layer, channel, name, PER_CLASS, by) for name in stats.class_names}
    maps = {}
    for name, class_hits in hits.items():
        kept, pixels, values = caches.channel_maps(model, [h.path for h in class_hits], layer, channel)
        maps[name] = (kept, pixels, values)
    vr = render.shared_range(*[m[2] for m in maps.values() if is_map and len(m[2])]) if is_map else None
    halves = st.columns(len(hits))
    for half, (name, class_hits) in zip(halves, hits.items(), strict=True):
        kept, pixels, values = maps[name]
        by_path = {p: i for i, p in enumerate(kept)}
        with half:
            st.markdown(f"**{name}** (mean {row.class_means[stats.class_names.index(name)]:.3g})")
            columns = st.columns(PER_CLASS)
            for column, hit in zip(columns, class_hits, strict=False):
                position = by_path.get(str(hit.path))
                if position is None:
                    continue
                with column:
                    picture = pixels[position]
                    if hit.box is not None:
                        picture = render.outline_box(picture, hit.box)
                    chrome.show_image(
                        picture,
                        caption=f"{markdown_literal(hit.path.name)} · {hit.value:.3g}",
                        width="stretch",
                        alt=f"Photo {hit.path.name}, value {hit.value:.3g}"
                        + (f"; a red box around {box_words(hit.box)}." if hit.box is not None else "."),
                    )
                    if is_map:
                        assert vr is not None  # made for a layer of maps
                        st.image(
                            render.map_png(values[position], vr, scale, min_px=120),
                            width="stretch",
                            output_format="PNG",
                            alt=map_alt(f"The map for {hit.path.name}", summarise_map(values[position], vr, scale)),
                        )
                    st.button(
                        "Map" if is_map else "Open",
                        key=f"classes.open_{layer}_{channel}_{hit.index}",
                        on_click=_open,
                        args=(
                            "feature_map" if is_map else None,
                            str(hit.path),
                            name,
                            split,
                            layer,
                            channel,
                            hit.cell,
                        ),
                        help=f"Make {hit.path.name} the current image and open this channel on the Feature map."
                        if is_map
                        else f"Make {hit.path.name} the current image.",
                    )
    if is_map:
        assert vr is not None  # made for a layer of maps
        st.caption(render.describe_range(vr, scale))
        first = hits[positive][0] if hits[positive] else None
        if first is not None:
            st.button(
                f"All of channel {channel + 1}'s top photos on 'One neuron, many images'",
                key=f"classes.neuron_{layer}_{channel}",
                on_click=_open,
                args=("neuron", str(first.path), positive, split, layer, channel, first.cell),
            )


# -- dense units and the current photo ----------------------------------------------------------------------------
def _dense_tab() -> None:
    try:
        weights = caches.output_weights(model)
    except ModelError as err:
        st.info(str(err))
        return
    feeding = next(
        (
            name
            for name in reversed(model.layer_names[:-1])
            if not model.layer(name).is_spatial and model.layer(name).channels == len(weights.weights)
        ),
        None,
    )
    if feeding is None or feeding not in ranked_layers:
        st.info("The layer that feeds the output is not in the scan, so its units cannot be ranked.")
        return
    number = model.layer_names.index(feeding) + 1
    st.markdown(
        f"The output is one number, p({positive}). It is the sigmoid of **bias + sum over the {len(weights.weights)} "
        f"units of layer {number} ({feeding}) of activation x weight**. A unit with a positive weight pushes "
        f"towards {positive} when it fires; one with a negative weight pushes towards {other}. Here is that sum "
        "for the current image:"
    )
    values = image_features(caches.activations(model, image)[feeding])
    rows = contributions(values, weights)
    table = caches.separation(stats, feeding, "max", positive)
    logit = weights.bias + sum(r.contribution for r in rows)
    p = 1.0 / (1.0 + np.exp(-logit))
    firing = sum(1 for r in rows if r.activation > 0)
    st.markdown(
        f"**{markdown_literal(image.title)}**: {firing} of {len(rows)} units fire. Bias {weights.bias:+.3f}, sum "
        f"{logit - weights.bias:+.3f}, logit {logit:+.3f}, so p({positive}) = **{p:.3f}**."
    )
    shown = [r for r in rows if r.contribution != 0][:20]
    if shown:
        frame = pd.DataFrame(
            {
                "unit": [str(r.unit + 1) for r in shown],
                "contribution": [round(r.contribution, 4) for r in shown],
                "activation": [round(r.activation, 4) for r in shown],
                "weight": [round(r.weight, 4) for r in shown],
                "pushes towards": [positive if r.contribution > 0 else other for r in shown],
                f"AUC on {split}": [round(float(table.auc[r.unit]), 3) for r in shown],
            }
        )
        chart = (
            alt.Chart(frame)
            .mark_bar()
            .encode(
                x=alt.X("contribution:Q", title="activation x weight (towards the logit)"),
                y=alt.Y(
                    "unit:N",
                    sort=alt.EncodingSortField("contribution", order="descending"),
                    axis=alt.Axis(labelOverlap=False),
                ),
                color=alt.Color("pushes towards:N", scale=_class_scale([positive, other])),
                tooltip=list(frame.columns),
            )
            .properties(
                height=20 * len(frame) + 40,
                description=f"Bar chart of the {len(frame)} units that push this photo's logit most, by "
                f"activation x weight; positive pushes towards {positive}, negative towards {other}.",
            )
        )
        st.altair_chart(chart, width="stretch")
        st.caption(
            f"The {len(shown)} units with the largest pushes, of {firing} firing. The AUC says how well each unit "
            f"alone tells {positive} from {other} over the {split} split; pick layer {number} on the first tab for "
            "their photos."
        )
    else:
        st.info("No unit of this layer fires for the current image, so the output is the bias alone.")
    sections.dense_inputs_section(model, image, feeding)


# -- the map ------------------------------------------------------------------------------------------------------------
def _map_tab() -> None:
    methods = available_methods()
    left, right = st.columns(2)
    with left:
        if st.session_state.get(MAP_LAYER) not in ranked_layers:
            vectors = [name for name in ranked_layers if not stats.is_spatial(name) and stats.units(name) > 2]
            st.session_state[MAP_LAYER] = vectors[-1] if vectors else ranked_layers[-1]
        layer = st.selectbox(
            "Describe each photo by", ranked_layers, key=MAP_LAYER, format_func=_layer_text,
            help="A vector layer's values, or a feature-map layer's per-channel means.",
        )  # fmt: skip
    with right:
        if len(methods) > 1:
            method = st.radio("Map", methods, key=MAP_METHOD, horizontal=True, format_func=METHODS.get)
        else:  # a radio with one choice offers nothing to choose: say which map it is
            method = methods[0]
            st.markdown(f"**Map:** {METHODS[method]}")
    with st.spinner("Computing the map (once per model, split and layer)..."):
        fitted = caches.projection(stats, layer, method)
    predicted = predicted_labels(stats)
    p_values = stats.values(model.layer_names[-1])[:, -1].astype(np.float64) if predicted is not None else None
    names = [path.name for path in stats.paths]
    classes = stats.image_classes
    wrong = predicted != stats.labels if predicted is not None else np.zeros(len(stats), bool)
    frame = pd.DataFrame(
        {
            "x": fitted.coords[:, 0],
            "y": fitted.coords[:, 1],
            "index": np.arange(len(stats)),
            "photo": names,
            "class": classes,
            "answer": np.where(wrong, "wrong", "right"),
            f"p({positive})": np.round(p_values, 3) if p_values is not None else np.nan,
            "image": caches.thumbnails(stats),
        }
    )
    current = image_features(caches.activations(model, image)[layer])
    features = stats.values(layer, by="mean")
    where = fitted.place(current, reference=features)[0]
    if fitted.explained is not None:
        x_title = f"PCA 1 ({fitted.explained[0]:.0%} of the variance)"
        y_title = f"PCA 2 ({fitted.explained[1]:.0%})"
    else:
        x_title, y_title = f"{METHODS[method]} 1", f"{METHODS[method]} 2"
    pick = alt.selection_point(name="photo", fields=["index"], on="click")
    points = (
        alt.Chart(frame)
        .mark_point(filled=True, size=45)
        .encode(
            x=alt.X("x:Q", title=x_title),
            y=alt.Y("y:Q", title=y_title),
            color=alt.Color("class:N", scale=_class_scale(stats.class_names), legend=alt.Legend(orient="bottom")),
            shape=alt.Shape(
                "answer:N",
                scale=alt.Scale(domain=["right", "wrong"], range=["circle", "cross"]),
                legend=alt.Legend(orient="bottom"),
            ),
            size=alt.condition(alt.datum.answer == "wrong", alt.value(110), alt.value(40)),
            opacity=alt.condition(pick, alt.value(0.75), alt.value(0.3)),
            tooltip=["image", "photo", "class", f"p({positive})", "answer"],
        )
        .add_params(pick)
    )
    you = pd.DataFrame({"x": [where[0]], "y": [where[1]], "label": ["current image"]})
    marker = (
        alt.Chart(you)
        .mark_point(shape="diamond", size=420, filled=False, color="black", strokeWidth=3)
        .encode(x="x:Q", y="y:Q")
    )
    label = (
        alt.Chart(you)
        .mark_text(dx=14, dy=-14, fontWeight="bold", align="left")
        .encode(x="x:Q", y="y:Q", text="label:N")
    )
    chart = (points + marker + label).properties(
        height=MAP_PX,
        description=f"Scatter plot of the {len(frame)} photos ({x_title} across, {y_title} up), coloured by class, "
        "wrong answers as crosses, the current image as a black diamond; the text below and the photos beside "
        "it name the nearest ones.",
    )
    chart_key = f"classes.map_{layer}_{method}_{st.session_state.get(MAP_NONCE, 0)}"
    map_col, near_col = st.columns([1.6, 1])
    with map_col:
        st.altair_chart(
            chart,
            key=chart_key,
            on_select=lambda: _on_map_click(chart_key, stats.paths, classes, split),
            selection_mode="photo",
            width="stretch",
        )
        mistakes = int(wrong.sum())
        st.caption(
            f"Each point is one of the {len(stats)} photos, described by layer "
            f"{model.layer_names.index(layer) + 1} ({layer}); hover for the photo, click to make it the current "
            f"image. Crosses are the model's {mistakes} wrong answers: they tend to sit where the two colours mix. "
            "The diamond is the current image"
            + (
                " (projected exactly, like every point)."
                if fitted.exact
                else f"; {METHODS[method]} has no formula for a new photo, so it sits at the mean of its 5 nearest photos."
            )
        )
    with near_col:
        indices, distances = nearest(features, current, k=NEIGHBOURS + 1)
        keep = [(i, d) for i, d in zip(indices, distances, strict=True) if d > 1e-5][:NEIGHBOURS]
        st.markdown(
            f"**The {len(keep)} photos nearest to the current image** in this layer (not on the 2-D map: in all {features.shape[1]} numbers)"
        )
        kept, pixels = caches.photos(model, [stats.paths[i] for i, _ in keep])
        by_path = {p: n for n, p in enumerate(kept)}
        columns = st.columns(4)
        for number, (index, distance) in enumerate(keep):
            position = by_path.get(str(stats.paths[index]))
            if position is None:
                continue
            with columns[number % 4]:
                mark = " ✗" if wrong[index] else ""
                chrome.show_image(
                    pixels[position],
                    caption=f"{classes[index]}{mark} · {distance:.2f}",
                    width="stretch",
                    alt=f"Photo {stats.paths[index].name}, {classes[index]}, distance {distance:.2f}"
                    + (", the model gets it wrong." if wrong[index] else "."),
                )
                st.button(
                    "Open",
                    help="Make this photo the current image",
                    key=f"classes.near_{index}",
                    # Streamlit drops a callback's return value; its stub asks for None.
                    on_click=_make_current,  # type: ignore[arg-type]
                    args=(str(stats.paths[index]), classes[index], split),
                )
        st.caption("Under each photo: its true class (✗ when the model gets it wrong) and its distance.")


# -- health -------------------------------------------------------------------------------------------------------------
def _health_tab() -> None:
    health = network_health(stats)
    table = health_table(health, spatial)
    st.markdown(
        f"How much of each layer is alive on the {len(stats)} photos of the {split} split. A channel that **never "
        "fires** is zero on every photo: it carries nothing (its tiles in the Layer grid are blank). A "
        "**constant map** has one value everywhere for a photo. **Zeros** is the share of all activations that "
        "are exactly 0 (after a ReLU, many are)."
    )
    chart = (
        alt.Chart(table)
        .transform_fold(["never fire %", "constant maps %", "zeros %"], as_=["measure", "percent"])
        .mark_bar()
        .encode(
            x=alt.X("layer:N", sort=list(table["layer"]), title=None),
            xOffset="measure:N",
            y=alt.Y("percent:Q", scale=alt.Scale(domain=[0, 100]), title="%"),
            color="measure:N",
            tooltip=["layer:N", "measure:N", "percent:Q"],
        )
        .properties(
            height=260,
            description="Bars per layer: the percent of channels that never fire, of constant maps and of zeros; "
            "the same numbers are in the table below.",
        )
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(table, hide_index=True, width="stretch", height="content")


drawers = (_channels_tab, _dense_tab, _map_tab, _health_tab)
for tab, draw in zip(tabs, drawers, strict=True):
    if tab.open:
        with tab:
            draw()
