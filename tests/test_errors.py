"""One error tree: every exception class DEL defines is under ``DelshareError``, and the tree
drawn in ``errors.py``'s docstring is the real one (names, parents, homes), complete."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil

import pytest

import delshare
from delshare import errors
from delshare.cli.turn_check import Checker, CheckFailed
from delshare.errors import DelshareError

Drawn = dict[str, tuple[str | None, str]]  # class name -> (parent name, module)


def defined_exceptions() -> dict[str, type[Exception]]:
    """Every public error class defined in a delshare module, by name (not ``SystemExit``
    subclasses like ``cli.main.Finished``, which end a command and are no error)."""
    found: dict[str, type[Exception]] = {}
    for info in pkgutil.walk_packages(delshare.__path__, "delshare."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Exception)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                assert name not in found, f"two exception classes named {name}"
                found[name] = obj
    return found


def drawn_tree() -> Drawn:
    """The tree in ``errors.__doc__``: two spaces of indent per level, module last."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n", 1)[1].strip("\n").split("\n\n", 1)[0]
    tree: Drawn = {}
    stack: list[str] = []
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip()) - 4) // 2
        name, module = line.split()[0], line.split()[-1]
        del stack[depth:]
        tree[name] = (stack[-1] if stack else None, f"delshare.{module}")
        stack.append(name)
    return tree


def parent(cls: type[Exception]) -> str | None:
    """The nearest base that is in the tree."""
    bases = [b for b in cls.__bases__ if issubclass(b, DelshareError)]
    return bases[0].__name__ if bases else None


def test_every_exception_class_is_under_the_root() -> None:
    outside = [n for n, c in defined_exceptions().items() if not issubclass(c, DelshareError)]
    assert outside == []


def test_the_drawn_tree_is_the_real_one() -> None:
    tree, real = drawn_tree(), defined_exceptions()
    assert sorted(tree) == sorted(real), "draw new classes in errors.py, remove gone ones"
    for name, (drawn_parent, module) in tree.items():
        assert real[name].__module__ == module, name
        assert parent(real[name]) == drawn_parent, name


def test_a_failed_check_is_reported_once_not_wrapped_again() -> None:
    """``CheckFailed`` is a ``DelshareError`` now; the step runner must not wrap its own."""

    async def step() -> None:
        async def fails() -> None:
            raise CheckFailed("incoming: relayed bytes differ")

        await Checker(timeout=5.0, size=0).step("incoming", fails)

    with pytest.raises(CheckFailed) as raised:
        asyncio.run(step())
    assert str(raised.value) == "incoming: relayed bytes differ"


def test_a_peers_misbehaviour_is_remote_and_our_own_bug_is_local() -> None:
    """h11's split: what the other side sent wrong, against a move our own code should never
    make (a state table refusing it)."""
    from delshare.errors import LocalProtocolError, RemoteProtocolError, StunProtocolError
    from delshare.link.crypto import LinkProtocolError
    from delshare.transfer.errors import PeerProtocolError
    from delshare.turn.server_state import IllegalTransition

    for remote in (StunProtocolError, LinkProtocolError, PeerProtocolError):
        assert issubclass(remote, RemoteProtocolError)
        assert not issubclass(remote, LocalProtocolError)
    assert issubclass(IllegalTransition, LocalProtocolError)
    assert not issubclass(IllegalTransition, RemoteProtocolError)


def test_one_refusal_carries_code_reason_and_attributes() -> None:
    from delshare.errors import StunProtocolError
    from delshare.stun.attributes import UNKNOWN_ATTRIBUTES
    from delshare.stun.constants import ErrorCode

    refusal = StunProtocolError(
        ErrorCode.UNKNOWN_ATTRIBUTE, "Unknown Attribute", UNKNOWN_ATTRIBUTES((0x33,))
    )
    assert (refusal.code, refusal.reason) == (420, "Unknown Attribute")
    assert refusal.attributes == ((0x000A, (0x33,)),)
    assert "Refused" not in defined_exceptions()
    assert "ChallengeRequired" not in defined_exceptions()
