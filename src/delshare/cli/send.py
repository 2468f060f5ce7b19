"""``delshare send PATH...``: share files and folders with whoever types the printed code.

Also home of what ``send`` and ``receive`` share on the command line: the rendezvous and TURN
options (each with a ``DELSHARE_*`` variable) and :func:`run_app`, which runs a coroutine and
maps its outcome to the documented exit codes: 0 done, 1 failed, 2 usage, 3 refused (by the
peer, or declined here), 4 interrupted (Ctrl-C, SIGTERM). It runs on uvloop when installed;
``DELSHARE_LOOP=asyncio`` selects the standard event loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from delshare.app.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    SessionOptions,
    UsageProblem,
    check_rendezvous_url,
    exit_code_for,
)
from delshare.app.connect import ConnectOptions
from delshare.app.hints import Side, explain, resume_hint
from delshare.app.send import run_send
from delshare.cli.main import Finished
from delshare.cli.ui import Ui, pick_style
from delshare.errors import DelshareError
from delshare.link.race import Mode
from delshare.link.relay import TurnSettings

__all__ = ["link_options", "make_ui", "run_app", "send", "session_options"]

F = TypeVar("F", bound=Callable[..., Any])
SENDER_WAIT = 900.0  # how long the sender waits for the receiver to show up, per step
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 usage error, 3 refused (by the peer or declined), "
    "4 interrupted."
)


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
            help="TURN server for relaying, e.g. turn:relay.example:3478 [DELSHARE_TURN]",
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
    turn: str | None, user: str | None, password: str | None, secret: str | None
) -> TurnSettings | None:
    if not turn:
        return None
    from delshare.turn.uri import TurnUriError, parse_turn_uri  # with --turn only

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
        raise UsageProblem("--turn needs --turn-user and --turn-password, or --turn-secret")
    return TurnSettings(uri, user, password, secret)


def session_options(kwargs: dict[str, Any], pair_timeout: float) -> SessionOptions:
    """Validate the shared options; UsageProblem on contradictions or missing servers."""
    if kwargs["direct_only"] and kwargs["relay_only"]:
        raise UsageProblem("--direct-only and --relay-only exclude each other")
    rendezvous = kwargs["rendezvous"] or None  # None: zero-config LAN mode
    if rendezvous is not None:
        check_rendezvous_url(rendezvous)
    mode: Mode = "direct" if kwargs["direct_only"] else "relay" if kwargs["relay_only"] else "any"
    turn = _turn_settings(
        kwargs["turn"], kwargs["turn_user"], kwargs["turn_password"], kwargs["turn_secret"]
    )
    return SessionOptions(rendezvous, ConnectOptions(turn=turn, mode=mode), pair_timeout)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the ``fast`` extra: cheaper socket I/O), unless
    ``DELSHARE_LOOP=asyncio`` asks for the standard loop; None means the standard loop."""
    if os.environ.get("DELSHARE_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _with_sigterm(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C does."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel if task else lambda: None)
    await coro


def make_ui(kwargs: dict[str, Any]) -> Ui:
    """The user interface the ``--json``/``--verbose`` flags and the terminal ask for."""
    return Ui(pick_style(kwargs["json_output"]), verbose=kwargs["verbose"])


def run_app(make: Callable[[], Coroutine[Any, Any, None]], ui: Ui, side: Side = "") -> int:
    """Run the app coroutine; one line and an exit code for every failure, naming the next
    step when there is one (:mod:`delshare.app.hints`)."""
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(_with_sigterm(make()))
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
@link_options
def send(paths: tuple[str, ...], code: str | None, ticket: str | None, **kwargs: Any) -> None:
    """Send files and folders; prints a code for `delshare receive`.

    Prints `code: CODE` (once the rendezvous answers), what is offered, then `connected: direct
    ADDRESS` or `connected: relay TURN-SERVER` and one `sent N files, SIZE in T s` line;
    `--verbose` adds a `verified: blake3 HEX NAME` line per file. With `--to TICKET` no code
    and no rendezvous are used.
    """
    ui = make_ui(kwargs)
    try:
        if code and ticket:
            raise UsageProblem("--code and --to exclude each other")
        options = session_options(kwargs, SENDER_WAIT)
    except UsageProblem as exc:
        ui.error(str(exc), EXIT_USAGE)
        raise SystemExit(EXIT_USAGE) from None
    if ticket:
        from delshare.app.manual import run_send_to  # with --to only

        raise Finished(run_app(lambda: run_send_to(paths, ticket, options, ui), ui, "send-to"))
    raise Finished(run_app(lambda: run_send(paths, code, options, ui), ui, "send"))
