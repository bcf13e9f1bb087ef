"""Shared test helpers: wait on conditions (never sleep to synchronise), run the real CLI, make repositories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

GIT_ID = ["-c", "user.email=test@stem.invalid", "-c", "user.name=Stem Test"]


def visible_fake_agent() -> Path:
    """A copy of the fake agent at a path an isolated colony sees: its processes see neither /tmp nor the homes
    (where a clone of this repository may well be), so a test session runs a copy under /usr/local/lib, its own
    (conftest makes it and removes it, and any a killed session left). Without root, the file itself."""
    source = Path(__file__).parent / "fake_agent.py"
    folder = Path(f"/usr/local/lib/stem-tests-{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "fake_agent.py"
        target.write_bytes(source.read_bytes())
        target.chmod(0o755)
        folder.chmod(0o755)
    except OSError:
        return source
    return target


# The fake agent the tests run: conftest points this at the session's visible copy before any test module is
# imported; benchmarks, run from a checkout outside /tmp and the homes, use the file itself.
FAKE_AGENT_PATH = Path(__file__).parent / "fake_agent.py"


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval, not synchronisation: the predicate decides
        delay = min(delay * 2, 0.1)


async def until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """`wait_for` on the event loop: poll `predicate` between loop turns; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # polling interval, not synchronisation: the predicate decides


@contextlib.contextmanager
def hung(pid: int) -> Iterator[None]:
    """`pid` hung, as a process stuck in the kernel is: the unified hierarchy's freezer holds it, so it answers
    nothing, reads as sleeping (not as stopped, state T, which Stem sees after kill -STOP and lets go on) and still
    dies of SIGKILL. In a cgroup of its own for the while, put back where it was (if it lives) and removed after."""
    from core import cgroups

    unified = next(h for h in cgroups.hierarchies() if h.unified)
    home = next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))
    group = unified.mount / f"stem-test-hung-{os.getpid()}-{pid}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "cgroup.freeze").write_text("1")
        wait_for(lambda: "frozen 1" in (group / "cgroup.events").read_text(), 5, f"pid {pid} to be frozen")
        yield
    finally:
        (group / "cgroup.freeze").write_text("0")
        for left in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                (unified.mount / home.lstrip("/") / "cgroup.procs").write_text(left)
        wait_for(lambda: not (group / "cgroup.procs").read_text(), 5, f"cgroup {group.name} to be empty")
        group.rmdir()


def http_get(url: str) -> str | None:
    """The body at `url`, or None while nothing answers there."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy from the env
    try:
        with opener.open(url, timeout=1) as response:
            return response.read().decode()
    except OSError:
        return None


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: int = 3, colony_toml: str | None = None) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        sub = path / f"dir{i % 10}"
        sub.mkdir(exist_ok=True)
        (sub / f"file{i}.txt").write_text(f"file {i}\n" * 5)
    (path / "README.md").write_text("test repo\n")
    if colony_toml is not None:
        (path / "colony.toml").write_text(colony_toml)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def stem_cmd() -> list[str]:
    """The stem under test, run from any folder: this checkout's code, never another install the interpreter would
    find first (a stale editable install, say)."""
    from core.procs import python_module

    return python_module("stem.cli")


def stem_popen(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`stem ARGS` started in the background, no stdin, its stdout and stderr piped as text: for a test that acts
    while it runs (a signal, a kill -9, a second command beside it)."""
    return subprocess.Popen(
        [*stem_cmd(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_stem(
    env: dict[str, str], *args: str, input: str | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*stem_cmd(), *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def netns_names(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix + "-"))
    except FileNotFoundError:
        return []


def link_names(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return sorted(n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit())


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """A CLI refusal as a user must see it: exit 2, one line on stderr holding each of `expected`, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line, f"more than one line: {line!r}"
    assert "Traceback" not in line
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def scripted_agent(env: dict[str, str], repo: Path, source: str) -> None:
    """Make the Python program `source` the agent of the colonies `env`'s hive spawns from `repo`: committed in the
    repository as `scripted_agent.py` (the colony's own filesystem view shows its worktree, not this test's /tmp) and
    made the default agent of the hive's config.toml."""
    import shlex

    (repo / "scripted_agent.py").write_text(source)
    git(repo, "add", "scripted_agent.py")
    git(repo, "commit", "-qm", "the agent")
    config = Path(env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    command = f"{shlex.quote(sys.executable)} scripted_agent.py"
    config.write_text(f'[hive]\ndefault_agent = "scripted"\n\n[agents.scripted]\ncommand = "{command}"\n')


def use_fake_agent(env: dict[str, str]) -> Path:
    """Make the fake agent the default agent of the hive `env` runs with (its config.toml); the file's path."""
    fake = f"{sys.executable} {FAKE_AGENT_PATH}"
    config = Path(env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'[hive]\ndefault_agent = "fake"\n\n[agents.fake]\ncommand = "{fake}"\nresume = "{fake} --continue"\n'
    )
    return config


# What a `stem` stopped (ctrl+z, kill -STOP) in the middle of a write to the hive's registry leaves, or one slow to let
# go: a process holding SQLite's write lock on hive.db, stopped or running.
_HOLD_A_WRITE = """
import os, signal, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE colonies SET name = name")
print("holding", flush=True)
if sys.argv[2] == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)  # let go on (SIGCONT), it ends and lets go of the write
else:
    time.sleep(60)
"""


def hold_a_registry_write(home: Path, how: str) -> subprocess.Popen[str]:
    """A process holding a write to `home`'s hive.db, `hold_a_write.py hive.db HOW` as a line names it, once it holds
    it: stopped (`how` "stop": it ends once let go on) or running ("run"). The caller ends it by its pid."""
    script = home / "hold_a_write.py"
    script.write_text(_HOLD_A_WRITE)
    holder = subprocess.Popen(
        [sys.executable, str(script), "hive.db", how], cwd=home, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
    if how == "stop":
        wait_for(
            lambda: Path(f"/proc/{holder.pid}/stat").read_text().split(") ")[1][0] == "T", 10, "the holder to stop"
        )
    return holder
