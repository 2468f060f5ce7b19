"""Cases 5 and 6: file transfer and time to first byte, ours against magic-wormhole.

Each transfer launches the sending and the receiving command at the same moment and waits for
both to exit: wall time, MB/s (file size / wall), and the CPU seconds both commands used
(``RUSAGE_CHILDREN`` delta; the long-lived servers are not reaped during a run). The received
file is checked (size and SHA-256) outside the timed part.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

from bench import netns, profile
from bench.common import OUT_DIR, MiB, NotAvailable, Row, free_port
from bench.config import Config
from bench.servers import PASSWORD, USER, Server, delshare_cmd, start_delshare_relay
from bench.wormhole import BIN, WormholeServers, start_wormhole_servers, wormhole_cmd

DATA_DIR = OUT_DIR / "data"
RX_DIR = OUT_DIR / "rx"
_WORDS = ("acorn", "adult", "agent", "alarm", "album")
_NAMEPLATES = itertools.count(101)


def _fresh_code() -> str:
    """A code never used before in this run: a reused nameplate can meet a stale mailbox."""
    n = next(_NAMEPLATES)
    return f"{n}-{_WORDS[n % 5]}-{_WORDS[(n * 7 + 1) % 5]}"


@dataclass
class Transfer:
    """One run of a sender and a receiver."""

    wall: float
    cpu: float
    ok: bool
    why: str = ""
    connected: float | None = None  # when the receiver said it was connected to the sender


# ---- files -------------------------------------------------------------------------------------


def test_file(size: int) -> Path:
    """Random bytes of ``size`` (kept between runs in bench/out/data)."""
    path = DATA_DIR / f"random-{size}.bin"
    if path.exists() and path.stat().st_size == size:
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            out.write(os.urandom(n))
            left -= n
    tmp.replace(path)
    return path


@cache
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _fresh_dir(name: str) -> Path:
    path = RX_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    # Write back the previous runs' dirty pages now, outside the timing: otherwise a later
    # variant pays for an earlier one's gigabyte (balance_dirty_pages throttling).
    os.sync()
    return path


def _received_ok(src: Path, out_dir: Path) -> tuple[bool, str]:
    got = out_dir / src.name
    if not got.exists():
        return False, f"no file {got.name} in the output folder"
    if got.stat().st_size != src.stat().st_size:
        return False, f"size {got.stat().st_size} != {src.stat().st_size}"
    if sha256_of.__wrapped__(got) != sha256_of(src):
        return False, "SHA-256 differs"
    return True, ""


def byte_compile_ours() -> None:
    """Byte-compile our package into ``__pycache__``, as ``pip install`` does.

    Without it an editable install run with ``PYTHONDONTWRITEBYTECODE=1`` (set in some
    sandboxes and CI images) compiles every module of ours from source at each start, tens of
    milliseconds that no installed copy pays (magic-wormhole's venv is byte-compiled by pip).
    """
    spec = importlib.util.find_spec("delshare")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


# ---- running a pair of commands ----------------------------------------------------------------


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5.0)


def _reap_both(procs: Sequence[subprocess.Popen[bytes]], deadline: float) -> list[float]:
    """When each command exited (``perf_counter``), for those that exited before ``deadline``.

    One thread per command blocks in ``waitpid``, so an exit is seen when it happens:
    ``Popen.wait(timeout)`` polls with sleeps that double up to 50 ms, which rounded every
    pair's wall time up to the next poll (a pair done in 0.165-0.214 s read 0.217 s).
    """
    exits: list[float] = []

    def reap(proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        exits.append(time.perf_counter())

    reapers = [threading.Thread(target=reap, args=(proc,), daemon=True) for proc in procs]
    for reaper in reapers:
        reaper.start()
    for reaper in reapers:
        reaper.join(max(0.0, deadline - time.perf_counter()))
    return list(exits)


def _log_lines(
    proc: subprocess.Popen[bytes], log: Path, start: float, mark: bytes, marks: dict[str, float]
) -> None:
    """Copy a command's output to its log, each line stamped; note when ``mark`` first shows."""
    assert proc.stdout is not None
    with log.open("wb") as out:
        for line in proc.stdout:
            now = time.perf_counter() - start
            if mark and mark in line and "connected" not in marks:
                marks["connected"] = now
            out.write(f"[{now:7.3f}] ".encode() + line)


def run_pair(
    send: Sequence[str],
    recv: Sequence[str],
    *,
    recv_cwd: Path,
    log_dir: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    mark: bytes = b"",
) -> tuple[float, float, str, dict[str, float]]:
    """Start both commands at once, wait for both; (wall, cpu, error or "", marks).

    ``marks["connected"]`` is when the receiver first printed a line containing ``mark``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    marks: dict[str, float] = {}
    cpu0 = _children_cpu()
    start = time.perf_counter()
    procs, readers = [], []
    for argv, cwd, name, m in ((send, None, "send", b""), (recv, recv_cwd, "recv", mark)):
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        reader = threading.Thread(
            target=_log_lines, args=(proc, log_dir / f"{name}.log", start, m, marks), daemon=True
        )
        reader.start()
        readers.append(reader)
    exits = _reap_both(procs, start + timeout)
    wall = (max(exits) if len(exits) == len(procs) else time.perf_counter()) - start
    for proc in procs:
        _kill(proc)
    for reader in readers:
        reader.join(5.0)
    cpu = _children_cpu() - cpu0
    codes = [p.returncode for p in procs]
    if wall >= timeout:
        return wall, cpu, f"timed out after {timeout:.0f} s", marks
    if any(codes):
        tail = (log_dir / ("send.log" if codes[0] else "recv.log")).read_text(errors="replace")
        last = " / ".join(tail.strip().splitlines()[-3:])[-300:]
        return wall, cpu, f"exit codes {codes}: {last}", marks
    return wall, cpu, "", marks


# ---- the variants ------------------------------------------------------------------------------

Runner = Callable[[Path, int, Config], Transfer]


def _transfer(
    send: Sequence[str],
    recv: Sequence[str],
    src: Path,
    name: str,
    cfg: Config,
    mark: bytes,
    env: dict[str, str] | None = None,
) -> Transfer:
    out = _fresh_dir(name)
    log_dir = OUT_DIR / "logs" / name
    wall, cpu, err, marks = run_pair(
        send, recv, recv_cwd=out, log_dir=log_dir, timeout=cfg.transfer_max_s, mark=mark, env=env
    )
    if not err:
        _, err = _received_ok(src, out)
    if err:
        kept = _keep_logs(name)
        return Transfer(wall, cpu, False, f"{err} (logs: {kept})")
    shutil.rmtree(out, ignore_errors=True)  # its dirty pages go with it, unwritten
    return Transfer(wall, cpu, True, connected=marks.get("connected"))


def _keep_logs(name: str) -> Path:
    """Copy a failed run's logs aside (the next run of the variant overwrites them)."""
    src = OUT_DIR / "logs" / name
    dst = OUT_DIR / "logs" / f"failed-{name}-{time.strftime('%H%M%S')}"
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst.relative_to(OUT_DIR)


def plain_copy(src: Path, n: int, cfg: Config, fsync: bool = False) -> Transfer:
    """The limit: one plain loopback TCP socket, sendfile(2) on one side."""
    port = free_port()
    out = _fresh_dir("plain")
    mode = "recv-fsync" if fsync else "recv"
    py = [sys.executable, "-m", "bench.plaincopy"]
    wall, cpu, err, _ = run_pair(
        [*py, "send", str(port), str(src)],
        [*py, mode, str(port), str(out / src.name)],
        recv_cwd=out,
        log_dir=OUT_DIR / "logs" / "plain",
        timeout=cfg.transfer_max_s,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    if err:
        return Transfer(wall, cpu, False, err)
    ok, why = _received_ok(src, out)
    shutil.rmtree(out, ignore_errors=True)
    return Transfer(wall, cpu, ok, why)


def ours_args(server: Server, rendezvous: int, relayed: bool) -> list[str]:
    args = ["--rendezvous", f"ws://127.0.0.1:{rendezvous}"]
    if relayed:
        args += [
            "--turn",
            f"turn:127.0.0.1:{server.port}?transport=tcp",
            "--turn-user",
            USER,
            "--turn-password",
            PASSWORD,
            "--relay-only",
        ]
    else:
        args += ["--direct-only"]
    return args


def ours(server: Server, rendezvous: int, relayed: bool) -> Runner:
    def run(src: Path, n: int, cfg: Config) -> Transfer:
        code = _fresh_code()
        common = ours_args(server, rendezvous, relayed)
        name = "ours-relay" if relayed else "ours-direct"
        tag = f"{name}-{src.stat().st_size}-{code.split('-')[0]}"
        send = profile.wrap(
            [*delshare_cmd(), "send", "--code", code, *common, str(src)], f"{tag}-send"
        )
        recv = [*delshare_cmd(), "receive", "--yes", "--output", str(RX_DIR / name), *common]
        recv = profile.wrap([*recv, code], f"{tag}-recv")
        # our candidates: loopback only, so "direct" stays on 127.0.0.1
        env = {**os.environ, "DELSHARE_HOST_ADDRESSES": "127.0.0.1"}
        return _transfer(send, recv, src, name, cfg, b"connected:", env)

    return run


def wormhole(servers: WormholeServers, relayed: bool) -> Runner:
    def run(src: Path, n: int, cfg: Config) -> Transfer:
        if not relayed and not netns.is_private():
            raise NotAvailable("needs a private network namespace (root): its hints name eth0")
        code = _fresh_code()
        base = wormhole_cmd(servers)
        listen = ["--no-listen"] if relayed else []
        name = "wormhole-relay" if relayed else "wormhole-direct"
        send = [*base, "send", "--hide-progress", "--no-qr", *listen, "--code", code, str(src)]
        recv = [*base, "receive", "--hide-progress", *listen, "--accept-file", code]
        return _transfer(send, recv, src, name, cfg, b"Receiving (")

    return run


@contextmanager
def _ours_servers() -> Iterator[tuple[Server, int]]:
    rendezvous = free_port()
    server = start_delshare_relay("delshare-transfer", rendezvous_port=rendezvous)
    try:
        yield server, rendezvous
    finally:
        server.stop()


def _variants(stack: ExitStack, rows: dict[str, Row]) -> list[tuple[str, Runner]]:
    """Start what each variant needs; a variant whose servers fail gets a note, not a crash."""
    out: list[tuple[str, Runner]] = []
    try:
        server, rendezvous = stack.enter_context(_ours_servers())
        out += [
            ("ours direct", ours(server, rendezvous, False)),
            ("ours via TURN relay", ours(server, rendezvous, True)),
        ]
    except NotAvailable as exc:
        for key in ("ours direct", "ours via TURN relay"):
            rows[key].note = f"not available: {exc}"
    try:
        wh = stack.enter_context(start_wormhole_servers())
        out += [
            ("wormhole direct", wormhole(wh, False)),
            ("wormhole via transit relay", wormhole(wh, True)),
        ]
    except NotAvailable as exc:
        for key in ("wormhole direct", "wormhole via transit relay"):
            rows[key].note = f"not available: {exc}"
    return out


VARIANTS5 = [
    "plain socket copy",
    "plain socket copy + fsync",
    "ours direct",
    "ours via TURN relay",
    "wormhole direct",
    "wormhole via transit relay",
]


def case5(cfg: Config) -> list[Row]:
    """File transfer of ``cfg.file_bytes``: MB/s over the whole command wall time, and CPU."""
    src = test_file(cfg.file_bytes)
    sha256_of(src)
    metric = f"{cfg.file_bytes // MiB} MiB file"
    rows = {v: Row("5 file transfer", v, metric, "MB/s") for v in VARIANTS5}
    byte_compile_ours()
    with ExitStack() as stack:
        runners: list[tuple[str, Runner]] = [
            ("plain socket copy", plain_copy),
            ("plain socket copy + fsync", partial(plain_copy, fsync=True)),
            *_variants(stack, rows),
        ]
        for rep in range(cfg.transfer_reps):
            for name, runner in runners:
                _record(rows[name], runner, src, rep, cfg, mbps=True)
    return list(rows.values())


VARIANTS6 = ["ours direct", "ours via TURN relay", "wormhole direct", "wormhole via transit relay"]
STARTUP6 = ["ours startup (send --help)", "wormhole startup (send --help)"]


def _startup(argv: list[str], row: Row, reps: int) -> None:
    """Interpreter start + imports of one command: the floor under its time to first byte."""
    for _ in range(reps):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, timeout=60)
        if done.returncode != 0:
            row.note = f"failed: exit code {done.returncode}"
            return
        row.values.append(time.perf_counter() - start)


def case6(cfg: Config) -> list[Row]:
    """A tiny file: seconds from launching both commands to both finishing."""
    src = test_file(1024)
    cfg = replace(cfg, transfer_max_s=cfg.ttfb_max_s)
    byte_compile_ours()
    rows = {
        v: Row("6 time to first byte", v, "1 KiB file, both commands", "s", higher_is_better=False)
        for v in VARIANTS6
    }
    for v in STARTUP6:
        rows[v] = Row(
            "6 time to first byte", v, "one process, no transfer", "s", higher_is_better=False
        )
    _startup([*delshare_cmd(), "send", "--help"], rows[STARTUP6[0]], cfg.ttfb_reps)
    if (BIN / "wormhole").exists():
        _startup([str(BIN / "wormhole"), "send", "--help"], rows[STARTUP6[1]], cfg.ttfb_reps)
    else:
        rows[STARTUP6[1]].note = "not available: no bench/.venv-wormhole"
    with ExitStack() as stack:
        runners = _variants(stack, rows)
        for rep in range(cfg.ttfb_reps):
            for name, runner in runners:
                _record(rows[name], runner, src, 50 + rep, cfg, mbps=False)
    return list(rows.values())


def _record(row: Row, runner: Runner, src: Path, rep: int, cfg: Config, *, mbps: bool) -> None:
    if row.note.startswith(("failed", "not available")) and not row.values:
        return  # it failed once already: do not spend the time bound again
    try:
        res = runner(src, rep, cfg)
    except (NotAvailable, OSError) as exc:
        row.note = f"failed: {exc}"
        return
    if not res.ok:
        row.note = f"failed: {res.why}"
        return
    size = src.stat().st_size
    row.values.append(size / res.wall / 1e6 if mbps else res.wall)
    row.extra.setdefault("wall_s", []).append(res.wall)
    row.extra.setdefault("cpu_s", []).append(res.cpu)
    if res.connected is not None:
        row.extra.setdefault("connected_s", []).append(res.connected)
