"""``delshare turn-check``: does this TURN server relay TCP (RFC 6062) for us?

Steps: connect, Binding (server-reflexive address), Allocate TCP (relayed address), permission for
our own address, incoming path (a plain socket dials the relayed address → ConnectionAttempt →
ConnectionBind), outgoing path (Connect to a local listener), and a bulk transfer through the relay.
Each step prints its latency; the first failure prints one line naming the step and the error.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl as _ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from delshare.address import format_address
from delshare.aio.client import TurnClient, connect_turn
from delshare.aio.client_allocation import TcpAllocation
from delshare.app.hints import AUTH_HINT
from delshare.errors import DelshareError
from delshare.stun.attributes import Address
from delshare.text import printable
from delshare.tls import TlsSetupError, client_context
from delshare.turn.client_errors import AuthenticationError
from delshare.turn.uri import TurnUriError, parse_turn_uri

T = TypeVar("T")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
PROBE = b"delshare turn-check probe\n"
CHUNK = 1 << 20


class CheckFailed(DelshareError):
    """A step failed; the message is the one line to print."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, AuthenticationError):
        return f"{exc} ({AUTH_HINT})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the relay"
    return str(exc) or type(exc).__name__


class Checker:
    """Runs the steps in order, timing each; raises ``CheckFailed`` on the first failure."""

    def __init__(self, timeout: float, size: int) -> None:
        self.timeout = timeout
        self.size = size

    async def step(self, name: str, action: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        """Run one step with a timeout; return its result and latency in seconds."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await action()
        except CheckFailed:
            raise
        except (DelshareError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise CheckFailed(f"{name}: {_describe(exc)}") from exc
        return result, time.perf_counter() - start

    def report(self, name: str, seconds: float, detail: str = "") -> None:
        """Print one step's line."""
        click.echo(printable(f"  {name:<11} {seconds * 1000:8.1f} ms   {detail}".rstrip()))

    async def run(self, connect: Callable[[], Awaitable[TurnClient]]) -> None:
        """All steps; the client is closed at the end whatever happens."""
        client, took = await self.step("connect", connect)
        self.report("connect", took, format_address(*client.server_address))
        try:
            await self.run_allocation(client)
        finally:
            await client.close()

    async def run_allocation(self, client: TurnClient) -> None:
        """Binding, Allocate, permission, both stream paths, throughput."""
        reflexive, took = await self.step("binding", client.binding)
        self.report("binding", took, f"server-reflexive {format_address(*reflexive)}")
        allocation, took = await self.step("allocate", client.allocate_tcp)
        self.report("allocate", took, f"relayed {format_address(*allocation.relayed_address)}")
        ips = list(dict.fromkeys([reflexive[0], client.local_address[0]]))
        own_ip = reflexive[0]
        relayed_ip = allocation.relayed_address[0]
        if (":" in relayed_ip) != (":" in own_ip):  # RFC 8656 §7.2: IPv4 relay for IPv6 client
            own_ip = _route_source(relayed_ip)
            ips = [own_ip]
        _, took = await self.step("permission", lambda: allocation.permit(*ips))
        self.report("permission", took, ", ".join(ips))
        pair, took = await self.step("incoming", lambda: self.incoming(allocation))
        self.report("incoming", took, "peer → relayed address → ConnectionBind")
        await self.run_outgoing(allocation, own_ip)
        await self.run_throughput(*pair)

    async def incoming(self, allocation: TcpAllocation) -> tuple[asyncio.StreamWriter, Stream]:
        """A plain socket dials the relayed address; its probe must come out of accept()."""
        _, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        peer_writer.write(PROBE)
        reader, writer, _ = await allocation.accept()
        if await reader.readexactly(len(PROBE)) != PROBE:
            raise CheckFailed("incoming: relayed bytes differ")
        return peer_writer, (reader, writer)

    async def run_outgoing(self, allocation: TcpAllocation, own_ip: str) -> None:
        """Connect through the relay to a listener of ours; the probe is echoed back."""
        server = await asyncio.start_server(_echo, "::" if ":" in own_ip else "0.0.0.0", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            _, took = await self.step("outgoing", lambda: _probe(allocation, (own_ip, port)))
        finally:
            server.close()
        self.report("outgoing", took, f"Connect → {format_address(own_ip, port)}")

    async def run_throughput(self, sender: asyncio.StreamWriter, stream: Stream) -> None:
        """Push ``size`` bytes peer → client through the relay and compare SHA-256."""
        try:
            (sent, got), took = await self.step(
                "throughput", lambda: _bulk(sender, stream[0], self.size)
            )
        finally:
            sender.close()
            stream[1].close()
        if sent != got:
            raise CheckFailed("throughput: data corrupted in the relay (SHA-256 differs)")
        rate = self.size / took / (1 << 20)
        self.report("throughput", took, f"{rate:.1f} MiB/s ({self.size >> 20} MiB)")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(await reader.readexactly(len(PROBE)))
        await writer.drain()
    except (asyncio.IncompleteReadError, OSError):
        pass
    finally:
        writer.close()


def _route_source(ip: str) -> str:
    """Our address towards ``ip`` (a route lookup; nothing is sent): the peers' side of a relay
    of the other address family."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        return str(s.getsockname()[0])


async def _probe(allocation: TcpAllocation, peer: Address) -> None:
    reader, writer = await allocation.connect(peer)
    writer.write(PROBE)
    try:
        if await reader.readexactly(len(PROBE)) != PROBE:
            raise CheckFailed("outgoing: relayed bytes differ")
    finally:
        writer.close()


async def _bulk(
    sender: asyncio.StreamWriter, receiver: asyncio.StreamReader, size: int
) -> tuple[bytes, bytes]:
    async def send() -> bytes:
        digest, chunk = hashlib.sha256(), os.urandom(CHUNK)
        for offset in range(0, size, CHUNK):
            piece = chunk[: size - offset]
            digest.update(piece)
            sender.write(piece)
            await sender.drain()
        return digest.digest()

    async def receive() -> bytes:
        digest, left = hashlib.sha256(), size
        while left:
            data = await receiver.read(min(left, 4 * CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            digest.update(data)
            left -= len(data)
        return digest.digest()

    sent, got = await asyncio.gather(send(), receive())
    return sent, got


def _ssl_context(ca: str | None, insecure: bool) -> _ssl.SSLContext | None:
    if ca is None and not insecure:
        return None
    try:
        context = client_context(ca)
    except TlsSetupError as exc:
        raise click.UsageError(f"--ca: {exc}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
    return context


@click.command("turn-check")
@click.argument("turn_uri")
@click.option(
    "--turn-user",
    "--user",
    "-u",
    "user",
    envvar="DELSHARE_TURN_USER",
    metavar="NAME",
    help="TURN username, as for send/receive [DELSHARE_TURN_USER].",
)
@click.option(
    "--turn-password",
    "--password",
    "-p",
    "password",
    envvar="DELSHARE_TURN_PASSWORD",
    metavar="PASSWORD",
    help="TURN password [DELSHARE_TURN_PASSWORD].",
)
@click.option(
    "--turn-secret",
    "--secret",
    "secret",
    envvar="DELSHARE_TURN_SECRET",
    metavar="SECRET",
    help="TURN REST shared secret (coturn use-auth-secret) [DELSHARE_TURN_SECRET].",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per step.")
@click.option("--size", default=16, show_default=True, help="MiB for the throughput test.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), envvar="DELSHARE_CA",
              help="Trust only this CA (PEM) for turns: [DELSHARE_CA].")  # fmt: skip
@click.option("--insecure", is_flag=True, help="turns: without certificate verification.")
def turn_check(
    turn_uri: str,
    user: str | None,
    password: str | None,
    secret: str | None,
    timeout: float,
    size: int,
    ca: str | None,
    insecure: bool,
) -> None:
    """Check that TURN_URI relays TCP (RFC 6062) both ways; exit 0 only if every step works."""
    if secret is not None and password is not None:
        raise click.UsageError("give --turn-password or --turn-secret, not both")
    if secret is None and (user is None or password is None):
        raise click.UsageError("give --turn-user and --turn-password, or --turn-secret")
    try:
        uri = parse_turn_uri(turn_uri)
    except TurnUriError as exc:
        raise click.UsageError(str(exc)) from exc
    if not uri.stream:
        raise click.UsageError("TCP allocations need transport=tcp or turns: (RFC 6062)")
    click.echo(f"turn-check {uri}")
    tls = _ssl_context(ca, insecure)

    def connect() -> Awaitable[TurnClient]:
        return connect_turn(uri, user, password, secret=secret, ssl=tls, timeout=timeout)

    try:
        asyncio.run(Checker(timeout, size << 20).run(connect))
    except CheckFailed as exc:
        click.echo(printable(f"turn-check: FAILED at {exc}"), err=True)
        sys.exit(1)
    click.echo("OK: TCP relay works in both directions")
