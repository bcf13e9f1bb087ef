"""A stem process's live view of one colony host: the agent's screen, services, activity, changed files.

A `HostLink` keeps a connection to the host, applies its snapshot and updates to a `ScreenMirror` and to plain
records, and republishes them as the core's usual events (ScreenChanged, ServiceState, AgentActivity,
ChangesUpdated, LogLine, Notice), so a UI shows a colony the same way whether its runtime lives here or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from core.colony_log import Entry, recent, trouble_message, trouble_told
from core.errors import StemError
from core.events import (
    AgentActivity,
    ChangesUpdated,
    Event,
    FileChange,
    LogLine,
    LogsLoaded,
    Notice,
    ScreenChanged,
    ScrollbackLoaded,
    ServiceState,
)
from core.host import protocol as p
from core.host.mirror import ScreenMirror
from core.host.paths import HostPaths
from core.screen_queries import Link, Palette

log = logging.getLogger("stem.link")
SCROLLBACK_PAGE = 500
LOG_KEPT = 5000


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A service as its host last reported it."""

    name: str
    state: str
    port: int | None
    restarts: int
    code: int | None = None
    detail: str = ""
    pid: int | None = None


class RemoteAgent:
    """The agent of a colony host, as the terminal widget uses an agent session: a screen, keys, paste, resize.

    Keys and pastes are posted in order without waiting for a reply, so typing never waits on the host.
    """

    def __init__(self, link: HostLink) -> None:
        self._link = link
        self.screen = link.mirror
        self.activity: str | None = None
        self.exit_code: int | None = None
        self.pid: int | None = None
        self._told: tuple[int, int] | None = None  # the size last posted to the host

    def write(self, data: bytes) -> None:
        self._link.post(p.Keys(data))

    def paste(self, text: str) -> None:
        self._link.post(p.Paste(text))

    def resize(self, columns: int, lines: int) -> None:
        """The size this client shows the agent at. The host gives the agent the size of the client used last (a
        resize, a key, a paste), so it is told this size even when the agent has it already: else a key typed here
        after another client resized the agent would leave the agent at that client's size."""
        if (columns, lines) != (self.screen.columns, self.screen.lines) or (columns, lines) != self._told:
            self._told = (columns, lines)
            self._link.post(p.Resize(columns, lines))

    @property
    def modes(self) -> p.ScreenModes:
        return self.screen.modes

    def row_links(self, y: int) -> tuple[Link, ...]:
        return self.screen.row_links(y)

    def take_clipboard(self) -> list[str]:
        return self.screen.take_clipboard()

    def set_palette(self, palette: Palette) -> None:
        # One UI shows every colony in the same colours: all its hosts are told, not only this one's.
        HostLink.set_palette_everywhere(palette)


class HostLink:
    """One colony host, followed: reconnects are the caller's business (`run` returns when the host goes)."""

    # The colours this process shows agents in, and the links to tell (a process has one UI and one theme).
    _palette: ClassVar[Palette | None] = None
    _live: ClassVar[weakref.WeakSet[HostLink]] = weakref.WeakSet()

    def __init__(
        self,
        colony: str,
        paths: HostPaths,
        publish: Callable[[Event], None],
        wants_lines: Callable[[str], bool] | None = None,
    ) -> None:
        """`wants_lines(colony)`: whether its log lines are published one by one as they come (a UI shows one
        colony's log: the lines of a colony flooding its log elsewhere cost it nothing but keeping them)."""
        self.colony = colony
        self.paths = paths
        self._publish = publish
        self._wants_lines = wants_lines
        self.mirror = ScreenMirror()
        self.agent = RemoteAgent(self)
        self.services: dict[str, ServiceView] = {}
        self.files: tuple[FileChange, ...] | None = None
        self.log: deque[Entry] = deque(maxlen=LOG_KEPT)  # the colony's log as its host numbers it
        self.mirror.scrollback.on_want = self._want_scrollback
        self._fetching: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.stopping = False  # this process is stopping the colony: the host going away is expected
        self._conn: p.Connection | None = None
        self._live_log = False  # subscribed to the host's new log lines (see `follow_lines`)
        self.log_trouble = ""  # why the host could not write the colony's log file, as of its last snapshot
        HostLink._live.add(self)

    async def run(self) -> str:
        """Follow the host until it goes away; returns why."""
        try:
            conn = await p.Connection.open(self.paths.socket, "ui", client="stem")
        except StemError as exc:
            return str(exc)
        self._conn = conn
        try:
            # The log's history is read when the colony is shown (Hive.log_entries), not carried in every host's
            # snapshot: a UI attaching to 100 colonies would otherwise decode 100 log tails before its first frame.
            self._live_log = self._lines_wanted()
            await conn.subscribe(*self._streams())
            if HostLink._palette is not None and conn.version >= 2:
                conn.post(p.SetPalette(HostLink._palette))  # a new host starts from its default colours
            self.connected.set()
            async for msg in conn.updates():
                self._apply(msg)
            return f"the colony host of {self.colony} closed the connection"
        except StemError as exc:
            return str(exc)
        finally:
            self._conn = None
            self.connected.clear()
            await conn.close()

    def _lines_wanted(self) -> bool:
        return self._wants_lines is None or self._wants_lines(self.colony)

    def _streams(self) -> tuple[p.Stream, ...]:
        return ("screen", "log-live", "states") if self._live_log else ("screen", "states")

    def follow_lines(self) -> None:
        """Take the host's new log lines, or stop taking them, as `wants_lines` now says: a colony flooding its log
        while another is shown costs this process nothing (decoding its lines took most of a UI's CPU). The host
        answers with a snapshot; its log, read when the colony is shown (`Hive.log_entries`), is the host's."""
        wanted = self._lines_wanted()
        if wanted != self._live_log and self._conn is not None:
            self._live_log = wanted
            self.post(p.Subscribe(frozenset(self._streams())))

    @classmethod
    def set_palette_everywhere(cls, palette: Palette) -> None:
        """Tell every followed host (and every later one) the colours agents are shown in: what they answer an
        agent that asks (OSC 10, 11, 4), also for colonies not on screen."""
        if palette == cls._palette:
            return
        cls._palette = palette
        for link in cls._live:
            if link._conn is not None and link._conn.version >= 2:
                link.post(p.SetPalette(palette))

    def unanswered(self) -> float:
        """For how many seconds the host has left a question unanswered (`Connection.unanswered`); 0 while it
        answers, or while not connected."""
        conn = self._conn
        return conn.unanswered() if conn is not None else 0.0

    def post(self, req: p.Request) -> None:
        conn = self._conn
        if conn is None:
            return  # between hosts: what is typed now has no agent to go to
        with contextlib.suppress(StemError, ConnectionError, RuntimeError):
            conn.post(req)

    async def log_history(self, limit: int) -> list[Entry] | None:
        """The host's last `limit` log entries, and before them each source's last lines it keeps (a flood of one
        service leaves the others' in), numbered as the entries it pushes are; None while not connected."""
        conn = self._conn
        if conn is None:
            return None
        try:
            page = await conn.log_history(0, 0)  # all it holds: its ring and the sources' last lines
        except (StemError, ConnectionError):
            return None
        return recent(page.entries, limit)

    def _want_scrollback(self) -> None:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.get_running_loop().create_task(self._fetch_scrollback())

    async def _fetch_scrollback(self) -> None:
        """Fetch the scrollback lines the terminal read while they were missing, a page at a time."""
        await asyncio.sleep(0)  # let the render pass that found them missing note them all
        scrollback = self.mirror.scrollback
        while scrollback.wanted and self._conn is not None:
            low = min(scrollback.wanted)
            high = min(max(scrollback.wanted), low + SCROLLBACK_PAGE - 1)
            try:
                page = await self._conn.scrollback(low, high - low + 1)
            except StemError:
                return
            scrollback.store(page)
            scrollback.wanted -= set(range(low, high + 1))
            self._publish(ScrollbackLoaded(self.colony))

    # --------------------------------------------------------------------------------------------- updates

    def _apply(self, msg: p.Update) -> None:
        colony = self.colony
        if isinstance(msg, p.Snapshot | p.Rows):
            rows = self.mirror.apply(msg)
            self.agent.screen = self.mirror
            if isinstance(msg, p.Snapshot):
                self._state(msg.agent, msg.services, tuple(msg.files))
                self.log.clear()
                self.log.extend(msg.log)
                self._publish(LogsLoaded(colony))
                if msg.log_trouble and msg.log_trouble != self.log_trouble:
                    # Said when it began to the clients there then; a UI opened since hears it now.
                    self._publish(Notice(colony, "error", trouble_message(colony, msg.log_trouble)))
                self.log_trouble = msg.log_trouble
            self._publish(ScreenChanged(colony, frozenset(rows)))
        elif isinstance(msg, p.State):
            self._state(msg.agent, msg.services, msg.files)
        elif isinstance(msg, p.Log):
            self.log.extend(msg.entries)
            if self._wants_lines is None or self._wants_lines(colony):
                for e in msg.entries:
                    self._publish(LogLine(colony, e.seq, e.at, e.source, e.text))
        elif isinstance(msg, p.NoticeMessage):
            told = trouble_told(colony, msg.message)
            if told is not None:
                self.log_trouble = told  # a snapshot that says it again (a new subscription) is not told twice
            self._publish(Notice(colony, msg.level, msg.message))

    def _state(
        self,
        agent: p.AgentInfo | None,
        services: tuple[p.ServiceInfo, ...],
        files: tuple[FileChange, ...] | None,
    ) -> None:
        colony = self.colony
        if agent is not None:
            self.agent.pid = agent.pid
            if (agent.activity, agent.code) != (self.agent.activity, self.agent.exit_code):
                self.agent.activity, self.agent.exit_code = agent.activity, agent.code
                self._publish(AgentActivity(colony, agent.activity, agent.code))
        for s in services:
            if s.state == "removed":
                self.services.pop(s.name, None)
            else:
                self.services[s.name] = ServiceView(s.name, s.state, s.port, s.restarts, s.code, s.detail, s.pid)
            self._publish(ServiceState(colony, s.name, s.state, s.code, s.restarts, s.detail))
        if files is not None:
            self.files = files
            self._publish(ChangesUpdated(colony, files))


async def log_trouble(paths: HostPaths) -> str:
    """Why the colony's host cannot write its log file now (a full disk): "" while it can, or when no host runs.
    For `stem logs`, which reads that file."""
    try:
        conn = await p.Connection.open(paths.socket, "script", client="stem logs")
    except StemError:
        return ""
    try:
        await conn.subscribe("states")
        async for msg in conn.updates():
            if isinstance(msg, p.Snapshot):
                return msg.log_trouble
        return ""
    except (StemError, ConnectionError):
        return ""
    finally:
        await conn.close()
