"""Stem when its terminal goes away (an SSH drop: the real `stem` in a tmux pane whose server is killed) or it is
killed: the colonies run on, nothing is left half made, and the next command or UI sees the truth."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import hold_a_registry_write, make_repo, run_stem, stem_popen, use_fake_agent, wait_for
from test_e2e_tmux import Tmux, stem_command
from test_e2e_tmux_ui import stem_pid
from test_host import SERVICE, host_pid

from core.host.forker import ForkerPaths
from core.host.paths import HostPaths
from core.procs import alive

pytestmark = pytest.mark.root


def listed(hive_env) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}


def test_a_ui_whose_terminal_hung_up_quits_though_it_ignores_sighup(hive_env, tmp_path):
    """Under nohup (or a shell that ignores SIGHUP) the hang-up itself is all a UI learns of an SSH drop: its
    terminal reads end of input, at once and for ever. It quits, rather than spin on it; the colony runs on."""
    use_fake_agent(hive_env.env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "solo", "--repo", str(repo)).returncode == 0
    # A cold UI: the same driver runs forked from the warm process, only its start is less predictable.
    tmux = Tmux(dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path), STEM_WARM="0"))
    ui: int | None = None
    try:
        tmux(
            "new-session",
            "-d",
            "-s",
            "stem",
            "-x",
            "120",
            "-y",
            "35",
            "-c",
            str(repo),
            f"trap '' HUP; {stem_command()}",
        )
        tmux.wait("solo", "running", "fake-agent>", timeout=60)
        ui = stem_pid(tmux)
        host = host_pid(hive_env, "solo")
        tmux.kill()  # the terminal hangs up
        wait_for(lambda: not alive(ui), 15, "the UI to quit once its terminal is gone")
    finally:
        tmux.kill()
        if ui is not None and alive(ui):
            os.kill(ui, signal.SIGKILL)
    after = listed(hive_env)["solo"]
    assert after["state"] == "running" and after["services"] == {"web": "ready"}, after
    assert host is not None and host_pid(hive_env, "solo") == host  # the same host: it never went


# A build and a service that take their time once the test puts a file in the worktree (not at spawn).
SLOW_START = """\
[colony]
build = ["if [ -e slow-build ]; then sleep 60; fi"]

[services.web]
command = "if [ -e slow-start ]; then sleep 60; fi; echo up > up.txt; exec python3 -m http.server 3000"
port = 3000
ready = "http:/up.txt"
"""


@pytest.mark.parametrize("stage", ["building", "starting"])
def test_a_start_cut_by_a_hang_up_is_failed_as_interrupted_and_the_next_start_runs_it(hive_env, tmp_path, stage):
    """SIGHUP (or Ctrl-C) while `stem start` builds or waits for the services: the colony is left failed, saying
    its start was interrupted, not that its build failed (killed by Stem itself, it 'exited with -9') nor with a
    traceback's words ('CancelledError: at protocol.py:...'); the command ends as the hang-up ends it."""
    use_fake_agent(hive_env.env)
    repo = make_repo(tmp_path / "repo", colony_toml=SLOW_START)
    assert run_stem(hive_env.env, "spawn", "slow", "--repo", str(repo)).returncode == 0
    assert run_stem(hive_env.env, "stop", "slow").returncode == 0
    marker = Path(listed(hive_env)["slow"]["worktree"]) / ("slow-build" if stage == "building" else "slow-start")
    marker.write_text("")
    start = stem_popen(dict(hive_env.env, STEM_WARM="0"), "start", "slow")
    try:
        wait_for(lambda: listed(hive_env)["slow"]["state"] == stage, 60, f"the start {stage}")
        start.send_signal(signal.SIGHUP)
        _out, err = start.communicate(timeout=60)
    finally:
        start.kill()
    assert start.returncode == 128 + signal.SIGHUP, err
    rec = listed(hive_env)["slow"]
    assert (rec["state"], rec["stage"]) == ("failed", stage), rec
    assert "interrupted" in rec["reason"] and "exited with" not in rec["reason"], rec["reason"]
    assert "Error" not in rec["reason"], rec["reason"]
    marker.unlink()
    assert run_stem(hive_env.env, "start", "slow").returncode == 0
    rec = listed(hive_env)["slow"]
    assert rec["state"] == "running" and rec["services"] == {"web": "ready"}, json.dumps(rec)


def state_of(hive_env, name: str) -> str | None:
    """The colony's state as the registry holds it now (read directly: a poll of `stem ls` is too slow to catch a
    step that lasts half a second)."""
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        row = db.execute("SELECT state FROM colonies WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def test_a_start_cut_while_its_host_comes_up_leaves_no_host_running(hive_env, tmp_path):
    """A hang-up while `stem start` waits for the colony's new host to listen (the hive's forker starting first,
    after the last colony's stop took it): the host is stopped once it listens, not left to come up after the start's
    stop found none to stop, running on for a colony said to be failed (and taken by the next start as its host)."""
    use_fake_agent(hive_env.env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "slow", "--repo", str(repo)).returncode == 0
    assert run_stem(hive_env.env, "stop", "slow").returncode == 0
    paths = HostPaths(hive_env.home / "colonies" / "slow")
    forker = ForkerPaths.of(hive_env.home)
    wait_for(lambda: forker.process() is None, 30, "the forker to go with the hive's last running colony")
    start = stem_popen(dict(hive_env.env, STEM_WARM="0"), "start", "slow")
    try:
        wait_for(lambda: state_of(hive_env, "slow") == "starting", 60, "the start to start its host")
        assert not paths.running(), "the host was up already: nothing left to cut"
        start.send_signal(signal.SIGHUP)
        _out, err = start.communicate(timeout=60)
    finally:
        start.kill()
    assert start.returncode == 128 + signal.SIGHUP, err
    assert not paths.running(), "the host came up after its start was cut, and runs on"
    rec = listed(hive_env)["slow"]
    assert (rec["state"], rec["host"]) == ("failed", False), rec
    assert run_stem(hive_env.env, "start", "slow").returncode == 0
    rec = listed(hive_env)["slow"]
    assert rec["state"] == "running" and rec["services"] == {"web": "ready"}, rec


SLOW_SETUP = '[colony]\nsetup = ["sleep 60"]\n'


def test_a_command_waiting_on_a_colony_held_by_a_stopped_stem_command_says_so_and_ends(hive_env, tmp_path):
    """A spawn stopped by ctrl+z (kill -STOP) holds its colony's lock for good: `stem stop` of that colony waited
    without a word, and Ctrl-C could not end the wait. It says who holds the colony and how to let it go on."""
    repo = make_repo(tmp_path / "repo", colony_toml=SLOW_SETUP)
    spawn = stem_popen(dict(hive_env.env, STEM_WARM="0"), "spawn", "held", "--repo", str(repo))  # it holds the lock
    try:
        # Stopped while it waits for its setup, not inside a write to the registry (its record of the setup is made).
        wait_for(lambda: provisioning(hive_env, "held") and hive_env.registry_pids(), 20, "the spawn's setup")
        os.kill(spawn.pid, signal.SIGSTOP)
        stopped = run_stem(hive_env.env, "stop", "held", timeout=30)
        assert stopped.returncode == 2, stopped
        assert stopped.stderr.startswith(f"stem: colony held is held by pid {spawn.pid} ("), stopped.stderr
        assert stopped.stderr.endswith(
            f"), which is stopped: kill -CONT {spawn.pid} lets it finish, kill {spawn.pid} ends it\n"
        ), stopped.stderr
        assert stopped.stderr.count("\n") == 1, stopped.stderr
        kept = [line for line in run_stem(hive_env.env, "gc").stdout.splitlines() if "colony held" in line]
        assert kept == [
            f"kept colony held: busy, pid {spawn.pid} ({stopped.stderr.split('(', 1)[1].split(')')[0]}) holds it, "
            f"and is stopped: kill -CONT {spawn.pid} lets it finish"
        ], kept
    finally:
        os.kill(spawn.pid, signal.SIGCONT)
        spawn.terminate()  # a spawn ended by SIGTERM rolls back
        spawn.communicate(timeout=60)
    assert run_stem(hive_env.env, "ls").stdout.startswith("no colonies")


def test_a_write_to_the_registry_stopped_halfway_does_not_hold_up_a_listing_and_turns_writers_away(hive_env, tmp_path):
    """A `stem` stopped in the middle of a write to the hive's registry holds SQLite's write lock for good: every
    other command waited 30 s and died in a traceback ("database is locked"), `stem ls` too, which wrote the schema
    at every open. `stem ls` lists now, and a command that writes ends within seconds with one line naming the
    holder and `kill -CONT`, exit code 2, a spawn leaving nothing behind; once the holder goes on, it works."""
    use_fake_agent(hive_env.env)
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "first", "--repo", str(repo)).returncode == 0
    holder = hold_a_registry_write(hive_env.home, "stop")
    try:
        assert [r["name"] for r in json.loads(run_stem(hive_env.env, "ls", "--json", timeout=20).stdout)] == ["first"]
        assert run_stem(hive_env.env, "ls", timeout=20).stdout.splitlines()[1].split()[:2] == ["first", "running"]
        spawn = run_stem(hive_env.env, "spawn", "second", "--repo", str(repo), timeout=20)
        assert spawn.returncode == 2, spawn
        assert spawn.stderr == (
            f"stem: the hive's registry ({hive_env.home / 'hive.db'}) is held by pid {holder.pid} (hold_a_write.py "
            f"hive.db stop), which is stopped: kill -CONT {holder.pid} lets it finish\n"
        ), spawn.stderr
        assert not (hive_env.home / "worktrees" / "second").exists()
        assert (
            "colony/second"
            not in subprocess.run(["git", "-C", str(repo), "branch"], capture_output=True, text=True).stdout
        )
        stop = run_stem(hive_env.env, "stop", "first", timeout=20)
        assert stop.returncode == 2 and f"kill -CONT {holder.pid}" in stop.stderr, stop
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.communicate(timeout=10)
    assert run_stem(hive_env.env, "spawn", "second", "--repo", str(repo)).returncode == 0
    assert {name: r["state"] for name, r in listed(hive_env).items()} == {"first": "running", "second": "running"}


def test_ctrl_c_ends_a_command_waiting_for_a_colony_another_one_holds(hive_env, tmp_path):
    """`stem stop` of a colony whose spawn still runs its setup waits for it, saying so; Ctrl-C ends that wait at
    once (the wait was a thread blocked on the lock, which held the exiting process until the spawn let it go)."""
    repo = make_repo(tmp_path / "repo", colony_toml=SLOW_SETUP)
    spawn = stem_popen(hive_env.env, "spawn", "busy", "--repo", str(repo))
    try:
        wait_for(lambda: provisioning(hive_env, "busy"), 20, "the spawn's setup")
        stop = stem_popen(hive_env.env, "stop", "busy")
        assert stop.stderr is not None
        told = stop.stderr.readline()
        assert told.startswith("stem: colony busy is busy: pid ") and told.endswith("; waiting (ctrl+c gives up)\n")
        stop.send_signal(signal.SIGINT)
        stop.communicate(timeout=10)  # TimeoutExpired: the wait outlived Ctrl-C
        assert stop.returncode == 130, stop.returncode
        assert spawn.poll() is None  # the spawn goes on
    finally:
        spawn.terminate()
        spawn.communicate(timeout=60)


def provisioning(hive_env, name: str) -> bool:
    """Whether the colony is being provisioned (its setup runs), as the registry says; False before there is one."""
    try:
        return state_of(hive_env, name) == "provisioning"
    except sqlite3.OperationalError:  # the spawn has not made the hive's registry yet
        return False


@pytest.mark.parametrize("warm", ["0", "1"])
def test_a_stem_exec_killed_9_takes_its_command_with_it(hive_env, tmp_path, warm):
    """kill -9 of `stem exec`: its command (in a session of its own in the colony) ran on until the colony's next
    stop when the `stem exec` ran cold (a warm one's process ends it when its client goes)."""
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "alpha", "--repo", str(repo)).returncode == 0
    execer = stem_popen(dict(hive_env.env, STEM_WARM=warm), "exec", "alpha", "--", "sleep", "551")
    try:
        pid = wait_for(lambda: exec_pid(hive_env, "sleep 551"), 20, "the command to run")
        os.kill(execer.pid, signal.SIGKILL)
        execer.communicate(timeout=10)
        assert wait_for(lambda: not alive(pid), 10, "the command to end with its stem exec")
    finally:
        if execer.poll() is None:
            execer.kill()
            execer.communicate()


def exec_pid(hive_env, command: str) -> int | None:
    """The pid of a `stem exec` command running `command`, as the registry records it."""
    with contextlib.closing(sqlite3.connect(hive_env.home / "hive.db")) as db:
        for pid, argv in db.execute("SELECT pid, argv FROM processes WHERE kind = 'exec'"):
            if " ".join(json.loads(argv)) == command and alive(pid):
                return int(pid)
    return None
