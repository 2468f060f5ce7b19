"""``delshare relay --workers N``: N processes share the listeners, each owns its allocations.

Theory of operation. The parent binds every TURN listener (UDP, TCP, TLS) N times on one address
with SO_REUSEPORT, then forks N workers; worker i serves copy i of each listener and everything
it creates (allocations, relayed sockets, RFC 6062 connections). The kernel spreads new TCP
connections and UDP flows over the copies by a hash of the 4-tuple, so a client's control
connection or UDP flow stays with the worker that holds its allocation. The parent keeps every
copy open: when a worker dies its sockets stay in the group, the others' flows keep hashing to
the same copies, and the restarted worker serves the same sockets (what queued meanwhile waits).

Across workers (``delshare.aio.worker_share``): CONNECTION-IDs name their worker (≡ index mod N,
random otherwise) and a ConnectionBind that lands on another worker is handed to its owner with
its descriptor; allocation quotas are counted in shared memory, and so is the request rate per
client IP (``delshare.aio.shared_rate``: a sliding window over every worker's admissions, at most
N - 1 requests over the single-process bound); the nonce key is common, so a nonce stays valid
on whichever worker a client's next connection lands. The relay port range is split into N
parts, one per worker, so two workers never bind the same relayed address. Limits kept per
worker (each worker's share, so N times the value in all): pending RFC 6062 connections, TLS
handshakes in progress, ``--bps-capacity``.

The parent serves ``--metrics-listen``: it scrapes each worker's registry (served on loopback)
and shows the sums, plus per-worker gauges (``delshare_relay_worker_*{worker="i"}``). It forwards
SIGTERM (drain), SIGINT (stop) and SIGHUP (each worker re-reads the config file) to every worker,
restarts a worker that exits unasked (after a pause growing with repeated crashes, its quota row
zeroed first; its request-rate counts stay and age out), and exits once every worker has
stopped. A worker that fails before it is ready (a port it cannot bind) stops the whole relay
with its exit code.

The rendezvous keeps its mailboxes in the memory of one process, so worker 0 alone serves it
(also with Redis, for simplicity).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from delshare.aio.relay_sockets import PortPool, new_socket
from delshare.aio.server import RelayConfig, RelayServer, RunningRelay, bind_stream
from delshare.aio.shared_rate import SharedRate
from delshare.aio.worker_share import Handover, SharedQuota
from delshare.stun.attributes import Address
from delshare.turn.server import TurnServer
from delshare.turn.server_events import TCP, TLS, UDP

log = logging.getLogger("delshare.relay")

POLL = 0.1  # seconds between two looks at the workers
RESTART_PAUSE = 0.5  # seconds before restarting a crashed worker, doubled per recent crash ...
RESTART_PAUSE_MAX = 10.0  # ... up to this
CRASH_MEMORY = 60.0  # seconds after which a crash no longer lengthens the pause

Listeners = dict[tuple[str, Address], socket.socket]


def port_share(min_port: int, max_port: int, index: int, count: int) -> tuple[int, int]:
    """Worker ``index``'s part of the relay port range; ValueError if under 2 ports each."""
    size = (max_port - min_port + 1) // count
    if size < 2:
        raise ValueError(
            f"--workers {count} needs at least {2 * count} relay ports (--min-port..--max-port)"
        )
    low = min_port + index * size
    return low, (max_port if index == count - 1 else low + size - 1)


def _udp_listener(host: str, port: int) -> socket.socket:
    sock = new_socket(host, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _copies(host: str, port: int, kinds: tuple[str, ...], count: int) -> list[Listeners]:
    """``count`` copies of each kind of listener on one port (port 0: the first one picks)."""
    made: list[Listeners] = []
    actual = port
    try:
        for _ in range(count):
            copy: Listeners = {}
            made.append(copy)
            for kind in kinds:
                sock = (
                    _udp_listener(host, actual)
                    if kind == UDP
                    else bind_stream(host, actual, share=True)
                )
                copy[(kind, (host, port))] = sock
                actual = sock.getsockname()[1]
    except OSError:
        for copy in made:
            for sock in copy.values():
                sock.close()
        raise
    return made


def bind_listeners(config: RelayConfig, count: int) -> list[Listeners]:
    """Every listener of ``config``, ``count`` times (SO_REUSEPORT): one set per worker."""
    sets: list[Listeners] = [{} for _ in range(count)]
    plain = tuple(kind for kind, on in ((TCP, config.tcp), (UDP, config.udp)) if on)
    wanted = [(a, plain, True) for a in config.listen]
    wanted += [(a, plain, False) for a in config.optional_listen]
    wanted += [(a, (TLS,), True) for a in config.tls_listen]
    try:
        for (host, port), kinds, required in wanted:
            for attempt in range(16):  # port 0: the TCP port may be taken for UDP
                try:
                    copies = _copies(host, port, kinds, count)
                    break
                except OSError as exc:
                    if port != 0 and not required:
                        log.warning("not listening on %s:%d: %s", host, port, exc.strerror or exc)
                        copies = []
                        break
                    if port != 0 or attempt == 15:
                        raise
            for target, copy in zip(sets, copies, strict=False):
                target.update(copy)
    except BaseException:
        for listeners in sets:
            for sock in listeners.values():
                sock.close()
        raise
    return sets


@dataclass
class _Shared:
    """What the parent prepares before forking and every worker inherits."""

    count: int
    listeners: list[Listeners]
    inboxes: list[tuple[socket.socket, socket.socket]]  # per worker: (receive end, send end)
    quota: SharedQuota
    rate: SharedRate
    nonce_key: bytes
    reports: tuple[int, int]  # pipe: workers write "INDEX METRICS_PORT\n" once ready


@dataclass
class WorkerContext:
    """What one worker process knows of the others; given to the CLI's serve function."""

    index: int
    shared: _Shared
    metrics_port: int = 0
    handover: Handover | None = None

    @property
    def count(self) -> int:
        return self.shared.count

    def adapt(self, config: RelayConfig) -> RelayConfig:
        """The worker's view of the config: the parent serves ``--metrics-listen``."""
        return dataclasses.replace(config, metrics_listen=None)

    async def start_relay(self, config: RelayConfig) -> RunningRelay:
        """Start this worker's relay on its copies of the listeners, with the shared parts."""
        shared, index = self.shared, self.index
        rate_check = functools.partial(shared.rate.limiter, index)
        core = TurnServer(config.server, nonce_key=shared.nonce_key, rate_check=rate_check)
        core.conn_id_slot = (index, shared.count)
        shared.quota.row = index
        core.quota_ledger = shared.quota
        server = RelayServer(self.adapt(config), core, listeners=shared.listeners[index])
        low, high = port_share(config.min_port, config.max_port, index, shared.count)
        server.ports = PortPool(low, high)
        outboxes = [send_end for _receive_end, send_end in shared.inboxes]
        handover = Handover(index, shared.inboxes[index][0], outboxes, server.adopt)
        server.bind_owner = handover.owner
        server.hand_over = handover.send
        self.handover = handover
        try:
            await server.start()
        except BaseException:
            handover.close()
            await server.close()
            raise
        server.metrics.registry.register(_HandoverCounts(handover))
        self.metrics_port = server.metrics.serve("127.0.0.1", 0)
        return RunningRelay(server, list(server.addresses))

    def ready(self) -> None:
        """Tell the parent this worker serves (and where its metrics are)."""
        os.write(self.shared.reports[1], f"{self.index} {self.metrics_port}\n".encode())


class _HandoverCounts(Collector):
    """ConnectionBinds this worker handed to another, and ones it took over."""

    def __init__(self, handover: Handover) -> None:
        self._handover = handover

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "delshare_relay_binds_handed_over",
            "RFC 6062 ConnectionBinds passed to the worker owning their CONNECTION-ID",
            value=self._handover.sent,
        )
        yield CounterMetricFamily(
            "delshare_relay_binds_adopted",
            "RFC 6062 ConnectionBinds taken over from another worker",
            value=self._handover.received,
        )


class _WorkerTag(logging.Filter):
    """Prefix each log line with ``worker N:``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_worker_tagged", False):
            record.msg = self._prefix + str(record.msg)
            record._worker_tagged = True
        return True


@dataclass
class _Worker:
    index: int
    pid: int = 0
    ready: bool = False
    metrics_port: int = 0
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


WorkerMain = Callable[[WorkerContext], int]


class Supervisor:
    """The parent: binds, forks and watches the workers, forwards signals, serves metrics."""

    def __init__(self, count: int, config: RelayConfig) -> None:
        listeners = bind_listeners(config, count)
        inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
        for receive_end, send_end in inboxes:
            with contextlib.suppress(OSError):
                send_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                receive_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.shared = _Shared(
            count,
            listeners,
            inboxes,
            SharedQuota(count),
            SharedRate(count),
            secrets.token_bytes(32),
            os.pipe(),
        )
        os.set_blocking(self.shared.reports[0], False)
        self.config = config
        self.workers = [_Worker(i) for i in range(count)]
        self.stopping = False
        self.draining = False
        self.code = 0
        self._reports = b""
        self._all_ready = False
        self._http: WSGIServer | None = None

    def run(self, main: WorkerMain) -> int:
        """Start the workers, watch them until all have stopped; the exit code."""
        self._install_signals()
        try:
            if self.config.metrics_listen is not None:
                self._serve_metrics(*self.config.metrics_listen)
            for worker in self.workers:
                self._start(worker, main)
            pids = " ".join(str(w.pid) for w in self.workers)
            log.info("%d workers started (pids %s)", len(self.workers), pids)
            while any(w.pid or w.restart_at is not None for w in self.workers):
                self._read_reports()  # first: a worker's last report precedes its exit
                self._reap()
                self._restarts_due(main)
                time.sleep(POLL)
        finally:
            self._forward(signal.SIGKILL)
            self._close()
        return self.code

    # -- workers ----------------------------------------------------------------------------------

    def _start(self, worker: _Worker, main: WorkerMain) -> None:
        worker.ready = False
        worker.restart_at = None
        pid = os.fork()
        if pid:
            worker.pid = pid
            return
        code = 1
        try:
            code = self._child(worker.index, main)
        except BaseException:  # a worker must never return into the parent
            with contextlib.suppress(Exception):
                log.exception("worker %d failed", worker.index)
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
            os._exit(code)

    def _child(self, index: int, main: WorkerMain) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop handles it
        _die_with_parent()
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent, which forwards it once
        if self._http is not None:
            self._http.socket.close()  # the parent's: this process does not serve it
        os.close(self.shared.reports[0])
        for other, listeners in enumerate(self.shared.listeners):
            if other != index:
                for sock in listeners.values():
                    sock.close()
        for handler in logging.getLogger().handlers:
            handler.addFilter(_WorkerTag(index))
        return main(WorkerContext(index, self.shared))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is not None:
                self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int) -> None:
        worker.pid = 0
        self.shared.quota.clear(worker.index)  # its allocations died with it
        if self.stopping:
            log.info("worker %d stopped (exit code %d)", worker.index, code)
            return
        if not worker.ready:
            log.error("worker %d failed to start (exit code %d): stopping", worker.index, code)
            self.code = code or 1
            self._stop(signal.SIGINT)
            return
        now = time.monotonic()
        worker.crashes = [t for t in worker.crashes if now - t < CRASH_MEMORY] + [now]
        pause = min(RESTART_PAUSE_MAX, RESTART_PAUSE * 2 ** (len(worker.crashes) - 1))
        worker.restart_at = now + pause
        log.error("worker %d exited (code %d): restarting in %gs", worker.index, code, pause)

    def _restarts_due(self, main: WorkerMain) -> None:
        """Restart the workers whose pause is over."""
        for worker in self.workers:
            if worker.restart_at is not None and time.monotonic() >= worker.restart_at:
                self._start(worker, main)
                log.info("worker %d restarted (pid %d)", worker.index, worker.pid)

    def _read_reports(self) -> None:
        try:
            self._reports += os.read(self.shared.reports[0], 4096)
        except BlockingIOError:
            return
        *lines, self._reports = self._reports.split(b"\n")
        for line in lines:
            index, port = (int(x) for x in line.split())
            self.workers[index].ready = True
            self.workers[index].metrics_port = port
            if all(w.ready for w in self.workers) and not self._all_ready:
                self._all_ready = True
                log.info("all %d workers ready", len(self.workers))

    # -- signals ----------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if sig == signal.SIGHUP:
            log.info("SIGHUP: every worker reloads")
            self._forward(sig)
            return
        if sig == signal.SIGTERM and not self.draining:
            self.draining = True
            log.info("SIGTERM: every worker drains")
        self._stop(sig)

    def _stop(self, sig: signal.Signals) -> None:
        self.stopping = True
        for worker in self.workers:
            worker.restart_at = None
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    # -- metrics ----------------------------------------------------------------------------------

    def _serve_metrics(self, host: str, port: int) -> None:
        from delshare.aio.relay_metrics import serve_workers_http

        self._http = serve_workers_http(
            host,
            port,
            lambda: [(w.index, w.metrics_port if w.pid and w.ready else 0) for w in self.workers],
            lambda: self.draining,
        )

    def _close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for listeners in self.shared.listeners:
            for sock in listeners.values():
                sock.close()
        for pair in self.shared.inboxes:
            for sock in pair:
                sock.close()
        self.shared.quota.close()
        self.shared.rate.close()
        for fd in self.shared.reports:
            with contextlib.suppress(OSError):
                os.close(fd)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGINT (stop) if the parent dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG: stop at once, nobody supervises
