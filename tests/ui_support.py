"""Support for the app's tests: a hive for one test, the app around it, and waiting on what the user would see.

`test_hive` is the real `core.hive.Hive`. Where the core does not run agents yet (no `Hive.agent`), `AgentsHive`
adds just that, the way the core's owner will: the agent of every running colony in a PTY inside the colony's
namespace (core.agent.AgentSession), started when the colony runs and stopped when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core import lifecycle as lc
from core.agent import AgentSession, choose_argv
from core.events import ColonyRemoved, StateChanged
from core.hive import Hive
from core.settings import Settings, resolve_agent

T = TypeVar("T")
HERE = Path(__file__).parent
FAKE_AGENT = f"{sys.executable} {HERE / 'fake_agent.py'}"
# Fixed per test so that snapshots show the same addresses: slot 0 is .2 of the pool.
SNAPSHOT_POOL = ipaddress.IPv4Network("10.231.0.0/20")
TIMEOUT = 20.0

CORE_RUNS_AGENTS = hasattr(Hive, "agent")


class AgentsHive(Hive):
    """The real Hive, plus `agent(name)` when the core does not provide it yet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._agents: dict[str, AgentSession] = {}
        self._follower: asyncio.Task[None] | None = None

    def agent(self, name: str) -> AgentSession | None:
        return self._agents.get(name)

    async def own(self, what: str) -> None:
        await super().own(what)
        queue = self.subscribe()
        self._follower = asyncio.create_task(self._follow(queue))
        for rec in self.colonies():
            if rec.state == lc.RUNNING:
                self._start_agent(rec.name)

    async def disown(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for name in list(self._agents):
            await self._stop_agent(name)
        await super().disown()

    async def _follow(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            event = await queue.get()
            if isinstance(event, StateChanged):
                if event.state == lc.RUNNING:
                    self._start_agent(event.colony)
                elif event.state in (lc.STOPPING, lc.STOPPED, lc.FAILED):
                    await self._stop_agent(event.colony)
            elif isinstance(event, ColonyRemoved):
                await self._stop_agent(event.colony)

    def _start_agent(self, name: str) -> None:
        if name in self._agents:
            return
        rec = self.get(name)
        resolved = resolve_agent(rec.agent or None, Settings(path=Path("/dev/null")), rec.task or None)
        argv, _notice = choose_argv(resolved, resume=False)
        registry = self.registry
        session = AgentSession(
            argv,
            netns_name=rec.netns,
            cwd=rec.worktree,
            env=self.env_for(rec),
            colony=name,
            emit=self._publish,
            record_process=lambda pid, start: registry.add_process(name, pid, start, "agent", argv),
            forget_process=registry.remove_process,
        )
        session.start()
        self._agents[name] = session

    async def _stop_agent(self, name: str) -> None:
        session = self._agents.pop(name, None)
        if session is not None:
            await session.stop(grace=1.0)


def test_hive(hive_env: Any, pool: ipaddress.IPv4Network | None = None) -> Hive:
    """The hive of this test (its own home and prefix; its own pool unless one is given)."""
    cls = Hive if CORE_RUNS_AGENTS else AgentsHive
    return cls(hive_env.home, prefix=hive_env.prefix, pool=pool or hive_env.pool, stop_grace=2.0)


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
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def shows(app: Any, *texts: str) -> bool:
    text = screen_text(app)
    return all(t in text for t in texts)


def notified(app: Any, text: str) -> bool:
    """A notification (toast) containing `text` is showing."""
    return any(text in note.message for note in app._notifications)
