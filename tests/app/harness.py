"""Run the real ``delshare`` commands as subprocesses: a relay, a sender and a receiver.

``start_relay_process`` runs ``delshare relay`` (TURN + rendezvous, or one of them) on free
loopback ports and waits until both accept connections. ``run_pair`` starts ``delshare send``
and ``delshare receive`` with the same code and returns both outcomes. Every process is bounded
in time and killed by PID.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from delshare.transfer.resume import temp_paths
from tests.support.ports import free_port

_NEXT_TO_PYTHON = Path(sys.executable).parent / "delshare"  # not a pyenv shim: faster start
DELSHARE = str(_NEXT_TO_PYTHON) if _NEXT_TO_PYTHON.exists() else shutil.which("delshare") or ""
TURN_USER, TURN_PASSWORD = "alice", "s3cret-pass"
RUN_TIMEOUT = 90.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) or "dir", for every entry under ``root``."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = "dir" if path.is_dir() else sha256_file(path)
    return found


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(
    process: subprocess.Popen[bytes],
    ports: Sequence[int],
    timeout: float = 15.0,
    host: str = "127.0.0.1",
    log: Path | None = None,
) -> None:
    """Poll until every port accepts; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"process exited with {process.returncode}: {text[-2000:]}")
        if all(_accepts(host, p) for p in ports):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ports {ports} not listening after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, by PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class RelayProcess:
    """A running ``delshare relay``."""

    process: subprocess.Popen[bytes]
    turn_port: int | None
    rendezvous_port: int | None
    log: Path

    @property
    def rendezvous(self) -> str:
        return f"ws://127.0.0.1:{self.rendezvous_port}"

    @property
    def turn(self) -> str:
        return f"turn:127.0.0.1:{self.turn_port}?transport=tcp"


SHARED_RELAY_LIMITS = (
    "--rendezvous-max-message-rate",
    "1000",
    "--rendezvous-max-mailboxes-per-ip",
    "1000",
    "--rendezvous-max-connections-per-ip",
    "1000",
)
"""Per-address rendezvous limits for a relay a whole test module shares: every test's clients
come from 127.0.0.1, like many users behind one NAT, so the default per-address limits (which
tests/adversarial checks) would couple unrelated tests."""


def start_relay_process(
    workdir: Path,
    *,
    turn: bool = True,
    rendezvous: bool = True,
    extra: Sequence[str] = (),
    ports: tuple[int | None, int | None] | None = None,
    shared: bool = False,
) -> RelayProcess:
    """``delshare relay`` on free loopback ports, loopback peers allowed.

    ``ports`` (turn, rendezvous) reuses given ports, e.g. to restart a relay in place; ``shared``
    (a relay for a whole module) lifts the per-address rendezvous limits.
    """
    if ports is not None:
        turn_port, rendezvous_port = ports
    else:
        turn_port = free_port("both") if turn else None
        rendezvous_port = free_port("tcp") if rendezvous else None
    argv = [
        DELSHARE,
        "relay",
        "--user",
        f"{TURN_USER}:{TURN_PASSWORD}",
        "--allow-peer",
        "127.0.0.0/8",
        *(SHARED_RELAY_LIMITS if shared and rendezvous else ()),
        *extra,
    ]
    argv += ["--listen", f"127.0.0.1:{turn_port}"] if turn else ["--no-turn"]
    argv += (
        ["--rendezvous-listen", f"127.0.0.1:{rendezvous_port}"]
        if rendezvous
        else ["--no-rendezvous"]
    )
    log = workdir / f"relay-{turn_port}-{rendezvous_port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    listening = [p for p in (turn_port, rendezvous_port) if p is not None]
    try:
        wait_listening(process, listening, log=log)
    except BaseException:
        stop(process)
        raise
    return RelayProcess(process, turn_port, rendezvous_port, log)


@dataclass
class Outcome:
    """One finished command."""

    returncode: int
    stdout: str
    stderr: str

    def line(self, prefix: str) -> str:
        """The first stdout line starting with ``prefix`` (AssertionError if none)."""
        for line in self.stdout.splitlines():
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line in:\n{self.stdout}\n{self.stderr}")


def env_for(
    rendezvous: str,
    turn: str | None = None,
    *,
    user: str = TURN_USER,
    password: str = TURN_PASSWORD,
    **more: str,
) -> dict[str, str]:
    """Process environment with the DELSHARE_* settings (secrets stay out of argv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    env["DELSHARE_RENDEZVOUS"] = rendezvous
    if turn is not None:
        env.update(DELSHARE_TURN=turn, DELSHARE_TURN_USER=user, DELSHARE_TURN_PASSWORD=password)
    env.update(more)
    return env


def start(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DELSHARE, *argv],
        env=dict(env),
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(
    process: subprocess.Popen[str], timeout: float = RUN_TIMEOUT, input_text: str | None = None
) -> Outcome:
    try:
        out, err = process.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"{process.args!r} timed out:\n{out}\n{err}") from None
    return Outcome(process.returncode, out, err)


def run_pair(
    paths: Sequence[Path],
    output: Path,
    env: Mapping[str, str],
    flags: Sequence[str] = (),
    code: str = "7-guitar-orbit",
    receive_flags: Sequence[str] = ("--yes",),
) -> tuple[Outcome, Outcome]:
    """``delshare send PATHS --code CODE FLAGS`` and ``delshare receive CODE -o OUTPUT FLAGS``."""
    sender = start(["send", *map(str, paths), "--code", code, *flags], env)
    received: Outcome | None = None
    try:
        receiver = start(["receive", code, "--output", str(output), *receive_flags, *flags], env)
        received = finish(receiver)
    finally:
        # A sender whose receiver failed may wait long for the peer: bound it.
        sent = finish(sender, RUN_TIMEOUT if received and received.returncode == 0 else 20.0)
    return sent, received


def wait_for_part(
    part: Path, processes: Sequence[subprocess.Popen[str]], wait: float, breaking: str
) -> None:
    """Until the receiver wrote at least 4 MiB to ``part`` (bounded by ``wait`` seconds);
    ``breaking`` names what the test does next, for the failure when a side ends first."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size >= 4 << 20:
            return
        if any(p.poll() is not None for p in processes):
            raise AssertionError(f"a side ended before {breaking}")
        time.sleep(0.005)
    raise AssertionError("the transfer did not start")


def assert_lost_without_reconnecting(sent: Outcome, received: Outcome, target: Path) -> None:
    """Both sides failed with "link lost" (exit 1) and never tried to reconnect; the receiver
    kept the partial file of ``target`` for a later resume (``DELSHARE_RECONNECT_TIMEOUT=0``)."""
    assert sent.returncode == 1 and received.returncode == 1, sent.stderr + received.stderr
    assert "link lost while sending" in sent.stderr
    assert "link lost while receiving" in received.stderr
    for outcome in (sent, received):
        assert "reconnecting" not in outcome.stdout + outcome.stderr
        assert "reconnected:" not in outcome.stdout
    assert temp_paths(target)[0].stat().st_size > 0


def iter_lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())
