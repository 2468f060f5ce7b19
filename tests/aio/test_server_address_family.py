"""Relayed address families with the default listeners (RFC 8656 §7.2; issue 12 item 2).

A relay started as an operator would (``--port P``: 0.0.0.0 and [::]) gives an IPv6 client an
IPv4 relayed address unless it asks otherwise (``turn-check 'turn:[::1]:P'`` used to get 440),
and a client of either family that sends REQUESTED-ADDRESS-FAMILY IPv6 gets an IPv6 one. Each
relayed address is checked by sending a datagram from a peer of its family through it. A UDP
Allocate with ADDITIONAL-ADDRESS-FAMILY gets one relayed address of each family.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.aio.client import connect_turn
from delshare.stun import attributes as at
from delshare.stun.constants import FAMILY_IPV6, PROTO_UDP, Attr, MessageClass, Method
from delshare.stun.credentials import long_term_key
from delshare.stun.message import Message, decode_message
from tests.support.ports import free_port
from tests.support.relay_process import CODE, RelayProcess, start_relay_process


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, int]]:
    port = free_port("both", "0.0.0.0")
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    args = ["--port", str(port), "--no-rendezvous", "--allow-peer", "127.0.0.0/8",
            "--allow-peer", "::1/128"]  # fmt: skip
    process = start_relay_process(args, log, ready="TURN listening on tcp [::]")
    try:
        yield process, port
    finally:
        process.stop()


def test_turn_check_from_ipv6_gets_an_ipv4_relay(relay: tuple[RelayProcess, int]) -> None:
    process, port = relay
    result = subprocess.run(
        [sys.executable, "-c", CODE, "turn-check", f"turn:[::1]:{port}", "-u", "del", "-p", "del",
         "--size", "1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relayed 127.0.0.1:" in result.stdout
    # the log names the IPv6 client as an address, with brackets (not "tcp ::1:PORT")
    log = process.wait_for(" created: ")
    created = [line for line in log.splitlines() if " created: " in line and "::1" in line]
    assert created and all("[::1]:" in line for line in created), log[-2000:]


async def _relay_one_datagram(server: str, port: int, family: int | None) -> tuple[str, int]:
    """Allocate (asking for ``family``), let a peer of the relayed family send one datagram."""
    client = await connect_turn(f"turn:{server}:{port}?transport=udp", "del", "del")
    try:
        allocation = await client.allocate_udp(family=family)
        relayed = allocation.relayed_address
        peer_host = "::1" if ":" in relayed[0] else "127.0.0.1"
        await allocation.permit(peer_host)
        with socket.socket(socket.AF_INET6 if ":" in peer_host else socket.AF_INET,
                           socket.SOCK_DGRAM) as peer:  # fmt: skip
            peer.bind((peer_host, 0))
            peer.sendto(b"through the relay", relayed[:2])
            data, source = await asyncio.wait_for(allocation.recv(), 10)
        assert data == b"through the relay"
        assert source[0] == peer_host
        return relayed
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("server", "family", "relayed_ip"),
    [
        ("[::1]", None, "127.0.0.1"),  # RFC 8656 §7.2: IPv4 unless asked
        ("[::1]", 6, "::1"),
        ("127.0.0.1", 6, "::1"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("[::1]", 4, "127.0.0.1"),
    ],
)
def test_relayed_family_follows_requested_address_family(
    relay: tuple[RelayProcess, int], server: str, family: int | None, relayed_ip: str
) -> None:
    _, port = relay
    relayed = asyncio.run(_relay_one_datagram(server, port, family))
    assert relayed[0] == relayed_ip


def test_a_relay_without_an_address_of_the_family_answers_440(tmp_path: Path) -> None:
    """--relay-ip of one family only: asking for the other is 440 (RFC 8656 §7.2)."""
    port = free_port("both")
    args = ["--listen", f"127.0.0.1:{port}", "--relay-ip", "127.0.0.1", "--no-rendezvous"]
    process = start_relay_process(args, tmp_path / "relay.log")
    try:

        async def ask() -> None:
            client = await connect_turn(f"turn:127.0.0.1:{port}?transport=udp", "del", "del")
            try:
                await client.allocate_udp(family=6)
            finally:
                await client.close()

        with pytest.raises(Exception, match="440"):
            asyncio.run(ask())
    finally:
        process.stop()


class RawUdpClient:
    """Just enough of a TURN client over UDP to send ADDITIONAL-ADDRESS-FAMILY, which our own
    client never asks for (long-term credentials, RFC 8489 §9.2)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.nonce: str | None = None
        self.realm = ""

    def request(self, method: int, *attrs: tuple[int, object]) -> Message:
        for _ in range(2):
            msg = Message(method, MessageClass.REQUEST)
            for kind, value in attrs:
                msg.add(kind, value)
            key = None
            if self.nonce is not None:
                msg.add(at.USERNAME, "del").add(at.REALM, self.realm)
                msg.add(at.NONCE, self.nonce)
                key = long_term_key("del", self.realm, "del")
            self.sock.send(msg.encode(key, fingerprint=True))
            response = self.receive()
            if response.error and response.error[0] == 401 and self.nonce is None:
                self.nonce = response.get(at.NONCE)
                self.realm = response.get(at.REALM) or ""
                continue
            return response
        return response

    def receive(self) -> Message:
        return decode_message(self.sock.recv(65536))


def test_additional_address_family_relays_both_families(relay: tuple[RelayProcess, int]) -> None:
    """RFC 8656 §7.2 dual allocation: IPv4 and IPv6 relayed addresses; data both ways on each."""
    _, port = relay
    client = RawUdpClient(port)
    try:
        response = client.request(
            Method.ALLOCATE,
            (Attr.REQUESTED_TRANSPORT, PROTO_UDP),
            (Attr.ADDITIONAL_ADDRESS_FAMILY, FAMILY_IPV6),
        )
        assert response.cls == MessageClass.SUCCESS, response.error
        relayed = [a for a in response.get_all(at.XOR_RELAYED_ADDRESS) if isinstance(a, tuple)]
        assert [ip for ip, _ in relayed] == ["127.0.0.1", "::1"]
        permitted = client.request(
            Method.CREATE_PERMISSION,
            (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 1)),
            (Attr.XOR_PEER_ADDRESS, ("::1", 1)),
        )
        assert permitted.cls == MessageClass.SUCCESS
        for (ip, relayed_port), family in zip(
            relayed, (socket.AF_INET, socket.AF_INET6), strict=True
        ):
            with socket.socket(family, socket.SOCK_DGRAM) as peer:
                peer.settimeout(5)
                peer.bind((ip, 0))
                peer.sendto(b"peer to client", (ip, relayed_port))
                data = client.receive()
                assert data.get(at.DATA) == b"peer to client"
                assert data.get(at.XOR_PEER_ADDRESS) == peer.getsockname()[:2]
                send = Message(Method.SEND, MessageClass.INDICATION)
                send.add(at.XOR_PEER_ADDRESS, peer.getsockname()[:2])
                send.add(at.DATA, b"client to peer")
                client.sock.send(send.encode())
                got, source = peer.recvfrom(100)
                assert (got, source[:2]) == (b"client to peer", (ip, relayed_port))
    finally:
        client.sock.close()
