"""Start-up cost: ``send``/``receive`` load only what a direct transfer with a code needs.

Imports are most of a tiny transfer's time (benchmark case 6), so the TURN client, the STUN
codec, the rendezvous server and the ticket flow load only when their options are used, and
``rich`` only when a terminal shows progress bars. ``send --help`` and ``receive --help`` load
none of the app: click builds the commands from ``delshare.cli.common`` and ``delshare.app.common``
alone.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NOT_AT_START = (
    "delshare.aio.client",
    "delshare.stun",
    "delshare.turn.uri",
    "delshare.pairing.server",
    "delshare.pairing.mailbox",
    "websockets.asyncio.server",
    "delshare.app.manual",
    "delshare.link.ticket",
    "delshare.pairing.lan",
    "rich",  # only a terminal's progress bars need it
)


def _run_python(code: str, timeout: float = 60) -> str:
    """The stdout of ``python -c code``, which must exit 0."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    return set(json.loads(_run_python(code)))


@pytest.mark.parametrize(
    "module",
    [
        "delshare.api",  # what `send` and `receive` import once their options are checked
        "delshare.api, delshare.cli.send",
        "delshare.api, delshare.cli.receive",
    ],
)
def test_command_module_leaves_optional_parts_unloaded(module: str) -> None:
    loaded = loaded_after_import(module)
    assert "delshare.pairing.client" in loaded  # the check itself sees real imports
    assert sorted(loaded.intersection(NOT_AT_START)) == []


# What `send --help` and `receive --help` (the benchmark's start-up row, and the first thing a
# command does before it runs) must not load: the event loop, the link, crypto, the rendezvous
# client and the PAKE are imported only once the command runs.
NOT_FOR_HELP = (
    "asyncio",
    "uvloop",
    "cryptography",
    "websockets",
    "spake2",
    "rich",
    "delshare.api",
    "delshare.app.connect",
    "delshare.app.send",
    "delshare.app.receive",
    "delshare.link.race",
    "delshare.link.records",
    "delshare.pairing.client",
    "delshare.transfer.protocol",
)

_HELP = """
import json, sys
from delshare.cli.main import cli
try:
    cli([{command!r}, "--help"], prog_name="delshare")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("command", ["send", "receive"])
def test_help_loads_none_of_the_transfer_code(command: str) -> None:
    out = _run_python(_HELP.format(command=command))
    assert f"Usage: delshare {command}" in out  # the help was really printed
    loaded = set(json.loads(out.splitlines()[-1]))
    assert f"delshare.cli.{command}" in loaded
    assert sorted(loaded.intersection(NOT_FOR_HELP)) == []


def test_server_side_names_still_import_from_the_package() -> None:
    from delshare.pairing import MailboxTable, RendezvousServer, serve_rendezvous

    assert MailboxTable.__module__ == "delshare.pairing.mailbox"
    assert RendezvousServer.__module__ == "delshare.pairing.server"
    assert serve_rendezvous.__module__ == "delshare.pairing.server"
    with pytest.raises(AttributeError):
        _ = __import__("delshare.pairing").pairing.no_such_name


_GC_WATCH = """
import atexit, gc, json, sys
from delshare.cli.main import main
collections = []
gc.callbacks.append(lambda phase, info: collections.append(phase) if phase == "start" else None)
atexit.register(lambda: print(json.dumps(
    {{"collections": len(collections), "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}
)))
sys.argv = ["delshare", *{args!r}]
main()
"""


def _gc_after(args: list[str]) -> dict[str, int]:
    out = _run_python(_GC_WATCH.format(args=args), timeout=120)
    result: dict[str, int] = json.loads(out.splitlines()[-1])
    return result


@pytest.mark.parametrize("command", ["send", "receive"])
def test_start_up_runs_without_the_collector(command: str) -> None:
    """Loading send or receive collects nothing (the collector is paused until its loop runs)."""
    stats = _gc_after([command, "--help"])
    assert stats["collections"] == 0
    assert not stats["enabled"]
    assert stats["frozen"] == 0  # nothing ran a loop: nothing was frozen


def test_other_commands_keep_the_collector() -> None:
    """The relay (whose supervisor never runs ``run_on_loop`` with ``--workers``) starts with
    the collector on, as it would without the CLI."""
    stats = _gc_after(["relay", "--help"])
    assert stats["enabled"]
    assert stats["frozen"] == 0


def test_the_collector_runs_again_once_the_loop_starts() -> None:
    """A command that runs its event loop (here ``demo``: a real relayed transfer in one
    process) has the collector back on, with what start-up built frozen out of its way."""
    stats = _gc_after(["demo", "--size", "1"])
    assert stats["enabled"]
    assert stats["frozen"] > 1000
