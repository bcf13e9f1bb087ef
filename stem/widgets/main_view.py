"""The main view on the right: tabs Terminal, Logs, Diff and Info for the selected colony; `[` and `]` switch."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static, TabbedContent, TabPane, Tabs

from stem.hive_view import Clock
from stem.keys import bind
from stem.textual_private import realign_tabs
from stem.widgets.diff import DiffView
from stem.widgets.info import InfoView
from stem.widgets.logs import LogLines, LogsView
from stem.widgets.terminal import TerminalView

__all__ = ["TABS", "MainView", "TerminalPane"]

TABS = ("terminal", "logs", "diff", "info")


class TerminalPane(TabPane, can_focus=True):
    """The Terminal tab. Focused (by `[`/`]` or tab), it shows the agent and keeps the panels' keys: the terminal
    takes the keys only when entered, so a user cycling tabs never types into the agent."""

    BINDINGS = [bind("terminal.enter", "app.enter_terminal")]


class MainView(Vertical):
    """Panel 0."""

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock

    def compose(self) -> ComposeResult:
        with TabbedContent(id="tabs", initial="tab-terminal"):
            with TerminalPane("Terminal", id="tab-terminal"):
                yield Static("", id="no-agent")
                yield TerminalView(id="terminal")
            with TabPane("Logs", id="tab-logs"):
                yield LogsView(self.clock, id="logs")
            with TabPane("Diff", id="tab-diff"):
                yield Static("", id="diff-title")
                yield DiffView(id="diff")
            with TabPane("Info", id="tab-info"):
                yield InfoView(self.clock, id="info")

    def on_mount(self) -> None:
        self.border_title = "[0] Main"
        # The tab strip is switched with [ and ]; it never takes the focus from the panels.
        self.query_one(Tabs).can_focus = False

    @property
    def tab(self) -> str:
        active = self.query_one(TabbedContent).active
        return active.removeprefix("tab-") if active else "terminal"

    def realign_tabs(self) -> None:
        """Put the active tab's underline under it."""
        realign_tabs(self.query_one(Tabs))

    def switch(self, tab: str) -> None:
        self.query_one(TabbedContent).active = f"tab-{tab}"

    def step(self, delta: int) -> str:
        tab = TABS[(TABS.index(self.tab) + delta) % len(TABS)]
        self.switch(tab)
        return tab

    def focus_target(self, enter: bool = True) -> Widget:
        """What gets the focus when the user jumps to the main view (`enter`: the terminal itself, which then
        takes every key; else its pane, where enter goes in)."""
        tab = self.tab
        if tab == "terminal":
            terminal = self.query_one(TerminalView)
            return terminal if enter and terminal.display else self.query_one(TerminalPane)
        if tab == "logs":
            return self.query_one(LogLines)
        if tab == "diff":
            return self.query_one(DiffView)
        return self.query_one(InfoView)
