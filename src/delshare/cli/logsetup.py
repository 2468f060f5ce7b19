"""Log output of long-running commands (``delshare relay``): text or JSON lines, stderr or a file.

``--log-format text`` (the default) prints ``TIME LEVEL message``; ``--log-format json`` prints one
JSON object per line (``time`` in ISO 8601 UTC, ``level``, ``logger``, ``message``, and
``exception`` when there is one) for log shippers. ``--log-file PATH`` appends to PATH instead
of stderr, reopening it when logrotate moves it (``WatchedFileHandler``); ``stdout`` and
``stderr`` name those streams, as in coturn's ``log-file``.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
import time

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside the message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, str] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` exactly as ``logging.Formatter(TEXT_FORMAT)`` prints it, with the date
    and time of day formatted once per second instead of once per record (``localtime`` and
    ``strftime``: the relay logs two lines per allocation, hundreds per second)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._stamp, self._second = stamp, second
        msec = self.default_msec_format
        return msec % (self._stamp, record.msecs) if msec else self._stamp


def log_handler(log_file: str | None) -> logging.Handler:
    """A handler writing to ``log_file`` (a path, ``stdout`` or ``stderr``; default stderr).

    Raises OSError when the file cannot be opened.
    """
    if log_file is None or log_file == "stderr":
        return logging.StreamHandler(sys.stderr)
    if log_file == "stdout":
        return logging.StreamHandler(sys.stdout)
    return logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")


def setup_logging(level: int, log_format: str = "text", log_file: str | None = None) -> None:
    """Send the root logger's records at ``level`` and above to one handler, replacing any."""
    handler = log_handler(log_file)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    _skip_unused_record_fields()


def _skip_unused_record_fields() -> None:
    """Neither format shows the caller, thread or process of a record: skip looking them up
    (the logging HOWTO's "Optimization" section). The relay logs two lines per allocation, and
    the caller's frame walk was about a quarter of what a line cost it."""
    logging._srcfile = None  # documented there as the switch for findCaller()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
