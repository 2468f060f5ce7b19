"""The three renderings of app events: key lines, JSON lines, and the rich progress display."""

from __future__ import annotations

import io
import json

import pytest

from delshare.app.events import (
    CodeAllocated,
    Event,
    FileVerified,
    NoticeIssued,
    OfferReceived,
    PeerConnected,
    ProgressUpdated,
    ResumeStarted,
    TransferFinished,
    TransferStarted,
)
from delshare.cli.ui import Ui, human_size, key_line

HEX = "ab" * 32
RUN: list[Event] = [
    CodeAllocated("7-guitar-orbit"),
    PeerConnected("relay", "203.0.113.1:3478"),
    OfferReceived(2, 3 << 20, ("dir",)),
    TransferStarted((1, 2), ("dir/a", "dir/b"), (1 << 20, 2 << 20), "receive"),
    ResumeStarted("dir/a", 4096, 1 << 20),
    ProgressUpdated(1, 1 << 20, 1 << 20),
    ProgressUpdated(2, 2 << 20, 3 << 20),
    FileVerified("dir/a", 1 << 20, HEX),
    FileVerified("dir/b", 2 << 20, HEX),
    NoticeIssued("skipping dir/link"),
    TransferFinished(2, 3 << 20, 3 << 20, 1.5),
]


def test_key_lines() -> None:
    lines = [key_line(e) for e in RUN]
    assert [line for line in lines if line] == [
        "code: 7-guitar-orbit",
        "connected: relay 203.0.113.1:3478",
        "resuming at 4096 of 1048576 dir/a",
        f"verified: blake3 {HEX} dir/a",
        f"verified: blake3 {HEX} dir/b",
        "done: 2 files, 3145728 bytes, 3145728 moved in 1.50 s (2.1 MB/s)",
    ]


def test_plain_prints_only_key_lines(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    ui = Ui("plain", out=out)
    for event in RUN:
        ui(event)
    ui.error("boom", 1)
    assert out.getvalue().splitlines() == [line for e in RUN if (line := key_line(e))]
    assert capsys.readouterr().err.splitlines() == ["note: skipping dir/link", "error: boom"]


def test_json_is_one_object_per_event() -> None:
    out = io.StringIO()
    ui = Ui("json", out=out)
    for event in RUN:
        ui(event)
    ui.error("boom", 3)
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(objects) == len(RUN) + 1
    assert objects[1] == {"event": "connected", "kind": "relay", "address": "203.0.113.1:3478"}
    assert objects[4] == {"event": "resuming", "name": "dir/a", "offset": 4096, "size": 1 << 20}
    assert objects[-1] == {"event": "error", "message": "boom", "exit_code": 3}


def test_rich_shows_bars_and_key_lines() -> None:
    out = io.StringIO()
    ui = Ui("rich", out=out)
    for event in RUN:
        ui(event)
    ui.close()
    text = out.getvalue()
    for line in filter(None, (key_line(e) for e in RUN)):
        assert line in text
    assert "receiving 2 file(s)" in text
    assert "skipping dir/link" in text


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (64 << 20, "64.0 MiB")]
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_rich_lists_a_bounded_number_of_hashes() -> None:
    out = io.StringIO()
    ui = Ui("rich", out=out)
    for n in range(25):
        ui(FileVerified(f"f{n}", 1, HEX))
    ui(TransferFinished(25, 25, 25, 1.0))
    text = out.getvalue()
    assert text.count("verified: blake3") == 20
    assert "verified: 5 more file(s)" in text
