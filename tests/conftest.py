"""Keep the whole test session on loopback (workplace network rules).

The app gathers host candidates from every interface and dials them. So that no test ever sends
a packet to an address outside loopback, the session moves itself into a private network
namespace with only ``lo`` up when it can (root on Linux; CI runs as root). The NAT-lab tests
still build their own namespaces from inside it. Where that is impossible, host candidates are
restricted to loopback through ``DELSHARE_HOST_ADDRESSES``, which the commands read: that
covers CLI subprocesses, not in-process calls of ``app.connect`` (those need the namespace).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

CLONE_NEWNET = 0x40000000


def _enter_private_network_namespace() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or os.environ.get("DELSHARE_TEST_NETNS"):
        return bool(os.environ.get("DELSHARE_TEST_NETNS"))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["DELSHARE_TEST_NETNS"] = "1"  # children are inside it too
    return True


if not _enter_private_network_namespace():
    os.environ["DELSHARE_HOST_ADDRESSES"] = "127.0.0.1,::1"
