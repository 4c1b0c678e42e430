"""Task kinds: everything a kind of label means, one file per kind.

A kind says how a manifest cell becomes a target, what the head outputs, its loss, its metrics and
their per-sample statistics, its probabilities, its best constant predictor and how a prediction
reads in a caption. `Task` (mtl/tasks.py) delegates to its kind; nothing else branches on a kind's
name. A new kind is one module here that subclasses `Kind` and calls `register`, plus its test.
"""

from __future__ import annotations

import importlib
import pkgutil

from mtl.kinds.base import Kind, LabelError, register, registry, unregister

__all__ = ["Kind", "LabelError", "get", "names", "register", "registry", "unregister"]

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")


def get(name: str) -> Kind:
    try:
        return registry()[name]
    except KeyError:
        raise LabelError(f"unknown kind '{name}' (expected one of {', '.join(names())})") from None


def names() -> tuple[str, ...]:
    return tuple(registry())
