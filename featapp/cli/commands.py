"""What each command does: ``cmd_<name>(args)`` returns the exit status (see :mod:`featapp.cli`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from featapp.engine.activation_file import LAYOUT, META_KEYS, write_activations
from featapp.errors import FeatappError

__all__ = ["ACTIVATION_META_KEYS", "TextProgress", "UserError"]

ACTIVATION_META_KEYS = META_KEYS
"""Arrays in an ``activations`` file besides one array per layer (see ``activations --help``)."""

_ACTIVATIONS_LAYOUT = LAYOUT

SALIENCY_ALPHA = 0.55
"""How much of ``saliency``'s picture is the map's colour (the rest is the photo)."""
SCAN_WAITING = "Another featapp is scanning this split with this model; waiting for it, then using its result."


class UserError(FeatappError):
    """A problem the user can fix; printed as one line."""


class TextProgress:
    """A plain-text progress bar for ``progress(done, total)`` callbacks.

    On a terminal it redraws one line; otherwise (a log, a pipe) it prints a line at
    every 10%, so logs stay short.

    >>> bar = TextProgress("scanning", stream=sys.stdout, interactive=False)
    >>> bar(5, 10)
    scanning: 5/10 images (50%)
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        unit: str = "images",
        divisor: float = 1,
    ) -> None:
        self.label = label
        self.unit = unit
        self.divisor = divisor
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.started = time.perf_counter()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.interactive:
            filled = int(round(30 * fraction))
            eta = (total - done) / rate if rate > 0 else 0.0
            line = (
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self._amount(done)}/{self._amount(total)} "
                f"{fraction:4.0%}  {rate / self.divisor:5.1f} {self.unit}/s  {_duration(eta)} left "
            )
            self.stream.write(line)
            if done >= total:
                self.stream.write("\n")
        else:
            decile = int(fraction * 10)
            if decile == self._last_decile and done < total:
                return
            self._last_decile = decile
            self.stream.write(
                f"{self.label}: {self._amount(done)}/{self._amount(total)} {self.unit} ({fraction:.0%})\n"
            )
        self.stream.flush()

    def _amount(self, value: int) -> str:
        return str(value) if self.divisor == 1 else f"{value / self.divisor:.1f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _error(message: str) -> None:
    first = " ".join(str(message).split())
    print(f"error: {first}", file=sys.stderr)


# -- commands ----------------------------------------------------------------------------
def _load_model(args: argparse.Namespace):
    from featapp.engine.model import load_model

    model = load_model(args.model, provider=args.provider)
    if model.provider_note:
        print(f"note: {model.provider_note}", file=sys.stderr)
    return model


def _prepare_files(model, files: Sequence[str]) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Decode each file; report bad ones on stderr, one line each.

    Returns the names that worked, their batch, and the reason for each that did not.
    """
    from featapp.engine.images import ImageError, prepare_image

    names, arrays, failures = [], [], {}
    for name in files:
        try:
            arrays.append(prepare_image(name, model))
            names.append(name)
        except ImageError as err:
            failures[name] = " ".join(str(err).split())
            print(f"{name}: error: {failures[name]}", file=sys.stderr)
    spec = model.input_spec
    batch = np.stack(arrays) if arrays else np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
    return names, batch, failures


def cmd_predict(args: argparse.Namespace) -> int:
    model = _load_model(args)
    if not model.has_classifier:
        raise UserError(f"'{model.path.name}' has no classifier head, so it cannot predict a class.")
    names, batch, failures = _prepare_files(model, args.images)
    predicted = {}
    if len(batch):
        prediction = model.predict(batch)
        for name, probabilities, label, confidence in zip(
            names, prediction.probabilities, prediction.labels, prediction.confidences, strict=True
        ):
            predicted[name] = {
                "file": name,
                "label": label,
                "probability": round(float(confidence), 6),
                "probabilities": {
                    c: round(float(p), 6) for c, p in zip(prediction.class_names, probabilities, strict=True)
                },
            }
    if args.json:
        # Input order; a file that failed has an "error" instead of a prediction.
        rows = [predicted.get(name) or {"file": name, "error": failures[name]} for name in args.images]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        width = max((len(name) for name in predicted), default=0)
        for row in predicted.values():
            others = ", ".join(f"{c} {p:.3f}" for c, p in row["probabilities"].items())
            print(f"{row['file']:<{width}}  {row['label']:<8} {row['probability']:.3f}   ({others})")
    if failures:
        print(f"{len(failures)} of {len(args.images)} files failed.", file=sys.stderr)
    return 1 if failures else 0


def cmd_activations(args: argparse.Namespace) -> int:
    model = _load_model(args)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out must end in .npz, not '{out.name}'.")
    clash = [name for name in model.layer_names if name in ACTIVATION_META_KEYS]
    if clash:
        raise UserError(f"this model has layers called {', '.join(clash)}, which the .npz layout reserves.")
    names, batch, failures = _prepare_files(model, args.images)
    if not len(batch):
        raise UserError("none of the files could be read; nothing written.")
    write_activations(model, names, batch, out, args.batch_size)
    print(f"Wrote {out}: {len(names)} images x {len(model.layers)} layers.")
    for layer in model.layers:
        layout = (
            f"(N, {layer.channels}, {layer.output_shape[0]}, {layer.output_shape[1]})"
            if layer.is_spatial
            else f"(N, {layer.channels})"
        )
        print(f"  {layer.name:<18} {layer.kind:<20} {layer.shape_text:<16} stored as {layout}")
    if failures:
        print(f"{len(failures)} of {len(args.images)} files failed and are not in the file.", file=sys.stderr)
    return 1 if failures else 0


def _dataset(args: argparse.Namespace):
    from featapp.data.dataset import Dataset

    return Dataset(args.data_dir)


def _check_split(dataset, split: str | None) -> None:
    from featapp.data.dataset import DatasetError

    if split is not None and split not in dataset.splits:
        raise DatasetError(
            f"The dataset at '{dataset.root}' has no split '{split}'; it has: {', '.join(dataset.splits)}."
        )


def _cache_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.cache_dir) if args.cache_dir else None


def _tidy_cache(args: argparse.Namespace) -> None:
    """Remove temporary files a killed write left in the cache folder (featapp.cache)."""
    from featapp.cache import default_cache_dir, remove_stale_temporaries

    folder = Path(getattr(args, "cache_dir", None) or default_cache_dir())
    if folder.is_dir():
        remove_stale_temporaries(folder)


def _say_if_damaged(model, dataset, args: argparse.Namespace) -> bool:
    """Say so when the saved statistics are damaged (they are then scanned again)."""
    from featapp.stats.analysis import cache_damage

    damage = cache_damage(model, dataset, args.split, _cache_dir(args))
    if damage is not None:
        print(f"The saved neuron statistics cannot be used: {damage}. Scanning again.", file=sys.stderr)
    return damage is not None


def cmd_scan(args: argparse.Namespace) -> int:
    from featapp.stats.analysis import cache_path, load_cached, load_or_scan

    model = _load_model(args)
    dataset = _dataset(args)
    _check_split(dataset, args.split)
    path = cache_path(model, dataset, args.split, _cache_dir(args))
    if not args.force:
        cached = load_cached(model, dataset, args.split, _cache_dir(args))
        if cached is not None:
            print(f"Already scanned: {len(cached)} images, statistics in {path}. Use --force to scan again.")
            return 0
        _say_if_damaged(model, dataset, args)
    started = time.perf_counter()
    stats = load_or_scan(
        model,
        dataset,
        args.split,
        _cache_dir(args),
        progress=TextProgress("scanning"),
        batch_size=args.batch_size,
        force=args.force,
        waiting=_say_waiting(),
    )
    seconds = time.perf_counter() - started
    for skipped, why in stats.skipped:
        print(f"{skipped}: skipped: {' '.join(why.split())}", file=sys.stderr)
    rate = (len(stats) + len(stats.skipped)) / seconds if seconds > 0 else 0.0
    size = path.stat().st_size / 1e6
    print(
        f"Scanned {len(stats)} images ({len(stats.skipped)} unreadable) in {_duration(seconds)} "
        f"({rate:.1f} images/s). Statistics: {path} ({size:.1f} MB)."
    )
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    model = _load_model(args)
    layer = _layer_of(model, args.layer)
    word = "channel" if layer.is_spatial else "unit"
    if not 1 <= args.channel <= layer.channels:
        raise UserError(
            f"{layer.name} has {word}s 1 to {layer.channels} (counted from 1); you asked for {word} {args.channel}."
        )
    dataset, stats = _stats_for(args, model)
    try:
        hits = stats.top_k(layer.name, args.channel - 1, k=args.k, by=args.by)
    except ValueError as err:
        raise UserError(str(err)) from None
    where = f"the {args.split} split" if args.split else "all splits"
    print(
        f"{layer.name} {word} {args.channel} (index {args.channel - 1}): top {len(hits)} of {len(stats)} images "
        f"({where} of {dataset.root}) by {args.by if layer.is_spatial else 'value'}"
    )
    print(
        f"{'rank':>4}  {'value':>9}  {'class':<8} {'cell (row, col)':<16} {'box (top, left, bottom, right)':<31} file"
    )
    for hit in hits:
        cell = f"({hit.cell[0]}, {hit.cell[1]})" if hit.cell else "-"
        box = "(" + ", ".join(map(str, hit.box)) + ")" if hit.box else "-"
        print(f"{hit.rank + 1:>4}  {hit.value:>9.4f}  {hit.class_name:<8} {cell:<16} {box:<31} {hit.path}")
    if args.out:
        from featapp.engine.images import ImageError

        title = f"{layer.name} {word} {args.channel}: top {len(hits)} by {args.by if layer.is_spatial else 'value'}"
        try:
            picture = _top_grid(model, hits, title)
        except ImageError as err:
            raise UserError(f"a top image can no longer be read ({err}); run scan again with --force.") from None
        _save_png(picture, Path(args.out))
        print(f"Saved {args.out}")
    return 0


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _top_grid(model, hits, title: str):
    """The top images as the model saw them, each with its receptive-field box, in
    :func:`featapp.render.labelled_grid`."""
    import numpy as np
    from PIL import Image, ImageDraw

    from featapp import render
    from featapp.engine.images import prepare_image

    spec = model.input_spec
    scale = max(1, 300 // max(spec.height, spec.width))
    tiles = []
    for hit in hits:
        pixels = prepare_image(hit.path, model)
        picture = Image.fromarray(pixels[:, :, 0] if spec.channels == 1 else pixels).convert("RGB")
        picture = picture.resize((spec.width * scale, spec.height * scale), Image.Resampling.NEAREST)
        if hit.box:
            top, left, bottom, right = hit.box
            outline = [left * scale - 1, top * scale - 1, right * scale, bottom * scale]
            ImageDraw.Draw(picture).rectangle(outline, outline=(255, 220, 0), width=2)
        tiles.append(np.asarray(picture))
    labels = [f"#{hit.rank + 1} {hit.class_name} {hit.value:.3f}" for hit in hits]
    columns = max(1, math.ceil(math.sqrt(len(hits))))
    return render.labelled_grid(
        tiles, labels, columns=columns, title=title, gap=6, label_px=22, font=_font(14), title_font=_font(16)
    )


def _save_png(picture, out: Path) -> None:
    from featapp.cache import atomic_write

    if out.suffix.lower() != ".png":
        raise UserError(f"--out must end in .png, not '{out.name}'.")
    atomic_write(out, lambda handle: picture.save(handle, format="PNG"))


def _axes(pair) -> str:
    if pair is None:
        return "-"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _layer_of(model, text: str):
    """A layer by name, or by its number counted from 1 (as ``info`` lists them)."""
    if text.isdigit() and not any(name == text for name in model.layer_names):
        number = int(text)
        if not 1 <= number <= len(model.layers):
            raise UserError(f"layers are numbered 1 to {len(model.layers)}; you asked for layer {number}.")
        return model.layers[number - 1]
    try:
        return model.layer(text)
    except KeyError:
        raise UserError(
            f"no layer '{text}'; the layers are: {', '.join(model.layer_names)} (or their numbers)."
        ) from None


def _say_waiting() -> Callable[[int, int], None]:
    """A ``waiting`` for :func:`featapp.stats.analysis.load_or_scan` that says once why nothing moves."""
    said = False

    def waiting(done: int, total: int) -> None:
        nonlocal said
        if not said:
            said = True
            print(SCAN_WAITING, file=sys.stderr, flush=True)

    return waiting


def _stats_for(args: argparse.Namespace, model):
    from featapp.stats.analysis import load_cached, load_or_scan

    dataset = _dataset(args)
    _check_split(dataset, args.split)
    stats = load_cached(model, dataset, args.split, _cache_dir(args))
    if stats is None:
        if not _say_if_damaged(model, dataset, args):
            print("No neuron statistics for this model and dataset yet; scanning first (once).", file=sys.stderr)
        stats = load_or_scan(
            model,
            dataset,
            args.split,
            _cache_dir(args),
            progress=TextProgress("scanning"),
            batch_size=args.batch_size,
            waiting=_say_waiting(),
        )
    return dataset, stats


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "inf" if value is not None and value > 0 else ("-inf" if value is not None else "-")
    return f"{value:.{digits}f}"


def cmd_classes(args: argparse.Namespace) -> int:
    from featapp.stats.classes import layer_separation

    model = _load_model(args)
    layer = _layer_of(model, args.layer)
    dataset, stats = _stats_for(args, model)
    if len(stats.class_names) < 2:
        raise UserError(
            f"the scanned images have only one class ({', '.join(stats.class_names)}); nothing to tell apart."
        )
    try:
        table = layer_separation(stats, layer.name, by=args.by)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.json:
        result = table.as_dict()
        result["split"] = args.split
        result["data_dir"] = str(dataset.root)
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    word = "channel" if layer.is_spatial else "unit"
    number = model.layer_names.index(layer.name) + 1
    where = f"the {args.split} split" if args.split else "all splits"
    counts = ", ".join(f"{n} {name}" for name, n in zip(table.class_names, table.counts, strict=True))
    score = f"each photo's {args.by} of the map" if layer.is_spatial else "each unit's value"
    print(
        f"Layer {number} ({layer.name}): which {word}s tell {table.positive} from {table.other}, over {counts} "
        f"({where} of {dataset.root}), by {score}."
    )
    print(
        f"AUC: chance that a {table.positive} photo scores higher than a {table.other} photo (1 = always, "
        "0 = never, 0.5 = no help); d: difference of the class means in standard deviations."
    )
    names = table.class_names
    header = f"{'rank':>4}  {word:>7}  {'AUC':>6}  {'d':>7}  {'fires for':<10}" + "".join(
        f" {'mean ' + n:>12}" for n in names
    )
    print(header)
    rows = table.ranked(None if args.top == 0 else args.top)
    for rank, row in enumerate(rows, start=1):
        means = "".join(f" {m:>12.4g}" for m in row.class_means)
        fires = "(never)" if row.never_fires else row.fires_for
        print(
            f"{rank:>4}  {row.channel + 1:>7}  {_number(row.auc):>6}  {_number(row.effect, 2):>7}  {fires:<10}{means}"
        )
    dead = int(table.never_fires.sum())
    if dead:
        print(f"{dead} of {table.channels} {word}s never fire on these photos (AUC 0.5, listed last).")
    return 0


def _liveness_rows(model, args: argparse.Namespace) -> tuple[str, dict] | None:
    """Liveness per layer for the images given, or for a scanned split; ``None`` when neither was asked for."""
    from featapp.stats.liveness import liveness_of

    if args.images:
        names, batch, _ = _prepare_files(model, args.images)
        if not len(batch):
            raise UserError("none of the images could be read, so there is nothing to count.")
        chunks = (model.activations(batch[s : s + args.batch_size]) for s in range(0, len(batch), args.batch_size))
        return f"{len(names)} image{'s' if len(names) != 1 else ''}", liveness_of(chunks)
    if args.split:
        from featapp.stats.classes import network_health

        dataset, stats = _stats_for(args, model)
        return f"the {len(stats)} photos of the {args.split} split of {dataset.root}", network_health(stats)
    return None


def _print_liveness(model, where: str, health: dict) -> None:
    print()
    print(f"Liveness on {where}:")
    header = f"{'#':>2}  {'layer':<18} {'never fire':>16}  {'constant maps':>13}  {'zeros':>6}  never-firing channels"
    print(header)
    print("-" * len(header))
    for number, name in enumerate(model.layer_names, start=1):
        live = health[name]
        dead = f"{live.never_active}/{live.channels} ({live.never_active_share:.0%})"
        shown = [c + 1 for c in live.never_active_channels]
        listed = ", ".join(map(str, shown[:12])) + (f", ... ({len(shown) - 12} more)" if len(shown) > 12 else "")
        constant = f"{live.constant_map_share:.1%}" if model.layer(name).is_spatial else "-"
        print(f"{number:>2}  {name:<18} {dead:>16}  {constant:>13}  {live.sparsity:>6.1%}  {listed or '-'}")
    print(
        "Never fire: channels (units) that are zero on every image, so they carry nothing. Constant maps: "
        "share of (image, channel) maps with one value everywhere. Zeros: share of all activations that are 0."
    )


def cmd_info(args: argparse.Namespace) -> int:
    model = _load_model(args)
    spec = model.spec
    colours = {1: "grayscale", 3: "RGB"}[model.input_spec.channels]
    print(f"Model:    {model.path} (sha256 {model.sha256[:16]}...)")
    if abs(spec.input_scale - 1 / 255) < 1e-12 and not spec.input_offset:
        scaling = "to 0..1 (x / 255)"
    else:
        scaling = f"x * {spec.input_scale:.6g}" + (f" {spec.input_offset:+g}" if spec.input_offset else "")
    print(
        f"Input:    {model.input_spec.height} x {model.input_spec.width} x {model.input_spec.channels} "
        f"({colours}), uint8 pixels scaled {scaling}"
    )
    if model.has_classifier:
        output = f"{spec.output_activation} output"
        if spec.output_activation == "sigmoid" and model.layers[-1].channels == 1 and len(model.class_names) == 2:
            output += f" = p({model.class_names[1]})"
        print(f"Classes:  {', '.join(model.class_names)} ({output})")
    else:
        print("Classes:  none (no classifier head)")
    print(f"Provider: {model.provider} (ONNX Runtime: {', '.join(model.providers)})")
    if model.provider_note:
        print(f"          {model.provider_note}")
    print()
    header = f"{'#':>2}  {'layer':<18} {'kind':<20} {'output shape':<16} {'params':>10}  {'receptive field':>15}  {'jump':>4}"
    print(header)
    print("-" * len(header))
    total = 0
    for number, layer in enumerate(model.layers, start=1):
        field = layer.receptive_field
        total += layer.params
        print(
            f"{number:>2}  {layer.name:<18} {layer.kind:<20} {layer.shape_text:<16} {layer.params:>10,}  "
            f"{_axes(field.size if field else None):>15}  {_axes(field.jump if field else None):>4}"
        )
    print(f"{'':>2}  {'total':<18} {'':<20} {'':<16} {total:>10,}")
    print("Receptive field: input pixels one cell sees; jump: input pixels between neighbouring cells.")
    liveness = _liveness_rows(model, args)
    if liveness is not None:
        _print_liveness(model, *liveness)
    return 0


class _StageProgress:
    """One text bar per stage of a download (bytes fetched, members checked, photos written)."""

    _LABELS = {
        "download": ("downloading", "MB", 1e6),
        "verify": ("checking", "items", 1),
        "extract": ("extracting", "photos", 1),
    }

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.bars: dict[str, TextProgress] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            label, unit, divisor = self._LABELS.get(stage, (stage, "", 1))
            self.bars[stage] = TextProgress(label, stream=self.stream, unit=unit, divisor=divisor)
        self.bars[stage](done, total)


def cmd_download_photos(args: argparse.Namespace) -> int:
    from featapp.data.download import SOURCES, DownloadError, download_photos

    source = SOURCES[args.source]
    where = args.archive or source.url
    print(f"Photos: {source.name}, {source.description}", file=sys.stderr)
    print(f"Licence: {source.licence}", file=sys.stderr)
    print(f"From: {where}", file=sys.stderr)
    try:
        result = download_photos(
            source,
            args.dest,
            archive=args.archive,
            replace=args.replace,
            keep_archive=args.keep_archive,
            progress=_StageProgress(),
        )
    except DownloadError as err:
        raise UserError(str(err)) from None
    counts = ", ".join(f"{folder} {count:,}" for folder, count in result.photos.items())
    print(f"{result.total:,} photos in {result.destination} ({counts})")
    if result.skipped:
        print(f"Skipped {result.skipped:,} broken photos (they cannot be decoded).")
    print(f"featapp finds them there by itself; elsewhere, set FEATAPP_DATA_DIR={result.destination}")
    return 0


def cmd_trained_on_hashes(args: argparse.Namespace) -> int:
    from featapp.data.provenance import hash_folders, hashes_path, write_hashes
    from featapp.engine.model import DEFAULT_MODEL_PATH

    out = Path(args.out) if args.out else hashes_path(args.model or DEFAULT_MODEL_PATH)
    for folder in args.folders:
        if not Path(folder).is_dir():
            raise UserError(f"No folder at '{folder}'.")
    count = len(hash_folders(args.folders))
    write_hashes(args.folders, out)
    print(f"{count:,} photo hashes written to {out}")
    return 0


# -- the parser ----------------------------------------------------------------------------
def cmd_saliency(args: argparse.Namespace) -> int:
    from featapp import render
    from featapp.explain.gradcam import gradcam
    from featapp.explain.gradients import load_gradients
    from featapp.explain.saliency import saliency, smoothgrad

    model = _load_model(args)
    grads = load_gradients(model)
    photo = model.prepare(args.image)[0]
    if args.method == "gradcam":
        result = gradcam(grads, photo, layer=args.layer)
        values, what = result.per_pixel, f"Grad-CAM at {result.layer}"
        class_index = result.class_index
    else:
        if args.layer:
            raise UserError("--layer is for --method gradcam; saliency is always of the input pixels.")
        pixel_map = (
            smoothgrad(grads, photo, samples=args.samples, seed=args.seed)
            if args.method == "smoothgrad"
            else saliency(grads, photo)
        )
        values, what = pixel_map.per_pixel, "SmoothGrad" if args.method == "smoothgrad" else "saliency"
        class_index = pixel_map.class_index
    names = model.class_names or tuple(f"class {i}" for i in range(max(2, model.layers[-1].channels)))
    vr = render.value_range(values, "per map")
    picture = render.overlay_pixels(photo, values, vr, render.VIRIDIS, alpha=SALIENCY_ALPHA)
    from PIL import Image

    _save_png(Image.fromarray(render.enlarge(picture, 2)), Path(args.out))
    print(f"{what} of class '{names[class_index]}' for {args.image}: saved {args.out}")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    from PIL import Image

    from featapp import render
    from featapp.explain.featurevis import visualize
    from featapp.explain.gradients import load_gradients

    model = _load_model(args)
    layer = _layer_of(model, args.layer)
    if not 1 <= args.channel <= layer.channels:
        raise UserError(
            f"{layer.name} has channels 1 to {layer.channels} (counted from 1); you asked for {args.channel}."
        )
    grads = load_gradients(model)
    bar = TextProgress("optimising")
    result = visualize(
        grads,
        layer.name,
        [args.channel - 1],
        steps=args.steps,
        seed=args.seed,
        progress=lambda fraction: bar(round(fraction * args.steps), args.steps),
    )
    picture = result.images[0]
    # Pillow takes a grey picture as (H, W), not (H, W, 1): a grayscale model's picture is one channel.
    _save_png(
        Image.fromarray(render.enlarge(picture[:, :, 0] if picture.shape[-1] == 1 else picture, 2)), Path(args.out)
    )
    print(
        f"{layer.name} channel {args.channel}: mean activation {result.start_activations[0]:.4f} on the start noise, "
        f"{result.activations[0]:.4f} on the picture; saved {args.out}"
    )
    return 0


def cmd_atlas(args: argparse.Namespace) -> int:
    from featapp import settings
    from featapp.explain.atlas import atlas_path, build_atlas
    from featapp.explain.featurevis import APP_STEPS, default_objective
    from featapp.explain.gradients import load_gradients

    if args.model_file and args.model and Path(args.model_file) != Path(args.model):
        raise UserError(f"two models: '{args.model_file}' and --model '{args.model}'; name one.")
    args.model = args.model_file or args.model
    model = _load_model(args)
    layers = None
    if args.layers:
        layers = [_layer_of(model, text.strip()).name for text in args.layers.split(",") if text.strip()]
    steps = args.steps or settings.vis_steps(APP_STEPS)
    grads = load_gradients(model)
    out = Path(args.out) if args.out else atlas_path(model.path)
    spec = model.input_spec
    bar = TextProgress("atlas", unit="channels", divisor=steps)

    def on_layer(layer, finished: int) -> None:
        number = model.layer_names.index(layer.name) + 1
        objective = default_objective(layer, (spec.height, spec.width))
        what = "its centre cell" if objective == "neuron" else "its whole map"
        kept = f", {finished} kept from before" if finished else ""
        print(f"layer {number} {layer.name}: {layer.channels} channels ({what}){kept}", file=sys.stderr, flush=True)

    print(
        f"Atlas of '{model.path.name}' (sha256 {model.sha256[:12]}...), {steps} steps per picture, into {out}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    try:
        atlas = build_atlas(
            grads,
            out,
            layers=layers,
            steps=steps,
            save_every=args.save_every,
            bits=args.bits,
            progress=bar,
            on_layer=on_layer,
        )
    except KeyboardInterrupt:
        if out.exists():
            print(f"\nThe finished channels are saved in {out}; the same command goes on from there.", file=sys.stderr)
        raise
    size = out.stat().st_size
    print(
        f"{out}: {atlas.picture_count} pictures in {len(atlas.layers)} layer{'' if len(atlas.layers) == 1 else 's'}, "
        f"{size / 1e6:.2f} MB; "
        f"{_duration(time.perf_counter() - started)}"
    )
    if out.resolve() != atlas_path(model.path).resolve():
        print(f"The app reads it from {atlas_path(model.path)}: copy it there.")
    return 0
