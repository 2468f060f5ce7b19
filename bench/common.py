"""Shared pieces of the benchmarks: results, free ports, child processes, /proc accounting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
GiB = 1 << 30


class NotAvailable(Exception):
    """A piece needed by a case is missing (not built yet, not installed); the row says so."""


@dataclass
class Row:
    """One line of the result table: a case, a variant, one metric over repetitions."""

    case: str
    variant: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    higher_is_better: bool = True

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def extra_median(self, key: str) -> float | None:
        vals = self.extra.get(key, [])
        return statistics.median(vals) if vals else None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just gave us on 127.0.0.1 (released again; racy but fine on loopback)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP on 127.0.0.1:port (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NotAvailable(f"process exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise NotAvailable(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def host_busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many cores were busy on average between two ``host_cpu()`` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / max(total, 1)


def scrape_metrics(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> dict[str, float]:
    """The Prometheus ``/metrics`` samples at ``host:port`` as {name with its labels: value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def cpu_seconds(pid: int, user_only: bool = False) -> float:
    """utime + stime of a process (and its reaped children), from /proc/PID/stat; with
    ``user_only``, its utime alone (user space, not the kernel)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11 : 12 if user_only else 15]) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_pids(pid: int) -> list[int]:
    """The process and its descendants (servers may fork workers)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 256:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        todo.extend(int(k) for k in kids)
    return out


def tree_cpu(pid: int, user_only: bool = False) -> float:
    """CPU seconds of a process tree (children still alive included); ``cpu_seconds``."""
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p, user_only)
    return total


def tree_rss(pid: int) -> int:
    """Summed VmRSS (KiB) of a process tree."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += rss_kib(p)
    return total


class Child:
    """A subprocess we started; stopped by its PID only (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = log.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def rss(self) -> int:
        return tree_rss(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM our child (and its session: the group id is its own PID), then SIGKILL."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._logf.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fmt(value: float | None, unit: str = "") -> str:
    """A number for the table, three significant digits."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"
