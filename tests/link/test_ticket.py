"""Tickets round-trip and refuse damaged input with a PairingError."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import PairingError
from delshare.link.ticket import Ticket, TicketAddress, parse_ticket

address = st.builds(
    TicketAddress,
    st.sampled_from(["host", "srflx", "relay"]),
    st.sampled_from(["127.0.0.1", "::1", "203.0.113.7", "2001:db8::1"]),
    st.integers(1, 65535),
)


@given(st.lists(address, max_size=8), st.binary(min_size=32, max_size=32))
def test_round_trip(addresses: list[TicketAddress], key: bytes) -> None:
    ticket = Ticket(tuple(addresses), key)
    text = ticket.encode()
    assert " " not in text
    assert parse_ticket(text) == ticket


def test_fresh_tickets_have_distinct_keys() -> None:
    assert Ticket(()).key != Ticket(()).key


@given(st.text(max_size=80))
def test_garbage_raises_only_pairing_error(text: str) -> None:
    try:
        parse_ticket(text)
    except PairingError:
        return
    pytest.fail("garbage parsed as a ticket")


def test_truncated_ticket_is_refused() -> None:
    text = Ticket((TicketAddress("host", "127.0.0.1", 9),)).encode()
    with pytest.raises(PairingError, match="damaged"):
        parse_ticket(text[:-6])


def test_a_ticket_nested_too_deeply_to_parse_is_damaged() -> None:
    """JSON nested deeper than the decoder recurses (fits in a 4 KiB ticket) is a PairingError."""
    depth = 1500
    raw = b"[" * depth + b"]" * depth
    text = "del1" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(PairingError, match="damaged"):
        parse_ticket(text)


def _ticket(body: object) -> str:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return "del1" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


KEY = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")


@pytest.mark.parametrize(
    "body",
    [
        {"a": [["host", "192.0.2.1", True]], "k": KEY},  # JSON true is no port
        {"a": [["host", "192.0.2.1", 0]], "k": KEY},
        {"a": [["lan", "192.0.2.1", 9]], "k": KEY},
        {"a": [["host", "192.0.2.1", 9]] * 33, "k": KEY},
        {"a": [], "k": 7},
        {"a": {}, "k": KEY},
        {"k": KEY},
        [],
    ],
)
def test_ticket_fields_are_checked(body: object) -> None:
    with pytest.raises(PairingError):
        parse_ticket(_ticket(body))


def test_a_well_formed_body_parses() -> None:
    ticket = parse_ticket(_ticket({"a": [["relay", "2001:db8::1", 3478]], "k": KEY}))
    assert ticket == Ticket((TicketAddress("relay", "2001:db8::1", 3478),), bytes(32))
