"""TLS from the command line (issue 12, item 7): ``delshare relay --rendezvous-tls`` serves
``wss://`` with the TURN certificate; ``send``/``receive`` trust it with ``--ca`` (or
``DELSHARE_CA``); ``turn-check`` names the cause of a failed ``turns:`` handshake."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.harness import (
    TURN_PASSWORD,
    TURN_USER,
    RelayProcess,
    env_for,
    finish,
    run_pair,
    start,
    start_relay_process,
    stop,
    wait_listening,
)
from tests.cli.test_turn_check import assert_one_line_failure, turn_check
from tests.support.ports import free_port
from tests.support.tlscert import CertFiles, make_self_signed


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls-clients")


@pytest.fixture(scope="module")
def cert(workdir: Path) -> CertFiles:
    return make_self_signed(workdir / "pki")


@pytest.fixture(scope="module")
def relay(workdir: Path, cert: CertFiles) -> Iterator[RelayProcess]:
    tls = ["--cert", str(cert.cert), "--key", str(cert.key), "--rendezvous-tls"]
    process = start_relay_process(workdir, extra=tls)
    yield process
    stop(process.process)


def wss(relay: RelayProcess) -> str:
    return f"wss://localhost:{relay.rendezvous_port}"


def test_relay_logs_wss(relay: RelayProcess) -> None:
    assert f"rendezvous listening on wss://127.0.0.1:{relay.rendezvous_port}" in (
        relay.log.read_text()
    )


@pytest.mark.parametrize(("given", "code"), [("--ca", "7"), ("DELSHARE_CA", "8")])
def test_wss_pairing_with_the_ca_sends_a_file(
    relay: RelayProcess, cert: CertFiles, workdir: Path, given: str, code: str
) -> None:
    """The private CA is trusted whether it comes as ``--ca`` or in ``DELSHARE_CA``."""
    source = workdir / f"{given}.bin"
    source.write_bytes(os.urandom(200_000))
    out = workdir / f"out{given}"
    out.mkdir()
    flags: tuple[str, ...] = ("--direct-only",)
    if given == "--ca":
        env, flags = env_for(wss(relay)), (*flags, "--ca", str(cert.cert))
    else:
        env = env_for(wss(relay), DELSHARE_CA=str(cert.cert))
    sent, received = run_pair([source], out, env, flags=flags, code=f"{code}-guitar-orbit")
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert (out / source.name).read_bytes() == source.read_bytes()


def test_wss_without_ca_fails_naming_the_cause(relay: RelayProcess, workdir: Path) -> None:
    receiver = start(["receive", "9-guitar-orbit", "--output", str(workdir)], env_for(wss(relay)))
    done = finish(receiver, 30)
    assert done.returncode == 1
    assert "certificate verify failed: unknown CA" in done.stderr and "--ca" in done.stderr
    assert "Traceback" not in done.stderr


def test_wss_against_the_plain_port_names_the_cause(workdir: Path) -> None:
    plain = start_relay_process(workdir, turn=False)
    try:
        url = f"wss://127.0.0.1:{plain.rendezvous_port}"
        done = finish(start(["receive", "9-guitar-orbit", "-o", str(workdir)], env_for(url)), 30)
    finally:
        stop(plain.process)
    assert done.returncode == 1
    assert "not a TLS server" in done.stderr, done.stderr


def test_bad_ca_file_is_a_usage_error(relay: RelayProcess, workdir: Path) -> None:
    bogus = workdir / "not-a-cert.pem"
    bogus.write_text("hello\n")
    done = finish(start(["receive", "9-guitar-orbit", "--ca", str(bogus)], env_for(wss(relay))), 30)
    assert done.returncode == 2, done.stderr
    assert "--ca" in done.stderr


def test_turns_hostname_mismatch_and_plain_server_are_named(workdir: Path) -> None:
    other = make_self_signed(workdir / "other", names=("relay.example",))
    tls_port = free_port("tcp")
    tls = ["--cert", str(other.cert), "--key", str(other.key), "--no-rendezvous",
           "--tls-listen", f"127.0.0.1:{tls_port}"]  # fmt: skip
    running = start_relay_process(workdir, rendezvous=False, extra=tls)
    try:
        wait_listening(running.process, [tls_port], log=running.log)
        ca = ("-u", TURN_USER, "-p", TURN_PASSWORD, "--ca", str(other.cert))
        mismatch = turn_check(f"turns:127.0.0.1:{tls_port}?transport=tcp", *ca)
        plain = turn_check(f"turns:127.0.0.1:{running.turn_port}?transport=tcp", *ca)
    finally:
        stop(running.process)
    line = assert_one_line_failure(mismatch, "connect")
    assert "hostname mismatch" in line and "127.0.0.1" in line, line
    line = assert_one_line_failure(plain, "connect")
    assert "not a TLS server" in line, line
