"""The hive's Caddy is reaped by Stem, never passed to PID 1 as a zombie.

Caddy is started by a colony host; when that host ends first, Caddy passes to the host forker (a child subreaper),
and the forker must reap it when it is stopped. A forker that exits while Caddy runs, or at the moment Caddy ends,
hands Caddy (or its zombie) to the subreaper above it, on a real machine PID 1, which may reap it late or never:
`ps` showed `[caddy] <defunct>` children of PID 1 after colonies were destroyed. Here that role is played by a
stand-in that adopts orphans as PID 1 would and never reaps them, so a Caddy handed to it stays there to be seen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_repo, run_stem, stem_cmd, wait_for
from test_host import fake_agent_config, host_pid
from test_preview import SERVICE, caddy_pid

from core.host.forker import ForkerPaths

pytestmark = pytest.mark.root

# Becomes a child subreaper, runs its arguments as a command, then sits there: it never reaps an orphan it adopts.
STAND_IN = """\
import ctypes, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
print(done.returncode, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
"""


def stat_of(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, parent pid) of `pid`, or None once it is gone (reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return comm, state, int(ppid)


def caddy_zombies_of(parent: int) -> list[int]:
    """Every zombie Caddy whose parent is `parent` (the forker's own exit leaves it a zombie of whoever adopted it, as
    it would PID 1's: its starter, a stem command, is long gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            got = stat_of(int(entry.name))
            if got is not None and got[:2] == ("caddy", "Z") and got[2] == parent:
                found.append(int(entry.name))
    return found


class StandIn:
    """A slow PID 1: the first `stem spawn` runs under it, so the forker that spawn starts is adopted by it when the
    spawn exits, and so is whatever the forker leaves behind when it exits itself."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", STAND_IN, *stem_cmd(), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "0", "the spawn under the stand-in failed"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def routed_hive(hive_env, tmp_path, *names: str, env: dict[str, str] | None = None) -> tuple[StandIn, int, int]:
    """Colonies `names`, each with a routed web service, the first spawned under a stand-in for PID 1 (with `env`,
    which its forker gets too): the stand-in, the hive's Caddy and its forker."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    stand_in = StandIn(env or hive_env.env, "spawn", names[0], "--repo", str(repo))
    for name in names[1:]:
        done = run_stem(hive_env.env, "spawn", name, "--repo", str(repo))
        assert done.returncode == 0, done.stderr
    caddy = caddy_pid(hive_env)
    forker = ForkerPaths.of(hive_env.home).process()
    assert caddy is not None and forker is not None
    assert (stat_of(forker[0]) or ("", "", 0))[2] == stand_in.proc.pid  # the scene: the forker is the stand-in's
    assert (stat_of(caddy) or ("", "", 0))[2] == host_pid(hive_env, names[0])  # started by the first host
    return stand_in, caddy, forker[0]


def assert_reaped(stand_in: StandIn, caddy: int) -> None:
    """Caddy ended and its exit was reaped by Stem: its pid is gone, and the stand-in for PID 1 holds no zombie."""

    def reaped() -> bool:
        got = stat_of(caddy)
        assert got is None or got[2] != stand_in.proc.pid, f"Caddy (pid {caddy}) was passed to PID 1: {got}"
        return got is None

    wait_for(reaped, timeout=15, what=f"Caddy (pid {caddy}) to end and be reaped")
    assert caddy_zombies_of(stand_in.proc.pid) == []


def test_destroying_the_colonies_one_by_one_reaps_the_caddy_the_forker_adopted(hive_env, tmp_path):
    """`stem destroy` of Caddy's starter, then of the last colony: the forker adopted Caddy, and the destroy stopped
    the forker before Caddy (each destroy is a batch of one, which leaves Caddy to its end)."""
    stand_in, caddy, forker = routed_hive(hive_env, tmp_path, "a", "b")
    try:
        assert run_stem(hive_env.env, "destroy", "--force", "a").returncode == 0
        assert (stat_of(caddy) or ("", "", 0))[2] == forker  # adopted by the forker
        assert run_stem(hive_env.env, "destroy", "--force", "b").returncode == 0
        assert_reaped(stand_in, caddy)
        wait_for(lambda: stat_of(forker) is None or stat_of(forker)[1] == "Z", what="the forker to exit")
    finally:
        stand_in.close()


def test_stopping_every_colony_at_once_reaps_caddy(hive_env, tmp_path):
    stand_in, caddy, _forker = routed_hive(hive_env, tmp_path, "a", "b")
    try:
        stopped = run_stem(hive_env.env, "stop", "a", "b")
        assert stopped.returncode == 0, stopped.stderr
        assert_reaped(stand_in, caddy)
    finally:
        stand_in.close()


def test_gc_reaps_the_caddy_of_a_host_killed_9(hive_env, tmp_path):
    """Caddy's host killed -9 leaves Caddy to the forker; gc, with no host left, ends both."""
    stand_in, caddy, forker = routed_hive(hive_env, tmp_path, "a")
    try:
        host = host_pid(hive_env, "a")
        assert host is not None
        os.kill(host, signal.SIGKILL)
        wait_for(lambda: (stat_of(caddy) or ("", "", 0))[2] == forker, what="the forker to adopt Caddy")
        gc = run_stem(hive_env.env, "gc")
        assert gc.returncode == 0, gc.stderr
        assert "removed the preview proxy" in gc.stdout, gc.stdout
        assert_reaped(stand_in, caddy)
    finally:
        stand_in.close()


def test_a_forker_stopped_as_its_caddy_ends_reaps_it_first(hive_env, tmp_path):
    """The race itself: Caddy (adopted by the forker) ends at the moment the forker is told to stop. The forker
    reaps it before it exits, whichever signal it saw first."""
    stand_in, caddy, forker = routed_hive(hive_env, tmp_path, "a")
    try:
        host = host_pid(hive_env, "a")
        assert host is not None
        os.kill(host, signal.SIGKILL)
        wait_for(lambda: (stat_of(caddy) or ("", "", 0))[2] == forker, what="the forker to adopt Caddy")
        os.kill(caddy, signal.SIGKILL)
        os.kill(forker, signal.SIGTERM)
        assert_reaped(stand_in, caddy)
    finally:
        stand_in.close()


def wakes(pid: int) -> int:
    """How many times `pid` has slept and woken (its voluntary context switches); -1 once it is gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return -1
    if "State:\tZ" in status:
        return -1
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_an_idle_forker_stays_while_the_caddy_it_adopted_runs(hive_env, tmp_path):
    """A forker whose hosts are gone (killed -9) but which has adopted Caddy does not idle out: it exited, passing
    Caddy alive to PID 1, whose child it then was when it was stopped."""
    env = {**hive_env.env, "STEM_FORKER_IDLE": "0.2"}
    stand_in, caddy, forker = routed_hive(hive_env, tmp_path, "a", env=env)
    try:
        host = host_pid(hive_env, "a")
        assert host is not None
        os.kill(host, signal.SIGKILL)
        wait_for(lambda: (stat_of(caddy) or ("", "", 0))[2] == forker, what="the forker to adopt Caddy")
        # The forker wakes for each look at its idleness (every 0.2 s here): after ten, an idle one has exited.
        start = wakes(forker)
        wait_for(lambda: wakes(forker) < 0 or wakes(forker) >= start + 10, what="ten looks of the forker")
        assert (stat_of(caddy) or ("", "", 0))[2] == forker, "the forker idled out and passed Caddy on"
        gc = run_stem(hive_env.env, "gc")
        assert "removed the preview proxy" in gc.stdout, gc.stdout
        assert_reaped(stand_in, caddy)
    finally:
        stand_in.close()
