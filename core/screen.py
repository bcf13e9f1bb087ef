"""Stem's terminal screen: pyte's emulator with fast paths for floods and full-screen programs, an alternate screen
and scrollback.

`StemScreen` is a `pyte.Screen`; whatever its fast paths do not recognise goes to pyte's own parser and methods (the
last alternative of `_TOKEN`, in `_feed_text`), so correctness never depends on a fast path being complete, and
every fast path is checked against stock pyte's screen (tests/test_screen.py). The fast paths:

- a tokenizer (one regex, `finditer`) that hands whole runs of text and complete common sequences to the screen
  methods, instead of pyte's one-character-at-a-time parser generator. Its commonest token is what full-screen
  programs paint a row with: a move (CUP, perhaps after CR LF; CHA, VPA or CUF, as ncurses places runs), a run of
  text, SGR sequences and ESC ( B or ESC ( 0, then EL, each but one optional;
- cells: one shared `Char` per (character, attributes), found through a node per attributes (`CharCache`) whose
  SGR moves, texts and runs are cached dicts, so a run is drawn with its attributes followed in C; a run met
  twice is one lookup (its cells and the attributes after it); SGR is worked out once per parameter list (so
  truecolour costs no pyte call); rows are written with `dict.update`, runs of one cell (EL, ED) from cached dicts
  (`fill`);
- line batches: consecutive lines of text, SGR and a closing EL, each ended by CR LF, are applied at once, their
  attributes followed for the whole batch in one pass (one regex split), or not at all where every line that has SGR
  ends reset (as git's and ls's do). In a flood, a read is taken for whole lines up to its last CR LF and checked with
  string methods once its SGR sequences are out, rather than by a regex. Lines wider than the screen are a row per
  piece autowrap cuts them into (`LineRows.pieces`; a wide character that does not fit in the last column starts the
  next row, as in xterm). The buffer is rotated once per batch rather than once per line, and lines that scroll away
  inside the batch are never drawn: they go to the scrollback as text, materialised to cells only when asked for. A
  batch that ends a feed is held (`_hold`), with the start of the next line after it kept unparsed (also over several
  reads, for a long line): if the next feed goes on with more lines (the next read of a flood), both are applied as
  one, so reads of any size cost what one large read does. Held lines are applied before anything else happens to the
  screen and before anyone reads its cells, cursor or scrollback (`buffer`, `cursor` and `scrollback` are properties);
  `take_dirty` and the versions count them without applying them;
- deferred paints: a run that fits on its row (CUP + text + SGR + EL, as full-screen programs paint) moves the
  cursor and takes its attributes at once, but its cells are written only when something next reads or writes
  cells (`_buf`; text drawn on a row, EL 1 and REP write only that row's, `_row`), so a row repainted before anyone
  looks is drawn once (`_paint`); a scroll moves the paints with their rows, and drops those of rows it pushes out
  of the region (`_move_paints`). Batch lines that land on the screen without scrolling (top's frames, rich's Live
  redraws, vim's plain lines: `_paint_rows`, `_paint_plain`), EL 0 and 2 (`erase_in_line`), ECH and erase-and-up
  runs (`_erase_up`) are deferred paints too. A paint that covers the row's last paint at the same column drops it
  (Textual repaints the same pieces of its rows), and the alternate screen's paints are dropped with it;
- the commonest tokens of full-screen programs handled in `_feed_text` itself, without calls: a paint of a run met
  before (one lookup gives its cells and the node after it, which is kept for the next run; while only paints, text
  and controls come, the modes and charsets it depends on are looked at once, `_plain_paints`), CUP (its parameters
  looked up, `_Place`, rather than parsed), CHA and CUF, and the private modes pyte only records (DECTCEM: vim hides
  and shows the cursor around every repaint). A deferred paint of a run met before, from column 0, is written from
  the run's cached row of cells (`RowCells`); ED replaces a row whose cells are a prefix of the row (or all of it)
  with a copy of cached cells rather than writing over each;
- a sequence cut by the end of a read is kept as text for the next feed rather than parsed byte by byte by pyte.

Beyond pyte: the alternate screen (1049/1047/47), scrollback outside `HistoryScreen`, bracketed paste,
answers to queries through a responder, a bell counter, per-row versions for render caches, and the SGR attributes
pyte's cells lack (dim, conceal, double underline, overline: cells are Stem's `Char`, pyte's fields first).
pyte's quirks are kept where they change what is drawn (so the screen equals stock pyte's on the same bytes),
except that sequences on which pyte raises are ignored and counted in `errors`.

Relies on two pyte internals: `Stream._text_pattern` (what counts as text) and `Stream._taking_plain_text`
(whether its parser is between sequences). Not thread-safe: feed and read from one thread.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import reduce
from itertools import accumulate, chain, compress, filterfalse, pairwise, repeat
from operator import add, attrgetter, floordiv, ge, itemgetter
from typing import Any, cast

import pyte
from pyte import charsets as cs
from pyte import modes as mo
from pyte.screens import Cursor, Savepoint

from core.screen_cells import (
    DEFAULT_CHAR,
    LINE_DRAWN,
    LINES_SEEN,
    LOOKUP,
    NARROW,
    RESET_SEQS,
    REVERSE_CHAR,
    SGR_SEQ_SPLIT,
    TEXTS,
    BatchLine,
    Char,
    CharCache,
    Piece,
    Row,
    SgrMoves,
    blank_of,
    cell_width,
    cells_ok,
    chars_for,
    colon_sgr,
    fill,
    mark_wrapped,
    narrow_text,
    new_row,
    parse_params,
    row_kind,
    row_text,
    run_cells,
    seen_twice,
    sgr_apply,
    spend_runs,
    text_width,
    wrap_cells,
)
from core.screen_queries import TerminalQueries
from core.screen_scrollback import Scrollback, WrapText, compact_row, entry_cells, entry_wrapped

__all__ = ["Scrollback", "StemScreen"]

# Private modes, shifted the way pyte stores them in `Screen.mode`.
_DECCKM = 1 << 5
_BRACKETED_PASTE = 2004 << 5
_ALT_MODES = frozenset({47, 1047, 1049})
_SAVE_CURSOR = 1048  # DECSC when set, DECRC when reset (pyte has neither)
_DECCOLM = 3
_DECSCNM = 5  # the screen reversed: Stem flips the cells itself (`_reverse_screen`)
_SYNC_MODE = 2026  # synchronized output (`TerminalQueries.set_modes` times its frames)
_NOT_PYTES = frozenset({*_ALT_MODES, _SAVE_CURSOR, _DECCOLM})
# Private modes (by their parameter, shifted as pyte stores them) that pyte's `set_mode` and `reset_mode` only record
# (DECTCEM also shows or hides the cursor, 2026 starts or ends a frame: `TerminalQueries.set_modes`) and Stem does not
# act on: set or reset in place (`_feed_text`). Not DECCOLM, DECSCNM or DECOM (pyte acts on them), nor the alternate
# screens. Beside the modes Stem's keys and mouse read, those agents set at every start that nothing here acts on:
# autorepeat (8), the mouse's other encodings (9, 1001, 1016), alt and meta keys (1034, 1036, 1039), the wheel as
# arrows on the alternate screen (1007: Codex), colour-scheme reports (2031: Claude Code) and tmux's 7727.
_PLAIN_PRIVATE_MODES = {str(m): m << 5 for m in (
    1, 7, 8, 9, 12, 25, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1015, 1016, 1034, 1036, 1039, 2004, 2031,
    _SYNC_MODE, 7727,
)}  # fmt: skip
_SYNC_SHIFTED = _SYNC_MODE << 5
_SYNC_MODES = (_SYNC_MODE,)

_REVERSE_BLANK = REVERSE_CHAR

# Pieces (`StemScreen._feed_pieces`): a feed is cut before every CUP, or, in a feed with fewer than two, before every
# CR that does not begin a CR LF (Claude Code places its runs relative to the cursor, line by line); a piece met a
# third time is worked out once to its effect (`_piece_effect`) and then applied whole.
# Tokens a piece may hold besides CSI and controls (`_piece_effect`): paints, CR LF, erase-and-up, text.
_T_PIECE_TOKENS = frozenset({*range(3, 9), 9, 10, 14})
_CUP_START = re.compile(r"\x1b\[[0-9;]*+H")
_CR_CUT = re.compile(r"\r(?!\n)")
_MIN_CR_CUTS = 8  # in a feed
# After this many reads in a row of more than `_IDLE_CUTS` pieces, less than a quarter of each applied, pieces are
# looked for in one read of every `_PROBE_EVERY` (`StemScreen._met_before`), until a quarter of one was met before.
_IDLE_CUTS = 8
_IDLE_AFTER = 16
_PROBE_EVERY = 4

_MATCH_START = re.Match.start
_PIECE_MAX = 16384  # the longest piece remembered
_PIECES_LIMIT = 4096  # pieces remembered per screen, met once or worked out
_RUN_MAX = 16  # pieces in a run applied whole (`StemScreen._runs`)
_MET_ONCE = 0  # a piece's entry: met once
_MET_TWICE = 2  # met twice: worked out the next time (most pieces of a program that scrolls its output recur once)
_IMPURE = 1  # its entry: its effect depends on more than the screen's state (`_piece_effect`), or cannot be applied
# Private modes (shifted) that do not change what a piece draws: all those set in place but autowrap.
_ENV_FREE = frozenset(_PLAIN_PRIVATE_MODES.values()) - {mo.DECAWM}
# CSI finals a piece may hold, beside SGR and private modes set in place: moves and erases within rows, which write
# cells without reading any (CUP, HVP, CHA, HPA, VPA, CUF, CUB, CUU, CUD, CNL, CPL, EL, ECH); and the scroll up, the
# erase of the display, the scroll region and the cursor saved (SU, ED, DECSTBM, SCOSC: tmux saves it after each
# update of a pane; with parameters, DECSLRM, ignored), which are steps of its effect (`_Scratch`).
_PIECE_CSI = frozenset("mHfG`dCDABEFKXSJrs")
# Controls a piece may hold: CR, LF (VT, FF) and BS, and NUL and DEL, which are ignored.
_PIECE_CONTROLS = frozenset("\r\n\x0b\x0c\x08\x00\x7f")
# A piece's effect: the attributes, column and row it must start with (-1: any), the screen's state it must start
# in (`_env`), its paints ((row, paint, whole row) each), the cursor after it, the node of its attributes, the rows
# it dirties, the private modes it sets in place, in order ((shifted mode, set), ...), its steps (`_Scratch`; None: it
# paints and leaves the scroll region as it was), the screen's state after it (the one it starts in but for the
# scroll region), and its steps with their scrolls merged (`_merged_scrolls`).
PieceOps = tuple[tuple[int, "Paint", bool], ...]
Effect = tuple[
    Char,
    int,
    int,
    tuple[Any, ...],
    PieceOps,
    int,
    int,
    CharCache,
    tuple[int, ...],
    tuple[tuple[int, bool], ...],
    "tuple[Step, ...] | None",
    tuple[Any, ...],
    "tuple[Step, ...] | None",
]
# A step of a piece's effect (`_Scratch`), done in order: paints (_STEP_PAINT, ops), a scroll of the region top..bottom
# up count rows (_STEP_SCROLL, top, bottom, count), an erase of the display from the cursor (_STEP_ERASE, how, x,
# y, attributes), or the cursor saved (_STEP_SAVE, the savepoint, never changed: a restore copies its cursor); and in
# merged steps (`_merged_scrolls`) scrolls of a region at the top of the screen that keep the rows leaving it
# (_STEP_KEEP, top, bottom, count, the paints on the rows that leave: (row counted from the first scroll's, paint,
# whole row) each).
Step = tuple[Any, ...]
_STEP_PAINT = 0
_STEP_SCROLL = 1
_STEP_ERASE = 2
_STEP_SAVE = 3
_STEP_KEEP = 4


class StemCursor(Cursor):
    """pyte's cursor, its attributes Stem's `Char`."""

    __slots__ = ()
    attrs: Char  # type: ignore[assignment]

    def __init__(self, x: int = 0, y: int = 0, attrs: Char = DEFAULT_CHAR, hidden: bool = False) -> None:
        super().__init__(x, y, attrs)  # type: ignore[arg-type]
        self.hidden = hidden

    def __copy__(self) -> StemCursor:
        # pyte's save and restore copy the cursor; `copy.copy` of a slotted object without this goes through
        # `__reduce_ex__`, a fifth of vim's switch to the alternate screen and back.
        return StemCursor(self.x, self.y, self.attrs, self.hidden)


# Deferred paints kept per row before the row is written (see `StemScreen._paint`).
_MAX_PAINTS = 32
# The width of a deferred ED of a row: every cell the row has then takes the attributes in its EL slot (never
# registered as the last paint at its column, so never dropped but by a paint of the whole row).
_ERASE_CELLS = -3
_DEFERRED_ERASE_OPS = 4  # the most paints a row may have for ED to be deferred with them

# Modes under which a line batch would not behave like plain "draw, CR, LF".
_NO_BATCH_MODES = frozenset({mo.IRM, mo.LNM, mo.DECSCNM})

# A printable character: anything but C0 and C1 controls and DEL. (Not as `[^\x00-\x1f\x7f-\x9f]`: the regex engine
# tests a character against that three times slower than against these two ranges.)
_PRINTABLE = r"[ -~\xa0-\U0010ffff]"
# A run of printable text, SGR sequences and designations of ASCII as G0 (`ESC ( B`: nothing changes while G0 is ASCII
# mode and programs drawn with ncurses send before every attribute change).
_RUN = r"(?:" + _PRINTABLE + r"++|\x1b\[[0-9;]*+m|\x1b\(B)++"
# The run a paint token draws: line drawing designated as G0 (`ESC ( 0`, ncurses' boxes, drawn by `_draw_run`)
# is part of it too.
_PAINT_RUN = r"(?:" + _PRINTABLE + r"++|\x1b\[[0-9;]*+m|\x1b\([0B])++"

# One token in the ground state; `_feed_text` tells them apart by `lastindex`. Anything that does not match
# (C1 controls, SO/SI, unusual or incomplete sequences) is the last alternative: pyte's parser.
_TOKEN_PATTERN = (
    # 1-8, a paint: what full-screen programs send most. The cursor placed (CUP, perhaps after a CR LF: group 3 is its
    # column, if given, else group 4 is H; or CHA, VPA or CUF: group 4 is G, d or C), then perhaps a run (5) and
    # perhaps the rest of the row erased (EL, 6); or a run (7) without a move before it, perhaps with an EL (8)
    r"(?:(\r\n)?\x1b\[(\d{0,4}+)(?:;(\d{0,4}+)H|([HGdC])))(" + _PAINT_RUN + r")?(?:\x1b\[([012]?)K)?"
    r"|(" + _PAINT_RUN + r")(?:\x1b\[([012]?)K)?"
    r"|(\r\n)"  # 9: the commonest pair of controls
    r"|((?:\x1b\[2K\x1b\[1A)++)"  # 10: erase the row and go up, again and again (rich's Live redraw)
    r"|\x1b\[(\??)([0-9;]*+)([@-~])"  # 11-13: CSI with plain parameters
    "|(" + pyte.Stream._text_pattern.pattern + ")"  # 14: any other text, exactly pyte's notion of it
    r"|\x1b([^\[\]#%()P_^X])"  # 15: two-character escape
    r"|\x1b([()][\s\S])"  # 16: G0/G1 charset designation
    r"|\x1b\]([^RP])([^\x07\x1b\x9c]*)(?:\x07|\x9c|\x1b\\)"  # 17-18: OSC (title)
    r"|([\x00\x07-\x0d\x7f])"  # 19: C0 controls pyte acts on or ignores
    r"|\x1b\[>(0?)c"  # 20: DA2 (pyte would take it for DA)
    # 21-24: any other CSI, as ECMA-48 frames it: a leader (< = > ?), parameters with colons, intermediates. pyte's
    # parser takes the first byte it does not know for the final one and prints the rest: `CSI < u` (the kitty
    # keyboard pop Claude Code and Textual send on exit) left a "u", and `CSI > 4 ; 2 m` (XTMODKEYS, vim's
    # start) was taken for SGR 4;2 and underlined everything after it. xterm acts on the colon form of SGR and
    # ignores the rest.
    r"|\x1b\[([<=>?]?)([0-9;:]*+)([ -/]*+)([@-~])"
    # 25: a control string (DCS, APC, PM, SOS: vim's probe and XTGETTCAP queries, kitty graphics) to its ST, or to
    # the ESC that aborts it, or (empty) to the end of the feed. pyte printed its contents; xterm shows nothing.
    r"|\x1b[P_^X][^\x1b\x9c]*+(\x1b\\|\x9c|)"
    r"|[\s\S]"  # no group: pyte's parser
)
_TOKEN = re.compile(_TOKEN_PATTERN)
# The same for a feed that is all ASCII (an O(1) test): a plain range is faster for the regex engine.
_TOKEN_ASCII = re.compile(_TOKEN_PATTERN.replace(_PAINT_RUN, _PAINT_RUN.replace(_PRINTABLE, "[ -~]")))

_T_PAINT = frozenset(range(3, 9))  # the last group of a paint that matched: a move alone ends with group 3 or 4
_T_PLAIN_RUN = 7  # the last group of a paint without a move is 7 or 8
_T_CRLF, _T_ERASE_UP, _T_CSI, _T_TEXT, _T_ESC, _T_CHARSET, _T_OSC, _T_CTL, _T_DA2 = 9, 10, 13, 14, 15, 16, 18, 19, 20
_T_OTHER_CSI, _T_STRING = 24, 25
# Designations a paint token's run may hold (`_PAINT_RUN`).
_DESIGNATIONS = ("\x1b(B", "\x1b(0")
_DESIGNATION_SPLIT = re.compile(r"\x1b\(([0B])")


def _translated(run: str, charset: str) -> str:
    """`run`'s text (not its SGR sequences) in `charset`, as pyte's `draw` translates what it draws."""
    pieces = SGR_SEQ_SPLIT.split(run)  # text, SGR sequence, text, ..., text
    pieces[::2] = [piece.translate(charset) for piece in pieces[::2]]
    return "".join(pieces)


def _line_drawn(run: str) -> str | None:
    """A paint's `run`, begun with G0 ASCII, with the text it draws in DEC line drawing (`ESC ( 0` ... `ESC ( B`)
    translated as pyte's `draw` translates it and its designations dropped: the same cells, drawn by the fast paths
    as any run. None if it leaves line drawing on (`_draw_run` then switches G0 itself)."""
    drawn = LINE_DRAWN.get(run, "")
    if drawn != "":
        return drawn
    out: list[str] = []
    charset = cs.LAT1_MAP
    for i, part in enumerate(_DESIGNATION_SPLIT.split(run)):
        if i & 1:
            charset = cs.MAPS[part]
        elif part:
            out.append(part if charset is cs.LAT1_MAP else _translated(part, charset))
    result = "".join(out) if charset is cs.LAT1_MAP else None
    if len(LINE_DRAWN) >= 4096:
        LINE_DRAWN.clear()
    LINE_DRAWN[run] = result
    return result


# Where to look for characters that may not take exactly one cell.
_NOT_ASCII = re.compile(r"[^ -~]")

# A batch of whole lines: printable text, SGR sequences and ESC ( B, each line ended by CR LF, with an EL
# (to its right) just before the CR LF allowed. The ASCII-only form is half again as fast for the regex engine
# and is used when the whole feed is ASCII (an O(1) test). A space and BS before an ASCII character (after SGR, if
# any) are allowed too: the character is drawn where the space was, so the two are nothing (`_try_batch` takes them
# out). less writes the last column of a line wider than the row so (for terminals that wrap at once), and git's
# pager shows every such line.
_BATCH_PATTERN = (
    r"(?:T*+(?:(?:\x1b\[[0-9;]*+m|\x1b\(B|(?<= )\x08(?=(?:\x1b\[[0-9;]*+m)*+[ -~]))T*+)*+(?:\x1b\[0?K)?\r\n)++"
)
_BATCH = re.compile(_BATCH_PATTERN.replace("T", _PRINTABLE))
_BATCH_ASCII = re.compile(_BATCH_PATTERN.replace("T", "[ -~]"))
_EL_TAILS = ("\x1b[K", "\x1b[0K")
_RESETS = tuple(RESET_SEQS)
# The SGR sequences followed for a line that ends reset, and for one without SGR (`_try_batch`).
_RESET_ONLY = ["\x1b[0m"]
_NO_SEQS: list[str] = []
# A row drawn from column 0 and erased whole at once: a pager's prompt between two pages (`:`, or less's status line
# in reverse video, then CR EL before the next page's first line; see `StemScreen._after_batch`).
_ERASED_ROW = re.compile("(" + _RUN + r")?(?:\x1b\[0?K)?\r\x1b\[0?K")
# The start of a line left at the end of a feed after a batch (see `_after_batch`): a run, perhaps cut in an SGR
# sequence, an EL or a CR LF by the end of the read.
_TAIL = re.compile("(?:" + _RUN + r")?(?:\x1b\[0?K\r?|\r|\x1b(?:\[[0-9;]*+|\()?)?")
# What a full-screen program sends as it quits, after its last frame: modes that draw nothing (application cursor
# keys and keypad, the cursor shown, mouse, paste and focus reports, synchronized output), SGR, then the alternate
# screen left with the cursor restored (1049): the frame's rows and the cursor they leave are never seen
# (`StemScreen._after_batch`). Nothing that answers, saves the cursor or leaves the screen otherwise.
_QUITS = re.compile(r"(?:\x1b\[\?(?:1|12|25|100[0-6]|1015|2004|2026)[hl]|\x1b[=>]|\x1b\[[0-9;]*+m)*+\x1b\[\?1049l")
# Where a line's start kept after held rows is looked at again from (`feed`): after its last whole SGR sequence, or
# after the EL that erased a prompt (the line starts there).
_LINE_GOES_ON = re.compile(r"\x1b\[[0-9;]*+m|(?<=\r)\x1b\[0?K")
# The start of a sequence Stem's tokenizer might take whole, cut by the end of a read (see `_feed_text`).
_UNFINISHED = re.compile(r"\x1b(?:\[[<=>?]?[0-9;:]*+[ -/]*+|\][^\x07\x1b\x9c]*+\x1b?|[()])?")
_MAX_UNFINISHED = 4096
# A read's last piece kept unparsed for the next read (`StemScreen._feed_pieces`): a CUP or CR, then text, controls
# that move the cursor, ESC ( B / 0, ESC 7/8/M, and CSI sequences that draw, erase, move or scroll, or show or hide
# the cursor; perhaps the start of one cut by the read's end. Nothing a program can be answered, nor a title, nor a
# mode but DECTCEM and cursor blinking, which draw nothing and are set at once (`_KEPT_MODES`): what is read without
# looking at the cells (`mode`, `_commit`) is the same before it is parsed as after.
# (A piece starts with one or the other. Controls but BEL are parsed later as they would be now: what they change is
# seen through the cells and the cursor only. Searched for what is not kept, an ESC at a time: a regex of what is
# kept costs a step per run of text, and a screenful of lines in one piece (top) many.)
_NOT_KEPT = re.compile(r"\x1b(?!\[[0-9;]*+[@A-HJKLMPSTXZ`adefmr]|\[\?(?:25|12)[hl]|[78M]|\([B0]|(?:\[[0-9;]*+|\()?\Z)")
_C1 = re.compile("[\x80-\x9f]")  # C1 controls (CSI, OSC, ...), which pyte's parser takes as ESC [, ESC ], ...
_KEPT_MODES = re.compile(r"\x1b\[\?(25|12)([hl])")
# The longest start of a line kept unparsed after held batch rows while reads go on with it (see `feed`).
_MAX_LINE = 65536
# A whole batch line.
_BATCH_LINE = re.compile("(?:" + _RUN + r")?(?:\x1b\[0?K)?\r\n")
# One step of paging back (less, man): RI at the top row, a line drawn there (perhaps with an EL after it), CR LF, and
# the cursor home for the next step (`StemScreen._reverse_batch`).
_REVERSE_STEP = re.compile(r"\x1bM(" + _RUN + r")?(\x1b\[0?K)?\r\n\x1b\[H")

_CHARS = attrgetter("chars")
_RUNS = attrgetter("runs")
_ATTRS = attrgetter("attrs")
_SPEC_LINE, _SPEC_START, _SPEC_PIECE, _SPEC_ERASE = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_WHOLE = (-1,)  # the piece of a line that fits on its row: all of it


class _Pieces(dict[int, tuple[int, ...]]):
    """The pieces of a line that takes so many rows: all of it (`_WHOLE`) on one, else 0, 1, ... (looked up in C)."""

    def __missing__(self, count: int) -> tuple[int, ...]:
        pieces = self[count] = tuple(range(count)) if count > 1 else _WHOLE
        return pieces


_PIECES = _Pieces()


class _Place(dict[str | None, int]):
    """CUP's row or column parameter (as the tokenizer cuts it out, None if absent) to the 0-based row or column it
    places the cursor in, clamped to the screen as pyte's `cursor_position` does: full-screen programs place the
    cursor with the same few parameters again and again, and a lookup costs less than parsing them."""

    __slots__ = ("last",)

    def __init__(self, count: int) -> None:
        super().__init__()
        self.last = count - 1

    def __missing__(self, param: str | None) -> int:
        at = int(param) - 1 if param else 0
        at = at if 0 <= at <= self.last else (0 if at < 0 else self.last)
        if len(self) < 10_002:  # every parameter of up to 4 digits, and none
            self[param] = at
        return at


# A batch row: the line, the attributes it starts with, which screen-wide piece of it (-1: all of it, which
# fits), whether an EL follows (on its last piece), and the attributes after it.
Spec = tuple[str, CharCache, int, bool, CharCache]


class LineRows:
    """Batch rows kept as columns rather than a `Spec` per row: a flood held across feeds makes no object per line
    for the garbage collector to look at. Row i shows `lines[i]`, drawn from the attributes `nodes[i]`, whole or
    (`pieces`, None: all whole) the piece `pieces[i]` of it that autowrap puts on a row: a line wider than the
    screen is a row per piece, each with the line and the attributes it starts with. `nodes[i + 1]` is the
    attributes after row i (after the line, on its last piece); `erases` (None: none) whether an EL ends it.
    Indexing gives the row's `Spec`."""

    __slots__ = ("erases", "lines", "nodes", "pieces")

    def __init__(
        self, lines: list[str], nodes: list[CharCache], erases: list[bool] | None, pieces: list[int] | None = None
    ) -> None:
        self.lines = lines
        self.nodes = nodes
        self.erases = erases
        self.pieces = pieces

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> Spec:
        erases, pieces = self.erases, self.pieces
        return (
            self.lines[i],
            self.nodes[i],
            pieces[i] if pieces is not None else -1,
            erases[i] if erases is not None else False,
            self.nodes[i + 1],
        )

    def extend(self, more: LineRows) -> None:
        """Append the rows of a batch that starts where these end (nothing changed the attributes between)."""
        if more.erases is not None or self.erases is not None:
            if self.erases is None:
                self.erases = [False] * len(self.lines)
            self.erases += more.erases or [False] * len(more.lines)
        if more.pieces is not None or self.pieces is not None:
            if self.pieces is None:
                self.pieces = [-1] * len(self.lines)
            self.pieces += more.pieces or [-1] * len(more.lines)
        self.lines += more.lines
        self.nodes += more.nodes[1:]


Held = list[str] | list[Spec] | LineRows
# `_held` while a read's last piece is kept unparsed in `_tail` (`_feed_pieces`), with no batch rows held: every
# reader of the cells, the cursor or the scrollback, and `take_dirty`, parse it first (`_release`).
_PIECE_KEPT: list[str] = [""]

# A deferred paint (`StemScreen._paint`): the column it starts at; its cells if known, else the run cut into text
# and SGR sequences with the SGR moves of each text (an ASCII run: the run and the node it starts from); how many
# cells it takes; the attributes of an EL after it
# (None: no EL). A batch row (`_paint_rows`) is the line and the node it starts from in place of the parts and
# moves, with no cells and a width of -1 (its cells, and so its width, are found when it is written). A piece's cells
# on a row (`_piece_effect`) are {column: cell} in place of the parts, with a width of -2, the column after the last in
# place of the moves if they are every column from the first to it (else None), and an EL's attributes (never used)
# if they are every column from the first on.
Paint = tuple[
    int,
    "tuple[Char, ...] | None",
    "list[str] | str | dict[int, Char] | None",
    "list[SgrMoves] | CharCache | None",
    int,
    "Char | None",
]
# One SGR sequence, whole (the keys of `SgrMoves`).
_SGR_SEQ = re.compile(r"\x1b\[[0-9;]*+m")
# A batch line of SGR sequences alone: it draws nothing, so no row comes into being for it.
_SGR_ONLY = re.compile(r"(?:\x1b\[[0-9;]*+m)*+")


_LINES_SEEN_LIMIT = 16384


# The controls of ASCII, as bytes (`_line_ends_only`).
_CONTROLS = bytes([*range(0x20), 0x7F])


def _line_ends_only(text: str, count: int) -> bool:
    """Whether ASCII `text`, with `count` CR LF pairs in it, has no other controls (ESC included)."""
    return len(text) - len(text.encode("ascii").translate(None, _CONTROLS)) == 2 * count


def _erased_first(erases: list[bool] | None, nodes: list[CharCache]) -> list[bool] | None:
    """The ELs after batch lines (`erases`, None: none; `nodes`, the attributes each starts with and those after the
    last) with one after the first, whose row was erased whole before it was drawn (a pager's prompt,
    `StemScreen._after_batch`); None if that EL would erase with another background than the erase did (the line
    changes it and has no EL of its own)."""
    if erases is None:
        erases = [False] * (len(nodes) - 1)
    elif erases[0]:
        return erases
    if nodes[1].blank != nodes[0].blank:
        return None
    erases[0] = True
    return erases


def _line_met(line: str, node: CharCache) -> BatchLine | None:
    """A batch line not kept in `node.lines`, worked out (`_batch_line`); kept there the second time it is met (the
    first time it is only remembered as met, in `LINES_SEEN`), so that a line repainted costs one lookup."""
    known = _batch_line(line, node)
    if known is not None:
        if line in LINES_SEEN:
            spend_runs(1 + len(line) // 8)
            node.lines[line] = known
        else:
            if len(LINES_SEEN) >= _LINES_SEEN_LIMIT:
                LINES_SEEN.clear()
            LINES_SEEN.add(line)
    return known


def _batch_line(line: str, node: CharCache) -> BatchLine | None:
    """A batch line (perhaps ending in EL) drawn from `node`'s attributes, worked out; None if a character in it is
    zero-width or unprintable (the general path)."""
    erase = line.endswith(_EL_TAILS)
    body = line[: line.rindex("\x1b[")] if erase else line
    if "\x1b(" in body:
        body = body.replace("\x1b(B", "")  # pyte ignores it in UTF-8 mode (a batch is never in another)
    if "\x1b" in body:
        parts = SGR_SEQ_SPLIT.split(body)  # text, SGR sequence, text, ..., text
        after: CharCache = reduce(LOOKUP, parts[1::2], node.moves).chars
        shown = "".join(parts[::2])
    else:
        after, shown = node, body
    if shown.isascii():
        return body, erase, after, len(shown), len(shown)
    found = node.runs.get(body)
    width = text_width(shown) if found is None else len(found[0])
    if width is None:
        return None
    return body, erase, after, width, len(shown)


class _Stream(pyte.ByteStream):
    """pyte's stream, with ESC E (NEL) the next line, CR and LF, as xterm reads it (pyte took it for LF alone)."""

    escape = {**pyte.ByteStream.escape, "E": "next_line"}


class StemScreen(pyte.Screen):
    """A pyte screen that ingests bytes fast, tracks changed rows, keeps scrollback and an alternate screen."""

    _missed_at_start = _IDLE_AFTER  # (the piece tests set 0: pieces looked for from the first read)

    def __init__(self, columns: int, lines: int, scrollback: int = 10_000) -> None:
        # pyte's constructor calls `reset`, which reads these.
        self._alt_active = False
        self._main_buffer: dict[int, Row] | None = None
        self._alt_savepoint: Savepoint | None = None
        self.scrollback = Scrollback(scrollback, columns)
        # Line batches not applied yet, and text after them not parsed yet (see `_hold`).
        self._held: Held = []
        self._held_plain: CharCache | None = None
        self._held_counted = False  # the held rows have been counted as dirty (`_commit`)
        self._plain_flood = True  # the last batch's lines had no EL or ESC ( B (see `_try_batch`)
        # A row autowrap went on from to the next has `wrapped` set (tmux's wrapped line, which a width change joins
        # to the next: `_rewrap`); an erase of it or of the row below clears it (`_unwrap`), an explicit line feed
        # does not (as in tmux 3.3). `_wrapping` says the line feed under way is autowrap's; `_wraps` that a row of
        # the main screen was ever marked (until then no row has to be looked at), `_main_wraps` the same of the main
        # screen behind the alternate one, whose rows are never marked (they are never rewrapped, nor kept in the
        # scrollback).
        self._wrapping = False
        self._wraps = False
        self._main_wraps = False
        # Runs drawn but not written to their rows yet (see `_paint`): per row, the row, its paints in order (None: one
        # painted over before it was written) and where in them the last paint at each column is.
        self._paints: dict[int, tuple[Row, list[Paint | None], dict[int, int]]] = {}
        # The last batch line cut into rows by `_draw_spec`: the line, the attributes it starts with, its rows.
        self._pieces: tuple[str, CharCache, list[Sequence[Char]]] | None = None
        self._tail = ""
        # Inside a control string cut by the end of a feed (`_T_STRING`): "" no, "in" yes, "esc" yes and the feed
        # ended with an ESC that may begin its ST.
        self._in_string = ""
        # Pieces met (`_feed_pieces`): each met once, twice, worked out to its effect, or `_IMPURE`; the states they
        # were worked out in (`_env`); the screen they are worked out on.
        self._piece_effects: dict[str, Effect | int] = {}
        self._envs: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        # In other states than the first: (piece, state) and (piece, state, attributes, row, column) of its cursor.
        self._effects_elsewhere: dict[tuple[Any, ...], Effect | int] = {}
        # Runs of pieces applied one after another: the run's text and its effect, by its first piece (`_keep_run`).
        self._runs: dict[str, tuple[str, Effect]] = {}
        self._scratch: _Scratch | None = None
        # The last piece of the last read, cut by the read's end and scanned: its text, and the screen's state and
        # cursor before it (`_feed_pieces` applies it whole with the rest of it from the next read, if met before).
        self._cut_piece: tuple[str, tuple[Any, ...], int, int, Char] | None = None
        # Reads in a row with many pieces none of which was applied, and reads until the next is looked at
        # (`_feed_pieces`). A screen starts as if pieces had not paid: cutting every read into pieces before any
        # comes back cost a program's first pass 4-22% (vim, htop, Codex, tmux, each recording fed once to a new
        # screen), and the reads looked at find the pieces that do come back.
        self._pieces_missed = self._missed_at_start
        self._probe_in = 0
        self.bells = 0
        self.errors = 0  # sequences pyte could not handle (it raises; a terminal must keep going)
        self.version = 0
        self._row_versions = [0] * lines
        self._dirty: set[int] = set(range(lines))
        self._responder: Callable[[bytes], None] | None = None
        self.queries = TerminalQueries(self)  # keypad mode and 2026 frames; answers and OSC 52/8 when fed through it
        super().__init__(columns, lines)
        self._stream = _Stream(self)
        self._csi: dict[str, Callable[..., None]] = {
            final: getattr(self, name) for final, name in pyte.Stream.csi.items()
        }
        self._esc: dict[str, Callable[[], None]] = {char: getattr(self, name) for char, name in _Stream.escape.items()}
        self._csi.update(
            {
                "S": self.scroll_up,
                "T": self.scroll_down,
                "b": self.repeat_character,
                "Z": self.back_tab,
                "I": self.forward_tab,
                "`": self.cursor_to_column,
                "s": self.save_cursor_ansi,
                "u": self.restore_cursor_ansi,
            }
        )  # what xterm-256color's terminfo offers (indn, rin, rep, cbt) and pyte lacks
        self._esc.update(self.queries.escapes())  # DECKPAM, DECKPNM (pyte has neither)
        self._params_cache: dict[str, tuple[int, ...]] = {}
        self._chars = chars_for(DEFAULT_CHAR)  # the node of the cursor's attributes when last looked up
        self._places()
        self._seen = self._cursor_state()

    # ----------------------------------------------------------------------------------------- public API

    def feed(self, data: bytes) -> None:
        """Consume bytes from the child. UTF-8 sequences split across calls are joined, as in `ByteStream`."""
        stream = self._stream
        text = stream.utf8_decoder.decode(data) if stream.use_utf8 else data.decode("latin-1")
        if self._held is _PIECE_KEPT:
            # The last read's last piece, kept unparsed: this read goes on with it, and the piece is whole again.
            text = self._tail + text
            self._tail = ""
            self._held = []
        elif self._tail:
            # Text kept unparsed at the end of the last feed (see `_after_batch` and `_feed_text`). After held
            # batch rows, the start of a line: if this feed ends the line, it goes on as a batch; if it only makes
            # the line longer (a line of many reads), it is kept too, as long as the reads are not small beside it
            # (each read is looked at with the kept text, so the kept text is never many times what was read);
            # otherwise the held rows and it are applied now (an unfinished sequence at its end stays unparsed),
            # unless it starts with a pager's prompt erased, with which the next page's lines may go on
            # (`_after_batch`).
            # The kept text is a line's start (`_TAIL`): whole runs, then perhaps a sequence cut by the end of the
            # read, or a CR; perhaps after a prompt erased. It is looked at again only from where that may begin
            # (`_LINE_GOES_ON`), so that a line of many reads is not read again and again.
            tail = self._tail
            joined = tail + text
            redo = tail.rfind("\x1b")
            whole = _LINE_GOES_ON.match(tail, redo) if redo >= 0 else None
            if redo < 0 or whole is not None:
                redo = tail.find("\r", whole.end() if whole is not None else 0)
                if redo < 0:
                    redo = len(tail)
            if not self._held or _BATCH_LINE.match(joined, redo):
                text, self._tail = joined, ""
            elif len(joined) <= _MAX_LINE and len(text) * 8 >= len(tail) and _TAIL.fullmatch(joined, redo):
                self._tail = joined
                self._held_counted = False  # the line may reach more rows
                self._commit()
                return
            elif _ERASED_ROW.match(joined) is not None:
                text, self._tail = joined, ""
            else:
                self._release()  # the held rows, then the tail (an unfinished sequence at its end stays unparsed)
                text, self._tail = self._tail + text, ""
        if text:
            self._feed_text(text)
        self._commit()

    def take_dirty(self) -> set[int]:
        """Rows changed since the last call (all of them after a scroll), then forget them."""
        if self._held is _PIECE_KEPT:
            self._release()
        self._commit()
        dirty, self._dirty = self._dirty, set()
        return dirty

    def row_version(self, y: int) -> int:
        """A number that changes whenever row `y` changes, so rendered rows can be cached by (row, version)."""
        if self._held is _PIECE_KEPT:
            self._release()
            self._commit()
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

    # Whoever reads the cells, the cursor or the scrollback first gets the held line batches applied (`_hold`).

    @property  # type: ignore[override]
    def buffer(self) -> dict[int, Row]:
        if self._held:
            self._release()
        return self._buf

    @buffer.setter
    def buffer(self, value: dict[int, Row]) -> None:
        if self._paints:
            self._flush_paints()
        self._rows = value

    @property
    def _buf(self) -> dict[int, Row]:
        # The rows with every deferred paint (`_paint`) applied: whatever reads or writes cells inside Stem goes
        # through here, or through `_row` for one row (text drawn on it, EL 1, REP); `_paint` itself uses `_rows`, and
        # so do scrolls, which move the paints with their rows (`_move_paints`).
        if self._paints:
            self._flush_paints()
        return self._rows

    @property  # type: ignore[override]
    def cursor(self) -> StemCursor:
        if self._held:
            self._release()
        return self._cur

    @cursor.setter
    def cursor(self, value: Cursor) -> None:
        if not isinstance(value, StemCursor):  # pyte's `reset` makes a cursor with pyte's blank cell
            value = StemCursor(value.x, value.y, DEFAULT_CHAR, value.hidden)
        self._cur = value

    @property
    def scrollback(self) -> Scrollback:
        """Lines that left the top of the main screen, oldest first."""
        if self._held:
            self._release()
        return self._sb

    @scrollback.setter
    def scrollback(self, value: Scrollback) -> None:
        self._sb = value

    # ------------------------------------------------------------------------------------ pyte overrides

    @property
    def default_char(self) -> Char:  # type: ignore[override]  # Stem's `Char`, pyte's fields first
        """pyte's blank cell, without building a new `Char` for every row created."""
        return _REVERSE_BLANK if mo.DECSCNM in self.mode else DEFAULT_CHAR

    def reset(self) -> None:
        if self._held:
            self._release()
        self._tail = ""
        self._in_string = ""
        if getattr(self, "_alt_active", False) and self._main_buffer is not None:
            self.buffer = self._main_buffer
        self._alt_active = False
        self._main_buffer = None
        self._alt_savepoint = None
        self._alt_left: Savepoint | None = None  # what the last 1049 on saved, once the alternate screen is left
        self._saved_modes: dict[int, bool] = {}  # XTSAVE's
        self._forget_pieces()
        self._wraps = self._main_wraps = False  # pyte's reset makes every row anew
        super().reset()

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize like tmux rather than like pyte: the height first (`_resize`), then the width, at which the main
        screen and its scrollback are rewrapped (`_rewrap`); the alternate screen's rows are cut (tmux rewraps the
        screen behind it when it is left: the same)."""
        if self._held:
            self._release()
        lines = lines or self.lines
        columns = columns or self.columns
        if lines != self.lines:
            self._resize(lines, self.columns)
        if columns != self.columns:
            at = self._rewrap(columns)
            self._resize(lines, columns)
            if at is not None:
                self._cur.x = at  # at the end of a full row: past its last column, as a pending wrap

    def _resize(self, lines: int, columns: int) -> None:
        """Resize like a terminal rather than like pyte: rows that must leave to keep the cursor on screen go
        from the top into the scrollback, other rows are dropped from the bottom; a taller main screen takes the
        newest lines back from the scrollback onto its top rows (its rows and cursor move down by as many), as
        tmux and xterm do, so that a shell's prompt stays at the bottom of a pane that grows."""
        if lines == self.lines and columns == self.columns:
            return
        cursor = self.cursor
        self._sb.columns = columns  # the lines taken back (below) come at the new width
        # A taller main screen takes the newest lines back from the scrollback: a drop by minus as many (its rows move
        # down), whether it is shown or kept behind the alternate screen, whose own rows have no history to take back
        # (tmux gives them back when its alternate screen is left).
        taken = self._sb.take_back(lines - self.lines) if lines > self.lines else []
        back = -len(taken)
        drop = max(0, cursor.y - (lines - 1)) + (0 if self._alt_active else back)
        buffers: list[tuple[dict[int, Row], int, bool]] = [(self.buffer, drop, not self._alt_active)]
        if self._main_buffer is not None:
            saved = self._alt_savepoint
            main_drop = (max(0, saved.cursor.y - (lines - 1)) if saved is not None else 0) + back
            buffers.append((self._main_buffer, main_drop, True))
            if saved is not None:
                saved.cursor.y -= main_drop
        for buffer, count, keep in buffers:
            if count > 0 and keep:
                for y in range(count):
                    self.scrollback.append_row(buffer.get(y))
            moved = {y - count: row for y, row in buffer.items() if count <= y < count + lines}
            buffer.clear()
            buffer.update(moved)
            if columns < self.columns:
                for row in moved.values():
                    for x in [x for x in row if x >= columns]:
                        del row[x]
            if keep:  # the main screen's
                for y, (cells, wrapped) in enumerate(taken):
                    row = buffer[y] = new_row(self.default_char)
                    row.update(enumerate(cells))
                    if wrapped:
                        mark_wrapped(row, True)
        if columns > self.columns:
            self.tabstops.update(range((self.columns + 7) // 8 * 8, columns, 8))
        self.lines, self.columns = lines, columns
        self._places()
        self._forget_pieces()
        self._row_versions = (self._row_versions + [0] * lines)[:lines]
        cursor.y = min(cursor.y - drop, lines - 1)
        cursor.x = min(cursor.x, columns - 1)
        self._dirty = {y for y in self._dirty if y < lines}
        self.dirty.update(range(lines))
        self.margins = None  # the scroll region is reset; the cursor stays where it is
        self._commit()

    def _rewrap(self, columns: int) -> int | None:
        """The main screen (shown, or behind the alternate one) and the scrollback rewrapped to `columns`, as tmux
        rewraps them (`Scrollback.rewrap`): the screen shows the last rows after, the rows before are the
        scrollback; the main screen's cursor (the saved one behind the alternate screen) stays on its line, or goes
        home if its row went into the scrollback. Returns the cursor's column if it is the shown one."""
        alt = self._alt_active
        buffer = self._main_buffer if alt else self._buf
        if buffer is None:
            return None
        cursor: Cursor | None = self._cur
        if alt:
            cursor = self._alt_savepoint.cursor if self._alt_savepoint is not None else None
        lines = self.lines
        default = self.default_char
        sb = self._sb
        rows, at = sb.rewrap(
            [buffer.get(y) for y in range(lines)],
            None if cursor is None else (cursor.y, cursor.x),
            columns,
        )
        rows.extend(repeat("", lines - len(rows)))
        split = len(rows) - lines
        sb.replace([compact_row(row) if isinstance(row, dict) else row for row in rows[:split]])
        buffer.clear()
        counts: dict[tuple[str, Char, int], int] = {}
        for y, row in enumerate(rows[split:]):
            if isinstance(row, dict):
                buffer[y] = row
            elif row:
                made = buffer[y] = new_row(default)
                made.update(enumerate(entry_cells(row, columns, pad=False)))
                if entry_wrapped(row, counts):
                    mark_wrapped(made, True)
        if alt:
            self._main_wraps = True
        else:
            self._wraps = True
        self._pieces = None
        self._forget_pieces()
        self.dirty.update(range(lines))
        if cursor is None or at is None:
            return None
        y = at[0] - split
        cursor.x, cursor.y = (at[1], y) if y >= 0 else (0, 0)
        return None if alt else cursor.x

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if self._held:
            self._release()
        if kwargs.get("private"):
            self.queries.set_modes(modes, True)
            for mode in modes:
                if mode in _ALT_MODES:
                    self._enter_alternate(mode)
                elif mode == _SAVE_CURSOR:
                    self.save_cursor()
                elif mode == _DECCOLM:
                    self._deccolm()
                elif mode == _DECSCNM:
                    self._reverse_screen(True)
            modes = tuple(m for m in modes if m not in _NOT_PYTES and m != _DECSCNM)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if self._held:
            self._release()
        if kwargs.get("private"):
            self.queries.set_modes(modes, False)
            for mode in modes:
                if mode in _ALT_MODES:
                    self._leave_alternate(mode)
                elif mode == _SAVE_CURSOR:
                    self.restore_cursor()
                elif mode == _DECCOLM:
                    self._deccolm()
                elif mode == _DECSCNM:
                    self._reverse_screen(False)
            modes = tuple(m for m in modes if m not in _NOT_PYTES and m != _DECSCNM)
        super().reset_mode(*modes, **kwargs)

    def _reverse_screen(self, on: bool) -> None:
        """DECSCNM set or reset: if that changes it, every cell shows the other way round, and so does the pen. xterm
        draws a cell reversed when its SGR 7 and the screen's reverse differ; pyte reversed every cell, then none, so
        text drawn in reverse (vim's status line) lost it after a flash of the screen (vim's visual bell)."""
        if (mo.DECSCNM in self.mode) == on:
            return
        if on:
            self.mode.add(mo.DECSCNM)
        else:
            self.mode.discard(mo.DECSCNM)
        for row in self.buffer.values():
            row.default = self.default_char
            for x, cell in row.items():
                row[x] = cell._replace(reverse=not cell.reverse)
        self._cur.attrs = self._cur.attrs._replace(reverse=not self._cur.attrs.reverse)
        self.dirty.update(range(self.lines))

    def _deccolm(self) -> None:
        """DECCOLM (CSI ? 3 h/l, in xterm-256color's init and reset strings) clears the screen and homes the
        cursor, as tmux does; the width stays the PTY's (pyte made the screen 132 columns wide, under a program that
        still writes to the PTY's width)."""
        self.erase_in_display(2)
        self.cursor_position()

    def draw(self, data: str) -> None:
        if self._held:
            self._release()
        cursor = self._cur
        mode = self.mode
        if self.charset == 0 and self.g0_charset is not cs.LAT1_MAP:
            # DEC line drawing (ncurses' boxes) in G0: its characters are what pyte's `draw` would translate them
            # to, drawn as any other text.
            data = data.translate(self.g0_charset)
        if not (data and cursor.x <= self.columns and mo.IRM not in mode and self.charset == 0):
            # Insert mode, other charsets, odd cursor positions: pyte itself, but for zero-width and unprintable
            # characters, at which pyte would drop the rest of the text (`join_zero_width`).
            y = cursor.y
            start = 0
            for i, char in enumerate(data):
                if char in NARROW or (width := cell_width(char)) == 1:
                    continue
                if i > start:
                    self._pyte_draw(data[start:i])
                if width == 2:
                    start = i
                    self._wrap_wide()
                    continue
                start = i + 1
                if width == 0:
                    self._join(char)
            self._pyte_draw(data[start:] if start else data)
            self.dirty.update((y - 1, y, self._cur.y))
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
            width = cell_width(char)
            if width == 1:
                narrow.add(char)
                continue
            if i > start:
                self._draw_narrow(data[start:i])
            start = pos
            self._draw_other(char, width)
        if start < len(data):
            self._draw_narrow(data[start:] if start else data)

    def _draw_narrow(self, data: str) -> None:
        """`draw` for characters that each take one cell, with insert mode off."""
        cursor = self._cur
        columns = self.columns
        x = cursor.x
        dirty = self.dirty
        if mo.DECAWM not in self.mode:
            # No autowrap: what does not fit is drawn over the last column in turn (pyte moves the cursor back
            # one cell per character), so the last character stays there, with the cursor past it.
            get = chars_for(cursor.attrs).__getitem__
            n = len(data)
            room = columns - x
            row = self._row(cursor.y)  # only the row drawn on has its deferred paints written
            if n <= room:
                row.update(enumerate(map(get, data), x))
                cursor.x = x + n
            else:
                if room > 0:
                    row.update(enumerate(map(get, data[:room]), x))
                row[columns - 1] = get(data[-1])
                cursor.x = columns
            dirty.add(cursor.y)
            return
        # Each row's part is deferred as a paint (`_paint`): a line that wraps is often drawn over or erased before
        # anyone looks (Codex prints a warning on the alternate screen, then clears it). A pending wrap (the cursor
        # past the last column) goes to the next row first, as pyte's draw does: CR, then LF.
        node = self._node()
        add = self._add_paint
        i, n = 0, len(data)
        while True:
            if x == columns:
                dirty.add(cursor.y)
                self._autowrap()
                cursor = self._cur
                x = 0
            room = columns - x
            part = data[i : i + room] if i or n > room else data
            end = x + len(part)
            add(cursor.y, (x, None, part, node, end - x, None), x == 0 and end == columns)
            x = end
            i += room
            if i >= n:
                break
        cursor.x = x
        dirty.add(cursor.y)

    def _draw_other(self, char: str, width: int) -> None:
        """pyte's `draw` for one character that is not one cell wide (insert mode off), except for zero-width and
        unprintable characters (`_join`)."""
        if width <= 0:
            if width == 0:
                self._join(char)
            return  # an unprintable character is skipped, as xterm does; pyte dropped the rest of the text
        cursor = self._cur
        columns = self.columns
        dirty = self.dirty
        if cursor.x >= columns - 1:
            if mo.DECAWM in self.mode:
                self._wrap_wide()
                cursor = self._cur
            elif cursor.x == columns:
                cursor.x -= width  # no autowrap: drawn over the last cells, as pyte draws it
        x, y = cursor.x, cursor.y
        line = self._row(y)
        get = chars_for(cursor.attrs).__getitem__
        line[x] = get(char)
        if x + 1 < columns:
            line[x + 1] = get("")  # the stub pyte puts after a wide character
        cursor.x = min(x + 2, columns)
        dirty.add(y)

    def _wrap_wide(self) -> None:
        """Before a two-cell character, under autowrap: from a pending wrap (the cursor past the last column), or from
        the last column, where it does not fit, it goes to the start of the next row, as xterm and tmux draw it (the
        last column is left as it is). pyte drew it in the last column, half off the screen."""
        cursor = self._cur
        if mo.DECAWM in self.mode and cursor.x >= self.columns - 1 and self.columns > 1:
            self.dirty.add(cursor.y)
            self._autowrap()

    def _pyte_draw(self, data: str) -> None:
        """pyte's `draw`, whose only line feed is autowrap's."""
        self._wrapping = True
        try:
            super().draw(data)
        finally:
            self._wrapping = False

    def _autowrap(self) -> None:
        """Autowrap: the cursor to the start of the next row, the row left marked as going on there (`index`)."""
        self._cur.x = 0
        self._wrapping = True
        try:
            self.linefeed()
        finally:
            self._wrapping = False

    def _unwrap(self, top: int, bottom: int) -> None:
        """Rows `top`..`bottom` - 1 erased whole: neither they nor the row above go on on the next row any more, as
        tmux clears a line's wrap when it or the line below is cleared."""
        rows = self._rows
        for y in range(max(top - 1, 0), bottom):
            row = rows.get(y)
            if row is not None and getattr(row, "wrapped", False):
                mark_wrapped(row, False)

    def _join(self, char: str) -> None:
        """A zero-width character (a combining mark, a variation selector such as the VS16 of "⚠️", a zero-width
        joiner or space) joins the character before the cursor, as tmux joins it: the wide character a stub belongs
        to; at the start of a row (after a CR, a line feed, a move: a row that wraps leaves the cursor past its
        end) there is none, and it is dropped. The cursor does not move, not even to wrap. pyte wrapped first,
        joined a stub or the last cell of the row above, and dropped the rest of the text at any zero-width
        character that is not a combining mark."""
        cursor = self._cur
        x, y = min(cursor.x, self.columns), cursor.y
        if x == 0:
            return
        line = self._row(y)
        if x >= 2 and line[x - 1].data == "" and line[x - 2].data:
            x -= 1
        last = line[x - 1]
        line[x - 1] = last._replace(data=unicodedata.normalize("NFC", last.data + char))
        self.dirty.add(y)

    def _region(self) -> tuple[Cursor, int, int]:
        """What a line feed or reverse index works on: the cursor and the scroll region's top and bottom rows (held
        rows are put on the screen first)."""
        if self._held:
            self._release()
        margins = self.margins
        top, bottom = (0, self.lines - 1) if margins is None else margins
        return self._cur, top, bottom

    def index(self) -> None:
        cursor, top, bottom = self._region()
        if self._wrapping and not self._alt_active:
            # Autowrap's (`_autowrap`): the row goes on on the next. (An explicit line feed leaves the mark as it is, as
            # tmux does: a program that writes over the start of a wrapped line, then goes on to the next row, has
            # not ended it; only an erase of the row ends it, `_unwrap`.)
            mark_wrapped(self._rows[cursor.y], True)
            self._wraps = True
        if cursor.y == bottom:
            self._scroll_up(top, bottom)
        elif cursor.y < self.lines - 1:
            cursor.y += 1  # `cursor_down(1)`: from below the scroll region, on down (pyte pulled it up into it)

    def cursor_up(self, count: int | None = None) -> None:
        """CUU: up, not past the scroll region's top if the cursor is in the region or below it, nor past the
        screen's top if above it, as xterm and tmux move it (pyte moved a cursor above the region down into it)."""
        cursor, top, _ = self._region()
        cursor.y = max(cursor.y - (count or 1), top if cursor.y >= top else 0)

    def cursor_down(self, count: int | None = None) -> None:
        """CUD: `cursor_up`'s counterpart at the region's bottom."""
        cursor, _, bottom = self._region()
        cursor.y = min(cursor.y + (count or 1), bottom if cursor.y <= bottom else self.lines - 1)

    def save_cursor(self) -> None:
        """DECSC: one saved state, as xterm and tmux keep it (pyte kept a stack of them)."""
        super().save_cursor()
        del self.savepoints[:-1]

    def restore_cursor(self) -> None:
        """DECRC as xterm does it: the cursor where it was saved, as often as asked (`tput sc` once, then `tput rc`
        before every update of a progress line: pyte's popped it, so the second went home), within the screen but
        not moved into the scroll region (pyte moved it there), and shown or hidden as it is now (DECTCEM is not
        part of the saved state)."""
        if self._held:
            self._release()
        if not self.savepoints:
            super().restore_cursor()
            return
        saved = self.savepoints[-1]
        self.savepoints[:] = [saved, saved._replace(cursor=copy.copy(saved.cursor))]  # pyte's pops the copy
        hidden = self._cur.hidden
        wrap = mo.DECAWM in self.mode
        # Origin mode as it was saved, on or off (pyte only turned it on), and autowrap as it is (pyte turned it on
        # where it was on at the save): xterm and tmux save origin mode but not autowrap, which a full-screen
        # program may have turned off since.
        self.mode.discard(mo.DECOM)
        margins, self.margins = self.margins, None  # pyte's bounds check then keeps it within the screen
        try:
            super().restore_cursor()
        finally:
            self.margins = margins
        if not wrap:
            self.mode.discard(mo.DECAWM)
        self._cur.hidden = hidden

    def next_line(self) -> None:
        """NEL (ESC E): to the start of the next line, as xterm and tmux do (pyte's was a line feed alone)."""
        self.carriage_return()
        self.index()

    def reverse_index(self) -> None:
        cursor, top, bottom = self._region()
        if cursor.y == top:
            # pyte's, with the rows looked up once: rows top..bottom-1 move down one (missing ones come into being,
            # as pyte's lookups make them), the bottom one is dropped, the top one is new.
            self.dirty.update(range(self.lines))
            if self._paints:
                self._move_paints(top, bottom, 1)
            buffer = self._rows
            for y in range(bottom, top, -1):
                buffer[y] = buffer[y - 1]
            buffer.pop(top, None)
        elif cursor.y > 0:
            cursor.y -= 1  # `cursor_up(1)`: from above the scroll region, on up (pyte pulled it down into it)

    def delete_lines(self, count: int | None = None) -> None:
        """DL: pyte's, except that a deleted line whose place the line below it never written takes is blank, as in
        xterm and tmux: pyte left the deleted line on the screen."""
        count = count or 1
        cursor, top, bottom = self._region()
        if top <= cursor.y <= bottom:
            buffer = self._buf
            self.dirty.update(range(cursor.y, self.lines))
            for y in range(cursor.y, bottom + 1):
                if y + count <= bottom and y + count in buffer:
                    buffer[y] = buffer.pop(y + count)
                else:
                    buffer.pop(y, None)
            self.carriage_return()

    def scroll_up(self, count: int = 1, *more: int, private: bool = False) -> None:
        """SU, CSI Ps S (terminfo's indn, with which ncurses scrolls a region): the scroll region up `count` rows,
        the cursor where it is; what leaves the top of the screen is kept, as a line feed keeps it. CSI ? Ps S
        (XTSMGRAPHICS, a query) is ignored."""
        if private or more:
            return
        _, top, bottom = self._region()
        self._scroll_up(top, bottom, min(count or 1, bottom - top + 1))

    def scroll_down(self, count: int = 1, *more: int, private: bool = False) -> None:
        """SD, CSI Ps T (terminfo's rin): the scroll region down `count` rows, the cursor where it is. With more
        parameters it is xterm's mouse highlight tracking, ignored."""
        if private or more:
            return
        cursor, top, bottom = self._region()
        y = cursor.y
        for _ in range(min(count or 1, bottom - top + 1)):
            cursor.y = top
            self.reverse_index()
        cursor.y = y

    def repeat_character(self, count: int = 1, *more: int, private: bool = False) -> None:
        """REP, CSI Ps b (terminfo's rep, with which ncurses draws a run of one character): the character left of
        the cursor, which ncurses has just drawn, drawn `count` times more."""
        cursor = self.cursor
        if private or more or cursor.x == 0:
            return
        row = self._row(cursor.y)
        char = row[min(cursor.x, self.columns) - 1].data
        if not char and cursor.x >= 2:  # the right half of a wide character
            char = row[min(cursor.x, self.columns) - 2].data
        if char:
            self.draw(char * min(count or 1, self.columns * self.lines))

    def back_tab(self, count: int = 1, *more: int, private: bool = False) -> None:
        """CBT, CSI Ps Z (terminfo's cbt, shift+tab in forms): back `count` tab stops, not past the first column."""
        cursor = self.cursor
        for _ in range(count or 1):
            cursor.x = max((stop for stop in self.tabstops if stop < cursor.x), default=0)

    def tab(self) -> None:
        """HT: pyte's, except from past the last column (a row just filled, its wrap pending): the cursor stays, so the
        next character starts the next row, as xterm and tmux draw `tab\tstop` ending at the last column (pyte moved
        it back onto the last column, and the next character overwrote it)."""
        if self._cur.x < self.columns:
            super().tab()

    def forward_tab(self, count: int = 1, *more: int, private: bool = False) -> None:
        """CHT, CSI Ps I: forward `count` tab stops."""
        for _ in range(count or 1):
            self.tab()

    def save_cursor_ansi(self, *params: int, private: bool = False) -> None:
        """SCOSC, CSI s (ANSI.SYS; shell prompts use it): DECSC. With parameters it is DECSLRM (left and right
        margins), which Stem does not implement: ignored. CSI ? Pm s is XTSAVE: whether each private mode `Pm` is
        set, kept for XTRESTORE (but the alternate screens, 1048 and DECCOLM, which act rather than hold a state)."""
        if private:
            for mode in params:
                if mode not in _NOT_PYTES:
                    self._saved_modes[mode] = mode << 5 in self.mode
        elif params in ((), (0,)):
            self.save_cursor()

    def set_margins(self, *params: int, private: bool = False) -> None:  # type: ignore[override]
        """DECSTBM, CSI Pt ; Pb r (pyte's, but CSI r, the region reset to the whole screen, homes the cursor too, as
        xterm and tmux do); CSI ? Pm r is XTRESTORE: the private modes `Pm` back to what XTSAVE (CSI ? Pm s) saved
        of them (pyte raised on it)."""
        if not private:
            super().set_margins(*params)
            if params in ((), (0,)):
                self.cursor_position()
            return
        saved = self._saved_modes
        for mode in params:
            if mode in saved:
                (self.set_mode if saved[mode] else self.reset_mode)(mode, private=True)

    def restore_cursor_ansi(self, *params: int, private: bool = False) -> None:
        """SCORC, CSI u: DECRC. CSI ? u, the kitty keyboard protocol's query, is ignored (it is not implemented)."""
        if params in ((), (0,)) and not private:
            self.restore_cursor()

    def cursor_position(self, line: int | None = None, column: int | None = None) -> None:
        if self._held:
            self._release()
        # pyte's, with its bounds checks inlined: full-screen programs send one per row they paint.
        column = (column or 1) - 1
        line = (line or 1) - 1
        margins = self.margins
        if margins is not None and mo.DECOM in self.mode:
            line += margins.top  # in origin mode, within the scroll region: clamped to it, as xterm does (pyte
            top, bottom = margins  # ignored a move past its bottom)
        else:
            top, bottom = 0, self.lines - 1
        cursor = self._cur
        cursor.x = min(max(0, column), self.columns - 1)
        cursor.y = min(max(top, line), bottom)

    # pyte's cursor moves that paint tokens place runs with (`_TOKEN_PATTERN`), with its bounds checks inlined.

    def cursor_forward(self, count: int | None = None) -> None:
        if self._held:
            self._release()
        cursor = self._cur
        x = cursor.x + (count or 1)
        last = self.columns - 1
        cursor.x = x if 0 <= x <= last else (0 if x < 0 else last)

    def cursor_to_column(self, column: int | None = None) -> None:
        if self._held:
            self._release()
        x = (column or 1) - 1
        last = self.columns - 1
        self._cur.x = x if 0 <= x <= last else (0 if x < 0 else last)

    def cursor_to_line(self, line: int | None = None) -> None:
        if self._held:
            self._release()
        y = (line or 1) - 1
        margins = self.margins
        if mo.DECOM in self.mode and margins is not None:
            y += margins.top  # in origin mode, within the scroll region (the whole screen if none is set)
            top, bottom = margins
        else:
            top, bottom = 0, self.lines - 1
        self._cur.y = y if top <= y <= bottom else (top if y < top else bottom)

    def select_graphic_rendition(self, *attrs: int, **kwargs: Any) -> None:
        if self._held:
            self._release()
        # CSI ? Ps m is a query (xterm's XTQMODKEYS, sent by vim), not SGR; pyte raises on it.
        if not kwargs.get("private"):
            self._cur.attrs = sgr_apply(self._cur.attrs, attrs, mo.DECSCNM in self.mode)

    def _blank(self) -> Char:
        """What an erase leaves from the cursor's attributes (`blank_of`): the background colour alone."""
        return blank_of(self._cur.attrs, mo.DECSCNM in self.mode)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        if self._held:
            self._release()
        cursor = self._cur
        self.dirty.add(cursor.y)
        if how == 0 or how == 2:
            # To the end of the row: deferred like a paint (`_paint`), which the row's next paint may cover.
            x = cursor.x if how == 0 else 0
            self._add_paint(cursor.y, (x, (), None, None, 0, self._blank()), x == 0)
            if x == 0 and self._wraps:
                self._unwrap(cursor.y, cursor.y + 1)
            return
        if how == 1:
            if self._wraps and cursor.x >= self.columns - 1:
                self._unwrap(cursor.y, cursor.y + 1)
            interval = range(cursor.x + 1)
        else:
            return  # pyte raises; an unknown erase is a no-op in real terminals
        # Every cell is written, even to the blank the row shows anyway: a later ED erases only cells that exist.
        self._row(cursor.y).update(fill(self._blank(), interval.start, interval.stop))

    def erase_characters(self, count: int | None = None) -> None:
        if self._held:
            self._release()
        # ECH (ncurses clears with it): cells of the cursor's attributes from the cursor on, deferred like a paint.
        cursor = self._cur
        x, y = cursor.x, cursor.y
        end = min(x + (count or 1), self.columns)
        width = max(0, end - x)
        self.dirty.add(y)
        self._add_paint(y, (x, (self._blank(),) * width, None, None, width, None), x == 0 and end == self.columns)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if self._held:
            self._release()
        cursor = self._cur
        if how == 0:
            interval = range(cursor.y + 1, self.lines)
        elif how == 1:
            interval = range(cursor.y)
        elif how in (2, 3):
            interval = range(self.lines)
        else:
            return
        self.dirty.update(interval)
        if self._wraps:
            self._unwrap(interval.start, interval.stop)  # (ED 0's takes the cursor's row too, as the row above them)
        attrs = self._blank()
        buffer = self._rows
        paints = self._paints
        columns = self.columns
        whole = fill(attrs, 0, columns)
        get = buffer.get
        make = row_kind(self.default_char)
        erase = (0, None, None, None, _ERASE_CELLS, attrs)  # the erase deferred as a paint (below): one for every row
        for y in interval:
            line = get(y)
            if line is None:  # it comes into being, as pyte's lookup makes it, with nothing to erase (a new screen)
                buffer[y] = make()
                continue
            # Like pyte, only cells that exist are erased: the sparse rows stay sparse. A row's cells are in columns
            # 0..columns (pyte's ICH writes the one past the last), so a row of `columns` cells without that one
            # has them all; a row of n cells the last of which is in column n - 1 has columns 0..n-1 (a row painted
            # from column 0, as most are). Such a row is replaced by a new one made from the cached cells rather
            # than written over: an empty dict takes another's cells in one copy. A row's deferred paints are never
            # written here: the erase is deferred with them (below), or all that is left of them is which cells they
            # would make exist (`_erased_keys`).
            entry = paints.get(y) if paints else None
            if columns not in line:
                # The erase is deferred as one more paint (`_ERASE_CELLS`), so that a row painted whole before anyone
                # looks is never erased cell by cell (less and top clear their screen, then repaint every row), and a
                # screen cleared again and again (Codex at every start) is erased once:
                # - on a row without paints, as its only one (an empty row has nothing to erase);
                # - on a row with a cell in every column, as all that is left of its paints (they write inside the
                #   row, so the erase writes every cell whatever they wrote: Codex's rows, made whole by the erase
                #   before);
                # - on a row with a few paints, after them. (A row with more, which pieces of rows keep adding to, is
                #   erased now: writing its paints when they are too many costs more.)
                # A row with a cell past the last column, which only ICH writes, is erased now: a later paint of the
                # whole row would not write that cell.
                if entry is None:
                    if line:
                        paints[y] = (line, [erase], {})
                    continue
                if len(line) == columns:
                    entry[1][:] = [erase]
                    entry[2].clear()
                    continue
                if len(entry[1]) <= _DEFERRED_ERASE_OPS:
                    entry[1].append(erase)
                    continue
            if entry is not None:
                del paints[y]
            keys = line if entry is None else self._erased_keys(line, entry[1])
            count = len(keys)
            if count == columns and columns not in keys:
                cells = whole
            elif count and count - 1 in keys and max(keys) == count - 1:
                cells = fill(attrs, 0, count)
            elif entry is None:
                line.update(dict.fromkeys(line, attrs))
                continue
            else:
                cells = dict.fromkeys(keys, attrs)
            row = buffer[y] = new_row(line.default)
            row.update(cells)
        if how in (0, 1):
            self.erase_in_line(how)
        if how == 3 and not self._alt_active:
            self._sb.clear()

    def _erased_keys(self, row: Row, ops: list[Paint | None]) -> Sequence[int] | set[int]:
        """The columns `row` has cells in once its deferred paints `ops` are written (each writes one span of columns,
        with the EL after it): what ED needs of paints it erases (Codex clears its screen with pending paints on every
        row)."""
        columns = self.columns
        spans: list[tuple[int, int]] = []
        sparse: list[dict[int, Char]] = []
        for x, _, parts, moves, width, erase in filter(None, ops):
            if width == _ERASE_CELLS:  # ED: the cells are there already
                continue
            if width == -2:  # a piece's cells on the row (`_piece_effect`): a span of columns, or some
                if moves is not None:
                    spans.append((x, moves))  # type: ignore[arg-type]
                else:
                    sparse.append(parts)  # type: ignore[arg-type]
                continue
            if width < 0:  # a batch row: its width is its cells'
                width = len(moves.rows[parts])  # type: ignore[union-attr,index]
            end = columns if erase is not None and x + width < columns else x + width
            if end > x:
                spans.append((x, end))
        spans.sort()
        reach = 0
        for start, end in spans:
            if start > reach:
                break
            reach = max(reach, end)
        if reach >= columns and columns not in row:
            return range(columns)
        keys = set(row)
        for start, end in spans:
            keys.update(range(start, end))
        for cells in sparse:
            keys.update(cells)
        return keys

    def report_device_status(self, mode: int = 0, **kwargs: Any) -> None:
        if not kwargs.get("private"):
            super().report_device_status(mode)
        elif mode == 6:
            self.queries.extended_cursor_position()  # DECXCPR; pyte raises on any private DSR

    def bell(self, *args: Any) -> None:
        self.bells += 1

    def write_process_input(self, data: str) -> None:
        if self._responder is not None:
            self._responder(data.encode("utf-8"))

    # ---------------------------------------------------------------------------------------- internals

    def _cursor_state(self) -> tuple[int, int, bool, str, bool]:
        cursor = self._cur
        return (cursor.x, cursor.y, cursor.hidden, self.title, self._alt_active)

    def _commit(self) -> None:
        """Turn pyte's `dirty` rows into row versions and pending dirty rows; bump `version` on any change."""
        dirty = self.dirty
        if self._held is _PIECE_KEPT:
            # Which rows the kept piece changes is known once it is parsed (`take_dirty`, `row_version`): until then
            # the version moves on (a cursor state never seen), so that whoever polls it looks.
            self._seen = (-1, -1, False, "", False)
        elif self._held and not self._held_counted:
            # Held batch rows (and the text after them) change the rows from the cursor's down, or every row
            # if they scroll. Counted now, they are not counted again when they are applied.
            y = self._cur.y
            end = y + len(self._held) + 1 + len(self._tail) // self.columns  # the tail may wrap
            dirty.update(range(self.lines) if end > self.lines else range(y, end))
            self._held_counted = True
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
        return defaultdict(lambda: row_kind(self.default_char)())

    def _enter_alternate(self, mode: int) -> None:
        if self._alt_active:
            return
        if mode == 1049:
            kept = self.savepoints[:]  # DECSC's saved state is not this one's
            self.save_cursor()
            self._alt_savepoint = self.savepoints.pop()
            self.savepoints[:] = kept
        self._main_buffer = self.buffer
        self.buffer = self._new_buffer()  # the alternate screen always starts clear
        self._alt_active = True
        self._main_wraps, self._wraps = self._wraps, False
        self.dirty.update(range(self.lines))

    def _leave_alternate(self, mode: int) -> None:
        if not self._alt_active or self._main_buffer is None:
            # 1049 off outside the alternate screen still restores the cursor its last 1049 on saved, as xterm and
            # tmux do (dialog leaves so, and its caller's prompt goes where the cursor was before it).
            if mode == 1049 and self._alt_left is not None:
                self._restore_alt_savepoint(self._alt_left)
            return
        # The alternate screen's rows are dropped: their deferred paints (a whole frame of a full-screen program,
        # often) are never written.
        self._paints = {}
        self.buffer = self._main_buffer
        self._main_buffer = None
        self._alt_active = False
        self._wraps = self._main_wraps
        self.dirty.update(range(self.lines))
        savepoint, self._alt_savepoint = self._alt_savepoint, None
        if mode == 1049 and savepoint is not None:
            self._alt_left = savepoint
            self._restore_alt_savepoint(savepoint)

    def _restore_alt_savepoint(self, savepoint: Savepoint) -> None:
        """DECRC of what 1049 saved, as xterm does it: cursor visibility (DECTCEM) is not part of the saved state.
        The savepoint is kept as it was (the cursor restored is a copy), for a 1049 off outside the alternate
        screen."""
        hidden = self.cursor.hidden
        self.savepoints.append(savepoint._replace(cursor=copy.copy(savepoint.cursor)))
        self.restore_cursor()
        self.cursor.hidden = hidden

    def _scroll_up(self, top: int, bottom: int, count: int = 1) -> None:
        """Scroll the region `top..bottom` up `count` rows (at most its height), as `count` line feeds at its bottom
        would, row for row: what leaves the top of the screen is kept. Deferred paints move with their rows
        (`_move_paints`) rather than being written first."""
        if top == 0 and not self._alt_active:
            # Each row kept as it was when it left: the top one, then those the same scroll line by line would have
            # moved to the top (all in one go: Claude Code scrolls its output by several lines at once).
            self._keep_rows(min(count, bottom + 1))
        if self._paints:
            self._move_paints(top, bottom, -count)
        buffer = self._rows
        self.dirty.update(range(self.lines))
        if top == 0 and bottom == self.lines - 1:
            # Rows `count`..`bottom` become rows 0.. (looked up and renumbered in C); those missing are made below.
            moved: list[Row | None] = list(map(buffer.get, range(count, bottom + 1)))
            buffer.clear()
            buffer.update(zip(range(bottom + 1 - count), cast("list[Row]", moved), strict=True))
            if None in moved:
                for y in [y for y, row in enumerate(moved) if row is None]:
                    del buffer[y]
            self._create_rows(bottom)
            return
        # One scroll at a time moves row y + 1 to y, row by row (a missing row coming into being as it is read) and
        # drops the bottom one; `count` of them leave row y + count at y and new rows below, the bottom one missing.
        # (The rows are made here, not by the buffer's default factory: a tmux pane scrolls its region all the time.)
        make = row_kind(self.default_char)
        get = buffer.get
        for y in range(top, bottom - count + 1):
            row = get(y + count)
            buffer[y] = make() if row is None else row
        for y in range(bottom - count + 1, bottom):
            buffer[y] = make()  # comes into being, as the next scroll's read of it makes it
        buffer.pop(bottom, None)

    def _keep_rows(self, count: int) -> None:
        """Rows 0..`count` - 1 leave the top of the main screen: each is kept in the scrollback as it shows, its
        paints written (a row never made is kept as one that was). A row that only a batch line was painted on (whole,
        from column 0, onto a row nothing was written to, with no EL of a colour: the pages of less -X, lines fed at
        the bottom of the screen) is kept as that line and the attributes it starts with, as a line that scrolls away
        inside a batch is (`_scroll_away_lines`): never drawn as cells. Its paints are left for the scroll to drop
        (`_move_paints`)."""
        rows, paints, scrollback = self._rows, self._paints, self._sb
        raws: list[str | Piece] = []
        starts: list[Char] = []
        for y in range(count):
            entry = paints.get(y)
            if entry is None:
                row = rows.get(y)
            else:
                row, ops = entry[0], entry[1]
                if len(ops) == 1 and not row:
                    op = ops[0]
                    if (
                        op is not None
                        and op[4] == -1
                        and (op[5] is None or op[5] is DEFAULT_CHAR)
                        and not getattr(row, "wrapped", False)
                    ):
                        raws.append(op[2])  # type: ignore[arg-type]  # a batch line: its text, its node
                        starts.append(op[3].attrs)  # type: ignore[union-attr]
                        continue
                self._write_paints(row, ops)
            if raws:
                scrollback.extend_drawn(raws, starts)
                raws, starts = [], []
            scrollback.append_row(row)
        if raws:
            scrollback.extend_drawn(raws, starts)

    def _create_rows(self, bottom: int) -> None:
        """Create rows 0..bottom-1 where missing, as pyte's scroll does. A row's blank cell is fixed when
        the row is created (reversed under DECSCNM), so rows must come into being when pyte's would."""
        buffer = self._rows  # a row with deferred paints exists already
        if len(buffer) < bottom:
            make = row_kind(self.default_char)
            for y in range(bottom):
                if y not in buffer:
                    buffer[y] = make()

    def _node(self) -> CharCache:
        """The shared cells (and their SGR moves, texts and runs) of the cursor's attributes."""
        attrs = self._cur.attrs
        node = self._chars
        if node.attrs is not attrs:
            node = self._chars = chars_for(attrs)
        return node

    def _feed_text(self, text: str, batch: bool = True) -> None:
        if self._in_string:
            text = self._string_end(text)
        stream = self._stream
        pos, n = 0, len(text)
        cut, self._cut_piece = self._cut_piece, None
        if not stream._taking_plain_text:
            pos = self._feed_slow(text, pos)  # finish a sequence split across feeds
        if batch and pos < n and self._cur.x == 0:
            pos = self._try_batch(text, pos)
            if self._held:
                pos = self._after_batch(text, pos)
        if pos < n:
            self._feed_pieces(text, pos, batch, cut if pos == 0 else None)

    def _feed_pieces(
        self, text: str, pos: int, batch: bool, cut: tuple[str, tuple[Any, ...], int, int, Char] | None = None
    ) -> None:
        """`text` from `pos` on, cut into pieces before every CUP (or every CR, `_CR_CUT`): a piece met before, in the
        same state (the screen's, `_env`, and the cursor's), is applied whole from its effect (`_piece_effect`: the
        cells it writes on each row, as one deferred paint per row, and the cursor and modes after it), rather than
        token by token; full-screen programs repaint the same pieces of their rows over and over. The rest (and the
        text before the first cut) is scanned token by token (`_scan`), the pieces between two applied ones in one
        go. Pieces applied back to back are remembered as a run (`_keep_run`), and a run met again is applied whole
        from one effect, which saves the loop's work per piece (tmux draws its border in pieces of a CUP and one
        character). A read's last piece, which its end usually cuts, is kept unparsed for the next read (`_tail`,
        `_PIECE_KEPT`) when it holds nothing seen before the cells are looked at (`_NOT_KEPT`): the next read goes on
        with it, and the whole piece is met. If someone looks between the reads, it is parsed then (`_release`) and
        becomes `cut`: the last read's last piece, cut by its end (`_cut_piece`); joined to the text before the first
        cut, it is applied whole if met before."""
        n = len(text)
        if mo.DECAWM not in self.mode:
            # Textual turns autowrap off: its pieces recur in other states, and one applied between pieces scanned
            # costs a scan of its own, more than it saves (measured: Textual's recording 25% slower).
            self._scan(text, pos, n, batch)
            return
        if self._pieces_missed >= _IDLE_AFTER:
            # Few pieces applied in many reads (a program that draws ever new text): finding where every piece starts
            # costs a tenth of the scan of a read full of SGR, so reads are scanned whole, but that one of every few
            # is looked at whole if a few of its pieces were met before (`_met_before`).
            self._probe_in -= 1
            if self._probe_in > 0:
                self._scan(text, pos, n, batch)
                return
            self._probe_in = _PROBE_EVERY
            if not self._met_before(text, pos):
                self._scan(text, pos, n, batch)
                return
            # Met again: the next few reads are cut into pieces too, so that what comes back is worked out.
            self._pieces_missed = _IDLE_AFTER - _PROBE_EVERY
        cuts = _cuts(text, pos)
        if len(cuts) < 2:
            # No pieces: a read that says nothing of whether they pay (a pager's lines between its repaints); finding
            # that out cost two searches in C.
            self._scan(text, pos, n, batch)
            return
        cuts.append(n)
        effects = self._piece_effects
        get = effects.get
        elsewhere = self._effects_elsewhere
        dirty = self.dirty
        env: tuple[Any, ...] | None = None
        # What `_scan` and a piece's steps may replace, looked up again after them (not once per piece).
        paints = self._paints
        cursor = self._cur
        held = bool(self._held)
        runs = self._runs
        pending = pos  # where the text not handled yet starts
        applied = 0  # the length of the pieces applied
        # The pieces applied one by one, back to back, up to `run_end` (their effects, where the first starts and
        # ends): remembered as a run (`_keep_run`), applied whole where it comes back.
        run: list[Effect] = []
        run_at = run_first = run_end = -1
        start = cuts[0]
        if cut is not None and start > pos and not held:
            pending = self._apply_cut_piece(cut, text[pos:start])
            applied = pending - pos
        for end in cuts[1:]:
            if start < pending or end - start > _PIECE_MAX:
                start = end
                continue
            piece = text[start:end]
            entry = get(piece)
            if entry is None:
                if len(effects) >= _PIECES_LIMIT:
                    effects.clear()
                effects[piece] = _MET_ONCE
                start = end
                continue
            if entry is _IMPURE or entry is _MET_ONCE:
                if entry is _MET_ONCE:
                    effects[piece] = _MET_TWICE
                start = end
                continue
            if start > pending:
                pending = self._scan(text, pending, start, batch)
                env = None
                paints, cursor, held = self._paints, self._cur, bool(self._held)
                if pending > start:  # a line batch or pyte's parser went on into this piece
                    start = end
                    continue
            if env is None:
                env = self._env()
            stop = end  # where the piece ends: past `end` for a run met again
            if runs and not held:
                met = runs.get(piece)
                # A run met again: taken whole if its effect holds from here, else piece by piece (below).
                if (
                    met is not None
                    and text.startswith(met[0], start)
                    and _holds_from(met[1], env, cursor.attrs, cursor.x, cursor.y)
                ):
                    piece = met[0]
                    stop = start + len(piece)
                    entry = met[1]
            if entry is _MET_TWICE:
                entry = effects[piece] = self._piece_effect(piece, env)
                if entry is _IMPURE or entry is _MET_TWICE:
                    start = end
                    continue
            effect: Effect = entry  # type: ignore[assignment]  # no cast: called per piece
            if effect[3] is not env:
                # Met in another state (tmux moves its scroll region between panes all the time): its effect there.
                key = (piece, env)
                other = elsewhere.get(key)
                if other is None:
                    other = self._piece_effect(piece, env)
                    if other is not _MET_TWICE:
                        if len(elsewhere) >= _PIECES_LIMIT:
                            elsewhere.clear()
                        elsewhere[key] = other
                if type(other) is not tuple:
                    start = end
                    continue
                effect = other  # type: ignore[assignment]
            if held:
                start = end
                continue
            attrs, x0, y0, _, ops, x1, y1, node, rows, modes, steps, _, _ = effect
            if not (
                (attrs is cursor.attrs or attrs == cursor.attrs)
                and (y0 < 0 or (y0 == cursor.y and (x0 < 0 or x0 == cursor.x)))
            ):
                # Met from another cursor (Codex draws a row after one colour and then after another; Claude Code's
                # pieces begin where the last one left the cursor): its effect from there, if that may recur.
                start_key = (piece, env, cursor.attrs, cursor.y if y0 >= 0 else -1, cursor.x if x0 >= 0 else -1)
                other = elsewhere.get(start_key)
                if other is None:
                    if len(elsewhere) >= _PIECES_LIMIT:
                        elsewhere.clear()
                    other = elsewhere[start_key] = _MET_ONCE
                elif other is _MET_ONCE:
                    other = self._piece_effect(piece, env)
                    elsewhere[start_key] = _MET_ONCE if other is _MET_TWICE else other
                if type(other) is not tuple:
                    start = end
                    continue
                effect = other  # type: ignore[assignment]
                attrs, x0, y0, _, ops, x1, y1, node, rows, modes, steps, _, _ = effect
            if steps is not None:
                env = self._apply_steps(effect)
                paints, cursor = self._paints, self._cur
            for y, op, whole in ops:
                # `_add_paint` inlined (a call per row of every piece), but for a row with too many paints.
                known = paints.get(y)
                if known is None:
                    paints[y] = (self._rows[y], [op], {op[0]: 0})  # the row comes into being now
                    continue
                row_ops = known[1]
                at = known[2]
                x = op[0]
                if whole:
                    row_ops[:] = [op]
                    at.clear()
                    at[x] = 0
                elif len(row_ops) < _MAX_PAINTS:
                    i = at.get(x)
                    if i is not None:
                        old = row_ops[i]
                        if op[5] is not None or (old[5] is None and 0 <= old[4] <= op[4]):  # type: ignore[index]
                            row_ops[i] = None
                    at[x] = len(row_ops)
                    row_ops.append(op)
                else:
                    self._add_paint(y, op, whole)
            cursor.x = x1
            cursor.y = y1
            cursor.attrs = node.attrs
            self._chars = node
            dirty.update(rows)
            if modes:
                self._set_plain_modes(modes)
            if stop == end:
                if run_end == start and len(run) < _RUN_MAX:
                    run.append(effect)
                else:
                    if len(run) > 1:
                        _keep_run(runs, text, run_at, run_first, run_end, run)
                    run = [effect]
                    run_at, run_first = start, end
                run_end = end
            pending = stop
            applied += stop - start
            start = end
        if len(run) > 1:
            _keep_run(runs, text, run_at, run_first, run_end, run)
        if pending < n:
            last = cuts[-2]
            if pending < last:
                pending = self._scan(text, pending, last, batch)
            if pending == last and n - last <= _PIECE_MAX:
                tail = text[last:]
                if (
                    batch
                    and not (self._held or self._tail or self._in_string)
                    and _NOT_KEPT.search(tail) is None
                    and (tail.isascii() or _C1.search(tail) is None)
                    and "\x07" not in tail  # a bell: counted now (`bells`)
                ):
                    # Kept unparsed until the next read, which usually goes on with the rest of it (tmux, vim and
                    # pagers end a read mid-row): then the whole piece is met, and applied whole if met before.
                    self._tail = tail
                    self._held = _PIECE_KEPT
                    if "\x1b[?" in tail:
                        self._set_plain_modes(
                            tuple((_PLAIN_PRIVATE_MODES[m[1]], m[2] == "h") for m in _KEPT_MODES.finditer(tail))
                        )
                else:
                    self._scan_last_piece(tail, batch)
            elif pending < n:
                self._scan(text, pending, n, batch)
        if applied * 4 >= n - pos:
            self._pieces_missed = 0
        elif len(cuts) > _IDLE_CUTS:
            self._pieces_missed += 1

    def _scan_last_piece(self, piece: str, batch: bool) -> None:
        """A read's last piece, which its end cut, scanned; remembered as cut (`_cut_piece`: its text and the state
        and cursor it met) unless something of it is left pending, so that the next read's rest of it may be
        applied whole."""
        cursor = self._cur
        state = (piece, self._env(), cursor.x, cursor.y, cursor.attrs)
        self._scan(piece, 0, len(piece), batch)
        if not (self._held or self._tail or self._in_string):
            self._cut_piece = state

    def _met_before(self, text: str, pos: int) -> bool:
        """Whether `text` (from `pos`), cut into pieces as `_feed_pieces` cuts it, holds pieces met before (in an
        earlier read, or earlier in this one: a 64 KiB read of a program's repaints) that make a quarter of it, as
        the pieces path needs to pay; if not, each of its pieces is remembered (`_MET_ONCE`), so that a program's
        repeats are found on their next pass whichever reads they fall in (cutting a read costs a tenth of scanning
        it; sampling a few places of each read instead took a dozen passes of Claude Code's repaints to meet one
        again)."""
        n = len(text)
        cuts = _cuts(text, pos)
        if len(cuts) < 2:
            return False
        effects = self._piece_effects
        new: dict[str, int] = {}  # (a dict: in the order met)
        met = 0
        for a, b in pairwise(cuts):
            if b - a <= _PIECE_MAX:
                piece = text[a:b]
                if piece in effects or piece in new:
                    met += b - a  # met in an earlier read, or earlier in this one (a 64 KiB read of repaints)
                else:
                    new[piece] = _MET_ONCE
        if met * 4 >= n - pos:
            return True  # (the pieces path remembers them)
        if len(effects) + len(new) > _PIECES_LIMIT:
            effects.clear()
        effects.update(new)
        return False

    def _apply_cut_piece(self, cut: tuple[str, tuple[Any, ...], int, int, Char], rest: str) -> int:
        """The last read's cut piece (`_cut_piece`: its start scanned already) joined to `rest`, the text before this
        read's first cut: if that whole piece was met before, worked out from the state and cursor its start met, and
        without steps (a scroll done twice would be two), its effect is applied now, over what its start drew (every
        cell the piece leaves is in its effect). Returns how much of `rest` was handled: all of it, or none."""
        start, env, x, y, attrs = cut
        effect = self._piece_effects.get(start + rest)
        if (
            type(effect) is not tuple
            or effect[10] is not None
            or not _holds_from(effect, env, attrs, x, y)
            or self._env() is not env
        ):
            return 0
        for row, op, whole in effect[4]:
            self._add_paint(row, op, whole)
        cursor = self._cur
        node = effect[7]
        cursor.x, cursor.y, cursor.attrs = effect[5], effect[6], node.attrs
        self._chars = node
        self.dirty.update(effect[8])
        if effect[9]:
            self._set_plain_modes(effect[9])
        return len(rest)

    def _forget_pieces(self) -> None:
        """Forget every piece's effect (the screen's size or contents were made anew)."""
        self._piece_effects.clear()
        self._effects_elsewhere.clear()
        self._runs.clear()
        self._cut_piece = None

    def _env_key(self) -> tuple[Any, ...]:
        """What a piece's effect depends on besides the cursor: the modes (but those set in place that change nothing
        drawn), the scroll region, the charsets and the encoding."""
        mode = self.mode
        return (
            frozenset(mode if mode.isdisjoint(_ENV_FREE) else mode - _ENV_FREE),
            self.margins,
            self.charset,
            self.g0_charset,
            self.g1_charset,
            self._stream.use_utf8,
        )

    def _env(self) -> tuple[Any, ...]:
        """`_env_key`, one object per distinct state (effects are checked against it by identity)."""
        key = self._env_key()
        return self._envs.setdefault(key, key)

    def _piece_effect(self, piece: str, env: tuple[Any, ...]) -> Effect | int:
        """The effect of `piece` drawn from the cursor's state and the screen's `env`, worked out on a scratch screen
        (`_Scratch`) whose rows start empty, so that what they hold after is what the piece wrote: each row's
        cells (written over the real row as one deferred paint), the cursor and the private modes it set in place;
        its scrolls up and erases of the display as steps between paints, and the scroll region it leaves.
        `_MET_TWICE` (to be tried again) under a mode that moves the cells already there (insert mode); `_IMPURE` if
        the piece holds anything but text, SGR, moves, erases, CR, LF, BS, SU, DECSTBM and private modes set in
        place, or if it would scroll down, read cells already there (a combining mark), change the screen's state
        (`_env_key`) beyond its scroll region, or fail."""
        if not self.mode.isdisjoint(_NO_BATCH_MODES):  # insert mode moves the cells already there: not now
            return _MET_TWICE
        modes: list[tuple[int, bool]] = []
        for m in (_TOKEN_ASCII if piece.isascii() else _TOKEN).finditer(piece):
            kind = m.lastindex
            if kind in _T_PIECE_TOKENS:
                continue
            if kind == _T_CSI:
                private, params, final = m.group(11, 12, 13)
                if not private and final in _PIECE_CSI:
                    continue
                if private == "?" and (final == "h" or final == "l"):
                    shifted = _PLAIN_PRIVATE_MODES.get(params)
                    if shifted is not None:
                        modes.append((shifted, final == "h"))
                        continue
            elif kind == _T_CTL and m.group(19) in _PIECE_CONTROLS:
                continue
            return _IMPURE
        scratch = self._scratch
        if scratch is None or scratch.columns != self.columns or scratch.lines != self.lines:
            scratch = self._scratch = _Scratch(self.columns, self.lines, 1)
        scratch._rows = scratch._new_buffer()
        scratch._paints = {}
        scratch.dirty.clear()
        scratch.errors = 0
        scratch.mode = set(self.mode)
        scratch.margins = self.margins
        scratch.charset, scratch.g0_charset, scratch.g1_charset = self.charset, self.g0_charset, self.g1_charset
        scratch._stream.use_utf8 = self._stream.use_utf8
        scratch.tabstops = self.tabstops
        source, cursor = self._cur, scratch._cur
        cursor.x, cursor.y, cursor.attrs, cursor.hidden = source.x, source.y, source.attrs, source.hidden
        steps = scratch.steps = []
        try:
            scratch._scan(piece, 0, len(piece), False)
        except _Impure:
            return _IMPURE
        if scratch.errors or scratch._held or scratch._tail or scratch._in_string:
            return _IMPURE
        after = scratch._env_key()
        if after != env:
            if after[0] != env[0] or after[2:] != env[2:]:  # more than the scroll region changed
                return _IMPURE
            after = self._envs.setdefault(after, after)
        else:
            after = env
        ops = scratch._written()
        if steps and ops:
            steps.append((_STEP_PAINT, ops))
        absolute = _CUP_START.match(piece) is not None and mo.DECOM not in self.mode
        returns = piece.startswith("\r")  # a CR first: the same effect from any column (not from any row)
        return (
            source.attrs,
            -1 if absolute or returns else source.x,
            -1 if absolute else source.y,
            env,
            () if steps else ops,
            cursor.x,
            cursor.y,
            chars_for(cursor.attrs),
            tuple(scratch.dirty),
            tuple(modes),
            tuple(steps) if steps or after is not env else None,
            after,
            _merged_scrolls(steps),
        )

    def _apply_steps(self, effect: Effect) -> tuple[Any, ...]:
        """A piece's steps (`_Scratch`), done on this screen in order (its scrolls merged, `_merged_scrolls`); then
        the scroll region it leaves. Returns the screen's state after it."""
        cursor = self._cur
        steps = effect[10]
        if effect[12] is not None:
            steps = effect[12]
        for step in steps:  # type: ignore[union-attr]  # only called when it has steps
            kind = step[0]
            if kind == _STEP_PAINT:
                for y, op, whole in step[1]:
                    self._add_paint(y, op, whole)
            elif kind == _STEP_SCROLL:
                self._scroll_up(step[1], step[2], step[3])
            elif kind == _STEP_KEEP:
                self._scroll_keeping(step[1], step[2], step[3], step[4])
            elif kind == _STEP_ERASE:
                cursor.x, cursor.y, cursor.attrs = step[2], step[3], step[4]
                self.erase_in_display(step[1])
            else:
                self.savepoints[:] = [step[1]]  # DECSC keeps one saved state (`save_cursor`)
        after = effect[11]
        self.margins = after[1]
        return after

    def _scroll_keeping(self, top: int, bottom: int, count: int, kept: PieceOps) -> None:
        """Scrolls of the region `top`..`bottom` (at its top, `top` 0) merged into one of `count` rows, with the paints
        made between them on rows that leave (`kept`: each with its row counted from the region's top as the first
        scroll starts): in the main screen, the rows that leave are kept in the scrollback as painted, those that
        came into being at the bottom inside the run and left too (made blank, then painted) after the region's
        own; in the alternate screen nothing is kept."""
        height = bottom - top + 1
        if top or self._alt_active:
            self._scroll_up(top, bottom, min(count, height))
            return
        later: dict[int, list[Paint]] = {}
        for v, op, whole in kept:
            if v < height:
                self._add_paint(v, op, whole)
            else:
                ops = later.setdefault(v, [])
                if whole:
                    ops.clear()
                ops.append(op)
        self._scroll_up(top, bottom, min(count, height))
        if count > height:
            make = row_kind(self.default_char)
            scrollback = self._sb
            for v in range(height, count):
                painted = later.get(v)
                if painted is None:
                    scrollback.append_row(None)
                else:
                    row = make()
                    self._write_paints(row, painted)  # type: ignore[arg-type]  # (no None in it)
                    scrollback.append_row(row)

    def _set_plain_modes(self, modes: tuple[tuple[int, bool], ...]) -> None:
        """Private modes set or reset in place (`_PLAIN_PRIVATE_MODES`), in order, as `_scan` sets them."""
        for shifted, on in modes:
            if on:
                self.mode.add(shifted)
            else:
                self.mode.discard(shifted)
            if shifted == mo.DECTCEM:
                self._cur.hidden = not on
            elif shifted == _SYNC_SHIFTED:
                self.queries.set_modes(_SYNC_MODES, on)

    def _scan(self, text: str, pos: int, stop: int, batch: bool) -> int:
        """Tokens of `text` from `pos` to `stop` (a token may reach past it: a line batch, pyte's parser), handled;
        returns where the next token starts."""
        n = len(text)
        finditer = (_TOKEN_ASCII if text.isascii() else _TOKEN).finditer
        csi = self._csi
        while pos < stop:
            # Whether runs may be painted without looking at modes and charsets (`_plain_paints`): None is not known
            # yet. Only a sequence (not a paint, not text or a control) can change that, and each sets it back.
            plain: bool | None = None
            # Every position matches some alternative, so the matches are back to back; the loop is left to
            # go on from elsewhere after a line batch or pyte's parser.
            for m in finditer(text, pos, stop):
                kind = m.lastindex
                if kind in _T_PAINT:
                    if kind >= _T_PLAIN_RUN:
                        run, erase = m.group(7, 8)
                    else:
                        crlf, first, column, final, run, erase = m.group(1, 2, 3, 4, 5, 6)
                        if crlf is not None:
                            self._cur.x = 0
                            self.linefeed()
                        if final is not None and final != "H":
                            if final == "G":
                                # CHA (ncurses places runs with it), pyte's `cursor_to_column` inlined: its parameter
                                # places the cursor as CUP's column does.
                                self._cur.x = LOOKUP(self._place_column, first)
                            elif final == "C":
                                # CUF (vim moves along a row with it), pyte's `cursor_forward` inlined.
                                cursor = self._cur
                                x = cursor.x + ((int(first) if first else 0) or 1)
                                last = self.columns - 1
                                cursor.x = x if x <= last else last
                            else:  # VPA, the paint token's last move (see `_TOKEN_PATTERN`)
                                self.cursor_to_line(int(first) if first else 0)
                        elif self.margins is not None and mo.DECOM in self.mode:
                            self.cursor_position(int(first or 0), int(column or 0))
                        else:  # CUP, pyte's `cursor_position` inlined (at most 4 digits each), parameters looked up
                            cursor = self._cur
                            cursor.y = LOOKUP(self._place_row, first)
                            cursor.x = LOOKUP(self._place_column, column)
                        if run is None:
                            if erase is not None:
                                self.erase_in_line(int(erase) if erase else 0)
                            continue
                    if erase is None or erase == "" or erase == "0":
                        if plain is None:
                            plain = self._plain_paints()
                        if plain:
                            # `_paint` for a run met before (a program repainting its rows), inlined: one lookup
                            # gives its cells and the attributes after it (see `_plain_paints` for what holds).
                            if "(" in run and "\x1b(" in run:
                                if _DESIGNATIONS[1] in run:  # line drawing (ncurses' boxes)
                                    drawn = _line_drawn(run)
                                    if drawn is None:  # it leaves line drawing on: `_draw_run` switches G0
                                        self._draw_run(run)
                                        plain = None
                                        if erase is not None:
                                            self.erase_in_line(int(erase) if erase else 0)
                                        continue
                                    run = drawn
                                else:
                                    run = run.replace(_DESIGNATIONS[0], "")
                            cursor = self._cur
                            node = self._chars
                            if node.attrs is not cursor.attrs:
                                node = self._chars = chars_for(cursor.attrs)
                            found = node.runs.get(run)
                            if found is not None:
                                cells, after = found
                                x = cursor.x
                                end = x + len(cells)
                                if end <= self.columns:
                                    cursor.attrs = after.attrs
                                    self._chars = after  # the node of the cursor's attributes, for the next run
                                    cursor.x = end
                                    if end > x or erase is not None:
                                        y = cursor.y
                                        self.dirty.add(y)
                                        self._add_paint(
                                            y,
                                            (x, cells, run, node, end - x, None if erase is None else after.blank),
                                            x == 0 and (erase is not None or end == self.columns),
                                        )
                                    continue
                            if self._paint_run(run, erase is not None):  # `_paint`, whose checks hold (above)
                                continue
                        elif self._paint(run, erase is not None):
                            continue
                    self._draw_run(run)
                    if "\x1b(" in run:
                        plain = None  # it may have switched G0 (`_plain_paints`)
                    if erase is not None:
                        if erase == "" or erase == "0":  # EL to the end of the row, the usual one: inlined
                            cursor = self._cur
                            x, y = cursor.x, cursor.y
                            columns = self.columns
                            self.dirty.add(y)
                            if x < columns:
                                self._row(y).update(fill(self._blank(), x, columns))
                                if x == 0 and self._wraps:
                                    self._unwrap(y, y + 1)
                            else:
                                self._row(y)  # the row comes into being, as in pyte
                        else:
                            self.erase_in_line(int(erase))
                elif kind == _T_CRLF:
                    self._cur.x = 0
                    self.linefeed()
                    end = m.end()
                    if batch and end < n and self._cur.x == 0:
                        pos = self._try_batch(text, end)
                        if pos != end:
                            if self._held:
                                pos = self._after_batch(text, pos)
                            break
                elif kind == _T_ERASE_UP:
                    self._erase_up(len(m.group(10)) // 8)
                elif kind == _T_CSI:
                    private, params, final = m.group(11, 12, 13)
                    if final == "m":
                        if not private:  # see select_graphic_rendition
                            cursor = self._cur
                            cursor.attrs = sgr_apply(cursor.attrs, params, mo.DECSCNM in self.mode)
                        continue
                    if private and (final == "h" or final == "l"):
                        shifted = _PLAIN_PRIVATE_MODES.get(params)
                        if shifted is not None:
                            # DECTCEM and other private modes pyte only records (vim hides and shows the cursor
                            # around every repaint, Codex and Claude Code send each frame inside 2026): pyte's
                            # `set_mode`/`reset_mode` without the calls.
                            if final == "h":
                                self.mode.add(shifted)
                            else:
                                self.mode.discard(shifted)
                            if shifted == mo.DECTCEM:
                                self._cur.hidden = final == "l"
                            elif shifted == _SYNC_SHIFTED:
                                self.queries.set_modes(_SYNC_MODES, final == "h")
                            continue
                    plain = None
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
                elif kind == _T_CTL:
                    char = m.group(19)
                    if char == "\r":
                        self._cur.x = 0
                    elif char in "\n\x0b\x0c":
                        self.linefeed()
                        end = m.end()
                        if batch and char == "\n" and end < n and self._cur.x == 0:
                            pos = self._try_batch(text, end)
                            if pos != end:
                                if self._held:
                                    pos = self._after_batch(text, pos)
                                break
                    elif char == "\x08":
                        self.backspace()
                    elif char == "\t":
                        self.tab()
                    elif char == "\x07":
                        self.bell()
                    # NUL and DEL are ignored, as by pyte.
                elif kind == _T_TEXT:
                    self.draw(m.group(14))
                elif kind == _T_ESC:
                    plain = None
                    if m.group(15) == "M" and self._cur.y == 0 and self._cur.x == 0 and not self._held:
                        end = self._reverse_batch(text, m.start())
                        if end > m.start():
                            pos = end
                            break
                    handler0 = self._esc.get(m.group(15))
                    if handler0 is not None:
                        handler0()
                elif kind == _T_OSC:
                    # OSC Ps ; Pt as xterm reads it: 0 names the icon and the window, 1 the icon, 2 the window, any
                    # other number neither. pyte read only the first digit, so OSC 22 (the pointer's shape, which every
                    # Textual app sends) made ";default" the title, and the colony's row showed it.
                    code, named, param = (m.group(17) + m.group(18)).partition(";")
                    if named and (code == "0" or code == "1"):
                        self.set_icon_name(param)
                    if named and (code == "0" or code == "2"):
                        self.set_title(param)
                elif kind == _T_DA2:
                    self.queries.secondary_device_attributes()
                elif kind == _T_STRING:
                    end = m.end()
                    if end == stop < n and not m.group(25) and text[end] not in "\x1b\x9c":
                        # Cut by the end of a piece (`_feed_pieces`), not by its ST: the rest of the feed unbounded.
                        return self._scan(text, m.start(), n, batch)
                    if end == n and not m.group(25):  # cut by the end of the feed: the rest is dropped as it comes
                        self._in_string = "in"
                    elif end == n - 1 and not m.group(25):  # an ESC last: its ST, or the start of what aborts it
                        self._in_string = "esc"
                        pos = n
                        break
                elif kind == _T_OTHER_CSI:
                    leader, params, between, final = m.group(21, 22, 23, 24)
                    # SGR with colons: 38:2::R:G:B, 4:3, ...; one of only an underline colour sets nothing (an
                    # empty SGR would be a reset).
                    if final == "m" and not leader and not between and (sgr := colon_sgr(params)):
                        cursor = self._cur
                        cursor.attrs = sgr_apply(cursor.attrs, sgr, mo.DECSCNM in self.mode)
                elif kind == _T_CHARSET:
                    plain = None
                    designation = m.group(16)
                    # pyte ignores designations in UTF-8 mode; xterm and tmux do not: ncurses draws its boxes in
                    # the DEC line drawing set (ESC ( 0 ... ESC ( B) whatever the encoding.
                    self.define_charset(designation[1], mode=designation[0])
                else:  # anything else: pyte's parser, from here until it is back in its ground state
                    start = m.start()
                    if n - start <= _MAX_UNFINISHED and _UNFINISHED.fullmatch(text, start):
                        # A sequence cut by the end of the read: kept as text and parsed with the next feed (it
                        # has no effect before it is whole), rather than given to pyte's parser byte by byte.
                        self._tail = text[start:]
                        pos = n
                    else:
                        pos = self._feed_slow(text, start)
                    break
            else:
                pos = stop
        return pos

    def _reverse_batch(self, text: str, pos: int) -> int:
        """Steps of paging back (`_REVERSE_STEP`: RI at the top row, a line, CR LF, home) from `pos`, with the
        cursor home, applied as one scroll down of the screen by their count and their lines drawn from the bottom
        of the new rows up, where RI, draw, CR LF, home once per line shift every row once per line (less paging
        back). Returns where the steps end (`pos` if none could be taken): each line must fit on its row, as text
        and SGR that `_paint` draws."""
        margins = self.margins
        if (margins is not None and (margins.top != 0 or mo.DECOM in self.mode)) or not self._plain_paints():
            return pos
        bottom = self.lines - 1 if margins is None else margins.bottom
        columns = self.columns
        steps: list[tuple[str, bool]] = []
        match = _REVERSE_STEP.match
        end = pos
        while len(steps) < bottom and (m := match(text, end)) is not None:
            run, erase = m.group(1, 2)
            if run and not (run.isascii() and len(run) <= columns):  # (else it fits, whatever its SGR sequences)
                shown = _SGR_SEQ.sub("", run).replace(_DESIGNATIONS[0], "") if "\x1b" in run else run
                width = None if "\x1b" in shown else text_width(shown)  # None: a character not of one or two cells
                if width is None or width > columns:
                    break
            steps.append((run or "", erase is not None))
            end = m.end()
        count = len(steps)
        if count < 2:
            return pos
        # RI `count` times at the top: rows move down `count`, those pushed past the bottom are gone (as are their
        # deferred paints), and the rows above them are new (pyte's lookups make them; the top one does not exist).
        if self._paints:
            self._move_paints(0, bottom, count)
        rows = self._rows
        for y in range(bottom, count - 1, -1):
            rows[y] = rows[y - count]
        make = row_kind(self.default_char)
        for y in range(1, count):
            rows[y] = make()  # as pyte's lookup makes it
        rows.pop(0, None)
        self.dirty.update(range(self.lines))
        # Each line is a batch line (`_known_batch`: one lookup if met before) drawn on a new row, whose deferred
        # paint is the row's only one (as `_paint_rows` makes it).
        cursor = self._cur
        paints = self._paints
        node = self._node()
        for i, (run, erase) in enumerate(steps):
            y = count - 1 - i
            known = node.lines.get(run) or (None if "\x1b(" in run else _line_met(run, node))
            if known is None:  # a designation, or a character not of one or two cells: `_paint` or `_draw_run`
                cursor.x = 0
                cursor.y = y
                cursor.attrs = node.attrs
                self._chars = node
                if not self._paint(run, erase):
                    self._draw_run(run)
                    if erase:
                        self.erase_in_line(0)
                node = self._node()
                paints = self._paints  # (anything that writes every row's paints makes a new dict of them)
                continue
            body, _, after, width, _ = known  # (the line met in a batch may hold ESC ( B, which its body has not)
            if erase:
                paints[y] = (rows[y], [(0, None, body, node, -1, after.blank)], {0: 0})
            elif width:  # a line that draws nothing makes no row
                paints[y] = (rows[y], [(0, None, body, node, -1, None)], {0: 0})
            node = after
        cursor.x = cursor.y = 0
        cursor.attrs = node.attrs
        self._chars = node
        return end

    def _string_end(self, text: str) -> str:
        """The text after the end of the control string the last feed left open (`_T_STRING`)."""
        if self._in_string == "esc":
            self._in_string = ""
            return text[1:] if text[:1] == "\\" else "\x1b" + text
        end = min((i for i in (text.find("\x1b"), text.find("\x9c")) if i >= 0), default=-1)
        if end < 0:
            return ""
        if text[end] == "\x9c" or text[end + 1 : end + 2] == "\\":
            self._in_string = ""
            return text[end + 1 + (text[end] == "\x1b") :]
        if end == len(text) - 1:
            self._in_string = "esc"
            return ""
        self._in_string = ""
        return text[end:]  # an ESC that aborts the string begins what comes next

    def _erase_up(self, count: int) -> None:
        """`count` times EL 2 then CUU 1: each row erased (every cell written when the paint is, as pyte does), then
        the cursor up one row, as `cursor_up` moves it."""
        cursor = self._cur
        y = cursor.y
        top = self.margins.top if self.margins is not None else 0
        dirty = self.dirty
        # Deferred like a paint (`_paint`): the lines redrawn after it usually cover the rows again.
        erase: Paint = (0, (), None, None, 0, self._blank())
        start = low = y
        for _ in range(count):
            self._add_paint(y, erase, True)
            dirty.add(y)
            low = y
            y = y - 1 if y > top or 0 < y < top else y
        cursor.y = y
        if self._wraps:
            self._unwrap(low, start + 1)

    def _places(self) -> None:
        """CUP's parameters to rows and columns (`_Place`), for the screen's size."""
        self._place_row = _Place(self.lines)
        self._place_column = _Place(self.columns)

    def _plain_paints(self) -> bool:
        """Whether a paint may skip `_paint`'s checks of modes and charsets: no batch rows held, no mode under which a
        run is not drawn as plain text (insert, DECSCNM, LNM), G0 ASCII and UTF-8 (so that `ESC ( B` in a run changes
        nothing; a run with `ESC ( 0` goes to `_draw_run`). Only sequences change any of it (`_feed_text`)."""
        return (
            not self._held
            and self.mode.isdisjoint(_NO_BATCH_MODES)
            and self.charset == 0
            and self.g0_charset is cs.LAT1_MAP
            and self._stream.use_utf8
        )

    def _paint(self, run: str, erase: bool) -> bool:
        """Draw `run` (and EL to the end of the row if `erase`) if it fits on the cursor's row, deferred: the
        cursor moves and takes the attributes after the run now, while the cells are written when someone next
        reads or writes cells (`_buf`, `buffer`), so a row repainted before anyone looks (a full-screen program
        redrawing) is never drawn in between, and a run met once is not turned into cells twice. A paint that
        covers the whole row (from column 0, with EL) replaces the row's earlier paints. Returns False, having
        done nothing, where the run needs `_draw_run` (it wraps, a mode or charset applies, or it has characters
        that do not take one or two cells)."""
        if "(" in run and "\x1b(" in run:  # the first test is the quicker one (a single character)
            if not self._stream.use_utf8:
                return False
            if _DESIGNATIONS[1] in run:  # line drawing: translated (if G0 is ASCII again after it)
                drawn = _line_drawn(run)
                if drawn is None:
                    return False
                run = drawn
            else:
                run = run.replace(_DESIGNATIONS[0], "")
        if self._held or not (
            self.mode.isdisjoint(_NO_BATCH_MODES) and self.charset == 0 and self.g0_charset is cs.LAT1_MAP
        ):
            return False
        return self._paint_run(run, erase)

    def _paint_run(self, run: str, erase: bool) -> bool:
        """`_paint` where what it checks first is known to hold (`_plain_paints`, and no designation in `run`: the
        lines of `_region_lines`, the runs `_scan` has taken designations out of)."""
        cursor = self._cur
        attrs = cursor.attrs
        node = self._chars
        if node.attrs is not attrs:
            node = self._chars = chars_for(attrs)
        found = node.runs.get(run)
        if found is None:
            if not (run.isascii() or cells_ok(run)):
                return False
            if seen_twice(run):
                found = node.runs[run]  # met before: worked out once and kept
        parts: list[str] | None = None
        moves: list[SgrMoves] | None = None
        lazy: tuple[str, CharCache] | None = None
        if found is not None:
            cells, after = found
            width = len(cells)
        else:
            # Met for the first time (as most runs are): the attributes it leaves and the cells it takes are
            # worked out now, its cells only when the row is written (if it has not been painted over by then).
            cells = None
            if run.isascii():
                # Its SGR sequences alone say how many cells it takes and the attributes it leaves; its cells come
                # from the run and the node it starts from (`RunCells`) if it is ever written.
                seqs = _SGR_SEQ.findall(run)
                width = len(run) - len("".join(seqs))
                if seqs and seqs[-1] in RESET_SEQS:
                    after = LOOKUP(node.moves, seqs[-1]).chars  # a repaint that ends with a reset: nothing to follow
                else:
                    after = reduce(LOOKUP, seqs, node.moves).chars
                lazy = (run, node)
            else:
                parts = SGR_SEQ_SPLIT.split(run)  # text, SGR sequence, text, ..., text
                # Every character takes one or two cells (`cells_ok`).
                width = sum(map(cast("Callable[[str], int]", text_width), parts[::2]))
                moves = list(accumulate(parts[1::2], LOOKUP, initial=node.moves))
                after = moves[-1].chars
        x = cursor.x
        end = x + width
        if end > self.columns:
            return False
        cursor.attrs = after.attrs
        self._chars = after
        cursor.x = end
        if not (width or erase):
            return True
        y = cursor.y
        self.dirty.add(y)
        self._add_paint(
            y,
            (x, cells, parts, moves, width, after.blank if erase else None)
            if lazy is None
            else (x, None, lazy[0], lazy[1], width, after.blank if erase else None),
            x == 0 and (erase or end == self.columns),
        )
        return True

    def _add_paint(self, y: int, op: Paint, whole: bool) -> None:
        """Defer `op` on row `y`; `whole`: it covers the whole row, so the row's earlier paints are dropped. So is the
        last paint at the same column if `op` covers it (a program repainting the same pieces of a row, as Textual
        does)."""
        entry = self._paints.get(y)
        x = op[0]
        if entry is None:
            self._paints[y] = (self._rows[y], [op], {x: 0})  # the row comes into being now, as it would in pyte
            return
        row, ops, at = entry
        if whole:
            ops[:] = [op]
            at.clear()
            at[x] = 0
            return
        i = at.get(x)
        if i is not None:
            old: Paint = ops[i]  # type: ignore[assignment]  # the last paint at a column is never None
            # `op` covers it: `op` erases to the end of the row, or the earlier paint does not and takes no more cells
            # (a batch row's width is not known before it is written: -1).
            if op[5] is not None or (old[5] is None and 0 <= old[4] <= op[4]):
                ops[i] = None
        if len(ops) >= _MAX_PAINTS:
            live: list[Paint | None] = list(filter(None, ops))
            if len(live) >= _MAX_PAINTS // 2:
                self._write_paints(row, live)
                live.clear()
            ops[:] = live
            at.clear()
            at.update((paint[0], j) for j, paint in enumerate(live) if paint is not None and paint[4] != _ERASE_CELLS)
        at[x] = len(ops)
        ops.append(op)

    def _paint_rows(self, rows: LineRows, y: int, start: int = 0, stop: int | None = None) -> None:
        """Batch rows (`start` to `stop`, all by default), each a whole line from column 0, as deferred paints
        (`_paint`), row i on row `y + i`: a full-screen program that paints its rows with CR LF (top) repaints them
        before anyone looks, and then they are never drawn; nor are rows that scroll away unseen (less paging)."""
        lines, nodes, erases, pieces = rows.lines, rows.nodes, rows.erases, rows.pieces
        add = self._add_paint
        for i in range(start, len(lines) if stop is None else stop):
            if pieces is not None and pieces[i] >= 0:
                # A row of a line wider than the screen: drawn now, and marked as going on to the next row but for
                # the line's last (only `_scroll_paint_rows` paints such rows, onto rows with nothing on them).
                self._draw_spec(self._rows, y + i, rows[i])
                continue
            line = lines[i]
            erase = erases is not None and erases[i]
            if erase:
                add(y + i, (0, None, line, nodes[i], -1, nodes[i + 1].blank), True)
            elif line and not (line[-1] == "m" and _SGR_ONLY.fullmatch(line)):  # a line that draws nothing makes no row
                add(y + i, (0, None, line, nodes[i], -1, None), False)

    def _paint_plain(self, lines: list[str], y: int, plain: CharCache, start: int = 0, stop: int | None = None) -> None:
        """`_paint_rows` for batch lines of text without SGR (each character one cell), all drawn with `plain`: vim
        and tmux draw a few such lines with CR LF between their cursor-placed rows."""
        add = self._add_paint
        for i in range(start, len(lines) if stop is None else stop):
            line = lines[i]
            if line:  # an empty line makes no row
                add(y + i, (0, None, line, plain, -1, None), False)

    def _move_paints(self, top: int, bottom: int, by: int) -> None:
        """Rows `top`..`bottom` are about to move `by` rows (a scroll of that region): their deferred paints go with
        them (a paint holds its row, so it is written to the same cells wherever the row is), and those of rows pushed
        out of the region are dropped with the rows, never written."""
        if top == 0 and by < 0 and bottom == self.lines - 1:  # the whole screen scrolled up (every paint is on it)
            self._paints = {y + by: entry for y, entry in self._paints.items() if y >= -by}
            return
        moved: dict[int, tuple[Row, list[Paint | None], dict[int, int]]] = {}
        for y, entry in self._paints.items():
            if top <= y <= bottom:
                y += by
                if not top <= y <= bottom:
                    continue
            moved[y] = entry
        self._paints = moved

    def _row(self, y: int) -> Row:
        """Row `y` with its own deferred paints written (and no other row's): for what reads or writes one row."""
        entry = self._paints.pop(y, None)
        if entry is not None:
            self._write_paints(entry[0], entry[1])
        return self._rows[y]

    def _flush_paints(self) -> None:
        """Write the deferred paints (`_paint`) to their rows, in order."""
        paints, self._paints = self._paints, {}
        for row, ops, _ in paints.values():
            self._write_paints(row, ops)

    def _write_paints(self, row: Row, ops: list[Paint | None]) -> None:
        """Write a row's deferred paints to it, in order (those painted over are None)."""
        columns = self.columns
        for x, cells, parts, moves, width, erase in filter(None, ops):
            if width < 0:  # a batch row: a line drawn from column 0; or a piece's cells on the row (-2)
                if width == -2:
                    row.update(parts)  # type: ignore[arg-type]
                    continue
                if width == _ERASE_CELLS:
                    if len(row) == columns and columns not in row:  # a cell in every column: the cached fill
                        row.update(fill(erase, 0, columns))  # type: ignore[arg-type]
                    else:
                        row.update(dict.fromkeys(row, erase))  # type: ignore[arg-type]
                    continue
                drawn = moves.rows[parts]  # type: ignore[union-attr,index]  # a line and its node (no cast: hot)
                row.update(drawn)
                width = len(drawn)
            elif width:
                if cells is not None:
                    if x == 0 and type(parts) is str:
                        # A run met before (`_feed_text`) from column 0: its cells as a row ({column: cell}, kept
                        # with the run: `RowCells`), which is written twice as fast as pairs.
                        row.update(moves.rows[parts])  # type: ignore[union-attr]
                    else:
                        row.update(enumerate(cells, x))
                elif type(parts) is list and type(moves) is list:
                    row.update(enumerate(chain.from_iterable(map(LOOKUP, map(TEXTS, moves), parts[::2])), x))
                else:  # an ASCII run and the node it starts from
                    row.update(enumerate(run_cells(moves, parts)[0], x))  # type: ignore[arg-type]
            if erase is not None and x + width < columns:
                row.update(fill(erase, x + width, columns))

    def _draw_run(self, run: str) -> None:
        """Draw printable text interleaved with SGR sequences (and designations of G0): what `draw` and
        `select_graphic_rendition` would do part by part, without a token dispatch per part. A run that fits on
        the row is written in one go, its cells and the attributes after it found with one lookup once the run
        has been seen with these attributes; parts that wrap go to `draw`."""
        if "\x1b" not in run:
            self.draw(run)
            return
        if "\x1b(" in run:
            # ESC ( B or ESC ( 0 designates G0 (ASCII, DEC line drawing): the parts between drawn in turn.
            for i, part in enumerate(_DESIGNATION_SPLIT.split(run)):
                if i & 1:
                    self.define_charset(part, mode="(")
                elif part:
                    self._draw_run(part)
            return
        g0 = self.g0_charset
        if g0 is not cs.LAT1_MAP and self.charset == 0:
            # DEC line drawing in G0: its text translated as pyte's `draw` would, then drawn as any run (the fast
            # paths and their caches hold for it), G0 put back after.
            self.g0_charset = cs.LAT1_MAP
            try:
                self._draw_run(_translated(run, g0))
            finally:
                self.g0_charset = g0
            return
        mode = self.mode
        if not (mode.isdisjoint(_NO_BATCH_MODES) and self.charset == 0 and self.g0_charset is cs.LAT1_MAP):
            for i, part in enumerate(SGR_SEQ_SPLIT.split(run)):
                if i & 1:
                    self.select_graphic_rendition(*parse_params(part[2:-1]))
                elif part:
                    self.draw(part)
            return
        cursor = self._cur
        attrs = cursor.attrs
        node = self._chars
        if node.attrs is not attrs:
            node = self._chars = chars_for(attrs)
        found = node.runs.get(run)
        if found is None and (run.isascii() or cells_ok(run)):
            if not seen_twice(run):
                # Met for the first time (as most runs are): written to the row straight from the cells of its
                # parts, found in C, with no tuple of its own.
                parts = SGR_SEQ_SPLIT.split(run)  # text, SGR sequence, text, ..., text
                moves = list(accumulate(parts[1::2], LOOKUP, initial=node.moves))
                cells = list(map(LOOKUP, map(TEXTS, moves), parts[::2]))
                x = cursor.x
                end = x + sum(map(len, cells))
                if end <= self.columns:
                    if end > x:
                        self._row(cursor.y).update(enumerate(chain.from_iterable(cells), x))
                        self.dirty.add(cursor.y)
                    cursor.attrs = moves[-1].chars.attrs
                    cursor.x = end
                    return
            found = node.runs[run]
        if found is not None:
            cells_t, after = found
            x = cursor.x
            end = x + len(cells_t)
            if end <= self.columns:
                if cells_t:
                    self._row(cursor.y).update(enumerate(cells_t, x))
                    self.dirty.add(cursor.y)
                cursor.attrs = after.attrs
                cursor.x = end
                return
        # Wraps, or has characters that do not take one or two cells: part by part, the text that fits in
        # one go, the rest through `draw`.
        chars = node
        get = chars.__getitem__
        x = start = cursor.x
        columns = self.columns
        # Cells are collected and written to the row once: one dict update per part costs a third more.
        cells_: list[Char] = []
        parts = SGR_SEQ_SPLIT.split(run)  # text, SGR sequence, text, ..., text
        for k in range(0, len(parts), 2):
            if k:
                chars = chars.moves[parts[k - 1]].chars
                get = chars.__getitem__
            part = parts[k]
            if not part:
                continue
            end = x + len(part)
            if end <= columns and (part.isascii() or narrow_text(part)):
                cells_ += map(get, part)
                x = end
            else:
                if cells_:
                    self._row(cursor.y).update(enumerate(cells_, start))
                    cells_ = []
                cursor.attrs = chars.attrs
                cursor.x = x
                self.draw(part)  # autowrap (possibly scrolling), wide or zero-width characters
                cursor = self._cur
                x = start = cursor.x
        if cells_:
            self._row(cursor.y).update(enumerate(cells_, start))
        cursor.attrs = chars.attrs
        cursor.x = x
        self.dirty.add(cursor.y)

    def _feed_pyte(self, text: str) -> None:
        """All of `text` through pyte's parser."""
        pos = 0
        while pos < len(text):
            pos = self._feed_slow(text, pos)

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
            and self._cur.x == 0
        )

    def _try_batch(self, text: str, pos: int, check: bool = False, cleared: bool = False) -> int:
        """Apply the whole lines starting at `pos` in one go, if they are simple; returns the new pos. In a flood
        (lines held from the reads before) of ASCII whose lines had no EL or ESC ( B so far (`_plain_flood`), the
        rest of the read up to its last CR LF is taken for lines and checked only once its SGR sequences are out
        (`_line_ends_only`), which costs less than the regex; if that check fails (or `check`), the regex finds
        where the simple lines end, and so it does for the reads after, until a flood (a screenful of lines or
        more) is simple again. `cleared`: the row the first line lands on was erased whole (`_after_batch`), which
        is the same as an EL after that line if the EL would erase with the same background."""
        checked = check or not (self._plain_flood and self._held and text.isascii())
        if checked:
            if not self._batch_allowed():  # first: inside a scroll region (a tmux pane) the match would be for nothing
                return pos if cleared else self._region_lines(text, pos)
            m = (_BATCH_ASCII if text.isascii() else _BATCH).match(text, pos)
            if m is None:
                return pos
            end = m.end()
        else:
            end = text.rfind("\r\n", pos) + 2
            if end < pos + 2 or not self._batch_allowed():
                return pos
            y = self._cur.y + len(self._held)
            if y < self.lines and y + text.count("\r\n", pos, end) < self.lines:
                return self._try_batch(text, pos, check=True)  # a few lines, that land without scrolling (below)
        segment = text[pos : end - 2]
        if checked and "\x08" in segment:
            segment = segment.replace(" \x08", "")  # (each before a character drawn over the space: the regex)
        designated = checked and "\x1b(" in segment  # unchecked, ESC ( B is left in what the lines show
        if designated and (not self._stream.use_utf8 or _DESIGNATIONS[1] in segment):
            return pos  # a charset switched inside the lines: not a batch
        lines = segment.split("\r\n")
        columns = self.columns
        if "\x1b" not in segment and not cleared and (segment.isascii() or narrow_text(segment)):
            if not (checked or _line_ends_only(segment, len(lines) - 1)):
                return self._check_batch(text, pos)
            self._plain_flood = self._plain_flood or len(self._held) + len(lines) >= self.lines
            if max(map(len, lines)) > columns:
                # Autowrap: a long line is the same as its screen-wide pieces each ending in CR LF, all but the last
                # marked as going on on the next row (`WrapText`).
                wrapped: list[str] = []
                for line in lines:
                    if len(line) <= columns:
                        wrapped.append(line)
                    else:
                        cut = (len(line) - 1) // columns * columns  # where its last piece starts
                        wrapped.extend(WrapText(line[i : i + columns]) for i in range(0, cut, columns))
                        wrapped.append(line[cut:])
                lines = wrapped
                self._wraps = not self._alt_active
            self._hold(lines, self._node())
            return end
        # Lines with SGR (and EL at their ends). In a batch that lands on the screen without scrolling (a full-screen
        # program repainting its rows, as top does) lines met before (told by the middle and last lines, as a first
        # line is often a clock) are each one lookup; the first time, a line is remembered only. A flood's lines,
        # which scroll, are not looked at one by one.
        if not cleared and self._cur.y + len(self._held) + len(lines) < self.lines:  # the rows held land before these
            seen = LINES_SEEN
            if lines[-1] in seen and lines[len(lines) // 2] in seen:
                if self._known_batch(lines):
                    return end
            else:
                if len(seen) >= _LINES_SEEN_LIMIT:
                    seen.clear()
                seen.update(lines)
        if designated:  # ESC ( B with G0 ASCII already changes nothing: out (`_known_batch` takes the lines with it)
            segment = segment.replace("\x1b(B", "")
            lines = segment.split("\r\n")
        # Otherwise what each line starts and ends with, how many cells it takes
        # and whether it fits are worked out for all lines at once, mostly in C: the SGR sequences of the whole
        # batch are followed in one pass, and each line's attributes are read off at its first sequence.
        ascii_ = segment.isascii()
        # Most tools end every line they colour with a reset (git, ls, grep): then nothing needs following (below).
        # Otherwise, where some lines end reset, each line's attributes are followed from its last reset only (a line
        # that ends reset needs nothing followed); where none does, one split of the whole batch gives both what it
        # shows and every SGR sequence, in order.
        last = list(map(str.rfind, lines, repeat("\x1b[")))  # where each line's last SGR sequence (or EL) starts
        ended = list(map(str.startswith, lines, repeat(_RESETS), last))  # that sequence is a reset
        reset_ended = len(lines) - last.count(-1) == sum(ended)
        resets = not reset_ended and True in ended
        # ASCII lines the regex checked, none of more characters than the row (a pager's): each fits on a row whatever
        # its SGR sequences, which need not be taken out to measure it.
        shown: str | None = None
        if reset_ended or resets:
            if not (checked and ascii_ and max(map(len, lines)) <= columns):
                shown = _SGR_SEQ.sub("", segment)
        else:
            parts = SGR_SEQ_SPLIT.split(segment)  # text, SGR sequence, text, ..., text
            shown = "".join(parts[::2])
        # What is left besides text is EL, which the batch allows only at the end of a line.
        erased = ("\x1b[K" in segment or "\x1b[0K" in segment) if shown is None else "\x1b" in shown
        if not checked:
            if not _line_ends_only(cast("str", shown), len(lines) - 1):
                return self._check_batch(text, pos)  # EL, ESC ( B, other sequences or controls
        elif not (designated or erased or cleared):  # (a pager: its pages have prompts between them)
            self._plain_flood = self._plain_flood or len(self._held) + len(lines) >= self.lines
        else:
            self._plain_flood = False
        erases: list[bool] | None = None
        if erased:
            erases = list(map(str.endswith, lines, repeat(_EL_TAILS)))
            # The ELs dropped from the whole segment at once (each ends its line), the last line's by hand.
            lines = segment.replace("\x1b[K\r\n", "\r\n").replace("\x1b[0K\r\n", "\r\n").split("\r\n")
            if erases[-1]:
                lines[-1] = lines[-1][: lines[-1].rindex("\x1b[")]
            if shown is not None:
                shown = shown.replace("\x1b[K", "").replace("\x1b[0K", "")
        # A line starts with the attributes the line before left.
        nodes: list[CharCache]
        if reset_ended:
            # Each line that has SGR leaves the default attributes; lines without carry those before them: the lines
            # up to the first coloured one start with the batch's attributes, the rest with the default ones.
            first = next(compress(range(len(lines)), map(ge, last, repeat(0))), len(lines))
            nodes = [self._node()] * (first + 1) + [chars_for(DEFAULT_CHAR)] * (len(lines) - first)
        else:
            # A reset forgets every attribute before it, so only the SGR sequences from a line's last reset on are
            # followed (most lines of a flood are never drawn, and the attributes inside them are worked out only if
            # they are); each line's count of them says where its attributes are read off the moves of the batch.
            if resets:
                # A line that ends reset or has no SGR needs no looking at (the lines found with EL, changed since,
                # are neither).
                seqs = [
                    _RESET_ONLY
                    if end
                    else _NO_SEQS
                    if at < 0
                    else _SGR_SEQ.findall(line, max(line.rfind("\x1b[0m"), 0))
                    for line, end, at in zip(lines, ended, last, strict=True)
                ]
                moves = list(accumulate(chain.from_iterable(seqs), LOOKUP, initial=self._node().moves))
                starts = accumulate(map(len, seqs), initial=0)
            else:  # every ESC left in a line starts an SGR sequence: counted, they say where each line starts
                moves = list(accumulate(parts[1::2], LOOKUP, initial=self._node().moves))
                starts = accumulate(map(str.count, lines, repeat("\x1b")), initial=0)
            nodes = list(map(_CHARS, map(moves.__getitem__, starts)))
        if shown is None:  # every line fits (above)
            if cleared:
                erases = _erased_first(erases, nodes)
                if erases is None:
                    return pos
            self._hold(LineRows(lines, nodes, erases), None)
            self._cur.attrs = nodes[-1].attrs
            return end
        texts = shown.split("\r\n")  # what each line shows
        visible = list(map(len, texts))
        widths: list[int | None] = list(visible)
        if not ascii_:
            for i in [i for i, text in enumerate(texts) if not text.isascii()]:
                # A line drawn before from the same attributes takes as many cells as its cells (a spinner and
                # bars repainted); others are measured character by character.
                found = nodes[i].runs.get(lines[i])
                widths[i] = text_width(texts[i]) if found is None else len(found[0])
        if cleared:
            # The first line's row was erased: an EL after the line if it fits on it; if it is wider, its first piece
            # draws over all of that row (a character per cell), and the erase did nothing.
            width = widths[0]
            if width is None or (width > columns and width != visible[0]):
                return pos
            if width <= columns:
                erases = _erased_first(erases, nodes)
                if erases is None:
                    return pos
        if None not in widths:
            if max(cast("list[int]", widths)) <= columns:
                # The common case: every line fits on a row.
                self._hold(LineRows(lines, nodes, erases), None)
            else:
                self._hold(self._wrapped_rows(lines, nodes, erases, cast("list[int]", widths), visible), None)
            self._cur.attrs = nodes[-1].attrs
            return end
        rows: list[Spec] = []
        for i, line in enumerate(lines):
            width = widths[i]
            node, after = nodes[i], nodes[i + 1]
            erase = erases[i] if erases is not None else False
            if width is None:
                # Zero-width or unprintable characters: the general path.
                if rows:
                    self._hold(rows, None)
                    rows = []
                self._release()
                self._cur.attrs = node.attrs
                self._feed_text(line + ("\x1b[K\r\n" if erase else "\r\n"), batch=False)
            elif width <= columns:
                rows.append((line, node, -1, erase, after))
            else:
                count = self._piece_count(line, node, width, visible[i])
                rows.extend([(line, node, k, erase and k == count - 1, after) for k in range(count)])
        if rows:
            self._hold(rows, None)
        self._cur.attrs = nodes[-1].attrs
        return end

    def _region_lines(self, text: str, pos: int) -> int:
        """Whole lines from `pos` on in a scroll region that is not the whole screen (a tmux pane, the output above a
        progress line that apt keeps at the screen's bottom), each of them at most a row of narrow characters: each
        line is painted (`_paint_run`) on the row it lands on, the rows down to the region's bottom first (tmux repaints
        a pane from its top), then each on the row the region's scrolls leave it on, and the region is scrolled once
        for as many lines as it is high, not once a line; below the main screen's top row (whose lines go to the
        scrollback), lines that would scroll out of the region are not painted, and it is scrolled once. Returns the
        new pos (`pos` if the first line is not such a line, or the cursor is below the region)."""
        margins = self.margins
        cursor = self._cur
        if (
            margins is None
            or cursor.y > margins.bottom
            or cursor.x != 0
            or mo.DECAWM not in self.mode
            or not self._plain_paints()
        ):
            return pos
        m = (_BATCH_ASCII if text.isascii() else _BATCH).match(text, pos)
        if m is None:
            return pos
        end = m.end()
        segment = text[pos : end - 2]
        lines = segment.split("\r\n")
        columns = self.columns
        if "\x1b(" in segment or not (segment.isascii() or narrow_text(segment)) or max(map(len, lines)) > columns:
            # Only the lines before the first that is not such a line (a line of more characters than the row may
            # still fit, and goes on as it would): the rest is looked at again after it, which would cost a match of
            # the whole rest per line if they were all refused for it.
            k = next((i for i, line in enumerate(lines) if not self._region_line_fits(line)), len(lines))
            if k == 0:
                return pos
            lines = lines[:k]
            end = pos + sum(map(len, lines)) + 2 * k
        top, bottom = margins.top, margins.bottom
        height = bottom - top + 1
        y = cursor.y
        count = len(lines)
        down = min(bottom - y, count)  # the lines that land above the bottom row: no scroll
        if down < count and (top > 0 or self._alt_active):
            # What scrolls out of such a region is gone (only the main screen's top row goes to the scrollback): line i
            # ends on row bottom - (count - i), and those that end above the region are never painted, only their SGR
            # sequences followed for the attributes the next line starts with. The region is scrolled once.
            gone = count - height + 1
            if gone > 0:
                self._follow_sgr("".join(lines[:gone]))
            for i in range(max(gone, 0), down + 1):
                self._region_line(lines[i], y + i)  # (line `down` over what the bottom row shows)
            self._scroll_up(top, bottom, min(count - down, height))
            for i in range(max(gone, down + 1), count):
                self._region_line(lines[i], bottom - count + i)
            cursor.x, cursor.y = 0, bottom
            return end
        for i in range(down):
            self._region_line(lines[i], y + i)
        # Line j of a chunk of k is painted on the bottom row and then scrolled k - j rows up: the first one over
        # what the bottom row shows, the others on rows the scroll made.
        for at in range(down, len(lines), height):
            chunk = lines[at : at + height]
            count = len(chunk)
            self._region_line(chunk[0], bottom)
            self._scroll_up(top, bottom, count)
            for j in range(1, count):
                self._region_line(chunk[j], bottom - count + j)
        cursor.x, cursor.y = 0, y + down if down == len(lines) else bottom
        return end

    def _region_line_fits(self, line: str) -> bool:
        """Whether `line` may be one of `_region_lines`: narrow characters that fit on a row, no designation."""
        return len(line) <= self.columns and "\x1b(" not in line and (line.isascii() or narrow_text(line))

    def _follow_sgr(self, text: str) -> None:
        """The cursor takes the attributes that `text`'s SGR sequences (its only sequences, but for EL) leave,
        followed from the last reset in it."""
        reset = max(text.rfind(_RESETS[0]), text.rfind(_RESETS[1]))
        if reset < 0 and "\x1b[" not in text:
            return
        node = reduce(LOOKUP, _SGR_SEQ.findall(text, max(reset, 0)), self._node().moves).chars
        self._cur.attrs = node.attrs
        self._chars = node

    def _region_line(self, line: str, y: int) -> None:
        """A line of `_region_lines` (text and SGR, perhaps an EL at its end) painted from column 0 of row `y`."""
        cursor = self._cur
        cursor.x, cursor.y = 0, y
        erase = line.endswith(_EL_TAILS)
        if erase:
            line = line[: line.rindex("\x1b[")]
        if not self._paint_run(line, erase):
            self._draw_run(line)
            if erase:
                self.erase_in_line(0)

    def _check_batch(self, text: str, pos: int) -> int:
        """`_try_batch` with the regex, for lines taken unchecked that a check found not simple."""
        self._plain_flood = False
        return self._try_batch(text, pos, check=True)

    def _known_batch(self, lines: list[str]) -> bool:
        """`_try_batch` for lines with SGR (and perhaps ESC ( B) most of which were met before: each line worked out
        from the attributes it starts with is kept in that node (`CharCache.lines`) the second time it is met, so a
        line repainted costs one lookup. False, having changed nothing, if a line needs the general path."""
        node = self._node()
        out: list[str] = []
        nodes = [node]
        erases: list[bool] = []
        widths: list[int] = []
        visible: list[int] = []
        for line in lines:
            known = node.lines.get(line) or _line_met(line, node)
            if known is None:
                return False
            body, erase, node, width, shown = known
            out.append(body)
            nodes.append(node)
            erases.append(erase)
            widths.append(width)
            visible.append(shown)
        erased = erases if True in erases else None
        if max(widths) <= self.columns:
            self._hold(LineRows(out, nodes, erased), None)
        else:
            self._hold(self._wrapped_rows(out, nodes, erased, widths, visible), None)
        self._cur.attrs = node.attrs
        return True

    def _piece_count(self, line: str, node: CharCache, width: int, visible: int) -> int:
        """How many rows autowrap cuts a line wider than the screen into."""
        if width == visible:  # one cell per character: a row per screen width
            return -(-width // self.columns)
        return len(wrap_cells(node.runs[line][0], self.columns))

    def _wrapped_rows(
        self, lines: list[str], nodes: list[CharCache], erases: list[bool] | None, widths: list[int], visible: list[int]
    ) -> LineRows:
        """`LineRows` for lines some of which are wider than the screen: each of those is a row per piece, all
        with the line and the attributes it starts with, the EL (if any) on the last."""
        columns = self.columns
        if widths == visible:  # one cell per character: a row per screen width (one for an empty line)
            counts = list(map(max, map(floordiv, map(add, widths, repeat(columns - 1)), repeat(columns)), repeat(1)))
        else:
            counts = [1] * len(lines)
            for i in [i for i, width in enumerate(widths) if width > columns]:
                counts[i] = self._piece_count(lines[i], nodes[i], widths[i], visible[i])
        out_nodes = list(chain.from_iterable(map(repeat, nodes, counts)))
        out_nodes.append(nodes[-1])  # the attributes after the last line
        pieces = list(chain.from_iterable(map(LOOKUP, repeat(_PIECES), counts)))
        out_erases = None
        if erases is not None:
            out_erases = list(chain.from_iterable(map(repeat, erases, counts)))
            ends = list(accumulate(counts))
            for i in [i for i, count in enumerate(counts) if count > 1]:
                out_erases[ends[i] - counts[i] : ends[i] - 1] = repeat(False, counts[i] - 1)
        return LineRows(list(chain.from_iterable(map(repeat, lines, counts))), out_nodes, out_erases, pieces)

    def _hold(self, rows: Held, plain: CharCache | None) -> None:
        """Keep the rows of a line batch instead of applying them (`_apply_rows`) now: if the next thing to
        happen is another batch (the next read of a flood), the two are applied as one, and lines that scroll
        away in between are never drawn. Held rows are applied before anything else changes the screen and
        before anyone reads the cells, the cursor or the scrollback (`buffer`, `cursor` and `scrollback` are
        properties); `take_dirty` and versions count them without applying them."""
        held = self._held
        if held and (plain is not self._held_plain or type(held) is not type(rows) or len(held) >= self._hold_limit):
            self._release()
            held = self._held
        if not held:
            self._held = rows
            self._held_plain = plain
        elif isinstance(held, LineRows):
            held.extend(cast("LineRows", rows))
        else:
            held += rows  # type: ignore[operator]  # both lists of the same kind
        self._held_counted = False

    @property
    def _hold_limit(self) -> int:
        # Past this many rows, held ones are applied: memory stays bounded, and a release never has more rows
        # scrolling away than the scrollback keeps (every one of them reaches it, as it would one by one).
        return max(self._sb.maxlen, self.lines)

    def _release(self) -> None:
        """Apply the held batch rows, then draw the text held after them."""
        rows, plain = self._held, self._held_plain
        if not rows:
            return
        if rows is _PIECE_KEPT:
            # Looked at between two reads: the piece is parsed as far as it came, and remembered as cut
            # (`_cut_piece`), as a read's last piece not kept is, so that the rest of it may still be applied whole.
            self._held = []
            tail, self._tail = self._tail, ""
            # Its lines in batches, as when it was not kept (top's last piece is its screenful): rows a batch holds,
            # and the start of a line it keeps, are applied at once, as whoever looks needs them.
            self._scan_last_piece(tail, True)
            if self._held:
                self._release()
            return
        self._held = []
        self._held_plain = None
        counted, self._held_counted = self._held_counted, False
        reported = set(self.dirty) if counted else None
        self._apply_rows(rows, plain)
        if self._tail:
            tail, self._tail = self._tail, ""
            self._feed_text(tail, batch=False)
        if reported is not None:
            # Nothing else changed since they were counted: the rows they changed, and the cursor they moved, have
            # been reported (with the version they bumped).
            self.dirty.clear()
            self.dirty.update(reported)
            self._seen = self._cursor_state()

    def _after_batch(self, text: str, pos: int) -> int:
        """With batch rows held and `text` parsed up to `pos`: keep them held if the rest of the feed is
        nothing (the feed ended with a line) or only the start of the next line (text and SGR, kept unparsed
        for the next feed, which usually goes on with more whole lines); otherwise apply them now. Returns
        where parsing goes on. A pager's prompt between two pages, drawn on the row after the lines and erased at
        once (`_ERASED_ROW`), does not end the batch: the next page's lines go on with it, its first line erasing
        its row (see `_erased_row_joins`), so that lines paged past unseen are never drawn (less, man). Nor are they
        if the program quits right after them (`_QUITS`)."""
        n = len(text)
        while pos < n:
            if _TAIL.fullmatch(text, pos) is not None:
                self._tail = text[pos:]
                return n
            m = _ERASED_ROW.match(text, pos)
            if self._alt_savepoint is not None and _QUITS.match(text, pos if m is None else m.end()) is not None:
                # The program quits (a pager's last page, its prompt erased): the alternate screen is left with the
                # cursor 1049 saved, and what the held rows would draw and where they leave the cursor is dropped
                # with it, never drawn.
                self._held = []
                self._held_plain = None
                self._held_counted = False
                return pos if m is None else m.end()
            if m is None or not self._erased_row_joins(m.group(1)):
                break
            if _TAIL.fullmatch(text, m.end()) is not None:  # the read ended in the next page's first line
                self._tail = text[pos:]
                return n
            end = self._try_batch(text, m.end(), check=True, cleared=True)
            if end == m.end():
                break
            pos = end
        else:
            return n
        self._release()
        return pos

    def _erased_row_joins(self, run: str | None) -> bool:
        """Whether a row drawn with `run` (if any) from column 0 after the held batch rows, then erased whole by CR
        EL, is the same as an EL after the next batch line, with the attributes as they were: the run fits on the
        row (it does not wrap, nor scroll) and leaves the attributes it found (less's status line in reverse video
        turns it off). The erase from column 0 ends a wrap of its row and of the row above (`_unwrap`), which a batch
        line's EL does not: so neither may be marked, as they are not if the held rows scrolled the screen at least
        twice (both are new rows then, and the last held row is its line's last, which no wrap goes on from: less -X
        paging git's output in the main screen), or if no row of the main screen was ever marked. `_try_batch`
        (`cleared`) then checks that an EL after its first line erases with the same background."""
        if self._wraps and self._cur.y + len(self._held) - self.lines < 1:
            return False
        if run is None:
            return True
        node = self._node()
        known = _batch_line(run, node)  # (worked out as a batch line: the attributes after it, its width)
        return known is not None and known[2].attrs == node.attrs and known[3] <= self.columns

    def _draw_spec(self, buffer: dict[int, Row], y: int, spec: Spec) -> None:
        """Draw a batch row on row `y` from column 0, then its EL. Like pyte, a row is not created for a line
        that draws nothing (no text, no EL)."""
        line, start, k, erase, after = spec
        cells: Sequence[Char] | dict[int, Char]
        if k < 0:
            cells = start.rows[line]  # {column: cell}: written faster than pairs
        else:
            # The pieces of a line are drawn one after the other: the line is cut into rows once for all of them
            # (a line of many reads can be thousands of cells).
            memo = self._pieces
            if memo is None or memo[0] is not line or memo[1] is not start:
                memo = self._pieces = (line, start, wrap_cells(start.runs[line][0], self.columns))
            cells = memo[2][k]
        if cells:
            row = buffer[y]
            row.update(cells if isinstance(cells, dict) else enumerate(cells))
            if 0 <= k < len(self._pieces[2]) - 1 and not self._alt_active:  # type: ignore[index]  # set above
                mark_wrapped(row, True)  # autowrap goes on from this piece of the line to the next (`index`)
                self._wraps = True
        elif not erase:
            return
        else:
            row = buffer[y]
        if erase and len(cells) < self.columns:
            row.update(fill(after.blank, len(cells), self.columns))

    def _apply_rows(self, rows: Held, plain: CharCache | None) -> None:
        """The effect of drawing each of `rows` from column 0 and then CR LF, with the cursor at column 0 and
        the scroll region the whole screen. Rows are text without SGR all drawn with `plain`, or (`plain`
        None) batch rows (`Spec`). Rows are numbered virtually: existing rows 0..bottom, then row y+i for
        row i; the screen ends up showing virtual rows s..s+bottom, where s is the number of scrolls, and
        virtual rows below s leave through the top. Rows that leave inside the batch are never drawn."""
        n = len(rows)
        cursor = self._cur
        y = cursor.y
        bottom = self.lines - 1
        if isinstance(rows, LineRows) and rows.pieces is not None:
            # Lines wider than the row (git's pager shows a few on most pages): rows that scroll the main screen.
            if y + n > bottom and not self._alt_active and self._blank_from(y, bottom):
                self._scroll_paint_rows(rows, plain, y, n, bottom)
                return
        elif (plain is not None or isinstance(rows, LineRows)) and (
            y + n <= bottom or self._alt_active or self._blank_from(y, bottom)
        ):
            if y + n > bottom:
                self._scroll_paint_rows(rows, plain, y, n, bottom)
                return
            if plain is None:
                self._paint_rows(cast("LineRows", rows), y)
            else:
                self._paint_plain(cast("list[str]", rows), y, plain)
                if self._wraps:
                    for i in [i for i, line in enumerate(cast("list[str]", rows)) if type(line) is WrapText]:
                        mark_wrapped(self._rows[y + i], True)
            cursor.y = y + n
            self.dirty.update(range(y, y + n))
            return
        buffer = self._buf

        if plain is not None:
            get = plain.__getitem__
            texts = plain.texts

            def draw(rows_: dict[int, Row], at: int, i: int) -> None:
                line: str = rows[i]  # type: ignore[assignment]  # rows of text (no cast: called per row)
                if line:  # pyte creates no row for an empty line
                    row = rows_[at]
                    row.update(enumerate(texts[line] if len(line) <= 32 else map(get, line)))
                    if type(line) is WrapText:
                        mark_wrapped(row, True)
        else:
            specs = cast("Sequence[Spec]", rows)

            def draw(rows_: dict[int, Row], at: int, i: int) -> None:
                spec = specs[i]
                if spec[0] or spec[3]:  # an empty line without EL draws nothing
                    self._draw_spec(rows_, at, spec)

        # Lines that land on existing rows are drawn over what is there (pyte overwrites only those cells).
        for i in range(min(n, bottom - y + 1)):
            draw(buffer, y + i, i)
        scrolls = max(0, y + n - bottom)
        if scrolls == 0:
            cursor.y = y + n
            self.dirty.update(range(y, y + n))
            self._pieces = None
            return
        if not self._alt_active:
            scrollback = self._sb
            for v in range(min(scrolls, bottom + 1)):
                scrollback.append_row(buffer.get(v))
            if scrolls > bottom + 1:
                self._lines_leave(rows, plain, bottom + 1 - y, scrolls - y)
        moved: dict[int, Row] = {}
        for r in range(bottom + 1):
            v = r + scrolls
            if v <= bottom:
                row = buffer.get(v)
                if row is not None:
                    moved[r] = row
            elif v - y < n:
                moved[r] = new_row(self.default_char)
                draw(moved, r, v - y)
        buffer.clear()
        buffer.update(moved)
        self._create_rows(bottom)
        cursor.y = bottom
        self.dirty.update(range(self.lines))
        self._pieces = None

    def _blank_from(self, y: int, bottom: int) -> bool:
        """Whether rows `y`..`bottom` show nothing and nothing is painted on them (nor marked as wrapped): batch lines
        drawn onto them are then the same as lines drawn onto new rows."""
        rows, paints = self._rows, self._paints
        for v in range(y, bottom + 1):
            row = rows.get(v)
            if v in paints or (row is not None and (row or getattr(row, "wrapped", False))):
                return False
        return True

    def _scroll_paint_rows(self, rows: Held, plain: CharCache | None, y: int, n: int, bottom: int) -> None:
        """`_apply_rows` for whole lines (`LineRows` without pieces, or plain text) that scroll the screen: what the
        rows show is left as deferred paints, which move with their rows (`_move_paints`), so rows that scroll away
        before anyone looks (less and man paging) are never drawn. In the main screen (where the rows the lines land
        on show nothing, `_blank_from`: the cursor on the bottom row after the page before), the rows that leave
        through the top are kept in the scrollback, those painted by a batch line as the line (`_keep_rows`), and the
        lines that leave as lines (`_scroll_away_lines`): less -X paging (git's pager), a flood looked at between
        reads."""

        def paint(at: int, start: int, stop: int) -> None:
            if plain is None:
                self._paint_rows(cast("LineRows", rows), at, start, stop)
            else:
                self._paint_plain(cast("list[str]", rows), at, plain, start, stop)

        scrolls = y + n - bottom
        if not self._alt_active:
            # Rows above the first line leave first, then the lines that land on the blank rows and leave (and those
            # that scroll away inside the batch, never on a row), behind as many as the scrollback keeps.
            self._keep_rows(min(y, scrolls))
            if scrolls > y:
                self._lines_leave(rows, plain, 0, scrolls - y)
        # Lines that land on existing rows, over what is there, but for those the scroll takes away.
        paint(y, max(scrolls - y, 0), min(n, bottom - y + 1))
        if self._paints:
            self._move_paints(0, bottom, -scrolls)
        buffer = self._rows
        moved = {v - scrolls: row for v, row in buffer.items() if scrolls <= v <= bottom}
        # The rows the batch's last lines come onto (all but the bottom one, where the cursor ends) are new.
        first = max(0, bottom + 1 - scrolls)
        make = row_kind(self.default_char)
        for r in range(first, bottom):
            moved[r] = make()
        buffer.clear()
        buffer.update(moved)
        paint(y - scrolls, first + scrolls - y, n)
        if self._wraps and plain is not None and not self._alt_active:
            for i in range(max(scrolls - y, 0), n):
                if type(rows[i]) is WrapText:
                    mark_wrapped(buffer[y - scrolls + i], True)
        self._create_rows(bottom)
        self._cur.y = bottom
        self.dirty.update(range(self.lines))
        self._pieces = None

    def _lines_leave(self, rows: Held, plain: CharCache | None, first: int, hi: int) -> None:
        """Batch rows `first`..`hi` - 1 leave through the top of the main screen without ever being on it: kept in the
        scrollback in their compact form, but for those behind as many as it keeps, which are only counted."""
        scrollback = self._sb
        lo = max(first, hi - scrollback.maxlen)
        scrollback.skip(lo - first)
        if lo >= hi:  # a scrollback that keeps no line
            return
        if isinstance(rows, LineRows):
            self._scroll_away_lines(rows, lo, hi)
        elif plain is not None:
            scrollback.extend_plain(cast("list[str]", rows[lo:hi]), plain.attrs)
        else:
            self._scroll_away(cast("list[Spec]", rows[lo:hi]))

    def _scroll_away_lines(self, rows: LineRows, lo: int, hi: int) -> None:
        """`_scroll_away` for rows `lo`..`hi - 1` of `LineRows`, column by column: only rows that must be kept as
        cells take a step each."""
        texts = rows.lines[lo:hi]
        lines: list[str] | list[str | Piece] = texts
        starts = list(map(_ATTRS, rows.nodes[lo:hi]))
        erases, pieces = rows.erases, rows.pieces
        as_cells: list[int] = []
        if erases is not None and True in (erased := erases[lo:hi]):
            after = rows.nodes[lo + 1 : hi + 1]
            as_cells = [j for j in compress(range(len(erased)), erased) if after[j].blank is not DEFAULT_CHAR]
        if pieces is not None and max(ks := pieces[lo:hi]) >= 0:
            columns = self.columns
            cut = list(compress(range(len(ks)), map(ge, ks, repeat(0))))  # the rows that are pieces (found in C)
            if not all(map(str.isascii, texts)):
                # Pieces of a line with wide characters are kept as cells; a line is looked at once for all its
                # pieces, and only if it is not ASCII.
                wide = {
                    line for line in set(filterfalse(str.isascii, map(texts.__getitem__, cut))) if not narrow_text(line)
                }
                if wide:
                    as_cells += [j for j in cut if texts[j] in wide]
            cut_lines: list[str | Piece] = list(texts)
            for j in cut:
                cut_lines[j] = (texts[j], ks[j], columns)
            lines = cut_lines
        scrollback = self._sb
        done = 0
        for j in sorted(set(as_cells)):
            if j > done:
                scrollback.extend_drawn(lines[done:j], starts[done:j])
            row = new_row(DEFAULT_CHAR)
            self._draw_spec({0: row}, 0, rows[lo + j])
            scrollback.append_row(row)
            done = j + 1
        if done < len(lines):
            scrollback.extend_drawn(lines[done:], starts[done:])

    def _scroll_away(self, specs: Sequence[Spec]) -> None:
        """Keep batch rows that scrolled away before they were drawn: in their compact form (the line, or the
        piece of a wrapped line, and the attributes it starts with), unless an EL drew a visible background on
        them or they are pieces of a line with wide characters, which only cells can keep."""
        scrollback = self._sb
        columns = self.columns
        if not any(map(_SPEC_ERASE, specs)) and all(narrow_text(s[0]) for s in specs if s[2] >= 0):
            # No EL: the lines as they are (or the pieces of wrapped ones), with the attributes each starts with.
            attrs = list(map(_ATTRS, map(_SPEC_START, specs)))
            if max(map(_SPEC_PIECE, specs)) < 0:
                scrollback.extend_drawn(list(map(_SPEC_LINE, specs)), attrs)
            else:
                scrollback.extend_drawn([s[0] if s[2] < 0 else (s[0], s[2], columns) for s in specs], attrs)
            return
        raws: list[str | Piece] = []
        starts: list[Char] = []
        for spec in specs:
            line, start, k, erase, after = spec
            if (erase and after.blank is not DEFAULT_CHAR) or (k >= 0 and not narrow_text(line)):
                if raws:
                    scrollback.extend_drawn(raws, starts)
                    raws, starts = [], []
                row = new_row(DEFAULT_CHAR)
                self._draw_spec({0: row}, 0, spec)
                scrollback.append_row(row)
                continue
            raws.append(line if k < 0 else (line, k, columns))
            starts.append(start.attrs)
        if raws:
            scrollback.extend_drawn(raws, starts)


def _cuts(text: str, pos: int) -> list[int]:
    """Where `text`'s pieces start, from `pos` on: at every CUP, or (with fewer than two) at every bare CR, but not a
    few only (rich's Live frames, long pieces rarely met again, not worth it). (The tests in C first: the regexes
    try every ESC [ of a read full of SGR.)"""
    cuts = list(map(_MATCH_START, _CUP_START.finditer(text, pos))) if "H" in text else []
    if len(cuts) < 2 and "\r" in text:
        cuts = list(map(_MATCH_START, _CR_CUT.finditer(text, pos)))
        if len(cuts) < _MIN_CR_CUTS:
            return []
    return cuts


def _holds_from(effect: Effect, env: tuple[Any, ...], attrs: Char, x: int, y: int) -> bool:
    """Whether `effect` (a piece's or a run's) is what its text does from the screen's state `env` and a cursor at
    (`x`, `y`) with `attrs`. (The pieces loop checks this inline, once per piece.)"""
    return (
        effect[3] is env
        and (effect[0] is attrs or effect[0] == attrs)
        and (effect[2] < 0 or (effect[2] == y and (effect[1] < 0 or effect[1] == x)))
    )


def _keep_run(runs: dict[str, tuple[str, Effect]], text: str, at: int, first: int, end: int, run: list[Effect]) -> None:
    """Remember `text[at:end]`, pieces applied one after another with the effects `run`, as the run that starts with
    the piece `text[at:first]`, unless the run remembered for that piece is this one or one this one is the start of
    (cut by the read's end). Its effect is theirs in one: the first's start, their paints (and steps) in order, the
    last's cursor and state. Each piece started where the one before left the cursor and the screen's state, so from
    the first's start they all do again."""
    if end - at > _PIECE_MAX:
        return
    head = text[at:first]
    known = runs.get(head)
    if known is not None and text.startswith(known[0][: len(text) - at], at):
        return
    if len(runs) >= _PIECES_LIMIT:
        runs.clear()
    a, z = run[0], run[-1]
    effect: Effect
    rows = tuple(set(chain.from_iterable([e[8] for e in run])))
    modes = tuple(chain.from_iterable([e[9] for e in run]))
    if all(e[10] is None for e in run):
        ops = tuple(chain.from_iterable([e[4] for e in run]))
        effect = (a[0], a[1], a[2], a[3], ops, z[5], z[6], z[7], rows, modes, None, a[3], None)
    else:
        steps: list[Step] = []
        for e in run:
            if e[10]:
                steps += e[10]
            if e[4]:  # (a piece's paints are its last step where it has steps, else these)
                steps.append((_STEP_PAINT, e[4]))
        merged = _merged_scrolls(steps)
        effect = (a[0], a[1], a[2], a[3], (), z[5], z[6], z[7], rows, modes, tuple(steps), z[11], merged)
    runs[head] = (text[at:end], effect)


def _merged_scrolls(steps: list[Step]) -> tuple[Step, ...] | None:
    """A piece's steps with each run of scrolls of one region and the paints between them (a pager's lines fed at
    the bottom of the screen: paint, scroll, paint, scroll, ...) done as one scroll of them all and then the paints,
    each on the row it has been moved to by then (where the rows go, their paints go: `_move_paints`). Scrolling the
    region row by row moved every row and paint of it once per line. Paints pushed out of the region are dropped,
    but for a region at the top of the screen, whose rows leave for the main screen's scrollback: there the scroll
    keeps them (`_STEP_KEEP`), with the row each is on, so that every row that leaves is kept as painted (less -X's
    lines after a search, Claude Code's output). None if no run has two scrolls."""
    out: list[Step] = []
    merged = False
    i, n = 0, len(steps)
    while i < n:
        step = steps[i]
        if step[0] != _STEP_SCROLL:
            out.append(step)
            i += 1
            continue
        top, bottom = step[1], step[2]
        j = i + 1
        while j < n and (steps[j][0] == _STEP_PAINT or steps[j][:3] == (_STEP_SCROLL, top, bottom)):
            j += 1
        run = steps[i:j]
        height = bottom - top + 1
        scrolls = [min(s[3], height) for s in run if s[0] == _STEP_SCROLL]  # (a scroll of more is one of all)
        if len(scrolls) < 2:
            out += run
            i = j
            continue
        merged = True
        total = later = sum(scrolls)  # `later`: the scrolls still to come after a step of the run
        ops: list[tuple[int, Paint, bool]] = []
        kept: list[tuple[int, Paint, bool]] = []
        for s in run:
            if s[0] == _STEP_SCROLL:
                later -= min(s[3], height)
                continue
            for y, op, whole in s[1]:
                if top <= y <= bottom:
                    y -= later
                    if y < top:
                        if top == 0:
                            kept.append((y + total, op, whole))  # (the row it is on, counted as the run starts)
                        continue
                ops.append((y, op, whole))
        if top == 0:
            out.append((_STEP_KEEP, top, bottom, total, tuple(kept)))
        else:
            out.append((_STEP_SCROLL, top, bottom, min(total, height)))
        if ops:
            out.append((_STEP_PAINT, tuple(ops)))
        i = j
    return tuple(out) if merged else None


class _Impure(Exception):
    """A piece's effect depends on more than the screen's state (`StemScreen._piece_effect`)."""


class _Scratch(StemScreen):
    """The screen pieces are worked out on (`StemScreen._piece_effect`): its rows start empty, so that what they hold
    after is what the piece wrote; what would read cells already there is refused. A scroll up (a line feed at the
    bottom of the scroll region, SU) or an erase of the display moves or erases cells the piece did not write: each is
    a step of the piece's effect (`steps`), done on the real screen when the piece is applied, after a step of the
    cells written before it; the rows start empty again after it."""

    steps: list[Step]

    def _written(self) -> PieceOps:
        """The cells written since the rows were last empty, one paint per row, taken off the rows."""
        columns = self.columns
        ops: list[tuple[int, Paint, bool]] = []
        for y, row in self._buf.items():
            x = min(row) if row else 0
            # Cells in every column from its first to the row's end: marked as an EL's paint is (the attributes of its
            # erase, never used), so that it covers an earlier paint at the same column (`_add_paint`).
            end = DEFAULT_CHAR if row and len(row) == columns - x else None
            # The column after the last if the cells are every column from the first to it (what ED needs).
            span = x + len(row) if row and max(row) == x + len(row) - 1 else None
            op = (x, None, dict(row), span, -2, end)
            ops.append((y, op, x == 0 and end is not None))  # type: ignore[arg-type]
        self._rows = self._new_buffer()
        return tuple(ops)

    def _step(self, step: Step) -> None:
        ops = self._written()
        if ops:
            self.steps.append((_STEP_PAINT, ops))
        self.steps.append(step)

    def index(self) -> None:
        if self._wrapping:
            raise _Impure  # autowrap's: the row it leaves is marked as going on, which an effect does not keep
        super().index()

    def reverse_index(self) -> None:
        raise _Impure

    def _scroll_up(self, top: int, bottom: int, count: int = 1) -> None:
        self._step((_STEP_SCROLL, top, bottom, count))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if args or kwargs or how not in (0, 1, 2, 3):
            raise _Impure
        cursor = self._cur
        self._step((_STEP_ERASE, how, cursor.x, cursor.y, cursor.attrs))

    def save_cursor_ansi(self, *params: int, private: bool = False) -> None:
        if private:
            raise _Impure  # XTSAVE
        if params in ((), (0,)):
            self.save_cursor()
            self._step((_STEP_SAVE, self.savepoints[-1]))

    def _join(self, char: str) -> None:
        raise _Impure  # a zero-width character joins the cell before it

    def _feed_slow(self, text: str, pos: int) -> int:
        raise _Impure
