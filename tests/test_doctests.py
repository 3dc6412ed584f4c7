"""The examples in the modules' docstrings are run, so they stay true."""
from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every module of the app with an example in its docstrings (training needs the optional torch extra)
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "explainer").rglob("*.py")
    if ">>> " in p.read_text(encoding="utf-8") and "training" not in p.parts and "migrations" not in p.parts
)


def test_the_examples_are_found():
    assert len(MODULES) >= 5, MODULES


@pytest.mark.django_db
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples fail"
