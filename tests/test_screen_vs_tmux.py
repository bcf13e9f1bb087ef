"""Every recording of a real program, shown by a real terminal: the screen Stem draws from it is the one tmux draws
(text row for row, the attributes of every character, the cursor), tmux being the terminal a user of Stem most likely
knows. tests/test_screen.py checks every
cell against pyte, read as xterm reads it; this checks that reading against a terminal that is not pyte, with pyte's
quirks Stem fixed (a wide character in the last column, origin mode, DL, colon SGR...) included."""

from __future__ import annotations

import random
import shutil
import subprocess
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from rich.style import Style

from core.screen import StemScreen
from core.screen_cells import cell_width
from stem.widgets.terminal import TerminalView

RECORDINGS = Path(__file__).parent / "recordings"
COLS, ROWS = 120, 40
DONE = "stem-recording-fed"  # the pane's title once everything before it is on tmux's screen

# DEC line drawing as tmux's capture-pane gives it: the ASCII letter the program sent, not the box drawn.
_DEC_LETTERS = str.maketrans(dict(zip("┘┐┌└┼─├┤┴┬│", "jklmnqtuvwx", strict=True)))


class Tmux:
    """A private tmux server, by its socket's name, whose panes are their whole window (no status line) and keep a
    long history; called with a tmux command's arguments, it gives the command's output."""

    def __init__(self, socket: str, tmp_path: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: apt-get install tmux")
        self.socket = socket
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set -g status off\nset -g history-limit 100000\n")
        self.env = {"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "TMUX_TMPDIR": str(tmp_path), "LANG": "C.UTF-8"}

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, f"tmux {args[0]} failed: {proc.stderr.strip()}"
        return proc.stdout

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env, capture_output=True, timeout=30)


def tmux_screen(data_path: Path, tmp_path: Path, history: bool = False) -> tuple[list[str], str, str]:
    """What a 120x40 tmux pane shows once `cat` has written the recording to it raw (no CR added to LF): its rows'
    text, and the rows with their attributes as SGR sequences (`capture-pane -e`)."""
    tmux = Tmux("stem-vs-tmux", tmp_path)
    command = f"stty raw -echo; cat {data_path}; printf '\\033]2;{DONE}\\007'; exec sleep 600"
    tmux("new-session", "-d", "-s", "rec", "-x", str(COLS), "-y", str(ROWS), command)
    try:
        wait_for(
            lambda: tmux("display-message", "-p", "-t", "rec", "#{pane_title}").strip() == DONE,
            20,
            f"tmux to show all of {data_path.name}",
        )
        if history:  # the lines above the screen instead, oldest first
            rows = tmux("capture-pane", "-p", "-S", "-", "-E", "-1", "-t", "rec").split("\n")[:-1]
        else:
            rows = tmux("capture-pane", "-p", "-t", "rec").split("\n")[:ROWS]
        styled = tmux("capture-pane", "-p", "-e", "-N", "-t", "rec")
        cursor = tmux("display-message", "-p", "-t", "rec", "#{cursor_x},#{cursor_y},#{cursor_flag}").strip()
    finally:
        tmux.kill()
    # A combining mark is kept as sent (e + U+0301); Stem keeps the character it makes (é, NFC): the same on screen.
    rows = [unicodedata.normalize("NFC", row.rstrip()) for row in rows]
    return rows + [""] * (ROWS - len(rows)) if not history else rows, styled, cursor


# Where pyte and a terminal part: what Stem reads as xterm and tmux do rather than as pyte does.
_WIDE_LINE = ("a" * (COLS - 1) + "中文Z\r\n").encode()
QUIRKS = {
    "wide-char-in-last-column": b"\x1b[" + str(COLS).encode() + "G中Z\r\n".encode() + _WIDE_LINE * 3,
    "wide-char-painted-past-the-end": b"\x1b[5;" + str(COLS - 1).encode() + "H\x1b[1mx中y\x1b[m".encode(),
    "cup-past-the-region-in-origin-mode": b"\x1b[5;10r\x1b[?6h\x1b[20;3HA\x1b[r",
    "vpa-in-origin-mode-without-a-region": b"\x1b[?6h\x1b[15dB\x1b[?6l",
    "deleted-line-below-unwritten-rows": b"\x1b[22;21Hframe\x1b[22;30H\x1b[M\x1b[H",
    # (its left half only: tmux keeps a wide character whose right half was drawn over, which its capture then shows
    # a cell too wide; Stem shows a blank there, so the row keeps its width: test_terminal_widget.py)
    "half-a-wide-char-drawn-over": "中文\x1b[1;3Hy\x1b[2;1H😀🎉\x1b[2;2H😀".encode(),
    "nel-is-cr-lf": b"abc\x1bEdef\x1b[5;10Hxyz\x1bE!",
    "moves-outside-the-scroll-region": b"\x1b[12;27r\x1bMa\x1b[5;1H\x1b[2Ab\x1b[35;1H\x1b[3Bc\nd\x1b[5;1H\x1bMe",
    "decrc-as-often-as-asked": b"\x1b[3;5H\x1b7x\x1b8y\x1b8z\x1b[s\x1b[6;28r\x1b[?25l\x1b[u!",
    "decsc-kept-over-the-alternate-screen": b"\n\x1b7\x1b[?1049h\x1b8alt\x1b[?1049l\x1b8main",
    # DECRC and 1049's restore put origin mode back as it was saved, and leave autowrap as it is (pyte turned autowrap
    # back on, so a line meant to stop at the last column wrapped onto the next row)
    "decrc-leaves-autowrap-as-it-is": (
        "\x1b7\x1b[?7l\x1b8\x1b[2;117Hwörld\x1b[3;1H"  # saved on, turned off: off after the restore
        "\x1b[?7h\x1b[?7l\x1b7\x1b[?7h\x1b8\x1b[4;118Habcd"  # saved off, turned on: on after it
    ).encode(),
    "1049-leaves-autowrap-as-it-is": "\x1b[?1049h\x1b[?7l\x1b[?1049l\x1b[2;117Hwörld\x1b[5;1H".encode(),
    "decrc-puts-origin-mode-back": (
        b"\x1b[5;10r\x1b7\x1b[?6h\x1b8\x1b[1;1HX\x1b[r"  # saved off, turned on: off after the restore
        b"\x1b[?6h\x1b[5;10r\x1b7\x1b[?6l\x1b8\x1b[2;1HY"  # saved on, turned off: on after it
    ),
    "colon-sgr": b"\x1b[38:2::255:0:0mred\x1b[4:3mcurly\x1b[0m plain",
    "combining-mark-at-the-start-of-a-row": "ab\r\u0301X\r\n\u0301Y\r\nZ\x1b[5G\u0301W\x1b[3;20Hend\u0301".encode(),
    "underline-colour": b"\x1b[1;31mA\x1b[58;2;255;0;0mB\x1b[58:2::0:9:0mC\x1b[4;58;5;2mD\x1b[59;24mE\x1b[0m plain",
    # (tmux does not reverse the screen; once it is normal again, xterm shows every cell as tmux does)
    "reverse-video-flash": b"\x1b[7mstatus\x1b[27m\x1b[?5hplain \x1b[7mreversed\x1b[0m reset\x1b[?5l\x1b[?5l after",
    "tab-with-a-wrap-pending": b"\x1b[1;118Htab\tstop\x1b[3;119Hx\ty\tz\x1b[5;1H" + b"w" * 120 + b"\t!",
}


RECORDED = sorted(p.stem for p in RECORDINGS.glob("*.bin"))
# A full-screen program's last screen before it leaves the alternate screen (what its user saw last), besides the
# main screen it leaves behind.
IN_SESSION = [f"{name}@in-session" for name in RECORDED if b"\x1b[?1049l" in (RECORDINGS / f"{name}.bin").read_bytes()]


# And the screen at three moments along each recording (the first CSI after a quarter, a half, three quarters of
# it): a program's screens on the way, not only its last.
PARTWAY = [f"{name}@{q}%" for name in RECORDED for q in (25, 50, 75)]


def recording(name: str) -> bytes:
    if name in QUIRKS:
        return QUIRKS[name]
    if name.endswith("%"):
        name, _, percent = name.rstrip("%").partition("@")
        data = (RECORDINGS / f"{name}.bin").read_bytes()
        cut = data.find(b"\x1b[", len(data) * int(percent) // 100)
        return data[:cut] if cut > 0 else data
    if name.endswith("@in-session"):
        data = (RECORDINGS / f"{name.removesuffix('@in-session')}.bin").read_bytes()
        return data[: data.rindex(b"\x1b[?1049l")]
    return (RECORDINGS / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("name", RECORDED + IN_SESSION + PARTWAY + sorted(QUIRKS))
def test_every_recording_draws_the_screen_tmux_draws(name: str, tmp_path: Path) -> None:
    data = recording(name)
    path = tmp_path / "stream.bin"
    path.write_bytes(data)
    screen = StemScreen(COLS, ROWS)
    for at in range(0, len(data), 4096):  # as a colony host reads a PTY
        screen.feed(data[at : at + 4096])
    ours = [row.rstrip() for row in screen.text()]
    if b"\x1b(0" in data:
        ours = [row.translate(_DEC_LETTERS) for row in ours]
    theirs, styled, cursor = tmux_screen(path, tmp_path)
    differ = [y for y in range(ROWS) if ours[y] != theirs[y]]
    assert not differ, "\n".join(f"row {y}:\n  stem {ours[y]!r}\n  tmux {theirs[y]!r}" for y in differ[:5])
    # What the UI's terminal view draws of each row: the same text, every row exactly as wide as the screen.
    view = TerminalView()
    strips = [
        view._render_cells(screen.buffer.get(y) or {}, COLS, -1, Style(), screen.default_char) for y in range(ROWS)
    ]
    assert [strip.cell_length for strip in strips] == [COLS] * ROWS
    shown = [unicodedata.normalize("NFC", strip.text.rstrip()) for strip in strips]
    if b"\x1b(0" in data:
        shown = [row.translate(_DEC_LETTERS) for row in shown]
    assert shown == theirs, "the terminal view draws otherwise"
    # The attributes of every character drawn. tmux's rows with their SGR, read back by a screen of their own (SGR
    # reading is checked against pyte in test_screen.py); blank cells are left out: tmux does not capture the colour
    # an erase left past the last character of a row, though it shows it.
    drawn = StemScreen(COLS, ROWS)
    drawn.feed("\r\n".join(styled.split("\n")[:ROWS]).encode())
    fields = ("fg", "bg", "bold", "italics", "underscore", "strikethrough", "reverse", "dim")
    wrong = [
        (y, x, ours_cell, theirs_cell)
        for y in range(ROWS)
        for x in range(COLS)
        if (ours_cell := screen.buffer[y][x]).data.strip()
        and [getattr(ours_cell, f) for f in fields] != [getattr(theirs_cell := drawn.buffer[y][x], f) for f in fields]
    ]
    assert not wrong, f"{len(wrong)} cells drawn otherwise than tmux draws them; the first: {wrong[0]}"
    x, y, shown = (int(n) for n in cursor.split(","))
    assert (screen.cursor.x, screen.cursor.y, not screen.cursor.hidden) == (x, y, bool(shown)), "the cursor"


@pytest.mark.parametrize("name", ["git_log", "ls", "seq", "ipython", "rich_demo"])
def test_the_lines_that_scroll_away_are_the_scrollback_tmux_keeps(name: str, tmp_path: Path) -> None:
    """The recordings that scroll (thousands of lines for git log, ls and seq): every line that left the screen, in
    Stem's scrollback as in tmux's history. (Where a program clears the screen tmux also pushes the cleared screen
    into its history, which xterm does not, nor Stem: those recordings are not compared.)"""
    data = recording(name)
    path = tmp_path / "stream.bin"
    path.write_bytes(data)
    screen = StemScreen(COLS, ROWS, scrollback=100_000)
    for at in range(0, len(data), 4096):
        screen.feed(data[at : at + 4096])
    ours = [screen.scrollback.text(i).rstrip() for i in range(len(screen.scrollback))]
    theirs = tmux_screen(path, tmp_path, history=True)[0]
    assert len(ours) == len(theirs) > 0
    differ = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    assert not differ, "\n".join(f"line {i}:\n  stem {ours[i]!r}\n  tmux {theirs[i]!r}" for i in differ[:5])


def _random_stream(rng: random.Random) -> bytes:
    """Text (CJK and emoji among it), cursor moves, erases, inserts and deletes of characters, scroll regions and
    scrolls, saves and restores, tabs, SGR, autowrap and insert mode, the alternate screens, in random order. Left
    out, where xterm and tmux part (Stem reads them as xterm): IL and DL's column, DL outside the region, origin
    mode's home, CHT and REP (tmux lacks the one and repeats otherwise), 47 and 1047 left by 1049."""
    ops: list[Callable[[], str]] = [
        lambda: f"\x1b[{rng.randint(1, ROWS)};{rng.randint(1, COLS)}H",
        lambda: rng.choice(["hello", "wörld", "中文字", "😀x", "abc def", "x" * rng.randint(1, 130), "é\u0301", "\t"]),
        lambda: f"\x1b[{rng.choice(['', '0', '1', '2'])}{rng.choice('KJ')}",
        lambda: f"\x1b[{rng.randint(0, 5)}{rng.choice('P@XSTABCDEFGd`')}",
        lambda: rng.choice(
            ["\r", "\n", "\r\n", "\x08", "\x1bD", "\x1bM", "\x1bE", "\x1b7", "\x1b8", "\x1b[s", "\x1b[u"]
        ),
        lambda: f"\x1b[{rng.randint(1, 20)};{rng.randint(21, ROWS)}r",
        lambda: rng.choice(["\x1b[r", "\x1b[?7l", "\x1b[?7h", "\x1b[4h", "\x1b[4l", "\x1b[?25l", "\x1b[?25h"]),
        lambda: rng.choice(["\x1b[?1049h", "\x1b[?1049l"]),
        lambda: f"\x1b[{rng.choice(['1', '31', '42', '7', '0', '38;5;200', '48;2;1;2;3', ''])}m",
        lambda: f"\x1b[{rng.randint(1, COLS)}G",
        lambda: rng.choice(["\x1b[3g", "\x1b[g", "\x1bH"]),
    ]
    return "".join(rng.choice(ops)() for _ in range(rng.randint(5, 60))).encode()


def _half_wide(row: dict[int, Any]) -> bool:
    """Whether a row holds half a wide character (the other half drawn over or erased): tmux's capture leaves its
    stub's cell out, and keeps a wide character whose stub went (Stem shows a blank for either)."""
    cells = [row[x].data for x in range(COLS)]
    for x, data in enumerate(cells):
        wide = bool(data) and not data.isascii() and cell_width(data[0]) == 2
        if (wide and (x + 1 == COLS or cells[x + 1])) or (not data and (x == 0 or not cells[x - 1])):
            return True
    return False


@pytest.mark.parametrize("seed", range(80))
def test_random_streams_draw_the_screen_tmux_draws(seed: int, tmp_path: Path) -> None:
    data = _random_stream(random.Random(seed))
    path = tmp_path / "stream.bin"
    path.write_bytes(data)
    screen = StemScreen(COLS, ROWS)
    screen.feed(data)
    ours = [row.rstrip() for row in screen.text()]
    theirs, _, cursor = tmux_screen(path, tmp_path)
    differ = [y for y in range(ROWS) if ours[y] != theirs[y] and not _half_wide(screen.buffer[y])]
    assert not differ, f"{data!r}\n" + "\n".join(f"row {y}:\n  stem {ours[y]!r}\n  tmux {theirs[y]!r}" for y in differ)
    x, y, shown = (int(n) for n in cursor.split(","))
    assert (min(screen.cursor.x, COLS - 1), screen.cursor.y, not screen.cursor.hidden) == (x, y, bool(shown)), data


# A shell's output, then the pane resized (columns, rows) and more output: what a user sees when they zoom a colony's
# terminal, split the UI or resize their own terminal.
_SHELL = b"".join(b"line %d\r\n" % i for i in range(60)) + b"prompt$ "
_VIM = b"\x1b[?1049h\x1b[H\x1b[2Jvim\x1b[20;1H:wq"
# Lines longer than the pane (autowrap goes on from their first rows), some drawn one character at a time (Stem's
# line batches take the rest), in colour (their rows scroll away as pieces of a line) and with wide characters.
_LONG = b"".join(b"%03d " % i + b"w" * (60 + i % 50) + b"\r\n" for i in range(40)) + b"prompt$ "
_COLOURED = b"".join(b"\x1b[3%dm%03d " % (i % 7 + 1, i) + b"c" * (70 + i % 60) + b"\x1b[m\r\n" for i in range(60))
_TYPED = b"".join(bytes([c]) for c in b"echo " + b"t" * 150) + b"\r\n" + b"prompt$ "
_WIDE = "中文字符".encode() * 12 + b"\r\n" + b"prompt$ "
RESIZES: dict[str, list[tuple[bytes, tuple[int, int] | None]]] = {
    "taller": [(_SHELL, (80, 30)), (b"echo after\r\nafter\r\nprompt$ ", None)],
    "taller-than-the-history": [(b"one\r\ntwo\r\nprompt$ ", (80, 35)), (b"ls\r\n", None)],
    "shorter-then-taller": [(_SHELL, (80, 12)), (b"x\r\n", (80, 30)), (b"y", None)],
    "taller-then-shorter": [(_SHELL, (80, 35)), (b"", (80, 15)), (b"z", None)],
    "taller-and-narrower": [(_SHELL, (50, 28)), (b"w", None)],
    "taller-inside-vim": [(_SHELL + _VIM, (80, 30)), (b"\x1b[?1049l\r\nprompt$ ", None)],
    "shorter-then-taller-inside-vim": [(_SHELL + _VIM, (80, 10)), (b"", (80, 30)), (b"\x1b[?1049l", None)],
    # A width change rewraps the screen and the history as tmux does: lines autowrap cut are joined and cut again at
    # the new width, the cursor stays on its line, and the rows that no longer fit go into the history.
    "narrower-rewraps": [(_LONG, (50, 20)), (b"ls", None)],
    "narrower-then-wider-again": [(_LONG, (50, 20)), (b"", (80, 20)), (b"ls", None)],
    "wider-joins-the-history": [(_LONG, (120, 20)), (b"ls", None)],
    "taller-and-wider": [(_LONG, (112, 26)), (b"ls", None)],
    "shorter-and-narrower": [(_LONG, (45, 12)), (b"ls", None)],
    "coloured-lines-rewrapped": [(_COLOURED, (50, 20)), (b"", (130, 20)), (b"x", None)],
    "a-line-typed-rewrapped": [(_TYPED, (60, 20)), (b"", (100, 20)), (b"y", None)],
    "wide-characters-rewrapped": [(_WIDE, (41, 20)), (b"", (75, 20)), (b"z", None)],
    "a-full-row-then-narrower": [(b"p" * 80, (40, 20)), (b"q", None)],
    "narrower-inside-vim": [(_SHELL + b"w" * 150 + b"\r\nprompt$ " + _VIM, (50, 20)), (b"\x1b[?1049l", None)],
    "narrower-then-wider-inside-vim": [(_LONG + _VIM, (50, 20)), (b"", (80, 20)), (b"\x1b[?1049l", None)],
}


def tmux_resized(steps: list[tuple[bytes, tuple[int, int] | None]], tmp_path: Path) -> tuple[list[str], list[str], str]:
    """What an 80x20 tmux pane shows after each step's bytes were written to it raw and the window resized to the
    step's size: its rows' text, its history's lines (oldest first) and the cursor."""
    tmux = Tmux("stem-resized", tmp_path)
    script = ["stty raw -echo"]
    for i, (data, _size) in enumerate(steps):
        (tmp_path / f"step{i}.bin").write_bytes(data)
        # The title says the step's bytes are on the pane; the pane then waits for the test to resize it.
        script.append(f"cat {tmp_path}/step{i}.bin; printf '\\033]2;step{i}\\007'; tmux wait-for go{i}")
    tmux("new-session", "-d", "-s", "rz", "-x", "80", "-y", "20", "; ".join(script) + "; exec sleep 600")
    try:
        for i, (_data, size) in enumerate(steps):
            wait_for(
                lambda i=i: tmux("display-message", "-p", "-t", "rz", "#{pane_title}").strip() == f"step{i}",
                20,
                f"tmux to show step {i}",
            )
            if size is not None:
                tmux("resize-window", "-t", "rz", "-x", str(size[0]), "-y", str(size[1]))
                wait_for(
                    lambda size=size: (
                        tmux("display-message", "-p", "-t", "rz", "#{pane_width}x#{pane_height}").strip()
                        == f"{size[0]}x{size[1]}"
                    ),
                    20,
                    f"the tmux pane to be {size[0]}x{size[1]}",
                )
            if i < len(steps) - 1:
                tmux("wait-for", "-S", f"go{i}")
        rows = tmux("capture-pane", "-p", "-t", "rz").split("\n")[:-1]
        held = int(tmux("display-message", "-p", "-t", "rz", "#{history_size}"))
        # (-E -1 with no history would give the top row: capture-pane clamps to the screen)
        history = tmux("capture-pane", "-p", "-S", "-", "-E", "-1", "-t", "rz").split("\n")[:held]
        cursor = tmux("display-message", "-p", "-t", "rz", "#{cursor_x},#{cursor_y}").strip()
    finally:
        tmux.kill()
    return [row.rstrip() for row in rows], [line.rstrip() for line in history], cursor


@pytest.mark.parametrize("name", sorted(RESIZES))
def test_a_resized_screen_shows_what_tmux_shows(name: str, tmp_path: Path) -> None:
    """A pane that grows taller takes the newest lines of its history back onto its top rows (the prompt stays at
    the bottom), and one that shrinks pushes its top rows into the history; also behind the alternate screen. One
    whose width changes rewraps its lines."""
    steps = RESIZES[name]
    screen = StemScreen(80, 20, scrollback=10_000)
    for data, size in steps:
        screen.feed(data)
        if size is not None:
            screen.resize(size[1], size[0])
    theirs, history, cursor = tmux_resized(steps, tmp_path)
    assert [row.rstrip() for row in screen.text()] == theirs + [""] * (screen.lines - len(theirs))
    assert [screen.scrollback.text(i).rstrip() for i in range(len(screen.scrollback))] == history
    assert f"{screen.cursor.x},{screen.cursor.y}" == cursor
