"""The sans-IO mailbox table, driven with an explicit clock."""

from __future__ import annotations

import pytest

from delshare.errors import PairingError
from delshare.pairing.mailbox import (
    BodyRelayed,
    MailboxExpired,
    MailboxLimits,
    MailboxTable,
    PeerLeft,
)

A, B, C = 1, 2, 3


def test_bodies_are_buffered_until_the_peer_joins_then_relayed() -> None:
    table = MailboxTable()
    assert table.open(A, "7", now=0.0) == []
    assert table.add(A, "one", now=1.0) == []
    assert table.add(A, "two", now=1.0) == []
    assert table.open(B, "7", now=2.0) == [BodyRelayed(B, "one"), BodyRelayed(B, "two")]
    assert table.add(B, "three", now=3.0) == [BodyRelayed(A, "three")]
    assert table.add(A, "four", now=3.0) == [BodyRelayed(B, "four")]


def test_third_side_is_refused() -> None:
    table = MailboxTable()
    table.open(A, "7", 0.0)
    table.open(B, "7", 0.0)
    with pytest.raises(PairingError, match="mailbox full"):
        table.open(C, "7", 0.0)
    table.close(A, 1.0)
    with pytest.raises(PairingError, match="mailbox full"):
        table.open(C, "7", 1.0)  # a side that left is not replaced


def test_separate_nameplates_are_separate_mailboxes() -> None:
    table = MailboxTable()
    table.open(A, "7", 0.0)
    table.open(B, "8", 0.0)
    assert table.add(A, "x", 0.0) == []
    assert len(table) == 2


def test_protocol_misuse_is_refused() -> None:
    table = MailboxTable()
    with pytest.raises(PairingError, match="open a mailbox first"):
        table.add(A, "x", 0.0)
    table.open(A, "7", 0.0)
    with pytest.raises(PairingError, match="already open"):
        table.open(A, "8", 0.0)


def test_mailbox_count_is_bounded() -> None:
    table = MailboxTable(MailboxLimits(max_mailboxes=2))
    table.open(A, "1", 0.0)
    table.open(B, "2", 0.0)
    with pytest.raises(PairingError, match="too many"):
        table.open(C, "3", 0.0)
    table.open(C, "2", 0.0)  # joining an existing one is fine
    assert "3" not in table


def test_messages_per_mailbox_are_bounded() -> None:
    table = MailboxTable(MailboxLimits(max_messages=3))
    table.open(A, "7", 0.0)
    table.open(B, "7", 0.0)
    table.add(A, "1", 0.0)
    table.add(B, "2", 0.0)
    table.add(A, "3", 0.0)
    with pytest.raises(PairingError, match="message limit"):
        table.add(B, "4", 0.0)


def test_bytes_per_mailbox_are_bounded() -> None:
    table = MailboxTable(MailboxLimits(max_bytes=10))
    table.open(A, "7", 0.0)
    table.add(A, "x" * 6, 0.0)
    with pytest.raises(PairingError, match="byte limit"):
        table.add(A, "é" * 3, 0.0)  # 6 bytes in UTF-8
    table.add(A, "y" * 4, 0.0)


def test_closing_tells_the_peer_and_forgets_the_empty_mailbox() -> None:
    table = MailboxTable()
    table.open(A, "7", 0.0)
    table.open(B, "7", 0.0)
    assert table.close(A, 1.0) == [PeerLeft(B)]
    assert table.add(B, "nobody listens", 1.0) == []
    assert "7" in table
    assert table.close(B, 2.0) == []
    assert "7" not in table
    assert table.close(B, 2.0) == []  # idempotent
    assert table.open(C, "7", 3.0) == []  # the nameplate is free again


def test_lone_side_leaving_drops_its_buffer() -> None:
    table = MailboxTable()
    table.open(A, "7", 0.0)
    table.add(A, "stale", 0.0)
    table.close(A, 1.0)
    assert table.open(B, "7", 2.0) == []


def test_expiry_with_explicit_clock() -> None:
    table = MailboxTable(MailboxLimits(max_age=10.0))
    assert table.next_expiry() is None
    table.open(A, "7", now=0.0)
    table.open(C, "8", now=5.0)
    table.open(B, "7", now=1.0)
    assert table.next_expiry() == 10.0
    assert table.expire(9.9) == []
    assert sorted(table.expire(10.0), key=lambda e: e.client) == [
        MailboxExpired(A),
        MailboxExpired(B),
    ]
    assert "7" not in table
    assert "8" in table
    assert table.next_expiry() == 15.0
    assert table.close(A, 11.0) == []
    with pytest.raises(PairingError, match="open a mailbox first"):
        table.add(B, "late", 11.0)


def test_an_old_mailbox_refuses_work_before_it_is_swept() -> None:
    table = MailboxTable(MailboxLimits(max_age=10.0))
    table.open(A, "7", 0.0)
    with pytest.raises(PairingError, match="expired"):
        table.add(A, "x", 10.0)
    with pytest.raises(PairingError, match="expired"):
        table.open(B, "7", 10.0)
