"""The command line: ``python -m featapp COMMAND ...`` (``--help`` on each command).

Commands:

* ``predict IMAGE... [--json]``: label and probability per file.
* ``activations IMAGE... --out acts.npz``: every layer's activations in one ``.npz``.
* ``scan DATA_DIR [--split S]``: build the neuron statistics, with a progress bar.
* ``top --layer L --channel C [--k 9] [--out grid.png]``: the images that excite a
  channel most, with the input box that drove each one; optionally as a picture.
* ``classes --layer L [--split S] [--json]``: which channels of a layer fire for one
  class rather than the other (per-class means, AUC, standardized difference), from the scan.
* ``info [IMAGE...] [--split S]``: the model's layers, input, classes and execution
  provider; with images or a scanned split, how alive each layer is (channels that never
  fire, constant maps, sparsity).
* ``download-photos [--dest DIR] [--source S] [--archive FILE]``: the course photos in one step.
* ``trained-on-hashes FOLDER...``: the sha256 list of the photos the model was fitted on.
* ``saliency IMAGE --out FILE.png [--method smoothgrad|plain|gradcam]``: which pixels the
  predicted class depends on, laid over the photo (needs ``MODEL.grad.onnx``).
* ``visualize --layer L --channel C --out FILE.png``: the picture channel C of layer L
  responds to most (feature visualisation by gradient ascent).
* ``atlas [MODEL] [--out FILE] [--layers L,L]``: every conv channel's picture at the app's
  settings, in ``MODEL.atlas.zip`` beside the model (resumable; the app shows it at once).

Channels are counted **from 1** on the command line, as students say "channel 1 of
layer 1"; the library (``acts["conv2d"][i, 0]``, ``stats.top_k("conv2d", 0)``) counts
from 0. ``top`` prints both.

Exit status: 0 when everything worked; 1 when any file or the command failed (each
failure is one line on stderr, no traceback unless ``--verbose``); 2 for a wrong
command line; 130 when interrupted.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence

from featapp.cli.commands import ACTIVATION_META_KEYS, TextProgress, _error, _tidy_cache
from featapp.cli.parser import build_parser
from featapp.errors import FeatappError

__all__ = ["main", "build_parser", "TextProgress", "ACTIVATION_META_KEYS"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = args.verbose or args.verbose_everywhere
    logging.basicConfig(level=logging.WARNING, format="note: %(message)s", stream=sys.stderr)

    try:
        _tidy_cache(args)
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FeatappError as err:  # a user can cause it and fix it: the message says how
        if args.verbose:
            traceback.print_exc()
        _error(str(err))
        return 1
    except OSError as err:
        # Files the user named: a folder that cannot be written, a full disk.
        if args.verbose:
            traceback.print_exc()
        where = f" '{err.filename}'" if err.filename else ""
        _error(f"cannot use{where}: {err.strerror or err}")
        return 1
    except Exception as err:  # noqa: BLE001 - reported, not hidden: --verbose shows the traceback
        if args.verbose:
            raise
        _error(
            f"unexpected {type(err).__name__}: {err}. This is a bug in featapp; run again with --verbose for the traceback."
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
