"""The relay's peer filter: default deny of non-global targets, ``--allow-peer`` ranges."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.turn.peerfilter import PeerFilter, embedded_ipv4

REFUSED = [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.2.1",
    "198.18.0.1", "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
    "64:ff9b::a00:1", "2002:c0a8:101::1", "::127.0.0.1", "not an address", "",
]  # fmt: skip
ALLOWED = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("host", REFUSED)
def test_default_refuses(host: str) -> None:
    assert not PeerFilter().allowed(host)


@pytest.mark.parametrize("host", ALLOWED)
def test_default_allows_global_unicast(host: str) -> None:
    assert PeerFilter().allowed(host)


def test_allow_flag_opens_a_range_in_every_spelling() -> None:
    allow = PeerFilter(["127.0.0.0/8", "fd00::/8"])
    assert allow.allowed("127.0.0.1") and allow.allowed("::ffff:127.0.0.1")
    assert allow.allowed("fd12::1")
    assert not allow.allowed("10.0.0.1") and not allow.allowed("::1")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv4_mapped_form_gets_the_same_answer(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert embedded_ipv4(mapped) == v4
    assert PeerFilter().allowed(str(mapped)) == PeerFilter().allowed(str(v4))
