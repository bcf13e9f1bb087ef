"""Colony cgroups for real: limits the kernel holds (memory, pids), OOM kills and refused forks reported with the
process and the limit, every process of a colony inside its cgroup (its host not), and stop, destroy and gc ending
and removing everything of it, whatever left its session or its network namespace."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import git, make_repo, run_stem, until, wait_for
from test_host import fake_agent_config, host_pid

from core import cgroups
from core.config import Limits, parse_colony_config
from core.errors import ConfigError
from core.procs import alive

root = pytest.mark.root

HOG = """\
import os
import re

# Waits for the test's word (a FIFO it opens), then takes 16 MiB after 16 MiB (written, so really charged).
os.mkfifo("go.fifo")
with open("go.fifo") as go:
    go.read()
held = []
while True:
    held.append(b"x" * (16 << 20))
"""

FORK_LOOP = """\
import os, signal

# 300 forks, each child execs sleep: count what the kernel allowed and what it refused.
started, refused = [], 0
for _ in range(300):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "60"])
    started.append(pid)
for pid in started:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(f"started {len(started)} refused {refused}", flush=True)
"""

SWARM = """\
# 1,600 sleeps in the service's process group; 500 that a stop by process group misses: 200 in sessions of their
# own, 100 double-forked into sessions of their own (orphans), and 200 in sessions of their own that also left
# the colony's network namespace for the host's (a stop by namespace misses them too). 2,100 processes.
for i in $(seq 1600); do sleep 1000 & done
for i in $(seq 200); do setsid sleep 1000 & done
for i in $(seq 100); do (setsid sleep 1000 &) ; done
for i in $(seq 200); do setsid nsenter --net="$HOST_NET" sleep 1000 & done
exec sleep 1000
"""


def colony_repo(path: Path, toml: str, files: dict[str, str] | None = None) -> Path:
    make_repo(path, colony_toml=toml)
    if files:
        for name, text in files.items():
            (path / name).write_text(text)
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", "colony files")
    return path


def listed(hive_env) -> dict[str, dict]:
    result = run_stem(hive_env.env, "ls", "--json")
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)}


def spawn(hive_env, name: str, repo: Path) -> dict:
    result = run_stem(hive_env.env, "spawn", name, "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    return listed(hive_env)[name]


def cgroup_of(hive_env, name: str) -> str:
    return f"{hive_env.prefix}-{name}"


def cgroup_dirs(prefix: str) -> list[str]:
    """Every directory of the hive's cgroups, in every mounted hierarchy."""
    return sorted(
        str(h.mount / entry)
        for h in cgroups.hierarchies()
        for entry in os.listdir(h.mount)
        if entry.startswith(prefix + "-") and (h.mount / entry).is_dir()
    )


def memory_cgroup(pid: int) -> str:
    """The memory cgroup of `pid` as /proc/PID/cgroup names it (v1: the memory line; v2: the one line)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next((line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"), lines[-1].split(":", 2)[2])


def settled(group: str, count: int, leader: int) -> set[int] | None:
    """The processes in `group` once they are `count`: the leader and its sleeps. Not before: a `( ... &)` subshell
    that has forked its sleep is in the cgroup for a moment, and once it exited it is in no list of what was ended."""
    members = cgroups.procs(group)
    if len(members) != count:
        return None
    for pid in members - {leader}:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "sleep":
                return None
        except OSError:
            return None
    return members


def events_of(hive_env, name: str, kind: str) -> list[str]:
    return [e["message"] for e in listed(hive_env)[name]["limit_events"] if e["kind"] == kind]


@root
def test_every_process_of_a_colony_is_in_its_cgroup_and_its_host_is_not(hive_env, tmp_path):
    fake_agent_config(hive_env)
    toml = (
        '[colony]\nsetup = ["cat /proc/self/cgroup > setup-cgroup.txt"]\n\n'
        '[services.web]\ncommand = "exec python3 -m http.server 3000"\nport = 3000\nready = "tcp"\n'
    )
    rec = spawn(hive_env, "inside", colony_repo(tmp_path / "repo", toml))
    group = cgroup_of(hive_env, "inside")
    members = cgroups.procs(group)
    host = host_pid(hive_env, "inside")
    assert host is not None and host not in members  # an OOM kill in the colony must never take its host
    agent = wait_for(lambda: listed(hive_env)["inside"]["agent"], what="the agent's state")
    assert agent in ("idle", "working")
    # The service and the agent (started by the host) and the setup command (by the spawn) ran inside it.
    assert {memory_cgroup(pid) for pid in members} == {f"/{group}"}
    assert len(members) >= 2
    assert f"/{group}" in (Path(rec["worktree"]) / "setup-cgroup.txt").read_text()
    inside = run_stem(hive_env.env, "exec", "inside", "--", "cat", "/proc/self/cgroup")
    assert inside.returncode == 0 and f"/{group}" in inside.stdout, inside.stdout
    # In every hierarchy the backend uses, v1 or v2.
    assert len(cgroup_dirs(hive_env.prefix)) == len(cgroups.backend().hierarchies)  # type: ignore[union-attr]
    usage = listed(hive_env)["inside"]["usage"]
    assert usage["memory"] > 0 and usage["cpu"] > 0


@root
def test_a_memory_hog_is_killed_named_with_its_limit_and_another_colony_is_untouched(hive_env, tmp_path):
    fake_agent_config(hive_env)
    hog_toml = '[limits]\nmemory = "64M"\n\n[services.hog]\ncommand = "exec python3 hog.py"\nrestart = "no"\n'
    calm_toml = '[services.calm]\ncommand = "exec python3 -m http.server 3000"\nport = 3000\nready = "tcp"\n'
    hog = spawn(hive_env, "hungry", colony_repo(tmp_path / "hog", hog_toml, {"hog.py": HOG}))
    spawn(hive_env, "calm", colony_repo(tmp_path / "calm", calm_toml))
    assert hog["limits"]["memory"] == 64 << 20
    calm = cgroups.procs(cgroup_of(hive_env, "calm")) | {host_pid(hive_env, "calm")}
    hungry_host = host_pid(hive_env, "hungry")
    fifo = Path(hog["worktree"]) / "go.fifo"
    wait_for(fifo.exists, what="the hog to wait for its word")
    with fifo.open("w") as go:
        go.write("eat\n")
    message = "hog killed: out of memory (64 MiB)"
    try:
        wait_for(lambda: message in events_of(hive_env, "hungry", "oom"), timeout=20, what="the OOM kill event")
    except AssertionError:  # seen in full CI runs only: say what was there instead
        folder = hive_env.home / "colonies" / "hungry"
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        raise AssertionError(
            f"no {message!r}; oom events {events_of(hive_env, 'hungry', 'oom')}\n"
            f"colony log:\n{(folder / 'colony.log').read_text()[-2000:]}\nhost log:\n"
            f"{(folder / 'host.log').read_text()[-2000:]}\nkernel log:\n{kernel[-3000:]}"
        ) from None
    assert f"[limits] {message}" in run_stem(hive_env.env, "logs", "hungry").stdout
    rows = listed(hive_env)
    assert rows["hungry"]["services"]["hog"].startswith("crashed")
    assert rows["hungry"]["agent"] in ("idle", "working")  # only the hog was killed
    assert hungry_host is not None and alive(hungry_host)
    assert all(alive(pid) for pid in calm if pid is not None)  # another colony: nothing of it touched
    assert rows["calm"]["limit_events"] == [] and rows["calm"]["limits"]["memory"] is None


@root
def test_stem_exec_killed_for_memory_says_so(hive_env, tmp_path):
    """The shell would say only "Killed" (exit 137): stem exec names the limit and where the rest is."""
    fake_agent_config(hive_env)
    spawn(hive_env, "small", colony_repo(tmp_path / "repo", '[limits]\nmemory = "64M"\n'))
    hog = "held = []\nwhile True:\n    held.append(b'x' * (16 << 20))\n"
    result = run_stem(hive_env.env, "exec", "small", "--", "python3", "-c", hog, timeout=60)
    assert result.returncode == 137, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "stem: small ran out of memory (its [limits] memory): the kernel killed python3 or a process of its; "
        "stem logs small names it"
    )
    ok = run_stem(hive_env.env, "exec", "small", "--", "sh", "-c", "kill -9 $$")
    assert ok.returncode == 137 and "out of memory" not in ok.stderr  # a SIGKILL for another reason: no word


@root
def test_a_fork_loop_is_refused_past_the_pids_limit_and_reported(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = colony_repo(tmp_path / "repo", "[limits]\npids = 100\n", {"forks.py": FORK_LOOP})
    spawn(hive_env, "forky", repo)
    result = run_stem(hive_env.env, "exec", "forky", "--", "python3", "forks.py")
    assert result.returncode == 0, result.stderr
    started, refused = (int(n) for n in result.stdout.split()[1::2])
    assert started + refused == 300
    assert 50 < started < 100  # everything in the colony counts: its agent, this exec, its python
    message = "fork refused: pids limit (100) reached"
    found = wait_for(lambda: events_of(hive_env, "forky", "pids"), timeout=15, what="the refused-fork event")
    assert found[0].startswith(message), found
    assert f"[limits] {message}" in run_stem(hive_env.env, "logs", "forky").stdout


@root
def test_colony_toml_limits_apply_on_reload_without_restarting_and_config_toml_gives_defaults(hive_env, tmp_path):
    fake_agent_config(hive_env)
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.write_text(config.read_text() + '\n[limits]\npids = 500\nmemory = "1G"\n')
    toml = '[limits]\nmemory = "256M"\n\n[services.web]\ncommand = "exec python3 -m http.server 3000"\nport = 3000\n'
    rec = spawn(hive_env, "tuned", colony_repo(tmp_path / "repo", toml))
    assert rec["limits"] == {"memory": 256 << 20, "cpus": None, "pids": 500, "swap": None}
    web = cgroups.procs(cgroup_of(hive_env, "tuned"))
    (Path(rec["worktree"]) / "colony.toml").write_text(toml.replace('memory = "256M"', 'memory = "128M"\ncpus = 0.5'))
    want = {"memory": 128 << 20, "cpus": 0.5, "pids": 500, "swap": None}
    wait_for(lambda: listed(hive_env)["tuned"]["limits"] == want, timeout=15, what="the new limits in force")
    assert web <= cgroups.procs(cgroup_of(hive_env, "tuned"))  # nothing restarted
    assert listed(hive_env)["tuned"]["services"] == {"web": "ready"}


@root
def test_an_agent_cannot_lift_its_own_limits_through_colony_toml(hive_env, tmp_path):
    """colony.toml says what the colony may use: its agent reads it and cannot change it. A colony.toml the colony
    wrote (where root's was gone, or in an older colony) is obeyed for the rest, its policy from the spawn's commit."""
    fake_agent_config(hive_env)
    rec = spawn(hive_env, "kept", colony_repo(tmp_path / "repo", "[limits]\npids = 64\n"))
    assert rec["limits"]["pids"] == 64
    worktree = Path(rec["worktree"])
    for script in ('printf "[limits]\\npids = 5000\\n" > colony.toml', "rm -f colony.toml", "mv colony.toml x"):
        tried = run_stem(hive_env.env, "exec", "kept", "--", "sh", "-c", script)
        assert tried.returncode != 0, script
        assert "Permission denied" in tried.stderr or "not permitted" in tried.stderr, tried.stderr
    assert (worktree / "colony.toml").read_text() == "[limits]\npids = 64\n"
    assert (worktree / "README.md").stat().st_uid != 0  # the rest of the worktree is the colony's

    # As if the agent had written it: a new file, the colony's uid its owner.
    colony = (worktree / "README.md").stat()
    (worktree / "colony.toml").unlink()
    made = worktree / "colony.toml.new"
    made.write_text('[limits]\npids = 5000\n\n[services.probe]\ncommand = "exec sleep 1000"\n')
    os.chown(made, colony.st_uid, colony.st_gid)
    made.rename(worktree / "colony.toml")

    def said() -> str | None:  # the reload's last line: the limits were applied before it, if at all
        logs = run_stem(hive_env.env, "logs", "kept").stdout
        return logs if "colony.toml changed: started probe" in logs else None

    logs = wait_for(said, timeout=15, what="the service of the colony.toml the colony wrote started")
    assert "is not root's (the colony wrote it)" in logs
    assert "those of the last trusted colony.toml do" in logs
    assert listed(hive_env)["kept"]["limits"]["pids"] == 64


@root
def test_an_agent_cannot_undo_a_limit_root_tightened_by_committing_the_file(hive_env, tmp_path):
    """The user tightens a running colony's limit in its colony.toml, as root; the agent commits that file as it is,
    which makes it the colony's own committed version. The user's limit still holds, after a restart too."""
    fake_agent_config(hive_env)
    repo = colony_repo(tmp_path / "repo", "[limits]\npids = 64\n")
    rec = spawn(hive_env, "tight", repo)
    worktree = Path(rec["worktree"])
    (worktree / "colony.toml").write_text("[limits]\npids = 32\n")
    wait_for(lambda: listed(hive_env)["tight"]["limits"]["pids"] == 32, timeout=15, what="the tightened limit")

    tried = run_stem(hive_env.env, "exec", "tight", "--", "sh", "-c", "git add colony.toml && git commit -qm mine")
    assert tried.returncode == 0, tried.stderr
    assert git(worktree, "show", "HEAD:colony.toml") == "[limits]\npids = 32\n"
    assert run_stem(hive_env.env, "stop", "tight").returncode == 0
    started = run_stem(hive_env.env, "start", "tight")
    assert started.returncode == 0, started.stderr
    assert listed(hive_env)["tight"]["limits"]["pids"] == 32
    assert "do not apply" not in run_stem(hive_env.env, "logs", "tight").stdout


@root
def test_an_agent_cannot_have_stem_s_git_write_its_own_colony_toml(hive_env, tmp_path):
    """The agent commits the policy it wants (index only: the file is not its to write) and marks the file
    assume-unchanged, so that a failed sync, run as root, would write its version; and a colony.toml root's git
    wrote from the colony's own commits (a sync, a merge into its branch) is not taken for the user's."""
    fake_agent_config(hive_env)
    repo = colony_repo(tmp_path / "repo", "[limits]\npids = 64\n", {"a.txt": "a\n"})
    rec = spawn(hive_env, "sly", repo)
    worktree = Path(rec["worktree"])
    wanted = '[limits]\npids = 4096\n\n[services.probe]\ncommand = "exec sleep 1000"\n'
    script = (
        f"printf '{wanted}' > /tmp/mine; b=$(git hash-object -w /tmp/mine); "
        "git update-index --cacheinfo 100644,$b,colony.toml; git update-index --assume-unchanged colony.toml; "
        "git commit -qm 'my limits'; echo mine > a.txt"
    )
    tried = run_stem(hive_env.env, "exec", "sly", "--", "sh", "-c", script)
    assert tried.returncode == 0, tried.stderr
    (repo / "a.txt").write_text("main's\n")
    git(repo, "commit", "-qam", "main changes a.txt")
    failed = run_stem(hive_env.env, "sync", "sly")
    assert failed.returncode == 2 and "uncommitted changes" in failed.stderr, failed.stderr
    assert (worktree / "colony.toml").read_text() == "[limits]\npids = 64\n"  # not rewritten to the agent's

    # Root's git writing the colony's committed version (as a sync or a merge into its branch would):
    (worktree / "colony.toml").write_text(git(worktree, "show", "HEAD:colony.toml"))

    def said() -> str | None:  # the reload's last line: the limits were applied before it, if at all
        logs = run_stem(hive_env.env, "logs", "sly").stdout
        return logs if "colony.toml changed: started probe" in logs else None

    logs = wait_for(said, timeout=15, what="the service of the colony's committed colony.toml started")
    assert "holds the colony's own committed version" in logs
    assert listed(hive_env)["sly"]["limits"]["pids"] == 64


@root
def test_stop_ends_2000_processes_that_left_their_session_and_namespace(hive_env, tmp_path):
    fake_agent_config(hive_env)
    # Leaving the colony's namespace needs privilege that an isolated colony lacks (tests/test_isolation.py): the
    # stop is proved on a colony without isolation, where nothing but its cgroup holds what it started.
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.write_text(config.read_text().replace("[hive]\n", "[hive]\nisolation = false\n", 1))
    toml = (
        f'[colony]\nenv = {{ HOST_NET = "/proc/{os.getpid()}/ns/net" }}\n\n[services.swarm]\ncommand = "sh swarm.sh"\n'
    )
    spawn(hive_env, "swarm", colony_repo(tmp_path / "repo", toml, {"swarm.sh": SWARM}))
    group = cgroup_of(hive_env, "swarm")
    mine = os.stat("/proc/self/ns/net").st_ino

    def in_host_namespace(pids: set[int]) -> list[int]:
        found = []
        for pid in pids:
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == mine:
                    found.append(pid)
            except FileNotFoundError:
                continue
        return found

    def swarming() -> tuple[set[int], list[int]] | None:
        members = cgroups.procs(group)
        elsewhere = in_host_namespace(members) if len(members) >= 2100 else []
        return (members, elsewhere) if len(elsewhere) >= 200 else None

    # These left the colony's network namespace for the host's: a stop by namespace misses them.
    members, elsewhere = wait_for(swarming, 120, "2,100 processes in the colony, 200 in the host's namespace")
    sessions = {int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[3]) for p in members}
    assert len(sessions) >= 500
    started = time.monotonic()
    result = run_stem(hive_env.env, "stop", "swarm")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    survivors = [p for p in members if alive(p)]
    print(
        f"\nstem stop of {len(members)} processes ({len(elsewhere)} in the host's namespace, {len(sessions)} "
        f"sessions): {took:.2f} s, {len(survivors)} survivors"
    )
    assert survivors == []
    assert cgroup_dirs(hive_env.prefix) == []  # a stopped colony has no cgroup; start makes it again


@root
def test_destroy_and_gc_leave_no_cgroup_of_the_hive_and_touch_no_other_hive(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = colony_repo(tmp_path / "repo", "[limits]\npids = 200\n")
    spawn(hive_env, "short", repo)
    assert cgroup_dirs(hive_env.prefix)
    assert run_stem(hive_env.env, "destroy", "short").returncode == 0
    assert cgroup_dirs(hive_env.prefix) == []

    # What a crash leaves: a cgroup the registry does not know, with a process in it, and a spawn killed after
    # its cgroup was made.
    be = cgroups.backend()
    assert be is not None
    crashed = f"{hive_env.prefix}-crashed"
    foreign = f"{hive_env.prefix}x-other"  # another hive's prefix: never ours to touch
    be.make(crashed)
    be.make(foreign)
    try:
        fds = cgroups.open_join(crashed)
        leftover = subprocess.Popen(["sleep", "1000"], preexec_fn=lambda: cgroups.join(fds))
        for fd in fds:
            os.close(fd)
        # And one in a service's own cgroup below it (its host was killed before it could remove it).
        service = cgroups.make_service(crashed, "web")
        assert service is not None
        fds = cgroups.open_join(service)
        served = subprocess.Popen(["sleep", "1000"], preexec_fn=lambda: cgroups.join(fds))
        for fd in fds:
            os.close(fd)
        assert served.pid in cgroups.procs(service) and served.pid in cgroups.procs(crashed)
        killed = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT="network-claimed"), "spawn", "cut", "--repo", str(repo))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert f"{hive_env.prefix}-cut" in {Path(d).name for d in cgroup_dirs(hive_env.prefix)}
        report = run_stem(hive_env.env, "gc")
        assert report.returncode == 0, report.stderr
        assert f"cgroup {crashed}" in report.stdout
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert served.wait(timeout=10) == -signal.SIGKILL
        assert cgroup_dirs(hive_env.prefix) == []
        assert cgroup_dirs(f"{hive_env.prefix}x") != []  # the other hive's cgroup is still there
    finally:
        cgroups.remove(foreign)


@root
def test_v1_alone_ends_a_cgroup_with_the_freezer_and_pidfds(hive_env, monkeypatch):
    """Without the unified hierarchy beside v1 (no cgroup.kill, no cgroup.events): freeze, SIGKILL, thaw, then
    wait on pidfds; double forks and new sessions end too."""
    found = cgroups.hierarchies()
    v1 = tuple(h for h in found if not h.unified)
    if not any("freezer" in h.controllers for h in v1):
        pytest.fail("this machine kind has a v1 freezer hierarchy; it is missing")
    alone = cgroups.V1(v1, None)
    monkeypatch.setattr(cgroups, "backend", lambda: alone)
    name = f"{hive_env.prefix}-frozen"
    alone.make(name)
    try:
        fds = cgroups.open_join(name)
        script = "for i in $(seq 50); do sleep 1000 & done; for i in $(seq 50); do (setsid sleep 1000 &); done; wait"
        leader = subprocess.Popen(["sh", "-c", script], preexec_fn=lambda: cgroups.join(fds))
        for fd in fds:
            os.close(fd)
        members = wait_for(lambda: settled(name, 101, leader.pid), 30, "101 processes in the cgroup")
        started = time.monotonic()
        ended = cgroups.end(name)
        print(f"\nv1 alone: {len(members)} processes ended in {time.monotonic() - started:.3f} s")
        assert ended  # it signalled them itself (members that exit on their own meanwhile are not in `ended`)
        assert leader.wait(timeout=5) == -signal.SIGKILL
        assert [p for p in members if alive(p)] == []
        assert cgroups.procs(name) == set()
    finally:
        assert cgroups.remove(name)
    assert not any((h.mount / name).exists() for h in v1)


@root
def test_without_cgroups_a_colony_runs_without_one_but_limits_are_refused(hive_env, tmp_path):
    fake_agent_config(hive_env)
    off = dict(hive_env.env, STEM_CGROUPS="0")
    limited = colony_repo(tmp_path / "limited", '[limits]\nmemory = "1G"\n')
    result = run_stem(off, "spawn", "held", "--repo", str(limited))
    assert result.returncode == 2
    assert "[limits] cannot be applied: STEM_CGROUPS=0 turns them off" in result.stderr
    assert run_stem(off, "spawn", "free", "--repo", str(make_repo(tmp_path / "plain"))).returncode == 0
    assert cgroup_dirs(hive_env.prefix) == []
    row = listed(hive_env)["free"]
    assert row["limits"] is None and row["usage"] is None
    assert run_stem(hive_env.env, "stop", "free").returncode == 0  # the namespace sweep still ends it all


@root
def test_the_v2_code_path_on_a_unified_hierarchy_without_controllers(hive_env, monkeypatch):
    """This machine kind's v2 hierarchy has no controller: the v2 backend still makes, joins, counts CPU, kills
    with cgroup.kill, waits on cgroup.events and removes; a limit it cannot hold is refused, never ignored."""
    unified = next((h for h in cgroups.hierarchies() if h.unified), None)
    assert unified is not None, "this machine kind mounts the unified hierarchy"
    v2 = cgroups.V2(unified)
    monkeypatch.setattr(cgroups, "backend", lambda: v2)
    name = f"{hive_env.prefix}-unified"
    cgroups.create(name, Limits())
    try:
        with pytest.raises(cgroups.CgroupError, match=r"\[limits\] memory cannot be applied: .* cgroup v2"):
            cgroups.apply(name, Limits(memory=64 << 20))
        fds = cgroups.open_join(name)
        script = "for i in $(seq 20); do (setsid sleep 1000 &); done; exec sleep 1000"
        leader = subprocess.Popen(["sh", "-c", script], preexec_fn=lambda: cgroups.join(fds))
        for fd in fds:
            os.close(fd)
        members = wait_for(lambda: settled(name, 21, leader.pid), 30, "21 processes in the cgroup")
        usage = cgroups.usage(name)
        assert usage is not None and usage.memory is None and usage.cpu is not None
        assert set(cgroups.end(name)) >= members
        assert leader.wait(timeout=5) == -signal.SIGKILL
        assert [p for p in members if alive(p)] == []
    finally:
        assert cgroups.remove(name)
    assert not unified.dir(name).exists()


def run_in_cgroup(name: str, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` to its end inside cgroup `name` (joined before it execs), its output captured."""
    fds = cgroups.open_join(name)
    try:
        return subprocess.run(argv, preexec_fn=lambda: cgroups.join(fds), capture_output=True, check=False)
    finally:
        for fd in fds:
            os.close(fd)


@root
def test_migrations_kept_fast_move_nothing_and_end_with_their_block(hive_env):
    """A colony's start keeps cgroup migrations quick (`migrations_kept_fast`): its thread takes the migration lock by
    moving itself where it already is, so no thread of this process changes cgroup, a child still joins the colony's
    cgroup inside the block, and the thread ends with the block."""
    before = Path("/proc/self/cgroup").read_text()
    name = f"{hive_env.prefix}-warm"
    be = cgroups.backend()
    assert be is not None
    be.make(name)
    try:
        with cgroups.migrations_kept_fast():
            keeper = wait_for(
                lambda: next((t for t in threading.enumerate() if t.name == "cgroup-warm"), None), 5, "its thread"
            )
            inside = run_in_cgroup(name, ["cat", "/proc/self/cgroup"])
            assert inside.returncode == 0 and f"/{name}" in inside.stdout.decode()
            assert keeper.is_alive()  # its writes were taken: it stops on the first one the kernel refuses
            assert Path(f"/proc/self/task/{keeper.native_id}/cgroup").read_text() == before
        wait_for(lambda: not keeper.is_alive(), 5, "its thread to end with the block")
        assert Path("/proc/self/cgroup").read_text() == before
    finally:
        assert cgroups.remove(name)


@root
def test_limit_watch_without_the_kernel_log_still_counts_oom_kills_and_refused_forks(hive_env, monkeypatch):
    """Where /dev/kmsg cannot be read: the OOM eventfd (v1) or memory.events (v2) and the counters still report
    every kill (its victim unnamed) and the refused forks (on v1 found by the periodic look)."""
    monkeypatch.setattr(cgroups.LimitWatch, "_open_kmsg", lambda self: None)
    monkeypatch.setattr(cgroups, "V1_PIDS_LOOK", 0.2)
    name = f"{hive_env.prefix}-blind"
    cgroups.create(name, Limits(memory=32 << 20, pids=20))
    events: list[cgroups.LimitEvent] = []

    async def scenario() -> None:
        watch = cgroups.LimitWatch(name, events.append)
        assert watch.start()
        try:
            hog = await asyncio.to_thread(run_in_cgroup, name, ["python3", "-c", "x = b'x' * (256 << 20)"])
            assert hog.returncode == -signal.SIGKILL
            await until(lambda: [e for e in events if e.kind == "oom"], 10, "the OOM event")
            forks = await asyncio.to_thread(run_in_cgroup, name, ["python3", "-c", FORK_LOOP.replace("300", "40")])
            assert forks.returncode == 0, forks.stderr
            refused = int(forks.stdout.split()[-1])
            assert refused > 1
            # Every refused fork is counted: the periodic look may come in the middle of the loop, when only some
            # were refused, and the rest come in the next report, one window later.
            await until(lambda: reported_refusals(events) == refused, 10, "every refused fork reported")
        finally:
            watch.close()

    try:
        asyncio.run(scenario())
    finally:
        assert cgroups.remove(name)
    assert events[0] == cgroups.LimitEvent("oom", "a process killed: out of memory (32 MiB)")
    assert events[1].kind == "pids" and events[1].message.startswith("fork refused: pids limit (20) reached")


def reported_refusals(events: list[cgroups.LimitEvent]) -> int:
    """How many refused forks the watch's pids events add up to ("..., 7 times", or one)."""
    total = 0
    for event in events:
        if event.kind == "pids":
            count = re.search(r", (\d+) times$", event.message)
            total += int(count.group(1)) if count else 1
    return total


@root
def test_an_idle_colony_s_limit_watch_wakes_for_nothing_until_a_fork_is_refused(hive_env, monkeypatch):
    """100 idle colonies must cost next to nothing: with the kernel's log read (it says a cgroup's first refused
    fork), v1's pids counter is not looked at on a timer until that first refusal; from then on it is, and every
    later refusal is reported."""
    monkeypatch.setattr(cgroups, "V1_PIDS_LOOK", 0.2)
    name = f"{hive_env.prefix}-idle"
    cgroups.create(name, Limits(pids=20))
    events: list[cgroups.LimitEvent] = []

    async def scenario() -> None:
        watch = cgroups.LimitWatch(name, events.append)
        assert watch.start()
        try:
            assert watch._kmsg is not None  # as root: the kernel's log is read
            assert not watch._timers  # idle: no timer of any kind
            forks = await asyncio.to_thread(run_in_cgroup, name, ["python3", "-c", FORK_LOOP.replace("300", "40")])
            assert forks.returncode == 0, forks.stderr
            await until(lambda: [e for e in events if e.kind == "pids"], 10, "the first refused-fork event")
            if cgroups.backend().version == "v1":
                assert watch._timers  # from now on the counter is looked at
            await asyncio.to_thread(run_in_cgroup, name, ["python3", "-c", FORK_LOOP.replace("300", "40")])
            await until(lambda: len([e for e in events if e.kind == "pids"]) == 2, 10, "the later refusals")
        finally:
            watch.close()

    monkeypatch.setattr(cgroups, "PIDS_WINDOW", 0.1)
    try:
        asyncio.run(scenario())
    finally:
        assert cgroups.remove(name)


def test_limits_parse_with_swap_and_take_config_toml_defaults():
    parsed = parse_colony_config('[limits]\nmemory = "512M"\nswap = 0\ncpus = 1.5\n', Path("colony.toml")).limits
    assert parsed == Limits(memory=512 << 20, cpus=1.5, pids=None, swap=0)
    assert parsed.over(Limits(memory=1 << 30, pids=200)) == Limits(memory=512 << 20, cpus=1.5, pids=200, swap=0)
    with pytest.raises(ConfigError, match=r"colony.toml:2: \[limits\] cpus: must be at least 0.01"):
        parse_colony_config("[limits]\ncpus = 0.001\n", Path("colony.toml"))
    with pytest.raises(ConfigError, match=r"\[limits\] swap: must be bytes or a size"):
        parse_colony_config('[limits]\nswap = "lots"\n', Path("colony.toml"))
    if len(os.sched_getaffinity(0)) >= 2:
        assert cgroups.describe(parsed) == "memory 512 MiB, swap 0 B, cpus 1.5"
    have = len(os.sched_getaffinity(0))
    assert cgroups.describe(Limits(cpus=1000)) == (
        f"cpus 1000 (more than this machine's {have}: no limit in effect)"
    )  # accepted (colony.toml travels between machines), and said
    assert cgroups.size_text(256 << 20) == "256 MiB" and cgroups.size_text(1536 << 20) == "1.5 GiB"


def test_mountinfo_gives_each_hierarchy_once_with_its_controllers(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "36 31 0:32 / /mnt/memory\\040again rw,relatime - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "22 1 0:21 / /proc rw,relatime - proc proc rw\n"
    )
    found = cgroups.hierarchies(str(mountinfo))
    assert [(str(h.mount), h.unified) for h in found] == [
        ("/sys/fs/cgroup/cpu,cpuacct", False),
        ("/sys/fs/cgroup/memory", False),
        ("/sys/fs/cgroup/unified", True),  # its controllers: what its cgroup.controllers says
    ]
    assert [sorted(h.controllers) for h in found[:2]] == [["cpu", "cpuacct"], ["memory"]]


def test_a_victim_is_named_when_the_kernel_left_out_its_rate_limited_oom_summary():
    """The kernel prints the "oom-kill:" summary line at most 10 times in 5 s, "Killed process" every time: a victim
    that only the latter names is still named after its service when it is one of the colony's own."""
    watch = cgroups.LimitWatch("stem-x", lambda event: None, owner={4242: "hog"}.get)
    watch._kmsg_records = lambda limit=512: [  # type: ignore[method-assign]
        "Memory cgroup out of memory: Killed process 4242 (python3) total-vm:90000kB, anon-rss:65000kB",
        "Memory cgroup out of memory: Killed process 777 (other) total-vm:1000kB, anon-rss:500kB",
    ]
    killed, refused = watch._take_kmsg()
    assert (killed, refused) == (True, False)
    assert dict(watch._victims) == {4242: "hog"}  # not 777: not one of this colony's


class _Counted:
    """A backend that only counts OOM kills: what LimitWatch reads of it."""

    version = "v1"

    def __init__(self) -> None:
        self.kills = 0

    def oom_kills(self, name: str) -> int:
        return self.kills

    def in_force(self, name: str) -> Limits:
        return Limits(memory=64 << 20)


def test_a_kill_counted_before_the_kernel_logs_its_victim_waits_for_the_name():
    """The kernel counts an OOM kill before it prints "Killed process N": a check between the two must not report
    the kill as "a process" but wait (bounded) for the name; with no name in time it still reports the kill."""
    events: list[cgroups.LimitEvent] = []
    kernel: list[str] = []

    async def scenario() -> None:
        watch = cgroups.LimitWatch("stem-x", events.append, owner={4242: "hog"}.get)
        backend = _Counted()
        watch._be, watch._loop, watch._kmsg = backend, asyncio.get_running_loop(), -1  # type: ignore[assignment]
        watch._kmsg_records = lambda limit=512: [kernel.pop() for _ in range(len(kernel))]  # type: ignore[method-assign]
        backend.kills = 1
        assert watch._check_oom()
        assert events == []  # counted, not named yet: nothing said
        kernel.append("Memory cgroup out of memory: Killed process 4242 (python3) total-vm:90000kB")
        await until(lambda: events, 2, "the named kill")
        assert events == [cgroups.LimitEvent("oom", "hog killed: out of memory (64 MiB)")]
        backend.kills = 2  # a kill the log never names: reported unnamed once the wait is over
        assert watch._check_oom()
        await until(lambda: len(events) == 2, 2 * cgroups.OOM_NAME_WAIT + 1, "the unnamed kill")
        assert events[1] == cgroups.LimitEvent("oom", "a process killed: out of memory (64 MiB)")
        watch._kmsg = None
        watch.close()

    asyncio.run(scenario())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
