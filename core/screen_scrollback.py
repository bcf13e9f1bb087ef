"""Scrollback for Stem's screen: lines scrolled off the top, kept compact and turned into cells on demand."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import cast

from core.screen_cells import (
    DEFAULT_CHAR,
    Char,
    Piece,
    Row,
    cells_text,
    chars_for,
    draw_line,
    narrow_text,
    resolve_row,
    strip_sgr,
)

# A line is kept in the cheapest form that still reproduces it exactly:
# - str: text (with SGR sequences, if it has an ESC) drawn from column 0 with default attributes (a `seq` flood, or
#   a log whose lines start after a reset, costs one string per line: no tuple for the collector to look at);
# - Piece: one row of a line that autowrap splits (cut out when asked for), the line drawn with default attributes
#   (a tuple of a string and ints, which the collector stops looking at once it has seen it);
# - (raw, attrs): text with SGR sequences, or a Piece, drawn from column 0 starting with `attrs`; these three forms
#   are lines that scrolled away inside a line batch without ever being drawn
# - tuple of Char: a row that was on screen, its cells up to the last one written (a quarter of the dict's
#   size, and made in one pass: this is on the path of every line that scrolls one at a time).
Entry = str | Piece | tuple[str | Piece, Char] | tuple[Char, ...]


def compact_row(row: Row | None) -> Entry:
    """The compact form of a row leaving the screen; cells never written are blanks, as in pyte."""
    if not row:
        return ""
    return tuple(map(row.__getitem__, range(max(row) + 1)))


class Scrollback:
    """A bounded sequence of past lines, oldest first; `line(i)` gives pyte `Char`s, `text(i)` a string.

    `scrolled` counts every line that ever left the screen, so a line has a number that it keeps while older lines
    drop off (`first` is the number of line 0): the terminal widget holds a view scrolled into the history by it,
    and a colony host's clients page and cache lines by it ("scrollback line numbers" in core.host.protocol).
    """

    def __init__(self, maxlen: int, columns: int) -> None:
        self._lines: deque[Entry] = deque(maxlen=max(0, maxlen))
        # The width lines are materialised at; the screen updates it on resize.
        self.columns = columns
        self.scrolled = 0
        self.pulled = 0  # lines ever taken back onto the screen (`take_back`)

    @property
    def first(self) -> int:
        """The number of line 0, the oldest line held."""
        return self.scrolled - len(self._lines)

    @property
    def maxlen(self) -> int:
        """How many lines are kept before the oldest are dropped."""
        return self._lines.maxlen or 0

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, i: int) -> list[Char]:
        return self.line(i)

    def __iter__(self) -> Iterator[list[Char]]:
        for i in range(len(self._lines)):
            yield self.line(i)

    def line(self, i: int) -> list[Char]:
        """Line `i` (negative counts from the newest) as exactly `columns` cells."""
        entry = self._lines[i]
        width = self.columns
        if isinstance(entry, str) and "\x1b" not in entry and (entry.isascii() or narrow_text(entry)):
            cells = list(map(chars_for(DEFAULT_CHAR).__getitem__, entry[:width]))
        elif isinstance(entry, str):
            row: dict[int, Char] = {}
            draw_line(row, entry, DEFAULT_CHAR)
            cells = [row.get(x, DEFAULT_CHAR) for x in range(min(width, len(row)))]
        elif isinstance(entry[0], Char):
            cells = list(entry[:width])
        else:
            row = {}
            draw_line(row, *resolve_row(*_drawn(entry)))
            cells = [row.get(x, DEFAULT_CHAR) for x in range(min(width, len(row)))]
        cells.extend(repeat(DEFAULT_CHAR, width - len(cells)))
        return cells

    def text(self, i: int) -> str:
        """Line `i` as a string, without building cells when the stored form is already text."""
        entry = self._lines[i]
        width = self.columns
        if isinstance(entry, str) and entry.isascii():
            return strip_sgr(entry)[:width].ljust(width)
        if isinstance(entry, tuple) and not isinstance(entry[0], Char):
            raw = resolve_row(*_drawn(entry))[0]
            if raw.isascii():
                return strip_sgr(raw)[:width].ljust(width)
        # Cells, as pyte's `display` joins them (the stub after a wide character skipped).
        return cells_text([cell.data for cell in self.line(i)])

    def clear(self) -> None:
        """Forget every line (ED 3, "clear scrollback"); they keep their numbers."""
        self._lines.clear()

    def take_back(self, count: int) -> list[list[Char]]:
        """The newest `count` lines (fewer if fewer are held), oldest first, as `columns` cells each, taken out of
        the scrollback: a screen growing taller pulls them back onto its top rows, as tmux and xterm do. Their
        numbers go to the next lines to leave the screen; `pulled` counts the lines ever taken back, so that a copy
        kept by number (a client's) knows to forget them."""
        count = min(count, len(self._lines))
        lines = [self.line(i) for i in range(-count, 0)]
        for _ in range(count):
            self._lines.pop()
        self.scrolled -= count
        self.pulled += count
        return lines

    def skip(self, count: int) -> None:
        """Count lines that scrolled away inside a batch behind more than the scrollback keeps: never stored."""
        self.scrolled += count

    def append_row(self, row: Row | None) -> None:
        """Keep a row that just left the screen; `None` is a row that was never written."""
        self._lines.append(compact_row(row))
        self.scrolled += 1

    def extend_plain(self, raws: list[str], attrs: Char) -> None:
        """Keep lines of text without SGR, all drawn with `attrs`, that scrolled away inside a batch
        before anyone needed their cells."""
        if attrs == DEFAULT_CHAR:
            self._lines.extend(raws)
        else:
            self._lines.extend(zip(raws, repeat(attrs)))
        self.scrolled += len(raws)

    def extend_drawn(self, raws: Sequence[str | Piece], starts: list[Char]) -> None:
        """Keep lines that scrolled away inside a batch before anyone needed their cells: `raws[i]`
        (text with SGR, or a piece of a wrapped line) drawn from column 0 starting with `starts[i]`."""
        self._lines.extend(
            [
                raw if start is DEFAULT_CHAR or start == DEFAULT_CHAR else (raw, start)
                for raw, start in zip(raws, starts, strict=True)
            ]
        )
        self.scrolled += len(raws)


def _drawn(entry: Entry) -> tuple[str | Piece, Char]:
    """A line kept as text or a piece of one (not as cells), and the attributes it starts with."""
    if isinstance(entry, str):
        return entry, DEFAULT_CHAR
    if len(entry) == 3 and type(entry[1]) is int:  # a Piece: (line, k, width)
        return entry, DEFAULT_CHAR
    return cast("tuple[str | Piece, Char]", entry)
