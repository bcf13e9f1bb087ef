"""What runs in a colony, inside its colony host: its services, its agent, its watchers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from core import cgroups, procs
from core import lifecycle as lc
from core.agent import AgentSession, choose_argv
from core.aio import wait_for
from core.changes import ChangeWatcher
from core.colony_log import ColonyLog
from core.config import ColonyConfig, colony_config_for
from core.errors import ConfigError, StemError, failure_line
from core.events import Event, LogLine, Notice, ServiceState
from core.inotify import Changes, FileWatcher
from core.locations import HiveLayout
from core.merge import target_ref_files, work_base
from core.peering import PeerFollower, Peers
from core.preview import PreviewError, PreviewRoutes, listen_port
from core.registry import ColonyRecord, Registry
from core.sandbox import ColonyInit, Sandbox
from core.services import ServiceChanges, ServiceHost, ServiceSet, Timing
from core.settings import Settings, resolve_agent

log = logging.getLogger("stem.runtime")
WATCH_AFTER = 0.3  # seconds from a colony's start until its worktree watchers start (see `_watch`)
# An agent's resume form (`claude --continue`) that fails this soon found nothing to resume: the plain command starts.
RESUME_GRACE = 10.0


def _write_now(write: Callable[[], object]) -> None:
    write()


class ColonyRuntime:
    """What one running colony runs, inside its colony host (core.host.server): services, agent, watchers."""

    def __init__(
        self,
        rec: ColonyRecord,
        config: ColonyConfig,
        *,
        env: dict[str, str],
        colony_log: ColonyLog,
        registry: Registry,
        emit: Callable[[Event], None],
        on_config_change: Callable[[], Awaitable[None]] | None = None,
        timing: Timing | None = None,
        settings: Settings,
        resume: bool = False,
        defer: Callable[[Callable[[], object]], None] | None = None,
        home: Path | None = None,
        sandbox: Sandbox | None = None,
        on_init_lost: Callable[[str], None] | None = None,
        on_agent: Callable[[AgentSession], None] | None = None,
    ) -> None:
        self.rec = rec
        self.sandbox = sandbox
        # The colony's PID, mount and IPC namespaces, which all its processes join; started with the runtime.
        self.init = ColonyInit(sandbox) if sandbox is not None else None
        self._on_init_lost = on_init_lost  # told why, should the init end before the runtime stops
        self._watching_init = False
        # Registry writes made from the loop (process rows) go through `defer` (the host's one ordered writer
        # thread) so SQLite never blocks the loop; without it they are made at once.
        self._defer: Callable[[Callable[[], object]], None] = defer or _write_now
        self.settings = settings
        self.env = env
        self.resume = resume
        self.agent: AgentSession | None = None
        self._resume_check: asyncio.Future[None] | None = None  # see `_resumed`
        self._on_agent = on_agent  # told of an agent session started anew by the runtime itself (`_resumed`)
        self._stopping = False
        self._resuming = False
        self.agent_size = (120, 40)  # what the agent's PTY starts at: the size a client asked for, if any
        self.config = config
        self._emit = emit
        self._registry = registry
        # With the hive's home (a colony host), ready services get a route through the hive's preview port.
        self.preview: PreviewRoutes | None = None
        if home is not None:
            try:
                self.preview = PreviewRoutes(home, rec.name, rec.ip, listen_port(settings, home), emit, colony_log)
            except PreviewError as exc:
                emit(Notice(rec.name, "warning", f"{rec.name}: no preview URLs: {exc}"))
        host = ServiceHost(
            colony=rec.name,
            netns=rec.netns,
            worktree=Path(rec.worktree),
            ip=rec.ip,
            log=colony_log,
            emit=self._relay,
            record_process=lambda pid, start, kind, argv: self._defer(
                lambda: registry.add_process(rec.name, pid, start, kind, argv)
            ),
            forget_process=lambda pid, start: self._defer(lambda: registry.remove_process(pid, start)),
            timing=timing or Timing(),
            may_restart=self._may_restart,
            init=self.init,
        )
        self.services = ServiceSet(config, host, env)
        # The hive routes config reloads through the colony's actor (one writer per colony).
        self._on_config_change = on_config_change or self._reload_ignoring_result
        self.changes: ChangeWatcher | None = None
        self._home = home
        self.peer_follower: PeerFollower | None = None  # refreshes the snapshots of this colony that follow it
        self._watch_stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        # OOM kills and refused forks in the colony's cgroup: into the log, to the clients, into the registry.
        self._log = colony_log
        self._limits = cgroups.LimitWatch(rec.netns, self._limit_held, self._owner_of)
        self._reports: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start services in dependency waves (raises StepFailed if one never gets ready), then the agent; the
        watchers start after it returns."""
        # The peers' table is looked at while the colony starts (its first registry transaction: a few ms), for
        # the follower made at the end.
        peers = (
            asyncio.ensure_future(asyncio.to_thread(Peers, self._registry, HiveLayout(self._home), self.settings))
            if self._home is not None
            else None
        )
        try:
            await self._start(peers)
        finally:
            if peers is not None and not peers.done():
                await asyncio.wait([peers])  # its thread runs on: never left with an exception nobody took

    async def _start(self, peers: asyncio.Future[Peers] | None) -> None:
        if self.init is not None:
            # Published: `stem exec` from any shell joins these namespaces too.
            await asyncio.to_thread(procs.start_init, self.init, self.rec.netns, publish=True)
            if self._on_init_lost is not None:
                asyncio.get_running_loop().add_reader(self.init.pidfd, self._init_lost)
                self._watching_init = True
        self._limits.start()
        await self.services.start_all()
        # The agent does not wait for the preview routes (Caddy's work, in the preview worker's thread): it
        # starts while they are added (its spawn in a thread), and the start returns with both in place.
        agent = asyncio.ensure_future(self.start_agent(self.resume))
        try:
            if self.preview is not None:
                await self.preview.settled()
        finally:
            await agent
        # The watchers come after: the change watcher's first scan of the worktree (git processes) would take the
        # CPU the services' own start needs on a small machine, and nothing of the start waits for it.
        self._watch_task = asyncio.create_task(self._watch(peers), name=f"watch-{self.rec.name}")

    async def _watch(self, peers: asyncio.Future[Peers] | None) -> None:
        """The change watcher, then what follows its events until `stop`: the peers' snapshots of this colony and
        colony.toml (one inotify instance per colony, against a per-user budget of 128)."""
        # Not at once: the command that started the colony is still exiting (and its agent starting), and nothing
        # needs the worktree's first scan within a blink. A stop meanwhile ends it here.
        with contextlib.suppress(TimeoutError):
            await wait_for(self._watch_stop.wait(), WATCH_AFTER)
        if self._watch_stop.is_set():
            return
        await self._start_change_watcher()
        if self._watch_stop.is_set():
            return
        if self.changes is not None and peers is not None:
            self.peer_follower = PeerFollower(await peers, self.rec.name, self.changes, self._emit)
        await self._watch_config(self.changes)

    async def _start_change_watcher(self) -> None:
        rec = self.rec
        watcher = ChangeWatcher(
            rec.name,
            Path(rec.worktree),
            rec.base_commit,
            self._emit,
            base=partial(work_base, rec),
            refs=partial(target_ref_files, rec),
        )
        try:
            await watcher.start()
        except StemError as exc:  # the colony works without it; say why the Changes panel stays empty
            self._emit(Notice(self.rec.name, "warning", f"{self.rec.name}: not watching file changes: {exc}"))
        else:
            if self._watch_stop.is_set():  # stopped while the watcher was starting
                await watcher.stop()
                return
            self.changes = watcher

    async def start_agent(self, resume: bool) -> None:
        """The agent from --agent, [colony] agent or the default preset, in a PTY inside the colony. A missing
        program gets the user's shell in its place, with a notice; `resume` uses the preset's resume form."""
        rec = self.rec
        spec = rec.agent or self.config.agent or None
        resolved = resolve_agent(spec, self.settings, rec.task or None)
        argv, notice = choose_argv(resolved, resume)
        session = AgentSession(
            argv,
            netns_name=rec.netns,
            cwd=Path(rec.worktree),
            env={**self.env, **self.config.env},
            colony=rec.name,
            emit=self._emit,
            attention=resolved.preset.attention if resolved.preset else (),
            record_process=lambda pid, start: self._defer(
                lambda: self._registry.add_process(rec.name, pid, start, "agent", argv)
            ),
            forget_process=lambda pid, start: self._defer(lambda: self._registry.remove_process(pid, start)),
            notice=notice,
            columns=self.agent_size[0],
            lines=self.agent_size[1],
            init=self.init,
        )
        await session.launch()
        self.agent = session
        if notice:  # in the colony's log too: `stem logs` and a spawn from a shell say it
            await self._say("agent", notice, "warning")
        await asyncio.to_thread(self._registry.add_event, rec.name, "agent-started", shlex.join(argv))
        resumed = resume and resolved.available and resolved.resume_argv is not None
        if rec.task and not resolved.task_passed and not resumed:
            # The preset cannot take the task on its command line: type it in, as a person would.
            session.paste(rec.task)
            session.write(b"\r")
        if resumed:
            self._resume_check = asyncio.ensure_future(self._resumed(session, argv))

    async def _resumed(self, session: AgentSession, argv: list[str]) -> None:
        """The agent's resume form failing at once (`claude --continue` with no conversation: "No conversation found
        to continue", exit 1) gets the preset's plain command in its place, with a notice, so `stem start` and a
        revived host never leave a colony with an agent that exited only because it had nothing to resume."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            code = await wait_for(session.wait(), RESUME_GRACE)
        except TimeoutError:
            return
        if self.agent is not session or self._stopping or code is None or code <= 0:
            return  # stopped or restarted meanwhile, killed by a signal, or ended well
        name = self.rec.name
        said = f"{shlex.join(argv)} ended after {loop.time() - began:.1f}s (exit {code}): nothing to resume"
        self._emit(Notice(name, "warning", f"{name}: {said}, started the agent anew"))
        self._resuming = True
        try:
            await self.restart_agent(resume=False)
            if self.agent is not None and self._on_agent is not None:
                self._on_agent(self.agent)
        except Exception as exc:  # nobody awaits this task: say it where the colony's problems are said
            log.exception("starting the agent of %s anew failed", name)
            self._emit(Notice(name, "error", f"{name}: the agent could not be started anew: {failure_line(exc)}"))
        finally:
            self._resuming = False

    async def restart_agent(self, resume: bool = True) -> None:
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None
        await self.start_agent(resume)

    async def stop(self, grace: float | None = None, routes: bool = True) -> None:
        """End everything the colony runs. `routes`: remove its preview routes too (false: whoever stops many
        colonies removes all their routes in one change of Caddy's config instead of one each)."""
        self._stopping = True  # an agent that ends now was stopped (see `_resumed`)
        check = self._resume_check
        if check is not None and not check.done():
            if self._resuming:  # the agent is being started anew: it is stopped with the rest once it is
                await asyncio.wait([check])
            else:
                check.cancel()
        self._limits.close()  # what stopping kills is no limit held
        await asyncio.to_thread(self._end_execs)
        # The agent, the services, the watchers and the preview routes go side by side: a stop takes as long as the
        # slowest of them (an agent that ignores SIGTERM waits out its grace), not their sum.
        ended = await asyncio.gather(
            self._stop_agent(),
            self._stop_watchers(),
            self.services.stop_all(grace),
            self.preview.close(routes=routes) if self.preview is not None else asyncio.sleep(0),
            return_exceptions=True,
        )
        self._unwatch_init()
        if self.init is not None:
            # What is left (`stem exec`s, orphans) gets SIGTERM, then the init goes and the kernel kills the rest.
            await asyncio.to_thread(procs.release_init, self.init, 5.0 if grace is None else grace)
        for failure in ended:
            if isinstance(failure, BaseException):
                raise failure

    def _end_execs(self) -> None:
        """SIGTERM to every `stem exec` running in the colony, as its services get theirs, not after them: a server
        that waits for its clients to leave (postgres on SIGTERM) then ends in time, not killed 5 s later."""
        with contextlib.suppress(sqlite3.Error):  # a registry that cannot be read: release_init ends them later
            for proc in self._registry.processes(self.rec.name):
                if proc.kind == "exec" and procs.alive(proc.pid, proc.starttime):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGTERM)  # its own session: its group is its pid

    async def _stop_agent(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None

    async def _stop_watchers(self) -> None:
        if self.peer_follower is not None:
            await self.peer_follower.close()
            self.peer_follower = None
        if self.changes is not None:
            await self.changes.stop()
            self.changes = None
        self._watch_stop.set()
        if self._watch_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wait_for(self._watch_task, 5)

    def _unwatch_init(self) -> None:
        if self._watching_init and self.init is not None:
            asyncio.get_running_loop().remove_reader(self.init.pidfd)
            self._watching_init = False

    def _init_lost(self) -> None:
        """The init ended under a running colony (killed by root on the host): the kernel ended every process of
        the colony with it, and none can start again in its namespaces."""
        self._unwatch_init()
        why = "its init (pid 1 of its namespaces) ended, and every process of the colony with it"
        task = asyncio.get_running_loop().create_task(self._report_init_lost(why))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _say(self, source: str, text: str, level: str) -> None:
        """A line in the colony's log (every client's Logs tab, `stem logs`) and a notice of `level` to every
        client."""
        name = self.rec.name
        entry = await asyncio.to_thread(self._log.append, source, text)
        self._emit(LogLine(name, entry.seq, entry.at, source, text))
        self._emit(Notice(name, level, f"{name}: {text}"))

    async def _report_init_lost(self, why: str) -> None:
        await self._say("sandbox", why, "error")
        if self._on_init_lost is not None:
            self._on_init_lost(why)

    def _relay(self, event: Event) -> None:
        """The services' events, on to the host; a service's state also adds or removes its preview route."""
        self._emit(event)
        if self.preview is not None and isinstance(event, ServiceState):
            runner = self.services.services.get(event.service)
            port = runner.spec.port if runner is not None and runner.spec.preview else None
            self.preview.service_state(event.service, event.state, port)

    async def _may_restart(self, was_ready: bool) -> bool:
        """Whether a service that ended is restarted (by its restart policy): while the colony runs, and while it
        starts if the service had been ready (one without a readiness check crashing while another service of the
        colony still gets ready); one that never got ready while the colony starts fails the start instead."""
        rec = await asyncio.to_thread(self._registry.find, self.rec.name)
        if rec is None:
            return False
        return rec.state == lc.ColonyState.RUNNING or (rec.state == lc.ColonyState.STARTING and was_ready)

    async def _reload_ignoring_result(self) -> None:
        await self.reload_config()

    async def restart_service(self, service: str) -> None:
        await self.services.restart(service)

    async def reload_config(self) -> ServiceChanges | None:
        """Apply the worktree's colony.toml: restart only what changed; a bad file keeps what runs."""
        name = self.rec.name
        try:
            kept = HiveLayout(self._home).colony_policy(name) if self._home is not None else None
            config, note = await asyncio.to_thread(
                colony_config_for, Path(self.rec.worktree), self.rec.base_commit, self.rec.target, kept
            )
        except ConfigError as exc:
            await self._say("config!", f"colony.toml not applied, services kept: {exc}", "error")
            await asyncio.to_thread(self._registry.add_event, name, "config-error", str(exc))
            return None
        if self._stopping:
            # A stop began while the file was read: what it ends must not be started again behind it (a service an
            # edit added would hold the stop for its ready timeout).
            return None
        try:
            changes = await self.services.apply(config)
        except ConfigError as exc:
            await self._say("config!", f"colony.toml not applied, services kept: {exc}", "error")
            return None
        if note:
            await self._say("config!", note, "warning")
        before, self.config = self.config, config
        if config.limits != before.limits and not await self._apply_limits(config, before):
            # What is in force is compared with the next edit: the same file saved again tries again.
            self.config = dataclasses.replace(config, limits=before.limits)
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("restarted", changes.restarted),
                ("started", changes.started),
                ("stopped", changes.stopped),
                ("not ready", changes.not_ready),
            )
            if names
        ]
        if parts:
            said = f"colony.toml changed: {'; '.join(parts)}"
            await self._say("config", said, "warning" if changes.not_ready else "info")
            await asyncio.to_thread(self._registry.add_event, name, "config", f"{name}: {said}")
        return changes

    async def _apply_limits(self, config: ColonyConfig, before: ColonyConfig) -> bool:
        """colony.toml's [limits] changed: the cgroup holds the new ones at once, nothing restarts. Either way a
        line in the colony's log: a refused edit read nowhere else (a notice to no UI) left the user believing it
        held."""
        name = self.rec.name
        limits = config.limits.over(self.settings.limits)
        try:
            await asyncio.to_thread(cgroups.apply, self.rec.netns, limits)
        except StemError as exc:
            kept = cgroups.describe(before.limits.over(self.settings.limits))
            said = f"colony.toml's [limits] not applied, the limits in force stay ({kept}): {exc}"
            await self._say("limits!", said, "error")
            await asyncio.to_thread(self._registry.add_event, name, "config-error", said)
            return False
        said = f"limits now {cgroups.describe(limits)}"
        await self._say("limits", said, "info")
        await asyncio.to_thread(self._registry.add_event, name, "config", f"{name}: {said}")
        return True

    def _owner_of(self, pid: int) -> str | None:
        """The service ("web") or "the agent" whose process `pid` is: how a limit event names a victim."""
        for service, runner in self.services.services.items():
            if runner.last_pid == pid:  # also once reaped: an OOM kill is often reaped before the kernel's log is read
                return service
        if self.agent is not None and self.agent.pid == pid:
            return "the agent"
        return None

    def _limit_held(self, event: cgroups.LimitEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._report_limit(event))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report_limit(self, event: cgroups.LimitEvent) -> None:
        """The kernel held a limit ("web killed: out of memory (256 MiB)"): in the colony's log, to every client
        (an error notice: the UI shows it and keeps it in Info), and in the registry (`stem ls --json`)."""
        name = self.rec.name
        await self._say("limits", event.message, "error")
        self._defer(lambda: self._registry.add_event(name, event.kind, event.message))

    async def _watch_config(self, changes: ChangeWatcher | None) -> None:
        """Reload colony.toml whenever it changes, until `stop`: from the events of the colony's change watcher, or,
        when that could not start, from a watcher of the worktree's top directory of its own."""
        own: FileWatcher | None = None
        unsubscribe: Callable[[], None] | None = None
        stopping = asyncio.ensure_future(self._watch_stop.wait())
        changed = asyncio.Event()
        target = ""

        def on_changes(batch: Changes) -> None:
            # An overflow may have swallowed the event: reloading an unchanged file restarts nothing.
            if batch.overflow or target in batch.paths:
                changed.set()
                self.services.supersede()  # a reload still waiting for services an edit added to get ready ends

        try:
            if changes is not None:
                target = os.path.join(changes.root, "colony.toml")
                unsubscribe = changes.subscribe(on_changes)
            else:
                worktree = await asyncio.to_thread(os.path.realpath, self.rec.worktree)
                target = os.path.join(worktree, "colony.toml")
                own = FileWatcher(quiet=0.2)
                await own.watch_dir(worktree, names=["colony.toml"])
                unsubscribe = own.subscribe(on_changes)
            # An edit made since the start read the file (while the watchers started) has no event here: one look
            # now, which restarts nothing if the file is as the start read it.
            changed.set()
            while True:
                waiting = asyncio.ensure_future(changed.wait())
                await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
                if stopping.done():
                    waiting.cancel()
                    return
                changed.clear()  # edits made while a reload runs bring one more reload
                try:
                    await self._on_config_change()
                except Exception:  # one failed reload must not end the watching
                    log.exception("reloading %s failed", target)
        except Exception:
            log.exception("watching %s/colony.toml failed", self.rec.worktree)
        finally:
            stopping.cancel()
            if unsubscribe is not None:
                unsubscribe()
            if own is not None:
                await own.close()
