"""featapp.app.share: a view as a link and back, checked against the committed model, the
shared photos and the probes; every hostile value is left out with a sentence, never an error."""

from __future__ import annotations

import doctest
import re
import urllib.parse

import numpy as np
import pytest
import segno

from featapp.app import share
from featapp.app.share import LinkRead, ViewState, app_root, link, qr_picture, read_query
from featapp.engine.probes import probe_names

ROOT = "http://10.0.0.5:8501"


def test_the_modules_examples_hold():
    result = doctest.testmod(share, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def query_of(url: str) -> dict[str, list[str]]:
    """A link's query as Streamlit reads an address (``parse_qs`` keeping blank values)."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True)


def read(query, model, dataset, *, page="feature_map", current_layer=None) -> LinkRead:
    return read_query(
        query, page=page, model=model, dataset=dataset, probe_names=probe_names(), current_layer=current_layer
    )


def views(dataset) -> list[ViewState]:
    dog = [image for image in dataset.images("validation") if image.class_name == "dogs"][7]
    cat = dataset.images("test")[0]
    return [
        ViewState(page="feature_map", photo=cat.reference, layer="conv2d", channel=1, colours="blues4", scaling="per map"),
        ViewState(page="feature_map", photo=dog.reference, layer="conv2d_3", channel=128, colours="viridis", scaling="per layer"),
        ViewState(page="layer_grid", probe="grating-diagonal-up-16px", layer="dense", channel=512, scaling="fixed", fixed_range=(-0.25, 1e-3)),
        ViewState(page="layer_grid", probe="colour-red", layer="max_pooling2d_1", channel=7, scaling="fixed", fixed_range=(0.0, 2.5)),
        ViewState(page="", photo=cat.reference),
        ViewState(page="neuron", layer="conv2d_2", channel=64, colours="viridis"),
        ViewState(page="classes"),
    ]  # fmt: skip


def test_a_link_reads_back_as_the_same_view(model, dataset):
    for view in views(dataset):
        url = link(ROOT, view)
        assert url.startswith(f"{ROOT}/{view.page}")
        assert urllib.parse.urlsplit(url).path == "/" + view.page
        result = read(query_of(url), model, dataset, page=view.page)
        assert result == LinkRead(view, ()), url


def test_a_link_is_readable_and_names_the_page_by_its_path(dataset):
    cat = dataset.images("test")[0]
    view = ViewState(page="feature_map", photo=cat.reference, layer="conv2d_1", channel=5, colours="viridis")
    assert link(ROOT, view) == (
        f"{ROOT}/feature_map?photo=test/cats/{cat.name}&layer=conv2d_1&channel=5&colours=viridis"
    )
    assert link(ROOT + "/", ViewState(page="")) == ROOT + "/"
    # A name with characters a URL reserves is escaped, and reads back whole.
    assert link(ROOT, ViewState(photo="test/cats/a b&c=#?.jpg")).endswith("?photo=test/cats/a%20b%26c%3D%23%3F.jpg")
    assert query_of(link(ROOT, ViewState(photo="test/cats/a b&c=#?.jpg")))["photo"] == ["test/cats/a b&c=#?.jpg"]
    # The range is written only for a fixed scale.
    assert "range" not in ViewState(scaling="per map", fixed_range=(0.0, 1.0)).to_query()


@pytest.mark.parametrize(
    "address, page, root",
    [
        ("http://localhost:8501/feature_map", "feature_map", "http://localhost:8501"),
        ("https://course.example/featapp/layer_grid/", "layer_grid", "https://course.example/featapp"),
        ("https://course.example/featapp", "", "https://course.example/featapp"),
        ("http://h:1/feature_map?x=1#top", "feature_map", "http://h:1"),
        ("http://h:1/my_feature_map", "feature_map", "http://h:1/my_feature_map"),
    ],
)
def test_the_apps_address_from_a_pages_address(address, page, root):
    assert app_root(address, page) == root


def test_local_addresses_are_told_apart():
    assert share.is_local_address("http://localhost:8501")
    assert share.is_local_address("http://127.0.0.1:8501/featapp")
    assert share.is_local_address("http://[::1]:8501")
    assert not share.is_local_address("http://192.168.1.20:8501")
    assert not share.is_local_address("https://featapp.streamlit.app")


def test_keys_of_other_features_are_not_this_modules_business(model, dataset):
    result = read({"quiz": ["3"], "embed": ["true"], "utm_source": ["x"]}, model, dataset)
    assert result == LinkRead(ViewState(page="feature_map"), ())


def test_the_channel_is_checked_against_the_links_layer_else_the_current_one(model, dataset):
    assert read({"layer": "conv2d_3", "channel": "128"}, model, dataset).view.channel == 128
    # No layer in the link: the one the session shows decides (conv2d has 32 channels).
    assert read({"channel": "64"}, model, dataset, current_layer="conv2d_1").view.channel == 64
    result = read({"channel": "64"}, model, dataset, current_layer="conv2d")
    assert result.view.channel is None and "a whole number from 1 to 32" in result.ignored[0]
    # A layer that is ignored: the channel is checked against the session's layer.
    result = read({"layer": "conv9", "channel": "40"}, model, dataset, current_layer="conv2d_1")
    assert result.view == ViewState(page="feature_map", channel=40) and len(result.ignored) == 1
    # Nothing known: the page's first layer (conv2d).
    assert read({"channel": "33"}, model, dataset).view.channel is None


def test_a_dense_layer_is_refused_where_only_maps_are_shown(model, dataset):
    on_map = read({"layer": "dense", "channel": "3"}, model, dataset, page="feature_map")
    assert on_map.view.layer is None and "no 2-D maps" in on_map.ignored[0]
    on_grid = read({"layer": "dense", "channel": "512"}, model, dataset, page="layer_grid")
    assert on_grid == LinkRead(ViewState(page="layer_grid", layer="dense", channel=512), ())


def test_no_dataset_the_photo_is_ignored_and_the_rest_applies(model, dataset):
    cat = dataset.images("test")[0]
    result = read({"photo": cat.reference, "colours": "viridis"}, model, None)
    assert result.view == ViewState(page="feature_map", colours="viridis")
    assert result.ignored == (f"This server has no dataset, so the photo `{cat.reference}` cannot be shown.",)


def test_a_photo_and_a_probe_the_photo_wins(model, dataset):
    cat = dataset.images("test")[0]
    result = read({"photo": cat.reference, "probe": "dot"}, model, dataset)
    assert result.view == ViewState(page="feature_map", photo=cat.reference)
    assert "`dot`" in result.ignored[0] and "one image" in result.ignored[0]


TOO_LONG = "9" * 5000
HOSTILE = [
    # (key, value, words the sentence must hold)
    ("photo", "../../etc/passwd", "not a dataset photo's name"),
    ("photo", "/etc/passwd", "not a dataset photo's name"),
    ("photo", "test/cats/../../../../../etc/passwd", "not a dataset photo's name"),
    ("photo", "../cats/cat.1.jpg", "not a dataset photo's name"),
    ("photo", "test/../passwd", "not a dataset photo's name"),
    ("photo", "test\\cats\\cat.1.jpg", "not a dataset photo's name"),
    ("photo", "C:\\Windows\\win.ini", "not a dataset photo's name"),
    ("photo", "test/cats/cat.1.jpg\x00.png", "not readable text"),
    ("photo", "test/cats/\ufffd\ufffd.jpg", "not readable text"),  # %FF%FE: not UTF-8
    ("photo", "test/cats/no-such-photo.jpg", "not in this server's dataset"),
    ("photo", "train/../test/cats/cat.1.jpg", "not a dataset photo's name"),
    ("photo", "etc/passwd/x", "not in this server's dataset"),
    ("photo", "test/cats/" + "a" * 400 + ".jpg", "characters long"),
    ("probe", "../../dot", "not one of this app's probes"),
    ("probe", "", "not one of this app's probes"),
    ("layer", "conv9", "not in this model"),
    ("layer", "conv2d\n", "not readable text"),
    ("layer", "", "not in this model"),
    ("channel", "0", "a whole number from 1 to 32"),
    ("channel", "33", "a whole number from 1 to 32"),
    ("channel", "-1", "a whole number from 1 to 32"),
    ("channel", "1.5", "a whole number from 1 to 32"),
    ("channel", "1e3", "a whole number from 1 to 32"),
    ("channel", "0x10", "a whole number from 1 to 32"),
    ("channel", "99999999999999999999", "a whole number from 1 to 32"),
    ("channel", TOO_LONG, "5,000 characters long"),
    ("channel", "", "a whole number from 1 to 32"),
    ("channel", "٣", "a whole number from 1 to 32"),  # an Arabic-Indic three: int() would take it
    ("colours", "rainbow", "not one of this app's scales (blues4, viridis)"),
    ("colours", "Viridis", "not one of this app's scales"),
    ("scale", "per map", "not one of per-map, per-layer, fixed"),
    ("scale", "huge", "not one of per-map, per-layer, fixed"),
    ("range", "1,0", "two numbers, the lower first"),
    ("range", "1,1", "two numbers, the lower first"),
    ("range", "nan,1", "two numbers, the lower first"),
    ("range", "-inf,1", "two numbers, the lower first"),
    ("range", "1e999,1e9999", "two numbers, the lower first"),
    ("range", "0", "two numbers, the lower first"),
    ("range", "0,1,2", "two numbers, the lower first"),
    ("range", "a,b", "two numbers, the lower first"),
    ("range", "0x0,0x10", "two numbers, the lower first"),
    ("range", "0," + TOO_LONG, "characters long"),
]


@pytest.mark.parametrize("key, value, words", HOSTILE, ids=[f"{k}={v[:24]!r}" for k, v, _ in HOSTILE])
def test_a_hostile_value_is_ignored_with_a_sentence_and_the_rest_applies(model, dataset, key, value, words):
    good = {"layer": "conv2d", "colours": "viridis", "scale": "fixed", "range": "0,2", "probe": "dot"}
    good.pop("probe" if key == "photo" else key, None)  # a link names one image
    result = read({**good, key: value}, model, dataset)
    assert len(result.ignored) == 1, result.ignored
    assert words in result.ignored[0]
    assert f"`{key}`" in result.ignored[0] or f"The {key}" in result.ignored[0]
    expected = {
        "layer": "conv2d",
        "colours": "viridis",
        "scaling": "fixed",
        "fixed_range": (0.0, 2.0),
        "probe": "dot",
    }
    field = {"scale": "scaling", "range": "fixed_range"}.get(key, key)
    expected.pop(field, None)
    if key == "photo":
        expected.pop("probe")
    assert {k: v for k, v in vars(result.view).items() if v is not None and k != "page"} == expected


@pytest.mark.parametrize(
    "given, words",
    [(["1", "2"], "given 2 times"), ([], "given 0 times"), ([5], "not text"), ([["1"]], "not text")],
)
def test_a_repeated_or_odd_value_is_ignored(model, dataset, given, words):
    result = read({"channel": given, "colours": ["viridis"]}, model, dataset)
    assert result.view == ViewState(page="feature_map", colours="viridis")
    assert len(result.ignored) == 1 and words in result.ignored[0]


def test_what_a_link_says_back_is_inert_markdown(model, dataset):
    """A link comes from anyone: its values come back in code spans of printable ASCII (no
    link, picture, formula or formatting of theirs is drawn), at most 40 characters."""
    attacks = {
        "photo": "![x](http://evil.example/track.png)",
        "layer": "[click me](http://evil.example) **bold** $x$ :red[y]",
        "colours": "`` ` `` <script>alert(1)</script>",
        "channel": "é" * 30 + "`",
        "scale": "\u202eevil",
    }
    result = read(attacks, model, dataset)
    assert len(result.ignored) == len(attacks)
    for sentence in result.ignored:
        spans = re.findall(r"`([^`]*)`", sentence)
        outside = re.sub(r"`[^`]*`", "", sentence)
        assert sentence.count("`") % 2 == 0
        assert "http" not in outside and "<" not in outside and "](" not in outside and "$" not in outside
        assert all(len(span) <= 40 and all(" " <= c <= "~" for c in span) for span in spans)


def test_the_qr_code_is_segnos_code_for_the_link_drawn_module_for_module():
    url = link(ROOT, ViewState(page="feature_map", photo="test/dogs/dog.1702.jpg", layer="conv2d_1", channel=5))
    picture = qr_picture(url, module_px=3, border=4)
    expected = np.array([list(row) for row in segno.make(url, error="m", micro=False).matrix], dtype=bool)
    modules = expected.shape[0]
    assert picture.shape == ((modules + 8) * 3, (modules + 8) * 3, 3) and picture.dtype == np.uint8
    assert set(np.unique(picture).tolist()) == {0, 255}
    assert (picture[:12] == 255).all() and (picture[-12:] == 255).all()  # the quiet zone
    assert (picture[:, :12] == 255).all() and (picture[:, -12:] == 255).all()
    centres = picture[12 + 1 : 12 + modules * 3 : 3, 12 + 1 : 12 + modules * 3 : 3, 0]
    assert np.array_equal(centres == 0, expected)
    assert (picture[..., 0] == picture[..., 2]).all()  # black on white, no colour
    # Another link is another code.
    assert not np.array_equal(qr_picture(url + "0", module_px=3), picture)
    with pytest.raises(ValueError):
        qr_picture(url, module_px=0)
