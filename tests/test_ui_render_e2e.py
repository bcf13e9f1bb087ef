"""End to end: what the real `stem` UI shows of an agent's terminal is what a terminal shows of the same program.

The agent is bash. Real programs run in it (vim, Textual's demo, a script that prints cells of every kind) and, at the
same time, in a plain tmux pane of the agent's size (the reference) started the same way. Both are read as the user
sees them (`capture-pane -e`), and the UI's terminal region is compared with the reference cell by cell: the
characters (wide ones, box drawing, DEC line drawing), colours as the UI resolves them (its theme's default colours
and Textual's 16 ANSI colours; 256 colours and truecolour as they are; reverse resolved), bold, italic, underline,
strikethrough, blink; and the cursor: where it is and whether it shows. The outer window is resized too: the agent
gets the new size and its program redraws for it, as in the reference resized alike.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from helpers import git, make_repo, run_stem, wait_for
from rich.cells import cell_len
from rich.color import EIGHT_BIT_PALETTE
from rich.color import Color as RichColor
from test_e2e_hosts import Panes
from test_e2e_tmux import stem_command
from textual._ansi_theme import MONOKAI  # the UI's ANSI colours (Textual's default for a dark theme)
from textual.filter import dim_color

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent
OUTER = (140, 40)  # the user's terminal
RGB = tuple[int, int, int]


def _hex(value: str) -> RGB:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


_THEME = tomllib.loads((ROOT / "themes" / "stem-dark.toml").read_text())  # the default theme
FG, BG = _hex(_THEME["foreground"]), _hex(_THEME["background"])
CURSOR = (BG, FG)  # the terminal's cursor: the default colours swapped

# What each program is given as its terminal, in the UI's agent and in the reference pane alike.
TERM_ENV = "TERM=xterm-256color COLORTERM=truecolor LANG=C.UTF-8"
SHELL = "bash --norc --noprofile"

# vim on a file with syntax colours, line numbers, a cursor line (underlined), search matches, a status line.
VIM = (
    "vim -N -u NONE -i NONE -c 'syntax on' -c 'set number ruler laststatus=2 hlsearch cursorline' "
    "-c 'highlight CursorLine cterm=underline' sample.py"
)
SAMPLE = '''\
"""A sample for the editor: colours, wide characters, long lines."""

import os  # 中文 and 😀 in a comment


def main(argv: list[str]) -> int:
    """Say hello in a few ways."""
    for word in ("hello", "wörld", "世界", "🙂"):
        print(f"{word!r:>12} {len(word)}")
    total = sum(len(a) for a in argv) + 0x2A + 3.14  # long enough to wrap on a narrow terminal
    return 0 if total else 1


def helper(value):
\tif value:  # a tab
\t\treturn value * 2
    return None


if __name__ == "__main__":
    raise SystemExit(main(os.sys.argv))
''' + "".join(f"# line {n}: more of the file, so that it scrolls\n" for n in range(60))

# Cells of every kind; it ends with the cursor on the second cell of a wide character (moved there by a backspace)
# and waits.
CELLS = r"""
printf '\e[1mbold\e[0m \e[3mitalic\e[0m \e[4munder\e[0m \e[9mstrike\e[0m \e[7mreverse\e[0m \e[5mblink\e[0m '
printf '\e[2mdim\e[0m \e[1;3;4mall\e[0m \e[8mhidden\e[0m|\n'
printf '\e[31mred\e[0m \e[1;32mgreen\e[0m \e[93mbright\e[0m \e[44;97mon blue\e[0m \e[7;36mreverse cyan\e[0m '
printf '\e[38;5;208m208\e[0m \e[48;5;240m240\e[0m \e[38;5;16m16\e[0m \e[38;2;10;200;30mrgb\e[0m '
printf '\e[48;2;80;0;80;38;2;250;250;0mrgb on rgb\e[0m\n'
printf '中文字 😀 é ┌─┬─┐ ╔═╗ ▁▂▃█ \e(0lqqwqqk x n x\e(B end\n'
printf '\e[1;31m中\e[4m文\e[0m 😀|\n'
printf '%*s中\n' "$(( $(tput cols) - 1 ))" '>'
printf 'ab中\b'
cat
"""

# A full-screen program redrawing at random, fast, as htop or a game does: text in colours and attributes at random
# places, erased lines and characters, lines inserted and deleted, a scroll region scrolled; then "done" and a wait.
# The same seed gives the same drawing. (Left out: wide characters, since one half erased is blank in the UI, as
# xterm shows it, while tmux's capture still gives the character whose half it no longer draws; and tabs, which
# StemScreen and tmux take differently at the last column, a parsing matter of core/screen.py.)
STORM = r"""
import os, random, sys, time
rnd = random.Random(int(sys.argv[1]))
cols, lines = os.get_terminal_size()
words = ["alpha", "βeta", "─┼─", "x", "  ", "end of a longer run of words"]
sgr = ["0", "1", "4", "7", "31", "42", "38;5;208", "48;5;17", "38;2;1;200;3", "1;33;44", "9", "3", "2"]
out = sys.stdout
out.write("\x1b[?1049h\x1b[H\x1b[2J")
for i in range(int(sys.argv[2])):
    op = rnd.random()
    y, x = rnd.randrange(lines) + 1, rnd.randrange(cols) + 1
    n = rnd.randrange(1, 6)
    if op < 0.6:
        out.write(f"\x1b[{y};{x}H\x1b[{rnd.choice(sgr)}m{rnd.choice(words)}\x1b[0m")
    elif op < 0.7:
        out.write(f"\x1b[{y};{x}H\x1b[K")
    elif op < 0.75:
        top = rnd.randrange(1, lines)
        bottom = rnd.randrange(top, lines + 1)
        out.write(f"\x1b[{top};{bottom}r\x1b[{bottom};1H\n\x1b[r")
    else:
        out.write(f"\x1b[{y};{x}H\x1b[{n}{rnd.choice('LMP@X')}")
    if i % 50 == 0:
        out.flush()
        time.sleep(0.002)
out.write(f"\x1b[{lines};1Hdone")
out.flush()
try:
    time.sleep(600)
except KeyboardInterrupt:
    out.write("\x1b[?1049l")
"""


# --------------------------------------------------------------------------------------- reading a tmux pane


@dataclass(frozen=True)
class Cell:
    """A cell as `capture-pane -e` writes it. Colours: None (default), an index, or (r, g, b)."""

    ch: str = " "
    fg: object = None
    bg: object = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    blink: bool = False
    reverse: bool = False
    hidden: bool = False
    strike: bool = False
    unknown: bool = False  # past what tmux captured of the line


_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
_OTHER_ESC = re.compile(r"\x1b(?:\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|\[[0-9;?]*[A-Za-z])")
# DEC special graphics, as tmux writes a cell drawn in them: between SO and SI.
_DEC = dict(zip("`afgjklmnqtuvwx~", "◆▒°±┘┐┌└┼─├┤┴┬│·", strict=True))
_FLAGS = {1: "bold", 2: "dim", 3: "italic", 4: "underline", 5: "blink", 7: "reverse", 8: "hidden", 9: "strike"}
_OFF = {22: ("bold", "dim"), 23: ("italic",), 24: ("underline",), 25: ("blink",), 27: ("reverse",), 28: ("hidden",)}


def _sgr(cell: Cell, params: str) -> Cell:
    parts = params.split(";") if params else ["0"]
    i = 0
    while i < len(parts):
        part = parts[i]
        i += 1
        if ":" in part:  # tmux writes its own sub-parameters: 4:2 (double underline), 4:3 (curly)...
            head, _, sub = part.partition(":")
            if head == "4":
                cell = replace(cell, underline=sub != "0")
            continue
        n = int(part or 0)
        if n == 0:
            cell = Cell(cell.ch)
        elif n in _FLAGS:
            cell = replace(cell, **{_FLAGS[n]: True})
        elif n == 21:
            cell = replace(cell, underline=True)
        elif n in _OFF:
            cell = replace(cell, **dict.fromkeys(_OFF[n], False))
        elif n == 29:
            cell = replace(cell, strike=False)
        elif 30 <= n <= 37 or 90 <= n <= 97:
            cell = replace(cell, fg=n % 10 + (8 if n >= 90 else 0))
        elif 40 <= n <= 47 or 100 <= n <= 107:
            cell = replace(cell, bg=n % 10 + (8 if n >= 100 else 0))
        elif n in (39, 49):
            cell = replace(cell, **{"fg" if n == 39 else "bg": None})
        elif n in (38, 48):
            if parts[i] == "5":
                colour: object = int(parts[i + 1])
                i += 2
            else:
                colour = (int(parts[i + 1]), int(parts[i + 2]), int(parts[i + 3]))
                i += 4
            cell = replace(cell, **{"fg" if n == 38 else "bg": colour})
    return cell


def parse(capture: str) -> list[list[Cell]]:
    """The rows of a `capture-pane -p -e`, as cells (a wide character's second cell has no characters)."""
    attrs = Cell()
    dec = False
    rows = []
    for line in capture.split("\n"):
        cells: list[Cell] = []
        pos = 0
        while pos < len(line):
            if m := _SGR.match(line, pos):
                attrs = _sgr(attrs, m.group(1))
                pos = m.end()
                continue
            if m := _OTHER_ESC.match(line, pos):
                pos = m.end()
                continue
            ch = line[pos]
            pos += 1
            if ch in "\x0e\x0f":
                dec = ch == "\x0e"
                continue
            if dec:
                ch = _DEC.get(ch, ch)
            while pos < len(line) and line[pos] >= " " and cell_len(line[pos]) == 0:
                ch += line[pos]  # a combining character, a variation selector
                pos += 1
            cells.append(replace(attrs, ch=ch))
            if cell_len(ch) == 2:
                cells.append(replace(attrs, ch=""))
        rows.append(cells)
    return rows


def rgb(colour: object, default: RGB) -> RGB:
    if colour is None:
        return default
    if isinstance(colour, int):
        c = MONOKAI.ansi_colors[colour] if colour < 16 else EIGHT_BIT_PALETTE[colour]
        return c.red, c.green, c.blue
    assert isinstance(colour, tuple)
    return colour


def looks(cell: Cell) -> tuple[object, ...]:
    """What the user sees of a cell: its character and colours as drawn, and the attributes that show."""
    fg, bg = rgb(cell.fg, FG), rgb(cell.bg, BG)
    if cell.reverse:
        fg, bg = bg, fg
    ch = " " * len(cell.ch) if cell.hidden else cell.ch  # concealed: blanks over the same cells
    if ch == " " and not cell.underline and not cell.strike:
        return ch, bg  # a blank shows only its background
    if cell.dim:  # Textual draws faint text in a colour of its own, between the text's and the background's
        triplet = dim_color(RichColor.from_rgb(*bg), RichColor.from_rgb(*fg)).get_truecolor()
        fg = triplet.red, triplet.green, triplet.blue
    return ch, fg, bg, cell.bold, cell.italic, cell.underline, cell.strike, cell.blink


# --------------------------------------------------------------------------------------------- the screens


@dataclass(frozen=True)
class Region:
    """Where the agent's terminal is in the UI's pane: top row and left column (from 0), and its size."""

    top: int
    left: int
    columns: int
    lines: int


class Screens:
    """The UI (session "ui") with the agent's terminal focused, and the reference pane (session "ref")."""

    def __init__(self, panes: Panes, repo: Path) -> None:
        self.panes = panes
        self.repo = repo
        self.region = Region(0, 0, 0, 0)

    def both(self, *keys: str) -> None:
        for name in ("ui", "ref"):
            self.panes("send-keys", "-t", name, *keys)

    def run(self, command: str) -> None:
        """Type `command` into both shells."""
        self.both("-l", command)
        self.both("Enter")

    def measure(self) -> Region:
        """Find the agent's terminal in the UI, check the agent was given its size, give the reference that size."""
        region = self.find(*OUTER)
        self.panes("send-keys", "-t", "ui", "-l", "clear; echo size $(stty size)")
        self.panes("send-keys", "-t", "ui", "Enter")
        self.panes.wait_in("ui", f"size {region.lines} {region.columns}")
        return region

    def find(self, columns: int, lines: int) -> Region:
        """The agent's terminal in the UI drawn for a terminal of `columns` x `lines`: below the tabs, right of the
        sidebar, up to the scrollbar and the main view's border; the reference gets its size."""

        def drawn() -> list[str] | None:
            rows = self.panes.pane("ui").rstrip("\n").split("\n")
            fits = len(rows) == lines and rows[0].endswith("╮") and cell_len(rows[0]) == columns
            return rows if fits else None

        rows = wait_for(drawn, 10, f"the UI drawn for {columns}x{lines}")
        top = next(y for y, row in enumerate(rows) if "╸━" in row or "━╸" in row) + 1  # below the tabs
        left = cell_len(rows[top].split("││", 1)[0]) + 2
        self.region = Region(top, left, columns - left - 2, lines - top - 2)  # a hint bar below the border
        self.panes("resize-window", "-t", "ref", "-x", str(self.region.columns), "-y", str(self.region.lines))
        return self.region

    def cells(self, back: int = 0) -> tuple[list[list[Cell]], list[list[Cell]], tuple[int, int] | None]:
        """The UI's terminal region, the reference's screen (scrolled `back` lines into its history), and the
        reference's cursor where it is shown (None: hidden, or scrolled out of view)."""
        r = self.region
        ui = [
            (row[r.left : r.left + r.columns] + [Cell()] * r.columns)[: r.columns]
            for row in parse(self.panes("capture-pane", "-p", "-e", "-t", "ui"))[r.top : r.top + r.lines]
        ]
        span = ("-S", str(-back), "-E", str(r.lines - 1 - back)) if back else ()
        ref = [
            (row + [Cell(unknown=True)] * r.columns)[: r.columns]
            for row in parse(self.panes("capture-pane", "-p", "-e", *span, "-t", "ref"))[: r.lines]
        ]
        x, y, shown = self.panes("display", "-p", "-t", "ref", "#{cursor_x} #{cursor_y} #{cursor_flag}").split()
        return ui, ref, ((int(x), int(y) + back) if shown == "1" and int(y) + back < r.lines else None)

    def differences(self, back: int = 0) -> list[str]:
        """How the UI's terminal differs from the reference (`back` lines up its history, where the UI's view was
        scrolled to): each row that differs (its first cell that does), the cursor."""
        ui, ref, cursor = self.cells(back)
        found = []
        if len(ui) != len(ref) or len(ui) != self.region.lines:
            return [f"{len(ui)} rows in the UI, {len(ref)} in the reference, {self.region.lines} expected"]
        cursor_cells = set()
        if cursor is not None:
            x, y = cursor
            if x >= self.region.columns:
                x = self.region.columns - 1  # a wrap pending: shown on the last column
            # The cursor on the second cell of a wide character is shown on the character, as xterm shows it.
            cursor_cells = {(x - 1, y), (x, y)} if x and ref[y][x].ch == "" else {(x, y)}
        for y, (mine, theirs) in enumerate(zip(ui, ref, strict=True)):
            text, expected = "".join(looks(c)[0] for c in mine), "".join(looks(c)[0] for c in theirs)
            if text != expected:
                found.append(f"row {y}: {text.rstrip()!r}\n   expected {expected.rstrip()!r}")
                continue
            for x, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                if (x, y) in cursor_cells:
                    if (rgb(a.fg, FG), rgb(a.bg, BG)) != CURSOR:
                        found.append(f"row {y}: no cursor at column {x}: {a}")
                        break
                elif b.unknown and a.ch == " ":
                    continue  # tmux does not write the cells a line was erased to past its last character
                elif looks(a) != looks(b):  # a cursor drawn where the reference has none, too
                    found.append(f"row {y} column {x} {a.ch!r}: {looks(a)}\n   expected {looks(b)} ({b})")
                    break
        return found

    def wait_same(self, what: str, shown: Callable[[str], object], timeout: float = 10.0, back: int = 0) -> None:
        """Wait until the reference has `shown` (a test of its text: the program got there), then until the UI's
        terminal shows the same; fail with the differences left."""
        wait_for(lambda: shown(self.panes.pane("ref")), timeout, f"the reference to show {what}")
        try:
            wait_for(lambda: not self.differences(back), timeout, what)
        except AssertionError:
            left = "\n".join(self.differences(back)[:8])
            raise AssertionError(f"{what}: the UI's terminal differs from the reference:\n{left}") from None

    def wheel(self, button: int, x: int, y: int, *, ref: bool = True) -> None:
        """Turn the mouse wheel (64 up, 65 down) over cell (x, y) of the agent's terminal, in the UI (as the user's
        terminal reports it to the UI) and in the reference."""
        r = self.region
        self.panes("send-keys", "-t", "ui", "-l", f"\x1b[<{button};{r.left + x + 1};{r.top + y + 1}M")
        if ref:
            self.panes("send-keys", "-t", "ref", "-l", f"\x1b[<{button};{x + 1};{y + 1}M")

    def resize(self, columns: int, lines: int) -> Region:
        """Resize the user's terminal; the reference takes the agent's new size."""
        self.panes("resize-window", "-t", "ui", "-x", str(columns), "-y", str(lines))
        return self.find(columns, lines)


@pytest.fixture
def screens(hive_env, tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "sample.py").write_text(SAMPLE)
    (repo / "cells.sh").write_text(CELLS)
    (repo / "storm.py").write_text(STORM)
    git(repo, "add", "sample.py", "cells.sh", "storm.py")
    git(repo, "commit", "-q", "-m", "what the programs show")
    env = dict(hive_env.env, LANG="C.UTF-8", TMUX_TMPDIR=str(tmp_path))
    env.pop("LC_ALL", None)
    spawned = run_stem(env, "spawn", "term", "--repo", str(repo), "--agent", SHELL)
    assert spawned.returncode == 0, spawned.stderr
    panes = Panes(dict(env, TERM="xterm-256color"))
    columns, lines = OUTER
    try:
        panes(
            "new-session", "-d", "-s", "ui", "-x", str(columns), "-y", str(lines), "-c", str(repo),
            f"env COLORTERM=truecolor {stem_command()}; echo exited with status $?; sleep 600",
        )  # fmt: skip
        # The reference: the same shell and terminal type in a plain pane, whose colours are the UI's (programs
        # that ask the terminal for its background, as vim does, get the same answer from both).
        panes(
            "new-session", "-d", "-s", "ref", "-x", "80", "-y", "24", "-c", str(repo),
            f"env -u TMUX -u TMUX_PANE {TERM_ENV} {SHELL}",
        )  # fmt: skip
        panes(
            "set-option", "-t", "ref", "window-style", "fg={},bg={}".format(_THEME["foreground"], _THEME["background"])
        )
        panes.wait_in("ui", "bash-")
        panes("send-keys", "-t", "ui", "Enter")  # the colony's terminal gets the focus
        panes.wait_in("ui", "back to panels")
        screens = Screens(panes, repo)
        screens.measure()
        screens.run("PS1='$ '; clear")
        screens.wait_same("the shells' prompts", lambda screen: screen.split("\n")[0].rstrip() == "$")
        yield screens
    finally:
        panes.kill()
        run_stem(env, "stop", "term")


def has(*texts: str) -> Callable[[str], bool]:
    return lambda screen: all(text in screen for text in texts)


def lacks(text: str) -> Callable[[str], bool]:
    return lambda screen: text not in screen


def test_vim_looks_as_in_a_terminal_through_keys_and_a_resize(screens: Screens) -> None:
    screens.run(f"clear; {VIM}")
    screens.wait_same("vim on a file", has("1,1", "Top"))
    screens.run("/def")  # search: the matches highlighted, the cursor on the first
    screens.wait_same("a search", has("6,1"))
    screens.both("V", "j", "j")  # a visual selection (reverse)
    screens.wait_same("a selection", has("-- VISUAL LINE --"))
    screens.both("Escape", "C-d", "w", "w")  # scrolled half a page (a scroll region), the cursor moved
    screens.wait_same("scrolled", lambda screen: "VISUAL" not in screen and "Top" not in screen)
    screens.both("-l", ":vsplit")
    screens.both("Enter")
    screens.wait_same("two windows side by side", lambda screen: screen.count("sample.py") == 2)
    region = screens.resize(124, 34)  # narrower and lower: the agent gets the new size and vim redraws for it
    assert (region.columns, region.lines) == (77, 29), region
    screens.wait_same("vim redrawn for a smaller terminal", has("sample.py"))
    screens.resize(150, 44)
    screens.wait_same("vim redrawn for a bigger terminal", has("sample.py"))
    screens.both("-l", ":qa!")
    screens.both("Enter")
    screens.wait_same("vim gone, the shell's screen back", lacks("sample.py  "))


def test_every_kind_of_cell_and_the_cursor_look_as_in_a_terminal(screens: Screens) -> None:
    screens.run("clear; bash cells.sh")
    # Attributes, colours, wide characters and line drawing; the cursor on the second cell of a wide character.
    screens.wait_same("the cells script", has("rgb on rgb", " end", "ab中"))
    screens.both("C-c")
    screens.run("clear; printf '\\e[?25lhidden cursor'; cat")
    screens.wait_same("a hidden cursor", has("hidden cursor\n"))
    screens.both("C-c")
    screens.run("printf '\\e[?25h'; clear; printf 'a row just filled %*s' $(( $(tput cols) - 18 )) '|'; cat")
    screens.wait_same("a cursor past the last column", has("filled  "))
    screens.both("C-c")


def test_a_program_redrawing_fast_at_random_looks_as_in_a_terminal(screens: Screens) -> None:
    """Thousands of small changes in bursts: every changed row reaches the UI (none left as it was drawn before,
    none drawn from a stale cache), through the host, its rows messages and the view's refreshes."""
    for seed in (7, 11):
        screens.run(f"clear; {shlex.quote(sys.executable)} storm.py {seed} 5000")
        screens.wait_same(f"the drawing of seed {seed}", has("done"), timeout=15)
        screens.both("C-c")
        screens.wait_same("the shell back", lacks("done"))


def test_the_wheel_scrolls_the_history_or_goes_to_a_program_that_asks_for_it(screens: Screens) -> None:
    screens.run("clear; seq 1 200")
    screens.wait_same("a shell's output", has("\n200\n"))
    # No program asks for the mouse: each turn of the wheel shows three lines more of the history.
    screens.wheel(64, 10, 10, ref=False)
    screens.wheel(64, 10, 10, ref=False)
    screens.wait_same("the view 6 lines up its history", has("\n200\n"), back=6)
    screens.run(f"{VIM} -c 'set mouse=a nowrap'")  # typing brings the view back to the live screen
    screens.wait_same("vim, which asks for the mouse", has("1,1", "Top"))
    # Its wheel turns are vim's: it scrolls its window, and the view stays on the live screen.
    for button in (65, 65, 64):
        screens.wheel(button, 10, 10)
    screens.wait_same("vim scrolled by the wheel", lacks("Top"))
    screens.wheel(67, 10, 10)  # the wheel tilted right (xterm's button 7): vim scrolls sideways
    screens.wait_same("vim scrolled sideways by the wheel", lacks("def main"))
    screens.both("-l", ":qa!")
    screens.both("Enter")
    screens.wait_same("vim gone", has("\n200\n"))


def test_a_shell_keeps_its_prompt_at_the_bottom_as_the_terminal_shrinks_and_grows(screens: Screens) -> None:
    """The user's terminal made smaller, then bigger again: the rows that left the top went into the history, and
    come back from it when there is room again (the shell's prompt stays at the bottom), as in a terminal."""
    screens.run("clear; seq 1 200")
    screens.wait_same("a shell's output", has("\n200\n"))
    screens.resize(124, 30)
    screens.wait_same("the output in a smaller terminal", has("\n200\n"))
    screens.resize(150, 44)
    screens.wait_same("the history's lines back in a bigger terminal", has("\n200\n"))
    screens.run("echo after")
    screens.wait_same("more output", has("\nafter\n"))


def test_the_textual_demo_looks_as_in_a_terminal_and_takes_clicks(screens: Screens) -> None:
    screens.run(f"clear; {shlex.quote(sys.executable)} -m textual")
    # Truecolour, block and box drawing, emoji; no cursor.
    screens.wait_same("Textual's demo", has("Welcome keyboard warriors"), timeout=20)
    # A click on the collapsible "▼ Welcome": a mouse report at the agent's own cell, in both.
    rows = screens.panes.pane("ref").split("\n")
    y = next(y for y, row in enumerate(rows) if "▼ Welcome" in row)
    x = cell_len(rows[y].split("▼", 1)[0])
    click = "\x1b[<0;{};{}M\x1b[<0;{};{}m"
    screens.panes("send-keys", "-t", "ref", "-l", click.format(x + 1, y + 1, x + 1, y + 1))
    ux, uy = screens.region.left + x + 1, screens.region.top + y + 1
    screens.panes("send-keys", "-t", "ui", "-l", click.format(ux, uy, ux, uy))
    screens.wait_same("the demo after a click", has("▶ Welcome"))
    screens.both("C-q")
    screens.wait_same("the demo gone", lacks("Welcome"))


def test_a_key_in_a_ui_gives_the_agent_that_uis_size_back(hive_env, tmp_path) -> None:
    """Two UIs show the same agent at different sizes; it takes the size of the one used last, also when the first
    one opened at the size the agent already had (so it never had to resize it)."""
    repo = make_repo(tmp_path / "repo")
    env = dict(hive_env.env, LANG="C.UTF-8", TMUX_TMPDIR=str(tmp_path))
    spawned = run_stem(env, "spawn", "term", "--repo", str(repo), "--agent", SHELL)
    assert spawned.returncode == 0, spawned.stderr
    panes = Panes(dict(env, TERM="xterm-256color"))
    agent = (120, 40)  # the size a colony's agent starts at (core/runtime.py)
    try:
        for name, (columns, lines) in (("first", (agent[0] + 47, agent[1] + 5)), ("second", OUTER)):
            panes(
                "new-session", "-d", "-s", name, "-x", str(columns), "-y", str(lines), "-c", str(repo),
                f"env COLORTERM=truecolor {stem_command()}; echo exited with status $?; sleep 600",
            )  # fmt: skip
            panes.wait_in(name, "bash-")
            panes("send-keys", "-t", name, "Enter")  # the terminal gets the focus
            panes.wait_in(name, "back to panels")
        # The second UI's opening gave the agent its own size; a key in the first gives it the first's back.
        panes.type("first", "clear; echo first at $(stty size)")
        panes.wait_in("first", f"first at {agent[1]} {agent[0]}")
        panes.type("second", "clear; echo second at $(stty size)")
        panes.wait_in("second", f"second at {OUTER[1] - 5} {OUTER[0] - 47}")
        panes.type("first", "clear; echo first again at $(stty size)")
        panes.wait_in("first", f"first again at {agent[1]} {agent[0]}")
    finally:
        panes.kill()
        run_stem(env, "stop", "term")
