"""TURN URIs (RFC 7065 §3)."""

from __future__ import annotations

import pytest

from delshare.turn.uri import TurnUri, TurnUriError, parse_turn_uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("turn:example.org", TurnUri(False, "example.org", 3478, None)),
        ("turn:example.org?transport=udp", TurnUri(False, "example.org", 3478, "udp")),
        ("turn:example.org:3479?transport=tcp", TurnUri(False, "example.org", 3479, "tcp")),
        ("TURN:Example.org?transport=TCP", TurnUri(False, "Example.org", 3478, "tcp")),
        ("turns:example.org", TurnUri(True, "example.org", 5349, None)),
        ("turns:example.org:443?transport=tcp", TurnUri(True, "example.org", 443, "tcp")),
        ("turn:192.0.2.1:80", TurnUri(False, "192.0.2.1", 80, None)),
        ("turn:[2001:db8::1]:3478?transport=tcp", TurnUri(False, "2001:db8::1", 3478, "tcp")),
        ("turns:[::1]", TurnUri(True, "::1", 5349, None)),
    ],
)
def test_valid_uris(text: str, expected: TurnUri) -> None:
    assert parse_turn_uri(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "stun:example.org",
        "example.org:3478",
        "turn:",
        "turn:example.org:0",
        "turn:example.org:65536",
        "turn:example.org:port",
        "turn:example.org?transport=sctp",
        "turn:example.org?foo=bar",
        "turns:example.org?transport=udp",
        "turn:[2001:db8::1",
        "turn:[not-ipv6]:3478",
        "turn:user@example.org",
    ],
)
def test_invalid_uris(text: str) -> None:
    with pytest.raises(TurnUriError):
        parse_turn_uri(text)


@pytest.mark.parametrize(
    ("text", "stream"),
    [
        ("turn:h?transport=udp", False),
        ("turn:h?transport=tcp", True),
        ("turn:h", True),
        ("turns:h", True),
    ],
)
def test_control_connection_kind(text: str, stream: bool) -> None:
    assert parse_turn_uri(text).stream is stream


@pytest.mark.parametrize(
    "text", ["turn:example.org:3478?transport=tcp", "turns:[::1]:5349", "turn:h:1"]
)
def test_str_round_trips(text: str) -> None:
    assert str(parse_turn_uri(text)) == text
