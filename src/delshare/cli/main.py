"""The ``delshare`` command: one click group; each subcommand lives in its own module.

Subcommands are imported only when run (or listed by ``--help``), so ``delshare send`` does not
pay for the relay's imports: start-up time is part of a transfer's time to first byte.
"""

from __future__ import annotations

import importlib

import click

from delshare import __version__

COMMANDS = {
    "send": ("delshare.cli.send", "send"),
    "receive": ("delshare.cli.receive", "receive"),
    "relay": ("delshare.cli.relay", "relay"),
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


def main() -> None:
    """Console-script entry point."""
    cli()
