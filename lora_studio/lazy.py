"""Package surfaces that cost nothing to import.

A package whose modules import torch still has to be importable from the UI and the CLI, which never
load torch: its `__init__` names each public object and the module that defines it, and the module is
imported the first time one of its names is used.
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: `exports` maps a public name to its leaf module."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
