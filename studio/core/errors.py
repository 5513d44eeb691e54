"""Errors the user can act on.

A `StudioError` carries a message written for a person: what is wrong, where, and what to do.
The CLI prints it without a traceback and exits with `exit_code`; the GUI shows it in a dialog.
"""

from __future__ import annotations


class StudioError(Exception):
    """Bad input or an environment problem the user can fix. Exit code 2 in the CLI."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class ConfigError(StudioError):
    """A setting has a value that cannot work; `field` names it."""


class DataError(StudioError):
    """A data file cannot be used at all (empty, binary, wrong shape, no valid record)."""


class ModelError(StudioError):
    """A model folder or hub id cannot be loaded (no config, no weights, refused pickle...)."""


class TrainingFailed(Exception):
    """Training stopped on its own (NaN loss, out of memory...). Exit code 1 in the CLI."""

    exit_code = 1
