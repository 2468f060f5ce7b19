"""``python -m bench [all|stream|many|allocs|udp|transfer|ttfb|workers|setup] [--quick]``.

Runs ours and the reference in the same run, prints a Markdown table of medians and ratios plus
the targets of issue 6, and writes bench/out/results-<time>.json (and results-latest.json).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace

from bench import netns, profile, relay_cases, transfer_cases, workers_case
from bench.common import OUT_DIR, NotAvailable, Row
from bench.config import FULL, QUICK, Config
from bench.report import dump, machine, table, targets_table
from bench.servers import coturn_version
from bench.turnclients import backend
from bench.wormhole import ensure_venv

Case = Callable[[Config], list[Row]]
CASES: dict[str, list[Case]] = {
    "stream": [relay_cases.case1],
    "many": [relay_cases.case2],
    "allocs": [relay_cases.case3],
    "udp": [relay_cases.case4],
    "transfer": [transfer_cases.case5],
    "ttfb": [transfer_cases.case6],
    "workers": [workers_case.case7],
}
CASES["all"] = [
    c
    for key in ("stream", "many", "allocs", "udp", "transfer", "ttfb", "workers")
    for c in CASES[key]
]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quick",
        action="store_true",
        default=argparse.SUPPRESS,
        help="smoke mode: tiny sizes, one repetition, a few seconds",
    )
    common.add_argument(
        "--reps",
        type=int,
        default=argparse.SUPPRESS,
        help="repetitions per measurement (default 3, quick 1)",
    )
    common.add_argument(
        "--profile",
        action="store_true",
        default=argparse.SUPPRESS,
        help="py-spy profiles of our server and commands into bench/out/profiles/ "
        "(wall times of profiled transfers include py-spy)",
    )
    common.add_argument(
        "--no-install",
        action="store_true",
        default=argparse.SUPPRESS,
        help="never pip-install magic-wormhole (quick mode never does)",
    )
    parser = argparse.ArgumentParser(prog="python -m bench", parents=[common], description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    for name in [*CASES, "setup"]:
        sub.add_parser(name, parents=[common])
    return parser


def _meta(cfg: Config, argv: list[str], install: bool) -> dict[str, str]:
    meta = machine()
    meta["command"] = "python -m bench " + " ".join(argv)
    meta["mode"] = "quick" if cfg.quick else "full"
    meta["reps"] = str(cfg.reps)
    for key, probe in (("coturn", coturn_version), ("wormhole", lambda: ensure_venv(install))):
        try:
            meta[key] = probe()
        except (NotAvailable, OSError) as exc:
            meta[key] = f"not available ({exc})"
    meta["turn client"] = backend().name
    return meta


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    quick = getattr(args, "quick", False)
    cfg = QUICK if quick else FULL
    if getattr(args, "reps", None):
        cfg = replace(cfg, reps=args.reps, transfer_reps=args.reps, ttfb_reps=args.reps)
    install = not quick and not getattr(args, "no_install", False)
    if args.what == "setup":
        print(ensure_venv(install=True))
        return 0
    if install:  # pip needs the network: install before leaving it
        try:
            ensure_venv(install=True)
        except Exception as exc:  # the wormhole rows will say why
            print(f"# wormhole install failed: {exc}", flush=True)
    netns.reexec_in_private_network(argv)
    meta = _meta(cfg, argv, install)
    meta["network"] = netns.describe()
    if getattr(args, "profile", False):
        meta["profile"] = "py-spy" if profile.enable() else "py-spy not installed: no profiles"
    for key, value in meta.items():
        print(f"# {key}: {value}", flush=True)
    rows: list[Row] = []
    started, wall_start = time.monotonic(), time.time()
    for case in CASES[args.what]:
        t0 = time.monotonic()
        try:
            rows += case(cfg)
        except Exception:  # a bench bug must not hide the other cases' numbers
            traceback.print_exc()
            print(f"# {case.__name__} crashed; its rows are missing", flush=True)
        print(
            f"# {case.__doc__.splitlines()[0] if case.__doc__ else case.__name__} "
            f"({time.monotonic() - t0:.1f} s)",
            flush=True,
        )
    meta["seconds"] = f"{time.monotonic() - started:.1f}"
    print()
    print(table(rows))
    print()
    print(targets_table(rows))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"results-{stamp}.json", "results-latest.json"):
        dump(OUT_DIR / name, rows, meta)
    profile.detach_all()
    for path in profile.outputs_since(wall_start):
        print("\n" + profile.summary(path))
    print(f"\n# json: {OUT_DIR / f'results-{stamp}.json'}  ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
