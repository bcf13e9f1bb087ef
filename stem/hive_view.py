"""What the UI asks the core, in one place: the Hive API plus a clock.

Some of the Hive API (agents, services, changes, ownership) is newer than the rest; where a Hive does not offer a
call yet, these helpers answer "nothing" instead of failing, so the UI degrades to showing less.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import StemError

__all__ = [
    "Clock",
    "FailedSpawn",
    "FixedClock",
    "age",
    "agent_of",
    "attach",
    "changes_of",
    "detach",
    "diff_of",
    "log_entries",
    "restart_service",
    "services_of",
    "transitions_of",
]


@dataclass(slots=True)
class FailedSpawn:
    """A spawn the UI started, traced while it runs: its states and log lines. The core rolls a failed spawn back
    (no row, no log ring is left), so this trace is what the list, the Info and the Logs tabs show of it after."""

    name: str
    repo: str
    base: str
    agent: str | None
    task: str | None
    started: float
    at: float = 0.0  # when it failed
    reason: str = ""
    transitions: list[Any] = field(default_factory=list)
    logs: deque[Any] = field(default_factory=lambda: deque(maxlen=2000))

    @property
    def stage(self) -> str:
        """The stage it failed in, or "spawn" when it failed before one was recorded."""
        failed = [t.stage for t in self.transitions if t.state == "failed" and t.stage]
        staged = [t.state for t in self.transitions if t.state != "failed"]
        return failed[-1] if failed else (staged[-1] if staged else "spawn")


class Clock:
    """Wall-clock time for ages and timestamps; tests inject a fixed one."""

    def now(self) -> float:
        return time.time()

    def stamp(self, at: float) -> str:
        return time.strftime("%H:%M:%S", time.localtime(at))

    def when(self, at: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))

    def age(self, since: float) -> str:
        return age(self.now() - since)


class FixedClock(Clock):
    """A clock that always says the same time, and shows every timestamp as that time (for snapshots)."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def stamp(self, at: float) -> str:
        return time.strftime("%H:%M:%S", time.gmtime(self._now))

    def when(self, at: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._now))

    def age(self, since: float) -> str:
        return "3m"


def age(seconds: float) -> str:
    """A short age: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def agent_of(hive: Any, name: str) -> Any | None:
    """The colony's agent session (screen, write, paste, resize), or None."""
    fn = getattr(hive, "agent", None)
    if fn is None:
        return None
    try:
        return fn(name)
    except StemError:
        return None


def services_of(hive: Any, name: str) -> Mapping[str, Any]:
    """The colony's service runners by name (empty when it has none or the core does not run services)."""
    fn = getattr(hive, "services", None)
    if fn is None:
        return {}
    try:
        return dict(fn(name))
    except StemError:
        return {}


async def changes_of(hive: Any, name: str) -> tuple[Any, ...] | None:
    """The colony's changed files (FileChange: path, status, added, removed), or None when the core cannot say."""
    fn = getattr(hive, "changes", None)
    if fn is None:
        return None
    try:
        result = fn(name)
        if inspect.isawaitable(result):
            result = await result
        return tuple(result)
    except StemError:
        return None


async def log_entries(hive: Any, name: str) -> list[Any]:
    """The colony's log entries (seq, at, source, text): from its host when followed, else from the disk."""
    fn = getattr(hive, "log_entries", None)
    if fn is not None:
        return list(await fn(name))
    return list(hive.log(name).tail(5000))


def transitions_of(hive: Any, name: str) -> list[Any]:
    try:
        return list(hive.registry.transitions(name))
    except (StemError, AttributeError):
        return []


async def diff_of(hive: Any, rec: Any, path: str | None) -> str:
    """The colony's unified diff against its base, of one file or of everything."""
    fn = getattr(hive, "diff", None)
    if fn is not None:
        return str(await fn(rec.name, path))
    from core.changes import diff_text

    return await asyncio.to_thread(diff_text, Path(rec.worktree), rec.base_commit, path)


async def restart_service(hive: Any, name: str, service: str) -> None:
    fn = getattr(hive, "restart_service", None)
    if fn is None:
        raise StemError("this version of the core cannot restart services")
    await fn(name, service)


async def attach(hive: Any) -> bool:
    """Follow the hive's colony hosts from this process; False if the core has no hosts to follow."""
    fn = getattr(hive, "attach", None)
    if fn is None:
        return False
    await fn()
    return True


async def detach(hive: Any) -> None:
    fn = getattr(hive, "detach", None)
    if fn is not None:
        await fn()
