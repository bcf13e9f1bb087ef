"""Support for the app's tests: a hive for one test, and waiting on what the user would see."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from helpers import FAKE_AGENT_PATH

from core.hive import Hive
from stem.textual_private import notifications, screen_strips

T = TypeVar("T")
HERE = Path(__file__).parent
FAKE_AGENT = f"{sys.executable} {FAKE_AGENT_PATH}"
# Fixed per test so that snapshots show the same addresses: slot 0 is .2 of the pool.
SNAPSHOT_POOL = ipaddress.IPv4Network("10.231.0.0/20")
TIMEOUT = 20.0


def test_hive(hive_env: Any, pool: ipaddress.IPv4Network | None = None) -> Hive:
    """The hive of this test (its own home and prefix; its own pool unless one is given)."""
    return Hive(hive_env.home, prefix=hive_env.prefix, pool=pool or hive_env.pool, stop_grace=2.0)


test_hive.__test__ = False  # type: ignore[attr-defined]


async def until(pilot: Any, predicate: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
    """Let the app run until `predicate` is truthy (checked after each pause); fail naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await pilot.pause()
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)  # polling interval; the predicate decides


def screen_text(app: Any) -> str:
    """Everything on the app's active screen now, as plain text: what a user would read."""
    return "\n".join(strip.text for strip in screen_strips(app.screen))


def shows(app: Any, *texts: str) -> bool:
    text = screen_text(app)
    return all(t in text for t in texts)


def notified(app: Any, text: str) -> bool:
    """A notification (toast) containing `text` is showing."""
    return any(text in note.message for note in notifications(app))
