"""The protocol cores never import I/O (README.md "Layout": sans-IO cores, asyncio adapters)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "delshare"
CORE_PACKAGES = ["stun", "turn"]
CORE_MODULES = [
    "address.py",
    "errors.py",
    "fields.py",
    "text.py",
    "link/crypto.py",
    "link/signalling.py",
    "link/ticket.py",
    "pairing/cipher.py",
    "pairing/codes.py",
    "pairing/envelope.py",
    "pairing/guard.py",
    "pairing/mailbox.py",
    "pairing/pake.py",
    "pairing/redis_scripts.py",
    "pairing/turn_grant.py",
    "pairing/wire.py",
    "transfer/events.py",
    "transfer/states.py",
]  # sans-IO modules outside the core packages
FORBIDDEN = {"asyncio", "socket", "time", "selectors", "ssl", "threading"}


def core_modules() -> list[Path]:
    packaged = [p for pkg in CORE_PACKAGES for p in (SRC / pkg).rglob("*.py")]
    return sorted([*packaged, *(SRC / name for name in CORE_MODULES)])


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_core_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
