"""A relay listening on a wildcard UDP address answers from the address each client wrote to."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun import attributes as at
from delshare.stun.constants import MessageClass, Method
from delshare.stun.message import Message, decode_message
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not os.environ.get("DELSHARE_TEST_NETNS"),
    reason="binds a wildcard address: only inside the suite's private network namespace",
)


@pytest.fixture
async def wildcard_relay() -> AsyncIterator[RunningRelay]:
    server = ServerConfig(auth=AuthConfig("test.realm", {"alice": "pw"}))
    running = await start_relay(RelayConfig(server=server, listen=(("0.0.0.0", 0),)))
    try:
        yield running
    finally:
        await running.close()


def _binding_from(source: str, target: tuple[str, int]) -> tuple[Message, tuple[str, int]]:
    """A STUN Binding request from ``source`` to ``target``: the response and where it came from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind((source, 0))
        client.settimeout(5.0)
        request = Message(Method.BINDING, MessageClass.REQUEST)
        client.sendto(request.encode(), target)
        data, origin = client.recvfrom(2048)
    response = decode_message(data)
    assert response.transaction_id == request.transaction_id
    return response, origin


async def test_each_client_is_answered_from_the_address_it_wrote_to(
    wildcard_relay: RunningRelay,
) -> None:
    port = wildcard_relay.turn_port
    for local in ("127.0.0.2", "127.0.0.3", "127.0.0.1"):
        # the route from any 127.x to the client's 127.0.0.1 would pick 127.0.0.1 as source
        response, origin = await asyncio.to_thread(_binding_from, "127.0.0.1", (local, port))
        assert origin == (local, port)
        assert response.cls == MessageClass.SUCCESS
        mapped = response.get(at.XOR_MAPPED_ADDRESS)
        assert mapped is not None and mapped[0] == "127.0.0.1"


SECOND_V6 = "fd00:13::2"  # a second loopback address, only in the suite's private namespace


@pytest.fixture
def second_v6_address() -> Iterator[str]:
    address = ["dev", "lo", f"{SECOND_V6}/128"]
    subprocess.run(["ip", "-6", "addr", "add", *address, "nodad"], check=True, timeout=10)
    try:
        yield SECOND_V6
    finally:
        subprocess.run(["ip", "-6", "addr", "del", *address], check=True, timeout=10)


async def test_the_ipv6_wildcard_answers_from_the_address_it_was_sent_to(
    second_v6_address: str,
) -> None:
    """A client on ``::1`` writing to the second address: by route the reply would leave from
    ``::1`` (RFC 6724 rule 1), only the remembered IPV6_PKTINFO makes it leave from the other."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = ServerConfig(auth=AuthConfig("test.realm", {"alice": "pw"}))
    running = await start_relay(RelayConfig(server=server, listen=(("::", 0),)))
    try:

        def ask() -> tuple[Message, tuple[str, int]]:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
                client.bind(("::1", 0))
                client.settimeout(5.0)
                request = Message(Method.BINDING, MessageClass.REQUEST)
                client.sendto(request.encode(), (second_v6_address, running.turn_port))
                data, origin = client.recvfrom(2048)
            return decode_message(data), origin[:2]

        response, origin = await asyncio.to_thread(ask)
        assert origin == (second_v6_address, running.turn_port)
        assert response.cls == MessageClass.SUCCESS
    finally:
        await running.close()
