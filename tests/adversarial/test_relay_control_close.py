"""Issue 10 item 8: control connections end with their allocation, descriptors released.

Clients allocate over TCP and TLS with a 2-second lifetime and then just keep the connection
open. When the allocations expire the relay closes every control connection (as coturn does)
and its descriptor count returns to where it was; Refresh with lifetime 0 is answered and then
the connection is closed too.
"""

from __future__ import annotations

import time

from delshare.stun import attributes as at
from delshare.stun.constants import Attr, Method
from tests.adversarial.conftest import scaled
from tests.adversarial.relay_support import RelayProcess, TurnClient, error_code

LIFETIME = 2
FLAGS = ("--max-lifetime", str(LIFETIME), "--max-allocations-per-user", "1000")


def settled_fd_count(relay: RelayProcess) -> int:
    """The relay's descriptor count once closes in flight are done (bounded wait)."""
    count = relay.fd_count()
    for _ in range(20):
        time.sleep(0.1)
        count, before = relay.fd_count(), count
        if count == before:
            break
    return count


def fds_down_to(relay: RelayProcess, target: int, within: float) -> int:
    """Poll the relay's descriptor count until it is at most ``target`` or ``within`` passes."""
    deadline = time.monotonic() + within
    while (count := relay.fd_count()) > target and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def test_expired_allocations_close_their_control_connections() -> None:
    count = scaled(20, 200)
    with RelayProcess(*FLAGS, tls=True) as relay:
        with TurnClient("tls", relay.address("tls")) as warm:  # TLS opens a descriptor for good
            assert error_code(warm.request(Method.REFRESH)) == 437
        baseline = settled_fd_count(relay)
        clients = [
            TurnClient(
                "tls" if i % 4 == 0 else "tcp", relay.address("tls" if i % 4 == 0 else "tcp")
            )
            for i in range(count)
        ]
        try:
            for client in clients:
                answer = client.allocate()
                assert error_code(answer) is None and answer.get(at.LIFETIME) == LIFETIME
            assert relay.fd_count() >= baseline + 2 * count  # control connection + relay socket
            still_open = [c for c in clients if not c.at_eof(timeout=LIFETIME + 10)]
            assert not still_open, f"{len(still_open)} of {count} still open after expiry"
            assert fds_down_to(relay, baseline, within=10) <= baseline  # TLS: after shutdown
        finally:
            for client in clients:
                client.close()


def test_refresh_to_zero_is_answered_then_the_connection_closes() -> None:
    with RelayProcess(*FLAGS) as relay, TurnClient("tcp", relay.address()) as client:
        assert error_code(client.allocate()) is None
        answer = client.request(Method.REFRESH, (Attr.LIFETIME, 0))
        assert error_code(answer) is None
        assert client.at_eof(timeout=5)
