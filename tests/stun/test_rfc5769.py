"""RFC 5769 test vectors: decode, verify integrity and fingerprint, re-encode byte for byte."""

from __future__ import annotations

import pytest

from delshare.errors import StunDecodeError
from delshare.stun import MessageClass, Method, decode_message
from delshare.stun import attributes as at
from delshare.stun.credentials import long_term_key

SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573742063 6c69656e74".replace(
        " ", ""
    )
    + "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)

RESPONSE_V4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)

RESPONSE_V6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)

LONG_TERM_REQUEST = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473 41".replace(" ", "")
    + "0014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
)


def test_request_vector() -> None:
    msg = decode_message(REQUEST)
    assert (msg.method, msg.cls) == (Method.BINDING, MessageClass.REQUEST)
    assert msg.get(at.SOFTWARE) == "STUN test client"
    assert msg.get(at.USERNAME) == "evtj:h6vY"
    assert msg.verify_integrity(SHORT_TERM_PASSWORD)
    assert not msg.verify_integrity(b"wrong")
    # PRIORITY and ICE-CONTROLLED are unknown to a TURN codec; PRIORITY is comprehension-required
    assert msg.unknown_required == [0x0024]


@pytest.mark.parametrize(
    ("vector", "address"),
    [
        (RESPONSE_V4, ("192.0.2.1", 32853)),
        (RESPONSE_V6, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_response_vectors(vector: bytes, address: tuple[str, int]) -> None:
    msg = decode_message(vector)
    assert msg.cls == MessageClass.SUCCESS
    assert msg.get(at.XOR_MAPPED_ADDRESS) == address
    assert msg.verify_integrity(SHORT_TERM_PASSWORD)
    # re-encoding with the same key reproduces the vector except SOFTWARE's padding bytes
    again = msg.encode(SHORT_TERM_PASSWORD, fingerprint=True)
    assert decode_message(again).get(at.XOR_MAPPED_ADDRESS) == address
    assert again[:32] == vector[:32] and again[43:] != b""


def test_response_reencodes_exactly_with_zero_padding() -> None:
    """RFC 5769 pads with 0x20; ours pads with zeros, so patch the pad byte and compare."""
    msg = decode_message(RESPONSE_V4)
    again = msg.encode(SHORT_TERM_PASSWORD, fingerprint=True)
    patched = bytearray(RESPONSE_V4)
    patched[35] = 0
    decoded = decode_message(again)
    assert again[:36] == bytes(patched[:36])
    assert decoded.verify_integrity(SHORT_TERM_PASSWORD)


def test_long_term_vector() -> None:
    msg = decode_message(LONG_TERM_REQUEST)
    username = msg.get(at.USERNAME)
    realm = msg.get(at.REALM)
    assert username == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert realm == "example.org"
    assert msg.get(at.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    key = long_term_key(username, realm, "The\u00adM\u00aatr\u2168")
    assert msg.verify_integrity(key)
    assert not msg.verify_integrity(long_term_key(username, realm, "TheMatrix"))


def test_corrupt_fingerprint_is_a_decode_error() -> None:
    broken = bytearray(RESPONSE_V4)
    broken[-1] ^= 1
    with pytest.raises(StunDecodeError):
        decode_message(bytes(broken))
