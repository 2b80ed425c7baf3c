"""Command line of the converter pipeline."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train(args: argparse.Namespace) -> int:
    from convert.train import TrainConfig, train

    config = TrainConfig(
        data_dir=args.data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        mixed_precision=args.bfloat16,
        refit=args.refit,
        limit_per_class=args.limit_per_class,
        snapshot_epochs=tuple(sorted(set(args.snapshot_epochs))),
    )
    train(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the lecture's cats-vs-dogs convnet")
    p.add_argument("data_dir", help="dataset folder with train/ and validation/, each with one folder per class")
    p.add_argument("--out", default="runs/cats_dogs_small", help="run folder (resumes if it exists)")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--bfloat16", action="store_true", help="train in bfloat16 mixed precision (fast only on CPUs with native bfloat16)")
    p.add_argument("--refit", action="store_true", help="after choosing the epoch, fit again on train+validation")
    p.add_argument("--limit-per-class", type=int, default=None, help="use only the first N images per class")
    p.add_argument("--snapshot-epochs", type=int, nargs="*", default=[0, 1, 2, 5, 10])
    p.set_defaults(func=_train)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
