"""The asyncio TURN client against real servers: coturn, and ``delshare relay``.

Every test runs against both servers (issue 3 acceptance): TCP allocation, incoming stream
(ConnectionAttempt → ConnectionBind), outgoing stream (Connect), 50 MiB each way with matching
SHA-256, UDP allocation round trip, REST credentials, stale nonce recovery, refresh over a short
lifetime. The launchers here are also used by ``tests/cli/test_turn_check.py``.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from delshare.aio.client import TurnClient, connect_turn, stun_binding
from delshare.aio.client_allocation import TcpAllocation
from delshare.errors import DelshareError
from delshare.turn.client_errors import AuthenticationError, PeerConnectError
from tests.support.coturn import start_turnserver
from tests.support.ports import free_port
from tests.support.tlscert import make_self_signed

USER, PASSWORD, REALM, SECRET = "user", "pass", "del.test", "s3cret"
MIB = 1 << 20
BULK = 50 * MIB
STEP = 10.0  # seconds any single network step may take


# -- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    """A running TURN server of either kind."""

    kind: str
    host: str
    port: int
    stop_fn: object = field(repr=False)
    tls_port: int | None = None

    def uri(self, transport: str = "tcp") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if transport == "tls":
            return f"turns:{host}:{self.tls_port}?transport=tcp"
        return f"turn:{host}:{self.port}?transport={transport}"

    def stop(self) -> None:
        self.stop_fn()  # type: ignore[operator]


def coturn_skip() -> None:
    if shutil.which("turnserver") is None:
        pytest.skip("coturn's turnserver is not on PATH")


def start_coturn(
    *,
    secret: str | None = None,
    stale_nonce: int | None = None,
    max_lifetime: int | None = None,
    no_tcp_relay: bool = False,
    tls: bool = False,
    host: str = "127.0.0.1",
) -> Server:
    coturn_skip()
    extra: list[str] = []
    if stale_nonce is not None:
        extra.append(f"--stale-nonce={stale_nonce}")
    if max_lifetime is not None:
        extra.append(f"--max-allocate-lifetime={max_lifetime}")  # coturn ignores the spaced form
    users = () if secret else ((USER, PASSWORD),)
    server = start_turnserver(
        users=users, realm=REALM, auth_secret=secret, no_tcp_relay=no_tcp_relay, tls=tls,
        extra=extra, host=host,
    )  # fmt: skip
    return Server("coturn", server.host, server.port, server.stop, server.tls_port)


def start_delshare_relay(
    *,
    secret: str | None = None,
    stale_nonce: int | None = None,
    max_lifetime: int | None = None,
    extra: tuple[str, ...] | list[str] = (),
    host: str = "127.0.0.1",
) -> Server:
    """``delshare relay`` with the flags the options name; a missing flag fails the test.

    The relay then exits with a usage error, which ``_wait_listening`` reports.
    """
    port = free_port("both", host)
    v6 = ":" in host
    argv = [
        sys.executable, "-c", "from delshare.cli.main import main; main()", "relay",
        "--listen", f"[{host}]:{port}" if v6 else f"{host}:{port}", "--realm", REALM,
        "--allow-peer", "::1/128" if v6 else "127.0.0.0/8", "--no-rendezvous",
    ]  # fmt: skip
    argv += ["--auth-secret", secret] if secret else ["--user", f"{USER}:{PASSWORD}"]
    if stale_nonce is not None:
        argv += ["--nonce-lifetime", str(stale_nonce)]
    if max_lifetime is not None:
        argv += ["--max-lifetime", str(max_lifetime)]
    argv += extra
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_listening(process, port, host)
    return Server("delshare", host, port, lambda: _stop(process))


def _wait_listening(process: subprocess.Popen[bytes], port: int, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"delshare relay exited {process.returncode}: {err[-2000:]}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    _stop(process)
    raise RuntimeError("delshare relay did not start listening")


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def start_server(kind: str, **options: object) -> Server:
    """Start a TURN server of ``kind`` ("coturn" or "delshare")."""
    if kind == "coturn":
        return start_coturn(**options)  # type: ignore[arg-type]
    return start_delshare_relay(**options)  # type: ignore[arg-type]


KINDS = [pytest.param("coturn", marks=pytest.mark.coturn), "delshare"]


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running = start_server(request.param)
    yield running
    running.stop()


@pytest.fixture(scope="module", params=KINDS)
def rest_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running = start_server(request.param, secret=SECRET)
    yield running
    running.stop()


# -- helpers ----------------------------------------------------------------------------------


async def open_client(server: Server, transport: str = "tcp") -> TurnClient:
    return await connect_turn(server.uri(transport), USER, PASSWORD)


async def tcp_allocation(server: Server) -> tuple[TurnClient, TcpAllocation]:
    client = await open_client(server)
    allocation = await client.allocate_tcp()
    await allocation.permit("127.0.0.1")
    return client, allocation


async def send_bulk(writer: asyncio.StreamWriter, size: int) -> str:
    digest, block = hashlib.sha256(), os.urandom(MIB)
    for offset in range(0, size, MIB):
        piece = block[: size - offset]
        block = block[1:] + block[:1]  # vary the data so a dropped or repeated chunk shows
        digest.update(piece)
        writer.write(piece)
        await writer.drain()
    return digest.hexdigest()  # no half-close: RFC 6062 relays have none (coturn resets)


async def receive_exactly(reader: asyncio.StreamReader, size: int) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    while total < size:
        data = await reader.read(min(4 * MIB, size - total))
        if not data:
            break
        digest.update(data)
        total += len(data)
    return digest.hexdigest(), total


async def ended(reader: asyncio.StreamReader) -> bool:
    """Whether the stream ends (EOF or reset) without more data."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


class Listener:
    """A local TCP server that records its connections, for the Connect path."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def on_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.connections.put((r, w))

        self.server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


# -- tests ------------------------------------------------------------------------------------


def test_a_relay_flag_that_does_not_exist_fails_instead_of_skipping() -> None:
    """A renamed relay flag must show up as a failure, not as a quietly skipped test."""
    with pytest.raises(RuntimeError, match="no-such-flag"):
        start_delshare_relay(extra=["--no-such-flag"])


async def test_tcp_allocation_reports_relayed_and_mapped_address(server: Server) -> None:
    client = await open_client(server)
    async with client:
        reflexive = await client.binding()
        allocation = await client.allocate_tcp()
        assert reflexive == client.local_address
        assert allocation.mapped_address == client.local_address
        assert allocation.relayed_address[0] == "127.0.0.1"
        assert allocation.relayed_address[1] not in (0, server.port)
        assert allocation.lifetime > 0
        # RFC 8489 §9.2.4: SHA-256 when offered (ours offers it, coturn 4.6 does not)
        assert client.core.auth.sha256 is (server.kind == "delshare")


async def test_incoming_stream_delivers_early_bytes_first(server: Server) -> None:
    client, allocation = await tcp_allocation(server)
    async with client:
        peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        peer_writer.write(b"sent before the bind;")
        await peer_writer.drain()
        async with asyncio.timeout(STEP):
            reader, writer, peer = await allocation.accept()
            peer_writer.write(b" and after")
            assert await reader.readexactly(31) == b"sent before the bind; and after"
            writer.write(b"reply")
            assert await peer_reader.readexactly(5) == b"reply"
        assert peer == peer_writer.get_extra_info("sockname")[:2]
        # the app's stream sits directly on the data connection's socket: no pump in between
        assert writer.get_extra_info("peername")[:2] == client.server_address
        assert isinstance(writer.get_extra_info("socket").fileno(), int)
        peer_writer.close()


async def test_stream_lives_while_the_app_keeps_only_its_reader(server: Server) -> None:
    """A garbage-collected StreamWriter closes its socket; the allocation keeps writers alive."""
    client, allocation = await tcp_allocation(server)
    async with client, asyncio.timeout(STEP):
        _, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        reader, _, _ = await allocation.accept()  # the writer is dropped right here
        gc.collect()
        peer_writer.write(b"kept")  # sent only after the drop: arrives only if the socket lives
        assert await reader.readexactly(4) == b"kept"
        peer_writer.close()


async def test_outgoing_stream_reaches_peer(server: Server) -> None:
    client, allocation = await tcp_allocation(server)
    async with client, Listener() as listener:
        async with asyncio.timeout(STEP):
            reader, writer = await allocation.connect(listener.address)
            writer.write(b"hello peer")
            peer_reader, peer_writer = await listener.connections.get()
            assert await peer_reader.readexactly(10) == b"hello peer"
            peer_writer.write(b"hello client")
            assert await reader.readexactly(12) == b"hello client"
        assert peer_writer.get_extra_info("peername")[:2] == allocation.relayed_address
        peer_writer.close()


async def test_50_mib_each_direction_with_matching_sha256(server: Server) -> None:
    client, allocation = await tcp_allocation(server)
    async with client, Listener() as listener:
        async with asyncio.timeout(60):
            # peer → client over an incoming stream
            _peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
            reader, _writer, _ = await allocation.accept()
            sent, (got, total) = await asyncio.gather(
                send_bulk(peer_writer, BULK), receive_exactly(reader, BULK)
            )
            assert (got, total) == (sent, BULK)
            # client → peer over an outgoing stream
            _out_reader, out_writer = await allocation.connect(listener.address)
            far_reader, _ = await listener.connections.get()
            sent, (got, total) = await asyncio.gather(
                send_bulk(out_writer, BULK), receive_exactly(far_reader, BULK)
            )
            assert (got, total) == (sent, BULK)


async def test_connect_without_permission_is_refused_with_403(server: Server) -> None:
    if server.kind == "coturn":
        pytest.skip("coturn 4.6 accepts Connect without a permission (installs one itself)")
    client = await open_client(server)
    async with client, Listener() as listener:
        allocation = await client.allocate_tcp()
        with pytest.raises(PeerConnectError) as info:
            await allocation.connect(listener.address, timeout=STEP)
        assert info.value.code == 403


async def test_closing_the_allocation_closes_its_streams(server: Server) -> None:
    client, allocation = await tcp_allocation(server)
    async with client:
        peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        reader, _writer, _ = await asyncio.wait_for(allocation.accept(), STEP)
        await allocation.close()
        async with asyncio.timeout(STEP):
            assert await reader.read() == b""
            assert await ended(peer_reader)  # the relay tore down the peer side too
        with pytest.raises(DelshareError):
            await allocation.accept()
        peer_writer.close()


async def test_wrong_password_raises_authentication_error(server: Server) -> None:
    client = await connect_turn(server.uri("tcp"), USER, "wrong")
    async with client:
        with pytest.raises(AuthenticationError) as info:
            await client.allocate_tcp()
        assert info.value.code in (401, 441)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_udp_allocation_round_trip_with_and_without_channel(
    server: Server, transport: str
) -> None:
    client = await open_client(server, transport)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        peer_address = peer.getsockname()
        async with client, asyncio.timeout(STEP):
            allocation = await client.allocate_udp()
            await allocation.permit("127.0.0.1")
            allocation.send(peer_address, b"via Send indication")
            data, source = await loop.sock_recvfrom(peer, 2048)
            assert (data, source) == (b"via Send indication", allocation.relayed_address)
            await loop.sock_sendto(peer, b"via Data indication", source)
            assert await allocation.recv() == (b"via Data indication", peer_address)
            channel = await allocation.bind_channel(peer_address)
            assert 0x4000 <= channel <= 0x4FFF
            allocation.send(peer_address, b"via ChannelData")
            assert await loop.sock_recvfrom(peer, 2048) == (b"via ChannelData", source)
            await loop.sock_sendto(peer, b"back via ChannelData", source)
            assert await allocation.recv() == (b"back via ChannelData", peer_address)


async def test_rest_credentials_from_shared_secret(rest_server: Server) -> None:
    client = await connect_turn(rest_server.uri("tcp"), secret=SECRET)
    async with client:
        allocation = await client.allocate_tcp()
        assert allocation.relayed_address[1] > 0
    wrong = await connect_turn(rest_server.uri("tcp"), secret="not the secret")
    async with wrong:
        with pytest.raises(AuthenticationError):
            await wrong.allocate_tcp()


@pytest.mark.parametrize("kind", KINDS)
async def test_stale_nonce_is_recovered(kind: str) -> None:
    nonce_lifetime = 1
    running = start_server(kind, stale_nonce=nonce_lifetime)
    try:
        client, allocation = await tcp_allocation(running)
        async with client:
            await asyncio.sleep(nonce_lifetime + 1.5)  # the Allocate's nonce is stale now
            await allocation.permit("127.0.0.1")
            assert client.core.auth.stale_nonces >= 1
            async with Listener() as listener, asyncio.timeout(STEP):
                _, writer = await allocation.connect(listener.address)
                writer.close()
    finally:
        running.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_allocation_refreshes_itself_over_a_short_lifetime(kind: str) -> None:
    running = start_server(kind, max_lifetime=3)
    try:
        client, allocation = await tcp_allocation(running)
        async with client:
            assert allocation.lifetime <= 3
            await asyncio.sleep(7)  # 2.3 lifetimes: without Refresh the allocation is gone
            assert allocation.refreshes >= 1  # coturn may grant 600 s to the first Refresh
            assert not allocation.closed
            _peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
            peer_writer.write(b"still here")
            reader, _, _ = await asyncio.wait_for(allocation.accept(), STEP)
            assert await asyncio.wait_for(reader.readexactly(10), STEP) == b"still here"
            peer_writer.close()
    finally:
        running.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_tls_control_and_data_connections(kind: str, tmp_path: Path) -> None:
    running, cert = start_tls_server(kind, tmp_path)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        client = await connect_turn(running.uri("tls"), USER, PASSWORD, ssl=context)
        async with client, Listener() as listener, asyncio.timeout(STEP):
            allocation = await client.allocate_tcp()
            await allocation.permit("127.0.0.1")
            _peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
            peer_writer.write(b"over tls")
            reader, _writer, _ = await allocation.accept()
            assert await reader.readexactly(8) == b"over tls"
            _out_reader, out_writer = await allocation.connect(listener.address)
            out_writer.write(b"out")
            far_reader, _ = await listener.connections.get()
            assert await far_reader.readexactly(3) == b"out"
            peer_writer.close()
    finally:
        running.stop()


def start_tls_server(kind: str, tmp_path: Path) -> tuple[Server, Path]:
    """A server with a TLS listener and the certificate that verifies it."""
    if kind == "coturn":
        running = start_coturn(tls=True)
        owner = getattr(running.stop_fn, "__self__", None)
        return running, Path(owner.workdir) / "tls" / "server.crt"  # type: ignore[union-attr]
    files = make_self_signed(tmp_path / "tls")
    tls_port = free_port("tcp")
    running = start_delshare_relay(
        extra=["--tls-listen", f"127.0.0.1:{tls_port}", "--cert", str(files.cert), "--key",
               str(files.key)],
    )  # fmt: skip
    running.tls_port = tls_port
    _wait_port(tls_port)
    return running, files.cert


@pytest.mark.parametrize("kind", KINDS)
async def test_ipv6_tcp_allocation_with_both_stream_directions(kind: str) -> None:
    running = start_server(kind, host="::1")
    try:
        client = await open_client(running)
        async with client, asyncio.timeout(STEP):
            allocation = await client.allocate_tcp(family=6)
            assert allocation.relayed_address[0] == "::1"
            assert allocation.mapped_address == client.local_address
            await allocation.permit("::1")
            _, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
            peer_writer.write(b"v6 in")
            reader, _writer, peer = await allocation.accept()
            assert await reader.readexactly(5) == b"v6 in" and peer[0] == "::1"
            server = await asyncio.start_server(_echo, "::1", 0)
            try:
                out_reader, out_writer = await allocation.connect(("::1", _port(server)))
                out_writer.write(b"v6 out")
                assert await out_reader.readexactly(6) == b"v6 out"
            finally:
                server.close()
            peer_writer.close()
    finally:
        running.stop()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.read(100))
    await writer.drain()


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def test_streams_work_under_uvloop(server: Server) -> None:
    """The app runs on uvloop when installed; its transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> bytes:
        client, allocation = await tcp_allocation(server)
        async with client, Listener() as listener, asyncio.timeout(STEP):
            _, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
            peer_writer.write(b"in")
            reader, _, _ = await allocation.accept()
            _, writer = await allocation.connect(listener.address)
            writer.write(b"out")
            far_reader, _ = await listener.connections.get()
            peer_writer.close()
            return await reader.readexactly(2) + await far_reader.readexactly(3)

    assert uvloop.run(scenario()) == b"inout"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_stun_binding_helper_reports_our_address(server: Server, transport: str) -> None:
    reflexive = await stun_binding(server.uri(transport))
    assert reflexive[0] == "127.0.0.1" and reflexive[1] > 0
