"""The test session can only reach loopback: host candidates are loopback addresses only."""

from __future__ import annotations

import ipaddress

import pytest

from delshare.link.candidates import host_addresses


def test_host_candidates_are_loopback_only() -> None:
    addresses = host_addresses()
    assert "127.0.0.1" in addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


def test_explicit_host_addresses_replace_gathering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELSHARE_HOST_ADDRESSES", "127.0.0.2, ::1")
    assert host_addresses() == ["127.0.0.2", "::1"]
