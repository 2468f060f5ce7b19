"""The three renderings of app events: key lines, JSON lines, and the rich progress display."""

from __future__ import annotations

import io
import json

import pytest

from delshare.app.events import (
    CodeAllocated,
    Event,
    FileSkipped,
    FileVerified,
    LinkLost,
    NoticeIssued,
    OfferPrepared,
    OfferReceived,
    PeerConnected,
    ProgressUpdated,
    Reconnected,
    ResumeStarted,
    TextReceived,
    TextSent,
    TicketIssued,
    TransferFinished,
    TransferStarted,
)
from delshare.cli.ui import Ui, human_size, json_object, key_line

HEX = "ab" * 32
RUN: list[Event] = [
    CodeAllocated("7-guitar-orbit"),
    PeerConnected("relay", "203.0.113.1:3478"),
    OfferReceived(2, 3 << 20, ("dir",), "out"),
    TransferStarted((1, 2), ("dir/a", "dir/b"), (1 << 20, 2 << 20), "receive"),
    ResumeStarted("dir/a", 4096, 1 << 20),
    ProgressUpdated(1, 1 << 20, 1 << 20),
    ProgressUpdated(2, 2 << 20, 3 << 20),
    FileVerified("dir/a", 1 << 20, HEX),
    FileVerified("dir/b", 2 << 20, HEX),
    NoticeIssued("skipping dir/link"),
    TransferFinished(2, 3 << 20, 3 << 20, 1.5, "receive", "./dir"),
]


def test_key_lines_are_for_people_and_hashes_only_verbose() -> None:
    lines = [key_line(e) for e in RUN]
    assert [line for line in lines if line] == [
        "code: 7-guitar-orbit",
        "connected: relay 203.0.113.1:3478",
        "resuming dir/a at 4.0 KiB of 1.0 MiB",
        "saved 2 files, 3.0 MiB to ./dir in 1.5 s (2.0 MiB/s)",
    ]
    verbose = [line for e in RUN if (line := key_line(e, verbose=True))]
    assert f"verified: blake3 {HEX} dir/a" in verbose
    assert f"verified: blake3 {HEX} dir/b" in verbose


def test_plain_prints_the_lines_and_notes_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    ui = Ui("plain", out=out)
    for event in RUN:
        ui(event)
    ui.error("boom", 1)
    assert out.getvalue().splitlines() == [
        "code: 7-guitar-orbit",
        "On the other device run:  delshare receive 7-guitar-orbit",
        "(the code works once)",
        "connected: relay 203.0.113.1:3478",
        "receiving dir (2 files, 3.0 MiB) into out",
        "resuming dir/a at 4.0 KiB of 1.0 MiB",
        "saved 2 files, 3.0 MiB to ./dir in 1.5 s (2.0 MiB/s)",
    ]
    assert capsys.readouterr().err.splitlines() == ["note: skipping dir/link", "error: boom"]


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (TransferFinished(1, 6, 6, 0.004, "receive", "./tiny.txt"),
         "saved 1 file, 6 B to ./tiny.txt in 0.00 s"),
        (TransferFinished(3, 1288490189, 1288490189, 2.1, "receive", "./photos"),
         "saved 3 files, 1.2 GiB to ./photos in 2.1 s (585 MiB/s)"),
        (TransferFinished(1, 500 << 20, 200 << 20, 4.0, "send"),
         "sent 1 file, 500 MiB in 4.0 s (200 MiB moved, the rest already at the receiver, "
         "50 MiB/s)"),
        (CodeAllocated("7-guitar-orbit", 600.0), "code: 7-guitar-orbit"),
        (OfferPrepared(3, 3 << 30, ("photos",)), "offering photos (3 files, 3.0 GiB)"),
        (OfferPrepared(1, 6, ("tiny.txt",)), "offering tiny.txt (6 B)"),
        (FileVerified("tiny.txt", 6, HEX, "tiny (1).txt"), None),
    ],
)  # fmt: skip
def test_human_lines(event: Event, line: str | None) -> None:
    assert key_line(event) == line


def test_verbose_hash_line_names_the_saved_file() -> None:
    event = FileVerified("tiny.txt", 6, HEX, "tiny (1).txt")
    assert key_line(event, verbose=True) == f"verified: blake3 {HEX} tiny (1).txt"
    assert json_object(event)["name"] == "tiny.txt"
    assert json_object(event)["saved_as"] == "tiny (1).txt"


def _rich_run(events: list[Event], error: str | None) -> str:
    out = io.StringIO()
    ui = Ui("rich", out=out)
    for event in events:
        ui(event)
    if error is not None:
        ui.error(error, 4)
    ui.close()
    return out.getvalue()


def test_bars_never_show_100_percent_for_an_unfinished_transfer() -> None:
    """Issue 11 defect 2: an interrupted 500 MiB transfer stopped at 200 MiB shows 200 MiB."""
    size = 500 << 20
    events: list[Event] = [
        TransferStarted((0,), ("big.bin",), (size,), "receive"),
        ProgressUpdated(0, 200 << 20, 200 << 20),
    ]
    text = _rich_run(events, "interrupted")
    assert "500.0/500.0 MiB" not in text and "100%" not in text
    assert "200.0/500.0 MiB" in text
    done = TransferFinished(1, size, size, 1.0, "receive", "./big.bin")
    finished = _rich_run([*events, ProgressUpdated(0, size, size), done], None)
    assert "500.0/500.0 MiB" in finished


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
    assert "receiving 2 files" in text
    assert "MiB/s" in text and "GB/s" not in text  # binary units in the bars too
    assert "skipping dir/link" in text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (64 << 20, "64 MiB"),
        (1288490189, "1.2 GiB"),
        (580 << 20, "580 MiB"),
        (5 << 40, "5.0 TiB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize("verbose", [False, True])
def test_rich_lists_hashes_only_when_verbose(verbose: bool) -> None:
    out = io.StringIO()
    ui = Ui("rich", out=out, verbose=verbose)
    for n in range(25):
        ui(FileVerified(f"f{n}", 1, HEX))
    ui(TransferFinished(25, 25, 25, 1.0, "receive", "out"))
    text = out.getvalue()
    assert text.count("verified: blake3") == (25 if verbose else 0)
    assert "saved 25 files, 25 B to out in 1.0 s" in text


def test_every_json_event_and_field_is_documented() -> None:
    """docs/json-events.md lists every event of ``--json`` with every field."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "json-events.md").read_text()
    samples: list[Event] = [
        *RUN,
        OfferPrepared(1, 1, ("a",)),
        TicketIssued("t"),
        FileSkipped("a", "already there, same content"),
        LinkLost("connection lost"),
        Reconnected("relay", "203.0.113.5:3478", 1, 2),
        TextReceived("hi"),
        TextSent(2),
    ]
    for event in samples:
        obj = json_object(event)
        assert f"| `{obj['event']}` |" in page
        for field in obj:
            if field != "event":
                assert f"`{field}`" in page, (obj["event"], field)
    assert "| `error` |" in page and "`exit_code`" in page
