"""Cases 1-4: the TURN relay, ours against coturn, driven by the same client code.

Cases 1, 2 and 4 also run reference relays without TURN (``bench/references.py``): a C splice
relay for the TCP cases, a bare Python and a C UDP forwarder for case 4, driven by the same
pumps in the same interleaved repetitions, so the table shows what any relay reaches here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial

from bench import profile, references
from bench.common import MiB, NotAvailable, Row, tree_cpu
from bench.config import Config
from bench.pumps import (
    ManyResult,
    StreamResult,
    plain_pair,
    pump_many,
    pump_stream,
    udp_flood,
)
from bench.servers import Server, start_coturn, start_delshare_relay
from bench.turnclients import backend

Starter = Callable[[], Server]
SERVERS: list[tuple[str, Starter]] = [("coturn", start_coturn), ("ours", start_delshare_relay)]
Pairs = list[tuple[socket.socket, socket.socket]]
PairOpener = Callable[[Server, int], AbstractContextManager[Pairs]]


@contextmanager
def running(starter: Starter, tag: str = "") -> Iterator[Server]:
    server = starter()
    if server.name == "delshare" and tag:
        profile.attach(server.child.pid, f"relay-{tag}")
    try:
        yield server
    finally:
        server.stop()


def _unavailable(rows: list[Row], why: str) -> None:
    for row in rows:
        prefix = "failed after some reps" if row.values else "not available"
        row.note = "; ".join(x for x in (row.note, f"{prefix}: {why}") if x)


def _listener() -> socket.socket:
    lst = socket.create_server(("127.0.0.1", 0), backlog=1024)
    lst.settimeout(10.0)
    return lst


@contextmanager
def _stream_pairs(
    server: Server, count: int
) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """``count`` RFC 6062 streams through ``server`` as (client data socket, accepted peer
    socket) pairs, for ``pump_many``; all closed on exit."""
    client = backend()
    streams, pairs = [], []
    with _listener() as lst:
        try:
            for _ in range(count):
                stream = client.open_stream(server.addr, lst.getsockname())
                streams.append(stream)
                peer, _ = lst.accept()
                pairs.append((stream.data, peer))
            yield pairs
        finally:
            for stream in streams:
                stream.close()
            for _, peer in pairs:
                peer.close()


# ---- interleaved repetitions -------------------------------------------------------------------

Once = Callable[[Server, Row], None]
Reference = tuple[str, Starter, Once]  # a variant without TURN: its own starter and driver


def _failed(row: Row) -> bool:
    return "not available" in row.note or "failed" in row.note


def _start(stack: ExitStack, starter: Starter, tag: str, row: Row) -> Server | None:
    try:
        server = stack.enter_context(running(starter, tag))
    except Exception as exc:  # keep going: the row says why
        _unavailable([row], f"{type(exc).__name__}: {exc}")
        return None
    row.note = server.note
    return server


def _run_once(once: Once, server: Server, row: Row) -> None:
    try:
        once(server, row)
    except Exception as exc:  # keep going: the row says why
        _unavailable([row], f"{type(exc).__name__}: {exc}")


def _interleaved(
    case: str,
    workload: str,
    cfg: Config,
    tag: str,
    once: Once,
    plain: Callable[[Row], None] | None = None,
    fresh: bool = False,
    refs: Sequence[Reference] = (),
) -> list[Row]:
    """Repetition k of every variant runs before repetition k+1 of any: load drifts hit all.

    The TURN servers run ``once``; each of ``refs`` its own driver, after them.
    """
    rows = [Row(case, "plain loopback", workload, "MB/s")] if plain else []
    variants = [(s, Row(case, name, workload, "MB/s"), once) for name, s in SERVERS]
    variants += [(s, Row(case, name, workload, "MB/s"), drive) for name, s, drive in refs]
    rows += [row for _, row, _ in variants]
    with ExitStack() as stack:
        servers = {} if fresh else {id(r): _start(stack, s, tag, r) for s, r, _ in variants}
        for rep in range(cfg.reps):
            if plain is not None:
                plain(rows[0])
            for starter, row, drive in variants:
                if _failed(row):
                    continue
                with ExitStack() as rep_stack:
                    if fresh:
                        server = _start(rep_stack, starter, f"{tag}-rep{rep}", row)
                    else:
                        server = servers[id(row)]
                    if server is not None:
                        _run_once(drive, server, row)
    return rows


# ---- case 1 ------------------------------------------------------------------------------------


def case1(cfg: Config) -> list[Row]:
    """One big stream: plain loopback, then through a TCP allocation on each server."""

    def plain(row: Row) -> None:
        a, b = plain_pair()
        try:
            _record_stream(row, pump_stream(a, b, cfg.stream_bytes, cfg.stream_max_s), cfg)
        finally:
            a.close()
            b.close()

    def once(server: Server, row: Row, relay_stream: StreamOpener = _relay_stream) -> None:
        cpu0 = server.child.cpu()
        _record_stream(row, relay_stream(server, cfg), cfg)
        row.extra.setdefault("server_cpu_s", []).append(server.child.cpu() - cpu0)

    workload = f"{cfg.stream_bytes // MiB} MiB stream"
    c_relay = partial(once, relay_stream=_direct_stream)
    refs = [("C splice relay", references.start_c_splice_relay, c_relay)]
    return _interleaved(
        "1 tcp relay, 1 stream", workload, cfg, "case1-stream", once, plain, refs=refs
    )


def _relay_stream(server: Server, cfg: Config) -> StreamResult:
    client = backend()
    with _listener() as lst:
        stream = client.open_stream(server.addr, lst.getsockname())
        peer, _ = lst.accept()
    try:
        return pump_stream(stream.data, peer, cfg.stream_bytes, cfg.stream_max_s)
    finally:
        peer.close()
        stream.close()


def _direct_stream(server: Server, cfg: Config) -> StreamResult:
    """One connection through a reference relay (no TURN), with case 1's pump."""
    with references.direct_pairs(server, 1) as pairs:
        client, peer = pairs[0]
        return pump_stream(client, peer, cfg.stream_bytes, cfg.stream_max_s)


StreamOpener = Callable[[Server, Config], StreamResult]


def _record_stream(row: Row, res: StreamResult, cfg: Config) -> None:
    row.values.append(res.received / res.seconds / 1e6)
    row.extra.setdefault("lost_bytes", []).append(cfg.stream_bytes - res.received)
    row.extra.setdefault("crc_ok", []).append(1.0 if res.crc_ok else 0.0)
    row.extra.setdefault("host_busy_cores", []).append(res.host_busy_cores)
    row.extra.setdefault("pump_cpu_s", []).append(res.pump_cpu_s)


# ---- case 2 ------------------------------------------------------------------------------------


def case2(cfg: Config) -> list[Row]:
    """Many simultaneous relayed streams: aggregate MB/s, server RSS and CPU."""

    def plain(row: Row) -> None:
        pairs = [plain_pair() for _ in range(cfg.many_streams)]
        try:
            res = pump_many(pairs, cfg.many_bytes_each, cfg.many_max_s)
        finally:
            for a, b in pairs:
                a.close()
                b.close()
        _record_many(row, res, cfg)

    workload = f"{cfg.many_streams} streams x {cfg.many_bytes_each // 1024} KiB"
    c_relay = partial(_many_once, cfg=cfg, open_pairs=references.direct_pairs)
    refs = [("C splice relay", references.start_c_splice_relay, c_relay)]
    # a fresh server for every repetition: a clean RSS baseline
    once = partial(_many_once, cfg=cfg)
    return _interleaved("2 many streams", workload, cfg, "case2-many", once, plain, True, refs)


def _many_once(
    server: Server, row: Row, *, cfg: Config, open_pairs: PairOpener = _stream_pairs
) -> None:
    time.sleep(0.2)
    rss0 = server.child.rss()
    cpu0 = server.child.cpu()
    with open_pairs(server, cfg.many_streams) as pairs:
        cpu1 = server.child.cpu()
        peak = [server.child.rss()]
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(server, peak, stop), daemon=True)
        sampler.start()
        res = pump_many(pairs, cfg.many_bytes_each, cfg.many_max_s)
        stop.set()
        sampler.join(2.0)
        cpu2 = server.child.cpu()
    _record_many(row, res, cfg)
    row.extra.setdefault("rss_peak_MiB", []).append(peak[0] / 1024)
    row.extra.setdefault("rss_per_stream_KiB", []).append((peak[0] - rss0) / cfg.many_streams)
    row.extra.setdefault("cpu_s_setup", []).append(cpu1 - cpu0)
    row.extra.setdefault("cpu_s_pump", []).append(cpu2 - cpu1)


def _record_many(row: Row, res: ManyResult, cfg: Config) -> None:
    row.values.append(res.received / res.seconds / 1e6)
    expected = cfg.many_streams * cfg.many_bytes_each
    row.extra.setdefault("lost_bytes", []).append(expected - res.received)
    row.extra.setdefault("crc_ok", []).append(1.0 if res.ok else 0.0)
    row.extra.setdefault("pump_cpu_s", []).append(res.pump_cpu_s)
    row.extra.setdefault("host_busy_cores", []).append(res.host_busy_cores)


def _sample_rss(server: Server, peak: list[int], stop: threading.Event) -> None:
    for _ in range(3000):  # bounded: 3000 x 0.1 s
        if stop.wait(0.1):
            return
        try:
            peak[0] = max(peak[0], server.child.rss())
        except OSError:
            return


# ---- case 3 ------------------------------------------------------------------------------------


def case3(cfg: Config) -> list[Row]:
    """Authenticated TCP allocations per second, each on a fresh control connection."""
    workload = f"{cfg.allocs} allocs, {cfg.alloc_threads} threads"
    rows = _interleaved(
        "3 allocation rate", workload, cfg, "case3-allocs", partial(_alloc_rate_once, cfg=cfg)
    )
    for row in rows:
        row.unit = "allocs/s"
    return rows


def _alloc_rate_once(server: Server, row: Row, *, cfg: Config) -> None:
    client = backend()
    client.allocate_once(server.addr)  # warm-up, and fail early

    def one(_: int) -> None:
        client.allocate_once(server.addr)

    cpu0 = server.child.cpu()
    start = time.perf_counter()
    with ThreadPoolExecutor(cfg.alloc_threads) as pool:
        list(pool.map(one, range(cfg.allocs)))
    row.values.append(cfg.allocs / (time.perf_counter() - start))
    cpu_ms = (server.child.cpu() - cpu0) * 1000 / cfg.allocs
    row.extra.setdefault("server_cpu_ms_per_alloc", []).append(cpu_ms)
    # what one saturated server core could do (the client is the bottleneck on 2 cores)
    row.extra.setdefault("allocs_per_server_cpu_s", []).append(1000 / max(cpu_ms, 1e-3))


# ---- case 4 ------------------------------------------------------------------------------------


def case4(cfg: Config) -> list[Row]:
    """UDP allocation with a channel: ChannelData packets per second that reach the peer."""
    workload = f"{cfg.udp_payload} B ChannelData"
    forward = partial(_udp_reference_once, cfg=cfg)
    refs = [
        ("Python forwarder", references.start_python_forwarder, forward),
        ("C forwarder", references.start_c_forwarder, forward),
    ]
    once = partial(_udp_once, cfg=cfg)
    rows = _interleaved("4 udp relay", workload, cfg, "case4-udp", once, refs=refs)
    for row in rows:
        row.unit = "kpps"
    return rows


def _udp_once(server: Server, row: Row, *, cfg: Config) -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    peer.bind(("127.0.0.1", 0))
    chan = backend().open_udp_channel(server.addr, peer.getsockname())
    try:
        _udp_measure(server, row, cfg, chan.sock, chan.frame(bytes(cfg.udp_payload)), peer)
    finally:
        chan.close()
        peer.close()


def _udp_reference_once(server: Server, row: Row, *, cfg: Config) -> None:
    """Case 4 through a forwarder without TURN: the same datagrams, sender and counter."""
    sock, peer = references.udp_sender(server)
    with sock:
        _udp_measure(server, row, cfg, sock, references.frame(bytes(cfg.udp_payload)), peer)


def _udp_measure(
    server: Server, row: Row, cfg: Config, sock: socket.socket, frame: bytes, peer: socket.socket
) -> None:
    cpu0, user0 = server.child.cpu(), tree_cpu(server.child.pid, user_only=True)
    sent, got, seconds = udp_flood(sock, frame, peer, cfg.udp_seconds, cfg.udp_max_packets)
    cpu, user = server.child.cpu() - cpu0, tree_cpu(server.child.pid, user_only=True) - user0
    if got == 0:
        raise NotAvailable(f"no packet reached the peer ({sent} sent)")
    row.values.append(got / seconds / 1000)
    row.extra.setdefault("loss_pct", []).append(100.0 * (sent - got) / max(sent, 1))
    row.extra.setdefault("server_cpu_s", []).append(cpu)
    # per datagram that reached the peer: what the relay costs, and its user-space (not kernel) part
    row.extra.setdefault("server_us_per_pkt", []).append(cpu / got * 1e6)
    row.extra.setdefault("server_user_us_per_pkt", []).append(user / got * 1e6)
