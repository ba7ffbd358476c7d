"""One registry, one door: every model is built by ``create_model(name)``.

Architectures register a (config class, model class) pair; variants register a function
returning a config. A checkpoint stores ``arch`` and the config dict, so ``build_model``
rebuilds it without knowing the variant name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "ModelSpec",
    "register_arch",
    "register_model",
    "create_model",
    "build_model",
    "list_models",
    "list_archs",
    "get_spec",
    "config_from_dict",
    "find_variant",
]


@dataclass(frozen=True)
class ModelSpec:
    """A named variant: which architecture, with which config, and what it is for."""

    name: str
    arch: str
    config: Any
    description: str


_ARCHS: dict[str, tuple[type, type[nn.Module]]] = {}
_MODELS: dict[str, ModelSpec] = {}


def register_arch(arch: str, config_cls: type, model_cls: type[nn.Module]) -> None:
    """Declare an architecture; its model class is built as ``model_cls(config)``."""
    if arch in _ARCHS:
        raise ValueError(f"architecture {arch!r} is already registered")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls.__name__} must be a dataclass")
    _ARCHS[arch] = (config_cls, model_cls)


def register_model(
    name: str, *, arch: str, description: str = ""
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator registering a variant whose function returns its config."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        if arch not in _ARCHS:
            raise ValueError(f"unknown architecture {arch!r} for model {name!r}")
        config = fn()
        if not isinstance(config, _ARCHS[arch][0]):
            raise TypeError(
                f"{name}: expected {_ARCHS[arch][0].__name__}, got {type(config).__name__}"
            )
        _MODELS[name] = ModelSpec(name, arch, config, description or (fn.__doc__ or "").strip())
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the package registers the built-in architectures and variants.
    from anyrestore import models  # noqa: F401


def list_models() -> list[str]:
    """Names of all registered variants, sorted."""
    _ensure_loaded()
    return sorted(_MODELS)


def list_archs() -> list[str]:
    _ensure_loaded()
    return sorted(_ARCHS)


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _MODELS[name]
    except KeyError:
        known = ", ".join(sorted(_MODELS))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with lists (as JSON and TOML give sequences) as tuples, as configs hold them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def config_from_dict(arch: str, values: dict[str, Any]) -> Any:
    """Rebuild an architecture's config from plain values (lists become tuples).

    A field missing from ``values`` takes the config class's ``LEGACY_DEFAULTS`` entry when it
    has one (what checkpoints written before the field existed were built with), else its
    default.
    """
    _ensure_loaded()
    if arch not in _ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_ARCHS))}")
    config_cls = _ARCHS[arch][0]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeyError(f"{arch}: unknown config keys {unknown}")
    clean = _tuples(values)
    legacy = getattr(config_cls, "LEGACY_DEFAULTS", {})
    clean = {**{k: v for k, v in legacy.items() if k not in clean}, **clean}
    return config_cls(**clean)


def find_variant(arch: str, config: Any) -> str | None:
    """The registered variant with these sizes, if any.

    Fields with a ``LEGACY_DEFAULTS`` entry are versions, not sizes: a checkpoint of an older
    layout of a variant is still that variant; so are ``TRAINING_FIELDS`` (loss weights,
    training-only routing), which say how a checkpoint was trained.
    """
    _ensure_loaded()
    kept = (
        *getattr(type(config), "LEGACY_DEFAULTS", {}),
        *getattr(type(config), "TRAINING_FIELDS", ()),
    )
    for name in sorted(_MODELS):
        spec = _MODELS[name]
        if spec.arch != arch or type(spec.config) is not type(config):
            continue
        same_version = dataclasses.replace(spec.config, **{k: getattr(config, k) for k in kept})
        if same_version == config:
            return name
    return None


def build_model(arch: str, config: Any) -> nn.Module:
    """Build an architecture from a config object or a dict of its fields.

    A dict is read as a checkpoint stores it (``config_from_dict``): a field it lacks takes
    the value checkpoints written before that field existed were built with, so
    ``build_model("anyir", {})`` is the preview layout; ``create_model`` gives today's.
    """
    _ensure_loaded()
    if isinstance(config, dict):
        config = config_from_dict(arch, config)
    if arch not in _ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_ARCHS))}")
    config_cls, model_cls = _ARCHS[arch]
    if not isinstance(config, config_cls):
        raise TypeError(
            f"{arch} is built from a {config_cls.__name__}, not {type(config).__name__}"
        )
    return model_cls(config)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered variant, optionally overriding config fields (lists become tuples,
    as in a config read from JSON or TOML)."""
    spec = get_spec(name)
    overrides = _tuples(overrides)
    config = dataclasses.replace(spec.config, **overrides) if overrides else spec.config
    return build_model(spec.arch, config)
