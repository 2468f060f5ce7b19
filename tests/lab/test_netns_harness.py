"""The namespace lab behaves like real NATs: out works and is masqueraded, in is impossible."""

from __future__ import annotations

import select
import subprocess

import pytest

from tests.lab.netns import PUB_ADDR, Lab, build_nat_lab, lab_unavailable

pytestmark = pytest.mark.netns

PORT = 9000

# Accept up to argv[3] TCP connections before the deadline; print "listening", then each peer
# address and the word it sent.
TCP_SERVER = """
import socket, sys, time
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
for _ in range(int(sys.argv[3])):
    if (left := deadline - time.monotonic()) <= 0:
        break
    srv.settimeout(left)
    try:
        conn, peer = srv.accept()
    except TimeoutError:
        break
    with conn:
        conn.settimeout(2)
        print(peer[0], conn.recv(64).decode(), flush=True)
"""

# Connect (2 s timeout), send a word; print "connected" or "failed <error>".
TCP_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as c:
        c.sendall(sys.argv[3].encode())
    print("connected")
except OSError as exc:
    print("failed", type(exc).__name__, exc)
"""

# Answer every UDP datagram with the sender's address as the server saw it.
UDP_REFLECTOR = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
sock.settimeout(float(sys.argv[2]))
try:
    while True:
        data, peer = sock.recvfrom(64)
        sock.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
except TimeoutError:
    pass
"""

# From one UDP socket, ask each reflector port how it sees us; print one answer per line.
UDP_CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 0))
sock.settimeout(2)
for port in sys.argv[2:]:
    sock.sendto(b"?", (sys.argv[1], int(port)))
    print(sock.recvfrom(64)[0].decode(), flush=True)
"""


def _wait_listening(process: subprocess.Popen[str], timeout: float = 5.0) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "server did not start"
    assert process.stdout.readline().strip() == "listening"


def _serve_tcp(lab: Lab, ns: str, seconds: float, count: int = 1) -> subprocess.Popen[str]:
    server = lab.start_python(ns, TCP_SERVER, str(PORT), str(seconds), str(count))
    _wait_listening(server)
    return server


def _connect(lab: Lab, ns: str, host: str, word: str = "hello") -> str:
    return lab.python(ns, TCP_CLIENT, host, str(PORT), word).stdout.strip()


def _peers_seen(server: subprocess.Popen[str]) -> list[str]:
    out, _ = server.communicate(timeout=15)
    return out.splitlines()


def test_alice_reaches_pub_and_is_seen_as_her_nat(nat_lab: Lab) -> None:
    server = _serve_tcp(nat_lab, "pub", seconds=5)
    assert _connect(nat_lab, "alice", PUB_ADDR) == "connected"
    assert _peers_seen(server) == [f"{nat_lab.public_addr('alice')} hello"]
    assert nat_lab.public_addr("alice") == nat_lab.addr("nat-a") == "203.0.113.10"


def test_udp_is_masqueraded_and_answers_come_back(nat_lab: Lab) -> None:
    reflector = nat_lab.start_python("pub", UDP_REFLECTOR, str(PORT), "3")
    _wait_listening(reflector)
    seen = nat_lab.python("bob", UDP_CLIENT, PUB_ADDR, str(PORT)).stdout.split()
    assert len(seen) == 1
    assert seen[0].split(":")[0] == nat_lab.public_addr("bob") == "203.0.113.20"


def test_nobody_can_connect_in_to_alice(nat_lab: Lab) -> None:
    """Private and public addresses, from pub and from bob: all fail within the 2 s timeout.

    pub even routes 10.0.1.0/24 to nat-a, as a hostile neighbour on the segment could: nat-a's
    forward filter still drops it. The control connection from nat-a (on alice's LAN) shows the
    listener was there all along.
    """
    nat_lab.ip("pub", "route", "add", "10.0.1.0/24", "via", nat_lab.addr("nat-a"))
    server = _serve_tcp(nat_lab, "alice", seconds=8)
    attempts = [
        nat_lab.start_python(ns, TCP_CLIENT, target, str(PORT), f"from-{ns}")
        for ns in ("pub", "bob")
        for target in (nat_lab.addr("alice"), nat_lab.public_addr("alice"))
    ]
    results = [attempt.communicate(timeout=10)[0].strip() for attempt in attempts]
    assert all(result.startswith("failed") for result in results), results
    assert _connect(nat_lab, "nat-a", nat_lab.addr("alice"), "control") == "connected"
    assert _peers_seen(server) == ["10.0.1.1 control"]


def test_lan_peers_reach_each_other_directly(lan_lab: Lab) -> None:
    server = _serve_tcp(lan_lab, "bob", seconds=5)
    assert _connect(lan_lab, "alice", lan_lab.addr("bob")) == "connected"
    assert _peers_seen(server) == [f"{lan_lab.addr('alice')} hello"]
    assert lan_lab.addr("alice") == "10.0.1.2"


def test_lan_peers_share_one_public_address(lan_lab: Lab) -> None:
    server = _serve_tcp(lan_lab, "pub", seconds=5, count=2)
    assert _connect(lan_lab, "alice", PUB_ADDR, "a") == "connected"
    assert _connect(lan_lab, "bob", PUB_ADDR, "b") == "connected"
    assert _peers_seen(server) == ["203.0.113.10 a", "203.0.113.10 b"]


@pytest.mark.parametrize("symmetric", [False, True])
def test_mapping_per_destination(symmetric: bool) -> None:
    """One UDP socket, two destinations: same public port (cone-like) unless ``symmetric``."""
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with build_nat_lab(symmetric=symmetric) as lab:
        reflectors = [
            lab.start_python("pub", UDP_REFLECTOR, str(port), "3") for port in (PORT, PORT + 1)
        ]
        for reflector in reflectors:
            _wait_listening(reflector)
        seen = lab.python("alice", UDP_CLIENT, PUB_ADDR, str(PORT), str(PORT + 1)).stdout.split()
        assert len(seen) == 2, seen
        assert {s.split(":")[0] for s in seen} == {"203.0.113.10"}
        ports = {s.split(":")[1] for s in seen}
        assert len(ports) == (2 if symmetric else 1), seen


def test_close_kills_processes_and_deletes_namespaces() -> None:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    lab = build_nat_lab()
    names = [lab.netns(ns) for ns in lab.namespaces]
    sleeper = lab.run("alice", ["sleep", "60"])
    lab.close()
    assert sleeper.returncode is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [name for name in names if name in listed.split()]
    lab.close()  # idempotent
