"""The two exceptions every export stage shares."""

from __future__ import annotations

from studio.core.errors import StudioError


class ExportError(StudioError):
    """An export that cannot be done as asked (one sentence, exit code 2)."""


class Cancelled(Exception):
    """The person stopped the export; whatever the stage had started writing is removed."""
