"""deploy/: the systemd unit passes ``systemd-analyze verify``, the example config passes
``--check-config`` (issue 12 item 10)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.app.harness import DELSHARE
from tests.support.relay_process import relay_command
from tests.support.tlscert import make_self_signed

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "delshare-relay.service"
EXAMPLE = DEPLOY / "relay.toml"


def _unit_settings() -> dict[str, str]:
    lines = (line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in lines if not key.startswith("#")}


def test_unit_has_reload_restart_capabilities_and_a_stop_timeout_above_the_drain() -> None:
    unit = _unit_settings()
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Restart"] == "on-failure"
    assert unit["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert int(unit["LimitNOFILE"]) >= 65536
    assert unit["KillSignal"] == "SIGTERM"
    drain = re.search(r"^drain-timeout = ([\d.]+)", EXAMPLE.read_text(), re.M)
    assert drain is not None and int(unit["TimeoutStopSec"]) > float(drain.group(1))
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "RestrictAddressFamilies"):
        assert option in unit


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing (Debian package systemd); check by hand: "
    "systemd-analyze verify deploy/delshare-relay.service",
)
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """Warnings about the unit (unknown keys, bad values) count as failures; the binary path is
    pointed at the delshare under test, since verify checks it is executable."""
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/delshare", DELSHARE))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    about_unit = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert not about_unit, result.stderr


def test_example_config_passes_check_config(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    text = EXAMPLE.read_text()
    text = text.replace("/etc/delshare/tls/fullchain.pem", str(files.cert))
    text = text.replace("/etc/delshare/tls/privkey.pem", str(files.key))
    config = tmp_path / "relay.toml"
    config.write_text(text)
    result = subprocess.run(
        relay_command("--config", str(config), "--check-config"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "realm = relay.example.org" in result.stdout
    assert "tls-listen = 0.0.0.0:5349, [::]:5349" in result.stdout
