"""Put received files in place: part files, fsync, rename without clobbering, modes, folders.

Theory of operation: each file is written to a short hidden ``.delshare-<hex>.part`` next to its
final name, with a state file naming the final name and the source's size and mtime (so any
legal name, up to 255 bytes, can be received: :func:`delshare.transfer.resume.temp_paths`);
once its digest is checked (:mod:`delshare.transfer.receiver`) it is fsynced, given its mode
(``& 0o755`` and the receiver's umask: no setuid/setgid/sticky, no group/other write) and mtime,
then renamed into place (never over an existing file unless ``overwrite``). A broken link leaves
the .part for resume. Folders: an existing folder is used as it is (its mode and mtime are never
changed: receiving a ``Documents`` of mode 0777 into a folder that has one must not open it up);
a folder this run creates gets the sender's mode masked like a file's (``& 0o755``, the umask),
plus ``0o700``. Every function here blocks: the session runs them in its writer thread.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

from delshare.portable import metadata_on_descriptors
from delshare.transfer.diskio import PartWriter, preallocate
from delshare.transfer.errors import DestinationExistsError, LocalIOError
from delshare.transfer.manifest import display_name
from delshare.transfer.receive_plan import Target
from delshare.transfer.resume import remove_quietly, write_sidecar

__all__ = [
    "close_part",
    "discard_part",
    "file_mode",
    "finish_dirs",
    "folder_mode",
    "install_file",
    "make_dirs",
    "open_part",
]

_FILE_MODE_MASK = 0o755


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def file_mode(sender_mode: int) -> int:
    """A received file's mode: the sender's, without setuid/setgid/sticky, group/other write or
    what the receiver's umask removes."""
    return sender_mode & _FILE_MODE_MASK & ~_umask()


def folder_mode(sender_mode: int) -> int:
    """A folder this run created: masked like a file, and always usable by its owner."""
    return file_mode(sender_mode) | 0o700


def make_dirs(targets: list[Target]) -> None:
    """Create the offered folders (parents come first in a manifest); keep existing ones as is."""
    for target in targets:
        if target.entry.kind != "dir":
            continue
        try:
            os.mkdir(target.final, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target.final).st_mode):
                raise LocalIOError(f"{display_name(target.entry.path)} is not a folder") from None
        else:
            target.created = True


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_part(target: Target, offset: int) -> int:
    """Write the sidecar, open the .part without following symlinks, cut it at ``offset``."""
    if offset == 0:
        remove_quietly(target.part, target.sidecar)
    if not target.entry.stream:  # a stream is never resumed: no state file
        _write_new(target.sidecar, target)
    fd = os.open(target.part, _OPEN_FLAGS, 0o600)
    os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    if not target.entry.stream:
        preallocate(fd, offset, target.entry.size - offset)
    return fd


def _write_new(path: Path, target: Target) -> None:
    if path.is_symlink():
        raise LocalIOError(f"{display_name(str(path))} is a symlink")
    write_sidecar(path, target.entry, target.chunk, target.final)


def close_part(part: PartWriter) -> None:
    part.close()
    os.close(part.fd)


def discard_part(target: Target, fd: int) -> None:
    os.close(fd)
    remove_quietly(target.part, target.sidecar)


def install_file(target: Target, fd: int, overwrite: bool) -> None:
    """fsync, set mode and mtime, rename into place without clobbering, drop the sidecar."""
    by_descriptor = metadata_on_descriptors()
    try:
        os.fsync(fd)
        if by_descriptor:
            os.fchmod(fd, file_mode(target.entry.mode))
            os.utime(fd, ns=(target.entry.mtime_ns, target.entry.mtime_ns))
    finally:
        os.close(fd)
    if not by_descriptor:  # Windows has neither on a descriptor: by path, once closed
        os.chmod(target.part, file_mode(target.entry.mode))
        no_follow = os.utime in os.supports_follow_symlinks
        ns = (target.entry.mtime_ns, target.entry.mtime_ns)
        os.utime(target.part, ns=ns, follow_symlinks=not no_follow)
    if overwrite:
        os.replace(target.part, target.final)
    else:
        _rename_no_clobber(target.part, target.final)
    remove_quietly(target.sidecar)
    _fsync_dir(target.final.parent)


def _rename_no_clobber(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        raise DestinationExistsError(
            f"{display_name(destination.name)} appeared meanwhile"
        ) from None
    except OSError:  # no hard links on this filesystem
        if destination.exists() or destination.is_symlink():
            raise DestinationExistsError(f"{display_name(destination.name)} exists") from None
        os.rename(source, destination)
        return
    os.unlink(source)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finish_dirs(targets: list[Target]) -> None:
    """Give created folders their mode and mtime, deepest first (writing files changed them)."""
    for target in reversed(targets):
        if target.entry.kind == "dir" and target.created:
            os.chmod(target.final, folder_mode(target.entry.mode))
            os.utime(target.final, ns=(target.entry.mtime_ns,) * 2, follow_symlinks=False)
