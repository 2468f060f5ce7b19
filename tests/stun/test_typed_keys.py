"""Typed attribute keys: one ``AttrSpec[T]`` per attribute type, named after it, and the TURN
client's and server's readers use them instead of checking value types at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from delshare.stun import attributes
from delshare.stun.attributes import (
    ATTRIBUTES,
    CONNECTION_ID,
    LIFETIME,
    PASSWORD_ALGORITHMS,
    REALM,
    XOR_PEER_ADDRESS,
    Attribute,
    AttrSpec,
)
from delshare.stun.constants import Attr, MessageClass, Method
from delshare.stun.message import Message, decode_message

SRC = Path(__file__).resolve().parents[2] / "src" / "delshare"


def test_every_attribute_type_has_one_typed_key_named_after_it() -> None:
    assert sorted(ATTRIBUTES) == sorted(int(a) for a in Attr)
    for attr in Attr:
        spec = getattr(attributes, attr.name)
        assert isinstance(spec, AttrSpec)
        assert (spec.type, spec.name) == (int(attr), attr.name)
        assert ATTRIBUTES[int(attr)] is spec


def test_a_typed_key_reads_back_what_it_wrote() -> None:
    msg = Message(Method.CONNECT, MessageClass.REQUEST)
    msg.add(LIFETIME, 600).add(REALM, "del.test").add(XOR_PEER_ADDRESS, ("2001:db8::7", 4242))
    msg.extend([CONNECTION_ID(7), PASSWORD_ALGORITHMS(((1, b""), (2, b"")))])
    back = decode_message(msg.encode(b"k" * 16))
    assert back.get(LIFETIME) == 600
    assert back.get(REALM) == "del.test"
    assert back.get(XOR_PEER_ADDRESS) == ("2001:db8::7", 4242)
    assert back.get(CONNECTION_ID) == 7
    assert back.get(PASSWORD_ALGORITHMS) == ((1, b""), (2, b""))
    assert back.get_all(XOR_PEER_ADDRESS) == [("2001:db8::7", 4242)]
    assert back.get(attributes.NONCE) is None and not back.has(attributes.NONCE)


def test_a_key_called_with_a_value_is_one_attribute_of_its_type() -> None:
    assert LIFETIME(0) == Attribute(int(Attr.LIFETIME), 0) == (0x000D, 0)


UNTYPED_READERS = {"get_str", "get_int", "get_address"}


def test_untyped_readers_are_gone() -> None:
    assert not any(hasattr(Message, name) for name in UNTYPED_READERS)
    assert not hasattr(attributes, "AttrValue")


@pytest.mark.parametrize(
    "name",
    [
        "turn/client.py",
        "turn/server.py",
        "turn/auth.py",
        "aio/client.py",
        "aio/client_allocation.py",
        "aio/client_renewal.py",
        "stun/message.py",
    ],
)
def test_readers_use_typed_keys(name: str) -> None:
    """No ``get_str``/``get_int``/``get_address`` and no ``get(Attr.X)``: the key's type is the
    value's type, so nothing is checked again at run time."""
    tree = ast.parse((SRC / name).read_text(encoding="utf-8"))
    untyped = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        by_code = node.func.attr in ("get", "get_all", "has", "add") and any(
            isinstance(a, ast.Attribute) and ast.unparse(a).startswith("Attr.") for a in node.args
        )
        if (node.func.attr in UNTYPED_READERS and name != "stun/message.py") or by_code:
            untyped.append(ast.unparse(node))
    assert untyped == []
