"""Every package says what it exports (``__all__``), and every name it lists imports.

Packages resolve their names on first use (``delshare._exports``), so a wrong table entry would
only show when someone asks for that name; this test asks for all of them, and checks that the
names a type checker sees (the imports in ``__init__.py``) are exactly ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def packages() -> list[str]:
    inits = sorted((SRC / "delshare").rglob("__init__.py"))
    return [".".join(p.parent.relative_to(SRC).parts) for p in inits]


def imported_names(package: str) -> set[str]:
    """Names the package's ``__init__.py`` imports from delshare modules (TYPE_CHECKING too)."""
    path = SRC.joinpath(*package.split("."), "__init__.py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{package}."):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("package", packages())
def test_every_public_name_imports(package: str) -> None:
    module = importlib.import_module(package)
    public = module.__all__
    assert public, f"{package} exports nothing"
    assert len(set(public)) == len(public), "duplicates in __all__"
    for name in public:
        assert getattr(module, name) is not None, f"{package}.{name}"
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    assert set(public) <= set(namespace)


@pytest.mark.parametrize("package", [p for p in packages() if p != "delshare"])
def test_type_checkers_see_exactly_the_public_names(package: str) -> None:
    assert imported_names(package) == set(importlib.import_module(package).__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    import delshare.turn

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = delshare.turn.no_such_name


def test_importing_one_module_does_not_import_its_package_siblings() -> None:
    """Start-up cost: ``delshare send`` must not load the relay because ``cli`` exports it."""
    code = (
        "import sys, delshare.cli.main, delshare.turn.uri, delshare.aio.client;"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('delshare'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert "delshare.turn.uri" in loaded
    for heavy in ("delshare.turn.server", "delshare.aio.server", "delshare.cli.relay"):
        assert heavy not in loaded
