"""``delshare relay`` lifecycle with real processes: drain on SIGTERM, reload on SIGHUP (issue 12
item 3).

A relayed transfer (``send``/``receive --relay-only``) is frozen with SIGSTOP once its data
connection is bound, so the relay is signalled while the transfer is certainly live, then thawed
with SIGCONT. Size: ``DELSHARE_LIFECYCLE_MIB`` (default 64; the issue's long run is 1024, see
RELIABILITY.md "Restarts, reloads and broken links").
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from delshare.aio.client import connect_turn
from delshare.turn.client_errors import AuthenticationError
from tests.app.harness import (
    TURN_PASSWORD,
    TURN_USER,
    Outcome,
    env_for,
    finish,
    sha256_file,
    start,
)
from tests.support.ports import free_port
from tests.support.relay_process import RelayProcess, start_relay_process
from tests.support.tlscert import make_self_signed

SIZE_MIB = int(os.environ.get("DELSHARE_LIFECYCLE_MIB", "64"))
HOST = "127.0.0.1"
EXIT_TIMEOUT = 30.0


@contextmanager
def relays(*processes: RelayProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


def _rendezvous_port(node: RelayProcess) -> int:
    found = re.search(r"rendezvous listening on ws://[^ ]+:(\d+)", node.wait_for("rendezvous"))
    assert found is not None
    return int(found.group(1))


def _node(tmp_path: Path, name: str, *args: str) -> tuple[RelayProcess, int]:
    port = free_port("both")
    argv = ["--listen", f"{HOST}:{port}", "--allow-peer", "127.0.0.0/8", *args]
    return start_relay_process(argv, tmp_path / f"{name}.log"), port


class Transfer:
    """``send`` and ``receive --relay-only`` through ``turn_port``, frozen until ``thaw``."""

    def __init__(self, tmp_path: Path, rendezvous_port: int, turn_port: int) -> None:
        self.payload = tmp_path / "payload.bin"
        with self.payload.open("wb") as out:
            for _ in range(SIZE_MIB):
                out.write(os.urandom(1 << 20))
        self.out = tmp_path / "out"
        self.out.mkdir()
        env = env_for(f"ws://{HOST}:{rendezvous_port}", f"turn:{HOST}:{turn_port}")
        code = "5-guitar-orbit"
        self.sender = start(["send", str(self.payload), "--code", code, "--relay-only"], env)
        self.receiver = start(
            ["receive", code, "--output", str(self.out), "--yes", "--relay-only"], env
        )

    def freeze(self) -> None:
        for process in (self.sender, self.receiver):
            os.kill(process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for process in (self.sender, self.receiver):
            if process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)

    def finish(self) -> tuple[Outcome, Outcome]:
        received = finish(self.receiver)
        return finish(self.sender, 30), received

    def check(self) -> None:
        sent, received = self.finish()
        assert received.returncode == 0, received.stdout + received.stderr
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sha256_file(self.out / self.payload.name) == sha256_file(self.payload)

    def kill(self) -> None:
        for process in (self.sender, self.receiver):
            if process.poll() is None:
                process.kill()
                process.communicate()


@contextmanager
def live_transfer(
    tmp_path: Path, rendezvous_port: int, node: RelayProcess, port: int
) -> Iterator[Transfer]:
    transfer = Transfer(tmp_path, rendezvous_port, port)
    try:
        node.wait_for(" bound", timeout=60)
        transfer.freeze()
        assert transfer.receiver.poll() is None, "the transfer ended before it could be frozen"
        yield transfer
    finally:
        transfer.thaw()
        transfer.kill()


async def _allocate(
    port: int, password: str = TURN_PASSWORD, user: str = TURN_USER
) -> tuple[str, int]:
    """A TCP allocation at ``port`` (following a 300); the server that finally answered."""
    client = await connect_turn(f"turn:{HOST}:{port}?transport=tcp", user, password)
    try:
        await client.allocate_tcp()
        return client.server_address
    finally:
        await client.close()


def test_sigterm_drains_live_transfer_redirects_new_allocations_and_exits_0(
    tmp_path: Path,
) -> None:
    user = f"{TURN_USER}:{TURN_PASSWORD}"
    alternate, alt_port = _node(
        tmp_path, "alternate", "--user", user, "--rendezvous-listen", f"{HOST}:0"
    )
    rendezvous_port = _rendezvous_port(alternate)
    alternate_flags = ("--alternate-server", f"{HOST}:{alt_port}", "--drain-timeout", "120")
    node, port = _node(tmp_path, "node", "--user", user, "--no-rendezvous", *alternate_flags)
    with relays(alternate, node), live_transfer(tmp_path, rendezvous_port, node, port) as transfer:
        node.signal(signal.SIGTERM)
        log = node.wait_for("draining:")
        live = int(log.split("draining: ")[1].split(" allocations")[0])
        assert live >= 1
        assert asyncio.run(_allocate(port)) == (HOST, alt_port)  # 300 → the alternate
        node.wait_for("refused: 300 Try Alternate")
        assert node.process.poll() is None  # still serving the frozen transfer
        transfer.thaw()
        transfer.check()
        assert node.wait(EXIT_TIMEOUT) == 0
        assert "drained: no allocations left" in node.text()
        assert alternate.process.poll() is None


def test_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    node, port = _node(tmp_path, "node", "--no-rendezvous", "--drain-timeout", "600")

    async def hold_and_signal() -> int:
        client = await connect_turn(f"turn:{HOST}:{port}?transport=tcp", "del", "del")
        try:
            await client.allocate_tcp()
            node.signal(signal.SIGTERM)
            await asyncio.to_thread(node.wait_for, "draining: 1 allocations")
            node.signal(signal.SIGTERM)
            return await asyncio.to_thread(node.wait, EXIT_TIMEOUT)
        finally:
            await client.close()

    with relays(node):
        assert asyncio.run(hold_and_signal()) == 0
        assert "second signal: exiting now, cutting 1 allocations" in node.text()


def test_drain_timeout_ends_the_drain(tmp_path: Path) -> None:
    node, port = _node(tmp_path, "node", "--no-rendezvous", "--drain-timeout", "0.5")

    async def hold_and_signal() -> int:
        client = await connect_turn(f"turn:{HOST}:{port}?transport=tcp", "del", "del")
        try:
            await client.allocate_tcp()
            node.signal(signal.SIGTERM)
            return await asyncio.to_thread(node.wait, EXIT_TIMEOUT)
        finally:
            await client.close()

    with relays(node):
        assert asyncio.run(hold_and_signal()) == 0
        assert "drain timeout (0.5s): exiting, cutting 1 allocations" in node.text()


def _write_config(path: Path, password: str, extra: str = "") -> None:
    path.write_text(f'user = ["{TURN_USER}:{password}"]\nallow-peer = ["127.0.0.0/8"]\n{extra}')


def _login(port: int, password: str, user: str = TURN_USER) -> bool:
    try:
        asyncio.run(_allocate(port, password, user))
    except AuthenticationError:
        return False
    return True


def test_sighup_changes_a_password_without_cutting_a_live_transfer(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    _write_config(config, TURN_PASSWORD, "max-allocations = 50\n")
    port = free_port("both")
    node = start_relay_process(
        ["--config", str(config), "--listen", f"{HOST}:{port}", "--rendezvous-listen", f"{HOST}:0"],
        tmp_path / "node.log",
        ready="rendezvous listening",
    )
    rendezvous_port = _rendezvous_port(node)
    with relays(node), live_transfer(tmp_path, rendezvous_port, node, port) as transfer:
        _write_config(config, "new-password", "max-allocations = 40\n")
        node.signal(signal.SIGHUP)
        log = node.wait_for("reloaded ")
        assert "user changed" in log and "max-allocations 50 -> 40" in log
        assert "new-password" not in log
        assert _login(port, "new-password")
        assert not _login(port, TURN_PASSWORD)
        transfer.thaw()
        transfer.check()  # the live transfer kept the relay it had


def test_a_bad_config_on_sighup_keeps_the_old_one(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    _write_config(config, TURN_PASSWORD)
    port = free_port("both")
    node = start_relay_process(
        ["--config", str(config), "--listen", f"{HOST}:{port}", "--no-rendezvous"],
        tmp_path / "node.log",
    )
    with relays(node):
        config.write_text('user = ["alice:changed"]\nrelay-ip = "notanip"\nunknown-key = 1\n')
        node.signal(signal.SIGHUP)
        log = node.wait_for("keeping the old configuration")
        assert "'notanip' is not an IP address" in log and "unknown-key" in log
        assert _login(port, TURN_PASSWORD)
        assert not _login(port, "changed")
        config.write_text("this is [not toml")
        node.signal(signal.SIGHUP)
        node.wait_for("keeping the old configuration", count=2)
        assert _login(port, TURN_PASSWORD)
        assert node.process.poll() is None


def _served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old(tmp_path: Path) -> None:
    live = make_self_signed(tmp_path / "live")
    config = tmp_path / "relay.toml"
    tls_port = free_port("tcp")
    config.write_text(
        f'tls-listen = ["{HOST}:{tls_port}"]\ncert = "{live.cert}"\nkey = "{live.key}"\n'
    )
    args = ["--config", str(config), "--listen", f"{HOST}:0", "--no-rendezvous"]
    node = start_relay_process(args, tmp_path / "node.log", ready="TURN listening on tls")
    with relays(node):
        first = _served_certificate(tls_port)
        renewed = make_self_signed(tmp_path / "renewed")
        shutil.copy(renewed.cert, live.cert)
        shutil.copy(renewed.key, live.key)
        node.signal(signal.SIGHUP)
        node.wait_for("reloaded ")
        second = _served_certificate(tls_port)
        assert second != first
        live.key.write_text("not a key")
        node.signal(signal.SIGHUP)
        log = node.wait_for("keeping the old configuration")
        assert "certificate" in log
        assert _served_certificate(tls_port) == second


def test_sighup_names_what_needs_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    port, other = free_port("both"), free_port("both")
    config.write_text(f'listen = ["{HOST}:{port}"]\nrendezvous-listen = "{HOST}:0"\n')
    node = start_relay_process(["--config", str(config)], tmp_path / "node.log")
    with relays(node):
        node.wait_for("rendezvous listening")
        config.write_text(
            f'listen = ["{HOST}:{other}"]\nrendezvous-listen = "{HOST}:0"\n'
            "rendezvous-max-mailboxes = 5\nmax-lifetime = 900\n"
        )
        node.signal(signal.SIGHUP)
        log = node.wait_for("kept until a restart")
        kept = next(line for line in log.splitlines() if "kept until a restart" in line)
        assert "listen" in kept and "rendezvous-max-mailboxes" in kept
        assert "max-lifetime" not in kept  # applied at once
        assert "max-lifetime 3600 -> 900" in log
        assert _login(port, "del", user="del")  # the demo user, still where it listened


def test_a_full_node_redirects_to_its_alternate(tmp_path: Path) -> None:
    alternate, alt_port = _node(tmp_path, "alternate", "--no-rendezvous")
    node, port = _node(tmp_path, "node", "--no-rendezvous", "--max-allocations", "1",
                       "--alternate-server", f"{HOST}:{alt_port}")  # fmt: skip

    async def fill_then_allocate() -> tuple[str, int]:
        holder = await connect_turn(f"turn:{HOST}:{port}?transport=tcp", "del", "del")
        try:
            await holder.allocate_tcp()
            return await _allocate(port, "del", user="del")
        finally:
            await holder.close()

    with relays(alternate, node):
        assert asyncio.run(fill_then_allocate()) == (HOST, alt_port)
        assert "refused: 300 Try Alternate" in node.wait_for("refused: 300")
