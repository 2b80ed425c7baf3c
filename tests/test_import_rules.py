"""The house rules: which folder of ``featapp`` may load what (``docs/architecture.md``).

``featapp`` is used from notebooks, the command line and the converter's training loop, where
Streamlit is dead weight and TensorFlow is not installed (``requirements.txt`` has no TensorFlow).
Only ``featapp/app`` is the Streamlit edge. Each module is imported in a fresh interpreter, so a
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

# What each folder must never load, directly or through anything it imports. The library's
# top-level modules (featapp.cache, featapp.settings, featapp.errors) count as engine.
NO_APP = ("streamlit", "tensorflow", "keras", "tf2onnx")
RULES: dict[str, tuple[str, ...]] = {
    "engine": (*NO_APP, "featapp.render", "featapp.app", "featapp.explain", "featapp.stats", "featapp.cli"),
    "explain": (*NO_APP, "featapp.render", "featapp.app", "featapp.cli"),
    "data": (*NO_APP, "featapp.app", "featapp.cli"),
    "stats": (*NO_APP, "featapp.app", "featapp.cli"),
    "render": (*NO_APP, "onnxruntime", "featapp.app", "featapp.cli"),
    "cli": (*NO_APP, "featapp.app"),
    "app": ("tensorflow", "keras", "tf2onnx"),
    # `import featapp` gathers the library's public names from every folder but the app's.
    "package": (*NO_APP, "featapp.app", "featapp.cli"),
}


def folder_of(module: str) -> str:
    if module == "featapp":
        return "package"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RULES) else "engine"


def importable_modules() -> list[str]:
    """Every importable module of ``featapp``, found on disk (new files count at once).

    Left out: ``featapp.__main__`` (importing it runs the command line) and the page scripts in
    ``featapp/app/pages`` (scripts, run by ``st.navigation``; importing one draws a page).
    """
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if parts[-1] == "__main__" or (parts[1:3] == ("app", "pages") and parts[-1] != "__init__"):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


CHECK = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = tuple(sys.argv[2:])
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))))
"""


def forbidden_modules_loaded_by(module: str, forbidden: tuple[str, ...]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module, *forbidden],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_module_list_covers_every_folder_and_leaves_out_the_page_scripts() -> None:
    modules = importable_modules()
    assert {"featapp", "featapp.engine.model", "featapp.engine.images", "featapp.render", "featapp.cli"} <= set(modules)
    assert {folder_of(m) for m in modules} == set(RULES)
    assert not [m for m in modules if m.startswith("featapp.app.pages.") or m == "featapp.__main__"]


@pytest.mark.parametrize("module", importable_modules())
def test_a_module_loads_nothing_its_folder_must_not(module: str) -> None:
    folder = folder_of(module)
    loaded = forbidden_modules_loaded_by(module, RULES[folder])
    assert loaded == [], f"importing {module} ({folder}/) loads {loaded[:5]}: docs/architecture.md says it must not"


def test_the_check_sees_a_forbidden_import() -> None:
    # The control: the app is the Streamlit edge, so the same check must report Streamlit there.
    # Without this a check that never finds anything (a wrong module list, a broken filter) would pass.
    assert "streamlit" in forbidden_modules_loaded_by("featapp.app.caches", NO_APP)


def test_page_scripts_live_only_in_app_pages_and_helpers_only_outside_it() -> None:
    # A page script calls st.navigation's page API at its top level; a helper module defines things.
    for path in sorted((PACKAGE / "app" / "pages").glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        assert "import streamlit as st" in text, f"{path.name} is in app/pages but is not a page script"
    for path in sorted((PACKAGE / "app").glob("*.py")):
        assert "st.navigation" not in path.read_text() or path.name == "chrome.py", path.name


def test_every_user_facing_error_derives_from_one_base() -> None:
    """The app and the CLI show a FeatappError's message as advice; every error class of the
    library and the converter must be one, so none slips through as "a bug in featapp"."""
    import ast

    found = {}
    for folder in (PACKAGE, REPO_ROOT / "convert"):
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and not node.name.startswith("_"):
                    found[node.name] = path
    assert {"ImageError", "ModelError", "DatasetError", "DownloadError", "ConversionError"} <= set(found)
    import convert.errors
    import featapp

    for name, path in found.items():
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        cls = getattr(__import__(module, fromlist=[name]), name)
        assert issubclass(cls, featapp.FeatappError), f"{name} ({path.name}) does not derive from FeatappError"
    assert issubclass(convert.errors.ConversionError, featapp.FeatappError)


def test_every_streamlit_cache_is_in_the_apps_cache_module() -> None:
    """One place holds every ``st.cache_*`` (what is kept, for how long, keyed on what), so the
    memory a class can make the server hold is read in one file."""
    import re

    pattern = re.compile(r"st\.cache_(data|resource)")
    elsewhere = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "app" / "caches.py" and pattern.search(path.read_text())
    ]
    assert elsewhere == [], f"st.cache_* outside featapp/app/caches.py: {elsewhere}"
    assert pattern.search((PACKAGE / "app" / "caches.py").read_text())


def test_the_converters_steps_do_not_import_each_other_in_a_circle() -> None:
    """export (Keras) uses gradients; gradients and onnx_source take shared helpers from
    convert.common, never from export, so the pipeline reads top-down."""
    import ast

    def imports(name: str) -> set[str]:
        tree = ast.parse((REPO_ROOT / "convert" / f"{name}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "convert.export" not in imports("gradients")
    assert "convert.export" not in imports("common") and "convert.gradients" not in imports("common")
