"""Command-line interface: thin Typer commands over the library."""

import os
import signal
import sys

from anyrestore.errors import SIGNAL_WORDS, STOP_SIGNALS


def _exit_on_signal(signum: int, frame: object) -> None:
    # Until the command runs there is nothing to clean up: one line and the shell's exit code.
    word = SIGNAL_WORDS.get(signum, "interrupted")
    try:
        os.write(2, f"anyrestore: error: {word}\n".encode())
    except OSError:
        pass
    os._exit(128 + signum)


def is_program() -> bool:
    """True in the ``anyrestore`` process itself (console script or ``python -m anyrestore``)."""
    argv0 = os.path.normpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.basename(argv0) == "anyrestore" or argv0.endswith(
        os.path.join("anyrestore", "__main__.py")
    )


# Started as the program, not imported by a test or a library user: Ctrl-C while Typer, Rich
# and torch are still being imported must not print a traceback.
if is_program():
    for _sig in STOP_SIGNALS:
        signal.signal(_sig, _exit_on_signal)
