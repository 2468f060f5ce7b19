"""Rendezvous JSON schema, mailbox body envelopes, and the sans-IO import rule."""

from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import delshare.pairing
from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.envelope import Phase, decode_body, encode_body


@pytest.mark.parametrize(
    "message", [wire.OpenMessage("7"), wire.AddMessage("aGk="), wire.AddMessage("")]
)
def test_client_messages_round_trip(message: wire.ClientMessage) -> None:
    assert wire.decode_client(wire.encode(message)) == message


@pytest.mark.parametrize(
    "message", [wire.RelayMessage("aGk="), wire.ErrorMessage("full"), wire.CloseMessage("bye")]
)
def test_server_messages_round_trip(message: wire.ServerMessage) -> None:
    assert wire.decode_server(wire.encode(message)) == message


def test_schema_is_the_documented_json() -> None:
    assert json.loads(wire.encode(wire.OpenMessage("7"))) == {"type": "open", "nameplate": "7"}
    assert json.loads(wire.encode(wire.RelayMessage("b"))) == {"type": "message", "body": "b"}


@pytest.mark.parametrize(
    "frame",
    [
        "nope",
        "[]",
        b"\xff",
        "[" * 100_000,
        '{"type": "open"}',
        '{"type": "open", "nameplate": ""}',
        '{"type": "open", "nameplate": "a b"}',
        '{"type": "add", "body": 3}',
        '{"type": "message", "body": "x"}',
    ],
)
def test_bad_client_frames_raise_pairing_error(frame: str | bytes) -> None:
    with pytest.raises(PairingError):
        wire.decode_client(frame)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ('{"type": "add"}', "add message: 'body' is missing"),
        ('{"type": "add", "body": 3}', "add message: 'body' must be a string"),
        ('{"type": "open", "nameplate": "a b"}', r"'nameplate' must match \[A-Za-z0-9_-\]"),
        ('{"type": "open", "nameplate": "7", "side": "x"}', "'side' must be one of 'sender'"),
        ('{"type": "open", "nameplate": "7", "turn": "yes"}', "'turn' must be true or false"),
        ('{"type": "allocate", "turn": 1}', "allocate message: 'turn' must be true or false"),
        ('{"type": 3}', "message: 'type' must be a string"),
        ('{"nameplate": "7"}', "message: 'type' is missing"),
        ('{"type": "nope"}', "unknown message type 'nope'"),
        (b"\xff", "message is not JSON"),
        pytest.param("[" * 100_000, "message is not JSON", id="deep-nesting"),
    ],
)
def test_bad_client_frames_name_the_field(frame: str | bytes, error: str) -> None:
    with pytest.raises(PairingError, match=error):
        wire.decode_client(frame)


def test_an_open_without_side_or_with_null_takes_the_first_free_seat() -> None:
    for frame in ('{"type":"open","nameplate":"7"}', '{"type":"open","nameplate":"7","side":null}'):
        assert wire.decode_client(frame) == wire.OpenMessage("7")


@pytest.mark.parametrize(
    ("servers", "error"),
    [
        ([{"urls": "turn:h:1", "username": "u"}], r"turn message\.servers\[0\]: 'credential'"),
        ([{"urls": 1, "username": "u", "credential": "c"}], r"servers\[0\]: 'urls' must be"),
        (["turn:h:1"], r"servers\[0\] is not a JSON object"),
        ([{}] * 9, "'servers' must be a list of at most 8 JSON objects"),
        ("turn:h:1", "'servers' must be a list"),
    ],
)
def test_bad_turn_servers_name_the_field(servers: object, error: str) -> None:
    frame = json.dumps({"type": "turn", "servers": servers})
    with pytest.raises(PairingError, match=error):
        wire.decode_server(frame)


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_random_frames_raise_only_pairing_error(frame: str | bytes) -> None:
    for decode in (wire.decode_client, wire.decode_server):
        with contextlib.suppress(PairingError):
            decode(frame)


@given(st.sampled_from(Phase), st.binary(max_size=64))
def test_envelope_round_trip(phase: Phase, payload: bytes) -> None:
    assert decode_body(encode_body(phase, payload), phase) == payload


def test_envelope_rejects_wrong_phase_and_garbage() -> None:
    with pytest.raises(PairingError, match="wanted SEALED"):
        decode_body(encode_body(Phase.PAKE, b"x"), Phase.SEALED)
    for body in ["", "not base64!", "é", "AA=="[:3]]:
        with pytest.raises(PairingError):
            decode_body(body, Phase.PAKE)


SANS_IO = ["codes", "pake", "cipher", "envelope", "wire", "mailbox"]


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_modules_do_no_io(module: str) -> None:
    path = Path(delshare.pairing.__file__).parent / f"{module}.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "time", "websockets", "selectors"}
