"""A throwaway redis-server on 127.0.0.1 for tests; killed by PID."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

from tests.support.ports import free_port


def redis_missing() -> str | None:
    """Why Redis tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install -e '.[redis]')"
    return None


def start_redis(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on ``port`` (free if None); return the process and its URL."""
    import redis

    port = port or free_port("tcp")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(250):
            try:
                probe.ping()
                return process, f"redis://127.0.0.1:{port}/0"
            except redis.ConnectionError:
                time.sleep(0.02)
        process.kill()
        process.wait()
        raise RuntimeError("redis-server did not start")
    finally:
        probe.close()


@contextlib.contextmanager
def redis_running() -> Iterator[str]:
    """A redis-server (:func:`start_redis`) for a ``with`` block: yields its URL, then kills it."""
    process, url = start_redis()
    try:
        yield url
    finally:
        process.kill()
        process.wait()
