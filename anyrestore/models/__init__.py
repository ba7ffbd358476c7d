"""Pure ``nn.Module`` code for the supported architectures, built through the registry."""

from anyrestore.models.base import RestorationModel
from anyrestore.models.registry import (
    ModelSpec,
    build_model,
    create_model,
    get_spec,
    list_archs,
    list_models,
    register_arch,
    register_model,
)

__all__ = [
    "ModelSpec",
    "RestorationModel",
    "build_model",
    "create_model",
    "get_spec",
    "list_archs",
    "list_models",
    "register_arch",
    "register_model",
]

# Importing an architecture module registers it and its variants.
from anyrestore.models import anyir  # noqa: E402,F401,I001
from anyrestore.models import clusir  # noqa: E402,F401
