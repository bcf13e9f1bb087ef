"""Colony states: an enum whose values are what hive.db holds, and transitions the registry checks."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from helpers import hold_a_registry_write

from core import lifecycle as lc
from core import registry as registry_module
from core.errors import WrongState
from core.lifecycle import ColonyState
from core.registry import WAL_KEPT, Registry, RegistryBusy


def registry_with(tmp_path: Path, name: str = "a") -> Registry:
    registry = Registry(tmp_path / "hive.db")
    registry.reserve(
        name,
        4,
        lambda slot: {
            "repo": "/r",
            "base_ref": "HEAD",
            "branch": f"colony/{name}",
            "worktree": "/w",
            "db_path": "/d",
            "netns": "n",
            "veth": f"v{slot}",
            "ip": "10.9.0.2",
            "host_ip": "10.9.0.1",
            "prefixlen": 30,
        },
    )
    return registry


def test_a_spawn_then_a_stop_and_a_destroy_pass_and_are_stored_as_plain_strings(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    for state in (lc.PROVISIONING, lc.BUILDING, lc.STARTING, lc.RUNNING, lc.STOPPING, lc.STOPPED, lc.DESTROYING):
        registry.set_state("a", state)
    rec = registry.get("a")
    assert rec.state is ColonyState.DESTROYING
    assert [t.state for t in registry.transitions("a")][-2:] == [lc.STOPPED, lc.DESTROYING]
    with sqlite3.connect(tmp_path / "hive.db") as db:
        assert db.execute("SELECT state FROM colonies").fetchone() == ("destroying",)
        assert db.execute("SELECT state FROM transitions ORDER BY id").fetchone() == ("spawning",)


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ((lc.PROVISIONING, lc.BUILDING, lc.STARTING, lc.RUNNING, lc.STOPPING, lc.STOPPED), lc.RUNNING),
        ((), lc.RUNNING),  # spawning straight to running skips the build
        ((lc.DESTROYING,), lc.STOPPED),  # an interrupted destroy is never revived as stopped
        ((lc.DESTROYING,), lc.FAILED),
    ],
)
def test_a_jump_the_lifecycle_does_not_make_is_refused_and_changes_nothing(
    tmp_path: Path, path: tuple[ColonyState, ...], refused: ColonyState
) -> None:
    registry = registry_with(tmp_path)
    for state in path:
        registry.set_state("a", state)
    before = registry.get("a").state
    with pytest.raises(WrongState, match=f"a is {before}: it cannot become {refused}"):
        registry.set_state("a", refused)
    assert registry.get("a").state == before
    assert len(registry.transitions("a")) == 1 + len(path)


def test_every_state_has_its_transitions_and_destroying_leads_nowhere_else() -> None:
    assert set(lc.TRANSITIONS) == set(ColonyState)
    assert lc.TRANSITIONS[lc.DESTROYING] == {lc.DESTROYING}
    assert all(lc.DESTROYING in after for state, after in lc.TRANSITIONS.items())
    assert not lc.allowed("running", "nonsense") and not lc.allowed("nonsense", "running")


def test_a_colony_that_is_gone_stays_gone(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    registry.delete_colony("a")
    registry.set_state("a", lc.FAILED)  # a late write after a destroy: no row, no orphan transition
    assert registry.find("a") is None
    assert registry.transitions("a") == []


def test_the_registry_journal_stays_small_while_other_processes_keep_it_open(tmp_path):
    """Colony hosts keep hive.db open, so its WAL is never removed: it must be checkpointed and cut back, or it
    keeps the largest size it ever had (4 MB and more) and a small STEM_HOME fills with the hive's own journal."""
    writer, reader = Registry(tmp_path / "hive.db"), Registry(tmp_path / "hive.db")
    peak = 0
    for i in range(2000):
        with writer.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS filler(x)")
            db.execute("INSERT INTO filler VALUES (?)", ("x" * 2000,))
        if i % 10 == 0:
            reader._db.execute("SELECT count(*) FROM filler").fetchone()
        peak = max(peak, (tmp_path / "hive.db-wal").stat().st_size)
    assert peak <= WAL_KEPT


@pytest.mark.parametrize("how", ["run", "stop"])
def test_a_write_held_up_by_another_process_ends_in_a_line_naming_it_but_a_host_s_waits_for_a_stopped_one(
    tmp_path, monkeypatch, how
):
    """A write waits for another process's write; one that runs and has not let go by the end of the wait, or one that
    is stopped (at once), is named in one line (`RegistryBusy`). A colony host's registry (`waits_for_stopped`) waits
    for a stopped holder to the end of the wait, as for any other, and then fails as SQLite does."""
    monkeypatch.setattr(registry_module, "BUSY_GIVE_UP", 2.0)
    path = tmp_path / "hive.db"
    registry, host_registry = Registry(path), Registry(path, waits_for_stopped=True)
    holder = hold_a_registry_write(tmp_path, how)
    try:
        with pytest.raises(RegistryBusy) as busy:
            registry.set_state("a", lc.RUNNING)
        if how == "stop":
            assert str(busy.value) == (
                f"the hive's registry ({path}) is held by pid {holder.pid} (hold_a_write.py hive.db stop), which is "
                f"stopped: kill -CONT {holder.pid} lets it finish"
            )
            began = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                host_registry.set_state("a", lc.RUNNING)
            assert time.monotonic() - began >= 1.9  # it waited, in case the holder was let go on meanwhile
        else:
            assert str(busy.value) == (
                f"the hive's registry ({path}) has been held by pid {holder.pid} (hold_a_write.py hive.db run) for 2 s"
            )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(holder.pid, signal.SIGCONT)
        holder.communicate(timeout=10)
