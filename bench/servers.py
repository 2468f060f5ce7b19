"""Start the TURN servers under test on loopback: coturn (the reference) and `delshare relay`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import OUT_DIR, Child, NotAvailable, free_port, wait_port

USER, PASSWORD, REALM = "bench", "bench-pass", "bench.test"


@dataclass
class Server:
    """A running TURN server: its child process and its listening port on 127.0.0.1."""

    name: str
    child: Child
    port: int
    note: str = ""

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> None:
        self.child.stop()


def coturn_version() -> str:
    """`turnserver --version`, or raise NotAvailable."""
    exe = shutil.which("turnserver")
    if exe is None:
        raise NotAvailable("coturn's turnserver is not on PATH (apt-get install coturn)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    return (
        (out.stdout or out.stderr).strip().splitlines()[-1] if (out.stdout or out.stderr) else "?"
    )


def start_coturn(tag: str = "coturn") -> Server:
    """coturn on 127.0.0.1 with lt-cred-mech, loopback peers allowed and no quotas."""
    version = coturn_version()
    port = free_port()
    rundir = OUT_DIR / "run" / tag
    rundir.mkdir(parents=True, exist_ok=True)
    argv = [
        "turnserver",
        "-n",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        "--lt-cred-mech",
        f"--user={USER}:{PASSWORD}",
        f"--realm={REALM}",
        "--allow-loopback-peers",
        "--total-quota=0",
        "--user-quota=0",
        "--max-bps=0",
        "--bps-capacity=0",
        "--min-port=20000",
        "--max-port=29999",
        "--stale-nonce=0",
        "--channel-lifetime=600",
        "--permission-lifetime=300",
        "--max-allocate-lifetime=3600",
        f"--pidfile={rundir / 'turnserver.pid'}",
        f"--log-file={rundir / 'turn.log'}",
        "--simple-log",
        "--no-stdout-log",
        "--userdb",
        str(rundir / "turndb"),
    ]
    child = Child(argv, log=rundir / "stdout.log", cwd=rundir)
    try:
        wait_port(port, 10.0, child.proc)
    except NotAvailable:
        tail = child.tail()
        child.stop()
        raise NotAvailable(f"coturn did not start: {tail}") from None
    return Server("coturn", child, port, note=f"coturn {version}")


def delshare_cmd() -> list[str]:
    """The `delshare` console script next to this interpreter (no pyenv shim in the timing)."""
    exe = Path(sys.executable).parent / "delshare"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from delshare.cli.main import main; main()"]


def _relay_help() -> str:
    """`delshare relay --help`, or raise NotAvailable while the command is not built."""
    try:
        out = subprocess.run(
            [*delshare_cmd(), "relay", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotAvailable(f"delshare relay: {exc}") from None
    if out.returncode != 0:
        raise NotAvailable("`delshare relay` is not available yet")
    return out.stdout


# Optional relay flags we pass when the command knows them (generous quotas for the bench).
_GENEROUS = {
    "--max-allocations": "100000",
    "--max-allocations-per-user": "100000",
    "--max-allocations-per-ip": "100000",
    "--max-request-rate": "0",
    "--max-connections-per-allocation": "1000",
    "--max-pending-connections": "10000",
    "--relay-ip": "127.0.0.1",
    "--min-port": "30000",
    "--max-port": "39999",
}


def start_delshare_relay(
    tag: str = "delshare", rendezvous_port: int | None = None, extra: Sequence[str] = ()
) -> Server:
    """`delshare relay` on 127.0.0.1 allowing loopback peers (``--allow-peer 127.0.0.0/8``);
    ``extra`` flags go last (e.g. ``--workers 2``)."""
    known = set(re.findall(r"--[a-z0-9-]+", _relay_help()))
    port = free_port()
    rundir = OUT_DIR / "run" / tag
    argv = [
        *delshare_cmd(),
        "relay",
        "--listen",
        f"127.0.0.1:{port}",
        "--user",
        f"{USER}:{PASSWORD}",
        "--realm",
        REALM,
        "--allow-peer",
        "127.0.0.0/8",
    ]
    for flag, value in _GENEROUS.items():
        if flag in known:
            argv += [flag, value]
    if rendezvous_port is not None:
        argv += ["--rendezvous-listen", f"127.0.0.1:{rendezvous_port}"]
    elif "--no-rendezvous" in known:
        argv += ["--no-rendezvous"]
    argv += extra
    child = Child(argv, log=rundir / "stdout.log")
    try:
        wait_port(port, 20.0, child.proc)
        if rendezvous_port is not None:
            wait_port(rendezvous_port, 20.0, child.proc)
    except NotAvailable:
        tail = child.tail()
        child.stop()
        raise NotAvailable(f"delshare relay did not start: {tail}") from None
    return Server("delshare", child, port, note=_uvloop_note())


def _uvloop_note() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "uvloop not installed"
    return "uvloop installed"


def relay_log(server: Server) -> Path:
    return server.child.log
