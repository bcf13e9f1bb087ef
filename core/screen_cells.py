"""Stem's cell (`Char`: pyte's, plus the attributes pyte drops) and shared cell helpers for its fast screen: reused
`Char` instances, cached SGR transitions, row text."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import accumulate, chain
from operator import attrgetter
from typing import Any, NamedTuple

import pyte.screens
from pyte import graphics as g
from pyte.screens import StaticDefaultDict, wcwidth


class Char(NamedTuple):
    """A cell: pyte's `Char` (its nine fields first, in its order) plus the SGR attributes pyte drops: dim (SGR 2,
    which agents draw hints and secondary text in), conceal (8), double underline (21, 4:2) and overline (53).
    pyte's own methods make cells with `cursor.attrs._replace`, so its code paths keep the extra fields."""

    data: str
    fg: str = "default"
    bg: str = "default"
    bold: bool = False
    italics: bool = False
    underscore: bool = False
    strikethrough: bool = False
    reverse: bool = False
    blink: bool = False
    dim: bool = False
    conceal: bool = False
    double_underscore: bool = False
    overline: bool = False


# The attributes of a blank cell on a normal (not DECSCNM-reversed) screen, as pyte's `default_char`, and on a
# reversed one.
DEFAULT_CHAR = Char(" ")
REVERSE_CHAR = DEFAULT_CHAR._replace(reverse=True)

# What an erase leaves, by background colour: on a normal screen, and on a DECSCNM-reversed one.
_BLANKS: tuple[dict[str, Char], dict[str, Char]] = ({"default": DEFAULT_CHAR}, {"default": REVERSE_CHAR})


def blank_of(attrs: Char, reversed_screen: bool) -> Char:
    """The cell an erase (EL, ED, ECH) leaves when the cursor has `attrs`, as xterm and tmux leave it: a blank of the
    background colour alone. pyte's kept every attribute, so text erased after SGR 7, 4 or 9 (a status line's EL
    before its reset) left a reversed, underlined or struck-through bar where a terminal shows none. Under DECSCNM
    (`reversed_screen`) the blank is reversed, as every blank cell of that screen is."""
    blanks = _BLANKS[reversed_screen]
    blank = blanks.get(attrs.bg)
    if blank is None:
        plain = blanks["default"]
        if len(blanks) >= _CACHE_LIMIT:  # true colour: bounded like the other caches
            blanks.clear()
            blanks["default"] = plain
        blank = blanks[attrs.bg] = plain._replace(bg=attrs.bg)
    return blank


# One SGR sequence; `split` on it alternates text and parameter strings.
SGR_SPLIT = re.compile(r"\x1b\[([0-9;]*)m")

Row = StaticDefaultDict[int, Char]

# The kind of row of each default cell, by the cell's id (the kind holds the cell, so the id is not reused while the
# entry is there). Bounded like the other caches.
_ROW_KINDS: dict[int, Callable[[], Row]] = {}


def row_kind(default: Char) -> Callable[[], Row]:
    """What makes a new row showing `default` where nothing is written: pyte's row class with `default` as a class
    attribute and dict's own `__init__`, so that a row is made in C, without pyte's `__init__` (a call in Python that
    sets an attribute): three times as fast, and scrolls make a row a line (less paging, a tmux pane)."""
    kind = _ROW_KINDS.get(id(default))
    if kind is None or kind.default is not default:  # type: ignore[attr-defined]
        if len(_ROW_KINDS) >= 64:
            _ROW_KINDS.clear()
        kind = _ROW_KINDS[id(default)] = type(
            "Row", (StaticDefaultDict,), {"default": default, "__init__": dict.__init__, "__module__": __name__}
        )
    return kind


def new_row(default: Char) -> Row:
    """A new row showing `default` where nothing is written (`row_kind`; where many are made, call its result)."""
    return row_kind(default)()


def mark_wrapped(row: Row, on: bool) -> None:
    """Mark `row` as one autowrap went on from to the next, or not (read with `getattr(row, "wrapped", False)`: pyte's
    own rows have no such attribute)."""
    row.wrapped = on  # type: ignore[attr-defined]


# Caches are bounded by wiping them when full: entries are cheap to recompute and a truecolor rainbow
# must not grow memory without limit (16k entries are a few MB).
_CACHE_LIMIT = 16384


class CharCache(dict[str, Char]):
    """Maps a character to the one shared `Char` with these attributes; a namedtuple per cell is the
    dominant cost of pyte's `draw`, and `Char` is immutable so sharing is safe. `moves` are the SGR
    transitions out of these attributes, `texts` and `runs` the cells of pieces of text drawn from them, `lines`
    the batch lines met from them (`BatchLine`)."""

    __slots__ = ("_rest", "attrs", "blank", "lines", "moves", "rows", "runs", "texts")

    def __init__(self, attrs: Char) -> None:
        # No `dict.__init__`: it would only make the empty dict that `dict.__new__` has made.
        self.attrs = attrs
        self.moves = SgrMoves(self)
        self._rest = attrs[1:]
        self.blank = blank_of(attrs, False)  # what an erase leaves from these attributes

    def __getattr__(self, name: str) -> Any:
        # `texts`, `runs` and `rows` are made when first used: most attributes a log line passes through only
        # lead on to the next (`moves`), and never draw a cell.
        kind = _LAZY.get(name)
        if kind is None:
            raise AttributeError(name)
        made = kind(self)
        setattr(self, name, made)
        return made

    def __missing__(self, data: str) -> Char:
        char: Char = _new_char(Char, (data, *self._rest))  # `_replace(data=...)`, without its Python
        self[data] = char
        return char


class SgrMoves(dict[str, "SgrMoves"]):
    """Maps a whole SGR sequence (ESC [ params m, as `SGR_SEQ_SPLIT` cuts them out) to the moves of the
    attributes it leads to from `chars.attrs`, on a normal (not DECSCNM) screen. Being a mapping to its own
    kind, a run of SGR sequences is followed in C: `accumulate(seqs, dict.__getitem__, initial=moves)`. Entries come
    from `sgr_apply`, so they are pyte's by construction."""

    __slots__ = ("chars",)

    def __init__(self, chars: CharCache) -> None:
        self.chars = chars

    def __missing__(self, seq: str) -> SgrMoves:
        # Met once per node for most sequences (a log's truecolour spans make a node each, then reset it): a reset
        # skips working out SGR, and the node is looked up inline.
        attrs = DEFAULT_CHAR if seq in RESET_SEQS else _sgr_result(self.chars.attrs, seq[2:-1], False)
        chars = _char_caches.get(attrs)
        moves = (chars if chars is not None else chars_for(attrs)).moves
        if _spent[_MOVES] < _MOVES_BUDGET:
            _spent[_MOVES] += 1
        else:
            _spend(_MOVES, 1)
        self[seq] = moves
        return moves


class TextCells(dict[str, tuple[Char, ...]]):
    """Maps a piece of text whose characters each take one or two cells (callers check: `cells_width`) to its
    cells with `chars.attrs`, a two-cell character followed by the empty stub pyte puts after it: the words of
    coloured output recur under the same attributes, and one lookup per piece is cheaper than one per
    character. Short pieces are kept, longer ones (up to `_RUN_KEEP`) the second time they are met."""

    __slots__ = ("chars",)

    def __init__(self, chars: CharCache) -> None:
        super().__init__()
        self.chars = chars

    def __missing__(self, text: str) -> tuple[Char, ...]:
        get = self.chars.__getitem__
        if text.isascii() or NARROW.issuperset(text):
            cells = tuple(map(get, text))
        else:
            out: list[Char] = []
            _add_cells(out, text, get)
            cells = tuple(out)
        if len(text) <= _TEXT_KEEP or seen_twice(text):
            _spend(_TEXTS_KIND, 1 + len(text))
            self[text] = cells
        return cells


# The `TextCells` of an `SgrMoves` node.
TEXTS = attrgetter("chars.texts")

# `d[key]` for the cache dicts: dict subclasses get a generic subscript slot that looks `__getitem__` up on
# every call, while dict's own method goes straight to the lookup (and still calls `__missing__`).
LOOKUP: Any = dict.__getitem__

Run = tuple[tuple[Char, ...], CharCache]


class RunCells(dict[str, Run]):
    """Maps a run of text and SGR sequences (ESC [ params m), whose characters each take one or two cells, to
    the cells drawing it from `chars.attrs` makes and the node of the attributes in force after it: full-screen
    programs repaint the same runs (a table cell, a status line) over and over, and then a run costs one
    lookup. A run is kept the second time it is met (most runs of a log or of a repaint in new colours are met
    once), and only runs up to `_RUN_KEEP` characters."""

    __slots__ = ("chars",)

    def __init__(self, chars: CharCache) -> None:
        super().__init__()
        self.chars = chars

    def __missing__(self, run: str) -> Run:
        found = run_cells(self.chars, run)
        if seen_twice(run):
            _spend(_RUNS_KIND, 1 + len(found[0]))
            self[run] = found
        return found


class RowCells(dict[str, dict[int, Char]]):
    """A run drawn from column 0 as the cells of a row, {column: cell}: a row is written from a dict about twice as
    fast as from pairs. Kept for the runs `RunCells` keeps."""

    __slots__ = ("chars",)

    def __init__(self, chars: CharCache) -> None:
        super().__init__()
        self.chars = chars

    def __missing__(self, run: str) -> dict[int, Char]:
        runs = self.chars.runs
        cells = dict(enumerate(runs[run][0]))
        if run in runs:
            _spend(_RUNS_KIND, 1 + len(cells))
            self[run] = cells
        return cells


# Runs of one cell written by EL and ED, by (id of the cell, first column, column after the last); an entry keeps
# its cell alive, so the id is not reused while the entry is there. Bounded like the other caches.
_FILLS: dict[tuple[int, int, int], dict[int, Char]] = {}
_FILL_LIMIT = 1024


def fill(cell: Char, start: int, end: int) -> dict[int, Char]:
    """{column: cell} for columns `start`..`end - 1`: a row is written from a dict twice as fast as from pairs, and
    EL and ED write the same runs (to the end of the row, the whole row) again and again."""
    key = (id(cell), start, end)
    cells = _FILLS.get(key)
    if cells is None:
        if len(_FILLS) >= _FILL_LIMIT:
            _FILLS.clear()
        cells = _FILLS[key] = dict.fromkeys(range(start, end), cell)
    return cells


# A batch line worked out (see `StemScreen._try_batch`): the line without its EL, whether an EL ended it, the node
# of the attributes after it, the cells it takes and the characters it shows.
BatchLine = tuple[str, bool, CharCache, int, int]


def _batch_lines(chars: CharCache) -> dict[str, BatchLine]:
    return {}


_LAZY: dict[str, Callable[[CharCache], Any]] = {
    "texts": TextCells,
    "runs": RunCells,
    "rows": RowCells,
    "lines": _batch_lines,
}
_PARTS: dict[str, Any] = {name: CharCache.__dict__[name] for name in _LAZY}


def run_cells(chars: CharCache, run: str) -> Run:
    """What `RunCells` maps `run` to, worked out."""
    if "\x1b" not in run:
        return chars.texts[run], chars
    parts = SGR_SEQ_SPLIT.split(run)  # text, SGR sequence, text, ..., text
    moves = list(accumulate(parts[1::2], LOOKUP, initial=chars.moves))
    return tuple(chain.from_iterable(map(LOOKUP, map(TEXTS, moves), parts[::2]))), moves[-1].chars


# Runs met once since the set was last emptied; bounded like the other caches.
_seen: set[str] = set()


# Batch lines met since the set was last emptied (see `StemScreen._try_batch`); bounded like the other caches.
LINES_SEEN: set[str] = set()
# Paint runs with DEC line drawing in them, as drawn (core.screen._line_drawn).
LINE_DRAWN: dict[str, str | None] = {}


def seen_twice(run: str) -> bool:
    """Whether `run` (short enough to keep) was met before; if not, remember it."""
    if run in _seen:
        return True
    if len(run) <= _RUN_KEEP:
        if len(_seen) >= _CACHE_LIMIT:
            _seen.clear()
        _seen.add(run)
    return False


# The longest piece of text `TextCells` keeps, and the longest run `RunCells` keeps.
_TEXT_KEEP = 32
_RUN_KEEP = 1024

# What the entries of `SgrMoves`, `TextCells` and `RunCells` hold since each kind was last forgotten (an entry,
# plus a reference per cell), and the budget of each (a few MB). Each kind is forgotten on its own: unique text (a
# log line, a repaint in new colours) must not cost the cells and SGR moves of every node.
_MOVES, _TEXTS_KIND, _RUNS_KIND = 0, 1, 2
_spent = [0, 0, 0]
_BUDGET_PER_LIMIT = 16
_MOVES_BUDGET = _CACHE_LIMIT * _BUDGET_PER_LIMIT - 1  # below it, an entry only counts (`_spend`)
# The SGR sequences that reset every attribute (to pyte's default cell, on a screen that is not reversed).
RESET_SEQS = frozenset({"\x1b[m", "\x1b[0m"})


def _spend(kind: int, cost: int) -> None:
    """Count entries made for one kind of cache; past its budget, forget that kind in every node (for moves,
    every `CharCache`), as the other caches are forgotten when full. Nodes still in use stay valid: what a
    node holds depends only on its attributes."""
    _spent[kind] += cost
    if _spent[kind] >= _CACHE_LIMIT * _BUDGET_PER_LIMIT:
        _spent[kind] = 0
        if kind == _MOVES:
            _forget_cells()
        else:
            names = ("texts",) if kind == _TEXTS_KIND else ("runs", "rows", "lines")
            for chars in _char_caches.values():
                _clear_made(chars, names)


def spend_runs(cost: int) -> None:
    """Count an entry made outside this module in a cache forgotten with the runs (`CharCache.lines`)."""
    _spend(_RUNS_KIND, cost)


def _clear_made(chars: CharCache, names: tuple[str, ...]) -> None:
    """Empty the named parts of a node that have been made (without making the others)."""
    for name in names:
        try:
            made = _PARTS[name].__get__(chars, CharCache)  # the slot itself: `chars.name` would make it
        except AttributeError:
            continue
        made.clear()


def _forget_cells() -> None:
    """Forget every `CharCache` with its moves and texts. They are emptied, not just dropped: each holds
    its moves and texts in a reference cycle, and emptied they leave the garbage collector a few small
    dicts rather than every cell they hold. A node still in use stays valid, refilled as it is used."""
    for chars in _char_caches.values():
        chars.moves.clear()
        _clear_made(chars, ("texts", "runs", "rows", "lines"))
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


# Cached `sgr_apply` results.
SGR_CACHE: dict[tuple[Char, str | tuple[int, ...], bool], Char] = {}
_RESETS: frozenset[str | tuple[int, ...]] = frozenset({"", "0", (), (0,)})
# A `Char` from its fields, as namedtuple's own `_make` builds it, without a Python-level call.
_new_char: Any = tuple.__new__
_FIELDS = Char._fields

# What each SGR parameter list sets (pyte's `replace`), by parameters (as text or parsed) and whether the screen
# is reversed.
_EFFECTS: dict[tuple[str | tuple[int, ...], bool], dict[str, Any]] = {}
_RESET: dict[str, Any] = {}  # the effect of a reset alone
# SGR parameters that set one truecolour foreground or background, or one and then another (rich draws its colour
# gradients a cell at a time, each with its own two), and nothing else.
_TRUECOLOUR = re.compile(
    r"([34])8;2;([0-9]{1,4});([0-9]{1,4});([0-9]{1,4})(?:;([34])8;2;([0-9]{1,4});([0-9]{1,4});([0-9]{1,4}))?"
)
# What a reset sets, on a normal and on a reversed screen (read only).
_DEFAULT_FIELDS = DEFAULT_CHAR._asdict()
_REVERSE_FIELDS = REVERSE_CHAR._asdict()


def parse_params(params: str) -> tuple[int, ...]:
    """CSI parameters as pyte's parser reads them: empty means 0, values are capped at 9999."""
    parts = params.split(";")
    if "" not in parts and max(map(len, parts)) <= 4:  # no part longer than 4 digits: nothing to cap
        return tuple(map(int, parts))
    return tuple(min(int(p), 9999) if p else 0 for p in parts)


UNDERLINE_COLOUR = 58  # SGR 58;5;N or 58;2;R;G;B


def colon_sgr(params: str) -> str:
    """SGR parameters with colon sub-parameters (ITU T.416, as kitty, VTE and newer xterm take them) in the
    semicolon form pyte reads: `38:2::R:G:B` and `38:2:R:G:B` to `38;2;R;G;B`, `38:5:N` to `38;5;N` (48 the
    same), `4:0` (no underline) to 24, `4:2` (double) to 4 and 21 (an underline to pyte, double to Stem) and the
    other underline styles (`4:3` curly, dotted, dashed) to 4; the underline colour (`58:...`) is dropped, as is a
    colour in a space pyte lacks; any other parameter keeps only its first part."""
    out: list[str] = []
    for part in params.split(";"):
        if ":" not in part:
            out.append(part)
            continue
        code, *sub = part.split(":")
        if code in ("38", "48") and sub:
            if sub[0] == "5" and len(sub) >= 2:
                out += [code, "5", sub[1] or "0"]
            elif sub[0] == "2" and len(sub) >= 4:
                rgb = sub[2:5] if len(sub) >= 5 else sub[1:4]  # with the colour space id (often empty) or without
                out += [code, "2", *(c or "0" for c in rgb)]
        elif code == "4":
            out.append("24" if sub[0] == "0" else "4;21" if sub[0] == "2" else "4")
        elif code != "58":
            out.append(code)
    return ";".join(out)


def sgr_apply(attrs: Char, params: str | tuple[int, ...], reverse_screen: bool) -> Char:
    """The cursor attributes after SGR `params` (a parameter string or parsed ints) starting from `attrs`, as
    pyte's `select_graphic_rendition` leaves them; `reverse_screen` is DECSCNM, which changes what "reset"
    means. What a parameter list sets does not depend on the attributes it starts from, so it is worked out
    once per list (`_sgr_effect`) and applied to each new starting point."""
    if not reverse_screen and params in _RESETS:
        return DEFAULT_CHAR  # a reset does not depend on what came before: no cache entry per state
    key = (attrs, params, reverse_screen)
    out = SGR_CACHE.get(key)
    if out is None:
        out = _sgr_result(attrs, params, reverse_screen)
        if len(SGR_CACHE) >= _CACHE_LIMIT:
            SGR_CACHE.clear()
        SGR_CACHE[key] = out
    return out


def _sgr_result(attrs: Char, params: str | tuple[int, ...], reverse_screen: bool) -> Char:
    """`sgr_apply` worked out: `attrs` with what `params` sets replaced."""
    effect = _EFFECTS.get((params, reverse_screen))
    if effect is None:
        if len(_EFFECTS) >= _CACHE_LIMIT:
            _EFFECTS.clear()
        truecolour = _TRUECOLOUR.fullmatch(params) if isinstance(params, str) else None
        if truecolour is not None:
            # One truecolour colour or two, as most are sent (and most are met once): what `_sgr_effect` gives.
            kind, r, g, b, kind2, r2, g2, b2 = truecolour.groups()
            effect = {"fg" if kind == "3" else "bg": f"{int(r):02x}{int(g):02x}{int(b):02x}"}
            if kind2 is not None:  # (the same one twice: the second wins, as pyte reads them in turn)
                effect["fg" if kind2 == "3" else "bg"] = f"{int(r2):02x}{int(g2):02x}{int(b2):02x}"
        else:
            ints = parse_params(params) if isinstance(params, str) else params
            # A reset alone (no parameter, or 0) gives pyte's default cell as it is.
            reset = not ints or ints == (0,)
            effect = _RESET if reset else _sgr_effect(ints, reverse_screen)
        _EFFECTS[params, reverse_screen] = effect
    if effect is _RESET:
        return REVERSE_CHAR if reverse_screen else DEFAULT_CHAR
    out: Char = _new_char(Char, map(effect.get, _FIELDS, attrs))  # `attrs._replace(**effect)`, in C
    return out


# What SGR parameters set of the fields pyte lacks (`Char`), beside what pyte's own table sets: 22 is normal
# intensity (neither bold nor dim), 4 a single underline (no longer double, as in xterm and VTE), 24 no underline
# of either kind.
_EXTRA_TEXT: dict[int, dict[str, bool]] = {
    2: {"dim": True},
    22: {"dim": False},
    8: {"conceal": True},
    28: {"conceal": False},
    21: {"double_underscore": True},
    4: {"double_underscore": False},
    24: {"double_underscore": False},
    53: {"overline": True},
    55: {"overline": False},
}


# The colours of SGR 38;5;N and 48;5;N. N < 16 is the terminal's palette colour, which xterm and tmux draw as SGR
# 30-37 and 90-97 (40-47, 100-107) draw it: stored under pyte's name for it as those store it, so that it follows the
# user's or the theme's palette (pyte's fixed RGB would not). N >= 16 keeps pyte's RGB.
_FG_256 = (*(g.FG_ANSI[30 + n] for n in range(8)), *(g.FG_AIXTERM[90 + n] for n in range(8)), *g.FG_BG_256[16:])
_BG_256 = (*(g.BG_ANSI[40 + n] for n in range(8)), *(g.BG_AIXTERM[100 + n] for n in range(8)), *g.FG_BG_256[16:])


_REVERSE_SGR = (7, 27)


def _sgr_effect(ints: tuple[int, ...], reverse_screen: bool) -> dict[str, Any]:
    """The fields SGR `ints` sets: pyte's `select_graphic_rendition` (0.8), step for step, quirks included (a
    bad 256-colour index or a short truecolour is skipped; a reset sets every field, the character too), but for
    the 16 colours by 256-colour index (`_FG_256`) and SGR 7 and 27 on a reversed screen, and the fields pyte
    lacks (`_EXTRA_TEXT`)."""
    default = _REVERSE_FIELDS if reverse_screen else _DEFAULT_FIELDS
    replace: dict[str, Any] = {}
    attrs_list = list(reversed(ints))
    while attrs_list:
        attr = attrs_list.pop()
        extra = _EXTRA_TEXT.get(attr)
        if extra is not None:
            replace.update(extra)
        if attr == 0:
            replace.update(default)
        elif attr in g.FG_ANSI:
            replace["fg"] = g.FG_ANSI[attr]
        elif attr in g.BG:
            replace["bg"] = g.BG_ANSI[attr]
        elif attr in g.TEXT:
            attr_str = g.TEXT[attr]
            # (on a reversed screen SGR 7 shows a cell the right way round, as xterm draws it: `_reverse_screen`)
            replace[attr_str[1:]] = attr_str.startswith("+") != (reverse_screen and attr in _REVERSE_SGR)
        elif attr in g.FG_AIXTERM:
            replace["fg"] = g.FG_AIXTERM[attr]
        elif attr in g.BG_AIXTERM:
            replace["bg"] = g.BG_AIXTERM[attr]
        elif attr in (g.FG_256, g.BG_256):
            key = "fg" if attr == g.FG_256 else "bg"
            try:
                n = attrs_list.pop()
                if n == 5:
                    replace[key] = (_FG_256 if attr == g.FG_256 else _BG_256)[attrs_list.pop()]
                elif n == 2:
                    replace[key] = f"{attrs_list.pop():02x}{attrs_list.pop():02x}{attrs_list.pop():02x}"
            except IndexError:
                pass
        elif attr == UNDERLINE_COLOUR:
            # Its colour's parameters are its own, as tmux, VTE and kitty read them (not a 0 that resets, a 2 that
            # dims); Stem draws underlines in the text's colour. pyte takes them one by one.
            space = attrs_list.pop() if attrs_list else 0
            del attrs_list[max(0, len(attrs_list) - {5: 1, 2: 3}.get(space, 0)) :]
    return replace


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


def wrap_cells(cells: Sequence[Char], columns: int) -> list[Sequence[Char]]:
    """The rows autowrap cuts the cells of a line drawn from column 0 into: `columns` cells each, except that a
    two-cell character that would land in the last column goes to the next row, as xterm and tmux wrap it (the row
    before is a cell shorter: its last column is left as it was)."""
    rows: list[Sequence[Char]] = []
    pos, n = 0, len(cells)
    while pos < n:
        end = pos + columns
        if end < n and cells[end].data == "" and end - 1 > pos:
            end -= 1
        rows.append(cells[pos:end])
        pos = end
    return rows


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
    """Cell characters joined as a terminal shows them: a wide character once for its two cells (the stub after it
    skipped, as pyte's `display` does). Half a wide character drawn over (a program writing over one of its cells;
    pyte keeps the other as it was) shows as a blank, so that the row keeps its width: a stub whose character is gone
    (as tmux shows it), or a wide character whose stub is (pyte's `display` raised on the one, and lost the cell after
    the other)."""
    text = "".join(datas)
    if text.isascii() and len(text) == len(datas):
        return text  # no wide characters and no stubs left of one, so nothing to skip
    out: list[str] = []
    skip = False
    last = len(datas) - 1
    for i, data in enumerate(datas):
        if skip:
            skip = False
        elif not data:
            out.append(" ")
        elif not data.isascii() and cell_width(data[0]) == 2:
            skip = i < last and not datas[i + 1]
            out.append(data if skip else " ")
        else:
            out.append(data)
    return "".join(out)


def cell_width(char: str) -> int:
    """The cells `char` takes: the wcwidth package's count, as pyte's, except that a regional indicator takes one
    (as glibc, xterm, tmux and rich count it: a flag, two of them, is two cells, where the package made it four
    and pushed the rest of its row one cell per indicator past where the program put it)."""
    if "\U0001f1e6" <= char <= "\U0001f1ff":
        return 1
    return wcwidth(char)


# pyte's own `draw` (which Stem uses in insert mode and for other charsets) measures with it too.
pyte.screens.wcwidth = cell_width


# Characters pyte draws as exactly one cell (its `wcwidth` is 1), so runs of them can be drawn in bulk.
# Grown as characters are met, from pyte's own `wcwidth`, so it always agrees with pyte.
NARROW: set[str] = {chr(c) for c in range(0x20, 0x7F)}


class _Widths(dict[str, int]):
    """pyte's `wcwidth` as a dict, so that `map(WIDTHS.__getitem__, text)` runs in C for known characters."""

    def __missing__(self, char: str) -> int:
        width = self[char] = cell_width(char)
        return width


WIDTHS = _Widths()

_NOT_TEXT = frozenset("\r\n\x1b")  # line ends and SGR introducers met when checking whole batches


def narrow_text(text: str) -> bool:
    """True if every character of `text` (ignoring CR, LF and ESC) takes exactly one cell in pyte."""
    if NARROW.issuperset(text):
        return True
    for char in set(text) - NARROW - _NOT_TEXT:
        if cell_width(char) != 1:
            return False
        NARROW.add(char)
    return True


def cells_ok(text: str) -> bool:
    """True if every character of `text` (ignoring CR, LF and ESC) takes one or two cells in pyte: such text is
    drawn as `TextCells` draws it, as long as it fits on the row."""
    if _CELLS_OK.issuperset(text):
        return True
    for char in set(text) - _CELLS_OK:
        width = WIDTHS[char]
        if width == 1:
            NARROW.add(char)
        elif width != 2:
            return False
        _CELLS_OK.add(char)
    return True


# Characters known to take one or two cells, and CR, LF and ESC (which `cells_ok` ignores): grown as they are met.
_CELLS_OK: set[str] = NARROW | _NOT_TEXT


def text_width(text: str) -> int | None:
    """The cells `text` takes when drawn from column 0 without wrapping, if every character takes one or
    two cells; None if any is zero-width or unprintable (those need pyte's character-by-character rules). Only the
    characters that are not printable ASCII are looked at (found in C): a line of text with a quote mark or a
    dash in it (`man`) is not measured character by character."""
    if text.isascii():
        return len(text)
    odd = _NOT_PRINTABLE_ASCII.findall(text)
    if NARROW.issuperset(odd):
        return len(text)
    widths = list(map(WIDTHS.__getitem__, odd))
    if not set(widths) <= {1, 2}:
        return None
    return len(text) + widths.count(2)


_NOT_PRINTABLE_ASCII = re.compile(r"[^ -~]")


def clear_caches() -> None:
    """Forget every cached `Char` and SGR transition, so that a benchmark run sees its stream cold."""
    _forget_cells()
    SGR_CACHE.clear()
    _EFFECTS.clear()
    _spent[:] = [0, 0, 0]
    _seen.clear()
    LINES_SEEN.clear()
    LINE_DRAWN.clear()
    _FILLS.clear()
