"""Issue 10 item 10: malformed attribute values are answered (RFC 8489 §6.3.1), never silence.

Each request is built from raw bytes: a valid header with one attribute whose value breaks its
type's rules. Over UDP and TCP the relay answers 400 Bad Request (unsigned, the same
transaction ID), and a TCP connection stays usable afterwards.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest

from delshare.stun.constants import MAGIC_COOKIE, Attr, MessageClass, Method
from delshare.stun.message import encode_type
from tests.adversarial.relay_support import REALM, RelayProcess, TurnClient, error_code

NONCE = b"obMatJos2AAAAxxxxxxxx.0000000000000000"


def attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


def request(method: int, *attributes: bytes, tid: bytes | None = None) -> tuple[bytes, bytes]:
    """Raw request bytes and their transaction ID."""
    tid = tid or os.urandom(12)
    body = b"".join(attributes)
    header = struct.pack("!HHI", encode_type(method, MessageClass.REQUEST), len(body), MAGIC_COOKIE)
    return header + tid + body, tid


def credentials(username: bytes = b"alice") -> bytes:
    return (
        attr(Attr.USERNAME, username) + attr(Attr.REALM, REALM.encode()) + attr(Attr.NONCE, NONCE)
    )


UDP_TRANSPORT = attr(Attr.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
GOOD_MI = attr(Attr.MESSAGE_INTEGRITY, bytes(20))
PEER_FAMILY_3 = attr(Attr.XOR_PEER_ADDRESS, bytes([0, 3]) + struct.pack("!H", 1234) + bytes(4))

CASES: dict[str, tuple[int, list[bytes]]] = {
    "username-10000-bytes": (Method.ALLOCATE, [UDP_TRANSPORT, credentials(b"a" * 10_000), GOOD_MI]),
    "message-integrity-19-bytes": (
        Method.ALLOCATE,
        [UDP_TRANSPORT, credentials(), attr(Attr.MESSAGE_INTEGRITY, bytes(19))],
    ),
    "peer-address-family-3": (Method.CREATE_PERMISSION, [PEER_FAMILY_3, credentials(), GOOD_MI]),
    "lifetime-8-bytes": (
        Method.ALLOCATE,
        [UDP_TRANSPORT, attr(Attr.LIFETIME, bytes(8)), credentials(), GOOD_MI],
    ),
    "lifetime-8-bytes-unsigned": (Method.ALLOCATE, [UDP_TRANSPORT, attr(Attr.LIFETIME, bytes(8))]),
    "requested-transport-2-bytes": (Method.ALLOCATE, [attr(Attr.REQUESTED_TRANSPORT, b"\x11\x00")]),
    "channel-number-3-bytes": (
        Method.CHANNEL_BIND,
        [attr(Attr.CHANNEL_NUMBER, b"\x40\x00\x00"), credentials(), GOOD_MI],
    ),
    "realm-not-utf8": (
        Method.REFRESH,
        [attr(Attr.USERNAME, b"alice"), attr(Attr.REALM, b"\xff\xfe"), GOOD_MI],
    ),
    "attribute-overruns-message": (
        Method.ALLOCATE,
        [UDP_TRANSPORT, struct.pack("!HH", Attr.SOFTWARE, 200) + b"abcd"],
    ),
}


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with RelayProcess() as process:
        yield process


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_attribute_gets_400(relay: RelayProcess, transport: str, case: str) -> None:
    method, attributes = CASES[case]
    data, tid = request(method, *attributes)
    with TurnClient(transport, relay.address(transport)) as client:
        client.send(data)
        answer = client.receive()
        assert answer is not None, f"{case} over {transport}: no answer"
        assert answer.transaction_id == tid and answer.method == method
        assert error_code(answer) == 400, answer.error
        assert not answer.has_integrity
        if transport == "tcp":  # the stream is still in step: a good request is answered
            assert client.request(Method.BINDING).cls == MessageClass.SUCCESS
