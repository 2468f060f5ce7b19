"""Issue 12 item 8: retransmitted requests get the same answer as the first (RFC 8489 §6.3.1).

pion resends a request every 200 ms even over TCP. A Connect retransmitted while the relay's
TCP connect to the peer is still under way must not get 446: it gets the one success when the
connect completes; 446 stays for a real second Connect. Retransmitted Allocate, CreatePermission
and Refresh (lifetime 0 too) get byte-identical answers over UDP and TCP. And our client prints
an error without reason phrase with the standard phrase, and a NUL-padded one without the NULs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from delshare.stun import attributes as at
from delshare.stun.constants import PROTO_TCP, PROTO_UDP, Attr, Method
from delshare.stun.message import Message, decode_message, error_response
from tests.adversarial.conftest import scaled
from tests.adversarial.relay_support import RelayProcess, TurnClient, error_code

RETRANSMIT_EVERY = 0.2  # pion's interval
CLI = "from delshare.cli.main import main; main()"


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with RelayProcess("--allow-peer", "127.0.0.0/8") as process:
        yield process


def slow_peer() -> tuple[socket.socket, socket.socket]:
    """A listener whose accept queue is full, so a new connect waits for SYN retransmission
    (about a second) until ``accept`` makes room; returns the listener and the filler."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=5)
    return listener, filler


def test_connect_retransmitted_while_connecting_gets_one_success(relay: RelayProcess) -> None:
    retransmissions = scaled(5, 20)
    listener, filler = slow_peer()
    peer = listener.getsockname()
    with listener, filler, TurnClient("tcp", relay.address()) as client:
        assert error_code(client.allocate(PROTO_TCP)) is None
        permit = client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer))
        assert error_code(permit) is None
        connect, data = client.build(Method.CONNECT, [(Attr.XOR_PEER_ADDRESS, peer)])
        answers: list[Message] = []
        client.send(data)
        for _ in range(retransmissions):
            got = client.answer_to(connect, timeout=RETRANSMIT_EVERY)
            if got is not None:
                answers.append(got)
            client.send(data)  # same transaction ID, same bytes: a retransmission
        listener.accept()[0].close()  # room in the queue: the relay's next SYN gets through
        while (got := client.answer_to(connect, timeout=5)) is not None:
            answers.append(got)
        assert [error_code(a) for a in answers] == [None], [a.error for a in answers]
        assert answers[0].get(at.CONNECTION_ID) is not None
        second = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer))
        assert error_code(second) == 446  # a real second Connect to the same peer


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_retransmitted_requests_get_the_same_answer(relay: RelayProcess, transport: str) -> None:
    peer = ("127.0.0.1", 9)
    with TurnClient(transport, relay.address(transport)) as client:
        client.request(Method.REFRESH)  # learn a nonce (401, then 437)
        steps: list[tuple[int, list[tuple[int, object]]]] = [
            (Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, PROTO_UDP)]),
            (Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, peer)]),
            (Method.REFRESH, [(Attr.LIFETIME, 600)]),
            (Method.REFRESH, [(Attr.LIFETIME, 0)]),
        ]
        for method, attrs in steps:
            msg, data = client.build(method, attrs)
            client.send(data)
            first = client.answer_to(msg)
            if attrs == [(Attr.LIFETIME, 0)] and transport == "tcp":
                assert first is not None and error_code(first) is None
                break  # the allocation ended: the relay closes the control connection
            client.send(data)
            again = client.answer_to(msg)
            assert first is not None and again is not None, Method(method).name
            assert error_code(first) is None, (Method(method).name, first.error)
            assert again.raw == first.raw, Method(method).name


class FakeServer:
    """A TCP 'TURN server' that answers every request with one error response, its reason
    phrase written raw (empty, or NUL-padded as coturn does)."""

    def __init__(self, code: int, reason: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.code, self.reason = code, reason
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        while not self.stop.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 20 and len(buffer) >= 20 + int.from_bytes(buffer[2:4], "big"):
                size = 20 + int.from_bytes(buffer[2:4], "big")
                request, buffer = decode_message(buffer[:size]), buffer[size:]
                conn.sendall(self._answer(request))

    def _answer(self, request: Message) -> bytes:
        header = bytearray(error_response(request, self.code, "x").encode()[:20])
        value = struct.pack("!HBB", 0, self.code // 100, self.code % 100) + self.reason
        body = struct.pack("!HH", Attr.ERROR_CODE, len(value)) + value + bytes(-len(value) % 4)
        header[2:4] = struct.pack("!H", len(body))
        return bytes(header) + body

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize(
    ("reason", "shown"), [(b"", "Unsupported Transport Protocol"), (b"Nope\0\0\0", "Nope")]
)
def test_client_prints_standard_or_unpadded_reason(reason: bytes, shown: str) -> None:
    server = FakeServer(442, reason)
    try:
        started = time.monotonic()
        uri = f"turn:127.0.0.1:{server.port}?transport=tcp"
        done = subprocess.run(
            [sys.executable, "-c", CLI, "turn-check", uri, "--user", "a", "--password", "b"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.close()
    assert done.returncode == 1, (done.stdout, done.stderr, time.monotonic() - started)
    assert f"442 {shown}" in done.stderr, done.stderr
    assert "\0" not in done.stderr
