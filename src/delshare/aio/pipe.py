"""Bidirectional byte pump between two stream endpoints: the data plane of RFC 6062 TCP relays.

Theory of operation
-------------------
``bridge(a, b)`` runs two independent directions, a→b and b→a, until both have finished.

Plain sockets are driven by event-loop readiness callbacks (``add_reader``/``add_writer``), with no
task or thread per connection. Each direction owns one bounded buffer: on Linux a pipe enlarged to
``PIPE_SIZE`` that ``os.splice`` fills from the source socket and empties into the destination
(the bytes never enter user space); elsewhere a ``COPY_CHUNK`` ``bytearray`` for
``recv_into``/``send``. A direction watches its source only while its buffer is empty and its
destination only while it is not, so a slow reader stops reads from the sender and the kernel's
TCP windows push back on it: memory per direction never exceeds one buffer. Each callback moves
data until the kernel says EAGAIN (bounded by ``_MAX_ROUNDS``) to amortise loop overhead.

``asyncio`` stream pairs (TLS, or anything that is not a raw socket) use one copy task per
direction with ``STREAM_CHUNK`` reads and ``drain()`` for the same back-pressure.

Closing (RFC 6062 §5.5, and the lesson of relays that lose the tail of a stream):

- On EOF from a source, the direction first writes out everything buffered, then shuts down the
  destination's write half (``SHUT_WR`` / ``write_eof``); the other direction keeps flowing.
- Sockets are closed only once both directions have seen EOF, so their receive queues are empty
  and ``close()`` is a graceful FIN after the kernel has sent every queued byte. ``SO_LINGER`` is
  left off: a close with unread data turns into a RST that discards the send queue.
- A reset (any socket error) on one side S is a teardown, but not a reason to lose bytes that side
  S sent before it failed: the direction *from* S keeps reading what S's kernel still queues
  (after a RST, Linux still hands out queued data), delivers it to the other side O, then FIN.
  The direction *into* S becomes a sink that reads and discards O's bytes, so that O's receive
  queue stays empty, until O's kernel has had every byte acknowledged (``SIOCOUTQ`` = 0), O
  closes, or ``LINGER_TIMEOUT`` passes. Then both are closed and the stats say ``reset=True``.
- Cancellation closes both at once and re-raises ``CancelledError``.

Bandwidth caps (``limits``, coturn's ``max-bps``): a direction given a ``TokenBucket`` reads at
most what the bucket holds (splice still moves the bytes, just in measured lengths); when the
bucket is empty it stops watching its source and sets one timer for when the bucket has refilled
a quarter of its burst. Unread bytes stay in the kernel, so the sender is held back by TCP flow
control and nothing is buffered beyond the usual one buffer per direction. Several bridges may
share one bucket (all data connections of an allocation). Without a bucket nothing changes.

Live counts: ``BridgeMeter`` reads a running bridge's per-direction totals at any moment (e.g. a
metrics scrape from another thread) at no cost to the byte path, which already keeps them.

Limits: a splice bridge holds 6 fds (2 sockets, 2 pipes), so size ``RLIMIT_NOFILE`` for the
number of relays; pipes past ``fs.pipe-user-pages-soft`` cannot grow and those directions copy
instead. With asyncio streams the reset rescue is best effort: a ``StreamReader`` whose
transport fails raises at once and drops what it had buffered.

Where: this module chooses the engine; ``bridge_sockets`` drives raw sockets (splice or copy),
``bridge_streams`` drives asyncio streams, and ``bridge_common`` holds what both share.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from delshare.aio.bridge_common import (
    COPY_CHUNK,
    DEFAULT_TUNING,
    LINGER_TIMEOUT,
    NO_LIMITS,
    PIPE_SIZE,
    SPLICE_SUPPORTED,
    STREAM_CHUNK,
    BridgeStats,
    BridgeTuning,
    Endpoint,
    Limits,
    Stream,
)
from delshare.aio.bridge_sockets import SocketBridge
from delshare.aio.bridge_streams import StreamBridge

__all__ = [
    "COPY_CHUNK",
    "LINGER_TIMEOUT",
    "PIPE_SIZE",
    "SPLICE_SUPPORTED",
    "STREAM_CHUNK",
    "BridgeMeter",
    "BridgeStats",
    "BridgeTuning",
    "Endpoint",
    "Limits",
    "bridge",
]


class BridgeMeter:
    """The byte counts of a running bridge, readable at any time and from any thread."""

    def __init__(self) -> None:
        self._runner: SocketBridge | StreamBridge | None = None

    def moved(self) -> tuple[int, int]:
        """Bytes delivered so far, (a→b, b→a), prefixes included."""
        runner = self._runner
        if runner is None:
            return 0, 0
        done = runner.snapshot()
        return done.a_to_b, done.b_to_a


async def bridge(
    a: Endpoint,
    b: Endpoint,
    *,
    a_to_b_prefix: bytes = b"",
    b_to_a_prefix: bytes = b"",
    stats: BridgeStats | None = None,
    tuning: BridgeTuning = DEFAULT_TUNING,
    limits: Limits = NO_LIMITS,
    meter: BridgeMeter | None = None,
) -> BridgeStats:
    """Move bytes both ways between ``a`` and ``b`` until both directions end; close both.

    The prefixes are written before anything read from the other side (e.g. bytes read past a
    STUN frame, RFC 6062 §5.3). The bridge owns the endpoints: it makes sockets non-blocking and
    closes everything when it returns or is cancelled. A reset on either side ends the bridge
    (RFC 6062 §5.5) with ``reset=True`` after the other side got every byte owed to it (bounded
    by ``LINGER_TIMEOUT``). A reset is noticed when the bridge next reads or writes that socket,
    so a bridge stalled on a peer that never reads waits as TCP would: cancel it to end it.
    ``stats``, when given, is filled in as the bridge ends, even when it is cancelled.
    ``tuning`` overrides the splice/copy choice and the linger bound for this bridge.
    ``limits`` caps each direction's rate (token buckets, shareable between bridges);
    ``meter`` shows the counts while the bridge runs.
    """
    _check_endpoint(a)
    _check_endpoint(b)
    if isinstance(a, socket.socket) and isinstance(b, socket.socket) and _loop_watches_fds():
        runner = SocketBridge(a, b, a_to_b_prefix, b_to_a_prefix, tuning, limits)
        return await _run_reporting(runner, stats, meter)
    streams: list[Stream] = []
    try:
        for endpoint in (a, b):
            streams.append(await _as_stream(endpoint))
    except BaseException:
        for stream in streams:
            stream[1].transport.abort()
        for endpoint in (a, b)[len(streams) :]:
            _close_endpoint(endpoint)
        raise
    streamer = StreamBridge(
        streams[0], streams[1], a_to_b_prefix, b_to_a_prefix, tuning.linger, limits
    )
    return await _run_reporting(streamer, stats, meter)


async def _run_reporting(
    runner: SocketBridge | StreamBridge, out: BridgeStats | None, meter: BridgeMeter | None
) -> BridgeStats:
    if meter is not None:
        meter._runner = runner
    try:
        return await runner.run()
    finally:
        if out is not None:
            done = runner.snapshot()
            out.a_to_b, out.b_to_a, out.reset = done.a_to_b, done.b_to_a, done.reset
            out.peak_buffered, out.path = done.peak_buffered, done.path


def _loop_watches_fds() -> bool:
    """False on Windows' proactor loop, which has no ``add_reader``: use streams there."""
    proactor = getattr(asyncio, "ProactorEventLoop", None)
    return proactor is None or not isinstance(asyncio.get_running_loop(), proactor)


def _check_endpoint(endpoint: Endpoint) -> None:
    if isinstance(endpoint, ssl.SSLSocket):
        raise TypeError("bridge needs TLS as an asyncio stream pair, not an ssl.SSLSocket")
    if isinstance(endpoint, socket.socket) and endpoint.type != socket.SOCK_STREAM:
        raise TypeError(f"bridge needs a stream socket, got {endpoint.type!r}")


async def _as_stream(endpoint: Endpoint) -> Stream:
    if isinstance(endpoint, socket.socket):
        return await asyncio.open_connection(sock=endpoint, limit=STREAM_CHUNK)
    return endpoint


def _close_endpoint(endpoint: Endpoint) -> None:
    if isinstance(endpoint, socket.socket):
        endpoint.close()
    else:
        endpoint[1].transport.abort()
