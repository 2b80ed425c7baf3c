"""Command line of the converter pipeline.

``python -m convert train DATA_DIR``        train the lecture's model
``python -m convert evaluate MODEL``        accuracy and confusion matrix on a split
``python -m convert export MODEL --out F``  Keras or any ONNX file -> featapp ONNX
``python -m convert snapshots RUN/selection --out models/snapshots``
``python -m convert report RUN --out R.json`` filters moved and channels alive, per snapshot

``evaluate``, ``export`` and ``snapshots`` report a problem with their input as one
line on stderr (``error: ...``) and exit with status 1; ``--verbose`` adds the
traceback and TensorFlow's own log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train(args: argparse.Namespace) -> int:
    from convert.train import TrainConfig, choose_precision, train

    config = TrainConfig(
        data_dir=args.data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        mixed_precision=choose_precision("bfloat16" if args.bfloat16 else args.precision) == "mixed_bfloat16",
        refit=args.refit,
        refit_epochs=args.refit_epochs,
        refit_warm_start=args.refit_warm_start,
        refit_learning_rate=args.refit_learning_rate,
        limit_per_class=args.limit_per_class,
        mixup_alpha=args.mixup,
        snapshot_epochs=tuple(sorted(set(args.snapshot_epochs))),
        extra_train=tuple(args.extra_train),
        kernel_initializer=args.kernel_initializer,
        first_layer_initializer=args.first_layer_initializer,
        label_smoothing=args.label_smoothing,
        first_layer_kernel_scale=args.first_layer_kernel_scale,
        centre_inputs=args.centre_inputs,
        first_layer_weight_decay=args.first_layer_weight_decay,
    )
    train(config)
    return 0


def _log(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def _quiet_stderr(verbose: bool) -> Iterator[None]:
    """Hold back what TensorFlow's C++ side writes to stderr while it loads (CUDA probes,
    absl notices); it is shown after all if the import fails, and always with --verbose."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _load_tensorflow(verbose: bool) -> None:
    """Import TensorFlow, Keras and tf2onnx; without --verbose, only their errors are shown."""
    if not verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        # Keras and TensorFlow warn about their own internals (deprecations, legacy
        # arguments in old model files); nothing a user converting a model can act on.
        for module in ("keras", "tensorflow", "tf2onnx", "tf_keras", "absl", "google"):
            warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    with _quiet_stderr(verbose):
        import keras  # noqa: F401
        import tensorflow as tf
        import tf2onnx

    if not verbose:
        import logging

        tf.get_logger().setLevel(logging.ERROR)
        tf2onnx.logging.set_level(logging.ERROR)


def _is_onnx(path: str) -> bool:
    return path.lower().endswith(".onnx")


def _class_names_from(args: argparse.Namespace) -> tuple[str, ...] | None:
    from pathlib import Path

    from convert.errors import ConversionError

    if args.class_names and args.class_names_file:
        raise ConversionError("give the class names once: --class-names or --class-names-file, not both.")
    if args.class_names_file:
        try:
            lines = Path(args.class_names_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ConversionError(f"cannot read --class-names-file '{args.class_names_file}' ({err}).") from None
        return tuple(line.strip() for line in lines if line.strip())
    return tuple(args.class_names) if args.class_names else None


def _export_onnx(args: argparse.Namespace) -> int:
    from convert.errors import ConversionError
    from convert.onnx_source import OnnxOptions, export_onnx

    if args.trunk:
        raise ConversionError("--trunk is for Keras models; an ONNX file is converted whole.")
    options = OnnxOptions(
        class_names=_class_names_from(args),
        input_size=args.input_size,
        input_range=args.input_range,
        mean=tuple(args.mean or ()),
        std=tuple(args.std or ()),
        channel_order=args.channel_order,
        layout=args.layout,
        tolerance=args.tolerance,
        gradients=not args.no_gradients,
        run_id=args.run_id,
    )
    export_onnx(args.model, args.out, options, log=_log)
    return 0


def _export(args: argparse.Namespace) -> int:
    from convert.errors import ConversionError
    from convert.export import ExportOptions, export
    from convert.inspect_keras import inspect_keras_file

    if _is_onnx(args.model):
        return _export_onnx(args)
    onnx_only = [flag for flag, value in _onnx_only_flags(args) if value]
    if onnx_only:
        raise ConversionError(
            f"{', '.join(onnx_only)} describe an ONNX file's input; a Keras file says its own input size and layout."
        )
    inspect_keras_file(args.model)  # fast refusals before TensorFlow loads
    _log("Loading TensorFlow ...")
    _load_tensorflow(args.verbose)
    options = ExportOptions(
        class_names=_class_names_from(args),
        trunk=args.trunk,
        input_range=args.input_range,
        tolerance=args.tolerance,
        gradients=not args.no_gradients,
        run_id=args.run_id,
    )
    export(args.model, args.out, options, log=_log)
    return 0


def _onnx_only_flags(args: argparse.Namespace) -> list[tuple[str, object]]:
    return [
        ("--input-size", args.input_size),
        ("--mean", args.mean),
        ("--std", args.std),
        ("--layout", args.layout),
        ("--channel-order", args.channel_order != "RGB"),
    ]


def _input_size(text: str) -> tuple[int, int]:
    from convert.onnx_source import parse_input_size

    try:
        return parse_input_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _gradients(args: argparse.Namespace) -> int:
    from pathlib import Path

    from convert.errors import ConversionError
    from convert.gradients import converted_from_onnx, write_gradient_model_checked_numerically

    for name in args.models:
        if not Path(name).is_file():
            raise ConversionError(f"No such file: '{name}'.")
    from_onnx = {name: converted_from_onnx(name) for name in args.models}
    if not all(from_onnx.values()):  # models converted from ONNX files are checked without TensorFlow
        _log("Loading TensorFlow ...")
        _load_tensorflow(args.verbose)
    from convert.gradients import write_gradient_model

    for name in args.models:
        _log(f"\n== {name} ==")
        if from_onnx[name]:
            write_gradient_model_checked_numerically(name, log=_log)
        else:
            write_gradient_model(name, tolerance=args.tolerance, log=_log)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from convert.common import write_atomically
    from convert.evaluate import evaluate
    from featapp.data.dataset import Dataset

    Dataset(args.data_dir).classes(args.split)  # fast refusals before TensorFlow loads
    if Path(args.model).suffix.lower() != ".onnx":
        from convert.inspect_keras import inspect_keras_file

        inspect_keras_file(args.model)
        _log("Loading TensorFlow ...")
        _load_tensorflow(args.verbose)
    result = evaluate(
        args.model,
        split=args.split,
        data_dir=args.data_dir,
        input_range=args.input_range,
        limit_per_class=args.limit_per_class,
        log=_log,
    )
    print(result.report(), flush=True)
    if args.json:
        write_atomically(Path(args.json), result.to_json().encode())
        _log(f"Wrote {args.json}")
    return 0


def _snapshots(args: argparse.Namespace) -> int:
    from convert.export_snapshots import export_snapshots, plan_snapshots

    jobs = plan_snapshots(args.selection_dir, log=_log)  # fast refusals before TensorFlow loads
    _log("Loading TensorFlow ...")
    _load_tensorflow(args.verbose)
    export_snapshots(args.selection_dir, args.out, tolerance=args.tolerance, log=_log, jobs=jobs)
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from convert.common import write_atomically
    from convert.report import report_markdown, training_report

    _log("Loading TensorFlow ...")
    _load_tensorflow(args.verbose)
    report = training_report(
        args.run_dir, args.data_dir, split=args.split, onnx_models=tuple(args.onnx), limit=args.limit, log=_log
    )
    markdown = report_markdown(report)
    print(markdown, flush=True)
    write_atomically(Path(args.out), json.dumps(report, indent=1).encode())
    write_atomically(Path(args.out).with_suffix(".md"), markdown.encode())
    _log(f"Wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    from convert.errors import ConversionError
    from featapp.data.dataset import DatasetError
    from featapp.engine.images import ImageError
    from featapp.engine.model import ModelError

    return (ConversionError, ModelError, DatasetError, ImageError)


def _parser() -> argparse.ArgumentParser:
    from convert.export import INPUT_RANGES

    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the lecture's cats-vs-dogs convnet")
    p.add_argument("data_dir", help="dataset folder with train/ and validation/, each with one folder per class")
    p.add_argument("--out", default="runs/cats_dogs_small", help="run folder (resumes if it exists)")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=0.02, help="AdamW's decoupled weight decay")
    p.add_argument("--warmup-epochs", type=int, default=3, help="epochs of linear learning-rate warm-up")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument(
        "--extra-train",
        action="append",
        default=[],
        metavar="DIR",
        help="another training folder with one folder per class (the dataset's classes); repeatable",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: bfloat16 mixed precision on CPUs with native bfloat16 (AMX, AVX512-BF16), else float32",
    )
    p.add_argument("--bfloat16", action="store_true", help="same as --precision bfloat16")
    p.add_argument(
        "--kernel-initializer",
        default="glorot_uniform",
        help="Keras initializer of the conv and dense kernels (he_uniform suits ReLU)",
    )
    p.add_argument(
        "--first-layer-initializer",
        default=None,
        help="Keras initializer of the first conv layer's kernel (default: --kernel-initializer's)",
    )
    p.add_argument("--label-smoothing", type=float, default=0.0, help="binary cross-entropy's label smoothing")
    p.add_argument(
        "--first-layer-kernel-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="train the first layer's kernel as S x w, so its steps are S times larger (folded away on saving)",
    )
    p.add_argument(
        "--centre-inputs",
        action="store_true",
        help="train on pixels centred to [-1, 1]; folded into the first layer on saving (the model takes [0, 1])",
    )
    p.add_argument(
        "--first-layer-weight-decay",
        type=float,
        default=None,
        metavar="RATE",
        help="the first layer's kernel decays at RATE (decoupled, like AdamW's) instead of --weight-decay",
    )
    p.add_argument("--refit", action="store_true", help="after choosing the epoch, fit again on train+validation")
    p.add_argument(
        "--refit-epochs", type=int, default=None, help="epochs of the refit (default: where validation accuracy peaks)"
    )
    p.add_argument(
        "--refit-warm-start",
        action="store_true",
        help="start the refit from the selection run's best model instead of from scratch (a short fine-tune)",
    )
    p.add_argument("--refit-learning-rate", type=float, default=None, help="peak learning rate of the refit")
    p.add_argument("--limit-per-class", type=int, default=None, help="use only the first N images per class")
    p.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="MixUp: blend each training image and label with another's, weight ~ Beta(ALPHA, ALPHA); 0 = off",
    )
    p.add_argument("--snapshot-epochs", type=int, nargs="*", default=[0, 1, 2, 5, 10])
    p.set_defaults(func=_train, handles_errors=False)

    ranges = ", ".join(INPUT_RANGES)
    range_help = (
        f"what the model's input expects: {ranges} (default 0..1, or 0..255 for a model that scales its input "
        "with its own Rescaling layer)"
    )
    p = sub.add_parser(
        "export",
        help="convert an image classifier for featapp: Keras (.keras, .h5) or any ONNX file (PyTorch, Keras, ...)",
    )
    p.add_argument(
        "model",
        help="Keras model file (.keras or legacy .h5, Keras 2 or 3), or an ONNX file from torch.onnx.export, "
        "Keras' model.export(format='onnx') or any tool",
    )
    p.add_argument("--out", required=True, help="ONNX file to write (written only if verification passes)")
    p.add_argument(
        "--class-names",
        nargs="+",
        metavar="NAME",
        help="class names in output order; for one sigmoid unit NEGATIVE POSITIVE (default: cat dog); "
        "for softmax one per class (default: class 0, class 1, ...)",
    )
    p.add_argument(
        "--class-names-file", metavar="FILE", help="class names in output order, one a line (e.g. ImageNet's 1000)"
    )
    p.add_argument("--trunk", action="store_true", help="export only the input through the last layer with 2-D maps")
    p.add_argument("--input-range", choices=list(INPUT_RANGES), help=range_help)
    onnx_group = p.add_argument_group(
        "ONNX files", "what an ONNX file does not say about its input (PyTorch: see docs/convert.md, From PyTorch)"
    )
    onnx_group.add_argument(
        "--input-size", type=_input_size, metavar="SIZE", help="SIZE or HEIGHTxWIDTH, when the file leaves it free"
    )
    onnx_group.add_argument(
        "--mean",
        type=float,
        nargs="+",
        metavar="M",
        help="per-channel mean subtracted after --input-range, in the model's channel order "
        "(torchvision: 0.485 0.456 0.406 with 0..1; caffe-style Keras: 103.939 116.779 123.68 with 0..255 and BGR)",
    )
    onnx_group.add_argument(
        "--std",
        type=float,
        nargs="+",
        metavar="S",
        help="per-channel divisor after the mean (torchvision: 0.229 0.224 0.225)",
    )
    onnx_group.add_argument(
        "--channel-order", choices=["RGB", "BGR"], default="RGB", type=str.upper, help="the model's colour order"
    )
    onnx_group.add_argument(
        "--layout",
        choices=["NCHW", "NHWC"],
        type=str.upper,
        help="where the channels are, when the shape leaves it open",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest error allowed in verification, relative to each layer's largest value (default 1e-4)",
    )
    p.add_argument(
        "--no-gradients", action="store_true", help="do not write MODEL.grad.onnx (saliency, Grad-CAM, feature vis)"
    )
    p.add_argument(
        "--run-id",
        default="",
        metavar="ID",
        help="the training run the model came from (printed by 'convert snapshots'): the app then offers that "
        "run's snapshots with this model only",
    )
    p.add_argument("--verbose", action="store_true", help="show tracebacks and TensorFlow's log")
    p.set_defaults(func=_export, handles_errors=True)

    p = sub.add_parser(
        "gradients", help="write MODEL.grad.onnx (the backward pass, verified) for converted .onnx files"
    )
    p.add_argument("models", nargs="+", help="converted featapp .onnx files")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest error allowed, relative to each gradient")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and TensorFlow's log")
    p.set_defaults(func=_gradients, handles_errors=True)

    p = sub.add_parser("evaluate", help="accuracy and confusion matrix of a .keras/.h5 or .onnx model on a split")
    p.add_argument("model", help="a Keras file (.keras/.h5) or a converted .onnx")
    p.add_argument("--split", default="test", help="split folder to evaluate on (default: test)")
    p.add_argument(
        "--data-dir", default=None, help="dataset folder (default: $FEATAPP_DATA_DIR, else data/cats_vs_dogs)"
    )
    p.add_argument("--input-range", choices=list(INPUT_RANGES), help=range_help + "; Keras models only")
    p.add_argument("--limit-per-class", type=int, default=None, help="use only the first N images of each class")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and TensorFlow's log")
    p.set_defaults(func=_evaluate, handles_errors=True)

    p = sub.add_parser("snapshots", help="export a training run's snapshots as trunk-only ONNX files")
    p.add_argument("selection_dir", help="the run's selection folder, e.g. runs/cats_dogs_small/selection")
    p.add_argument("--out", default="models/snapshots", help="output folder (default: models/snapshots)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="as for export")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and TensorFlow's log")
    p.set_defaults(func=_snapshots, handles_errors=True)

    p = sub.add_parser(
        "report", help="per training snapshot: filters' correlation with epoch 0 and channels alive on a split"
    )
    p.add_argument("run_dir", help="a training run folder (with selection/snapshots/)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $FEATAPP_DATA_DIR)")
    p.add_argument("--split", default="test", help="split to measure liveness on (default: test)")
    p.add_argument("--onnx", action="append", default=[], help="also a converted model's liveness (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N photos of the split")
    p.add_argument("--out", required=True, help="JSON file to write (a .md of the tables is written beside it)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks and TensorFlow's log")
    p.set_defaults(func=_report, handles_errors=True)
    return parser


CONVERTER_PACKAGES = frozenset({"tensorflow", "keras", "tf2onnx", "tf_keras", "matplotlib", "onnx"})
"""Top-level modules the converter needs beyond the app's runtime (requirements-convert.txt)."""
INSTALL_HINT = "pip install -r requirements-convert.txt (from a clone) or pip install 'featapp[convert]'"


def _missing_package(command: str, model: str = "", models: list[str] | None = None) -> str | None:
    """The first converter package this command needs that is not installed (found without importing it).
    Exporting an ONNX file, or the gradients of models converted from ONNX files, needs onnx
    only (and ONNX Runtime, which the app needs anyway)."""
    import importlib.util

    if (command == "export" and _is_onnx(model)) or (command == "gradients" and _all_from_onnx(models or [])):
        needed = ["onnx"]
    else:
        needed = ["tensorflow", "keras"] + (["tf2onnx"] if command in {"export", "snapshots"} else [])
    for name in needed:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def _all_from_onnx(models: list[str]) -> bool:
    """Whether every file is a featapp model converted from an ONNX file (unreadable ones: no)."""
    from convert.errors import ConversionError

    try:
        from convert.gradients import converted_from_onnx

        return bool(models) and all(converted_from_onnx(name) for name in models)
    except (ImportError, OSError, ValueError, ConversionError):
        return False


def _install_message(missing: str) -> str:
    return f"error: the converter needs {missing}, which is not installed; install its packages with: {INSTALL_HINT}"


VALUE_OPTIONS_THAT_MAY_START_WITH_MINUS = ("--input-range",)
"""Options whose value can start with '-' (``--input-range -1..1``); argparse would take it for an option."""


def attach_minus_values(argv: list[str]) -> list[str]:
    """``--input-range -1..1`` as ``--input-range=-1..1``, the one spelling argparse accepts.

    >>> attach_minus_values(["export", "m.keras", "--input-range", "-1..1"])
    ['export', 'm.keras', '--input-range=-1..1']
    """
    result: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if (
            token in VALUE_OPTIONS_THAT_MAY_START_WITH_MINUS
            and following[:2].startswith("-")
            and following[1:2].isdigit()
        ):
            result.append(f"{token}={following}")
            index += 2
            continue
        result.append(token)
        index += 1
    return result


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, read by :func:`_parser` after :func:`attach_minus_values`."""
    return _parser().parse_args(attach_minus_values(list(sys.argv[1:] if argv is None else argv)))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    missing = _missing_package(args.command, getattr(args, "model", "") or "", getattr(args, "models", None))
    if missing is not None:
        print(_install_message(missing), file=sys.stderr, flush=True)
        return 1
    try:
        if not args.handles_errors:
            return args.func(args)
        try:
            return args.func(args)
        except _user_errors() as err:
            if args.verbose:
                traceback.print_exc()
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 1
    except ModuleNotFoundError as err:
        # The app's install has no TensorFlow: say in one line what to install, not a traceback.
        missing = (err.name or "").split(".")[0]
        if missing not in CONVERTER_PACKAGES or getattr(args, "verbose", False):
            raise
        print(_install_message(missing), file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
