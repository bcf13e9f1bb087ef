"""A client's copy of a colony host's screen, kept from `snapshot` and `rows` messages.

`ScreenMirror` offers what the terminal widget reads from a `StemScreen` (buffer rows, size, cursor, scrollback
lines, row versions, the blank cell, the key modes, the title, hyperlinks), so the widget can draw from either; the
agent's clipboard writes wait in it for the widget to pass them on. Scrollback lines live on
the host: the mirror holds the pages it was given, reads a missing line as blank and notes its number in
`scrollback.wanted` for the client to fetch (`Connection.scrollback`) and `store`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat

from core.host.protocol import Rows, ScreenModes, ScreenState, ScrollbackPage, Snapshot
from core.screen_cells import DEFAULT_CHAR, Char, cells_text
from core.screen_queries import Link

_REVERSE_BLANK = DEFAULT_CHAR._replace(reverse=True)


@dataclass(slots=True)
class MirrorCursor:
    """Where the host's cursor is, and whether the agent hid it (pyte's `Cursor` fields the widget reads)."""

    x: int = 0
    y: int = 0
    hidden: bool = False


class MirrorScrollback:
    """The host's scrollback as the widget reads it: its length, and lines by index (0 is the oldest held).

    Lines are kept by their protocol number (see "scrollback line numbers" in the protocol), so a page fetched
    before newer lines pushed older ones out is still filed under the right line; at most `keep` lines are held.
    """

    def __init__(self, columns: int, keep: int = 4096) -> None:
        self.columns = columns
        self.keep = keep
        self.wanted: set[int] = set()  # numbers of lines read while missing, for the client to fetch
        self.on_want: Callable[[], None] | None = None  # told when a first missing line is read
        self._length = 0
        self._scrolled = 0
        self._pulled = 0
        self._lines: OrderedDict[int, list[Char]] = OrderedDict()

    def __len__(self) -> int:
        return self._length

    @property
    def first(self) -> int:
        """The number of line 0, the oldest line the host still holds."""
        return self._scrolled - self._length

    def line(self, i: int) -> list[Char]:
        """Line `i` (negative counts from the newest) as exactly `columns` cells; blank until fetched."""
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"scrollback line {i} of {self._length}")
        number = self.first + i
        cells = self._lines.get(number)
        if cells is None:
            if not self.wanted and self.on_want is not None:
                self.on_want()
            self.wanted.add(number)
            return [DEFAULT_CHAR] * self.columns
        self._lines.move_to_end(number)
        if len(cells) != self.columns:
            cells = cells[: self.columns] + list(repeat(DEFAULT_CHAR, self.columns - len(cells)))
        return cells

    def text(self, i: int) -> str:
        """Line `i` as a string, as pyte's `display` joins cells."""
        return cells_text([cell.data for cell in self.line(i)])

    def store(self, page: ScrollbackPage) -> None:
        """Keep the lines of a page the host sent; lines it no longer holds are dropped."""
        first = self.first
        for n, cells in enumerate(page.lines, page.start):
            self.wanted.discard(n)
            if first <= n < self._scrolled:
                self._lines[n] = list(cells)
                self._lines.move_to_end(n)
        while len(self._lines) > self.keep:
            self._lines.popitem(last=False)

    def update(self, length: int, scrolled: int, columns: int, pulled: int = 0) -> None:
        """Follow the host's scrollback: forget lines it dropped, and every line when the width changed (the host
        cuts lines to its width when they are asked for) or when it took lines back onto its screen (`pulled`:
        their numbers went to other lines since, perhaps between two messages)."""
        self._length, self._scrolled = length, scrolled
        if columns != self.columns or pulled != self._pulled:
            self.columns, self._pulled = columns, pulled
            self._lines.clear()
            self.wanted.clear()
            return
        first = self.first
        for n in [n for n in self._lines if not first <= n < scrolled]:
            del self._lines[n]
        self.wanted = {n for n in self.wanted if first <= n < scrolled}


class ScreenMirror:
    """The screen of a colony host's agent, as a client sees it: `apply` each snapshot and rows message.

    Row versions are the mirror's own, growing with every message applied, so the widget's (row, version) cache
    stays right across a reconnect to a new host whose screen versions start again from 0.
    """

    def __init__(self, columns: int = 80, lines: int = 24, keep_scrollback: int = 4096) -> None:
        self.columns = columns
        self.lines = lines
        self.buffer: dict[int, list[Char]] = {}
        self.cursor = MirrorCursor()
        self.title = ""
        self.modes = ScreenModes()
        self.bells = 0
        self.version = 0  # the host screen's version last applied
        self.scrollback = MirrorScrollback(columns, keep_scrollback)
        self.links: dict[int, tuple[Link, ...]] = {}  # the OSC 8 hyperlinks of each row that has some
        self.clipboard: list[str] = []  # the agent's OSC 52 writes ("selection;base64") not yet taken
        self._stamp = 0
        self._row_versions = [0] * lines
        self._dirty: set[int] = set()

    # ------------------------------------------------------------------------- what StemScreen offers too

    @property
    def default_char(self) -> Char:
        """The cell of an unwritten position (reversed on a DECSCNM screen)."""
        return _REVERSE_BLANK if self.modes.reverse_screen else DEFAULT_CHAR

    @property
    def app_cursor_keys(self) -> bool:
        return self.modes.app_cursor_keys

    @property
    def bracketed_paste(self) -> bool:
        return self.modes.bracketed_paste

    @property
    def alternate_screen(self) -> bool:
        return self.modes.alternate_screen

    def row_version(self, y: int) -> int:
        """A number that changes whenever row `y` changes."""
        return self._row_versions[y]

    def row_links(self, y: int) -> tuple[Link, ...]:
        """The hyperlinks on row `y`."""
        return self.links.get(y, ())

    def take_clipboard(self) -> list[str]:
        """The agent's clipboard writes since the last call."""
        taken, self.clipboard = self.clipboard, []
        return taken

    def take_dirty(self) -> set[int]:
        """Rows changed since the last call, then forget them."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def text(self) -> list[str]:
        """The visible screen as strings, like pyte's `display`."""
        blank = " " * self.columns
        return [cells_text([c.data for c in self.buffer[y]]) if y in self.buffer else blank for y in range(self.lines)]

    # -------------------------------------------------------------------------------------------- updates

    def apply(self, message: Snapshot | Rows) -> set[int]:
        """Apply a snapshot (its screen, if it has one) or a `rows` message; the rows it changed."""
        if isinstance(message, Rows):
            return self._apply(message.screen, whole=False)
        if message.screen is None:
            return set()
        return self._apply(message.screen, whole=True)

    def _apply(self, state: ScreenState, whole: bool) -> set[int]:
        self._stamp += 1
        stamp = self._stamp
        lines, columns = state.lines, state.columns
        changed: set[int]
        if (
            whole
            or (columns, lines) != (self.columns, self.lines)
            or state.modes.reverse_screen != self.modes.reverse_screen
        ):
            # Every row may look different: a new screen, a new size or new blanks. Rows the message lacks keep
            # what they had, cut or padded to the new width (the host sends every row after a resize anyway).
            self.links = {y: links for y, links in self.links.items() if y < lines and not whole}
            if whole:
                self.buffer = {}
            else:
                blank = _REVERSE_BLANK if state.modes.reverse_screen else DEFAULT_CHAR
                self.buffer = {y: _fit(cells, columns, blank) for y, cells in self.buffer.items() if y < lines}
            self._row_versions = [stamp] * lines
            changed = set(range(lines))
        else:
            changed = set(state.rows)
        self.columns, self.lines = columns, lines
        versions = self._row_versions
        links = self.links
        for y, cells in state.rows.items():
            self.buffer[y] = cells if isinstance(cells, list) else list(cells)  # the widget tells rows by list
            versions[y] = stamp
            found = state.links.get(y)
            if found:
                links[y] = tuple(found)
            else:
                links.pop(y, None)
        if state.clipboard:
            self.clipboard.extend(state.clipboard)
            del self.clipboard[:-8]
        self.cursor = MirrorCursor(state.cursor_x, state.cursor_y, not state.cursor_visible)
        self.title = state.title
        self.modes = state.modes
        self.bells = state.bells
        self.version = state.version
        self.scrollback.update(state.scrollback, state.scrolled, columns, state.pulled)
        self._dirty |= changed
        return changed


def _fit(cells: list[Char], columns: int, blank: Char) -> list[Char]:
    if len(cells) == columns:
        return cells
    return cells[:columns] + [blank] * (columns - len(cells))
