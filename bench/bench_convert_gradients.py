"""How long converting a MobileNet takes, gradient model included (issue 25).

    python -m bench.bench_convert_gradients            # writes bench/results/convert_gradients.md
    python -m bench.bench_convert_gradients --quick    # only the small ONNX network, numbers not for quoting

Conversions, each once (a conversion is a one-time step, so its wall time is the figure):

1. ``keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))`` through
   ``python -m convert export`` (``convert.export.export_model``): the forward export and its
   check against Keras, the backward graph, and its check against ``tf.GradientTape``, which
   replays the graph once per target (every conv layer and the logit);
2. the MobileNet-style network of ``tests/helpers/gradgraphs.py`` (depthwise conv, ReLU6,
   Pad, Concat, HardSwish, a squeeze-and-excitation gate) through the ONNX import path
   (``convert.onnx_source.export_onnx``), checked by finite differences;
3. Keras MobileNetV2, ResNet50 (caffe-style flags) and DenseNet121 at 224 x 224 (``weights=None``)
   saved by ``model.export(format="onnx")`` (opset 15), then the ONNX import path; the time is
   that of ``python -m convert export FILE.onnx`` (the Keras export is not counted).

Each phase is timed from the converter's own log lines. The machine is described in the report.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bench.machine import cpu_features, cpu_name, load_average

REPO = Path(__file__).resolve().parent.parent
PHASES = {
    "Verifying ONNX Runtime against Keras": "forward check against Keras",
    "Verifying the converted graph": "forward check against the source file",
    "Writing the gradient model": "building the backward graph",
    "Verifying the gradient graph": "gradient check against tf.GradientTape",
    "Checking the gradient graph": "gradient check against finite differences",
}
"""The converter's log lines that start each phase, and what the phase is called here."""


def timed_log(lines: list[tuple[float, str]]) -> Callable[[str], None]:
    def log(text: str) -> None:
        lines.append((time.perf_counter(), text))

    return log


def phases(start: float, lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Seconds from each phase's first log line to the next one's (the last ends at the last line)."""
    marks = [(start, "reading the model and building the forward graph")]
    for stamp, text in lines:
        marks.extend((stamp, name) for prefix, name in PHASES.items() if text.startswith(prefix))
    marks.append((lines[-1][0], "end"))
    return [(name, later - stamp) for (stamp, name), (later, _) in zip(marks, marks[1:], strict=False)]


def keras_mobilenet(folder: Path) -> tuple[float, list[tuple[str, float]], int]:
    import keras

    from convert.export import ExportOptions, export_model
    from featapp.explain.backward import gradient_path

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=3)
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    export_model(model, folder / "mobilenet_v2.onnx", ExportOptions(), log=timed_log(lines))
    total = time.perf_counter() - start
    targets = sum(text.startswith("  d(") for _, text in lines)
    assert gradient_path(folder / "mobilenet_v2.onnx").is_file()
    return total, phases(start, lines), targets


def onnx_mobilenet(folder: Path) -> tuple[float, list[tuple[str, float]]]:
    from convert.onnx_source import OnnxOptions, export_onnx
    from featapp.explain.backward import gradient_path
    from tests.helpers.gradgraphs import mobilenet_like

    source = mobilenet_like(folder / "mobilenet_like.onnx")
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    export_onnx(source, folder / "mobilenet_like_featapp.onnx", OnnxOptions(), log=timed_log(lines))
    total = time.perf_counter() - start
    assert gradient_path(folder / "mobilenet_like_featapp.onnx").is_file()
    return total, phases(start, lines)


def keras_application_via_onnx(name: str, folder: Path) -> tuple[float, list[tuple[str, float]], str]:
    import keras
    import numpy as np

    from convert.onnx_source import OnnxOptions, export_onnx
    from featapp.explain.backward import gradient_path

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None)
    model(np.zeros((1, 224, 224, 3), np.float32))  # model.export needs a model that was called
    source = folder / f"{name}.onnx"
    model.export(str(source), format="onnx", verbose=False)
    options = {
        "MobileNetV2": OnnxOptions(input_range="-1..1"),
        "ResNet50": OnnxOptions(input_range="0..255", channel_order="BGR", mean=(103.939, 116.779, 123.68)),
        "DenseNet121": OnnxOptions(),
    }[name]
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    spec = export_onnx(source, folder / f"{name}_featapp.onnx", options, log=timed_log(lines))
    total = time.perf_counter() - start
    written = gradient_path(folder / f"{name}_featapp.onnx").is_file()
    return (
        total,
        phases(start, lines),
        f"{len(spec.layers)} layers shown; gradient model {'written' if written else 'not written'}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the small ONNX network; nothing written")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "convert_gradients.md")
    args = parser.parse_args(argv)
    load, started = load_average(), datetime.now(timezone.utc)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        total, parts = onnx_mobilenet(Path(tmp))
        rows.append(
            ("MobileNet-style network, 32 x 32, ONNX import path (tests/helpers/gradgraphs.py)", total, parts, "")
        )
        if not args.quick:
            total, parts, targets = keras_mobilenet(Path(tmp))
            rows.append(("Keras MobileNetV2, 96 x 96, weights=None", total, parts, f"{targets} targets checked"))
            for name in ("MobileNetV2", "ResNet50", "DenseNet121"):
                total, parts, note = keras_application_via_onnx(name, Path(tmp))
                rows.append((f"Keras {name}, 224 x 224, via model.export, ONNX import path", total, parts, note))
    report = [
        "# Converting a MobileNet, gradient model included",
        "",
        f"Machine: {cpu_name()} ({cpu_features()}), {started:%Y-%m-%d %H:%M} UTC, "
        f"load average at the start {load[0] if load else float('nan'):.1f}",
        "Command: `python -m bench.bench_convert_gradients`; each conversion once, timed from its own log lines;",
        "other work (a training run) shared the machine.",
        "",
        "| conversion | total | phases |",
        "|---|---:|---|",
    ]
    for name, total, parts, note in rows:
        split = "; ".join(f"{label} {seconds:.1f} s" for label, seconds in parts)
        report.append(f"| {name} | {total:.1f} s | {split}{'; ' + note if note else ''} |")
    text = "\n".join(report) + "\n"
    print(text)
    if not args.quick:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
