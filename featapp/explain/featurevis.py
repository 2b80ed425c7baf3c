"""Feature visualisation: the picture a channel responds to most, found by gradient ascent.

Start from faint noise and climb the gradient of one channel's mean activation, as in
Lucid/Lucent (Olah et al., "Feature Visualization", Distill 2017), with the regularisers
that make the pictures readable:

* **jitter**: every step the image is shifted by a few random pixels (and shifted back
  after), so the picture cannot rely on exact pixel positions;
* **Fourier and decorrelated-colour preconditioning**: the gradient is reweighted by 1/f
  in the frequency domain and by the colour correlation of natural photos before each
  step. That is gradient ascent in Lucid's Fourier/decorrelated-colour parametrisation,
  done on the pixels (a preconditioner instead of a change of variables), so no
  automatic differentiation of the parametrisation is needed (ONNX Runtime has none);
* **random scaling** every few steps (the image is resized by up to ±5 % and back).

For early layers the app optimises the channel's **centre neuron** instead (Lucid's neuron
objective, :func:`default_objective`): a channel's mean over a whole map is maximised by a
flat colour when its receptive field is a few pixels wide, while one cell shows the pattern in
its own receptive field. That picture is found as Erhan et al. (2009) did for early layers:
plain gradient ascent with the receptive field's contrast held to a fixed norm, so for a
first-layer cell (a linear function of its pixels before the ReLU) the answer is the kernel
itself, not a saturated black-and-white copy of its signs.

Many channels run as one batch (one image per channel). The same ``seed`` gives the same
pictures. Nothing here is written for a particular model.

>>> pictures = visualize(featapp.load_gradients(model), "conv2d_2", [0, 1], steps=128)  # doctest: +SKIP
>>> pictures.images.shape, pictures.images.dtype                                       # doctest: +SKIP
((2, 150, 150, 3), dtype('uint8'))
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from featapp.cache import CacheFileError, atomic_write, check_writable, default_cache_dir, read_npz
from featapp.engine.geometry import receptive_box
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import graph_input
from featapp.explain.backward import PREACT_SUFFIX
from featapp.explain.gradients import Gradients

log = logging.getLogger(__name__)

__all__ = [
    "APP_STEPS",
    "FeatureVisualization",
    "cache_file",
    "cached_layer_pictures",
    "channel_picture",
    "default_objective",
    "layer_pictures",
    "picture_activations",
    "picture_settings",
    "shown_region",
    "visualize",
]

# Lucid's colour correlation of ImageNet photos (the square root of the RGB covariance),
# used to decorrelate colour: steps move along natural colour directions.
_COLOR_CORRELATION = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR_CORRELATION /= np.linalg.norm(_COLOR_CORRELATION, axis=0).max()


@dataclass(frozen=True)
class FeatureVisualization:
    """``images[i]``: the optimised picture for ``channels[i]`` (0-based), uint8 (H, W, C);
    ``activations[i]``: the channel's mean activation on it; ``start_activations``: on the start noise.
    ``objective`` is ``"channel"`` or ``"neuron"``; for a neuron, ``box`` is the input box
    ``(top, left, bottom, right)`` its centre cell sees, where the picture is."""

    layer: str
    channels: tuple[int, ...]
    images: np.ndarray
    activations: np.ndarray
    start_activations: np.ndarray
    objective: str = "channel"
    box: tuple[int, int, int, int] | None = None

    def shown(self, min_px: int = 96) -> np.ndarray:
        """The pictures as a student should see them: a neuron's receptive field, with a margin
        of a quarter of its size and enlarged by a whole factor to at least ``min_px`` (the
        rest of its picture is the start noise, which the cell never sees); else as they are."""
        if self.box is None:
            return self.images
        top, left, bottom, right = shown_region(self.box, self.images.shape[1:3])
        crop = self.images[:, top:bottom, left:right]
        factor = max(1, -(-min_px // max(crop.shape[1:3])))
        return np.repeat(np.repeat(crop, factor, axis=1), factor, axis=2)

    def of_channel(self, channel: int) -> FeatureVisualization:
        """The part for one of :attr:`channels` (0-based); raises ``ValueError`` for another."""
        i = self.channels.index(channel)
        return FeatureVisualization(
            self.layer,
            (channel,),
            self.images[i : i + 1],
            self.activations[i : i + 1],
            self.start_activations[i : i + 1],
            self.objective,
            self.box,
        )


def shown_region(box: tuple[int, int, int, int], image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part ``(top, left, bottom, right)`` of a neuron picture :meth:`FeatureVisualization.shown`
    shows: the cell's input ``box`` with a margin of a quarter of its size, inside the image.

    >>> shown_region((68, 68, 86, 86), (150, 150))
    (64, 64, 90, 90)
    """
    top, left, bottom, right = box
    margin = max(1, (bottom - top) // 4)
    height, width = image_hw
    return max(0, top - margin), max(0, left - margin), min(height, bottom + margin), min(width, right + margin)


def _spectrum_weights(height: int, width: int, decay: float) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    weights = 1.0 / np.maximum(freq, 1.0 / max(height, width)) ** decay
    return (weights / weights.max()).astype(np.float32)


def _precondition(grad: np.ndarray, spectrum: np.ndarray | None, colour: bool) -> np.ndarray:
    """Reweight a gradient (N, H, W, C) towards low frequencies and natural colours."""
    if spectrum is not None:
        spectral = np.fft.rfft2(grad, axes=(1, 2)) * spectrum[None, :, :, None] ** 2
        grad = np.fft.irfft2(spectral, s=grad.shape[1:3], axes=(1, 2)).astype(np.float32)
    if colour:
        mix = _COLOR_CORRELATION @ _COLOR_CORRELATION.T
        grad = grad @ mix.T
    return grad


def _rescale(batch: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Resize each image by its factor about its centre, back to the same size."""
    count, height, width, _ = batch.shape
    out = np.empty_like(batch)
    for i, factor in enumerate(factors):
        new_h, new_w = max(2, round(height * factor)), max(2, round(width * factor))
        channels = [
            np.asarray(Image.fromarray(batch[i, :, :, c]).resize((new_w, new_h), Image.Resampling.BILINEAR))
            for c in range(batch.shape[3])
        ]
        scaled = np.stack(channels, axis=-1)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        if new_h >= height and new_w >= width:
            out[i] = scaled[top : top + height, left : left + width]
        else:
            pad = ((max(-top, 0), max(height - new_h + top, 0)), (max(-left, 0), max(width - new_w + left, 0)), (0, 0))
            padded = np.pad(scaled, pad, mode="reflect")
            out[i] = padded[max(top, 0) : max(top, 0) + height, max(left, 0) : max(left, 0) + width]
    return out


OBJECTIVES = ("channel", "neuron")
"""What a picture can be optimised for: a channel's mean over its map, or its centre cell."""

NEURON_CONTRAST = 0.2
"""RMS distance from mid-grey of a neuron picture inside its receptive field (the norm constraint)."""


def default_objective(layer: LayerInfo, input_hw: tuple[int, int]) -> str:
    """``"neuron"`` for a layer whose cells see under a quarter of the image's shorter side
    (early layers: a channel's mean there is maximised by a flat colour), else ``"channel"``."""
    field = layer.receptive_field
    if not layer.is_spatial or field is None:
        return "channel"
    return "neuron" if max(field.size) * 4 < min(input_hw) else "channel"


def _centre_box(grads: Gradients, layer: str, seed_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    spec = grads.model.spec.input
    field = grads.model.layer(layer).receptive_field
    if field is None:
        raise ValueError(f"the neuron objective needs a receptive field; {layer!r} has none")
    return receptive_box(field, seed_shape[2] // 2, seed_shape[3] // 2, (spec.height, spec.width))


def _neuron_seed(seed_tensor: np.ndarray, chunk: Sequence[int]) -> np.ndarray:
    if seed_tensor.ndim != 4:
        raise ValueError("the neuron objective needs a layer with 2-D maps")
    centre = np.zeros_like(seed_tensor)
    centre[np.arange(len(chunk)), list(chunk), seed_tensor.shape[2] // 2, seed_tensor.shape[3] // 2] = 1.0
    return centre


def _hold_contrast(picture: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Scale each picture's departure from grey inside ``box`` down to :data:`NEURON_CONTRAST` RMS."""
    top, left, bottom, right = box
    inside = picture[:, top:bottom, left:right] - 0.5
    rms = np.sqrt((inside**2).mean(axis=(1, 2, 3), keepdims=True))
    picture[:, top:bottom, left:right] = 0.5 + inside * np.minimum(1.0, NEURON_CONTRAST / np.maximum(rms, 1e-12))
    return picture


def visualize(
    grads: Gradients,
    layer: str,
    channels: Sequence[int],
    steps: int = 128,
    learning_rate: float = 0.05,
    jitter: int = 8,
    scale_every: int = 16,
    decay: float = 0.5,
    seed: int = 0,
    preactivation: bool = True,
    objective: str = "channel",
    decorrelate: bool = True,
    batch_size: int = 32,
    progress: Callable[[float], None] | None = None,
) -> FeatureVisualization:
    """Optimise one picture per channel of ``layer`` (channels counted from 0).

    ``objective`` is ``"channel"`` (the channel's mean over its whole map, with Lucid's
    jitter, scaling and preconditioning) or ``"neuron"`` (the cell at the map's centre, by
    plain gradient ascent at a fixed contrast inside its receptive field; jitter is capped
    at a quarter of the field and nothing is rescaled, so the pattern stays where the cell
    looks). ``decay=0`` turns the Fourier preconditioning off and ``decorrelate=False`` the
    colour one. ``learning_rate`` is the step in the [0, 1] picture range after each
    gradient is normalised; ``progress`` is called with the fraction done (for a progress bar).
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be 'channel' or 'neuron', not {objective!r}")
    channels = tuple(int(c) for c in channels)
    grads.channel_seed(layer, channels, len(channels))  # checks the channels exist
    # Climb the value before the ReLU where there is one, as Lucid does.
    climb = f"{layer}{PREACT_SUFFIX}" if preactivation and f"{layer}{PREACT_SUFFIX}" in grads.targets else layer
    spec = grads.model.spec
    height, width, depth = spec.input.height, spec.input.width, spec.input.channels
    box = None
    if objective == "neuron":
        box = _centre_box(grads, layer, grads.channel_seed(climb, channels[:1], 1).shape)
        jitter = min(jitter, (box[2] - box[0]) // 4)
        decay, decorrelate, scale_every = 0.0, False, 0
    spectrum = _spectrum_weights(height, width, decay)
    scale, offset = _picture_affine(spec)
    flip = spec.reverses_channels
    images = np.empty((len(channels), height, width, depth), np.uint8)
    final = np.zeros(len(channels), np.float64)
    start = np.zeros(len(channels), np.float64)
    total = steps * len(channels)
    done = 0
    for first in range(0, len(channels), batch_size):
        chunk = channels[first : first + batch_size]
        # One generator per channel, so a channel's picture does not depend on the batch it ran in.
        rngs = [np.random.default_rng([seed, channel]) for channel in chunk]
        picture = np.stack([0.5 + 0.02 * rng.standard_normal((height, width, depth)) for rng in rngs])
        picture = picture.astype(np.float32)
        seed_tensor = grads.channel_seed(climb, chunk, len(chunk))
        if objective == "neuron":
            seed_tensor = _neuron_seed(seed_tensor, chunk)
        measure = _neuron_values if objective == "neuron" else _channel_means
        start[first : first + len(chunk)] = measure(grads, layer, _as_input(picture, scale, offset, flip), chunk)
        for step in range(steps):
            shifts = [tuple(int(v) for v in rng.integers(-jitter, jitter + 1, 2)) if jitter else (0, 0) for rng in rngs]
            shifted = np.stack([np.roll(p, shift, axis=(0, 1)) for p, shift in zip(picture, shifts, strict=True)])
            gradient = grads.run_scaled(_as_input(shifted, scale, offset, flip), climb, seed_tensor).gradients["input"]
            gradient = gradient * scale  # per unit of the 0..1 picture, in the graph's channel order
            if flip:
                gradient = gradient[..., ::-1]
            gradient = np.stack(
                [np.roll(g, (-dy, -dx), axis=(0, 1)) for g, (dy, dx) in zip(gradient, shifts, strict=True)]
            )
            step_dir = _precondition(gradient, spectrum if decay else None, decorrelate and depth == 3)
            area = step_dir if box is None else step_dir[:, box[0] : box[2], box[1] : box[3]]
            norm = np.sqrt((area**2).mean(axis=(1, 2, 3), keepdims=True)) + 1e-12
            picture = picture + learning_rate * step_dir / norm
            picture = np.clip(picture if box is None else _hold_contrast(picture, box), 0.0, 1.0)
            if scale_every and (step + 1) % scale_every == 0 and step + 1 < steps:
                picture = _rescale(picture, [float(rng.uniform(0.95, 1.05)) for rng in rngs])
            done += len(chunk)
            if progress is not None:
                progress(done / total)
        images[first : first + len(chunk)] = np.round(picture * 255).astype(np.uint8)
        final[first : first + len(chunk)] = measure(
            grads, layer, graph_input(spec, images[first : first + len(chunk)]), chunk
        )
    return FeatureVisualization(layer, channels, images, final, start, objective, box)


def _picture_affine(spec) -> tuple[np.ndarray | np.float32, np.ndarray | np.float32]:
    """Scale and offset from a 0..1 picture to the graph's input, per graph channel (or one for all)."""
    scales = np.asarray(spec.pixel_scales, np.float64) * 255.0
    offsets = np.asarray(spec.pixel_offsets, np.float64)
    if len(set(scales.tolist())) == 1 and len(set(offsets.tolist())) == 1:
        return np.float32(scales[0]), np.float32(offsets[0])
    return scales.astype(np.float32), offsets.astype(np.float32)


def _as_input(picture: np.ndarray, scale, offset, flip: bool) -> np.ndarray:
    """A 0..1 RGB picture as the graph's input (channels reversed first for a BGR model)."""
    return (picture[..., ::-1] if flip else picture) * scale + offset


def _channel_means(grads: Gradients, layer: str, inputs: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    model = grads.model
    maps = model.run_graph([layer], inputs.astype(np.float32))[0]
    picked = maps[np.arange(len(channels)), list(channels)]
    return picked.reshape(len(channels), -1).mean(axis=1)


def _neuron_values(grads: Gradients, layer: str, inputs: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    model = grads.model
    maps = model.run_graph([layer], inputs.astype(np.float32))[0]
    return maps[np.arange(len(channels)), list(channels), maps.shape[2] // 2, maps.shape[3] // 2].astype(np.float64)


def picture_activations(
    grads: Gradients, layer: str, channels: Sequence[int], images: np.ndarray, objective: str = "channel"
) -> np.ndarray:
    """What :class:`FeatureVisualization` reports as ``activations``, for other uint8 pictures
    ``images[i]`` of ``channels[i]``: the channel's mean, or its centre cell's value for ``"neuron"``."""
    measure = _neuron_values if objective == "neuron" else _channel_means
    return measure(grads, layer, graph_input(grads.model.spec, images), channels)


# -- cached pictures (the app's "what this channel looks for" and the layer grid) ------------------
APP_STEPS = 128
"""Steps the app and the cached pictures use (the same for one channel and the grid, so a
channel's picture is the same wherever it is shown)."""

PICTURE_METHOD = 1
"""Raise it when :func:`visualize` gives other pictures for the same arguments (a changed
regulariser, say): a stored atlas (:mod:`featapp.explain.atlas`) made before is then ignored."""

# visualize's arguments that say which channels and how to report, not what a picture looks like;
# the others' defaults are read once, here (a test may wrap visualize later).
_NOT_SETTINGS = frozenset({"grads", "layer", "channels", "steps", "seed", "objective", "batch_size", "progress"})
_VISUALIZE_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(visualize).parameters.items()
    if name not in _NOT_SETTINGS
}


def picture_settings(steps: int = APP_STEPS, seed: int = 0) -> dict[str, object]:
    """Everything a picture depends on besides the model and its layer's objective: the steps,
    the seed, :func:`visualize`'s other defaults (read from its signature, so a changed default
    changes this), :data:`NEURON_CONTRAST` and :data:`PICTURE_METHOD`. JSON-ready."""
    settings: dict[str, object] = {"steps": int(steps), "seed": int(seed), **_VISUALIZE_DEFAULTS}
    settings["neuron_contrast"] = NEURON_CONTRAST
    settings["method"] = PICTURE_METHOD
    return settings


def _resolve_objective(grads: Gradients, layer: str, objective: str | None) -> str:
    if objective is not None:
        return objective
    spec = grads.model.spec.input
    return default_objective(grads.model.layer(layer), (spec.height, spec.width))


def _cache_file(
    grads: Gradients, layer: str, what: str, steps: int, seed: int, cache_dir: Path | None, objective: str
) -> Path:
    folder = (cache_dir or default_cache_dir()) / "featurevis" / grads.model.sha256[:32]
    # The channel objective keeps the names pictures computed before the neuron objective had.
    kind = what if objective == "channel" else f"{what}-{objective}"
    return folder / f"{layer}-{kind}-steps{steps}-seed{seed}.npz"


def cache_file(
    grads: Gradients,
    layer: str,
    channel: int | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    cache_dir: Path | None = None,
    objective: str | None = None,
) -> Path:
    """Where :func:`layer_pictures` (``channel=None``) or :func:`channel_picture` keeps its
    pictures; a reader can watch the file's time stamp to notice new ones."""
    what = "all" if channel is None else f"channel{channel}"
    return _cache_file(grads, layer, what, steps, seed, cache_dir, _resolve_objective(grads, layer, objective))


_CACHED_KEYS = {"channels", "images", "activations", "start_activations"}
_OPTIONAL_KEYS = frozenset({"objective", "box"})  # written since the neuron objective


def _read_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The saved pictures, or ``None`` when there are none or they are damaged (computed
    again and overwritten)."""
    if not path.is_file():
        return None
    try:
        data = read_npz(path)
    except CacheFileError as err:
        log.warning("Computing the pictures again: %s", err)
        return None
    keys_ok = _CACHED_KEYS <= set(data) <= _CACHED_KEYS | _OPTIONAL_KEYS
    numbers_ok = all(np.isfinite(v).all() for v in data.values() if v.dtype.kind == "f")
    objective_ok = "objective" not in data or (data["objective"].ndim == 0 and str(data["objective"]) in OBJECTIVES)
    box_ok = "box" not in data or (data["box"].dtype.kind == "i" and data["box"].size in (0, 4))
    if not (keys_ok and numbers_ok and objective_ok and box_ok):
        log.warning(
            "Computing the pictures again: '%s' is damaged (wrong arrays, or values that are not numbers)", path
        )
        return None
    return data


def _write_cached(path: Path, result: FeatureVisualization) -> None:
    def write(handle) -> None:
        np.savez(
            handle,
            channels=np.asarray(result.channels),
            images=result.images,
            activations=result.activations,
            start_activations=result.start_activations,
            objective=np.asarray(result.objective),
            box=np.asarray(result.box if result.box is not None else (), dtype=np.int64),
        )

    atomic_write(path, write)


def _from_cached(layer: str, data: dict[str, np.ndarray]) -> FeatureVisualization:
    box = tuple(int(v) for v in data["box"]) if "box" in data and data["box"].size == 4 else None
    return FeatureVisualization(
        layer,
        tuple(int(c) for c in data["channels"]),
        data["images"],
        data["activations"],
        data["start_activations"],
        str(data["objective"]) if "objective" in data else "channel",
        box,  # type: ignore[arg-type]
    )


def cached_layer_pictures(
    grads: Gradients,
    layer: str,
    cache_dir: Path | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    objective: str | None = None,
) -> FeatureVisualization | None:
    """The whole layer's pictures if they were computed before (no computing here)."""
    data = _read_cached(cache_file(grads, layer, None, steps, seed, cache_dir, objective))
    return None if data is None else _from_cached(layer, data)


def layer_pictures(
    grads: Gradients,
    layer: str,
    cache_dir: Path | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    objective: str | None = None,
) -> FeatureVisualization:
    """Every channel's picture for ``layer``, computed once per model and kept on disk
    (in ``cache_dir``, default :func:`featapp.cache.default_cache_dir`, keyed by the
    model's sha256, the layer, the objective (default :func:`default_objective`), the steps
    and the seed)."""
    objective = _resolve_objective(grads, layer, objective)
    cached = cached_layer_pictures(grads, layer, cache_dir, steps, seed, objective)
    if cached is not None:
        return cached
    channels = range(grads.model.layer(layer).channels)
    path = cache_file(grads, layer, None, steps, seed, cache_dir, objective)
    check_writable(path.parent)  # before the minutes of work, not after
    result = visualize(grads, layer, channels, steps=steps, seed=seed, progress=progress, objective=objective)
    _write_cached(path, result)
    return result


def channel_picture(
    grads: Gradients,
    layer: str,
    channel: int,
    cache_dir: Path | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    compute: bool = True,
    objective: str | None = None,
) -> FeatureVisualization | None:
    """One channel's picture (0-based), from the layer's cached grid when there is one,
    else computed once and kept on disk like it (``compute=False``: ``None`` instead)."""
    objective = _resolve_objective(grads, layer, objective)
    whole = cached_layer_pictures(grads, layer, cache_dir, steps, seed, objective)
    if whole is not None and channel in whole.channels:
        return whole.of_channel(channel)
    path = cache_file(grads, layer, channel, steps, seed, cache_dir, objective)
    data = _read_cached(path)
    if data is not None:
        return _from_cached(layer, data)
    if not compute:
        return None
    check_writable(path.parent)  # before the work, not after
    result = visualize(grads, layer, [channel], steps=steps, seed=seed, objective=objective)
    _write_cached(path, result)
    return result
