"""A hostile peer for the app's adversarial tests: pairs and connects exactly like ``delshare
send`` / ``delshare receive`` (real rendezvous, real record channel on loopback), then speaks
the transfer protocol however the test wants. The other side is the real CLI in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from delshare.app.connect import ConnectOptions, connect_peer
from delshare.link.records import RecordChannel, Role
from delshare.pairing import pair
from tests.app.harness import DELSHARE

T = TypeVar("T")
Script = Callable[[RecordChannel], Awaitable[T]]


async def as_peer(rendezvous: str, code: str, role: Role, script: Script[T]) -> T:
    """Pair with ``code`` as ``role`` ("sender"/"receiver"), connect directly, run ``script``."""
    async with await pair(rendezvous, code, role, timeout=30) as paired:
        connection = await connect_peer(paired, role, ConnectOptions(mode="direct"))
    try:
        return await script(connection.link.channel)
    finally:
        await connection.close()


def start_cli(
    argv: Sequence[str], env: Mapping[str, str], umask: int | None = None
) -> subprocess.Popen[bytes]:
    """``delshare ARGV`` with bytes output (so raw escape bytes can be looked for)."""

    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.Popen(
        [DELSHARE, *argv],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=set_umask,
    )


def finish_cli(process: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Wait (bounded) for the process; (exit code, stdout, stderr)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"{process.args!r} timed out:\n{out!r}\n{err!r}") from None
    return process.returncode, out, err


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
