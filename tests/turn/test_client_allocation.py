"""Keep-alive schedule of a client allocation (RFC 8656 §7.3, §9, §12)."""

from __future__ import annotations

import pytest

from delshare.turn.client_allocation import AllocationSchedule, renew_after


@pytest.mark.parametrize(("lifetime", "after"), [(600, 540), (3600, 3540), (60, 30), (3, 1.5)])
def test_renewal_leaves_a_margin_before_expiry(lifetime: float, after: float) -> None:
    assert renew_after(lifetime) == after


def test_refresh_is_due_before_expiry_and_moves_after_refreshing() -> None:
    schedule = AllocationSchedule(600, now=1000)
    assert not schedule.due(1539)
    assert schedule.due(1540).refresh
    assert schedule.next_deadline() == 1540
    schedule.refreshed(10, now=1540)
    assert schedule.expires == 1550
    assert schedule.next_deadline() == 1545


def test_permissions_are_renewed_every_four_minutes() -> None:
    schedule = AllocationSchedule(3600, now=0)
    schedule.permitted(["192.0.2.1", "192.0.2.2"], now=10)
    assert schedule.next_deadline() == 250
    due = schedule.due(250)
    assert due.permissions == ("192.0.2.1", "192.0.2.2") and not due.refresh
    schedule.permitted(["192.0.2.1"], now=250)
    schedule.forget_permission("192.0.2.2")
    assert schedule.due(260).permissions == ()
    assert schedule.next_deadline() == 490


def test_channels_are_numbered_from_0x4000_and_renewed_with_their_permission() -> None:
    schedule = AllocationSchedule(3600, now=0)
    peer_a, peer_b = ("192.0.2.1", 5000), ("192.0.2.1", 5001)
    channel_a = schedule.channel_for(peer_a)
    schedule.channel_bound(channel_a, peer_a, now=0)
    assert channel_a == 0x4000
    assert schedule.channel_for(peer_a) == 0x4000
    assert schedule.channel_for(peer_b) == 0x4001
    assert schedule.due(240).permissions == ("192.0.2.1",)  # ChannelBind installs one (§12.2)
    assert schedule.due(540).channels == ((0x4000, peer_a),)


def test_forgotten_channel_is_no_longer_renewed() -> None:
    schedule = AllocationSchedule(3600, now=0)
    schedule.channel_bound(0x4000, ("192.0.2.1", 5000), now=0)
    schedule.forget_channel(0x4000)
    assert schedule.due(1000).channels == ()
