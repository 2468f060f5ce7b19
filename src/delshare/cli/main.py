"""The ``delshare`` command: one click group; each subcommand lives in its own module.

Subcommands are imported only when run (or listed by ``--help``), so ``delshare send`` does not
pay for the relay's imports: start-up time is part of a transfer's time to first byte.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading

import click

from delshare import __version__

COMMANDS = {
    "send": ("delshare.cli.send", "send"),
    "receive": ("delshare.cli.receive", "receive"),
    "relay": ("delshare.cli.relay", "relay"),
    "config": ("delshare.cli.config", "config"),
    "turn-check": ("delshare.cli.turn_check", "turn_check"),
    "demo": ("delshare.cli.demo", "demo"),
}


class LazyGroup(click.Group):
    """A group whose commands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        command = getattr(importlib.import_module(target[0]), target[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="delshare")
def cli() -> None:
    """DEL: share files directly between devices, through NATs, with a TURN TCP relay fallback."""


class Finished(SystemExit):
    """A command's work is over and its output written: leave with ``code`` at once.

    ``send`` and ``receive`` raise it when their app has returned, whatever the outcome: the
    event loop is closed, every file is closed (a received one synced and renamed, or kept as
    ``.part``). :func:`main` then skips the interpreter's teardown, which costs tens of
    milliseconds with asyncio, cryptography and uvloop loaded: part of a tiny transfer's time.
    Anyone else (e.g. click's test runner) sees a plain ``SystemExit``.
    """


_gc_paused = False
PAUSE_GC_FOR = ("send", "receive", "demo")
"""Commands that start without the collector: their start-up is part of a transfer's time,
and each ends it in ``run_on_loop``. Others (the relay's supervisor, ``turn-check``) never
pause it."""


def pause_gc() -> None:
    """Start-up without the cyclic garbage collector (loading send/receive runs ~50 collections
    that find nothing); :func:`end_startup` turns it back on."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def end_startup() -> None:
    """The command is about to run its event loop: what start-up built (modules, classes,
    functions) moves to the collector's permanent generation (``gc.freeze``), so no later
    collection walks it again, and collection resumes. Nothing if :func:`pause_gc` did not
    pause it (e.g. a program that imports the CLI and runs it itself)."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] and sys.argv[1] in PAUSE_GC_FOR:
        pause_gc()
    try:
        cli()
    except Finished as exc:
        _leave_now(exc)
        raise


def _leave_now(exc: Finished) -> None:
    """``os._exit`` after flushing stdio, unless a worker thread is still running."""
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        return  # let the normal exit join it
    code = exc.code if isinstance(exc.code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
