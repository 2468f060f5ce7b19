"""How ``send`` and ``receive`` talk to people and scripts.

Three renderings of the same :mod:`delshare.app.events`:

- ``rich``: on a terminal, a total bar and a per-file bar with rate and ETA, plus the key lines;
- ``plain``: when stdout is not a terminal, only the key lines (``code: ...``,
  ``connected: direct|relay ...``, ``verified: blake3 <hex> <name>``, ``done: ...``), and
  notices as ``note: ...`` on stderr;
- ``json``: one JSON object per line and per event (``--json``), errors included.

Errors are one line on stderr (or a JSON ``error`` event), never a traceback. Every line passes
:func:`delshare.text.printable` (JSON lines :func:`delshare.text.json_line`) on its way out: text
from a peer or a server (reasons, names, messages) never reaches the terminal raw.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Literal

from delshare.app.events import (
    CodeAllocated,
    Event,
    FileSkipped,
    FileVerified,
    NoticeIssued,
    OfferReceived,
    PeerConnected,
    ProgressUpdated,
    ResumeStarted,
    TicketIssued,
    TransferFinished,
    TransferStarted,
)
from delshare.text import json_line, printable

if TYPE_CHECKING:  # rich loads only when a terminal shows bars (~25 ms of start-up otherwise)
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["Style", "Ui", "human_size", "pick_style"]

Style = Literal["rich", "plain", "json"]
RICH_VERIFIED_LINES = 20  # on a terminal; plain and JSON output list every file


def human_size(n: float) -> str:
    """``1.5 MiB``-style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def pick_style(json_output: bool, stream: IO[str] | None = None) -> Style:
    """JSON if asked, rich on a terminal, plain otherwise."""
    if json_output:
        return "json"
    return "rich" if (stream or sys.stdout).isatty() else "plain"


def key_line(event: Event) -> str | None:
    """The plain-text line for events that scripts and tests rely on, else None."""
    match event:
        case CodeAllocated(code):
            return f"code: {code}"
        case TicketIssued(ticket):
            return f"ticket: {ticket}"
        case PeerConnected():
            return event.line
        case FileVerified(name, _size, digest):
            return f"verified: blake3 {digest} {name}"
        case FileSkipped(name, reason):
            return f"skipped {name}: {reason}"
        case ResumeStarted(name, offset, size):
            return f"resuming at {offset} of {size} {name}"
        case TransferFinished(files, total, moved, seconds):
            rate = moved / seconds / 1e6 if seconds > 0 else 0.0
            return (
                f"done: {files} file{'s' * (files != 1)}, {total} bytes, "
                f"{moved} moved in {seconds:.2f} s ({rate:.1f} MB/s)"
            )
    return None


def json_object(event: Event) -> dict[str, object]:
    """The ``--json`` form of an event."""
    name = {
        CodeAllocated: "code",
        TicketIssued: "ticket",
        PeerConnected: "connected",
        OfferReceived: "offer",
        TransferStarted: "started",
        ResumeStarted: "resuming",
        ProgressUpdated: "progress",
        FileVerified: "verified",
        FileSkipped: "skipped",
        TransferFinished: "done",
        NoticeIssued: "notice",
    }[type(event)]
    fields = {k: getattr(event, k) for k in event.__slots__}
    return {"event": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


class Ui:
    """Renders events in one style; call it with each event, ``close()`` at the end."""

    def __init__(self, style: Style, *, out: IO[str] | None = None, label: str = "") -> None:
        self.style = style
        self._out_override = out
        self._label = label
        self._console: Console | None = None
        if style == "rich":
            from rich.console import Console

            self._console = Console(file=out, highlight=False)
        self._progress: Progress | None = None
        self._total_task: TaskID | None = None
        self._file_task: TaskID | None = None
        self._plan: TransferStarted | None = None
        self._positions: dict[int, int] = {}
        self._current = -1
        self._verified = 0

    def __call__(self, event: Event) -> None:
        if self.style == "json":
            self._write(json_line(json_object(event)))
        elif self.style == "plain":
            line = key_line(event)
            if line is not None:
                self._write(line)
            elif isinstance(event, NoticeIssued):
                sys.stderr.write(f"{self._label}note: {printable(event.text)}\n")
        else:
            self._rich(event)

    @property
    def _out(self) -> IO[str]:
        # Looked up at each write: a live rich display elsewhere may have redirected stdout.
        return self._out_override or sys.stdout

    def _write(self, line: str) -> None:
        self._out.write(f"{self._label}{printable(line)}\n")
        self._out.flush()

    def print(self, text: str) -> None:
        """A line for people (rich only; plain and JSON stay quiet)."""
        if self._console is not None:
            target = self._progress.console if self._progress is not None else self._console
            target.print(f"{self._label}{printable(text)}", markup=False, soft_wrap=True)

    def _rich(self, event: Event) -> None:
        match event:
            case CodeAllocated(code):
                self.print(f"code: {code}")
                self.print(f"On the other device run:  delshare receive {code}")
            case TicketIssued(ticket):
                self.print(f"ticket: {ticket}")
                self.print("On the sending device run:  delshare send PATH... --to TICKET")
            case OfferReceived(files, total, names):
                shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
                self.print(f"offer: {files} file{'s' * (files != 1)}, {human_size(total)}: {shown}")
            case TransferStarted():
                self._start_bars(event)
            case ProgressUpdated(index, file_done, total_done):
                self._advance(index, file_done, total_done)
            case FileVerified():
                self._stop_bars()
                self._verified += 1
                if self._verified <= RICH_VERIFIED_LINES:
                    self.print(key_line(event) or "")
            case TransferFinished():
                self._stop_bars()
                hidden = self._verified - RICH_VERIFIED_LINES
                if hidden > 0:
                    self.print(f"verified: {hidden} more file(s) (--json lists every hash)")
                self.print(key_line(event) or "")
            case NoticeIssued(text):
                self.print(text)
            case _:
                line = key_line(event)
                if line is not None:
                    self.print(line)

    def _start_bars(self, plan: TransferStarted) -> None:
        assert self._console is not None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._plan = plan
        self._positions = {index: position for position, index in enumerate(plan.indexes)}
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        verb = "sending" if plan.direction == "send" else "receiving"
        self._total_task = self._progress.add_task(
            f"{self._label}{verb} {len(plan.names)} file(s)", total=max(sum(plan.sizes), 1)
        )
        self._progress.start()

    def _advance(self, index: int, file_done: int, total_done: int) -> None:
        if self._progress is None or self._plan is None or self._total_task is None:
            return
        position = self._file_position(index)
        if position is not None and position != self._current:
            self._switch_file(position)
        if self._file_task is not None:
            self._progress.update(self._file_task, completed=file_done)
        self._progress.update(self._total_task, completed=total_done)

    def _file_position(self, index: int) -> int | None:
        """Manifest index -> position among files (directories have no bar)."""
        return self._positions.get(index)

    def _switch_file(self, position: int) -> None:
        assert self._progress is not None and self._plan is not None
        if self._file_task is not None:
            self._progress.remove_task(self._file_task)
        self._current = position
        name = self._plan.names[position]
        short = name if len(name) <= 40 else "..." + name[-37:]
        self._file_task = self._progress.add_task(
            f"{self._label}  {short}", total=max(self._plan.sizes[position], 1)
        )

    def _stop_bars(self) -> None:
        if self._progress is not None:
            if self._total_task is not None:
                task = self._progress.tasks[0]
                self._progress.update(self._total_task, completed=task.total)
            if self._file_task is not None:
                self._progress.remove_task(self._file_task)
                self._file_task = None
            self._progress.stop()
            self._progress = None

    def error(self, message: str, exit_code: int) -> None:
        """One clear line: stderr for people, an ``error`` event for ``--json``."""
        self._stop_bars()
        if self.style == "json":
            self._write(json_line({"event": "error", "message": message, "exit_code": exit_code}))
        else:
            sys.stderr.write(f"{self._label}error: {printable(message)}\n")
            sys.stderr.flush()

    def close(self) -> None:
        self._stop_bars()
