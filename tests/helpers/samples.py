"""A small scanned sample of the shared photos: a few photos a class of the test split, copied
into a test's folder and scanned with the real model into a cache folder beside them, so a
page that needs a scan (One neuron's ranking and quiz, Cats vs dogs) is ready in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path


def scanned_sample(work: Path, dataset, model, per_class: int = 4, seed: int = 6) -> tuple[Path, Path]:
    """``per_class`` photos of each class of ``dataset``'s test split copied to ``work/photos``
    and scanned into ``work/cache``; returns both folders (``FEATAPP_DATA_DIR`` and
    ``FEATAPP_CACHE_DIR`` for the app)."""
    from featapp.data.dataset import Dataset
    from featapp.stats.analysis import load_or_scan

    root = work / "photos"
    for image in dataset.sample("test", per_class=per_class, seed=seed):
        target = root / "test" / image.class_name / image.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, target)
    load_or_scan(model, Dataset(root), "test", work / "cache")
    return root, work / "cache"
