"""STUN error codes are ``ErrorCode`` members, not bare integers, where code decides on them
(RFC 8489 §14.8, RFC 8656 §19, RFC 6062 §6.3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from delshare.stun.constants import ErrorCode

SRC = Path(__file__).resolve().parents[1] / "src" / "delshare"
CODES = {int(code) for code in ErrorCode}
SOURCES = sorted(str(path.relative_to(SRC)) for path in SRC.rglob("*.py"))


def bare_codes(tree: ast.AST) -> list[str]:
    """Integer literals that are error codes, compared with or passed as arguments.

    Keyword arguments count only where the keyword names a code (``code=``, ``error_code=``): a
    ``max_len=300`` or a file mode's ``default=420`` is no error code.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            values = [v for o in operands for v in (o.elts if isinstance(o, ast.Tuple) else [o])]
        elif isinstance(node, ast.Call):
            values = [*node.args, *(k.value for k in node.keywords if "code" in (k.arg or ""))]
        else:
            continue
        found += [
            ast.unparse(node)
            for v in values
            if isinstance(v, ast.Constant) and type(v.value) is int and v.value in CODES
        ]
    return found


@pytest.mark.parametrize("name", SOURCES)
def test_error_codes_are_named(name: str) -> None:
    assert bare_codes(ast.parse((SRC / name).read_text(encoding="utf-8"))) == []


def test_the_check_finds_a_bare_code() -> None:
    tree = ast.parse("if code in (401, 441):\n    raise AllocationError('ALLOCATE', 437, 'x')\n")
    assert len(bare_codes(tree)) == 3
    assert bare_codes(ast.parse("hint = link.code == 403\nrefuse(code=438)\n")) != []
    assert bare_codes(ast.parse("fields.text('server', max_len=300, default=420)\n")) == []
