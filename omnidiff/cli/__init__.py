"""The ``omnidiff`` command: argument parsing, printing and exit codes, over :mod:`omnidiff.tasks`
and :mod:`omnidiff.inference`."""

from omnidiff.cli.commands import main

__all__ = ["main"]
