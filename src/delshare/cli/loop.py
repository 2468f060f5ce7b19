"""The event loop every long-running ``delshare`` command runs on (send, receive, relay, demo).

uvloop when it is installed (the ``fast`` extra: cheaper socket I/O); ``DELSHARE_LOOP=asyncio``
selects the standard event loop instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["event_loop_factory", "run_on_loop"]

T = TypeVar("T")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, unless ``DELSHARE_LOOP=asyncio`` asks for the standard loop;
    None means the standard loop."""
    if os.environ.get("DELSHARE_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_on_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`event_loop_factory` picks; start-up ends here
    (:func:`delshare.cli.main.end_startup`)."""
    from delshare.cli.main import end_startup

    end_startup()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)
