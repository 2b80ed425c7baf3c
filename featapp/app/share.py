"""A view as a link, and a link as a view: what "Share this view" gives and what opening it does.

No Streamlit here, so every rule is testable on its own. The page is the link's path (the
URL path Streamlit gives each page); the rest is in its query:

==========  ================================  =============================================
Key         Example                           What it names
==========  ================================  =============================================
``photo``   ``test/cats/cat.1933.jpg``        a dataset photo, ``<split>/<class>/<file>``
``probe``   ``edge-vertical``                 a synthetic probe, by its name
``layer``   ``conv2d_1``                      the layer
``channel`` ``5``                             the channel, counted from 1
``colours`` ``viridis``                       the colour scale's key
``scale``   ``per-layer``                     ``per-map``, ``per-layer`` or ``fixed``
``range``   ``0,1.5``                         the fixed range, low and high
==========  ================================  =============================================

A link comes from anyone, so :func:`read_query` trusts none of it: each value is checked
against the loaded model, the dataset's own listing (a photo is found by name among the
files the dataset lists, never opened at a path taken from the URL) and the probes; a value
that fails is left out, with one sentence saying what was ignored and why, and the rest of
the view still applies. Keys it does not know (another feature's, such as the quiz's) are
not its business. An uploaded or camera photo lives in one session only, so a link cannot
carry it.

(The app's helpers name no web address, not even in an example: see
``tests/app/test_share.py`` for links in full.)

>>> view = ViewState(page="feature_map", probe="dot", layer="conv2d", channel=3, scaling="per layer")
>>> link("ROOT", view)
'ROOT/feature_map?probe=dot&layer=conv2d&channel=3&scale=per-layer'
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import segno

from featapp.data.dataset import Dataset, DatasetError
from featapp.engine.model import FeatureModel
from featapp.render import COLOUR_SCALES, SCALINGS

__all__ = [
    "SHARE_KEYS",
    "SPATIAL_PAGES",
    "ViewState",
    "LinkRead",
    "link",
    "app_root",
    "is_local_address",
    "read_query",
    "qr_picture",
]

SHARE_KEYS = ("photo", "probe", "layer", "channel", "colours", "scale", "range")
"""The query keys a shared link uses; the app reads and removes only these."""

SPATIAL_PAGES = frozenset({"feature_map", "neuron"})
"""Pages (URL paths) that show only layers with 2-D maps: a link's dense layer is ignored there."""

_SCALE_WORDS = {"per map": "per-map", "per layer": "per-layer", "fixed": "fixed"}
_SCALE_FROM_WORD = {word: scaling for scaling, word in _SCALE_WORDS.items()}
assert set(_SCALE_WORDS) == set(SCALINGS)  # a new scaling needs its word in links

_MAX_CHARS = 300
"""The longest value read (a dataset photo's name with its folders fits many times over)."""
# ASCII digits only: \d and int() also take other scripts' digits ("٣" is 3).
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class ViewState:
    """What a shared link carries. ``None`` is "not in the link" (the page keeps its own).

    ``page`` is the page's URL path (``""`` for the default page, the Gallery); ``photo`` a
    dataset photo's ``<split>/<class>/<file>``; ``probe`` a probe's name; ``channel``
    counts from 1; ``scaling`` is one of :data:`featapp.render.SCALINGS`; ``fixed_range``
    is ``(low, high)`` with low < high.
    """

    page: str = ""
    photo: str | None = None
    probe: str | None = None
    layer: str | None = None
    channel: int | None = None
    colours: str | None = None
    scaling: str | None = None
    fixed_range: tuple[float, float] | None = None

    def to_query(self) -> dict[str, str]:
        """The link's query, in :data:`SHARE_KEYS` order; the range only for a fixed scale.

        >>> ViewState(layer="conv2d", scaling="fixed", fixed_range=(0.0, 1.5)).to_query()
        {'layer': 'conv2d', 'scale': 'fixed', 'range': '0,1.5'}
        """
        query: dict[str, str] = {}
        if self.photo is not None:
            query["photo"] = self.photo
        elif self.probe is not None:
            query["probe"] = self.probe
        if self.layer is not None:
            query["layer"] = self.layer
        if self.channel is not None:
            query["channel"] = str(self.channel)
        if self.colours is not None:
            query["colours"] = self.colours
        if self.scaling is not None:
            query["scale"] = _SCALE_WORDS[self.scaling]
            if self.scaling == "fixed" and self.fixed_range is not None:
                query["range"] = ",".join(_number_text(v) for v in self.fixed_range)
        return query


@dataclass(frozen=True)
class LinkRead:
    """What :func:`read_query` made of a link: the view to show, and one sentence (Markdown,
    the link's own values in code spans) per value it ignored."""

    view: ViewState
    ignored: tuple[str, ...] = ()


def _number_text(value: float) -> str:
    """The shortest text that reads back as ``value`` (``1`` rather than ``1.0``)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def app_root(page_url: str, page: str) -> str:
    """The app's own address, from the address of one of its pages (Streamlit's
    ``st.context.url``: the address with the page's path, without the query).

    >>> app_root("//course.example/featapp/feature_map", "feature_map")
    '//course.example/featapp'
    >>> app_root("//localhost:8501/", "")
    '//localhost:8501'
    """
    root = page_url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if page and root.endswith("/" + page):
        root = root[: -len(page) - 1]
    return root


def is_local_address(root: str) -> bool:
    """Whether the address reaches only the computer it is typed on (another computer or a
    phone scanning the code would reach itself).

    >>> is_local_address("//localhost:8501"), is_local_address("//10.0.0.5:8501")
    (True, False)
    """
    host = urllib.parse.urlsplit(root).hostname or ""
    return host == "localhost" or host.endswith(".localhost") or host.startswith("127.") or host == "::1"


def link(root: str, view: ViewState) -> str:
    """The link that opens ``view``: the app's address, the page's path and the query.
    Slashes and commas stay readable (they are allowed in a query), the rest is escaped."""
    address = root.rstrip("/") + "/" + view.page
    query = urllib.parse.urlencode(view.to_query(), quote_via=urllib.parse.quote, safe="/,")
    return address + ("?" + query if query else "")


def _shown(value: str) -> str:
    """A value from a link, safe to put in a message: printable ASCII only (anything else
    is ``?``), no backtick, at most 40 characters, in a code span (Markdown shows it as it is,
    with no link, formatting or formula)."""
    text = "".join(c if " " <= c <= "~" and c != "`" else "?" for c in value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return f"`{text}`" if text.strip() else "(empty)"


def _one_value(key: str, given: str | Sequence[str]) -> tuple[str | None, str | None]:
    """``(value, None)`` for one readable value, else ``(None, why it is ignored)``."""
    values = [given] if isinstance(given, str) else list(given)
    if len(values) != 1:
        return None, f"`{key}` was given {len(values)} times; a link names each thing once."
    value = values[0]
    if not isinstance(value, str):
        return None, f"`{key}` is not text."
    if len(value) > _MAX_CHARS:
        return None, f"`{key}` is {len(value):,} characters long, more than any view needs."
    if "\ufffd" in value or any(not c.isprintable() for c in value):
        # U+FFFD: the URL's bytes were not UTF-8 (decoding replaced them).
        return None, f"`{key}` {_shown(value)} holds characters that are not readable text."
    return value, None


def _whole_number(text: str) -> int | None:
    """A plain decimal whole number of at most 9 digits, else ``None`` (no ``int('9' * 5000)``)."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,9}", text) else None


def _plain_name(part: str) -> bool:
    return part not in ("", ".", "..") and "\\" not in part and "\0" not in part and len(part) <= 255


def read_query(
    query: Mapping[str, str | Sequence[str]],
    *,
    page: str,
    model: FeatureModel,
    dataset: Dataset | None,
    probe_names: Sequence[str],
    current_layer: str | None = None,
) -> LinkRead:
    """The view a link asks for, each value checked; what fails is left out and said.

    ``query`` maps keys to one value or to every value given (a key repeated in the URL is
    ambiguous and ignored). ``page`` is the page the link opened (its URL path; a link's
    layer must have 2-D maps on :data:`SPATIAL_PAGES`). ``dataset`` is ``None`` when the
    server has none; ``current_layer`` is the layer the channel is checked against when
    the link names none (or one that is ignored).
    """
    ignored: list[str] = []
    values: dict[str, str] = {}
    for key in SHARE_KEYS:
        if key in query:
            value, why = _one_value(key, query[key])
            if why is not None:
                ignored.append(why)
            elif value is not None:
                values[key] = value
    view = ViewState(page=page)

    # -- the image: a dataset photo, found among the files the dataset lists, or a probe
    if "photo" in values:
        reference = values["photo"]
        parts = reference.split("/")
        if len(parts) != 3 or not all(_plain_name(part) for part in parts):
            ignored.append(f"The photo {_shown(reference)} is not a dataset photo's name (`<split>/<class>/<file>`).")
        elif dataset is None:
            ignored.append(f"This server has no dataset, so the photo {_shown(reference)} cannot be shown.")
        else:
            try:
                view = replace(view, photo=dataset.find(reference).reference)
            except DatasetError:
                ignored.append(f"The photo {_shown(reference)} is not in this server's dataset.")
        if "probe" in values:
            ignored.append(f"The probe {_shown(values['probe'])}: a link shows one image, and it names a photo too.")
    elif "probe" in values:
        if values["probe"] in probe_names:
            view = replace(view, probe=values["probe"])
        else:
            ignored.append(f"The probe {_shown(values['probe'])} is not one of this app's probes.")

    # -- the layer and the channel, against the loaded model
    layers = {layer.name: layer for layer in model.layers}
    if "layer" in values:
        name = values["layer"]
        layer = layers.get(name)
        if layer is None:
            ignored.append(f"The layer {_shown(name)} is not in this model ({len(layers)} layers: {_names(layers)}).")
        elif page in SPATIAL_PAGES and not layer.is_spatial:
            ignored.append(f"The layer {_shown(name)} has no 2-D maps, which this page shows.")
        else:
            view = replace(view, layer=name)
    if "channel" in values:
        text = values["channel"]
        checked = view.layer or (current_layer if current_layer in layers else None)
        if checked is None:
            checked = next(
                (layer.name for layer in model.layers if layer.is_spatial or page not in SPATIAL_PAGES), None
            )
        number = _whole_number(text.strip())
        count = layers[checked].channels if checked is not None else 0
        if checked is None:
            ignored.append(f"The channel {_shown(text)}: this model has no layer to show it in.")
        elif number is None or not 1 <= number <= count:
            ignored.append(
                f"The channel {_shown(text)} is not a whole number from 1 to {count} (the channels of {checked})."
            )
        else:
            view = replace(view, channel=number)

    # -- colours and scale
    if "colours" in values:
        if values["colours"] in COLOUR_SCALES:
            view = replace(view, colours=values["colours"])
        else:
            ignored.append(
                f"The colours {_shown(values['colours'])} are not one of this app's scales ({', '.join(COLOUR_SCALES)})."
            )
    if "scale" in values:
        scaling = _SCALE_FROM_WORD.get(values["scale"])
        if scaling is None:
            ignored.append(f"The scale {_shown(values['scale'])} is not one of {', '.join(_SCALE_FROM_WORD)}.")
        else:
            view = replace(view, scaling=scaling)
    if "range" in values:
        bounds = _range(values["range"])
        if bounds is None:
            ignored.append(f"The range {_shown(values['range'])} is not two numbers, the lower first (like `0,1.5`).")
        else:
            view = replace(view, fixed_range=bounds)
    return LinkRead(view, tuple(ignored))


def _range(text: str) -> tuple[float, float] | None:
    parts = text.split(",")
    if len(parts) != 2 or not all(_NUMBER.fullmatch(part.strip()) for part in parts):
        return None
    low, high = (float(part) for part in parts)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        return None
    return low, high


def _names(layers: Mapping[str, object]) -> str:
    names = list(layers)
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def qr_picture(text: str, *, module_px: int = 6, border: int = 4) -> np.ndarray:
    """``text`` as a QR code (:mod:`segno`, error correction level M): black modules on white,
    each ``module_px`` pixels square, with the standard quiet zone of ``border`` modules.
    uint8 ``(N, N, 3)``: a picture like any other, shown from the picture shelf.

    >>> picture = qr_picture("featapp: look inside a convnet", module_px=2)
    >>> picture.shape, picture[0, 0].tolist(), picture[8, 8].tolist()
    ((74, 74, 3), [255, 255, 255], [0, 0, 0])
    """
    if module_px < 1 or border < 0:
        raise ValueError(f"module_px must be 1 or more and border 0 or more, got {module_px} and {border}")
    code = segno.make(text, error="m", micro=False)
    dark = np.array([list(row) for row in code.matrix], dtype=bool)
    dark = np.pad(dark, border, constant_values=False)
    pixels = np.where(dark, 0, 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, module_px, axis=0), module_px, axis=1)
    return np.ascontiguousarray(np.repeat(pixels[:, :, np.newaxis], 3, axis=2))
