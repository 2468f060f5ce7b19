"""Interface addresses from libc ``getifaddrs``: found without spawning anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
spawned = []
SPAWNING = ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork")
sys.addaudithook(lambda event, args: spawned.append(event) if event in SPAWNING else None)
from delshare.link.candidates import host_addresses
print(json.dumps({"addresses": host_addresses(), "spawned": spawned}))
"""


def test_host_addresses_come_from_getifaddrs_without_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DELSHARE_HOST_ADDRESSES"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert "127.0.0.1" in found["addresses"]
    assert found["spawned"] == []  # ctypes.util.find_library would run ldconfig
