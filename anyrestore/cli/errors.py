"""Exit codes, documented in the README, and the one place errors become them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from anyrestore.errors import AnyRestoreError

EXIT_OK = 0
EXIT_FAILED = 1  # a run finished but some items failed (batch), or an unexpected error
EXIT_USAGE = 2  # bad arguments or paths
EXIT_INPUT = 3  # unreadable / unsupported / oversized image
EXIT_WEIGHTS = 4  # weights unknown, unavailable offline, download failed, bad checksum or keys
EXIT_DEVICE = 5  # device unavailable or out of memory
EXIT_DATA = 6  # dataset root missing or malformed
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
    """Print a one-line error on stderr and exit with ``code``."""
    print(f"anyrestore: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def handle_errors(fn: F) -> F:
    """Turn domain errors into a one-line message and their exit code; never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AnyRestoreError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # A closed downstream pipe (e.g. `| head`) is not an error worth a traceback.
            sys.stderr.close()
            raise SystemExit(EXIT_OK) from None

    return wrapper  # type: ignore[return-value]
