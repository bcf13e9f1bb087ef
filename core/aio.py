"""`wait_for` as Python 3.12 has it.

Python 3.11's `asyncio.wait_for` loses a cancel that arrives as the awaited thing finishes: it returns that
result, or raises its exception, in place of CancelledError (python/cpython#86296, fixed in 3.12 by building
`wait_for` on `asyncio.timeout`). A readiness probe refused at the moment its service's stop cancelled the wait
went on probing for the service's whole ready timeout (120 s), and the colony's stop with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["wait_for"]


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:
    """`awaitable`'s result; TimeoutError after `timeout` seconds (None: no limit), the awaitable then cancelled. A
    cancel of the caller is always raised as CancelledError."""
    async with asyncio.timeout(timeout):
        return await awaitable
