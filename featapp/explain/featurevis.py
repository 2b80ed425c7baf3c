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

Many channels run as one batch (one image per channel). The same ``seed`` gives the same
pictures. Nothing here is written for a particular model.

>>> pictures = visualize(featapp.load_gradients(model), "conv2d_2", [0, 1], steps=128)  # doctest: +SKIP
>>> pictures.images.shape, pictures.images.dtype                                       # doctest: +SKIP
((2, 150, 150, 3), dtype('uint8'))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from featapp.cache import CacheFileError, atomic_write, check_writable, default_cache_dir, read_npz
from featapp.explain.backward import PREACT_SUFFIX
from featapp.explain.gradients import Gradients

log = logging.getLogger(__name__)

__all__ = [
    "APP_STEPS",
    "FeatureVisualization",
    "cache_file",
    "cached_layer_pictures",
    "channel_picture",
    "layer_pictures",
    "visualize",
]

# Lucid's colour correlation of ImageNet photos (the square root of the RGB covariance),
# used to decorrelate colour: steps move along natural colour directions.
_COLOR_CORRELATION = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR_CORRELATION /= np.linalg.norm(_COLOR_CORRELATION, axis=0).max()


@dataclass(frozen=True)
class FeatureVisualization:
    """``images[i]``: the optimised picture for ``channels[i]`` (0-based), uint8 (H, W, C);
    ``activations[i]``: the channel's mean activation on it; ``start_activations``: on the start noise."""

    layer: str
    channels: tuple[int, ...]
    images: np.ndarray
    activations: np.ndarray
    start_activations: np.ndarray

    def of_channel(self, channel: int) -> FeatureVisualization:
        """The part for one of :attr:`channels` (0-based); raises ``ValueError`` for another."""
        i = self.channels.index(channel)
        return FeatureVisualization(
            self.layer,
            (channel,),
            self.images[i : i + 1],
            self.activations[i : i + 1],
            self.start_activations[i : i + 1],
        )


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

    ``objective`` is ``"channel"`` (the channel's mean over its whole map, the default)
    or ``"neuron"`` (the one cell at the map's centre: for the first convolution its best
    input is the filter's own pattern, in the cell's receptive field).
    ``decay=0`` turns the Fourier preconditioning off and ``decorrelate=False`` the colour one
    (plain gradient ascent). ``learning_rate`` is the step in the [0, 1] picture range after each gradient is
    normalised; ``progress`` is called with the fraction done (for a progress bar).
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    channels = tuple(int(c) for c in channels)
    grads.channel_seed(layer, channels, len(channels))  # checks the channels exist
    # Climb the value before the ReLU where there is one, as Lucid does.
    climb = f"{layer}{PREACT_SUFFIX}" if preactivation and f"{layer}{PREACT_SUFFIX}" in grads.targets else layer
    spec = grads.model.spec
    height, width, depth = spec.input.height, spec.input.width, spec.input.channels
    spectrum = _spectrum_weights(height, width, decay)
    scale = np.float32(255.0 * spec.input_scale)
    offset = np.float32(spec.input_offset)
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
            if seed_tensor.ndim != 4:
                raise ValueError(f"the neuron objective needs a layer with 2-D maps; {layer!r} has none")
            centre = np.zeros_like(seed_tensor)
            rows, cols = seed_tensor.shape[2] // 2, seed_tensor.shape[3] // 2
            centre[np.arange(len(chunk)), list(chunk), rows, cols] = 1.0
            seed_tensor = centre
        elif objective != "channel":
            raise ValueError(f"objective must be 'channel' or 'neuron', not {objective!r}")
        start[first : first + len(chunk)] = _channel_means(grads, layer, picture * scale + offset, chunk)
        for step in range(steps):
            shifts = [tuple(int(v) for v in rng.integers(-jitter, jitter + 1, 2)) if jitter else (0, 0) for rng in rngs]
            shifted = np.stack([np.roll(p, shift, axis=(0, 1)) for p, shift in zip(picture, shifts, strict=True)])
            gradient = grads.run_scaled(shifted * scale + offset, climb, seed_tensor).gradients["input"] * scale
            gradient = np.stack(
                [np.roll(g, (-dy, -dx), axis=(0, 1)) for g, (dy, dx) in zip(gradient, shifts, strict=True)]
            )
            step_dir = _precondition(gradient, spectrum if decay else None, decorrelate and depth == 3)
            norm = np.sqrt((step_dir**2).mean(axis=(1, 2, 3), keepdims=True)) + 1e-12
            picture = np.clip(picture + learning_rate * step_dir / norm, 0.0, 1.0)
            if scale_every and (step + 1) % scale_every == 0 and step + 1 < steps:
                picture = _rescale(picture, [float(rng.uniform(0.95, 1.05)) for rng in rngs])
            done += len(chunk)
            if progress is not None:
                progress(done / total)
        images[first : first + len(chunk)] = np.round(picture * 255).astype(np.uint8)
        final[first : first + len(chunk)] = _channel_means(
            grads, layer, images[first : first + len(chunk)].astype(np.float32) * spec.input_scale + offset, chunk
        )
    return FeatureVisualization(layer, channels, images, final, start)


def _channel_means(grads: Gradients, layer: str, inputs: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    model = grads.model
    maps = model._session.run([layer], {model.spec.input_name: inputs.astype(np.float32)})[0]
    picked = maps[np.arange(len(channels)), list(channels)]
    return picked.reshape(len(channels), -1).mean(axis=1)


# -- cached pictures (the app's "what this channel looks for" and the layer grid) ------------------
APP_STEPS = 128
"""Steps the app and the cached pictures use (the same for one channel and the grid, so a
channel's picture is the same wherever it is shown)."""


def _cache_file(grads: Gradients, layer: str, what: str, steps: int, seed: int, cache_dir: Path | None) -> Path:
    folder = (cache_dir or default_cache_dir()) / "featurevis" / grads.model.sha256[:32]
    return folder / f"{layer}-{what}-steps{steps}-seed{seed}.npz"


def cache_file(
    grads: Gradients,
    layer: str,
    channel: int | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Path:
    """Where :func:`layer_pictures` (``channel=None``) or :func:`channel_picture` keeps its
    pictures; a reader can watch the file's time stamp to notice new ones."""
    return _cache_file(grads, layer, "all" if channel is None else f"channel{channel}", steps, seed, cache_dir)


_CACHED_KEYS = {"channels", "images", "activations", "start_activations"}


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
    if set(data) != _CACHED_KEYS or not all(np.isfinite(v).all() for v in data.values() if v.dtype.kind == "f"):
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
        )

    atomic_write(path, write)


def _from_cached(layer: str, data: dict[str, np.ndarray]) -> FeatureVisualization:
    return FeatureVisualization(
        layer,
        tuple(int(c) for c in data["channels"]),
        data["images"],
        data["activations"],
        data["start_activations"],
    )


def cached_layer_pictures(
    grads: Gradients, layer: str, cache_dir: Path | None = None, steps: int = APP_STEPS, seed: int = 0
) -> FeatureVisualization | None:
    """The whole layer's pictures if they were computed before (no computing here)."""
    data = _read_cached(_cache_file(grads, layer, "all", steps, seed, cache_dir))
    return None if data is None else _from_cached(layer, data)


def layer_pictures(
    grads: Gradients,
    layer: str,
    cache_dir: Path | None = None,
    steps: int = APP_STEPS,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> FeatureVisualization:
    """Every channel's picture for ``layer``, computed once per model and kept on disk
    (in ``cache_dir``, default :func:`featapp.cache.default_cache_dir`, keyed by the
    model's sha256, the layer, the steps and the seed)."""
    cached = cached_layer_pictures(grads, layer, cache_dir, steps, seed)
    if cached is not None:
        return cached
    channels = range(grads.model.layer(layer).channels)
    path = _cache_file(grads, layer, "all", steps, seed, cache_dir)
    check_writable(path.parent)  # before the minutes of work, not after
    result = visualize(grads, layer, channels, steps=steps, seed=seed, progress=progress)
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
) -> FeatureVisualization | None:
    """One channel's picture (0-based), from the layer's cached grid when there is one,
    else computed once and kept on disk like it (``compute=False``: ``None`` instead)."""
    whole = cached_layer_pictures(grads, layer, cache_dir, steps, seed)
    if whole is not None and channel in whole.channels:
        return whole.of_channel(channel)
    path = _cache_file(grads, layer, f"channel{channel}", steps, seed, cache_dir)
    data = _read_cached(path)
    if data is not None:
        return _from_cached(layer, data)
    if not compute:
        return None
    check_writable(path.parent)  # before the work, not after
    result = visualize(grads, layer, [channel], steps=steps, seed=seed)
    _write_cached(path, result)
    return result
