"""The Hive: the one object the UI and the CLI talk to. It owns the registry, the actors and the event stream.

Every operation on a colony runs in that colony's actor and holds the colony's file lock, so stem processes in
several shells serialise per colony. Blocking work (netlink, git, SQLite writes, waiting for processes) runs in
worker threads; the event loop only coordinates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from core import cgroups, claims, dns, firewall, netns, pids, procs, sandbox, worktree
from core import lifecycle as lc
from core.actor import Supervisor, describe
from core.aio import wait_for
from core.coalesce import Coalesced
from core.colony_env import colony_env
from core.colony_log import LAST_LINES, ColonyLog, Entry, failure_tail, recent, rotated
from core.config import (
    ColonyConfig,
    Limits,
    colony_config_for,
    load_colony_config,
    parse_colony_config,
    stop_patience,
)
from core.egress import NAT, EgressInForce, proxy_forwards
from core.errors import (
    BranchExists,
    ConfigError,
    NoSuchColony,
    PastFullDisk,
    StemError,
    StepFailed,
    WrongState,
    disk_trouble,
    free_bytes,
    refused_by_disk,
)
from core.events import (
    ColonyRemoved,
    Event,
    FileChange,
    HiveChanged,
    LogLine,
    Notice,
    StateChanged,
)
from core.firewall import FirewallError
from core.host import forker
from core.host.paths import STARTER_ENV, HostPaths
from core.listing import Listed, listing, open_hive, pool_from_environment
from core.locations import write_atomically
from core.locks import FileLock, file_lock, holder, remove_unused
from core.locks import checkpoint as _checkpoint
from core.names import branch_name, check_name, netns_name, veth_name
from core.offload import read_off_loop
from core.peering import PeerInfo, Peering, Peers
from core.privileges import become_subreaper, require_netns_privileges
from core.provision import RUNTIME_PARTS, Teardown
from core.registry import PENDING_PIDS, RESERVE_BYTES, ColonyRecord, Transition
from core.sandbox import ColonyInit, Sandbox
from core.settings import Settings, load_settings

if TYPE_CHECKING:
    from core.gc import GcReport
    from core.host.client import HostLink, RemoteAgent, ServiceView
    from core.merge import ColonyDiff, CommitResult, MergeResult, MergeStatus, SyncResult
    from core.overlap import OverlapReport

T = TypeVar("T")
_SEQ = attrgetter("seq")  # a log entry's number
log = logging.getLogger("stem.hive")
DEFAULT_POOL = ipaddress.IPv4Network("10.200.0.0/16")
STOP_GRACE = 5.0
LOCK_LOOK = 1.0  # seconds between a lock waiter's looks at who holds the lock (a stopped holder ends the wait)
STOP_WORKERS = 32  # threads a batch of stops runs its blocking work on (namespaces, cgroups, waits on the kernel)
LINK_WAIT = 2.0  # seconds a starter waits for its link to a new host before asking it to start
FIRST_LINK_WAIT = 0.5  # seconds at most a UI's other links wait for the colony it shows first (see `attach`)
ORPHAN_CHECK = 10.0  # seconds between a following process's looks for colonies a dead stem process left mid-way
REVIVE_ATTEMPTS = 3  # a host killed again while it starts is tried again, this many times in all
SPAWN_ROOM = 1 << 20  # bytes a spawn needs free under STEM_HOME beside its worktree, or it is refused at once
ROOM_WORTH_MAKING = 64 << 10  # a colony's logs smaller than this are not emptied to make room for a destroy


async def _after(gate: asyncio.Event, most: float, then: Coroutine[Any, Any, None]) -> None:
    """`then`, once `gate` is set or `most` seconds have passed (closed, never run, if cancelled before)."""
    try:
        with contextlib.suppress(TimeoutError):
            await wait_for(gate.wait(), most)
    except BaseException:
        then.close()
        raise
    await then


class _Background(threading.Thread):
    """A step run beside the calling thread; `reraise` (after `join`) raises what it raised."""

    def __init__(self, fn: Callable[..., object], *args: Any, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn, self._args = fn, args
        self._error: BaseException | None = None
        self.result: object = None  # what it returned, once joined
        self.start()

    def run(self) -> None:
        try:
            self.result = self._fn(*self._args)
        except BaseException as exc:  # handed to the thread that joins
            self._error = exc

    def reraise(self) -> None:
        if self._error is not None:
            raise self._error


@dataclass(frozen=True, slots=True)
class ColonyProcess:
    """A process Stem started inside a colony; (pid, starttime) is its identity in the registry."""

    colony: str
    proc: subprocess.Popen[bytes]
    starttime: int
    init: ColonyInit | None = None  # the namespaces it joined (its own when no host ran): let go when it ends
    warning: str = ""  # what the caller should be told (colony.toml broken: its env and pass_env not applied)


@dataclass(slots=True)
class DestroyReport:
    name: str
    kept_branch: str | None = None
    unmerged: int = 0
    note: str = ""  # what the destroy could not do, and how the user does it


async def _finished_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`; if the caller is cancelled meanwhile (its command ended by Ctrl-C, SIGTERM, SIGHUP), finish it
    all the same, then stay cancelled: a stop or destroy once begun is never left half done."""
    finishing = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(finishing)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await finishing
        raise


class Hive:
    """All colonies of one STEM_HOME."""

    def __init__(
        self,
        home: Path | None = None,
        *,
        prefix: str | None = None,
        pool: ipaddress.IPv4Network | None = None,
        stop_grace: float = STOP_GRACE,
        settings: Settings | None = None,
        hosts: bool = True,
    ) -> None:
        """`hosts=False` provisions colonies without starting their hosts: nothing runs in them but what the
        caller starts itself (tools and tests that drive an AgentSession or a ServiceSet directly)."""
        # Before anything is made: this hive's prefix and pool are its own on this machine (core/claims.py).
        opened = open_hive(home, prefix=prefix, pool=pool, settings=settings)
        self.layout, self.prefix, self.settings = opened.layout, opened.prefix, opened.settings
        self.pool, self.registry = opened.pool, opened.registry
        self.stop_grace = stop_grace
        self.hosts = hosts
        self.peering = Peers(self.registry, self.layout, self.settings)
        self.supervisor = Supervisor(self._on_actor_crash)
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._logs: dict[str, ColonyLog] = {}
        self._logs_lock = threading.Lock()  # a spawn's steps log from several threads: one ColonyLog per colony
        self._links: dict[str, HostLink] = {}
        # Told, once per wait, when an operation waits for a colony another process holds (a spawn still running
        # its setup): the CLI says so on stderr rather than wait without a word.
        self.on_lock_wait: Callable[[str], None] | None = None
        self._link_tasks: dict[str, asyncio.Task[None]] = {}
        # Whose log lines the followed hosts publish one by one (None: every colony's); a UI names the colony it
        # shows (`HostLink`), so one flooding its log elsewhere costs it little.
        self.log_lines_for: Callable[[str], bool] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._seen: set[tuple[str, lc.ColonyState, str]] | None = None  # the registry's colonies at the last reconcile
        self._sync_firewall = Coalesced(self._rebuild_firewall)  # sync_firewall's coalescing
        self._commands: dict[str, subprocess.Popen[bytes]] = {}  # the setup/build command each colony waits on
        # Colonies whose spawn or start was cancelled while its thread runs: it starts no further command.
        self._abandoned: set[str] = set()
        self._commands_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reap_timer: asyncio.TimerHandle | None = None
        become_subreaper()

    @classmethod
    def from_environment(cls, settings: Settings | None = None) -> Hive:
        """The hive the environment names: STEM_HOME, STEM_PREFIX, and STEM_POOL over the config's pool."""
        settings = settings or load_settings()
        return cls(pool=pool_from_environment(settings), settings=settings)

    # events -----------------------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    def _publish(self, event: Event) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _publish_threadsafe(self, loop: asyncio.AbstractEventLoop, event: Event) -> None:
        loop.call_soon_threadsafe(self._publish, event)

    def log(self, name: str) -> ColonyLog:
        found = self._logs.get(name)
        if found is None:
            with self._logs_lock:
                found = self._logs.get(name)
                if found is None:
                    found = self._logs[name] = ColonyLog(self.layout.colony_log(name))
        return found

    def _forget_log(self, name: str) -> None:
        with self._logs_lock:
            found = self._logs.pop(name, None)
        if found is not None:
            found.close()  # its file was removed with the colony: the open descriptor would keep its blocks

    # queries ----------------------------------------------------------------------------------------------

    def colonies(self) -> list[ColonyRecord]:
        return self.registry.colonies()

    def listing(self) -> list[Listed]:
        """Every colony as `stem ls` shows it: its row, whether its host runs, what its host last wrote."""
        return listing(self.layout, self.registry)

    def get(self, name: str) -> ColonyRecord:
        return self.registry.get(name)

    def env_for(
        self,
        rec: ColonyRecord,
        extra: dict[str, str] | None = None,
        box: Sandbox | None = None,
        pass_env: tuple[str, ...] = (),
    ) -> dict[str, str]:
        """The environment every process in the colony sees (git inside finds the colony's worktree); with a
        sandbox, only the safe part of ours and `pass_env`."""
        return colony_env(rec, extra, sandbox=box, pass_env=pass_env)

    def sandbox_for(self, rec: ColonyRecord) -> Sandbox | None:
        """What confines the colony's processes (None with isolation off)."""
        return sandbox.for_colony(rec, self.settings, self.layout.home)

    def config_for(self, rec: ColonyRecord, policy: bool = True, fallback: bool = False) -> ColonyConfig:
        """The colony's colony.toml; with `policy`, its limits, network, peering and pass_env as they hold (a file
        its agent wrote has the spawn's: `colony_config_for`, a git or two). Without, as the file says: for a
        caller that reads none of those (its agent, its services). `fallback`: a file that does not parse gives the
        last one that did (a start)."""
        if not policy:
            return load_colony_config(Path(rec.worktree))
        kept = self.layout.colony_policy(rec.name)
        return colony_config_for(Path(rec.worktree), rec.base_commit, rec.target, kept, fallback)[0]

    def agent_choice(self, name: str) -> tuple[str, str, str]:
        """(the agent, where it was chosen: "--agent", "colony.toml" or "default_agent", the command line its host
        last started or ""), chosen as the colony's runtime chooses it."""
        rec = self.registry.get(name)
        spec, source = rec.agent, "--agent"
        if not spec:
            try:
                spec, source = self.config_for(rec, policy=False).agent or "", "colony.toml"
            except (StemError, OSError):
                spec = ""
        if not spec:
            spec, source = self.settings.default_agent, "default_agent"
        started = [text for _c, _at, kind, text in self.registry.events(name) if kind == "agent-started"]
        return spec, source, started[-1] if started else ""

    @property
    def home(self) -> Path:
        return self.layout.home

    def transitions(self, name: str) -> list[Transition]:
        """The colony's lifecycle history, oldest first (empty for an unknown colony)."""
        return self.registry.transitions(name)

    def service_names(self, name: str) -> list[str]:
        """The services of the colony's colony.toml (as its worktree has it), else those its host last ran."""
        rec = self.registry.get(name)
        try:
            return list(self.config_for(rec, policy=False).services)
        except StemError:
            return [key for kind, key, _state, _detail in self.registry.runtime(name) if kind == "service"]

    def host_socket(self, name: str) -> Path:
        """Where the colony's host answers (`stem attach` connects there)."""
        return self.host_paths(name).socket

    def log_path(self, name: str) -> Path:
        """The colony's on-disk log (`stem logs -f` follows it)."""
        return self.layout.colony_log(name)

    def usage(self, name: str) -> cgroups.Usage | None:
        """(memory bytes, CPU seconds) the colony uses now, from its cgroup; None without one (a stopped colony).
        A few small file reads: fine to call every second for every colony, off the event loop."""
        return cgroups.usage(netns_name(self.prefix, name))

    def limits(self, name: str) -> cgroups.ColonyLimits:
        """The limits the kernel holds the colony to now, its usage, and its OOM kills and refused forks so far."""
        events = [(at, kind, text) for _c, at, kind, text in self.registry.events(name) if kind in cgroups.EVENT_KINDS]
        return cgroups.status(netns_name(self.prefix, name), events)

    def preview_urls(self, name: str | None = None) -> dict[str, dict[str, str]]:
        """{colony: {service: URL}} through the hive's preview port, of the services routed now (or only `name`'s).
        One request to Caddy's admin socket (~1 ms, nothing when it does not run): off the event loop."""
        from core import preview

        return preview.urls(self.layout.home, name)

    def service_pids(self) -> dict[str, dict[str, int]]:
        """{colony: {service: pid}} of the services running now, as the host sees them (the registry's process
        table: a daemon a service went to the background as is there under the service's name)."""
        found: dict[str, dict[str, int]] = {}
        for proc in self.registry.processes():
            if proc.kind.startswith("service:"):
                found.setdefault(proc.colony, {})[proc.kind.removeprefix("service:")] = proc.pid
        return found

    def preview_problem(self) -> str | None:
        """Why the hive's preview proxy could not be started the last time, while none runs."""
        from core import preview

        return preview.problem(self.layout.home)

    def branch_tips(self) -> dict[str, str]:
        """{repository: its branch tips} of the repositories the colonies come from: it changes when a colony
        commits or a target moves (the moments its merge status changes). One git per repository: off the loop."""
        tips: dict[str, str] = {}
        for repo in sorted({rec.repo for rec in self.registry.colonies()}):
            if not Path(repo).is_dir():
                continue
            try:
                proc = worktree.git_bytes(
                    ["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads"], Path(repo)
                )
            except StemError:
                continue
            tips[repo] = os.fsdecode(proc.stdout)
        return tips

    def pending_work(self, rec: ColonyRecord) -> tuple[list[str], int]:
        """What destroying the colony would lose: its uncommitted files, and its commits merged nowhere."""
        dirty = worktree.dirty_files(Path(rec.worktree)) if Path(rec.worktree).exists() else []
        unmerged = worktree.unmerged_commits(Path(rec.repo), rec.branch) if Path(rec.repo).exists() else 0
        return dirty, unmerged

    @staticmethod
    def check_source(repo: Path, base: str | None) -> Path:
        """The repository root of `repo` (and `base` resolves in it, when given); StemError naming what is wrong
        otherwise."""
        root = worktree.repo_root(repo.expanduser().absolute())
        if base is not None:
            worktree.resolve_ref(root, base)
        return root

    # plumbing ---------------------------------------------------------------------------------------------

    async def _call(self, name: str, fn: Callable[[], T]) -> T:
        """Run blocking `fn` in a thread inside `name`'s actor while holding the colony's file lock."""

        async def handler() -> T:
            async with self._holding(name):
                return await asyncio.to_thread(fn)

        result: T = await self.supervisor.call(name, handler)
        return result

    @contextlib.asynccontextmanager
    async def _holding(self, name: str) -> AsyncIterator[None]:
        """The colony's file lock for a whole operation, awaits included, so other stem processes wait. Waited for
        by trying again and again, not in a thread blocked on it: Ctrl-C ends the wait (a thread blocked in flock
        held the exiting process until the lock came free). A holder that is stopped (kill -STOP, ctrl+z) would
        hold it for good: the wait ends with a line naming it."""
        lock = FileLock(self.layout.colony_lock(name))
        loop = asyncio.get_running_loop()
        delay, look_at, told = 0.005, loop.time() + LOCK_LOOK, False
        while not await asyncio.to_thread(lock.try_acquire):  # never blocks: its thread always comes back
            if loop.time() >= look_at:
                look_at = loop.time() + LOCK_LOOK
                pid = await asyncio.to_thread(holder, lock.path)
                what = pids.command_text(pid) if pid is not None else ""
                if pid is not None and pids.stopped(pid):
                    raise StemError(
                        f"colony {name} is held by pid {pid} ({what}), which is stopped: kill -CONT {pid} lets it "
                        f"finish, kill {pid} ends it"
                    )
                if pid is not None and not told and self.on_lock_wait is not None:
                    told = True
                    self.on_lock_wait(f"colony {name} is busy: pid {pid} ({what}) holds it; waiting (ctrl+c gives up)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            lock.release()
            # locks/ keeps no file for a name that is no colony now: destroyed, rolled back, or never one (a command
            # given a name that does not exist leaves nothing behind).
            await asyncio.shield(asyncio.to_thread(self._forget_lock, name))

    def _forget_lock(self, name: str) -> None:
        if self.registry.find(name) is None:
            remove_unused(self.layout.colony_lock(name))

    def set_state(self, name: str, state: lc.ColonyState, stage: str = "", reason: str = "") -> None:
        """Record the colony's lifecycle state and tell every subscriber; why a colony failed is a line of its log
        too (`stem logs` shows it beside what led to it: a colony.toml edit its restarted host could not read)."""
        self.registry.set_state(name, state, stage, reason)
        self._emit(StateChanged(name, state, stage, reason))
        if state == lc.FAILED and reason:
            self.log(name).append("colony!", f"the colony failed ({stage}): {reason}" if stage else reason)

    def _emit(self, event: Event) -> None:
        loop = self._loop
        if loop is not None:
            self._publish_threadsafe(loop, event)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        return getattr(self, "_bound_loop", None)

    def bind_loop(self) -> None:
        self._bound_loop = asyncio.get_running_loop()

    async def _on_actor_crash(self, name: str, exc: BaseException, exhausted: bool) -> None:
        reason = describe(exc)
        await asyncio.to_thread(self.registry.add_event, name, "actor-crash", reason)
        rec = await asyncio.to_thread(self.registry.find, name) if exhausted else None
        if rec is not None and lc.allowed(rec.state, lc.FAILED):  # a destroy under way stays one
            await asyncio.to_thread(self.set_state, name, lc.FAILED, "actor", f"too many actor restarts: {reason}")
            self._publish(Notice(name, "error", f"{name}: actor keeps crashing, marked failed ({reason})"))
        else:
            self._publish(Notice(name, "warning", f"{name}: actor restarted after {reason}"))

    async def inject_fault(self, name: str) -> None:
        """Crash `name`'s actor with an unexpected exception, as a bug would (used by tests and `stem debug`)."""

        async def boom() -> None:
            raise RuntimeError(f"injected fault in {name}'s actor")

        await self.supervisor.call(name, boom)

    # spawn ------------------------------------------------------------------------------------------------

    async def spawn(
        self,
        name: str,
        repo: Path,
        base: str = "HEAD",
        *,
        agent: str | None = None,
        task: str | None = None,
    ) -> ColonyRecord:
        """Make a colony: registry row, folder, SQLite file, network, worktree, setup, build. All or nothing."""
        self.bind_loop()
        check_name(name)
        require_netns_privileges("stem spawn")
        root, commit, config = await asyncio.to_thread(self._preflight, repo, base)
        unsaid = await asyncio.to_thread(_uncommitted_config, root, base)
        if unsaid:
            self._emit(Notice(name, "warning", f"{name}: {unsaid}"))

        async def handler() -> ColonyRecord:
            async with self._holding(name):
                making = asyncio.ensure_future(
                    asyncio.to_thread(self._spawn, name, root, base, commit, config, agent, task)
                )
                try:
                    rec = await asyncio.shield(making)
                except asyncio.CancelledError:
                    # The thread cannot be interrupted: end the command it waits on and let it start no other, let
                    # it finish (it rolls back on failure), undo what it made otherwise, and stay cancelled.
                    self._abandon(name)
                    try:
                        with contextlib.suppress(BaseException):
                            made = await making
                            await asyncio.to_thread(self._rollback, made)
                    finally:
                        self._abandoned.discard(name)
                    raise
                try:
                    await self._start_runtime(rec, config, launched=True)
                    # Recorded, or undone as any step: a disk its services filled as they started refuses this write.
                    await asyncio.to_thread(self.set_state, name, lc.RUNNING)
                except BaseException as exc:
                    await self._stop_runtime(name)
                    await asyncio.to_thread(self._rollback, rec)
                    if isinstance(exc, asyncio.CancelledError):
                        raise  # a cancelled spawn is undone and cancelled, not a failure to report
                    cause = str(exc) if isinstance(exc, StemError) else describe(exc)
                    raise StepFailed(
                        f"spawn {name} failed while starting: {cause} (everything made was removed)"
                    ) from exc
                return await asyncio.to_thread(self.registry.get, name)

        result: ColonyRecord = await self.supervisor.call(name, handler)
        return result

    def _preflight(self, repo: Path, base: str) -> tuple[Path, str, ColonyConfig]:
        given = repo.expanduser().absolute()
        root = worktree.repo_root(given)
        # The colony's worktree holds colony.toml as of the base commit: check that one before making anything.
        # Resolved where the user pointed: in a linked worktree, HEAD is that worktree's, not the main checkout's.
        commit, toml = worktree.resolve_with_file(given, base, "colony.toml")
        if toml is None:
            return root, commit, ColonyConfig()
        # Named as the file the user can open when it is that one, else as git names it (`feature:colony.toml`).
        shown = root / "colony.toml"
        try:
            own = shown.read_bytes() == toml
        except OSError:
            own = False
        return (
            root,
            commit,
            parse_colony_config(toml.decode("utf-8", "replace"), shown if own else Path(f"{base}:colony.toml")),
        )

    def _make_row(
        self, name: str, root: Path, base: str, commit: str, agent: str | None, task: str | None
    ) -> Callable[[int], dict[str, Any]]:
        target = worktree.branch_of(root, base)  # where `stem merge` goes: resolved now, HEAD moves later

        def make(slot: int) -> dict[str, Any]:
            host_ip, ip, prefixlen = netns.slot_addresses(self.pool, slot)
            return {
                "repo": str(root),
                "base_ref": base,
                "base_commit": commit,
                "target": target,
                "branch": branch_name(name),
                "worktree": str(self.layout.worktree(name)),
                "db_path": str(self.layout.colony_db(name)),
                "netns": netns_name(self.prefix, name),
                "veth": veth_name(self.prefix, slot),
                "ip": ip,
                "host_ip": host_ip,
                "prefixlen": prefixlen,
                "agent": agent or "",
                "task": task or "",
            }

        return make

    def _spawn(
        self,
        name: str,
        root: Path,
        base: str,
        commit: str,
        config: ColonyConfig,
        agent: str | None,
        task: str | None,
    ) -> ColonyRecord:
        self._check_room()
        rec = self.registry.reserve(
            name, netns.pool_slots(self.pool), self._make_row(name, root, base, commit, agent, task)
        )
        try:
            claims.check_alone(self.layout.home, self.pool)  # no other hive on this pool spawned meanwhile
        except BaseException:
            self.registry.delete_colony(name)
            raise
        self._emit(StateChanged(name, lc.SPAWNING))
        _checkpoint("reserved")
        stage = lc.PROVISIONING
        host: _Background | None = None
        try:
            self.set_state(name, lc.PROVISIONING)
            self._make_dir_and_db(rec)
            self._make_cgroup(rec, config)
            if self.hosts:
                # The colony's host is forked and listening while the rest is made (it waits for this process to
                # ask for the start, and exits should this process die first): not after it.
                host = _Background(self._launch_host, rec, config, name=f"host-{name}")
            # The checkout (a git process; then its files given to the colony's uid and its peers' snapshots) and
            # the network (netlink, the firewall table) do not depend on each other: made at the same time, a
            # spawn waits for the longer one, not the sum.
            checkout = _Background(self._make_checkout, rec, config, name=f"worktree-{name}")
            try:
                self._make_network(rec, config)
            finally:
                checkout.join()  # before anything is rolled back: it may be making the worktree right now
            checkout.reraise()
            self._run_commands(rec, config, "setup", config.setup)
            stage = lc.BUILDING
            self.set_state(name, lc.BUILDING)
            self._run_commands(rec, config, "build", config.build)
            stage = lc.STARTING
            self.set_state(name, lc.STARTING)
            if host is not None:
                host.join()
                host.reraise()
            _checkpoint("starting")
        except BaseException as exc:
            if host is not None:
                host.join()  # before the rollback ends it
            self._rollback(rec)
            cause = str(exc) if isinstance(exc, StemError) else describe(exc)
            raise StepFailed(f"spawn {name} failed while {stage}: {cause} (everything made was removed)") from exc
        return self.registry.get(name)

    def _check_room(self, what: str = "a spawn") -> None:
        """Refuse a spawn (or a start) before it makes anything where STEM_HOME has no room for what it writes
        beside the worktree (registry rows, the database, the log, the host's files): on a nearly full disk it would
        fail half way, and the rollback's own writes might then find no room either. The registry's reserve is room
        for what frees space, not for this: one given up earlier (to open the hive, or by a stop, destroy or gc) is
        made again first, and the spawn needs room beside it."""
        free = free_bytes(self.layout.home)
        if free is None:
            return
        owed = self.registry.reserve_owed
        if owed:
            free = max(0, free - RESERVE_BYTES)
        if free < SPAWN_ROOM or (owed and not self.registry.make_reserve_again()):
            raise StemError(
                f"{os.strerror(errno.ENOSPC)}: {self.layout.home} has {free / 1e6:.2f} MB free and {what} needs "
                f"{SPAWN_ROOM / 1e6:.2f} MB there beside its worktree: free some space and try again"
            )

    def _launch_host(self, rec: ColonyRecord, config: ColonyConfig) -> None:
        from core.host import launch

        env = {**self._host_env_for(rec, config), STARTER_ENV: str(os.getpid())}
        launch.launch(self.host_paths(rec.name), self.layout.home, rec.name, env)

    def _make_checkout(self, rec: ColonyRecord, config: ColonyConfig) -> None:
        """The colony's worktree, what of it the colony's uid owns, and its peers' snapshots in it."""
        self._make_worktree(rec)
        self._prepare_sandbox(rec)
        self._apply_peering(rec, config)

    def _make_dir_and_db(self, rec: ColonyRecord) -> None:
        folder = self.layout.colony_dir(rec.name)
        self.registry.claim(rec.name, "dir", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        Path(rec.db_path).parent.mkdir(exist_ok=True)
        db = sqlite3.connect(rec.db_path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        _checkpoint("dir")

    def _prepare_sandbox(self, rec: ColonyRecord) -> None:
        """Give the colony's uid its files (core.sandbox.prepare), and say in its log what is not enforced."""
        sandbox.prepare_colony(rec, self.settings, self.layout.home)
        for note in sandbox.status(self.settings.isolation):
            entry = self.log(rec.name).append("isolation", note)
            self._emit(LogLine(rec.name, entry.seq, entry.at, "isolation", note))

    def _make_cgroup(self, rec: ColonyRecord, config: ColonyConfig) -> None:
        """The colony's cgroup and its limits (colony.toml's [limits] over config.toml's), before anything runs in
        it. None where cgroups do not work, unless limits were asked for: then the spawn or start is refused."""
        limits = config.limits.over(self.settings.limits)
        if not cgroups.needed(limits):
            return
        self.registry.claim(rec.name, "cgroup", rec.netns)
        _checkpoint("cgroup-claimed")
        cgroups.create(rec.netns, limits)
        if limits != Limits():
            note = f"limits: {cgroups.describe(limits)}"
            entry = self.log(rec.name).append("limits", note)
            self._emit(LogLine(rec.name, entry.seq, entry.at, "limits", note))

    def _make_network(self, rec: ColonyRecord, config: ColonyConfig) -> None:
        self.registry.claim(rec.name, "netns", rec.netns)
        self.registry.claim(rec.name, "veth", rec.veth)
        _checkpoint("network-claimed")
        net = netns.ColonyNet(rec.netns, rec.veth, rec.host_ip, rec.ip, rec.prefixlen)
        # The egress policy (its resolv.conf, and the hive's firewall table rebuilt by nft: ~20-30 ms) does not need
        # the namespace to be there (the rules name the veth): made beside it, a spawn waits for the longer one.
        egress = _Background(self._apply_egress, rec, config, name=f"egress-{rec.name}")
        try:
            if not self.hosts or not forker.create_network(self.layout.home, net):  # its pyroute2 is imported
                netns.create(net)
            _checkpoint("network")
        finally:
            egress.join()  # before anything is rolled back: it may be rebuilding the table right now
        egress.reraise()
        # The one part of the table's rebuild that needs the veth itself: the policy just put in force.
        rules = self._colony_rules(rec, cast(EgressInForce, egress.result))
        firewall.loopback_for(rules, self._dns_plan().stub)

    def _dns_plan(self) -> dns.DnsPlan:
        return dns.plan(self.settings.dns, self.settings.resolv_conf)

    def _apply_egress(self, rec: ColonyRecord, config: ColonyConfig) -> EgressInForce:
        """Give the colony its resolv.conf and its egress policy in the hive's firewall table (no restart)."""
        plan = self._dns_plan()
        netns.write_resolv_conf(rec.netns, dns.resolv_conf_text(plan, rec.host_ip, rec.name))
        policy = config.network.egress or self.settings.egress
        addresses, unresolved = list(policy.networks), []
        for host in policy.names:
            found = dns.resolve_a(host, plan.servers or ((plan.stub,) if plan.stub else ()))
            addresses += [a for a in found if a not in addresses]
            if not found:
                unresolved.append(host)
        in_force = EgressInForce(
            policy,
            tuple(addresses),
            tuple(unresolved),
            config.network.host_ports,
            proxy_forwards(os.environ),
            config.network.peers,
        )
        self.registry.update(rec.name, egress=in_force.to_json())
        warnings = (
            [f"egress: {', '.join(unresolved)} did not resolve: nothing is allowed for them"] if unresolved else []
        )
        try:
            warnings += self.sync_firewall()
        except FirewallError as exc:
            if policy.mode != NAT:
                raise  # a restriction that does not hold must not look as if it did
            warnings.append(f"egress: {exc}")
        log = self.log(rec.name)
        for note in [f"egress: {in_force.describe()}", *warnings]:
            entry = log.append("network", note)
            self._emit(LogLine(rec.name, entry.seq, entry.at, "network", note))
        for warning in warnings:
            self._emit(Notice(rec.name, "warning", warning))
        return in_force

    def sync_firewall(self) -> list[str]:
        """Rebuild the hive's nftables table from the registry: the colonies whose network is up.

        Coalesced: callers that arrive while a rebuild runs wait for it, and the one rebuild that follows, which
        reads the registry after all their changes, serves them all (stopping 100 colonies at once rebuilds the
        table a few times, not 100). Returns the warnings of the rebuild that served this call."""
        return list(self._sync_firewall())

    @staticmethod
    def _colony_rules(rec: ColonyRecord, egress: EgressInForce | None = None) -> firewall.ColonyRules:
        """The colony's rules in the hive's table: its policy as the row records it, or `egress` (just put in force,
        the row's copy not read again)."""
        policy = egress if egress is not None else EgressInForce.from_json(rec.egress)
        return firewall.ColonyRules(rec.veth, rec.ip, rec.host_ip, policy, rec.name)

    def _rebuild_firewall(self) -> list[str]:
        rules = tuple(
            self._colony_rules(rec) for rec in self.registry.colonies() if self.registry.owns("veth", rec.veth)
        )
        plan = self._dns_plan()
        return firewall.apply(firewall.TablePlan(self.prefix, self.pool, rules, plan.servers, plan.stub))

    async def apply_network(self, name: str) -> EgressInForce:
        """Apply the `[network]` of the colony's colony.toml now, without restarting anything."""
        self.bind_loop()

        def apply() -> EgressInForce:
            rec = self.registry.get(name)
            if not self.registry.owns("veth", rec.veth):
                raise WrongState(f"{name} is {rec.state}: its network is down, the policy applies at start")
            return self._apply_egress(rec, self.config_for(rec))

        return await self._call(name, apply)

    def _make_worktree(self, rec: ColonyRecord) -> None:
        branch = f"{rec.repo}#{rec.branch}"

        def claim() -> None:
            # Claimed branch first: parts are removed newest first, and git cannot delete a checked-out branch.
            self.registry.claim(rec.name, "branch", branch, extra=rec.repo)
            self.registry.claim(rec.name, "worktree", rec.worktree, extra=rec.repo)
            _checkpoint("worktree-claimed")

        try:
            worktree.add(Path(rec.repo), Path(rec.worktree), rec.branch, rec.base_commit, self.layout.locks, claim)
        except BranchExists:
            # Nothing was made, and a branch Stem did not make is never Stem's to remove on rollback.
            self.registry.release("worktree", rec.worktree)
            self.registry.release("branch", branch)
            raise
        _checkpoint("worktree")

    def _apply_peering(self, rec: ColonyRecord, config: ColonyConfig) -> None:
        """The colony's read-only peer snapshots (`.shared/NAME/`, core/peering.py), once its worktree and network
        are there; one that cannot be made is a warning in its log, the colony runs without it."""
        log = self.log(rec.name)
        for warning in self.peering.apply(rec, config):
            entry = log.append("peering", warning)
            self._emit(LogLine(rec.name, entry.seq, entry.at, "peering", warning))
            self._emit(Notice(rec.name, "warning", f"{rec.name}: {warning}"))

    def _abandon(self, name: str) -> None:
        """The spawn or start of `name` was cancelled: end the command its thread waits on, and start no other."""
        with self._commands_lock:
            self._abandoned.add(name)
            running = self._commands.get(name)
        if running is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(running.pid, signal.SIGKILL)

    def _run_commands(self, rec: ColonyRecord, config: ColonyConfig, source: str, commands: tuple[str, ...]) -> None:
        """Run setup/build commands one by one inside the colony; their output goes to the colony's log."""
        if not commands:
            return
        box = self.sandbox_for(rec)
        env = {**procs.LOGGED_ENV, **self.env_for(rec, dict(config.env), box, config.pass_env)}
        # Steps run before the colony's host exists: namespaces of their own, shared by the run's commands and
        # ended with them (nothing a build leaves running outlives it).
        init = procs.colony_init(box, rec.netns)
        try:
            self._run_steps(rec, source, commands, env, init)
        finally:
            procs.release_init(init, self.stop_grace)

    def _run_steps(
        self,
        rec: ColonyRecord,
        source: str,
        commands: tuple[str, ...],
        env: dict[str, str],
        init: ColonyInit | None,
    ) -> None:
        log = self.log(rec.name)
        for command in commands:
            if rec.name in self._abandoned:
                raise StepFailed(f"{source} interrupted before `{command}`")
            entry = log.append(source, f"$ {command}")
            self._emit(LogLine(rec.name, entry.seq, entry.at, source, entry.text))
            proc = procs.spawn(
                ["/bin/sh", "-c", command],
                netns_name=rec.netns,
                cwd=Path(rec.worktree),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                init=init,
            )
            start = procs.starttime(proc.pid) or 0
            # The command runs from here: one that fills the disk (an `npm install`) may do it before its record is
            # written. A record the disk refuses is not the step's failure: the command is waited for (its colony's
            # init ends it with the run, recorded or not), and what it says when it fails is the spawn's words.
            refused: BaseException | None = None
            try:
                self.registry.add_process(rec.name, proc.pid, start, source, ["/bin/sh", "-c", command])
            except Exception as exc:
                if not refused_by_disk(exc):
                    raise
                refused = exc
            last: deque[str] = deque(maxlen=LAST_LINES)
            assert proc.stdout is not None
            with self._commands_lock:
                self._commands[rec.name] = proc
                abandoned = rec.name in self._abandoned
            if abandoned:  # cancelled while it was being started
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                for raw in proc.stdout:
                    text = raw.decode("utf-8", "replace").rstrip("\r\n")
                    entry = log.append(source, text)
                    self._emit(LogLine(rec.name, entry.seq, entry.at, source, text))
                    last.append(text)
                code = proc.wait()
            finally:
                with self._commands_lock:
                    self._commands.pop(rec.name, None)
            procs.forget_child(proc.pid)
            if code == 0:  # a failed one's record goes with the rollback's: on a disk it filled, this write fails
                if refused is not None:
                    raise refused
                self.registry.remove_process(proc.pid, start)
            _checkpoint(source)
            if code != 0:
                if rec.name in self._abandoned:  # ended by the cancel of its spawn or start: no failure of its own
                    raise StepFailed(f"{source} interrupted during `{command}`")
                tail = failure_tail(last)
                raise StepFailed(f"{source} command `{command}` exited with {code}" + (f": {tail}" if tail else ""))

    def _rollback(self, rec: ColonyRecord) -> None:
        """Undo a spawn that failed: its host (launched while the colony was made), everything the colony claimed,
        then its row."""
        from core.host import launch

        def undo() -> None:
            launch.kill(self.host_paths(rec.name))
            self.end_processes(rec)
            self.remove_parts(rec.name, keep_unmerged=False)
            self.peering.forget(rec.name)
            self.registry.delete_colony(rec.name)

        with self.registry.freeing():  # it removes what the spawn made: on a full disk it may take the reserve
            try:
                undo()
            except Exception as exc:
                if not refused_by_disk(exc):
                    raise
                # The disk is full (a setup filled it, the checkout took the last room) and a small STEM_HOME has no
                # reserve: the colony's own files go first, without the registry (their claims are released as
                # their removal finds them gone), and the undo's writes find the room they freed.
                for path in (rec.worktree, self.layout.colony_dir(rec.name)):
                    shutil.rmtree(path, ignore_errors=True)
                undo()
        self._forget_log(rec.name)
        self._emit(ColonyRemoved(rec.name))
        self.retire_preview(rec.name)
        self._retire_forker()  # started for this colony's host: not left running for nothing

    # parts ------------------------------------------------------------------------------------------------

    @property
    def teardown(self) -> Teardown:
        """Ending a colony's processes and removing its parts (shared with gc)."""
        return Teardown(self.registry, self.layout, self.stop_grace)

    def remove_parts(
        self, name: str, keep_unmerged: bool, only: tuple[str, ...] | None = None, firewall: bool = True
    ) -> tuple[str | None, int]:
        """Remove what `name` owns per the registry, newest first; the firewall table follows when its network
        went (unless `firewall` is false: the caller rebuilds it once for a batch). Returns a kept branch and its
        unmerged commit count."""
        branch, unmerged, network_gone = self.teardown.remove_parts(name, keep_unmerged, only)
        if network_gone and firewall:
            self._sync_firewall_quietly(name)
        return branch, unmerged

    def _sync_firewall_quietly(self, name: str) -> None:
        """After a colony's network went: its rules go too; a failure is reported, never stops the removal."""
        try:
            self.sync_firewall()
        except StemError as exc:
            self._emit(Notice(name, "warning", f"firewall table {self.prefix}: {exc}"))

    def end_processes(self, rec: ColonyRecord) -> list[int]:
        """End every process of the colony: recorded groups, then anything else inside its namespace."""
        return self.teardown.end_processes(rec)

    # stop / start / destroy -------------------------------------------------------------------------------

    async def stop(self, name: str) -> ColonyRecord:
        """End the colony's processes and take down its network; keep its address, worktree and database."""
        return await self._stop_one(name, None)

    async def stop_many(self, names: list[str]) -> list[ColonyRecord | BaseException]:
        """Stop several colonies side by side (one actor and one lock each); each one's record, or what it raised.

        What each stop does in threads (namespaces, cgroups, waits for the kernel) runs on a pool of its own sized
        for the batch, not the loop's default handful, behind which 100 stops would queue; and the hive's firewall
        table is rebuilt once at the end instead of for every colony (a stopped colony's rules name a veth that is
        gone, so they match nothing meanwhile); the preview routes too (the hosts leave them to the batch)."""
        return await self._side_by_side(names, "stop", self._stop_one)

    async def _side_by_side(
        self, names: list[str], what: str, one: Callable[[str, ThreadPoolExecutor], Coroutine[Any, Any, T]]
    ) -> list[T | BaseException]:
        """`one` for each of `names` side by side, its threads' work on `what`'s pool sized for the batch; then the
        firewall table and the preview routes, once (nothing changed for names unknown). Each one's result, or what
        it raised."""
        if not names:
            return []
        pool = ThreadPoolExecutor(max_workers=min(len(names), STOP_WORKERS), thread_name_prefix=what)
        try:
            results = await asyncio.gather(*(one(name, pool) for name in names), return_exceptions=True)
        finally:
            pool.shutdown(wait=False)  # its threads are idle by now: they end on their own, the loop never waits

        def after() -> None:
            self._sync_firewall_quietly("")
            from core import preview

            preview.retire_many(self.layout.home, set(names), self.any_host_running)
            self._retire_forker()  # after Caddy, which it may have adopted: see `_retire_forker`

        if any(not isinstance(result, NoSuchColony) for result in results):
            await asyncio.to_thread(after)
        return list(results)

    async def _stop_one(self, name: str, pool: ThreadPoolExecutor | None) -> ColonyRecord:
        self.bind_loop()
        loop = asyncio.get_running_loop()

        async def handler() -> ColonyRecord:
            async with self._holding(name), self._freeing():
                rec = await asyncio.to_thread(self.registry.get, name)
                if rec.state == lc.STOPPED:
                    return rec
                await asyncio.to_thread(self.set_state, name, lc.STOPPING)

                async def finish() -> ColonyRecord:
                    await self._stop_runtime(name, routes=pool is None)
                    stopped: ColonyRecord = await loop.run_in_executor(pool, self._stop, name, pool is None)
                    return stopped

                # A stop once begun is finished even if its command is ended meanwhile (Ctrl-C, SIGTERM, a dropped
                # SSH connection): never a colony left `stopping`, half down, that start refuses.
                return await _finished_even_if_cancelled(finish())

        result: ColonyRecord = await self.supervisor.call(name, handler)
        return result

    def _stop(self, name: str, alone: bool = True) -> ColonyRecord:
        """The stop's blocking part. Not `alone` (one of a batch): the firewall table and the preview routes are
        the batch's to update, once for all of it."""
        rec = self.registry.get(name)
        _checkpoint("stopping")
        self.end_processes(rec)
        self.remove_parts(name, keep_unmerged=True, only=RUNTIME_PARTS, firewall=alone)
        self.set_state(name, lc.STOPPED)
        if alone:
            self.retire_preview(name)
            self._retire_forker()
        return self.registry.get(name)

    def _retire_forker(self) -> None:
        """With the hive's last colony host gone, its host forker and warm UI process go too: nothing of Stem's
        outlives a stop (a UI the warm process started runs on until its user quits it). Called after the hive's
        Caddy was retired: the forker has adopted Caddy when the host that started it ended first, and a forker
        that exited before Caddy passed it to PID 1, whose reaping may come late (its zombie stayed in `ps`)."""
        from core import warm
        from core.host.forker import ForkerPaths, stop
        from core.locks import held

        home = self.layout.home
        # Their locks, not their pid files: a server holds its lock from its first moment, and one still starting
        # (a cold command's warm-up preloads for a second before writing its pid file) must not be missed.
        if not held(ForkerPaths.of(home).lock) and not held(warm.WarmPaths.of(home).lock):
            return
        if not self.any_host_running():
            stop(home)
            warm.stop(home)

    def retire_preview(self, name: str) -> None:
        """The colony's preview routes go (a host killed -9, or a batch stop killed before its end, left them); with
        the hive's last colony host gone, the hive's Caddy goes too."""
        from core import preview

        preview.retire(self.layout.home, name, self.any_host_running)

    async def start(self, name: str) -> ColonyRecord:
        """Bring a stopped (or failed) colony back: network, build, then running."""
        self.bind_loop()
        require_netns_privileges("stem start")

        async def handler() -> ColonyRecord:
            async with self._holding(name):
                found = await asyncio.to_thread(self.registry.get, name)
                # A stop that did not finish (its process was killed -9) is finished now; so is one a running colony
                # whose network namespace vanished (`ip netns del`) needs: it is started again, network and all.
                if found.state == lc.STOPPING or (
                    found.state == lc.RUNNING and not await asyncio.to_thread(netns.exists, found.netns)
                ):
                    await self._stop_runtime(name)
                    await asyncio.to_thread(self._stop, name)
                starting = asyncio.ensure_future(asyncio.to_thread(self._start, name))
                try:
                    rec, config = await asyncio.shield(starting)
                except asyncio.CancelledError:
                    # As a cancelled spawn: its build ended, the colony left failed, never half started.
                    self._abandon(name)
                    try:
                        with contextlib.suppress(BaseException):
                            made, _ = await starting
                            if made.state != lc.RUNNING:
                                why = "its start was interrupted"
                                await asyncio.to_thread(self._fail_start, made, lc.STARTING, why)
                    finally:
                        self._abandoned.discard(name)
                    raise
                if rec.state == lc.RUNNING:
                    await self._restart_exited_agent(name)
                    return rec
                try:
                    await self._start_runtime(rec, config)
                except BaseException as exc:
                    await self._stop_runtime(name)
                    if isinstance(exc, asyncio.CancelledError):  # as above: failed, and the command stays cancelled
                        await asyncio.to_thread(self._fail_start, rec, lc.STARTING, "its start was interrupted")
                        raise
                    reason = str(exc) if isinstance(exc, StemError) else describe(exc)
                    await asyncio.to_thread(self._fail_start, rec, lc.STARTING, reason)
                    raise StepFailed(f"start {name} failed while starting: {reason}") from exc
                await asyncio.to_thread(self.set_state, name, lc.RUNNING)
                return await asyncio.to_thread(self.registry.get, name)

        result: ColonyRecord = await self.supervisor.call(name, handler)
        return result

    def _fail_start(self, rec: ColonyRecord, stage: str, reason: str) -> None:
        """Undo a start: its processes ended, its runtime parts removed, the colony failed. On a disk its build
        filled, each step goes on when the registry refuses to record the one before (the first refusal is raised
        at the end): the processes' records were written before the namespace and veth went, so both were left."""
        steps = PastFullDisk()
        with steps:
            self.end_processes(rec)
        with steps:
            self.remove_parts(rec.name, keep_unmerged=True, only=RUNTIME_PARTS)
        with steps:
            self.set_state(rec.name, lc.FAILED, stage, reason)
        with steps:
            self.retire_preview(rec.name)
        steps.raise_first()

    def _start(self, name: str) -> tuple[ColonyRecord, ColonyConfig]:
        rec = self.registry.get(name)
        if rec.state == lc.RUNNING:
            return rec, ColonyConfig()
        if rec.state not in lc.STARTABLE:
            raise WrongState(f"{name} is {rec.state}: only a stopped or failed colony can be started")
        if not Path(rec.worktree).exists():
            raise WrongState(f"{name}'s worktree {rec.worktree} is gone: destroy the colony (or run `stem gc`)")
        gitdir = worktree.git_dir_of(Path(rec.worktree))
        if gitdir is None or not gitdir.is_dir():
            # The repository was moved or deleted: its worktree links to a git dir that is not there. Refused
            # before anything changes (it failed half provisioned, naming a file of the sandbox).
            raise WrongState(
                f"{name}'s repository {rec.repo} is not where it was (moved or deleted): {rec.worktree} links to "
                f"{gitdir or 'no git dir'}; move the repository back, or `stem destroy {name}` (the branch is its)"
            )
        self._check_room("a start")  # what a start writes, as a spawn's: a full disk would leave it half started
        stage = lc.PROVISIONING
        try:
            self.set_state(name, lc.PROVISIONING)
            self.end_processes(rec)
            self.remove_parts(name, keep_unmerged=True, only=RUNTIME_PARTS)
            config = self.config_for(rec, fallback=True)  # the host says so in the colony's log
            self._make_cgroup(rec, config)
            self._make_network(rec, config)
            self._apply_peering(rec, config)
            self._prepare_sandbox(rec)
            stage = lc.BUILDING
            self.set_state(name, lc.BUILDING)
            self._run_commands(rec, config, "build", config.build)
            stage = lc.STARTING
            self.set_state(name, lc.STARTING)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, StemError) else describe(exc)
            try:
                self._fail_start(rec, stage, reason)
            except Exception as also:
                # A build that filled the disk: what it left running is ended, but the registry has no room to say
                # the colony failed. Said with the build's own words, which say why, not only the registry's.
                trouble = disk_trouble(also)
                if trouble is None or trouble in reason:
                    raise
                reason = f"{reason}; and the colony could not be marked failed: {trouble}"
            raise StepFailed(f"start {name} failed while {stage}: {reason}") from exc
        return self.registry.get(name), config

    async def destroy(self, name: str, force: bool = False) -> DestroyReport:
        """Remove everything of the colony. Uncommitted work stops it unless `force`; unmerged commits keep
        the branch."""
        return await self._destroy_one(name, force, None)

    async def destroy_many(self, names: list[str], force: bool = False) -> list[DestroyReport | BaseException]:
        """Destroy several colonies side by side, as `stop_many` stops them: each one's report, or what it raised.
        The hive's firewall table is rebuilt and the preview routes removed once at the end, not once a colony:
        one by one, every destroy rebuilt a table and reloaded Caddy with all the others still in them, so 100
        colonies took 42 s (0.12 s each for 10)."""

        def one(name: str, pool: ThreadPoolExecutor) -> Coroutine[Any, Any, DestroyReport]:
            return self._destroy_one(name, force, pool)

        return await self._side_by_side(names, "destroy", one)

    async def _destroy_one(self, name: str, force: bool, pool: ThreadPoolExecutor | None) -> DestroyReport:
        """`destroy`; one of a batch with `pool` (its blocking work runs there, and the firewall table and preview
        routes are the batch's to update)."""
        self.bind_loop()
        loop = asyncio.get_running_loop()

        async def handler() -> DestroyReport:
            async with self._holding(name), self._freeing():
                await asyncio.to_thread(self._check_destroyable, name, force)
                # The intent first: a destroy killed from here on is finished by the next gc, never undone; one ended
                # by a signal (Ctrl-C, SIGTERM, SIGHUP) is finished before its command exits, as a stop is.
                try:
                    await asyncio.to_thread(self.set_state, name, lc.DESTROYING)
                except Exception as exc:
                    if not refused_by_disk(exc):
                        raise
                    emptied = await asyncio.to_thread(self._make_room, name)
                    if not emptied:
                        raise
                    try:
                        await asyncio.to_thread(self.set_state, name, lc.DESTROYING)
                    except Exception:
                        await asyncio.to_thread(_put_back, emptied)  # it runs on: its log is still its own
                        raise
                _checkpoint("destroying")

                async def finish() -> DestroyReport:
                    await self._stop_runtime(name, routes=pool is None)
                    done: DestroyReport = await loop.run_in_executor(pool, self.finish_destroy, name, pool is None)
                    return done

                return await _finished_even_if_cancelled(finish())

        report: DestroyReport = await self.supervisor.call(name, handler)
        self.supervisor.forget(name)
        return report

    def _make_room(self, name: str) -> dict[Path, bytes]:
        """The disk is full and destroying `name` must first write its intent to the registry: empty the colony's
        own log files (they go with it), which a chatty service filling the disk made the largest things it has.
        What each held (at most 4 MiB each), to be put back should the room not be enough; nothing is emptied when
        they are too small to have filled the disk or to make room (the colony's log is worth more than a try)."""
        log = self.layout.colony_log(name)
        held = {}
        for path in (log, rotated(log)):
            with contextlib.suppress(OSError):
                held[path] = path.read_bytes()
        if sum(len(data) for data in held.values()) < ROOM_WORTH_MAKING:
            return {}
        emptied = {}
        for path, data in held.items():
            with contextlib.suppress(OSError):
                os.truncate(path, 0)
                emptied[path] = data
        return emptied

    @contextlib.asynccontextmanager
    async def _freeing(self) -> AsyncIterator[None]:
        """This process's registry writes may take the reserve meanwhile (see Registry.freeing)."""
        with self.registry.freeing():
            yield

    def _check_destroyable(self, name: str, force: bool) -> None:
        rec = self.registry.get(name)
        if not force:
            dirty = worktree.dirty_files(Path(rec.worktree))
            if dirty:
                listed = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
                raise WrongState(
                    f"{name} has uncommitted changes ({listed}) in {rec.worktree}: commit them, "
                    "or destroy with --force to lose them"
                )

    def finish_destroy(self, name: str, alone: bool = True) -> DestroyReport:
        """Remove everything of the colony (its state says DESTROYING); gc calls it for an interrupted destroy. Not
        `alone` (one of a batch): the firewall table and the preview routes are the batch's to update."""
        rec = self.registry.get(name)
        self.end_processes(rec)
        _checkpoint("destroy-parts")
        gitdir = worktree.git_dir_of(Path(rec.worktree))
        note = ""
        if gitdir is not None and not gitdir.exists():
            # Moved or deleted: git's record of the worktree and the branch are in it, wherever it is now.
            note = (
                f"{name}'s repository was not at {rec.repo} (moved or deleted): where it is now, `git worktree "
                f"prune` forgets the worktree and `git branch -D {rec.branch}` drops the branch"
            )
        branch, unmerged = self.remove_parts(name, keep_unmerged=True, firewall=alone)
        self.peering.forget(name)  # the snapshots of it that other colonies hold, and its peering rows
        self.registry.delete_colony(name)
        if branch:
            # Keep the branch's resource row without its colony: gc deletes the branch once it is merged.
            self.registry.claim(f"~{name}", "branch", f"{rec.repo}#{branch}", extra=rec.repo)
        self._forget_log(name)
        self._emit(ColonyRemoved(name))
        if alone:
            self.retire_preview(name)
            self._retire_forker()
        return DestroyReport(name, None if note else branch, unmerged, note)

    # read-only peering (core/peering.py) ----------------------------------------------------------------------

    def peers(self, name: str) -> PeerInfo:
        """Whom colony `name` reads (snapshots at `.shared/NAME/` in its worktree) and who reads it."""
        self.registry.get(name)
        return self.peering.info(name)

    async def peer(self, name: str, source: str, *, follow: bool = False) -> Peering:
        """Colony `name` reads `source` through a filtered read-only snapshot, made now if it runs (else at start);
        `follow` refreshes it whenever `source`'s changes settle."""
        self.bind_loop()
        return await self._call(name, lambda: self.peering.add(name, source, follow=follow))

    async def unpeer(self, name: str, source: str) -> None:
        """Colony `name` no longer reads `source`: the snapshot and its mount go."""
        self.bind_loop()
        await self._call(name, lambda: self.peering.remove(name, source))

    async def refresh_peers(self, name: str) -> list[Peering]:
        """Refresh every snapshot colony `name` reads (copies only what changed)."""
        self.bind_loop()
        return await self._call(name, lambda: self.peering.refresh(name))

    # exec -------------------------------------------------------------------------------------------------

    async def exec(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
        terminal: bool = False,
        started: Callable[[int], None] | None = None,
    ) -> ColonyProcess:
        """Start `argv` inside a running colony and record it, so a stop from any shell ends it. `terminal`: stdin
        is a PTY the caller made for it (an interactive `stem exec`), to be its controlling terminal. `started` is
        told its pid (in a thread) before it is recorded."""
        self.bind_loop()

        def start() -> ColonyProcess:
            rec = self.registry.get(name)
            if rec.state != lc.RUNNING:
                raise WrongState(f"{name} is {rec.state}, not running: start it first (stem start {name})")
            warning = ""
            try:
                config = self.config_for(rec)
            except ConfigError as exc:  # a shell in the colony is how its agent or user mends it: not refused
                config = ColonyConfig()
                warning = f"colony.toml not applied (its env and pass_env are not set): {exc}"
            where = Path(rec.worktree) / cwd if cwd else Path(rec.worktree)
            box = self.sandbox_for(rec)
            # Recorded before it starts, under a pid no process has: a registry that cannot take the record (a full
            # disk) refuses the command before any of it runs (recorded after, a quick `rm` had run when it was
            # refused). A stop meanwhile does not see it; it is in the colony's cgroup, which a stop ends.
            placeholder = random.randrange(PENDING_PIDS, PENDING_PIDS * 2)
            self.registry.add_process(name, placeholder, 0, "exec", argv)
            try:
                init = procs.colony_init(box, rec.netns)  # the host's namespaces: the colony's processes are there
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.registry.remove_process(placeholder, 0)
                raise
            try:
                proc = procs.spawn(
                    argv,
                    netns_name=rec.netns,
                    cwd=where,
                    env=self.env_for(rec, {**config.env, **(env or {})}, box, config.pass_env),
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    init=init,
                    terminal=terminal,
                )
            except BaseException as exc:
                procs.release_init(init)
                with contextlib.suppress(sqlite3.Error):
                    self.registry.remove_process(placeholder, 0)
                if isinstance(exc, FileNotFoundError):
                    raise StemError(f"command not found in {name}: {argv[0]}") from None
                if isinstance(exc, PermissionError):
                    raise StemError(f"command not executable in {name}: {argv[0]}") from None
                raise
            if started is not None:
                started(proc.pid)
            running = ColonyProcess(name, proc, procs.starttime(proc.pid) or 0, init, warning)
            try:
                self.registry.settle_process(placeholder, name, proc.pid, running.starttime, "exec", argv)
            except BaseException:  # unrecorded, a stop could not find it: it does not run (the disk just filled)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                procs.forget_child(proc.pid)
                procs.release_init(init)
                raise
            return running

        return await self._call(name, start)

    def exec_finished(self, running: ColonyProcess) -> None:
        procs.forget_child(running.proc.pid)
        procs.release_init(running.init, self.stop_grace)
        self.registry.remove_process(running.proc.pid, running.starttime)

    # runtime: what a running colony runs lives in its colony host ------------------------------------------

    def host_paths(self, name: str) -> HostPaths:
        return HostPaths(self.layout.colony_dir(name))

    def host_running(self, name: str) -> bool:
        return self.host_paths(name).running()

    def stopped_hosts(self, names: Iterable[str]) -> dict[str, int]:
        """Those of `names` whose host is stopped (SIGSTOP) now, with its pid: they answer nothing until a SIGCONT."""
        found = {name: self.host_paths(name).stopped() for name in names}
        return {name: pid for name, pid in found.items() if pid is not None}

    def silent_hosts(self, names: Iterable[str], after: float) -> list[str]:
        """Those of `names` whose followed host has left a question unanswered for `after` seconds or more: hung
        (stuck in the kernel, a loop that never yields), it takes connections and keys and answers nothing. Asks
        each host that has been quiet whether it is there; call it now and then, on the loop (no I/O)."""
        links = self._links
        return [name for name in names if (link := links.get(name)) is not None and link.unanswered() >= after]

    def host_pids(self, names: Iterable[str]) -> dict[str, int]:
        """The pid of each of `names`' host that runs."""
        found = {name: self.host_paths(name).process() for name in names}
        return {name: got[0] for name, got in found.items() if got is not None}

    def hosted(self) -> set[str]:
        """The colonies whose host runs now."""
        return {rec.name for rec in self.registry.colonies() if self.host_running(rec.name)}

    def any_host_running(self) -> bool:
        """Whether any colony host of the hive runs (stops looking at the first)."""
        return any(self.host_running(rec.name) for rec in self.registry.colonies())

    def _host_env(self) -> dict[str, str]:
        """The host sees this hive as this process does, whatever the environment said."""
        return {
            **os.environ,
            "STEM_HOME": str(self.layout.home),
            "STEM_PREFIX": self.prefix,
            "STEM_POOL": str(self.pool),
            "STEM_CONFIG": str(self.settings.path),
        }

    def _host_env_for(self, rec: ColonyRecord, config: ColonyConfig, revived: bool = False) -> dict[str, str]:
        """The environment the colony's host starts in (`_host_env`), with the values of its `pass_env` as the user
        gave them: a spawn or start keeps them from this process's environment (root-only, beside the colony's
        host files), and a host started again after it died (`revived`, by whichever stem process noticed, from
        any shell) gets those, not what that process happens to have."""
        env = self._host_env()
        kept = self.layout.colony_dir(rec.name) / "passed-env.json"
        if not revived:
            values = {name: os.environ[name] for name in config.pass_env if name in os.environ}
            with contextlib.suppress(OSError):  # a full disk: a revived host has only what its reviver has
                write_atomically(kept, json.dumps(values), 0o600)
            return env
        try:
            values = json.loads(kept.read_text())
        except (OSError, ValueError):
            return env
        if isinstance(values, dict):
            for name in config.pass_env:
                env.pop(name, None)
                value = values.get(name)
                if isinstance(value, str):
                    env[name] = value
        return env

    async def _start_runtime(
        self, rec: ColonyRecord, config: ColonyConfig, launched: bool = False, revived: bool = False
    ) -> None:
        """Start the colony's host (detached: it outlives this process; `launched`: a spawn has started it already;
        `revived`: its last host died) and wait until it has started the services and the agent; StepFailed-worthy
        HostFailed with the reason if it could not."""
        from core.host import launch  # the host machinery (protocol, msgpack) only when a colony starts

        paths = self.host_paths(rec.name)
        if not self.hosts:
            return
        if not launched:
            if paths.running():
                return
            env = await asyncio.to_thread(self._host_env_for, rec, config, revived)
            # Once begun, waited for even if the caller is cancelled (a start cut by Ctrl-C or a hang-up): else the
            # host came up after the caller's stop had found none to stop, and ran on for a colony left failed.
            await _finished_even_if_cancelled(asyncio.to_thread(launch.launch, paths, self.layout.home, rec.name, env))
        if self.attached and rec.name not in self._link_tasks:
            from core.host.client import HostLink

            # Follow it from its first moment: the host starts the colony once asked to (await_start below), so
            # what it says while starting (notices, states) reaches this link.
            link = HostLink(rec.name, paths, self._publish, self._wants_lines)
            self._link_tasks[rec.name] = asyncio.create_task(self._follow_host(rec.name, link), name=f"link-{rec.name}")
            with contextlib.suppress(TimeoutError):
                await wait_for(link.connected.wait(), LINK_WAIT)
        await launch.await_start(paths, rec.name)

    async def _stop_runtime(self, name: str, routes: bool = True) -> None:
        """End what the colony runs: its host stops the agent, the services and the watchers, then exits (and
        removes its preview routes, unless `routes` is false: a batch's stopper removes them all at once)."""
        from core.host import launch

        link = self._links.get(name)
        if link is not None:
            link.stopping = True
        longest = await asyncio.to_thread(self._longest_stop, name)
        await launch.stop(self.host_paths(name), self.stop_grace, routes, longest)

    def _longest_stop(self, name: str) -> float:
        """The longest the colony's services may take to stop (`stop_patience`), for the stopper's patience."""
        try:
            config = self.config_for(self.registry.get(name), policy=False)
        except StemError:  # gone, or its colony.toml broken meanwhile: the hive's own
            return self.stop_grace
        return stop_patience(config, self.stop_grace)

    async def _restart_exited_agent(self, name: str) -> None:
        """`start` on a running colony whose agent exited brings the agent back in its resume form."""
        from core.host.protocol import Connection

        with contextlib.suppress(StemError):
            async with await Connection.open(self.host_paths(name).socket, "script", client="stem start") as conn:
                await conn.restart_agent()

    def _wants_lines(self, colony: str) -> bool:
        wanted = self.log_lines_for
        return wanted is None or wanted(colony)

    def log_lines_changed(self) -> None:
        """What `log_lines_for` says has changed (another colony shown): each host is asked for new log lines only
        where they are wanted."""
        for link in self._links.values():
            link.follow_lines()

    @property
    def attached(self) -> bool:
        return self._follower is not None

    async def attach(
        self, records: Sequence[ColonyRecord] | None = None, rest_after: asyncio.Event | None = None
    ) -> None:
        """Follow the hive from this process (a UI, `stem serve`): a link to the host of every running colony,
        whose screens, states and logs arrive as events; a host that dies is replaced. Any number of processes
        may attach to one hive at once. `records`: the colonies as just read (the UI's first frame lists them),
        so that the links start without reading them again; the first of them is linked first, the others once
        `rest_after` is set (the UI's first frame is drawn; FIRST_LINK_WAIT at most), else once that link has its
        snapshot."""
        self.bind_loop()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError):  # only the main thread may own signals
            loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        await self.reconcile(records, rest_after)
        self._follower = asyncio.create_task(self._follow_registry(), name="follow-hive")
        # Colonies a dead stem process left mid-way (a UI gone while it spawned): finished off the first frame's path.
        finishing = asyncio.create_task(self.finish_interrupted(), name="finish-interrupted")
        self._tasks.add(finishing)
        finishing.add_done_callback(self._tasks.discard)

    async def detach(self) -> None:
        """Stop following: the colonies and their hosts go on running."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        for task in list(self._link_tasks.values()):
            task.cancel()
        if self._link_tasks:
            await asyncio.wait(list(self._link_tasks.values()), timeout=5)
        self._link_tasks.clear()
        self._links.clear()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
        if self._reap_timer is not None:
            self._reap_timer.cancel()
            self._reap_timer = None

    async def stop_all(self) -> list[str]:
        """Stop every running colony (the palette's "Stop all colonies"); the names stopped."""
        names = [
            rec.name
            for rec in await asyncio.to_thread(self.registry.colonies)
            if rec.state in (lc.RUNNING, lc.FAILED) and self.registry.owns("veth", rec.veth)
        ]
        results = await self.stop_many(names)
        return [name for name, result in zip(names, results, strict=True) if not isinstance(result, BaseException)]

    async def _follow_registry(self) -> None:
        """Reconcile whenever any stem process writes the registry (inotify on hive.db and its WAL, polling if
        inotify is unavailable): nothing wakes while nothing changes."""
        from core.hive_watch import HiveWatch

        def fallback(why: str) -> None:
            self._publish(Notice("", "warning", f"following the hive by polling: {why}"))

        orphans = asyncio.create_task(self._finish_orphans(), name="finish-orphans")
        try:
            async with HiveWatch(self.layout.home, on_fallback=fallback) as watch:
                async for _ in watch.changes():
                    try:
                        await self.reconcile()
                    except Exception as exc:  # keep following the registry whatever one pass hit
                        self._publish(Notice("", "error", f"following the hive failed: {describe(exc)}"))
        finally:
            orphans.cancel()

    async def _finish_orphans(self) -> None:
        """A stem process that dies mid-way (a UI killed after ctrl+s, a spawn killed -9) writes nothing more, so
        no registry change tells: every ORPHAN_CHECK s, a colony mid-way whose lock nobody holds is finished off,
        as `attach` does at first."""
        while True:
            await asyncio.sleep(ORPHAN_CHECK)
            try:
                rows = await asyncio.to_thread(self.registry.colonies)
                if any(rec.state in lc.IN_FLIGHT for rec in rows):
                    await self.finish_interrupted()
            except Exception as exc:  # keep looking whatever one pass hit
                self._publish(Notice("", "error", f"finishing an interrupted colony failed: {describe(exc)}"))

    async def reconcile(
        self, fresh: Sequence[ColonyRecord] | None = None, rest_after: asyncio.Event | None = None
    ) -> None:
        """A link for every colony whose host should run; none for the others. Other stem processes (spawn,
        stop, destroy from a shell, another UI) change the registry; this follows them. `fresh`: the registry's
        rows as just read by the caller (see `attach` for `rest_after`)."""
        rows = fresh if fresh is not None else await asyncio.to_thread(self.registry.colonies)
        records = {r.name: r for r in rows}
        seen = {(r.name, r.state, r.stage) for r in records.values()}
        if self._seen is not None and seen != self._seen:
            self._publish(HiveChanged())
        self._seen = seen
        for name, task in list(self._link_tasks.items()):
            rec = records.get(name)
            # A stopping colony's link stays until its host goes: the host says what it ends on its way out.
            if task.done() or rec is None or rec.state not in (lc.RUNNING, lc.STARTING, lc.STOPPING, lc.DESTROYING):
                task.cancel()
                self._link_tasks.pop(name, None)
                self._links.pop(name, None)
        # Given the rows a UI lists (`fresh`, on attaching), the first one listed, the colony it shows first, is
        # linked first: the others wait until the UI has drawn it (`rest_after`), or else until its snapshot is in
        # (FIRST_LINK_WAIT at most), so that at 100 colonies its first frame is not queued behind 99 hellos and
        # snapshots on this loop.
        gate: asyncio.Event | None = None
        for rec in records.values():
            if rec.state in (lc.RUNNING, lc.STARTING) and rec.name not in self._link_tasks:
                if rec.state == lc.STARTING and not self.host_running(rec.name):
                    continue  # its starter launches the host; the next pass links to it
                first = None
                if fresh is not None and gate is None and len(records) > 1:
                    from core.host.client import HostLink

                    first = HostLink(rec.name, self.host_paths(rec.name), self._publish, self._wants_lines)
                follow = self._follow_host(rec.name, first, rec=rec if fresh is not None else None)
                if gate is not None:
                    follow = _after(gate, FIRST_LINK_WAIT, follow)
                elif first is not None:
                    gate = rest_after or first.connected
                task = asyncio.create_task(follow, name=f"link-{rec.name}")
                self._link_tasks[rec.name] = task

    async def _follow_host(self, name: str, first: HostLink | None = None, rec: ColonyRecord | None = None) -> None:
        """Stay linked to the colony's host; when it goes while the colony should run, start a new one. `rec`:
        the colony's row as just read, for the first round."""
        from core.host.client import HostLink

        while True:
            if rec is None:
                rec = await asyncio.to_thread(self.registry.find, name)
            if rec is None or rec.state not in (lc.RUNNING, lc.STARTING):
                return
            if not self.host_running(name):
                if rec.state != lc.RUNNING:
                    return
                await self.revive(name)
                if not self.host_running(name):
                    return
            link = first or HostLink(name, self.host_paths(name), self._publish, self._wants_lines)
            first = rec = None
            self._links[name] = link
            why = await link.run()
            if link.stopping:
                return
            log.info("link to %s ended: %s", name, why)

    async def revive(self, name: str) -> bool:
        """A running colony whose host died (kill -9, a crash): end what the host left behind (the colony's
        processes, by its namespace and process groups), start a new host, the agent in its resume form. True
        if a new host was started here."""

        from core.host import launch

        async def handler() -> bool:
            async with self._holding(name):
                rec = await asyncio.to_thread(self.registry.find, name)
                if rec is None or rec.state != lc.RUNNING or self.host_running(name):
                    return False
                self._publish(Notice(name, "warning", f"{name}: its colony host died; restarting the colony"))
                await asyncio.to_thread(self.registry.add_event, name, "host-died", "its colony host died")
                await asyncio.to_thread(self.log(name).append, "host", "its colony host died; restarting the colony")
                try:
                    config = await asyncio.to_thread(self.config_for, rec, fallback=True)  # the last that held
                    for attempt in range(REVIVE_ATTEMPTS):
                        await asyncio.to_thread(self.end_processes, rec)
                        try:
                            await self._start_runtime(rec, config, revived=True)
                            break
                        except launch.HostGone:
                            if attempt == REVIVE_ATTEMPTS - 1:
                                raise
                except Exception as exc:
                    await self._stop_runtime(name)
                    reason = str(exc) if isinstance(exc, StemError) else describe(exc)
                    await asyncio.to_thread(self._fail_start, rec, "host", reason)
                    self._publish(Notice(name, "error", f"{name} failed while restarting: {reason}"))
                    return False
                return True

        try:
            result: bool = await self.supervisor.call(name, handler)
        except StemError:
            return False
        return result

    async def finish_interrupted(self) -> list[str]:
        """Finish what stem processes that died left colonies in the middle of (a spawn, start, stop or destroy
        killed -9, a UI gone while it spawned; a merge whose target's checkout had not followed yet), as gc would:
        for each colony in such a state whose lock nobody holds. What was done, one line each."""
        from core.gc import finish_interrupted, finish_merges

        def work() -> list[str]:
            done = finish_merges(self)  # a merge killed before the checkout of its target followed it
            for rec in self.registry.colonies():
                if rec.state not in lc.IN_FLIGHT:
                    continue
                with file_lock(self.layout.colony_lock(rec.name), blocking=False) as got:
                    fresh = self.registry.find(rec.name) if got else None
                    try:
                        line = finish_interrupted(self, fresh) if fresh is not None else None
                    except Exception as exc:
                        if not refused_by_disk(exc):
                            raise
                        line = None  # a full disk: the first command with room finishes it, this one goes on
                if line is not None:
                    done.append(line)
                    self._forget_lock(rec.name)
            return done

        lines = await asyncio.to_thread(work)
        for line in lines:
            self._publish(Notice(line.split(":", 1)[0].removeprefix("colony "), "warning", line))
        return lines

    async def revive_dead_hosts(self) -> list[str]:
        """What a short command does on its way: finish what dead stem processes left half done, revive the hosts of
        running colonies that died."""
        await self.finish_interrupted()
        revived = []
        for rec in await asyncio.to_thread(self.registry.colonies):
            if rec.state == lc.RUNNING and not self.host_running(rec.name) and await self.revive(rec.name):
                revived.append(rec.name)
        return revived

    def agent(self, name: str) -> RemoteAgent | None:
        """The colony's agent as its host shows it (screen, keys, paste, resize), while this process follows it."""
        link = self._links.get(name)
        return link.agent if link is not None and link.connected.is_set() else None

    def services(self, name: str) -> dict[str, ServiceView]:
        link = self._links.get(name)
        return dict(link.services) if link is not None else {}

    def link(self, name: str) -> HostLink | None:
        return self._links.get(name)

    async def log_entries(self, name: str) -> list[Entry]:
        """The colony's log, its last 5,000 entries and each source's last lines before them (`recent`): from its
        host when followed (numbered as the lines it pushes are, so none is shown twice or skipped), else the file
        its host writes (read off the loop: it can hold megabytes)."""
        # Written by this process: a spawn or start in progress here, or done here (its lines stop at the spawn).
        entries = list(self._logs[name].tail(5000)) if name in self._logs else []
        link = self._links.get(name)
        if link is not None:
            history = await link.log_history(5000)
            if history is not None:
                last = history[-1].seq if history else 0
                found = history + [e for e in link.log if e.seq > last]
                # A host asked just as it starts may not have read the spawn's lines yet: they are here.
                have = {e.seq for e in found}
                early = [e for e in entries if e.seq not in have]
                return recent(sorted(early + found, key=_SEQ) if early else found, 5000)
        if entries:
            return entries

        def from_disk() -> list[Entry]:
            disk = ColonyLog(self.layout.colony_log(name))
            disk.load()
            return disk.tail(5000)

        entries = await asyncio.to_thread(from_disk)
        link = self._links.get(name)
        if link is not None:
            last = entries[-1].seq if entries else 0
            entries += [e for e in link.log if e.seq > last]
        return recent(entries, 5000)

    async def changes(self, name: str) -> tuple[FileChange, ...]:
        """The colony's changed files against its base: live from its host's watcher, else computed now."""
        from core.changes import changed_files
        from core.merge import work_base

        link = self._links.get(name)
        if link is not None and link.files is not None:
            return link.files
        rec = await asyncio.to_thread(self.registry.get, name)
        if not Path(rec.worktree).exists():
            return ()
        return await asyncio.to_thread(lambda: changed_files(Path(rec.worktree), work_base(rec)))

    async def diff(self, name: str, path: str | None = None) -> str:
        """Unified diff of one file, or the whole colony, against its base (untracked files included)."""
        from core.changes import diff_text
        from core.merge import work_base

        rec = await asyncio.to_thread(self.registry.get, name)
        return await asyncio.to_thread(lambda: diff_text(Path(rec.worktree), work_base(rec), path))

    async def restart_service(self, name: str, service: str) -> None:
        """Stop and start one service of a running colony (its host does it)."""
        from core.host.protocol import Connection, HostUnreachable

        try:
            async with await Connection.open(self.host_paths(name).socket, "script", client="stem") as conn:
                await conn.restart_service(service)
        except HostUnreachable:
            raise WrongState(f"{name} has no running services: is the colony running?") from None

    def _on_sigchld(self) -> None:
        # Coalesce a burst of SIGCHLDs into one /proc scan, off the loop.
        if self._reap_timer is None:
            self._reap_timer = asyncio.get_running_loop().call_later(0.05, self._reap)

    def _reap(self) -> None:
        self._reap_timer = None
        task = asyncio.create_task(asyncio.to_thread(procs.reap_orphans))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # gc ---------------------------------------------------------------------------------------------------

    async def gc(self) -> GcReport:
        """Reconcile the registry with the kernel and the disk: remove what a crash left behind."""
        self.bind_loop()
        from core.gc import collect

        async with self._freeing():
            return await asyncio.to_thread(collect, self)

    # getting the work back: diff, commit, merge, sync against the colony's target (core/merge.py) -------------

    async def target_diff(self, name: str, into: str | None = None, *, text: bool = True) -> ColonyDiff:
        """The colony's work against its target branch (or `into`), committed and uncommitted."""
        from core.merge import colony_diff

        rec = await asyncio.to_thread(self.registry.get, name)
        return await asyncio.to_thread(colony_diff, rec, into, text=text)

    async def checkout_problem(self, name: str) -> str:
        """Why the checkout of the colony's target would refuse its merge now ("" if nothing would), off the loop."""
        from core.merge import checkout_problem

        rec = await asyncio.to_thread(self.registry.get, name)
        return await read_off_loop(lambda: checkout_problem(rec), "merge-check")

    async def commit(self, name: str, message: str) -> CommitResult:
        """Commit the colony's uncommitted work on its branch, under its lock."""
        from core.merge import commit_colony

        return await self._call(name, lambda: commit_colony(self.registry.get(name), message))

    async def merge(
        self, name: str, *, into: str | None = None, squash: bool = False, message: str | None = None
    ) -> MergeResult:
        """Merge the colony's branch into its target (or `into`) under its lock; only the target's checkout moves."""
        from core.merge import merge_colony

        def run() -> MergeResult:
            return merge_colony(self.registry.get(name), self.layout.locks, into=into, squash=squash, message=message)

        return await self._call(name, run)

    async def sync(self, name: str, into: str | None = None) -> SyncResult:
        """Merge the target's new commits into the colony's worktree under its lock; conflicts stay there."""
        from core.merge import sync_colony

        return await self._call(name, lambda: sync_colony(self.registry.get(name), into))

    async def merge_statuses(self, names: list[str] | None = None) -> list[MergeStatus]:
        """Ahead/behind and "merges clean" / "conflicts" of colonies (all, or `names`), computed off the loop."""
        from core.merge import merge_statuses

        def run() -> list[MergeStatus]:
            records = self.registry.colonies()
            return merge_statuses([r for r in records if names is None or r.name in names])

        return await read_off_loop(run, "merge-status")  # read-only: a quitting UI does not wait for it

    async def overlaps(self) -> OverlapReport:
        """Colonies that change the same files, and the same lines, computed off the loop."""
        from core.overlap import find_overlaps, overlap_work

        return await read_off_loop(lambda: find_overlaps(overlap_work(self.registry.colonies())), "overlaps")

    async def close(self) -> None:
        if self._follower is not None:
            await self.detach()
        await self.supervisor.close()
        self.registry.close()


__all__ = ["DEFAULT_POOL", "DestroyReport", "Hive", "NoSuchColony"]


if TYPE_CHECKING:
    from core.api import HiveAPI

    def _implements(hive: Hive) -> HiveAPI:
        return hive  # mypy checks that the Hive is everything the UI and the CLI may ask of it


def _put_back(emptied: dict[Path, bytes]) -> None:
    """Log files emptied for room that did not help, as they were, with what was written to them meanwhile after."""
    for path, data in emptied.items():
        partial = path.with_name(path.name + ".restore")
        try:
            since = path.read_bytes()
            partial.write_bytes(data + since)
            partial.replace(path)  # the writer notices the new file by its inode
        except OSError:
            partial.unlink(missing_ok=True)


def _uncommitted_config(root: Path, base: str) -> str | None:
    """What to tell a user whose checkout has a colony.toml the colony will not get (it gets the base commit's):
    one not committed at all, or with edits not committed. None when they are the same, or there is none."""
    path = root / "colony.toml"
    try:
        text = path.read_bytes()
    except OSError:
        return None
    _commit, committed = worktree.resolve_with_file(root, base, "colony.toml")
    if committed == text:
        return None
    if base != "HEAD":
        # The checkout may be at another commit than the base: its file is then not "edits", just another version.
        _head, at_head = worktree.resolve_with_file(root, "HEAD", "colony.toml")
        if at_head == text:
            if committed is None:
                return f"{path} is not in {base}: the colony has no colony.toml (the checkout is at another commit)"
            return f"{path} differs from {base}'s (the checkout is at another commit): the colony gets {base}'s"
    if committed is None:
        return f"{path} is not committed at {base}: the colony has no colony.toml (commit it, then spawn again)"
    return f"{path} has edits not committed at {base}: the colony gets the committed one"
