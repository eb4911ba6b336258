"""Find domains through the ``omnidiff.domains`` entry-point group, lazily.

A plugin that fails to import, or that lacks part of the :class:`~omnidiff.plugins.contract.Domain`
contract, is reported by name and never breaks the other domains.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from omnidiff.errors import PluginError, UnknownDomainError
from omnidiff.plugins.contract import REQUIRED_ATTRS, Domain

__all__ = ["GROUP", "DomainInfo", "UnknownDomainError", "DomainContractError", "available",
           "get_domain", "describe"]

GROUP = "omnidiff.domains"


DomainContractError = PluginError  # the name this module used before omnidiff.errors


@dataclass(frozen=True)
class DomainInfo:
    name: str
    value: str  # "module:attr"
    package: str | None
    version: str | None


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)  # first on sys.path wins, like imports
    return found


def available() -> dict[str, DomainInfo]:
    """Registered domain names (nothing is imported)."""
    out = {}
    for name, ep in sorted(_entry_points().items()):
        dist = getattr(ep, "dist", None)
        out[name] = DomainInfo(name, ep.value, dist.name if dist else None,
                               dist.version if dist else None)
    return out


_cache: dict[str, Domain] = {}


def _load(ep: EntryPoint) -> Domain:
    obj = ep.load()
    domain = obj() if isinstance(obj, type) else obj
    missing = [a for a in REQUIRED_ATTRS if not hasattr(domain, a)]
    if missing:
        raise DomainContractError(
            f"domain plugin {ep.name!r} ({ep.value}) lacks {', '.join(missing)}; "
            "see omnidiff.plugins.contract.Domain for the contract")
    if getattr(domain, "name", None) != ep.name:
        raise DomainContractError(
            f"domain plugin {ep.name!r} ({ep.value}) calls itself "
            f"{getattr(domain, 'name', None)!r}; the entry-point name and Domain.name must agree")
    return domain


def get_domain(name: str) -> Domain:
    """The domain registered under ``name``; a clear one-line error otherwise."""
    if name in _cache:
        return _cache[name]
    eps = _entry_points()
    if name not in eps:
        names = ", ".join(sorted(eps)) or "none"
        raise UnknownDomainError(
            f"unknown domain {name!r}; installed domains: {names} "
            "(a plugin registers under the entry-point group 'omnidiff.domains')")
    try:
        domain = _load(eps[name])
    except PluginError:
        raise
    except Exception as exc:  # a broken plugin is reported by name (a stray TypeError too)
        raise PluginError(f"domain plugin {name!r} ({eps[name].value}) failed to load: "
                           f"{type(exc).__name__}: {exc}") from exc
    _cache[name] = domain
    return domain


def describe() -> list[dict[str, str | None]]:
    """One row per registered domain: name, origin, status (``ok`` or the error)."""
    rows = []
    for name, info in available().items():
        try:
            get_domain(name)
            status = "ok"
        except Exception as exc:
            status = f"broken: {exc}"
        rows.append({"name": name, "package": info.package, "version": info.version,
                     "value": info.value, "status": status})
    return rows
