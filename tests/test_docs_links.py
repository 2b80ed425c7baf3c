"""Every relative link in the repository's Markdown leads somewhere: a file, and a heading if it names one.

The docs were split into ``docs/`` pages that link to each other and into the code; a moved
file or a renamed heading would otherwise leave a newcomer at a dead link.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    """The Markdown files git tracks or would track (not ignored ones such as test artifacts)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO_ROOT / name for name in sorted(listed) if (REPO_ROOT / name).is_file()]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.

    >>> anchor("How many students one process serves")
    'how-many-students-one-process-serves'
    >>> anchor("Tests, CI and benchmarks")
    'tests-ci-and-benchmarks'
    """
    text = CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def links_of(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = CODE_SPAN.sub("", text)
    return [m.group(1) for m in LINK.finditer(text)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links_of(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # http:, https:, mailto:: not checked (no network)
        file_part, _, fragment = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and destination.suffix == ".md" and fragment not in anchors_of(destination):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_checker_finds_a_broken_link_and_accepts_a_good_one(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading, with `code`\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-heading-with-code) [ok](#mine) [web](https://example.org)\n"
        "# Mine\n[gone](missing.md) [bad](other.md#nowhere)\n```\n[in code](ignored.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nowhere (no such heading)"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


# -- every file and module a page or a docstring names exists ---------------------------------------------
# A path of the repository (featapp/app/caches.py, bench/results/load_50.md, docs/, models/...) or a dotted
# featapp or convert name (featapp.app.caches, featapp.engine.model.load_model), in Markdown or in a
# Python docstring or comment.
# Not after a quote: a string (a node's name, an example argument) is not a reference.
NAMED_PATH = re.compile(r"(?<![\w./\"'-])((?:featapp|convert|bench|tests|docs|deploy|models)/[\w./-]*[\w/])")


def _without_doctests(text: str) -> str:
    """Doctest examples and their output name made-up files (``models/resnet18.onnx``)."""
    kept, skip_output = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith((">>>", "...")):
            skip_output = True
            continue
        if skip_output and stripped:
            skip_output = False
            continue
        kept.append(line)
    return "\n".join(kept)


# Not after a quote: a string such as a session-state key or a frame's title is not a reference.
NAMED_MODULE = re.compile(r"(?<![\w./\"'=-])((?:featapp|convert)(?:\.[A-Za-z_]\w*)+)(?!\.(?:org|com)\b)")
NOT_PATHS = ("featapp/models/",)  # the installed package's folder for models/ (pyproject.toml)


def _sources() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md", "*.py", "*.toml", ".ci/run"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO_ROOT / n for n in sorted(listed) if (REPO_ROOT / n).is_file() and not n.startswith("tests/")]


def _path_exists(named: str, source: Path) -> bool:
    named = named.rstrip(".")
    if named.startswith(NOT_PATHS) or any(ch in named for ch in "*{<") or "XXX" in named:
        return True
    if source.parent.name == "bench" and named.startswith("bench/results/"):
        return True  # a benchmark script names the results it writes
    return (REPO_ROOT / named).exists() or any(REPO_ROOT.glob(named + "*"))


def _module_exists(named: str) -> bool:
    import importlib

    parts = named.rstrip(".").split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        file = REPO_ROOT.joinpath(*parts[:cut])
        if file.with_suffix(".py").is_file() or (file / "__init__.py").is_file():
            try:
                value = importlib.import_module(module)
            except ImportError:
                return False  # a module that cannot be imported here (TensorFlow) counts as missing only if absent
            for attribute in parts[cut:]:
                if attribute in getattr(value, "__dataclass_fields__", {}) or _set_in_init(value, attribute):
                    return True
                if not hasattr(value, attribute):
                    return False
                value = getattr(value, attribute)
            return True
    return False


def test_every_file_and_module_named_in_the_docs_and_the_code_exists() -> None:
    missing = []
    for source in _sources():
        text = _without_doctests(source.read_text(encoding="utf-8"))
        for named in set(NAMED_PATH.findall(text)):
            if not _path_exists(named, source):
                missing.append(f"{source.relative_to(REPO_ROOT)}: {named}")
        for named in set(NAMED_MODULE.findall(text)):
            if named.endswith((".org", ".com")) or named.startswith("featapp.models"):
                continue  # a host name; the installed package's models folder
            if not _module_exists_cached(named):
                missing.append(f"{source.relative_to(REPO_ROOT)}: {named}")
    assert not missing, "named but not there:\n" + "\n".join(sorted(missing))


def _set_in_init(cls: object, attribute: str) -> bool:
    """An instance attribute its class's ``__init__`` sets (``self.paths = ...``)."""
    import inspect

    init = getattr(cls, "__init__", None)
    try:
        return isinstance(cls, type) and f"self.{attribute} =" in inspect.getsource(init)
    except (OSError, TypeError):
        return False


_KNOWN: dict[str, bool] = {}


def _module_exists_cached(named: str) -> bool:
    if named not in _KNOWN:
        _KNOWN[named] = _module_exists(named)
    return _KNOWN[named]
