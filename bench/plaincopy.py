"""The limit for case 5: copy a file over one plain loopback TCP socket, no crypto, no framing.

python -m bench.plaincopy recv PORT OUTFILE     (listens on 127.0.0.1:PORT, one connection)
python -m bench.plaincopy recv-fsync PORT OUTFILE   (the same, fsync before exit)
python -m bench.plaincopy send PORT INFILE      (connects, sendfile(2), close)
"""

from __future__ import annotations

import os
import socket
import sys
import time

CHUNK = 1 << 20


def receive(port: int, path: str, fsync: bool = False) -> None:
    with socket.create_server(("127.0.0.1", port)) as lst:
        lst.settimeout(30.0)
        conn, _ = lst.accept()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with conn, open(path, "wb") as out:
        conn.settimeout(30.0)
        while n := conn.recv_into(view):
            out.write(view[:n])
        if fsync:  # what a durable receiver pays (ours fsyncs before the rename)
            out.flush()
            os.fsync(out.fileno())


def send(port: int, path: str) -> None:
    deadline = time.monotonic() + 10.0
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30.0)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    with sock, open(path, "rb") as src:
        sock.sendfile(src)


def main(argv: list[str]) -> int:
    mode, port, path = argv[0], int(argv[1]), argv[2]
    if mode == "send":
        send(port, path)
    else:
        receive(port, path, fsync=mode == "recv-fsync")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
