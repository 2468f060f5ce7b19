"""What is being sent: a manifest of files and directories, and safe names on the receiving side.

Paths in a manifest are relative POSIX strings (``folder/sub/name.txt``). The sender builds them
from the command line without following symlinks inside a folder; the receiver treats them as
hostile until :func:`check_rel_path` and :func:`safe_destination` accept them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from delshare.fields import Fields
from delshare.text import is_printable, printable
from delshare.transfer.errors import ManifestError, UnsafePathError

__all__ = [
    "MAX_ENTRIES",
    "MAX_OFFER_BYTES",
    "TEMP_NAME",
    "BuiltManifest",
    "Destinations",
    "Entry",
    "Manifest",
    "build_manifest",
    "check_rel_path",
    "display_name",
    "safe_destination",
    "stream_manifest",
]

MAX_ENTRIES = 100_000
"""Files and folders in one offer (an offer of 100,000 is planned in a few seconds)."""
MAX_OFFER_BYTES = 64 << 20
"""Bytes of one offer message (JSON); the sender checks its own before sending."""
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_FILE_SIZE = 1 << 50

Kind = Literal["file", "dir"]
TEMP_NAME = re.compile(r"\.delshare-[0-9a-f]{16}\.(?:part|json)")
"""The receiver's temporary names (:func:`delshare.transfer.resume.temp_paths`): not in offers."""

_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or directory: relative POSIX path, size, permission bits, mtime in ns.

    ``stream``: a file whose size is unknown until its end (``delshare send -``); ``size`` is
    then 0 here and ``null`` on the wire (an older receiver rejects such an offer as invalid)."""

    path: str
    kind: Kind
    size: int = 0
    mode: int = 0o644
    mtime_ns: int = 0
    stream: bool = False

    def to_wire(self) -> dict[str, object]:
        """The JSON object for an offer."""
        wire: dict[str, object] = {
            "path": self.path,
            "kind": self.kind,
            "size": None if self.stream else self.size,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
        }
        if self.stream:
            wire["stream"] = True
        return wire

    @classmethod
    def from_wire(cls, obj: object) -> Entry:
        """Parse and validate one offered entry (raises ManifestError / UnsafePathError).

        Read through :class:`delshare.fields.Fields`: an error names the field and the entry.
        """
        error = _EntryError()
        fields = Fields(obj, error, _ENTRY)
        path = error.path = fields.text("path", max_len=MAX_OFFER_BYTES)  # length: check_rel_path
        kind = fields.one_of("kind", _KINDS)
        stream = fields.flag("stream", default=False)
        if stream and (kind != "file" or not fields.has("size") or not fields.null("size")):
            raise ManifestError(f"bad stream entry {display_name(path)}")
        size = 0 if stream else fields.integer("size", 0, MAX_FILE_SIZE, default=0)
        if kind == "dir" and size:
            raise ManifestError(f"bad size for {display_name(path)}")
        mode = fields.integer("mode", 0, 0o7777, default=0o644)
        mtime = fields.integer("mtime_ns", 1 - (1 << 62), (1 << 62) - 1, default=0)
        check_rel_path(path)
        return cls(path, kind, size, mode & 0o777, mtime, stream)


_ENTRY = "manifest entry"
_KINDS: tuple[Kind, ...] = ("file", "dir")


class _EntryError:
    """ManifestError naming the entry by its path once known, made printable only on failure."""

    __slots__ = ("path",)

    def __init__(self) -> None:
        self.path = ""

    def __call__(self, message: str) -> Exception:
        if self.path:
            message = message.replace(_ENTRY, f"{_ENTRY} {display_name(self.path)}", 1)
        return ManifestError(message)


@dataclass(frozen=True, slots=True)
class Manifest:
    """An ordered list of entries; parents always come before their children."""

    entries: tuple[Entry, ...]

    @property
    def total_bytes(self) -> int:
        """Sum of file sizes."""
        return sum(e.size for e in self.entries if e.kind == "file")

    @property
    def streaming(self) -> bool:
        """Whether a file's size is unknown until its end (a stream: no resume, no total)."""
        return any(e.stream for e in self.entries)

    @property
    def file_count(self) -> int:
        """Number of file entries."""
        return sum(1 for e in self.entries if e.kind == "file")

    def validate(self) -> None:
        """Whole-list checks: bounds, duplicates, parents first, names reserved for .part files."""
        if len(self.entries) > MAX_ENTRIES:
            raise ManifestError(f"manifest has more than {MAX_ENTRIES} entries")
        kinds: dict[str, Kind] = {}
        for entry in self.entries:
            if entry.path in kinds:
                raise ManifestError(f"duplicate path {display_name(entry.path)}")
            parent = entry.path.rpartition("/")[0]
            if parent and kinds.get(parent) != "dir":
                raise ManifestError(f"{display_name(entry.path)} comes before its folder")
            kinds[entry.path] = entry.kind
        for name in kinds:
            if TEMP_NAME.fullmatch(name.rpartition("/")[2]):
                raise ManifestError(f"{display_name(name)} is a name reserved for partial files")


@dataclass(frozen=True, slots=True)
class BuiltManifest:
    """A sender's manifest plus where each entry's bytes come from and what was left out."""

    manifest: Manifest
    sources: tuple[Path, ...]
    skipped: tuple[str, ...] = field(default=())
    stream: BinaryIO | None = None
    """Where the bytes of the manifest's ``stream`` entry come from (read until its end)."""


def check_rel_path(rel: str) -> tuple[str, ...]:
    """Return the components of a safe relative POSIX path, or raise UnsafePathError.

    Refused: empty, absolute, backslashes, drive letters or other colons, NUL, control and
    other characters :func:`delshare.text.printable` would escape (bidi overrides and isolates
    such as U+202E, zero-width and line-separator characters: a name is only accepted if what
    is shown is exactly what goes to disk), empty / ``.`` / ``..`` components, components ending
    in a dot or space, Windows device names (``CON``, ``nul.txt``, ``COM1``...), over-long names.
    """
    shown = _Shown(rel)
    if not rel or rel.startswith("/"):
        raise UnsafePathError(f"absolute or empty path '{shown}'")
    if "\\" in rel or ":" in rel:
        raise UnsafePathError(f"backslash or colon in path '{shown}'")
    if not is_printable(rel) or "\ufffd" in rel:
        raise UnsafePathError(f"control, bidi or invisible character in path '{shown}'")
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"unencodable path '{shown}'") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePathError(f"path too long '{shown}'")
    parts = tuple(rel.split("/"))
    for part in parts:
        _check_component(part, shown)
    return parts


class _Shown:
    """A name made printable only if an error message needs it (most names pass)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __str__(self) -> str:
        return display_name(self._name)

    __format__ = object.__format__


def _check_component(part: str, shown: _Shown) -> None:
    if part in ("", ".", ".."):
        raise UnsafePathError(f"empty, '.' or '..' component in '{shown}'")
    if part.endswith((".", " ")):
        raise UnsafePathError(f"component ending in dot or space in '{shown}'")
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafePathError(f"name too long in '{shown}'")
    stem = part.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_DEVICES:
        raise UnsafePathError(f"reserved device name in '{shown}'")


def safe_destination(output_dir: Path, rel_path: str) -> Path:
    """Map a manifest path into ``output_dir``; refuse anything that could land outside it.

    Besides :func:`check_rel_path`, every existing component below ``output_dir`` must be a real
    directory (not a symlink), and the resolved result must stay under the resolved output dir.
    """
    parts = check_rel_path(rel_path)
    root = Path(os.path.realpath(output_dir))
    current = root
    for index, part in enumerate(parts):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise UnsafePathError(f"cannot inspect '{display_name(rel_path)}': {exc}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"'{display_name(rel_path)}' passes through a symlink")
        if index < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"'{display_name(rel_path)}' passes through a non-directory")
    destination = root.joinpath(*parts)
    if os.path.commonpath([root, os.path.realpath(destination)]) != str(root):
        raise UnsafePathError(f"'{display_name(rel_path)}' resolves outside the output folder")
    return destination


class Destinations:
    """:func:`safe_destination` for every path of one offer: the output folder is resolved once
    and each folder checked (a real directory, not a symlink, or missing) is remembered, so a
    100,000-entry offer costs one ``lstat`` per entry instead of one per path component.

    Same rules: every existing component is a real directory (the last may be a file), none is
    a symlink; the result is the resolved output folder joined with the checked components, so
    it cannot leave it. Use it while nothing else changes the folders (planning an offer).
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(output_dir))
        self._root = str(self.root)
        self._folders: dict[str, bool] = {"": True}  # checked folder (relative) -> exists
        self._paths: dict[str, Path] = {}

    def __call__(self, rel_path: str) -> Path:
        """The destination of ``rel_path``, or UnsafePathError."""
        known = self._paths.get(rel_path)
        if known is not None:
            return known
        check_rel_path(rel_path)
        if self.folder_exists(rel_path.rpartition("/")[0], rel_path):
            self._check(rel_path, rel_path, last=True)
        path = self._paths[rel_path] = Path(f"{self._root}/{rel_path}")
        return path

    def folder_exists(self, rel_dir: str, rel_path: str = "") -> bool:
        """Whether folder ``rel_dir`` exists (checking it and its parents on first use)."""
        known = self._folders.get(rel_dir)
        if known is not None:
            return known
        unchecked = []
        while rel_dir not in self._folders:
            unchecked.append(rel_dir)
            rel_dir = rel_dir.rpartition("/")[0]
        exists = self._folders[rel_dir]
        for folder in reversed(unchecked):
            exists = exists and self._check(folder, rel_path or folder, last=False)
            self._folders[folder] = exists
        return exists

    def _check(self, rel: str, shown: str, *, last: bool) -> bool:
        try:
            st = os.lstat(f"{self._root}/{rel}")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise UnsafePathError(f"cannot inspect '{display_name(shown)}': {exc}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"'{display_name(shown)}' passes through a symlink")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"'{display_name(shown)}' passes through a non-directory")
        return True


def display_name(name: str) -> str:
    """A name safe to print (:func:`delshare.text.printable`): escape sequences, control and
    bidi characters and undecodable bytes are shown as visible ``\\xNN``/``\\uNNNN`` escapes."""
    return printable(name)


def build_manifest(paths: Iterable[str | os.PathLike[str]]) -> BuiltManifest:
    """Build a manifest from files and folders given by the user.

    Folders are walked recursively in sorted order without following symlinks; symlinks,
    sockets, devices and FIFOs inside them are skipped and listed in ``skipped``. A symlink
    named directly on the command line is followed (the user asked for it).
    """
    entries: list[Entry] = []
    sources: list[Path] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        top = Path(raw)
        name = Path(os.path.abspath(top)).name
        if not name:
            raise ManifestError(f"cannot send '{display_name(str(raw))}': no name")
        if name.casefold() in seen:
            raise ManifestError(f"two inputs are both named '{display_name(name)}'")
        seen.add(name.casefold())
        try:
            st = os.stat(top)
        except OSError as exc:
            raise ManifestError(f"cannot read '{display_name(str(raw))}': {exc}") from exc
        for entry, source in _walk(top, name, st, skipped):
            entries.append(entry)
            sources.append(source)
    manifest = Manifest(tuple(entries))
    manifest.validate()
    _check_offer_size(manifest)
    return BuiltManifest(manifest, tuple(sources), tuple(skipped))


def stream_manifest(source: BinaryIO, name: str = "stdin", mode: int = 0o644) -> BuiltManifest:
    """An offer of one file read from ``source`` until its end (size unknown: a stream)."""
    check_rel_path(name)
    entry = Entry(name, "file", 0, mode, time.time_ns(), stream=True)
    return BuiltManifest(Manifest((entry,)), (Path(name),), stream=source)


def _check_offer_size(manifest: Manifest) -> None:
    """Refuse here, before a code is spent, a file list the receiver would refuse as too big."""
    size = len(json.dumps([e.to_wire() for e in manifest.entries], separators=(",", ":")))
    if size > MAX_OFFER_BYTES - 4096:  # room for the offer's other fields
        raise ManifestError(
            f"the list of files is {size >> 20} MiB, at most {MAX_OFFER_BYTES >> 20} MiB can be "
            "offered at once (send fewer files, or fewer long names, at once)"
        )


def _entry(rel: str, st: os.stat_result) -> Entry:
    try:
        check_rel_path(rel)
    except UnsafePathError as exc:
        raise ManifestError(f"cannot send '{display_name(rel)}': {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, "dir", 0, st.st_mode & 0o777, st.st_mtime_ns)
    return Entry(rel, "file", st.st_size, st.st_mode & 0o777, st.st_mtime_ns)


def _walk(
    path: Path, rel: str, st: os.stat_result, skipped: list[str]
) -> Iterator[tuple[Entry, Path]]:
    if stat.S_ISREG(st.st_mode):
        yield _entry(rel, st), path
        return
    if not stat.S_ISDIR(st.st_mode):
        skipped.append(rel)
        return
    yield _entry(rel, st), path
    for child in _sorted_children(path):
        child_st = child.stat(follow_symlinks=False)
        if stat.S_ISREG(child_st.st_mode) or stat.S_ISDIR(child_st.st_mode):
            yield from _walk(Path(child.path), f"{rel}/{child.name}", child_st, skipped)
        else:
            skipped.append(f"{rel}/{child.name}")


def _sorted_children(path: Path) -> Sequence[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise ManifestError(f"cannot list '{display_name(str(path))}': {exc}") from exc
