"""Stem's terminal screen: pyte's emulator with fast paths for floods, an alternate screen and scrollback.

`StemScreen` is a `pyte.Screen`; whatever its fast paths do not recognise goes to pyte's own parser and
methods, so correctness never depends on a fast path being complete. The fast paths:

- a tokenizer that hands whole runs of text and complete common sequences to the screen methods, instead of
  pyte's one-character-at-a-time parser generator;
- text drawn straight into the row dicts with one shared `Char` per (character, attributes); runs mixing
  text and SGR drawn in one loop; SGR transitions cached;
- line batches: consecutive lines of text and SGR ended by CR LF are applied at once. The buffer is rotated
  once per batch rather than once per line, and lines that scroll away inside the batch are never drawn:
  they go to the scrollback as text, materialised to cells only when asked for.

Beyond pyte: the alternate screen (1049/1047/47), scrollback outside `HistoryScreen`, bracketed paste,
answers to queries through a responder, a bell counter, per-row versions for render caches. pyte's quirks are
kept where they change what is drawn (so the screen equals stock pyte's on the same bytes), except that
sequences on which pyte raises are ignored and counted in `errors`.

Relies on two pyte internals: `Stream._text_pattern` (what counts as text) and `Stream._taking_plain_text`
(whether its parser is between sequences). Not thread-safe: feed and read from one thread.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from itertools import accumulate, chain
from operator import attrgetter
from typing import Any, cast

import pyte
from pyte import charsets as cs
from pyte import modes as mo
from pyte.screens import Char, Savepoint, StaticDefaultDict, wcwidth

from core.screen_cells import (
    DEFAULT_CHAR,
    NARROW,
    SGR_CACHE,
    SGR_SEQ_SPLIT,
    SGR_SPLIT,
    Piece,
    Row,
    chars_for,
    draw_line,
    narrow_text,
    parse_params,
    resolve_row,
    row_text,
    sgr_apply,
    text_width,
)
from core.screen_queries import TerminalQueries
from core.screen_scrollback import Scrollback

__all__ = ["Scrollback", "StemScreen"]

# Private modes, shifted the way pyte stores them in `Screen.mode`.
_DECCKM = 1 << 5
_BRACKETED_PASTE = 2004 << 5
_ALT_MODES = frozenset({47, 1047, 1049})

_REVERSE_BLANK = DEFAULT_CHAR._replace(reverse=True)

# Modes under which a line batch would not behave like plain "draw, CR, LF".
_NO_BATCH_MODES = frozenset({mo.IRM, mo.LNM, mo.DECSCNM})

# One token in the ground state. Group numbers are used as token kinds (see `_feed_text`); anything that
# does not match (C1 controls, SO/SI, unusual or incomplete sequences) goes to pyte's parser.
_TOKEN_PATTERN = (
    r"((?:[^\x00-\x1f\x7f-\x9f]++|\x1b\[[0-9;]*+m)++)"  # 1: printable text and SGR: styled text
    "|(" + pyte.Stream._text_pattern.pattern + ")"  # 2: any other text, exactly pyte's notion of it
    r"|(\r\n)"  # 3: the commonest pair of controls
    r"|\x1b\[(\??)([0-9;]*)([@-~])"  # 4-6: CSI with plain parameters
    r"|\x1b([^\[\]#%()])"  # 7: two-character escape
    r"|\x1b([()][\s\S])"  # 8: G0/G1 charset designation
    r"|\x1b\]([^RP])([^\x07\x1b\x9c]*)(?:\x07|\x9c|\x1b\\)"  # 9-10: OSC (title)
    r"|([\x00\x07-\x0d\x7f])"  # 11: C0 controls pyte acts on or ignores
)
_TOKEN = re.compile(_TOKEN_PATTERN)
# The same for a feed that is all ASCII (an O(1) test): a plain range is faster for the regex engine.
_TOKEN_ASCII = re.compile(_TOKEN_PATTERN.replace(r"[^\x00-\x1f\x7f-\x9f]", "[ -~]", 1))

_T_STYLED, _T_TEXT, _T_CRLF, _T_CSI, _T_ESC, _T_CHARSET, _T_OSC, _T_CTL = 1, 2, 3, 6, 7, 8, 10, 11

# The `TextCells` of an `SgrMoves` node.
_TEXTS = attrgetter("chars.texts")

# `d[key]` for the cache dicts: dict subclasses get a generic subscript slot that looks `__getitem__` up on
# every call, while dict's own method goes straight to the lookup (and still calls `__missing__`).
_LOOKUP: Any = dict.__getitem__

_SGR_RESETS = frozenset({"", "0"})

# Where to look for characters that may not take exactly one cell.
_NOT_ASCII = re.compile(r"[^ -~]")

# A batch of whole lines: printable text and SGR sequences, each line ended by CR LF. The ASCII-only form
# is half again as fast for the regex engine and is used when the whole feed is ASCII (an O(1) test).
_BATCH = re.compile(r"(?:[^\x00-\x1f\x7f-\x9f]*+(?:\x1b\[[0-9;]*+m[^\x00-\x1f\x7f-\x9f]*+)*+\r\n)++")
_BATCH_ASCII = re.compile(r"(?:[ -~]*+(?:\x1b\[[0-9;]*+m[ -~]*+)*+\r\n)++")


class StemScreen(pyte.Screen):
    """A pyte screen that ingests bytes fast, tracks changed rows, keeps scrollback and an alternate screen."""

    def __init__(self, columns: int, lines: int, scrollback: int = 10_000) -> None:
        # pyte's constructor calls `reset`, which reads these.
        self._alt_active = False
        self._main_buffer: dict[int, Row] | None = None
        self._alt_savepoint: Savepoint | None = None
        self.scrollback = Scrollback(scrollback, columns)
        self.bells = 0
        self.errors = 0  # sequences pyte could not handle (it raises; a terminal must keep going)
        self.version = 0
        self._row_versions = [0] * lines
        self._dirty: set[int] = set(range(lines))
        self._responder: Callable[[bytes], None] | None = None
        self.queries = TerminalQueries(self)  # keypad mode and 2026 frames; answers and OSC 52/8 when fed through it
        super().__init__(columns, lines)
        self._stream = pyte.ByteStream(self)
        self._csi: dict[str, Callable[..., None]] = {
            final: getattr(self, name) for final, name in pyte.Stream.csi.items()
        }
        self._esc: dict[str, Callable[[], None]] = {
            char: getattr(self, name) for char, name in pyte.Stream.escape.items()
        }
        self._esc.update(self.queries.escapes())  # DECKPAM, DECKPNM (pyte has neither)
        self._params_cache: dict[str, tuple[int, ...]] = {}
        self._seen = self._cursor_state()

    # ----------------------------------------------------------------------------------------- public API

    def feed(self, data: bytes) -> None:
        """Consume bytes from the child. UTF-8 sequences split across calls are joined, as in `ByteStream`."""
        stream = self._stream
        text = stream.utf8_decoder.decode(data) if stream.use_utf8 else data.decode("latin-1")
        if text:
            self._feed_text(text)
        self._commit()

    def take_dirty(self) -> set[int]:
        """Rows changed since the last call (all of them after a scroll), then forget them."""
        self._commit()
        dirty, self._dirty = self._dirty, set()
        return dirty

    def row_version(self, y: int) -> int:
        """A number that changes whenever row `y` changes, so rendered rows can be cached by (row, version)."""
        return self._row_versions[y]

    def text(self) -> list[str]:
        """The visible screen as strings, like pyte's `display`."""
        buffer = self.buffer
        blank = " " * self.columns
        return [row_text(buffer[y], self.columns) if y in buffer else blank for y in range(self.lines)]

    def set_responder(self, fn: Callable[[bytes], None] | None) -> None:
        """Where answers to terminal queries (DA, DSR) go; normally the PTY's input."""
        self._responder = fn

    @property
    def app_cursor_keys(self) -> bool:
        """DECCKM: cursor keys should send ESC O A rather than ESC [ A."""
        return _DECCKM in self.mode

    @property
    def bracketed_paste(self) -> bool:
        """Mode 2004: pasted text should be wrapped in ESC [ 200 ~ / ESC [ 201 ~."""
        return _BRACKETED_PASTE in self.mode

    @property
    def alternate_screen(self) -> bool:
        """True while a full-screen program has switched to the alternate buffer."""
        return self._alt_active

    # ------------------------------------------------------------------------------------ pyte overrides

    @property
    def default_char(self) -> Char:
        """pyte's blank cell, without building a new `Char` for every row created."""
        return _REVERSE_BLANK if mo.DECSCNM in self.mode else DEFAULT_CHAR

    def reset(self) -> None:
        if getattr(self, "_alt_active", False) and self._main_buffer is not None:
            self.buffer = self._main_buffer
        self._alt_active = False
        self._main_buffer = None
        self._alt_savepoint = None
        super().reset()

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize like a terminal rather than like pyte: rows that must leave to keep the cursor on screen go
        from the top into the scrollback, other rows are dropped from the bottom."""
        lines = lines or self.lines
        columns = columns or self.columns
        if lines == self.lines and columns == self.columns:
            return
        cursor = self.cursor
        drop = max(0, cursor.y - (lines - 1))
        buffers: list[tuple[dict[int, Row], int, bool]] = [(self.buffer, drop, not self._alt_active)]
        if self._main_buffer is not None:
            saved = self._alt_savepoint
            main_drop = max(0, saved.cursor.y - (lines - 1)) if saved is not None else 0
            buffers.append((self._main_buffer, main_drop, True))
            if saved is not None:
                saved.cursor.y -= main_drop
        for buffer, count, keep in buffers:
            if count and keep:
                for y in range(count):
                    self.scrollback.append_row(buffer.get(y))
            moved = {y - count: row for y, row in buffer.items() if count <= y < count + lines}
            buffer.clear()
            buffer.update(moved)
            if columns < self.columns:
                for row in moved.values():
                    for x in [x for x in row if x >= columns]:
                        del row[x]
        if columns > self.columns:
            self.tabstops.update(range((self.columns + 7) // 8 * 8, columns, 8))
        self.lines, self.columns = lines, columns
        self.scrollback.columns = columns
        self._row_versions = (self._row_versions + [0] * lines)[:lines]
        cursor.y = min(cursor.y - drop, lines - 1)
        cursor.x = min(cursor.x, columns - 1)
        self._dirty = {y for y in self._dirty if y < lines}
        self.dirty.update(range(lines))
        self.set_margins()
        self._commit()

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private"):
            self.queries.set_modes(modes, True)
            for mode in modes:
                if mode in _ALT_MODES:
                    self._enter_alternate(mode)
            modes = tuple(m for m in modes if m not in _ALT_MODES)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private"):
            self.queries.set_modes(modes, False)
            for mode in modes:
                if mode in _ALT_MODES:
                    self._leave_alternate(mode)
            modes = tuple(m for m in modes if m not in _ALT_MODES)
        super().reset_mode(*modes, **kwargs)

    def draw(self, data: str) -> None:
        cursor = self.cursor
        mode = self.mode
        if not (
            data
            and cursor.x <= self.columns
            and mo.DECAWM in mode
            and mo.IRM not in mode
            and self.charset == 0
            and self.g0_charset is cs.LAT1_MAP
        ):
            # Insert mode, no autowrap, other charsets, odd cursor positions: pyte itself.
            y = cursor.y
            super().draw(data)
            # pyte combines a leading zero-width character into the previous row without marking it.
            self.dirty.update((y - 1, y))
            return
        if data.isascii() and data.isprintable():
            self._draw_narrow(data)
            return
        # Runs of one-cell characters go in bulk; each other character exactly as pyte's `draw` treats it.
        narrow = NARROW
        start = pos = 0
        search = _NOT_ASCII.search
        while m := search(data, pos):
            i = m.start()
            pos = i + 1
            char = data[i]
            if char in narrow:
                continue
            width = wcwidth(char)
            if width == 1:
                narrow.add(char)
                continue
            if i > start:
                self._draw_narrow(data[start:i])
            start = pos
            if not self._draw_other(char, width):
                return  # pyte stops at an unprintable character and drops the rest of the text
        if start < len(data):
            self._draw_narrow(data[start:] if start else data)

    def _draw_narrow(self, data: str) -> None:
        """`draw` for characters that each take one cell, with autowrap on and insert mode off."""
        cursor = self.cursor
        columns = self.columns
        x = cursor.x
        buffer = self.buffer
        get = chars_for(cursor.attrs).__getitem__
        dirty = self.dirty
        i, n = 0, len(data)
        while True:
            if x == columns:  # pending wrap, as pyte's draw: CR then LF, then draw
                dirty.add(cursor.y)
                cursor.x = 0
                self.linefeed()
                cursor = self.cursor
                x = 0
            room = columns - x
            if n - i <= room:
                part = data[i:] if i else data
                end = x + len(part)
                buffer[cursor.y].update(zip(range(x, end), map(get, part)))  # noqa: B905 - same length
                x = end
                break
            buffer[cursor.y].update(zip(range(x, columns), map(get, data[i : i + room])))  # noqa: B905
            x = columns
            i += room
        cursor.x = x
        dirty.add(cursor.y)

    def _draw_other(self, char: str, width: int) -> bool:
        """pyte's `draw` for one character that is not one cell wide (autowrap on, insert mode off); False
        where pyte stops drawing."""
        cursor = self.cursor
        columns = self.columns
        dirty = self.dirty
        if cursor.x == columns:  # pyte wraps first, whatever the width
            dirty.add(cursor.y)
            cursor.x = 0
            self.linefeed()
            cursor = self.cursor
        x, y = cursor.x, cursor.y
        line = self.buffer[y]
        if width == 2:
            get = chars_for(cursor.attrs).__getitem__
            line[x] = get(char)
            if x + 1 < columns:
                line[x + 1] = get("")  # the stub pyte puts after a wide character
            cursor.x = min(x + 2, columns)
        elif width == 0 and unicodedata.combining(char):
            if x:
                last = line[x - 1]
                line[x - 1] = last._replace(data=unicodedata.normalize("NFC", last.data + char))
            elif y:
                above = self.buffer[y - 1]
                last = above[columns - 1]
                above[columns - 1] = last._replace(data=unicodedata.normalize("NFC", last.data + char))
                dirty.add(y - 1)
        else:
            dirty.add(y)
            return False
        dirty.add(y)
        return True

    def index(self) -> None:
        margins = self.margins
        top, bottom = (0, self.lines - 1) if margins is None else margins
        cursor = self.cursor
        if cursor.y == bottom:
            self._scroll_up(top, bottom)
        else:
            cursor.y = min(cursor.y + 1, bottom)  # pyte's cursor_down(1)

    def cursor_position(self, line: int | None = None, column: int | None = None) -> None:
        # pyte's, with its bounds checks inlined: full-screen programs send one per row they paint.
        column = (column or 1) - 1
        line = (line or 1) - 1
        margins = self.margins
        if margins is not None and mo.DECOM in self.mode:
            line += margins.top
            if not margins.top <= line <= margins.bottom:
                return  # pyte: the cursor may not leave the scroll region in origin mode
            top, bottom = margins
        else:
            top, bottom = 0, self.lines - 1
        cursor = self.cursor
        cursor.x = min(max(0, column), self.columns - 1)
        cursor.y = min(max(top, line), bottom)

    def select_graphic_rendition(self, *attrs: int, **kwargs: Any) -> None:
        # CSI ? Ps m is a query (xterm's XTQMODKEYS, sent by vim), not SGR; pyte raises on it.
        if not kwargs.get("private"):
            self.cursor.attrs = sgr_apply(self.cursor.attrs, attrs, mo.DECSCNM in self.mode)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        cursor = self.cursor
        self.dirty.add(cursor.y)
        if how == 0:
            interval = range(cursor.x, self.columns)
        elif how == 1:
            interval = range(cursor.x + 1)
        elif how == 2:
            interval = range(self.columns)
        else:
            return  # pyte raises; an unknown erase is a no-op in real terminals
        self.buffer[cursor.y].update(dict.fromkeys(interval, cursor.attrs))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        cursor = self.cursor
        if how == 0:
            interval = range(cursor.y + 1, self.lines)
        elif how == 1:
            interval = range(cursor.y)
        elif how in (2, 3):
            interval = range(self.lines)
        else:
            return
        self.dirty.update(interval)
        attrs = cursor.attrs
        buffer = self.buffer
        for y in interval:
            # Like pyte, only cells that exist are erased: the sparse rows stay sparse.
            line = buffer[y]
            line.update(dict.fromkeys(line, attrs))
        if how in (0, 1):
            self.erase_in_line(how)
        if how == 3 and not self._alt_active:
            self.scrollback.clear()

    def bell(self, *args: Any) -> None:
        self.bells += 1

    def write_process_input(self, data: str) -> None:
        if self._responder is not None:
            self._responder(data.encode("utf-8"))

    # ---------------------------------------------------------------------------------------- internals

    def _cursor_state(self) -> tuple[int, int, bool, str, bool]:
        cursor = self.cursor
        return (cursor.x, cursor.y, cursor.hidden, self.title, self._alt_active)

    def _commit(self) -> None:
        """Turn pyte's `dirty` rows into row versions and pending dirty rows; bump `version` on any change."""
        dirty = self.dirty
        state = self._cursor_state()
        if not dirty and state == self._seen:
            return
        self._seen = state
        self.version += 1
        version = self.version
        lines = self.lines
        if len(dirty) >= lines and dirty.issuperset(range(lines)):
            # After a scroll every row is dirty: replace rather than loop.
            self._row_versions = [version] * lines
            self._dirty = set(range(lines))
        else:
            versions = self._row_versions
            for y in dirty:
                if 0 <= y < lines:
                    versions[y] = version
                    self._dirty.add(y)
        dirty.clear()

    def _new_buffer(self) -> dict[int, Row]:
        return defaultdict(lambda: StaticDefaultDict[int, Char](self.default_char))

    def _enter_alternate(self, mode: int) -> None:
        if self._alt_active:
            return
        if mode == 1049:
            self.save_cursor()
            self._alt_savepoint = self.savepoints.pop()
        self._main_buffer = self.buffer
        self.buffer = self._new_buffer()  # the alternate screen always starts clear
        self._alt_active = True
        self.dirty.update(range(self.lines))

    def _leave_alternate(self, mode: int) -> None:
        if not self._alt_active or self._main_buffer is None:
            return
        self.buffer = self._main_buffer
        self._main_buffer = None
        self._alt_active = False
        self.dirty.update(range(self.lines))
        savepoint, self._alt_savepoint = self._alt_savepoint, None
        if mode == 1049 and savepoint is not None:
            # DECRC as xterm does it: cursor visibility (DECTCEM) is not part of the saved state.
            hidden = self.cursor.hidden
            self.savepoints.append(savepoint)
            self.restore_cursor()
            self.cursor.hidden = hidden

    def _scroll_up(self, top: int, bottom: int) -> None:
        """Scroll the region `top..bottom` up one row; what leaves the top of the screen is kept."""
        buffer = self.buffer
        if top == 0 and not self._alt_active:
            self.scrollback.append_row(buffer.get(0))
        self.dirty.update(range(self.lines))
        if top == 0 and bottom == self.lines - 1:
            moved = [(y - 1, row) for y, row in buffer.items() if 0 < y <= bottom]
            buffer.clear()
            buffer.update(moved)
            self._create_rows(bottom)
            return
        for y in range(top, bottom):
            buffer[y] = buffer[y + 1]
        buffer.pop(bottom, None)

    def _create_rows(self, bottom: int) -> None:
        """Create rows 0..bottom-1 where missing, as pyte's scroll does. A row's blank cell is fixed when
        the row is created (reversed under DECSCNM), so rows must come into being when pyte's would."""
        buffer = self.buffer
        if len(buffer) < bottom:
            for y in range(bottom):
                if y not in buffer:
                    buffer[y] = StaticDefaultDict[int, Char](self.default_char)

    def _feed_text(self, text: str, batch: bool = True) -> None:
        stream = self._stream
        pos, n = 0, len(text)
        if not stream._taking_plain_text:
            pos = self._feed_slow(text, pos)  # finish a sequence split across feeds
        if batch and pos < n and self.cursor.x == 0:
            pos = self._try_batch(text, pos)
        match = (_TOKEN_ASCII if text.isascii() else _TOKEN).match
        draw = self.draw
        csi = self._csi
        while pos < n:
            m = match(text, pos)
            if m is None:
                pos = self._feed_slow(text, pos)
                continue
            kind = m.lastindex
            pos = m.end()
            if kind == _T_STYLED:
                run = m.group(1)
                if "\x1b" in run:
                    self._draw_styled(run)
                else:
                    draw(run)
            elif kind == _T_CSI:
                private, params, final = m.group(4, 5, 6)
                if final == "m":
                    if not private:  # see select_graphic_rendition
                        cursor = self.cursor
                        cursor.attrs = sgr_apply(cursor.attrs, params, mo.DECSCNM in self.mode)
                    continue
                handler = csi.get(final)
                if handler is None:
                    continue  # pyte's `debug`: unknown sequences are ignored
                args = self._params_cache.get(params)
                if args is None:
                    if len(self._params_cache) > 4096:
                        self._params_cache.clear()
                    args = self._params_cache[params] = parse_params(params)
                try:
                    if private:
                        handler(*args, private=True)
                    else:
                        handler(*args)
                except (TypeError, ValueError, LookupError, NameError):
                    self.errors += 1  # pyte raises on e.g. ESC[?5A; a terminal ignores it
            elif kind == _T_TEXT:
                draw(m.group(2))
            elif kind == _T_CRLF:
                self.cursor.x = 0
                self.linefeed()
                if batch and pos < n and self.cursor.x == 0:
                    pos = self._try_batch(text, pos)
            elif kind == _T_CTL:
                char = text[pos - 1]
                if char == "\r":
                    self.cursor.x = 0
                elif char in "\n\x0b\x0c":
                    self.linefeed()
                    if batch and char == "\n" and pos < n and self.cursor.x == 0:
                        pos = self._try_batch(text, pos)
                elif char == "\x08":
                    self.backspace()
                elif char == "\t":
                    self.tab()
                elif char == "\x07":
                    self.bell()
                # NUL and DEL are ignored, as by pyte.
            elif kind == _T_ESC:
                handler0 = self._esc.get(m.group(7))
                if handler0 is not None:
                    handler0()
            elif kind == _T_OSC:
                code, param = m.group(9), m.group(10)[1:]  # pyte drops the ";"
                if code in "01":
                    self.set_icon_name(param)
                if code in "02":
                    self.set_title(param)
            elif kind == _T_CHARSET:
                designation = m.group(8)
                if not stream.use_utf8:  # pyte ignores charset designation in UTF-8 mode
                    self.define_charset(designation[1], mode=designation[0])

    def _draw_styled(self, run: str) -> None:
        """Draw printable text interleaved with SGR sequences: what `draw` and `select_graphic_rendition`
        would do part by part, without a token dispatch per part. Parts that would wrap go to `draw`."""
        mode = self.mode
        parts = SGR_SEQ_SPLIT.split(run)  # text, SGR sequence, text, ..., text
        if not (
            mo.DECAWM in mode
            and mode.isdisjoint(_NO_BATCH_MODES)
            and self.charset == 0
            and self.g0_charset is cs.LAT1_MAP
        ):
            for i, part in enumerate(parts):
                if i & 1:
                    self.select_graphic_rendition(*parse_params(part[2:-1]))
                elif part:
                    self.draw(part)
            return
        cursor = self.cursor
        x = cursor.x
        if run.isascii() or narrow_text(run):
            # One cell per character: if the whole run fits on the row, the attributes in force for each
            # text part and its cells are all found in C, and the row is written once.
            moves = list(accumulate(parts[1::2], _LOOKUP, initial=chars_for(cursor.attrs).moves))
            texts = parts[::2]
            cells = list(chain.from_iterable(map(_LOOKUP, map(_TEXTS, moves), texts)))
            end = x + len(cells)
            if end <= self.columns:
                if cells:
                    self.buffer[cursor.y].update(zip(range(x, end), cells))  # noqa: B905 - same length
                cursor.attrs = moves[-1].chars.attrs
                cursor.x = end
                self.dirty.add(cursor.y)
                return
        chars = chars_for(cursor.attrs)
        get = chars.__getitem__
        start = x
        columns = self.columns
        # Cells are collected and written to the row once: one dict update per part costs a third more.
        cells = []
        # parts alternate text and SGR sequences: text, SGR, text, SGR, ..., text
        for k in range(0, len(parts), 2):
            if k:
                chars = chars.moves[parts[k - 1]].chars
                get = chars.__getitem__
            part = parts[k]
            if not part:
                continue
            end = x + len(part)
            if end <= columns and (part.isascii() or narrow_text(part)):
                cells += map(get, part)
                x = end
            else:
                if cells:
                    self.buffer[cursor.y].update(zip(range(start, x), cells))  # noqa: B905 - same length
                    cells = []
                cursor.attrs = chars.attrs
                cursor.x = x
                self.draw(part)  # autowrap (possibly scrolling), wide or zero-width characters
                cursor = self.cursor
                x = start = cursor.x
        if cells:
            self.buffer[cursor.y].update(zip(range(start, x), cells))  # noqa: B905 - same length
        cursor.attrs = chars.attrs
        cursor.x = x
        self.dirty.add(cursor.y)

    def _feed_slow(self, text: str, pos: int) -> int:
        """Give characters to pyte's own parser until it is back in its ground state; returns the new pos."""
        stream = self._stream
        n = len(text)
        while pos < n:
            char = text[pos]
            pos += 1
            try:
                pyte.Stream.feed(stream, char)
            except (TypeError, ValueError, LookupError, NameError, AssertionError):
                self.errors += 1  # pyte has already reset its parser
            if stream._taking_plain_text:
                break
        return pos

    def _batch_allowed(self) -> bool:
        margins = self.margins
        mode = self.mode
        return (
            (margins is None or (margins.top == 0 and margins.bottom == self.lines - 1))
            and mo.DECAWM in mode
            and mode.isdisjoint(_NO_BATCH_MODES)
            and self.charset == 0
            and self.g0_charset is cs.LAT1_MAP
            and self.cursor.x == 0
        )

    def _try_batch(self, text: str, pos: int) -> int:
        """Apply the whole lines starting at `pos` in one go, if they are simple; returns the new pos."""
        m = (_BATCH_ASCII if text.isascii() else _BATCH).match(text, pos)
        if m is None or not self._batch_allowed():
            return pos
        end = m.end()
        segment = text[pos : end - 2]
        lines = segment.split("\r\n")
        columns = self.columns
        if "\x1b" not in segment and (segment.isascii() or narrow_text(segment)):
            if max(map(len, lines)) > columns:
                # Autowrap: a long line is the same as its screen-wide pieces each ending in CR LF.
                wrapped: list[str] = []
                for line in lines:
                    if len(line) <= columns:
                        wrapped.append(line)
                    else:
                        wrapped.extend(line[i : i + columns] for i in range(0, len(line), columns))
                lines = wrapped
            self._apply_lines(lines, self.cursor.attrs)
            return end
        attrs = self.cursor.attrs
        rows: list[str | Piece] = []
        starts: list[Char] = []
        cache = SGR_CACHE
        for line in lines:
            if "\x1b" not in line:
                parts = None
                visible_len = len(line)
                width = visible_len if line.isascii() else text_width(line)
            else:
                parts = SGR_SPLIT.split(line)
                if line.isascii():  # SGR is ASCII, so the text is too: one cell per character
                    width = visible_len = sum(map(len, parts[::2]))
                else:
                    visible = "".join(parts[::2])
                    visible_len = len(visible)
                    width = text_width(visible)
            narrow = width == visible_len
            if not narrow and (width is None or width > columns):
                # Zero-width or unprintable characters, or wide ones wrapping: the general path.
                if rows:
                    self._apply_lines(rows, starts)
                    rows, starts = [], []
                self.cursor.attrs = attrs
                self._feed_text(line + "\r\n", batch=False)
                attrs = self.cursor.attrs
            elif parts is None:
                if len(line) <= columns:
                    rows.append(line)
                    starts.append(attrs)
                else:
                    pieces = [line[i : i + columns] for i in range(0, len(line), columns)]
                    rows.extend(pieces)
                    starts.extend([attrs] * len(pieces))
            else:
                if not narrow or visible_len <= columns:
                    rows.append(line)
                    starts.append(attrs)
                else:  # wraps: one row per screen width, cut out only if it is ever drawn
                    count = -(-visible_len // columns)
                    rows.extend([(line, k, columns) for k in range(count)])
                    starts.extend([attrs] * count)
                for params in parts[1::2]:
                    if params in _SGR_RESETS:  # the commonest SGR; batches never run reversed (DECSCNM)
                        attrs = DEFAULT_CHAR
                    else:
                        attrs = cache.get((attrs, params, False)) or sgr_apply(attrs, params, False)
        if rows:
            self._apply_lines(rows, starts)
        self.cursor.attrs = attrs
        return end

    def _apply_lines(self, rows: Sequence[str | Piece], starts: list[Char] | Char) -> None:
        """The effect of drawing each of `rows` from column 0 and then CR LF, with the cursor at column 0 and
        the scroll region the whole screen; `starts` are the attributes each row begins with (or one for
        all). Rows are numbered virtually: existing rows 0..bottom, then row y+i for line i; the screen
        ends up showing virtual rows s..s+bottom, where s is the number of scrolls, and virtual rows below
        s leave through the top. Lines that leave inside the batch are never drawn."""
        n = len(rows)
        buffer = self.buffer
        cursor = self.cursor
        y = cursor.y
        bottom = self.lines - 1

        def draw(row: Row, i: int) -> None:
            draw_line(row, *resolve_row(rows[i], starts if isinstance(starts, Char) else starts[i]))

        # Lines that land on existing rows are drawn over what is there (pyte overwrites only those cells).
        for i in range(min(n, bottom - y + 1)):
            if rows[i]:  # pyte creates no row for an empty line
                draw(buffer[y + i], i)
        scrolls = max(0, y + n - bottom)
        if scrolls == 0:
            cursor.y = y + n
            self.dirty.update(range(y, y + n))
            return
        if not self._alt_active:
            scrollback = self.scrollback
            for v in range(min(scrolls, bottom + 1)):
                scrollback.append_row(buffer.get(v))
            if scrolls > bottom + 1:
                hi = scrolls - y
                lo = max(bottom + 1 - y, hi - scrollback.maxlen)
                if isinstance(starts, Char):
                    scrollback.extend_plain(cast("list[str]", rows[lo:hi]), starts)  # no SGR, no pieces
                else:
                    scrollback.extend_drawn(rows[lo:hi], starts[lo:hi])
        moved: dict[int, Row] = {}
        for r in range(bottom + 1):
            v = r + scrolls
            if v <= bottom:
                row = buffer.get(v)
                if row is not None:
                    moved[r] = row
            elif v - y < n:
                fresh = StaticDefaultDict[int, Char](self.default_char)
                draw(fresh, v - y)
                moved[r] = fresh
        buffer.clear()
        buffer.update(moved)
        self._create_rows(bottom)
        cursor.y = bottom
        self.dirty.update(range(self.lines))
