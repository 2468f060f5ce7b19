"""``delshare relay --workers 2`` as a real subprocess: load on both workers, RFC 6062 across them.

Each new TCP connection lands on a worker chosen by the kernel's SO_REUSEPORT hash, so with
enough fresh control and data connections both workers carry allocations and some ConnectionBinds
land on the worker that does not own their CONNECTION-ID; the relay's counters of handed-over
binds prove that the crossing happened (the tests cannot pass with everything on one worker).
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.workers_case import incoming_and_outgoing

from delshare.aio.client import TurnClient, connect_turn
from delshare.errors import TransactionError
from delshare.stun.constants import MessageClass, Method
from delshare.stun.message import Message, decode_message
from tests.support.metrics import scrape
from tests.support.ports import free_port
from tests.support.relay_process import RelayProcess, start_relay_process
from tests.support.tlscert import make_self_signed

HOST = "127.0.0.1"
STEP = 10.0
ALLOCATIONS = 16  # fresh control connections: all on one worker with probability 2**-15


class Workers:
    def __init__(self, relay: RelayProcess, turn_port: int, metrics_port: int) -> None:
        self.relay = relay
        self.uri = f"turn:{HOST}:{turn_port}?transport=tcp"
        self.metrics_port = metrics_port

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port, STEP, HOST)

    def per_worker(self, name: str) -> list[float]:
        seen = self.metrics()
        return [seen[f'delshare_relay_worker_{name}{{worker="{i}"}}'] for i in (0, 1)]

    def pids(self) -> list[int]:
        """The workers' PIDs, from the parent's log (restarts included)."""
        text = self.relay.text()
        found = re.search(r"2 workers started \(pids (\d+) (\d+)\)", text)
        assert found is not None, text
        pids = [int(found[1]), int(found[2])]
        for index, pid in re.findall(r"worker (\d) restarted \(pid (\d+)\)", text):
            pids[int(index)] = int(pid)
        return pids


def start_workers(tmp_path: Path, *extra: str, users: tuple[str, ...] = ("u:p",)) -> Workers:
    turn_port, metrics_port = free_port("both"), free_port("tcp")
    args = ["--workers", "2", "--listen", f"{HOST}:{turn_port}", "--no-rendezvous",
            "--metrics-listen", f"{HOST}:{metrics_port}", "--allow-peer", "127.0.0.0/8",
            *(f"--user={user}" for user in users), *extra]  # fmt: skip
    relay = start_relay_process(args, tmp_path / "relay.log", ready="all 2 workers ready")
    return Workers(relay, turn_port, metrics_port)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = start_workers(tmp_path)
    try:
        yield running
    finally:
        running.relay.stop()


async def test_rfc6062_both_ways_across_two_workers(workers: Workers) -> None:
    for _ in range(ALLOCATIONS):
        await incoming_and_outgoing(workers.uri, "u", "p")
    seen = workers.metrics()
    # both workers created allocations ...
    assert seen['delshare_relay_worker_allocations_created{worker="0"}'] > 0, seen
    assert seen['delshare_relay_worker_allocations_created{worker="1"}'] > 0, seen
    assert seen['delshare_relay_allocations_created_total{transport="tcp"}'] == ALLOCATIONS
    # ... some ConnectionBinds landed on the other worker and were handed over, all bound
    assert seen["delshare_relay_binds_handed_over_total"] > 0, seen
    assert (
        seen["delshare_relay_binds_adopted_total"] == seen["delshare_relay_binds_handed_over_total"]
    ), (seen, workers.relay.text())
    assert seen["delshare_relay_tcp_connections_bound_total"] == 2 * ALLOCATIONS


async def test_rfc6062_over_tls_across_two_workers(tmp_path: Path) -> None:
    """A TLS data connection cannot move: the worker that took it bridges it to the owner."""
    pki = make_self_signed(tmp_path / "pki")
    tls_port = free_port("tcp")
    running = start_workers(tmp_path, "--tls-listen", f"{HOST}:{tls_port}", "--cert",
                            str(pki.cert), "--key", str(pki.key))  # fmt: skip
    context = ssl.create_default_context(cafile=str(pki.cert))
    try:
        for _ in range(8):  # 16 binds: none crossing with probability 2**-16
            await incoming_and_outgoing(f"turns:{HOST}:{tls_port}?transport=tcp", "u", "p", context)
        seen = running.metrics()
        assert seen["delshare_relay_binds_handed_over_total"] > 0, seen
        assert seen["delshare_relay_tcp_connections_bound_total"] == 16
    finally:
        running.relay.stop()


async def _allocate(uri: str, user: str = "u", password: str = "p") -> TurnClient:
    client = await connect_turn(uri, user, password)
    try:
        await client.allocate_udp()
    except BaseException:
        await client.close()
        raise
    return client


async def _wait_metric(workers: Workers, name: str, value: float) -> None:
    deadline = time.monotonic() + STEP
    while workers.metrics()[name] != value:
        assert time.monotonic() < deadline, workers.metrics()
        await asyncio.sleep(0.05)


async def test_a_per_user_quota_holds_across_workers(tmp_path: Path) -> None:
    limit = 4
    running = start_workers(tmp_path, "--max-allocations-per-user", str(limit),
                            users=("u:p", "other:pw"))  # fmt: skip
    try:
        for _round in range(12):  # until the allowed ones sit on both workers (7/8 each round)
            clients = [await _allocate(running.uri) for _ in range(limit)]
            if min(running.per_worker("allocations")) > 0:
                break
            for client in clients:
                await client.close()
            await _wait_metric(running, "delshare_relay_allocations", 0)
        held = running.per_worker("allocations")
        assert min(held) > 0 and sum(held) == limit, held  # each worker holds fewer than limit
        for _ in range(8):  # fresh connections land on either worker: all are refused
            with pytest.raises(TransactionError) as caught:
                await _allocate(running.uri)
            assert caught.value.code == 486
        other = await _allocate(running.uri, "other", "pw")  # another user is not counted
        await other.close()
        await clients[0].close()  # one freed: one more fits, wherever it lands
        await _wait_metric(running, "delshare_relay_allocations", limit - 1)
        clients[0] = await _allocate(running.uri)
        for client in clients:
            await client.close()
    finally:
        running.relay.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_stops_every_worker_and_sighup_reloads_each(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('user = ["u:p"]\nmax-allocations = 50\n')
    running = start_workers(tmp_path, "--config", str(config), users=())
    try:
        pids = running.pids()
        assert all(_alive(pid) for pid in pids)
        config.write_text('user = ["u:new"]\nmax-allocations = 40\n')
        running.relay.signal(signal.SIGHUP)
        for index in (0, 1):
            running.relay.wait_for(f"worker {index}: reloaded {config}")
        assert running.relay.text().count("max-allocations 50 -> 40") == 2
        running.relay.signal(signal.SIGTERM)
        assert running.relay.wait(STEP) == 0
        assert not any(_alive(pid) for pid in pids)
        for index in (0, 1):
            assert f"worker {index}: drained" in running.relay.text()
    finally:
        running.relay.stop()


async def test_a_killed_worker_is_restarted_and_its_quota_freed(tmp_path: Path) -> None:
    running = start_workers(tmp_path, "--max-allocations", "2")
    try:
        clients = []
        for _ in range(40):  # until both workers hold one allocation (the quota of two)
            client = await _allocate(running.uri)
            if min(running.per_worker("allocations")) > 0:
                clients.append(client)
                break
            if len(clients) < 1:
                clients.append(client)
            else:
                await client.close()
                await _wait_metric(running, "delshare_relay_allocations", 1)
        assert running.per_worker("allocations") == [1, 1]
        with pytest.raises(TransactionError):
            await _allocate(running.uri)  # full (508)
        victim = running.pids()[0]
        os.kill(victim, signal.SIGKILL)
        running.relay.wait_for("worker 0 restarted")
        running.relay.wait_for("all 2 workers ready", count=1)
        deadline = time.monotonic() + STEP
        while running.pids()[0] == victim or min(running.per_worker("up")) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        fresh = await _allocate(running.uri)  # worker 0's row was zeroed: room for one
        await fresh.close()
        for client in clients:
            await client.close()
    finally:
        running.relay.stop()


def test_a_worker_that_cannot_start_stops_the_relay(tmp_path: Path) -> None:
    """Worker 0 serves the rendezvous; its port is taken: exit 1, no worker left behind."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        relay = start_relay_process(
            ["--workers", "2", "--listen", f"{HOST}:0", "--user", "u:p",
             "--rendezvous-listen", f"{HOST}:{busy}"],
            tmp_path / "relay.log",
            ready=None,
        )  # fmt: skip
        try:
            assert relay.wait(STEP) == 1
            text = relay.text()
            assert "worker 0 failed to start (exit code 1): stopping" in text, text
            found = re.search(r"2 workers started \(pids (\d+) (\d+)\)", text)
            assert found is not None, text
            assert not any(_alive(int(pid)) for pid in found.groups())
        finally:
            relay.stop()


async def test_udp_allocations_on_both_workers(workers: Workers) -> None:
    """UDP flows hash to a worker by their 4-tuple; each worker relays its own both ways."""
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    peer.setblocking(False)
    uri = workers.uri.replace("transport=tcp", "transport=udp")
    try:
        for index in range(ALLOCATIONS):
            async with await connect_turn(uri, "u", "p") as client:
                allocation = await client.allocate_udp()
                await allocation.bind_channel(peer.getsockname())
                allocation.send(peer.getsockname(), b"ping %d" % index)
                data, relayed = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), STEP)
                assert data == b"ping %d" % index
                await loop.sock_sendto(peer, b"pong", relayed)
                assert await asyncio.wait_for(allocation.recv(), STEP) == (
                    b"pong",
                    peer.getsockname(),
                )
    finally:
        peer.close()
    created = workers.per_worker("allocations_created")
    assert min(created) > 0 and sum(created) == ALLOCATIONS, created


RATE, BURST = 5, 20  # --max-request-rate 5: bursts of 4x
SOURCES, ROUNDS = 48, 6  # source ports; a worker gets under 7 of them with probability ~1e-7
_SEEN = re.compile(r"worker (\d): BINDING from \S+ ?\S* (answered|refused: 0 rate limited)")


def _processed(relay: RelayProcess) -> list[tuple[str, str]]:
    """(worker, outcome) of every Binding request the workers logged (``-v``)."""
    return _SEEN.findall(relay.text())


def _answers(sockets: list[socket.socket], expected: int) -> int:
    """Binding successes that reach ``sockets``: until ``expected`` came, or a while."""
    answers, deadline = 0, time.monotonic() + STEP
    while answers < expected and time.monotonic() < deadline:
        ready, _, _ = select.select(sockets, [], [], 0.1)
        for sock in ready:
            answers += decode_message(sock.recv(2048)).cls == MessageClass.SUCCESS
    return answers


def test_the_request_rate_of_one_ip_holds_across_workers(tmp_path: Path) -> None:
    """One IP, many source ports: the kernel spreads its flows over both workers, but the
    rate is counted in shared memory, so both together admit what one would (a sliding
    window: at most burst + rate T + 1 in T seconds, plus N - 1 = 1 for two workers checking
    at once). A limit per worker admitted up to twice that (each worker its own burst)."""
    running = start_workers(tmp_path, "--max-request-rate", str(RATE), "-v")
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOURCES)]
    server = (HOST, int(running.uri.split(":")[2].split("?")[0]))
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
            sock.setblocking(False)
        started = time.monotonic()
        for round_ in range(1, ROUNDS + 1):  # a round at a time: no datagram overflows a buffer
            for sock in sockets:
                sock.sendto(Message(Method.BINDING, MessageClass.REQUEST).encode(), server)
            deadline = time.monotonic() + STEP
            while len(_processed(running.relay)) < round_ * SOURCES:
                assert time.monotonic() < deadline, running.relay.text()[-3000:]
                time.sleep(0.02)
        elapsed = time.monotonic() - started  # every admission happened within it
        processed = _processed(running.relay)
        per_worker = [sum(1 for w, _ in processed if w == str(i)) for i in (0, 1)]
        # both workers saw more than a burst: limits of their own would admit 2 x BURST
        assert min(per_worker) >= 2 * BURST, per_worker
        admitted = sum(1 for _, outcome in processed if outcome == "answered")
        assert _answers(sockets, admitted) == admitted
        assert admitted <= BURST + RATE * elapsed + 1 + 1, (admitted, elapsed, per_worker)
        assert admitted >= BURST  # the burst itself is admitted
    finally:
        for sock in sockets:
            sock.close()
        running.relay.stop()
