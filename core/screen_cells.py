"""Shared cell helpers for Stem's fast screen: reused `Char` instances, cached SGR transitions, row text."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pyte
from pyte import modes as mo
from pyte.screens import Char, StaticDefaultDict, wcwidth

# The attributes of a blank cell on a normal (not DECSCNM-reversed) screen, as pyte's `default_char`.
DEFAULT_CHAR = Char(" ")

# One SGR sequence; `split` on it alternates text and parameter strings.
SGR_SPLIT = re.compile(r"\x1b\[([0-9;]*)m")

Row = StaticDefaultDict[int, Char]

# Caches are bounded by wiping them when full: entries are cheap to recompute and a truecolor rainbow
# must not grow memory without limit (16k entries are a few MB).
_CACHE_LIMIT = 16384


class CharCache(dict[str, Char]):
    """Maps a character to the one shared `Char` with these attributes; a namedtuple per cell is the
    dominant cost of pyte's `draw`, and `Char` is immutable so sharing is safe. `moves` are the SGR
    transitions out of these attributes."""

    __slots__ = ("attrs", "moves", "texts")

    def __init__(self, attrs: Char) -> None:
        super().__init__()
        self.attrs = attrs
        self.moves = SgrMoves(self)
        self.texts = TextCells(self)

    def __missing__(self, data: str) -> Char:
        char = self.attrs._replace(data=data)
        self[data] = char
        return char


class SgrMoves(dict[str, "SgrMoves"]):
    """Maps a whole SGR sequence (ESC [ params m, as `SGR_SEQ_SPLIT` cuts them out) to the moves of the
    attributes it leads to from `chars.attrs`, on a normal (not DECSCNM) screen. Being a mapping to its own
    kind, a run of SGR sequences is followed in C: `accumulate(seqs, dict.__getitem__, initial=moves)`. Entries come
    from `sgr_apply`, so they are pyte's by construction."""

    __slots__ = ("chars",)

    def __init__(self, chars: CharCache) -> None:
        super().__init__()
        self.chars = chars

    def __missing__(self, seq: str) -> SgrMoves:
        moves = chars_for(sgr_apply(self.chars.attrs, seq[2:-1], False)).moves
        _spend(1)
        self[seq] = moves
        return moves


class TextCells(dict[str, tuple[Char, ...]]):
    """Maps a piece of text whose characters each take one cell to its cells with `chars.attrs`: the words
    of coloured output recur under the same attributes, and one lookup per piece is cheaper than one per
    character. Only short pieces are kept."""

    __slots__ = ("chars",)

    def __init__(self, chars: CharCache) -> None:
        super().__init__()
        self.chars = chars

    def __missing__(self, text: str) -> tuple[Char, ...]:
        cells = tuple(map(self.chars.__getitem__, text))
        if len(text) <= _TEXT_KEEP:
            _spend(1 + len(text))
            self[text] = cells
        return cells


# The longest piece of text `TextCells` keeps.
_TEXT_KEEP = 32

# What `SgrMoves` and `TextCells` entries hold since the cells were last forgotten (an entry, plus a
# reference per cell), and the budget (a few MB).
_spent = [0]
_BUDGET_PER_LIMIT = 16


def _spend(cost: int) -> None:
    """Count entries made for `SgrMoves` and `TextCells`; past the budget, forget every `CharCache` (with
    its moves and texts), as the other caches are forgotten when full. Nodes still in use stay valid:
    what a node holds depends only on its attributes."""
    _spent[0] += cost
    if _spent[0] >= _CACHE_LIMIT * _BUDGET_PER_LIMIT:
        _spent[0] = 0
        _forget_cells()


def _forget_cells() -> None:
    """Forget every `CharCache` with its moves and texts. They are emptied, not just dropped: each holds
    its moves and texts in a reference cycle, and emptied they leave the garbage collector a few small
    dicts rather than every cell they hold. A node still in use stays valid, refilled as it is used."""
    for chars in _char_caches.values():
        chars.moves.clear()
        chars.texts.clear()
        chars.clear()
    _char_caches.clear()


# Cuts text with SGR sequences into text, whole sequence, text, ..., text (the keys of `SgrMoves`).
SGR_SEQ_SPLIT = re.compile(r"(\x1b\[[0-9;]*m)")


_char_caches: dict[Char, CharCache] = {}


def chars_for(attrs: Char) -> CharCache:
    """The shared cache of cells carrying `attrs`."""
    cache = _char_caches.get(attrs)
    if cache is None:
        if len(_char_caches) >= _CACHE_LIMIT:
            _forget_cells()
        cache = _char_caches[attrs] = CharCache(attrs)
    return cache


# Cached `sgr_apply` results; the line batch reads it directly to skip a call per SGR.
SGR_CACHE: dict[tuple[Char, str | tuple[int, ...], bool], Char] = {}
_scratch = threading.local()
_RESETS: frozenset[str | tuple[int, ...]] = frozenset({"", "0", (), (0,)})


def parse_params(params: str) -> tuple[int, ...]:
    """CSI parameters as pyte's parser reads them: empty means 0, values are capped at 9999."""
    return tuple(min(int(p), 9999) if p else 0 for p in params.split(";"))


def sgr_apply(attrs: Char, params: str | tuple[int, ...], reverse_screen: bool) -> Char:
    """The cursor attributes after SGR `params` (a parameter string or parsed ints) starting from `attrs`.

    Misses are computed by pyte's own `select_graphic_rendition` on a per-thread scratch screen, so the
    result is pyte's by construction; `reverse_screen` is DECSCNM, which changes what "reset" means.
    """
    if not reverse_screen and params in _RESETS:
        return DEFAULT_CHAR  # a reset does not depend on what came before: no cache entry per state
    key = (attrs, params, reverse_screen)
    out = SGR_CACHE.get(key)
    if out is None:
        screens: dict[bool, pyte.Screen] | None = getattr(_scratch, "screens", None)
        if screens is None:
            screens = _scratch.screens = {}
        scratch = screens.get(reverse_screen)
        if scratch is None:
            scratch = screens[reverse_screen] = pyte.Screen(1, 1)
            if reverse_screen:
                scratch.mode.add(mo.DECSCNM)
        scratch.cursor.attrs = attrs
        ints = parse_params(params) if isinstance(params, str) else params
        pyte.Screen.select_graphic_rendition(scratch, *ints)
        out = scratch.cursor.attrs
        if len(SGR_CACHE) >= _CACHE_LIMIT:
            SGR_CACHE.clear()
        SGR_CACHE[key] = out
    return out


def draw_line(row: dict[int, Char], raw: str, attrs: Char) -> Char:
    """Draw `raw` (text of one- and two-cell characters with SGR sequences, no wider than the screen) into
    `row` from column 0, exactly as pyte's `draw` would; returns the attributes in force after it."""
    cells: list[Char] = []
    if "\x1b" not in raw:
        _add_cells(cells, raw, chars_for(attrs).__getitem__)
    else:
        for i, part in enumerate(SGR_SPLIT.split(raw)):
            if i & 1:
                attrs = sgr_apply(attrs, part, False)
            elif part:
                _add_cells(cells, part, chars_for(attrs).__getitem__)
    row.update(enumerate(cells))
    return attrs


def _add_cells(cells: list[Char], text: str, get: Callable[[str], Char]) -> None:
    if text.isascii() or NARROW.issuperset(text):
        cells += map(get, text)
        return
    for char in text:
        cells.append(get(char))
        if WIDTHS[char] == 2:
            # The stub pyte puts after a wide character; the line fits, so there is always room for it.
            cells.append(get(""))


def wrap_sgr_line(parts: list[str], attrs: Char, columns: int, rows: list[str], starts: list[Char]) -> Char:
    """Cut a line (`SGR_SPLIT.split` of it) wider than the screen into the rows autowrap makes of it,
    appending each row and the attributes it starts with to `rows` and `starts`; returns the attributes
    after the line. A row breaks only when a visible character no longer fits, so SGR sequences right
    after a full row stay on it and change only the next row's starting attributes, as in pyte."""
    current: list[str] = []
    width = 0
    row_start = attrs
    for i, part in enumerate(parts):
        if i & 1:
            current.append(f"\x1b[{part}m")
            attrs = sgr_apply(attrs, part, False)
            continue
        while part:
            room = columns - width
            if len(part) <= room:
                current.append(part)
                width += len(part)
                break
            current.append(part[:room])
            part = part[room:]
            rows.append("".join(current))
            starts.append(row_start)
            current, width, row_start = [], 0, attrs
    rows.append("".join(current))
    starts.append(row_start)
    return attrs


# A row of a line too wide for the screen, not cut out yet: the line, which row of it, at what width.
Piece = tuple[str, int, int]


def resolve_row(row: str | Piece, attrs: Char) -> tuple[str, Char]:
    """The text and starting attributes of a batch row: `row` itself, or the piece of a wide line (which
    started with `attrs`) that autowrap puts on that row. Pieces are cut only when a row is drawn or a
    scrollback line is asked for, since most rows of a flood scroll away unseen."""
    if isinstance(row, str):
        return row, attrs
    line, k, width = row
    rows: list[str] = []
    starts: list[Char] = []
    wrap_sgr_line(SGR_SPLIT.split(line), attrs, width, rows, starts)
    return rows[k], starts[k]


def strip_sgr(raw: str) -> str:
    """The visible text of a line stored with its SGR sequences."""
    return SGR_SPLIT.sub("", raw) if "\x1b" in raw else raw


def row_text(row: dict[int, Char], columns: int) -> str:
    """A row as a string the way pyte's `display` renders it: the cell after a wide character is skipped."""
    get = row.__getitem__
    return cells_text([get(x).data for x in range(columns)])


def cells_text(datas: list[str] | tuple[str, ...]) -> str:
    """Cell characters joined the way pyte's `display` does it (the cell after a wide character skipped)."""
    text = "".join(datas)
    if text.isascii():
        return text  # no wide characters, so nothing to skip
    out: list[str] = []
    skip = False
    for data in datas:
        if skip:
            skip = False
            continue
        out.append(data)
        # pyte's `display` would raise on an orphaned stub (""); treat it as zero-width instead.
        skip = bool(data) and wcwidth(data[0]) == 2
    return "".join(out)


# Characters pyte draws as exactly one cell (its `wcwidth` is 1), so runs of them can be drawn in bulk.
# Grown as characters are met, from pyte's own `wcwidth`, so it always agrees with pyte.
NARROW: set[str] = {chr(c) for c in range(0x20, 0x7F)}


class _Widths(dict[str, int]):
    """pyte's `wcwidth` as a dict, so that `map(WIDTHS.__getitem__, text)` runs in C for known characters."""

    def __missing__(self, char: str) -> int:
        width = self[char] = wcwidth(char)
        return width


WIDTHS = _Widths()

_NOT_TEXT = frozenset("\r\n\x1b")  # line ends and SGR introducers met when checking whole batches


def narrow_text(text: str) -> bool:
    """True if every character of `text` (ignoring CR, LF and ESC) takes exactly one cell in pyte."""
    if NARROW.issuperset(text):
        return True
    for char in set(text) - NARROW - _NOT_TEXT:
        if wcwidth(char) != 1:
            return False
        NARROW.add(char)
    return True


def text_width(text: str) -> int | None:
    """The cells `text` takes when drawn from column 0 without wrapping, if every character takes one or
    two cells; None if any is zero-width or unprintable (those need pyte's character-by-character rules)."""
    if text.isascii() or NARROW.issuperset(text):
        return len(text)
    widths = list(map(WIDTHS.__getitem__, text))
    if not set(widths) <= {1, 2}:
        return None
    return sum(widths)


def clear_caches() -> None:
    """Forget every cached `Char` and SGR transition, so that a benchmark run sees its stream cold."""
    _forget_cells()
    SGR_CACHE.clear()
    _spent[0] = 0
