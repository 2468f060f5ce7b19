"""A package's public names, imported on first use (PEP 562 module ``__getattr__``).

Each package lists its public names in ``__all__`` and maps them to the modules that define
them; importing one module of a package (``delshare.cli.main`` at start-up, say) must not import
the rest, so the package resolves a name only when someone asks for it. The package also imports
the names under ``TYPE_CHECKING`` so type checkers see them. ``tests/test_exports.py`` keeps the
three lists in step and imports every name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from ``exports[name]``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
