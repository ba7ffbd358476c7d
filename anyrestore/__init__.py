"""anyrestore: all-in-one photo restoration with AnyIR and ClusIR."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "Restorer", "load_weights", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import anyrestore` (and the CLI's start-up) stays cheap.
    if name in ("create_model", "list_models"):
        from anyrestore.models import registry

        return getattr(registry, name)
    if name == "Restorer":
        from anyrestore.engine import Restorer

        return Restorer
    if name == "load_weights":
        from anyrestore.weights import load_weights

        return load_weights
    raise AttributeError(f"module 'anyrestore' has no attribute {name!r}")
