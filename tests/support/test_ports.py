"""free_port hands out ports that both protocols can bind right now."""

from __future__ import annotations

import socket

import pytest

from tests.support.ports import free_port, free_ports


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_both_is_bindable_for_tcp_and_udp(host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        port = free_port("both", host)
    except OSError as exc:
        pytest.skip(f"{host} unusable here: {exc}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with (
        socket.socket(family, socket.SOCK_STREAM) as tcp,
        socket.socket(family, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind((host, port))
        udp.bind((host, port))


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5, "tcp")
    assert len(set(ports)) == 5
    assert all(0 < p < 65536 for p in ports)
