"""``delshare relay --log-format json --log-file PATH``, and failed logins in those logs (issue 12).

The relay runs as a real subprocess; a TURN client with a wrong password tries to allocate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from delshare.aio.client import connect_turn
from delshare.cli.logsetup import TEXT_FORMAT, TextFormatter, setup_logging
from delshare.turn.client_errors import AuthenticationError

CODE = "from delshare.cli.main import main; main()"
START_TIMEOUT = 20.0


def _relay(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CODE, "relay", "--no-rendezvous", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, pattern: str, process: subprocess.Popen[str]) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and (match := re.search(pattern, path.read_text())):
            return match
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path}")


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        return process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def test_json_log_file_has_one_object_per_line_and_failed_logins(tmp_path: Path) -> None:
    log_file = tmp_path / "relay.log"
    process = _relay(
        "--listen", "127.0.0.1:0", "--user", "alice:right-password",
        "--log-format", "json", "--log-file", str(log_file),
    )  # fmt: skip
    try:
        port = int(_wait_for(log_file, r"TURN listening on tcp 127\.0\.0\.1:(\d+)", process)[1])

        async def wrong_password() -> tuple[str, int]:
            uri = f"turn:127.0.0.1:{port}?transport=tcp"
            client = await connect_turn(uri, "alice", "wrong-password")
            try:
                where = client.local_address
                with pytest.raises(AuthenticationError):
                    await client.allocate_tcp()
            finally:
                await client.close()
            return where

        host, client_port = asyncio.run(wrong_password())
        _wait_for(log_file, "login failed", process)
    finally:
        stdout, stderr = _stop(process)
    assert process.returncode == 0
    assert stdout == "" and stderr == ""  # everything went to the file
    lines = log_file.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses on its own
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    failed = [e for e in entries if "login failed" in e["message"]]
    assert len(failed) == 1
    assert failed[0]["level"] == "INFO"
    assert "'alice'" in failed[0]["message"]
    assert f"{host}:{client_port}" in failed[0]["message"]
    assert "wrong_password" in failed[0]["message"]
    assert "wrong-password" not in log_file.read_text()  # never the password


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--bps-capacity", "1000000"), "bps-capacity needs max-bps"),
        (("--max-bps", "-1"), "--max-bps"),
        (("--log-format", "xml"), "--log-format"),
        (("--log-file", "/nonexistent-dir/relay.log"), "--log-file"),
    ],
)
def test_bad_bandwidth_and_log_flags_are_usage_errors(
    args: tuple[str, ...], complaint: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CODE, "relay", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and complaint in lines[0], lines


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_records_skip_the_caller_thread_and_process_lookups(tmp_path: Path) -> None:
    """Neither format shows them; the relay logs per allocation (BENCHMARKS.md, issue 15)."""
    root = logging.getLogger()
    saved = (
        list(root.handlers),
        root.level,
        logging._srcfile,
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
    )
    path = tmp_path / "relay.log"
    keep = _Keep()
    try:
        setup_logging(logging.INFO, "text", str(path))
        root.addHandler(keep)
        logging.getLogger("delshare.test").info("allocation %d created", 7)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler is not keep:
                handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging._srcfile = saved[2]
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved[3:]
    (record,) = keep.records
    assert (record.funcName, record.lineno) == ("(unknown function)", 0)
    assert (record.threadName, record.processName) == (None, None)
    assert re.fullmatch(r"\S+ \S+ INFO allocation 7 created\n", path.read_text())


def test_the_text_format_caches_only_the_second() -> None:
    """``TextFormatter`` formats each second's date and time once; every line is still what
    ``logging.Formatter(TEXT_FORMAT)`` prints, within a second, across one, and back in time."""
    ours, stdlib = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    base = 1_764_950_400.0  # midnight UTC, 2025-12-05
    for created in (base - 0.001, base, base + 0.25, base + 0.999, base + 1.0, base - 3600.5):
        record = logging.makeLogRecord({"msg": "allocation %d deleted", "args": (7,)})
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == stdlib.format(record)
