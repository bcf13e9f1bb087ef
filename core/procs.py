"""Processes inside colonies: start them in the colony's cgroup, namespace, worktree and environment; end them all.

Every process starts in its own session (so its process group is its pid), inside the colony's cgroup (joined
between fork and exec, so nothing of the program runs outside its limits). Stopping a colony ends its cgroup
(core.cgroups.end); the recorded groups get SIGTERM first, and whatever is inside the colony's network namespace
but not its cgroup (a colony without one) is signalled too. SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from core import cgroups, netns
from core.coalesce import Coalesced
from core.locations import write_atomically
from core.pids import alive as alive  # re-exported: procs.alive, procs.starttime are what callers know
from core.pids import proc_stat, read_pid_file
from core.pids import starttime as starttime
from core.sandbox import ORPHAN_EXITS, ColonyInit, OrphanExit, Sandbox, adopted_exit

# Stem's direct children: their exit codes belong to whoever waits for them (subprocess, asyncio), so the
# orphan reaper must leave them alone. Held while spawning so a quick exit cannot race the registration.
_spawn_lock = threading.Lock()
_children: set[int] = set()
_orphan_exits: deque[OrphanExit] = deque(maxlen=ORPHAN_EXITS)  # the latest reaped by `reap_orphans` (under the lock)


def all_stats() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, stat fields) of every process, skipping those that vanish while we look."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(entry)
            if fields is not None:
                yield int(entry), fields


def colony_pid(pid: int) -> int | None:
    """`pid` as its own PID namespace (its colony's) numbers it: what `ps` inside shows; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return pid  # a kernel without NSpid: no namespaces to tell apart


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `module` as `python -m` would, with this interpreter and this very copy of Stem's code first on
    the path. A detached helper (the forker, a host) starts in /, where `-m` would import whichever install of Stem
    the interpreter finds first: a stale editable install of an older name, another checkout's. It must run the
    launcher's code, or the forker's fingerprint never matches and hosts run code the launcher never shipped."""
    root = str(Path(__file__).resolve().parents[1])
    boot = (
        f"import runpy, sys; sys.path.insert(0, {root!r}); "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", boot, *args]


def start_detached(
    argv: list[str], log: Path, env: Mapping[str, str] | None, timeout: float | None
) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start `argv` (a colony host, the hive's forker) in a session of its own: no terminal, stdin from /dev/null,
    its output appended to `log`, cwd /, and `--ready-fd FD` added, a pipe it writes one byte to once it serves.
    Waits up to `timeout` (None: for as long as it takes) for that byte. Returns the process, never waited for here
    (it is meant to outlive this one), and the byte: b"" if it ended or the time ran out first."""
    ready_r, ready_w = os.pipe()
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*argv, "--ready-fd", str(ready_w)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(ready_w,),
                cwd="/",
                env=env,
            )
        os.close(ready_w)
        ready_w = -1
        readable, _, _ = select.select([ready_r], [], [], timeout)
        return proc, os.read(ready_r, 1) if readable else b""
    finally:
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)


def stats_of(pids: Iterable[int] | None) -> Iterator[tuple[int, list[bytes]]]:
    """(pid, stat fields) of `pids` that still exist, or of every process (None)."""
    if pids is None:
        yield from all_stats()
        return
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            yield pid, fields


def colony_pids(netns_name: str) -> set[int] | None:
    """Every process of the colony, from its cgroup (which all of them join and none can leave), or None where it
    has none (then a caller looks at every process). A stop looks for what is left of a process group among these:
    100 hosts stopping at once each read a few /proc files instead of every process on the machine."""
    return cgroups.procs(netns_name) or None


def group_members(pgid: int, within: Iterable[int] | None = None) -> list[int]:
    """The live processes of group `pgid`, looked for among `within` (None: every process)."""
    return [pid for pid, fields in stats_of(within) if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X")]


@contextlib.contextmanager
def spawning() -> Iterator[Callable[[int], None]]:
    """Hold the spawn lock while starting a child; call the yielded function with its pid to register it.

    Registering under the same lock the orphan reaper takes means even a child that exits at once is never
    reaped by it, so its real waiter always gets its exit status.
    """
    with _spawn_lock:
        yield _children.add


def spawn(
    argv: list[str],
    *,
    netns_name: str,
    cwd: Path,
    env: Mapping[str, str],
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    init: ColonyInit | None = None,
    terminal: bool = False,
    cgroup: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` inside the colony: its cgroup (named as its network namespace; `cgroup`: one below it, a
    service's), its network namespace, `cwd`, `env`, a new session; in the namespaces of its `init` (core.sandbox),
    confined, when given. `terminal`: stdin is a PTY made for this process, which becomes its controlling terminal
    (and the colony uid's)."""
    fd = netns.open_netns(netns_name)
    joins = cgroups.open_join(cgroup or netns_name)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=enter_colony(fd, netns_name, joins, init, cwd, terminal),
        )

    try:
        with spawning() as register:
            proc = start() if init is None else init.fork_inside(start)
            register(proc.pid)
    finally:
        os.close(fd)
        for join in joins:
            os.close(join)
    return proc


def enter_colony(
    fd: int,
    netns_name: str,
    joins: Iterable[int] = (),
    init: ColonyInit | None = None,
    cwd: Path | None = None,
    terminal: bool = False,
) -> Callable[[], None]:
    """A preexec_fn that moves the child into the colony's cgroup (`joins`: from cgroups.open_join) and network
    namespace, then into the namespaces of its `init` (confined), or else gives it the colony's resolv.conf; runs
    after fork, so it only makes syscalls (the paths are looked up before)."""
    resolv = netns.child_files(netns_name) if init is None else None
    joins = tuple(joins)
    where = str(cwd or "/")

    def preexec() -> None:
        cgroups.join(joins)
        netns.enter(fd)
        if terminal:  # a session leader already (start_new_session): the PTY on stdin becomes its terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if init is None:
            netns.enter_mounts(resolv)
        else:
            init.enter(where, terminal=terminal)

    return preexec


# ------------------------------------------------------------------------------------- a colony's namespaces


def start_init(init: ColonyInit, netns_name: str, *, publish: bool = False) -> None:
    """Start the colony's init (core.sandbox.ColonyInit) in its cgroup and network namespace, owned by this process
    (end it with `release_init`); `publish` writes its pid where `stem exec` of another process finds it
    (`Sandbox.init_file`). Blocking (a few ms): call it off the event loop."""
    fd = netns.open_netns(netns_name)
    joins = cgroups.open_join(netns_name)

    def enter() -> None:
        cgroups.join(joins)  # the init too: a stop through the cgroup ends it with the rest
        netns.enter(fd)

    try:
        # Registered as ours under the spawn lock: the orphan reaper never takes its exit status.
        with spawning() as register:
            init.start(enter, netns.child_files(netns_name))
            register(init.pid)
    finally:
        os.close(fd)
        for join in joins:
            os.close(join)
    file = init.box.init_file
    if publish and file is not None:
        write_atomically(file, f"{init.pid} {starttime(init.pid) or 0}\n", durable=False)  # for this run only


def running_init(sandbox: Sandbox) -> ColonyInit | None:
    """The colony's running init, if its owner published one (a colony host): to join, not to end."""
    if sandbox.init_file is None:
        return None
    found = read_pid_file(sandbox.init_file)
    if found is None:
        return None
    pid, start = found
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    # Checked after the pidfd holds it: the pid was not reused meanwhile.
    if not alive(pid, start):
        os.close(pidfd)
        return None
    init = ColonyInit(sandbox)
    try:
        init.attach(pid, pidfd)
    except OSError:
        os.close(pidfd)
        return None
    return init


def colony_init(sandbox: Sandbox | None, netns_name: str) -> ColonyInit | None:
    """The namespaces a colony process started now joins: its running init's (its host's), else a new init that
    this process owns (its setup and build steps, run before a host exists; `stem exec` while none runs). None
    without a sandbox. Hand it to `release_init` when done."""
    if sandbox is None:
        return None
    found = running_init(sandbox)
    if found is None:
        found = ColonyInit(sandbox)
        start_init(found, netns_name)
    return found


def release_init(init: ColonyInit | None, grace: float = 5.0) -> None:
    """Done with `init`. One this process owns ends: SIGTERM to every process left in its namespace, SIGKILL to the
    init after `grace` (the kernel kills what is still there with it), then reaped; one it joined is let go."""
    if init is None or init.pid == 0:
        return
    if init.owned and init.pidfd >= 0:
        left = init.members()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        if left:
            wait_gone(init.members, grace)
        # The init's exit waits until every process of its namespace is reaped: this process's own children
        # there are reaped by their waiters meanwhile, hence a bound, not a blocking waitpid.
        if init.kill(max(grace, 5.0)):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(init.pid, 0)
        forget_child(init.pid)  # if it did not end in time, the orphan reaper takes it later
        file = init.box.init_file
        if file is not None and read_pid_file(file) is None:
            file.unlink(missing_ok=True)
    init.close()


def adopt_child(pid: int) -> None:
    """A process re-parented to us that a waiter will reap itself (a service's daemon): the orphan reaper leaves
    it alone, so that waiter gets its exit status."""
    with _spawn_lock:
        _children.add(pid)


def known_child(pid: int) -> bool:
    return pid in _children


def forget_child(pid: int) -> None:
    with _spawn_lock:
        _children.discard(pid)


def reap_orphans() -> list[int]:
    """Reap zombies we adopted as subreaper, and only those; the pids reaped (by the scan that served this call).

    Our own short-lived helpers (git via subprocess.run in another thread) share our session and have waiters
    that need their exit codes; everything started inside a colony has a session of its own, and so do its
    orphans. So: zombie children from another session that no waiter registered. Coalesced: a burst of SIGCHLDs
    costs two /proc scans, not one each.
    """
    return list(_reaps())


def own_children() -> list[int] | None:
    """This process's children, as the kernel lists them per thread (/proc/self/task/*/children: an adopted orphan
    may be any thread's); None where the kernel does not offer the list (CONFIG_PROC_CHILDREN off)."""
    me = os.getpid()
    if not os.path.exists(f"/proc/{me}/task/{me}/children"):
        return None
    found: list[int] = []
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            with open(f"/proc/{me}/task/{task}/children", "rb") as f:
                found += [int(pid) for pid in f.read().split()]
        except OSError:
            continue  # a thread that ended meanwhile
    return found


def _reap_scan() -> list[int]:
    """Zombie children of ours from another session, among our children (every process on the machine where the
    kernel lists none: 100 colony hosts stopping at once each read their few children's stat files, not all of
    them)."""
    me = os.getpid()
    my_session = os.getsid(0)
    reaped = []
    with _spawn_lock:
        for pid, fields in stats_of(own_children()):
            if pid in _children or fields[0] != b"Z" or int(fields[1]) != me or int(fields[3]) == my_session:
                continue
            ended = adopted_exit(pid)
            if ended is not None:
                reaped.append(pid)
                _orphan_exits.append(ended)
    return reaped


def orphan_exits() -> list[OrphanExit]:
    """The latest orphans of colonies reaped here (Stem is their subreaper where a colony has no PID namespace of its
    own): a service's daemon that ended, whose exit status is nowhere else. Reaps what has ended first."""
    reap_orphans()
    with _spawn_lock:
        return list(_orphan_exits)


def terminate(groups: Iterable[int], pids: Iterable[int] = (), grace: float = 5.0) -> list[int]:
    """SIGTERM the process groups and pids, wait up to `grace`, SIGKILL what is left. Returns what was killed.

    The wait is on the processes' pidfds, not a polling loop: it ends the moment the last one exits."""
    groups, pids = set(groups), set(pids)

    def members() -> set[int]:
        left = {p for p in pids if alive(p)}
        for g in groups:
            left.update(group_members(g))
        return left

    def signal_all(sig: int) -> None:
        for g in groups:
            try:
                os.killpg(g, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass

    signal_all(signal.SIGTERM)
    left = wait_gone(members, grace)
    killed = sorted(left)
    if left:
        pids |= left
        signal_all(signal.SIGKILL)
        wait_gone(members, 5.0)
    reap_orphans()
    return killed


def wait_gone(members: Callable[[], set[int]], timeout: float) -> set[int]:
    """Wait until no process `members()` names is alive, or `timeout`: blocked on their pidfds, so each exit wakes
    it at once and nothing polls. A process that appears meanwhile (one of them forked) is found by one more look
    once the known ones are gone. Returns the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = members()
        if not left:
            return left
        fds: dict[int, int] = {}
        for pid in left:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                continue
        try:
            waiting = select.poll()
            for fd in fds:
                waiting.register(fd, select.POLLIN)
            pending = len(fds)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return members()
                ready = waiting.poll(remaining * 1000)
                for fd, _ in ready:
                    waiting.unregister(fd)
                    pending -= 1
        finally:
            for fd in fds:
                os.close(fd)
        # Once per round, not per wake-up: a pidfd fires at exit, reaped or not, and each reap is a /proc scan
        # (a tenth of a second with 2,000 processes, most of a stop if made for every batch of exits).
        reap_orphans()


# What a command whose output goes to the colony's log (a service, setup, build) runs with unless it says otherwise:
# Python writes each line as it prints it, not 8 KiB later or never (a block-buffered pipe dies with a kill).
LOGGED_ENV = {"PYTHONUNBUFFERED": "1"}

# Anything the shell itself would interpret: expansions, redirections, pipes, lists, globs, comments, escapes.
_SHELL_SYNTAX = frozenset("$`;&|<>()*?[]{}~#\\\n!")


def command_argv(command: str, env: Mapping[str, str], cwd: Path | None = None) -> list[str]:
    """How to run a colony.toml command: exec'd directly when it is a plain program and its arguments (so the
    service's pid is the program's own, not a `/bin/sh -c` wrapper's that lingers as its parent), else through
    `/bin/sh -c`, told to exec the program when the command is one program with expansions or redirections (so
    its pid is still the program's). A leading `exec ` is the shell's and is dropped; a program not found goes
    through the shell, whose "not found" and exit 127 the service's log then shows. A program named by a relative
    path (`.venv/bin/uvicorn`) is looked for from `cwd`, where it runs."""
    try:
        words = shlex.split(command)
    except ValueError:
        return ["/bin/sh", "-c", command]
    if words and words[0] == "exec":
        words = words[1:]
    found = bool(words) and "=" not in words[0] and _program(words[0], env, cwd)
    syntax = _unquoted(command)  # what quotes hold is an argument's: `sh -c 'a; exec b'` is one program
    if not _SHELL_SYNTAX.intersection(syntax):
        return words if found else ["/bin/sh", "-c", command]
    one_program = found and not _SHELL_LISTS.intersection(syntax) and not _SHELL_SYNTAX.intersection(words[0])
    if one_program and not command.lstrip().startswith("exec "):
        return ["/bin/sh", "-c", f"exec {command}"]
    return ["/bin/sh", "-c", command]


# What makes a command more than one program for the shell to run: lists, pipes, background, subshells, groups.
_SHELL_LISTS = frozenset(";&|()\n{}`#")


def _unquoted(command: str) -> str:
    """The characters of `command` the shell reads as syntax: those outside quotes and not escaped, and the `$` and
    backquotes inside double quotes (which still expand there)."""
    out: list[str] = []
    quote = ""
    chars = iter(command)
    for c in chars:
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            # Escaped: the next character is literal, as shlex reads it too, but for a line continuation and any
            # escape in double quotes (the shell's rules there are not shlex's): those go to the shell.
            escaped = next(chars, "")
            if quote or escaped == "\n":
                out.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c in "$`":
                out.append(c)
        elif c in "'\"":
            quote = c
        else:
            out.append(c)
    return "".join(out)


def _program(word: str, env: Mapping[str, str], cwd: Path | None) -> bool:
    if "/" in word:
        path = Path(word) if os.path.isabs(word) or cwd is None else cwd / word
        return path.is_file() and os.access(path, os.X_OK)
    return shutil.which(word, path=env.get("PATH", os.defpath)) is not None


_reaps = Coalesced(_reap_scan)
