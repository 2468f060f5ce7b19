"""magic-wormhole, its mailbox server and transit relay, from PyPI in bench/.venv-wormhole.

``ensure_venv()`` creates the venv and pip-installs the three packages on first use (a full run
does this; the smoke test never does). The servers run as twistd plugins on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.common import BENCH_DIR, OUT_DIR, Child, NotAvailable, free_port, wait_port

VENV = BENCH_DIR / ".venv-wormhole"
BIN = VENV / "bin"
PACKAGES = ["magic-wormhole", "magic-wormhole-mailbox-server", "magic-wormhole-transit-relay"]


def venv_ready() -> bool:
    return (BIN / "wormhole").exists() and (BIN / "twist").exists()


def ensure_venv(install: bool) -> str:
    """The installed magic-wormhole version; installs it first when ``install`` is set."""
    if not venv_ready():
        if not install:
            raise NotAvailable(f"no {VENV.name} (run `python -m bench setup` or a full run)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        subprocess.run([str(BIN / "pip"), "install", "-q", *PACKAGES], check=True, timeout=900)
    out = subprocess.run(
        [str(BIN / "wormhole"), "--version"], capture_output=True, text=True, timeout=60
    )
    return (out.stdout or out.stderr).strip()


@dataclass
class WormholeServers:
    mailbox_port: int
    transit_port: int


def wormhole_cmd(servers: WormholeServers) -> list[str]:
    return [
        str(BIN / "wormhole"),
        "--relay-url",
        f"ws://127.0.0.1:{servers.mailbox_port}/v1",
        "--transit-helper",
        f"tcp:127.0.0.1:{servers.transit_port}",
    ]


@contextmanager
def start_wormhole_servers() -> Iterator[WormholeServers]:
    """The mailbox (rendezvous) server and the transit relay on loopback; stopped by PID."""
    if not venv_ready():
        raise NotAvailable(f"no {VENV.name} (run `python -m bench setup` or a full run)")
    rundir = OUT_DIR / "run" / "wormhole"
    rundir.mkdir(parents=True, exist_ok=True)
    ports = WormholeServers(free_port(), free_port())
    mailbox = Child(
        [
            str(BIN / "twist"),
            "wormhole-mailbox",
            f"--port=tcp:{ports.mailbox_port}:interface=127.0.0.1",
            f"--channel-db={rundir / 'relay.sqlite'}",
        ],
        log=rundir / "mailbox.log",
        cwd=rundir,
    )
    transit = Child(
        [
            str(BIN / "twist"),
            "transitrelay",
            f"--port=tcp:{ports.transit_port}:interface=127.0.0.1",
        ],
        log=rundir / "transit.log",
        cwd=rundir,
    )
    try:
        wait_port(ports.mailbox_port, 30.0, mailbox.proc)
        wait_port(ports.transit_port, 30.0, transit.proc)
        yield ports
    finally:
        transit.stop()
        mailbox.stop()
