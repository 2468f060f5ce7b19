"""A real ``delshare relay`` subprocess and a raw, blocking TURN client for the relay attacks.

``RelayProcess`` starts ``delshare relay`` on loopback port 0 (TCP/UDP and optionally TLS),
reads the ports it logged, and measures it from /proc (RSS, open descriptors). ``TurnClient``
speaks STUN/TURN over UDP, TCP or TLS with hand-built requests: it follows 401 and 438 like a
client would, and can hand out the signed bytes of a request so a test can replay them anywhere
or corrupt them on purpose.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from delshare.stun import attributes as at
from delshare.stun.constants import Attr, MessageClass, Method
from delshare.stun.credentials import long_term_key
from delshare.stun.message import Message, decode_message
from tests.support.tlscert import make_self_signed

CODE = "from delshare.cli.main import main; main()"
REALM = "adversarial.test"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 5.0
_LISTENING = re.compile(r"TURN listening on (udp|tcp|tls) (\S+):(\d+)")


class RelayProcess:
    """``delshare relay --no-rendezvous`` on 127.0.0.1 with users alice and bob."""

    def __init__(
        self,
        *flags: str,
        tls: bool = False,
        listen: str = "127.0.0.1:0",
        preexec: Callable[[], object] | None = None,
        netns: str | None = None,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="relay-adv-")
        self.log_path = Path(self._dir.name) / "relay.log"
        args = [sys.executable, "-c", CODE, "relay", "--no-rendezvous", "--realm", REALM]
        args += ["--listen", listen]
        for name, password in USERS.items():
            args += ["--user", f"{name}:{password}"]
        if tls:
            cert = make_self_signed(Path(self._dir.name))
            args += ["--tls-listen", "127.0.0.1:0", "--cert", str(cert.cert)]
            args += ["--key", str(cert.key)]
        args += list(flags)
        if netns is not None:
            args = ["ip", "netns", "exec", netns, *args]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec,
        )
        self.ports: dict[str, int] = {}
        self._wait_ready(tls)

    def _wait_ready(self, tls: bool) -> None:
        wanted = {"udp", "tcp"} | ({"tls"} if tls else set())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            for kind, _host, port in _LISTENING.findall(self.log()):
                self.ports.setdefault(kind, int(port))
            if wanted <= self.ports.keys():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"relay did not start:\n{self.log()}")

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        """VmRSS of the relay process in KiB (from /proc/PID/status)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None, status
        return int(match.group(1))

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def address(self, kind: str = "tcp") -> tuple[str, int]:
        return ("127.0.0.1", self.ports[kind])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def client_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class TurnClient:
    """One blocking STUN/TURN client socket (UDP, TCP or TLS) with long-term credentials."""

    def __init__(
        self,
        transport: str,
        server: tuple[str, int],
        user: str = "alice",
        source: str = "127.0.0.1",
    ) -> None:
        self.transport = transport
        self.server = server
        self.user = user
        self.password = USERS[user]
        self.realm: str | None = None
        self.nonce: str | None = None
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        raw = socket.socket(socket.AF_INET, kind)
        raw.bind((source, 0))
        raw.settimeout(ANSWER_TIMEOUT)
        if transport != "udp":
            raw.connect(server)
        self.sock: socket.socket = raw
        if transport == "tls":
            self.sock = client_tls_context().wrap_socket(raw)
        self._buffer = b""

    @property
    def key(self) -> bytes:
        return long_term_key(self.user, self.realm or REALM, self.password)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    # -- bytes ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float = ANSWER_TIMEOUT) -> Message | None:
        """The next STUN message, or None on timeout or end of stream."""
        self.sock.settimeout(timeout)
        try:
            if self.transport == "udp":
                return decode_message(self.sock.recv(65536))
            header = self._read(20)
            if header is None:
                return None
            body = self._read(struct.unpack("!H", header[2:4])[0])
            return None if body is None else decode_message(header + body)
        except TimeoutError:
            return None

    def _read(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def at_eof(self, timeout: float) -> bool:
        """True once the server closed the stream (end of file or reset) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], deadline - time.monotonic())
            if not ready:
                return False
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, ssl.SSLError):
                return True
        return False

    # -- requests ------------------------------------------------------------------------------

    def build(
        self, method: int, attrs: Sequence[tuple[int, object]], *, auth: bool = True
    ) -> tuple[Message, bytes]:
        """A request and its wire bytes, signed with the current nonce when ``auth``."""
        msg = Message(method, MessageClass.REQUEST)
        for kind, value in attrs:
            msg.add(kind, value)
        if auth and self.nonce is not None:
            msg.add(at.USERNAME, self.user).add(at.REALM, self.realm or REALM)
            msg.add(at.NONCE, self.nonce)
            return msg, msg.encode(self.key)
        return msg, msg.encode()

    def answer_to(self, msg: Message, timeout: float = ANSWER_TIMEOUT) -> Message | None:
        """The response to ``msg`` (indications and other transactions are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.receive(left)
            if got is None:
                return None
            if got.cls != MessageClass.INDICATION and got.transaction_id == msg.transaction_id:
                return got
        return None

    def request(
        self, method: int, *attrs: tuple[int, object], timeout: float = ANSWER_TIMEOUT
    ) -> Message:
        """Send an authenticated request, following 401 and 438 (RFC 8489 §9.2.5) twice at most."""
        for _ in range(3):
            msg, data = self.build(method, attrs)
            self.send(data)
            answer = self.answer_to(msg, timeout)
            assert answer is not None, f"no answer to {Method(method).name}"
            code = answer.error[0] if answer.error else None
            if code in (401, 438) and answer.get(at.NONCE) is not None:
                learned = self.nonce
                self.realm = answer.get(at.REALM) or self.realm
                self.nonce = answer.get(at.NONCE)
                if code == 401 and learned is not None and learned == self.nonce:
                    return answer
                continue
            return answer
        assert answer is not None
        return answer

    def allocate(self, transport: int = 17, *extra: tuple[int, object]) -> Message:
        return self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, transport), *extra)


def error_code(msg: Message | None) -> int | None:
    """The error code of a response, None for success (and for no answer: check that first)."""
    return None if msg is None or msg.error is None else msg.error[0]
