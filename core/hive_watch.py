"""Tells a stem process when the hive registry changed, whoever wrote it, so UIs and `stem serve` follow it at once
and without a timer.

Every registry write lands in hive.db or its write-ahead log (hive.db-wal) in STEM_HOME. One inotify instance per
process watches that directory for those two names only (never the colonies' folders, locks or the -shm file that
readers touch): nothing runs while nothing changes. Without inotify it polls their size and mtime every second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from core.errors import StemError
from core.inotify import IN_CREATE, IN_MODIFY, IN_MOVED_TO, Changes, FileWatcher
from core.locations import HiveLayout

# A commit appends frames to the WAL (IN_MODIFY); a checkpoint writes hive.db; a first connection creates the WAL;
# a restored or replaced database arrives by rename (IN_MOVED_TO). Not IN_CLOSE_WRITE: SQLite opens both files
# read-write even to read, so every `stem ls` exiting would wake every stem process; a write always modifies.
_MASK = IN_MODIFY | IN_CREATE | IN_MOVED_TO


class HiveWatch:
    """Calls subscribers (debounced: `quiet` seconds without a write, `max_delay` at most) when the registry of the
    hive at `home` changed. `mode` is "inotify" or "polling: <why>"; `on_fallback(reason)` hears of the latter.

    Use as `async with HiveWatch(home) as watch:` and then `async for _ in watch.changes(): ...`, or `subscribe`.
    """

    def __init__(
        self,
        home: Path,
        *,
        quiet: float = 0.05,
        max_delay: float = 0.25,
        poll_interval: float = 1.0,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.home = home
        registry = HiveLayout(home).registry
        self.names = frozenset({registry.name, registry.name + "-wal"})
        self._watcher = FileWatcher(
            quiet=quiet, max_delay=max_delay, poll_interval=poll_interval, on_fallback=on_fallback
        )
        self._started = False

    @property
    def mode(self) -> str:
        return self._watcher.mode

    async def start(self) -> None:
        """Start watching. Raises StemError if STEM_HOME cannot be watched (it must exist)."""
        if self._started:
            raise RuntimeError("the hive watch is already started")
        self._started = True
        try:
            await self._watcher.watch_dir(str(self.home), names=self.names, mask=_MASK)
        except OSError as exc:
            raise StemError(f"cannot watch the hive registry in {self.home}: {exc.strerror or exc}") from exc

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the loop; it must not block) after each burst of registry writes; returns the
        function that unsubscribes it."""

        def on_changes(_batch: Changes) -> None:
            callback()

        return self._watcher.subscribe(on_changes)

    async def changes(self) -> AsyncIterator[None]:
        """Yields once per change; changes made while the consumer is busy collapse into one more iteration, so a
        consumer that reads the registry on each iteration always ends up with the latest state."""
        changed = asyncio.Event()
        unsubscribe = self.subscribe(changed.set)
        try:
            while True:
                await changed.wait()
                changed.clear()
                yield
        finally:
            unsubscribe()

    async def close(self) -> None:
        await self._watcher.close()

    async def __aenter__(self) -> HiveWatch:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
