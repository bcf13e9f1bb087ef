"""The Logs tab: the colony's log ring (setup, build, services), following new lines, filtered by source, searched.

Lines come from the core's ring (`ColonyLog.after(seq)`), so switching colonies or filters re-reads the ring rather
than keeping a second copy; new lines arrive as LogLine events and are appended when they pass the filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widgets import Input, RichLog, Static

from stem.hive_view import Clock
from stem.keys import bind

__all__ = ["LogsView"]

RING_LINES = 5000


class LogLines(RichLog):
    """The lines; focusable so j/k, page keys and the mouse scroll them."""

    BINDINGS = [
        bind("list.down", "scroll_down"),
        bind("list.up", "scroll_up"),
        bind("logs.follow", "toggle_follow"),
        bind("logs.service", "next_source"),
        bind("logs.search", "search"),
    ]

    def action_toggle_follow(self) -> None:
        self._view().toggle_follow()

    def action_next_source(self) -> None:
        self._view().next_source()

    def action_search(self) -> None:
        self._view().open_search()

    def _view(self) -> LogsView:
        view = self.parent
        assert isinstance(view, LogsView)
        return view


class LogsView(Vertical):
    """Status line (colony, source filter, follow, search), a search box, and the lines."""

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.colony: str | None = None
        self.source: str | None = None  # None: every source
        self.search = ""
        self.follow = True
        self._entries: list[Any] = []
        self._sources: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="logs-status")
        yield Input(placeholder="search the log…", id="logs-search", classes="hidden", disabled=True)
        yield LogLines(id="logs-lines", max_lines=RING_LINES, wrap=False, markup=False, highlight=False)

    def on_mount(self) -> None:
        self._status()

    # --------------------------------------------------------------------------------------------- data

    def show(self, colony: str | None, entries: Iterable[Any]) -> None:
        """Show `colony`'s log from its ring entries (seq, at, source, text)."""
        if colony != self.colony:
            self.source = None
            self.search = ""
            self.query_one("#logs-search", Input).value = ""
        self.colony = colony
        self._entries = list(entries)[-RING_LINES:]
        self._sources = sorted({e.source.rstrip("!") for e in self._entries})
        self._redraw()

    def add(self, entry: Any) -> None:
        """A new line of the shown colony."""
        self._entries.append(entry)
        if len(self._entries) > RING_LINES:
            del self._entries[: len(self._entries) - RING_LINES]
        source = entry.source.rstrip("!")
        if source not in self._sources:
            self._sources.append(source)
            self._sources.sort()
            self._status()
        if self._wanted(entry):
            self._write(entry)

    @property
    def last_seq(self) -> int:
        return self._entries[-1].seq if self._entries else 0

    # ---------------------------------------------------------------------------------------- controls

    def toggle_follow(self) -> None:
        self.follow = not self.follow
        lines = self.query_one(LogLines)
        lines.auto_scroll = self.follow
        if self.follow:
            lines.scroll_end(animate=False)
        self._status()

    def next_source(self) -> None:
        """Cycle the source filter: all, then each source in turn."""
        order: list[str | None] = [None, *self._sources]
        index = order.index(self.source) if self.source in order else 0
        self.source = order[(index + 1) % len(order)]
        self._redraw()

    def open_search(self) -> None:
        box = self.query_one("#logs-search", Input)
        box.remove_class("hidden")
        box.disabled = False
        box.focus()

    @on(Input.Changed, "#logs-search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.search = event.value
        self._redraw()

    @on(Input.Submitted, "#logs-search")
    def _search_done(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            event.input.add_class("hidden")
            event.input.disabled = True
        self.query_one(LogLines).focus()

    def key_escape(self) -> None:
        box = self.query_one("#logs-search", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.add_class("hidden")
            box.disabled = True
            self.search = ""
            self._redraw()
            self.query_one(LogLines).focus()

    # ---------------------------------------------------------------------------------------- drawing

    def _wanted(self, entry: Any) -> bool:
        if self.source is not None and entry.source.rstrip("!") != self.source:
            return False
        return not self.search or self.search.lower() in entry.text.lower()

    def _redraw(self) -> None:
        lines = self.query_one(LogLines)
        lines.clear()
        for entry in self._entries:
            if self._wanted(entry):
                self._write(entry)
        if self.follow:
            lines.scroll_end(animate=False)
        self._status()

    def _write(self, entry: Any) -> None:
        lines = self.query_one(LogLines)
        error = entry.source.endswith("!")  # a service's stderr
        text = Text.assemble(
            (self.clock.stamp(entry.at) + " ", self._style("logs--time")),
            (f"{entry.source.rstrip('!'):>8} ", self._style("logs--error" if error else "logs--source")),
            (entry.text, self._style("logs--error") if error else Style()),
        )
        if self.search:
            text.highlight_words([self.search], self._style("logs--match"), case_sensitive=False)
        lines.write(text, scroll_end=self.follow)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name, partial=True)

    COMPONENT_CLASSES = {"logs--time", "logs--source", "logs--error", "logs--match"}

    def _status(self) -> None:
        if not self.is_mounted:
            return
        shown = "all sources" if self.source is None else f"source {self.source}"
        parts = [
            f"[b]{self.colony or '-'}[/b]",
            f"{shown} [$text-muted](v)[/]",
            ("[$success]following[/]" if self.follow else "[$warning]paused[/]") + " [$text-muted](f)[/]",
        ]
        if self.search:
            count = sum(1 for e in self._entries if self._wanted(e))
            parts.append(f"search [b]{escape(self.search)}[/b]: {count} line{'s' if count != 1 else ''}")
        else:
            parts.append("[$text-muted]/ search[/]")
        self.query_one("#logs-status", Static).update("  ·  ".join(parts))
