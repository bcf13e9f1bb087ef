"""One actor per colony, under a supervisor.

Every change to a colony is a message to its actor, so each colony has exactly one writer in this process
(a file lock extends that to other stem processes). An unexpected exception inside a handler crashes only that
actor: the supervisor starts a fresh one on the same mailbox, which reloads the colony from the registry. Too
many crashes in a short window mark the colony failed; its actor keeps serving so it can still be stopped or
destroyed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import StemError, disk_trouble, refused_by_disk

log = logging.getLogger("stem.actor")

Handler = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class _Message:
    handler: Handler
    future: asyncio.Future[Any]
    task: asyncio.Future[Any] | None = None  # the handler while it runs, so a cancelled caller can cancel it


@dataclass(slots=True)
class _Slot:
    """What survives an actor crash: its mailbox, its restart history, its task."""

    mailbox: asyncio.Queue[_Message | None] = field(default_factory=asyncio.Queue)
    restarts: deque[float] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    generation: int = 0


class _Crash(Exception):
    def __init__(self, error: Exception, future: asyncio.Future[Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.future = future


class Supervisor:
    """Owns the colony actors of one Hive."""

    def __init__(
        self,
        on_crash: Callable[[str, BaseException, bool], Awaitable[None]],
        max_restarts: int = 3,
        window: float = 30.0,
    ) -> None:
        self._on_crash = on_crash
        self.max_restarts = max_restarts
        self.window = window
        self._slots: dict[str, _Slot] = {}

    async def call(self, colony: str, handler: Handler) -> Any:
        """Run `handler` inside `colony`'s actor, after whatever is queued before it, and return its result."""
        slot = self._slots.get(colony)
        if slot is None or slot.task is None or slot.task.done():
            slot = self._slots.setdefault(colony, _Slot())
            slot.task = asyncio.create_task(self._supervise(colony, slot), name=f"actor-{colony}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        message = _Message(handler, future)
        await slot.mailbox.put(message)
        try:
            return await future
        except asyncio.CancelledError:
            # The caller gave up (a UI closing, ctrl+c): the handler is cancelled too, or never starts.
            if message.task is not None:
                message.task.cancel()
                # Return once it has undone its work, so the caller sees a consistent hive.
                await asyncio.wait([message.task])
            raise

    def generation(self, colony: str) -> int:
        """How many times the colony's actor has been (re)started: 1 after the first start."""
        slot = self._slots.get(colony)
        return slot.generation if slot else 0

    async def _supervise(self, colony: str, slot: _Slot) -> None:
        while True:
            slot.generation += 1
            try:
                await self._run(slot)
                return
            except _Crash as crash:
                now = time.monotonic()
                slot.restarts.append(now)
                while slot.restarts and now - slot.restarts[0] > self.window:
                    slot.restarts.popleft()
                exhausted = len(slot.restarts) > self.max_restarts
                log.warning("actor for %s crashed (%s); restarting", colony, crash.error)
                try:
                    await self._on_crash(colony, crash.error, exhausted)
                except Exception:
                    log.exception("crash handler for %s failed", colony)
                # The caller hears of the crash only once it is recorded, so what it reads next is consistent.
                if not crash.future.done():
                    crash.future.set_exception(crash.error)

    async def _run(self, slot: _Slot) -> None:
        while True:
            message = await slot.mailbox.get()
            if message is None:
                return
            if message.future.done():
                continue  # its caller was cancelled while it waited in the mailbox
            message.task = asyncio.ensure_future(message.handler())
            try:
                result = await message.task
            except StemError as exc:
                if not message.future.done():
                    message.future.set_exception(exc)
            except asyncio.CancelledError:
                if not message.future.done():
                    message.future.cancel()
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    message.task.cancel()
                    raise  # the actor itself is being cancelled
                # Only the handler was cancelled, by its caller: the actor serves the next message.
            except Exception as exc:
                if refused_by_disk(exc):  # the disk's trouble (full, read-only): the caller says so, no crash
                    if not message.future.done():
                        message.future.set_exception(exc)
                    continue
                # A bug: this actor dies so a clean one replaces it.
                raise _Crash(exc, message.future) from exc
            else:
                if not message.future.done():
                    message.future.set_result(result)

    def forget(self, colony: str) -> None:
        slot = self._slots.pop(colony, None)
        if slot is not None:
            slot.mailbox.put_nowait(None)

    async def close(self) -> None:
        for slot in self._slots.values():
            slot.mailbox.put_nowait(None)
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        self._slots.clear()


def describe(exc: BaseException) -> str:
    """One line for a crash: the exception and where it was raised; the disk refusing a write (a full disk under a
    spawn's setup) is the machine's trouble, said as `disk_trouble` says it."""
    said = disk_trouble(exc)
    if said is not None:
        return said
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
