"""What every ``omnidiff`` command shares: ``key=value`` arguments and the errors that end in
one line on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omnidiff._util import INT64_MAX, number_problem
from omnidiff.errors import UsageError

__all__ = ["parse_value", "key_values", "number", "out_folder"]


def parse_value(text: str) -> Any:
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def key_values(args: Sequence[str], allowed: set[str], command: str,
               prefixes: tuple[str, ...] = (), text: Sequence[str] = ()) -> dict[str, Any]:
    """``key=value`` arguments (values parsed as YAML, except the keys in ``text``, kept as
    written: a prompt such as ``left: 3, right: 7``); keys from ``allowed`` or starting with
    one of ``prefixes``."""
    keys = ", ".join(sorted(allowed) + [f"{p}KEY" for p in prefixes])
    out = {}
    for a in args:
        if "=" not in a:
            raise UsageError(f"bad argument {a!r} for `omnidiff {command}`; write key=value "
                             f"(keys: {keys})")
        k, v = a.split("=", 1)
        if k not in allowed and not (prefixes and k.startswith(prefixes)):
            raise UsageError(f"unknown option {k!r} for `omnidiff {command}`; choose from: "
                             f"{keys}")
        out[k] = v if k in text else parse_value(v)
    return out


def out_folder(value: Any, default: Path) -> Path:
    """``out=``: a folder to write into (created); an existing file is a mistake."""
    out = Path(str(value)).expanduser() if value not in (None, "") else default
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={str(out)!r} is a file; pass a folder to write the samples into")
    return out


def number(opts: dict[str, Any], key: str, kind: type, default: Any, low: float) -> Any:
    """``opts[key]`` as an ``int`` or ``float`` of at least ``low`` (``default`` when absent or
    null); anything else is a one-line usage error naming the key."""
    value = opts.get(key)
    if value is None:
        return default
    problem = number_problem(key, value, kind, low, INT64_MAX)
    if problem:
        raise UsageError(problem)
    return kind(value)
