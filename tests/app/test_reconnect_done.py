"""The receiver's last ``done`` is lost with the link (issue 14): the files are all there, so
the sender must finish with success after reconnecting, not wait out its deadline and fail.

Both sides relay (``--relay-only``) through a real ``delshare relay`` reached through a TCP
proxy the test runs. The receiver sends ``done`` only after the file is renamed into place, so
the proxy drops every byte it sees once the file exists, either way, and cuts every
connection, once: the ``done`` (which crosses a client's leg to the relay) never reaches the
sender. After that the proxy forwards everything, and the
two processes reconnect through it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.harness import RelayProcess, env_for, finish, start, start_relay_process, stop

NAME = "small.bin"


class CuttingProxy:
    """TCP proxy to ``target``; the first bytes seen once ``trigger`` exists are dropped and
    every connection is closed (once)."""

    def __init__(self, target: tuple[str, int], trigger: Path) -> None:
        self.target, self.trigger = target, trigger
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            for _ in range(100):  # bounded: a handful of connections per run
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
                with self._lock:
                    self._sockets += [client, upstream]
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if not self.cut.is_set() and self.trigger.exists():
                    self._cut_all()
                    return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _cut_all(self) -> None:
        with self._lock:
            if self.cut.is_set():
                return
            self.cut.set()
            for one in self._sockets:
                with contextlib.suppress(OSError):
                    one.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    one.close()
            self._sockets.clear()

    def close(self) -> None:
        self.server.close()
        self._cut_all()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = start_relay_process(tmp_path)
    yield process
    stop(process.process)


def test_a_lost_final_done_still_ends_in_success(tmp_path: Path, relay: RelayProcess) -> None:
    source = tmp_path / NAME
    source.write_bytes(os.urandom(1 << 20))
    out = tmp_path / "out"
    out.mkdir()
    assert relay.turn_port is not None
    proxy = CuttingProxy(("127.0.0.1", relay.turn_port), out / NAME)
    try:
        turn = f"turn:127.0.0.1:{proxy.port}?transport=tcp"
        env = env_for(relay.rendezvous, turn, DELSHARE_PEER_TIMEOUT="10")  # the sender's wait
        flags = ["--relay-only", "--reconnect-timeout", "30"]
        sender = start(["send", str(source), "--code", "5-guitar-orbit", *flags], env)
        received = finish(
            start(["receive", "5-guitar-orbit", "-o", str(out), "--yes", *flags], env)
        )
        sent = finish(sender)
    finally:
        proxy.close()
    assert proxy.cut.is_set(), "the proxy never cut the link"
    assert received.returncode == 0, received.stdout + received.stderr
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert (out / NAME).read_bytes() == source.read_bytes()
    assert "link lost: " in sent.stdout
