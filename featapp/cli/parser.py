"""The command line's arguments: one parser, each option declared once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featapp.cli import commands as cmd
from featapp.cli.commands import _ACTIVATIONS_LAYOUT

__all__ = ["build_parser", "prog_name"]


def prog_name(argv0: str | None = None) -> str:
    """How the user ran it, for ``--help``: ``featapp`` (the installed script) or ``python -m featapp``.

    >>> prog_name("/usr/local/bin/featapp"), prog_name("/repo/featapp/__main__.py")
    ('featapp', 'python -m featapp')
    """
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "python -m featapp" if not name or name.endswith(".py") or name == "-c" else name


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 1 up, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("model and output")
    group.add_argument(
        "--model", metavar="PATH", help="ONNX model file (default: $FEATAPP_MODEL, else the committed model)"
    )
    group.add_argument(
        "--provider",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs: auto = CUDA if a GPU is usable, else CPU ($FEATAPP_PROVIDER overrides)",
    )
    group.add_argument("--verbose", action="store_true", help="show full tracebacks for errors")

    data = argparse.ArgumentParser(add_help=False)
    data_group = data.add_argument_group("neuron statistics")
    data_group.add_argument(
        "--split", metavar="S", help="only this split (train, validation, test); default: all splits"
    )
    data_group.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where statistics are kept (default: $FEATAPP_CACHE_DIR, else ~/.cache/featapp)",
    )
    data_group.add_argument("--batch-size", type=_positive, default=32, help="images per model run (default 32)")

    dataset = argparse.ArgumentParser(add_help=False)
    dataset.add_argument_group("dataset").add_argument(
        "--data-dir", metavar="D", help="dataset folder (default: $FEATAPP_DATA_DIR, else the downloaded photos)"
    )

    parser = argparse.ArgumentParser(
        prog=prog_name(),
        description="Look inside a small convnet: predictions, activations, neuron statistics, model info.",
        epilog="Run '%(prog)s COMMAND --help' for each command. Exit status: 0 ok, 1 failed, 2 wrong usage.",
    )
    parser.add_argument(
        "--verbose", dest="verbose_everywhere", action="store_true", help="show full tracebacks for errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="label and probability for each image",
        description="Print the predicted label and its probability for each image. A file that cannot be read "
        "gets a one-line error and the others still run; the exit status is 1 if any file failed.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    predict.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    predict.set_defaults(run=cmd.cmd_predict)

    activations = commands.add_parser(
        "activations",
        parents=[common],
        help="save every layer's activations for some images to a .npz file",
        description="Run the images through the model and save every layer's output, like the lecture's "
        "'features = activation_model.predict(images)'.",
        epilog=_ACTIVATIONS_LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    activations.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    activations.add_argument("--out", required=True, metavar="FILE.npz", help="where to write (written atomically)")
    activations.add_argument("--batch-size", type=_positive, default=16, help="images per model run (default 16)")
    activations.set_defaults(run=cmd.cmd_activations)

    scan = commands.add_parser(
        "scan",
        parents=[common, data],
        help="compute neuron statistics over a dataset (once; cached)",
        description="Run every image of DATA_DIR (laid out as split/class/image) through the model once and "
        "record, for every layer and channel, each image's max and mean activation and where the max is. "
        "The result is cached, keyed by the model's hash and the dataset's file list, so 'top' is instant.",
    )
    scan.add_argument("data_dir", metavar="DATA_DIR", help="dataset folder, e.g. ../shared/data/cats_vs_dogs")
    scan.add_argument("--force", action="store_true", help="scan again even if valid statistics are cached")
    scan.set_defaults(run=cmd.cmd_scan)

    top = commands.add_parser(
        "top",
        parents=[common, data, dataset],
        help="the images that excite one channel most",
        description="Print the K images whose activation in channel C of layer L is highest, with the input box "
        "(receptive field of the strongest cell) that drove it; optionally save them as a picture. "
        "Channels are counted from 1 ('channel 1' is the first; the library's index is C-1). "
        "Scans the dataset first if it has not been scanned.",
    )
    top.add_argument(
        "--layer", required=True, metavar="L", help="layer name or number from 1, e.g. conv2d_2 or 5 (see 'info')"
    )
    top.add_argument("--channel", required=True, type=_positive, metavar="C", help="channel (or unit) number, from 1")
    top.add_argument("--k", type=_positive, default=9, help="how many images (default 9)")
    top.add_argument("--by", choices=("max", "mean"), default="max", help="rank by the map's max (default) or mean")
    top.add_argument("--out", metavar="GRID.png", help="also save the images, with boxes, as a PNG")
    top.set_defaults(run=cmd.cmd_top)

    classes = commands.add_parser(
        "classes",
        parents=[common, data, dataset],
        help="which channels of a layer fire for one class rather than the other",
        description="From the scan of a dataset (made first if needed): for every channel (or unit) of layer L, "
        "the mean activation per class, the AUC (the chance that a photo of the second class, e.g. dogs, scores "
        "higher than one of the first) and the difference of the class means in standard deviations, best "
        "separating channels first. Channels are counted from 1.",
    )
    classes.add_argument("--layer", required=True, metavar="L", help="layer name or number from 1, e.g. conv2d_3 or 7")
    classes.add_argument(
        "--by", choices=("max", "mean"), default="max", help="score each photo by the map's max (default) or mean"
    )
    classes.add_argument(
        "--top", type=int, default=20, metavar="N", help="print the best N channels (default 20; 0 = all)"
    )
    classes.add_argument("--json", action="store_true", help="print every channel as JSON instead of a table")
    classes.set_defaults(run=cmd.cmd_classes)

    info = commands.add_parser(
        "info",
        parents=[common, data, dataset],
        help="the model's layers, input, classes and provider; how alive each layer is",
        description="Print the model's layer table (name, kind, output shape, parameters, receptive-field size and "
        "jump), its input, classes and the execution provider that runs it. With IMAGE files, or --split (a "
        "scanned split, scanned first if needed), also how alive each layer is: channels that never fire, the "
        "share of constant maps and of zero activations.",
    )
    info.add_argument("images", nargs="*", metavar="IMAGE", help="images to count liveness on (optional)")
    info.set_defaults(run=cmd.cmd_info)

    from featapp.data.download import DEFAULT_SOURCE, SOURCES, default_destination

    download = commands.add_parser(
        "download-photos",
        help="download the course photos (cats and dogs) and lay them out for the gallery",
        description="Download a photo archive, check it (size, checksum or every member's CRC, photo counts), "
        "and lay it out as split/class/photo. An interrupted download resumes where it stopped; nothing is "
        "extracted until the whole archive is checked, and the folder appears only when complete.",
        epilog="Sources: "
        + "; ".join(f"{name}: {source.description} (licence: {source.licence})" for name, source in SOURCES.items())
        + ". See docs/photos.md.",
    )
    download.add_argument(
        "--dest",
        metavar="DIR",
        help=f"where the photos go (default: {default_destination(DEFAULT_SOURCE)} for {DEFAULT_SOURCE}, "
        "which featapp finds without FEATAPP_DATA_DIR)",
    )
    download.add_argument("--source", choices=sorted(SOURCES), default=DEFAULT_SOURCE, help="which photos")
    download.add_argument(
        "--archive", metavar="FILE", help="use this already-downloaded archive instead of the network (offline)"
    )
    download.add_argument("--replace", action="store_true", help="replace a destination folder that holds files")
    download.add_argument(
        "--keep-archive", action="store_true", help="keep the downloaded archive (in the cache folder) afterwards"
    )
    download.add_argument("--verbose", action="store_true", help="show full tracebacks for errors")
    download.set_defaults(run=cmd.cmd_download_photos)

    hashes = commands.add_parser(
        "trained-on-hashes",
        help="list the sha256 of the photos a model was trained or selected on (for honest predictions)",
        description="Hash every image under the FOLDERs (the training folders and the validation folder that "
        "chose the epoch) and write the sorted hashes, gzip'd, next to the model: the gallery then marks those "
        "photos and leaves them out of its score. Run it again whenever the model is retrained.",
    )
    hashes.add_argument("folders", nargs="+", metavar="FOLDER", help="folders of photos the model was fitted on")
    hashes.add_argument("--model", metavar="PATH", help="the model the list belongs to (default: the committed one)")
    hashes.add_argument("--out", metavar="FILE", help="where to write (default: <model>.trained_on.sha256.gz)")
    hashes.add_argument("--verbose", action="store_true", help="show full tracebacks for errors")
    hashes.set_defaults(run=cmd.cmd_trained_on_hashes)
    sal = commands.add_parser(
        "saliency",
        parents=[common],
        help="which pixels the predicted class depends on (saliency, SmoothGrad, Grad-CAM), as a PNG",
        description="Differentiate the predicted class's score (its logit) with respect to the photo and lay the "
        "result over it. Needs the model's gradient file (MODEL.grad.onnx, written by 'python -m convert export').",
    )
    sal.add_argument("image", metavar="IMAGE", help="an image file")
    sal.add_argument("--out", required=True, metavar="FILE.png", help="where to write (written atomically)")
    sal.add_argument(
        "--method",
        choices=("smoothgrad", "plain", "gradcam"),
        default="smoothgrad",
        help="smoothgrad (default; averaged over noisy copies), plain gradient, or gradcam",
    )
    sal.add_argument("--layer", metavar="L", help="Grad-CAM's layer (default: the last convolution)")
    sal.add_argument("--samples", type=_positive, default=16, help="SmoothGrad's noisy copies (default 16)")
    sal.add_argument("--seed", type=int, default=0, help="SmoothGrad's noise seed (default 0)")
    sal.set_defaults(run=cmd.cmd_saliency)

    vis = commands.add_parser(
        "visualize",
        parents=[common],
        help="the picture one channel responds to most (feature visualisation), as a PNG",
        description="Start from faint noise and climb the gradient of the channel's mean activation, with "
        "jitter, scaling and Fourier/colour preconditioning (as in Lucid). Channels are counted from 1.",
    )
    vis.add_argument(
        "--layer", required=True, metavar="L", help="layer name or number from 1, e.g. conv2d_2 or 5 (see 'info')"
    )
    vis.add_argument("--channel", required=True, type=_positive, metavar="C", help="channel number, from 1")
    vis.add_argument("--out", required=True, metavar="FILE.png", help="where to write (written atomically)")
    vis.add_argument("--steps", type=_positive, default=128, help="gradient steps (default 128)")
    vis.add_argument("--seed", type=int, default=0, help="start noise seed (default 0): same seed, same picture")
    vis.set_defaults(run=cmd.cmd_visualize)

    atlas = commands.add_parser(
        "atlas",
        parents=[common],
        help="every conv channel's feature visualisation, at the app's settings, in one file beside the model",
        description="Compute 'what this channel looks for' for every channel of the model's convolutions, exactly "
        "as the app would (each layer's objective, the steps, the seed), and write them to MODEL.atlas.zip with "
        "the model's sha256 and the settings. The app then shows them at once instead of computing them. The file "
        "is saved every few channels: after an interruption, the same command goes on where it stopped.",
    )
    atlas.add_argument(
        "model_file",
        nargs="?",
        metavar="MODEL",
        help="the converted ONNX model (default: --model, $FEATAPP_MODEL, else the committed model)",
    )
    atlas.add_argument(
        "--out", metavar="FILE.atlas.zip", help="where to write (default: beside the model, where the app looks)"
    )
    atlas.add_argument(
        "--layers",
        metavar="L,L",
        help="only these layers, by name or number from 1, comma-separated (default: every convolution)",
    )
    atlas.add_argument(
        "--steps",
        type=_positive,
        help="gradient steps per picture (default: the app's, $FEATAPP_VIS_STEPS or 128; the app uses the atlas "
        "only when its steps are the same)",
    )
    atlas.add_argument(
        "--save-every", type=_positive, default=8, metavar="N", help="save the file after every N channels (default 8)"
    )
    atlas.add_argument(
        "--bits",
        type=int,
        choices=range(1, 9),
        default=7,
        metavar="B",
        help="bits per colour value stored (default 7: within one level of 255 of the computed picture; 8: exact)",
    )
    atlas.set_defaults(run=cmd.cmd_atlas)
    return parser
