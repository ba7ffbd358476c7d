"""Fetching manifest entries through the Hugging Face Hub client and its normal cache.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` once, at import.
We read them again at each call, pass ``endpoint=`` and ``cache_dir=`` explicitly and
answer offline requests from the cache ourselves, so a change of environment (a test, a
long-lived process) is honoured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anyrestore.errors import WeightsError
from anyrestore.weights.manifest import WeightsEntry

__all__ = ["cache_dir", "cached_file", "download", "endpoint", "is_offline"]

_TRUE = {"1", "on", "yes", "true"}


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now."""
    if offline is not None:
        return offline
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def endpoint() -> str | None:
    """``HF_ENDPOINT`` as set now (None: the library's default, https://huggingface.co)."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def cache_dir() -> Path:
    """The Hub cache the library would use given the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def cached_file(entry: WeightsEntry) -> Path | None:
    """The cached copy of ``entry`` if it is in the Hub cache; never touches the network."""
    if not entry.on_hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            entry.repo_id or "",
            entry.filename or "",
            cache_dir=cache_dir(),
            revision=entry.revision,
        )
    except ValueError:  # coordinates the Hub library refuses (the manifest checks them too)
        return None
    except OSError as exc:  # a cache folder this user cannot list
        raise WeightsError(
            f"cannot read the weights cache {cache_dir()} ({exc.strerror or exc})"
        ) from None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def download(entry: WeightsEntry, *, offline: bool | None = None) -> Path:
    """The local path of ``entry``'s file, downloading it into the Hub cache if needed.

    The Hub client writes to a temporary file and renames it, so a failure leaves nothing
    half-written. The caller verifies the sha256 (the client checks only the size).
    A cached copy is returned without calling the client at all: even with
    ``local_files_only`` it builds request headers, and with telemetry on (its default) that
    fetches a list from its import-time endpoint once a day, offline or not.
    """
    if not entry.on_hub:
        raise WeightsError(f"weights {entry.name!r} have no Hub coordinates to download from")
    offline = is_offline(offline)
    found = cached_file(entry)  # the revision is a pinned commit: a cached copy is final
    if found is not None:
        return found
    if offline:
        raise WeightsError(
            f"weights {entry.name!r} are not cached and offline mode is on (HF_HUB_OFFLINE); "
            f"run `anyrestore weights download {entry.name}` while online, or use a local file"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub import utils as hf_errors  # the error classes, in 0.23 to 2.x alike

    where = f"{entry.repo_id}/{entry.filename}@{entry.revision[:12] if entry.revision else 'main'}"
    try:
        with _retry_notices_only():
            path = hf_hub_download(
                entry.repo_id or "",
                entry.filename or "",
                revision=entry.revision,
                cache_dir=cache_dir(),
                endpoint=endpoint(),
                library_name="anyrestore",
            )
    except hf_errors.LocalEntryNotFoundError as exc:
        raise WeightsError(
            f"could not download weights {entry.name!r} ({where}) from {endpoint() or 'https://huggingface.co'}: "
            f"{_cause(exc)}"
        ) from None
    except hf_errors.GatedRepoError:  # a RepositoryNotFoundError too: not "not found"
        raise WeightsError(
            f"weights {entry.name!r}: {entry.repo_id} is a gated repository this client has no "
            "access to: accept its terms on the Hub, then set HF_TOKEN to a token of that "
            "account (or run `hf auth login`)"
        ) from None
    except (
        hf_errors.RepositoryNotFoundError,
        hf_errors.RevisionNotFoundError,
        hf_errors.EntryNotFoundError,  # remote only: the local one is handled above
    ) as exc:
        # The Hub answers a private repo without a token as one that does not exist
        private = isinstance(exc, hf_errors.RepositoryNotFoundError)
        hint = "; if it is private, set HF_TOKEN to a token with access" if private else ""
        raise WeightsError(
            f"weights {entry.name!r}: {where} not found on the Hub ({_first_line(exc)}){hint}"
        ) from None
    except (hf_errors.HfHubHTTPError, ValueError, OSError, RuntimeError) as exc:
        # HTTP errors during the transfer, size mismatches, a full disk, an unwritable cache,
        # and hf_xet's transfer errors (plain RuntimeErrors: "Data processing error: ...").
        raise WeightsError(
            f"could not download weights {entry.name!r} ({where}): {_first_line(exc)}"
        ) from None
    except Exception as exc:
        # Network errors of the HTTP client (httpx) surface without a common base class we can name.
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3"):
            raise WeightsError(
                f"could not download weights {entry.name!r} ({where}): network error ({_first_line(exc)})"
            ) from None
        raise
    return Path(path)


class _RetryNotice(logging.Filter):
    """Keep the client's "Retrying in 2s [Retry 2/5]" as one short line; drop per-attempt noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith(("Retrying in", "Rate limited")):
            record.msg, record.args = f"anyrestore: the Hub did not answer; {msg}", ()
            return True
        return record.levelno >= logging.ERROR


@contextmanager
def _retry_notices_only() -> Iterator[None]:
    # The failure itself becomes one WeightsError line; the client's warnings would repeat it
    # once per attempt. Left alone when the user asked for verbose Hub logs (HF_HUB_VERBOSITY).
    hub_logger = logging.getLogger("huggingface_hub")
    if hub_logger.getEffectiveLevel() < logging.WARNING:
        yield
        return
    notice = _RetryNotice()
    handlers = list(hub_logger.handlers)
    for handler in handlers:
        handler.addFilter(notice)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(notice)


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    return _first_line(inner) if inner is not None else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
