"""make_self_signed writes a certificate a TLS server can load and a client can verify."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from tests.support.tlscert import make_self_signed


def test_loopback_handshake_verifies_against_the_cert(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(files.cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(5)


def test_key_is_private(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path, stem="x")
    assert files.key.stat().st_mode & 0o077 == 0
    assert files.cert.name == "x.crt"
