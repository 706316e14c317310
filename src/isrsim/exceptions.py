"""Exception hierarchy. User errors derive from :class:`IsrsimError`; the CLI prints them
as one line and exits with status 2."""

from __future__ import annotations

__all__ = ["ConfigError", "InputFileError", "IsrsimError", "OutputError"]


class IsrsimError(Exception):
    """Base class of errors caused by the user's input (run card, flags, files)."""


class ConfigError(IsrsimError, ValueError):
    """An invalid run-card field, CLI flag or detector-file entry. The message names the
    field, its value and the allowed range."""


class InputFileError(IsrsimError, OSError):
    """An input file that is missing, corrupt, truncated or of the wrong kind/schema."""


class OutputError(IsrsimError, OSError):
    """An output path that cannot be written."""
