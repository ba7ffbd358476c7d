"""Domain errors, each carrying the exit code the CLI turns it into.

Kept as a leaf module so every layer (engine, weights, data, bench) can raise them
without importing the CLI.
"""

from __future__ import annotations


class AnyRestoreError(Exception):
    """Base for errors a user can act on; the message is one line."""

    exit_code: int = 1


class UsageError(AnyRestoreError):
    """Bad arguments or paths (exit 2)."""

    exit_code = 2


class InputError(AnyRestoreError):
    """An input image or data file is unreadable, unsupported or too large (exit 3)."""

    exit_code = 3


class WeightsError(AnyRestoreError):
    """A checkpoint cannot be found, downloaded, verified or loaded (exit 4)."""

    exit_code = 4


class DeviceError(AnyRestoreError):
    """The requested device is unavailable or ran out of memory (exit 5)."""

    exit_code = 5


class DataError(AnyRestoreError):
    """A dataset root is missing or does not have the expected layout (exit 6)."""

    exit_code = 6


class ConfigError(AnyRestoreError):
    """A training or bench configuration is invalid (exit 2)."""

    exit_code = 2
