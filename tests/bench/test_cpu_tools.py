"""Smoke tests of the CPU-per-byte tools of issue 15 (``bench.udp_cpu``, ``bench.transfer_cpu``).

No timing asserts: they only must run to the end and print a figure for every line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_udp_cpu_prints_every_figure() -> None:
    out = _run("bench.udp_cpu", "--rounds", "1")
    for name in ("relay", "relay without send", "read loop only", "bare loop"):
        assert re.search(rf"^{name} +\d+\.\d\d us CPU per datagram$", out, re.M), out


@pytest.mark.timeout(300)
def test_transfer_cpu_prints_both_paths() -> None:
    out = _run("bench.transfer_cpu", "--mib", "1", "--reps", "1", "--streaming")
    for path in ("direct", "relay"):
        assert re.search(rf"^  {path} *: send [\d.]+  recv [\d.]+  relay [\d.]+  total", out, re.M)
        streaming = rf"^  {path} *streaming only: send -?[\d.]+  recv -?[\d.]+  total"
        assert re.search(streaming, out, re.M), out


def test_transfer_floor_prints_disk_and_both_sides() -> None:
    out = _run("bench.transfer_floor", "--mib", "8", "--reps", "1")
    assert re.search(r"^disk alone: \d+ MB/s \([\d.]+ s per GiB\)$", out, re.M), out
    assert re.search(r"^median CPU-s per GiB: recv [\d.]+  send [\d.]+  total", out, re.M), out


@pytest.mark.timeout(300)
def test_transfer_ab_prints_both_trees() -> None:
    src = str(REPO / "src")
    out = _run("bench.transfer_ab", src, src, "--rounds", "1", "--mib", "4")
    for tree in "AB":
        assert re.search(rf"^  {tree}: recv [\d.]+  send [\d.]+  total", out, re.M), out


def test_udp_lookup_prints_the_read_costs_and_every_count() -> None:
    out = _run("bench.udp_lookup", "--counts", "0,20")
    assert re.search(r"recvfrom \+ lookup by sender \d+\.\d+ us, connected recv \d+\.\d+ us", out)
    for count in (0, 20):
        assert re.search(rf"^ +{count} connected sockets on the port: +\d+\.\d+ us", out, re.M), out
