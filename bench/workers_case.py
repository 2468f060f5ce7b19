"""Case 7: ``delshare relay --workers N`` on the many-streams load of case 2, N = 1 and 2.

Per repetition and N, a fresh relay carries ``many_streams`` RFC 6062 streams (case 2's client
and pump); the row gives the aggregate MB/s, and its details the CPU seconds each worker spent
pumping (``cpu_s_w0``, ``cpu_s_w1``; the parent's in ``cpu_s_parent``), the streams each worker
held (``streams_w0``/``streams_w1``, from the relay's per-worker metrics) and MB per CPU-second.
Two more rows give case 3's allocation rate (fresh control connections, so they spread over the
workers) on the same relays. A last row checks RFC 6062 across 2 workers: allocations whose peer
dials in and which Connect out, with the count of ConnectionBinds that landed on the other worker
and were handed over.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from functools import partial
from typing import Any

from bench.common import NotAvailable, Row, cpu_seconds, free_port, scrape_metrics
from bench.config import Config
from bench.pumps import pump_many
from bench.relay_cases import (
    _alloc_rate_once,
    _record_many,
    _run_once,
    _start,
    _stream_pairs,
    _unavailable,
)
from bench.servers import PASSWORD, USER, Server, start_delshare_relay

CASE = "7 relay workers"
RFC6062_ALLOCATIONS = 8  # 16 binds: none crossing with probability 2**-16
READY_S = 20.0


def _workers_ready(server: Server, count: int) -> list[int]:
    """The worker PIDs once every worker serves (the relay's own PID for one worker)."""
    if count == 1:
        return [server.child.pid]
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        text = server.child.log.read_text(errors="replace")
        found = re.search(r"\d+ workers started \(pids ([\d ]+)\)", text)
        if found and f"all {count} workers ready" in text:
            return [int(pid) for pid in found[1].split()]
        if not server.child.alive():
            break
        time.sleep(0.05)
    raise NotAvailable(f"workers not ready: {server.child.tail()}")


def _starter(count: int, metrics_port: int, tag: str) -> Server:
    extra = ["--workers", str(count), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    return start_delshare_relay(tag, extra=extra)


def _many_once(server: Server, row: Row, *, cfg: Config, count: int, metrics_port: int) -> None:
    """Case 2's load through ``server``; per-worker CPU of the pump phase."""
    pids = _workers_ready(server, count)
    with _stream_pairs(server, cfg.many_streams) as pairs:
        seen = scrape_metrics(metrics_port)
        before = [cpu_seconds(pid) for pid in [server.child.pid, *pids]]
        res = pump_many(pairs, cfg.many_bytes_each, cfg.many_max_s)
        after = [cpu_seconds(pid) for pid in [server.child.pid, *pids]]
    _record_many(row, res, cfg)
    spent = [b - a for a, b in zip(before, after, strict=True)]
    if count > 1:
        row.extra.setdefault("cpu_s_parent", []).append(spent[0])
    workers_cpu = spent[1:] if count > 1 else spent[:1]
    for index, cpu in enumerate(workers_cpu):
        row.extra.setdefault(f"cpu_s_w{index}", []).append(cpu)
        key = f'delshare_relay_worker_allocations{{worker="{index}"}}'
        held = seen.get(key, seen.get("delshare_relay_allocations", 0.0))
        row.extra.setdefault(f"streams_w{index}", []).append(held)
    if sum(spent) >= 0.1:  # below, the clock ticks (10 ms) say little
        row.extra.setdefault("MB_per_cpu_s", []).append(res.received / 1e6 / sum(spent))
    row.extra.setdefault("pump_cpu_s", []).append(res.pump_cpu_s)


async def incoming_and_outgoing(
    uri: str, user: str = USER, password: str = PASSWORD, tls: ssl.SSLContext | None = None
) -> None:
    """One TCP allocation: a peer dials in and a Connect goes out, bytes checked both ways
    (RuntimeError if not). Also tests/aio/test_workers.py's check of RFC 6062 over workers."""
    from delshare.aio.client import connect_turn

    async with await connect_turn(uri, user, password, ssl=tls) as client:
        allocation = await client.allocate_tcp()
        await allocation.permit("127.0.0.1")
        peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        stream = await asyncio.wait_for(allocation.accept(), 10)
        payload = os.urandom(100_000)
        peer_writer.write(payload)
        if tls is None:  # TLS has no half-close: the relay would close the whole connection
            peer_writer.write_eof()
        if await asyncio.wait_for(stream.reader.readexactly(len(payload)), 10) != payload:
            raise RuntimeError("incoming connection corrupted the data")
        stream.writer.write(b"back")
        if await asyncio.wait_for(peer_reader.readexactly(4), 10) != b"back":
            raise RuntimeError("incoming connection corrupted the data back")
        stream.writer.close()
        peer_writer.close()

        async def on_peer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello from the peer")
            await w.drain()
            w.close()

        server = await asyncio.start_server(on_peer, "127.0.0.1", 0)
        try:
            reader, writer = await allocation.connect(server.sockets[0].getsockname()[:2])
            if await asyncio.wait_for(reader.read(), 10) != b"hello from the peer":
                raise RuntimeError("outgoing connection corrupted the data")
            writer.close()
        finally:
            server.close()


def _rfc6062_once(server: Server, row: Row, metrics_port: int) -> None:
    _workers_ready(server, 2)
    uri = f"turn:127.0.0.1:{server.port}?transport=tcp"

    async def all_of_them() -> None:
        for _ in range(RFC6062_ALLOCATIONS):
            await incoming_and_outgoing(uri)

    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(outcome, all_of_them))
    thread.start()
    thread.join(60)
    if outcome:
        raise outcome[0]
    seen = scrape_metrics(metrics_port)
    row.values.append(seen["delshare_relay_tcp_connections_bound_total"])
    row.extra.setdefault("handed_over", []).append(seen["delshare_relay_binds_handed_over_total"])
    for index in (0, 1):
        key = f'delshare_relay_worker_allocations_created{{worker="{index}"}}'
        row.extra.setdefault(f"allocations_w{index}", []).append(seen[key])


def _capture(outcome: list[BaseException], main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        asyncio.run(main())
    except BaseException as exc:  # reported by the caller
        outcome.append(exc)


def _allocs_once(server: Server, row: Row, *, cfg: Config, count: int) -> None:
    """Case 3's allocation rate (fresh control connections) through ``server``."""
    _workers_ready(server, count)
    _alloc_rate_once(server, row, cfg=cfg)


def _one_relay(cfg: Config, count: int, tag: str, streams: Row, rate: Row) -> None:
    """A fresh relay with ``count`` workers: the many-streams load, then the allocation rate."""
    port = free_port()
    with ExitStack() as stack:
        server = _start(stack, partial(_starter, count, port, tag), "", streams)
        rate.note = streams.note  # the server's note, or why it did not start
        if server is None:
            return
        _run_once(partial(_many_once, cfg=cfg, count=count, metrics_port=port), server, streams)
        _run_once(partial(_allocs_once, cfg=cfg, count=count), server, rate)


def case7(cfg: Config) -> list[Row]:
    """Relay workers: case 2's many streams and case 3's allocation rate with --workers 1 and 2,
    and RFC 6062 across 2 workers."""
    workload = f"{cfg.many_streams} streams x {cfg.many_bytes_each // 1024} KiB"
    rows = {n: Row(CASE, f"ours --workers {n}", workload, "MB/s") for n in (1, 2)}
    allocs = f"{cfg.allocs} allocs, {cfg.alloc_threads} threads"
    rates = {n: Row(CASE, f"ours --workers {n} allocations", allocs, "allocs/s") for n in (1, 2)}
    check = Row(CASE, "ours --workers 2: RFC 6062 in+out", f"{RFC6062_ALLOCATIONS} allocations",
                "binds")  # fmt: skip
    for rep in range(cfg.reps):  # interleaved: load drifts hit both counts alike
        for count in (1, 2):
            _one_relay(cfg, count, f"case7-w{count}-rep{rep}", rows[count], rates[count])
    port = free_port()
    with ExitStack() as stack:
        server = _start(stack, partial(_starter, 2, port, "case7-rfc6062"), "", check)
        if server is not None:
            try:
                _rfc6062_once(server, check, port)
            except Exception as exc:  # keep going: the row says why
                _unavailable([check], f"{type(exc).__name__}: {exc}")
    if check.values and not check.extra.get("handed_over", [0])[0]:
        check.note = "no ConnectionBind crossed workers in this run"
    return [*rows.values(), *rates.values(), check]
