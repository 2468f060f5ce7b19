"""``delshare relay --config FILE`` / ``--check-config``: TOML, coturn's turnserver.conf, flags.

Issue 12 item 1: every flag is a config key, flags override the file, ``--check-config`` prints
the effective settings with secrets masked (exit 0) or lists every problem (exit 2), and a coturn
turnserver.conf starts an equivalent relay (turnutils_uclient passes against it).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import click
import pytest

from delshare.cli.relay import relay
from delshare.cli.relay_config import RelaySettings, coturn_range, read_config_file, setting_key
from tests.support.coturn import coturn_missing, run_uclient, start_peer
from tests.support.ports import free_port
from tests.support.relay_process import relay_command, start_relay_process
from tests.support.tlscert import make_self_signed

HOST = "127.0.0.1"


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        relay_command("--check-config", *args),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def settings_of(output: str) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in output.splitlines() if " = " in line)
    return {key: value for key, value in pairs}


def test_toml_settings_flags_override_and_secrets_are_masked(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'listen = ["127.0.0.1:3478", "[::1]:3478"]\n'
        'realm = "file.example"\n'
        'user = ["alice:s3cret-pw", "bob:other-pw"]\n'
        'auth_secret = "top-secret-value"\n'
        "max-allocations = 77\n"
        'relay-ip = "127.0.0.2"\n'
        'external_ip = ["198.51.100.1/127.0.0.2"]\n'
        'alternate-server = ["127.0.0.1:3479"]\n'
        "no-udp-relay = true\n"
        "drain-timeout = 12.5\n"
        'rendezvous-redis = "redis://:redis-pw@127.0.0.1:6379/0"\n'
    )
    result = check("--config", str(config), "--realm", "flag.example", "--max-port", "60000")
    assert result.returncode == 0, result.stderr
    shown = settings_of(result.stdout)
    assert shown["realm"] == "flag.example"  # the flag wins
    assert shown["listen"] == "127.0.0.1:3478, [::1]:3478"
    assert shown["max-allocations"] == "77"
    assert shown["max-port"] == "60000"
    assert shown["relay-ip"] == "127.0.0.2"
    assert shown["external-ip"] == "198.51.100.1/127.0.0.2"
    assert shown["alternate-server"] == "127.0.0.1:3479"
    assert shown["no-udp-relay"] == "True"
    assert shown["drain-timeout"] == "12.5"
    assert shown["user"] == "alice:********, bob:********"
    assert shown["auth-secret"] == "********"
    for secret in ("s3cret-pw", "other-pw", "top-secret-value", "redis-pw"):
        assert secret not in result.stdout + result.stderr


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'relay-ip = "notanip"\n'
        "no-such-option = 1\n"
        'relay_ip6 = ["1.2.3.4"]\n'
        'external-ip = "198.51.100.1/10.0.0.9"\n'
        "min-port = 70000\n"
        'listen = ["localhost:3478"]\n'
    )
    result = check("--config", str(config))
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
    text = "\n".join(problems)
    assert "'notanip' is not an IP address" in text
    assert "unknown option 'no-such-option'" in text
    assert "'1.2.3.4' is not an IPv6 address" in text
    assert "min-port" in text and "70000" in text
    assert "'localhost' is not an IP address" in text
    assert len(problems) == 5, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_config_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('relay-ip = "notanip"\nbogus = 1\n')
    result = subprocess.run(
        relay_command("--config", str(config)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "notanip" in lines[0] and "bogus" in lines[0]


def test_every_flag_is_a_config_key(tmp_path: Path) -> None:
    """A TOML file naming every option (at its default) is accepted, and each is shown."""
    lines = []
    for param in relay.params:
        if not isinstance(param, click.Option) or param.name in ("config_file", "check_config"):
            continue
        assert param.name is not None
        default = param.default
        if param.multiple:
            value = "[]"
        elif param.is_flag:
            value = "false"
        elif not isinstance(default, (int, float, str)):
            continue  # no default (None): nothing to write
        elif isinstance(default, str):
            value = f'"{default}"'
        else:
            value = str(default)
        lines.append(f"{setting_key(param.name)} = {value}")
    config = tmp_path / "every.toml"
    config.write_text("\n".join(lines) + "\n")
    result = check("--config", str(config))
    assert result.returncode == 0, result.stderr
    shown = settings_of(result.stdout)
    missing = [line.split(" = ")[0] for line in lines if line.split(" = ")[0] not in shown]
    assert not missing
    assert len(lines) > 25


def test_settings_names_are_flag_names() -> None:
    flags = {opt[2:] for param in relay.params for opt in param.opts if opt.startswith("--")}
    pending: set[str] = set()  # settings carried for features not wired yet (none now)
    fields = {setting_key(name) for name in RelaySettings().names()}
    assert fields - flags <= pending


COTURN_FULL = """\
# a turnserver.conf as an operator has it
listening-ip=127.0.0.1
listening-ip=::1
listening-port=3478
tls-listening-port=5349
relay-ip=127.0.0.1
external-ip=198.51.100.1/127.0.0.1
min-port=49152
max-port=49999
realm=coturn.example
user=alice:wonderland
lt-cred-mech
use-auth-secret
static-auth-secret=rest-secret-value
user-quota=0
total-quota=300
max-bps=1000000
bps-capacity=0
allowed-peer-ip=10.0.0.1-10.0.0.6
denied-peer-ip=172.16.0.0/12
no-tcp-relay
no-udp-relay
cert={cert}
pkey={key}
alternate-server=127.0.0.1:3479
alternate-server=[::1]
no-tls
no-udp
no-tcp
log-file={tmp}/turn.log
pidfile={tmp}/turn.pid
fingerprint
no-multicast-peers
mobility
stale-nonce=600
"""


def test_coturn_conf_options_are_translated_with_coturns_meanings(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    config = tmp_path / "turnserver.conf"
    config.write_text(COTURN_FULL.format(cert=files.cert, key=files.key, tmp=tmp_path))
    result = check("--config", str(config))
    # no-udp + no-tcp + no-tls leave TURN nothing to listen on; no-*-relay leave nothing to relay
    assert result.returncode == 2
    assert "no-udp and no-tcp" in result.stderr and "no-udp-relay and no-tcp-relay" in result.stderr
    config.write_text(
        "\n".join(
            line
            for line in COTURN_FULL.format(
                cert=files.cert, key=files.key, tmp=tmp_path
            ).splitlines()
            if line not in ("no-udp", "no-tcp-relay", "no-tls")
        )
    )
    result = check("--config", str(config))
    assert result.returncode == 0, result.stderr
    shown = settings_of(result.stdout)
    assert shown["listen"] == "127.0.0.1:3478, [::1]:3478"
    assert shown["tls-listen"] == "127.0.0.1:5349, [::1]:5349"
    assert shown["relay-ip"] == "127.0.0.1"
    assert shown["external-ip"] == "198.51.100.1/127.0.0.1"
    assert (shown["min-port"], shown["max-port"]) == ("49152", "49999")
    assert shown["realm"] == "coturn.example"
    assert shown["user"] == "alice:********"
    assert shown["auth-secret"] == "********"
    assert shown["max-allocations-per-user"] == "1000000000"  # 0: no limit
    assert shown["max-allocations"] == "300"
    assert shown["max-bps"] == "1000000" and shown["bps-capacity"] == "(not set)"
    assert shown["allow-peer"] == "10.0.0.1/32, 10.0.0.2/31, 10.0.0.4/31, 10.0.0.6/32"
    assert shown["deny-peer"] == "172.16.0.0/12"
    assert shown["no-udp-relay"] == "True" and shown["no-tcp-relay"] == "False"
    assert shown["no-tcp"] == "True" and shown["no-udp"] == "False"
    assert shown["cert"] == str(files.cert) and shown["key"] == str(files.key)
    assert shown["alternate-server"] == "127.0.0.1:3479, [::1]:3478"
    assert shown["pidfile"] == f"{tmp_path}/turn.pid"
    assert "rest-secret-value" not in result.stdout and "wonderland" not in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    ignored = [line for line in warnings if "coturn options ignored" in line]
    assert len(ignored) == 1 and ignored[0].endswith("ignored: mobility, stale-nonce")
    assert not any("accepted, not applied" in line for line in warnings)  # max-bps is wired


def test_coturn_conf_problems_are_listed(tmp_path: Path) -> None:
    config = tmp_path / "turnserver.conf"
    key = "0x" + "0123456789abcdef" * 2  # coturn's precomputed MD5(user:realm:password)
    config.write_text(
        f"relay-ip=notanip\nno-such-coturn-option=1\nuse-auth-secret\nrealm\nuser=k:{key}\n"
    )
    result = check("--config", str(config))
    assert result.returncode == 2
    text = result.stderr
    assert "'notanip' is not an IP address" in text
    assert "unknown option 'no-such-coturn-option'" in text
    assert "use-auth-secret: needs static-auth-secret" in text
    assert "realm: needs a value" in text
    assert "user: k: coturn's precomputed key (0x...) is not supported" in text
    assert "0123456789abcdef" not in text


def test_a_coturn_alternate_server_is_read_as_an_address(tmp_path: Path) -> None:
    """coturn's ``IP[:PORT]`` goes through address.parse_address: a bad port is a problem of
    that option, an IPv6 literal gets brackets and the default port."""
    config = tmp_path / "turnserver.conf"
    config.write_text("alternate-server=192.0.2.1:99999\n")
    parsed = read_config_file(str(config), {"alternate_server"})
    assert parsed.problems == [f"{config}: alternate-server: bad port in '192.0.2.1:99999'"]
    config.write_text("alternate-server=2001:db8::1\nalternate-server=[2001:db8::2]:5\n")
    parsed = read_config_file(str(config), {"alternate_server"})
    assert parsed.values["alternate_server"] == ["[2001:db8::1]:3478", "[2001:db8::2]:5"]


def test_file_format_is_detected_by_extension_and_content(tmp_path: Path) -> None:
    coturn_text = "realm=x.example\nlt-cred-mech\n"
    for name in ("turnserver.conf", "no-extension"):
        path = tmp_path / name
        path.write_text(coturn_text)
        assert read_config_file(str(path), {"realm"}).kind == "coturn"
    toml = tmp_path / "relay.cfg"
    toml.write_text('realm = "x.example"\n')
    parsed = read_config_file(str(toml), {"realm"})
    assert (parsed.kind, parsed.values) == ("toml", {"realm": "x.example"})


def test_coturn_peer_ranges() -> None:
    assert coturn_range("192.0.2.0-192.0.2.255") == ["192.0.2.0/24"]
    assert coturn_range("2001:db8::1") == ["2001:db8::1/128"]
    with pytest.raises(ValueError):
        coturn_range("10.0.0.9-10.0.0.1")


@pytest.mark.coturn
@pytest.mark.skipif(coturn_missing() is not None, reason=f"coturn: {coturn_missing()}")
def test_coturn_conf_starts_an_equivalent_relay(tmp_path: Path) -> None:
    """turnutils_uclient passes against a relay started from a turnserver.conf (UDP, TCP, TLS)."""
    files = make_self_signed(tmp_path)
    port, tls_port = free_port("both"), free_port("tcp")
    config = tmp_path / "turnserver.conf"
    config.write_text(
        f"listening-ip={HOST}\nlistening-port={port}\ntls-listening-port={tls_port}\n"
        f"relay-ip={HOST}\nmin-port=40000\nmax-port=44999\nrealm=coturn.example\n"
        "lt-cred-mech\nuser=alice:wonderland\nuse-auth-secret\nstatic-auth-secret=s3\n"
        f"total-quota=100\nuser-quota=50\nallowed-peer-ip={HOST}\ncert={files.cert}\n"
        f"pkey={files.key}\npidfile={tmp_path}/turn.pid\nfingerprint\nno-cli\n"
    )
    relay_proc = start_relay_process(
        ["--config", str(config), "--no-rendezvous"],
        tmp_path / "relay.log",
        ready="TURN listening on tls",
    )
    try:
        assert (tmp_path / "turn.pid").read_text().strip() == str(relay_proc.process.pid)
        with start_peer(HOST) as peer:
            runs = {
                "udp": run_uclient(HOST, port, mode_flags=("-y",), user="alice",
                                   password="wonderland", clients=2, messages=50, retries=1),
                "tcp": run_uclient(HOST, port, mode_flags=("-T", "-y"), user="alice",
                                   password="wonderland", clients=2, messages=50, retries=1),
                "tls": run_uclient(HOST, tls_port, mode_flags=("-S", "-T"), user="alice",
                                   password="wonderland", clients=2, messages=50, retries=1),
                "rest": run_uclient(HOST, port, mode_flags=(), user="alice", secret="s3",
                                    peer=(peer.host, peer.port), clients=2, messages=30,
                                    retries=1),
            }  # fmt: skip
        for name, result in runs.items():
            assert result.clean, f"{name}: {result.summary()}"
        log = relay_proc.text()
        assert "allocation" in log and "40000" <= log.split("relay 127.0.0.1:")[1][:5] <= "44999"
    finally:
        relay_proc.stop()


def test_listener_kinds_can_be_switched_off(tmp_path: Path) -> None:
    """coturn's no-udp / no-tcp: only the other kind listens (and the start does not fail)."""
    for flag, present, absent in (("--no-tcp", "udp", "tcp"), ("--no-udp", "tcp", "udp")):
        port = free_port("both")
        args = ["--listen", f"{HOST}:{port}", "--no-rendezvous", flag]
        process = start_relay_process(args, tmp_path / f"{flag}.log", ready="clients:")
        try:
            log = process.text()
            assert f"TURN listening on {present} {HOST}:{port}" in log
            assert f"TURN listening on {absent}" not in log
            kind = socket.SOCK_STREAM if absent == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind((HOST, port))  # the switched-off kind left the port free
        finally:
            process.stop()
