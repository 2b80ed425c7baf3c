"""torchvision's models through featapp's converter, both PyTorch exporters (issue 25).

    # where PyTorch is installed (run by hand; never in CI, never in requirements):
    python bench/bench_torch_models.py export --out /tmp/torch_exports
    # with featapp's own environment (onnx and ONNX Runtime only):
    python -m bench.bench_torch_models convert /tmp/torch_exports   # writes bench/results/torch_models.md

``export`` writes resnet18, mobilenet_v2, mobilenet_v3_small and efficientnet_b0 (random
weights, 224 x 224, a free batch axis) with the legacy exporter and the dynamo exporter (whose
weights go to ``NAME.onnx.data``). ``convert`` runs ``python -m convert export`` on each in a
fresh process with torchvision's preprocessing flags, and records the wall time (forward check
and gradient check included), the layers shown, how many spatial layers have a receptive field,
and whether a gradient model was written; then it opens each converted model and computes
activations, a saliency map and Grad-CAM on one random picture, as the app would, and opens every page of the app on it (AppTest).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"]
EXPORTERS = ["legacy", "dynamo"]
IMAGENET = ["--input-range", "0..1", "--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225"]
REPO = Path(__file__).resolve().parent.parent


def export(out: Path) -> None:
    import torch
    import torchvision

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in MODELS:
        model = getattr(torchvision.models, name)(weights=None).eval()
        example = (torch.rand(1, 3, 224, 224),)
        torch.onnx.export(
            model,
            example,
            out / f"{name}_legacy.onnx",
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        torch.onnx.export(
            model,
            example,
            out / f"{name}_dynamo.onnx",
            dynamo=True,
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        )
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)


def _views(path: Path) -> str:
    """Run what the app runs on one picture; 'all' or the first view that failed."""
    import numpy as np

    from featapp.engine.model import load_model
    from featapp.explain.gradcam import gradcam
    from featapp.explain.gradients import load_gradients
    from featapp.explain.saliency import saliency

    model = load_model(path, provider="cpu")
    size = model.input_spec
    picture = np.random.default_rng(0).integers(0, 256, (1, size.height, size.width, 3), np.uint8)
    maps = model.activations(picture)
    if not all(np.isfinite(value).all() for value in maps.values()):
        return "activations not finite"
    try:
        grads = load_gradients(model)
        saliency(grads, picture[0])
        gradcam(grads, picture[0])
    except Exception as err:  # noqa: BLE001 - the report names whatever stopped a view
        return f"{type(err).__name__}: {str(err)[:80]}"
    return "all"


def _pages(path: Path) -> str:
    """Open every page of the app on the converted model (AppTest, server-drawn views): 'all'
    or the pages that showed an exception element."""
    import os
    import tempfile

    from streamlit.testing.v1 import AppTest

    from featapp.app.chrome import PAGE_FILES
    from featapp.engine.model import load_model

    failed = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(
            FEATAPP_MODEL=str(path),
            FEATAPP_CACHE_DIR=cache,
            FEATAPP_PROVIDER="cpu",
            FEATAPP_MAP_VIEW="server",
            FEATAPP_DATA_DIR=str(REPO.parent / "shared" / "data" / "cats_vs_dogs"),
        )
        at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=180)
        at.run()
        layers = set(load_model(path, provider="cpu").layer_names)
        for page in PAGE_FILES:
            at.switch_page(PAGE_FILES[page]).run()
            offered = {option.split(" · ")[-1] for box in at.selectbox for option in box.options}
            # The feature map's layer picker offers this model's layers (not the missing-model page).
            if at.exception or not at.title or (page == "feature_map" and not offered & layers):
                failed.append(page)
    return "all" if not failed else "exception on " + ", ".join(failed)


def convert(folder: Path, report: Path) -> None:
    from bench.machine import cpu_features, cpu_name, load_average
    from featapp.engine.model import load_model

    rows = []
    load = load_average()
    for name in MODELS:
        for exporter in EXPORTERS:
            source, out = folder / f"{name}_{exporter}.onnx", folder / "converted" / f"{name}_{exporter}.onnx"
            out.parent.mkdir(exist_ok=True)
            command = [sys.executable, "-m", "convert", "export", str(source), "--out", str(out), *IMAGENET]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                rows.append(f"| {name} | {exporter} | failed: {done.stderr.strip().splitlines()[-1][:120]} | | | | | |")
                continue
            model = load_model(out, provider="cpu")
            spatial = [layer for layer in model.layers if layer.is_spatial]
            fields = sum(layer.receptive_field is not None for layer in spatial)
            gradient = "yes" if out.with_suffix(".grad.onnx").is_file() else "no"
            views = _views(out) if gradient == "yes" else "no gradient model"
            params = sum(layer.params for layer in model.layers)
            pages = _pages(out)
            rows.append(
                f"| {name} | {exporter} | {len(model.layers)} | {params / 1e6:.1f} M | {seconds:.0f} s "
                f"| {gradient} | {fields} of {len(spatial)} | {views} | {pages} |"
            )
            print(rows[-1], flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            "# torchvision's models through `python -m convert export` (issue 25)",
            "",
            f"{stamp}; {cpu_name()} ({cpu_features()}), {load}; `python -m bench.bench_torch_models convert`.",
            "Random weights, 224 x 224, exported by PyTorch 2.14.1 (torchvision 0.29.1) with each exporter;",
            "time = one `python -m convert export` in a fresh process (forward check and gradient check included).",
            "Views = activations, saliency and Grad-CAM of one random picture through the converted files;",
            "pages = every page of the app opened in AppTest on the converted model, with its title and no exception element.",
            "",
            "| model | exporter | layers shown | parameters | time | gradient model | receptive fields | views | pages |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    report.write_text(text)
    print(f"wrote {report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export").add_argument("--out", type=Path, required=True)
    p = sub.add_parser("convert")
    p.add_argument("folder", type=Path)
    p.add_argument("--report", type=Path, default=REPO / "bench" / "results" / "torch_models.md")
    args = parser.parse_args()
    if args.command == "export":
        export(args.out)
    else:
        convert(args.folder, args.report)


if __name__ == "__main__":
    main()
