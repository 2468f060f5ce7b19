"""Issue 10 item 3: half-open TLS handshakes cannot take the relay's memory or its TLS port.

An attacker opens many TCP connections to the TLS port and starts a ClientHello it never
finishes. The relay caps handshakes in progress (per IP and in all; the rest are closed at
once), closes idle ones after ``--tls-handshake-timeout``, returns the memory afterwards, and a
real client from another address still allocates over TLS meanwhile.
"""

from __future__ import annotations

import select
import socket
import time

from delshare.stun.constants import Method
from tests.adversarial.conftest import scaled
from tests.adversarial.relay_support import RelayProcess, TurnClient, error_code

PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # record + hello header
RSS_BOUND_KIB = 4096  # above the idle relay's RSS; 200 unbounded handshakes cost ~11 MB


def half_open(
    address: tuple[str, int], count: int, source: str = "127.0.0.1"
) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(address)
        sock.send(PARTIAL_CLIENT_HELLO)
        socks.append(sock)
    return socks


def closed_by_server(socks: list[socket.socket], wait: float) -> set[socket.socket]:
    """Which of ``socks`` the server closed (EOF or reset) within ``wait`` seconds."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + wait
    while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([s for s in socks if s not in closed], [], [], left)
        for sock in ready:
            try:
                if sock.recv(4096):
                    continue
            except OSError:
                pass
            closed.add(sock)
    return closed


def test_half_open_handshakes_cost_bounded_memory_and_a_real_client_still_allocates() -> None:
    count = scaled(200, 4000)
    with RelayProcess(tls=True) as relay:
        baseline = relay.rss_kib()
        socks = half_open(relay.address("tls"), count)
        try:
            time.sleep(1)  # let the relay accept and read them all
            peak = relay.rss_kib()
            with TurnClient("tls", relay.address("tls"), source="127.0.0.2") as client:
                assert error_code(client.allocate()) is None
                assert error_code(client.request(Method.REFRESH, (0x000D, 0))) is None
        finally:
            for sock in socks:
                sock.close()
        time.sleep(3)  # the relay trims freed memory a second after the last handshake ends
        after = relay.rss_kib()
        assert peak - baseline < RSS_BOUND_KIB, (baseline, peak)
        assert after - baseline < RSS_BOUND_KIB, (baseline, after)


def test_idle_handshakes_are_closed_after_the_timeout() -> None:
    with RelayProcess("--tls-handshake-timeout", "1", tls=True) as relay:
        warm_up = half_open(relay.address("tls"), 1)  # the first opens a descriptor for good
        assert closed_by_server(warm_up, wait=15) == set(warm_up)
        warm_up[0].close()
        baseline = relay.fd_count()
        socks = half_open(relay.address("tls"), scaled(4, 40))
        try:
            assert closed_by_server(socks, wait=15) == set(socks)
        finally:
            for sock in socks:
                sock.close()
        assert relay.fd_count() <= baseline


def test_handshakes_in_progress_are_capped_in_all_and_per_ip() -> None:
    per_ip, total, sources = 3, 8, ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"]
    flags = ("--max-tls-handshakes", str(total), "--max-tls-handshakes-per-ip", str(per_ip))
    with RelayProcess(*flags, tls=True) as relay:
        first = half_open(relay.address("tls"), 5, source=sources[0])
        rest = [s for source in sources[1:] for s in half_open(relay.address("tls"), 5, source)]
        try:
            refused = closed_by_server(first, wait=3)
            assert len(refused) == 5 - per_ip  # one address holds at most ``per_ip``
            refused_rest = closed_by_server(rest, wait=3)
            assert len(first) + len(rest) - len(refused) - len(refused_rest) == total
        finally:
            for sock in first + rest:
                sock.close()
