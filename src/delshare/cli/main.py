"""The ``delshare`` command: one click group; each subcommand lives in its own module."""

from __future__ import annotations

import click

from delshare import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="delshare")
def cli() -> None:
    """DEL: share files directly between devices, through NATs, with a TURN TCP relay fallback."""


from delshare.cli.turn_check import turn_check  # noqa: E402

cli.add_command(turn_check)

from delshare.cli.receive import receive  # noqa: E402
from delshare.cli.send import send  # noqa: E402

cli.add_command(send)
cli.add_command(receive)

from delshare.cli.demo import demo  # noqa: E402

cli.add_command(demo)

from delshare.cli.relay import relay  # noqa: E402

cli.add_command(relay)


def main() -> None:
    """Console-script entry point."""
    cli()
