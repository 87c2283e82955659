"""Creation by name: MMV variants (full models) and backbones, each registered in its family file."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers an MMV variant under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = fn
        return fn

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered MMV variants matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Builds a registered MMV variant; keyword overrides replace fields of its :class:`MMVConfig`.

    Example: ``create_model("mmv_tiny_s3dg", graph="shared")``.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name](**overrides)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return _BACKBONES[name](**kwargs)
