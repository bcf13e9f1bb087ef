"""Scrollback for Stem's screen: lines scrolled off the top, kept compact and turned into cells on demand."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import repeat

from pyte.screens import Char

from core.screen_cells import DEFAULT_CHAR, Row, chars_for, draw_line, row_text, strip_sgr

# A line is kept in the cheapest form that still reproduces it exactly:
# - str: plain printable ASCII drawn with default attributes (a `seq` flood costs one string per line);
# - (raw, attrs): printable ASCII with SGR sequences, drawn from column 0 starting with `attrs`;
# - Row: a row that was on screen as cells (anything else: wide characters, cursor-addressed output).
Entry = str | tuple[str, Char] | Row


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
        elif isinstance(entry, tuple):
            row: dict[int, Char] = {}
            draw_line(row, entry[0], entry[1])
            cells = [row.get(x, DEFAULT_CHAR) for x in range(min(width, len(row)))]
        else:
            return [entry[x] for x in range(width)]
        cells.extend(repeat(DEFAULT_CHAR, width - len(cells)))
        return cells

    def text(self, i: int) -> str:
        """Line `i` as a string, without building cells when the stored form is already text."""
        entry = self._lines[i]
        if isinstance(entry, str):
            return entry[: self.columns].ljust(self.columns)
        if isinstance(entry, tuple):
            return strip_sgr(entry[0])[: self.columns].ljust(self.columns)
        return row_text(entry, self.columns)

    def clear(self) -> None:
        """Forget every line (ED 3, "clear scrollback")."""
        self._lines.clear()

    def append_row(self, row: Row | None) -> None:
        """Keep a row that just left the screen; `None` is a row that was never written."""
        self._lines.append("" if row is None else row)

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
