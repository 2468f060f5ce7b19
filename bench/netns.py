"""Run the benchmark inside a private network namespace with only ``lo`` up.

Workplace rule: benchmarks send traffic only to loopback. Our commands can be pinned to 127.0.0.1
(``DELSHARE_HOST_ADDRESSES``), but magic-wormhole advertises every interface address as a direct
hint, so its "direct" path would dial the host's own eth0 address. Inside a fresh namespace
loopback is the only interface there is. The bench re-executes itself under ``unshare --net``
before it starts any thread (a namespace switch affects only the calling thread). Needs root (CI
and this VM run as root); without it, wormhole's direct rows are skipped, not run on the host.
"""

from __future__ import annotations

import os
import shutil
import sys

FLAG = "DELSHARE_BENCH_NETNS"


def reexec_in_private_network(argv: list[str]) -> None:
    """Replace this process by the same bench inside a new network namespace (if possible)."""
    if os.environ.get(FLAG) or sys.platform != "linux" or os.geteuid() != 0:
        return
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return
    os.environ[FLAG] = "1"
    sys.stdout.flush()
    script = 'ip link set lo up && exec "$@"'
    command = [sys.executable, "-m", "bench", *argv]
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", script, "sh", *command])


def is_private() -> bool:
    """Whether this process runs in the bench's private network namespace."""
    return bool(os.environ.get(FLAG))


def describe() -> str:
    """One line for the report."""
    if is_private():
        return "private network namespace, loopback only"
    return "host network (needs root and unshare): wormhole direct is skipped"
