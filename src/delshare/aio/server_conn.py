"""One TCP or TLS connection from a client to the TURN server (RFC 8656 §3.1, RFC 6062 §4).

It starts as a STUN stream: frames are cut one at a time (RFC 8656 §12.5 framing) and handed to
the core. When the core answers a ConnectionBind on it (RFC 6062 §5.4), framing stops at once:
the bytes read past that frame, the queued output and the ConnectionBind response become the
prefixes of a ``bridge`` to the peer socket, so nothing is lost or reordered. Plain TCP uses the
raw socket (so the bridge can splice); TLS uses an asyncio stream pair.

A plain TCP connection is read by a readiness callback (``start``), not by a task awaiting
``sock_recv``: uvloop's ``sock_recv`` registers and unregisters the descriptor with epoll on
every call (five system calls and a future per read), and case 3 of the bench reads each
control connection four times in its one-millisecond life. The callback is registered once;
the idle timeout is one timer, re-armed lazily (a read only moves its deadline). TLS keeps the
stream reader (``read_frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from delshare.aio.pipe import Endpoint
from delshare.errors import StunDecodeError
from delshare.stun.framing import frame_length
from delshare.turn.server_events import FiveTuple

READ_SIZE = 65536
MAX_PENDING_INPUT = 2 * 65536 + 8  # one maximal frame plus slack (RFC 8656 §12.5)
MAX_PENDING_OUTPUT = 4 << 20  # beyond this, whole frames to a stuck client are dropped
FINISH_GRACE = 2.0  # seconds a finished TLS connection gets to complete its shutdown


class ClientConnection:
    """Reads frames, writes frames without blocking the loop, and can turn into a data pipe."""

    def __init__(
        self,
        five: FiveTuple,
        endpoint: Endpoint,
        on_frame: Callable[[ClientConnection, bytes], None],
    ) -> None:
        self.five = five
        self.endpoint = endpoint
        self._on_frame = on_frame
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self._writing = False
        self.bind: tuple[int, bytes] | None = None  # (conn_id, ConnectionBind response)
        self.handover: tuple[int, bytes] | None = None  # (worker, frame): another owns it
        self.leftover = b""
        self.closed = False
        # the readiness-callback reader of a plain TCP connection (``start``)
        self._buffer = bytearray()
        self._reading = False
        self._idle_timeout: Callable[[], float | None] = _unbounded
        self._on_end: Callable[[ClientConnection, BaseException | None], None] | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- reading: plain TCP, by a readiness callback ----------------------------------------------

    def start(
        self,
        idle_timeout: Callable[[], float | None],
        on_end: Callable[[ClientConnection, BaseException | None], None],
        initial: bytes = b"",
    ) -> None:
        """Feed frames to the core from a readiness callback (plain TCP only) until EOF, a
        framing error, ``idle_timeout()`` seconds without bytes (None: unbounded, asked again
        after each read), too much unframed input, or a ConnectionBind success or handover.

        Then the callback is removed and ``on_end(self, error)`` runs once (``error``: what
        ended it, if anything was raised). ``initial``: bytes another relay worker read
        before handing the connection over.
        """
        assert isinstance(self.endpoint, socket.socket)
        self._idle_timeout = idle_timeout
        self._on_end = on_end
        if initial and not self._take(initial):
            return
        self._reading = True
        self._loop.add_reader(self.endpoint.fileno(), self._readable)
        self._wait_until()

    def _readable(self) -> None:
        if not self._reading:
            return
        sock = self.endpoint
        assert isinstance(sock, socket.socket)
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not data:
            self._end(None)
        elif self._take(data) and self._reading:
            self._wait_until()

    def _take(self, data: bytes) -> bool:
        """Hand the whole frames of the buffer plus ``data`` to the core; False if that ended
        the reading (a framing error, a ConnectionBind or handover, too much unframed input)."""
        buffer = self._buffer
        buffer += data
        try:
            bound = self._cut_frames(buffer)
        except Exception as exc:  # handed to ``on_end``, which logs bugs
            self._end(exc)
            return False
        if bound or len(buffer) > MAX_PENDING_INPUT:
            self._end(None)
            return False
        return True

    def _wait_until(self) -> None:
        """Move the idle deadline (one timer per connection, re-armed only when it fires)."""
        timeout = self._idle_timeout()
        if timeout is None:
            self._deadline = None
            return
        self._deadline = self._loop.time() + timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._reading or self._deadline is None:
            return
        if self._loop.time() < self._deadline:  # bytes came meanwhile: wait the rest
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._end(None)

    def _stop_reading(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading:
            self._reading = False
            sock = self.endpoint
            assert isinstance(sock, socket.socket)
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())

    def _end(self, error: BaseException | None) -> None:
        self._stop_reading()
        if self.bind is not None or self.handover is not None:
            self.leftover = bytes(self._buffer)
        self._buffer = bytearray()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self, error)

    # -- reading: TLS, by a task -------------------------------------------------------------------

    async def read_frames(self, idle_timeout: Callable[[], float | None]) -> None:
        """Feed frames to the core until EOF, a framing error, or a ConnectionBind success
        (TLS only: a plain TCP connection is read by ``start``).

        ``idle_timeout()`` bounds each wait for bytes (None: unbounded); running out ends it.
        """
        assert not isinstance(self.endpoint, socket.socket)
        reader = self.endpoint[0]
        buffer = bytearray()
        while True:
            try:
                async with asyncio.timeout(idle_timeout()):  # a timer, not a task per read
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                return
            if not data:
                return
            buffer += data
            if self._cut_frames(buffer):
                self.leftover = bytes(buffer)
                return
            if len(buffer) > MAX_PENDING_INPUT:
                return

    def _cut_frames(self, buffer: bytearray) -> bool:
        """Hand every whole frame to the core; True once the connection was bound."""
        while len(buffer) >= 4:
            try:
                size = frame_length(bytes(buffer[:4]))
            except StunDecodeError:
                buffer.clear()
                raise
            if len(buffer) < size:
                return False
            frame = bytes(buffer[:size])
            del buffer[:size]
            self._on_frame(self, frame)
            if self.bind is not None or self.handover is not None:
                return True
        return False

    # -- writing ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue one whole frame; drop it whole if the client is not reading."""
        if self.closed or self.bind is not None:
            return
        if isinstance(self.endpoint, socket.socket):
            self._write_raw(self.endpoint, data)
        else:
            writer = self.endpoint[1]
            if writer.transport.get_write_buffer_size() + len(data) <= MAX_PENDING_OUTPUT:
                writer.write(data)

    def _write_raw(self, sock: socket.socket, data: bytes) -> None:
        if self._out:
            if len(self._out) + len(data) <= MAX_PENDING_OUTPUT:
                self._out += data
            return
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return
        if sent < len(data):
            self._out += data[sent:]
            self._loop.add_writer(sock.fileno(), self._flush_raw, sock)
            self._writing = True

    def _flush_raw(self, sock: socket.socket) -> None:
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._out.clear()
            sent = 0
        del self._out[:sent]
        if not self._out:
            self._stop_writer()

    def _stop_writer(self) -> None:
        if self._writing and isinstance(self.endpoint, socket.socket):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self.endpoint.fileno())
        self._writing = False

    def take_output(self) -> bytes:
        """Bytes queued but not yet written (they precede the relayed data)."""
        self._stop_writer()
        out = bytes(self._out)
        self._out.clear()
        return out

    def finish(self) -> None:
        """End the connection from our side once what is queued is written (RFC 6062 §5.5).

        The reader sees end of file (plain TCP: ``shutdown(SHUT_RD)``; TLS: the transport
        closes after flushing), so its owner's usual teardown runs: descriptor released.
        """
        if self.closed or self.bind is not None:
            return
        if isinstance(self.endpoint, socket.socket):
            if self._out:
                with contextlib.suppress(OSError):
                    self._flush_raw(self.endpoint)
            with contextlib.suppress(OSError):
                self.endpoint.shutdown(socket.SHUT_RD)
        else:  # close_notify goes out after the queued records; a client that never answers
            # it would hold the descriptor for the whole SSL shutdown timeout: cut it short
            writer = self.endpoint[1]
            writer.close()
            self._loop.call_later(FINISH_GRACE, writer.transport.abort)

    def close(self) -> None:
        """Close the connection (a no-op once a bridge owns it)."""
        if self.closed:
            return
        self.closed = True
        self._stop_writer()
        if isinstance(self.endpoint, socket.socket):
            self._stop_reading()  # before the descriptor's number can be reused
            self._on_end = None
            self.endpoint.close()
        else:
            self.endpoint[1].close()


def _unbounded() -> float | None:
    return None
