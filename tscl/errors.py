"""Typed errors. Every error tscl raises on bad input is a subclass of :class:`TsclError`."""

from __future__ import annotations

__all__ = ["TsclError", "DataError", "ConfigError", "CheckpointError"]


class TsclError(Exception):
    """Base class of every error tscl raises on purpose."""


class DataError(TsclError, ValueError):
    """The input data is unusable: wrong rank or shape, NaN/inf, empty, too short, non-numeric..."""


class ConfigError(TsclError, ValueError):
    """A configuration, recipe or argument is invalid (unknown key, bad value, unknown name)."""


class CheckpointError(TsclError):
    """A checkpoint is missing, unsafe (pickle), tampered with, or disagrees with its config."""
