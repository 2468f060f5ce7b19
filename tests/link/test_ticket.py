"""Tickets round-trip and refuse damaged input with a PairingError."""

from __future__ import annotations

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
