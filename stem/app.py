"""The Stem terminal UI: `stem` with no arguments. The core runs in the same process and event loop.

Left, numbered panels (1 colonies, 2 services, 3 changes); right, the main view (0) with the Terminal, Logs, Diff
and Info tabs of the selected colony; at the bottom, the keys that work where the focus is. The app listens to
the hive's event stream and never polls the agents: screens, states, logs and file changes arrive as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Command as PaletteCommand
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.driver import Driver
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.theme import Theme
from textual.widgets import Input, Static, TabbedContent
from textual.worker import Worker, WorkerState

from core import lifecycle as lc
from core.api import HiveAPI
from core.errors import StemError, disk_trouble, sqlite_error
from core.events import (
    AgentActivity,
    ChangesUpdated,
    ColonyRemoved,
    Event,
    FileChange,
    HiveChanged,
    LogLine,
    LogsLoaded,
    Notice,
    ScreenChanged,
    ScrollbackLoaded,
    ServiceState,
    StateChanged,
)
from core.host.protocol import HOST_SILENT
from core.registry import ColonyRecord, Transition
from core.settings import Settings, load_settings, save_setting
from stem.commands import StemCommands, ThemeCommands
from stem.hive_view import Clock, FailedSpawn, shown_path
from stem.input_parser import StemDriver
from stem.key_order import AFTER_APP, KeyOrder
from stem.keys import bind, keymap
from stem.live_work import LiveWork, file_section
from stem.messages import ColonySelected, FileSelected, OpenTerminal
from stem.textual_private import (
    HoldingScreen,
    StemPalette,
    check_bindings,
    check_priority_bindings,
    forward,
    has_screen,
    refresh_truecolor_filter,
)
from stem.themes import load_themes, theme_dirs
from stem.widgets.colonies import ColoniesList, ColoniesPanel, ColonyRow
from stem.widgets.dialogs import ConfirmScreen, HelpScreen
from stem.widgets.diff import DiffView
from stem.widgets.hint_bar import HintBar
from stem.widgets.info import InfoView
from stem.widgets.logs import LogsView
from stem.widgets.main_view import MainView
from stem.widgets.side_panels import ChangesList, ServicesList
from stem.widgets.spawn_form import SpawnForm, SpawnRequest
from stem.widgets.terminal import TerminalView

__all__ = ["StemApp", "run"]

EXIT_USAGE = 2
AGE_REFRESH = 30.0  # the list read from the registry again (colonies changed by other processes)
AGE_TICK = 1.0  # the ages in the list; only the age cells are redrawn
HOST_CHECK = 2.0  # whether a colony's host is stopped (SIGSTOP) or does not answer (hung): it says nothing itself
# The first frame waits (at most this long) for the selected colony's agent screen from its host, so that it is
# drawn once, whole, instead of in three partial frames that each hold up the snapshots still to come.
FIRST_FRAME_WAIT = 0.3
CRASH_QUIET = 60.0  # seconds after a service's crash is told in which its next crashes are only listed in Info
EVENT_BATCH = 2048  # core events taken from the queue at once (see `_pump_events`)
_SEVERITY = {"info": "information", "warning": "warning", "error": "error"}


def _host_note(name: str, says: str, command: str, after: str = ".") -> Content:
    """The terminal pane's line for a colony whose host is stopped or does not answer: what, and the command."""
    return Content.assemble(
        Content.styled(name, "bold"), f"'s colony host {says}", Content.styled(command, "bold"), after
    )


class StemApp(App[int], inherit_bindings=False):
    """The app. `hive` is a core.hive.Hive (or anything with its API); `own` makes this process follow the hive's
    colony hosts (screens, states, logs); `clock` is injected for deterministic snapshots."""

    CSS_PATH = "stem.tcss"
    AUTO_FOCUS = None  # refresh_colonies focuses the list once it has colonies: a hidden list never holds the focus
    TITLE = "Stem"
    COMMANDS: ClassVar[set[Any]] = {StemCommands}
    BINDINGS = [
        bind("app.quit"),
        bind("app.help"),
        bind("app.palette"),
        bind("app.new"),
        # The selected colony's keys work from every panel; the colonies list shows them in the hint bar. The same
        # binding ids as the list's, so a remap moves both.
        bind("colony.stop_start", show=False),
        bind("colony.destroy", show=False),
        bind("app.focus_colonies"),
        bind("app.focus_services"),
        bind("app.focus_changes"),
        bind("app.focus_main"),
        bind("app.next_tab"),
        bind("app.prev_tab"),
        bind("app.focus_next"),
        bind("app.focus_previous"),
    ]

    def __init__(
        self,
        hive: HiveAPI,
        settings: Settings | None = None,
        *,
        themes: dict[str, Theme] | None = None,
        clock: Clock | None = None,
        cwd: Path | None = None,
        own: bool = True,
        close_hive: bool = False,
        blink: bool = True,
        live_figures: bool = True,
        keep_warm: bool = False,
        records: list[ColonyRecord] | None = None,
    ) -> None:
        super().__init__()
        # Merge status, overlaps and cgroup usage of the colonies; `live_figures` off (snapshots) leaves out the
        # figures that vary run to run (usage, preview routes).
        self.live = LiveWork(self, figures=live_figures)
        self.blink = blink  # cursor blink in text fields; snapshots turn it off
        self.hive = hive
        self.settings = settings or Settings(path=Path(os.devnull))
        self.clock = clock or Clock()
        self.own_hive = own
        self._spawn_form: SpawnForm | None = None  # open, or dismissed with a request the app has not taken yet
        self._key_order = KeyOrder(self, self._dispatch_key)
        self.close_hive = close_hive
        self.failure: str | None = None  # a one-line reason the app could not run (exit code 2)
        self.records: list[ColonyRecord] = records or []
        self._preloaded = records is not None  # the colonies were read before the app ran: listed at mount
        self._holding_frame = False  # repaints held until the first frame is whole (FIRST_FRAME_WAIT)
        self._first_frame = asyncio.Event()  # set once it is drawn: the hive links the other colonies then
        self.selected: str | None = None
        self._logs_found: LogsView | None = None
        # When a notification last told of each service's crash (see CRASH_QUIET).
        self._crash_told: dict[tuple[str, str], float] = {}
        self.selected_file: str | None = None
        self.activity: dict[str, str] = {}
        self.titles: dict[str, str] = {}  # each colony's agent's window title
        self.stopped_hosts: dict[str, int] = {}  # colony -> pid of its host, stopped (SIGSTOP) as last looked
        self.silent_hosts: dict[str, int] = {}  # colony -> pid of its host, which does not answer (hung)
        self.changes: dict[str, tuple[FileChange, ...]] = {}
        self.errors: dict[str, list[tuple[float, str]]] = {}
        # Spawns started here, traced while they run; the ones that failed stay listed until dismissed.
        self._tracing: dict[str, FailedSpawn] = {}
        self._rows_pending = False  # a rebuild of the colonies list is scheduled
        self._events: asyncio.Queue[Event] | None = None  # the core's events, subscribed to on load
        self._attaching: asyncio.Future[None] | None = None
        self.failed_spawns: dict[str, FailedSpawn] = {}
        self.default_repo = _repo_of(cwd if cwd is not None else Path.cwd())
        self.cwd = cwd if cwd is not None else Path.cwd()
        self._theme_before_preview: str | None = None
        self._worker_colony: dict[Worker[Any], str] = {}
        self._restarting: dict[tuple[str, str], int] = {}  # (colony, service) -> its restarts before `r`
        self._loaded = False
        self.keep_warm = keep_warm  # start the hive's warm UI process (stem/warm.py) once the first frame is up
        for theme in (themes or {}).values():
            self.register_theme(theme)
        if self.settings.theme in self.available_themes:
            self._set_initial_theme(self.settings.theme)
        # binding id -> keys, as remapped by config
        self.key_remaps = keymap(self.settings.keys, self.settings.key_lines)
        self.set_keymap(self.key_remaps)

    def _set_initial_theme(self, name: str) -> None:
        """The configured theme, before the stylesheet is first parsed. Assigning `self.theme` here would have
        its watcher parse the whole stylesheet a second time once the app runs (~30 ms of every start): set the
        value and what the watcher would (the theme classes, the ANSI colour filter) without it."""
        self.set_reactive(StemApp.theme, name)
        dark = self.current_theme.dark
        classes = {c: False for c in self.classes if c.startswith("-theme-")}
        classes.update({f"-theme-{name}": True, "-dark-mode": dark, "-light-mode": not dark})
        self.update_classes(classes, update=False)
        refresh_truecolor_filter(self, self.ansi_theme)
        self.stylesheet.set_variables(self.get_css_variables())  # the first parse then uses the theme's colours

    # ------------------------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield ColoniesPanel(id="colonies")
                yield ServicesList(id="services")
                yield ChangesList(id="changes")
            yield MainView(self.clock, id="main")
        yield Static(self._welcome_text(), id="welcome")
        yield HintBar(id="hints")

    def _welcome_text(self) -> Content:
        if self.default_repo is not None:
            where = Content.assemble(
                "Press ",
                Content.styled(" n ", "reverse $accent"),
                " to spawn the first colony from the repository\n\n    ",
                Content.styled(shown_path(self.default_repo), "bold"),
            )
        else:
            where = Content.assemble(
                "Press ",
                Content.styled(" n ", "reverse $accent"),
                " to spawn the first colony. The current directory\n\n    ",
                Content.styled(shown_path(self.cwd), "bold"),
                "\n\nis not a git repository: the form asks which repository to branch from.",
            )
        return Content.assemble(
            Content.styled("Welcome to Stem\n\n", "bold $primary"),
            "No colonies yet. A colony is one agent with its own network namespace,\n"
            "git worktree on colony/<name> and SQLite database.\n\n",
            where,
            "\n\n",
            Content.styled("?", "bold $accent"),
            Content.styled(" every key   ", "$text-muted"),
            Content.styled(":", "bold $accent"),
            Content.styled(" commands   ", "$text-muted"),
            Content.styled("q", "bold $accent"),
            Content.styled(" quit", "$text-muted"),
        )

    def on_load(self) -> None:
        """Before the first screen is composed: subscribe, and start linking to the colony hosts, so that their
        snapshots are on their way (made in the hosts, on other cores) while Textual builds the screen."""
        self.hive.bind_loop()
        self._events = self.hive.subscribe()
        if self.own_hive:
            # The colony selected first is linked first; the others once the first frame is drawn.
            self._attaching = asyncio.ensure_future(
                self.hive.attach(self.records if self._preloaded else None, rest_after=self._first_frame)
            )
            if self.records and self.records[0].state == lc.RUNNING:  # the colony selected first
                self._holding_frame = True
                self.set_timer(FIRST_FRAME_WAIT, self._release_first_frame)

    async def on_mount(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # only the main thread may
            # SIGTERM (a service manager, `kill`) is a quit: the terminal is restored and the colonies run on.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.exit, 0)
        # Log lines one by one only of the colony shown (and of spawns traced here): the Logs tab reads a
        # colony's history from its host when it is shown.
        self.hive.log_lines_for = lambda colony: colony == self.selected or colony in self._tracing
        self._pump_events()
        if not self._holding_frame:
            self.call_after_refresh(self._first_frame.set)
        if self._preloaded:
            self._show_colonies()  # listed before the hosts are linked: their screens fill in as they come
        if self._attaching is not None:
            try:
                await self._attaching
            except StemError as exc:
                self.failure = str(exc)
                self.own_hive = False
                self.exit(EXIT_USAGE)
                return
        if not self._preloaded:
            self.refresh_colonies()
        self.set_interval(AGE_REFRESH, self.refresh_colonies)
        self.set_interval(AGE_TICK, self._tick_ages)
        self.set_interval(HOST_CHECK, self._check_hosts)
        self.live.start()

    async def on_event(self, event: events.Event) -> None:
        # Keys and pastes from the terminal are handed on in the order they were typed (stem/key_order.py).
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded and has_screen(self):
            await self._key_order.take(event)
            return
        await super().on_event(event)

    async def _dispatch_key(self, event: events.Key | events.Paste) -> object:
        """Act on a key or paste typed, as Textual would, but at once; what the next one waits for (`KeyOrder`)."""
        if isinstance(event, events.Key) and not self.app_focus:
            self.app_focus = True  # a key after the terminal lost the focus: the focused widget comes back first
        focused = self.screen.focused
        if isinstance(event, events.Paste):
            target = focused or self.screen
            forward(target, event)
            return target
        form = self._spawn_form
        if form is not None and form.validating:  # typed after ctrl+s: for the agent of the colony to come
            form.typeahead.append((event.key, event.character))
            return None
        if form is not None and form.takes_key(event):  # kept in order while the form opens or moves on
            return AFTER_APP
        if isinstance(focused, TerminalView) and not isinstance(self.screen, ModalScreen):
            # A key for a focused terminal goes straight to its agent after the priority bindings (which hold the
            # release chord): one hop fewer on the path every keystroke takes.
            if await check_priority_bindings(self, event.key):
                return AFTER_APP
            focused.send_key(event)
            return None
        if isinstance(focused, Input) and event.is_printable:
            forward(focused, event)  # text for the field: its own queue keeps it in order
            return focused
        # The binding runs now, not once the key comes back up from the focused widget: a key typed after it then
        # meets what the binding did (the focus it moved, the dialog it opened, the text it deleted).
        if await check_bindings(self, event.key):
            return AFTER_APP
        target = focused or self.screen
        forward(target, event)
        return target

    # ---------------------------------------------------------------------------------------- core events

    @work(group="events", exit_on_error=False)
    async def _pump_events(self) -> None:
        queue = self._events if self._events is not None else self.hive.subscribe()
        try:
            while True:
                events = [await queue.get()]
                while len(events) < EVENT_BATCH and not queue.empty():
                    events.append(queue.get_nowait())
                # The shown colony's log lines go to the Logs tab together: one by one, a service flooding its log
                # took most of the UI's time in per-line work.
                lines: list[LogLine] = []
                for event in events:
                    if isinstance(event, LogLine) and self._plain_line(event):
                        lines.append(event)
                        continue
                    if lines:
                        self._add_lines(lines)
                        lines = []
                    self._on_core_event(event)
                if lines:
                    self._add_lines(lines)
        finally:
            self.hive.unsubscribe(queue)

    @property
    def _logs_view(self) -> LogsView:
        """The Logs tab (found once: a query for every log line was a tenth of a flooded UI's time)."""
        view = self._logs_found
        if view is None:
            view = self._logs_found = self.query_one(LogsView)
        return view

    def _plain_line(self, line: LogLine) -> bool:
        """A line of the shown colony that is only shown (no spawn traced, not a preview route's)."""
        return line.colony == self.selected and line.colony not in self._tracing and line.source != "preview"

    def _add_lines(self, lines: list[LogLine]) -> None:
        try:
            self._logs_view.add_many(lines)
        except Exception as exc:  # one bad event must not stop the stream
            self.notify(f"could not show an update: {exc!r}", severity="error")

    def _on_core_event(self, event: Event) -> None:
        try:
            self.on_core_event(event)
        except Exception as exc:  # one bad event must not stop the stream
            self.notify(f"could not show an update: {exc!r}", severity="error")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notice as text, whatever `markup` says (widgets pass True): what they say comes from programs,
        paths and config files, and nginx's `[emerg]` was read as markup and left out."""
        del markup
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def get_default_screen(self) -> HoldingScreen:
        screen = HoldingScreen(id="_default")
        if self._holding_frame:
            screen.hold()
        return screen

    def _release_first_frame(self) -> None:
        """Draw the first frame: the selected agent's screen is here, or FIRST_FRAME_WAIT has passed."""
        if self._holding_frame:
            self._holding_frame = False
            screen = self.screen_stack[0]
            if isinstance(screen, HoldingScreen):
                screen.release()
            self.call_after_refresh(self._first_frame.set)

    def on_core_event(self, event: Event) -> None:
        """Route one core event to the panels that show it."""
        self.live.on_event(event)
        if isinstance(event, ScreenChanged):
            terminal = self.query_one(TerminalView)
            if event.colony == self.selected:
                if terminal.session is None:
                    self._attach_terminal()
                terminal.screen_changed(event.rows)
                if self._holding_frame:
                    self.call_later(self._release_first_frame)  # after the rest of this batch of events
            session = self.hive.agent(event.colony)
            title = session.screen.title if session is not None else ""
            if self.titles.get(event.colony, "") != title:  # the agent's window title (OSC 0/2), in its row
                self.titles[event.colony] = title
                self._redraw_rows()
        elif isinstance(event, HiveChanged):
            self.refresh_colonies()
        elif isinstance(event, LogsLoaded):
            if event.colony == self.selected and event.colony not in self._tracing:
                self._load_logs(event.colony)
        elif isinstance(event, ScrollbackLoaded):
            terminal = self.query_one(TerminalView)
            if event.colony == self.selected and terminal.session is not None:
                terminal.refresh()
        elif isinstance(event, LogLine):
            if event.colony in self._tracing:
                self._tracing[event.colony].logs.append(event)
            if event.colony == self.selected:
                self._logs_view.add_many([event])
                if event.source == "preview":  # a route came (it is added after the service's "ready")
                    self._show_info()
        elif isinstance(event, StateChanged):
            if event.colony in self._tracing:
                change = Transition(event.state, event.stage, event.reason, self.clock.now())
                self._tracing[event.colony].transitions.append(change)
            if event.state == lc.FAILED and event.reason:
                self._problem(event.colony, f"{event.colony} failed while {event.stage}: {event.reason}")
            self.refresh_colonies()
        elif isinstance(event, ColonyRemoved):
            self.activity.pop(event.colony, None)
            self.changes.pop(event.colony, None)
            self.refresh_colonies()
        elif isinstance(event, Notice):
            self.notify(event.message, severity=_SEVERITY.get(event.level, "information"))  # type: ignore[arg-type]
            if event.level in ("warning", "error") and event.colony:
                self._record(event.colony, event.message)
        elif isinstance(event, ServiceState):
            count = self._restarting.get((event.colony, event.service))
            if count is not None and event.restarts > count:
                del self._restarting[(event.colony, event.service)]
                self.notify(f"{event.colony}: restarted {event.service} ({_restarts(event.restarts)})")
            key = (event.colony, event.service)
            if event.state == "crashed":
                detail = f": {event.detail}" if event.detail else ""
                code = f" (exit {event.code})" if event.code is not None else ""
                message = f"{event.colony}: service {event.service} crashed{code}{detail}"
                now = self.clock.now()
                told = self._crash_told.get(key)
                if told is not None and now - told < CRASH_QUIET:
                    self._record(event.colony, message)  # a crash loop: Info lists each crash, one toast a minute
                else:
                    self._crash_told[key] = now
                    self._problem(event.colony, message)
            if event.colony == self.selected:
                self._show_services()
                self._show_info()
            self._redraw_rows()
        elif isinstance(event, AgentActivity):
            before = self.activity.get(event.colony)
            self.activity[event.colony] = event.activity
            terminal = self.query_one(TerminalView)
            watching = terminal.has_focus and terminal.colony == event.colony
            if event.activity == "attention" and before != "attention" and not watching:
                self.notify(f"{event.colony}'s agent is waiting for you (enter on it to answer)", severity="warning")
            if event.colony == self.selected:
                self._attach_terminal()
            self._redraw_rows()
        elif isinstance(event, ChangesUpdated):
            self.changes[event.colony] = event.files
            if event.colony == self.selected:
                self._show_changes()
                if self.query_one(MainView).tab == "diff":
                    self._load_diff()

    def _problem(self, colony: str, message: str) -> None:
        self.notify(message, severity="error", timeout=10)
        self._record(colony, message)

    def _record(self, colony: str, message: str) -> None:
        self.errors.setdefault(colony, []).append((self.clock.now(), message))
        if colony == self.selected:
            self._show_info()

    # ------------------------------------------------------------------------------------------ colonies

    @work(group="colonies", exclusive=True, exit_on_error=False)
    async def refresh_colonies(self) -> None:
        self.records = await asyncio.to_thread(self.hive.colonies)
        self._show_colonies()
        self._update_quit_dialog()

    def _show_colonies(self) -> None:
        """Show `self.records` (and the failed spawns) in the list and the selected colony's panels."""
        if not self._loaded and self.keep_warm:
            self.call_after_refresh(self._start_warm)
        self._loaded = True
        listed = [r.name for r in self.records] + [f.name for f in self._listed_failures()]
        self.set_class(not listed, "-empty")
        if listed:
            # Shown again after the empty hive, the tabs get their resize before their tabs get a layout, which
            # leaves the active tab's underline zero-wide: put it back once laid out (a no-op when it is right).
            self.call_after_refresh(self.query_one(MainView).realign_tabs)
        self._redraw_rows()
        # What the list shows (its filter may hide some): a colony it hides is never the one the keys act on (`d`
        # on an empty filtered list destroyed the colony selected before, which nothing on screen named).
        colonies = self.query_one(ColoniesList)
        shown = listed
        if colonies.filter_text:
            shown = [str(colonies.get_option_at_index(i).id) for i in range(colonies.option_count)]
        if self.selected is not None and self.selected not in shown:
            self.selected = None
            self.selected_file = None
            self._show_selected()
        if self.selected is None and shown:
            self.select_colony(shown[0])
        elif self.selected is not None:
            self._show_info()
            self._show_services()
            self._show_changes()
            self._attach_terminal()
        if not listed:
            self._show_selected()
            if isinstance(self.focused, ColoniesList):
                self.set_focus(None)  # the list is hidden while the hive is empty: its keys are not there to use
        elif self.focused is None and self.screen is self.screen_stack[0]:
            # The panels were hidden while the hive was empty; the colonies list takes the focus when they show.
            self.query_one(ColoniesList).focus()

    def _start_warm(self) -> None:
        """The next `stem` on this hive starts warm: forked, imports done, by the hive's warm UI process."""
        from stem.warm import keep_warm

        env = dict(os.environ)
        threading.Thread(target=keep_warm, args=(self.hive.home, env), name="keep-warm", daemon=True).start()

    def _redraw_rows(self) -> None:
        """Rebuild the colonies list soon: the events of one batch (ten hosts' snapshots arriving at once) share
        one rebuild."""
        if not self._rows_pending:
            self._rows_pending = True
            self.call_later(self._redraw_rows_now)

    def _redraw_rows_now(self) -> None:
        self._rows_pending = False
        rows = []
        for rec in self.records:
            services = self.hive.services(rec.name)
            states = [str(getattr(r, "state", "")) for r in services.values()]
            rows.append(
                ColonyRow(
                    name=rec.name,
                    state=rec.state,
                    stage=rec.stage,
                    branch=rec.branch,
                    age=self.clock.age(rec.created_at),
                    activity=self.activity.get(rec.name) if rec.state == lc.RUNNING else None,
                    title=self.titles.get(rec.name, "") if rec.state == lc.RUNNING else "",
                    services=len(services),
                    services_up=sum(s in ("ready", "running") for s in states),
                    services_failed=sum(s in ("crashed", "failed") for s in states),
                    work=self.live.badge(rec.name),
                    note=f"host stopped · kill -CONT {stopped}"
                    if (stopped := self.stopped_hosts.get(rec.name))
                    else f"host not answering · pid {silent}"
                    if (silent := self.silent_hosts.get(rec.name))
                    else "",
                )
            )
        for failed in self._listed_failures():
            rows.append(
                ColonyRow(
                    name=failed.name,
                    state=lc.FAILED,
                    stage=failed.stage,
                    branch="",
                    age=self.clock.age(failed.at),
                    note="spawn rolled back · n again · d dismiss",
                )
            )
        for colonies in self.query(ColoniesList):  # none while the app ends (a redraw called for just before)
            colonies.set_rows(rows)

    def _tick_ages(self) -> None:
        ages = {rec.name: self.clock.age(rec.created_at) for rec in self.records}
        ages.update((failed.name, self.clock.age(failed.at)) for failed in self._listed_failures())
        for colonies in self.query(ColoniesList):  # none while the app ends
            colonies.set_ages(ages)

    async def _check_hosts(self) -> None:
        """A colony host that is stopped (kill -STOP) or hung holds its lock and takes connections, so nothing else
        tells: its row, its terminal's place and a notice say so, and what to do, until it runs (answers) again."""
        names = [rec.name for rec in self.records if rec.state in (lc.RUNNING, lc.STARTING, lc.STOPPING)]
        quiet = self.hive.silent_hosts(names, HOST_SILENT)
        stopped, pids = await asyncio.to_thread(lambda: (self.hive.stopped_hosts(names), self.hive.host_pids(quiet)))
        silent = {name: pid for name, pid in pids.items() if name not in stopped}
        if stopped == self.stopped_hosts and silent == self.silent_hosts:
            return
        news = [
            (name, f"is stopped: its agent and services get nothing until kill -CONT {pid}", pid)
            for name, pid in stopped.items()
            if self.stopped_hosts.get(name) != pid
        ] + [
            (
                name,
                f"has not answered for {HOST_SILENT:.0f} s: what it shows may be stale. If it stays so, "
                f"`stem stop {name}` ends it",
                pid,
            )
            for name, pid in silent.items()
            if self.silent_hosts.get(name) != pid
        ]
        for name, says, pid in news:
            self.notify(f"{name}'s colony host (pid {pid}) {says}", severity="warning", timeout=10)
        self.stopped_hosts, self.silent_hosts = stopped, silent
        self._redraw_rows()
        if self.selected is not None:
            self._attach_terminal()
            self._show_services()

    def _listed_failures(self) -> list[FailedSpawn]:
        """The failed spawns the list shows: those whose name no colony has taken since (from another shell)."""
        names = {r.name for r in self.records}
        return [f for f in self.failed_spawns.values() if f.name not in names]

    def selected_record(self) -> ColonyRecord | None:
        return next((r for r in self.records if r.name == self.selected), None)

    def selected_failure(self) -> FailedSpawn | None:
        """The selected entry when it is a spawn that failed (nothing of it exists any more)."""
        return next((f for f in self._listed_failures() if f.name == self.selected), None)

    def selected_service(self) -> str | None:
        return self.query_one(ServicesList).selected

    def select_colony(self, name: str) -> None:
        colonies = self.query_one(ColoniesList)
        for index in range(colonies.option_count):
            if colonies.get_option_at_index(index).id == name:
                colonies.highlighted = index
                break
        if self.selected != name:
            self.selected = name
            self.selected_file = None
            self._show_selected()

    @on(ColonySelected)
    def _colony_selected(self, message: ColonySelected) -> None:
        if message.name != self.selected:
            self.selected = message.name
            self.selected_file = None
            self._show_selected()

    def _show_selected(self) -> None:
        """Everything on the right and in panels 2 and 3 follows the selected colony."""
        name = self.selected
        self.hive.log_lines_changed()  # its hosts' log lines, not the others'
        failed = self.selected_failure()
        self._show_services()
        self._show_changes()
        if name is not None and failed is None:  # a failed spawn has no worktree to ask about
            self._load_changes(name)
        self._attach_terminal()
        if failed is not None:
            self.query_one(LogsView).show(name, list(failed.logs))
        elif name:
            self._load_logs(name)
        else:
            self.query_one(LogsView).show(None, [])
        self._show_info()
        if self.query_one(MainView).tab == "diff":
            self._load_diff()

    @work(group="logs", exclusive=True, exit_on_error=False)
    async def _load_logs(self, name: str) -> None:
        """The colony's log into the Logs tab: from its host, or from the disk off the loop."""
        try:
            entries = await self.hive.log_entries(name)
        except StemError:
            entries = []
        if name == self.selected:
            self.query_one(LogsView).show(name, entries)

    def _show_services(self) -> None:
        name = self.selected
        services = self.hive.services(name) if name else {}
        note = "no colony selected" if name is None else "no services in colony.toml"
        rec = self.selected_record()
        if rec is not None and rec.state != lc.RUNNING:
            note = f"none running ({rec.state})"
        elif rec is not None and rec.name in self.stopped_hosts:
            note = "not known: its colony host is stopped"
        elif rec is not None and rec.name in self.silent_hosts:
            note = "not known: its colony host does not answer"
        elif rec is not None and self.hive.agent(rec.name) is None:
            note = "not known yet: its colony host has not answered"
        elif self.selected_failure() is not None:
            note = "none: the spawn failed"
        self.query_one(ServicesList).show(services, note)

    def _show_changes(self) -> None:
        name = self.selected
        if name is None:
            self.query_one(ChangesList).show(None, "no colony selected")
            return
        if self.selected_failure() is not None:
            self.query_one(ChangesList).show(None, "none: the spawn failed")
            return
        files = self.changes.get(name)
        self.query_one(ChangesList).show(
            files, "no changes yet" if files is not None else "not watched yet", overlaps=self.live.file_overlaps(name)
        )

    @work(group="changes", exclusive=True, exit_on_error=False)
    async def _load_changes(self, name: str) -> None:
        try:
            files: tuple[FileChange, ...] | None = await self.hive.changes(name)
        except StemError:
            files = None
        if files is not None and name not in self.changes:
            # A ChangesUpdated event that arrived meanwhile is newer than this answer.
            self.changes[name] = files
        if name == self.selected:
            self._show_changes()

    def _attach_terminal(self) -> None:
        name = self.selected
        terminal = self.query_one(TerminalView)
        if terminal.awaiting is not None and name != terminal.awaiting:
            return  # keep the terminal that waits for a spawning colony's agent where the user types
        session = self.hive.agent(name) if name else None
        terminal.show(name if session else None, session)
        terminal.display = session is not None
        note = self.query_one("#no-agent", Static)
        note.display = session is None
        if session is None:
            rec = self.selected_record()
            failed = self.selected_failure()
            if failed is not None:
                note.update(
                    Content.assemble(
                        Content.styled(failed.name, "bold"),
                        f"'s spawn failed {failed.when} and was rolled back: nothing of it is left. ",
                        "Info and Logs tell why; ",
                        Content.styled("n", "bold $accent"),
                        " spawns it again, ",
                        Content.styled("d", "bold $accent"),
                        " dismisses it.",
                    )
                )
            elif rec is None:
                note.update(Content.styled("no colony selected", "$text-muted"))
            elif rec.state != lc.RUNNING:
                note.update(
                    Content.assemble(
                        Content.styled(rec.name, "bold"),
                        f" is {rec.state}: no agent runs. ",
                        Content.styled("s", "bold $accent"),
                        " starts it." if rec.state in lc.STARTABLE else "",
                    )
                )
            elif (pid := self.stopped_hosts.get(rec.name)) is not None:
                note.update(
                    _host_note(rec.name, f"(pid {pid}) is stopped: it answers nothing until ", f"kill -CONT {pid}")
                )
            elif (pid := self.silent_hosts.get(rec.name)) is not None:
                note.update(
                    _host_note(
                        rec.name, f"(pid {pid}) does not answer. If it stays so, ", f"stem stop {rec.name}", " ends it."
                    )
                )
            else:
                note.update(Content.assemble(Content.styled(rec.name, "bold"), "'s agent is starting…"))

    def _show_info(self) -> None:
        self._load_info(self.selected)

    @work(group="info", exclusive=True, exit_on_error=False)
    async def _load_info(self, name: str | None) -> None:
        rec = self.selected_record()
        failed = self.selected_failure()
        if failed is not None:
            self.query_one(InfoView).show_failed(failed, self.errors.get(failed.name, []))
            return
        transitions = await asyncio.to_thread(self.hive.transitions, name) if name else []
        agent = await asyncio.to_thread(self.hive.agent_choice, name) if name and rec is not None else None
        services = self.hive.services(name) if name else {}
        extras = await self.live.info_extras(name) if name and rec is not None else None
        self.query_one(InfoView).show(
            rec,
            transitions,
            services,
            self.errors.get(name or "", []),
            sections=extras.sections if extras else (),
            preview=extras.preview if extras and self.live.figures else None,
            preview_note=extras.preview_note if extras else "",
            agent=agent,
        )

    @on(FileSelected)
    def _file_selected(self, message: FileSelected) -> None:
        self.selected_file = message.path
        if message.show:
            self.show_tab("diff")
        elif self.query_one(MainView).tab == "diff":
            self._load_diff()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-diff":
            self._load_diff()
        self.query_one(HintBar).update_hints()

    def _load_diff(self) -> None:
        rec = self.selected_record()
        if rec is None:
            self.query_one("#diff-title", Static).update("")
            self.query_one(DiffView).show("", "")
            return
        self._diff_worker(rec, self.selected_file)

    @work(group="diff", exclusive=True, exit_on_error=False)
    async def _diff_worker(self, rec: ColonyRecord, path: str | None) -> None:
        if self.live.diff_vs_target:  # `t`: against the target, from its merge base with the colony
            found = await self.hive.target_diff(rec.name)
            text = file_section(found.text, path) if path else found.text
            against = f"{found.target or rec.base_ref} (merge base {found.base[:10]})"
            title = f"{rec.name}: {path} against {against}" if path else f"{rec.name}: every change against {against}"
        else:
            text = await self.hive.diff(rec.name, path)
            title = f"{rec.name}: {path}" if path else f"{rec.name}: every change against {rec.base_ref}"
        self.query_one("#diff-title", Static).update(Content.styled(title, "bold"))
        self.query_one(DiffView).show(title, text)

    # -------------------------------------------------------------------------------------------- focus

    def action_focus_panel(self, panel: str) -> None:
        if panel == "colonies":
            self.query_one(ColoniesList).focus()
        elif panel == "services":
            self.query_one(ServicesList).focus()
        elif panel == "changes":
            self.query_one(ChangesList).focus()
        else:
            self.query_one(MainView).focus_target().focus()

    def action_next_tab(self) -> None:
        self._step_tab(1)

    def action_prev_tab(self) -> None:
        self._step_tab(-1)

    def _step_tab(self, delta: int) -> None:
        main = self.query_one(MainView)
        inside = self.focused is not None and main in self.focused.ancestors_with_self
        main.step(delta)
        if inside:
            # Never into the terminal itself: the next `]` would be typed into the agent.
            self.call_after_refresh(lambda: main.focus_target(enter=False).focus())

    def show_tab(self, tab: str) -> None:
        self.query_one(MainView).switch(tab)

    @on(OpenTerminal)
    def _open_terminal(self, message: OpenTerminal) -> None:
        self.open_terminal(message.name)

    def action_enter_terminal(self) -> None:
        """enter on the Terminal tab: its keys go to the selected colony's agent from now on."""
        if self.selected is not None:
            self.open_terminal(self.selected)

    def _failed_hint(self) -> bool:
        """On a failed spawn's entry, say what can be done with it instead of acting; whether it was one."""
        failed = self.selected_failure()
        if failed is not None:
            self.notify(
                f"{failed.name}'s spawn failed and was rolled back: n spawns it again, d dismisses it",
                severity="warning",
            )
        return failed is not None

    def open_terminal(self, name: str) -> None:
        self.select_colony(name)
        if self._failed_hint():
            return
        self.show_tab("terminal")
        self._attach_terminal()
        terminal = self.query_one(TerminalView)
        release = self.hold_keys()  # enter then text: the text is the agent's

        def focus() -> None:
            try:
                if terminal.session is not None:
                    self.screen.set_focus(terminal)
                else:
                    self.notify(f"{name} has no agent running", severity="warning")
            finally:
                release()

        self.call_after_refresh(focus)  # shown and laid out first: a hidden widget takes no focus

    @on(TerminalView.Released)
    def _terminal_released(self, _message: TerminalView.Released) -> None:
        self.query_one(ColoniesList).focus()

    # ------------------------------------------------------------------------------------------ actions

    def action_new_colony(self) -> None:
        taken = [r.name for r in self.records]
        failed = self.selected_failure()
        again = SpawnRequest(failed.name, Path(failed.repo), failed.base, failed.agent, failed.task) if failed else None
        form = SpawnForm(taken=taken, repo=self.default_repo, settings=self.settings, again=again)
        self._spawn_form = form

        def spawn(request: SpawnRequest | None) -> None:
            # The result callback runs a message or two after the form is gone: until then the form still catches
            # what is typed, so no key slips onto the colony list in between.
            self._spawn_form = None
            form.validating = False
            self._spawn(request, typed=form.typeahead)

        self.push_screen(form, spawn)

    def _spawn(self, request: SpawnRequest | None, typed: Iterable[tuple[str, str | None]] = ()) -> None:
        if request is None:
            return
        name = request.name
        trace = FailedSpawn(
            name, str(request.repo), request.base, request.agent, request.task, started=self.clock.now()
        )
        self._tracing[name] = trace
        if self.failed_spawns.pop(name, None) is not None:  # tried again: the old failure gives way
            self.errors.pop(name, None)
            self._redraw_rows()

        # Focus goes to the new colony's terminal at once, before the spawn is done: what the user types next is
        # meant for the agent, and must neither be lost nor land on the colony list as commands.
        terminal = self.query_one(TerminalView)
        self.show_tab("terminal")
        terminal.expect(request.name, typed=typed)
        terminal.display = True
        self.query_one("#no-agent", Static).display = False
        # Now, not after a callback (`focus()`): a command key on the panels runs as it arrives, so one typed in
        # between would be taken as a command (a stop, a new form) instead of the agent's.
        terminal.screen.set_focus(terminal)

        async def spawn() -> None:
            self.notify(f"spawning {request.name} from {request.repo} at {request.base}…")
            try:
                rec = await self.hive.spawn(
                    request.name, request.repo, request.base, agent=request.agent, task=request.task
                )
            except BaseException as exc:
                self._tracing.pop(name, None)
                terminal.cancel_expect()
                if isinstance(exc, Exception):
                    # Listed until dismissed, selected, with its stage, reason and output in Info and Logs.
                    trace.at = self.clock.now()
                    trace.reason = str(exc) if isinstance(exc, StemError) else f"{exc!r}"
                    self.failed_spawns[name] = trace
                    self.refresh_colonies()
                    self.select_colony(name)
                self._attach_terminal()
                self.query_one(ColoniesList).focus()
                raise
            self._tracing.pop(name, None)
            self.notify(f"{rec.name} is {rec.state} at {rec.ip}")
            self.refresh_colonies()
            self.select_colony(rec.name)
            if terminal.awaiting == rec.name:
                self.open_terminal(rec.name)

        self._colony_work(request.name, spawn(), f"spawn {request.name}")

    def action_stop_start(self) -> None:
        rec = self.selected_record()
        if rec is None and self._failed_hint():
            return
        if rec is None:
            self.notify("no colony selected", severity="warning")
            return
        name = rec.name
        if rec.state == lc.RUNNING:

            async def stop() -> None:
                await self.hive.stop(name)
                self.notify(f"{name} stopped")

            self._colony_work(name, stop(), f"stop {name}")
        elif rec.state in lc.STARTABLE:

            async def start() -> None:
                await self.hive.start(name)
                self.notify(f"{name} is running again")

            self._colony_work(name, start(), f"start {name}")
        else:
            self.notify(f"{name} is {rec.state}: wait until it is running or stopped", severity="warning")

    def action_merge(self) -> None:
        """`m`: the merge dialog of the selected colony (files, +/-, conflicts, target, squash)."""
        if not self._failed_hint():
            self.live.merge_selected()

    def action_commit(self) -> None:
        """`c`: commit the selected colony's uncommitted work on its branch (asks for the message)."""
        if not self._failed_hint():
            self.live.commit_selected()

    def action_sync(self) -> None:
        """`u`: merge the target's new commits into the selected colony's worktree."""
        if not self._failed_hint():
            self.live.sync_selected()

    def peer_selected(self, source: str | None) -> None:
        """The palette's peering: the selected colony reads `source` through a read-only snapshot at
        .shared/SOURCE (None: refresh every snapshot it reads). Off the loop; the outcome is a notification."""
        name = self.selected
        if name is None:
            return

        async def run() -> None:  # a refusal is shown where every colony worker's is (on_worker_state_changed)
            if source is None:
                done = await self.hive.refresh_peers(name)
                text = f"{name}: refreshed {len(done)} peer snapshot{'s' if len(done) != 1 else ''}"
            else:
                peering = await self.hive.peer(name, source)
                text = f"{name} reads {source} at .shared/{source}/ ({peering.files} files, read-only)"
            self.notify(text)
            if self.selected == name:
                self._show_info()

        self._colony_work(name, run(), f"peer {name}")

    def action_toggle_diff_target(self) -> None:
        """`t` in the Diff tab or panel 3: the diff against the colony's target, or against its spawn's base."""
        self.live.toggle_diff_target()

    def action_restart_service(self) -> None:
        name, service = self.selected, self.selected_service()
        if name is None or service is None:
            self.notify("select a service first (2)", severity="warning")
            return

        view = self.hive.services(name).get(service)
        key = (name, service)
        # Announced when the host reports the new runner with its count (ServiceState), which may come before or
        # after the answer to the request: the two travel on different connections.
        self._restarting[key] = view.restarts if view is not None else 0

        async def restart() -> None:
            try:
                await self.hive.restart_service(name, service)
            except BaseException:
                self._restarting.pop(key, None)
                raise

        self._colony_work(name, restart(), f"restart {name}/{service}")

    def action_destroy(self) -> None:
        rec = self.selected_record()
        failed = self.selected_failure()
        if failed is not None:  # nothing exists to remove: only the entry goes
            self.failed_spawns.pop(failed.name, None)
            self.errors.pop(failed.name, None)
            self.notify(f"dismissed the failed spawn of {failed.name}")
            self.refresh_colonies()
            return
        if rec is None:
            self.notify("no colony selected", severity="warning")
            return
        self._prepare_destroy(rec, release=self.hold_keys())

    def hold_keys(self) -> Callable[[], None]:
        """The keys typed from now on wait until the function returned is called: a key's dialog is open."""
        return self._key_order.hold()

    def holding_keys(self, work: Awaitable[Any]) -> Coroutine[Any, Any, Any]:
        """`work`, with the keys typed from now until it ends waiting for it (the dialog it opens)."""
        release = self.hold_keys()

        async def run() -> Any:
            try:
                return await work
            finally:
                release()

        return run()

    @work(thread=True, group="destroy-check", exclusive=True, exit_on_error=False)
    def _prepare_destroy(self, rec: ColonyRecord, note: str = "", release: Callable[[], None] | None = None) -> None:
        try:
            try:
                dirty, unmerged = self.hive.pending_work(rec)
            except StemError:
                dirty, unmerged = [], 0
            self.call_from_thread(self._confirm_destroy, rec, dirty, unmerged, note)
        finally:
            if release is not None:
                with contextlib.suppress(RuntimeError):  # the app has ended
                    self.call_from_thread(release)

    def _confirm_destroy(self, rec: ColonyRecord, dirty: list[str], unmerged: int, note: str = "") -> None:
        lines: list[Content] = [Content.styled(note, "$success"), Content("")] if note else []
        lines += [
            Content.assemble("This removes ", Content.styled(rec.name, "bold"), ":"),
            Content("  • its agent, services and every process inside it"),
            Content(f"  • its network namespace and address {rec.ip}"),
            Content(f"  • its worktree {rec.worktree}"),
            Content(f"  • its database {rec.db_path} and its log"),
        ]
        if unmerged:
            lines.append(
                Content.styled(
                    f"  • branch {rec.branch} is KEPT: {unmerged} commit{'s' if unmerged != 1 else ''} "
                    "not merged anywhere",
                    "$warning",
                )
            )
        else:
            lines.append(Content(f"  • branch {rec.branch} (nothing on it is unmerged)"))
        if dirty:
            listed = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            lines += [
                Content(""),
                Content.styled(
                    f"Uncommitted work is LOST: {len(dirty)} file{'s' if len(dirty) != 1 else ''} ({listed})",
                    "bold $error",
                ),
            ]
        body = Content("\n").join(lines)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._destroy(rec.name, force=bool(dirty))

        self.push_screen(ConfirmScreen(f"Destroy {rec.name}?", body, "Destroy", id="confirm-destroy"), confirmed)

    def _destroy(self, name: str, force: bool) -> None:
        async def destroy() -> None:
            report = await self.hive.destroy(name, force=force)
            if report.note:
                self.notify(f"destroyed {name}; {report.note}", severity="warning", timeout=15)
            elif report.kept_branch:
                self.notify(
                    f"destroyed {name}; kept branch {report.kept_branch} ({report.unmerged} unmerged commit(s))",
                    severity="warning",
                    timeout=10,
                )
            else:
                self.notify(f"destroyed {name}")
            self.refresh_colonies()

        self._colony_work(name, destroy(), f"destroy {name}")

    def _colony_work(self, colony: str, coro: Any, title: str) -> None:
        worker: Worker[Any] = self.run_worker(coro, name=title, group=f"colony-{colony}", exit_on_error=False)
        self._worker_colony[worker] = colony

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures become visible: a notification (and the colony's Info tab)."""
        worker = event.worker
        if event.state == WorkerState.ERROR:
            error = worker.error
            line = disk_trouble(error) if error is not None else None  # a full disk: the CLI's one line
            message = str(error) if isinstance(error, StemError) else line or f"{worker.name} failed: {error!r}"
            colony = self._worker_colony.get(worker)
            if colony is not None:
                self._problem(colony, message)
            else:
                self.notify(message, severity="error", timeout=10)
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self._worker_colony.pop(worker, None)

    # --------------------------------------------------------------------------------------- help, quit

    def action_help(self) -> None:
        rows: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            # Stem's own keys (they have binding ids, so they can be remapped); the widgets' built-in
            # navigation keys (arrows, page keys) work as everywhere and would only bury them.
            if binding.id is None or not binding.description or key in seen:
                continue
            seen.add(key)
            rows.append((self.get_key_display(binding.with_key(key)), binding.description, binding.id))
        focused = self.focused
        context = "terminal" if isinstance(focused, TerminalView) else (focused.id if focused else "app") or "app"
        if isinstance(focused, TerminalView):
            release = self.key_remaps.get("terminal.release", "ctrl+right_square_bracket").split(",")[0]
            rows.insert(0, (self.get_key_display(Binding(release, "")), "back to panels", "terminal.release"))
        self.push_screen(HelpScreen(context.replace("-", " "), rows))

    async def action_quit(self) -> None:
        body = self._quit_body()
        if body is None:
            await self._quit_now()
            return

        async def confirmed(yes: bool | None) -> None:
            if yes:
                await self._quit_now()

        self.push_screen(ConfirmScreen("Quit Stem?", body, "Quit", danger=False, id="confirm-quit"), confirmed)

    def _quit_body(self) -> Content | None:
        """What quitting leaves running or interrupts, for the quit dialog; None when nothing is."""
        running = [r.name for r in self.records if r.state == lc.RUNNING]
        busy = [f"{r.name} ({r.state})" for r in self.records if r.state in lc.IN_FLIGHT]
        if not running and not busy:
            return None
        names = ", ".join(running[:6]) + (f" and {len(running) - 6} more" if len(running) > 6 else "")
        count = len(running)
        lines: list[Content] = []
        if running:
            lines += [
                Content.assemble(
                    Content.styled(f"{count} colon{'ies are' if count != 1 else 'y is'} running", "bold"),
                    f": {names}.",
                ),
                Content(""),
                Content(
                    f"{'They keep' if count != 1 else 'It keeps'} running after you quit: each colony's host runs "
                    f"its agent and services, and the next `stem` (or `stem attach NAME`) shows "
                    f"{'them' if count != 1 else 'it'} again."
                ),
                Content(
                    f'To end {"them" if count != 1 else "it"}: `stem stop NAME`, or "Stop all colonies" in the '
                    "palette (:)."
                ),
            ]
        if busy:
            lines += [
                Content(""),
                Content.styled(
                    f"In the middle of a change: {', '.join(busy)}. Quitting interrupts it; "
                    "the next stem (or stem gc) finishes or rolls it back.",
                    "$warning",
                ),
            ]
        return Content("\n").join(lines)

    def _update_quit_dialog(self) -> None:
        """The quit dialog, if open, says what runs now: a colony stopped or destroyed meanwhile (from a shell, by
        another UI) is no longer named as running."""
        for screen in self.screen_stack:
            if isinstance(screen, ConfirmScreen) and screen.id == "confirm-quit":
                screen.set_body(self._quit_body() or Content("No colony is running any more: nothing is left behind."))

    async def _quit_now(self) -> None:
        try:
            await self._release_hive()
        finally:
            self.exit(0)

    async def _release_hive(self) -> None:
        if self.own_hive:
            await self.hive.detach()

    async def action_stop_all(self) -> None:
        """Stop every running colony (asks first): their agents and services end; worktrees and data stay."""
        running = [r.name for r in self.records if r.state == lc.RUNNING]
        if not running:
            self.notify("no colony is running")
            return
        if len(running) == 1:
            body = Content(
                f"Stop {running[0]}, the one colony running? Its agent and services end now; its worktree, database"
                " and branch stay, and `s` (or stem start) brings it back."
            )
        else:
            body = Content(
                f"Stop {len(running)} colonies ({', '.join(running[:6])}{' and more' if len(running) > 6 else ''})?"
                " Their agents and services end now; their worktrees, databases and branches stay, and `s` (or stem"
                " start) brings each back."
            )

        async def confirmed(yes: bool | None) -> None:
            if yes:
                self._stop_all()

        self.push_screen(ConfirmScreen("Stop all colonies?", body, "Stop all", danger=True), confirmed)

    @work(group="stop-all", exclusive=True, exit_on_error=False)
    async def _stop_all(self) -> None:
        stopped = await self.hive.stop_all()
        self.notify(f"stopped {len(stopped)} colon{'ies' if len(stopped) != 1 else 'y'}")
        self.refresh_colonies()

    async def on_unmount(self) -> None:
        # However the app ends (q, SIGHUP of an SSH drop, SIGTERM) it only detaches: the colonies' hosts run on.
        # A hive it was given to run (`stem` itself) is closed in the loop it ran in.
        await self._release_hive()
        if self.close_hive:
            await self.hive.close()

    # ------------------------------------------------------------------------------------------- themes

    def action_command_palette(self) -> None:
        if self.use_command_palette and not isinstance(self.screen, CommandPalette):
            self.push_screen(StemPalette(id="--command-palette"))

    def action_pick_theme(self) -> None:
        self._theme_before_preview = self.theme
        self.push_screen(StemPalette(providers=[ThemeCommands], placeholder="Theme… (previewed as you move)"))

    def on_command_palette_option_highlighted(self, event: CommandPalette.OptionHighlighted) -> None:
        if self._theme_before_preview is None:
            return
        option = event.highlighted_event.option
        if isinstance(option, PaletteCommand) and option.hit.text in self.available_themes:
            self.theme = option.hit.text

    def on_command_palette_closed(self, event: CommandPalette.Closed) -> None:
        before, self._theme_before_preview = self._theme_before_preview, None
        if before is not None and not event.option_selected:
            self.theme = before

    def choose_theme(self, name: str) -> None:
        self._theme_before_preview = None
        self.theme = name
        self._save_theme(name)

    @work(thread=True, group="settings", exit_on_error=False)
    def _save_theme(self, name: str) -> None:
        if self.settings.path == Path(os.devnull):
            return
        save_setting("hive", "theme", name, path=self.settings.path)
        self.call_from_thread(self.notify, f"theme {name} saved in {self.settings.path}")

    def get_driver_class(self) -> type[Driver]:
        """Stem's driver: keys reach agents exactly as the user's terminal sent them (stem.input_parser)."""
        return StemDriver

    def get_key_display(self, binding: Binding) -> str:
        """Keys as people write them: ctrl+] rather than ^]."""
        shown = super().get_key_display(binding)
        return f"ctrl+{shown[1:]}" if shown.startswith("^") and len(shown) > 1 else shown


def _restarts(count: int) -> str:
    return f"{count} restart{'s' if count != 1 else ''}"


def _repo_of(path: Path) -> Path | None:
    from core.hive import Hive

    try:
        return Hive.check_source(path, None)
    except (StemError, OSError):
        return None


def _default_hive(settings: Settings) -> HiveAPI:
    from core.hive import Hive

    return Hive.from_environment(settings)


def run(hive_factory: Callable[[Settings], HiveAPI] | None = None, *, headless: bool = False) -> int:
    """Run the app until the user quits; the exit code. A bad config or theme, or a hive another process owns,
    is one line on stderr and exit code 2. `hive_factory(settings)` makes the hive (default: from the
    environment, as the CLI does); `headless` runs without a terminal (tests)."""
    try:
        settings = load_settings()
        themes = load_themes(theme_dirs(settings.path))
        if settings.theme not in themes and settings.theme not in _builtin_themes():
            known = ", ".join(sorted({*themes, *_builtin_themes()}))
            raise StemError(f"{settings.path}: [hive] theme: no theme named {settings.theme!r} (known: {known})")
        keymap(settings.keys, settings.key_lines)
        hive = (hive_factory or _default_hive)(settings)
        # Read before the app runs (no event loop to hold up yet), so that the first frame lists them.
        records = hive.colonies()
    except StemError as exc:
        print(f"stem: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite_error()) as exc:  # a full disk under the hive (its registry cannot be opened)
        line = disk_trouble(exc)
        if line is None:
            raise
        print(f"stem: {line}", file=sys.stderr)
        return EXIT_USAGE
    from stem import warm_client

    keep = not headless and not warm_client.SERVING and os.environ.get("STEM_WARM") != "0"
    app = StemApp(hive, settings, themes=themes, close_hive=True, keep_warm=keep, records=records)
    app.run(headless=headless)
    if not headless:
        from core import warm as warm_process

        if not warm_process.hosts_running(hive.home):  # nothing runs in the hive: nothing of Stem's stays after it
            warm_process.stop(hive.home)
    if app.failure:
        print(f"stem: {app.failure}", file=sys.stderr)
        return EXIT_USAGE
    return app.return_code or 0


def _builtin_themes() -> set[str]:
    from textual.theme import BUILTIN_THEMES

    return set(BUILTIN_THEMES)


if __name__ == "__main__":
    sys.exit(run())
