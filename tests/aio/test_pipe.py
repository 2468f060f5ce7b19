"""bridge(): real TCP connections on loopback, every path (splice, socket copy, asyncio streams).

Each test builds two TCP connections A and B on 127.0.0.1. The bridge gets the accepted ends
(``a``, ``b``); the test drives the connecting ends (``ca``, ``cb``) as the client and the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import random
import socket
import ssl
import struct
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from delshare.aio import pipe
from delshare.aio.pipe import BridgeStats, BridgeTuning, Endpoint, bridge
from tests.support.tlscert import make_self_signed

MODES = ["splice", "copy", "stream"]
MiB = 1 << 20


@dataclass
class Rig:
    """Two loopback TCP connections: the bridge's ends a, b; the test's ends ca, cb."""

    a: Endpoint
    b: Endpoint
    ca: socket.socket
    cb: socket.socket
    raw: tuple[socket.socket, socket.socket]  # the sockets under a and b
    tuning: BridgeTuning

    def bridge(self, **options: Any) -> Coroutine[Any, Any, BridgeStats]:
        """``bridge(a, b)`` with this rig's tuning."""
        return bridge(self.a, self.b, tuning=self.tuning, **options)


def tuning_for(mode: str) -> BridgeTuning:
    """The copy path is the socket path with splice turned off."""
    return BridgeTuning(splice=mode != "copy")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    chosen: str = request.param
    if chosen == "splice" and not pipe.SPLICE_SUPPORTED:
        pytest.skip("splice needs Linux")
    return chosen


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
        yield server


def set_buffers(sock: socket.socket, size: int | None) -> None:
    if size is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def tcp_connection(
    listener: socket.socket, bufsize: int | None
) -> tuple[socket.socket, socket.socket]:
    """A connected (client end, accepted end) pair; ``bufsize`` fixes both kernel buffers."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    set_buffers(client, bufsize)
    client.connect(listener.getsockname())
    accepted, _ = listener.accept()
    set_buffers(accepted, bufsize)
    client.setblocking(False)
    return client, accepted


async def make_rig(mode: str, listener: socket.socket, bufsize: int | None = None) -> Rig:
    if bufsize is not None:
        set_buffers(listener, bufsize)  # inherited by accepted sockets before the handshake
    ca, sa = tcp_connection(listener, bufsize)
    cb, sb = tcp_connection(listener, bufsize)
    if mode == "stream":
        a: Endpoint = await asyncio.open_connection(sock=sa)
        b: Endpoint = await asyncio.open_connection(sock=sb)
        return Rig(a, b, ca, cb, (sa, sb), tuning_for(mode))
    return Rig(sa, sb, ca, cb, (sa, sb), tuning_for(mode))


async def send_all(sock: socket.socket, data: bytes, *, then: str = "shutdown") -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    if then == "shutdown":
        sock.shutdown(socket.SHUT_WR)
    elif then == "close":
        sock.close()


async def recv_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(sock, n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


async def recv_to_eof(sock: socket.socket) -> tuple[int, str]:
    """Read until EOF; return the byte count and SHA-256."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    total = 0
    buf = bytearray(1 * MiB)
    while n := await loop.sock_recv_into(sock, buf):
        digest.update(memoryview(buf)[:n])
        total += n
    return total, digest.hexdigest()


async def closed_by_peer(sock: socket.socket) -> None:
    """Return once the peer has closed: EOF (after any leftover bytes) or a reset."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):
        try:
            while await loop.sock_recv(sock, MiB):
                pass
        except ConnectionResetError:
            pass


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def cleanup() -> AsyncIterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


async def test_64_mib_each_way_concurrently(
    mode: str, listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    rig = await make_rig(mode, listener)
    cleanup += [rig.ca, rig.cb]
    rng = random.Random(6062)
    there, back = rng.randbytes(64 * MiB), rng.randbytes(64 * MiB)
    task = asyncio.create_task(rig.bridge())
    _, _, at_b, at_a = await asyncio.gather(
        send_all(rig.ca, there), send_all(rig.cb, back), recv_to_eof(rig.cb), recv_to_eof(rig.ca)
    )
    assert at_b == (len(there), sha(there))
    assert at_a == (len(back), sha(back))
    stats = await task
    assert stats == BridgeStats(64 * MiB, 64 * MiB)
    assert not stats.reset
    assert stats.path == mode


@pytest.mark.parametrize("prefix_size", [7, 3 * MiB])
async def test_prefixes_arrive_first_and_in_order(
    mode: str, listener: socket.socket, cleanup: list[socket.socket], prefix_size: int
) -> None:
    rig = await make_rig(mode, listener)
    cleanup += [rig.ca, rig.cb]
    rng = random.Random(prefix_size)
    prefix_a, prefix_b = rng.randbytes(prefix_size), rng.randbytes(prefix_size + 1)
    task = asyncio.create_task(rig.bridge(a_to_b_prefix=prefix_a, b_to_a_prefix=prefix_b))
    # Each prefix arrives before the other side has sent anything at all.
    got_b, got_a = await asyncio.gather(
        recv_exactly(rig.cb, len(prefix_a)), recv_exactly(rig.ca, len(prefix_b))
    )
    assert (got_b, got_a) == (prefix_a, prefix_b)
    _, _, at_b, at_a = await asyncio.gather(
        send_all(rig.ca, b"hello"),
        send_all(rig.cb, b"world"),
        recv_to_eof(rig.cb),
        recv_to_eof(rig.ca),
    )
    assert at_b == (5, sha(b"hello"))
    assert at_a == (5, sha(b"world"))
    assert await task == BridgeStats(len(prefix_a) + 5, len(prefix_b) + 5)


async def test_half_close_keeps_the_other_direction(
    mode: str, listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    rig = await make_rig(mode, listener)
    cleanup += [rig.ca, rig.cb]
    there, back = random.Random(1).randbytes(MiB + 17), random.Random(2).randbytes(3 * MiB + 5)
    task = asyncio.create_task(rig.bridge())
    _, at_b = await asyncio.gather(send_all(rig.ca, there), recv_to_eof(rig.cb))
    assert at_b == (len(there), sha(there))  # all N bytes, then EOF
    assert not task.done()
    _, at_a = await asyncio.gather(send_all(rig.cb, back, then="close"), recv_to_eof(rig.ca))
    assert at_a == (len(back), sha(back))
    stats = await task
    assert stats == BridgeStats(len(there), len(back))
    assert not stats.reset


async def slow_recv_to_eof(sock: socket.socket) -> tuple[int, str]:
    """Like ``recv_to_eof`` but in small reads with pauses, so the bridge's buffer stays full."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    total = 0
    while chunk := await loop.sock_recv(sock, 32 * 1024):
        digest.update(chunk)
        total += len(chunk)
        await asyncio.sleep(0.0005)
    return total, digest.hexdigest()


@pytest.mark.parametrize(
    ("size", "bufsize", "receive"),
    [(32 * MiB, None, recv_to_eof), (4 * MiB, 64 * 1024, slow_recv_to_eof)],
    ids=["fast-receiver", "slow-receiver"],
)
async def test_no_tail_loss_when_sender_closes_at_once(
    mode: str,
    listener: socket.socket,
    cleanup: list[socket.socket],
    size: int,
    bufsize: int | None,
    receive: Callable[[socket.socket], Awaitable[tuple[int, str]]],
) -> None:
    rig = await make_rig(mode, listener, bufsize)
    cleanup += [rig.cb]
    data = random.Random(3).randbytes(size)
    task = asyncio.create_task(rig.bridge())
    _, at_b = await asyncio.gather(send_all(rig.ca, data, then="close"), receive(rig.cb))
    assert at_b == (len(data), sha(data))
    rig.cb.close()
    stats = await task
    assert stats == BridgeStats(len(data), 0)


async def push_until_stalled(sock: socket.socket) -> int:
    """Send as fast as the socket takes it, for at most ~1 s; return the bytes accepted."""
    loop = asyncio.get_running_loop()
    chunk = bytes(MiB)
    deadline = loop.time() + 1.0
    accepted = stalled = 0
    while loop.time() < deadline and stalled < 100:
        before = accepted
        try:
            while True:
                accepted += sock.send(chunk)
        except BlockingIOError:
            pass
        stalled = stalled + 1 if accepted == before else 0
        await asyncio.sleep(0.002)
    return accepted


BOUND = {"splice": pipe.PIPE_SIZE, "copy": pipe.COPY_CHUNK, "stream": 2 * pipe.STREAM_CHUNK}


async def test_slow_reader_bounds_buffering(
    mode: str, listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    rig = await make_rig(mode, listener, bufsize=64 * 1024)
    cleanup += [rig.ca, rig.cb]
    task = asyncio.create_task(rig.bridge())
    accepted = await push_until_stalled(rig.ca)  # cb reads nothing meanwhile
    # Kernel buffers (4 sockets x 2 x 64 KiB, plus loopback slack) and one bounded buffer;
    # a bridge that kept reading would take everything offered in that second (GBs).
    assert 0 < accepted < 8 * MiB
    rig.ca.shutdown(socket.SHUT_WR)
    assert await recv_to_eof(rig.cb) == (accepted, sha(bytes(accepted)))
    rig.cb.shutdown(socket.SHUT_WR)
    stats = await task
    assert stats == BridgeStats(accepted, 0)
    assert 0 < stats.peak_buffered <= BOUND[mode]


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("side", ["a", "b"])
async def test_reset_on_one_side_closes_the_other(
    mode: str, listener: socket.socket, cleanup: list[socket.socket], side: str
) -> None:
    rig = await make_rig(mode, listener)
    resetter, survivor = (rig.ca, rig.cb) if side == "a" else (rig.cb, rig.ca)
    cleanup.append(survivor)
    task = asyncio.create_task(rig.bridge())
    await asyncio.get_running_loop().sock_sendall(resetter, b"ping")
    assert await recv_exactly(survivor, 4) == b"ping"
    reset(resetter)
    stats = await task
    assert stats.reset
    assert (stats.a_to_b, stats.b_to_a) == ((4, 0) if side == "a" else (0, 4))
    await closed_by_peer(survivor)
    assert [s.fileno() for s in rig.raw] == [-1, -1]


async def test_linger_after_reset_is_bounded(
    mode: str,
    listener: socket.socket,
    cleanup: list[socket.socket],
) -> None:
    """Once a reset is seen, a surviving peer that never reads cannot keep the bridge alive.

    (A reset is seen when the relay next touches that socket; here, relaying cb's bytes to a.)
    """
    rig = await make_rig(mode, listener, bufsize=64 * 1024)
    rig.tuning = replace(rig.tuning, linger=0.2)
    cleanup.append(rig.cb)
    task = asyncio.create_task(rig.bridge())
    await push_until_stalled(rig.ca)  # cb never reads: the relay holds bytes owed to it
    reset(rig.ca)
    rig.cb.send(b"wake")
    async with asyncio.timeout(30):
        stats = await task
    assert stats.reset
    assert [s.fileno() for s in rig.raw] == [-1, -1]


def unsent(sock: socket.socket) -> int:
    """Bytes in the kernel send queue not yet acknowledged by the peer (Linux SIOCOUTQ)."""
    queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]
    return queued


async def recv_answering(sock: socket.socket, talk: bool) -> tuple[int, str]:
    """Read until EOF or reset, answering every read with a few bytes if ``talk``."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    total = 0
    try:
        while chunk := await loop.sock_recv(sock, 8 * 1024):  # slowly: bytes stay owed
            digest.update(chunk)
            total += len(chunk)
            if talk:
                with contextlib.suppress(OSError):
                    sock.send(b"ack")
            await asyncio.sleep(0.002)
    except ConnectionResetError:
        pass  # after the last byte: the relay closed while acks were still coming in
    return total, digest.hexdigest()


@pytest.mark.skipif(sys.platform != "linux", reason="needs SIOCOUTQ to stage the race")
@pytest.mark.parametrize("peer_keeps_talking", [False, True], ids=["quiet-peer", "talking-peer"])
async def test_tail_survives_client_reset_while_peer_talks(
    mode: str,
    cleanup: list[socket.socket],
    request: pytest.FixtureRequest,
    peer_keeps_talking: bool,
) -> None:
    """The coturn tail loss: the client sends, closes; the peer's next bytes make it answer RST.

    Everything the client sent before closing is already queued inside the relay (the peer
    reads slowly), so the relay must still deliver it, then FIN, and not close the peer's
    connection while bytes to it are unacknowledged and the peer may still send (data arriving
    at a closed socket makes the kernel answer RST and drop what it had not sent yet).
    """
    if mode == "stream":
        reason = "asyncio's StreamReader drops its buffer once its transport fails"
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    big, small = 4 * MiB, 64 * 1024
    with socket.create_server(("127.0.0.1", 0)) as la, socket.create_server(("127.0.0.1", 0)) as lb:
        set_buffers(la, big)
        set_buffers(lb, small)
        ca, sa = tcp_connection(la, big)
        cb, sb = tcp_connection(lb, small)
    cleanup += [ca, cb]
    a: Endpoint = sa
    b: Endpoint = sb
    if mode == "stream":
        a, b = await asyncio.open_connection(sock=sa), await asyncio.open_connection(sock=sb)
    data = random.Random(12).randbytes(2 * MiB)
    task = asyncio.create_task(bridge(a, b, tuning=tuning_for(mode)))
    await asyncio.get_running_loop().sock_sendall(ca, data)
    for _ in range(2000):  # until the client's kernel has handed every byte to the relay
        if unsent(ca) == 0:
            break
        await asyncio.sleep(0.005)
    assert unsent(ca) == 0
    ca.close()  # nothing unread: a FIN; the client's socket now answers any data with RST
    for _ in range(20):
        try:
            cb.send(b"late reply")
        except OSError:
            break
        await asyncio.sleep(0.01)
    assert await recv_answering(cb, peer_keeps_talking) == (len(data), sha(data))
    cb.close()
    stats = await task
    assert stats.a_to_b == len(data)
    assert stats.reset


async def test_cancellation_closes_both(
    mode: str, listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    rig = await make_rig(mode, listener)
    cleanup += [rig.ca, rig.cb]
    task = asyncio.create_task(rig.bridge())
    await asyncio.get_running_loop().sock_sendall(rig.ca, b"ping")
    assert await recv_exactly(rig.cb, 4) == b"ping"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await closed_by_peer(rig.ca)
    await closed_by_peer(rig.cb)
    assert [s.fileno() for s in rig.raw] == [-1, -1]


async def one_small_exchange(rig: Rig, seed: int) -> BridgeStats:
    rng = random.Random(seed)
    there, back = rng.randbytes(rng.randrange(1, 50_000)), rng.randbytes(rng.randrange(1, 50_000))
    task = asyncio.create_task(rig.bridge())
    _, _, at_b, at_a = await asyncio.gather(
        send_all(rig.ca, there), send_all(rig.cb, back), recv_to_eof(rig.cb), recv_to_eof(rig.ca)
    )
    assert (at_b, at_a) == ((len(there), sha(there)), (len(back), sha(back)))
    stats = await task
    assert stats == BridgeStats(len(there), len(back))
    return stats


async def test_200_concurrent_bridges(
    mode: str, listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    rigs = [await make_rig(mode, listener) for _ in range(200)]
    cleanup += [s for rig in rigs for s in (rig.ca, rig.cb)]
    results = await asyncio.gather(*(one_small_exchange(rig, i) for i, rig in enumerate(rigs)))
    assert len(results) == 200
    assert not any(stats.reset for stats in results)


async def test_mixed_socket_and_stream_endpoints(
    listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    rig = await make_rig("splice", listener)
    cleanup += [rig.ca, rig.cb]
    stream_b = await asyncio.open_connection(sock=rig.raw[1])
    stats = await one_small_exchange(replace(rig, b=stream_b), 7)
    assert stats.path == "stream"


@pytest.mark.skipif(not pipe.SPLICE_SUPPORTED, reason="splice path")
async def test_small_pipe_falls_back_to_copy(
    listener: socket.socket, cleanup: list[socket.socket]
) -> None:
    # Past fs.pipe-user-pages-soft, unprivileged pipes cannot grow; simulate by asking for more.
    rig = await make_rig("splice", listener)
    rig.tuning = replace(rig.tuning, min_pipe_size=2 * pipe.PIPE_SIZE)
    cleanup += [rig.ca, rig.cb]
    stats = await one_small_exchange(rig, 8)
    assert stats.path == "copy"


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ...]:
    files = make_self_signed(tmp_path_factory.mktemp("tls"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=str(files.cert))
    return server, client


async def tls_connection(
    listener: socket.socket, contexts: tuple[ssl.SSLContext, ...]
) -> tuple[Stream, Stream]:
    """A TLS connection on loopback: (client streams, server streams)."""
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, sock=listener, ssl=contexts[0])
    client = await asyncio.open_connection(
        *listener.getsockname(), ssl=contexts[1], server_hostname="localhost"
    )
    served = await accepted.get()
    server.close()
    return client, served


async def stream_to_eof(reader: asyncio.StreamReader) -> tuple[int, str]:
    data = await reader.read()
    return len(data), sha(data)


async def test_tls_client_to_tcp_peer_both_ways(
    tls_contexts: tuple[ssl.SSLContext, ...], cleanup: list[socket.socket]
) -> None:
    """TLS has no half-close: the peer's FIN ends the TLS side after a full flush."""
    with (
        socket.create_server(("127.0.0.1", 0)) as tls_listener,
        socket.create_server(("127.0.0.1", 0)) as tcp_listener,
    ):
        (cr, cw), served = await tls_connection(tls_listener, tls_contexts)
        cb, sb = tcp_connection(tcp_listener, None)
    cleanup.append(cb)
    there, back = random.Random(9).randbytes(3 * MiB), random.Random(10).randbytes(2 * MiB + 3)
    task = asyncio.create_task(bridge(served, sb, a_to_b_prefix=b"P"))
    cw.write(there)
    await cw.drain()
    assert await recv_exactly(cb, len(there) + 1) == b"P" + there
    _, at_a, at_b = await asyncio.gather(send_all(cb, back), stream_to_eof(cr), recv_to_eof(cb))
    assert at_a == (len(back), sha(back))
    assert at_b == (0, sha(b""))
    assert await task == BridgeStats(len(there) + 1, len(back))
    cw.close()


async def test_tls_sender_closing_loses_no_tail(
    tls_contexts: tuple[ssl.SSLContext, ...], cleanup: list[socket.socket]
) -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as tls_listener,
        socket.create_server(("127.0.0.1", 0)) as tcp_listener,
    ):
        (_, cw), served = await tls_connection(tls_listener, tls_contexts)
        cb, sb = tcp_connection(tcp_listener, None)
    cleanup.append(cb)
    data = random.Random(11).randbytes(8 * MiB)
    task = asyncio.create_task(bridge(served, sb))

    async def send_and_close() -> None:
        cw.write(data)
        cw.close()  # close_notify after the last record
        await cw.wait_closed()

    _, at_b = await asyncio.gather(send_and_close(), recv_to_eof(cb))
    assert at_b == (len(data), sha(data))
    cb.close()
    stats = await task
    assert stats == BridgeStats(len(data), 0)
    assert stats.path == "stream"


async def test_rejects_datagram_sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(TypeError):
        await bridge(udp, udp)


@pytest.mark.skipif(sys.platform != "linux", reason="splice path")
def test_splice_path_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> BridgeStats:
        with socket.create_server(("127.0.0.1", 0)) as server:
            rig = await make_rig("splice", server)
        try:
            data = random.Random(4).randbytes(8 * MiB)
            task = asyncio.create_task(rig.bridge())
            _, _, at_b, at_a = await asyncio.gather(
                send_all(rig.ca, data),
                send_all(rig.cb, data[::-1]),
                recv_to_eof(rig.cb),
                recv_to_eof(rig.ca),
            )
            assert (at_b, at_a) == ((len(data), sha(data)), (len(data), sha(data[::-1])))
            return await task
        finally:
            rig.ca.close()
            rig.cb.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        stats = runner.run(scenario())
    assert stats == BridgeStats(8 * MiB, 8 * MiB)
    assert stats.path == "splice"
