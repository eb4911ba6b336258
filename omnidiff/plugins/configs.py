"""Where a domain's Hydra configs live: its ``config_searchpath`` read as a folder, and the
check that it ships ``domain/<name>.yaml`` (used by the contract check and by config
composition)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["package_dir", "searchpath_root", "domain_config_problem"]


def package_dir(module: str):
    """importlib.resources root of a package, or None."""
    try:
        return resources.files(module)
    except (ModuleNotFoundError, TypeError, ValueError):
        return None


def searchpath_root(sp: str):
    """A search-path entry -> a Traversable root (pkg:// or file://), or None."""
    if sp.startswith("pkg://"):
        return package_dir(sp[len("pkg://"):].replace("/", "."))
    if sp.startswith("file://"):
        return Path(sp[len("file://"):])
    return Path(sp)


def domain_config_problem(domain: Any) -> str | None:
    """Why a domain's ``domain/<name>.yaml`` cannot be used (None when it is fine or the
    domain ships no configs)."""
    sp, name = getattr(domain, "config_searchpath", None), domain.name
    if not sp:
        return None
    root = searchpath_root(sp)
    f = root.joinpath("domain", f"{name}.yaml") if root is not None else None
    if f is None or not f.is_file():
        return (f"its config_searchpath {sp!r} has no domain/{name}.yaml (ship it as package "
                "data)")
    if "@package _global_" not in f.read_text(encoding="utf-8"):
        return f"domain/{name}.yaml does not start with '# @package _global_'"
    return None
