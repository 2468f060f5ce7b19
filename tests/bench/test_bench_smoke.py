"""Smoke test of the benchmarks: ``python -m bench all --quick`` runs and prints every row.

No timing asserts: benchmarks are not tests. This only keeps the bench from rotting: every case
and variant appears in the printed table, and each row carries a number or says why not. The
references that are installed here (plain sockets always; coturn when ``turnserver`` is on
PATH; the Python UDP forwarder always; the C reference relays when a C compiler is on PATH)
must give numbers. magic-wormhole is never installed by the test suite: when
bench/.venv-wormhole is absent its rows only have to say "not available".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import c_relays

pytestmark = pytest.mark.timeout(300)  # the whole quick run happens in the first test's setup

REPO = Path(__file__).resolve().parents[2]
WORMHOLE_READY = (REPO / "bench" / ".venv-wormhole" / "bin" / "wormhole").exists()

EXPECTED = {
    "1": ["plain loopback", "coturn", "ours", "C splice relay"],
    "2": ["plain loopback", "coturn", "ours", "C splice relay"],
    "3": ["coturn", "ours"],
    "4": ["coturn", "ours", "Python forwarder", "C forwarder"],
    "5": [
        "plain socket copy",
        "plain socket copy + fsync",
        "ours direct",
        "ours via TURN relay",
        "wormhole direct",
        "wormhole via transit relay",
    ],
    "6": [
        "ours direct",
        "ours via TURN relay",
        "wormhole direct",
        "wormhole via transit relay",
        "ours startup (send --help)",
        "wormhole startup (send --help)",
    ],
    "7": [
        "ours --workers 1",
        "ours --workers 2",
        "ours --workers 1 allocations",
        "ours --workers 2 allocations",
        "ours --workers 2: RFC 6062 in+out",
    ],
}
TARGETS = 12
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?(e-?\d+)?$")


def _must_have_number(case: str, variant: str) -> bool:
    if variant.startswith("plain"):
        return True
    if variant == "coturn":
        return shutil.which("turnserver") is not None
    if variant == "Python forwarder":
        return True
    if variant.startswith("C "):  # compiled at bench time (bench/c_relays.py)
        return c_relays.compiler() is not None
    return False


@pytest.fixture(scope="module")
def bench_output() -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick", "--no-install"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _rows(output: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0][:1].isdigit():
            rows[(cells[0][:1], cells[1])] = cells
    return rows


def test_every_case_and_variant_is_in_the_table(bench_output: str) -> None:
    rows = _rows(bench_output)
    for case, variants in EXPECTED.items():
        for variant in variants:
            assert (case, variant) in rows, f"case {case} {variant!r} missing:\n{bench_output}"
    assert len(rows) == sum(len(v) for v in EXPECTED.values())


def test_each_row_has_a_number_or_says_why_not(bench_output: str) -> None:
    for (case, variant), cells in _rows(bench_output).items():
        median, count, note = cells[3], cells[5], cells[8]
        if NUMBER.match(median):
            assert int(count) >= 1
            continue
        assert median == "n/a" and note.startswith(("not available", "failed")), cells
        assert not _must_have_number(case, variant), f"reference without a number: {cells}"
        if variant.startswith("wormhole") and not WORMHOLE_READY:
            assert note.startswith("not available"), cells


def test_references_give_numbers(bench_output: str) -> None:
    rows = _rows(bench_output)
    for (case, variant), cells in rows.items():
        if _must_have_number(case, variant):
            assert NUMBER.match(cells[3]), cells
            assert float(cells[3].replace(",", "")) > 0, cells


def test_targets_table_lists_every_target(bench_output: str) -> None:
    lines = [ln for ln in bench_output.splitlines() if re.match(r"^\| [1-6] ", ln)]
    targets = [ln for ln in lines if ln.count("|") == 5]
    assert len(targets) == TARGETS, bench_output
    assert "# json: " in bench_output
