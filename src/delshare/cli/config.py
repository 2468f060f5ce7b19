"""``delshare config show|set|path``: the client configuration file (:mod:`delshare.config`)."""

from __future__ import annotations

import sys

import click

from delshare.config import ConfigError, config_path, load_config, render, save_config, with_value

__all__ = ["config"]


@click.group()
def config() -> None:
    """Settings `send` and `receive` use when no flag or DELSHARE_* variable gives them.

    The file is config.toml in your configuration folder (`delshare config path`), or the one
    DELSHARE_CONFIG names.
    """


@config.command()
def path() -> None:
    """Print where the configuration file is (whether it exists or not)."""
    click.echo(str(config_path()))


@config.command()
def show() -> None:
    """Print the configuration (passwords and secrets masked)."""
    try:
        click.echo(render(load_config()), nl=False)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@config.command(name="set")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--unset", is_flag=True, help="Remove KEY instead of setting it.")
def set_(key: str, value: str | None, unset: bool) -> None:
    """Set KEY to VALUE: rendezvous, ca, output, turn.uri, turn.user, turn.password,
    turn.secret (the first TURN server), or turn.N.FIELD for server N (from 0; the next number
    adds a server, tried after the others). VALUE `-` reads it from stdin (for secrets)."""
    if unset == (value is not None):
        raise click.UsageError("give a VALUE, or --unset")
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    try:
        saved = save_config(with_value(load_config(), key, value))
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'unset' if unset else 'set'} {key} in {saved}")
