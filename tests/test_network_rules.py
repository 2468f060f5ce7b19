"""The test session can only reach loopback: host candidates are loopback addresses only."""

from __future__ import annotations

import ast
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from delshare.config import chosen_host_addresses
from delshare.link.candidates import host_addresses

SEND = ["send", "--direct-only", "--text", "hi"]
LINK = Path(__file__).resolve().parents[1] / "src" / "delshare" / "link"


def test_host_candidates_are_loopback_only() -> None:
    addresses = host_addresses(chosen_host_addresses())
    assert "127.0.0.1" in addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


def test_explicit_host_addresses_replace_gathering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELSHARE_HOST_ADDRESSES", "127.0.0.2, ::1")
    chosen = chosen_host_addresses()
    assert chosen == (ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("::1"))
    assert host_addresses(chosen) == ["127.0.0.2", "::1"]


@pytest.mark.parametrize("path", sorted(LINK.glob("*.py")), ids=lambda p: p.name)
def test_link_reads_no_environment_variable(path: Path) -> None:
    """Settings are read at the edge (cli, config) and passed inward (issue 13 item 5)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"environ", "getenv", "environb"}, path.name


def test_a_bad_host_address_setting_is_a_usage_error() -> None:
    env = {**os.environ, "DELSHARE_HOST_ADDRESSES": "127.0.0.1,not-an-ip"}
    done = subprocess.run(
        [sys.executable, "-c", "from delshare.cli.main import main; main()", *SEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "DELSHARE_HOST_ADDRESSES" in done.stderr
