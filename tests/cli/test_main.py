"""The console-script entry point: a finished command leaves at once, output and code intact.

The child adds a command to the real group's table (``COMMANDS``) that writes more than a
pipe's stdio buffer holds and raises ``Finished(3)``, then runs ``main()``; an ``atexit`` hook
shows whether the interpreter's teardown ran (it does not after ``os._exit``)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys, threading
import click
from delshare.cli.main import COMMANDS, Finished, main
release = threading.Event()
atexit.register(lambda: print("teardown ran"))

@click.command("finish-now")
@click.argument("mode")
def finish_now(mode: str) -> None:
    if mode == "worker":
        threading.Thread(target=release.wait, args=(5.0,)).start()
    sys.stdout.write("line\\n" * 5000)
    raise Finished(3)

COMMANDS["finish-now"] = ("__main__", "finish_now")
sys.argv = ["delshare", "finish-now", sys.argv[1]]
try:
    main()
finally:
    release.set()
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=30
    )


def test_finished_leaves_with_its_code_and_flushed_output() -> None:
    done = run("alone")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "line\n" * 5000  # flushed, and no teardown


def test_finished_waits_for_a_running_worker_thread() -> None:
    done = run("worker")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "line\n" * 5000 + "teardown ran\n"  # the normal exit joined it
