"""One exception type for problems a user can fix; its message is one clear sentence."""

from __future__ import annotations


class PwmError(Exception):
    """A user-facing error: bad input, a missing file, a bad parameter.

    Command-line entry points print ``error: <message>`` and exit with status 2.
    """


class ConfigError(PwmError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class DataError(PwmError):
    """A bag, clip store, image or other data input cannot be used."""


class ModelError(PwmError):
    """A checkpoint, model directory, graph or engine cannot be used."""
