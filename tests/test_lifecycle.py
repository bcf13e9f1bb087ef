"""Colonies for real: namespaces, worktrees, SQLite, processes, through the `stem` command a user types."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import git, http_get, link_names, make_repo, netns_names, run_stem, stem_cmd, stem_popen, wait_for

from core import procs

pytestmark = pytest.mark.root


def spawn(hive_env, name: str, repo: Path, *extra: str) -> dict:
    result = run_stem(hive_env.env, "spawn", name, "--repo", str(repo), *extra)
    assert result.returncode == 0, result.stderr
    return colony(hive_env, name)


def colony(hive_env, name: str) -> dict:
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def registry_rows(hive_env) -> dict[str, int]:
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("colonies", "resources", "processes")
        }


def background_exec(hive_env, name: str, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*stem_cmd(), "exec", name, "--", "sh", "-c", command],
        env=hive_env.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_colonies_serve_port_3000_and_the_host_reaches_each(hive_env, repo):
    alpha = spawn(hive_env, "alpha", repo)
    beta = spawn(hive_env, "beta", repo, "--base", "main")
    assert alpha["ip"] != beta["ip"]
    servers = [
        background_exec(hive_env, name, 'echo "I am $COLONY_NAME" > whoami.txt; exec python3 -m http.server 3000')
        for name in ("alpha", "beta")
    ]
    try:
        for rec in (alpha, beta):
            url = f"http://{rec['ip']}:3000/whoami.txt"
            body = wait_for(lambda url=url: http_get(url), timeout=15, what=f"{url} to answer")
            assert body == f"I am {rec['name']}\n"
        # Port 3000 is free on the host: the servers live only inside their namespaces.
        assert http_get("http://127.0.0.1:3000/whoami.txt") is None
    finally:
        for name in ("alpha", "beta"):
            assert run_stem(hive_env.env, "stop", name).returncode == 0
    for server in servers:
        assert server.wait(timeout=10) == 128 + signal.SIGTERM  # the exec ends with its child, killed by stop


def test_exec_passes_stdin_stdout_env_and_exit_code(hive_env, repo):
    rec = spawn(hive_env, "gamma", repo)
    result = run_stem(
        hive_env.env,
        "exec",
        "gamma",
        "--",
        "sh",
        "-c",
        'read line; echo "got $line"; echo "$COLONY_NAME $COLONY_IP $COLONY_WORKTREE $COLONY_DB $DATABASE_URL"; '
        "pwd; cat /proc/net/dev | grep -c eth0; exit 3",
        input="hello\n",
    )
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "got hello"
    assert lines[1] == (f"gamma {rec['ip']} {rec['worktree']} {rec['db']} sqlite:///{rec['db']}")
    assert lines[2] == rec["worktree"]
    assert lines[3] == "1"  # the colony sees its own eth0, not the host's interfaces
    assert Path(rec["db"]).exists()
    # The colony's SQLite file is a real database, usable from inside.
    result = run_stem(
        hive_env.env,
        "exec",
        "gamma",
        "--",
        sys_python(),
        "-c",
        "import os, sqlite3; db = sqlite3.connect(os.environ['COLONY_DB']); "
        "db.execute('create table t(x)'); db.execute('insert into t values (42)'); db.commit()",
    )
    assert result.returncode == 0, result.stderr
    assert sqlite3.connect(rec["db"]).execute("select x from t").fetchone() == (42,)


def sys_python() -> str:
    import sys

    return sys.executable


def test_stop_from_another_shell_ends_exec_processes_and_start_brings_it_back(hive_env, repo):
    rec = spawn(hive_env, "delta", repo)
    # A daemon that escapes its process group (setsid) must still die with the colony.
    runner = background_exec(hive_env, "delta", "setsid sleep 1000 & echo started; exec sleep 1000")
    assert runner.stdout is not None
    assert runner.stdout.readline().strip() == "started"
    pids = wait_for(
        lambda: _pids_in_netns(rec["name"], hive_env) if len(_pids_in_netns(rec["name"], hive_env)) >= 2 else None,
        what="both sleeps inside the namespace",
    )
    result = run_stem(hive_env.env, "stop", "delta")
    assert result.returncode == 0, result.stderr
    assert colony(hive_env, "delta")["state"] == "stopped"
    assert runner.wait(timeout=10) == 128 + signal.SIGTERM
    for pid in pids:
        assert not _running(pid), f"process {pid} survived stop"
    assert netns_names(hive_env.prefix) == []
    assert link_names(hive_env.prefix) == []
    # exec refuses on a stopped colony, with one line and exit 2
    result = run_stem(hive_env.env, "exec", "delta", "--", "true")
    assert result.returncode == 2
    assert result.stderr.strip() == "stem: delta is stopped, not running: start it first (stem start delta)"
    result = run_stem(hive_env.env, "start", "delta")
    assert result.returncode == 0, result.stderr
    again = colony(hive_env, "delta")
    assert again["state"] == "running" and again["ip"] == rec["ip"]
    assert run_stem(hive_env.env, "exec", "delta", "--", "true").returncode == 0


def _pids_in_netns(name: str, hive_env) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", f"{hive_env.prefix}-{name}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_destroy_leaves_nothing_but_keeps_an_unmerged_branch(hive_env, repo):
    spawn(hive_env, "kept", repo)
    rec = spawn(hive_env, "gone", repo)
    wt = Path(colony(hive_env, "kept")["worktree"])
    (wt / "work.txt").write_text("agent work\n")
    # Uncommitted work stops a plain destroy, and says where it is.
    result = run_stem(hive_env.env, "destroy", "kept")
    assert result.returncode == 2
    assert "uncommitted changes (work.txt)" in result.stderr and str(wt) in result.stderr
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "agent work")
    result = run_stem(hive_env.env, "destroy", "kept", "gone")
    assert result.returncode == 0, result.stderr
    assert "kept branch colony/kept: 1 commit not merged anywhere" in result.stdout
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    assert branches == ["colony/kept", "main"]
    assert netns_names(hive_env.prefix) == [] and link_names(hive_env.prefix) == []
    assert not wt.exists() and not Path(rec["worktree"]).exists() and not Path(rec["db"]).exists()
    assert list((hive_env.home / "colonies").iterdir()) == []
    assert git(repo, "worktree", "list").count("\n") == 1
    assert registry_rows(hive_env) == {"colonies": 0, "resources": 1, "processes": 0}  # the kept branch
    # Once merged, gc deletes the kept branch.
    git(repo, "merge", "-q", "colony/kept")
    result = run_stem(hive_env.env, "gc")
    assert "removed branch colony/kept" in result.stdout
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]
    assert registry_rows(hive_env) == {"colonies": 0, "resources": 0, "processes": 0}


COLONY_TOML = """\
[colony]
setup = ["echo setting up > setup.txt"]
build = ["echo building"]
"""

KILL_STEPS = [
    "reserved",
    "dir",
    "network-claimed",
    "network",
    "worktree-claimed",
    "worktree",
    "setup",
    "build",
    "starting",
]


@pytest.mark.parametrize("step", KILL_STEPS)
def test_spawn_killed_at_each_step_then_gc_leaves_nothing(hive_env, tmp_path, step):
    repo = make_repo(tmp_path / "killrepo", colony_toml=COLONY_TOML)
    env = dict(hive_env.env, STEM_FAULT_KILL_AT=step)
    result = run_stem(env, "spawn", "victim", "--repo", str(repo))
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)
    result = run_stem(hive_env.env, "gc")
    assert result.returncode == 0, result.stderr
    assert "victim" in result.stdout
    assert netns_names(hive_env.prefix) == []
    assert link_names(hive_env.prefix) == []
    assert list((hive_env.home / "worktrees").iterdir()) == []
    assert list((hive_env.home / "colonies").iterdir()) == []
    assert git(repo, "worktree", "list").count("\n") == 1
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]
    assert registry_rows(hive_env) == {"colonies": 0, "resources": 0, "processes": 0}
    assert run_stem(hive_env.env, "gc").stdout.strip() == "nothing to clean"
    # The name is free again and a fresh spawn works.
    rec = spawn(hive_env, "victim", repo)
    assert rec["state"] == "running"
    assert (Path(rec["worktree"]) / "setup.txt").read_text() == "setting up\n"


def test_a_following_ui_finishes_a_spawn_killed_mid_way_without_another_command(hive_env, tmp_path):
    """A UI (or `stem serve`) follows the hive while a spawn from a shell is killed -9 half way: nothing writes
    the registry after that, yet within its look every 10 s the follower rolls the colony back."""
    from core.hive import Hive

    repo = make_repo(tmp_path / "killrepo", colony_toml=COLONY_TOML)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()
            env = dict(hive_env.env, STEM_FAULT_KILL_AT="worktree")
            killed = await asyncio.to_thread(run_stem, env, "spawn", "victim", "--repo", str(repo))
            assert killed.returncode == -signal.SIGKILL
            assert hive.registry.find("victim") is not None  # left half made
            deadline = asyncio.get_running_loop().time() + 30
            while hive.registry.find("victim") is not None:
                assert asyncio.get_running_loop().time() < deadline, "the follower left the colony half made"
                await asyncio.sleep(0.1)
        finally:
            await hive.close()

    asyncio.run(scenario())
    assert netns_names(hive_env.prefix) == []
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]


def interrupted(hive_env, args: list[str], begun: Callable[[], bool], sig: int) -> tuple[int, str, str]:
    """`stem ARGS`, sent `sig` once `begun()` holds: its exit code, stdout and stderr (it is killed if it hangs)."""
    proc = stem_popen(hive_env.env, *args)
    try:
        wait_for(begun, 30, f"stem {args[0]} to be under way")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_spawn_ended_by_a_hangup_or_sigterm_is_rolled_back_at_once(hive_env, tmp_path, sig):
    """An SSH connection that drops (SIGHUP) or a kill (SIGTERM) while a spawn runs its setup: it ends as Ctrl-C
    ends it, undone before it exits, with no gc needed (it used to die and leave the colony provisioning)."""
    repo = make_repo(tmp_path / "slowrepo", colony_toml='[colony]\nsetup = ["exec sleep 60"]\n')
    code, out, err = interrupted(
        hive_env,
        ["spawn", "slow", "--repo", str(repo)],
        lambda: "provisioning" in run_stem(hive_env.env, "ls").stdout,
        sig,
    )
    assert code == 128 + sig, (code, out, err)
    assert "Traceback" not in err
    assert netns_names(hive_env.prefix) == [] and link_names(hive_env.prefix) == []
    assert list((hive_env.home / "worktrees").iterdir()) == []
    assert list((hive_env.home / "colonies").iterdir()) == []
    assert list((hive_env.home / "locks").glob("colony-*.lock")) == []
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]
    assert registry_rows(hive_env) == {"colonies": 0, "resources": 0, "processes": 0}
    assert run_stem(hive_env.env, "gc").stdout.strip() == "nothing to clean"


STUBBORN = """\
[services.web]
command = "trap '' TERM; exec python3 -m http.server 3000"
port = 3000
ready = "tcp"
"""


@pytest.mark.parametrize(
    ("command", "sig"),
    [(("stop",), signal.SIGINT), (("stop",), signal.SIGTERM), (("destroy", "--force"), signal.SIGHUP)],
)
def test_a_stop_or_destroy_ended_by_a_signal_is_finished_before_it_exits(hive_env, tmp_path, command, sig):
    """A stop waits out a service that ignores SIGTERM (its grace, then SIGKILL); Ctrl-C, SIGTERM or a hangup
    meanwhile still ends with the colony stopped (or destroyed), never left `stopping` for `start` to refuse."""
    repo = make_repo(tmp_path / "stubborn", colony_toml=STUBBORN)
    spawn(hive_env, "stub", repo)
    pid = service_pid(hive_env, "stub")
    begun = lambda: colony(hive_env, "stub")["state"] in ("stopping", "destroying")  # noqa: E731
    code, out, err = interrupted(hive_env, [*command, "stub"], begun, sig)
    assert code == 128 + sig, (code, out, err)
    assert "Traceback" not in err
    listed = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert [(r["name"], r["state"]) for r in listed] == ([("stub", "stopped")] if command == ("stop",) else [])
    assert not procs.alive(pid)
    assert netns_names(hive_env.prefix) == []


def test_a_start_finishes_a_stop_that_was_killed(hive_env, repo):
    spawn(hive_env, "halted", repo)
    result = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT="stopping"), "stop", "halted")
    assert result.returncode == -signal.SIGKILL
    with sqlite3.connect(hive_env.home / "hive.db") as db:  # not through `stem ls`, which would finish the stop
        assert db.execute("SELECT state FROM colonies WHERE name='halted'").fetchone() == ("stopping",)
    result = run_stem(hive_env.env, "start", "halted")
    assert result.returncode == 0, result.stderr
    assert colony(hive_env, "halted")["state"] == "running"


def service_pid(hive_env, name: str) -> int:
    """The pid of the colony's service process, from the registry's process table."""
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        (pid,) = db.execute("SELECT pid FROM processes WHERE colony=? AND kind LIKE 'service:%'", (name,)).fetchone()
    return int(pid)


@pytest.mark.parametrize("step", ["network", "setup", "starting"])
def test_the_next_stem_ls_finishes_a_spawn_that_was_killed(hive_env, tmp_path, step):
    """A spawn killed -9 (or a UI gone while it spawned) leaves its colony mid-way with nobody holding its lock: the
    next `stem ls` rolls it back as gc would, instead of listing it `provisioning` until someone runs gc."""
    repo = make_repo(tmp_path / "killrepo", colony_toml=COLONY_TOML)
    result = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT=step), "spawn", "victim", "--repo", str(repo))
    assert result.returncode == -signal.SIGKILL
    result = run_stem(hive_env.env, "ls")
    assert result.returncode == 0, result.stderr
    assert "victim" not in result.stdout
    assert registry_rows(hive_env) == {"colonies": 0, "resources": 0, "processes": 0}
    assert netns_names(hive_env.prefix) == [] and link_names(hive_env.prefix) == []
    assert list((hive_env.home / "worktrees").iterdir()) == []
    assert list((hive_env.home / "locks").glob("colony-*.lock")) == []
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]


def test_git_variables_of_the_caller_do_not_point_stem_at_another_repository(hive_env, repo, tmp_path):
    # As when stem is run from a git hook or a script that exported GIT_DIR: the colony still comes from --repo.
    other = make_repo(tmp_path / "other", files=1)
    env = dict(
        hive_env.env, GIT_DIR=str(other / ".git"), GIT_WORK_TREE=str(other), GIT_INDEX_FILE=str(other / ".git/index")
    )
    result = run_stem(env, "spawn", "hooked", "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    wt = Path(colony(hive_env, "hooked")["worktree"])
    assert (wt / "dir2" / "file2.txt").is_file(), "the worktree is not a checkout of --repo"
    assert "colony/hooked" in git(repo, "branch", "--format=%(refname:short)").split()
    assert "colony/hooked" not in git(other, "branch", "--format=%(refname:short)").split()
    # Nor does git inside the colony (the agent's commits) reach the other repository.
    inside = run_stem(env, "exec", "hooked", "--", "git", "rev-parse", "--show-toplevel", cwd=wt)
    assert inside.returncode == 0 and inside.stdout.strip() == str(wt), inside.stdout + inside.stderr
    (wt / "new.txt").write_text("x\n")
    result = run_stem(env, "destroy", "hooked")
    assert result.returncode == 2 and "uncommitted changes (new.txt)" in result.stderr, result.stderr
    assert run_stem(env, "destroy", "--force", "hooked").returncode == 0
    assert git(repo, "worktree", "list").count("\n") == 1


def test_gc_removes_prefixed_objects_the_registry_does_not_own_and_nothing_else(hive_env, repo):
    foreign = f"{hive_env.prefix}x-other"  # a different prefix: not ours to touch
    stray = f"{hive_env.prefix}-stray"
    subprocess.run(["ip", "netns", "add", stray], check=True)
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    subprocess.run(
        ["ip", "link", "add", f"{hive_env.prefix}77", "type", "veth", "peer", "name", "straypeer"], check=True
    )
    try:
        rec = spawn(hive_env, "live", repo)
        result = run_stem(hive_env.env, "gc")
        assert result.returncode == 0, result.stderr
        assert f"network namespace {stray}" in result.stdout
        assert f"interface {hive_env.prefix}77" in result.stdout
        assert netns_names(hive_env.prefix) == [f"{hive_env.prefix}-live"]
        assert os.path.exists(f"/run/netns/{foreign}")
        assert link_names(hive_env.prefix) == [f"{hive_env.prefix}0"]
        assert rec["state"] == "running"
        assert colony(hive_env, "live")["state"] == "running"
    finally:
        subprocess.run(["ip", "netns", "del", foreign], capture_output=True)


def test_four_concurrent_spawns_on_one_repository_all_succeed(hive_env, repo):
    procs = [stem_popen(hive_env.env, "spawn", f"c{i}", "--repo", str(repo)) for i in range(4)]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert sorted(r["name"] for r in rows) == ["c0", "c1", "c2", "c3"]
    assert len({r["ip"] for r in rows}) == 4
    assert len({r["worktree"] for r in rows}) == 4
    assert all(r["state"] == "running" for r in rows)
    listed = git(repo, "worktree", "list", "--porcelain")
    for r in rows:
        assert f"worktree {r['worktree']}" in listed
        assert f"branch refs/heads/colony/{r['name']}" in listed


def _host_snapshot(hive_env, repo: Path) -> dict:
    """What this hive could have left on the host. Other runs may share the machine, so scope by prefix,
    by routes through our interfaces, by the test repository, and by processes carrying our STEM_HOME."""
    ours = f"STEM_HOME={hive_env.home}".encode()
    carrying = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if ours in f.read().split(b"\0"):
                        carrying.append(int(entry))
            except OSError:
                continue
    prefix = hive_env.prefix
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    # Colony hosts started by the `stem` commands this test runs outlive those commands; this process, a child
    # subreaper since an earlier test made a Hive in it, adopts them and their exit is its to reap, as a UI's would be.
    procs.reap_orphans()
    return {
        "netns": [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []) if n.startswith(prefix)],
        "links": [line for line in links.splitlines() if f": {prefix}" in line],
        "routes": [
            r
            for r in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout.splitlines()
            if f"dev {prefix}" in r
        ],
        "worktrees": git(repo, "worktree", "list"),
        "branches": git(repo, "branch"),
        "processes": carrying,
        "zombie_children": [p for p in _children_of(os.getpid()) if not _running(p)],
    }


def _children_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_twenty_spawn_destroy_cycles_leave_the_host_as_it_was(hive_env, repo):
    before = _host_snapshot(hive_env, repo)
    for i in range(20):
        assert run_stem(hive_env.env, "spawn", f"cycle{i % 3}", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "exec", f"cycle{i % 3}", "--", "true").returncode == 0
        assert run_stem(hive_env.env, "destroy", f"cycle{i % 3}").returncode == 0
    # The last destroy retires the hive's host forker, which may still be ending as the command returns: what it
    # leaves is looked at until it is gone (and reaped), at most for a while.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: _host_snapshot(hive_env, repo) == before, timeout=10, what="the host as it was")
    after = _host_snapshot(hive_env, repo)
    assert after == before
    assert before["netns"] == [] and before["processes"] == []
    assert registry_rows(hive_env) == {"colonies": 0, "resources": 0, "processes": 0}


def test_spawn_from_a_linked_worktree_starts_from_that_worktrees_head(hive_env, repo, tmp_path):
    linked = tmp_path / "feature-checkout"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(linked))
    (linked / "feature.txt").write_text("only on the feature branch\n")
    git(linked, "add", "feature.txt")
    git(linked, "commit", "-q", "-m", "feature work")
    head = git(linked, "rev-parse", "HEAD")
    assert head != git(repo, "rev-parse", "HEAD")
    assert run_stem(hive_env.env, "spawn", "feat", "--repo", str(linked)).returncode == 0
    rec = {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}["feat"]
    assert git(Path(rec["worktree"]), "rev-parse", "HEAD") == head
    assert (Path(rec["worktree"]) / "feature.txt").read_text() == "only on the feature branch\n"
    assert rec["repo"] == str(repo)  # the colony's worktree belongs to the repository, not to the linked checkout


@pytest.mark.parametrize("step", ["destroying", "destroy-parts"])
def test_a_destroy_killed_midway_is_finished_by_gc_not_undone(hive_env, tmp_path, step):
    repo = make_repo(tmp_path / "killrepo", colony_toml=COLONY_TOML)
    rec = spawn(hive_env, "doomed", repo)
    (Path(rec["worktree"]) / "work.txt").write_text("committed work\n")
    git(Path(rec["worktree"]), "add", "work.txt")
    git(Path(rec["worktree"]), "commit", "-q", "-m", "work worth keeping")
    result = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT=step), "destroy", "doomed", "--force")
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)
    report = run_stem(hive_env.env, "gc")
    assert report.returncode == 0, report.stderr
    finished = "doomed: its destroy was interrupted; finished it; kept its branch colony/doomed (1 unmerged)"
    assert finished in report.stdout
    assert json.loads(run_stem(hive_env.env, "ls", "--json").stdout) == []  # not turned into a stopped colony
    assert netns_names(hive_env.prefix) == [] and link_names(hive_env.prefix) == []
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["colony/doomed", "main"]


def test_spawn_and_destroy_cycles_leave_no_rows_or_lock_files(hive_env, repo):
    for i in range(6):
        assert run_stem(hive_env.env, "spawn", f"cycle{i}", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "destroy", f"cycle{i}").returncode == 0
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        for table in ("colonies", "transitions", "processes", "events", "runtime"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    assert sorted(p.name for p in (hive_env.home / "locks").glob("colony-*.lock")) == []


def test_a_colony_whose_repository_moved_is_not_started_and_its_destroy_says_what_is_left(hive_env, tmp_path):
    """The repository moved after a stop: `stem start` failed half provisioned with a FileNotFoundError naming a
    file of git's, and left the colony failed; a destroy then said only `destroyed`, leaving the branch and git's
    record of the worktree in the moved repository without a word."""
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "moved", "--repo", str(repo)).returncode == 0
    assert run_stem(hive_env.env, "stop", "moved").returncode == 0
    elsewhere = repo.rename(tmp_path / "elsewhere")

    started = run_stem(hive_env.env, "start", "moved")
    assert started.returncode == 2, started
    assert started.stderr.startswith(f"stem: moved's repository {repo} is not where it was (moved or deleted): ")
    assert started.stderr.endswith("move the repository back, or `stem destroy moved` (the branch is its)\n")
    assert started.stderr.count("\n") == 1
    (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert row["state"] == "stopped"  # nothing changed

    destroyed = run_stem(hive_env.env, "destroy", "moved")
    assert destroyed.returncode == 0 and destroyed.stdout == "destroyed moved\n", destroyed
    assert destroyed.stderr == (
        f"stem: note: moved's repository was not at {repo} (moved or deleted): where it is now, `git worktree prune` "
        "forgets the worktree and `git branch -D colony/moved` drops the branch\n"
    )
    git(elsewhere, "worktree", "prune")
    git(elsewhere, "branch", "-D", "colony/moved")  # as the note says: nothing else is left
    assert git(elsewhere, "worktree", "list").count("\n") == 1


@pytest.mark.parametrize("mend", ["start", "gc"])
def test_a_running_colony_whose_network_namespace_vanished_is_brought_back_as_its_error_says(hive_env, tmp_path, mend):
    """`ip netns del` under a running colony: `stem exec` said `stem start` recreates the namespace, but a start
    of a running colony did nothing, and `stem gc` (which stops it) said it had removed the colony."""
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "fk", "--repo", str(repo)).returncode == 0
    subprocess.run(["ip", "netns", "del", f"{hive_env.prefix}-fk"], check=True)
    broken = run_stem(hive_env.env, "exec", "fk", "--", "echo", "ok")
    assert broken.returncode == 2
    assert broken.stderr == f"stem: network namespace {hive_env.prefix}-fk is gone: `stem start` recreates it\n"
    if mend == "gc":
        collected = run_stem(hive_env.env, "gc")
        lines = collected.stdout.splitlines()
        assert "stopped colony fk: its network namespace vanished (stem start brings it back)" in lines, lines
        assert not [line for line in lines if "colony fk" in line and line.startswith("removed")], lines
    started = run_stem(hive_env.env, "start", "fk")
    assert started.returncode == 0, started
    ran = run_stem(hive_env.env, "exec", "fk", "--", "echo", "ok")
    assert (ran.returncode, ran.stdout) == (0, "ok\n"), ran
    assert netns_names(hive_env.prefix) == [f"{hive_env.prefix}-fk"]


def test_a_spawn_whose_agent_is_not_installed_says_so_and_its_log_keeps_it(hive_env, repo):
    """The host starts the user's shell in place of an agent that is not installed, with a notice a UI shows; a
    spawn from a shell said nothing, and neither did `stem logs`."""
    spawned = run_stem(hive_env.env, "spawn", "bare", "--repo", str(repo), "--agent", "nosuchprogram")
    assert spawned.returncode == 0, spawned
    (warning,) = spawned.stderr.splitlines()
    assert warning.startswith("stem: warning: nosuchprogram is not installed here: bare's agent is "), warning
    assert "nosuchprogram is not installed here: started" in run_stem(hive_env.env, "logs", "bare").stdout
