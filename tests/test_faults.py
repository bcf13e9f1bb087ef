"""Stem under real faults: a full disk, for one, met half way through a command; what it leaves must be as before."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import (
    assert_refused,
    git,
    hung,
    link_names,
    make_repo,
    netns_names,
    run_stem,
    stem_cmd,
    stem_popen,
    wait_for,
)

from core.errors import StemError
from core.hive import Hive
from core.host.launch import HELLO_WAIT
from core.host.paths import HostPaths

pytestmark = pytest.mark.root


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` at `path`, unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)  # (a hive's home is made already: `HiveEnv`)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int, name: str = "filler") -> Path:
    """A file that takes all of `disk`'s room but about `leave` bytes. Asked to leave none, a disk that something
    else (a colony host writing its state) took some of the room on meanwhile is full all the same."""
    st = os.statvfs(disk)
    filler = disk / name
    try:
        filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    except OSError as exc:
        if exc.errno != errno.ENOSPC or leave:
            raise
    return filler


def test_merge_whose_checkout_finds_the_disk_full_half_way_changes_nothing(hive_env, tmp_path):
    # The repository (and so the checkout of main a fast-forward brings along) is on a small disk. Its ref moves
    # (a few bytes) before the checkout follows; the new file does not fit. The merge must then leave main and its
    # checkout as they were: not main moved with a partly written file untracked and its deletion staged.
    with small_disk(tmp_path / "disk") as disk:
        repo = make_repo(disk / "repo", files=1)
        spawned = run_stem(hive_env.env, "spawn", "full", "--repo", str(repo))
        assert spawned.returncode == 0, spawned.stderr
        worktree = hive_env.home / "worktrees" / "full"
        (worktree / "big.txt").write_bytes(os.urandom(256 << 10).hex().encode())  # 512 KiB
        assert run_stem(hive_env.env, "commit", "full", "-m", "big").returncode == 0
        before = git(repo, "rev-parse", "main").strip()
        filler = fill(disk, 128 << 10)

        refused = run_stem(hive_env.env, "merge", "full")

        assert_refused(refused, str(repo), "big.txt", "nothing was changed")
        assert git(repo, "rev-parse", "main").strip() == before
        assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
        filler.unlink()
        merged = run_stem(hive_env.env, "merge", "full")
        assert merged.returncode == 0, merged.stderr
        assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
        assert (repo / "big.txt").read_bytes() == (worktree / "big.txt").read_bytes()
        assert run_stem(hive_env.env, "destroy", "full").returncode == 0


def test_commit_on_a_full_disk_names_the_file_it_could_not_write(hive_env, tmp_path):
    # The colony's worktree is in STEM_HOME, its git dir (index, objects) in the repository, on a full disk: the
    # one line must name the file there, not send the user to STEM_HOME, which has room.
    with small_disk(tmp_path / "disk") as disk:
        repo = make_repo(disk / "repo", files=1)
        spawned = run_stem(hive_env.env, "spawn", "full", "--repo", str(repo))
        assert spawned.returncode == 0, spawned.stderr
        (hive_env.home / "worktrees" / "full" / "new.txt").write_text("new\n")
        filler = fill(disk, 0)

        refused = run_stem(hive_env.env, "commit", "full", "-m", "new")

        line = assert_refused(refused, "No space left on device", f"{repo}/.git/worktrees/full/index.lock")
        assert "STEM_HOME" not in line
        assert not (repo / ".git" / "worktrees" / "full" / "index.lock").exists()
        filler.unlink()
        assert run_stem(hive_env.env, "commit", "full", "-m", "new").returncode == 0
        assert git(repo, "log", "-1", "--format=%s", "colony/full").strip() == "new"


def sleeping(argv: bytes) -> bool:
    """Whether a process runs exactly `argv` (NUL-separated, as /proc/PID/cmdline has it)."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == argv:
                return True
    return False


def test_a_host_killed_while_it_starts_a_colony_is_not_given_the_words_of_the_host_before(hive_env, tmp_path):
    # Its service is ready at the spawn; at the next start it never listens, so the start waits on it. The host
    # is killed -9 then: it wrote nothing, and the failure must not quote the previous host's last lines in the
    # same host.log ("stopping late: asked by a script client"), which read as the reason.
    toml = (
        "[services.late]\n"
        "command = \"sh -c 'if [ -e started ]; then exec sleep 301; fi; touch started; exec python3 -m http.server "
        "8002'\"\nport = 8002\n"
    )
    repo = make_repo(tmp_path / "repo", files=1, colony_toml=toml)
    spawned = run_stem(hive_env.env, "spawn", "late", "--repo", str(repo))
    assert spawned.returncode == 0, spawned.stderr
    paths = HostPaths(hive_env.home / "colonies" / "late")
    first = paths.process()
    assert first is not None
    assert run_stem(hive_env.env, "stop", "late").returncode == 0
    starter = stem_popen(hive_env.env, "start", "late")
    try:
        host = wait_for(
            lambda: (found := paths.process()) and found[0] != first[0] and sleeping(b"sleep\x00301\x00") and found,
            timeout=30,
            what="the new host to start the service that never listens",
        )
        os.kill(host[0], signal.SIGKILL)
        _, err = starter.communicate(timeout=60)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
    assert starter.returncode != 0
    assert "went away while starting" in err, err
    assert "asked by" not in err and f"host[{first[0]}]" not in err, err
    assert "no output" in err, err


@pytest.mark.parametrize("next_command", ["ls", "gc"])
def test_a_merge_killed_before_the_checkout_followed_is_finished_by_the_next_command(hive_env, repo, next_command):
    # Killed -9 once main moved and before its checkout followed: main's checkout had the merge undone, staged
    # (`D  new.txt`), for a commit there to revert. The next stem command brings the checkout along.
    assert run_stem(hive_env.env, "spawn", "cut", "--repo", str(repo)).returncode == 0
    (hive_env.home / "worktrees" / "cut" / "new.txt").write_text("merged\n")
    assert run_stem(hive_env.env, "commit", "cut", "-m", "new").returncode == 0
    tip = git(repo, "rev-parse", "colony/cut").strip()

    killed = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT="merge-moved"), "merge", "cut")

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert git(repo, "rev-parse", "main").strip() == tip
    after = run_stem(hive_env.env, next_command)
    assert after.returncode == 0, after.stderr
    assert "its merge into main was interrupted" in after.stdout + after.stderr or next_command == "ls"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert (repo / "new.txt").read_text() == "merged\n"
    assert not list((hive_env.home / "locks").glob("follow-*"))


def test_a_stop_ends_a_frozen_host_instead_of_waiting_for_it_for_ever(hive_env, repo):
    # A hung host still accepts connections (its socket's backlog does) and never answers them: the stop waited for
    # its welcome for good, and a stop that has begun ignores SIGTERM and Ctrl-C until it is finished. It must give up
    # on the host within seconds, kill it and end the colony. (A host stopped by kill -STOP is let go on instead.)
    assert run_stem(hive_env.env, "spawn", "frozen", "--repo", str(repo)).returncode == 0
    host = HostPaths(hive_env.home / "colonies" / "frozen").process()
    assert host is not None

    with hung(host[0]):
        began = time.monotonic()
        stopped = run_stem(dict(hive_env.env, STEM_WARM="0"), "stop", "frozen", timeout=45)
        took = time.monotonic() - began

    # It never heard of the stop: killed once its welcome is overdue, not waited for to exit as well (5 s more).
    assert took < HELLO_WAIT + 4, f"the stop took {took:.1f} s"

    assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: not Path(f"/proc/{host[0]}").exists(), timeout=10, what="the frozen host to be gone")
    listed = run_stem(hive_env.env, "ls").stdout
    assert "frozen  stopped" in listed, listed


def test_a_stopped_host_is_named_as_such_and_commands_do_not_wait_on_it(hive_env, tmp_path):
    # kill -STOP (or ctrl+z in the shell that ran it) leaves a host that holds its lock and takes connections but
    # answers nothing: `stem ls` went on showing what it last wrote (idle, web:ready), `stem logs` waited for it for
    # good, and a stop killed it -9 after its hello wait, so its services got no SIGTERM of their own.
    toml = '[services.web]\ncommand = "python3 -u -c \'print(\\"web up\\"); import time; time.sleep(600)\'"\n'
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    assert run_stem(hive_env.env, "spawn", "held", "--repo", str(repo)).returncode == 0
    wait_for(lambda: "web up" in run_stem(hive_env.env, "logs", "held").stdout, 20, "the service's first line")
    host = HostPaths(hive_env.home / "colonies" / "held").process()
    assert host is not None
    os.kill(host[0], signal.SIGSTOP)
    try:
        (row,) = run_stem(hive_env.env, "ls").stdout.splitlines()[1:]
        assert f"its host is stopped: kill -CONT {host[0]}" in row and "web:" not in row, row
        (listed,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
        assert listed["host"] is True and listed["host_stopped"] is True

        logs = run_stem(hive_env.env, "logs", "held", timeout=20)
        assert logs.returncode == 0 and "[web] web up" in logs.stdout, logs

        stopped = run_stem(dict(hive_env.env, STEM_WARM="0"), "stop", "held", timeout=45)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(host[0], signal.SIGCONT)
    assert stopped.returncode == 0, stopped.stderr
    # Let go on first, the host stopped its service itself, as any stop does.
    assert "[web] stopped: killed by SIGTERM" in run_stem(hive_env.env, "logs", "held").stdout
    (listed,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert listed["state"] == "stopped" and listed["host_stopped"] is False


def test_a_stop_killed_before_the_host_heard_of_it_ends_the_host_too(hive_env, repo):
    # The stop is killed -9 while it waits for a host that does not answer (hung): the next stem command finishes
    # the stop. The host must go with it, or the colony reads stopped while its host lives on, and a later start
    # takes that stale host for the colony's (running, with its services dead and no network). A host stopped by
    # kill -STOP would not do: the stop lets it go on, and it answered before the stop could be caught stopping.
    assert run_stem(hive_env.env, "spawn", "halt", "--repo", str(repo)).returncode == 0
    host = HostPaths(hive_env.home / "colonies" / "halt").process()
    assert host is not None
    with hung(host[0]):
        stopper = subprocess.Popen(
            [*stem_cmd(), "stop", "halt"],
            env=dict(hive_env.env, STEM_WARM="0"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: state_of(hive_env, "halt") == "stopping", timeout=10, what="the stop to begin")
        finally:
            stopper.kill()
            stopper.wait()

        assert run_stem(hive_env.env, "ls").returncode == 0  # finishes the stop

    assert state_of(hive_env, "halt") == "stopped"
    assert wait_for(lambda: not Path(f"/proc/{host[0]}").exists(), timeout=10, what="the frozen host to be gone")
    assert run_stem(hive_env.env, "start", "halt").returncode == 0
    started = HostPaths(hive_env.home / "colonies" / "halt").process()
    assert started is not None and started[0] != host[0]


def state_of(hive_env, name: str) -> str | None:
    """The colony's state as its row says, read without a stem command (which would finish an interrupted one)."""
    with contextlib.closing(sqlite3.connect(hive_env.home / "hive.db")) as db:
        row = db.execute("SELECT state FROM colonies WHERE name=?", (name,)).fetchone()
    return row[0] if row else None


def test_destroying_several_colonies_takes_about_as_long_as_one(hive_env, tmp_path):
    # Each service ignores SIGTERM, so each colony's stop waits its stop_timeout before SIGKILL. One by one, 4
    # colonies took 4 of those (and every destroy rebuilt the firewall table and reloaded Caddy with all the others
    # still in them: 100 colonies took 42 s); side by side, about one.
    toml = (
        '[services.web]\ncommand = "sh -c \\"trap \'\' TERM; exec python3 -m http.server 8000\\""\n'
        "port = 8000\nstop_timeout = 4\n"
    )
    repo = make_repo(tmp_path / "repo", files=1, colony_toml=toml)
    names = [f"many{i}" for i in range(4)]
    for name in names:
        spawned = run_stem(hive_env.env, "spawn", name, "--repo", str(repo))
        assert spawned.returncode == 0, spawned.stderr

    began = time.monotonic()
    destroyed = run_stem(hive_env.env, "destroy", "--force", *names)
    took = time.monotonic() - began

    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout.split("\n")[:4] == [f"destroyed {name}" for name in names]
    assert took < 10, f"destroying 4 colonies took {took:.1f} s: one by one, not side by side"
    assert run_stem(hive_env.env, "ls").stdout.startswith("no colonies")
    assert netns_names(hive_env.prefix) == [] and link_names(hive_env.prefix) == []
    assert git(repo, "worktree", "list").count("\n") == 1


def test_a_destroy_of_several_refused_for_one_destroys_the_others_and_says_why(hive_env, repo):
    for name in ("clean", "dirty"):
        assert run_stem(hive_env.env, "spawn", name, "--repo", str(repo)).returncode == 0
    (hive_env.home / "worktrees" / "dirty" / "work.txt").write_text("agent work\n")

    result = run_stem(hive_env.env, "destroy", "dirty", "clean")

    assert_refused(result, "dirty has uncommitted changes (work.txt)")
    assert result.stdout == "destroyed clean\n"
    assert "dirty  running" in run_stem(hive_env.env, "ls").stdout


def test_two_hives_on_one_pool_never_give_their_colonies_the_same_address(hive_env, tmp_path, repo):
    # A pool may overlap another hive's while that hive has no colonies. This hive is opened (its claim passes:
    # the other has none yet), the other spawns its first colony, then this one spawns: it must be refused, not
    # handed the other colony's address (both spawns of a real race passed the claim so).
    other = HiveEnv(tmp_path / "other")
    other.pool = hive_env.pool
    other.env["STEM_POOL"] = str(hive_env.pool)
    try:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, hosts=False)
        theirs = run_stem(other.env, "spawn", "first", "--repo", str(repo))
        assert theirs.returncode == 0, theirs.stderr

        with pytest.raises(StemError, match=r"overlaps .* which has colonies now"):
            asyncio.run(hive.spawn("second", repo))

        assert [rec.name for rec in hive.registry.colonies()] == []
        assert netns_names(hive_env.prefix) == []
        assert run_stem(other.env, "destroy", "first").returncode == 0
    finally:
        other.cleanup()
