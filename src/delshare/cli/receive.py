"""``delshare receive CODE``: receive what the sender with this code offers."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from delshare.app.common import SessionOptions, UsageProblem
from delshare.app.events import OfferReceived
from delshare.cli.common import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    client_config,
    link_options,
    make_ui,
    run_app,
    session_options,
)
from delshare.cli.main import Finished
from delshare.cli.ui import Ui, describe_offer, pick_style
from delshare.text import printable

if TYPE_CHECKING:  # imported where used: `receive --help` needs none of the app (start-up time)
    import asyncio

    from delshare.app.receive import Ask, AskOverwrite, ReceiveOptions

__all__ = ["receive"]

RECEIVER_WAIT = 30.0


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _read_answer() -> bool:
    """One line from fd 0, unbuffered: a thread blocked here holds no lock at exit. At end of
    input without a line the question's line is ended, so what follows starts a new line."""
    line = b""
    while not line.endswith(b"\n"):
        try:
            chunk = os.read(0, 1)
        except OSError:
            chunk = b""
        if not chunk:
            sys.stderr.write("\n")
            break
        line += chunk
    return line.strip().lower() in (b"y", b"yes")


async def _prompt(question: str) -> bool:
    """Ask a yes/no question on stderr, read the answer from stdin (no means no)."""
    import asyncio

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def prompt() -> None:
        sys.stderr.write(printable(question))
        sys.stderr.flush()
        result = _read_answer()
        with contextlib.suppress(RuntimeError):  # the loop is gone (interrupted)
            loop.call_soon_threadsafe(_settle, answer, result)

    # A daemon thread, not the loop's executor: Ctrl-C must not wait for a blocked stdin.
    threading.Thread(target=prompt, name="delshare-confirm", daemon=True).start()
    return await answer


def _where(offer: OfferReceived) -> str:
    from delshare.transfer.manifest import display_name

    return display_name(os.path.abspath(offer.output or "."))


def _asker(ui: Ui) -> Ask:
    async def ask(offer: OfferReceived) -> bool:
        ui.asked = True
        described = describe_offer(offer.files, offer.total, offer.names, offer.streaming)
        return await _prompt(f"Receive {described} into {_where(offer)}? [y/N]: ")

    return ask


def _overwrite_asker(ui: Ui) -> AskOverwrite | None:
    """On a terminal, ask before replacing existing files; otherwise never (the offer fails)."""
    if not sys.stdin.isatty():
        return None

    async def ask_overwrite(offer: OfferReceived, names: tuple[str, ...]) -> bool:
        ui.asked = True
        described = describe_offer(offer.files, offer.total, offer.names, offer.streaming)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return await _prompt(
            f"Receive {described} into {_where(offer)}, replacing the existing {shown}? [y/N]: "
        )

    return ask_overwrite


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("code", required=False, envvar="DELSHARE_CODE")
@click.option(
    "-o",
    "--output",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Folder to receive into (default: `output` in the configuration file, else the "
    "current folder).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing files of the same name (without it: ask on a terminal, else fail).",
)
@click.option("--rename", is_flag=True, help="Keep existing files; add a number to new names.")
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Accept the offer without asking (existing files are still kept unless you agree).",
)
@click.option(
    "--listen",
    is_flag=True,
    help="No code: print a `ticket:` for `delshare send --to TICKET` and wait.",
)
@click.option(
    "--permit",
    multiple=True,
    metavar="IP",
    help="With --listen and --turn: let this sender IP reach the relayed address.",
)
@link_options
def receive(
    code: str | None,
    output: str | None,
    overwrite: bool,
    rename: bool,
    yes: bool,
    listen: bool,
    permit: tuple[str, ...],
    **kwargs: Any,
) -> None:
    """Receive files from `delshare send` with its CODE (or DELSHARE_CODE).

    `-o -` writes the one file offered to standard output, once verified; every message then
    goes to standard error.
    """
    to_stdout = output == "-"
    if to_stdout:
        style = pick_style(kwargs["json_output"], sys.stderr)
        ui = Ui(style, out=sys.stderr, verbose=kwargs["verbose"])
    else:
        ui = make_ui(kwargs)
    try:
        if not code and not listen:
            raise UsageProblem("missing CODE (the code `delshare send` printed), or --listen")
        if code and listen:
            raise UsageProblem("CODE and --listen exclude each other")
        if permit and not listen:
            raise UsageProblem("--permit only makes sense with --listen")
        if overwrite and rename:
            raise UsageProblem("--overwrite and --rename exclude each other")
        config = client_config()
        session = session_options(kwargs, RECEIVER_WAIT, config)
        output = output or os.path.expanduser(config.output or ".")
        for ip in permit:
            _check_ip(ip)
    except UsageProblem as exc:
        ui.error(str(exc), EXIT_USAGE)
        raise SystemExit(EXIT_USAGE) from None
    from delshare.app.receive import ReceiveOptions

    interactive = sys.stdin.isatty()
    options = ReceiveOptions(
        output, overwrite, rename, yes, interactive=interactive, single_file=to_stdout
    )
    ask_overwrite = _overwrite_asker(ui)
    if to_stdout:
        raise Finished(_receive_to_stdout(code, listen, permit, session, options, ui))
    raise Finished(_receive(None if listen else code, permit, session, options, ui, ask_overwrite))


def _receive(
    code: str | None,
    permit: tuple[str, ...],
    session: SessionOptions,
    options: ReceiveOptions,
    ui: Ui,
    ask_overwrite: AskOverwrite | None = None,
) -> int:
    """Through the API (:func:`delshare.api.receive_with`), the UI as its events callback;
    ``code=None``: listen (``--listen``)."""
    from delshare.api import receive_with

    ask = _asker(ui)
    return run_app(
        lambda: receive_with(code, session, options, ask, ask_overwrite, permit=permit, events=ui),
        ui,
        "receive" if code else "listen",
    )


def _receive_to_stdout(
    code: str | None,
    listen: bool,
    permit: tuple[str, ...],
    session: SessionOptions,
    options: ReceiveOptions,
    ui: Ui,
) -> int:
    """Receive into a private folder, then copy the verified file to standard output."""
    from dataclasses import replace

    from delshare.app.stdio import copy_out, private_folder

    with private_folder("delshare-out-") as folder:
        options = replace(options, output=str(folder))
        result = _receive(None if listen else code, permit, session, options, ui)
        if result != 0:
            return result
        try:
            copy_out(folder, sys.stdout.buffer)
        except (OSError, ValueError) as exc:
            ui.error(f"cannot write to standard output: {exc}", 1)
            return 1
    return 0


def _check_ip(text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise UsageProblem(f"--permit needs an IP address, not {text!r}") from None
