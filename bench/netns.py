"""Run the benchmark inside a private network namespace with only ``lo`` up.

Workplace rule: benchmarks send traffic only to loopback. Our commands can be pinned to 127.0.0.1
(``DELSHARE_HOST_ADDRESSES``), but magic-wormhole advertises every interface address as a direct
hint, so its "direct" path would dial the host's own eth0 address. Inside a fresh namespace
loopback is the only interface there is. Needs root (CI and this VM run as root); without it,
wormhole's direct rows are skipped rather than run on the host network.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

CLONE_NEWNET = 0x40000000
_state = {"private": False}


def enter_private_network() -> str:
    """Move this process (and its future children) into a new network namespace; describe it."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "host network (not root): wormhole direct is skipped"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"host network (unshare failed: errno {ctypes.get_errno()}): wormhole direct skipped"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _state["private"] = True
    return "private network namespace, loopback only"


def is_private() -> bool:
    """Whether ``enter_private_network`` succeeded."""
    return _state["private"]
