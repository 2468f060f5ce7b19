"""Wire messages: round trips, validation, and fragmentation of big control messages."""

from __future__ import annotations

import contextlib
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delshare.errors import TransferError
from delshare.transfer.errors import ManifestError, PeerProtocolError
from delshare.transfer.manifest import Entry, Manifest
from delshare.transfer.protocol import (
    Accept,
    Done,
    ErrorMessage,
    FileBegin,
    FileEnd,
    Hashes,
    HashRequest,
    Message,
    MessageAssembler,
    Offer,
    Reject,
    ResumeOffer,
    Wait,
    decode_message,
    encode_message,
    fragment_message,
    recv_message,
    send_message,
)

from .conftest import channel_pair

DIGEST = hashlib.sha256(b"x").digest()
MANIFEST = Manifest(
    (Entry("d", "dir", 0, 0o755, 1), Entry("d/f.txt", "file", 10, 0o644, 2), Entry("e", "file"))
)
MESSAGES: list[Message] = [
    Offer(MANIFEST, 1 << 20),
    Accept((ResumeOffer(1, 5, (DIGEST,)),), (2,)),
    Accept(),
    Reject("no thanks"),
    FileBegin(1, 4096),
    FileEnd(1, DIGEST),
    FileEnd(2, b""),
    Done(),
    ErrorMessage("disk full"),
    HashRequest((1, 2)),
    Hashes(((1, DIGEST), (2, DIGEST))),
    Wait(),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def test_wire_form_is_versioned_json() -> None:
    obj = json.loads(encode_message(Offer(MANIFEST, 1 << 20)))
    assert obj["v"] == 3 and obj["type"] == "offer" and obj["total"] == 10
    assert obj["entries"][1] == {
        "path": "d/f.txt",
        "kind": "file",
        "size": 10,
        "mode": 0o644,
        "mtime_ns": 2,
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"v":1,"type":"done"}',  # a version-1 (SHA-256) peer
        b'{"v":2,"type":"done"}',  # a version-2 peer (no hash-request, no wait)
        b'{"v":3,"type":"nope"}',
        b'{"v":3,"type":"file-begin","index":-1,"offset":0}',
        b'{"v":3,"type":"file-begin","index":true,"offset":0}',
        b'{"v":3,"type":"file-end","index":0,"blake3":"zz"}',
        b'{"v":3,"type":"accept","files":[{"index":0,"offset":1,"chunks":"x"}]}',
        b'{"v":3,"type":"offer","chunk":1,"total":0,"entries":[]}',
        b'{"v":3,"type":"hash-request","indexes":[-1]}',
        b'{"v":3,"type":"hashes","files":[{"index":0,"blake3":"00"}]}',
    ],
)
def test_malformed_messages_raise_protocol_errors(raw: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        decode_message(raw)


SPACED = '"' + "00" * 20 + " " * 24 + '"'  # 64 characters, but only 20 bytes of hex


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(b"[" * 100_000, "control message is not JSON", id="deep-nesting"),
        (b"\xff\xfe\x00", "control message is not JSON"),
        (b'{"type":"done"}', "control message: 'v' is missing"),
        (b'{"v":2,"type":"done"}', r"unsupported protocol version 2 \(this side speaks 3\)"),
        (b'{"v":3,"type":5}', "control message: 'type' must be a string"),
        (b'{"v":3,"type":"nope"}', "unknown message type 'nope'"),
        (b'{"v":3,"type":"file-begin","index":-1,"offset":0}', "file-begin message: 'index'"),
        (b'{"v":3,"type":"file-begin","index":0}', "file-begin message: 'offset' is missing"),
        (b'{"v":3,"type":"file-end","index":0,"blake3":"zz"}', "'blake3' must be 64 hex digits"),
        (b'{"v":3,"type":"accept","verify":"yes"}', "'verify' must be true or false"),
        (b'{"v":3,"type":"accept","skip":[true]}', "accept message: 'skip' must be a list"),
        (b'{"v":3,"type":"accept","files":[1]}', r"accept message\.files\[0\] is not"),
        (
            b'{"v":3,"type":"accept","files":[{"index":0,"offset":0,"chunks":['
            + SPACED.encode()
            + b"]}]}",
            r"accept message\.files\[0\]: 'chunks' must be a list of at most \d+ strings of 64",
        ),
        (b'{"v":3,"type":"hashes","files":[{"index":0}]}', r"hashes message\.files\[0\]: 'blake3'"),
        (b'{"v":3,"type":"hash-request","indexes":[-1]}', "'indexes' must be a list"),
        (b'{"v":3,"type":"reject"}', "reject message: 'reason' is missing"),
        (b'{"v":3,"type":"offer","chunk":true,"total":0}', "bad chunk size True"),
        (b'{"v":3,"type":"offer","chunk":[1],"total":0}', "bad chunk size list"),
    ],
)
def test_malformed_fields_are_named_in_the_error(raw: bytes, error: str) -> None:
    with pytest.raises(PeerProtocolError, match=error):
        decode_message(raw)


def test_a_long_reason_is_cut_not_refused() -> None:
    raw = json.dumps({"v": 3, "type": "error", "reason": "x" * 5000}).encode()
    assert decode_message(raw) == ErrorMessage("x" * 1000)


def test_offer_total_must_match_entries() -> None:
    obj = json.loads(encode_message(Offer(MANIFEST, 1 << 20)))
    obj["total"] = 11
    with pytest.raises(ManifestError):
        decode_message(json.dumps(obj).encode())


def test_an_offer_names_what_the_sender_leaves_out() -> None:
    offer = Offer(MANIFEST, 1 << 20, ("a/link",), 3)
    assert decode_message(encode_message(offer)) == offer
    plain = json.loads(encode_message(Offer(MANIFEST, 1 << 20)))
    assert "skipped" not in plain and "skipped_count" not in plain  # as older senders send
    assert decode_message(json.dumps(plain).encode()) == Offer(MANIFEST, 1 << 20)


@pytest.mark.parametrize(
    "skipped",
    [
        {"skipped": ["x"] * 21, "skipped_count": 21},
        {"skipped": [1], "skipped_count": 1},
        {"skipped": ["a", "b"], "skipped_count": 1},
        {"skipped": "a", "skipped_count": 1},
        {"skipped": [""], "skipped_count": 1},
    ],
)
def test_a_malformed_left_out_list_is_a_protocol_error(skipped: dict[str, object]) -> None:
    obj = {**json.loads(encode_message(Offer(MANIFEST, 1 << 20))), **skipped}
    with pytest.raises(PeerProtocolError):
        decode_message(json.dumps(obj).encode())


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes_raise_only_transfer_errors(raw: bytes) -> None:
    with contextlib.suppress(TransferError):
        decode_message(raw)


def test_fragments_reassemble() -> None:
    message = Reject("x" * 900)
    pieces = fragment_message(message, max_payload=20)
    assert len(pieces) > 40
    assembler = MessageAssembler()
    results = [assembler.feed(p) for p in pieces]
    assert results[:-1] == [None] * (len(pieces) - 1)
    assert results[-1] == message


def test_assembler_bounds_message_size() -> None:
    assembler = MessageAssembler(max_message=1000)
    with pytest.raises(PeerProtocolError):
        for piece in fragment_message(Reject("x" * 5000), max_payload=100):
            assembler.feed(piece)


async def test_big_offer_crosses_the_link_in_fragments() -> None:
    entries = [Entry("top", "dir")] + [
        Entry(f"top/{i:06d}-{'n' * 80}", "file") for i in range(20_000)
    ]
    offer = Offer(Manifest(tuple(entries)), 1 << 20)
    assert len(encode_message(offer)) > 2 << 20
    sender, receiver = await channel_pair()
    await send_message(sender, offer)
    assert await recv_message(receiver) == offer
    await sender.close()
    await receiver.close()
