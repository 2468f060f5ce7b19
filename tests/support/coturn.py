"""coturn as an independent interop peer on loopback.

``start_turnserver`` runs coturn's ``turnserver`` on free loopback ports with its own user
database, log file and (optionally) a self-signed TLS certificate, and stops it by PID.
``run_uclient`` drives ``turnutils_uclient`` against any TURN server (coturn or ours: it only
needs host, port and credentials) and parses the statistics the tool prints when it ends.
``start_peer`` runs ``turnutils_peer``, the UDP echo peer that uclient's non-``-y`` modes send to.

What uclient does (coturn 4.6.1, read from its source and measured here):

- Every session starts sending at a random moment 1-6 s after allocation, then sends ``-n``
  messages of ``-l`` bytes every 20 ms (``-z``). A run therefore takes about 5-8 s whatever
  ``-n`` is. A session that has not received all it expects waits 10 s more (STOPPING_TIME)
  before it gives up, so a run with any loss takes about 15 s.
- ``-m`` is rounded up: to a multiple of 4 for ``-y`` with RTCP sessions, to even otherwise;
  ``-T`` implies ``-t -y -c`` (no RTCP). The final totals count every session's messages.
- It exits 0 when the run completed, whatever was lost; 255 (``exit(-1)``) when a session
  could not be set up (``ERROR: Cannot complete Allocation``, connection refused).
- It prints to stdout only, every log line twice; each line starts ``<seconds>: : ``.
  The last lines of a completed run are::

      7: : start_mclient: tot_send_msgs=500, tot_recv_msgs=500
      7: : start_mclient: tot_send_bytes ~ 50000, tot_recv_bytes ~ 50000
      7: : Total transmit time is 7
      7: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
      7: : Average round trip delay 0.324000 ms; min = 0 ms, max = 24 ms
      7: : Average jitter 1.462000 ms; min = 0 ms, max = 144 ms

  "lost packets" is ``tot_send_msgs - tot_recv_msgs``. With ``-T``/``-P`` a line
  ``WARNING: N connections are not completed`` appears when RFC 6062 data connections did not
  all bind within the tool's wait.
- ``-P`` (passive TCP: the client allocates, a plain TCP "peer" connects to the relayed
  address, the client accepts the ConnectionAttempt) counts the messages both ends send but only
  those one end receives: against coturn itself ``received == sent / 2`` exactly, and the run
  always pays the 10 s STOPPING_TIME (about 15 s in all).
- ``-S -t -y`` (TLS to the server, UDP relay) loses up to one message per session against
  coturn itself, every run (``-m 4``: 3 or 4 of 40; ``-m 8``: 8 of 80; ``-m 2 -c``: 1 of 20),
  and so always takes about 15 s: the tool seems to leave the last TLS record unread.
  ``-S -T`` (TLS, TCP relay) is clean.
- There is no realm option: uclient takes the realm from the server's 401. ``-r`` is the peer
  port. ``-W secret`` makes TURN REST API credentials (``<expiry>:<-u user>``, HMAC-SHA1 of the
  secret); ``-u`` is optional with ``-W``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from delshare.stun.credentials import rest_credentials as delshare_rest_credentials
from tests.support.ports import free_port
from tests.support.tlscert import make_self_signed

TURNSERVER = "turnserver"
UCLIENT = "turnutils_uclient"
PEER = "turnutils_peer"

Transport = Literal["udp", "tcp", "tls"]

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_POLL = 0.05


def coturn_missing() -> str | None:
    """Return why coturn cannot be used here, or ``None`` if its tools are on PATH."""
    missing = [tool for tool in (TURNSERVER, UCLIENT, PEER) if shutil.which(tool) is None]
    return f"not on PATH: {', '.join(missing)}" if missing else None


def _stop_process(process: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM the process by PID, SIGKILL it if it lingers, and reap it."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def _host_literal(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stun_binding_answered(host: str, port: int) -> bool:
    """Send one STUN Binding request (RFC 8489 §6) over UDP; true if any reply comes back."""
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendto(request, (host, port))
            reply = sock.recv(2048)
        except OSError:
            return False
    return reply[8:20] == request[8:20]


def rest_credentials(secret: str, user: str = "user", *, ttl: int = 3600) -> tuple[str, str]:
    """TURN REST API credentials: ``(f"{expiry}:{user}", base64(HMAC-SHA1(secret, username)))``.

    The scheme of draft-uberti-behave-turn-rest-00 §2.2, as coturn's ``--use-auth-secret``
    checks it. This is DEL's own implementation, so coturn accepting it checks our code.
    """
    return delshare_rest_credentials(secret, time.time(), ttl, user)


@dataclass
class Turnserver:
    """A running coturn ``turnserver``; stop it with ``stop()`` or use it as a context manager."""

    host: str
    port: int
    tls_port: int | None
    realm: str
    users: tuple[tuple[str, str], ...]
    auth_secret: str | None
    workdir: Path
    argv: tuple[str, ...]
    process: subprocess.Popen[bytes]
    _own_workdir: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "turnserver.log"

    def uri(self, transport: Transport = "udp") -> str:
        """RFC 7065 URI of this server: ``turn:H:P?transport=udp|tcp`` or ``turns:H:T?...``."""
        if transport == "tls":
            if self.tls_port is None:
                raise ValueError("turnserver was started without tls=True")
            return f"turns:{_host_literal(self.host)}:{self.tls_port}?transport=tcp"
        return f"turn:{_host_literal(self.host)}:{self.port}?transport={transport}"

    def log_text(self) -> str:
        """The server's log so far (empty if it wrote none)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the server by PID and remove the work directory if this helper made it."""
        _stop_process(self.process)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _auth_args(users: Sequence[tuple[str, str]], realm: str, auth_secret: str | None) -> list[str]:
    args = ["--lt-cred-mech", "--realm", realm]
    for user, password in users:
        args += ["--user", f"{user}:{password}"]
    if auth_secret is not None:
        args += ["--use-auth-secret", "--static-auth-secret", auth_secret]
    return args


def _tls_args(tls_port: int | None, workdir: Path) -> list[str]:
    if tls_port is None:
        return ["--no-tls"]
    files = make_self_signed(workdir / "tls")
    return [
        "--tls-listening-port",
        str(tls_port),
        "--cert",
        str(files.cert),
        "--pkey",
        str(files.key),
    ]


def turnserver_argv(
    *,
    host: str,
    port: int,
    tls_port: int | None,
    workdir: Path,
    users: Sequence[tuple[str, str]],
    realm: str,
    auth_secret: str | None,
    no_tcp_relay: bool,
    extra: Sequence[str],
) -> list[str]:
    """The full ``turnserver`` command line ``start_turnserver`` runs."""
    argv = [
        TURNSERVER,
        "-n",  # no configuration file
        "--no-cli",
        "--listening-ip", host,
        "--relay-ip", host,
        "--listening-port", str(port),
        "--allow-loopback-peers",
        "--no-rfc5780",
        "--no-dtls",
        "--userdb", str(workdir / "turndb"),  # not the system's /var/lib/turn/turndb
        "--pidfile", str(workdir / "turnserver.pid"),
        "--log-file", str(workdir / "turnserver.log"),
        "--simple-log",  # exactly that file name, no rollover
        "--no-stdout-log",
    ]  # fmt: skip
    argv += _auth_args(users, realm, auth_secret)
    argv += _tls_args(tls_port, workdir)
    if no_tcp_relay:
        argv.append("--no-tcp-relay")
    return argv + list(extra)


def _wait_ready(server: Turnserver, udp: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"turnserver exited with {server.process.returncode}:\n{server.log_text()[-4000:]}"
            )
        tcp_ok = _tcp_accepts(server.host, server.port)
        tls_ok = server.tls_port is None or _tcp_accepts(server.host, server.tls_port)
        if tcp_ok and tls_ok and (not udp or _stun_binding_answered(server.host, server.port)):
            return
        time.sleep(_POLL)
    raise RuntimeError(f"turnserver not ready after {timeout} s:\n{server.log_text()[-4000:]}")


def start_turnserver(
    *,
    users: Sequence[tuple[str, str]] = (("user", "pass"),),
    realm: str = "del.test",
    auth_secret: str | None = None,
    no_tcp_relay: bool = False,
    tls: bool = False,
    extra: Sequence[str] = (),
    host: str = "127.0.0.1",
    workdir: Path | None = None,
    ready_timeout: float = _READY_TIMEOUT,
) -> Turnserver:
    """Start coturn on free ports of ``host`` and return once it answers on every listener.

    Long-term credentials (RFC 8489 §9.2) for ``users`` in ``realm``; with ``auth_secret`` also
    TURN REST API credentials (see ``rest_credentials``). ``tls`` adds a TLS listener with a
    fresh self-signed certificate. ``extra`` is appended to the command line.
    """
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="coturn-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port("both", host)
    tls_port = free_port("both", host) if tls else None
    argv = turnserver_argv(
        host=host, port=port, tls_port=tls_port, workdir=workdir, users=users, realm=realm,
        auth_secret=auth_secret, no_tcp_relay=no_tcp_relay, extra=extra,
    )  # fmt: skip
    stderr = (workdir / "turnserver.stderr").open("wb")
    with stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, cwd=workdir
        )
    server = Turnserver(
        host=host, port=port, tls_port=tls_port, realm=realm, users=tuple(users),
        auth_secret=auth_secret, workdir=workdir, argv=tuple(argv), process=process,
        _own_workdir=own,
    )  # fmt: skip
    try:
        _wait_ready(server, udp="--no-udp" not in extra, timeout=ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server


# --- turnutils_peer -------------------------------------------------------------------------


@dataclass
class Peer:
    """A running ``turnutils_peer``: a UDP echo server, the default target of uclient."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        _stop_process(self.process)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _echoes(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = os.urandom(8)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendto(probe, (host, port))
            return sock.recv(64) == probe
        except OSError:
            return False


def start_peer(host: str = "127.0.0.1", *, ready_timeout: float = _READY_TIMEOUT) -> Peer:
    """Start ``turnutils_peer`` on a free UDP port and return once it echoes a datagram."""
    port = free_port("udp", host)
    process = subprocess.Popen(
        [PEER, "-L", host, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peer = Peer(host=host, port=port, process=process)
    deadline = time.monotonic() + ready_timeout
    while not _echoes(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            peer.stop()
            raise RuntimeError(f"turnutils_peer did not echo on {host}:{port}")
        time.sleep(_POLL)
    return peer


# --- turnutils_uclient ----------------------------------------------------------------------


@dataclass(frozen=True)
class UclientMode:
    """A uclient traffic pattern: its flags and what a clean run of it looks like."""

    name: str
    flags: tuple[str, ...]
    needs_peer: bool = False  # sends to ``-e``/``-r`` (a ``start_peer()`` echo), not to itself
    tls: bool = False  # connect to the server's TLS port
    one_way: bool = False  # the tool counts only one direction (received == sent / 2)
    lossless: bool = True  # False: uclient itself loses messages in this mode, even on coturn


MODES: dict[str, UclientMode] = {
    mode.name: mode
    for mode in (
        # RFC 6062 TCP allocations, client to client: Connect, ConnectionBind, data (-T = -t -y -c).
        UclientMode("tcp-relay", ("-T", "-y")),
        # RFC 6062 passive side: a raw TCP peer connects in; ConnectionAttempt + ConnectionBind.
        UclientMode("tcp-relay-passive", ("-P",), one_way=True),
        # UDP allocations over UDP, client to client (ChannelData, RTP+RTCP session pairs).
        UclientMode("udp-relay", ("-y",)),
        # UDP allocations over a TCP control connection (ChannelData padded, RFC 8656 §12.5).
        UclientMode("udp-relay-over-tcp", ("-t", "-y")),
        # TCP allocations over TLS.
        UclientMode("tls-tcp-relay", ("-S", "-T"), tls=True),
        # UDP allocations over TLS; uclient drops one message per session pair (see module doc).
        UclientMode("tls-udp-relay", ("-S", "-t", "-y"), tls=True, lossless=False),
        # UDP allocation over UDP to an external UDP echo peer.
        UclientMode("udp-peer", (), needs_peer=True),
        # UDP allocation over TCP to an external UDP echo peer.
        UclientMode("tcp-peer", ("-t",), needs_peer=True),
    )
}


class UclientFailed(RuntimeError):
    """uclient exited non-zero, timed out, or printed no final statistics."""

    def __init__(self, reason: str, argv: Sequence[str], returncode: int | None, output: str):
        super().__init__(f"{reason}: {' '.join(argv)}\n{output[-3000:]}")
        self.reason = reason
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output


@dataclass(frozen=True)
class UclientResult:
    """The final statistics of one uclient run."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    sent_messages: int
    received_messages: int
    sent_bytes: int
    received_bytes: int
    lost_messages: int  # as the tool prints it: sent - received
    send_dropped: int
    not_completed: int  # RFC 6062 data connections that did not bind in time
    transmit_seconds: int
    one_way: bool
    attempts: int = 1
    errors: tuple[str, ...] = ()

    @property
    def expected_received(self) -> int:
        """What a lossless run receives: all sent, or half of it where uclient counts one way."""
        return self.sent_messages // 2 if self.one_way else self.sent_messages

    @property
    def clean(self) -> bool:
        """True when something was sent, all of it arrived, and nothing was dropped."""
        return self.loses_at_most(0)

    def loses_at_most(self, lost: int) -> bool:
        """``clean`` but for up to ``lost`` messages that did not arrive (a lossy mode's quirk)."""
        return (
            self.sent_messages > 0
            and self.expected_received - lost <= self.received_messages <= self.expected_received
            and self.send_dropped == 0
            and self.not_completed == 0
        )

    def summary(self) -> str:
        return (
            f"sent={self.sent_messages} received={self.received_messages} "
            f"lost={self.lost_messages} dropped={self.send_dropped} "
            f"not_completed={self.not_completed} attempts={self.attempts}"
        )


_TOTAL_MSGS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", re.M)
_TOTAL_BYTES = re.compile(
    r"start_mclient: tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)\s*$", re.M
)
_LOST = re.compile(r"Total lost packets (\d+) \([^)]*\), total send dropped (\d+)")
_NOT_COMPLETED = re.compile(r"WARNING: (\d+) connections are not completed")
_TRANSMIT = re.compile(r"Total transmit time is (\d+)")


def _last(pattern: re.Pattern[str], text: str) -> tuple[int, ...] | None:
    matches = pattern.findall(text)
    if not matches:
        return None
    last = matches[-1]
    return tuple(int(v) for v in (last if isinstance(last, tuple) else (last,)))


def parse_uclient_output(
    output: str, *, argv: Sequence[str] = (), returncode: int = 0, one_way: bool = False
) -> UclientResult | None:
    """Parse uclient's closing statistics; ``None`` if the run printed none."""
    msgs, byts, lost = _last(_TOTAL_MSGS, output), _last(_TOTAL_BYTES, output), _last(_LOST, output)
    if msgs is None or byts is None or lost is None:
        return None
    not_completed = _last(_NOT_COMPLETED, output)
    transmit = _last(_TRANSMIT, output)
    errors = tuple(dict.fromkeys(line for line in output.splitlines() if "ERROR" in line))
    return UclientResult(
        argv=tuple(argv), returncode=returncode, output=output,
        sent_messages=msgs[0], received_messages=msgs[1],
        sent_bytes=byts[0], received_bytes=byts[1],
        lost_messages=lost[0], send_dropped=lost[1],
        not_completed=not_completed[0] if not_completed else 0,
        transmit_seconds=transmit[0] if transmit else 0,
        one_way=one_way, errors=errors,
    )  # fmt: skip


def uclient_argv(
    server_host: str,
    server_port: int,
    *,
    mode_flags: Sequence[str],
    user: str | None = None,
    password: str | None = None,
    secret: str | None = None,
    clients: int = 2,
    messages: int = 10,
    length: int = 100,
    peer: tuple[str, int] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``turnutils_uclient`` command line ``run_uclient`` runs."""
    argv = [UCLIENT, *mode_flags, "-m", str(clients), "-n", str(messages), "-l", str(length)]
    argv += ["-p", str(server_port)]
    if user is not None:
        argv += ["-u", user]
    if password is not None and secret is None:
        argv += ["-w", password]
    if secret is not None:
        argv += ["-W", secret]
    if peer is not None:
        argv += ["-e", peer[0], "-r", str(peer[1])]
    return [*argv, *extra, server_host]


def _run_once(argv: Sequence[str], timeout: float, one_way: bool) -> UclientResult:
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        raw, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raw, _ = process.communicate()
        raise UclientFailed(
            f"timed out after {timeout} s", argv, None, raw.decode(errors="replace")
        ) from None
    output = raw.decode(errors="replace")
    if process.returncode != 0:
        raise UclientFailed(f"exit status {process.returncode}", argv, process.returncode, output)
    result = parse_uclient_output(output, argv=argv, returncode=0, one_way=one_way)
    if result is None:
        raise UclientFailed("no final statistics", argv, process.returncode, output)
    return result


def run_uclient(
    server_host: str,
    server_port: int,
    *,
    mode_flags: Sequence[str],
    user: str | None = None,
    password: str | None = None,
    secret: str | None = None,
    clients: int = 2,
    messages: int = 10,
    length: int = 100,
    peer: tuple[str, int] | None = None,
    extra: Sequence[str] = (),
    timeout: float = 60.0,
    retries: int = 0,
    tolerated_loss: int = 0,
) -> UclientResult:
    """Run ``turnutils_uclient`` against any TURN server and return its final statistics.

    ``secret`` selects TURN REST API credentials (``-W``) instead of ``-w password``. ``peer``
    is the ``(host, port)`` of a ``start_peer()`` echo, for modes that do not use ``-y``.
    ``retries`` re-runs a run that lost more than ``tolerated_loss`` messages or dropped any
    (uclient sometimes reports one message lost at the very end of a run); the result says how
    many ``attempts`` it took. Raises ``UclientFailed`` if the tool failed, timed out or printed
    no statistics.
    """
    argv = uclient_argv(
        server_host, server_port, mode_flags=mode_flags, user=user, password=password,
        secret=secret, clients=clients, messages=messages, length=length, peer=peer, extra=extra,
    )  # fmt: skip
    one_way = "-P" in mode_flags
    attempts = 0
    while True:
        attempts += 1
        result = _run_once(argv, timeout, one_way)
        if result.loses_at_most(tolerated_loss) or attempts > retries:
            return replace(result, attempts=attempts)
