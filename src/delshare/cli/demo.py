"""``delshare demo``: show a real transfer through the TURN TCP relay on this machine."""

from __future__ import annotations

import click

from delshare.cli.common import EXIT_OK, run_app
from delshare.cli.ui import Ui, human_size, pick_style

__all__ = ["demo"]


@click.command()
@click.option(
    "--size",
    default=64,
    show_default=True,
    type=click.IntRange(0, 1 << 20),
    metavar="MIB",
    help="MiB of random data to send.",
)
def demo(size: int) -> None:
    """Send a file through an embedded TURN TCP relay (RFC 6062) and verify its hash."""
    receiver = Ui(pick_style(False), label="receive: ")
    sender = Ui("plain", label="send:    ")
    result_lines: list[str] = []

    from delshare.app.demo import run_demo  # the embedded relay: loaded only for the demo

    async def main() -> None:
        receiver.print(
            f"demo: embedded relay on 127.0.0.1, {human_size(size << 20)} "
            "of random data, --relay-only"
        )
        result = await run_demo(size << 20, sender, receiver)
        result_lines.append(f"demo: TURN server {result.turn}, rendezvous {result.rendezvous}")
        result_lines.append(f"demo: verified: blake3 {result.blake3} (source = received)")

    code = run_app(main, receiver)
    for line in result_lines:
        click.echo(line)
    raise SystemExit(code if code != EXIT_OK else EXIT_OK)
