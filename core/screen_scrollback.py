"""Scrollback for Stem's screen: lines scrolled off the top, kept compact and turned into cells on demand."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import repeat

from pyte.screens import Char

from core.screen_cells import DEFAULT_CHAR, Row, cells_text, chars_for, draw_line, strip_sgr

# A line is kept in the cheapest form that still reproduces it exactly:
# - str: plain text drawn with default attributes (a `seq` flood costs one string per line);
# - (raw, attrs): text with SGR sequences, drawn from column 0 starting with `attrs`; both forms are lines
#   that scrolled away inside a line batch without ever being drawn;
# - tuple of Char: a row that was on screen, its cells up to the last one written (a quarter of the dict's
#   size, and made in one pass: this is on the path of every line that scrolls one at a time).
Entry = str | tuple[str, Char] | tuple[Char, ...]


def compact_row(row: Row | None) -> Entry:
    """The compact form of a row leaving the screen; cells never written are blanks, as in pyte."""
    if not row:
        return ""
    return tuple(map(row.__getitem__, range(max(row) + 1)))


class Scrollback:
    """A bounded sequence of past lines, oldest first; `line(i)` gives pyte `Char`s, `text(i)` a string."""

    def __init__(self, maxlen: int, columns: int) -> None:
        self._lines: deque[Entry] = deque(maxlen=max(0, maxlen))
        # The width lines are materialised at; the screen updates it on resize.
        self.columns = columns

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
        if isinstance(entry, str):
            cells = list(map(chars_for(DEFAULT_CHAR).__getitem__, entry[:width]))
        elif isinstance(entry[0], str):
            row: dict[int, Char] = {}
            draw_line(row, entry[0], entry[1])
            cells = [row.get(x, DEFAULT_CHAR) for x in range(min(width, len(row)))]
        else:
            cells = list(entry[:width])
        cells.extend(repeat(DEFAULT_CHAR, width - len(cells)))
        return cells

    def text(self, i: int) -> str:
        """Line `i` as a string, without building cells when the stored form is already text."""
        entry = self._lines[i]
        width = self.columns
        if isinstance(entry, str) and entry.isascii():
            return entry[:width].ljust(width)
        if isinstance(entry, tuple) and isinstance(entry[0], str) and entry[0].isascii():
            return strip_sgr(entry[0])[:width].ljust(width)
        # Cells, as pyte's `display` joins them (the stub after a wide character skipped).
        return cells_text([cell.data for cell in self.line(i)])

    def clear(self) -> None:
        """Forget every line (ED 3, "clear scrollback")."""
        self._lines.clear()

    def append_row(self, row: Row | None) -> None:
        """Keep a row that just left the screen; `None` is a row that was never written."""
        self._lines.append(compact_row(row))

    def extend_drawn(self, raws: list[str], starts: list[Char] | Char) -> None:
        """Keep lines that were drawn on fresh rows and scrolled away before anyone needed their cells:
        `raws[i]` drawn from column 0 starting with attributes `starts[i]` (or one `starts` for all)."""
        entries: Iterable[Entry]
        if isinstance(starts, list):
            entries = zip(raws, starts, strict=True)
        elif starts == DEFAULT_CHAR:
            entries = raws
        else:
            entries = zip(raws, repeat(starts))
        self._lines.extend(entries)
