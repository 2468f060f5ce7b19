"""A well-framed message with a malformed attribute says which request it was (RFC 8489 §6.3.1),
so a server can answer 400; a bad FINGERPRINT stays a plain decode error (dropped, §7.3)."""

from __future__ import annotations

import struct

import pytest

from delshare.errors import MalformedRequestError, StunDecodeError
from delshare.stun import Attr, Message, MessageClass, decode_message
from delshare.stun.constants import Method


def with_attribute(kind: int, value: bytes) -> tuple[Message, bytes]:
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
    header = bytearray(msg.encode())
    body = struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
    header[2:4] = struct.pack("!H", len(body))
    return msg, bytes(header) + body


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (Attr.USERNAME, b"u" * 514),
        (Attr.MESSAGE_INTEGRITY, bytes(19)),
        (Attr.XOR_PEER_ADDRESS, bytes([0, 3, 0, 1, 0, 0, 0, 0])),
        (Attr.LIFETIME, bytes(8)),
        (Attr.REALM, b"\xff"),
    ],
)
def test_malformed_value_reports_the_request(kind: int, value: bytes) -> None:
    msg, data = with_attribute(kind, value)
    with pytest.raises(MalformedRequestError) as info:
        decode_message(data)
    bad = info.value
    assert (bad.method, bad.cls, bad.transaction_id, bad.attribute) == (
        Method.ALLOCATE,
        MessageClass.REQUEST,
        msg.transaction_id,
        kind,
    )


def test_overrunning_attribute_reports_the_request() -> None:
    msg, data = with_attribute(Attr.SOFTWARE, b"abcd")
    data = data[:22] + struct.pack("!H", 200) + data[24:]  # the TLV claims 200 bytes
    with pytest.raises(MalformedRequestError) as info:
        decode_message(data)
    assert info.value.transaction_id == msg.transaction_id


def test_bad_fingerprint_is_a_plain_decode_error() -> None:
    msg = Message(Method.BINDING, MessageClass.REQUEST)
    data = bytearray(msg.encode(fingerprint=True))
    data[-1] ^= 0xFF
    with pytest.raises(StunDecodeError) as info:
        decode_message(bytes(data))
    assert not isinstance(info.value, MalformedRequestError)
