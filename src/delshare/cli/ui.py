"""How ``send`` and ``receive`` talk to people and scripts.

Three renderings of the same :mod:`delshare.app.events`:

- ``rich``: on a terminal, a total bar and a per-file bar with rate and ETA, plus lines for
  people: the code and how long it is valid, what is offered, the path (``connected: direct|relay
  ...``), and one summary line (``saved 3 files, 1.2 GiB to ./photos in 2.1 s (580 MiB/s)``);
- ``plain``: when stdout is not a terminal, the same lines without bars, and notices as
  ``note: ...`` on stderr;
- ``json``: one JSON object per line and per event (``--json``), errors included; the stable
  interface for scripts, documented in docs/json-events.md.

Per-file hashes (``verified: blake3 HEX NAME``) are printed with ``--verbose`` (and are always in
the JSON ``verified`` events). Sizes and rates are in binary units (KiB, MiB, GiB). Errors are
one line on stderr (or a JSON ``error`` event), never a traceback; bars stop where the transfer
stopped, so a failed transfer never shows 100%. Every line passes
:func:`delshare.text.printable` (JSON lines :func:`delshare.text.json_line`) on its way out: text
from a peer or a server (reasons, names, messages) never reaches the terminal raw.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Literal

from delshare.app.common import human_size
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
from delshare.text import json_line, printable

if TYPE_CHECKING:  # rich loads only when a terminal shows bars (~25 ms of start-up otherwise)
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, Task, TaskID

__all__ = [
    "Style",
    "Ui",
    "describe_offer",
    "human_duration",
    "human_rate",
    "human_size",
    "key_line",
    "pick_style",
]

Style = Literal["rich", "plain", "json"]
RATE_FLOOR = 1 << 20  # below a MiB moved, a rate says more about start-up than about the link


def human_rate(n_bytes: int, seconds: float) -> str:
    """``580 MiB/s``; empty when too little was moved to mean anything."""
    if seconds <= 0 or n_bytes < RATE_FLOOR:
        return ""
    return f"{human_size(n_bytes / seconds)}/s"


def human_duration(seconds: float) -> str:
    """``0.35 s``, ``2.1 s``, ``3 min 05 s``."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def describe_offer(files: int, total: int, names: tuple[str, ...], streaming: bool = False) -> str:
    """``photos (3 files, 1.2 GiB)``, ``a.txt, b.txt and 2 more (4 files, 12 MiB)``,
    ``stdin (size unknown)``."""
    shown = ", ".join(names[:3])
    if len(names) > 3:
        shown = f"{', '.join(names[:2])} and {len(names) - 2} more"
    size = "size unknown" if streaming else human_size(total)
    if len(names) == 1 and files == 1:
        return f"{shown} ({size})"
    return f"{shown} ({_count(files, 'file')}, {size})"


def pick_style(json_output: bool, stream: IO[str] | None = None) -> Style:
    """JSON if asked, rich on a terminal, plain otherwise."""
    if json_output:
        return "json"
    return "rich" if (stream or sys.stdout).isatty() else "plain"


def _minutes(seconds: float) -> str:
    return _count(round(seconds / 60), "minute") if seconds >= 60 else f"{seconds:.0f} s"


def _finished_line(event: TransferFinished) -> str:
    files, total, moved, seconds = event.files, event.total, event.moved, event.seconds
    verb = "saved" if event.direction == "receive" else "sent"
    line = f"{verb} {_count(files, 'file')}, {human_size(total)}"
    if event.saved_to:
        line += f" to {event.saved_to}"
    line += f" in {human_duration(seconds)}"
    rate = human_rate(moved, seconds)
    if moved < total:
        already = "already there" if event.direction == "receive" else "already at the receiver"
        detail = f"{human_size(moved)} moved, the rest {already}"
        line += f" ({detail}{', ' + rate if rate else ''})"
    elif rate:
        line += f" ({rate})"
    return line


def key_line(event: Event, verbose: bool = False) -> str | None:
    """The text line for an event (rich and plain alike), or None when it has none."""
    match event:
        case CodeAllocated(code):
            return f"code: {code}"
        case OfferPrepared(files, total, names, streaming):
            return f"offering {describe_offer(files, total, names, streaming)}"
        case TicketIssued(ticket):
            return f"ticket: {ticket}"
        case PeerConnected():
            return event.line
        case FileVerified(name, _size, digest, saved_as):
            return f"verified: blake3 {digest} {saved_as or name}" if verbose else None
        case FileSkipped(name, reason):
            return f"skipped {name}: {reason}"
        case LinkLost(reason):
            return f"link lost: {reason}; reconnecting\u2026"
        case Reconnected(kind, address, done, total):
            return (
                f"reconnected: {kind} {address}, "
                f"resuming at {human_size(done)} of {human_size(total)}"
            )
        case TextSent(characters):
            return f"done: text, {characters} character{'s' * (characters != 1)}"
        case ResumeStarted(name, offset, size):
            return f"resuming {name} at {human_size(offset)} of {human_size(size)}"
        case TransferFinished():
            return _finished_line(event)
    return None


def _code_hints(event: CodeAllocated) -> list[str]:
    valid = f", valid for {_minutes(event.valid_for)}" if event.valid_for > 0 else ""
    return [
        f"On the other device run:  delshare receive {event.code}",
        f"(the code works once{valid})",
    ]


def json_object(event: Event) -> dict[str, object]:
    """The ``--json`` form of an event (docs/json-events.md)."""
    name = {
        CodeAllocated: "code",
        OfferPrepared: "offering",
        TicketIssued: "ticket",
        PeerConnected: "connected",
        LinkLost: "link-lost",
        Reconnected: "reconnected",
        TextReceived: "text",
        TextSent: "text-sent",
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
    if fields.get("streaming") is False:  # only a stream says so (older readers see no change)
        del fields["streaming"]
    return {"event": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def _binary_rate_column() -> ProgressColumn:
    """Rich's transfer speed, in binary units like every other size we print."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BinaryRateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_size(speed)}/s")

    return BinaryRateColumn()


class Ui:
    """Renders events in one style; call it with each event, ``close()`` at the end."""

    def __init__(
        self, style: Style, *, out: IO[str] | None = None, label: str = "", verbose: bool = False
    ) -> None:
        self.style = style
        self.verbose = verbose
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
        self._offer: OfferReceived | None = None
        self._positions: dict[int, int] = {}
        self._current = -1
        self.transferring = False
        """Between ``TransferStarted`` and ``TransferFinished``: an interruption can resume."""
        self.asked = False
        """Whether the user was asked about the offer (the question showed it already)."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, TransferStarted | TransferFinished):
            self.transferring = isinstance(event, TransferStarted)
        if self.style == "json":
            self._write(json_line(json_object(event)))
        elif self.style == "plain":
            self._plain(event)
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

    def _lines(self, event: Event) -> list[str]:
        """What rich and plain print for an event (notices aside)."""
        match event:
            case CodeAllocated():
                return ["code: " + event.code, *_code_hints(event)]
            case TicketIssued(ticket):
                return [f"ticket: {ticket}", "On the sending device run:  delshare send PATH... "
                        "--to TICKET"]  # fmt: skip
            case OfferReceived():
                self._offer = event
                return []
            case TextReceived(text):
                return text.split("\n")  # each line escaped on its own
            case TransferStarted(direction="receive") if self._offer and not self.asked:
                offer = self._offer
                where = offer.output or "."
                described = describe_offer(offer.files, offer.total, offer.names, offer.streaming)
                return [f"receiving {described} into {where}"]
        line = key_line(event, self.verbose)
        return [line] if line is not None else []

    def _plain(self, event: Event) -> None:
        if isinstance(event, NoticeIssued):
            sys.stderr.write(f"{self._label}note: {printable(event.text)}\n")
            sys.stderr.flush()
            return
        for line in self._lines(event):
            self._write(line)

    def _rich(self, event: Event) -> None:
        match event:
            case TransferStarted():
                for line in self._lines(event):
                    self.print(line)
                self._start_bars(event)
            case ProgressUpdated(index, file_done, total_done):
                self._advance(index, file_done, total_done)
            case FileVerified():
                if self.verbose:
                    self.print(key_line(event, True) or "")
            case TransferFinished():
                self._stop_bars(finished=True)
                self.print(key_line(event) or "")
            case NoticeIssued(text):
                self.print(text)
            case _:
                for line in self._lines(event):
                    self.print(line)

    def _start_bars(self, plan: TransferStarted) -> None:
        assert self._console is not None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._plan = plan
        self._positions = {index: position for position, index in enumerate(plan.indexes)}
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _binary_rate_column(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        verb = "sending" if plan.direction == "send" else "receiving"
        self._total_task = self._progress.add_task(
            f"{self._label}{verb} {_count(len(plan.names), 'file')}",
            total=None if plan.streaming else max(sum(plan.sizes), 1),  # None: bytes, rate only
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
            f"{self._label}  {short}",
            total=None if self._plan.streaming else max(self._plan.sizes[position], 1),
        )

    def _stop_bars(self, finished: bool = False) -> None:
        """Stop the display where the transfer stands: the total bar is filled only when the
        transfer ``finished``; a failed or interrupted one keeps its real position."""
        if self._progress is not None:
            if finished and self._total_task is not None:
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
