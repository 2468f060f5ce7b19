"""Typed link-signalling messages: the wire stays what peers of every version read (the
candidates message byte for byte as before), and anything malformed is one PairingError."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import PairingError
from delshare.link import signalling
from delshare.link.candidates import Candidate
from delshare.link.signalling import (
    AttemptsExhausted,
    CandidatesOffered,
    ReflexiveFound,
    RelayReady,
    SetupFailed,
    Signal,
)

HOST = Candidate("host", "192.0.2.7", 40000)
RELAY = Candidate("relay", "203.0.113.5", 50000, "turn.example:3478")
SIGNALS: list[Signal] = [
    CandidatesOffered("relay", (HOST, RELAY)),
    ReflexiveFound((Candidate("srflx", "198.51.100.1", 1234),)),
    ReflexiveFound(()),
    RelayReady(),
    AttemptsExhausted(),
    SetupFailed("no"),
]


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: type(s).__name__)
def test_every_signal_survives_the_wire(signal: Signal) -> None:
    wire = json.loads(json.dumps(signalling.encode(signal)))
    assert signalling.decode(wire) == signal


def test_the_candidates_message_is_the_one_version_2_peers_read() -> None:
    """The message app/connect.py built as a dict literal before it was typed."""
    assert signalling.encode(CandidatesOffered("any", (HOST, RELAY))) == {
        "t": "candidates",
        "v": 2,
        "mode": "any",
        "candidates": [
            {"kind": "host", "host": "192.0.2.7", "port": 40000},
            {"kind": "relay", "host": "203.0.113.5", "port": 50000, "server": "turn.example:3478"},
        ],
    }


def test_a_version_1_peer_is_read_as_version_1() -> None:
    old = {"t": "candidates", "candidates": [HOST.to_wire()]}
    assert signalling.decode(old) == CandidatesOffered("any", (HOST,), version=1)
    assert signalling.decode({"t": "ready"}) == RelayReady()
    assert signalling.decode({"t": "error"}) == SetupFailed("?")


def test_a_later_version_is_read_as_this_one() -> None:
    newer = {"t": "exhausted", "v": 7, "something": "new"}
    assert signalling.decode(newer) == AttemptsExhausted()


@pytest.mark.parametrize(
    "wire",
    [
        {"t": "candidates", "mode": "sideways", "candidates": []},
        {"t": "candidates", "candidates": [{"kind": "host", "host": "::", "port": 1}]},
        {"t": "candidates", "candidates": [HOST.to_wire()] * 65},
        {"t": "candidates", "v": True, "candidates": []},
        {"t": "reflexive", "candidates": [{"kind": "host", "host": "x", "port": 1}]},
        {"t": "reflexive"},
        {"t": "error", "reason": "x" * 1001},
        {"t": "hello"},
        {"v": 2},
        [],
    ],
)
def test_malformed_signals_are_refused(wire: object) -> None:
    with pytest.raises(PairingError):
        signalling.decode(wire)


candidate_json = st.fixed_dictionaries(
    {"kind": st.sampled_from(["host", "srflx", "relay", "x"]), "host": st.text(max_size=50)},
    optional={"port": st.integers(-1, 70000) | st.booleans(), "server": st.text(max_size=301)},
)
signal_json = st.fixed_dictionaries(
    {"t": st.sampled_from(["candidates", "reflexive", "ready", "exhausted", "error", "?"])},
    optional={
        "v": st.integers(-1, 3) | st.none(),
        "mode": st.sampled_from(["any", "direct", "relay", 1]),
        "candidates": st.lists(candidate_json, max_size=3) | st.none(),
        "reason": st.text(max_size=5) | st.integers(),
    },
)


@given(wire=signal_json)
def test_anything_a_peer_sends_is_a_signal_or_a_pairing_error(wire: dict[str, object]) -> None:
    try:
        signal = signalling.decode(wire)
    except PairingError:
        return
    if isinstance(signal, CandidatesOffered):  # we always write our own version
        signal = dataclasses.replace(signal, version=signalling.VERSION)
    assert signalling.decode(signalling.encode(signal)) == signal
