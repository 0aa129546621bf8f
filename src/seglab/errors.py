"""The base of every error a user causes and can fix: the entry points print its message, not a
traceback (set HYDRA_FULL_ERROR=1 to see the traceback anyway)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration; the message names the file or key, what was found, the fix."""


class ConfigError(UserError, ValueError):
    """A config value of the wrong type or out of range, found before any data is read."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named on the command line does not exist."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""
