"""omnidiff's exceptions: one base class, and the mistakes a user fixes (:class:`UserError`).

The command line prints a :class:`UserError` as one line and exits with status 2; anything
else is a bug and keeps its traceback. Each class names what went wrong; the message names the
fix. The user-facing classes also derive from the builtin a caller would have caught before
(``ValueError``, ``KeyError``, ``TypeError``), so ``except ValueError`` keeps working.

    OmnidiffError
    ├── UserError (ValueError)          a mistake in what the user passed
    │   ├── UsageError                  a command-line option
    │   ├── ConfigError                 a config key, override or recipe
    │   ├── DataError                   data that cannot be trained on / evaluated
    │   ├── ConditionError              a condition that does not fit the model
    │   ├── CheckpointError             a file that is not a usable checkpoint
    │   ├── PipelineError               a generate / likelihood / save request
    │   ├── RunFolderError              a run folder in use or holding another run
    │   ├── UnknownDomainError (KeyError)   no plugin of that name
    │   ├── PluginError (TypeError)     an installed plugin that fails to load or breaks the
    │   │                               Domain contract
    │   └── NonFiniteLossError (RuntimeError)   training diverged (NaN / inf loss)
    └── TrainingPreempted (RuntimeError)    SIGTERM / Ctrl-C stopped training after saving
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["OmnidiffError", "UserError", "UsageError", "ConfigError", "DataError",
           "ConditionError", "CheckpointError", "PipelineError", "RunFolderError",
           "UnknownDomainError", "PluginError", "NonFiniteLossError", "TrainingPreempted",
           "blamed_on", "one_line", "USER_ERRORS"]


class OmnidiffError(Exception):
    """Base class of every exception omnidiff raises on purpose."""


class UserError(OmnidiffError, ValueError):
    """A mistake the user fixes; the message is one line naming the fix."""


class UsageError(UserError):
    """A bad command-line option (``omnidiff sample n=0``)."""


class ConfigError(UserError):
    """A bad config value, override or recipe; the message names the key."""


class DataError(UserError):
    """Data that cannot be used: wrong shape or keys, non-finite or out-of-range values."""


class ConditionError(UserError):
    """A condition that does not fit the model's condition specification."""


class CheckpointError(UserError):
    """A file that is not a usable omnidiff checkpoint (corrupt, foreign, mismatched)."""


class PipelineError(UserError):
    """A request the loaded model cannot serve (shape, condition, sampler options)."""


class RunFolderError(UserError):
    """A run folder that is locked by a live run or holds a run this command would replace."""


class UnknownDomainError(UserError, KeyError):
    """No domain plugin is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginError(UserError, TypeError):
    """An installed domain plugin fails to load, or breaks the Domain contract."""


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN / inf loss (the message names the step and the last checkpoint)."""


class TrainingPreempted(OmnidiffError, RuntimeError):
    """Training stopped on SIGTERM or Ctrl-C after saving a checkpoint (the message says
    where). ``exit_code`` is what a shell reports for that signal: 143 or 130. ``what``: the
    message without the command that continues the run (a sweep names its own)."""

    def __init__(self, message: str, exit_code: int = 143, what: str | None = None):
        super().__init__(message)
        self.exit_code = int(exit_code)
        self.what = what or message


@contextmanager
def blamed_on(kind: type[UserError], what: str,
              also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Report a ``ValueError`` / ``TypeError`` (and the types in ``also``) raised by code that
    reads the user's input (a plugin building its data from ``data:``, its network from
    ``model:``, Lightning its Trainer from ``trainer:``) as ``kind``, prefixed with what was
    being read, so the command line prints it as one line. omnidiff's own errors pass through
    unchanged."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, *also) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise kind(f"{what}: {text}") from exc


def one_line(exc: BaseException | str) -> str:
    """An error (or a text) on one line of at most 600 characters, as the CLI prints it."""
    text = " ".join(str(exc).strip().split()) or type(exc).__name__
    return text if len(text) < 600 else text[:597] + "..."


# mistakes the user fixes: omnidiff's own, and files that are missing or cannot be read
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)
