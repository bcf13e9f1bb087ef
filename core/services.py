"""Service supervision: each `[services.NAME]` of colony.toml runs under an owner task on the event loop.

A `ServiceRunner` starts its service inside the colony (namespace, worktree, environment) in a process group of
its own, reads stdout and stderr (one pipe, so in the order written) line by line into the colony's log, checks
readiness, restarts it by its policy with exponential backoff and reports every state as a `ServiceState` event.
A `ServiceSet` starts a colony's services in `depends_on` waves, stops them in reverse, and applies an edited
colony.toml by restarting only the services whose definition changed.

Nothing here blocks the loop: exits are seen through a pidfd, pipes through `loop.add_reader`, readiness through
asyncio streams; registry writes, log-file appends and /proc scans go to worker threads.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from core import cgroups, pids, procs
from core.aio import wait_for
from core.colony_log import LAST_LINES, ColonyLog, Entry, failure_tail
from core.config import ColonyConfig, ServiceSpec, service_start_order
from core.errors import StemError, StepFailed
from core.events import Event, LogLine, ServiceState
from core.forward import LoopbackForward, listeners, loopback_only, port_holder
from core.sandbox import ColonyInit, OrphanExit

__all__ = [
    "CRASHED",
    "EXITED",
    "READY",
    "STARTING",
    "STOPPED",
    "ProcessHook",
    "ServiceChanges",
    "ServiceHost",
    "ServiceRunner",
    "ServiceSet",
    "ServiceStatus",
    "Timing",
    "probe",
]

log = logging.getLogger("stem.services")


class ServiceStatus(enum.StrEnum):
    """A service's state as its runner reports it (in events, `stem ls` and the registry's runtime rows)."""

    STARTING = "starting"
    READY = "ready"
    CRASHED = "crashed"
    EXITED = "exited"  # ended by itself with 0 and restart = "always": it starts again after its backoff
    STOPPED = "stopped"
    REMOVED = "removed"  # taken out of colony.toml while the colony ran: stopped, and no longer one of its services


STARTING = ServiceStatus.STARTING
READY = ServiceStatus.READY
CRASHED = ServiceStatus.CRASHED
EXITED = ServiceStatus.EXITED
STOPPED = ServiceStatus.STOPPED
REMOVED = ServiceStatus.REMOVED

MAX_LINE = 16 * 1024  # a longer line is logged in pieces, so a binary blob cannot grow a buffer without end
READ_CHUNK = 64 * 1024
READS_PER_WAKEUP = 4  # bounds one wakeup's work, so one chatty service cannot starve the loop
# Most services listen within a few hundred ms of their start: probed every FAST_PROBE for the first FAST_PROBING
# seconds (a refused connect in the colony's namespace costs ~0.1 ms of this process), so a spawn waits at most 5 ms
# past the moment they are up; then backing off to `probe_interval` for the slow starters.
FAST_PROBE = 0.005
FAST_PROBING = 2.0
# A line begun and not ended (a prompt: "Password: ", a progress line) is logged once its pipe has been quiet this long,
# as a terminal shows it; the rest of it, should it come, is logged as a line of its own, never the begun part again.
PARTIAL_QUIET = 0.3
# A NUL a service writes (a binary blob, a C string's end) is logged as U+FFFD, as bytes that are not UTF-8 are: one
# NUL in the log made grep take all of `stem logs` (and colony.log) for a binary file and print none of its lines.
NUL_SHOWN = "\ufffd".encode()
MAX_PENDING = 10_000  # lines waiting for the log writer; beyond it the pipes are left unread (backpressure)

# (pid, starttime, kind, argv): called in a worker thread, so a registry write never runs on the loop.
ProcessHook = Callable[[int, int, str, list[str]], None]


@dataclass(frozen=True, slots=True)
class Timing:
    """How a runner paces itself; tests pass small values."""

    backoff_initial: float = 0.5  # first wait before a restart; doubles after each quick crash
    backoff_max: float = 30.0
    backoff_reset: float = 10.0  # a service that stayed up this long starts again from backoff_initial
    stop_grace: float = 5.0  # SIGTERM to SIGKILL
    probe_interval: float = 0.1
    probe_timeout: float = 1.0  # one readiness attempt


@dataclass(frozen=True, slots=True)
class ServiceHost:
    """Where a colony's services run and whom they tell: shared by its ServiceSet and every runner in it.

    `record_process`/`forget_process` keep the registry's process table (run in worker threads); `may_restart`
    is asked before every restart, told whether the service was ever ready (a colony stopped from another shell
    must not see its services come back; one that never got ready while its colony starts fails the start)."""

    colony: str
    netns: str
    worktree: Path
    ip: str
    log: ColonyLog
    emit: Callable[[Event], None]
    record_process: ProcessHook
    forget_process: Callable[[int, int], None]
    timing: Timing = Timing()
    may_restart: Callable[[bool], Awaitable[bool]] | None = None
    init: ColonyInit | None = None  # the colony's namespaces, confined (core.sandbox); None: isolation off


@dataclass(frozen=True, slots=True)
class ServiceChanges:
    """What `ServiceSet.apply` did. `not_ready` lists started services that did not get ready in time."""

    restarted: tuple[str, ...] = ()
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    not_ready: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------------
# Readiness


async def probe(ready: str | None, ip: str, port: int | None, timeout: float = 1.0) -> bool:
    """One readiness attempt: "tcp" connects, "http:/path" needs a status below 500, None is always ready."""
    if ready is None:
        return True
    if port is None:
        return False
    try:
        reader, writer = await wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        if ready == "tcp":
            return True
        path = ready.removeprefix("http:") or "/"
        # Asked for as localhost, which dev servers' host checks let in (Django's ALLOWED_HOSTS in DEBUG, Vite's
        # allowedHosts): as the colony's address, Django answers 400 and logs a traceback for every probe.
        request = f"GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nUser-Agent: stem-ready\r\n\r\n"
        writer.write(request.encode("latin-1", "replace"))
        await wait_for(writer.drain(), timeout)
        status = (await wait_for(reader.readline(), timeout)).split()
        return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1].isdigit() and int(status[1]) < 500
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await wait_for(writer.wait_closed(), timeout)


# ----------------------------------------------------------------------------------------------------------
# Output


class _LineSplitter:
    """Bytes from one pipe in, complete text lines out; a partial line waits for the rest, for EOF, or until the pipe
    has been quiet a moment (`take_partial`: a prompt, a progress line)."""

    def __init__(self) -> None:
        self._partial = b""

    @property
    def partial(self) -> bool:
        """Whether a line has begun and not ended."""
        return bool(self._partial)

    def take_partial(self) -> list[str]:
        """The line begun so far, as a line of its own (what arrives next starts the next one); a UTF-8 character cut
        in two stays for the rest of it."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(self._partial).rstrip("\r")
        self._partial = decoder.getstate()[0]
        return [text] if text else []

    def feed(self, chunk: bytes) -> list[str]:
        data = self._partial + chunk.replace(b"\0", NUL_SHOWN)
        *complete, self._partial = data.split(b"\n")
        lines = []
        for raw in complete:
            while len(raw) > MAX_LINE:
                cut = _boundary(raw, MAX_LINE)
                lines.append(_decode(raw[:cut]))
                raw = raw[cut:]
            lines.append(_decode(raw))
        while len(self._partial) > MAX_LINE:
            cut = _boundary(self._partial, MAX_LINE)
            lines.append(_decode(self._partial[:cut]))
            self._partial = self._partial[cut:]
        return lines

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return [_decode(rest)] if rest else []


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")


def _boundary(data: bytes, at: int) -> int:
    """Where to cut `data` (longer than `at`) into a piece of at most `at` bytes: at a character's start, up to 3
    bytes back, so that a line logged in pieces keeps every character of it (a cut through one was two U+FFFD)."""
    for cut in range(at, at - 4, -1):
        if data[cut] & 0xC0 != 0x80:  # not a UTF-8 continuation byte
            return cut
    return at  # not UTF-8 there anyway


# A terminal's sequences and controls: OSC (a window title) to its end, CSI (colours too), other escapes, C0 and C1
# controls but tab.
_CONTROLS = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[ -/]*[0-~]?|[\x00-\x08\x0a-\x1f\x7f-\x9f]"
)


def _plain(line: str) -> str:
    """A service's line as plain text, for the reasons and states quoted from its last lines (a failed start's line,
    `stem ls`, a crash notice): its log keeps its colours for `stem logs` and the UI to show, but a clear-screen and
    a window title in a start's failure line cleared the terminal it was printed on."""
    return _CONTROLS.sub("", line)


# The exit status of a service's daemon that was the colony's init's child (the kernel reaped it, unread).
EXIT_UNKNOWN = -1000
BACKGROUND_HOPS = 4  # a daemon that forks twice (fork, setsid, fork) is followed through each hop
BACKGROUND_LOOKS = 40  # each 5 ms apart while a hop of its start is still exiting
INTERMEDIATE = 1.0  # seconds: a followed process that ends sooner was a hop of its daemon's start
CANCEL_WAIT = 2.0  # seconds a cancelled supervisor waits for its cgroup's processes to die of SIGKILL


_UNRUNNABLE = {127: "its program was not found", 126: "its program cannot be run"}


def _unready(spec: ServiceSpec, taken_by: str = "") -> str:
    """What the readiness check of a service that never got ready found; `taken_by`: who held its port in its place
    (`ServiceRunner._port_taken`)."""
    if taken_by and spec.port is not None:
        return f"port {spec.port} is taken by {taken_by}, not by {spec.name}"
    what = "nothing took a connection" if spec.ready == "tcp" else f"{spec.ready} failed"
    return f"{what} on port {spec.port}" if spec.port is not None else what


def _exit_text(code: int) -> str:
    if code == EXIT_UNKNOWN:
        return "ended (its exit status went to the colony's init)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


def _group(pgid: int, within: set[int] | None) -> list[tuple[int, bytes, int]]:
    """(pid, state, parent) of every process in group `pgid`, zombies included, looked for among `within` (the
    colony's processes; None: every process). A process whose main thread has ended while other threads of it still
    run reads as a zombie in /proc but is not one yet (a node server's worker threads take a moment to end after its
    exit; a main thread that called pthread_exit leaves the process running): it counts as running ("R") until its
    last thread is gone, as its pidfd does. Taken for gone, it was found in the service's cgroup after the stop had
    ended the group, and SIGKILLed there under a line that said it had left its process group."""
    return [
        (pid, b"R" if fields[0] == b"Z" and int(fields[17]) > 1 else fields[0], int(fields[1]))
        for pid, fields in procs.stats_of(within)
        if int(fields[2]) == pgid
    ]


def _signal_group(pgid: int, sig: int) -> None:
    """`sig` to process group `pgid`, and SIGCONT after a stop signal, as systemd sends it: a process stopped (kill
    -STOP, SIGTSTP, a debugger that left it so) takes its SIGTERM only once it runs, and was SIGKILLed after the stop's
    patience instead of ending as it does (its shutdown, its last lines)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        if sig != signal.SIGKILL:
            os.killpg(pgid, signal.SIGCONT)


def _end_group(pgid: int, grace: float, netns_name: str, first: int = signal.SIGTERM) -> bool:
    """Blocking, for a worker thread, once the group's leader has exited but is not yet reaped: signal what is
    left of the group (`first`), SIGKILL it after `grace`, and reap the group's zombies that were re-parented to us
    (Stem is a subreaper). Only this group's zombies: a blanket reap could steal another child's exit code.
    Whether it took SIGKILL."""
    me = os.getpid()
    # Looked for among the colony's processes (its cgroup), not every process on the machine. A zombie has left its
    # cgroup: one of the group's re-parented to us (a colony without a PID namespace) is then the orphan reaper's.
    within = procs.colony_pids(netns_name)

    def members() -> set[int]:
        """Reap the group's zombies that are ours (their own children come to us next); the group's live
        processes other than the leader."""
        live = set()
        for pid, state, parent in _group(pgid, within):
            if pid == pgid:
                continue  # the leader is its Popen's to reap
            if state in (b"Z", b"X"):
                if parent == me:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                continue
            live.add(pid)
        return live

    if not members():
        return False
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        _signal_group(pgid, sig)
        if not procs.wait_gone(members, wait):  # on pidfds: no polling interval
            return sig == signal.SIGKILL
    return True


def _process_text(pid: int) -> str:
    """Blocking: a process of a colony as a line names it: `service db (pid 7 in the colony: postgres -D data)`, or
    `pid 7 in the colony: python3 -m http.server 3000` for one no service started (the agent's, `stem exec`'s)."""
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        cgroup = ""
    inside = procs.colony_pid(pid)
    text = f"pid {inside} in the colony" if inside not in (None, pid) else f"pid {pid}"
    shown = " ".join(pids.argv_of(pid))
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    text += f": {shown}" if shown else ""
    # Its service's own cgroup is `<prefix>-<colony>/<prefix>-svc-<service>` (cgroups.service_cgroup).
    owner = next((line.rpartition("/")[2] for line in cgroup.splitlines() if "-svc-" in line), "")
    return f"service {owner.partition('-svc-')[2]} ({text})" if owner else text


class _Background:
    """Stands in for a service's Popen once its command went to the background and exited 0 (a daemon: nginx,
    `redis-server --daemonize yes`, `memcached -d`): the process it left, orphaned to the host (a subreaper, when
    the colony has no PID namespace: our child now, its exit status ours to read) or to the colony's init."""

    def __init__(self, pid: int, ours: bool) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ours = ours
        self.since = time.monotonic()

    def poll(self) -> int | None:
        """Its exit status, once its pidfd said it ended (None before, for one of ours)."""
        if self.returncode is None:
            code = EXIT_UNKNOWN
            if self._ours:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    pid, status = self.pid, -1
                if pid == 0:
                    return None
                if status >= 0:
                    code = os.waitstatus_to_exitcode(status)
            self.returncode = code
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None and self._ours:
            try:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            except ChildProcessError:
                self.returncode = EXIT_UNKNOWN
        return self.returncode if self.returncode is not None else EXIT_UNKNOWN


def _clean_exit(proc: subprocess.Popen[bytes] | _Background) -> bool:
    """Whether the exited, unreaped leader exited 0 (read without reaping it: its pid stays its own meanwhile). A
    daemon orphaned to the colony's init has no status to read: one that ended at once counts (the first of a
    double fork), not one that served for a while (its workers left behind are not the service)."""
    if isinstance(proc, _Background):
        code = proc.poll()
        return code == 0 or (code == EXIT_UNKNOWN and time.monotonic() - proc.since < INTERMEDIATE)
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return info is not None and info.si_code == os.CLD_EXITED and info.si_status == 0


def _group_of(proc: subprocess.Popen[bytes] | _Background) -> int:
    """The process group a service's process leads: its own pid for a command (a new session), whatever the daemon
    is in for one that went to the background (asked while it is unreaped or just gone)."""
    if isinstance(proc, _Background):
        with contextlib.suppress(OSError):
            return os.getpgid(proc.pid)
    return proc.pid


_background_lock = threading.Lock()  # one look-and-take at a time: two daemons started at once are told apart


def _exe(pid: int) -> tuple[int, int] | None:
    """Which program a process runs (device and inode of its executable), or None once it is exiting."""
    try:
        found = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _left_in_background(
    service: str, since: int, parents: set[int], within: set[int] | None, program: tuple[int, int] | None
) -> tuple[int, int, int] | bool:
    """Blocking: (pid, parent, starttime) of the process a service's command left running as it exited, taken for it
    (`procs.adopt_child`: no other service's look takes it): orphaned (its parent is now the host or the colony's
    init), started after the command, naming no other service in STEM_SERVICE. Best one that carries the command's
    STEM_SERVICE, then one that runs the command's `program` (a daemon that set its process title, as nginx and
    redis do, has written over its environment), then the oldest. Else True while a process that could be one is
    exiting (a hop of a double fork, its child not yet orphaned: look again), False."""
    marker = f"\0STEM_SERVICE={service}\0".encode()
    found: list[tuple[bool, bool, int, int, int]] = []
    unsettled = False
    with _background_lock:
        for pid, fields in procs.stats_of(within):
            if int(fields[1]) not in parents or procs.known_child(pid) or int(fields[19]) < since:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = b"\0" + f.read()
            except OSError:
                environ = b""
            if fields[0] in (b"Z", b"X") or not environ:
                unsettled = True  # exiting: its memory (and environment) already gone
                continue
            ours = marker in environ
            if ours or b"\0STEM_SERVICE=" not in environ:
                found.append((not ours, _exe(pid) != program, int(fields[19]), pid, int(fields[1])))
        if not found:
            return unsettled
        *_, start, pid, parent = min(found)
        procs.adopt_child(pid)
    return pid, parent, start


# ----------------------------------------------------------------------------------------------------------
# One service


class ServiceRunner:
    """The owner task of one service: start, watch, restart by policy, report. `start()` then `stop()`.

    `state` is starting, ready, crashed (failed: a non-zero exit, killed, or never ready), exited (a clean exit that
    restart="always" will restart) or stopped (by stop(), or a clean exit that is not restarted); `code` is the last
    exit code (negative: killed by that signal); `pid` is the running process (its process group has the same id) or
    None.
    A service that is not ready within its ready_timeout is ended, and that counts as a failed attempt.
    """

    def __init__(self, spec: ServiceSpec, host: ServiceHost, env: Mapping[str, str]) -> None:
        self.spec = spec
        self.host = host
        self.colony = host.colony
        self.netns = host.netns
        self.cwd = host.worktree / spec.working_dir if spec.working_dir else host.worktree
        # STEM_SERVICE: what the service sees of itself, and how its daemon is told from other processes.
        self.env = {**env, "STEM_SERVICE": spec.name}
        self.ip = host.ip
        self.log = host.log
        self.timing = host.timing
        self._emit = host.emit
        self._record_process = host.record_process
        self._forget_process = host.forget_process

        self.state: ServiceStatus = STOPPED
        self.code: int | None = None
        self.detail = ""
        self.restarts = 0
        self.timed_out = False  # the last attempt never got ready and was ended for it
        # Who held its port while none of its own processes listened there (this run's readiness check).
        self.taken_by = ""
        # <colony ip>:<port> relayed to the service's loopback-only listener (core.forward), while its process runs.
        self._forward: LoopbackForward | None = None
        self._forward_tried = False
        self.last_lines: deque[str] = deque(maxlen=LAST_LINES)

        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._may_restart = host.may_restart
        self._grace = self.timing.stop_grace
        self._wake = asyncio.Event()  # cuts a backoff wait short when stop() is called
        self._ever_ready = asyncio.Event()
        self._proc: subprocess.Popen[bytes] | _Background | None = None
        self._starttime = 0
        self._run_start = 0  # the start (clock ticks) of this run's command: what it left ended after it
        self._inside = 0  # the followed daemon's pid in the colony's PID namespace (its init's records name it so)
        self._died: OrphanExit | None = None  # what its command left in the background ended at once, failing
        self._died_inside = False  # ...and its pid is the one the colony sees (its init's record)
        self._died_why = ""  # ...and what may be why: who holds its port, or that it said nothing here
        self._program: tuple[int, int] | None = None
        self._pidfd = -1
        self._stdin = -1  # the write end of its stdin, held open and never written while it runs
        self._cgroup: str | None = None  # its own, below its colony's (cgroups.make_service); None: the colony's
        self._exited = asyncio.Event()
        self._pipes: dict[int, tuple[IO[bytes], _LineSplitter]] = {}
        # Per pipe with a line begun: the timer that logs it once the pipe is quiet (`_take_partial`), and when a read
        # last left a line begun (one timer per quiet wait, not one per read: a flood's reads end mid-line).
        self._quiet: dict[int, asyncio.TimerHandle] = {}
        self._partial_at: dict[int, float] = {}
        self._paused = False
        self._pending: list[str] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def last_pid(self) -> int | None:
        """The pid of its latest process, running or not: who the kernel's log names when it killed that process
        (the report may come after the exit was reaped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def finished(self) -> bool:
        """The owner task has ended: stopped, or crashed with no restart to come."""
        return self._task is not None and self._task.done()

    def start(self) -> None:
        """Start the owner task; the service goes starting → ready, and on by its restart policy."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"service-{self.colony}-{self.name}")

    async def wait_ready(self, timeout: float) -> bool:
        """True once the service has been ready (since start()); False if it gave up or `timeout` passed."""
        if self._ever_ready.is_set():
            return True
        if self._task is None or self._task.done():
            return False
        ready = asyncio.ensure_future(self._ever_ready.wait())
        try:
            await asyncio.wait({ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        return self._ever_ready.is_set()

    async def stop(self, grace: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL after `grace`; no restart follows. Ends in state stopped."""
        self._stopping = True
        if grace is not None:
            self._grace = grace
        self._wake.set()
        if self._task is None:
            self._set(STOPPED)
            return
        if self.pid is not None:
            await self._end()
        await asyncio.shield(self._task)
        if self.state != STOPPED:
            self._set(STOPPED, self.code)

    # owner task ---------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            self._cgroup = await asyncio.to_thread(cgroups.make_service, self.netns, self.name)
            await self._supervise()
        except asyncio.CancelledError:
            # Cancelled rather than stopped (its host shutting down abruptly): what the service started outside its
            # process group (setsid, a double fork) is still in its cgroup. Ended and removed as a stop does, not
            # left for `stem stop` or `stem gc`: SIGKILL at once (no grace: the cancel is the stop), in a worker
            # thread that a second cancel does not cut short.
            self._abandon()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._remove_cgroup(CANCEL_WAIT))
            raise
        except Exception as exc:  # a bug here must not leave the service running unsupervised
            log.exception("supervisor of %s/%s failed", self.colony, self.name)
            self._abandon()
            self._set(CRASHED, self.code, f"supervisor error: {exc!r}")
        await self._remove_cgroup()

    async def _supervise(self) -> None:
        delay = self.timing.backoff_initial
        while not self._stopping:
            self._set(STARTING)
            self.last_lines.clear()  # what an end reports is this run's output, not the runs' before it
            self.taken_by = ""
            try:
                await self._launch()
            except (StemError, OSError) as exc:
                # The namespace or the working directory is gone: a restart cannot fix that.
                self._abandon()
                self._set(CRASHED, None, f"could not start: {exc}")
                return
            started = time.monotonic()
            not_ready = self.timed_out = await self._watch_readiness()
            code = await self._reap(follow=True)
            hops = 1
            while code is None:  # it went to the background: its daemon is watched as its process
                not_ready = self.timed_out = await self._watch_readiness()
                code = await self._reap(follow=hops < BACKGROUND_HOPS)
                hops += 1
            await self._close_forward()
            if self._stopping:
                await self._note(f"stopped: {_exit_text(code)}", self.name)  # every end of a service is a line
                break
            failed = code != 0 or not_ready
            restart = self.spec.restart == "always" or (self.spec.restart == "on-failure" and failed)
            # The shell could not run the program at all (127: not found, 126: not executable): no restart
            # will find it. (A program exec'd directly that is not there fails `_launch` instead.)
            unrunnable = _UNRUNNABLE.get(code) if time.monotonic() - started < self.timing.backoff_reset else None
            lines = [_plain(line) for line in list(self.last_lines)[-5:]]
            if not_ready:
                unready = _unready(self.spec, self.taken_by)
                lines.insert(0, f"not ready after {self.spec.ready_timeout:g}s ({unready}), ended")
            lines.append(self._end_text(code))
            self._set(CRASHED if failed else EXITED if restart else STOPPED, code, "\n".join(lines))
            # In the colony's log too, under the service's name (as its stderr when it failed).
            ended = f"{lines[0]}: {lines[-1]}" if not_ready else lines[-1]
            source = f"{self.name}!" if failed else self.name
            if not restart or unrunnable:
                why = unrunnable or f"restart = {self.spec.restart}"
                await self._note(f"{ended}; not restarted ({why})" if failed else ended, source)
                if restart:
                    self._set(CRASHED, code, "\n".join([*lines, f"not restarted ({why})"]))
                return
            if self._may_restart is not None and not await self._may_restart(self._ever_ready.is_set()):
                await self._note(ended, source)
                return
            if time.monotonic() - started >= self.timing.backoff_reset:
                delay = self.timing.backoff_initial
            await self._note(f"{ended}; restart {self.restarts + 1} in {delay:g}s", source)
            with contextlib.suppress(TimeoutError):
                await wait_for(self._wake.wait(), delay)
            delay = min(delay * 2, self.timing.backoff_max)
            if not self._stopping:
                self.restarts += 1
        self._set(STOPPED, self.code)

    async def _remove_cgroup(self, wait: float | None = None) -> None:
        """The service is over (stopped, or ended for good): its cgroup goes, with anything still in it (SIGKILLed,
        waited for up to `wait`, its stop grace by default)."""
        name, self._cgroup = self._cgroup, None
        if name is not None:
            try:
                await asyncio.to_thread(cgroups.remove, name, self._stop_grace if wait is None else wait)
            except OSError as exc:  # the colony's removal (or gc) takes it then
                log.warning("cgroup %s of %s/%s not removed: %s", name, self.colony, self.name, exc)

    async def _launch(self) -> None:
        """Spawn the service; everything that must exist before the first await is set up synchronously."""
        self.code = None
        self._exited = asyncio.Event()
        if self.spec.working_dir and not self.cwd.is_dir():
            raise StemError(f"its working_dir {self.spec.working_dir!r} is not a folder in the colony's worktree")
        argv = procs.command_argv(self.spec.command, self.env, self.cwd)
        # Its stdin is a pipe kept open and never written, as a terminal nobody types in, until the run ends: with
        # /dev/null, what stops at the end of its input stopped at once (`esbuild --serve` and `--watch`: "stopped
        # automatically because stdin was closed"), exiting 0 before it was ever ready.
        stdin, self._stdin = os.pipe2(os.O_CLOEXEC)
        try:
            proc = procs.spawn(
                argv,
                netns_name=self.netns,
                cwd=self.cwd,
                env=self.env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                # One pipe for both, as a terminal has one screen: the log shows the lines in the order written (two
                # pipes read in turn put a burst's stderr after all its stdout), and both go under the service's name.
                stderr=subprocess.STDOUT,
                init=self.host.init,
                cgroup=self._cgroup,
            )
        except FileNotFoundError as exc:
            name = str(exc.filename or argv[0])
            if self.host.init is not None and os.path.isabs(name) and os.path.exists(name):
                # There on the host, not in the colony's own view of the filesystem (a venv made under /tmp).
                raise StemError(
                    f"{name} is not there inside the colony: its /tmp, /var/tmp, /dev/shm, STEM_HOME and other "
                    "users' homes are empty folders of its own (put the program in the worktree or a system path)"
                ) from None
            raise StemError(f"{name} does not exist") from None
        finally:
            os.close(stdin)  # the service's own; ours is closed as the run ends (`_close_stdin`)
        self._proc = proc
        self._starttime = self._run_start = procs.starttime(proc.pid) or 0
        self._inside, self._died, self._died_why = 0, None, ""
        self._program = _exe(proc.pid)  # exec'd already: Popen returns once it has
        loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        self._paused = False
        for pipe in (proc.stdout,):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._pipes[fd] = (pipe, _LineSplitter())
            loop.add_reader(fd, self._on_output, fd)
        await asyncio.to_thread(self._record_process, proc.pid, self._starttime, f"service:{self.name}", argv)

    async def _watch_readiness(self) -> bool:
        """Report ready when the check passes, then wait for the exit. True if the service never got ready in
        time (it is then ended, and the exit counts as a failure)."""
        if self.spec.ready is None:
            self._ready()
            seeking = asyncio.ensure_future(self._seek_loopback()) if self.spec.port is not None else None
            try:
                await self._exited.wait()
            finally:
                if seeking is not None:
                    seeking.cancel()
                    await asyncio.gather(seeking, return_exceptions=True)
            return False
        exited = asyncio.ensure_future(self._exited.wait())
        ready = asyncio.ensure_future(self._until_ready())
        try:
            await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            exited.cancel()
            raise
        finally:
            ready.cancel()
        if exited.done():
            await asyncio.gather(ready, return_exceptions=True)
            return False
        if ready.result():
            self._ready()
            await exited
            return False
        if not self._stopping:
            await self._end()
        await exited
        return not self._stopping

    def _ready(self) -> None:
        if self.state != READY:  # a daemon followed after its command was ready already
            self._set(READY)
        self._ever_ready.set()

    async def _until_ready(self) -> bool:
        spec = self.spec
        if spec.ready is None:
            return True
        started = time.monotonic()
        deadline = started + spec.ready_timeout
        interval = FAST_PROBE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timeout = min(self.timing.probe_timeout, left)
            if self.taken_by:  # while another holds its port, who does is asked first: that one is not probed
                taken = await asyncio.to_thread(self._port_taken)
                answered = taken is None and await probe(spec.ready, self.ip, spec.port, timeout)
            else:
                answered = await probe(spec.ready, self.ip, spec.port, timeout)
                taken = await asyncio.to_thread(self._port_taken) if answered else None
            if answered and taken is None:
                return True
            await self._held_by(taken)
            if await self._forward_loopback():
                continue  # probed again at once, through the forward
            await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0)))
            if time.monotonic() - started > FAST_PROBING:
                interval = min(interval * 2, self.timing.probe_interval)

    async def _seek_loopback(self) -> None:
        """A service with a port and no readiness check: look for where it listens while it starts (its ready
        timeout at most, more rarely as time goes), and forward its port if that is the loopback only."""
        started = time.monotonic()
        interval = FAST_PROBE
        while time.monotonic() - started < self.spec.ready_timeout:
            pid, port = self.pid, self.spec.port
            found = listeners(pid, port) if pid is not None and port is not None else None
            if found is None:
                return  # the process is gone
            if found:  # forwarded if on the loopback only; else the colony's address reaches it already
                await self._forward_loopback(found)
                return
            await asyncio.sleep(interval)
            interval = min(interval * 2, self.timing.probe_interval)

    async def _forward_loopback(self, found: set[str] | None = None) -> bool:
        """The service listens on the colony's loopback only (a dev server's default): forward its port from the
        colony's address, once per run of its process, and say so in the colony's log. True if it now is.
        `found`: where it listens, if the caller has just read that (core.forward.listeners)."""
        port, pid = self.spec.port, self.pid
        if self._forward_tried or port is None or pid is None:
            return False
        target = loopback_only(listeners(pid, port) if found is None else found)
        if target is None:
            return False
        taken = await asyncio.to_thread(self._port_taken)
        if taken is not None:  # another process's listener (an agent's dev server): not the service's to forward
            await self._held_by(taken)
            return False
        self._forward_tried = True
        forward = LoopbackForward(self.netns, self.ip, port, target)
        try:
            await forward.start()
        except OSError as exc:
            why = exc.strerror or str(exc)
            await self._note(f"{self.name} listens on {target} port {port} only; forwarding {self.ip}:{port}: {why}")
            return False
        self._forward = forward
        shown = f"[{target}]" if ":" in target else target
        await self._note(
            f"{self.name} listens on {shown}:{port} only (the colony's own loopback): {self.ip}:{port} is forwarded "
            f"to it (or have it listen on 0.0.0.0)"
        )
        return True

    async def _held_by(self, taken: str | None) -> None:
        """Who holds the service's port in its place now (`_port_taken`; None: nobody), said once in the log."""
        if taken is None:
            self.taken_by = ""
        elif taken != self.taken_by:
            self.taken_by = taken
            await self._note(
                f"port {self.spec.port} is taken by {taken}, not by {self.name}: {self.name} is not ready until it "
                "listens there",
                f"{self.name}!",
            )

    async def _note(self, text: str, source: str = "network") -> None:
        entry = await asyncio.to_thread(self.log.append, source, text)
        self._emit(LogLine(self.colony, entry.seq, entry.at, entry.source, entry.text))

    async def _close_forward(self) -> None:
        forward, self._forward = self._forward, None
        self._forward_tried = False
        if forward is not None:
            await forward.close()

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        self._exited.set()

    @property
    def _stop_grace(self) -> float:
        """Seconds from the stop signal to SIGKILL: the service's `stop_timeout`, else the stop's."""
        return self.spec.stop_timeout if self.spec.stop_timeout is not None else self._grace

    async def _end(self) -> None:
        """The service's stop signal (SIGTERM unless it says otherwise) to the group, SIGKILL after its grace. The
        leader is unreaped while we signal, so the group id cannot have been reused."""
        grace = self._stop_grace
        self._signal(self.spec.stop_signal)
        try:
            await wait_for(self._exited.wait(), grace)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            sent = signal.Signals(self.spec.stop_signal).name
            await self._note(f"still running {grace:g}s after {sent}: killed (SIGKILL)", f"{self.name}!")
            await self._exited.wait()

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            _signal_group(_group_of(proc), sig)

    async def _reap(self, follow: bool = False) -> int | None:
        """After the leader exited: end what is left of its group, reap it, drain and close its pipes. With
        `follow`, a leader that exited 0 leaving a daemon behind is reaped and the daemon becomes the service's
        process (nothing else is ended or closed: it may still be in the group and hold the pipes); None then."""
        proc = self._proc
        assert proc is not None
        clean = follow and not self._stopping and _clean_exit(proc)
        if clean and await self._follow_background(proc):
            return None
        # Nothing left running: what it left in the background may have died at once (a daemon that could not start).
        died = await self._died_in_background() if clean else None
        # Before reaping: while the leader is a zombie its pid (= the group id) cannot be handed out again.
        grace, first = self._stop_grace, self.spec.stop_signal
        if await asyncio.to_thread(_end_group, _group_of(proc), grace, self.netns, first):
            sent = signal.Signals(first).name
            await self._note(
                f"what was left of its process group still ran {grace:g}s after {sent}: killed (SIGKILL)",
                f"{self.name}!",
            )
        if self._cgroup is not None:
            # What it started in a session of its own (setsid, a double fork) is not in its group: it would outlive
            # this run and hold its port against the next one. Its cgroup has it.
            left = await asyncio.to_thread(cgroups.end, self._cgroup, self._stop_grace)
            if left:
                what = f"{len(left)} process{'es' if len(left) > 1 else ''}"
                await self._note(
                    f"{what} it started outside its process group (setsid, a double fork) still ran: killed (SIGKILL)",
                    f"{self.name}!",
                )
        code = proc.poll()
        if code is None:  # cannot happen after the pidfd fired; never block the loop on it
            code = await asyncio.to_thread(proc.wait)
        if code == EXIT_UNKNOWN and died is None:
            code = await self._status_from_init(code)
        if died is not None and code in (0, EXIT_UNKNOWN):
            code = died.code
            # Unless it is the process followed already (which ended within INTERMEDIATE): it ended, not another.
            followed = died.start == self._starttime and died.pid == (self._inside if self._died_inside else proc.pid)
            self._died = None if followed else died
        if (self._died is not None or isinstance(proc, _Background)) and code > 0 and not self._stopping:
            # A daemon that failed (at once, or after it was followed): what may be why, since it says so elsewhere.
            self._died_why = await asyncio.to_thread(self._why_died)
        procs.forget_child(proc.pid)
        os.close(self._pidfd)
        self._pidfd = -1
        loop = asyncio.get_running_loop()
        for fd in list(self._pipes):
            self._drain(fd)
        for fd, (pipe, splitter) in self._pipes.items():
            self._cancel_quiet(fd)
            self._lines(splitter.flush())  # a line left unended by a process that still holds the pipe
            loop.remove_reader(fd)
            pipe.close()
        self._pipes.clear()
        self._close_stdin()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        self.code = code
        await asyncio.to_thread(self._forget_process, proc.pid, self._starttime)
        return code

    async def _follow_background(self, proc: subprocess.Popen[bytes] | _Background) -> bool:
        """The service's command exited 0: if it left a daemon (see `_left_in_background`), reap the command and
        watch the daemon as the service's process from now on. True if it did."""
        me = os.getpid()
        init = self.host.init
        parents = {me} if init is None or not init.pid else {me, init.pid}
        for _ in range(BACKGROUND_LOOKS):
            found = await asyncio.to_thread(
                lambda: _left_in_background(self.name, self._starttime, parents, self._members(), self._program)
            )
            if found is False:
                return False
            if found is True:
                await asyncio.sleep(0.005)
                continue
            pid, parent, start = found
            ours = parent == me
            try:
                pidfd = os.pidfd_open(pid)
                break
            except OSError:  # gone (and reaped) meanwhile: a hop of a double fork; look again
                procs.forget_child(pid)
        else:
            return False
        proc.poll()  # the command itself, reaped
        procs.forget_child(proc.pid)
        os.close(self._pidfd)  # its reader went when it fired (`_on_exit`)
        await asyncio.to_thread(self._forget_process, proc.pid, self._starttime)
        self._proc, self._starttime, self._pidfd = _Background(pid, ours), start, pidfd
        self._exited = asyncio.Event()
        asyncio.get_running_loop().add_reader(pidfd, self._on_exit)
        argv = await asyncio.to_thread(self._record_background, pid, start, ours)
        shown = " ".join(argv)[:80] or "?"
        inside = procs.colony_pid(pid)
        self._inside = inside or 0
        where = f"pid {inside} in the colony ({pid} on the host)" if inside not in (None, pid) else f"pid {pid}"
        await self._note(
            f"{self.name} went to the background as {where}: {shown}; its command exited 0, so that process is the "
            "service now (or have it run in the foreground)",
            self.name,
        )
        return True

    async def _died_in_background(self) -> OrphanExit | None:
        """Its command exited 0 and left nothing running: whether what it left in the background (a daemon, through
        each hop of its start) ended at once with a failure, a daemon that could not start. Its exit status went to
        its reaper (the colony's init, or Stem as subreaper), which keeps the latest ends; it is told by its cgroup,
        which a zombie keeps on the unified hierarchy (nothing to tell without one, nor with none of its own)."""
        name = self._cgroup
        if name is None:
            return None
        init = self.host.init

        def ends() -> list[tuple[OrphanExit, bool]]:
            found = [(ended, False) for ended in procs.orphan_exits()]
            if init is not None and init.owned:
                found += [(ended, True) for ended in init.orphan_exits()]  # pids as the colony sees them
            return found

        for ended, inside in await asyncio.to_thread(ends):
            if ended.code != 0 and ended.start >= self._run_start and ended.cgroup.endswith(f"/{name}"):
                self._died_inside = inside
                return ended
        return None

    async def _status_from_init(self, code: int) -> int:
        """The exit status of a followed daemon that was the colony's init's child (`code` if it does not know it)."""
        init, pid, start = self.host.init, self._inside, self._starttime
        if init is None or not init.owned or not pid:
            return code
        ends = await asyncio.to_thread(init.orphan_exits)
        return next((e.code for e in reversed(ends) if e.pid == pid and e.start == start), code)

    def _end_text(self, code: int) -> str:
        """How the run ended, for its state's detail and the colony's log."""
        died = self._died
        why = f"; {self._died_why}" if self._died_why else ""
        if died is None:
            return _exit_text(code) + why
        where = f"pid {died.pid} in the colony" if self._died_inside else f"pid {died.pid}"
        return f"its command exited 0, but what it left in the background ({where}) {_exit_text(code)} at once{why}"

    def _why_died(self) -> str:
        """Blocking: what may be why its daemon could not start, where the log shows nothing else. Another process of
        the colony listening on its port (a daemon binds after going to the background, so its "address in use"
        goes where the daemon writes, often nowhere); else, when its run wrote nothing, where a daemon says why."""
        port = self.spec.port
        members = procs.colony_pids(self.netns) if port is not None else None
        holder = port_holder(members, port) if members and port is not None else None
        if holder is not None:
            return f"port {port} is taken by {_process_text(holder)}"
        if not self.last_lines:
            return "it wrote nothing here: a daemon says why in its own log file (or run it in the foreground)"
        return ""

    def _port_taken(self) -> str | None:
        """Blocking: who holds the service's port in its place, when a process of the colony outside the service's
        own cgroup listens there and none of the service's does (a dev server the agent started by hand, another
        service's): its readiness probe was answered by that one, and a dev server that found the port taken
        went on on the next one (vite). None when the service listens there itself, or nothing tells (no cgroup
        of its own, or no process of the colony holds it: the colony's address forwarded by its host)."""
        port = self.spec.port
        if port is None or self._cgroup is None:
            return None
        own = cgroups.procs(self._cgroup)
        if own and port_holder(own, port) is not None:
            return None
        others = (procs.colony_pids(self.netns) or set()) - own
        holder = port_holder(others, port) if others else None
        return _process_text(holder) if holder is not None else None

    def _members(self) -> set[int] | None:
        """Blocking: where its daemon is looked for. Its own cgroup's processes: only what it started, never the
        colony's agent or another service's process that started meanwhile; else the colony's (None: every one)."""
        if self._cgroup is not None:
            return cgroups.procs(self._cgroup)
        return procs.colony_pids(self.netns)

    def _record_background(self, pid: int, start: int, ours: bool) -> list[str]:
        """Blocking: the followed daemon into the registry's process table (its argv, returned); with `ours`, reap
        an intermediate of its start that exited before we looked (it was re-parented to us too)."""
        argv = pids.argv_of(pid)
        self._record_process(pid, start, f"service:{self.name}", argv)
        if ours:
            procs.reap_orphans()
        return argv

    def _abandon(self) -> None:
        """Teardown without awaiting (cancelled or a bug): kill the group and drop the loop's watchers."""
        if self._forward is not None:
            self._forward.abandon()
            self._forward = None
        self._close_stdin()
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        loop = asyncio.get_running_loop()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        for fd, (pipe, _) in self._pipes.items():
            self._cancel_quiet(fd)
            loop.remove_reader(fd)
            pipe.close()
        self._pipes.clear()
        if proc.returncode is None:
            # Killed but not awaited: forgotten, so the next procs.reap_orphans may reap the zombie.
            procs.forget_child(proc.pid)

    def _close_stdin(self) -> None:
        """The run is over: what is left of it (a daemon that kept its stdin) reads the end of its input."""
        if self._stdin >= 0:
            os.close(self._stdin)
            self._stdin = -1

    # output -------------------------------------------------------------------------------------------------

    def _on_output(self, fd: int) -> None:
        for _ in range(READS_PER_WAKEUP):
            if not self._read_once(fd):
                return

    def _drain(self, fd: int) -> None:
        # Bounded: a daemon that left the group may still hold the pipe and keep writing.
        for _ in range(64):
            if not self._read_once(fd):
                return

    def _read_once(self, fd: int) -> bool:
        """Read one chunk; False when nothing more is there for now (or ever)."""
        entry = self._pipes.get(fd)
        if entry is None:
            return False
        splitter = entry[1]
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._cancel_quiet(fd)
            asyncio.get_running_loop().remove_reader(fd)
            self._lines(splitter.flush())
            return False
        self._lines(splitter.feed(chunk))
        if splitter.partial:
            loop = asyncio.get_running_loop()
            self._partial_at[fd] = loop.time()
            if fd not in self._quiet:
                self._quiet[fd] = loop.call_later(PARTIAL_QUIET, self._take_partial, fd)
        return True

    def _take_partial(self, fd: int) -> None:
        """Log what there is of a line begun once its pipe has been quiet PARTIAL_QUIET since a read last left a line
        begun; if one came since, wait out the rest of that time."""
        self._quiet.pop(fd, None)
        entry = self._pipes.get(fd)
        if entry is None or not entry[1].partial:
            return  # the line was ended meanwhile
        loop = asyncio.get_running_loop()
        wait = self._partial_at.get(fd, 0.0) + PARTIAL_QUIET - loop.time()
        if wait > 0:
            self._quiet[fd] = loop.call_later(wait, self._take_partial, fd)
            return
        self._lines(entry[1].take_partial())

    def _cancel_quiet(self, fd: int) -> None:
        self._partial_at.pop(fd, None)
        timer = self._quiet.pop(fd, None)
        if timer is not None:
            timer.cancel()

    def _lines(self, lines: list[str]) -> None:
        if not lines:
            return
        self.last_lines.extend(lines)
        self._pending.extend(lines)
        if len(self._pending) > MAX_PENDING and not self._paused:
            self._pause(True)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_log())

    def _pause(self, paused: bool) -> None:
        """Stop reading while the log writer is behind: the pipe fills and the service waits on its writes."""
        self._paused = paused
        loop = asyncio.get_running_loop()
        for fd in self._pipes:
            if paused:
                loop.remove_reader(fd)
            else:
                loop.add_reader(fd, self._on_output, fd)

    async def _write_log(self) -> None:
        """One writer per runner keeps lines in order; the file appends run in a worker thread."""
        while self._pending:
            batch, self._pending = self._pending, []
            entries = await asyncio.to_thread(self._append, batch)
            for e in entries:
                self._emit(LogLine(self.colony, e.seq, e.at, e.source, e.text))
            if self._paused and len(self._pending) <= MAX_PENDING and self._pipes:
                self._pause(False)

    def _append(self, lines: list[str]) -> list[Entry]:
        return self.log.extend(self.name, lines)

    # state --------------------------------------------------------------------------------------------------

    def _set(self, state: ServiceStatus, code: int | None = None, detail: str = "") -> None:
        if code == EXIT_UNKNOWN:
            code = None  # a daemon's status the colony's init took: not known (the detail says so), never -1000
        self.state = state
        self.code = code
        self.detail = detail
        self._emit(ServiceState(self.colony, self.name, state, code, self.restarts, detail))


# ----------------------------------------------------------------------------------------------------------
# All services of a colony


class ServiceSet:
    """A colony's services: started in `depends_on` waves, stopped in reverse, re-applied after an edit.

    `env` is the colony's environment without colony.toml's `[colony] env` (Hive.env_for(rec)): the set adds
    the config's env and each service's env itself, so an edit of either restarts exactly the affected services.
    """

    def __init__(self, config: ColonyConfig, host: ServiceHost, env: Mapping[str, str]) -> None:
        self.config = config
        self.host = host
        self.colony = host.colony
        self.env = dict(env)
        self.log = host.log
        self.timing = host.timing
        self._emit = host.emit
        self._runners: dict[str, ServiceRunner] = {}
        self._envs: dict[str, dict[str, str]] = {}  # what each runner was started with, to spot changes
        self._lock = asyncio.Lock()
        self._active = False  # between start_all and stop_all: only then does apply start anything
        self._stop_asked = asyncio.Event()  # set by stop_all before it waits for the lock (see `_ready_unless_stop`)
        self._superseded = asyncio.Event()  # set by an edit waiting for the lock: the one applied stops waiting

    @property
    def services(self) -> Mapping[str, ServiceRunner]:
        """The supervised services by name; a stopped or removed service leaves this mapping."""
        return MappingProxyType(self._runners)

    async def start_all(self) -> None:
        """Start every service, each wave once the previous one is ready. If one never gets ready, stop all
        that were started and raise StepFailed naming it with its last output."""
        async with self._lock:
            waves = service_start_order(self.config)
            self._active = True
            for wave in waves:
                runners = [self._start_runner(self.config.services[name]) for name in wave if name not in self._runners]
                results = await asyncio.gather(*(r.wait_ready(r.spec.ready_timeout) for r in runners))
                failed = [r for r, ok in zip(runners, results, strict=True) if not ok]
                if failed:
                    reason = self._not_ready_reason(failed[0])
                    self._active = False
                    await self._stop(list(self._runners), waves)
                    raise StepFailed(reason)

    def supersede(self) -> None:
        """A newer edit of colony.toml is coming: an edit still waiting for its services to get ready stops waiting
        (they go on getting ready), so that the newer one is applied now, not after their ready timeout."""
        self._superseded.set()

    async def stop_all(self, grace: float | None = None) -> None:
        """Stop every service, dependents before what they depend on."""
        self._stop_asked.set()  # an edit being applied stops waiting for its services to be ready
        async with self._lock:
            self._stop_asked.clear()
            self._active = False
            await self._stop(list(self._runners), service_start_order(self.config), grace)

    async def apply(self, config: ColonyConfig) -> ServiceChanges:
        """Bring the running services in line with an edited colony.toml.

        Removed services stop; services whose definition or environment changed restart; added ones start;
        the rest keep running untouched. A service that depends on a restarted one keeps running: it was
        written to survive its dependency restarting (it must, since crashes restart it too), and restarting
        it as well would widen every edit to a whole chain. An invalid config (a dependency cycle) raises
        before anything is touched. While the services are not running (before start_all, after stop_all) the
        config is only remembered for the next start.
        """
        self.supersede()  # this edit is newer than one still waiting for its services to be ready
        async with self._lock:
            self._superseded.clear()
            new_waves = service_start_order(config)
            if not self._active:
                self.config = config
                return ServiceChanges()
            old_waves = service_start_order(self.config)
            removed = [name for name in self._runners if name not in config.services]
            changed = [
                name
                for name, runner in self._runners.items()
                if name in config.services
                and (runner.spec != config.services[name] or self._envs[name] != self._env_for(config, name))
            ]
            added = [name for name in config.services if name not in self._runners]
            await self._stop([*removed, *changed], old_waves)
            for name in removed:
                self.host.emit(ServiceState(self.colony, name, REMOVED))
            self.config = config
            not_ready: list[str] = []
            for wave in new_waves:
                runners = [self._start_runner(config.services[n]) for n in wave if n in changed or n in added]
                results = await self._ready_unless_stop(runners)
                if self._superseded.is_set():
                    # A newer edit waits: services still getting ready go on doing so (their own ready timeout ends
                    # them), and the later waves are the newer edit's to start, as services it adds.
                    ended = [r for r, ok in zip(runners, results, strict=True) if not ok and r.state != STARTING]
                    not_ready += [r.name for r in ended]
                    break
                not_ready += [r.name for r, ok in zip(runners, results, strict=True) if not ok]
                if self._stop_asked.is_set():
                    break  # the colony is stopping: the later waves are not started
            return ServiceChanges(tuple(changed), tuple(added), tuple(removed), tuple(not_ready))

    async def _ready_unless_stop(self, runners: list[ServiceRunner]) -> list[bool]:
        """Whether each of `runners` got ready, waited for until each is, or the colony's stop or a newer edit asks
        for the lock (a service an edit added that never gets ready held the stop back, and every later edit, the
        one that mends it too, for its whole ready timeout)."""
        ready: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(r.wait_ready(r.spec.ready_timeout) for r in runners))
        )
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop_asked.wait())
        newer: asyncio.Future[Any] = asyncio.ensure_future(self._superseded.wait())
        try:
            await asyncio.wait([ready, stop, newer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            newer.cancel()
        if ready.done():
            return list(ready.result())
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready
        return [r.state == READY for r in runners]

    async def restart(self, name: str) -> None:
        """Stop one service and start it afresh, as the user asked (its dependents keep running)."""
        async with self._lock:
            runner = self._runners.get(name)
            if runner is None or name not in self.config.services:
                raise StemError(f"{self.colony} has no service {name!r} (see colony.toml)")
            await runner.stop()
            # A restart the user asked for counts as one: the count the UI shows carries over to the new runner.
            self._start_runner(self.config.services[name], restarts=runner.restarts + 1)

    # helpers --------------------------------------------------------------------------------------------------

    def _env_for(self, config: ColonyConfig, name: str) -> dict[str, str]:
        return {**procs.LOGGED_ENV, **self.env, **config.env, **config.services[name].env}

    def _start_runner(self, spec: ServiceSpec, restarts: int = 0) -> ServiceRunner:
        env = self._env_for(self.config, spec.name)
        runner = ServiceRunner(spec, self.host, env)
        runner.restarts = restarts
        self._runners[spec.name] = runner
        self._envs[spec.name] = env
        runner.start()
        return runner

    async def _stop(self, names: list[str], waves: list[list[str]], grace: float | None = None) -> None:
        """Stop `names` wave by wave from the last wave back; names outside the waves go first."""
        known = {name for wave in waves for name in wave}
        for group in [[n for n in names if n not in known], *([n for n in w if n in names] for w in reversed(waves))]:
            runners = [self._runners.pop(name) for name in group if name in self._runners]
            for name in group:
                self._envs.pop(name, None)
            await asyncio.gather(*(r.stop(grace) for r in runners))

    def _not_ready_reason(self, runner: ServiceRunner) -> str:
        tail = failure_tail(_plain(line) for line in runner.last_lines)
        if runner.finished and runner.code is not None and not runner.timed_out:
            what = f"service {runner.name} {_exit_text(runner.code)} before it was ready"
        elif runner.finished and not runner.timed_out:
            what = f"service {runner.name} {runner.detail}"
        else:
            unready = _unready(runner.spec, runner.taken_by)
            what = f"service {runner.name} not ready after {runner.spec.ready_timeout:g}s ({unready})"
        return f"{what}: {tail}" if tail else what
