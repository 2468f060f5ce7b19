"""``DELSHARE_PORTABLE=1`` turns every Linux fast path off (issue 14 item 5), and the transfer
tests pass that way too: this reruns ``tests/transfer`` in a child process with the switch on,
so the portable fallbacks (buffered writes, no preallocation, plain keepalive, path-based mode
and mtime, plain copies in the relay, interface discovery without getifaddrs) run in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

PROBE = """
import os, tempfile
from delshare import portable
from delshare.aio import pipe
from delshare.link.candidates import host_addresses
from delshare.transfer import diskio
with tempfile.TemporaryFile(dir=os.environ["PROBE_DIR"]) as f:
    fd = f.fileno()
    print(portable.PORTABLE, pipe.SPLICE_SUPPORTED, diskio.open_direct(fd),
          diskio.preallocate(fd, 0, 1 << 20), portable.metadata_on_descriptors(),
          "127.0.0.1" in host_addresses())
"""


def _env(portable: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DELSHARE_PORTABLE"}
    return {**env, "DELSHARE_PORTABLE": "1"} if portable else env


def test_the_switch_turns_every_fast_path_off(tmp_path: Path) -> None:
    results = {}
    for portable in (False, True):
        env = {**_env(portable), "PROBE_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        results[portable] = done.stdout.split()
    assert results[True] == ["True", "False", "None", "False", "False", "True"]
    if sys.platform.startswith("linux"):
        assert results[False][:2] == ["False", "True"]  # the fast paths are there to turn off


def test_the_transfer_tests_pass_with_the_fast_paths_off() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(HERE),
         "--ignore", str(Path(__file__))],
        env=_env(True), cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
