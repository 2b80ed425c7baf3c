"""A missing or damaged model file gives a page that says how to fix it, never a traceback (AppTest).

``tests/app/test_app.py`` covers a missing file and random text named ``.onnx``; here are the
other ways a model file goes wrong: a Git LFS pointer (a clone without LFS), cut off (an
interrupted copy or download), empty, a folder, a plain ONNX model without featapp's
metadata, and damaged metadata. After the fix, a reload brings the app back. The same
files against the real server, in a browser, are in ``tests/e2e/test_robustness_browser.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import modelfactory as tiny
from tests.helpers.appmodels import COMMITTED_MODEL
from tests.helpers.apptest import APP, TIMEOUT, main_text


def _truncated(path: Path) -> None:
    data = COMMITTED_MODEL.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _folder(path: Path) -> None:
    path.mkdir()


def _no_metadata(path: Path) -> None:
    tiny.build(tiny.TinyNet(), path, metadata=None)


def _damaged_metadata(path: Path) -> None:
    tiny.build(tiny.TinyNet(), path, metadata="{not json")


BROKEN_MODELS: dict[str, tuple[Callable[[Path], None] | None, str]] = {
    # problem: (how to make the file at the path (None: leave it missing), what the page must say)
    "missing": (None, "No model file"),
    "text": (
        lambda path: path.write_text("version https://git-lfs.github.com/spec/v1\n"),
        "not a model ONNX Runtime can load",
    ),
    "truncated": (_truncated, "not a model ONNX Runtime can load"),
    "empty": (lambda path: path.write_bytes(b""), "not a model ONNX Runtime can load"),
    "folder": (_folder, "No model file"),
    "no-featapp-metadata": (_no_metadata, "not one converted for featapp"),
    "damaged-metadata": (_damaged_metadata, "metadata is damaged"),
}
COVERED_BY_TEST_APP = {"missing"}


def make_broken_model(problem: str, path: Path) -> Path:
    build, _ = BROKEN_MODELS[problem]
    if build is not None:
        build(path)
    return path


@pytest.mark.parametrize("problem", [p for p in BROKEN_MODELS if p not in COVERED_BY_TEST_APP])
def test_a_broken_model_gives_a_fix_it_page(app_env, monkeypatch, problem):
    path = make_broken_model(problem, app_env / "model.onnx")
    monkeypatch.setenv("FEATAPP_MODEL", str(path))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "cannot start" in at.title[0].value
    assert len(at.error) == 1 and BROKEN_MODELS[problem][1] in at.error[0].value
    text = main_text(at)
    assert "How to fix it" in text and "FEATAPP_MODEL" in text and "convert export" in text
    assert "Traceback" not in text and 'File "' not in text
    # Fixing the file and reloading brings the app back (the model cache keys on the file's time and size).
    if path.is_dir():
        path.rmdir()
    path.write_bytes(COMMITTED_MODEL.read_bytes())
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert "Gallery" in at.title[0].value
