"""Scrollback for Stem's screen: lines scrolled off the top, kept compact and turned into cells on demand."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from typing import cast

from core.screen_cells import (
    DEFAULT_CHAR,
    SGR_SPLIT,
    Char,
    Piece,
    Row,
    cells_text,
    chars_for,
    draw_line,
    narrow_text,
    resolve_row,
    strip_sgr,
    wrap_cells,
    wrap_sgr_line,
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
#
# A row that autowrap went on from to the next (tmux's wrapped line, which a rewrap joins to the next: `rewrap`) is
# kept as a `WrapText` or `WrapCells` rather than a str or tuple; a `Piece` is one if it is not its line's last.
Entry = str | Piece | tuple[str | Piece, Char] | tuple[Char, ...]


class WrapText(str):
    """A row kept as text that autowrap went on from to the next row."""

    __slots__ = ()


class WrapCells(tuple[Char, ...]):
    """A row kept as cells that autowrap went on from to the next row."""

    __slots__ = ()


WRAPPED_EMPTY = WrapText("")
_END = -1  # the cursor past the end of its line (`rewrap`)


# For each last column, what takes a row's cells up to it in one call (`compact_row`: half the time of a lookup per
# cell from Python).
_ROW_CELLS: dict[int, Callable[[Row], tuple[Char, ...]]] = {}


def compact_row(row: Row | None) -> Entry:
    """The compact form of a row leaving the screen; cells never written are blanks, as in pyte. A row autowrap
    went on from (its `wrapped`, which the screen sets) stays marked so."""
    if not row:
        return WRAPPED_EMPTY if row is not None and getattr(row, "wrapped", False) else ""
    last = max(row)
    cells_of = _ROW_CELLS.get(last)
    if cells_of is None:
        if len(_ROW_CELLS) >= 1024:
            _ROW_CELLS.clear()
        cells_of = _ROW_CELLS[last] = itemgetter(*range(last + 1)) if last else _first_cell
    cells = cells_of(row)
    return WrapCells(cells) if getattr(row, "wrapped", False) else cells


def _first_cell(row: Row) -> tuple[Char, ...]:
    """A row's cells up to its first column (`itemgetter` of one key gives the item, not a tuple of it)."""
    return (row[0],)


def entry_wrapped(entry: Entry, counts: dict[tuple[str, Char, int], int]) -> bool:
    """Whether autowrap went on from this kept row to the next; `counts` keeps how many rows each batch line cut
    into `Piece`s took."""
    kind = type(entry)
    if kind is WrapText or kind is WrapCells:
        return True
    if kind is str or isinstance(entry[0], Char):
        return False
    piece, attrs = _drawn(entry)
    if isinstance(piece, str):
        return type(piece) is WrapText
    line, k, width = piece
    key = (line, attrs, width)
    count = counts.get(key)
    if count is None:
        rows: list[str] = []
        wrap_sgr_line(SGR_SPLIT.split(line), attrs, width, rows, [])
        count = counts[key] = len(rows)
    return k < count - 1


def used_cells(cells: list[Char]) -> list[Char]:
    """`cells` without the spaces at their end, whatever their colours: what a rewrap moves of a row that did not
    wrap. (tmux moves the cells written; an erase, even in a colour, writes none.)"""
    end = len(cells)
    while end and cells[end - 1].data == " ":
        end -= 1
    return cells[:end] if end < len(cells) else cells


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
        return entry_cells(self._lines[i], self.columns)

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

    def take_back(self, count: int) -> list[tuple[list[Char], bool]]:
        """The newest `count` lines (fewer if fewer are held), oldest first, as their cells (up to the last written, at
        most `columns`) and whether autowrap went on from each, taken out of the scrollback: a screen growing taller
        pulls them back onto its top rows, as tmux and xterm do. Their numbers go to the next lines to leave the
        screen; `pulled` counts the lines ever taken back, so that a copy kept by number (a client's) knows to forget
        them."""
        count = min(count, len(self._lines))
        counts: dict[tuple[str, Char, int], int] = {}
        lines = [
            (entry_cells(self._lines[i], self.columns, pad=False), entry_wrapped(self._lines[i], counts))
            for i in range(-count, 0)
        ]
        for _ in range(count):
            self._lines.pop()
        self.scrolled -= count
        self.pulled += count
        return lines

    def rewrap(
        self, rows: list[Row | None], cursor: tuple[int, int] | None, columns: int
    ) -> tuple[list[Entry | Row], tuple[int, int] | None]:
        """The kept lines and then the screen's `rows` (at the width this scrollback is at), rewrapped to `columns`
        as tmux rewraps a pane's history and screen when its width changes: the rows autowrap went on from are
        joined to the next into the line they are, and every line is cut again at the new width (a wide character
        that would not fit in the last column going to the next row). A row that did not wrap is its cells up to
        its last that is not a blank; one that wrapped, all of them (a space where it wrapped stays).

        Returns the rows after, oldest first: a kept line or screen row that did not change (a line that fits and
        did not wrap), or a new one in its compact form (`WrapCells` if it goes on on the next); and where the
        cursor (row `y` of `rows`, column `x`) is among them: on its line as many cells from its start, or at the
        end of its line if it was past the end of its row (as tmux keeps it)."""
        old = self.columns
        kept = self._lines
        held = len(kept)
        at_row = -1 if cursor is None else held + cursor[0]
        out: list[Entry | Row] = []
        line: list[Char] = []  # the cells of the line gathered, whose rows wrapped
        gathering = False
        offset: int | None = None  # the cursor's place in `line`
        found: tuple[int, int] | None = None
        counts: dict[tuple[str, Char, int], int] = {}
        for i in range(held + len(rows)):
            row: Row | None = None
            if i < held:
                entry = kept[i]
                wrapped = entry_wrapped(entry, counts)
                if not gathering and not wrapped:
                    # A line of one row that fits stays as it is: most of a history.
                    kind = type(entry)
                    if kind is str:
                        text = cast("str", entry)
                        if len(text.rstrip(" ")) <= columns and text.isascii() and "\x1b" not in text:
                            out.append(entry)
                            continue
                    elif kind is tuple and len(entry) <= columns:
                        out.append(entry)
                        continue
                # A row that wrapped has its cells up to its last written (the last column is not one where a wide
                # character that did not fit went on to the next row), as a row on the screen (below).
                cells = entry_cells(entry, old, pad=not wrapped)
            else:
                row = rows[i - held]
                wrapped = row is not None and getattr(row, "wrapped", False)
                cells = list(map(row.__getitem__, range(min(max(row) + 1, old)))) if row else []
            if i == at_row:
                x = min(cast("tuple[int, int]", cursor)[1], old)
                # A row that did not wrap keeps its cells up to the cursor if it has text and cells there (the space
                # after a prompt: a cursor there stays there); a cursor past them, or on a row without text (an erase
                # writes cells, but tmux counts only those written with text), goes to the end of its line.
                if not wrapped:
                    used = len(used_cells(cells))
                    cells = cells[: max(used, min(x, columns))] if used else []
                offset = len(line) + x if x < len(cells) else _END
            elif not wrapped:
                cells = used_cells(cells)
                if not gathering and len(cells) <= columns:
                    out.append((row or "") if i >= held else kept[i])  # a line of one row that fits
                    continue
            line.extend(cells)
            gathering = wrapped
            if wrapped and i < held + len(rows) - 1:
                continue
            pieces = wrap_cells(line, columns) or [()]
            start = len(out)
            out.extend(WrapCells(piece) if piece else WRAPPED_EMPTY for piece in pieces[:-1])
            last = tuple(pieces[-1])
            out.append((WrapCells(last) if last else WRAPPED_EMPTY) if wrapped else (last or ""))
            if offset is not None:
                if offset == _END:
                    found = (len(out) - 1, len(last))
                else:
                    for k, piece in enumerate(pieces):
                        if offset < len(piece) or k == len(pieces) - 1:
                            found = (start + k, offset)
                            break
                        offset -= len(piece)
                offset = None
            line = []
            gathering = False
        return out, found

    def replace(self, entries: list[Entry]) -> None:
        """Keep `entries` in place of every line, after a rewrap (`rewrap`): lines get new numbers, and `pulled`
        goes up so that a copy kept by number forgets them."""
        first = self.first
        self._lines = deque(entries, maxlen=self._lines.maxlen)
        self.scrolled = first + len(self._lines)
        self.pulled += 1

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


def entry_cells(entry: Entry, width: int, pad: bool = True) -> list[Char]:
    """A kept line as exactly `width` cells (at most, up to its last written one, if not `pad`)."""
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
    if pad:
        cells.extend(repeat(DEFAULT_CHAR, width - len(cells)))
    return cells
