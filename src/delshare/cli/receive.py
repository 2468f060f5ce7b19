"""``delshare receive CODE``: receive what the sender with this code offers."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import click

from delshare.app.common import EXIT_USAGE, UsageProblem
from delshare.app.events import OfferReceived
from delshare.app.manual import run_listen
from delshare.app.receive import ReceiveOptions, run_receive
from delshare.cli.send import EXIT_CODES_HELP, link_options, run_app, session_options
from delshare.cli.ui import Ui, human_size, pick_style

__all__ = ["receive"]

RECEIVER_WAIT = 30.0


def _asker(ui: Ui) -> Any:
    async def ask(offer: OfferReceived) -> bool:
        question = f"Accept {offer.files} file(s), {human_size(offer.total)}?"

        def prompt() -> bool:
            try:
                return bool(click.confirm(question, default=False, err=True))
            except click.Abort:
                return False

        return await asyncio.get_running_loop().run_in_executor(None, prompt)

    return ask


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("code", required=False, envvar="DELSHARE_CODE")
@click.option(
    "-o",
    "--output",
    default=".",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Folder to receive into (default: the current folder).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files of the same name.")
@click.option("--rename", is_flag=True, help="Keep existing files; add a number to new names.")
@click.option("-y", "--yes", is_flag=True, help="Accept the offer without asking.")
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
    output: str,
    overwrite: bool,
    rename: bool,
    yes: bool,
    listen: bool,
    permit: tuple[str, ...],
    **kwargs: Any,
) -> None:
    """Receive files from `delshare send` with its CODE (or DELSHARE_CODE)."""
    ui = Ui(pick_style(kwargs["json_output"]))
    try:
        if not code and not listen:
            raise UsageProblem("missing CODE (the code `delshare send` printed), or --listen")
        if code and listen:
            raise UsageProblem("CODE and --listen exclude each other")
        if permit and not listen:
            raise UsageProblem("--permit only makes sense with --listen")
        if overwrite and rename:
            raise UsageProblem("--overwrite and --rename exclude each other")
        session = session_options(kwargs, RECEIVER_WAIT)
        for ip in permit:
            _check_ip(ip)
    except UsageProblem as exc:
        ui.error(str(exc), EXIT_USAGE)
        raise SystemExit(EXIT_USAGE) from None
    options = ReceiveOptions(output, overwrite, rename, yes)
    ask = _asker(ui)
    if listen:
        raise SystemExit(run_app(lambda: run_listen(session, options, permit, ui, ask), ui))
    assert code is not None
    raise SystemExit(run_app(lambda: run_receive(code, session, options, ui, ask), ui))


def _check_ip(text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise UsageProblem(f"--permit needs an IP address, not {text!r}") from None
