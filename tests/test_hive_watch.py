"""core.hive_watch against real SQLite: registry writes by other processes are noticed within a second, nothing else
in STEM_HOME is, an idle watch never wakes up, and without inotify it polls."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from helpers import until
from watch_support import ROOT, idle_wakeups, inotify_fds, run_child

from core.hive_watch import HiveWatch
from core.locations import HiveLayout
from core.registry import Registry

# A separate stem process writing the registry: one event per line read ("write <message>"), "ok" after each.
WRITER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from core.registry import Registry
registry = Registry(Path(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    registry.add_event("alpha", "test", line.split(" ", 1)[1].strip())
    print("ok", flush=True)
"""


class Writer:
    """The writing process, driven line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, db: Path) -> Writer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(db), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        writer = cls(proc)
        assert await writer._line() == "ready"
        return writer

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), 10)).decode().strip()

    async def write(self, message: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"write {message}\n".encode())
        await self.proc.stdin.drain()
        assert await self._line() == "ok"

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 10)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    layout = HiveLayout(tmp_path / "stem-home")
    layout.ensure()
    return layout.home


async def follow(watch: HiveWatch, registry: Registry, seen: dict[str, float]) -> None:
    """What a UI does: on each change, read the registry again; note when each event message was first seen."""
    async for _ in watch.changes():
        for _colony, _at, _kind, message in await asyncio.to_thread(registry.events):
            seen.setdefault(message, time.monotonic())


def test_registry_writes_by_another_process_are_followed_within_a_second(home: Path) -> None:
    async def scenario() -> None:
        registry = Registry(home / "hive.db")  # this process's own connection, as a UI keeps one
        seen: dict[str, float] = {}
        async with HiveWatch(home) as watch:
            assert watch.mode == "inotify"
            follower = asyncio.create_task(follow(watch, registry, seen))
            writer = await Writer.start(home / "hive.db")
            try:
                for n in range(5):
                    started = time.monotonic()
                    await writer.write(f"message {n}")
                    await until(lambda n=n: f"message {n}" in seen, timeout=1.0, what=f"message {n} to be seen")
                    assert seen[f"message {n}"] - started < 1.0
            finally:
                await writer.close()
                follower.cancel()
        registry.close()
        assert inotify_fds() == []

    asyncio.run(scenario())


def test_a_registry_created_after_the_watch_started_is_noticed(home: Path) -> None:
    async def scenario() -> None:
        async with HiveWatch(home) as watch:
            notified = asyncio.Event()
            watch.subscribe(notified.set)
            writer = await Writer.start(home / "hive.db")  # creates hive.db and its WAL
            try:
                await asyncio.wait_for(notified.wait(), 1.0)
            finally:
                await writer.close()

    asyncio.run(scenario())


def test_other_files_in_stem_home_and_readers_wake_nobody(home: Path) -> None:
    layout = HiveLayout(home)

    async def scenario() -> None:
        registry = Registry(layout.registry)
        registry.add_event("alpha", "test", "before")
        async with HiveWatch(home) as watch:
            notices: list[float] = []
            watch.subscribe(lambda: notices.append(time.monotonic()))
            layout.colony_dir("alpha").mkdir()
            layout.colony_log("alpha").write_text("a log line\n")
            layout.colony_lock("alpha").touch()
            (layout.worktrees / "alpha").mkdir()
            # A short-lived `stem ls`: opens the registry, reads, exits (it touches hive.db-shm, not what we watch).
            reader = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from core.registry import Registry; "
            reader += f"from pathlib import Path; print(len(Registry(Path({str(layout.registry)!r})).colonies()))"
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", reader)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            with pytest.raises(AssertionError, match="timed out"):  # a bounded wait: this asserts an absence
                await until(lambda: notices, timeout=0.5, what="no notice")
            await asyncio.to_thread(registry.add_event, "alpha", "test", "after")
            await until(lambda: notices, timeout=1.0, what="the notice of a write")
        registry.close()

    asyncio.run(scenario())


def test_an_idle_hive_watch_never_wakes_up(home: Path) -> None:
    async def scenario() -> None:
        registry = Registry(home / "hive.db")
        watches = [HiveWatch(home) for _ in range(5)]
        for watch in watches:
            await watch.start()
            watch.subscribe(lambda: None)
        try:
            wakeups = await idle_wakeups(1.0)
            assert wakeups <= 4, f"{wakeups} context switches in 1 s of idleness"
        finally:
            for watch in watches:
                await watch.close()
            registry.close()

    asyncio.run(scenario())


def test_a_missing_stem_home_is_a_stem_error(tmp_path: Path) -> None:
    from core.errors import StemError

    async def scenario() -> None:
        watch = HiveWatch(tmp_path / "nowhere")
        with pytest.raises(StemError, match=r"cannot watch the hive registry in .*nowhere: No such file"):
            await watch.start()
        await watch.close()

    asyncio.run(scenario())


POLLING_WATCH = """
import asyncio, json, sys, time
from pathlib import Path
from core.hive_watch import HiveWatch

async def main(home):
    reasons = []
    async with HiveWatch(Path(home), on_fallback=reasons.append) as watch:
        notified = asyncio.Event()
        watch.subscribe(notified.set)
        # Another process writes now: a stem process that cannot use inotify still follows within about a second.
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", sys.argv[2], str(Path(home) / "hive.db"))
        assert await writer.wait() == 0
        written = time.monotonic()
        await asyncio.wait_for(notified.wait(), 5)
        print(json.dumps({"mode": watch.mode, "reasons": reasons, "latency": time.monotonic() - written}))

asyncio.run(main(sys.argv[1]))
"""

ONE_WRITE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from core.registry import Registry
Registry(Path(sys.argv[1])).add_event("alpha", "test", "from a writer")
"""


@pytest.mark.root
def test_without_inotify_it_polls_once_a_second(home: Path) -> None:
    Registry(home / "hive.db").close()
    result = run_child(POLLING_WATCH, str(home), ONE_WRITE, limits={"max_inotify_instances": 0})
    assert result["mode"] == "polling: inotify instances exhausted (0 in use)"
    assert result["reasons"] == ["inotify instances exhausted (0 in use)"]
    latency = result["latency"]
    assert isinstance(latency, float) and latency < 1.5  # a 1 s poll, and the debounce
