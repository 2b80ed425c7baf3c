"""The layering rule: the library outside ``featapp/pages`` never loads Streamlit or TensorFlow.

``featapp`` is used from notebooks, the command line and the converter's training loop, where
Streamlit is dead weight and TensorFlow is not installed (``requirements.txt`` has no TensorFlow).
Only ``featapp/pages`` is the Streamlit edge. Each module is imported in a fresh interpreter, so a
module that is clean only because something else imported it first cannot hide a bad import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "featapp"

# Top-level packages the library must not load, directly or through anything it imports.
FORBIDDEN = ("streamlit", "tensorflow", "keras", "tf2onnx")


def library_modules() -> list[str]:
    """Every module of ``featapp`` outside ``featapp/pages``, found on disk (new files count at once).

    ``featapp.__main__`` is left out: importing it runs the command line.
    """
    names = ["featapp"]
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if "pages" in parts[1:] or parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name != "featapp":
            names.append(name)
    return names


CHECK = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = tuple(sys.argv[2:])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
"""


def forbidden_modules_loaded_by(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module, *FORBIDDEN],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_module_list_covers_the_library_and_leaves_out_the_pages() -> None:
    modules = library_modules()
    assert {"featapp", "featapp.model", "featapp.images", "featapp.render", "featapp.cli"} <= set(modules)
    assert not [m for m in modules if m.startswith("featapp.pages") or m == "featapp.__main__"]


@pytest.mark.parametrize("module", library_modules())
def test_importing_a_library_module_loads_no_streamlit_and_no_tensorflow(module: str) -> None:
    loaded = forbidden_modules_loaded_by(module)
    assert loaded == [], (
        f"importing {module} loads {loaded[:5]}: only featapp/pages may use Streamlit, only convert/ TensorFlow"
    )


def test_the_check_sees_a_forbidden_import() -> None:
    # The control: the pages are the Streamlit edge, so the same check must report Streamlit there.
    # Without this a check that never finds anything (a wrong module list, a broken filter) would pass.
    # caches.py is a module of helpers; the page files are scripts that draw when imported.
    assert "streamlit" in forbidden_modules_loaded_by("featapp.pages.caches")
