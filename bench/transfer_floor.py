"""The floor under case 5: the same work per byte as ``delshare send/receive``, with none of ours.

Run: ``python -m bench.transfer_floor [--mib N] [--reps N] [--record BYTES] [--unit BYTES]
[--hash-in-writer]``.

One process per side over one loopback TCP connection, one blocking thread each (plus, on the
receiving side, a writer thread), doing exactly what a DEL transfer does to every byte:

- sender: ``readinto`` a record's worth of the file (the page-cache copy), BLAKE3 it, seal it with
  AES-256-GCM (5-byte header as associated data, as :mod:`delshare.link.crypto` does) into an
  output buffer, ``sendall`` header and ciphertext;
- receiver: read the header and the ciphertext, ``decrypt_into`` a 4 MiB unit, BLAKE3 it (in the
  receiving thread, or with ``--hash-in-writer`` in the writer thread as ours does), and the writer
  thread ``pwrite``\\ s each full unit through an ``O_DIRECT`` descriptor into a preallocated file.

No asyncio, no record ring, no progress, no messages: what is left is AES, BLAKE3, the kernel's
copies and loopback TCP, and the disk. It prints each side's CPU seconds per GiB (``getrusage``)
and the rate, and, first, the disk alone: 1 GiB of 4 MiB ``O_DIRECT`` writes from one buffer,
which bounds any receiver that puts the bytes on disk before it exits (ours, or the plain copy
with fsync). Both digests are compared, so the work is really done.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import queue
import resource
import socket
import statistics
import threading
import time
from pathlib import Path

from blake3 import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import GiB, MiB
from bench.transfer_cases import RX_DIR, test_file

_KEY = bytes(32)
_HEADER = 5
_TAG = 16


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def _open_out(path: Path, size: int) -> tuple[int, int | None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with contextlib.suppress(OSError):
        os.posix_fallocate(fd, 0, size)
    try:
        direct: int | None = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT)
    except (OSError, AttributeError):
        direct = None
    return fd, direct


def disk_only(path: Path, size: int, unit: int) -> float:
    """Seconds to write ``size`` bytes in ``unit`` O_DIRECT writes from one aligned buffer."""
    fd, direct = _open_out(path, size)
    buffer = memoryview(mmap.mmap(-1, unit))
    start = time.perf_counter()
    try:
        for position in range(0, size, unit):
            os.pwrite(direct if direct is not None else fd, buffer, position)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        if direct is not None:
            os.close(direct)
        os.close(fd)
        path.unlink()


def _send(port: int, source: Path, record: int) -> bytes:
    aead, hasher = AESGCM(_KEY), blake3()
    plain = memoryview(mmap.mmap(-1, record))
    out = memoryview(mmap.mmap(-1, _HEADER + record + _TAG))
    counter = 0
    with socket.create_connection(("127.0.0.1", port)) as sock, open(source, "rb", 0) as f:
        while n := f.readinto(plain):
            hasher.update(plain[:n])
            header = b"\0" + (n + _TAG).to_bytes(4, "big")
            out[:_HEADER] = header
            aead.encrypt_into(_nonce(counter), plain[:n], header, out[_HEADER : _HEADER + n + _TAG])
            counter += 1
            sock.sendall(out[: _HEADER + n + _TAG])
    return hasher.digest()


def _read_exactly(sock: socket.socket, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            break
        got += n
    return got


def _receive(
    conn: socket.socket, path: Path, size: int, record: int, unit: int, hash_in_writer: bool
) -> bytes:
    aead, hasher = AESGCM(_KEY), blake3()
    header = bytearray(_HEADER)
    ciphertext = memoryview(mmap.mmap(-1, record + _TAG))
    units: queue.Queue[memoryview] = queue.Queue()
    for _ in range(4):
        units.put(memoryview(mmap.mmap(-1, unit)))
    full: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
    fd, direct = _open_out(path, size)
    errors: list[BaseException] = []

    def writer() -> None:
        position = 0
        try:
            while (item := full.get()) is not None:
                data, n = item
                if hash_in_writer:
                    hasher.update(data[:n])
                whole = n - n % 4096 if direct is not None else 0
                if whole:
                    os.pwrite(direct, data[:whole], position)  # type: ignore[arg-type]
                if n > whole:
                    os.pwrite(fd, data[whole:n], position + whole)
                position += n
                units.put(data)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    current, fill, counter = units.get(), 0, 0
    try:
        while _read_exactly(conn, memoryview(header)) == _HEADER:
            length = int.from_bytes(header[1:], "big")
            if length > record + _TAG or _read_exactly(conn, ciphertext[:length]) != length:
                raise SystemExit("bad record")
            n = length - _TAG
            if fill + n > unit:
                full.put((current, fill))
                current, fill = units.get(), 0
            target = current[fill : fill + n]
            aead.decrypt_into(_nonce(counter), ciphertext[:length], bytes(header), target)
            counter += 1
            if not hash_in_writer:
                hasher.update(target)
            fill += n
        if fill:
            full.put((current, fill))
    finally:
        full.put(None)
        thread.join()
        if direct is not None:
            os.close(direct)
        os.fsync(fd)
        os.close(fd)
    if errors:
        raise errors[0]
    return hasher.digest()


def one(source: Path, record: int, unit: int, hash_in_writer: bool) -> tuple[float, float, float]:
    """One copy: (seconds, receiver CPU-s, sender CPU-s)."""
    size = source.stat().st_size
    out = RX_DIR / "floor.bin"
    RX_DIR.mkdir(parents=True, exist_ok=True)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reader, writer = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the sender
        listener.close()
        os.close(reader)
        code = 1
        try:
            os.write(writer, _send(port, source, record))
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    try:
        conn, _ = listener.accept()
        cpu = _cpu()
        with conn:
            digest = _receive(conn, out, size, record, unit, hash_in_writer)
        elapsed, receiver_cpu = time.perf_counter() - start, _cpu() - cpu
        sent = os.read(reader, 64)
    finally:
        listener.close()
        os.close(reader)
        _, status, usage = os.wait4(pid, 0)
        out.unlink(missing_ok=True)
    if status or sent != digest:
        raise SystemExit("floor copy failed: sender exit status or digest differs")
    return elapsed, receiver_cpu, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--record", type=int, default=1 * MiB, help="plaintext bytes per record")
    parser.add_argument("--unit", type=int, default=4 * MiB, help="bytes per O_DIRECT write")
    parser.add_argument("--hash-in-writer", action="store_true")
    args = parser.parse_args()
    if args.unit < args.record:
        parser.error("--unit must hold at least one record")
    source = test_file(args.mib * MiB)
    size = source.stat().st_size
    scale = GiB / size
    RX_DIR.mkdir(parents=True, exist_ok=True)
    disk = disk_only(RX_DIR / "floor-disk.bin", size, args.unit)
    print(f"disk alone: {size / disk / 1e6:.0f} MB/s ({disk * scale:.3f} s per GiB)", flush=True)
    runs = []
    for _ in range(args.reps):
        elapsed, receiver, sender = one(source, args.record, args.unit, args.hash_in_writer)
        runs.append((receiver * scale, sender * scale))
        print(
            f"floor: {size / elapsed / 1e6:.0f} MB/s  recv {receiver * scale:.3f}  "
            f"send {sender * scale:.3f} CPU-s per GiB",
            flush=True,
        )
    receive_cpu = statistics.median(r for r, _ in runs)
    send_cpu = statistics.median(s for _, s in runs)
    print(
        f"median CPU-s per GiB: recv {receive_cpu:.3f}  send {send_cpu:.3f}  "
        f"total {receive_cpu + send_cpu:.3f}  (load {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
