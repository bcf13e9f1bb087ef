"""What the UI keeps beside the hive (whose typed API is core.api.HiveAPI): a clock, and failed spawns."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from core.events import LogLine
from core.registry import Transition

__all__ = ["Clock", "FailedSpawn", "FixedClock", "age", "shown_path"]


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
    transitions: list[Transition] = field(default_factory=list)
    logs: deque[LogLine] = field(default_factory=lambda: deque(maxlen=2000))

    @property
    def stage(self) -> str:
        """The stage it failed in, or "spawn" when it failed before one was recorded."""
        failed = [t.stage for t in self.transitions if t.state == "failed" and t.stage]
        staged = [t.state for t in self.transitions if t.state != "failed"]
        return failed[-1] if failed else (staged[-1] if staged else "spawn")

    @property
    def when(self) -> str:
        """Where it failed, to follow "failed": "while building", or "before its first step"."""
        stage = self.stage
        return "before its first step" if stage == "spawn" else f"while {stage}"


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


def shown_path(path: Path | str) -> str:
    """A path as the user reads it: under their home as `~/...` (shorter, and what they would type)."""
    text = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home) :]
    return text
