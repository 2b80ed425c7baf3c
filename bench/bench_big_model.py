"""Big models through the converter, before and after receptive fields followed the graph
(issue 25): how long a conversion takes and how many spatial layers get a receptive field.

Two models: Keras' ``MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35)``
(``convert.export``, needs TensorFlow) and the ~150-layer MobileNetV2-shaped ONNX file of
``many_blocks`` of ``tests/helpers/onnxgraphs.py`` (``convert.onnx_source``). Each conversion runs in a
fresh Python process, without the gradient model; "before" is the checkout at ``--before``
(unpacked with ``git archive``), "after" the working tree.

    python bench/bench_big_model.py            # writes bench/results/big_model.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import cpu_name  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "big_model.md"

CONVERT = {
    "Keras MobileNetV2 (alpha 0.35, 96 x 96)": """
        import keras
        from convert.export import ExportOptions, export_model
        started = time.perf_counter()
        model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=3)
        spec = export_model(model, OUT, ExportOptions(class_names=("a", "b", "c"), gradients=False), log=lambda _: None)
    """,
    "ONNX many_blocks (PyTorch names, 32 x 32)": """
        from convert.onnx_source import OnnxOptions, export_onnx
        sys.path.insert(0, HELPERS)
        from tests.helpers.onnxgraphs import many_blocks
        source = many_blocks(Path(OUT).with_name("source.onnx"))
        started = time.perf_counter()
        spec = export_onnx(source, OUT, OnnxOptions(gradients=False), log=lambda _: None)
    """,
}


def _run(code: Path, body: str, out: Path) -> dict:
    script = (
        "import json, sys, time\nfrom pathlib import Path\n"
        f"OUT, HELPERS = {str(out)!r}, {str(REPO_ROOT)!r}\nbegun = time.perf_counter()\n"
        + textwrap.dedent(body)
        + "spatial = [layer for layer in spec.layers if layer.is_spatial]\n"
        "print(json.dumps({'convert_s': time.perf_counter() - started, 'total_s': time.perf_counter() - begun,"
        " 'layers': len(spec.layers), 'spatial': len(spatial),"
        " 'with_field': sum(layer.receptive_field is not None for layer in spatial)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=code,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(code)},
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f24dd97", help="the revision to compare with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="featapp-bench-") as folder:
        before = Path(folder) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=REPO_ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        for name, body in CONVERT.items():
            for label, code in (("before", before), ("after", REPO_ROOT)):
                result = _run(code, body, Path(folder) / f"{label}.onnx")
                rows.append((name, label, result))
                print(name, label, result, flush=True)
    lines = [
        "# Big models through the converter",
        "",
        f"`python bench/bench_big_model.py` on {cpu_name()}; before = `{args.before}`, after = the working tree.",
        "Each conversion in a fresh process, without the gradient model. Conversion: the converter's call (for Keras,",
        "with building the model); process: from the first import (TensorFlow's for Keras) to the end.",
        "",
        "| model | code | layers | spatial layers with a receptive field | conversion | process |",
        "|---|---|---|---|---|---|",
    ]
    for name, label, r in rows:
        lines.append(
            f"| {name} | {label} | {r['layers']} | {r['with_field']} of {r['spatial']} "
            f"| {r['convert_s']:.1f} s | {r['total_s']:.1f} s |"
        )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
