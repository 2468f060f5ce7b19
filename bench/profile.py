"""Optional py-spy profiles of our processes (``python -m bench ... --profile``).

Relay cases attach ``py-spy record --pid`` to our server for the whole case; transfer cases run
each ``delshare`` command under ``py-spy record --``. Raw (collapsed) stacks land in
bench/out/profiles/; ``summary`` turns one into the functions with the most samples, by self
time and by inclusive time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.common import OUT_DIR

PROFILE_DIR = OUT_DIR / "profiles"
ENABLED = False
_attached: list[tuple[subprocess.Popen[bytes], Path]] = []


def enable() -> bool:
    """Turn profiling on if py-spy is installed; returns whether it is."""
    global ENABLED
    ENABLED = shutil.which("py-spy") is not None
    return ENABLED


def attach(pid: int, name: str) -> None:
    """Sample a running process until it exits (idle samples excluded)."""
    if not ENABLED:
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    out = PROFILE_DIR / f"{name}.txt"
    argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
            "--rate", "200", "--nonblocking"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _attached.append((proc, out))


def detach_all(timeout: float = 15.0) -> list[Path]:
    """Wait for the samplers (their targets have exited), SIGINT them if they linger."""
    done = []
    for proc, out in _attached:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        done.append(out)
    _attached.clear()
    return done


def outputs_since(start: float) -> list[Path]:
    """Profiles written since ``start`` (a ``time.time()``), oldest first."""
    if not PROFILE_DIR.exists():
        return []
    found = [p for p in PROFILE_DIR.glob("*.txt") if p.stat().st_mtime >= start]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def wrap(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` run under py-spy (with its subprocesses) when profiling, else unchanged."""
    if not ENABLED:
        return list(argv)
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    out = PROFILE_DIR / f"{name}.txt"
    return ["py-spy", "record", "--format", "raw", "--output", str(out), "--rate", "200",
            "--nonblocking", "--", *argv]  # fmt: skip


def summary(path: Path, top: int = 12) -> str:
    """Top functions by self samples and by inclusive samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return f"{path.name}: no samples"
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";") if f]
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"{path.name}: {total} samples"]
    lines += [f"  self {100 * n / max(total, 1):5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += [f"  incl {100 * n / max(total, 1):5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)
