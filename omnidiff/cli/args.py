"""What every ``omnidiff`` command shares: ``key=value`` arguments and the errors that end in
one line on stderr."""

from __future__ import annotations

from typing import Any, Sequence

from omnidiff.errors import UsageError, UserError

__all__ = ["USER_ERRORS", "parse_value", "key_values"]


# mistakes the user fixes: omnidiff's own, and files that are missing or cannot be read
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def parse_value(text: str) -> Any:
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def key_values(args: Sequence[str], allowed: set[str], command: str,
        prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """``key=value`` arguments (values parsed as YAML); keys from ``allowed`` or starting with
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
        out[k] = parse_value(v)
    return out
