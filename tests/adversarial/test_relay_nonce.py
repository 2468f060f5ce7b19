"""Issue 10 item 5: a captured, signed Allocate replayed from another 5-tuple gets 438.

Nonces are bound to the client's transport address and transport: the replay makes no
allocation and costs alice none of her quota; a nonce learned over TCP is stale over UDP; and
nonces still expire.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from delshare.stun import attributes as at
from delshare.stun.constants import PROTO_UDP, Attr, Method
from tests.adversarial.conftest import scaled
from tests.adversarial.relay_support import RelayProcess, TurnClient, error_code

QUOTA = 3


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with RelayProcess("--max-allocations-per-user", str(QUOTA)) as process:
        yield process


def test_signed_allocate_replayed_on_new_tcp_connections_gets_438(relay: RelayProcess) -> None:
    replays = scaled(10, 100)
    with TurnClient("tcp", relay.address()) as alice:
        assert error_code(alice.allocate()) is None  # after a 401: a nonce for this connection
        captured, data = alice.build(
            Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, PROTO_UDP)]
        )  # a second signed Allocate, as a sniffer would capture it in flight
        codes = []
        for _ in range(replays):
            with TurnClient("tcp", relay.address()) as thief:
                thief.send(data)
                answer = thief.answer_to(captured)
                assert answer is not None, "a replayed Allocate went unanswered"
                codes.append(error_code(answer))
        assert codes == [438] * replays
        # the replays cost alice nothing: her quota still has room on other connections
        for _ in range(QUOTA - 1):
            with TurnClient("tcp", relay.address()) as again:
                assert error_code(again.allocate()) is None


def test_a_nonce_learned_over_tcp_is_stale_over_udp(relay: RelayProcess) -> None:
    with (
        TurnClient("tcp", relay.address()) as over_tcp,
        TurnClient("udp", relay.address("udp")) as over_udp,
    ):
        answer = over_tcp.request(Method.REFRESH)  # 401 then 437: a nonce for the TCP 5-tuple
        assert over_tcp.nonce is not None and error_code(answer) == 437
        over_udp.realm, over_udp.nonce = over_tcp.realm, over_tcp.nonce
        msg, data = over_udp.build(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, PROTO_UDP)])
        over_udp.send(data)
        stale = over_udp.answer_to(msg)
        assert error_code(stale) == 438
        assert stale is not None and stale.get(at.NONCE) not in (None, over_tcp.nonce)
        assert error_code(over_udp.allocate()) is None  # its own nonce works
        over_udp.request(Method.REFRESH, (Attr.LIFETIME, 0))


def test_udp_replay_from_another_port_gets_438(relay: RelayProcess) -> None:
    with (
        TurnClient("udp", relay.address("udp")) as alice,
        TurnClient("udp", relay.address("udp")) as thief,
    ):
        alice.request(Method.REFRESH)  # learn a nonce
        msg, data = alice.build(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, PROTO_UDP)])
        thief.send(data)
        assert error_code(thief.answer_to(msg)) == 438


def test_nonces_still_expire() -> None:
    with (
        RelayProcess("--nonce-lifetime", "1") as relay,
        TurnClient("tcp", relay.address()) as alice,
    ):
        alice.request(Method.REFRESH)
        old = alice.nonce
        time.sleep(2.5)  # the nonce's lifetime (1 s) passes, with the second it is rounded to
        msg, data = alice.build(Method.REFRESH, [])
        alice.send(data)
        answer = alice.answer_to(msg)
        assert error_code(answer) == 438
        assert answer is not None and answer.get(at.NONCE) != old
