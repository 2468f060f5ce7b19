"""Property tests of the STUN codec and the stream framer (hypothesis)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import StunDecodeError
from delshare.stun import (
    Attr,
    ChannelData,
    Message,
    MessageClass,
    StreamFramer,
    decode_channel_data,
    decode_message,
)
from delshare.stun import attributes as at
from delshare.stun.framing import MAX_FRAME

ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
address = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))
text = st.text(max_size=60)
attribute = st.one_of(
    st.tuples(st.just(int(Attr.XOR_MAPPED_ADDRESS)), address),
    st.tuples(st.just(int(Attr.XOR_PEER_ADDRESS)), address),
    st.tuples(st.just(int(Attr.XOR_RELAYED_ADDRESS)), address),
    st.tuples(st.just(int(Attr.MAPPED_ADDRESS)), address),
    st.tuples(st.just(int(Attr.USERNAME)), text),
    st.tuples(st.just(int(Attr.REALM)), text),
    st.tuples(st.just(int(Attr.NONCE)), text),
    st.tuples(st.just(int(Attr.SOFTWARE)), text),
    st.tuples(st.just(int(Attr.LIFETIME)), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(int(Attr.CONNECTION_ID)), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(int(Attr.REQUESTED_TRANSPORT)), st.sampled_from([6, 17])),
    st.tuples(st.just(int(Attr.CHANNEL_NUMBER)), st.integers(0x4000, 0x4FFF)),
    st.tuples(st.just(int(Attr.DATA)), st.binary(max_size=200)),
    st.tuples(st.just(int(Attr.DONT_FRAGMENT)), st.just(True)),
    st.tuples(st.just(int(Attr.EVEN_PORT)), st.booleans()),
    st.tuples(st.just(int(Attr.RESERVATION_TOKEN)), st.binary(min_size=8, max_size=8)),
    st.tuples(
        st.just(int(Attr.ERROR_CODE)),
        st.tuples(st.integers(300, 699), st.text(max_size=40)),
    ),
    st.tuples(
        st.just(int(Attr.UNKNOWN_ATTRIBUTES)),
        st.lists(st.integers(0, 0xFFFF), max_size=5).map(tuple),
    ),
    st.tuples(
        st.just(int(Attr.PASSWORD_ALGORITHMS)),
        st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=7)), max_size=3).map(tuple),
    ),
    st.tuples(
        st.just(int(Attr.PASSWORD_ALGORITHM)),
        st.tuples(st.sampled_from([1, 2]), st.binary(max_size=7)),
    ),
)
message = st.builds(
    Message,
    method=st.sampled_from([0x001, 0x003, 0x004, 0x008, 0x009, 0x00A, 0x00B, 0x00C]),
    cls=st.sampled_from(list(MessageClass)),
    transaction_id=st.binary(min_size=12, max_size=12),
    attributes=st.lists(attribute, max_size=8),
)


def normalise(attrs: Sequence[tuple[int, object]]) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    for kind, value in attrs:
        if kind in (Attr.XOR_MAPPED_ADDRESS, Attr.XOR_PEER_ADDRESS, Attr.XOR_RELAYED_ADDRESS) or (
            kind == Attr.MAPPED_ADDRESS
        ):
            assert isinstance(value, tuple)
            host, port = value
            value = (str(ipaddress.ip_address(host)), port)
        out.append((kind, value))
    return out


@given(message, st.booleans(), st.booleans(), st.binary(min_size=1, max_size=32))
def test_round_trip(msg: Message, sha256: bool, fingerprint: bool, key: bytes) -> None:
    data = msg.encode(key, sha256=sha256, fingerprint=fingerprint)
    back = decode_message(data)
    assert (back.method, back.cls, back.transaction_id) == (
        msg.method,
        msg.cls,
        msg.transaction_id,
    )
    plain = [
        (k, v)
        for k, v in back.attributes
        if k not in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT)
    ]
    assert plain == normalise(msg.attributes)
    assert back.verify_integrity(key)
    assert back.uses_sha256_integrity == sha256
    assert not back.verify_integrity(key + b"x")


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(StunDecodeError):
        decode_message(data)


@given(message, st.binary(max_size=64))
def test_mutated_messages_raise_only_decode_error(msg: Message, noise: bytes) -> None:
    data = bytearray(msg.encode(b"k", fingerprint=False))
    for i, byte in enumerate(noise):
        data[(i * 7919) % len(data)] ^= byte
    with contextlib.suppress(StunDecodeError):
        decode_message(bytes(data))


def test_attributes_after_integrity_are_ignored() -> None:
    msg = Message(0x001, MessageClass.REQUEST).add(at.USERNAME, "alice")
    data = msg.encode(b"key")
    tail = Message(0x001, MessageClass.REQUEST, msg.transaction_id).add(at.SOFTWARE, "x")
    extra = tail.encode()[20:]
    length = int.from_bytes(data[2:4], "big") + len(extra)
    patched = data[:2] + length.to_bytes(2, "big") + data[4:] + extra
    back = decode_message(patched)
    assert back.get(at.SOFTWARE) is None
    assert back.verify_integrity(b"key")


def test_unknown_comprehension_required_attribute_is_reported() -> None:
    msg = Message(0x003, MessageClass.REQUEST).add(0x7FFE, b"\x00\x01").add(0xC001, b"zz")
    back = decode_message(msg.encode())
    assert back.unknown_required == [0x7FFE]


frames = st.lists(
    st.one_of(
        message.map(lambda m: m.encode()),
        st.builds(ChannelData, st.integers(0x4000, 0x4FFF), st.binary(max_size=300)).map(
            lambda c: c.encode()
        ),
    ),
    min_size=1,
    max_size=6,
)


@given(frames, st.lists(st.integers(1, 97), min_size=1, max_size=20))
def test_framer_any_split(chunks: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(chunks)
    framer, got, pos, i = StreamFramer(), [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got += framer.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    assert got == chunks
    assert framer.buffered == 0


def test_framer_byte_by_byte_and_trailing_data() -> None:
    frame = ChannelData(0x4001, b"hello").encode()
    framer = StreamFramer()
    out = [f for b in frame + b"\x40\x01" for f in framer.feed(bytes([b]))]
    assert out == [frame]
    assert framer.take_remaining() == b"\x40\x01"
    assert decode_channel_data(frame) == ChannelData(0x4001, b"hello")


def test_framer_rejects_garbage_and_holds_one_partial_frame() -> None:
    with pytest.raises(StunDecodeError):
        StreamFramer().feed(b"\xc0\x00\x00\x00")
    framer = StreamFramer()
    assert framer.feed(b"\x40\x00\xff\xff" + bytes(65000)) == []
    assert framer.buffered <= MAX_FRAME
    assert len(framer.feed(bytes(540))) == 1
