"""Settings of ``delshare relay``: one typed record built from defaults, a config file and flags.

Theory of operation. Every setting has one name: its long flag without the dashes
(``max-allocations``); a config file may spell it with dashes or underscores. Three sources are
layered, later wins: the defaults of ``RelaySettings``, a config file, the flags given on the
command line. ``read_config_file`` turns a file into raw values keyed by setting, exactly as the
flags would carry them (strings, lists of strings, numbers, booleans); the CLI runs each raw value
through the click option of the same name, so a value in a file is converted and refused exactly
like the flag, then builds ``RelaySettings``. ``RelaySettings.problems()`` adds the checks that
span settings (addresses, port ranges, TLS needs a certificate), ``describe()`` renders the
effective settings for ``--check-config`` with secrets masked, ``changes()`` says what a reload
(SIGHUP) changed.

Two file formats are read (by extension, else by content):

- TOML (``tomllib``): ``key = value``; a repeatable flag takes a list or a single string.
- coturn's ``turnserver.conf``: ``key=value`` or a bare ``key`` per line, ``#`` comments. The
  options of ``COTURN_OPTIONS`` are translated with coturn's meanings; other real coturn options
  are listed in one warning and ignored; a name coturn does not know either is a problem.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from delshare.address import format_address, parse_address
from delshare.pairing.mailbox import MailboxLimits
from delshare.stun.attributes import Address
from delshare.turn.auth import DEFAULT_NONCE_LIFETIME
from delshare.turn.server_config import ServerConfig

SECRET = "********"
UNLIMITED = 1_000_000_000  # coturn's quota 0 ("no limit")
COTURN_TLS_PORT = 5349
COTURN_PORT = 3478

# Settings carried for features wired elsewhere: while no flag of the name exists, a value for
# them is reported as "accepted, not applied" instead of being silently dropped.
PENDING_FEATURES: dict[str, Callable[[Any], Any]] = {}


@dataclass(frozen=True)
class RelaySettings:
    """Everything ``delshare relay`` runs with; field names are the flags' (dashes → ``_``).

    Defaults that are the core's own (``ServerConfig``, ``MailboxLimits``) are read from there.
    """

    listen: tuple[Address, ...] = ()  # empty: 0.0.0.0 and [::] on ``port``
    port: int = COTURN_PORT
    tls_listen: tuple[Address, ...] = ()
    cert: str | None = None
    key: str | None = None
    no_udp: bool = False
    no_tcp: bool = False
    realm: str = "del.local"
    users: Mapping[str, str] = field(default_factory=dict)
    auth_secret: str | None = None
    allow_peer: tuple[str, ...] = ()
    deny_peer: tuple[str, ...] = ()
    relay_ip: tuple[str, ...] = ()
    relay_ip6: tuple[str, ...] = ()
    external_ip: tuple[str, ...] = ()  # PUBLIC or PUBLIC/PRIVATE
    min_port: int = 49152
    max_port: int = 65535
    no_udp_relay: bool = False
    no_tcp_relay: bool = False
    max_allocations: int = ServerConfig.max_allocations
    max_allocations_per_user: int = ServerConfig.max_allocations_per_user
    max_allocations_per_ip: int = ServerConfig.max_allocations_per_ip
    max_request_rate: float = ServerConfig.request_rate
    max_connections_per_allocation: int = ServerConfig.max_connections_per_allocation
    max_pending_connections: int = ServerConfig.max_pending_connections
    max_lifetime: int = ServerConfig.max_lifetime
    nonce_lifetime: int = int(DEFAULT_NONCE_LIFETIME)
    alternate_server: tuple[Address, ...] = ()
    drain_timeout: float = 300.0
    rendezvous_listen: Address | None = None
    rendezvous_redis: str | None = None
    rendezvous_tls: bool = False
    rendezvous_max_mailboxes: int = MailboxLimits.max_mailboxes
    rendezvous_max_mailboxes_per_ip: int = MailboxLimits.max_mailboxes_per_ip
    rendezvous_max_connections_per_ip: int = MailboxLimits.max_connections_per_ip
    rendezvous_max_message_size: int = MailboxLimits.max_message_size
    rendezvous_max_messages: int = MailboxLimits.max_messages
    rendezvous_max_mailbox_bytes: int = MailboxLimits.max_bytes
    rendezvous_max_total_bytes: int = MailboxLimits.max_total_bytes
    rendezvous_code_lifetime: float = MailboxLimits.max_age
    rendezvous_max_message_rate: float = MailboxLimits.message_rate
    rendezvous_idle_timeout: float = MailboxLimits.idle_timeout
    metrics_listen: Address | None = None
    no_turn: bool = False
    no_rendezvous: bool = False
    verbose: bool = False
    pidfile: str | None = None
    max_bps: int | None = None
    bps_capacity: int | None = None
    log_file: str | None = None
    log_format: str = "text"
    # settings of flags added after this record was written, by setting name
    extra: Mapping[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Every inconsistency across settings, one line each (empty: good to run)."""
        found: list[str] = []
        found += _address_problems(self)
        if self.no_turn and self.no_rendezvous:
            found.append("no-turn and no-rendezvous leave nothing to run")
        if self.min_port > self.max_port:
            found.append("min-port is above max-port")
        if self.tls_listen and not (self.cert and self.key):
            found.append("tls-listen needs cert and key")
        if self.rendezvous_tls and not (self.cert and self.key):
            found.append("rendezvous-tls needs cert and key")
        if self.bps_capacity and not self.max_bps:
            found.append("bps-capacity needs max-bps (the share of each allocation)")
        if self.no_udp and self.no_tcp and not self.tls_listen and not self.no_turn:
            found.append("no-udp and no-tcp without tls-listen leave TURN nothing to listen on")
        if self.no_udp_relay and self.no_tcp_relay and not self.no_turn:
            found.append("no-udp-relay and no-tcp-relay leave nothing to relay")
        return found

    def value(self, name: str) -> Any:
        """A setting by name, including ``extra`` ones."""
        if name in self.extra:
            return self.extra[name]
        return getattr(self, name)

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "extra"] + sorted(self.extra)


DEFAULTS = RelaySettings()
FIELD_NAMES = frozenset(f.name for f in fields(RelaySettings) if f.name != "extra")
SECRET_SETTINGS = frozenset({"auth_secret"})


def setting_key(name: str) -> str:
    """``max_allocations`` → ``max-allocations`` (the flag, the config key)."""
    return "user" if name == "users" else name.replace("_", "-")


def setting_name(key: str) -> str:
    """A config key (dashes or underscores) → the setting name."""
    name = key.strip().lower().replace("-", "_")
    return "users" if name == "user" else name


# -- addresses ------------------------------------------------------------------------------------


def check_ip(text: str, version: int | None = None) -> str:
    """``text`` as a canonical IP literal; ValueError names what is wrong."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if version is not None and ip.version != version:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    return str(ip)


def parse_external_ip(text: str) -> tuple[str, str | None]:
    """coturn's ``PUBLIC[/PRIVATE]``: the advertised address, and the relay address it maps."""
    public, _, private = text.partition("/")
    public = check_ip(public)
    if not private:
        return public, None
    private = check_ip(private)
    if (":" in public) != (":" in private):
        raise ValueError(f"{text!r} mixes IPv4 and IPv6")
    return public, private


def _address_problems(settings: RelaySettings) -> list[str]:
    found: list[str] = []

    def check(key: str, values: Iterable[str], parse: Callable[[str], object]) -> None:
        for value in values:
            try:
                parse(value)
            except ValueError as exc:
                found.append(f"{key}: {exc}")

    hosts = [h for h, _ in settings.listen + settings.tls_listen + settings.alternate_server]
    check("listen", hosts, check_ip)
    check("relay-ip", settings.relay_ip, check_ip)
    check("relay-ip6", settings.relay_ip6, lambda v: check_ip(v, 6))
    check("external-ip", settings.external_ip, parse_external_ip)
    for key in ("rendezvous_listen", "metrics_listen"):
        address = getattr(settings, key)
        if address is not None:
            check(setting_key(key), [address[0]], check_ip)
    privates = [parse_external_ip(e)[1] for e in settings.external_ip if _parses(e)]
    relays = {check_ip(r) for r in settings.relay_ip + settings.relay_ip6 if _parses(r)}
    for private in privates:
        if private is not None and relays and private not in relays:
            found.append(f"external-ip: private address {private} is not a relay-ip")
    return found


def _parses(text: str) -> bool:
    try:
        parse_external_ip(text)
    except ValueError:
        return False
    return True


# -- reading files ------------------------------------------------------------------------------


@dataclass
class FileConfig:
    """What a config file says: raw values by setting name, ignored options, problems."""

    path: str
    kind: str  # "toml" or "coturn"
    values: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_config_file(path: str, known: Iterable[str]) -> FileConfig:
    """Read ``path`` (TOML or coturn); ``known`` are the setting names the command accepts."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result = FileConfig(path, "toml")
        result.problems.append(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
        return result
    if is_coturn_config(path, text):
        return _read_coturn(path, text, set(known))
    return _read_toml(path, text, set(known))


def is_coturn_config(path: str, text: str) -> bool:
    """By extension (``.toml`` vs ``.conf``), else by content: TOML quotes its strings."""
    suffix = Path(path).suffix.lower()
    if suffix == ".toml":
        return False
    if suffix == ".conf":
        return True
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return True
    return False


def _read_toml(path: str, text: str, known: set[str]) -> FileConfig:
    result = FileConfig(path, "toml")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        result.problems.append(f"{path}: not valid TOML: {exc}")
        return result
    for key, value in data.items():
        name = setting_name(key)
        if name not in known:
            result.problems.append(f"{path}: unknown option {key!r}")
        elif isinstance(value, dict):
            result.problems.append(f"{path}: {key!r} must be a value, not a table")
        elif name in result.values:
            result.problems.append(f"{path}: {key!r} given twice")
        else:
            result.values[name] = value
    return result


# coturn 4.6 options that exist but are not translated (listed in the one warning when present).
_COTURN_KNOWN_NAMES = """
    acme-redirect allow-loopback-peers alt-listening-port alt-tls-listening-port aux-server
    channel-lifetime check-origin-consistency cipher-list cli-ip cli-max-output-sessions
    cli-password cli-port daemon dh-file dh1066 dh566 ec-curve-name fingerprint
    keep-address-family listening-device log-binding max-allocate-lifetime max-allocate-timeout
    mobility mysql-userdb ne new-log-timestamp new-log-timestamp-format no-auth no-auth-pings
    no-cli no-dtls no-dynamic-ip-list no-dynamic-realms no-multicast-peers no-rfc5780
    no-software-attribute no-stdout-log no-stun no-stun-backward-compatibility no-tlsv1
    no-tlsv1_1 no-tlsv1_2 no-loopback-peers oauth permission-lifetime pkey-pwd proc-group
    proc-user psql-userdb redis-statsdb redis-userdb mongo-userdb userdb relay-device
    relay-threads response-origin-only-with-rfc5780 rest-api-separator secret-key-file
    secure-stun server-name server-relay simple-log stale-nonce stun-only syslog syslog-facility
    tcp-proxy-port tls-alternate-server udp-self-balance verbose version web-admin web-admin-ip
    web-admin-listen-on-workers web-admin-port prometheus prometheus-port
    prometheus-username-labels allocation-default-address-family dtls-listening-port
    no-tcp-relay-ports ca-file sha256 lt-cred-mech use-auth-secret"""
COTURN_KNOWN = frozenset(_COTURN_KNOWN_NAMES.split())

# Options that change nothing for us: what they ask for is how delshare always behaves.
COTURN_ALREADY = frozenset(
    {"lt-cred-mech", "fingerprint", "no-multicast-peers", "no-loopback-peers", "no-cli",
     "no-stdout-log", "no-dtls", "simple-log"}
)  # fmt: skip

_COTURN_DIRECT = {  # coturn option -> setting, value as is
    "relay-ip": "relay_ip",
    "external-ip": "external_ip",
    "min-port": "min_port",
    "max-port": "max_port",
    "realm": "realm",
    "static-auth-secret": "auth_secret",
    "max-bps": "max_bps",
    "bps-capacity": "bps_capacity",
    "cert": "cert",
    "pkey": "key",
    "log-file": "log_file",
    "pidfile": "pidfile",
    "no-tcp-relay": "no_tcp_relay",
    "no-udp-relay": "no_udp_relay",
    "no-udp": "no_udp",
    "no-tcp": "no_tcp",
    "verbose": "verbose",
}
_COTURN_SPECIAL = {
    "user",
    "listening-ip",
    "listening-port",
    "tls-listening-port",
    "no-tls",
    "user-quota",
    "total-quota",
    "allowed-peer-ip",
    "denied-peer-ip",
    "alternate-server",
    "use-auth-secret",
}
COTURN_OPTIONS = frozenset(_COTURN_DIRECT) | _COTURN_SPECIAL
_REPEATABLE = {"relay_ip", "external_ip", "users", "allow_peer", "deny_peer", "alternate_server"}


def coturn_lines(text: str) -> list[tuple[int, str, str | None]]:
    """``(line number, option, value or None)`` for each setting line of a turnserver.conf."""
    entries: list[tuple[int, str, str | None]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("--")
        value = value.strip().strip('"')
        entries.append((number, key, value if sep else None))
    return entries


def _read_coturn(path: str, text: str, known: set[str]) -> FileConfig:
    result = FileConfig(path, "coturn")
    options: dict[str, list[str | None]] = {}
    for number, key, value in coturn_lines(text):
        if key in COTURN_OPTIONS:
            options.setdefault(key, []).append(value)
        elif key in COTURN_KNOWN:
            if key not in COTURN_ALREADY and key not in result.ignored:
                result.ignored.append(key)
        else:
            result.problems.append(f"{path}:{number}: unknown option {key!r}")
    for key, values in options.items():
        try:
            _translate(key, values, options, result)
        except ValueError as exc:
            result.problems.append(f"{path}: {key}: {exc}")
    try:
        _coturn_listeners(options, result)
    except ValueError as exc:
        result.problems.append(f"{path}: listening port: {exc}")
    unknown = sorted(set(result.values) - known - set(FIELD_NAMES))
    for name in unknown:
        result.problems.append(f"{path}: {setting_key(name)} is not supported here")
    return result


def _one(key: str, values: list[str | None]) -> str:
    value = values[-1]
    if value is None or value == "":
        raise ValueError("needs a value")
    return value


def _translate(
    key: str, values: list[str | None], options: Mapping[str, list[str | None]], out: FileConfig
) -> None:
    """One coturn option (all its occurrences) into settings, with coturn's meaning."""
    if key in _COTURN_DIRECT:
        name = _COTURN_DIRECT[key]
        if name in _REPEATABLE:
            out.values[name] = [_one(key, [v]) for v in values]
        elif key.startswith("no-") or key == "verbose":
            out.values[name] = True
        elif name in ("max_bps", "bps_capacity") and _one(key, values) == "0":
            return  # coturn's 0: no limit
        else:
            out.values[name] = _one(key, values)
    elif key == "user":
        out.values["users"] = [_coturn_user(_one(key, [v])) for v in values]
    elif key == "user-quota":
        out.values["max_allocations_per_user"] = _quota(_one(key, values))
    elif key == "total-quota":
        out.values["max_allocations"] = _quota(_one(key, values))
    elif key in ("allowed-peer-ip", "denied-peer-ip"):
        name = "allow_peer" if key == "allowed-peer-ip" else "deny_peer"
        out.values[name] = [c for v in values for c in coturn_range(_one(key, [v]))]
    elif key == "alternate-server":
        out.values["alternate_server"] = [_coturn_hostport(_one(key, [v])) for v in values]
    elif key == "use-auth-secret" and "static-auth-secret" not in options:
        raise ValueError("needs static-auth-secret (secrets in a database are not supported)")


def _coturn_user(text: str) -> str:
    """coturn's ``NAME:PASSWORD``; its ``NAME:0xKEY`` (a precomputed long-term key, 32 or 64 hex
    digits) would silently become a password nobody knows, so it is a problem instead."""
    name, _, secret = text.partition(":")
    digits = secret[2:]
    if secret[:2].lower() == "0x" and len(digits) in (32, 64):
        try:
            bytes.fromhex(digits)
        except ValueError:
            return text
        raise ValueError(
            f"{name}: coturn's precomputed key (0x...) is not supported; give the password"
        )
    return text


def _coturn_listeners(options: Mapping[str, list[str | None]], out: FileConfig) -> None:
    """listening-ip with listening-port (UDP+TCP), and tls-listening-port with a certificate."""
    if not {"listening-ip", "listening-port", "tls-listening-port", "cert"} & set(options):
        return
    ips = [_one("listening-ip", [v]) for v in options.get("listening-ip", [])]
    port = int(_one("listening-port", options["listening-port"])) if (
        "listening-port" in options
    ) else COTURN_PORT  # fmt: skip
    tls_port = COTURN_TLS_PORT
    if "tls-listening-port" in options:
        tls_port = int(_one("tls-listening-port", options["tls-listening-port"]))
    if ips:
        out.values["listen"] = [format_address(ip, port) for ip in ips]
    else:
        out.values["port"] = port
    has_cert = "cert" in options and "pkey" in options
    if has_cert and "no-tls" not in options:
        out.values["tls_listen"] = [format_address(ip, tls_port) for ip in ips or ["0.0.0.0"]]


def _quota(text: str) -> int:
    number = int(text)
    return UNLIMITED if number == 0 else number


def _coturn_hostport(text: str) -> str:
    """coturn's ``IP[:PORT]`` (default port 3478) → ``HOST:PORT``."""
    return format_address(*parse_address(text, COTURN_PORT))  # a bare IPv6 literal too


def coturn_range(text: str) -> list[str]:
    """coturn's peer rule: an IP, a CIDR or ``FIRST-LAST`` → CIDR ranges."""
    first, sep, last = text.partition("-")
    if not sep:
        return [str(ipaddress.ip_network(text.strip(), strict=False))]
    start, end = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
    if start.version != end.version or int(start) > int(end):
        raise ValueError(f"{text!r} is not a range")
    return [str(n) for n in ipaddress.summarize_address_range(start, end)]


# -- rendering ------------------------------------------------------------------------------------


def _show(name: str, value: Any) -> str:
    if value is None:
        return "(not set)"
    if name in SECRET_SETTINGS:
        return SECRET
    if name == "users":
        return ", ".join(f"{user}:{SECRET}" for user in sorted(value)) or "(none)"
    if name == "rendezvous_redis":
        return mask_url(str(value))
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ", ".join(format_address(str(h), int(p)) for h, p in value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return format_address(str(value[0]), value[1])
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def mask_url(url: str) -> str:
    """A URL with its password replaced by the mask."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{SECRET}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def describe(settings: RelaySettings) -> list[str]:
    """``key = value`` lines of the effective settings, secrets masked."""
    return [f"{setting_key(n)} = {_show(n, settings.value(n))}" for n in settings.names()]


def changes(old: RelaySettings, new: RelaySettings) -> list[str]:
    """What differs, one entry per setting, secrets not shown (for the reload log line)."""
    found: list[str] = []
    for name in sorted(set(old.names()) | set(new.names())):
        before, after = _get(old, name), _get(new, name)
        if before == after:
            continue
        if name in SECRET_SETTINGS or name == "users":
            found.append(f"{setting_key(name)} changed")
        else:
            found.append(f"{setting_key(name)} {_show(name, before)} -> {_show(name, after)}")
    return found


def _get(settings: RelaySettings, name: str) -> Any:
    try:
        return settings.value(name)
    except AttributeError:
        return None


def not_applied(settings: RelaySettings, flags: Iterable[str]) -> list[str]:
    """Pending-feature settings that have a value but no flag yet (so nothing applies them)."""
    present = set(flags)
    return [
        setting_key(name)
        for name in PENDING_FEATURES
        if name not in present and settings.value(name) is not None
    ]
