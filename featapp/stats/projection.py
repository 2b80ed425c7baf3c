"""A map of the network's feature space: every scanned photo as a point in 2-D.

Each photo is described by one layer of the scan (:func:`features`): the dense layer's
512 activations by default (what the output layer sees), or any feature-map layer's
per-channel means. :func:`fit` turns those into 2-D coordinates:

* ``"pca"`` (always available): the two directions along which the photos differ most,
  by numpy's SVD of the centred table. A new photo (an upload, the current image) is
  projected **exactly** by the same linear map (:meth:`Projection.place`).
* ``"tsne"`` (if scikit-learn is installed) and ``"umap"`` (if umap-learn is): non-linear
  maps that keep neighbours together but have no formula for a new point. A new photo is
  placed at the mean position of its :data:`PLACE_NEIGHBOURS` nearest scanned photos in
  feature space, which is an approximation (:attr:`Projection.exact` is ``False``).

:func:`load_or_fit` caches the result next to the scan, keyed by the model's hash, the
scan's dataset fingerprint, the split, the layer and the method, so it is computed once.

>>> import numpy as np
>>> points = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]])      # on a line
>>> p = fit_pca(points, layer="toy")
>>> bool(np.abs(p.coords[:, 1]).max() < 1e-9), round(p.explained[0], 6)   # all on the first axis
(True, 1.0)
>>> round(float(p.place(np.array([[3.0, 6.0]]))[0, 0]), 4)    # sqrt(20) from the mean (1, 2)
4.4721
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featapp.cache import CacheFileError, atomic_write, default_cache_dir, read_npz

__all__ = [
    "Projection",
    "METHODS",
    "PLACE_NEIGHBOURS",
    "FORMAT_VERSION",
    "available_methods",
    "features",
    "image_features",
    "fit",
    "fit_pca",
    "load_or_fit",
    "projection_path",
    "nearest",
    "predicted_labels",
    "thumbnail_data_urls",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
_MODULES = {"tsne": "sklearn", "umap": "umap"}
PLACE_NEIGHBOURS = 5
"""How many nearest scanned photos place a new point on a t-SNE or UMAP map."""


def available_methods() -> list[str]:
    """``"pca"``, and ``"tsne"`` / ``"umap"`` where scikit-learn / umap-learn are installed."""
    return ["pca"] + [m for m, module in _MODULES.items() if importlib.util.find_spec(module) is not None]


def features(stats, layer: str = "dense") -> np.ndarray:
    """Each scanned photo's description in ``layer``: a vector layer's values, or a
    feature-map layer's per-channel means. ``(images, units)``, read-only."""
    return stats.values(layer, by="mean")


def image_features(output: np.ndarray) -> np.ndarray:
    """The same description for one photo's activations of one layer: a map
    ``(channels, rows, cols)`` becomes its per-channel means, a vector stays as it is."""
    output = np.asarray(output, dtype=np.float32)
    return output.reshape(output.shape[0], -1).mean(axis=1) if output.ndim == 3 else output.reshape(-1)


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of the scanned photos, and how to place new ones.

    For PCA, ``mean`` and ``components`` (2 x units) are the linear map and
    ``explained`` the share of the variance along each axis. For t-SNE and UMAP they are
    ``None``, and :meth:`place` needs the scanned ``reference`` features.
    """

    layer: str
    method: str
    coords: np.ndarray
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    explained: tuple[float, float] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """True when a new photo lands exactly where it would if it had been scanned (PCA)."""
        return self.components is not None

    def place(self, new_features: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """``(points, 2)`` map positions of new photos' features.

        PCA applies its linear map exactly. The other methods put each photo at the mean
        position of its :data:`PLACE_NEIGHBOURS` nearest scanned photos (``reference``,
        the table the map was fitted on).
        """
        points = np.atleast_2d(np.asarray(new_features, dtype=np.float64))
        if self.components is not None:
            assert self.mean is not None  # a PCA map has both
            return (points - self.mean) @ self.components.T
        if reference is None:
            raise ValueError(f"placing a photo on a {METHODS[self.method]} map needs the scanned features")
        placed = []
        for point in points:
            indices, _ = nearest(reference, point, k=PLACE_NEIGHBOURS)
            placed.append(self.coords[indices].mean(axis=0))
        return np.array(placed, dtype=np.float64).reshape(-1, 2)


def fit_pca(table: np.ndarray, layer: str = "") -> Projection:
    """The first two principal components of ``table`` (rows are photos), by numpy's SVD.

    Each axis's sign is fixed so that its largest loading is positive: the same data
    always gives the same picture, not a mirror image of it.
    """
    data = np.asarray(table, dtype=np.float64)
    if data.ndim != 2 or len(data) < 2:
        raise ValueError(f"a projection needs at least two photos with features, got shape {data.shape}")
    mean = data.mean(axis=0)
    centred = data - mean
    if len(centred) > centred.shape[1]:
        # The SVD of the (units x units) scatter matrix gives the same axes, and its singular
        # values are the squared ones of the table. On a busy 2-core machine LAPACK's
        # multithreaded SVD of the tall table was slow and erratic (bench/results/classes.md);
        # the units x units one is small. Only the top two axes are used, which
        # the squared condition number does not disturb.
        _, variances, vt = np.linalg.svd(centred.T @ centred)
    else:
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        variances = singular**2
    components = np.zeros((2, data.shape[1]))
    count = min(2, len(vt))
    components[:count] = vt[:count]
    for axis in range(count):
        peak = np.argmax(np.abs(components[axis]))
        if components[axis, peak] < 0:
            components[axis] = -components[axis]
    total = float(variances.sum())
    shares = [(float(variances[i]) / total if total > 0 and i < len(variances) else 0.0) for i in range(2)]
    return Projection(
        layer=layer,
        method="pca",
        coords=(centred @ components.T).astype(np.float32),
        mean=mean,
        components=components,
        explained=(shares[0], shares[1]),
    )


def fit(table: np.ndarray, method: str = "pca", layer: str = "", seed: int = 0) -> Projection:
    """Fit a 2-D map of ``table`` with ``method`` (see :func:`available_methods`)."""
    if method == "pca":
        return fit_pca(table, layer)
    if method not in _MODULES:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if method not in available_methods():
        package = {"tsne": "scikit-learn", "umap": "umap-learn"}[method]
        raise ValueError(f"{METHODS[method]} needs the {package} package, which is not installed; PCA always works.")
    data = np.asarray(table, dtype=np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(data) - 1) // 3)))
        coords = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(data)
    else:
        import umap

        coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(data)
    return Projection(layer=layer, method=method, coords=np.asarray(coords, dtype=np.float32))


# -- the cache ----------------------------------------------------------------------------------------------
def projection_path(stats, layer: str = "dense", method: str = "pca", cache_dir: Path | None = None) -> Path:
    """Where :func:`load_or_fit` keeps this scan's map (it may not exist yet)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(
        json.dumps([stats.model_sha256, stats.dataset_fingerprint, stats.split, layer, method]).encode()
    ).hexdigest()[:16]
    return folder / f"projection-{stats.model_sha256[:16]}-{key}.npz"


def _meta(stats, layer: str, method: str) -> dict:
    return {
        "format": FORMAT_VERSION,
        "model_sha256": stats.model_sha256,
        "dataset_fingerprint": stats.dataset_fingerprint,
        "split": stats.split,
        "layer": layer,
        "method": method,
        "images": len(stats),
    }


def _save(path: Path, projection: Projection) -> None:
    arrays = {"coords": projection.coords, "meta": np.frombuffer(json.dumps(projection.meta).encode(), np.uint8)}
    if projection.components is not None:
        assert projection.mean is not None  # a PCA map has both
        arrays.update(mean=projection.mean, components=projection.components, explained=np.array(projection.explained))
    atomic_write(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]  # mypy holds each value against savez's allow_pickle: bool


def _load(path: Path, expected: dict) -> Projection | None:
    try:
        contents = read_npz(path)
        meta = json.loads(contents["meta"].tobytes().decode())
        coords = contents["coords"]
    except (CacheFileError, ValueError, KeyError, TypeError, RecursionError) as err:
        log.warning("Ignoring the projection in %s: %s", path, err)
        return None
    if meta != expected or coords.shape != (expected["images"], 2):
        return None
    if not all(np.isfinite(v).all() for v in contents.values() if v.dtype.kind == "f"):
        log.warning("Ignoring the projection in %s: it holds values that are not numbers", path)
        return None
    linear = "components" in contents
    return Projection(
        layer=meta["layer"],
        method=meta["method"],
        coords=coords,
        mean=contents["mean"] if linear else None,
        components=contents["components"] if linear else None,
        explained=tuple(float(v) for v in contents["explained"]) if linear else None,  # type: ignore[arg-type]
        meta=meta,
    )


def load_or_fit(
    stats, layer: str = "dense", method: str = "pca", cache_dir: Path | None = None, force: bool = False
) -> Projection:
    """This scan's 2-D map of ``layer``, from the cache if it is there and current, else fitted and cached.

    >>> projection = load_or_fit(stats, "dense")        # doctest: +SKIP
    >>> projection.coords.shape                         # doctest: +SKIP
    (1000, 2)
    """
    path = projection_path(stats, layer, method, cache_dir)
    expected = _meta(stats, layer, method)
    if not force and path.is_file():
        cached = _load(path, expected)
        if cached is not None:
            return cached
    fitted = fit(features(stats, layer), method, layer)
    projection = Projection(
        fitted.layer, fitted.method, fitted.coords, fitted.mean, fitted.components, fitted.explained, expected
    )
    _save(path, projection)
    return projection


# -- neighbours, predictions, thumbnails ------------------------------------------------------------------------
def nearest(
    table: np.ndarray, query: np.ndarray, k: int = 8, exclude: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the ``k`` rows of ``table`` nearest to ``query``,
    nearest first (ties keep row order); ``exclude`` leaves one row out (the photo itself).

    >>> nearest(np.array([[0.0], [5.0], [1.0]]), np.array([0.0]), k=2)[0].tolist()
    [0, 2]
    """
    data = np.asarray(table, dtype=np.float64)
    point = np.asarray(query, dtype=np.float64).reshape(1, -1)
    if data.shape[1] != point.shape[1]:
        raise ValueError(f"the query has {point.shape[1]} features, the table {data.shape[1]}")
    distances = np.sqrt(((data - point) ** 2).sum(axis=1))
    if exclude is not None:
        distances[exclude] = np.inf
    order = np.argsort(distances, kind="stable")
    keep = [i for i in order[: k + (exclude is not None)] if i != exclude][:k]
    return np.array(keep, dtype=np.int64), distances[keep]


def predicted_labels(stats) -> np.ndarray | None:
    """The model's label for each scanned photo, from its last layer (``None`` if it is not a
    classifier over the scan's classes). One sigmoid unit is p(last class), as in
    :meth:`featapp.FeatureModel.predict`: ties go to the first class."""
    last = stats.layer_names[-1]
    try:
        scores = np.asarray(stats.values(last), dtype=np.float64)
    except ValueError:
        return None
    if scores.shape[1] == 1 and len(stats.class_names) == 2:
        scores = np.concatenate([1.0 - scores, scores], axis=1)
    if scores.shape[1] != len(stats.class_names):
        return None
    return scores.argmax(axis=1)


def thumbnail_data_urls(paths: Sequence[str | os.PathLike], px: int = 56, quality: int = 70) -> list[str | None]:
    """Small JPEG thumbnails as ``data:`` URLs, for chart tooltips (Vega shows a field named
    ``image`` as a picture). A file that cannot be read gets ``None``. JPEGs are decoded
    at reduced size (``draft``), so 1,000 photos take about two seconds and 1.6 MB, which
    the map sends to the browser with its points."""
    from PIL import Image, ImageOps

    urls: list[str | None] = []
    for path in paths:
        try:
            with Image.open(path) as picture:
                picture.draft("RGB", (px * 2, px * 2))
                small = ImageOps.exif_transpose(picture).convert("RGB")
                small.thumbnail((px, px))
                buffer = io.BytesIO()
                small.save(buffer, format="JPEG", quality=quality)
        except (OSError, ValueError, Image.DecompressionBombError):
            urls.append(None)
            continue
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls
