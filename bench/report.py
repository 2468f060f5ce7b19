"""The result table, ratios against each case's reference, targets, and the JSON dump."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import REPO_DIR, Row, fmt

# (case prefix, variant) -> [(ratio label, reference variant)]
REFS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("1", "coturn"): [("/plain", "plain loopback")],
    ("1", "ours"): [("/coturn", "coturn"), ("/plain", "plain loopback")],
    ("2", "coturn"): [("/plain", "plain loopback")],
    ("2", "ours"): [("/coturn", "coturn"), ("/plain", "plain loopback")],
    ("3", "ours"): [("/coturn", "coturn")],
    ("4", "ours"): [("/coturn", "coturn")],
    # references without TURN (bench/references.py): the ceilings of this machine
    ("1", "C splice relay"): [("/coturn", "coturn"), ("/plain", "plain loopback")],
    ("2", "C splice relay"): [("/coturn", "coturn"), ("/plain", "plain loopback")],
    ("4", "Python forwarder"): [("/coturn", "coturn")],
    ("4", "C forwarder"): [("/coturn", "coturn")],
    ("5", "ours direct"): [("/wormhole", "wormhole direct"), ("/plain", "plain socket copy")],
    ("5", "ours via TURN relay"): [
        ("/wormhole", "wormhole via transit relay"),
        ("/plain", "plain socket copy"),
    ],
    ("5", "wormhole direct"): [("/plain", "plain socket copy")],
    ("5", "wormhole via transit relay"): [("/plain", "plain socket copy")],
    ("6", "ours direct"): [("wormhole/ours", "wormhole direct")],
    ("6", "ours via TURN relay"): [("wormhole/ours", "wormhole via transit relay")],
    ("6", "ours startup (send --help)"): [("wormhole/ours", "wormhole startup (send --help)")],
}


def _find(rows: list[Row], case: str, variant: str) -> Row | None:
    for row in rows:
        if row.case.startswith(case) and row.variant == variant:
            return row
    return None


def ratios(rows: list[Row], row: Row) -> list[tuple[str, float | None]]:
    """Each ratio of this row's median to its references' (inverted for times)."""
    out: list[tuple[str, float | None]] = []
    for label, ref_name in REFS.get((row.case[:1], row.variant), []):
        ref = _find(rows, row.case[:1], ref_name)
        mine, theirs = row.median, ref.median if ref else None
        if mine is None or theirs is None or mine == 0:
            out.append((label, None))
        elif row.higher_is_better:
            out.append((label, mine / theirs))
        else:
            out.append((label, theirs / mine))
    return out


@dataclass
class Target:
    name: str
    wanted: str
    got: float | None
    met: bool | None  # None: could not be measured


def _ratio(rows: list[Row], case: str, variant: str, label: str) -> float | None:
    row = _find(rows, case, variant)
    if row is None:
        return None
    return dict(ratios(rows, row)).get(label)


def _at_least(name: str, got: float | None, bar: float, wanted: str) -> Target:
    return Target(name, wanted, got, None if got is None else got >= bar)


def _at_most(name: str, got: float | None, bar: float, wanted: str) -> Target:
    return Target(name, wanted, got, None if got is None else got <= bar)


def targets(rows: list[Row]) -> list[Target]:
    """The bars of issue 6."""
    out = [
        _at_least("1 ours/coturn", _ratio(rows, "1", "ours", "/coturn"), 5.0, ">= 5x"),
        _at_least("1 ours/plain", _ratio(rows, "1", "ours", "/plain"), 0.7, ">= 0.70"),
    ]
    ours1 = _find(rows, "1", "ours")
    lost = max(ours1.extra.get("lost_bytes", [])) if ours1 and ours1.values else None
    out.append(_at_most("1 ours bytes lost (max)", lost, 0, "0"))
    out.append(_at_least("2 ours/coturn", _ratio(rows, "2", "ours", "/coturn"), 5.0, ">= 5x"))
    ours2, cot2 = _find(rows, "2", "ours"), _find(rows, "2", "coturn")
    rss = None
    if ours2 and cot2:
        a, b = ours2.extra_median("rss_per_stream_KiB"), cot2.extra_median("rss_per_stream_KiB")
        rss = a / b if a is not None and b else None
    out.append(_at_most("2 RSS/stream ours/coturn", rss, 1.0, "<= 1"))
    out.append(_at_least("3 ours/coturn", _ratio(rows, "3", "ours", "/coturn"), 0.5, ">= 0.5x"))
    out.append(_at_least("4 ours/coturn", _ratio(rows, "4", "ours", "/coturn"), 0.5, ">= 0.5x"))
    out += [
        _at_least(
            "5 direct ours/wormhole", _ratio(rows, "5", "ours direct", "/wormhole"), 4.0, ">= 4x"
        ),
        _at_least(
            "5 direct ours/plain", _ratio(rows, "5", "ours direct", "/plain"), 0.6, ">= 0.60"
        ),
        _at_least(
            "5 relay ours/wormhole relay",
            _ratio(rows, "5", "ours via TURN relay", "/wormhole"),
            4.0,
            ">= 4x",
        ),
    ]
    d6, r6 = _find(rows, "6", "ours direct"), _find(rows, "6", "ours via TURN relay")
    out.append(_at_most("6 ours direct (s)", d6.median if d6 else None, 0.3, "< 0.3 s"))
    out.append(_at_most("6 ours relayed (s)", r6.median if r6 else None, 0.6, "< 0.6 s"))
    return out


def _extras(row: Row) -> str:
    parts = []
    for key in row.extra:
        med = row.extra_median(key)
        if key == "crc_ok":
            parts.append(f"crc_ok={sum(row.extra[key]):.0f}/{len(row.extra[key])}")
        else:
            parts.append(f"{key}={fmt(med)}")
    return " ".join(parts)


def table(rows: list[Row]) -> str:
    """Markdown table: one line per case and variant."""
    lines = [
        "| case | variant | workload | median | unit | n | ratios | details | note |",
        "|---|---|---|---:|---|---:|---|---|---|",
    ]
    for row in rows:
        rat = " ".join(
            f"{label} {fmt(v)}x" if v is not None else f"{label} n/a"
            for label, v in ratios(rows, row)
        )
        lines.append(
            f"| {row.case} | {row.variant} | {row.metric} | {fmt(row.median)} | "
            f"{row.unit} | {len(row.values)} | {rat} | {_extras(row)} | "
            f"{row.note.replace('|', '/')[:160]} |"
        )
    return "\n".join(lines)


def targets_table(rows: list[Row]) -> str:
    lines = ["| target | wanted | measured | met |", "|---|---|---:|---|"]
    for t in targets(rows):
        met = "n/a" if t.met is None else ("yes" if t.met else "**no**")
        lines.append(f"| {t.name} | {t.wanted} | {fmt(t.got)} | {met} |")
    return "\n".join(lines)


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        import uvloop

        uv = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        uv = "uvloop not installed"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "uvloop": uv,
        "git": _cmd(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def dump(path: Path, rows: list[Row], meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "rows": [asdict(r) | {"median": r.median, "ratios": dict(ratios(rows, r))} for r in rows],
        "targets": [asdict(t) for t in targets(rows)],
    }
    path.write_text(json.dumps(data, indent=2))
