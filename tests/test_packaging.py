"""Every Python package in the source tree is listed in pyproject.toml, so wheels ship it
(the list is explicit because of the package-dir mapping; an editable install would not
notice a missing entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]


def test_all_packages_are_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, mapping = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages: {missing}"
