"""``HOST:PORT`` text (RFC 3986 §3.2.2 brackets for IPv6): one writer, one reader, round trips."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.address import (
    display_address,
    format_address,
    parse_address,
    parse_port,
    split_host_port,
)

hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
)
ports = st.integers(1, 65535)


@given(hosts, ports)
def test_parse_reads_back_what_format_writes(host: str, port: int) -> None:
    text = format_address(host, port)
    assert parse_address(text) == (host, port)
    assert split_host_port(text)[2] == (":" in host)  # IPv6 literals, and only they, bracketed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7:80", ("198.51.100.7", "80", False)),
        ("example.org:3478", ("example.org", "3478", False)),
        ("[2001:db8::1]:3478", ("2001:db8::1", "3478", True)),
        ("[::1]", ("::1", "", True)),
        ("::1", ("::1", "", False)),
        ("example.org", ("example.org", "", False)),
        ("  198.51.100.7:80 ", ("198.51.100.7", "80", False)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, str, bool]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["[::1", "[::1]80", "[::1]x:80"])
def test_split_refuses_broken_brackets(text: str) -> None:
    with pytest.raises(ValueError, match="IPv6 literal"):
        split_host_port(text)


def test_default_port_and_missing_port() -> None:
    assert parse_address("[::1]", 3478) == ("::1", 3478)
    with pytest.raises(ValueError, match="needs a port"):
        parse_address("example.org")


@pytest.mark.parametrize("text", ["0", "65536", "-1", "8O", "", "٣"])
def test_bad_ports(text: str) -> None:
    with pytest.raises(ValueError):
        parse_port(text)


def test_port_zero_only_when_allowed() -> None:
    assert parse_port("0", allow_zero=True) == 0
    assert parse_address("127.0.0.1:0", allow_zero=True) == ("127.0.0.1", 0)
    with pytest.raises(ValueError, match="bad port"):
        parse_address("127.0.0.1:0")


@given(st.ip_addresses(v=4), ports)
def test_display_shows_ipv4_mapped_addresses_as_ipv4(ip: ipaddress.IPv4Address, port: int) -> None:
    mapped = f"::ffff:{ip}"
    assert display_address(mapped, port) == format_address(str(ip), port) == f"{ip}:{port}"
    assert format_address(mapped, port) == f"[{mapped}]:{port}"
