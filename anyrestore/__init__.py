"""anyrestore: all-in-one photo restoration with AnyIR and ClusIR."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy __getattr__ below returns, for type checkers
    from anyrestore.api import clear_cache, restore
    from anyrestore.engine import Restorer, read_image, write_image
    from anyrestore.errors import (
        AnyRestoreError,
        DeviceError,
        InputError,
        UsageError,
        WeightsError,
    )
    from anyrestore.models.registry import create_model, list_models
    from anyrestore.weights import LoadedWeights, load_weights

__version__ = "0.1.0"
__all__ = [
    "AnyRestoreError",
    "DeviceError",
    "InputError",
    "LoadedWeights",
    "Restorer",
    "UsageError",
    "WeightsError",
    "__version__",
    "clear_cache",
    "create_model",
    "list_models",
    "load_weights",
    "read_image",
    "restore",
    "write_image",
]

# name -> module that defines it; imported on first use so `import anyrestore` stays cheap.
_LAZY = {
    "restore": "anyrestore.api",
    "clear_cache": "anyrestore.api",
    "AnyRestoreError": "anyrestore.errors",
    "DeviceError": "anyrestore.errors",
    "InputError": "anyrestore.errors",
    "UsageError": "anyrestore.errors",
    "WeightsError": "anyrestore.errors",
    "create_model": "anyrestore.models.registry",
    "list_models": "anyrestore.models.registry",
    "Restorer": "anyrestore.engine",
    "read_image": "anyrestore.engine",
    "write_image": "anyrestore.engine",
    "LoadedWeights": "anyrestore.weights",
    "load_weights": "anyrestore.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'anyrestore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
