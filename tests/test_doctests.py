"""The examples in the library's docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import featapp

LIBRARY_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(featapp.__path__, "featapp.")
    if not info.name.startswith("featapp.app") and info.name != "featapp.__main__"
)


@pytest.mark.parametrize("name", LIBRARY_MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run with -s)"
