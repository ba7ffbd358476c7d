"""Exit codes and the domain errors that carry them.

The one place exit codes are defined (README's table lists them). Kept as a leaf module so
every layer (engine, weights, data, bench) can raise these errors without importing the CLI.
"""

from __future__ import annotations

import os
import signal
import stat
from enum import IntEnum


class ExitCode(IntEnum):
    """What the ``anyrestore`` process returns; documented in the README."""

    OK = 0
    FAILED = 1  # batch: some files failed; or an unexpected internal error
    USAGE = 2  # bad option or path, output that cannot be written, bad config
    INPUT = 3  # input image unreadable, corrupt, truncated, unsupported or too large
    WEIGHTS = 4  # weights unknown, unavailable, damaged, or producing non-finite output
    DEVICE = 5  # device absent or out of memory
    DATA = 6  # dataset root missing or malformed
    HUNG_UP = 129  # SIGHUP (the terminal or ssh session went away)
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


#: The signals that stop a command cleanly, and the one-line message of each.
SIGNAL_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
    # A dropped ssh session or closed terminal: stop as for SIGTERM (temporaries removed, a
    # training checkpoint written). Under nohup it is ignored, and stays so.
    SIGNAL_WORDS[signal.SIGHUP] = "hung up"
STOP_SIGNALS = frozenset(SIGNAL_WORDS)


def forget_hung_up_terminal(signum: int) -> None:
    """After SIGHUP, point stdout and stderr at the null device where they were a terminal:
    every write to a terminal that hung up fails (EIO), and the command must still clean up,
    save its checkpoint and exit with its code. Files and pipes are left as they are."""
    if signum != getattr(signal, "SIGHUP", None):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        null_device = os.fstat(null).st_rdev
    except OSError:
        return
    try:
        for fd in (1, 2):
            try:
                st = os.fstat(fd)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev != null_device:
                    os.dup2(null, fd)
            except OSError:
                pass
    finally:
        os.close(null)


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived; unwinds like Ctrl-C so temporary
    files are removed.

    The CLI exits with ``exit_code`` (128 + the signal: 130, 143 or 129).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(SIGNAL_WORDS.get(signum, "interrupted"))
        self.signum = signum
        self.exit_code = 128 + signum


def first_line(exc: BaseException) -> str:
    """``exc``'s message cut to its first line (torch and Pillow append traces and advice)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class AnyRestoreError(Exception):
    """Base for errors a user can act on; the message is one line."""

    exit_code: int = ExitCode.FAILED


class UsageError(AnyRestoreError):
    """Bad arguments or paths, or an output that cannot be written (exit 2)."""

    exit_code = ExitCode.USAGE


class OutputFull(UsageError):
    """The output's file system takes no more: full, over quota or read-only (exit 2). It
    would refuse every later file of a run as well, after restoring each one, so it stops
    the run."""


class InputError(AnyRestoreError):
    """An input image or data file is unreadable, unsupported or too large (exit 3)."""

    exit_code = ExitCode.INPUT


class WeightsError(AnyRestoreError):
    """A checkpoint cannot be found, downloaded, verified or loaded (exit 4)."""

    exit_code = ExitCode.WEIGHTS


class NonFiniteOutput(WeightsError):
    """The model returned NaN pixels: damaged weights, or an overflow at low precision."""


class DeviceError(AnyRestoreError):
    """The requested device is unavailable or ran out of memory (exit 5)."""

    exit_code = ExitCode.DEVICE


class DataError(AnyRestoreError):
    """A dataset root is missing or does not have the expected layout (exit 6)."""

    exit_code = ExitCode.DATA


class ConfigError(AnyRestoreError):
    """A training or bench configuration is invalid (exit 2)."""

    exit_code = ExitCode.USAGE


class TrainingDiverged(ConfigError):
    """The loss or its gradients stayed NaN or infinite: the recipe diverges (exit 2)."""
