"""``delshare relay``: the TURN server (RFC 8489/8656/6062) and the rendezvous service.

With no options it listens on 0.0.0.0:3478 (and [::]:3478 when IPv6 is available), UDP and TCP,
with a demo user ``del:del`` in realm ``del.local``, and serves rendezvous on 0.0.0.0:4000.
Bad options print one ``Error:`` line and exit 2; a port that cannot be bound exits 1.

Settings come from defaults, ``--config FILE`` (TOML or coturn's turnserver.conf) and flags, in
that order (``delshare.cli.relay_config``); ``--check-config`` prints them and exits.
Signals (docs/operations.md, "Drain, reload, fleet"): SIGTERM drains — new allocations are
redirected to ``--alternate-server`` (300 Try Alternate) or refused (508), live ones run on until
they end or ``--drain-timeout`` passes, then exit 0; a second SIGTERM or SIGINT exits at once.
SIGHUP re-reads the config file and applies what can change without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from click.core import ParameterSource

from delshare.address import format_address, parse_address
from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.aio.workers import WorkerContext
from delshare.cli.logsetup import LOG_FORMATS, setup_logging
from delshare.cli.loop import run_on_loop
from delshare.cli.relay_config import (
    DEFAULTS,
    FIELD_NAMES,
    PENDING_FEATURES,
    FileConfig,
    RelaySettings,
    changes,
    check_ip,
    describe,
    not_applied,
    parse_external_ip,
    read_config_file,
    setting_key,
)
from delshare.errors import DelshareError
from delshare.stun.attributes import Address
from delshare.tls import server_context
from delshare.turn.auth import AuthConfig
from delshare.turn.peerfilter import parse_cidr
from delshare.turn.server_config import ServerConfig

DEMO_USER = ("del", "del")
DEFAULT_REALM = DEFAULTS.realm
DEFAULT_LISTEN_HOSTS = ("0.0.0.0", "::")
DEFAULT_RENDEZVOUS: Address = ("0.0.0.0", 4000)
SECOND_SIGNAL_EXIT = 0
DEFAULT_WORKERS = 1  # docs/operations.md "Worker processes": why not one per core

log = logging.getLogger("delshare.relay")


def parse_hostport(text: str, default_port: int | None = None) -> Address:
    """``HOST:PORT``, ``[V6]:PORT`` or ``V6`` literal with a default port; no host: all IPv4.

    The host must be an IP literal (as coturn's): ``ValueError`` names what is wrong.
    """
    host, port = parse_address(text, default_port, allow_zero=True)
    return check_ip(host or "0.0.0.0"), port


def _hostports(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[Address, ...]:
    try:
        return tuple(parse_hostport(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from exc


def _hostport(_ctx: click.Context, param: click.Parameter, value: str | None) -> Address | None:
    return None if value is None else _hostports(_ctx, param, (value,))[0]


def _users(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    users: dict[str, str] = {}
    for value in values:
        name, sep, password = value.partition(":")
        if not sep or not name or not password:
            raise click.BadParameter(f"{value!r} is not NAME:PASSWORD", param=param)
        users[name] = password
    return users


def _each(parse: Callable[[str], object], *, converted: bool = False, what: str = "") -> Any:
    """A click callback that runs ``parse`` on every value of a repeatable option.

    A ``ValueError`` (``TurnUriError`` is one) is a BadParameter: ``'VALUE' is not WHAT`` when
    ``what`` is given, else the error's own text. Returns the values as given, or with
    ``converted`` what ``parse`` made of them.
    """

    def check(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
        parsed = []
        for value in values:
            try:
                parsed.append(parse(value))
            except ValueError as exc:
                message = f"{value!r} is not {what}" if what else str(exc)
                raise click.BadParameter(message, param=param) from exc
        return tuple(parsed) if converted else values

    return check


def _parse_turn_uri(text: str) -> object:
    from delshare.turn.uri import parse_turn_uri  # only when the option is given

    return parse_turn_uri(text)


_cidrs = _each(parse_cidr, what="a CIDR range")
_external_ips = _each(parse_external_ip)
_turn_uris = _each(_parse_turn_uri)


def _ips(version: int | None) -> Any:
    return _each(lambda text: check_ip(text, version), converted=True)


class OneLineErrors(click.Command):
    """Usage errors print as one ``Error: ...`` line (exit 2), without the usage block."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.ctx = None
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.ctx = None
            raise


@click.command("relay", cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Read settings from FILE: TOML (keys are the flag names) or a coturn turnserver.conf. "
    "Flags override it; SIGHUP re-reads it.",
)
@click.option(
    "--check-config",
    is_flag=True,
    help="Print the effective settings (secrets masked) and exit 0, or list every problem and "
    "exit 2.",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    callback=_hostports,
    metavar="HOST:PORT",
    help="UDP+TCP listener, repeatable. Default 0.0.0.0 and [::] on --port.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULTS.port, show_default=True,
              help="Port of the default listeners (without --listen).")  # fmt: skip
@click.option(
    "--tls-listen",
    multiple=True,
    callback=_hostports,
    metavar="HOST:PORT",
    help="TLS listener (TURN over TLS, usually port 5349), repeatable; needs --cert/--key.",
)
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate PEM.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="TLS private key PEM.")
@click.option("--no-udp", is_flag=True, help="No UDP listeners (coturn's no-udp).")
@click.option("--no-tcp", is_flag=True, help="No TCP listeners (coturn's no-tcp).")
@click.option("--realm", default=DEFAULT_REALM, show_default=True, help="Long-term auth realm.")
@click.option(
    "--user",
    "users",
    multiple=True,
    callback=_users,
    metavar="NAME:PASSWORD",
    help="Long-term credential, repeatable. Without --user and --auth-secret a demo user "
    "del:del is created (with a warning).",
)
@click.option(
    "--auth-secret",
    metavar="SECRET",
    envvar="DELSHARE_RELAY_AUTH_SECRET",
    show_envvar=True,
    help="TURN REST shared secret (coturn's use-auth-secret): username '<expiry>:<id>', "
    "password base64(HMAC-SHA1(SECRET, username)).",
)
@click.option(
    "--allow-peer",
    multiple=True,
    callback=_cidrs,
    metavar="CIDR",
    help="Allow relaying to/from this range, repeatable. By default loopback, private, "
    "link-local, unique-local, multicast, reserved and unspecified peers are refused (403).",
)
@click.option("--deny-peer", multiple=True, callback=_cidrs, metavar="CIDR",
              help="Also refuse this peer range, repeatable (--allow-peer wins).")  # fmt: skip
@click.option(
    "--relay-ip",
    multiple=True,
    callback=_ips(None),
    metavar="IP",
    help="Local address relayed sockets bind to, repeatable (coturn's relay-ip). Default: the "
    "address the client reached.",
)
@click.option("--relay-ip6", multiple=True, callback=_ips(6), metavar="IP",
              help="Same as --relay-ip, IPv6 only.")  # fmt: skip
@click.option(
    "--external-ip",
    multiple=True,
    callback=_external_ips,
    metavar="PUBLIC[/PRIVATE]",
    help="Address advertised in XOR-RELAYED-ADDRESS (coturn's external-ip): for relays bound "
    "on PRIVATE, or for every relay of PUBLIC's family. Repeatable.",
)
@click.option("--min-port", type=click.IntRange(1, 65535), default=DEFAULTS.min_port,
              show_default=True, help="Lowest relay port.")  # fmt: skip
@click.option("--max-port", type=click.IntRange(1, 65535), default=DEFAULTS.max_port,
              show_default=True, help="Highest relay port.")  # fmt: skip
@click.option("--no-udp-relay", is_flag=True, help="Refuse UDP allocations (442).")
@click.option("--no-tcp-relay", is_flag=True, help="Refuse RFC 6062 TCP allocations (442).")
@click.option("--max-allocations", type=click.IntRange(1), default=DEFAULTS.max_allocations,
              show_default=True, help="Allocations in total (beyond: 300 to an "
              "--alternate-server, else 508).")  # fmt: skip
@click.option("--max-allocations-per-user", type=click.IntRange(1),
              default=DEFAULTS.max_allocations_per_user, show_default=True,
              help="Allocations per username (beyond: 486).")  # fmt: skip
@click.option("--max-allocations-per-ip", type=click.IntRange(1),
              default=DEFAULTS.max_allocations_per_ip, show_default=True,
              help="Allocations per client IP (beyond: 486).")  # fmt: skip
@click.option("--max-request-rate", type=click.FloatRange(0), default=DEFAULTS.max_request_rate,
              show_default=True, help="STUN requests per second per client IP (over all "
              "--workers), bursts up to 4x; over it requests are dropped. 0 disables."
              )  # fmt: skip
@click.option("--max-connections-per-allocation", type=click.IntRange(1),
              default=DEFAULTS.max_connections_per_allocation, show_default=True,
              help="RFC 6062 connections per TCP allocation.")  # fmt: skip
@click.option("--max-pending-connections", type=click.IntRange(1),
              default=DEFAULTS.max_pending_connections, show_default=True,
              help="RFC 6062 connections not yet bound, in total.")  # fmt: skip
@click.option("--max-pending-per-allocation", type=click.IntRange(1),
              default=ServerConfig.max_pending_per_allocation,
              show_default=True, help="RFC 6062 connections not yet bound, per allocation "
              "(beyond: 508 / the peer is refused).")  # fmt: skip
@click.option("--max-pending-per-user", type=click.IntRange(1),
              default=ServerConfig.max_pending_per_user, show_default=True,
              help="RFC 6062 connections not yet bound, per username, so one user cannot "
              "hold the whole --max-pending-connections budget.")  # fmt: skip
@click.option("--tls-handshake-timeout", type=click.FloatRange(0.1),
              default=RelayConfig.tls_handshake_timeout,
              show_default=True, help="Seconds a TLS client may take to finish its handshake."
              )  # fmt: skip
@click.option("--max-tls-handshakes", type=click.IntRange(1),
              default=RelayConfig.max_tls_handshakes, show_default=True,
              help="TLS handshakes in progress at once; beyond, new connections are closed."
              )  # fmt: skip
@click.option("--max-tls-handshakes-per-ip", type=click.IntRange(1),
              default=RelayConfig.max_tls_handshakes_per_ip,
              show_default=True, help="TLS handshakes in progress at once from one client IP."
              )  # fmt: skip
@click.option("--max-lifetime", type=click.IntRange(1), default=DEFAULTS.max_lifetime,
              show_default=True, help="Longest allocation lifetime, seconds (short ones are "
              "for tests).")  # fmt: skip
@click.option("--nonce-lifetime", type=click.IntRange(1), default=DEFAULTS.nonce_lifetime,
              show_default=True, help="Seconds before a nonce goes stale (438).")  # fmt: skip
@click.option(
    "--alternate-server",
    multiple=True,
    callback=_hostports,
    metavar="IP:PORT",
    help="Send new allocations here (300 Try Alternate) while draining or full, repeatable "
    "(taken in turn).",
)
@click.option("--drain-timeout", type=click.FloatRange(0), default=DEFAULTS.drain_timeout,
              show_default=True, help="After SIGTERM, seconds live allocations may run on "
              "before the process exits.")  # fmt: skip
@click.option(
    "--rendezvous-listen",
    callback=_hostport,
    metavar="HOST:PORT",
    help=f"Rendezvous (pairing) WebSocket service address. Default "
    f"{format_address(*DEFAULT_RENDEZVOUS)}.",
)
@click.option(
    "--rendezvous-tls",
    is_flag=True,
    help="Serve the rendezvous as wss:// with the --cert/--key of TURN over TLS.",
)
@click.option(
    "--rendezvous-redis",
    metavar="URL",
    envvar="DELSHARE_RENDEZVOUS_REDIS",
    help="Keep rendezvous mailboxes in Redis (redis://HOST:PORT/DB) so several relay nodes "
    "share them.",
)
@click.option("--rendezvous-max-mailboxes", type=click.IntRange(1),
              default=DEFAULTS.rendezvous_max_mailboxes,
              show_default=True, help="Rendezvous mailboxes this node adds to the total (with "
              "Redis the total is the sum over live nodes).")  # fmt: skip
@click.option("--rendezvous-max-mailboxes-per-ip", type=click.IntRange(1),
              default=DEFAULTS.rendezvous_max_mailboxes_per_ip,
              show_default=True, help="Mailbox seats one client address may hold (across "
              "nodes with Redis; IPv6 counts per /64).")  # fmt: skip
@click.option("--rendezvous-max-connections-per-ip", type=click.IntRange(1),
              default=DEFAULTS.rendezvous_max_connections_per_ip,
              show_default=True,
              help="Rendezvous connections per client address, per node.")  # fmt: skip
@click.option("--rendezvous-max-message-size", type=click.IntRange(64, 63 * 1024),
              default=DEFAULTS.rendezvous_max_message_size, show_default=True,
              help="Bytes per rendezvous message.")  # fmt: skip
@click.option("--rendezvous-max-messages", type=click.IntRange(1),
              default=DEFAULTS.rendezvous_max_messages, show_default=True,
              help="Messages per mailbox over its life.")  # fmt: skip
@click.option("--rendezvous-max-mailbox-bytes", type=click.IntRange(64),
              default=DEFAULTS.rendezvous_max_mailbox_bytes,
              show_default=True, help="Bytes per mailbox over its life.")  # fmt: skip
@click.option("--rendezvous-max-total-bytes", type=click.IntRange(1024),
              default=DEFAULTS.rendezvous_max_total_bytes,
              show_default=True, help="Bytes all mailboxes together may hold (the memory "
              "bound; this node's share of the total with Redis).")  # fmt: skip
@click.option("--rendezvous-code-lifetime", type=click.FloatRange(0.1),
              default=DEFAULTS.rendezvous_code_lifetime,
              show_default=True, help="Seconds a mailbox (a code) lives.")  # fmt: skip
@click.option("--rendezvous-max-message-rate", type=click.FloatRange(0),
              default=DEFAULTS.rendezvous_max_message_rate,
              show_default=True, help="Rendezvous messages and new connections per second per "
              "client address, bursts up to 5x; over it the client is refused. "
              "0 disables.")  # fmt: skip
@click.option("--rendezvous-idle-timeout", type=click.FloatRange(0.1),
              default=DEFAULTS.rendezvous_idle_timeout,
              show_default=True, help="Seconds a rendezvous connection may stay without a "
              "mailbox.")  # fmt: skip
@click.option("--rendezvous-turn-lifetime", type=click.IntRange(1), default=3600,
              show_default=True, help="With --auth-secret, the rendezvous hands each client "
              "this node's TURN server and REST credentials valid this many seconds.")  # fmt: skip
@click.option("--rendezvous-turn-uri", multiple=True, metavar="URI", callback=_turn_uris,
              help="TURN server(s) the rendezvous hands out, repeatable. Default: "
              "turn:HOST:PORT?transport=tcp with the host clients reached and the TURN "
              "port.")  # fmt: skip
@click.option(
    "--metrics-listen",
    callback=_hostport,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics (allocations, connections, bytes relayed, auth failures, "
    "errors) at /metrics and readiness at /healthz (200 ready, 503 draining) here.",
)
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Write the process id here.")
@click.option("--max-bps", type=click.IntRange(0),
              default=RelayConfig.max_bps, show_default=True,
              help="Bandwidth cap per allocation in bytes per second, each direction separately "
              "(coturn's max-bps), for UDP relays and RFC 6062 data connections alike: UDP "
              "beyond it is dropped, TCP is slowed by flow control. 0: uncapped.")  # fmt: skip
@click.option("--bps-capacity", type=click.IntRange(0),
              default=RelayConfig.bps_capacity, show_default=True,
              help="Total bytes per second handed out to allocations (coturn's bps-capacity): "
              "each allocation reserves --max-bps, or what is left; when nothing is left new "
              "allocations get 486. Needs --max-bps. 0: unlimited.")  # fmt: skip
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              help="Log lines as text or as one JSON object per line.")  # fmt: skip
@click.option("--log-file", metavar="PATH",
              help="Append logs to PATH (reopened after logrotate moves it; 'stdout' and "
              "'stderr' name those streams). Default: stderr.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 256), default=DEFAULT_WORKERS, show_default=True,
              help="TURN worker processes sharing the listeners (SO_REUSEPORT), each with its "
              "own allocations; quotas, RFC 6062 and metrics work across them; worker 0 "
              "serves the rendezvous. See docs/operations.md for when more than one pays."
              )  # fmt: skip
@click.option("--no-turn", is_flag=True, help="Run only the rendezvous service.")
@click.option("--no-rendezvous", is_flag=True, help="Run only the TURN server.")
@click.option("-v", "--verbose", is_flag=True, help="Log every STUN message (debug level).")
def relay(config_file: str | None, check_config: bool, **_opts: Any) -> None:
    """Run a TURN relay (UDP/TCP/TLS, UDP relays and RFC 6062 TCP relays) and rendezvous."""
    loader = SettingsLoader(click.get_current_context(), config_file)
    settings, problems = loader.load()
    if check_config:
        _check_config(loader, settings, problems)
    if problems:
        raise click.UsageError("; ".join(problems))
    level = logging.DEBUG if settings.verbose else logging.INFO
    log_file = settings.log_file
    try:
        setup_logging(level, settings.log_format, log_file)
    except OSError as exc:
        raise click.UsageError(f"--log-file {log_file}: {exc.strerror or exc}") from exc
    if not settings.verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    for warning in loader.warnings(settings):
        log.warning("%s", warning)
    workers = int(_extra(settings, "workers", DEFAULT_WORKERS))
    try:
        with _pidfile(settings.pidfile):
            if workers > 1:
                code = _run_workers(loader, settings, workers)
                if code:
                    sys.exit(code)
            else:
                run_on_loop(_serve(loader, settings))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        click.echo(f"delshare relay: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except DelshareError as exc:
        click.echo(f"delshare relay: {exc}", err=True)
        sys.exit(1)


def _check_config(loader: SettingsLoader, settings: RelaySettings, problems: list[str]) -> None:
    """``--check-config``: the settings and warnings on stdout, or every problem (exit 2)."""
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        sys.exit(2)
    if loader.path:
        click.echo(f"# effective settings of {loader.path} with the command line")
    for line in describe(settings):
        click.echo(line)
    for warning in loader.warnings(settings):
        click.echo(f"warning: {warning}", err=True)
    sys.exit(0)


@contextlib.contextmanager
def _pidfile(path: str | None) -> Any:
    """coturn's pidfile: written at start, removed at exit."""
    if path is None:
        yield
        return
    with open(path, "w", encoding="ascii") as out:
        out.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@dataclass
class SettingsLoader:
    """Builds ``RelaySettings`` from the config file and the flags given; again on SIGHUP."""

    ctx: click.Context
    path: str | None
    file: FileConfig | None = field(default=None, init=False)

    def _options(self) -> dict[str, click.Parameter]:
        skip = {"config_file", "check_config"}
        return {
            p.name: p
            for p in self.ctx.command.params
            if isinstance(p, click.Option) and p.name and p.name not in skip
        }

    def load(self) -> tuple[RelaySettings, list[str]]:
        """The settings and every problem found (file, conversion, consistency)."""
        options = self._options()
        values: dict[str, Any] = {}
        problems: list[str] = []
        if self.path is not None:
            self.file = read_config_file(self.path, set(options) | FIELD_NAMES)
            problems += self.file.problems
            for name, raw in self.file.values.items():
                try:
                    values[name] = self._convert(options.get(name), name, raw)
                except (click.BadParameter, ValueError, TypeError) as exc:
                    message = exc.message if isinstance(exc, click.BadParameter) else str(exc)
                    problems.append(f"{self.path}: {setting_key(name)}: {message}")
        for name in options:
            source = self.ctx.get_parameter_source(name)
            if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                values[name] = self.ctx.params[name]
            elif name not in values and name not in FIELD_NAMES:
                values[name] = self.ctx.params[name]  # a flag with no field: its default
        known = {k: v for k, v in values.items() if k in FIELD_NAMES}
        extra = {k: v for k, v in values.items() if k not in FIELD_NAMES}
        settings = RelaySettings(**known, extra=extra)
        return settings, problems + settings.problems()

    def _convert(self, param: click.Parameter | None, name: str, raw: Any) -> Any:
        """A file value through its flag's conversion and checks (or a pending feature's)."""
        if param is None:
            return PENDING_FEATURES[name](raw)
        if param.multiple:
            raw = tuple(raw) if isinstance(raw, list) else (raw,)
        elif isinstance(raw, list):
            raise ValueError("takes one value, not a list")
        value = param.type_cast_value(self.ctx, raw)
        if param.callback is not None:
            value = param.callback(self.ctx, param, value)
        return value

    def warnings(self, settings: RelaySettings) -> list[str]:
        found: list[str] = []
        if self.file is not None and self.file.ignored:
            found.append(
                f"{self.file.path}: coturn options ignored: {', '.join(self.file.ignored)}"
            )
        pending = not_applied(settings, self._options())
        if pending:
            found.append(f"accepted, not applied (not implemented yet): {', '.join(pending)}")
        return found


def _extra(settings: RelaySettings, name: str, default: Any) -> Any:
    """A setting of a flag that ``RelaySettings`` has no field for (its default otherwise)."""
    return settings.extra.get(name, default)


def relay_config(settings: RelaySettings) -> RelayConfig:
    """Build the server configuration from the settings."""
    users: dict[str, str] = dict(settings.users)
    if not users and not settings.auth_secret:
        users = {DEMO_USER[0]: DEMO_USER[1]}
    auth = AuthConfig(settings.realm, users, settings.auth_secret, float(settings.nonce_lifetime))
    server = ServerConfig(
        auth=auth,
        allow_peers=settings.allow_peer,
        deny_peers=settings.deny_peer,
        external_ips=tuple(parse_external_ip(e) for e in settings.external_ip),
        max_allocations=settings.max_allocations,
        max_allocations_per_user=settings.max_allocations_per_user,
        max_allocations_per_ip=settings.max_allocations_per_ip,
        request_rate=settings.max_request_rate,
        request_burst=max(1, int(settings.max_request_rate * 4)),
        max_connections_per_allocation=settings.max_connections_per_allocation,
        max_pending_connections=settings.max_pending_connections,
        max_pending_per_allocation=_extra(
            settings, "max_pending_per_allocation", ServerConfig.max_pending_per_allocation
        ),
        max_pending_per_user=_extra(
            settings, "max_pending_per_user", ServerConfig.max_pending_per_user
        ),
        max_lifetime=settings.max_lifetime,
        alternate_servers=settings.alternate_server,
        udp_relays=not settings.no_udp_relay,
        tcp_relays=not settings.no_tcp_relay,
    )
    listen = settings.listen
    defaults = tuple((host, settings.port) for host in DEFAULT_LISTEN_HOSTS)
    return RelayConfig(
        server=server,
        listen=listen or defaults[:1],
        optional_listen=() if listen else defaults[1:],
        tls_listen=settings.tls_listen,
        cert=settings.cert,
        key=settings.key,
        min_port=settings.min_port,
        max_port=settings.max_port,
        metrics_listen=settings.metrics_listen,
        relay_ips=settings.relay_ip + settings.relay_ip6,
        udp=not settings.no_udp,
        tcp=not settings.no_tcp,
        tls_handshake_timeout=float(
            _extra(settings, "tls_handshake_timeout", RelayConfig.tls_handshake_timeout)
        ),
        max_tls_handshakes=_extra(settings, "max_tls_handshakes", RelayConfig.max_tls_handshakes),
        max_tls_handshakes_per_ip=_extra(
            settings, "max_tls_handshakes_per_ip", RelayConfig.max_tls_handshakes_per_ip
        ),
        max_bps=settings.max_bps or 0,
        bps_capacity=settings.bps_capacity or 0,
    )


def _run_workers(loader: SettingsLoader, settings: RelaySettings, count: int) -> int:
    """``--workers N`` (N > 1): the parent binds and supervises; each worker runs ``_serve``."""
    from delshare.aio.workers import Supervisor, port_share

    if settings.no_turn:
        raise click.UsageError("--workers needs the TURN server (it splits TURN, not --no-turn)")
    config = relay_config(settings)
    try:
        port_share(config.min_port, config.max_port, 0, count)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        supervisor = Supervisor(count, config)
    except OSError as exc:
        where = ", ".join(format_address(*a) for a in config.listen + config.tls_listen)
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    if config.metrics_listen is not None:
        where = format_address(*config.metrics_listen)
        log.info("metrics of all workers on http://%s/metrics", where)

    def worker_main(worker: WorkerContext) -> int:
        try:
            run_on_loop(_serve(loader, settings, worker))
        except OSError as exc:
            log.error("%s", exc.strerror or exc)
            return 1
        except DelshareError as exc:
            log.error("%s", exc)
            return 1
        return 0

    return supervisor.run(worker_main)


async def _serve(
    loader: SettingsLoader, settings: RelaySettings, worker: WorkerContext | None = None
) -> None:
    turn: RunningRelay | None = None
    rendezvous = None
    signals = Signals()
    first = worker is None or worker.index == 0
    try:
        if not settings.no_turn:
            turn = await _start_turn(relay_config(settings), worker)
            if turn.core.config.auth.users.get(DEMO_USER[0]) == DEMO_USER[1]:
                given = "--user" if settings.users else "no --user and no --auth-secret"
                log.warning(
                    "%s: demo user %s:%s in realm %s — anyone who knows it can relay through "
                    "this server",
                    given,
                    *DEMO_USER,
                    turn.core.config.auth.realm,
                )
        if not settings.no_rendezvous and first:  # in-memory mailboxes: one process
            registry = turn.server.metrics.registry if turn is not None else None
            grant = _turn_grant(settings, turn)
            tls = None
            if settings.rendezvous_tls and settings.cert and settings.key:
                tls = server_context(settings.cert, settings.key)  # the TURN TLS certificate
            rendezvous = await _start_rendezvous(settings, registry, grant, tls)
        if first:
            _log_client_hint(settings, turn, rendezvous)
        if worker is not None:
            worker.ready()
        await _lifecycle(signals, loader, settings, turn, worker)
    finally:
        signals.remove()
        if rendezvous is not None:
            rendezvous.close()
            await rendezvous.wait_closed()
        if turn is not None:
            await turn.close()


async def _lifecycle(
    signals: Signals,
    loader: SettingsLoader,
    settings: RelaySettings,
    turn: RunningRelay | None,
    worker: WorkerContext | None = None,
) -> None:
    """Serve until a stop; SIGHUP reloads meanwhile; SIGTERM drains first."""
    while True:
        what = await signals.next()
        if what == "reload":
            settings = _reload(loader, settings, turn, worker)
        elif what == "drain" and turn is not None:
            await _drain(signals, turn, settings.drain_timeout)
            return
        else:
            return


async def _drain(signals: Signals, turn: RunningRelay, timeout: float) -> None:
    """Redirect or refuse new allocations; wait for live ones, the timeout, or a second signal."""
    server = turn.server
    server.start_draining()
    alternates = ", ".join(format_address(*a) for a in server.core.config.alternate_servers)
    log.info(
        "draining: %d allocations, %d data connections live; new allocations %s; "
        "exit when they end or in %gs",
        len(server.core.allocations),
        len(server.core.connections),
        f"go to {alternates}" if alternates else "refused (508)",
        timeout,
    )
    idle = asyncio.ensure_future(server.wait_idle())
    interrupted = asyncio.ensure_future(signals.next_stop())
    try:
        done, _ = await asyncio.wait(
            {idle, interrupted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        idle.cancel()
        interrupted.cancel()
    if idle in done:
        log.info("drained: no allocations left, exiting")
    elif interrupted in done:
        log.warning(
            "second signal: exiting now, cutting %d allocations", len(server.core.allocations)
        )
    else:
        log.warning(
            "drain timeout (%gs): exiting, cutting %d allocations",
            timeout,
            len(server.core.allocations),
        )


def _reload(
    loader: SettingsLoader,
    settings: RelaySettings,
    turn: RunningRelay | None,
    worker: WorkerContext | None = None,
) -> RelaySettings:
    """SIGHUP: re-read the file; apply users, secrets, certificates, limits and peer rules."""
    if loader.path is None:
        log.info("SIGHUP: no --config file, nothing to reload")
        return settings
    new, problems = loader.load()
    if problems:
        log.error("reload of %s failed, keeping the old configuration: %s", loader.path,
                  "; ".join(problems))  # fmt: skip
        return settings
    restart: list[str] = []
    if turn is not None:
        try:
            config = relay_config(new)
            restart = turn.server.reconfigure(worker.adapt(config) if worker else config)
        except (OSError, ValueError) as exc:
            log.error("reload of %s failed, keeping the old configuration: %s", loader.path, exc)
            return settings
    kept = ("no_turn", "no_rendezvous", "pidfile", "log_file", "log_format", "workers")
    restart += [
        setting_key(name)
        for name in new.names()
        if (name.startswith("rendezvous_") or name in kept)
        and new.value(name) != settings.value(name)
    ]
    logging.getLogger().setLevel(logging.DEBUG if new.verbose else logging.INFO)
    changed = changes(settings, new)
    log.info("reloaded %s: %s", loader.path, "; ".join(changed) or "nothing changed")
    if restart:
        log.warning("changed but kept until a restart: %s", ", ".join(restart))
    for warning in loader.warnings(new):
        log.warning("%s", warning)
    return new


class Signals:
    """SIGTERM (drain, then stop), SIGINT (stop), SIGHUP (reload) as a queue of requests."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._terms = 0
        self._installed: list[signal.Signals] = []
        handlers = {signal.SIGINT: self._stop, signal.SIGTERM: self._term, signal.SIGHUP: self._hup}
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
                self._loop.add_signal_handler(sig, handler)
                self._installed.append(sig)

    def _stop(self) -> None:
        self._queue.put_nowait("stop")

    def _term(self) -> None:
        self._terms += 1
        self._queue.put_nowait("drain" if self._terms == 1 else "stop")

    def _hup(self) -> None:
        self._queue.put_nowait("reload")

    async def next(self) -> str:
        return await self._queue.get()

    async def next_stop(self) -> None:
        """Until SIGINT or a further SIGTERM (reloads while draining are ignored)."""
        while await self._queue.get() != "stop":
            log.info("draining: reload ignored")

    def remove(self) -> None:
        for sig in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(sig)


async def _start_turn(config: RelayConfig, worker: WorkerContext | None = None) -> RunningRelay:
    try:
        running = await (worker.start_relay(config) if worker else start_relay(config))
    except OSError as exc:
        where = ", ".join(format_address(*a) for a in config.listen + config.tls_listen)
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    for kind, address in running.addresses:
        log.info("TURN listening on %s %s", kind, format_address(*address))
    if running.server.metrics_port is not None and config.metrics_listen is not None:
        where = format_address(config.metrics_listen[0], running.server.metrics_port)
        log.info("metrics on http://%s/metrics", where)
    return running


def rendezvous_limits(settings: RelaySettings) -> Any:
    """The rendezvous bounds from the ``rendezvous-*`` settings (a ``MailboxLimits``)."""
    from delshare.pairing.mailbox import MailboxLimits

    rate = settings.rendezvous_max_message_rate
    return MailboxLimits(
        max_mailboxes=settings.rendezvous_max_mailboxes,
        max_mailboxes_per_ip=settings.rendezvous_max_mailboxes_per_ip,
        max_messages=settings.rendezvous_max_messages,
        max_message_size=settings.rendezvous_max_message_size,
        max_bytes=settings.rendezvous_max_mailbox_bytes,
        max_total_bytes=settings.rendezvous_max_total_bytes,
        max_age=settings.rendezvous_code_lifetime,
        max_connections_per_ip=settings.rendezvous_max_connections_per_ip,
        message_rate=rate,
        message_burst=max(1, int(rate * 5)),
        idle_timeout=settings.rendezvous_idle_timeout,
    )


def _turn_grant(settings: RelaySettings, turn: RunningRelay | None) -> Any:
    """What the rendezvous hands clients (a ``TurnGrant``): only with an auth secret."""
    uris = tuple(settings.value("rendezvous_turn_uri"))
    if not settings.auth_secret or (turn is None and not uris):
        return None
    from delshare.pairing.turn_grant import TurnGrant

    return TurnGrant(
        settings.auth_secret,
        lifetime=int(settings.value("rendezvous_turn_lifetime")),
        port=turn.turn_port if turn is not None else 3478,
        uris=uris,
    )


async def _start_rendezvous(
    settings: RelaySettings, registry: Any, turn_grant: Any, tls: ssl.SSLContext | None = None
) -> Any:
    """Start the rendezvous; its metrics go on the relay's registry, or their own exporter."""
    from delshare.pairing.metrics import RendezvousMetrics
    from delshare.pairing.server import serve_rendezvous

    address = settings.rendezvous_listen or DEFAULT_RENDEZVOUS
    metrics = RendezvousMetrics(registry)
    if registry is None and settings.metrics_listen is not None:
        port = metrics.serve(*settings.metrics_listen)
        where = format_address(settings.metrics_listen[0], port)
        log.info("metrics on http://%s/metrics", where)
    try:
        server = await serve_rendezvous(
            *address,
            limits=rendezvous_limits(settings),
            redis_url=settings.rendezvous_redis,
            metrics=metrics,
            turn_grant=turn_grant,
            ssl=tls,
        )
    except OSError as exc:
        metrics.close()
        where = format_address(*address)
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    scheme = "wss" if tls is not None else "ws"
    log.info("rendezvous listening on %s://%s", scheme, format_address(address[0], server.port))
    return server


def _public_host(host: str) -> str:
    """``host``, or for a wildcard bind this machine's first non-loopback address."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    from delshare.config import chosen_host_addresses
    from delshare.link.candidates import host_addresses

    found = [
        a
        for a in host_addresses(chosen_host_addresses())
        if not a.startswith("127.") and a != "::1"
    ]
    return found[0] if found else "127.0.0.1"


def _log_client_hint(settings: RelaySettings, turn: RunningRelay | None, rendezvous: Any) -> None:
    """One line with what clients must pass, and why same-network peers may be refused."""
    flags = []
    if rendezvous is not None:
        host = (settings.rendezvous_listen or DEFAULT_RENDEZVOUS)[0]
        flags.append(f"--rendezvous ws://{format_address(_public_host(host), rendezvous.port)}")
    if turn is not None:
        streams = [a for a in turn.addresses if a[0] != "udp"]
        kind, (host, port) = (streams or turn.addresses)[0]  # UDP only with --no-tcp
        scheme = "turns" if kind == "tls" else "turn"
        query = {"tls": "", "tcp": "?transport=tcp"}.get(kind, "?transport=udp")
        flags.append(f"--turn '{scheme}:{format_address(_public_host(host), port)}{query}'")
        flags.append("--turn-user NAME --turn-password PASSWORD")
    log.info("clients: delshare send|receive %s", " ".join(flags))
    if turn is not None and not settings.allow_peer:
        log.info(
            "peers on loopback and private networks are refused (403); for senders and "
            "receivers on this machine or one LAN add --allow-peer CIDR (e.g. 192.168.0.0/16)"
        )
