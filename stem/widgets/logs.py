"""The Logs tab: the colony's log (setup, build, services), following new lines, filtered by source, searched.

The lines are drawn through Textual's Line API, as toolong's LogLines does: `render_line(y)` renders only the rows
on screen, and each rendered row is kept in an LRU cache keyed by (line, search), so a burst of new lines costs one
repaint of the visible rows and a search keystroke only recomputes which lines match. A line's own ANSI colours are
parsed once, when it arrives; no control character ever reaches the screen.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.geometry import Size
from textual.markup import escape
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip
from textual.widgets import Input, Static

from core.colony_log import KEEP_PER_SOURCE
from core.screen_cells import SGR_SEQ_SPLIT
from stem.hive_view import Clock
from stem.keys import bind

__all__ = ["MAX_LINES", "LogEntry", "LogLines", "LogsView", "line_text"]

# Lines kept per colony, oldest dropped first: the host's whole log (two 4 MiB generations) at ~170 bytes a line.
MAX_LINES = 50_000
# Rendered rows kept: a few screens of scrolling back and forth at any width.
CACHE_ROWS = 1024
# The followed view is brought up to date at most this often while lines arrive: a flooding service (thousands of
# lines a second) would otherwise have its rows rendered at Textual's 60 frames a second, most of them gone before
# anyone reads them (measured: the UI at 91% of a core for 21,000 lines/s shown, 65% with this).
SYNC_GAP = 1 / 10
SOURCE_WIDTH = 8

# Control characters that a terminal would act on (C0 but tab, DEL, C1): left in a row they move the cursor or
# start a sequence, the row no longer fits its cells and the panel's border is drawn in the wrong column.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# rich parses OSC sequences only when they end with ST (ESC \); many programs end them with BEL.
_OSC_BEL = re.compile("\x1b\\]([^\x07\x1b]*)\x07")


class LogEntry(Protocol):
    """A line of a colony's log: `core.colony_log.Entry`, or the `LogLine` event that announced it."""

    @property
    def seq(self) -> int: ...

    @property
    def at(self) -> float: ...

    @property
    def source(self) -> str: ...  # "name!" is the name's stderr

    @property
    def text(self) -> str: ...


def line_text(raw: str) -> Text | str:
    """What a log line shows: a `Text` with the program's own colours when it has escape sequences, else the
    string itself; either way without a control character (a tab becomes spaces, anything else `�`)."""
    if _CONTROL.search(raw) is None:
        return raw.expandtabs() if "\t" in raw else raw
    # A CR keeps what follows it, as on a terminal (a progress bar's last state); rich drops BS, BEL, VT and FF.
    text = Text.from_ansi(_OSC_BEL.sub("\x1b]\\1\x1b\\\\", raw), end="")
    text.expand_tabs()
    plain = text.plain
    if _CONTROL.search(plain) is not None:  # a lone ESC, NUL, ...: the same length keeps the colours in place
        text = Text(_CONTROL.sub("\ufffd", plain), style=text.style, spans=text.spans, end="")
    return text if text.spans or text.style else text.plain


def plain_text(raw: str) -> str | None:
    """The text of `line_text(raw)` without parsing it, for a line whose only escape sequences are SGR and that
    has no tab (a service's coloured output); None for any other (`line_text` then tells)."""
    plain = SGR_SEQ_SPLIT.sub("", raw)  # the colours services print with: the screen's own pattern
    if "\t" in plain or _CONTROL.search(plain) is not None:
        return None
    return plain


@dataclass(slots=True)
class _Line:
    """A line as it arrived: its text, what search matches and its width at once; its body (with its colours)
    when it is first drawn. Most lines of a flood are never drawn (another tab in front, scrolled past), and
    parsing their colours was most of a flooded UI's time."""

    seq: int
    at: float
    source: str  # without the "!" of stderr
    error: bool  # a service's stderr
    raw: str  # as the service printed it
    parsed: Text | str | None  # `line_text(raw)`, once drawn (at once when it has other escapes than colours)
    plain: str  # the body's text
    folded: str  # the body's text in lower case: what search matches
    width: int  # cells of the whole row: time, source and body

    @property
    def body(self) -> Text | str:
        parsed = self.parsed
        if parsed is None:
            parsed = self.parsed = line_text(self.raw)
        return parsed


class _Styles(NamedTuple):
    time: Style
    source: Style
    error: Style
    match: Style


class LogLines(ScrollView, can_focus=True):
    """The lines of one colony, filtered by source and search; focusable so j/k, page keys and the mouse scroll.

    `follow` keeps the last line in view; scrolling up stops it and `f` resumes it. Lines are identified by their
    seq: appending, prepending history and trimming the oldest never re-render a row that did not change.
    """

    ALLOW_SELECT = True

    BINDINGS = [
        bind("list.down", "scroll_down"),
        bind("list.up", "scroll_up"),
        bind("logs.follow", "toggle_follow"),
        bind("logs.service", "next_source"),
        bind("logs.search", "search"),
        # ScrollView's own left and right, with ids and words: `?` lists them, and a user can remap them.
        bind("logs.scroll_left"),
        bind("logs.scroll_right"),
    ]

    COMPONENT_CLASSES = {"logs--time", "logs--source", "logs--error", "logs--match"}

    DEFAULT_CSS = """
    LogLines {
        background: $surface;
        color: $foreground;
        overflow-x: auto;
        overflow-y: scroll;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    LogLines > .logs--time {
        color: $text-muted;
    }
    LogLines > .logs--source {
        color: $secondary;
    }
    LogLines > .logs--error {
        color: $error;
    }
    LogLines > .logs--match {
        background: $accent 40%;
        text-style: bold;
    }
    """

    follow: var[bool] = var(True)
    """Keep the last line in view as lines arrive."""

    def __init__(
        self, clock: Clock, *, max_lines: int = MAX_LINES, name: str | None = None, id: str | None = None
    ) -> None:
        super().__init__(name=name, id=id)
        self.clock = clock
        self.max_lines = max_lines
        self.keep_per_source = KEEP_PER_SOURCE  # each source's last lines outlive a trim, as in the host's log
        self._lines: list[_Line] = []
        self._base = 0  # how many lines were trimmed from the front: line i is self._lines[i - self._base]
        self._seqs: set[int] = set()
        self._counts: Counter[str] = Counter()  # lines kept of each source
        self._shown: list[int] = []  # the lines that pass the filter, in order: row y shows line self._shown[y]
        self._source: str | None = None
        self._search = ""
        self._folded = ""
        self._width = 0
        self._last_seq = 0
        self._prefix = cell_len(clock.stamp(0.0)) + 1
        self._cache: LRUCache[tuple[int, str], Strip] = LRUCache(CACHE_ROWS)
        self._styles: _Styles | None = None
        self._sync_pending = False
        self._last_sync = 0.0
        self._shifted = 0  # rows trimmed from the top since the last sync, while paused
        self._scrolling = False  # a scroll of our own, not the user's

    # ------------------------------------------------------------------------------------------------ data

    @property
    def line_count(self) -> int:
        """Lines kept, shown or not."""
        return len(self._lines)

    @property
    def shown_count(self) -> int:
        """Lines that pass the source filter and the search."""
        return len(self._shown)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def sources(self) -> set[str]:
        """The sources of the lines kept (without the "!" of stderr)."""
        return {line.source for line in self._lines}

    def replace(self, entries: Iterable[LogEntry], *, keep_place: bool = False) -> None:
        """Show `entries` instead of the current lines. With `keep_place` (the same log read again) a paused view
        keeps the line at its top there if it is still among them; otherwise it shows the last lines."""
        anchor = self._top_seq() if keep_place else None
        self._cache.clear()
        self._seqs = set()
        self._set_lines(self._parse(entries))
        self._refilter()
        self._sync(anchor_seq=anchor, end=not keep_place)

    def merge(self, entries: Iterable[LogEntry]) -> None:
        """History: the lines of `entries` not here yet (by seq) join in seq order, usually all before the live
        ones; the rows already rendered stay cached, and while paused the line at the top stays there."""
        new = self._parse(entries)
        if not new:
            return
        anchor = self._top_seq()
        new.sort(key=_seq)
        if not self._lines or new[-1].seq < self._lines[0].seq:
            lines = new + self._lines  # the usual case: the history ends where the live lines begin
        else:
            lines = sorted(self._lines + new, key=_seq)
        self._set_lines(lines)
        self._refilter()
        self._sync(anchor_seq=anchor)

    def append(self, entries: Iterable[LogEntry]) -> None:
        """New lines at the end. Only the list grows; the repaint of the visible rows waits for the burst to end."""
        new = self._parse(entries)
        if not new:
            return
        start = self._base + len(self._lines)
        self._lines.extend(new)
        self._counts.update(line.source for line in new)
        self._width = max(self._width, *(line.width for line in new))
        self._last_seq = max(self._last_seq, *(line.seq for line in new))
        self._shown.extend(start + offset for offset, line in enumerate(new) if self._passes(line))
        if len(self._lines) > self.max_lines + self.max_lines // 8:  # trimmed in steps: a trim is O(lines)
            self._trim(len(self._lines) - self.max_lines)
        if not self._sync_pending:
            self._sync_pending = True
            wait = self._last_sync + SYNC_GAP - time.monotonic()
            if wait > 0:
                self.set_timer(wait, self._sync_late)
            else:
                self.call_later(self._sync)

    def set_filter(self, source: str | None, search: str) -> None:
        """Show only `source`'s lines (None: every source) containing `search` (any case), highlighted. A longer
        search only looks among the lines that matched the shorter one. While paused, the view jumps to the first
        match at or after the line that was at the top."""
        folded = search.lower()
        if source == self._source and folded == self._folded:
            if search != self._search:
                self._search = search
            return
        anchor = self._top_index()
        narrowing = source == self._source and self._folded in folded
        self._source, self._search, self._folded = source, search, folded
        self._refilter(self._shown if narrowing else None)
        self._sync(anchor_index=anchor)

    # ------------------------------------------------------------------------------------------ follow

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

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._scroll_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self.follow and not self._scrolling and new_value < old_value and new_value < self.max_scroll_y:
            self.follow = False  # the user scrolled up to read

    def on_resize(self, event: events.Resize) -> None:
        if self.follow:
            self._scroll_end()

    def _scroll_end(self) -> None:
        self._scroll(None)

    def _scroll(self, y: int | None) -> None:
        """Scroll to row `y` (None: the end) as the widget's own move, which never stops following."""
        self._scrolling = True
        try:
            if y is None:
                self.scroll_end(animate=False, immediate=True, x_axis=False)
            else:
                self.scroll_to(y=y, animate=False, immediate=True)
        finally:
            self._scrolling = False

    # ------------------------------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if row >= len(self._shown):
            return Strip.blank(width, base)
        line = self._lines[self._shown[row] - self._base]
        selection = self.text_selection
        span = selection.get_span(row) if selection is not None else None
        if span is None:
            key = (line.seq, self._folded)
            strip = self._cache.get(key)
            if strip is None:
                strip = self._render_row(line, base, None)
                self._cache.set(key, strip)
        else:
            strip = self._render_row(line, base, span)
        # Simplified, the padding joins the last piece of text when they share a style: fewer segments to write.
        return strip.crop_extend(scroll_x, scroll_x + width, base).simplify().apply_offsets(scroll_x, row)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._cache.clear()

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        lines, base = self._lines, self._base
        text = "\n".join(self._row_plain(lines[index - base]) for index in self._shown)
        return selection.extract(text), "\n"

    def _render_row(self, line: _Line, base: Style, span: tuple[int, int] | None) -> Strip:
        styles = self._styles or self._load_styles()
        body = Text(line.body, end="") if isinstance(line.body, str) else line.body.copy()
        if line.error:
            body.stylize_before(styles.error)  # the program's own colours win
        if self._search:
            body.highlight_words([self._search], styles.match, case_sensitive=False)
        text = Text.assemble(
            (self.clock.stamp(line.at) + " ", styles.time),
            (f"{line.source:>{SOURCE_WIDTH}} ", styles.error if line.error else styles.source),
            body,
            end="",
            no_wrap=True,
        )
        text.stylize_before(base)
        if span is not None:
            start, end = span
            text.stylize(
                self.screen.get_component_rich_style("screen--selection"), start, len(text) if end < 0 else end
            )
        return Strip(text.render(self.app.console), text.cell_len)

    def _load_styles(self) -> _Styles:
        style = self.get_component_rich_style
        self._styles = _Styles(
            style("logs--time", partial=True),
            style("logs--source", partial=True),
            style("logs--error", partial=True),
            style("logs--match", partial=True),
        )
        return self._styles

    def _row_plain(self, line: _Line) -> str:
        return f"{self.clock.stamp(line.at)} {line.source:>{SOURCE_WIDTH}} {line.plain}"

    # ------------------------------------------------------------------------------------------ internals

    def _parse(self, entries: Iterable[LogEntry]) -> list[_Line]:
        """The entries not seen yet (by seq), parsed."""
        seqs = self._seqs
        prefix = self._prefix
        lines: list[_Line] = []
        for entry in entries:
            if entry.seq in seqs:
                continue
            seqs.add(entry.seq)
            source = entry.source.rstrip("!")
            raw = entry.text
            body: Text | str | None
            if _CONTROL.search(raw) is None:
                body = plain = raw.expandtabs() if "\t" in raw else raw
            else:
                found = plain_text(raw)
                if found is None:
                    body = line_text(raw)
                    plain = body if isinstance(body, str) else body.plain
                else:
                    body, plain = None, found  # parsed when drawn
            width = prefix + max(SOURCE_WIDTH, len(source)) + 1 + cell_len(plain)
            lines.append(
                _Line(entry.seq, entry.at, source, entry.source.endswith("!"), raw, body, plain, plain.lower(), width)
            )
        return lines

    def _set_lines(self, lines: list[_Line]) -> None:
        if len(lines) > self.max_lines:
            lines = lines[-self.max_lines :]
        self._lines = lines
        self._base = 0
        self._seqs = {line.seq for line in lines}
        self._counts = Counter(line.source for line in lines)
        self._width = max((line.width for line in lines), default=0)
        self._last_seq = max(self._seqs, default=0)

    def _trim(self, count: int) -> None:
        """Drop the `count` oldest lines but each source's last `keep_per_source` (a flood of one service leaves
        the others' lines in view, as the host's log keeps them); the rows after them move up, which a paused view
        makes up for."""
        dropped = self._lines[:count]
        dropped_counts = Counter(line.source for line in dropped)
        keep = min(self.keep_per_source, self.max_lines // 10)  # a view kept small stays small
        left = {s: self._counts[s] - n for s, n in dropped_counts.items() if self._counts[s] - n < keep}
        kept: list[_Line] = []
        if left:  # some sources would keep too few lines: theirs are looked at (the flood's never are)
            for line in reversed([line for line in dropped if line.source in left]):
                if left[line.source] < keep:
                    left[line.source] += 1
                    kept.append(line)
            kept.reverse()
        gone = count - len(kept)
        if not gone:
            return
        stay = {line.seq for line in kept}
        self._seqs.difference_update(line.seq for line in dropped if line.seq not in stay)
        dropped_counts.subtract(line.source for line in kept)
        self._counts.subtract(dropped_counts)
        # The lines after the dropped ones keep their indices (line i is self._lines[i - self._base]); the kept
        # ones take those just before them.
        end = self._base + count
        self._lines[:count] = kept
        self._base += gone
        cut = bisect_left(self._shown, end)
        shown = [self._base + i for i, line in enumerate(kept) if self._passes(line)]
        self._shown[:cut] = shown
        self._shifted += cut - len(shown)
        self._width = max((line.width for line in self._lines), default=0)

    def _passes(self, line: _Line) -> bool:
        return (self._source is None or line.source == self._source) and self._folded in line.folded

    def _refilter(self, among: Sequence[int] | None = None) -> None:
        """Which lines pass the filter: among `among` (a superset of the answer), or all of them."""
        lines, base, source, folded = self._lines, self._base, self._source, self._folded
        candidates = range(base, base + len(lines)) if among is None else among
        if source is None and not folded:
            self._shown = list(candidates)
        elif source is None:
            self._shown = [i for i in candidates if folded in lines[i - base].folded]
        else:
            self._shown = [
                i for i in candidates if (line := lines[i - base]).source == source and folded in line.folded
            ]
        self._shifted = 0

    def _top_index(self) -> int | None:
        """The line at the top of the view while paused (None while following or empty)."""
        row = max(0, round(self.scroll_y) - self._shifted)  # rows trimmed since the last sync are gone already
        if self.follow or row >= len(self._shown):
            return None
        return self._shown[row]

    def _top_seq(self) -> int | None:
        index = self._top_index()
        return None if index is None else self._lines[index - self._base].seq

    def _sync(self, *, anchor_index: int | None = None, anchor_seq: int | None = None, end: bool = False) -> None:
        """Size the scroll area to the shown lines and put the right rows in view: the last ones while following
        (or if `end`), else the anchor line, else the same lines as before a trim."""
        self._sync_pending = False
        self._last_sync = time.monotonic()
        self.virtual_size = Size(self._width, len(self._shown))
        if anchor_seq is not None:
            anchor_index = next((self._base + i for i, line in enumerate(self._lines) if line.seq == anchor_seq), None)
        shifted, self._shifted = self._shifted, 0
        if self.follow or end:
            self._scroll_end()
        elif anchor_index is not None:
            self._scroll(bisect_left(self._shown, anchor_index))
        elif shifted:
            self._scroll(max(0, round(self.scroll_y) - shifted))
        self.refresh()

    def _sync_late(self) -> None:
        """The `_sync` an `append` put off (`SYNC_GAP`), unless another sync came first."""
        if self._sync_pending:
            self._sync()


def _seq(line: _Line) -> int:
    return line.seq


class LogsView(Vertical):
    """Status line (colony, source filter, follow, search), a search box, and the lines."""

    BINDINGS = [bind("logs.search_clear")]

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.colony: str | None = None
        self.source: str | None = None  # None: every source
        self.search = ""
        self._sources: list[str] = []
        self._status_pending = False

    def compose(self) -> ComposeResult:
        yield Static(id="logs-status")
        yield Input(placeholder="search the log…", id="logs-search", classes="hidden", disabled=True)
        yield LogLines(self.clock, id="logs-lines")

    def on_mount(self) -> None:
        self.watch(self._lines, "follow", self._status, init=False)
        self._status()

    @property
    def _lines(self) -> LogLines:
        return self.query_one(LogLines)

    # --------------------------------------------------------------------------------------------- data

    def show(self, colony: str | None, entries: Iterable[LogEntry]) -> None:
        """Show `colony`'s log from its entries (seq, at, source, text)."""
        if colony != self.colony:
            self.source = None
            self.search = ""
            self.query_one("#logs-search", Input).value = ""
        lines = self._lines
        lines.set_filter(self.source, self.search)
        lines.replace(entries, keep_place=colony == self.colony)
        if colony != self.colony:
            lines.scroll_to(x=0, animate=False, immediate=True)  # another colony's lines start at their start
        self.colony = colony
        self._sources = sorted(lines.sources())
        self._status()

    def load_history(self, colony: str, entries: Iterable[LogEntry]) -> None:
        """The whole log of `colony` as its host keeps it (setup and build output included): the lines not shown
        yet join in seq order before the live ones. Ignored if another colony is shown by now."""
        if colony != self.colony:
            return
        lines = self._lines
        lines.merge(entries)
        self._sources = sorted(lines.sources())
        self._status()

    def add(self, entry: LogEntry) -> None:
        """A new line of the shown colony."""
        self.add_many((entry,))

    def add_many(self, entries: Sequence[LogEntry]) -> None:
        """New lines of the shown colony, in order."""
        self._lines.append(entries)
        sources = {entry.source.rstrip("!") for entry in entries}
        if not sources <= set(self._sources):
            self._sources = sorted(sources.union(self._sources))
            self._status_soon()
        elif self.search or self.source is not None:
            self._status_soon()  # the count of matching lines

    @property
    def last_seq(self) -> int:
        return self._lines.last_seq

    @property
    def follow(self) -> bool:
        return self._lines.follow

    # ---------------------------------------------------------------------------------------- controls

    def toggle_follow(self) -> None:
        lines = self._lines
        lines.follow = not lines.follow

    def next_source(self) -> None:
        """Cycle the source filter: all, then each source in turn."""
        order: list[str | None] = [None, *self._sources]
        index = order.index(self.source) if self.source in order else 0
        self.source = order[(index + 1) % len(order)]
        self._filter()

    def open_search(self) -> None:
        box = self.query_one("#logs-search", Input)
        box.remove_class("hidden")
        box.disabled = False
        box.focus()

    @on(Input.Changed, "#logs-search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.search = event.value
        self._filter()

    @on(Input.Submitted, "#logs-search")
    def _search_done(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            event.input.add_class("hidden")
            event.input.disabled = True
        self._lines.focus()

    def action_clear_search(self) -> None:
        box = self.query_one("#logs-search", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.add_class("hidden")
            box.disabled = True
            self.search = ""
            self._filter()
            self._lines.focus()

    # ---------------------------------------------------------------------------------------- drawing

    def _filter(self) -> None:
        self._lines.set_filter(self.source, self.search)
        self._status()

    def _status_soon(self) -> None:
        """The status once the current burst of lines is in."""
        if not self._status_pending:
            self._status_pending = True
            self.call_later(self._status)

    def _status(self) -> None:
        self._status_pending = False
        if not self.is_mounted:
            return
        lines = self._lines
        shown = "all sources" if self.source is None else f"source {self.source}"
        parts = [
            f"[b]{self.colony or '-'}[/b]",
            f"{shown} [$text-muted](v)[/]",
            ("[$success]following[/]" if lines.follow else "[$warning]paused[/]") + " [$text-muted](f)[/]",
        ]
        if self.search:
            count = lines.shown_count
            parts.append(f"search [b]{escape(self.search)}[/b]: {count} line{'s' if count != 1 else ''}")
        else:
            parts.append("[$text-muted]/ search[/]")
        self.query_one("#logs-status", Static).update("  ·  ".join(parts))
