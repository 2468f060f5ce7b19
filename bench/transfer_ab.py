"""A/B of two source trees on the transfer hot path: CPU per GiB of each side, interleaved.

Run: ``python -m bench.transfer_ab SRC_A SRC_B [--rounds N] [--mib N]`` where SRC_A and SRC_B are
``src`` folders (e.g. this worktree's ``src`` and a copy with one change). Each round runs
``bench.transfer_micro``'s DEL copy (handshake, ``send_files`` / ``receive_files``, sender and
receiver in separate processes, on uvloop) once with A's code and once with B's, each in a fresh
interpreter, so load drift on a shared machine hits both alike. No start-up, no pairing: only
the streaming work. Prints each run and the median CPU-seconds per GiB of each side per tree;
compare those, not the rates (the machine's load is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import GiB, MiB
from bench.transfer_cases import RX_DIR, test_file

REPO = Path(__file__).resolve().parents[1]
_CHILD = """
import json, sys, uvloop
from pathlib import Path
import bench.transfer_micro as micro
micro._run = uvloop.run
source, out = Path(sys.argv[1]), Path(sys.argv[2])
run = micro.del_copy(source, out)
(out / source.name).unlink()
print(json.dumps({"rate": run.rate, "recv": run.receiver_cpu, "send": run.sender_cpu}))
"""


def one(tree: Path, source: Path) -> dict[str, float]:
    """One DEL copy of ``source`` with the code of ``tree``: rate and CPU-s of each side."""
    out = RX_DIR / "ab"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr[-1500:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trees", nargs=2, type=Path, help="two src folders: A and B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    source = test_file(args.mib * MiB)
    scale = GiB / source.stat().st_size
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for name, tree in zip("AB", args.trees, strict=True):
            run = one(tree.resolve(), source)
            results[name].append(run)
            print(
                f"{name} {run['rate'] / 1e6:5.0f} MB/s  recv {run['recv'] * scale:.3f}  "
                f"send {run['send'] * scale:.3f} CPU-s per GiB",
                flush=True,
            )
    print(f"median CPU-s per GiB (load {os.getloadavg()[0]:.2f}):")
    for name, runs in results.items():
        receive = statistics.median(r["recv"] for r in runs) * scale
        send = statistics.median(r["send"] for r in runs) * scale
        print(f"  {name}: recv {receive:.3f}  send {send:.3f}  total {receive + send:.3f}")


if __name__ == "__main__":
    main()
