"""The console-script entry point: a finished command leaves at once, output and code intact."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, threading
from delshare.cli.main import Finished, _leave_now
release = threading.Event()
if sys.argv[1] == "worker":
    threading.Thread(target=release.wait, args=(5.0,)).start()
sys.stdout.write("line\\n" * 5000)  # more than a pipe's stdio buffer holds
try:
    _leave_now(Finished(3))
finally:
    release.set()
print("fell through")
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=30
    )


def test_finished_leaves_with_its_code_and_flushed_output() -> None:
    done = run("alone")
    assert done.returncode == 3
    assert done.stdout == "line\n" * 5000


def test_finished_waits_for_a_running_worker_thread() -> None:
    done = run("worker")
    assert done.returncode == 0
    assert done.stdout.endswith("line\nfell through\n")
