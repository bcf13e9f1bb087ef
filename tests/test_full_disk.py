"""Stem on a STEM_HOME that fills up as a user meets it: what fails says the disk in one line and leaves nothing."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3

import pytest
from helpers import assert_refused, git, make_repo, netns_names, run_stem, until, wait_for
from test_bad_input import assert_nothing_made
from test_faults import fill, small_disk

from core import procs
from core.errors import StepFailed
from core.hive import Hive

pytestmark = pytest.mark.root


def test_a_setup_that_fills_the_disk_fails_its_spawn_which_removes_everything(hive_env, tmp_path):
    # An `npm install` that fills STEM_HOME: the spawn fails with the setup's own words, and its undo, whose
    # registry writes find the disk full too, frees the colony's files first and then removes the rest. It left
    # the namespace, the veth, the 4 MB worktree and a row 'provisioning', and said only that the registry
    # could not be written.
    toml = '[colony]\nsetup = ["head -c 20000000 /dev/zero > big.bin"]\n'
    repo = make_repo(tmp_path / "greedy", files=1, colony_toml=toml)
    with small_disk(hive_env.home, "4m"):
        failed = run_stem(hive_env.env, "spawn", "greedy", "--repo", str(repo))
        assert not (hive_env.home / "hive.db.reserve").exists()  # too small a disk for one: no room given back

        assert_refused(
            failed, "spawn greedy failed", "setup command", "No space left on device", "everything made was removed"
        )
        assert_nothing_made(hive_env, repo)
        plain = make_repo(tmp_path / "plain", files=1)
        spawned = run_stem(hive_env.env, "spawn", "after", "--repo", str(plain))
        assert spawned.returncode == 0, spawned.stderr
        assert run_stem(hive_env.env, "destroy", "after").returncode == 0


def test_a_setup_that_fills_the_disk_before_its_record_is_written_fails_in_its_own_words(
    hive_env, tmp_path, monkeypatch
):
    # The command runs from the moment it is started, and its record in the registry is written after: a setup
    # quick to fill the disk (here: made to, before the record) left the record's write refused, and the spawn
    # failed with the registry's words ("cannot be written") instead of the setup's (1 of 3 CI runs under load).
    toml = '[colony]\nsetup = ["head -c 20000000 /dev/zero > big.bin"]\n'
    repo = make_repo(tmp_path / "quick", files=1, colony_toml=toml)
    home = hive_env.home
    real_spawn = procs.spawn

    def spawn(argv, **kwargs):
        if "big.bin" not in argv[-1]:
            return real_spawn(argv, **kwargs)
        with sqlite3.connect(home / "hive.db") as conn:  # the journal cut to nothing: the record needs room
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        proc = real_spawn(argv, **kwargs)
        wait_for(lambda: os.statvfs(home).f_bavail < 4, 30, "the setup to fill the disk")
        return proc

    async def scenario() -> None:
        hive = Hive(home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()
            with pytest.raises(StepFailed) as failed:
                await hive.spawn("quick", repo)
            text = str(failed.value)
            assert "spawn quick failed" in text and "setup command" in text, text
            assert "No space left on device" in text and "everything made was removed" in text, text
        finally:
            await hive.close()

    monkeypatch.setattr(procs, "spawn", spawn)
    with small_disk(home, "4m"):
        asyncio.run(scenario())
        assert_nothing_made(hive_env, repo)


def test_a_spawn_that_meets_a_full_disk_anywhere_is_undone_whole(hive_env, tmp_path):
    # Room for the checkout but not for all of what the spawn writes after it (the host's files, the log, the
    # registry's journal): each step in turn meets the full disk, the last the record that the colony runs. Every
    # spawn either runs or fails in one line and leaves nothing. Rows were left 'building' or 'starting' (with
    # the namespace, the worktree and the branch), by an undo whose own registry writes were refused, and by a spawn
    # that could not record 'running', whose host ran on.
    repo = make_repo(tmp_path / "mid", files=1)
    (repo / "data.bin").write_bytes(os.urandom(2 << 20))
    git(repo, "add", "data.bin")
    git(repo, "commit", "-qm", "data")
    with small_disk(hive_env.home, "8m"):
        assert run_stem(hive_env.env, "ls").returncode == 0  # the hive's own files first
        free = os.statvfs(hive_env.home).f_bavail * os.statvfs(hive_env.home).f_frsize
        assert run_stem(hive_env.env, "spawn", "probe", "--repo", str(repo)).returncode == 0
        need = free - os.statvfs(hive_env.home).f_bavail * os.statvfs(hive_env.home).f_frsize
        assert run_stem(hive_env.env, "destroy", "probe").returncode == 0
        for leave in range(need - (80 << 10), need + 1, 5 << 10):
            filler = fill(hive_env.home, leave)
            result = run_stem(hive_env.env, "spawn", "tight", "--repo", str(repo))
            if result.returncode == 0:
                assert run_stem(hive_env.env, "destroy", "--force", "tight").returncode == 0
            else:
                line = assert_refused(result, "free some space")
                assert line.startswith("stem: spawn tight failed while ") or "a spawn needs" in line, line
                assert line.endswith("(everything made was removed)") or "a spawn needs" in line, line
            assert_nothing_made(hive_env, repo)
            assert hive_env.host_pids() == [], leave - need
            filler.unlink()


def test_a_small_stem_home_keeps_a_reserve_so_that_destroy_and_gc_work_when_it_is_full(hive_env, tmp_path):
    # An 8 MB STEM_HOME never had 8 MiB free, so it never got the registry's reserve: full, with no colony
    # running (nobody holding hive.db open), every command failed ('disk I/O error'), the destroy and gc that
    # would make room too.
    repo = make_repo(tmp_path / "quiet", files=1)
    with small_disk(hive_env.home, "8m"):
        assert run_stem(hive_env.env, "spawn", "quiet", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "stop", "quiet").returncode == 0
        filler = fill(hive_env.home, 0)

        listed = run_stem(hive_env.env, "ls")
        assert listed.returncode == 0 and "stopped" in listed.stdout, listed.stderr
        destroyed = run_stem(hive_env.env, "destroy", "--force", "quiet")
        assert destroyed.returncode == 0, destroyed.stderr
        collected = run_stem(hive_env.env, "gc")
        assert collected.returncode == 0, collected.stderr
        assert_nothing_made(hive_env, repo)
        filler.unlink()
        assert run_stem(hive_env.env, "spawn", "again", "--repo", str(repo)).returncode == 0
        assert (hive_env.home / "hive.db.reserve").stat().st_size == 1 << 20  # made again once there was room
        assert run_stem(hive_env.env, "destroy", "again").returncode == 0


def test_a_reserve_given_up_is_made_again_before_a_spawn_takes_the_room(hive_env, tmp_path):
    # A destroy on a full disk gave the reserve up; space was freed, but less than the 4 MiB a hive's open needs to
    # make it again. A spawn then took the room (its worktree, its log), and the destroy that would free it found
    # the disk full with no reserve: 'cannot be written (database or disk is full)'.
    repo = make_repo(tmp_path / "quiet", files=1)
    reserve = hive_env.home / "hive.db.reserve"
    with small_disk(hive_env.home, "8m"):
        assert run_stem(hive_env.env, "spawn", "first", "--repo", str(repo)).returncode == 0
        filler = fill(hive_env.home, 0)
        assert run_stem(hive_env.env, "destroy", "--force", "first").returncode == 0
        assert reserve.stat().st_size == 0  # given up to record the destroy
        filler.unlink()
        filler = fill(hive_env.home, 3 << 20)

        assert run_stem(hive_env.env, "spawn", "quiet", "--repo", str(repo)).returncode == 0

        assert reserve.stat().st_size == 1 << 20  # made again before the spawn wrote anything
        more = fill(hive_env.home, 0, "more")  # and then the disk full again (the colony's log, anything)
        destroyed = run_stem(hive_env.env, "destroy", "--force", "quiet")
        assert destroyed.returncode == 0, destroyed.stderr
        more.unlink()
        filler.unlink()
        assert_nothing_made(hive_env, repo)


def test_a_stop_keeps_the_room_the_reserve_gave_it_from_the_log_that_filled_the_disk(hive_env, tmp_path):
    # A service's flood filled the disk, and goes on while it stops (2 s after SIGTERM). The stop's first write
    # gives up the registry's reserve; the colony's log, tried again each second, took that room at once, so the
    # stop's next writes were refused: 'the hive's registry ... cannot be written' after the colony had stopped
    # half (its state 'stopping' until the next command finished it).
    flood = (
        "end=0; trap 'end=$(($(date +%s) + 2))' TERM; i=0; while :; do i=$((i+1)); "
        "echo line $i of a flood that fills the disk; "
        "if [ $end -gt 0 ] && [ $(date +%s) -ge $end ]; then exit 0; fi; done"
    )
    toml = f'[services.flood]\ncommand = """sh -c "{flood}" """\n'
    repo = make_repo(tmp_path / "flood", files=1, colony_toml=toml)
    with small_disk(hive_env.home, "8m"):
        assert run_stem(hive_env.env, "spawn", "flood", "--repo", str(repo)).returncode == 0
        assert (hive_env.home / "hive.db.reserve").stat().st_size == 1 << 20
        wait_for(lambda: disk_free(hive_env.home) == 0, timeout=30, what="the flood to fill the disk")

        stopped = run_stem(hive_env.env, "stop", "flood")

        assert stopped.returncode == 0, stopped.stderr
        with sqlite3.connect(hive_env.home / "hive.db") as db:  # as the stop left it, before any other command
            assert db.execute("SELECT state FROM colonies").fetchall() == [("stopped",)]
        assert netns_names(hive_env.prefix) == []
        destroyed = run_stem(hive_env.env, "destroy", "--force", "flood")
        assert destroyed.returncode == 0, destroyed.stderr


def disk_free(disk) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


def test_a_start_on_a_full_disk_is_refused_before_it_makes_anything(hive_env, tmp_path):
    # Nobody holds hive.db open, so the start opens it on the registry's reserve: it took that room, started the
    # colony on a full disk (its log, its database, the host's records all refused from then on) and left none for
    # the stop or destroy that would make room; with the hive held open elsewhere (a UI) it failed half way and
    # left the colony 'starting', its namespace and veth made, its host dead.
    toml = '[services.web]\ncommand = "python3 -m http.server 8000"\nport = 8000\n'
    repo = make_repo(tmp_path / "quiet", files=1, colony_toml=toml)
    with small_disk(hive_env.home, "8m"):
        assert run_stem(hive_env.env, "spawn", "quiet", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "stop", "quiet").returncode == 0
        filler = fill(hive_env.home, 0)

        refused = run_stem(hive_env.env, "start", "quiet")

        line = assert_refused(refused, "No space left on device", str(hive_env.home), "a start needs")
        assert "free some space" in line
        assert netns_names(hive_env.prefix) == [] and hive_env.host_pids() == []
        listed = run_stem(hive_env.env, "ls")
        assert listed.returncode == 0 and re.search(r"^quiet\s+stopped\s", listed.stdout, re.M), listed
        destroyed = run_stem(hive_env.env, "destroy", "--force", "quiet")  # the reserve's room is still there
        assert destroyed.returncode == 0, destroyed.stderr
        filler.unlink()
        assert run_stem(hive_env.env, "spawn", "again", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "stop", "again").returncode == 0
        started = run_stem(hive_env.env, "start", "again")
        assert started.returncode == 0, started.stderr
        assert run_stem(hive_env.env, "destroy", "again").returncode == 0


def test_stem_ls_lists_on_a_full_disk_what_a_killed_stop_left_half_done_and_the_next_one_with_room_finishes_it(
    hive_env, tmp_path
):
    # Each command finishes on its way what a stem killed -9 left half done. Where the disk refused that (no
    # reserve left, the hive held open elsewhere: a UI, here a reader), stem ls failed with the registry's line
    # instead of listing; it lists, and the first command with room finishes the stop.
    repo = make_repo(tmp_path / "quiet", files=1)
    with small_disk(hive_env.home, "4m"):
        assert run_stem(hive_env.env, "spawn", "cut", "--repo", str(repo)).returncode == 0
        killed = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT="stopping", STEM_WARM="0"), "stop", "cut")
        assert killed.returncode == -9, killed
        reader = sqlite3.connect(hive_env.home / "hive.db")
        reader.execute("BEGIN")
        assert reader.execute("SELECT state FROM colonies").fetchall() == [("stopping",)]  # its snapshot held
        filler = fill(hive_env.home, 0)

        listed = run_stem(hive_env.env, "ls")

        assert listed.returncode == 0, listed.stderr
        assert re.search(r"^cut\s+stopping\s", listed.stdout, re.M), listed.stdout
        reader.close()
        filler.unlink()
        assert re.search(r"^cut\s+stopped\s", run_stem(hive_env.env, "ls").stdout, re.M)
        assert netns_names(hive_env.prefix) == []
        assert run_stem(hive_env.env, "destroy", "cut").returncode == 0


def test_a_colony_host_that_wrote_nothing_on_a_full_disk_names_the_disk(tmp_path):
    # A host that found no room wrote nothing to host.log, not even why: the spawn said only 'the colony host of
    # tight did not start: no output'.
    from core.host import launch
    from core.host.paths import HostPaths

    with small_disk(tmp_path / "disk") as disk:
        paths = HostPaths(disk / "colonies" / "tight")
        paths.folder.mkdir(parents=True)
        paths.log.touch()
        assert launch._log_tail(paths) == "no output"  # with room, nothing more to say
        fill(disk, 0)

        said = launch._log_tail(paths)

        assert said == f"no output, and {paths.folder} has 0 KB free: free some space and try again"


def test_a_spawn_whose_repository_is_on_a_full_disk_names_that_disk(hive_env, tmp_path):
    # STEM_HOME has room; the repository, where git writes the colony's branch and the worktree's index, has none:
    # the line said only "couldn't write '.../refs/heads/colony/far.lock'", not that its disk was full.
    with small_disk(tmp_path / "disk") as disk:
        repo = make_repo(disk / "repo", files=1)
        filler = fill(disk, 0)

        refused = run_stem(hive_env.env, "spawn", "far", "--repo", str(repo))

        assert_refused(refused, f"No space left on device in {repo}/.git", "free some space there", "colony/far")
        assert_nothing_made(hive_env)
        filler.unlink()
        assert git(repo, "branch").strip() == "* main"
        assert run_stem(hive_env.env, "spawn", "far", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "destroy", "far").returncode == 0


def test_the_colony_accounts_a_full_disk_refuses_are_named(tmp_path):
    # The colony's passwd and group files, written as a spawn provisions it: on a full disk the write named no file,
    # and the spawn said 'No space left on device: free some space', not where.
    from core import sandbox

    with small_disk(tmp_path / "disk") as disk:
        fill(disk, 0)

        with pytest.raises(OSError) as refused:
            sandbox.write_accounts(disk, sandbox.Identity(1899876353, 1895825408, "colony", "dedicated"), disk)

        assert refused.value.filename == str(disk / "passwd")
        assert [path.name for path in disk.iterdir()] == ["filler"]


def test_a_full_disk_a_write_met_without_naming_a_file_is_said_with_stem_home_named(monkeypatch):
    # Python's writes name no file (the colony's .gitconfig, the host's records): the line said 'No space left on
    # device: free some space (or point STEM_HOME elsewhere)', and not where STEM_HOME is.
    from core.errors import failure_line

    monkeypatch.setenv("STEM_HOME", "/srv/hive")

    line = failure_line(OSError(28, "No space left on device"))

    assert line == (
        "No space left on device (STEM_HOME is /srv/hive): free some space (or point STEM_HOME elsewhere) and try again"
    )


def test_a_service_that_crashed_while_the_disk_was_full_reads_crashed_once_there_is_room(hive_env, tmp_path):
    # The colony host writes its services' states to the registry, which stem ls reads. A state the full disk
    # refused was lost: the service read 'ready' for good after it had crashed. It is written once there is room.
    toml = (
        '[services.once]\ncommand = "sh -c \'while [ ! -e crash-now ]; do sleep 0.1; done; exit 3\'"\nrestart = "no"\n'
    )
    repo = make_repo(tmp_path / "once", files=1, colony_toml=toml)
    db = hive_env.home / "hive.db"

    def state() -> str:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT state FROM runtime WHERE kind='service' AND name='once'").fetchone()[0]

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()
            await hive.spawn("once", repo)
            await until(lambda: state() == "ready", what="the service ready")
            with sqlite3.connect(db) as conn:  # the journal emptied and cut to nothing: the next write needs room
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(hive_env.home, 0)
            (hive_env.home / "worktrees" / "once" / "crash-now").touch()  # an empty file takes no room
            await until(lambda: hive.services("once")["once"].state == "crashed", what="the host to see it crash")
            assert state() == "ready"  # refused while the disk is full
            filler.unlink()
            await until(lambda: state().startswith("crashed"), timeout=30, what="the crash written")
            await hive.destroy("once", force=True)
        finally:
            await hive.close()

    with small_disk(hive_env.home, "8m"):
        asyncio.run(scenario())


def test_commands_on_a_full_disk_before_the_hive_is_made_leave_no_temporary_files(hive_env):
    # A STEM_HOME whose disk is full before the hive's first command: each command says so in one line, and leaves
    # nothing behind but the hive's folders. Each left an empty `claim.PID` (the hive's remembered claim, written
    # to a temporary file first) in STEM_HOME, one more per command.
    with small_disk(hive_env.home, "1m") as home:
        fill(home, 0)
        for command in (["ls"], ["ls", "--json"], ["gc"], ["ls"]):
            assert_refused(run_stem(hive_env.env, *command), "free some space", str(home))
        assert sorted(path.name for path in home.iterdir() if not path.is_dir()) == ["filler"]
        (home / "filler").unlink()
        assert run_stem(hive_env.env, "ls").returncode == 0
        assert (home / "hive.db").stat().st_size > 0
        assert sorted(path.name for path in home.iterdir() if path.name.startswith((".claim", "claim."))) == []


def test_a_claim_a_full_disk_refuses_leaves_no_temporary_file(tmp_path):
    # The hive's remembered claim (claim.json) is written to a temporary file first: on a full disk that file was
    # left behind (`claim.PID`, empty), one more for every command.
    from core import claims

    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk, 0)
        with pytest.raises(OSError):
            claims._write(disk / claims.REMEMBERED, {"prefix": "full", "pool": "10.250.0.0/20"})
        assert sorted(path.name for path in disk.iterdir()) == ["filler"]


def test_a_start_whose_build_fills_the_disk_says_so_in_the_builds_words_and_leaves_nothing_running(hive_env, tmp_path):
    # The start's room check passed; its build (a `make` writing its output) then filled the disk. The start failed
    # with only the registry's line ("cannot be written (database or disk is full)"), which had no room to record the
    # failure: not a word of the build that filled it.
    build = "if [ -f built ]; then head -c 20000000 /dev/zero > big.bin; else touch built; fi"
    toml = f'[colony]\nbuild = ["{build}"]\n[services.web]\ncommand = "python3 -m http.server 8000"\nport = 8000\n'
    repo = make_repo(tmp_path / "maker", files=1, colony_toml=toml)
    with small_disk(hive_env.home, "8m"):
        assert run_stem(hive_env.env, "spawn", "maker", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "stop", "maker").returncode == 0

        refused = run_stem(hive_env.env, "start", "maker")

        assert_refused(refused, "start maker failed while building", "build command", "No space left on device")
        assert netns_names(hive_env.prefix) == [] and hive_env.host_pids() == []
        listed = run_stem(hive_env.env, "ls")
        assert listed.returncode == 0 and re.search(r"^maker\s+(stopped|failed)\s", listed.stdout, re.M), listed
        worktree = hive_env.home / "worktrees" / "maker"
        (worktree / "big.bin").unlink()
        (worktree / "built").unlink()
        started = run_stem(hive_env.env, "start", "maker")
        assert started.returncode == 0, started.stderr
        assert run_stem(hive_env.env, "destroy", "--force", "maker").returncode == 0
