"""A real ``delshare relay`` process, scraped while ``send``/``receive --relay-only`` run through
it (issue 12: "the metrics endpoint scraped during a transfer shows bytes growing before it
ends"). ``--max-bps`` stretches the transfer to a few seconds so there is a "during"."""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.app.harness import env_for, finish, start, start_relay_process, stop
from tests.support.ports import free_port

SIZE = 24 << 20
CAP = 8 << 20  # bytes per second: about 3 s for the file
BYTES = re.compile(r'^delshare_relay_bytes_total\{[^}]*transport="tcp"[^}]*\} ([0-9.e+]+)$', re.M)


def tcp_bytes(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(value) for value in BYTES.findall(text))


def test_bytes_grow_during_a_relayed_transfer(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(SIZE))
    out = tmp_path / "out"
    out.mkdir()
    metrics_port = free_port("tcp")
    extra = ["--metrics-listen", f"127.0.0.1:{metrics_port}", "--max-bps", str(CAP)]
    relay = start_relay_process(tmp_path, extra=extra)
    try:
        env = env_for(relay.rendezvous, relay.turn)
        code = "5-guitar-orbit"
        sender = start(["send", str(source), "--code", code, "--relay-only"], env)
        receiver = start(["receive", code, "-o", str(out), "--yes", "--relay-only"], env)
        during: list[float] = []
        deadline = time.monotonic() + 120
        while receiver.poll() is None and time.monotonic() < deadline:
            during.append(tcp_bytes(metrics_port))
            time.sleep(0.2)
        received, sent = finish(receiver), finish(sender)
        after = tcp_bytes(metrics_port)
    finally:
        stop(relay.process)
    assert received.returncode == 0 and sent.returncode == 0, received.stderr + sent.stderr
    assert (out / "big.bin").read_bytes() == source.read_bytes()
    moving = [v for v in during if 0 < v < SIZE]  # seen while the file was still under way
    assert len(set(moving)) >= 2, during  # and growing between scrapes
    assert moving == sorted(moving)
    assert after >= SIZE


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_a_rendezvous_only_node_serves_healthz_apart_from_metrics(tmp_path: Path) -> None:
    """``--no-turn`` with ``--metrics-listen``: ``/healthz`` says ready, not the metrics text."""
    metrics_port = free_port("tcp")
    node = start_relay_process(
        tmp_path, turn=False, extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    )
    try:
        base = f"http://127.0.0.1:{metrics_port}"
        assert _get(f"{base}/healthz") == (200, "ready\n")
        status, text = _get(f"{base}/metrics")
        assert status == 200 and "delshare_rendezvous_mailboxes" in text
        assert _get(f"{base}/nothing")[0] == 404
    finally:
        stop(node.process)
