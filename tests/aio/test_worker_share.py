"""``SharedQuota``, the allocation counts of ``--workers N``, with a real second process.

The table's lock is a POSIX record lock, held per process: a subprocess that inherits the
table's descriptor and locks it is what another worker in the middle of its check looks like.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from delshare.aio.worker_share import SharedQuota

STEP = 10.0
LIMITS = (2, 2, 2)  # per user, per IP, total
HOLD = (
    "import fcntl, sys; fcntl.lockf(int(sys.argv[1]), fcntl.LOCK_EX); "
    "print('locked', flush=True); sys.stdin.readline()"
)


def test_a_release_does_not_wait_for_another_workers_lock() -> None:
    """Ending an allocation lowers this worker's own row without the lock (two ``lockf``
    calls per allocation instead of four): with another process holding the lock, the
    release still completes, and the counts are right for the next check."""
    quota = SharedQuota(2)
    quota.row = 1
    assert quota.take("u", "192.0.2.1", LIMITS) is None
    assert quota.take("u", "192.0.2.1", LIMITS) is None
    assert quota.take("u", "192.0.2.1", LIMITS) == "user"  # the limit holds
    fd = quota._file.fileno()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(fd)],
        pass_fds=[fd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    release = threading.Thread(target=quota.release, args=("u", "192.0.2.1"), daemon=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == b"locked\n"
        release.start()
        release.join(STEP)
        finished_while_locked = not release.is_alive()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits, the kernel drops its lock
        holder.wait(STEP)
        if release.is_alive():
            release.join(STEP)
    assert finished_while_locked
    assert quota.total(1) == 1
    assert quota.take("u", "192.0.2.1", LIMITS) is None  # one place was freed, one only
    assert quota.take("u", "192.0.2.1", LIMITS) == "user"
    quota.close()


def test_counts_of_every_row_hold_the_limits() -> None:
    """A release lowers only its own row; the other worker's allocations still count."""
    quota = SharedQuota(2)
    quota.row = 0
    assert quota.take("u", "192.0.2.1", LIMITS) is None
    quota.row = 1
    assert quota.take("u", "192.0.2.2", LIMITS) is None
    assert quota.take("v", "192.0.2.3", LIMITS) == "total"
    quota.release("u", "192.0.2.2")
    quota.release("u", "192.0.2.2")  # a count never goes below zero
    assert (quota.total(0), quota.total(1)) == (1, 0)
    assert quota.take("v", "192.0.2.3", LIMITS) is None
    assert quota.take("u", "192.0.2.1", LIMITS) == "total"
    quota.close()
