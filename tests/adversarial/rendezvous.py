"""What the rendezvous attacks share: a real ``delshare relay --no-turn``, hostile raw clients
from chosen loopback source addresses, its RSS and metrics, and a real send/receive pair.

The whole 127.0.0.0/8 is loopback on Linux, so "another client" is another source address
(127.0.0.2, 127.0.0.3, ...) while the honest pair stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.app.harness import (
    RelayProcess,
    env_for,
    finish,
    sha256_file,
    start,
    start_relay_process,
    stop,
)
from tests.support.metrics import scrape
from tests.support.ports import free_port

ATTACKER = "127.0.0.2"
WAIT = 10.0  # bound on any one wait for the server


@dataclass
class Rendezvous:
    """A running rendezvous-only relay and its metrics endpoint."""

    relay: RelayProcess
    metrics_port: int

    @property
    def url(self) -> str:
        return self.relay.rendezvous

    @property
    def pid(self) -> int:
        return self.relay.process.pid

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Resident set size of the relay process, KiB (``VmHWM``: its peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field}")

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics (0 when absent)."""
        wanted = f"{name}{{{labels}}}" if labels else name
        return scrape(self.metrics_port, WAIT).get(wanted, 0.0)

    def alive(self) -> bool:
        return self.relay.process.poll() is None


@contextlib.contextmanager
def rendezvous(workdir: Path, *flags: str, redis_url: str | None = None) -> Iterator[Rendezvous]:
    """``delshare relay --no-turn`` with ``flags`` and metrics on a free port; stopped at exit."""
    metrics_port = free_port("tcp")
    extra = [*flags, "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    if redis_url is not None:
        extra += ["--rendezvous-redis", redis_url]
    relay = start_relay_process(workdir, turn=False, extra=extra)
    try:
        yield Rendezvous(relay, metrics_port)
    finally:
        stop(relay.process)


async def raw(url: str, source: str = ATTACKER) -> ClientConnection:
    """A WebSocket connection to the rendezvous from loopback address ``source``."""
    return await connect(url, proxy=None, open_timeout=WAIT, local_addr=(source, 0))


# The attacker writes the wire's JSON itself (docs/operations.md, pairing/wire.py), as a hostile
# client would, so that these tests run unchanged against older servers.
def open_frame(nameplate: str, side: str | None = None) -> str:
    fields = {"type": "open", "nameplate": nameplate}
    return json.dumps(fields if side is None else {**fields, "side": side})


def allocate_frame() -> str:
    return json.dumps({"type": "allocate"})


def add_frame(body: str) -> str:
    return json.dumps({"type": "add", "body": body})


async def reply(connection: ClientConnection, wait: float) -> dict[str, Any] | None:
    """The server's next frame (a JSON object) within ``wait`` s; None if none came."""
    try:
        answer = json.loads(await asyncio.wait_for(connection.recv(), wait))
    except (TimeoutError, ConnectionClosed):
        return None
    assert isinstance(answer, dict)
    return answer


@dataclass
class Held:
    """What a batch of hostile requests got: connections still held, and refusals by text."""

    connections: list[ClientConnection]
    refusals: list[str]
    failed_connects: int = 0


async def hold_mailboxes(
    url: str, frames: Sequence[str], sources: Sequence[str], wait: float = 1.0
) -> Held:
    """Send each frame on its own connection (sources in turn); keep the ones not refused."""
    held = Held([], [])

    async def one(index: int, frame: str) -> None:
        try:
            connection = await raw(url, sources[index % len(sources)])
        except (OSError, InvalidHandshake, TimeoutError):
            held.failed_connects += 1
            return
        with contextlib.suppress(ConnectionClosed):
            await connection.send(frame)
        answer = await reply(connection, wait)
        if answer is not None and answer.get("type") == "error":
            held.refusals.append(str(answer.get("reason")))
            await connection.close()
        elif connection.close_code is not None:
            held.refusals.append(f"closed {connection.close_code}")
        else:
            held.connections.append(connection)

    await _bounded_gather([one(i, f) for i, f in enumerate(frames)])
    return held


async def _bounded_gather(jobs: list[Any], parallel: int = 64) -> None:
    gate = asyncio.Semaphore(parallel)

    async def run(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(job) for job in jobs))


async def release(held: Held) -> None:
    await asyncio.gather(*(c.close() for c in held.connections), return_exceptions=True)


@asynccontextmanager
async def holding(held: Held) -> AsyncIterator[Held]:
    try:
        yield held
    finally:
        await release(held)


def real_pair(workdir: Path, url: str, size: int = 64 * 1024) -> tuple[int, float]:
    """A real ``delshare send`` (server-allocated code) and ``delshare receive`` on 127.0.0.1.

    Returns (receiver exit code, seconds); AssertionError with both outputs if they fail.
    """
    source = workdir / f"honest-{time.monotonic_ns()}.bin"
    source.write_bytes(os.urandom(size))
    out = workdir / f"out-{time.monotonic_ns()}"
    out.mkdir()
    env = env_for(url)
    begin = time.monotonic()
    sender = start(["send", str(source), "--direct-only"], env)
    try:
        code = read_code(sender)
        received = finish(start(["receive", code, "-o", str(out), "--yes", "--direct-only"], env))
    finally:
        sent = finish(sender, 30.0)
    elapsed = time.monotonic() - begin
    assert received.returncode == 0 and sent.returncode == 0, sent.stderr + received.stderr
    assert sha256_file(out / source.name) == sha256_file(source)
    return received.returncode, elapsed


def read_code(sender: subprocess.Popen[str]) -> str:
    assert sender.stdout is not None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        line = sender.stdout.readline()
        if not line:
            break
        if line.startswith("code: "):
            return line.removeprefix("code: ").strip()
    sender.kill()
    _out, err = sender.communicate()
    raise AssertionError(f"the sender printed no code: {err}")


def sources(count: int) -> list[str]:
    """``count`` distinct attacker source addresses 127.0.1.x, 127.0.2.x, ..."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


__all__ = [
    "ATTACKER",
    "WAIT",
    "Held",
    "Rendezvous",
    "add_frame",
    "allocate_frame",
    "hold_mailboxes",
    "holding",
    "open_frame",
    "raw",
    "real_pair",
    "release",
    "rendezvous",
    "reply",
    "sources",
]
