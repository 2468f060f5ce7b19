"""Loopback throughput: DEL's encrypted transfer vs a plain Python socket copy of the same file.

Run: ``python -m bench.transfer_micro SOURCE_FILE OUTPUT_DIR [ROUNDS]``. Each round copies
SOURCE_FILE once with a plain blocking socket loop (reader process: ``readinto`` + ``sendall``;
writer process: ``recv_into`` + ``write`` + ``fsync``) and once with ``send_files`` /
``receive_files`` over a handshaken RecordChannel, sender and receiver in separate processes.
It prints MB/s, the ratio, and each side's CPU seconds. ``--no-verify`` receives with
``verify=False`` (no whole-file SHA-256 on either side); ``--uvloop`` runs both DEL sides on
uvloop.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delshare.link.records import handshake
from delshare.transfer import receiver as receiver_module
from delshare.transfer import sender as sender_module
from delshare.transfer.manifest import build_manifest

_KEY = bytes(32)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Run:
    """One timed copy: bytes per second and CPU seconds of the receiving and sending process."""

    rate: float
    receiver_cpu: float
    sender_cpu: float


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _listen() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    return listener, int(listener.getsockname()[1])


def _timed(receive: Any, send: Any) -> Run:
    """Fork the sender, run the receiver here; time from fork to the receiver's return."""
    listener, port = _listen()
    start, cpu = time.perf_counter(), _cpu()
    pid = os.fork()
    if pid == 0:
        listener.close()
        try:
            send(port)
        finally:
            os._exit(0)
    connection, _ = listener.accept()
    received = receive(connection)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    _, _, usage = os.wait4(pid, 0)
    listener.close()
    return Run(received / elapsed, cpu, usage.ru_utime + usage.ru_stime)


def plain_copy(source: Path, destination: Path) -> Run:
    """The reference: a plain socket copy of ``source`` into ``destination``."""

    def send(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            buffer = memoryview(bytearray(_CHUNK))
            with open(source, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    sock.sendall(buffer[:n])

    def receive(connection: socket.socket) -> int:
        buffer, total = memoryview(bytearray(_CHUNK)), 0
        with connection, open(destination, "wb", buffering=0) as f:
            while n := connection.recv_into(buffer):
                f.write(buffer[:n])
                total += n
            os.fsync(f.fileno())
        return total

    return _timed(receive, send)


_run: Any = asyncio.run
_options: dict[str, Any] = {}


def del_copy(source: Path, output_dir: Path) -> Run:
    """DEL: handshake, then send_files / receive_files of ``source`` into ``output_dir``."""

    async def sender(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        channel = await handshake(reader, writer, _KEY, "sender")
        await sender_module.send_files(channel, build_manifest([source]))
        await channel.close()

    async def receiver(connection: socket.socket) -> int:
        reader, writer = await asyncio.open_connection(sock=connection)
        channel = await handshake(reader, writer, _KEY, "receiver")
        stats = await receiver_module.receive_files(channel, output_dir, overwrite=True, **_options)
        await channel.close()
        return stats.bytes_received

    return _timed(lambda c: _run(receiver(c)), lambda p: _run(sender(p)))


def main(argv: list[str]) -> None:
    """Alternate plain and DEL copies for a few rounds; print per-round and median figures."""
    global _run
    if "--uvloop" in argv:
        argv = [a for a in argv if a != "--uvloop"]
        import uvloop

        _run = uvloop.run
    if "--no-verify" in argv:
        argv = [a for a in argv if a != "--no-verify"]
        _options["verify"] = False
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(2)
    source, output_dir = Path(argv[0]), Path(argv[1])
    rounds = int(argv[2]) if len(argv) > 2 else 3
    output_dir.mkdir(parents=True, exist_ok=True)
    plain_runs, del_runs = [], []
    for _ in range(rounds):
        plain_runs.append(plain_copy(source, output_dir / "plain-copy"))
        (output_dir / "plain-copy").unlink()
        del_runs.append(del_copy(source, output_dir))
        (output_dir / source.name).unlink()
        print(f"plain {_fmt(plain_runs[-1])}   del {_fmt(del_runs[-1])}", flush=True)
    plain, ours = _median(plain_runs), _median(del_runs)
    print(
        f"median: plain {plain / 1e6:.0f} MB/s, del {ours / 1e6:.0f} MB/s, ratio {ours / plain:.2f}"
    )


def _fmt(run: Run) -> str:
    return (
        f"{run.rate / 1e6:5.0f} MB/s (cpu recv {run.receiver_cpu:.2f}s send {run.sender_cpu:.2f}s)"
    )


def _median(runs: list[Run]) -> float:
    rates = sorted(r.rate for r in runs)
    return rates[len(rates) // 2]


if __name__ == "__main__":
    main(sys.argv[1:])
