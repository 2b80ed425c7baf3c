"""Run a converted model in ONNX Runtime and read every layer's output.

>>> model = load_model()                                   # doctest: +SKIP
>>> model.provider                                         # doctest: +SKIP
'cpu'
>>> maps = model.activations(["cat.1.jpg"])                # doctest: +SKIP
>>> maps["conv2d"].shape            # (images, channels, rows, cols)  # doctest: +SKIP
(1, 32, 148, 148)

Every spatial output is NCHW: ``maps[layer][i, c]`` is image ``i``'s 2-D map for
channel ``c``, oriented like the photo (row 0 at the top). Vector outputs (flatten,
dense) are ``(images, units)``. The layer geometry, class names and input size all come
from the file's metadata (:mod:`featapp.engine.metadata`), never from this code.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from PIL import Image

from featapp import settings
from featapp.engine.images import ImageError, ImageSource, InputSpec, prepare_image
from featapp.engine.metadata import METADATA_KEY, LayerInfo, MetadataError, ModelSpec, model_identity
from featapp.engine.priority import run_at_heavy_priority
from featapp.errors import FeatappError

__all__ = [
    "ModelError",
    "telemetry_off",
    "FeatureModel",
    "Prediction",
    "load_model",
    "cuda_usable",
    "graph_input",
    "input_gradient_in_pixels",
    "pixel_affine",
    "batch_run_slot",
    "run_heavy",
    "DEFAULT_MODEL_PATH",
    "models_dir",
    "MODEL_ENV",
    "PROVIDER_ENV",
]

# The settings live in featapp.settings; these names stay importable from here.
MODEL_ENV = settings.MODEL_ENV
PROVIDER_ENV = settings.PROVIDER_ENV
THREADS_ENV = settings.THREADS_ENV
REPO_MODELS_DIR = settings.REPO_MODELS_DIR
INSTALLED_MODELS_DIR = settings.INSTALLED_MODELS_DIR
models_dir = settings.models_dir

DEFAULT_MODEL_PATH = models_dir() / "cats_dogs_small.onnx"

_REBUILD_HINT = (
    "Use the committed models/cats_dogs_small.onnx, or convert your model (Keras, or an ONNX file from PyTorch "
    "or any tool) with 'python -m convert export MODEL --out MODEL_featapp.onnx' (see docs/convert.md)."
)


def convert_command(path: Path) -> str:
    """The one command that converts ``path`` for featapp (the app and the CLI both say it).

    >>> convert_command(Path("models/resnet18.onnx"))
    'python -m convert export models/resnet18.onnx --out models/resnet18_featapp.onnx'
    """
    out = path.with_name(f"{path.stem}_featapp.onnx")
    return f"python -m convert export {path.as_posix()} --out {out.as_posix()}"


class ModelError(FeatappError, RuntimeError):
    """A model file that is missing, is not a converted featapp model, or cannot run."""


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for a batch: ``probabilities[i, k]`` is p(class k | image i)."""

    probabilities: np.ndarray
    class_names: tuple[str, ...]

    @property
    def indices(self) -> np.ndarray:
        """The most likely class of each image."""
        return self.probabilities.argmax(axis=1)

    @property
    def labels(self) -> list[str]:
        """The most likely class name of each image."""
        return [self.class_names[i] for i in self.indices]

    @property
    def confidences(self) -> np.ndarray:
        """The probability of each image's most likely class."""
        return self.probabilities.max(axis=1)


def _load_cuda_driver() -> ctypes.CDLL | None:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_usable() -> bool:
    """True when ONNX Runtime has its CUDA provider *and* a GPU answers the driver.

    Asking the driver directly, before ONNX Runtime tries CUDA, keeps a machine without
    a GPU free of CUDA library errors in its log.
    """
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    driver = _load_cuda_driver()
    if driver is None:
        return False
    try:
        if driver.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        return driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (AttributeError, OSError):
        return False


CUDA_INSTALL_HINT = "pip install 'featapp[cuda]' or -r requirements-cuda.txt installs them from PyPI"


def _preload_cuda_libraries(ort) -> str:
    """Load CUDA and cuDNN from pip's ``nvidia-*`` packages (``onnxruntime-gpu[cuda,cudnn]``)
    before the CUDA session starts, so a GPU machine without a system CUDA still runs on
    the GPU. Returns "" when done (or not needed), else the reason it failed; a failure is
    harmless here (the system's CUDA may still be found), and the provider check reports it.

    Called only once a GPU answers the driver (:func:`cuda_usable`): the libraries are
    about 2 GB, and loading them on a machine with no GPU would be for nothing.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:  # onnxruntime before 1.21
        return ""
    try:
        preload()
    except Exception as err:  # noqa: BLE001 - any failure only means CUDA may not start
        return " ".join(str(err).split())[:200] or type(err).__name__
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


T = TypeVar("T")
_BATCH_RUNS = threading.BoundedSemaphore(1)
RETURN_DELAY_S = 2.0
"""Seconds without a batch or gradient run before the memory they freed is given back to the system."""


class _FreedMemory:
    """Gives the memory that batch and gradient runs used back to the system, once they pause.

    Two places keep it. The batch sessions' arenas (:meth:`FeatureModel._session_for`): with the
    arena a batch run reuses the last one's memory instead of fetching it from the system again,
    which made occlusion and scans much slower without it (bench/results/arena_memory.md), so
    the arena stays on while such runs follow each other and is shrunk once they stop. And the C
    library: glibc keeps freed blocks in the process for reuse (the gradient sessions, which go
    without an arena, and everything else); ``malloc_trim`` returns them. Both run
    :data:`RETURN_DELAY_S` after the last run, in a thread of its own (ONNX Runtime and
    ``ctypes`` let other threads run meanwhile), not after each run: a channel's picture is 128
    runs, and releasing between them would make each run fetch its memory again."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.returned = 0  # how many times memory was given back (for the tests)
        self._due: float | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._trim = _malloc_trim()
        self._arenas: weakref.WeakSet[FeatureModel] = weakref.WeakSet()

    def shrink_later(self, model: FeatureModel) -> None:
        """Shrink ``model``'s batch session's arena whenever runs pause."""
        self._arenas.add(model)

    def ran(self) -> None:
        """A batch or gradient run just ended: give the memory back once runs pause."""
        with self._changed:
            self._due = time.monotonic() + self.delay_s
            if self._thread is None:
                self._thread = threading.Thread(target=self._wait_and_return, name="featapp-freed-memory", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _wait_and_return(self) -> None:
        while True:
            with self._changed:
                while self._due is None or time.monotonic() < self._due:
                    self._changed.wait(None if self._due is None else self._due - time.monotonic())
                self._due = None
            for model in list(self._arenas):
                model._shrink_batch_arena()
            if self._trim is not None:
                self._trim(0)
            self.returned += 1


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


FREED_MEMORY = _FreedMemory(RETURN_DELAY_S)


@contextmanager
def batch_run_slot() -> Iterator[None]:
    """Hold the process's one slot for a run of several images or a gradient run.

    Such a run needs much more working memory than a single image's, for a moment (occlusion's
    copies, SmoothGrad's noisy copies, a scan's batch); a class whose heavy clicks all ran at
    once would add those peaks up. One at a time, each waiting only for the run in progress
    (not for a whole computation), keeps the process's peak at one run's, and leaves the other
    core to the single-image runs every click makes, which never wait here. Once such runs
    pause, the memory they freed goes back to the system (:class:`_FreedMemory`)."""
    try:
        with _BATCH_RUNS:
            yield
    finally:
        FREED_MEMORY.ran()


def run_heavy(work: Callable[[], T]) -> T:
    """Run ``work`` (one ONNX Runtime run of several images or of a gradient graph) in the
    process's one slot for such runs (:func:`batch_run_slot`), on the heavy-run thread at a
    lower CPU priority than clicks (:mod:`featapp.engine.priority`)."""
    with batch_run_slot():
        return run_at_heavy_priority(work)


class FeatureModel:
    """A converted model in an ONNX Runtime session. Build it with :func:`load_model`.

    Runs of one image (every click in the app) use a session with ONNX Runtime's memory arena,
    which keeps the working memory of its largest run and reuses it. Runs of several images
    (occlusion, the gallery, scans) use a second session, made on first use, whose arena is
    shrunk once such runs pause (:class:`_FreedMemory`): kept, it held a batch's peak for the
    process's life (bench/results/arena_memory.md)."""

    def __init__(self, path: Path, spec: ModelSpec, session, provider_note: str = "") -> None:
        self.path = path
        self.spec = spec
        self._session = session
        self._batch_session = None
        self._batch_session_lock = threading.Lock()
        self.provider_note = provider_note
        _check_graph_matches(path, spec, session)
        self._output_names = [layer.name for layer in spec.layers]
        self._output_shapes = {layer.name: _nchw_shape(layer) for layer in spec.layers}
        self._scale, self._offset = pixel_affine(spec)

    # -- what the model is -------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        """Input height, width and channels (1 = grayscale, 3 = RGB)."""
        return self.spec.input

    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        """Every layer in order: name, kind, output shape, parameters, receptive field."""
        return self.spec.layers

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.spec.layers]

    def layer(self, name: str) -> LayerInfo:
        """The layer called ``name``; :class:`KeyError` names the layers that exist."""
        for layer in self.spec.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; the layers are: {', '.join(self.layer_names)}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def has_classifier(self) -> bool:
        """False for models without a classifier head, such as training snapshots."""
        return self.spec.has_classifier

    @property
    def provider(self) -> str:
        """The execution provider that really runs: ``"cuda"`` or ``"cpu"``."""
        return "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime's own list of the providers in this session, in priority order."""
        return list(self._session.get_providers())

    @cached_property
    def identity(self) -> dict[str, str]:
        """:func:`featapp.engine.metadata.model_identity` of this model's metadata, computed once:
        the training strip asks for it on every rerun of the Feature map."""
        return model_identity(self.spec)

    @cached_property
    def sha256(self) -> str:
        """Hash of the ONNX file: the key for anything cached about this model."""
        return _sha256(self.path)

    def __repr__(self) -> str:
        return (
            f"FeatureModel('{self.path.name}', input={self.input_spec.height}x{self.input_spec.width}"
            f"x{self.input_spec.channels}, layers={len(self.layers)}, provider={self.provider!r})"
        )

    # -- running it -------------------------------------------------------------------
    def prepare(self, images: np.ndarray | Sequence[ImageSource | np.ndarray] | ImageSource) -> np.ndarray:
        """Images as the uint8 batch ``(N, H, W, C)`` this model takes.

        Accepts such an array already (or one image ``(H, W, C)``), or a sequence of
        anything :func:`prepare_image` accepts (Pillow images, paths, bytes, file
        objects) or of prepared ``(H, W, C)`` arrays. A single image is a batch of one.
        Raises :class:`~featapp.engine.images.ImageError` (a ``ValueError``) for anything else.

        >>> model.prepare(["cat.1.jpg", "dog.1.jpg"]).shape     # doctest: +SKIP
        (2, 150, 150, 3)
        """
        if isinstance(images, np.ndarray):
            if images.ndim == 3:
                images = images[np.newaxis]
            self._check_array(images, "(N, {h}, {w}, {c}) or one image ({h}, {w}, {c})")
            return images
        # One source on its own (prepare_image accepts or rejects it), else a sequence of them.
        items: Iterable[Any] = (
            [images] if _is_single_source(images) else cast("Sequence[ImageSource | np.ndarray]", images)
        )
        arrays = []
        for item in items:
            if isinstance(item, np.ndarray):
                self._check_array(item[np.newaxis] if item.ndim == 3 else item, "({h}, {w}, {c}) per image")
                arrays.append(item)
            else:
                arrays.append(prepare_image(item, self))
        if not arrays:
            spec = self.input_spec
            return np.zeros((0, spec.height, spec.width, spec.channels), dtype=np.uint8)
        return np.stack(arrays)

    def _check_array(self, batch: np.ndarray, wanted: str) -> None:
        spec = self.input_spec
        expected = (spec.height, spec.width, spec.channels)
        wanted = wanted.format(h=spec.height, w=spec.width, c=spec.channels)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            hint = ""
            if batch.ndim == 4 and batch.shape[1] == spec.channels and batch.shape[2:] == expected[:2]:
                hint = " It looks channels-first (NCHW); images are channels-last."
            raise ImageError(
                f"Expected uint8 images of shape {wanted} for this model, got an array of shape "
                f"{tuple(batch.shape)}.{hint} Pass photos (paths, bytes, Pillow images) to resize them, "
                "or use featapp.prepare_image."
            )
        if batch.dtype != np.uint8:
            hint = " Scaled 0..1 floats? Use (array * 255).round().astype(np.uint8)." if batch.dtype.kind == "f" else ""
            raise ImageError(f"Expected uint8 pixels (0..255), got {batch.dtype}.{hint}")

    def _scaled(self, batch: np.ndarray) -> np.ndarray:
        """uint8 pixels to the float32 input the graph takes (:func:`graph_input`)."""
        return graph_input(self.spec, batch, (self._scale, self._offset))

    def _select(self, layers: Sequence[str] | None) -> list[str]:
        if layers is None:
            return list(self._output_names)
        if isinstance(layers, str):
            layers = [layers]
        wanted = {self.layer(name).name for name in layers}
        return [name for name in self._output_names if name in wanted]

    def activations(
        self,
        images: np.ndarray | Sequence[ImageSource] | ImageSource,
        layers: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> OrderedDict[str, np.ndarray]:
        """Every layer's output (or just ``layers``'), in model order, as float32.

        Maps are ``(N, channels, rows, cols)``; vectors ``(N, units)``. Images run in
        chunks of ``batch_size``: ONNX Runtime writes each chunk's outputs straight into
        the result arrays, so the extra memory is one chunk's working space, and the
        result costs no copy.

        >>> acts = model.activations(np.zeros((2, 150, 150, 3), np.uint8))  # doctest: +SKIP
        >>> list(acts)[:2], acts["conv2d"].shape                            # doctest: +SKIP
        (['conv2d', 'max_pooling2d'], (2, 32, 148, 148))
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        batch = self.prepare(images)
        names = self._select(layers)
        count = len(batch)
        feed_name = self.spec.input_name
        if count <= batch_size:
            # One run: ONNX Runtime's own output arrays are the result.
            if count == 0:
                return OrderedDict((name, np.zeros((0, *self._output_shapes[name]), np.float32)) for name in names)
            outputs = self.run_graph(names, self._scaled(batch))
            return OrderedDict(zip(names, outputs, strict=True))
        result = OrderedDict((name, np.empty((count, *self._output_shapes[name]), np.float32)) for name in names)
        session = self._session_for(batch_size)
        binding = session.io_binding()
        for start in range(0, count, batch_size):
            chunk = self._scaled(batch[start : start + batch_size])
            binding.bind_cpu_input(feed_name, chunk)
            for name in names:
                target = result[name][start : start + len(chunk)]  # contiguous: slices of axis 0
                binding.bind_output(name, "cpu", 0, np.float32, list(target.shape), target.ctypes.data)
            if batch_size > 1:
                run_heavy(lambda: session.run_with_iobinding(binding))  # noqa: B023 - called at once
            else:
                session.run_with_iobinding(binding)
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
        return result

    def run_graph(self, names: Sequence[str], inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs ``names`` for float32 ``inputs`` already scaled (:meth:`_scaled`),
        on the session for their batch size (see the class's docstring)."""
        feed = {self.spec.input_name: inputs}
        if len(inputs) <= 1:
            return self._session.run(list(names), feed)
        session = self._session_for(len(inputs))
        return run_heavy(lambda: session.run(list(names), feed))

    def _session_for(self, images: int):
        if images <= 1 or self.provider == "cuda":
            return self._session  # on a GPU the CPU arena holds little; one session keeps GPU memory down
        with self._batch_session_lock:
            if self._batch_session is None:
                import onnxruntime as ort

                # Made on the heavy-run thread, so ONNX Runtime's threads for it inherit that
                # thread's lower priority (featapp.engine.priority).
                self._batch_session = run_at_heavy_priority(
                    lambda: ort.InferenceSession(
                        str(self.path), sess_options=_session_options(quiet=True), providers=self.providers
                    )
                )
                FREED_MEMORY.shrink_later(self)
            return self._batch_session

    def _shrink_batch_arena(self) -> None:
        """Give the batch session's arena back to the system. ONNX Runtime shrinks an arena only
        at the end of a run that asks for it, so this is a run of one blank image. Skipped while
        a batch run holds the slot (its end schedules another try)."""
        session = self._batch_session
        if session is None or not _BATCH_RUNS.acquire(blocking=False):
            return
        try:
            import onnxruntime as ort

            shrink = ort.RunOptions()
            shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            spec = self.input_spec
            blank = np.zeros((1, spec.height, spec.width, spec.channels), np.float32)
            run_at_heavy_priority(lambda: session.run(self._output_names[:1], {self.spec.input_name: blank}, shrink))
        finally:
            _BATCH_RUNS.release()

    def predict(self, images: np.ndarray | Sequence[ImageSource] | ImageSource, batch_size: int = 64) -> Prediction:
        """Class probabilities and labels.

        >>> model.predict(["dog.jpg"]).labels                  # doctest: +SKIP
        ['dog']

        Raises :class:`ModelError` for a model without a classifier (a trunk snapshot).
        """
        if not self.has_classifier:
            raise ModelError(
                f"'{self.path.name}' has no classifier (its last layer is {self.layers[-1].name}, "
                f"{self.layers[-1].shape_text}); it can show feature maps but cannot predict a class."
            )
        last = self.layers[-1].name
        scores = self.activations(images, layers=[last], batch_size=batch_size)[last]
        if self.spec.output_activation == "sigmoid" and scores.shape[1] == 1:
            positive = scores[:, 0].astype(np.float64)
            probabilities = np.stack([1.0 - positive, positive], axis=1)
        else:
            probabilities = scores.astype(np.float64)
        names = (
            self.class_names
            if len(self.class_names) == probabilities.shape[1]
            else tuple(f"class {i}" for i in range(probabilities.shape[1]))
        )
        return Prediction(probabilities=probabilities, class_names=names)


def pixel_affine(spec: ModelSpec) -> tuple[np.float32 | np.ndarray, np.float32 | np.ndarray]:
    """The metadata's scaling as NumPy values: one scale and offset for all channels when
    they agree (the common case, kept scalar so the multiply stays one pass), else per channel."""
    scales, offsets = spec.pixel_scales, spec.pixel_offsets
    if len(set(scales)) == 1 and len(set(offsets)) == 1:
        return np.float32(scales[0]), np.float32(offsets[0])
    return np.asarray(scales, np.float32), np.asarray(offsets, np.float32)


def graph_input(
    spec: ModelSpec,
    pixels: np.ndarray,
    affine: tuple[np.float32 | np.ndarray, np.float32 | np.ndarray] | None = None,
) -> np.ndarray:
    """Pixels (uint8 or float, 0..255, RGB, NHWC) as the float32 input the graph takes:
    channels reversed for a BGR model, then ``pixel * scale + offset`` per channel
    (:attr:`ModelSpec.pixel_scales`). One pass that casts and multiplies in float32.

    >>> spec = ModelSpec(InputSpec(1, 1, 3), (), input_scale=1.0, input_mean=(1.0, 2.0, 3.0), channel_order="BGR")
    >>> graph_input(spec, np.array([[[[10, 20, 30]]]], np.uint8)).ravel().tolist()
    [29.0, 18.0, 7.0]
    """
    scale, offset = affine or pixel_affine(spec)
    if spec.reverses_channels:
        pixels = pixels[..., ::-1]
    scaled = np.multiply(pixels, scale, dtype=np.float32)
    if np.any(offset):
        scaled += offset
    return scaled


def input_gradient_in_pixels(spec: ModelSpec, gradient: np.ndarray) -> np.ndarray:
    """A gradient with respect to the graph's input as one per pixel value (0..255, RGB):
    the chain rule through :func:`graph_input`."""
    scale, _ = pixel_affine(spec)
    per_pixel = gradient * scale
    return per_pixel[..., ::-1] if spec.reverses_channels else per_pixel


def _is_single_source(images: object) -> bool:
    """True for one image given on its own rather than in a sequence. File objects are
    iterable (by lines), so they must be caught before the sequence test."""
    return (
        isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image))
        or hasattr(images, "read")
        or not isinstance(images, Iterable)
    )


def _nchw_shape(layer: LayerInfo) -> tuple[int, ...]:
    """A layer's output shape per image as featapp returns it: (C, H, W) or (units,)."""
    if layer.is_spatial:
        rows, cols, channels = layer.output_shape
        return (channels, rows, cols)
    return tuple(layer.output_shape)


def _check_graph_matches(path: Path, spec: ModelSpec, session) -> None:
    """The metadata must describe this graph: one float input of the declared size, and
    a float output per layer with the declared shape (batch dimension free)."""
    mismatch = f"The file and its metadata do not match. {_REBUILD_HINT}"
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != spec.input_name:
        raise ModelError(f"'{path.name}' must have one input called '{spec.input_name}'. {mismatch}")
    declared = [d if isinstance(d, int) else None for d in inputs[0].shape]
    expected = [spec.input.height, spec.input.width, spec.input.channels]
    if len(declared) != 4 or declared[1:] != expected or inputs[0].type != "tensor(float)":
        raise ModelError(
            f"'{path.name}' says its input is {spec.input.height}x{spec.input.width}x{spec.input.channels} float, "
            f"but its graph takes {inputs[0].type} {inputs[0].shape}. {mismatch}"
        )
    outputs = {output.name: output for output in session.get_outputs()}
    missing = [layer.name for layer in spec.layers if layer.name not in outputs]
    if missing:
        raise ModelError(
            f"'{path.name}' says it has layers {', '.join(missing)}, but its graph has no such outputs. {mismatch}"
        )
    for layer in spec.layers:
        output = outputs[layer.name]
        graph_shape = [d if isinstance(d, int) else None for d in output.shape]
        wanted = _nchw_shape(layer)
        shape_ok = len(graph_shape) == 1 + len(wanted) and all(
            got is None or got == want for got, want in zip(graph_shape[1:], wanted, strict=True)
        )
        if output.type != "tensor(float)" or not shape_ok:
            raise ModelError(
                f"'{path.name}': layer '{layer.name}' should give float maps of {(None, *wanted)}, but the graph "
                f"gives {output.type} {output.shape}. {mismatch}"
            )


def _read_spec(session, path: Path) -> ModelSpec:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ModelError(
            f"'{path.name}' is an ONNX model, but not one converted for featapp (it has no '{METADATA_KEY}' "
            f"metadata). Convert it with: {convert_command(path)} (for a PyTorch model add its input's "
            "--mean and --std, and --class-names; see docs/convert.md, From PyTorch)."
        )
    try:
        return ModelSpec.from_json(props[METADATA_KEY])
    except MetadataError as err:
        raise ModelError(f"'{path.name}': {err}") from None


def telemetry_off() -> bool:
    """Ask ONNX Runtime not to record or send usage events: a school's server sends nothing,
    as docs/deployment.md promises. ``False`` for a build without the switch (such builds
    have no telemetry to turn off)."""
    import onnxruntime as ort

    switch = getattr(ort, "disable_telemetry_events", None)
    if switch is None:
        return False
    switch()
    return True


def _session_options(quiet: bool, arena: bool = True):
    """``arena``: ONNX Runtime's CPU memory arena, which keeps the working memory of a
    session's largest run and reuses it. Runs were much slower without it on 2 cores
    (bench/results/engine.md, bench/results/arena_memory.md). Gradient sessions go without:
    there it kept each heavy view's peak for the process's life, and they were no slower
    without it (bench/results/arena_memory.md)."""
    import onnxruntime as ort

    telemetry_off()  # before every session, so no path into ONNX Runtime misses it
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    threads = settings.threads_text()
    if threads:
        if not threads.isdigit():
            raise ModelError(
                f"{THREADS_ENV} must be a whole number of threads (0 = ONNX Runtime decides), not {threads!r}."
            )
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3 if quiet else 2
    return options


def load_model(path: str | os.PathLike | None = None, provider: str = "auto") -> FeatureModel:
    """Load a converted model into ONNX Runtime.

    ``path`` defaults to ``$FEATAPP_MODEL``, then to the committed
    ``models/cats_dogs_small.onnx``. ``provider`` is ``"auto"`` (CUDA when a GPU is
    really usable, else CPU), ``"cpu"`` or ``"cuda"``; ``$FEATAPP_PROVIDER`` overrides
    it. Check :attr:`FeatureModel.provider` for the one that runs.

    >>> model = load_model(provider="cpu")                      # doctest: +SKIP
    >>> model.input_spec, model.class_names                     # doctest: +SKIP
    (InputSpec(height=150, width=150, channels=3), ('cat', 'dog'))
    """
    import onnxruntime as ort

    if path is None or str(path) == "":
        path = settings.model_path()
    path = Path(path).expanduser()
    provider = settings.provider(provider)
    if not isinstance(provider, str) or provider.lower() not in ("auto", "cpu", "cuda"):
        source = f" (from {PROVIDER_ENV})" if settings.configured(PROVIDER_ENV) else ""
        raise ModelError(f"Unknown provider {provider!r}{source}: use auto, cpu or cuda.")
    provider = provider.lower()
    if not path.is_file():
        raise ModelError(f"No model file at '{path}'. {_REBUILD_HINT}")
    note = ""
    use_cuda = False
    if provider == "cuda":
        use_cuda = cuda_usable()
        if not use_cuda:
            note = "CUDA was asked for, but no usable GPU was found; running on the CPU."
    elif provider == "auto":
        use_cuda = cuda_usable()
    preload_problem = _preload_cuda_libraries(ort) if use_cuda else ""
    providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(
            str(path), sess_options=_session_options(quiet=not use_cuda), providers=providers
        )
    except Exception as err:  # noqa: BLE001 - ORT raises several types for a file it cannot load
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"'{path.name}' is not a model ONNX Runtime can load ({first_line[:200]}). {_REBUILD_HINT}"
        ) from None
    spec = _read_spec(session, path)
    if use_cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        note = (
            "A GPU was found but ONNX Runtime's CUDA provider did not start (CUDA 13 or cuDNN 9 missing?"
            + (f" Loading them from pip's nvidia packages failed: {preload_problem}." if preload_problem else "")
            + f" {CUDA_INSTALL_HINT}); running on the CPU."
        )
    return FeatureModel(path, spec, session, provider_note=note)
