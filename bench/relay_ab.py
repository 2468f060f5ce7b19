"""A/B of two versions of our relay against coturn in one run, with the bench's own cases 3-4.

Run: ``git archive main src | tar -x -C /tmp/base`` then
``PYTHONPATH=$PWD/src python -m bench.relay_ab --base-src /tmp/base/src allocs|udp [--reps N]``.
Repetition k of coturn, ``ours`` (this tree) and ``base`` (``delshare relay`` started with
``--base-src`` first on its PYTHONPATH) runs before repetition k+1 of any, exactly as
``python -m bench`` runs its variants (``bench.relay_cases._alloc_rate_once`` / ``_udp_once``,
same client, same load generator); the client side always runs this tree. Prints per variant
the median rate and the server's CPU per allocation or per datagram received by the peer:
on a shared machine, compare the CPU figures rather than the rates.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from functools import partial

from bench.common import Row
from bench.config import FULL
from bench.relay_cases import _alloc_rate_once, _udp_once
from bench.servers import Server, start_coturn, start_delshare_relay


def _ours_from(path: str) -> Callable[[], Server]:
    def start() -> Server:
        saved = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, saved) if p)
        try:
            return start_delshare_relay()
        finally:
            os.environ["PYTHONPATH"] = saved

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case", choices=("allocs", "udp"))
    parser.add_argument("--base-src", required=True, help="the src/ directory of the base tree")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    variants = [
        ("coturn", start_coturn),
        ("ours", start_delshare_relay),
        ("base", _ours_from(os.path.abspath(args.base_src))),
    ]
    rows = {name: Row(args.case, name, "", "") for name, _ in variants}
    once = partial(_alloc_rate_once if args.case == "allocs" else _udp_once, cfg=FULL)
    for _ in range(args.reps):
        for name, start in variants:
            server = start()
            try:
                once(server, rows[name])
            finally:
                server.stop()
    for name, row in rows.items():
        rate = statistics.median(row.values)
        if args.case == "allocs":
            cpu = statistics.median(row.extra["server_cpu_ms_per_alloc"])
            print(f"{name:7} {rate:8.0f} allocs/s  {cpu:.3f} ms server CPU per allocation")
        else:
            # CPU over the flood / datagrams the peer got (kpps x the flood's ~seconds)
            pairs = zip(row.extra["server_cpu_s"], row.values, strict=True)
            per = statistics.median(c / (v * FULL.udp_seconds) * 1e3 for c, v in pairs)
            print(f"{name:7} {rate:8.1f} kpps      {per:.2f} us server CPU per datagram")
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
