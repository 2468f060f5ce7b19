"""Issue 10 item 7 and issue 11 defect 1: "already there" means the same content, not the same
size and mtime.

Real ``delshare send`` / ``delshare receive`` subprocesses on loopback. The receiver's folder has a
*different* file with the offered file's name, size and mtime. Old behaviour: skipped, exit 0, no
notice; with ``--overwrite`` it printed ``done: 1 file`` with no ``verified:`` line and kept the old
content. Now: re-sent and replaced with ``--overwrite``, refused without it (no terminal),
``--rename``d with it; an identical file is skipped with a line saying so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.adversarial.conftest import scaled
from tests.app.harness import RelayProcess, env_for, run_pair

SIZE = 1 << 20


def _twins(tmp_path: Path, name: str = "report.bin") -> tuple[Path, Path]:
    """A source and, in ``out``, a different file with the same name, size and mtime."""
    source = tmp_path / "src" / name
    source.parent.mkdir()
    source.write_bytes(os.urandom(SIZE))
    out = tmp_path / "out"
    out.mkdir()
    twin = out / name
    twin.write_bytes(os.urandom(SIZE))
    stamp = source.stat().st_mtime_ns
    os.utime(twin, ns=(stamp, stamp))
    return source, twin


def test_overwrite_replaces_a_different_file_with_the_same_size_and_mtime(
    relay: RelayProcess, tmp_path: Path
) -> None:
    source, twin = _twins(tmp_path)
    for attempt in range(scaled(1, 5)):
        sent, received = run_pair(
            [source], twin.parent, env_for(relay.rendezvous), code=f"{500 + attempt}-guitar-orbit",
            receive_flags=("--yes", "--overwrite", "--verbose"),
        )  # fmt: skip
        assert (sent.returncode, received.returncode) == (0, 0), (sent, received)
        assert twin.read_bytes() == source.read_bytes()
        assert received.line("verified: blake3 ").endswith(" report.bin")
        assert "skipped" not in received.stdout
        twin.write_bytes(os.urandom(SIZE))  # different again, same size and mtime
        stamp = source.stat().st_mtime_ns
        os.utime(twin, ns=(stamp, stamp))


def test_without_overwrite_a_different_file_is_a_conflict_not_a_skip(
    relay: RelayProcess, tmp_path: Path
) -> None:
    source, twin = _twins(tmp_path)
    mine = twin.read_bytes()
    env = env_for(relay.rendezvous)
    sent, received = run_pair([source], twin.parent, env, code="510-guitar-orbit")
    assert received.returncode == 1 and sent.returncode == 3, (sent, received)
    assert "report.bin already exists (use --overwrite or --rename)" in received.stderr
    assert twin.read_bytes() == mine
    sent, received = run_pair(
        [source], twin.parent, env, code="511-guitar-orbit", receive_flags=("--yes", "--rename")
    )
    assert (sent.returncode, received.returncode) == (0, 0), (sent, received)
    assert twin.read_bytes() == mine
    assert (twin.parent / "report (1).bin").read_bytes() == source.read_bytes()


def test_an_identical_file_is_skipped_with_a_line_saying_so(
    relay: RelayProcess, tmp_path: Path
) -> None:
    source, twin = _twins(tmp_path)
    twin.write_bytes(source.read_bytes())
    os.utime(twin, ns=(1, 1))  # another mtime: content decides, not the clock
    env = env_for(relay.rendezvous)
    sent, received = run_pair([source], twin.parent, env, code="512-guitar-orbit")
    assert (sent.returncode, received.returncode) == (0, 0), (sent, received)
    assert "skipped report.bin: already there, same content" in received.stdout.splitlines()
    assert "skipped report.bin: already there, same content" in sent.stdout.splitlines()
    sent, received = run_pair(
        [source], twin.parent, env, flags=("--json",), code="513-guitar-orbit"
    )
    events = [json.loads(line) for line in received.stdout.splitlines()]
    skipped = [e for e in events if e["event"] == "skipped"]
    assert skipped == [
        {"event": "skipped", "name": "report.bin", "reason": "already there, same content"}
    ]
    assert os.listdir(twin.parent) == ["report.bin"]
