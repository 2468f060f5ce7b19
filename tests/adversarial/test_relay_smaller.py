"""Issue 10 item 12, the relay's part: no CONNECTION-ID oracle, the relay's own addresses refused
as peers, accept errors logged at a bounded rate.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator

import pytest

from delshare.stun import attributes as at
from delshare.stun.constants import PROTO_TCP, Attr, Method
from tests.adversarial.conftest import scaled
from tests.adversarial.relay_support import RelayProcess, TurnClient, error_code
from tests.lab.netns import Lab, lab_unavailable

OWN = "11.22.33.44"  # a global address the test gives the relay's host (its own namespace)


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with RelayProcess("--allow-peer", "127.0.0.0/8") as process:
        yield process


def test_connection_bind_answers_another_users_id_like_an_unknown_one(
    relay: RelayProcess,
) -> None:
    with (
        TurnClient("tcp", relay.address()) as alice,
        socket.create_server(("127.0.0.1", 0)) as peer,
    ):
        assert error_code(alice.allocate(PROTO_TCP)) is None
        target = peer.getsockname()
        assert (
            error_code(alice.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, target)))
            is None
        )
        connected = alice.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, target))
        cid = connected.get(at.CONNECTION_ID)
        assert cid is not None
        answers = []
        for probe in (cid, cid ^ 0x00FF00FF, 0):
            with TurnClient("tcp", relay.address(), user="bob") as bob:
                answer = bob.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, probe))
                answers.append(answer.error)
        assert answers[0] == answers[1] == answers[2]  # theirs, unknown, zero: one answer
        assert answers[0] is not None and answers[0][0] == 400
        with TurnClient("tcp", relay.address()) as data:  # still alice's to bind
            bound = data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, cid))
            assert error_code(bound) is None


CLIENT = """
import json, sys
from delshare.stun.constants import PROTO_TCP, Attr, Method, MessageClass
from delshare.stun.message import Message
from tests.adversarial.relay_support import TurnClient, error_code

own, port, low = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = ("127.0.0.1", port)
PEER = Attr.XOR_PEER_ADDRESS
results = {}
with TurnClient("tcp", server) as tcp:
    tcp.allocate(PROTO_TCP)
    tcp.request(Method.CREATE_PERMISSION, (PEER, (own, low)))
    results["connect-turn-port"] = error_code(tcp.request(Method.CONNECT, (PEER, (own, port))))
with TurnClient("udp", server) as udp:
    udp.allocate()
    for name, peer in [("permission-turn-port", (own, port)), ("permission-ssh", (own, 22))]:
        results[name] = error_code(udp.request(Method.CREATE_PERMISSION, (PEER, peer)))
    channel = (Attr.CHANNEL_NUMBER, 0x4001)
    bound = udp.request(Method.CHANNEL_BIND, channel, (PEER, (own, port)))
    results["channel-turn-port"] = error_code(bound)
    permit = udp.request(Method.CREATE_PERMISSION, (PEER, (own, low)))
    results["permission-relay-range"] = error_code(permit)
    # with that permission, a Send to the relay's own UDP port must not be relayed: a Binding
    # request sent there would come back (Data indication or ChannelData)
    binding = Message(Method.BINDING, MessageClass.REQUEST).encode()
    send = Message(Method.SEND, MessageClass.INDICATION)
    send.add(PEER, (own, port)).add(Attr.DATA, binding)
    udp.send(send.encode())
    udp.sock.settimeout(2.0)
    try:
        results["send-turn-port-relayed"] = len(udp.sock.recv(65536)) > 0
    except TimeoutError:
        results["send-turn-port-relayed"] = False
print(json.dumps(results))
"""


def test_the_relays_own_addresses_are_refused_as_peers() -> None:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Lab() as lab:
        lab.add_namespace("relay")
        lab.ip("relay", "addr", "add", f"{OWN}/32", "dev", "lo")
        flags = ("--min-port", "50000", "--max-port", "50100")
        with RelayProcess(*flags, listen="0.0.0.0:0", netns=lab.netns("relay")) as relay:
            done = lab.python("relay", CLIENT, OWN, str(relay.ports["tcp"]), "50000", timeout=60)
            assert done.returncode == 0, done.stderr
            results = json.loads(done.stdout)
    assert results == {
        "connect-turn-port": 403,
        "permission-turn-port": 403,
        "permission-ssh": 403,
        "channel-turn-port": 403,
        "permission-relay-range": None,  # other allocations' relayed addresses stay reachable
        "send-turn-port-relayed": False,
    }


def test_accept_errors_at_the_descriptor_limit_are_logged_at_a_bounded_rate() -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    extra = scaled(100, 400)
    with RelayProcess(preexec=low_limit) as relay:
        clients = []
        try:
            for _ in range(extra):  # the backlog takes them; the relay runs out of descriptors
                clients.append(socket.create_connection(relay.address(), timeout=5))
            time.sleep(3)  # old code: a line every 0.1 s
            lines = [line for line in relay.log().splitlines() if "accept failed" in line]
            assert 1 <= len(lines) <= 2, lines
        finally:
            for sock in clients:
                sock.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # recovers: descriptors free, a client allocates
            try:
                with TurnClient("tcp", relay.address()) as client:
                    if error_code(client.allocate()) is None:
                        break
            except (AssertionError, OSError):
                time.sleep(0.5)
        else:
            pytest.fail("the relay did not recover after the connections closed")
