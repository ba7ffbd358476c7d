"""anyrestore/errors.py: what happens to the process when its terminal hangs up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HANG_UP = textwrap.dedent(
    """
    import os, signal, sys
    from anyrestore.errors import forget_hung_up_terminal

    master, slave = os.openpty()
    os.dup2(slave, 1)
    os.close(master)  # the terminal hangs up: a write to it now fails with EIO
    try:
        os.write(1, b"x")
    except OSError:
        pass
    else:
        sys.exit(3)  # no hang-up to test against here
    forget_hung_up_terminal(signal.SIGHUP)
    os.write(1, b"the checkpoint message\\n")  # goes nowhere, and does not fail
    os.write(2, b"stderr, a file, is kept\\n")
    """
)


def test_after_a_hang_up_the_dead_terminal_is_forgotten_and_files_are_kept(
    tmp_path: Path,
) -> None:
    # Writes to a hung-up terminal fail with EIO: a training run stopped by SIGHUP ended on
    # its "stopped at step" message (exit 1) instead of writing last.pt and exiting 129.
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        proc = subprocess.run([sys.executable, "-c", HANG_UP], stderr=stderr, timeout=60)
    assert proc.returncode == 0, log.read_text()
    assert log.read_text() == "stderr, a file, is kept\n"
