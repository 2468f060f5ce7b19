"""Render a results JSON as the Markdown results section of BENCHMARKS.md.

    python -m bench.markdown [bench/out/results-latest.json] [--write] [--history]

``--write`` replaces the text between the ``results:start`` / ``results:end`` markers of
BENCHMARKS.md; otherwise the section is printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import OUT_DIR, REPO_DIR, fmt

START, END = "<!-- results:start -->", "<!-- results:end -->"
_META_KEYS = [
    ("command", "command"),
    ("date", "date"),
    ("git", "commit"),
    ("nproc", "cores (nproc)"),
    ("cpu", "CPU (/proc/cpuinfo)"),
    ("python", "Python"),
    ("kernel", "kernel"),
    ("uvloop", "uvloop"),
    ("coturn", "coturn"),
    ("wormhole", "magic-wormhole"),
    ("turn client", "TURN client in cases 1-4"),
    ("load average at start", "load average at start"),
    ("seconds", "run time (s)"),
]


def _ratios(row: dict[str, Any]) -> str:
    return " ".join(
        f"{label} {fmt(v)}x" if v is not None else f"{label} n/a"
        for label, v in row["ratios"].items()
    )


def _details(row: dict[str, Any]) -> str:
    parts = []
    for key, vals in row["extra"].items():
        if not vals:
            continue
        if key == "crc_ok":
            parts.append(f"crc ok {sum(vals):.0f}/{len(vals)}")
            continue
        ordered = sorted(vals)
        parts.append(f"{key}={fmt(ordered[len(ordered) // 2])}")
    return ", ".join(parts)


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = ["| | |", "|---|---|"]
    for key, label in _META_KEYS:
        if key in meta:
            value = f"`{meta[key]}`" if key == "command" else meta[key]
            lines.append(f"| {label} | {value} |")
    lines += ["", "| case | variant | workload | median | unit | n | ratio | details | note |",
              "|---|---|---|---:|---|---:|---|---|---|"]  # fmt: skip
    for row in data["rows"]:
        note = row["note"].replace("|", "/")[:200]
        lines.append(
            f"| {row['case']} | {row['variant']} | {row['metric']} | {fmt(row['median'])} | "
            f"{row['unit']} | {len(row['values'])} | {_ratios(row)} | {_details(row)} | {note} |"
        )
    lines += ["", "| target | wanted | measured | met |", "|---|---|---:|---|"]
    for t in data["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['name']} | {t['wanted']} | {fmt(t['got'])} | {met} |")
    return "\n".join(lines)


def history(paths: list[Path]) -> str:
    """Each target's measured value in every full run: how much one run's ratios move."""
    runs = []
    for path in sorted(paths):
        data = json.loads(path.read_text())
        if data["meta"].get("mode") == "full" and data["meta"].get("command", "").endswith(" all"):
            runs.append(data)
    if not runs:
        return ""
    cols = [f"{r['meta']['date'][11:16]} ({r['meta'].get('git', '?')})" for r in runs]
    head = "| target | " + " | ".join(cols) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    for i, target in enumerate(runs[-1]["targets"]):
        cells = []
        for run in runs:
            got = run["targets"][i]["got"] if i < len(run["targets"]) else None
            cells.append(fmt(got))
        lines.append(f"| {target['name']} ({target['wanted']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("--")]
    path = Path(paths[0]) if paths else OUT_DIR / "results-latest.json"
    section = render(json.loads(path.read_text()))
    if "--history" in argv:
        spread = history(list(OUT_DIR.glob("results-2*.json")))
        if spread:
            section += "\n\nThe same targets in every full `python -m bench all` run of the day "
            section += "(UTC start time and commit; other work on the VM and our code "
            section += "changed between runs):\n\n"
            section += spread
    if "--write" not in argv:
        print(section)
        return 0
    doc = REPO_DIR / "BENCHMARKS.md"
    text = doc.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{section}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
