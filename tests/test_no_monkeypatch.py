"""No module in ``src/`` replaces another object's methods at run time (issue 13).

Layers talk through parameters and events (``delshare.transfer.events``), not by wrapping a live
object's methods: a wrapper is invisible at the call site, type checkers must be silenced for it
(``type: ignore[method-assign]``), and it breaks as soon as the wrapped object changes how it
calls itself. Two checks, both from the source: no such ``type: ignore``, and no assignment of a
function defined in place (a nested ``def`` or a ``lambda``) to an attribute of some object other
than ``self``/``cls`` — ``channel.write = observed_write`` is what ``app/observe.py`` did.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "delshare"
METHOD_ASSIGN_IGNORE = re.compile(r"type:\s*ignore\[[^\]]*method-assign")

# What app/observe.py did before the transfer layer reported typed events.
WRAPPING_SAMPLE = """
def observe(channel):
    write = channel.write

    def observed_write(data, kind):
        write(data, kind)

    channel.write = observed_write  # type: ignore[method-assign]
    channel.recv_into = lambda buffer: None
"""


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def replaced_methods(source: str) -> list[str]:
    """Assignments of an in-place function to another object's attribute, as source text."""
    found = []
    for scope in ast.walk(ast.parse(source)):
        if not isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        local = {
            node.name
            for node in ast.walk(scope)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node is not scope
        }
        for node in ast.walk(scope):
            if not isinstance(node, ast.Assign):
                continue
            function = isinstance(node.value, ast.Lambda) or (
                isinstance(node.value, ast.Name) and node.value.id in local
            )
            for target in node.targets:
                owner = target.value if isinstance(target, ast.Attribute) else None
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                if function and owner is not None and not own:
                    found.append(ast.unparse(node))
    return sorted(set(found))


def test_the_checks_catch_a_wrapped_channel() -> None:
    assert METHOD_ASSIGN_IGNORE.search(WRAPPING_SAMPLE)
    assert replaced_methods(WRAPPING_SAMPLE) == [
        "channel.recv_into = lambda buffer: None",
        "channel.write = observed_write",
    ]


def test_an_own_attribute_or_a_plain_value_is_not_flagged() -> None:
    sample = "def f(self, other):\n    def g(): pass\n    self.hook = g\n    other.count = 3\n"
    assert replaced_methods(sample) == []


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_replaces_another_objects_methods(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not METHOD_ASSIGN_IGNORE.search(text), "a method replaced behind the type checker"
    assert replaced_methods(text) == []


TESTS = Path(__file__).resolve().parent
PATCHING = re.compile(r"monkeypatch\.setattr\(|mock\.patch|unittest\.mock")


def test_no_test_patches_a_module_global() -> None:
    """Tests take fixtures and parameters, not patched globals (issue 13 item 10); environment
    variables (``monkeypatch.setenv``) are an interface and stay allowed."""
    me = Path(__file__).resolve()
    patched = [
        f"{path.relative_to(TESTS)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != me
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PATCHING.search(line)
    ]
    assert patched == []
