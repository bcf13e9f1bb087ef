"""StemScreen's pieces (`StemScreen._feed_pieces`): a feed is cut before every CUP, and a piece met before in the same
state is applied whole from its worked-out effect. Pieces repeated in every state they can meet must leave stock
pyte's screen, cells and modes."""

from __future__ import annotations

import random

import pyte
import pytest
from pyte import modes as mo
from test_screen import (
    COLS,
    ROWS,
    RefStream,
    assert_same_screen,
    assert_scrollback,
    history_rows,
    looked_at_between_reads,
    reference,
    stem,
)

from core import screen as screen_mod
from core import screen_cells
from core.screen import _IMPURE, _STEP_KEEP, _STEP_SCROLL, StemScreen
from core.screen_cells import row_text

# What a piece may hold and what makes it impure (worked out to no effect): runs with SGR, EL, ECH, CUF, CUB, CHA,
# CR LF inside the screen and at its bottom, SU, ED and DECSTBM (steps of its effect: a scroll, an erase of the
# display, the scroll region it leaves), wide characters, a run wrapping at the right edge, a combining mark (it joins
# the cell before it), DECTCEM and 2026 set in place, DECAWM turned off, a run without SGR (drawn in whatever
# attributes the piece starts with), a cursor move relative to where the piece starts, the cursor saved in a region
# tmux sets for a pane's update (and DECSLRM, ignored).
_PIECES = [
    "\x1b[{y};1H\x1b[31mred\x1b[m run\x1b[K",
    "\x1b[{y};{x}H\x1b[1;44mbold\x1b[m",
    "\x1b[{y};{x}Hno sgr, the attributes it starts with",
    "\x1b[{y};1H\x1b[0m\x1b[49m\x1b[K",
    "\x1b[{y};2H\x1b[42m\x1b[K\x1b[m",
    "\x1b[{y};{x}H中文 é\x1b[3Cgap\x1b[2Dback",
    "\x1b[{y};1H\x1b[38;5;130m  7 \x1b[mline one\r\n\x1b[38;5;130m  8 \x1b[mline two\x1b[K\r\n",
    "\x1b[{y};1H\x1b[?25l\x1b[35mhidden\x1b[?25h\x1b[m",
    "\x1b[{y};1H\x1b[?2026hframe\x1b[?2026l",
    "\x1b[{y};{x}H\x1b[43m\x1b[5X\x1b[m\x1b[60Gat 60\x1b[2Bdown",
    "\x1b[{y};110H" + "wraps past the edge",
    "\x1b[{y};{x}He\u0301 combining",
    "\x1b[{y};{x}H\u0301joins the cell before the piece",
    "\x1b[{y};{x}H\x1b[32;1mleaves its attributes on",
    "\x1b[{y};{x}H\x1b[4mleaves underline on",
    "\x1b[{y};{x}H\x1b(0lqk leaves line drawing on",
    "\x1b[{y};{x}H\x1b[?7ltoo long for the row " * 3 + "\x1b[?7h",
    "\x1b[40;1H\x1b[7mbottom\r\nscrolls\x1b[m",
    "\x1b[{y};1H\x1b[2K\x1b[1A\x1b[2K\x1b[1A",
    "\x1b[{y};{x}H\x1b[1C\x1b[4mx\x1b[24m\x1b[K",
    "\x1b[{y};1H\x1b[2S\x1b[{y};3Hafter a scroll up\x1b[K",
    "\x1b[{y};{x}H\x1b[44m\x1b[J\x1b[mbelow, erased",
    "\x1b[{y};1H\x1b[2Jall erased\x1b[{y};9H\x1b[1J",
    "\x1b[{y};1H\x1b[3;20r\x1b[20;1Hin a region\r\nscrolls it\r\nagain\x1b[r",
    "\x1b[{y};1H\x1b[2;30r\x1b[30;1Hleaves a region\r\n",
    "\x1b[{y};{x}H\x1b[35msaved\x1b[s\x1b[1;20r\x1b[62;120s\x1b[20;5H\n\x1b[r\x1b[m after",
]
# Between frames: what changes the state pieces are worked out in (attributes, scroll region, insert mode, origin
# mode, charsets, the alternate screen) or erases cells their paints made (ED, EL 1).
_BETWEEN = [
    "",
    "\x1b[44m",
    "\x1b[m",
    "\x1b[5;30r",
    "\x1b[?6l\x1b[r",  # (pyte fails an assertion on VPA in origin mode without a scroll region)
    "\x1b[4h",
    "\x1b[4l",
    "\x1b[u",  # back to where a piece saved the cursor
    "\x1b[5;30r\x1b[?6h",
    "\x1b[?6l",
    "\x1b)0\x0e",
    "\x0f",
    "\x1b(B",
    "\x1b[?1049h",
    "\x1b[?1049l",
    "\x1b[46m\x1b[J\x1b[m",
    "\x1b[20;5H\x1b[45m\x1b[1J\x1b[m",
    "\x1b[45m\x1b[2J\x1b[m",
    "\x1b[12;7H\x1b[1K",
]


@pytest.fixture
def pieces_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Screens that cut every read into pieces from the first (a new screen cuts one read in four until some come
    back): what the equality tests below take apart."""
    monkeypatch.setattr(StemScreen, "_missed_at_start", 0)


def _repeated_pieces(seed: int) -> bytes:
    """Frames made of a few pieces from a small pool, each frame's pieces in another order, so that every piece is
    met again and again, in different states."""
    rng = random.Random(seed)
    pool = [
        rng.choice(_PIECES).format(y=rng.randrange(1, ROWS + 1), x=rng.choice((1, 5, 60, 118, 120))) for _ in range(12)
    ]
    out = []
    for _ in range(80):
        out += rng.sample(pool, rng.randrange(3, 9))
        out.append(rng.choice(_BETWEEN))
    return "".join(out).encode()


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize("seed", range(10))
def test_repeated_pieces_equal_reference(seed: int) -> None:
    """Pieces applied whole from their effects leave pyte's screen (cells, cursor, modes, title), and pyte's cells
    in every row (ED erases only the cells a row has), fed whole, in reads that cut pieces, and looked at between
    reads; and the effects were applied."""
    screen_cells.clear_caches()
    _assert_pytes_and_applied(_repeated_pieces(seed))


def _fed_as_pyte(data: bytes, read: int | None, expected: pyte.Screen | None = None) -> StemScreen:
    """Stem's screen of `data` fed in reads of `read` bytes (None: whole), checked to be pyte's (`expected`, or pyte
    fed `data` whole): its screen, and the cells of every row (ED erases only the cells a row has)."""
    expected = reference(data, None) if expected is None else expected
    actual = stem(data, read)
    assert_same_screen(expected, actual)
    for y in range(ROWS):
        assert set(actual.buffer[y]) == set(expected.buffer[y]), f"row {y} has other cells than pyte's"
    return actual


def _record_scans(screen: StemScreen) -> list[str]:
    """From now on, the text `screen` scans token by token (not applied from pieces' effects), one entry a scan."""
    scanned: list[str] = []
    scan = screen._scan

    def recorded(text: str, pos: int, stop: int, batch: bool) -> int:
        scanned.append(text[pos:stop])
        return scan(text, pos, stop, batch)

    screen._scan = recorded  # type: ignore[method-assign]
    return scanned


def _assert_pytes_and_applied(data: bytes) -> None:
    """`data` leaves pyte's screen and cells, fed whole, in 4096- and 61-byte reads and looked at between reads, and
    some piece of it was applied from its effect."""
    expected = reference(data, None)
    for size in (None, 4096, 61):
        _fed_as_pyte(data, size, expected)
    assert_same_screen(reference(data, 512), looked_at_between_reads(data, 512, take_dirty=True))
    assert any(type(entry) is tuple for entry in stem(data, None)._piece_effects.values())


@pytest.mark.usefixtures("pieces_at_once")
def test_a_piece_applied_dirties_its_rows_and_sets_its_modes() -> None:
    """A piece applied from its effect marks the rows it drew on dirty and sets the private modes it holds: the
    cursor hidden, a synchronized-output frame begun."""
    screen = StemScreen(COLS, ROWS)
    piece = b"\x1b[3;1H\x1b[31mthree\r\nfour\x1b[?25l\x1b[?2026h"
    screen.feed(piece + b"\x1b[1;1H" + piece + b"\x1b[1;1H\x1b[?25h\x1b[?2026l")
    screen.take_dirty()
    screen.feed(piece + b"\x1b[1;1H")
    assert type(screen._piece_effects[piece.decode()]) is tuple
    assert screen.take_dirty() == {2, 3}
    assert screen.cursor.hidden
    assert screen.queries.frame_remaining() > 0
    assert screen.text()[2].startswith("three") and screen.text()[3].startswith("four")


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize("mode", [8, 9, 1001, 1007, 1016, 1034, 1036, 1039, 2031, 7727])
def test_modes_agents_set_at_every_start_are_set_in_place_and_leave_pyte_s_modes(mode: int) -> None:
    """Codex sets the wheel-as-arrows mode (1007) at every start and screen, Claude Code colour-scheme reports (2031),
    others autorepeat, meta keys and other mouse encodings: modes nothing in Stem acts on. A piece holding one is
    applied from its effect (not scanned again each time), the mode set or reset as pyte records it, and DECRQM
    still answers for it as before (X10 mouse, 9, is one of those it reports)."""
    frames = "".join(
        f"\x1b[{y};1H\x1b[?{mode}h\x1b[2mframe {y}\x1b[22m\x1b[K\x1b[{y + 1};3H\x1b[?{mode}l\x1b[1mnext\x1b[m"
        for y in (3, 9, 3, 9, 3, 9, 3)
    )
    data = (frames + f"\x1b[1;1H\x1b[?{mode}h").encode()
    _assert_pytes_and_applied(data)
    screen = StemScreen(COLS, ROWS)
    scanned = _record_scans(screen)
    answers: list[bytes] = []
    screen.set_responder(answers.append)
    screen.feed(data)
    piece = f"\x1b[3;1H\x1b[?{mode}h\x1b[2mframe 3\x1b[22m\x1b[K"
    assert type(screen._piece_effects[piece]) is tuple
    assert sum(text.count(piece) for text in scanned) < 4  # of the four times it is met
    assert mode << 5 in screen.mode
    screen.queries.feed(f"\x1b[?{mode}$p\x1b[?{mode}l\x1b[?{mode}$p".encode(), screen.feed)  # as AgentSession
    assert answers == [
        f"\x1b[?{mode};{1 if mode == 9 else 0}$y".encode(),
        f"\x1b[?{mode};{2 if mode == 9 else 0}$y".encode(),
    ]


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize("read", [None, 4096, 61])
def test_pieces_that_scroll_erase_or_set_the_region_are_applied_in_every_region(read: int | None) -> None:
    """tmux redraws a pane by scrolling a region and writing the rows that come in, and moves the region from pane to
    pane: such pieces (SU, a line feed at the region's bottom, ED, DECSTBM) are applied from their effects, in each
    region they are met in, and leave pyte's screen, cells and scroll region."""
    screen_cells.clear_caches()
    pane = (
        "\x1b[1;1H\x1b[3S\x1b[18d\x1b[32mone\x1b[K\r\ntwo\x1b[K\r\nthree\x1b[m\x1b[K\x1b[1;40r"
        "\x1b[20;5Hbottom\r\nline\r\n\x1b[44mscrolled\x1b[m"
        "\x1b[12;7H\x1b[45m\x1b[J\x1b[m\x1b[12;1Hafter an erase"
    )
    frames = []
    for k in range(30):
        region = ("\x1b[2;20r", "\x1b[21;39r", "\x1b[r")[k % 3]
        frames.append(f"{region}{pane}\x1b[{k % 40 + 1};1Hframe {k}")
    data = "".join(frames).encode()
    actual = _fed_as_pyte(data, read)
    assert actual.margins == reference(data, None).margins
    applied = [e for e in (*actual._piece_effects.values(), *actual._effects_elsewhere.values()) if type(e) is tuple]
    assert any(effect[10] for effect in applied)  # pieces with steps were worked out
    if read is None:
        assert actual._effects_elsewhere  # and in more than one region


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize("read", [None, 4096, 61])
def test_a_piece_met_after_other_attributes_or_from_other_rows_is_applied_from_there(read: int | None) -> None:
    """Codex draws a row of its menu after one colour and then after another; Claude Code's pieces begin on whatever
    row the one before left the cursor: each piece is worked out again from the cursor it is met from, applied from
    there, and leaves pyte's screen and cells."""
    screen_cells.clear_caches()
    absolute = "\x1b[6;1H\x1b[2m     Usage included with Plus\x1b[22m\x1b[K"
    relative = "\r\x1b[1B\x1b[K\x1b[1mmodel\x1b[22m"
    frames = []
    for k in range(24):
        colour = ("\x1b[36m", "\x1b[m", "\x1b[44m")[k % 3]
        frames.append(f"\x1b[5;1H{colour}> 1. Sign in{absolute}\x1b[{10 + k % 4};1H\r{relative}\r{relative}\x1b[m")
    actual = _fed_as_pyte("".join(frames).encode(), read)
    if read is None:
        redone = {key[0] for key, effect in actual._effects_elsewhere.items() if type(effect) is tuple}
        assert redone == {absolute}  # and the relative pieces in the feeds cut at CRs (below)
        claude = "".join(f"\x1b[{10 + k % 4}B\x1b[{('36', '0')[k % 2]}m{relative}{relative}" for k in range(24))
        actual = _fed_as_pyte(claude.encode(), None)
        redone = {key[0] for key, effect in actual._effects_elsewhere.items() if type(effect) is tuple}
        assert relative in redone


# Pieces of a program that places its runs relative to the cursor (Claude Code): no CUP, so a feed is cut before every
# CR that does not begin a CR LF; such a piece is the same from any column, not from any row.
_RELATIVE = [
    "\r\x1b[1C\x1b[1B\x1b[38;2;153;153;153mmodel \x1b[31GSet the model\x1b[39m\x1b[K",
    "\r\r\n\x1b[38;2;177;185;249m/exit\x1b[31GExit\x1b[36Gthe\x1b[40GCLI\x1b[39m",
    "\r\x1b[2C\x1b[3A\x1b[7m \x1b[27m",
    "\r\x1b[1Bplain, in the attributes it starts with",
    "\r\x1b[5Cleaves \x1b[1mbold on",
    "\r\r\n\r\n\r\n\x1b[4C\x1b[2A\x1b[4D\x1b[2B",
    "\r\x1b[110Cwraps past the right edge",
    "\r\x1b[3B\x1b[2K\x1b[1A\x1b[2K\x1b[1A",
    "\r\x1b[1C\u0301 joins the cell before the piece",
    "\r\x1b[?25l\x1b[?2026h\x1b[1Bhidden\x1b[?2026l",
]


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize("seed", range(6))
def test_repeated_relative_pieces_equal_reference(seed: int) -> None:
    """Pieces cut before CRs, repeated from other rows and columns, at the bottom (where their line feeds scroll) and
    in other attributes, leave pyte's screen and cells; and the effects were applied."""
    screen_cells.clear_caches()
    rng = random.Random(seed)
    pool = rng.sample(_RELATIVE, 7)
    out = []
    for _ in range(80):
        out += rng.sample(pool, rng.randrange(2, 6))
        out.append(rng.choice(["", "\x1b[44m", "\x1b[m", "\x1b[5A", "\x1b[9B", "\x1b[20C", "\x1b[45m\x1b[J\x1b[m"]))
    _assert_pytes_and_applied("".join(out).encode())


def test_pieces_are_looked_for_again_after_ever_new_text() -> None:
    """After many reads of pieces never met again, pieces are looked for in a few places only; once a program repaints
    the same frame again and again they are applied again, and the screen is still pyte's."""
    rng = random.Random(7)
    words = ["delta", "agent", "stream", "pyte", "gamma", "render", "quorum", "shard"]
    new = "".join(
        f"\x1b[{y};1H\x1b[38;5;{rng.randrange(256)}m" + " ".join(rng.choices(words, k=12)) + "\x1b[m\x1b[K"
        for _ in range(60)
        for y in range(1, ROWS + 1)
    ).encode()
    frame = "".join(f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)).encode()
    data = new + frame * 300
    screen = StemScreen(COLS, ROWS)
    screen._pieces_missed = 0  # as a screen that has applied pieces before
    for i in range(0, len(data), 4096):
        screen.feed(data[i : i + 4096])
        if i + 4096 == len(new) // 4096 * 4096:
            assert screen._pieces_missed >= 16  # the new text made pieces be looked for in a few places only
    assert_same_screen(reference(data, None), screen)
    assert screen._pieces_missed == 0
    assert any(type(entry) is tuple for entry in screen._piece_effects.values())


def test_a_new_screen_s_first_read_of_repaints_is_applied_from_its_own_repeats() -> None:
    """A 64 KiB read (what Stem's reader hands over when a program repaints fast) that repeats a frame is met
    before by itself: a new screen's first read goes into pieces at once, its frames from the third on applied,
    rather than four reads (a quarter of a megabyte) scanned before the first look back. The screen is pyte's."""
    frame = "".join(f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)).encode()
    data = (frame * (65536 // len(frame) + 1))[:65536]
    screen = StemScreen(COLS, ROWS)
    screen.feed(data)
    assert screen._pieces_missed == 0
    assert sum(type(entry) is tuple for entry in screen._piece_effects.values()) >= ROWS - 1
    assert_same_screen(reference(data, None), screen)


def test_reads_without_pieces_do_not_stop_pieces_being_looked_for() -> None:
    """A pager's lines between its repaints (reads with no cursor placement to cut at; overstruck bold, as man
    writes it without colours, stops line batches) say nothing of whether pieces pay: a screen whose pieces paid
    still applies the repaint that follows thirty such reads, rather than scanning it as if pieces had stopped coming
    back. The screen is pyte's."""
    frame = "".join(f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)).encode()
    lines = "".join(f"line {i}: N\x08NA\x08AM\x08ME\x08E of a page\r\n" for i in range(150)).encode() * 30
    screen = StemScreen(COLS, ROWS)
    for _ in range(6):
        screen.feed(frame)
    assert screen._pieces_missed == 0
    for i in range(0, 30 * 4096, 4096):
        screen.feed(lines[i : i + 4096])
    assert screen._pieces_missed == 0
    scanned = _record_scans(screen)
    screen.feed(frame)
    assert not any("row 20" in part for part in scanned)  # the repaint's pieces applied
    assert_same_screen(reference(frame * 6 + lines[: 30 * 4096] + frame, None), screen)


@pytest.mark.parametrize("repaint", ["\x1b[5;1H" + "y" * COLS, "\x1b[5;1H\x1b[42mgreen\x1b[K"])
def test_erase_in_display_deferred_with_a_row_s_paints_erases_the_cell_past_its_last_column(repaint: str) -> None:
    """ED on a row with a few deferred paints is deferred with them, and a paint of the whole row drops it; but a row
    with a cell past its last column (pyte's ICH writes one) is erased at once, so that cell takes the erase's
    attributes as in pyte."""
    data = (
        "\x1b[5;1H" + "x" * COLS + "\x1b[5;1H\x1b[2@" + "\x1b[5;3Hab\x1b[44m\x1b[2J\x1b[m" + repaint + "\x1b[1;1H"
    ).encode()
    expected, actual = reference(data, None), stem(data, None)
    assert_same_screen(expected, actual)
    assert set(actual.buffer[4]) == set(expected.buffer[4])
    assert actual.buffer[4][COLS] == expected.buffer[4][COLS]


def test_a_screen_cleared_again_and_again_before_anyone_looks_makes_no_row_and_leaves_pyte_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ED over rows that have a cell in every column (with many deferred paints, as Codex's frames leave, or with
    none) and over empty rows is deferred: a program that clears its screen and draws a little, again and again before
    anyone looks, makes no row and writes no cell per clear. What a reader then sees is pyte's, with pyte's cells in
    every row: the rows' cells, the erase's colour, what was drawn after it; also where a row has the cell past its
    last column that ICH writes, or only some of its cells."""
    full = "".join(f"\x1b[{y};1H" + "x" * COLS for y in range(1, ROWS + 1))
    pieces = "".join(f"\x1b[{y};{x}H\x1b[3{x % 8}mp{x}\x1b[m" for y in range(2, 12) for x in range(1, 100, 12))
    odd = "\x1b[20;1H\x1b[3@\x1b[21;1H\x1b[2K\x1b[21;5Hsome\x1b[22;1H\x1b[2K"
    frame = "\x1b[{colour}m\x1b[1;1H\x1b[J\x1b[m\x1b[{y};3Hframe {y}" + pieces
    made: list[object] = []
    monkeypatch.setattr(
        screen_mod, "new_row", lambda default: made.append(default) or pyte.screens.StaticDefaultDict(default)
    )
    screen = StemScreen(COLS, ROWS)
    screen.feed((full + odd + pieces).encode())
    screen.take_dirty()
    _ = screen.buffer[0]  # looked at: every paint written
    made.clear()
    frames = "".join(frame.format(colour=40 + k % 8, y=5 + k) for k in range(8))
    screen.feed(frames.encode())
    assert made == []
    expected = reference((full + odd + pieces + frames).encode(), None)
    assert_same_screen(expected, screen)
    for y in range(ROWS):
        assert set(screen.buffer[y]) == set(expected.buffer[y]), f"row {y} has other cells than pyte's"


@pytest.mark.parametrize("read", [4096, 65536])
def test_a_new_screen_remembers_the_pieces_of_one_read_in_four_and_applies_a_repaint_met_again(read: int) -> None:
    """A program's first pass is not cut into pieces (that cost vim, htop, Codex and tmux 4-22% of a pass of ever
    new text): a new screen cuts one read in four and remembers its pieces. A program that repaints a frame (here
    one frame a read, as Stem's reader hands over what arrives together) has it applied from the sixth frame, not
    after a dozen (when only a few places of a read were remembered, the pieces met again were too few to go on
    with); in 4 KiB and 64 KiB reads the screen is pyte's."""
    frame = "".join(f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)).encode()
    screen = StemScreen(COLS, ROWS)
    screen.feed(frame)
    assert len(screen._piece_effects) == ROWS - 1  # every piece but the last, which the read's end may cut
    for _ in range(5):
        screen.feed(frame)
    assert screen._pieces_missed == 0
    assert sum(type(entry) is tuple for entry in screen._piece_effects.values()) >= ROWS - 1
    screen = StemScreen(COLS, ROWS)
    data = frame * 600
    for i in range(0, len(data), read):
        screen.feed(data[i : i + read])
    assert_same_screen(reference(data, 4096), screen)
    assert screen._pieces_missed == 0
    assert any(type(entry) is tuple for entry in screen._piece_effects.values())


@pytest.mark.usefixtures("pieces_at_once")
def test_a_piece_cut_by_the_end_of_a_read_is_applied_whole_with_the_rest_of_it_from_the_next() -> None:
    """A piece cut by the end of a read is scanned as far as it came; the next read's text before its first cut is
    the rest of it, and if the whole piece was met before, that rest is applied from the piece's effect, over what
    its start drew, not scanned (a repaint cut by reads paid a scan at every cut). Row 5's piece goes back over its
    own text and erases the row from there; the read ends inside that text. The screen is pyte's after each read."""
    rows = [f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)]
    rows[4] = "\x1b[5;3H\x1b[44mrow 5 is drawn here\r\x1b[9C\x1b[K\x1b[m"
    frame = "".join(rows)
    data = frame.encode()
    cut = data.index(b"drawn")
    screen = StemScreen(COLS, ROWS)
    for _ in range(3):
        screen.feed(data)  # each piece met, met again, worked out
    scanned = _record_scans(screen)
    fed = data * 3
    for _ in range(2):
        screen.feed(data[:cut])
        fed += data[:cut]
        assert_same_screen(reference(fed, None), screen)
        screen.feed(data[cut:])
        fed += data[cut:]
        assert_same_screen(reference(fed, None), screen)
    assert "\x1b[5;3H\x1b[44mrow 5 is " in scanned  # the piece's start, as the read left it
    assert not any(part.startswith("drawn") for part in scanned), scanned  # its rest, applied


def test_a_read_s_last_piece_is_kept_for_the_next_and_applied_whole_when_nobody_looked_between(
    pieces_at_once: None,
) -> None:
    """Nobody looks at the screen between two reads (a colony's host reads the PTY faster than it sends frames): the
    last piece of a read, cut by its end, is kept unparsed, and the next read goes on with it, so that the whole
    piece is met and applied from its effect. Neither part of row 5's piece is scanned, and the screen is pyte's."""
    rows = [f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)]
    rows[4] = "\x1b[5;3H\x1b[44mrow 5 is drawn here\r\x1b[9C\x1b[K\x1b[m"
    data = "".join(rows).encode()
    cut = data.index(b"drawn")
    screen = StemScreen(COLS, ROWS)
    for _ in range(3):
        screen.feed(data)  # each piece met, met again, worked out
    scanned = _record_scans(screen)
    for _ in range(2):
        screen.feed(data[:cut])
        screen.feed(data[cut:])
    assert_same_screen(reference(data * 5, None), screen)
    assert not any("row 5 is" in part or part.startswith("drawn") for part in scanned), scanned


@pytest.mark.parametrize(
    ("last", "kept"),
    [
        ("\x1b[3;1Hhello\x1b[31m red\x1b[K\r\n\x1b[4Cmore", True),
        ("\x1b[3;1Hhello\x1b[?25l", True),  # hidden at once: `mode` shows it before the piece is parsed
        ("\x1b[3;1Hhello\x1b[38;5", True),  # a sequence cut by the read's end
        ("\x1b[3;1Hhello\x1b[6n", False),  # a question: answered now
        ("\x1b[3;1Hhello\x1b[?1h", False),  # a mode `mode` shows
        ("\x1b[3;1Hhello\x1b]0;title\x07", False),  # the title
        ("\x1b[3;1Hhello\x9b6n", False),  # a C1 CSI: a question too
        ("\x1b[3;1Hhello\x07", False),  # a bell: counted at once (a colony's attention)
    ],
)
def test_a_kept_piece_changes_nothing_seen_before_the_screen_is_looked_at(
    last: str, kept: bool, pieces_at_once: None
) -> None:
    """A read's last piece is kept unparsed only if what is read of the screen without looking at its cells is the
    same either way: the version moves on, the rows it changes are dirty and their versions new when asked, modes
    show as they will be, and a question in it is not kept but answered at once."""
    data = ("\x1b[1;1H" + last).encode()  # a first piece that changes nothing: all the change is in the kept one
    for asked in ("dirty rows", "row version"):
        answers: list[bytes] = []
        screen = StemScreen(COLS, ROWS)
        screen.set_responder(answers.append)
        screen.take_dirty()
        version, row = screen.version, screen.row_version(2)
        screen.feed(data)
        assert (screen._held is screen_mod._PIECE_KEPT) == kept
        assert screen.version > version
        assert (mo.DECTCEM in screen.mode) == ("?25l" not in last)
        assert answers == ([b"\x1b[3;6R"] if "6n" in last else [])
        assert screen.bells == last.endswith("hello\x07")  # (an OSC's BEL ends it: no bell)
        if asked == "dirty rows":
            assert 2 in screen.take_dirty()
        else:
            assert screen.row_version(2) > row
        assert screen._held is not screen_mod._PIECE_KEPT
        assert_same_screen(reference(data, None), screen)


def test_a_kept_piece_of_lines_is_all_drawn_when_the_screen_is_first_looked_at(pieces_at_once: None) -> None:
    """A kept piece of whole lines (top's last piece is its screenful) is parsed with its lines in a batch when the
    screen is looked at; the batch's rows, and the text after them, are drawn before the reader gets the rows or the
    cursor, not held for a later look."""
    lines = "".join(f"line {c}\x1b[K\r\n" for c in "abcdef")
    data = f"\x1b[1;1Htop\x1b[3;1H{lines}tail".encode()
    for look in ("rows", "cursor"):
        screen = StemScreen(COLS, ROWS)
        screen.feed(data)
        assert screen._held is screen_mod._PIECE_KEPT
        if look == "rows":
            rows = screen.buffer  # one look: what it returns is read as it is
            assert [row_text(rows[y], 10).rstrip() for y in range(2, 9)] == [*(f"line {c}" for c in "abcdef"), "tail"]
        else:
            assert (screen.cursor.x, screen.cursor.y) == (4, 8)
        assert_same_screen(reference(data, None), screen)


def test_a_run_of_pieces_met_again_is_applied_whole_and_a_changed_piece_breaks_only_its_run() -> None:
    """Pieces applied one after another (a program repainting its rows; tmux's border, a CUP and one character each)
    are remembered as a run, and where the run comes back whole it is applied from one effect, not piece by piece:
    here the pieces inside runs are no longer worked out on their own, and the repaint is still not scanned (but the
    last piece, which a read's end may cut). A repaint with one row changed breaks only the run that row is in: its
    pieces are handled one by one, the other runs are applied. The screen is pyte's."""
    rows = [f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, ROWS + 1)]
    frame = "".join(rows).encode()
    changed = frame.replace(b"row 7\x1b", b"ROW 7\x1b")
    screen = StemScreen(COLS, ROWS)
    for _ in range(10):  # a new screen's pieces are applied from its sixth read, a run is worked out when met thrice
        screen.feed(frame)
    effects = screen._piece_effects
    for piece in effects:
        if piece.count(";3H") == 1 and piece not in screen._runs:
            effects[piece] = _IMPURE  # a piece inside a run, on its own: scanned from now on
    scanned = _record_scans(screen)
    screen.feed(frame)
    assert not any(f"row {y}\x1b" in part for part in scanned for y in range(1, ROWS)), scanned
    screen.feed(changed)
    assert any("ROW 7" in part for part in scanned)
    assert not any(f"row {y}\x1b" in part for part in scanned for y in range(20, ROWS)), scanned
    assert_same_screen(reference(frame * 11 + changed, None), screen)


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize(
    "odd",
    [
        "\x1b[6;1H\x1b[3;20rregion set, then painted at the top",
        "\x1b[6;1H\x1b[44m\x1b[J\x1b[m",  # an erase of the display
        "\x1b[20;1H\r\nscrolled\r\n\x1b[s",  # a scroll and the cursor saved
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_runs_that_hold_steps_leave_pyte_s_screen_in_reads_of_any_size(odd: str, seed: int) -> None:
    """A run of pieces is applied as its pieces would be, whatever they do besides painting: set the scroll region
    (and paint after it, a piece whose effect is paints and no steps but another state after it), erase the display,
    scroll, save the cursor. Repaints of such frames, in reads of random sizes (runs end where reads do, and are met
    again across other reads, their starts elsewhere), leave pyte's screen, looked at every few reads."""
    rows = [f"\x1b[{y};3H\x1b[1;32mrow {y}\x1b[m status\x1b[K" for y in range(1, 11)]
    frame = "".join(rows[:5]) + odd + "".join(rows[5:8]) + "\x1b[9;1H\x1b[r" + "".join(rows[8:])
    data = (frame * 60).encode()
    rng = random.Random(seed)
    screen = StemScreen(COLS, ROWS)
    expected = reference(b"", None)
    fed = RefStream(expected)
    at = 0
    while at < len(data):
        chunk = data[at : at + rng.choice((rng.randrange(1, 200), rng.randrange(200, 3000)))]
        at += len(chunk)
        screen.feed(chunk)
        fed.feed(chunk)
        if rng.random() < 0.3:
            assert_same_screen(expected, screen)
    assert_same_screen(expected, screen)
    assert any(text.count("status") >= 3 for text, _ in screen._runs.values())  # runs were met (and applied)


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize(
    ("setup", "bottom", "lines"),
    [
        ("\x1b[?1049h", ROWS, 5),
        ("\x1b[?1049h", ROWS, 45),  # lines painted and pushed out by the same piece: dropped
        ("\x1b[5;30r", 30, 45),
        ("", ROWS, 5),
        ("", ROWS, 45),  # the same, kept in the scrollback as painted, after the rows that were on the screen
    ],
)
@pytest.mark.parametrize("read", [4096, 65536])
def test_lines_a_pager_feeds_at_the_bottom_scroll_once_per_piece(
    monkeypatch: pytest.MonkeyPatch, setup: str, bottom: int, lines: int, read: int
) -> None:
    """A pager's piece (less: to the bottom row, then lines with CR LF, each scrolling the screen) is applied as one
    scroll of all its lines and then their paints, not the region scrolled row by row; also where lines the piece
    painted leave the top of the main screen (less -X after a search, Claude Code's output): those are kept in the
    scrollback as painted, in order after the rows that were on the screen (which kept every one but five of them
    row by row). The screen is pyte's, and the scrollback HistoryScreen's."""
    pieces = [
        f"\x1b[{bottom};1H\x1b[K"
        + "".join(f"\x1b[3{(k + i) % 8}mline {k}.{i}\x1b[m text\x1b[K\r\n" for i in range(lines))
        + f"\x1b[7m:{k}\x1b[m"
        for k in range(3)
    ]
    data = (setup + "".join(pieces[f % 3] for f in range(60))).encode()
    screen = StemScreen(COLS, ROWS)
    scrolls: list[int] = []
    scroll_up = screen._scroll_up
    monkeypatch.setattr(
        screen, "_scroll_up", lambda top, bottom, count=1: scrolls.append(count) or scroll_up(top, bottom, count)
    )
    for i in range(0, len(data), read):
        screen.feed(data[i : i + read])
    assert_same_screen(reference(data, None), screen)
    effect = screen._piece_effects[pieces[1]]
    assert type(effect) is tuple
    top = 4 if bottom == 30 else 0
    height = bottom - top
    assert effect[12] is not None
    if top:
        assert (_STEP_SCROLL, top, bottom - 1, min(lines, height)) in effect[12]
    else:
        keep = next(step for step in effect[12] if step[0] == _STEP_KEEP)
        assert keep[1:4] == (0, bottom - 1, lines)
        # The rows it painted that leave, but for its first line's (painted before the first scroll: by then that row
        # is on the screen, and kept as it leaves).
        assert len(keep[4]) == max(0, lines - height)
    # Row by row for the pieces met the first two times, then once per piece (or per run of pieces met again), not
    # once per line (60 pieces of `lines` lines).
    assert len(scrolls) < 3 * lines + 60
    if not setup:
        expected = history_rows(data)
        assert len(expected) > 250
        assert_scrollback(screen, expected)


@pytest.mark.usefixtures("pieces_at_once")
@pytest.mark.parametrize("blank", [50, 39, 41, 120])
@pytest.mark.parametrize("read", [1, 4096, 65536])
def test_a_piece_that_scrolls_more_lines_than_the_screen_keeps_each_in_the_scrollback(blank: int, read: int) -> None:
    """A piece whose lines scroll the main screen by more rows than it has (a pager's page of blank lines, a program
    printing many empty lines after placing the cursor), met again and applied whole: every row that leaves is kept,
    also those that came in blank at the bottom and left inside the piece, and those a line was painted on (its
    scrolls merged into one kept 40 rows, and the rest of them were lost from the scrollback). The scrollback is
    HistoryScreen's and the screen pyte's."""
    pieces = [
        f"\x1b[40;1H\x1b[3{k}mtop {k}\x1b[m" + "\r\n" * blank + f"middle {k}\r\n" + "\r\n" * (blank // 3) + f"end {k}"
        for k in range(3)
    ]
    data = ("".join(f"row {i}\r\n" for i in range(40)) + "".join(pieces[f % 3] for f in range(12))).encode()
    screen = StemScreen(COLS, ROWS)
    for i in range(0, len(data), read):
        screen.feed(data[i : i + read])
    assert_same_screen(reference(data, None), screen)
    expected = history_rows(data)
    assert len(expected) == 1 + 12 * (blank + 1 + blank // 3)
    assert_scrollback(screen, expected)


def test_a_kind_of_row_shows_its_own_default_cell_and_is_kept_per_cell() -> None:
    """Rows made in numbers (a scroll's) come from a kind of row per default cell (`row_kind`): each row shows the
    cell it was made with where nothing is written, a cell equal to another but not the same object gets its own,
    and a row marked wrapped does not mark its kind's other rows."""
    plain = screen_cells.DEFAULT_CHAR
    reverse = plain._replace(reverse=True)
    twin = screen_cells.Char(*plain)
    assert twin == plain and twin is not plain
    rows = [screen_cells.row_kind(plain)(), screen_cells.new_row(reverse), screen_cells.new_row(twin)]
    assert [row[5] for row in rows] == [plain, reverse, twin]
    assert rows[0][5] is plain and rows[1][0] is reverse and rows[2][7] is twin
    assert screen_cells.row_kind(plain) is screen_cells.row_kind(plain)
    assert screen_cells.row_kind(twin) is not screen_cells.row_kind(plain)
    screen_cells.mark_wrapped(rows[0], True)
    assert getattr(rows[0], "wrapped", False) and not getattr(screen_cells.new_row(plain), "wrapped", False)
    assert isinstance(rows[1], pyte.screens.StaticDefaultDict) and dict(rows[1]) == {}
