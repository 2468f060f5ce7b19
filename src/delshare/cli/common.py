"""What ``delshare send`` and ``delshare receive`` share on the command line.

The rendezvous and TURN options (each with a ``DELSHARE_*`` variable), their validation into
``SessionOptions``, and :func:`run_app`, which runs a coroutine and maps its outcome to the
documented exit codes: 0 done, 1 failed, 2 usage, 3 refused (by the peer, or declined here),
4 interrupted (Ctrl-C, SIGTERM). It runs on the loop ``delshare.cli.loop`` picks (uvloop when
installed; ``DELSHARE_LOOP=asyncio`` selects the standard event loop instead).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

from delshare.app.common import SessionOptions, UsageProblem, check_rendezvous_url
from delshare.cli.ui import Ui, pick_style
from delshare.errors import DelshareError
from delshare.transfer.timeouts import STALL_TIMEOUT

if TYPE_CHECKING:
    # Imported where used: `send --help` and `receive --help` build these commands without
    # asyncio, the link code, cryptography, websockets or spake2 (start-up time).
    from delshare.app.hints import Side
    from delshare.config import ClientConfig
    from delshare.link.candidates import IPAddress
    from delshare.link.race import Mode
    from delshare.link.relay import TurnSettings

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "client_config",
    "exit_code_for",
    "link_options",
    "make_ui",
    "run_app",
    "session_options",
]

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 usage error, 3 refused (by the peer or declined), "
    "4 interrupted."
)


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code: 2 usage, 3 refused (by the peer or declined here), else 1."""
    from delshare.transfer.errors import DeclinedError, RefusedByPeerError

    if isinstance(exc, UsageProblem):
        return EXIT_USAGE
    if isinstance(exc, RefusedByPeerError | DeclinedError):
        return EXIT_REFUSED
    return EXIT_FAILED


def link_options(f: F) -> F:
    """``--rendezvous``, ``--turn*``, ``--direct-only``/``--relay-only``, ``--json``."""
    decorators = [
        click.option(
            "--rendezvous",
            envvar="DELSHARE_RENDEZVOUS",
            metavar="URL",
            help="Rendezvous server, e.g. ws://relay.example:4000; without one the sender "
            "serves it and announces the code number on the local network [DELSHARE_RENDEZVOUS]",
        ),
        click.option(
            "--turn",
            envvar="DELSHARE_TURN",
            metavar="URI",
            multiple=True,
            help="TURN server for relaying, e.g. turn:relay.example:3478; repeat it for servers "
            "tried in order [DELSHARE_TURN, space-separated]",
        ),
        click.option(
            "--ca",
            envvar="DELSHARE_CA",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False),
            help="CA certificates to trust for wss: and turns: servers [DELSHARE_CA]",
        ),
        click.option(
            "--turn-user",
            envvar="DELSHARE_TURN_USER",
            metavar="NAME",
            help="TURN username [DELSHARE_TURN_USER]",
        ),
        click.option(
            "--turn-password",
            envvar="DELSHARE_TURN_PASSWORD",
            metavar="PASSWORD",
            help="TURN password [DELSHARE_TURN_PASSWORD]",
        ),
        click.option(
            "--turn-secret",
            envvar="DELSHARE_TURN_SECRET",
            metavar="SECRET",
            help="TURN REST shared secret (instead of a password) [DELSHARE_TURN_SECRET]",
        ),
        click.option(
            "--reconnect-timeout",
            envvar="DELSHARE_RECONNECT_TIMEOUT",
            type=click.FloatRange(min=0),
            default=SessionOptions.reconnect_timeout,
            show_default=True,
            metavar="SECONDS",
            help="When the link breaks mid-transfer, reconnect and resume for up to this long; "
            "0 fails at once (the .part stays) [DELSHARE_RECONNECT_TIMEOUT]",
        ),
        click.option("--direct-only", is_flag=True, help="Never relay; fail if no direct path."),
        click.option("--relay-only", is_flag=True, help="Always go through a TURN relay."),
        click.option(
            "--json",
            "json_output",
            is_flag=True,
            help="One JSON event per line (docs/json-events.md).",
        ),
        click.option("-v", "--verbose", is_flag=True, help="Also print each file's BLAKE3 hash."),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _turn_settings(
    turn: str, user: str | None, password: str | None, secret: str | None, ca: str | None
) -> TurnSettings:
    from delshare.link.relay import TurnSettings
    from delshare.turn.uri import TurnUriError, parse_turn_uri  # with a TURN server only

    try:
        uri = parse_turn_uri(turn)
    except TurnUriError as exc:
        raise UsageProblem(str(exc)) from exc
    if not uri.stream:
        raise UsageProblem(
            f"--turn {turn}: relaying a TCP link needs a TCP or TLS connection to the TURN "
            "server (RFC 6062): use transport=tcp or turns:"
        )
    if secret is None and (user is None or password is None):
        raise UsageProblem(
            f"TURN server {turn} needs --turn-user and --turn-password, or --turn-secret"
        )
    return TurnSettings(uri, user, password, secret, ca)


def _turn_servers(
    kwargs: dict[str, Any], config: ClientConfig, ca: str | None
) -> list[TurnSettings]:
    """``--turn``/DELSHARE_TURN servers with the flags' credentials; else the file's servers,
    each with its own credentials unless a flag or variable gives one."""
    user, password, secret = kwargs["turn_user"], kwargs["turn_password"], kwargs["turn_secret"]
    if kwargs["turn"]:
        return [_turn_settings(t, user, password, secret, ca) for t in kwargs["turn"]]
    return [
        _turn_settings(
            entry.uri,
            user or entry.user,
            password or entry.password,
            secret or entry.secret,
            ca,
        )
        for entry in config.turn
    ]


def client_config() -> ClientConfig:
    """The configuration file's settings (UsageProblem if it is broken)."""
    from delshare.config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from exc


def _host_addresses() -> tuple[IPAddress, ...]:
    """``DELSHARE_HOST_ADDRESSES`` (UsageProblem if an entry is not an IP address)."""
    from delshare.config import ConfigError, chosen_host_addresses

    try:
        return chosen_host_addresses()
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from exc


def _check_ca(ca: str | None) -> None:
    """A CA file that does not load is a usage error (exit 2), found before any connection."""
    if not ca:
        return
    from delshare.tls import TlsSetupError, client_context

    try:
        client_context(ca)
    except TlsSetupError as exc:
        raise UsageProblem(f"--ca: {exc}") from exc


def session_options(
    kwargs: dict[str, Any], pair_timeout: float, config: ClientConfig | None = None
) -> SessionOptions:
    """Validate the shared options; UsageProblem on contradictions or missing servers.

    Each setting comes from its flag, else its DELSHARE_* variable, else the configuration file.
    """
    from delshare.app.connect import ConnectOptions

    if kwargs["direct_only"] and kwargs["relay_only"]:
        raise UsageProblem("--direct-only and --relay-only exclude each other")
    config = config if config is not None else client_config()
    rendezvous = kwargs["rendezvous"] or config.rendezvous or None  # None: zero-config LAN mode
    if rendezvous is not None:
        check_rendezvous_url(rendezvous)
    ca = kwargs["ca"] or _expand(config.ca)
    _check_ca(ca)
    mode: Mode = "direct" if kwargs["direct_only"] else "relay" if kwargs["relay_only"] else "any"
    turns = _turn_servers(kwargs, config, ca)
    connect = ConnectOptions(
        turn=turns[0] if turns else None,
        mode=mode,
        more_turn=tuple(turns[1:]),
        host_addresses=_host_addresses(),
    )
    return SessionOptions(
        rendezvous,
        connect,
        pair_timeout,
        reconnect_timeout=kwargs["reconnect_timeout"],
        stall_timeout=_stall_timeout(),
        ca=ca,
    )


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else None


def _stall_timeout() -> float:
    """``DELSHARE_STALL_TIMEOUT``: seconds without progress that count as a broken link."""
    text = os.environ.get("DELSHARE_STALL_TIMEOUT", "").strip()
    if not text:
        return STALL_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise UsageProblem(f"DELSHARE_STALL_TIMEOUT must be a number, not {text!r}") from None
    if not value > 0:
        raise UsageProblem("DELSHARE_STALL_TIMEOUT must be positive")
    return value


async def _with_sigterm(coro: Coroutine[Any, Any, object]) -> None:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C does."""
    import asyncio

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel if task else lambda: None)
    await coro


def make_ui(kwargs: dict[str, Any]) -> Ui:
    """The user interface the ``--json``/``--verbose`` flags and the terminal ask for."""
    return Ui(pick_style(kwargs["json_output"]), verbose=kwargs["verbose"])


def run_app(make: Callable[[], Coroutine[Any, Any, object]], ui: Ui, side: Side = "") -> int:
    """Run the app coroutine; one line and an exit code for every failure, naming the next
    step when there is one (:mod:`delshare.app.hints`)."""
    import asyncio

    from delshare.app.hints import explain, resume_hint
    from delshare.cli.loop import run_on_loop

    try:
        run_on_loop(_with_sigterm(make()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        hint = f"; {resume_hint(side)}" if ui.transferring and side else ""
        ui.error(f"interrupted{hint}", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except DelshareError as exc:
        code = exit_code_for(exc)
        ui.error(explain(exc, side, ui.transferring), code)
        return code
    except OSError as exc:
        ui.error(f"{exc.strerror or exc}", 1)
        return 1
    except Exception as exc:  # a bug: still one line (DELSHARE_DEBUG=1 shows the traceback)
        if os.environ.get("DELSHARE_DEBUG"):
            raise
        ui.error(f"internal error: {type(exc).__name__}: {exc}", 1)
        return 1
    finally:
        ui.close()
    return EXIT_OK
