"""``delshare relay``: the TURN server (RFC 8489/8656/6062) and the rendezvous service.

With no options it listens on 0.0.0.0:3478 (and [::]:3478 when IPv6 is available), UDP and TCP,
with a demo user ``del:del`` in realm ``del.local``, and serves rendezvous on 0.0.0.0:4000.
Bad options print one ``Error:`` line and exit 2; a port that cannot be bound exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click

from delshare.address import format_address, parse_address
from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.errors import DelshareError
from delshare.stun.attributes import Address
from delshare.turn.auth import AuthConfig
from delshare.turn.peerfilter import parse_cidr
from delshare.turn.server_types import ServerConfig

DEMO_USER = ("del", "del")
DEFAULT_REALM = "del.local"
DEFAULT_LISTEN: Address = ("0.0.0.0", 3478)
DEFAULT_LISTEN6: Address = ("::", 3478)
DEFAULT_RENDEZVOUS: Address = ("0.0.0.0", 4000)

log = logging.getLogger("delshare.relay")


def parse_hostport(text: str, default_port: int | None = None) -> Address:
    """``HOST:PORT``, ``[V6]:PORT`` or ``V6`` literal with a default port; no host: all IPv4."""
    host, port = parse_address(text, default_port, allow_zero=True)
    return host or "0.0.0.0", port


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


def _cidrs(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            parse_cidr(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} is not a CIDR range", param=param) from exc
    return values


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
    "--listen",
    "listen",
    multiple=True,
    callback=_hostports,
    metavar="HOST:PORT",
    help="UDP+TCP listener, repeatable. Default 0.0.0.0:3478 and [::]:3478.",
)
@click.option(
    "--tls-listen",
    multiple=True,
    callback=_hostports,
    metavar="HOST:PORT",
    help="TLS listener (TURN over TLS, usually port 5349), repeatable; needs --cert/--key.",
)
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate PEM.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="TLS private key PEM.")
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
@click.option("--relay-ip", metavar="IP", help="IPv4 address written into XOR-RELAYED-ADDRESS.")
@click.option("--relay-ip6", metavar="IP", help="IPv6 address written into XOR-RELAYED-ADDRESS.")
@click.option("--min-port", type=click.IntRange(1, 65535), default=49152, show_default=True,
              help="Lowest relay port.")  # fmt: skip
@click.option("--max-port", type=click.IntRange(1, 65535), default=65535, show_default=True,
              help="Highest relay port.")  # fmt: skip
@click.option("--max-allocations", type=click.IntRange(1), default=1000, show_default=True,
              help="Allocations in total (beyond: 508).")  # fmt: skip
@click.option("--max-allocations-per-user", type=click.IntRange(1), default=100,
              show_default=True, help="Allocations per username (beyond: 486).")  # fmt: skip
@click.option("--max-allocations-per-ip", type=click.IntRange(1), default=500,
              show_default=True, help="Allocations per client IP (beyond: 486).")  # fmt: skip
@click.option("--max-request-rate", type=click.FloatRange(0), default=1000.0, show_default=True,
              help="STUN requests per second per client IP, bursts up to 4x; over it requests "
              "are dropped. 0 disables.")  # fmt: skip
@click.option("--max-connections-per-allocation", type=click.IntRange(1), default=64,
              show_default=True, help="RFC 6062 connections per TCP allocation.")  # fmt: skip
@click.option("--max-pending-connections", type=click.IntRange(1), default=256,
              show_default=True, help="RFC 6062 connections not yet bound, in total.")  # fmt: skip
@click.option("--max-lifetime", type=click.IntRange(1), default=3600, show_default=True,
              help="Longest allocation lifetime, seconds (short ones are for tests).")  # fmt: skip
@click.option("--nonce-lifetime", type=click.IntRange(1), default=600, show_default=True,
              help="Seconds before a nonce goes stale (438).")  # fmt: skip
@click.option(
    "--rendezvous-listen",
    callback=_hostport,
    metavar="HOST:PORT",
    help=f"Rendezvous (pairing) WebSocket service address. Default "
    f"{DEFAULT_RENDEZVOUS[0]}:{DEFAULT_RENDEZVOUS[1]}.",
)
@click.option(
    "--rendezvous-redis",
    metavar="URL",
    envvar="DELSHARE_RENDEZVOUS_REDIS",
    help="Keep rendezvous mailboxes in Redis (redis://HOST:PORT/DB) so several relay nodes "
    "share them.",
)
@click.option("--rendezvous-max-mailboxes", type=click.IntRange(1), default=1000,
              show_default=True, help="Rendezvous mailboxes this node adds to the total (with "
              "Redis the total is the sum over live nodes).")  # fmt: skip
@click.option("--rendezvous-max-mailboxes-per-ip", type=click.IntRange(1), default=20,
              show_default=True, help="Mailbox seats one client address may hold (across "
              "nodes with Redis; IPv6 counts per /64).")  # fmt: skip
@click.option("--rendezvous-max-connections-per-ip", type=click.IntRange(1), default=40,
              show_default=True,
              help="Rendezvous connections per client address, per node.")  # fmt: skip
@click.option("--rendezvous-max-message-size", type=click.IntRange(64, 63 * 1024),
              default=16 * 1024, show_default=True,
              help="Bytes per rendezvous message.")  # fmt: skip
@click.option("--rendezvous-max-messages", type=click.IntRange(1), default=64, show_default=True,
              help="Messages per mailbox over its life.")  # fmt: skip
@click.option("--rendezvous-max-mailbox-bytes", type=click.IntRange(64), default=64 * 1024,
              show_default=True, help="Bytes per mailbox over its life.")  # fmt: skip
@click.option("--rendezvous-max-total-bytes", type=click.IntRange(1024), default=32 * 1024 * 1024,
              show_default=True, help="Bytes all mailboxes together may hold (the memory "
              "bound; this node's share of the total with Redis).")  # fmt: skip
@click.option("--rendezvous-code-lifetime", type=click.FloatRange(0.1), default=600.0,
              show_default=True, help="Seconds a mailbox (a code) lives.")  # fmt: skip
@click.option("--rendezvous-max-message-rate", type=click.FloatRange(0), default=20.0,
              show_default=True, help="Rendezvous messages and new connections per second per "
              "client address, bursts up to 5x; over it the client is refused. "
              "0 disables.")  # fmt: skip
@click.option("--rendezvous-idle-timeout", type=click.FloatRange(0.1), default=10.0,
              show_default=True, help="Seconds a rendezvous connection may stay without a "
              "mailbox.")  # fmt: skip
@click.option(
    "--metrics-listen",
    callback=_hostport,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics (allocations, connections, bytes relayed, errors) here.",
)
@click.option("--no-turn", is_flag=True, help="Run only the rendezvous service.")
@click.option("--no-rendezvous", is_flag=True, help="Run only the TURN server.")
@click.option("-v", "--verbose", is_flag=True, help="Log every STUN message (debug level).")
def relay(**opts: Any) -> None:
    """Run a TURN relay (UDP/TCP/TLS, UDP relays and RFC 6062 TCP relays) and rendezvous."""
    if opts["no_turn"] and opts["no_rendezvous"]:
        raise click.UsageError("--no-turn and --no-rendezvous leave nothing to run")
    if opts["min_port"] > opts["max_port"]:
        raise click.UsageError("--min-port is above --max-port")
    if opts["tls_listen"] and not (opts["cert"] and opts["key"]):
        raise click.UsageError("--tls-listen needs --cert and --key")
    logging.basicConfig(
        level=logging.DEBUG if opts["verbose"] else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not opts["verbose"]:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        _run(_serve(opts))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        click.echo(f"delshare relay: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except DelshareError as exc:
        click.echo(f"delshare relay: {exc}", err=True)
        sys.exit(1)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop when it is installed (the ``fast`` extra)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def relay_config(opts: dict[str, Any]) -> RelayConfig:
    """Build the server configuration from the command-line options."""
    users: dict[str, str] = dict(opts["users"])
    if not users and not opts["auth_secret"]:
        users = {DEMO_USER[0]: DEMO_USER[1]}
    auth = AuthConfig(opts["realm"], users, opts["auth_secret"], float(opts["nonce_lifetime"]))
    server = ServerConfig(
        auth=auth,
        allow_peers=tuple(opts["allow_peer"]),
        relay_ip=opts["relay_ip"],
        relay_ip6=opts["relay_ip6"],
        max_allocations=opts["max_allocations"],
        max_allocations_per_user=opts["max_allocations_per_user"],
        max_allocations_per_ip=opts["max_allocations_per_ip"],
        request_rate=opts["max_request_rate"],
        request_burst=max(1, int(opts["max_request_rate"] * 4)),
        max_connections_per_allocation=opts["max_connections_per_allocation"],
        max_pending_connections=opts["max_pending_connections"],
        max_lifetime=opts["max_lifetime"],
    )
    listen = tuple(opts["listen"])
    return RelayConfig(
        server=server,
        listen=listen or (DEFAULT_LISTEN,),
        optional_listen=() if listen else (DEFAULT_LISTEN6,),
        tls_listen=tuple(opts["tls_listen"]),
        cert=opts["cert"],
        key=opts["key"],
        min_port=opts["min_port"],
        max_port=opts["max_port"],
        metrics_listen=opts["metrics_listen"],
    )


async def _serve(opts: dict[str, Any]) -> None:
    turn: RunningRelay | None = None
    rendezvous = None
    stop = _stop_on_signal()
    try:
        if not opts["no_turn"]:
            turn = await _start_turn(relay_config(opts))
            if dict(turn.core.config.auth.users) == {DEMO_USER[0]: DEMO_USER[1]}:
                log.warning(
                    "no --user and no --auth-secret: demo user %s:%s in realm %s — anyone "
                    "who knows it can relay through this server",
                    *DEMO_USER,
                    turn.core.config.auth.realm,
                )
        if not opts["no_rendezvous"]:
            registry = turn.server.metrics.registry if turn is not None else None
            rendezvous = await _start_rendezvous(opts, registry)
        _log_client_hint(opts, turn, rendezvous)
        await stop.wait()
    finally:
        if rendezvous is not None:
            rendezvous.close()
            await rendezvous.wait_closed()
        if turn is not None:
            await turn.close()


async def _start_turn(config: RelayConfig) -> RunningRelay:
    try:
        running = await start_relay(config)
    except OSError as exc:
        where = ", ".join(format_address(*a) for a in config.listen + config.tls_listen)
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    for kind, address in running.addresses:
        log.info("TURN listening on %s %s", kind, format_address(*address))
    if running.server.metrics_port is not None and config.metrics_listen is not None:
        where = format_address(config.metrics_listen[0], running.server.metrics_port)
        log.info("metrics on http://%s/metrics", where)
    return running


def rendezvous_limits(opts: dict[str, Any]) -> Any:
    """The rendezvous bounds from the ``--rendezvous-*`` options (a ``MailboxLimits``)."""
    from delshare.pairing.mailbox import MailboxLimits

    rate = opts["rendezvous_max_message_rate"]
    return MailboxLimits(
        max_mailboxes=opts["rendezvous_max_mailboxes"],
        max_mailboxes_per_ip=opts["rendezvous_max_mailboxes_per_ip"],
        max_messages=opts["rendezvous_max_messages"],
        max_message_size=opts["rendezvous_max_message_size"],
        max_bytes=opts["rendezvous_max_mailbox_bytes"],
        max_total_bytes=opts["rendezvous_max_total_bytes"],
        max_age=opts["rendezvous_code_lifetime"],
        max_connections_per_ip=opts["rendezvous_max_connections_per_ip"],
        message_rate=rate,
        message_burst=max(1, int(rate * 5)),
        idle_timeout=opts["rendezvous_idle_timeout"],
    )


async def _start_rendezvous(opts: dict[str, Any], registry: Any) -> Any:
    """Start the rendezvous; its metrics go on the relay's registry, or their own exporter."""
    from delshare.pairing.metrics import RendezvousMetrics
    from delshare.pairing.server import serve_rendezvous

    address = opts["rendezvous_listen"] or DEFAULT_RENDEZVOUS
    metrics = RendezvousMetrics(registry)
    if registry is None and opts["metrics_listen"] is not None:
        port = metrics.serve(*opts["metrics_listen"])
        log.info("metrics on http://%s/metrics", format_address(opts["metrics_listen"][0], port))
    try:
        server = await serve_rendezvous(
            *address,
            limits=rendezvous_limits(opts),
            redis_url=opts["rendezvous_redis"],
            metrics=metrics,
        )
    except OSError as exc:
        metrics.close()
        where = format_address(*address)
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from exc
    log.info("rendezvous listening on ws://%s", format_address(address[0], server.port))
    return server


def _public_host(host: str) -> str:
    """``host``, or for a wildcard bind this machine's first non-loopback address."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    from delshare.link.candidates import host_addresses

    found = [a for a in host_addresses() if not a.startswith("127.") and a != "::1"]
    return found[0] if found else "127.0.0.1"


def _log_client_hint(opts: dict[str, Any], turn: RunningRelay | None, rendezvous: Any) -> None:
    """One line with what clients must pass, and why same-network peers may be refused."""
    flags = []
    if rendezvous is not None:
        host = (opts["rendezvous_listen"] or DEFAULT_RENDEZVOUS)[0]
        flags.append(f"--rendezvous ws://{format_address(_public_host(host), rendezvous.port)}")
    if turn is not None:
        kind, (host, port) = next(a for a in turn.addresses if a[0] != "udp")
        scheme = "turns" if kind == "tls" else "turn"
        query = "" if kind == "tls" else "?transport=tcp"
        flags.append(f"--turn '{scheme}:{format_address(_public_host(host), port)}{query}'")
        flags.append("--turn-user NAME --turn-password PASSWORD")
    log.info("clients: delshare send|receive %s", " ".join(flags))
    if turn is not None and not opts["allow_peer"]:
        log.info(
            "peers on loopback and private networks are refused (403); for senders and "
            "receivers on this machine or one LAN add --allow-peer CIDR (e.g. 192.168.0.0/16)"
        )


def _stop_on_signal() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (installed before anything listens)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop
