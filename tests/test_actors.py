"""Actors and their supervisor, in-process: a crash in one colony's actor touches no other colony."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from helpers import make_repo, netns_names, until, wait_for

from core.events import Notice, StateChanged
from core.hive import Hive
from core.locks import is_locked

pytestmark = pytest.mark.root


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_fault_in_one_actor_leaves_other_colonies_running(hive_env, repo):
    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()
        try:
            await hive.spawn("alpha", repo)
            await hive.spawn("beta", repo)
            sleepers = {
                name: await hive.exec(name, ["sleep", "1000"], stdin=subprocess.DEVNULL) for name in ("alpha", "beta")
            }
            assert hive.supervisor.generation("alpha") == 1

            with pytest.raises(RuntimeError, match="injected fault in alpha's actor"):
                await hive.inject_fault("alpha")
            # The crashed actor was replaced; both colonies' processes still run; beta's actor never restarted.
            assert all(alive(p.proc.pid) for p in sleepers.values())
            assert hive.supervisor.generation("beta") == 1
            rec = await hive.stop("alpha")  # the fresh actor serves, with state reloaded from the registry
            assert rec.state == "stopped"
            assert hive.supervisor.generation("alpha") == 2
            assert not alive(sleepers["alpha"].proc.pid)
            assert alive(sleepers["beta"].proc.pid)
            assert hive.get("beta").state == "running"

            # Too many crashes in the window mark alpha failed, and still leave beta alone.
            for _ in range(hive.supervisor.max_restarts):
                with pytest.raises(RuntimeError):
                    await hive.inject_fault("alpha")
            assert hive.get("alpha").state == "failed"
            assert hive.get("alpha").stage == "actor"
            assert "too many actor restarts" in hive.get("alpha").reason
            assert hive.get("beta").state == "running" and alive(sleepers["beta"].proc.pid)
            # A failed colony can still be destroyed through its actor.
            await hive.destroy("alpha", force=True)
            assert [c.name for c in hive.colonies()] == ["beta"]

            seen = []
            while not events.empty():
                seen.append(events.get_nowait())
            assert any(isinstance(e, Notice) and "actor restarted" in e.message for e in seen)
            assert any(isinstance(e, StateChanged) and e.colony == "alpha" and e.state == "failed" for e in seen)
            await hive.stop("beta")
            for p in sleepers.values():
                wait_for(lambda p=p: p.proc.poll() is not None, what="sleeper to be reaped")
                hive.exec_finished(p)
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_operations_on_one_colony_run_in_order_and_others_in_parallel(hive_env, repo):
    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await asyncio.gather(hive.spawn("one", repo), hive.spawn("two", repo))
            # stop, start, stop queued at once on the same colony: applied in order, ending stopped.
            results = await asyncio.gather(hive.stop("one"), hive.start("one"), hive.stop("one"))
            assert [r.state for r in results] == ["stopped", "running", "stopped"]
            states = [t.state for t in hive.registry.transitions("one")]
            assert states[-3:] == ["running", "stopping", "stopped"]
            assert hive.get("two").state == "running"
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_stem_is_a_subreaper_and_reaps_adopted_orphans(hive_env, repo, tmp_path):
    """A colony process that exits leaving a child behind: the child is re-parented to Stem, not PID 1, and reaped.
    (Isolated colonies have their own PID namespace, whose init adopts and reaps: isolation is off here.)"""
    import os

    from core import procs
    from core.settings import Settings

    async def scenario() -> None:
        settings = Settings(path=tmp_path / "config.toml", isolation=False)
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, settings=settings)
        try:
            await hive.spawn("parent", repo)
            running = await hive.exec(
                "parent", ["sh", "-c", "sleep 0.3 & echo $!"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
            )
            assert running.proc.stdout is not None
            orphan = int(running.proc.stdout.readline())
            assert running.proc.wait(timeout=10) == 0
            hive.exec_finished(running)

            def parent_of(pid: int) -> int | None:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        return int(f.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    return None

            assert parent_of(orphan) == os.getpid()  # adopted by us, the subreaper
            wait_for(lambda: not alive(orphan), what="the orphan to exit")
            assert parent_of(orphan) == os.getpid()  # a zombie now, until we reap it
            assert orphan in procs.reap_orphans()
            assert parent_of(orphan) is None
        finally:
            await hive.close()

    asyncio.run(scenario())


@pytest.mark.root
def test_a_cancelled_spawn_is_undone_and_stays_cancelled(hive_env, tmp_path):
    """Cancelling a spawn mid-setup (a UI closing, a ctrl+c) raises CancelledError, not a failure, and leaves
    nothing: no row, no namespace, no lock held."""
    repo = make_repo(tmp_path / "slow", colony_toml='[colony]\nsetup = ["echo setting up; sleep 3"]\n')

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            spawning = asyncio.ensure_future(hive.spawn("slow", repo))
            await until(lambda: any(e.text == "setting up" for e in hive.log("slow").after(0)), what="setup output")
            spawning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await spawning
            assert hive.registry.find("slow") is None
            assert not netns_names(hive_env.prefix)
            assert not is_locked(hive.layout.colony_lock("slow"))
        finally:
            await hive.close()

    asyncio.run(scenario())
