"""``delshare send PATH...``: share files and folders with whoever types the printed code.

The options and the exit codes it shares with ``receive`` are in ``delshare.cli.common``.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import Any, BinaryIO

import click

from delshare.app.common import SessionOptions, UsageProblem
from delshare.cli.common import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    link_options,
    make_ui,
    run_app,
    session_options,
)
from delshare.cli.main import Finished
from delshare.cli.ui import Ui

__all__ = ["send"]

SENDER_WAIT = 900.0  # how long the sender waits for the receiver to show up, per step


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--code",
    envvar="DELSHARE_CODE",
    metavar="CODE",
    help="Use this code instead of a random one [DELSHARE_CODE]",
)
@click.option(
    "--to",
    "ticket",
    envvar="DELSHARE_TICKET",
    metavar="TICKET",
    help="Send to the receiver that printed this ticket (`receive --listen`) [DELSHARE_TICKET]",
)
@click.option(
    "--text",
    metavar="TEXT",
    help="Send this message instead of files; the receiver prints it (at most 16 KiB).",
)
@link_options
def send(
    paths: tuple[str, ...], code: str | None, ticket: str | None, text: str | None, **kwargs: Any
) -> None:
    """Send files and folders (`-`: standard input); prints a code for `delshare receive`.

    Prints `code: CODE` (once the rendezvous answers), what is offered, then `connected: direct
    ADDRESS` or `connected: relay TURN-SERVER` and one `sent N files, SIZE in T s` line;
    `--verbose` adds a `verified: blake3 HEX NAME` line per file. With `--to TICKET` no code
    and no rendezvous are used. With `--text` the message goes
    through the rendezvous; `-` sends standard input.
    """
    ui = make_ui(kwargs)
    try:
        if code and ticket:
            raise UsageProblem("--code and --to exclude each other")
        if text is not None and (paths or ticket):
            raise UsageProblem(
                "--text sends a message instead of PATHs, and needs a code (no --to)"
            )
        if "-" in paths and len(paths) != 1:
            raise UsageProblem("- (standard input) must be the only PATH")
        options = session_options(kwargs, SENDER_WAIT)
    except UsageProblem as exc:
        ui.error(str(exc), EXIT_USAGE)
        raise SystemExit(EXIT_USAGE) from None
    if paths == ("-",):
        raise Finished(_send_stdin(code, ticket, options, ui))
    raise Finished(_send(paths, code, ticket, text, options, ui))


def _send(
    paths: tuple[str, ...],
    code: str | None,
    ticket: str | None,
    text: str | None,
    options: SessionOptions,
    ui: Ui,
    stream: BinaryIO | None = None,
) -> int:
    from delshare.api import send_with  # not at import: `send --help` needs none of the app

    def main() -> Coroutine[Any, Any, object]:  # through the API, the UI as its events callback
        return send_with(
            paths, options, code=code, text=text, stream=stream, ticket=ticket or None, events=ui
        )

    return run_app(main, ui, "send-to" if ticket else "send")


def _send_stdin(code: str | None, ticket: str | None, options: SessionOptions, ui: Ui) -> int:
    """Send standard input as it is read: one file named ``stdin``, size unknown."""
    from delshare.app.events import NoticeIssued
    from delshare.app.stdio import STDIN_NOTICE

    ui(NoticeIssued(STDIN_NOTICE))
    return _send(("-",), code, ticket, None, options, ui, sys.stdin.buffer)
