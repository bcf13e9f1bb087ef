"""Read-only work off the event loop that the process may leave behind when it exits.

`asyncio.to_thread` runs on the loop's default executor, whose threads the interpreter joins at exit: a UI quitting
while it recomputes 100 colonies' merge status (git per colony) waits for all of it. What only reads (a merge
status, overlaps, usage figures) runs here instead, in a daemon thread of its own: nobody waits for an answer nobody
will read. Never for work that changes something (a spawn, a stop, a registry write): that must finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["read_off_loop"]


async def read_off_loop(read: Callable[[], T], name: str = "stem-read") -> T:
    """`read()` in a daemon thread; its result (or exception) here. Cancelling stops the wait, not the read."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[T] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not answer.done():
            setter(value)

    def run() -> None:
        try:
            value: Any = read()
            setter: Callable[[Any], None] = answer.set_result
        except BaseException as exc:  # handed to the awaiting task, as to_thread would
            value, setter = exc, answer.set_exception
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, setter, value)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await answer
