"""What programs ask of their terminal, answered byte for byte as xterm answers (DECRQM, OSC 10/11/12/4) in the
order of the stream; and what they tell it beside the cells: the keypad mode, clipboard writes (OSC 52),
hyperlinks (OSC 8) and synchronized-output frames (2026). Output is fed as the agent session feeds it: through
the screen's `queries`."""

from __future__ import annotations

import dataclasses

import pytest

from core.host.mirror import ScreenMirror
from core.host.protocol import Rows, Snapshot, pack, screen_state, unpack
from core.screen import StemScreen
from core.screen_queries import FRAME_TIMEOUT, Link, Palette, xterm_colour

ESC = "\x1b"
CSI = ESC + "["
OSC = ESC + "]"
ST = ESC + "\\"


def screen_with_answers(columns: int = 40, lines: int = 6) -> tuple[StemScreen, list[bytes]]:
    screen = StemScreen(columns, lines)
    answers: list[bytes] = []
    screen.set_responder(answers.append)
    return screen, answers


def feed(screen: StemScreen, data: bytes | str, chunk: int | None = None) -> None:
    """Feed `data` as AgentSession does, whole or in reads of `chunk` bytes."""
    raw = data.encode() if isinstance(data, str) else data
    for i in range(0, len(raw), chunk or len(raw) or 1):
        screen.queries.feed(raw[i : i + (chunk or len(raw))], screen.feed)


def asked(data: str, chunk: int | None = None) -> bytes:
    """Everything the screen answers to `data`, fed whole or in chunks of `chunk` bytes."""
    screen, answers = screen_with_answers()
    feed(screen, data, chunk)
    return b"".join(answers)


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        # DEC private modes Stem implements: set (1) or reset (2) as the stream left them.
        (f"{CSI}?2004$p", f"{CSI}?2004;2$y"),
        (f"{CSI}?2004h{CSI}?2004$p", f"{CSI}?2004;1$y"),
        (f"{CSI}?1h{CSI}?1$p", f"{CSI}?1;1$y"),
        (f"{CSI}?7$p", f"{CSI}?7;1$y"),  # autowrap is on from the start
        (f"{CSI}?25l{CSI}?25$p", f"{CSI}?25;2$y"),
        (f"{CSI}?1000h{CSI}?1006h{CSI}?1000$p{CSI}?1006$p{CSI}?1003$p", f"{CSI}?1000;1$y{CSI}?1006;1$y{CSI}?1003;2$y"),
        (f"{CSI}?1004h{CSI}?1004$p", f"{CSI}?1004;1$y"),
        (f"{CSI}?1049h{CSI}?1049$p{CSI}?1049l{CSI}?1049$p", f"{CSI}?1049;1$y{CSI}?1049;2$y"),
        (f"{CSI}?2026$p{CSI}?2026h{CSI}?2026$p", f"{CSI}?2026;2$y{CSI}?2026;1$y"),
        (f"{ESC}={CSI}?66$p{ESC}>{CSI}?66$p", f"{CSI}?66;1$y{CSI}?66;2$y"),  # the keypad mode
        # Modes Stem does not implement: 0, "not recognised" (the kitty-like 2031, grapheme clusters 2027).
        (f"{CSI}?2031$p{CSI}?2027$p{CSI}?1015$p", f"{CSI}?2031;0$y{CSI}?2027;0$y{CSI}?1015;0$y"),
        # ANSI modes: insert (4) and new-line (20) mode.
        (f"{CSI}4h{CSI}4$p{CSI}20$p{CSI}2$p", f"{CSI}4;1$y{CSI}20;2$y{CSI}2;0$y"),
    ],
)
def test_decrqm_reports_the_modes_stem_implements(query: str, answer: str) -> None:
    assert asked(query) == answer.encode()
    assert asked(query, chunk=1) == answer.encode()  # a query split anywhere across reads


def test_colour_queries_are_answered_with_the_palette_in_the_querys_terminator() -> None:
    screen, answers = screen_with_answers()
    ansi = tuple((i, 2 * i, 3 * i) for i in range(16))
    screen.queries.palette = Palette((0xAB, 0xCD, 0xEF), (0x01, 0x02, 0x03), ansi)
    feed(screen, f"{OSC}11;?\x07{OSC}10;?{ST}{OSC}12;?\x07{OSC}10;?;?\x07")
    feed(screen, f"{OSC}4;1;?;196;?\x07{OSC}4;15;?{ST}", chunk=3)
    assert answers == [
        b"\x1b]11;rgb:0101/0202/0303\x07",
        b"\x1b]10;rgb:abab/cdcd/efef\x1b\\",
        b"\x1b]12;rgb:abab/cdcd/efef\x07",  # the cursor is drawn in the foreground colour
        b"\x1b]10;rgb:abab/cdcd/efef\x07",
        b"\x1b]11;rgb:0101/0202/0303\x07",
        b"\x1b]4;1;rgb:0101/0202/0303\x07",
        b"\x1b]4;196;rgb:ffff/0000/0000\x07",  # the 6x6x6 cube, as xterm's
        b"\x1b]4;15;rgb:0f0f/1e1e/2d2d\x1b\\",
    ]
    assert xterm_colour(232) == (8, 8, 8) and xterm_colour(255) == (238, 238, 238)
    # Setting a colour (not a query) is no question: nothing is answered.
    feed(screen, f"{OSC}11;#000000\x07{OSC}4;1;rgb:ff/00/00\x07")
    assert len(answers) == 8


def test_no_kitty_keyboard_and_no_clipboard_reads() -> None:
    # The kitty keyboard protocol is not implemented: its query gets no answer, so programs use legacy keys.
    assert asked(f"{CSI}?u{CSI}>1u{CSI}?u") == b""
    # A clipboard read is never answered: a program must not read the user's clipboard.
    assert asked(f"{OSC}52;c;?\x07") == b""
    # pyte's own answers (DA, DSR) come in the order asked, between the others.
    assert asked(f"{CSI}c{CSI}?25$p{CSI}2;3H{CSI}6n") == f"{CSI}?6c{CSI}?25;1$y{CSI}2;3R".encode()


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_secondary_da_and_extended_cursor_position_as_xterm_answers(chunk: int | None) -> None:
    # DA2 is not DA: xterm's answer as a VT100 (0, not the VT420 that would claim left and right margins) at its
    # patch level; a DA2 with a parameter other than 0 is ignored.
    assert asked(f"{CSI}>c{CSI}>0c{CSI}>1c", chunk) == f"{CSI}>0;379;0c{CSI}>0;379;0c".encode()
    # DECXCPR: CPR marked private; rows from the top margin in origin mode; a pending wrap reports the last column.
    assert asked(f"{CSI}3;7H{CSI}?6n{CSI}2;5r{CSI}?6h{CSI}2;4H{CSI}?6n{CSI}6n", chunk) == (
        f"{CSI}?3;7R{CSI}?2;4R{CSI}2;4R".encode()
    )
    assert asked(f"{CSI}1;38H ab{CSI}?6n{CSI}?5n", chunk) == f"{CSI}?1;40R".encode()
    screen, _ = screen_with_answers()
    feed(screen, f"{CSI}?6n{CSI}>c", chunk)
    assert screen.errors == 0 and screen.text()[0].strip() == ""


def test_the_queries_leave_the_screen_as_it_would_be_without_them() -> None:
    text = f"before{CSI}?2004$p{OSC}11;?\x07{ESC}=mid{OSC}52;c;aGk={ST}{CSI}2;1Hafter{OSC}8;;u\x07link{OSC}8;;\x07"
    plain = StemScreen(40, 6)
    plain.feed(text.encode())
    for chunk in (1, 3, None):
        screen, _answers = screen_with_answers()
        feed(screen, text, chunk)
        assert screen.text() == plain.text()
        assert (screen.cursor.x, screen.cursor.y, screen.version > 0) == (plain.cursor.x, plain.cursor.y, True)


def test_keypad_mode() -> None:
    screen = StemScreen(20, 4)
    assert not screen.queries.app_keypad
    screen.feed(b"\x1b=")
    assert screen.queries.app_keypad
    screen.feed(b"\x1b>")
    assert not screen.queries.app_keypad
    screen.feed(b"\x1b[?66h")
    assert screen.queries.app_keypad
    screen.feed(b"\x1b[?66l")
    assert not screen.queries.app_keypad


def test_clipboard_writes_are_kept_for_the_users_terminal() -> None:
    screen = StemScreen(20, 4)
    feed(screen, b"\x1b]52;c;aGVsbG8=\x07\x1b]52;;d29y")
    feed(screen, b"bGQ=\x1b\\\x1b]52;c;not base64!\x07\x1b]52;p;?\x07")
    assert screen.queries.take_clipboard() == ["c;aGVsbG8=", "c;d29ybGQ="]
    assert screen.queries.take_clipboard() == []


def test_hyperlinks_cover_the_cells_drawn_between_open_and_close() -> None:
    screen = StemScreen(20, 5)
    feed(screen, b"see \x1b]8;id=1;https://a.example/\x1b\\docs\x1b]8;;\x1b\\ and ")
    feed(screen, b"\x1b]8;;https://b.example/\x07a long link that wraps\x1b]8;;\x07.", chunk=5)
    assert screen.text()[:2] == ["see docs and a long ", "link that wraps.    "]
    assert screen.queries.row_links(0) == [Link(4, 8, "https://a.example/"), Link(13, 20, "https://b.example/")]
    assert screen.queries.row_links(1) == [Link(0, 15, "https://b.example/")]
    # Links move with their rows as the screen scrolls ...
    feed(screen, b"\r\n\r\n\r\n\r\n")
    assert screen.queries.row_links(0) == [Link(0, 15, "https://b.example/")]
    # ... and a link whose cells are overwritten is gone.
    feed(screen, b"\x1b[1;1Hoverwritten")
    assert screen.queries.row_links(0) == []


def test_a_synchronized_frame_is_due_until_it_ends_or_times_out() -> None:
    now = [100.0]
    screen = StemScreen(20, 4)
    screen.queries.clock = lambda: now[0]
    assert screen.queries.frame_remaining() == 0
    screen.feed(b"\x1b[?2026h")
    assert screen.queries.frame_remaining() == pytest.approx(FRAME_TIMEOUT)
    now[0] += FRAME_TIMEOUT / 2
    assert screen.queries.frame_remaining() == pytest.approx(FRAME_TIMEOUT / 2)
    screen.feed(b"\x1b[?2026l")
    assert screen.queries.frame_remaining() == 0
    screen.feed(b"\x1b[?2026h")
    now[0] += FRAME_TIMEOUT + 0.01
    assert screen.queries.frame_remaining() == 0  # timed out: shown as it is


def test_a_clients_mirror_keeps_the_links_of_the_rows_it_is_sent_and_each_clipboard_write_once() -> None:
    screen = StemScreen(20, 4)
    feed(screen, b"\x1b]8;;https://a.example/\x07link\x1b]8;;\x07\r\nplain")
    mirror = ScreenMirror(20, 4)
    mirror.apply(Snapshot(screen=screen_state(screen)))
    assert mirror.row_links(0) == (Link(0, 4, "https://a.example/"),) and mirror.row_links(1) == ()
    feed(screen, b"\x1b[1;1Hover\x1b]52;c;aGk=\x07")  # the link's cells overwritten, a clipboard write
    state = dataclasses.replace(screen_state(screen, {0}), clipboard=tuple(screen.queries.take_clipboard()))
    rows = unpack(pack(Rows(state)))
    assert isinstance(rows, Rows)
    mirror.apply(rows)
    assert mirror.row_links(0) == ()
    assert mirror.take_clipboard() == ["c;aGk="] and mirror.take_clipboard() == []
