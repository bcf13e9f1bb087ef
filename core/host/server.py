"""The colony host: one detached process per running colony that owns everything the colony runs.

It holds the agent's PTY and screen, the services and their supervision, the watchers and the log ring; it
writes the colony's runtime states to the registry, in order, from one writer thread; and it serves any number
of clients (UIs, `stem attach`, `stem logs -f`, scripts) on `host.sock` in the colony's folder. It outlives the
stem process that started it: its own session, no terminal, output in `host.log`. `host.lock` is held for its
whole life (the kernel lets go when it dies, so anyone can tell at once whether it still runs) and `host.pid`
says which process it is.

Run as `python3 -m core.host HOME NAME`; `core.host.launch` starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import io
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import cgroups, pids, procs, sandbox
from core.aio import wait_for
from core.changes import diff_text
from core.colony_env import colony_env
from core.colony_log import ColonyLog, Entry, trouble_message
from core.config import ColonyConfig, colony_config_for, stop_patience
from core.errors import StemError, failure_line, refused_by_disk
from core.events import (
    AgentActivity,
    ChangesUpdated,
    Event,
    FileChange,
    LogLine,
    Notice,
    ScreenChanged,
    ServiceState,
)
from core.host import protocol as p
from core.host.paths import STARTER_ENV, HostPaths, take_ready_fd
from core.merge import work_base

if TYPE_CHECKING:
    from core.agent import AgentSession
    from core.hive import Hive
from core.locations import HiveLayout
from core.locks import hold
from core.privileges import become_subreaper
from core.registry import ColonyRecord, Registry
from core.runtime import ColonyRuntime
from core.sandbox import Sandbox
from core.screen_queries import Palette
from core.settings import Settings, load_settings

log = logging.getLogger("stem.host")

# A client whose socket has this much unsent is slow (an SSH link): its screen rows are merged until it drains.
SLOW_CLIENT = 256 << 10
LOG_PAGE = 5000
START_HOLD = 2.0  # seconds a new host waits for its starter's AwaitStart before it starts the colony
GUARD_INTERVAL = 10.0
GUARD_REGISTRY_EVERY = 6  # the registry row is looked for once a minute
UNWRITTEN_KEPT = 1000  # runtime writes kept while the disk refuses them (later ones of a state say the same)
STOP_REPORT_AFTER = 8.0  # seconds past its grace a stop runs before host.log gets what it waits on


class _Deferred(Exception):
    """A request answered later, not by its handler."""


class Client:
    """One connection: what it subscribed to, and screen rows waiting for it to drain."""

    def __init__(self, writer: asyncio.StreamWriter, kind: str) -> None:
        self.writer = writer
        self.kind = kind
        self.streams: frozenset[str] = frozenset()
        self.pending_rows: set[int] = set()
        self.pending_clipboard: list[str] = []  # the agent's OSC 52 writes, sent with the next rows
        self.pending_screen = False  # a change to send even with no row in it (modes, the screen's version)
        self.flushing = False
        # While its socket is backed up, log lines are not queued for it (a service's flood would grow the host
        # without bound): it gets them from the log's ring once it drains, after this seq.
        self.log_behind: int | None = None
        # The agent's size this client shows it at (its last Resize); the agent takes the size of the client last
        # used (a Resize, a key, a paste), as tmux's windows do, and the next one's when that client leaves.
        self.size: tuple[int, int] | None = None
        self.used = 0

    def send(self, msg: p.Message) -> None:
        if not self.writer.is_closing():
            p.write_message(self.writer, msg)

    def wants(self, stream: str) -> bool:
        """Whether it subscribed to `stream` (log lines go to `log-live` subscribers too)."""
        return stream in self.streams or (stream == "logs" and "log-live" in self.streams)

    @property
    def slow(self) -> bool:
        transport = self.writer.transport
        return transport is not None and transport.get_write_buffer_size() > SLOW_CLIENT


class ColonyHost:
    """Runs one colony's runtime and serves it to clients."""

    def __init__(self, layout: HiveLayout, name: str, ready_fd: int | None = None) -> None:
        self.layout = layout
        self.name = name
        self.ready_fd = ready_fd
        self.paths = HostPaths(layout.colony_dir(name))
        self.registry = Registry(layout.registry, waits_for_stopped=True)  # it owes its writes: see `_write`
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")  # one ordered writer
        self._unwritten: deque[Callable[[], object]] = deque(maxlen=UNWRITTEN_KEPT)  # see `_write`
        self.colony_log = ColonyLog(layout.colony_log(name))
        loop = asyncio.get_running_loop()

        def trouble(why: str | None) -> None:  # from whichever thread appended
            loop.call_soon_threadsafe(self._log_trouble, why)

        self.colony_log.on_trouble = trouble
        self.runtime: ColonyRuntime | None = None
        self.clients: set[Client] = set()
        self.started: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # "" or why it failed
        self.done = asyncio.Event()
        self._go = asyncio.Event()  # set by the first AwaitStart
        self.stop_grace = 5.0
        self.stop_routes = True  # remove the preview routes on the way out (a batch's stopper may take them)
        self.services: dict[str, p.ServiceInfo] = {}
        self.files: tuple[FileChange, ...] = ()
        self.agent = p.AgentInfo("starting")
        self._tasks: set[asyncio.Task[object]] = set()
        self._hive: Hive | None = None
        self._stop_waiters: list[tuple[Client, int]] = []
        self._start_waiters: list[tuple[Client, int]] = []
        self.size: tuple[int, int] | None = None  # the agent's size: that of the client used last (`_used`)
        self._uses = 0
        self._early: list[p.Keys | p.Paste] = []  # input that arrived before the agent started
        self.palette: Palette | None = None  # the colours the last client to say so shows the agent in

    # ---------------------------------------------------------------------------------------------- life

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._request_stop, f"signal {signal.Signals(sig).name}")
        loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()  # ours: we hold host.lock, so whoever made it is gone
        server = await p.listen(self.paths.socket, self._serve_client)
        if self.ready_fd is not None:
            os.write(self.ready_fd, b"1")  # the launcher waits for this: from now on clients can connect
            os.close(self.ready_fd)
            self.ready_fd = None
        guard = asyncio.create_task(self._guard(), name="guard")
        try:
            # The colony starts when its starter asks (AwaitStart): by then the starter's UI, if any, has linked
            # and sees every notice and state of the start. A starter that never asks does not hold it long, unless
            # it started this host while it still makes the colony (a spawn: STARTER_ENV): then the host waits for
            # as long as that process lives, and exits without starting anything if it dies first.
            # The init, services and agent each join the colony's cgroup: quick while `migrations_kept_fast` lasts
            # (from the host's first moment, so that its first, slow turn is over by the time the init is forked).
            with cgroups.migrations_kept_fast():
                warming = asyncio.ensure_future(asyncio.to_thread(self._warm_up))
                held: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(self._go.wait()),
                    asyncio.ensure_future(self.done.wait()),
                ]
                starter = _watch_starter()
                if starter is not None:
                    held.append(starter)
                await asyncio.wait(
                    held, timeout=None if starter is not None else START_HOLD, return_when=asyncio.FIRST_COMPLETED
                )
                for waiting in held:
                    waiting.cancel()
                if not self._go.is_set() and starter is not None and not self.done.is_set():
                    self._request_stop("the process that was making its colony went away before starting it")
                await warming
                if not self.done.is_set():
                    with cgroups.migrations_kept_fast():  # again: the colony may have taken long to make
                        await self._start()
            await self.done.wait()
        finally:
            guard.cancel()
            await self._stop_runtime()
            for client, request_id in self._stop_waiters:
                client.send(p.Reply(request_id))
            for client in list(self.clients):
                client.send(p.Bye(f"the colony host of {self.name} stopped"))
                with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                    await wait_for(client.writer.drain(), 2)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    client.writer.close()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()
            # Through the ordered writer, after what it still holds: never a state written over the cleared rows.
            await asyncio.wrap_future(self.writer.submit(self._write_runtime_cleared))
            self.writer.shutdown(wait=True)
            self.registry.close()
        return 0

    async def _start(self) -> None:
        try:
            rec, config, settings, resume, box = await asyncio.to_thread(self._read_colony)
            # The states a host before this one wrote of services it ran and this one will not (taken out of
            # colony.toml meanwhile) go, through the ordered writer, before this host's first state: that host was
            # killed (kill -9, a stop that outlasted its stopper's patience) and never cleared them, and `stem ls`
            # went on listing such a service as it last was ('ready') with no process behind it. The others are
            # written over as this host starts them.
            names = frozenset(config.services)
            self._defer(lambda: self._forget_services_but(names))
            runtime = ColonyRuntime(
                rec,
                config,
                env=colony_env(rec, sandbox=box, pass_env=config.pass_env),
                sandbox=box,
                colony_log=self.colony_log,
                registry=self.registry,
                emit=self._on_event,
                settings=settings,
                resume=resume,
                defer=self._defer,
                on_config_change=self._config_changed,
                home=self.layout.home,  # ready services get a route through the hive's preview port
                on_init_lost=self._request_stop,
                on_agent=self._follow_agent,
            )
            self.runtime = runtime
            if self.size is not None:
                runtime.agent_size = self.size
            self.services = {name: p.ServiceInfo(name, "starting", spec.port) for name, spec in config.services.items()}
            await runtime.start()
        except Exception as exc:
            reason = failure_line(exc)
            log.warning("start of %s failed: %s", self.name, reason)
            self._answer_start(reason)
            self._request_stop("its start failed")
            return
        if runtime.agent is not None:
            self._tap(runtime.agent)
            if self.size is not None and self.size != (runtime.agent.screen.columns, runtime.agent.screen.lines):
                runtime.agent.resize(*self.size)
            for early in self._early:
                if isinstance(early, p.Keys):
                    runtime.agent.write(early.data)
                else:
                    runtime.agent.paste(early.text)
            self._early.clear()
            self.agent = p.AgentInfo(
                runtime.agent.activity or "idle", runtime.agent.exit_code, runtime.agent.pid, self._agent_size()
            )
            self._broadcast("states", p.State(agent=self.agent))
        self._answer_start("")
        log.info("%s started", self.name)

    def _answer_start(self, reason: str) -> None:
        """Record how the start ended and tell everyone waiting for it: "" when it worked, else why not."""
        if not self.started.done():
            self.started.set_result(reason)
        for client, request_id in self._start_waiters:
            client.send(p.Reply(request_id, reason))
        self._start_waiters.clear()

    async def _config_changed(self) -> None:
        """colony.toml was edited: services whose definition changed restart; a new [network] applies at once."""
        runtime = self.runtime
        if runtime is None:
            return
        before = runtime.config.network
        await runtime.reload_config()
        if runtime.config.network == before:
            return
        from core.hive import Hive  # only now: the firewall and netlink are not needed to run a colony

        try:
            if self._hive is None:
                self._hive = await asyncio.to_thread(Hive.from_environment)
            in_force = await self._hive.apply_network(self.name)
        except StemError as exc:
            self._on_event(Notice(self.name, "error", f"{self.name}: [network] not applied: {exc}"))
            return
        self._on_event(Notice(self.name, "info", f"{self.name}: egress now {in_force.describe()}"))

    def _load(self) -> tuple[ColonyRecord, ColonyConfig]:
        rec = self.registry.get(self.name)
        config, note = colony_config_for(
            Path(rec.worktree), rec.base_commit, rec.target, self.layout.colony_policy(rec.name), fallback=True
        )
        if note:
            self.colony_log.append("config!", note)
        return rec, config

    def _warm_up(self) -> None:
        """While a spawn still makes the colony: what its start will read and plan the first time (the user's
        settings, the colony's sandbox), read once now, results dropped, and the thread the start reads in made."""
        with contextlib.suppress(Exception):  # nothing here matters to the start, which reads it all again
            rec = self.registry.get(self.name)
            sandbox.for_colony(rec, load_settings(), self.layout.home)

    def _read_colony(self) -> tuple[ColonyRecord, ColonyConfig, Settings, bool, Sandbox | None]:
        """What a start reads (one trip to a thread): the colony's record and colony.toml, the user's settings,
        whether its agent ran before (then it comes back in its resume form: a stop, a crash of the previous
        host) and its sandbox. Also the colony's log so far: read now, not when the host was launched, since a spawn
        launches it while it still writes the colony's making to that log (numbered after those lines, its own
        entries are new to every client)."""
        self.colony_log.load()
        rec, config = self._load()
        settings = load_settings()
        resume = any(kind == "agent-started" for _c, _at, kind, _m in self.registry.events(self.name))
        return rec, config, settings, resume, sandbox.for_colony(rec, settings, self.layout.home)

    async def _guard(self) -> None:
        """A host whose colony vanished under it (its folder deleted, STEM_HOME removed, its row gone) ends what it
        runs and exits instead of running on for nobody; a preview proxy killed under it is started again. A stat
        every GUARD_INTERVAL s, on the loop; the registry (a read in a thread) every GUARD_REGISTRY_EVERY-th time,
        and Caddy's admin socket asked (in the preview worker) when the colony has routes: an idle host wakes for
        little else."""
        looks = 0
        while True:
            await asyncio.sleep(GUARD_INTERVAL)
            looks += 1
            if self._unwritten:
                self.writer.submit(self._write)  # the disk may have room again
            if self.runtime is not None and self.runtime.preview is not None:
                self.runtime.preview.recheck()
            gone = not self.paths.lock.exists()
            if not gone and looks % GUARD_REGISTRY_EVERY == 0:
                try:
                    gone = await asyncio.to_thread(self.registry.find, self.name) is None
                except Exception:  # an unreadable registry (a deleted STEM_HOME) is gone too
                    gone = True
            if gone:
                self._request_stop("its colony is gone")
                return

    def _request_stop(self, why: str) -> None:
        if not self.done.is_set():
            log.info("stopping %s: %s", self.name, why)
            self.done.set()

    async def _stop_runtime(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            # Its stopper waits grace + 15 s for the answer, then kills the host: before that, host.log gets what
            # the stop still waits on (a stop that hangs is otherwise gone without a trace).
            longest = stop_patience(runtime.config, self.stop_grace)
            watchdog = asyncio.get_running_loop().call_later(longest + STOP_REPORT_AFTER, _report_stuck_stop)
            try:
                await runtime.stop(self.stop_grace, routes=self.stop_routes)
            finally:
                watchdog.cancel()
        procs.reap_orphans()

    def _on_sigchld(self) -> None:
        # As the colony's subreaper we adopt its orphans (a daemonised dev server): reap them, never our waiters'.
        self._keep(asyncio.to_thread(procs.reap_orphans))

    def _keep(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` as a task of the host's, held until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _defer(self, write: Callable[[], object]) -> None:
        self.writer.submit(self._write, write)

    def _write(self, write: Callable[[], object] | None = None) -> None:
        """On the writer thread: the runtime writes a full disk refused, in order, then `write`. One refused again
        waits for the next try (a later write, the guard's look): else the registry kept, for good, what ran before
        the disk filled ('ready' for a service that had crashed since)."""
        if write is not None:
            self._unwritten.append(write)
        while self._unwritten:
            try:
                self._unwritten[0]()
            except Exception as exc:
                if refused_by_disk(exc):
                    return
                self._unwritten.popleft()
                raise
            self._unwritten.popleft()

    def _log_trouble(self, why: str | None) -> None:
        """The colony's log file stopped (or started again) taking lines: every client is told once."""
        if why is not None:
            message = trouble_message(self.name, why)
            log.warning("%s", message)
            self._on_event(Notice(self.name, "error", message))
        else:
            self._on_event(Notice(self.name, "info", trouble_message(self.name, None)))

    def _forget_services_but(self, names: frozenset[str]) -> None:
        for kind, name, _state, _detail in self.registry.runtime(self.name):
            if kind == "service" and name not in names:
                self.registry.remove_runtime(self.name, kind, name)

    def _write_runtime_cleared(self) -> None:
        with contextlib.suppress(Exception):
            self.registry.clear_runtime(self.name)

    # -------------------------------------------------------------------------------------------- events

    def _on_event(self, event: Event) -> None:
        """The runtime's events: into the registry (in order) and out to the clients that want them."""
        if isinstance(event, ScreenChanged):
            for client in self.clients:
                if "screen" in client.streams:
                    client.pending_rows |= event.rows
                    client.pending_screen = True
                    self._flush_rows(client)
            return
        if isinstance(event, LogLine):
            entry = Entry(event.seq, event.at, event.source, event.text)
            message = p.Log((entry,))
            for client in self.clients:
                if client.log_behind is not None or not client.wants("logs"):
                    continue
                if client.slow:
                    client.log_behind = event.seq - 1
                    self._keep(self._catch_up_logs(client))
                else:
                    client.send(message)
            return
        if isinstance(event, Notice):
            self._broadcast("states", p.NoticeMessage(event.level, event.message))
            return
        if isinstance(event, ServiceState) and event.state == "removed":
            self.services.pop(event.service, None)
            if not self.done.is_set():
                self._defer(lambda: self.registry.remove_runtime(self.name, "service", event.service))
            self._broadcast("states", p.State(services=(p.ServiceInfo(event.service, event.state, None, 0),)))
            return
        if isinstance(event, ServiceState):
            port = self.services[event.service].port if event.service in self.services else None
            runner = self.runtime.services.services.get(event.service) if self.runtime is not None else None
            pid = runner.pid if runner is not None else None
            info = p.ServiceInfo(event.service, event.state, port, event.restarts, event.code, event.detail, pid)
            self.services[event.service] = info
            code = f"({event.code})" if event.code is not None and event.state in ("crashed", "exited") else ""
            if not self.done.is_set():  # stopping: the rows are cleared as it exits (no write to contend for)
                self._defer(
                    lambda: self.registry.set_runtime(
                        self.name, "service", event.service, event.state + code, event.detail
                    )
                )
            self._broadcast("states", p.State(services=(info,)))
            return
        if isinstance(event, AgentActivity):
            self.agent = p.AgentInfo(event.activity, event.code, self._agent_pid(), self._agent_size())
            code = f"({event.code})" if event.code is not None else ""
            if not self.done.is_set():
                self._defer(lambda: self.registry.set_runtime(self.name, "agent", "agent", event.activity + code, ""))
            self._broadcast("states", p.State(agent=self.agent))
            return
        if isinstance(event, ChangesUpdated):
            self.files = event.files
            self._broadcast("states", p.State(files=event.files))

    def _agent_size(self) -> tuple[int, int] | None:
        agent = self.runtime.agent if self.runtime is not None else None
        return (agent.screen.columns, agent.screen.lines) if agent is not None else self.size

    def _agent_pid(self) -> int | None:
        agent = self.runtime.agent if self.runtime is not None else None
        return agent.pid if agent is not None and agent.running else None

    def _broadcast(self, stream: str, msg: p.Message) -> None:
        for client in self.clients:
            if client.wants(stream):
                client.send(msg)

    def _follow_agent(self, agent: AgentSession) -> None:
        """A new agent session of the running colony (restarted, or started anew after its resume form found
        nothing): followed, at the clients' size, and announced."""
        self._tap(agent)
        if self.size is not None and self.size != (agent.screen.columns, agent.screen.lines):
            agent.resize(*self.size)
        self.agent = p.AgentInfo(agent.activity or "idle", None, self._agent_pid(), self._agent_size())
        self._broadcast("states", p.State(agent=self.agent))

    def _tap(self, agent: AgentSession) -> None:
        """Follow a new agent session's output and clipboard writes, and tell it the clients' colours."""
        if self._on_output in agent.output_taps:
            return  # followed already (started anew while the colony's start was under way)
        agent.output_taps.append(self._on_output)
        agent.clipboard_taps.append(self._on_clipboard)
        if self.palette is not None:
            agent.set_palette(self.palette)

    def _on_clipboard(self, writes: list[str]) -> None:
        for client in self.clients:
            if "screen" in client.streams:
                client.pending_clipboard = (client.pending_clipboard + writes)[-8:]
                self._flush_rows(client)

    def _flush_rows(self, client: Client) -> None:
        """Send the client's dirty rows now, or, while its socket is backed up, once it has drained. Never while
        the agent draws a synchronized-output frame: the rows go when it ends (its agent session then announces
        them), so no client shows a frame half drawn."""
        runtime = self.runtime
        if runtime is None or runtime.agent is None or client.writer.is_closing():
            return
        if not client.pending_screen and not client.pending_rows and not client.pending_clipboard:
            return
        if runtime.agent.screen.queries.frame_remaining() > 0:
            return
        if client.slow:
            if not client.flushing:
                client.flushing = True
                self._keep(self._drain_then_flush(client))
            return
        screen = runtime.agent.screen
        rows = {y for y in client.pending_rows if 0 <= y < screen.lines}
        client.pending_rows.clear()
        client.pending_screen = False
        state = p.screen_state(screen, rows)
        if client.pending_clipboard:
            state = dataclasses.replace(state, clipboard=tuple(client.pending_clipboard))
            client.pending_clipboard = []
        client.send(p.Rows(state))

    async def _catch_up_logs(self, client: Client) -> None:
        """A client that fell behind: once its socket drains, the lines since from the log's ring (what fell off
        the ring meanwhile is in the log file), until it keeps up again. Memory stays the ring's."""
        while client.log_behind is not None:
            try:
                await client.writer.drain()
            except ConnectionError:
                return
            if client.writer.is_closing():
                return
            missed = self.colony_log.after(client.log_behind)[-LOG_PAGE:]
            if missed:
                client.send(p.Log(tuple(missed)))
                client.log_behind = missed[-1].seq
            if not client.slow:
                client.log_behind = None

    async def _drain_then_flush(self, client: Client) -> None:
        try:
            await client.writer.drain()
        except ConnectionError:
            return
        finally:
            client.flushing = False
        self._flush_rows(client)

    def _on_output(self, data: bytes) -> None:
        for client in self.clients:
            if "output" in client.streams:
                client.send(p.Output(data))

    # ------------------------------------------------------------------------------------------- clients

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = await p.accept_client(reader, writer, self.name)
        if accepted is None:
            return
        client = Client(writer, accepted.kind)
        self.clients.add(client)
        try:
            while True:
                try:
                    msg = await p.read_message(reader)
                except (p.ConnectionClosed, ConnectionError, asyncio.IncompleteReadError):
                    return
                except p.ProtocolError as exc:
                    client.send(p.Bye(f"protocol error: {exc}"))
                    return
                await self._answer(client, msg)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        finally:
            self.clients.discard(client)
            self._client_left(client)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    def _used(self, client: Client, resized: bool = False) -> None:
        """`client` was just used: the agent takes its size, if it gave one and that is not the size now."""
        self._uses += 1
        client.used = self._uses
        if client.size is not None and (resized or client.size != self.size):
            self._resize(client.size)

    def _resize(self, size: tuple[int, int]) -> None:
        self.size = size  # also for an agent still to start (or restart)
        runtime = self.runtime
        if runtime is not None:
            runtime.agent_size = size
            if runtime.agent is not None:
                runtime.agent.resize(*size)
        if self.agent.size != size:  # told: an attach at another size draws the screen rather than pass output
            self.agent = dataclasses.replace(self.agent, size=size)
            self._broadcast("states", p.State(agent=self.agent))

    def _client_left(self, client: Client) -> None:
        """A client whose size the agent has went away: the agent takes the size of the one used last of those
        still there (a `stem attach` ending gives the UI its size back)."""
        if client.size is None or client.size != self.size:
            return
        sized = [c for c in self.clients if c.size is not None]
        if sized:
            latest = max(sized, key=lambda c: c.used)
            if latest.size != self.size:
                self._resize(latest.size)  # type: ignore[arg-type]  # filtered above

    async def _answer(self, client: Client, msg: p.Message) -> None:
        request_id = getattr(msg, "id", 0)
        try:
            result = await self._handle(client, msg)
        except _Deferred:
            return
        except Exception as exc:  # refused, a full disk, or a bug (logged): said to this client, the others served
            if not isinstance(exc, StemError) and not refused_by_disk(exc):
                log.exception("request %s of a %s client failed", type(msg).__name__, client.kind)
            client.send(p.Reply(request_id, failure_line(exc)))
            return
        client.send(p.Reply(request_id, "", result))

    async def _handle(self, client: Client, msg: p.Message) -> p.Result | None:
        runtime = self.runtime
        agent = runtime.agent if runtime is not None else None
        if isinstance(msg, p.Keys | p.Paste):
            self._used(client)
        if isinstance(msg, p.Keys):
            if agent is not None:
                agent.write(msg.data)
            else:
                self._early.append(msg)  # typed before the agent is up (right after a spawn): kept for it
            return None
        if isinstance(msg, p.Paste):
            if agent is not None:
                agent.paste(msg.text)
            else:
                self._early.append(msg)
            return None
        if isinstance(msg, p.Resize):
            client.size = (msg.columns, msg.lines)
            self._used(client, resized=True)
            return None
        if isinstance(msg, p.SetPalette):
            self.palette = msg.palette
            if agent is not None:
                agent.set_palette(msg.palette)
            return None
        if isinstance(msg, p.Subscribe):
            if agent is not None:
                await agent.frame_settled()  # a snapshot shows whole frames only
            client.streams = frozenset(msg.streams)
            client.pending_rows.clear()
            client.pending_screen = False
            client.send(self._snapshot(client.streams))
            return None
        if isinstance(msg, p.AwaitStart):
            self._go.set()
            if not self.started.done():
                # Answered by `_answer_start` the moment the start ends, before a failed start closes anything.
                self._start_waiters.append((client, msg.id))
                raise _Deferred
            if self.started.result():
                raise StemError(self.started.result())
            return None
        if isinstance(msg, p.Stop):
            # Answered by `run` once everything the colony ran has ended, right before the host exits.
            self.stop_grace = msg.grace
            self.stop_routes = msg.routes
            self._stop_waiters.append((client, msg.id))
            self._request_stop(f"asked by a {client.kind} client")
            raise _Deferred
        if isinstance(msg, p.ScrollbackRequest):
            if agent is None:
                raise StemError(f"{self.name} has no agent running")
            return p.scrollback_page(agent.screen, msg.start, msg.count)
        if isinstance(msg, p.LogHistory):
            entries = [e for e in self.colony_log.after(msg.after)]
            page = entries[: msg.limit] if msg.limit else entries
            return p.LogPage(tuple(page), more=len(page) < len(entries))
        if isinstance(msg, p.Diff):
            rec = await asyncio.to_thread(self.registry.get, self.name)
            text = await asyncio.to_thread(lambda: diff_text(Path(rec.worktree), work_base(rec), msg.path))
            return p.DiffText(text)
        if isinstance(msg, p.RestartService):
            if runtime is None:
                raise StemError(f"{self.name} is not running")
            await runtime.restart_service(msg.name)
            return None
        if isinstance(msg, p.RestartAgent):
            if runtime is None:
                raise StemError(f"{self.name} is not running")
            await runtime.restart_agent(resume=True)
            if runtime.agent is not None:
                self._follow_agent(runtime.agent)
            return None
        raise StemError(f"a {msg.T} message is not a request a colony host answers")

    def _snapshot(self, streams: frozenset[str]) -> p.Snapshot:
        runtime = self.runtime
        agent = runtime.agent if runtime is not None else None
        screen = p.screen_state(agent.screen) if agent is not None and streams & {"screen", "output"} else None
        tail = self.colony_log.tail(LOG_PAGE) if "logs" in streams else []
        return p.Snapshot(
            screen=screen,
            colony=None,
            agent=self.agent,
            services=tuple(self.services.values()),
            files=self.files,
            log=tuple(tail),
            log_seq=self.colony_log.last_seq,
            log_trouble=self.colony_log.write_error or "",  # a client that comes later is told too
        )


def _watch_starter() -> asyncio.Future[None] | None:
    """Done when the process named by STARTER_ENV ends (None without one). The variable is taken out of this
    process's environment: nothing the host starts inherits it."""
    text = os.environ.pop(STARTER_ENV, "")
    if not text.isdigit():
        return None
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        fd = os.pidfd_open(int(text))
    except OSError:  # gone already
        gone.set_result(None)
        return gone
    loop = asyncio.get_running_loop()

    def ended() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, ended)

    def forget(_: asyncio.Future[None]) -> None:  # cancelled once the start was asked for
        if gone.cancelled():
            loop.remove_reader(fd)
            os.close(fd)

    gone.add_done_callback(forget)
    return gone


async def _main(home: Path, name: str, ready_fd: int | None) -> int:
    layout = HiveLayout(home)
    paths = HostPaths(layout.colony_dir(name))
    lock = hold(paths.lock)
    if lock is None:
        print(f"stem host: a colony host of {name} runs already", file=sys.stderr)
        return 3
    try:
        pids.write_pid_file(paths.pid)
        host = ColonyHost(layout, name, ready_fd)
        return await host.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            paths.pid.unlink()
        os.close(lock)


def _report_stuck_stop() -> None:
    """host.log: the stop still runs STOP_REPORT_AFTER s past its slowest service's patience; the stack of every task
    and thread."""
    log.warning("the stop has not ended %gs past its grace; what it waits on:", STOP_REPORT_AFTER)
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        log.warning("%s", out.getvalue().rstrip())
    with contextlib.suppress(Exception):
        faulthandler.dump_traceback(sys.stderr, all_threads=True)


def main(argv: list[str] | None = None) -> int:
    args, ready_fd = take_ready_fd(list(sys.argv[1:] if argv is None else argv))
    if len(args) != 2:
        print("usage: python3 -m core.host HOME NAME [--ready-fd FD]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s host[%(process)d] %(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` writes every thread's stack to host.log
    become_subreaper()
    try:
        return asyncio.run(_main(Path(args[0]), args[1], ready_fd))
    except Exception as exc:  # a bug: the traceback goes to host.log; why the colony stopped, to its log too
        with contextlib.suppress(Exception):
            colony_log = ColonyLog(HiveLayout(Path(args[0])).colony_log(args[1]))
            colony_log.append("host!", f"the colony host crashed: {failure_line(exc)} (host.log has its traceback)")
            colony_log.close()
        raise
