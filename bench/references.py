"""Reference relays without TURN for cases 1, 2 and 4: the ceilings of this machine.

Each starter returns a ``Reference``: a running relay process plus the peer side the bench
measures against (a listening TCP socket, or a UDP socket), created before the relay because the
relay is told the peer's port on its command line, as a TURN client tells a TURN server with
Connect or ChannelBind. Cases drive them with the same pumps as the TURN servers; only the TURN
setup (allocation, permission, Connect, ConnectionBind or ChannelBind) is missing.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench import c_relays
from bench.common import OUT_DIR, REPO_DIR, Child, NotAvailable
from bench.servers import Server
from delshare.stun.framing import ChannelData

MAX_S = 3600  # every reference process ends by itself after this long
PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ per direction, as bench/pipe_bench.py
UDP_RCVBUF = 2 << 20  # the listener's SO_RCVBUF: what ours and coturn ask for
PEER_RCVBUF = 8 << 20  # the counting peer's, as case 4's
CHANNEL = 0x4000  # the first channel number (RFC 8656 §12)
# The faster of bench.udp_forwarder's two modes here (python -m bench.forwarder_modes: 2.47-2.48
# against 2.56-2.57 us of forwarder CPU per datagram in two interleaved runs, BENCHMARKS.md)
PYTHON_FORWARDER_MODE = "add_reader"


@dataclass
class Reference(Server):
    """A reference relay: its process, its port, and the peer-side socket it relays to."""

    peer: socket.socket = field(kw_only=True)

    def stop(self) -> None:
        self.child.stop()
        self.peer.close()


def _listening_port(child: Child, timeout: float = 10.0) -> int:
    """The port a reference printed as its first line (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        first = child.tail(1).strip()
        if first.isdigit():
            return int(first)
        if not child.alive():
            break
        time.sleep(0.02)
    tail = child.tail()
    child.stop()
    raise NotAvailable(f"{child.argv[0]} did not start: {tail}")


def _start(name: str, argv: list[str], peer: socket.socket, note: str) -> Reference:
    tag = name.replace(" ", "-").lower()
    try:
        child = Child(argv, log=OUT_DIR / "run" / tag / "stdout.log", cwd=REPO_DIR)
        port = _listening_port(child)
    except BaseException:
        peer.close()
        raise
    return Reference(name, child, port, note=note, peer=peer)


def start_c_splice_relay() -> Reference:
    """``c_relays.SPLICE_RELAY`` relaying every connection to a fresh listening socket."""
    binary = c_relays.build("splice_relay")
    lst = socket.create_server(("127.0.0.1", 0), backlog=1024)
    lst.settimeout(10.0)
    argv = [str(binary), str(lst.getsockname()[1]), str(PIPE_BYTES), str(MAX_S)]
    note = "reference without TURN: C, cc -O2, splice(2) via 1 MiB pipes, one epoll loop"
    return _start("C splice relay", argv, lst, note)


def _udp_peer() -> socket.socket:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)
    peer.bind(("127.0.0.1", 0))
    return peer


def start_python_forwarder(mode: str = PYTHON_FORWARDER_MODE) -> Reference:
    """``bench.udp_forwarder`` in ``mode`` (by default the faster one), forwarding to a fresh
    UDP peer socket."""
    peer = _udp_peer()
    argv = [sys.executable, "-m", "bench.udp_forwarder", mode]
    argv += [str(peer.getsockname()[1]), str(UDP_RCVBUF), str(MAX_S)]
    python = f"Python {sys.version_info[0]}.{sys.version_info[1]}"
    if mode == "add_reader":
        how = f"{_loop_name()} add_reader, up to 64 recv_into+sendto per wake-up"
    else:
        how = "blocking recv_into+sendto loop"
    note = f"reference without TURN: {python}, {how}"
    return _start("Python forwarder", argv, peer, note)


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def start_c_forwarder() -> Reference:
    """``c_relays.UDP_FORWARDER`` (recvmmsg/sendmmsg), forwarding to a fresh UDP peer socket."""
    binary = c_relays.build("udp_forwarder")
    peer = _udp_peer()
    argv = [str(binary), str(peer.getsockname()[1]), str(UDP_RCVBUF), str(MAX_S)]
    note = "reference without TURN: C, cc -O2, recvmmsg/sendmmsg 64 per call"
    return _start("C forwarder", argv, peer, note)


@contextmanager
def direct_pairs(server: Server, count: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """``count`` connections through a TCP reference as (client socket, accepted peer socket)
    pairs, for ``pump_many``/``pump_stream``; all closed on exit."""
    if not isinstance(server, Reference):
        raise NotAvailable(f"{server.name} is not a reference relay")
    lst = server.peer
    pairs: list[tuple[socket.socket, socket.socket]] = []
    try:
        for _ in range(count):
            client = socket.create_connection(server.addr, timeout=10.0)
            client.settimeout(None)
            try:
                peer, _ = lst.accept()
            except BaseException:
                client.close()
                raise
            peer.settimeout(None)
            pairs.append((client, peer))
        yield pairs
    finally:
        for client, peer in pairs:
            client.close()
            peer.close()


def udp_sender(server: Server) -> tuple[socket.socket, socket.socket]:
    """(a sending socket connected to a UDP reference, the reference's peer socket).

    The peer socket is emptied first of anything a previous repetition left behind.
    """
    if not isinstance(server, Reference):
        raise NotAvailable(f"{server.name} is not a reference relay")
    peer = server.peer
    _drain(peer)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(server.addr)
    return sock, peer


def frame(payload: bytes) -> bytes:
    """The same ChannelData datagram the TURN rows send (RFC 8656 §12.4, channel 0x4000)."""
    return ChannelData(CHANNEL, payload).encode(pad=False)


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        for _ in range(1_000_000):  # bounded: more than any flood leaves behind
            sock.recv(2048)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
