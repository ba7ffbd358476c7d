"""The values a user picks from, checked once for the CLI, the Python API and the engine.

A leaf module without torch, so the CLI can refuse a bad value while it parses the command
line, before the seconds that importing torch takes.
"""

from __future__ import annotations

from anyrestore.errors import UsageError

#: Number formats the forward pass can run in; ``auto`` picks from what the CPU or GPU has.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: What runs the forward pass: eager PyTorch or OpenVINO (the ``openvino`` extra).
RUNTIMES = ("auto", "torch", "openvino")


def check_strength(value: float, label: str = "strength") -> float:
    """Refuse a blend strength outside [0, 1], or NaN, which a range check alone would call
    "more than 1"; ``label`` is how the caller spelled it (``--strength`` on the CLI)."""
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{label} must be a number from 0 to 1, got {value:g}")
    return value


def check_choice(value: str, choices: tuple[str, ...], what: str, given: str | None = None) -> str:
    """``value`` lower-cased and stripped if it is one of ``choices``; else a usage error
    naming ``given`` (how the user wrote it, such as ``ANYRESTORE_RUNTIME=foo``)."""
    picked = value.strip().lower()
    if picked not in choices:
        shown = given if given is not None else value
        raise UsageError(f"unknown {what} {shown!r}; use one of {', '.join(choices)}")
    return picked
