"""A ``delshare relay`` subprocess for lifecycle and config tests: start, read its log, signal.

The log goes to a file (a pipe nobody reads would block the relay); ``wait_for`` polls it with a
deadline. ``stop()`` kills what is still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CODE = "from delshare.cli.main import main; main()"
READY_TIMEOUT = 20.0
POLL = 0.05


def relay_command(*args: str) -> list[str]:
    return [sys.executable, "-c", CODE, "relay", *args]


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT, count: int = 1) -> str:
        """The log once ``needle`` appears ``count`` times; AssertionError with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if self.process.poll() is not None:
                break
            time.sleep(POLL)
        raise AssertionError(f"{needle!r} not in the relay log:\n{self.text()[-4000:]}")

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.process.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_relay_process(
    args: Sequence[str], log: Path, ready: str | None = "TURN listening on"
) -> RelayProcess:
    with log.open("wb") as out:
        process = subprocess.Popen(
            relay_command(*args), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    relay = RelayProcess(process, log)
    if ready is not None:
        try:
            relay.wait_for(ready)
        except AssertionError:
            relay.stop()
            raise
    return relay
