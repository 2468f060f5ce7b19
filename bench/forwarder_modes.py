"""Which of ``bench.udp_forwarder``'s two modes is faster here: the case 4 Python reference.

Run: ``python -m bench.forwarder_modes [--reps N] [--seconds S]``. Repetition k of each mode runs
before repetition k+1 of either (case 4's sender and counting peer, a fresh forwarder each
time); printed per mode: kpps at the peer and the forwarder's CPU per datagram that reached the
peer (``/proc/PID/stat``), medians. The bench's row uses ``references.PYTHON_FORWARDER_MODE``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import replace

from bench import references
from bench.common import Row
from bench.config import FULL
from bench.relay_cases import _udp_reference_once

MODES = ("blocking", "add_reader")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=FULL.udp_seconds)
    args = parser.parse_args()
    cfg = replace(FULL, udp_seconds=args.seconds)
    rows = {mode: Row("4", mode, "", "kpps") for mode in MODES}
    for _ in range(args.reps):
        for mode, row in rows.items():
            server = references.start_python_forwarder(mode)
            try:
                _udp_reference_once(server, row, cfg=cfg)
            finally:
                server.stop()
    for mode, row in rows.items():
        per = statistics.median(row.extra["server_us_per_pkt"])
        rate = statistics.median(row.values)
        print(f"{mode:10} {rate:6.0f} kpps  {per:.2f} us forwarder CPU per datagram")
    print("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
