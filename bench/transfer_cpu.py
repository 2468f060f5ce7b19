"""CPU per GiB of each process in case 5 (direct and relayed), robust on a loaded machine.

Run: ``python -m bench.transfer_cpu [--mib N] [--reps N] [--tool T] [--paths direct relay]
[--streaming]``.

Wall-clock rates swing 2x with whatever else runs on a shared VM; the CPU a process spends per
byte does not (much). This runs ``delshare send`` / ``receive`` exactly as case 5 does (``--direct-
only``, or ``--relay-only`` through ``delshare relay``) and reports, per variant, the user and
system CPU seconds per GiB of the sender, the receiver (each from ``wait4``'s rusage) and the
relay (``/proc/PID/stat`` delta), and their total. ``--streaming`` also runs a 1 MiB pair before
each transfer and subtracts it per side: the start-up (~0.19 CPU-s per command) would otherwise
count twice per GiB in a 512 MiB run. ``--tool strace`` runs each command under
``strace -c -f`` (syscall counts; strace slows the commands, so CPU figures from such a run are
not comparable, counts are), ``--tool perf`` under ``perf record -e cpu-clock -g``,
``--tool py-spy`` under ``py-spy record --threads`` (raw stacks); their outputs go to
bench/out/cpu/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import GiB, MiB, cpu_seconds, free_port
from bench.servers import Server, delshare_cmd, start_delshare_relay
from bench.transfer_cases import (
    RX_DIR,
    _fresh_code,
    _received_ok,
    byte_compile_ours,
    ours_args,
    test_file,
)

TOOL_DIR = RX_DIR.parent / "cpu"


@dataclass
class Usage:
    """CPU seconds (user, system) of one process."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system


def _run(argv: list[str], cwd: Path | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _wrap(tool: str, name: str, argv: list[str]) -> list[str]:
    TOOL_DIR.mkdir(parents=True, exist_ok=True)
    if tool == "strace":
        return ["strace", "-c", "-f", "-o", str(TOOL_DIR / f"{name}.strace.txt"), *argv]
    if tool == "py-spy":
        out = str(TOOL_DIR / f"{name}.py-spy.txt")
        return ["py-spy", "record", "--format", "raw", "--rate", "500", "--threads",
                "--output", out, "--", *argv]  # fmt: skip
    out = str(TOOL_DIR / f"{name}.perf.data")
    return ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-o", out, "--", *argv]


def one(
    relayed: bool, src: Path, server: Server, rendezvous: int, tool: str | None, tag: str
) -> dict[str, Usage]:
    """One transfer; CPU of the sender and the receiver (and nothing else)."""
    code = _fresh_code()
    name = "relay" if relayed else "direct"
    out = RX_DIR / f"cpu-{name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    common = ours_args(server, rendezvous, relayed)
    send = [*delshare_cmd(), "send", "--code", code, *common, str(src)]
    recv = [*delshare_cmd(), "receive", "--yes", "--output", str(out), *common, code]
    if tool is not None:
        send = _wrap(tool, f"{tag}-{name}-send", send)
        recv = _wrap(tool, f"{tag}-{name}-recv", recv)
    env = {**os.environ, "DELSHARE_HOST_ADDRESSES": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    procs = {"send": _run(send, None, env), "recv": _run(recv, out, env)}
    usage: dict[str, Usage] = {}
    pending = {p.pid: k for k, p in procs.items()}
    while pending:
        pid, status, ru = os.wait4(-1, 0)
        key = pending.pop(pid, None)
        if key is None:
            continue
        procs[key].returncode = os.waitstatus_to_exitcode(status)
        usage[key] = Usage(ru.ru_utime, ru.ru_stime)
    for key, proc in procs.items():
        if proc.returncode:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"{key} failed ({proc.returncode}): {err[-500:]}")
    ok, why = _received_ok(src, out)
    if not ok:
        raise SystemExit(f"{name}: {why}")
    shutil.rmtree(out, ignore_errors=True)
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tool", choices=["strace", "perf", "py-spy"])
    parser.add_argument("--paths", nargs="+", default=["direct", "relay"])
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="also run a 1 MiB pair before each transfer and print the CPU per GiB without it "
        "(start-up, pairing and the race), i.e. what streaming the file costs each side",
    )
    args = parser.parse_args()
    src = test_file(args.mib * MiB)
    tiny = test_file(MiB) if args.streaming else None
    byte_compile_ours()
    rendezvous = free_port()
    server = start_delshare_relay("delshare-cpu", rendezvous_port=rendezvous)
    scale = GiB / src.stat().st_size
    results: dict[str, list[dict[str, Usage]]] = {p: [] for p in args.paths}
    streaming: dict[str, list[dict[str, float]]] = {p: [] for p in args.paths}
    try:
        for rep in range(args.reps):
            for path in args.paths:
                fixed = None
                if tiny is not None:
                    fixed = one(path == "relay", tiny, server, rendezvous, None, f"r{rep}-fixed")
                relay0 = cpu_seconds(server.child.pid)
                usage = one(path == "relay", src, server, rendezvous, args.tool, f"r{rep}")
                relay_cpu = cpu_seconds(server.child.pid) - relay0
                usage["relay"] = Usage(relay_cpu, 0.0)
                results[path].append(usage)
                line = "  ".join(
                    f"{k} {u.user * scale:.3f}u+{u.system * scale:.3f}s" for k, u in usage.items()
                )
                print(f"rep {rep} {path:6}: {line}  (CPU-s per GiB)", flush=True)
                if fixed is not None:
                    # the 1 MiB pair is all fixed cost; what is left of the big one is the stream
                    left = {k: (usage[k].total - fixed[k].total) * scale for k in fixed}
                    streaming[path].append(left)
                    line = "  ".join(f"{k} {left[k]:.3f}" for k in ("send", "recv"))
                    print(f"rep {rep} {path:6}: streaming only: {line}", flush=True)
    finally:
        server.stop()
    print("\nmedian CPU-s per GiB (user+sys):")
    for path, runs in results.items():
        parts = []
        for key in ("send", "recv", "relay"):
            parts.append(f"{key} {statistics.median(r[key].total for r in runs) * scale:.3f}")
        total = statistics.median(sum(u.total for u in r.values()) for r in runs) * scale
        print(f"  {path:6}: {'  '.join(parts)}  total {total:.3f}")
    for path, lefts in streaming.items():
        if lefts:
            send = statistics.median(x["send"] for x in lefts)
            recv = statistics.median(x["recv"] for x in lefts)
            total = send + recv
            print(f"  {path:6} streaming only: send {send:.3f}  recv {recv:.3f}  total {total:.3f}")
    if args.tool:
        print(f"\n{args.tool} outputs in {TOOL_DIR}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
