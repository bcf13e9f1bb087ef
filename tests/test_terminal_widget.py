"""The terminal widget with a real agent session (core.agent.AgentSession, a real PTY, the scripted fake agent):
what is typed reaches the program, what it prints is drawn with its colours, and only changed rows are redrawn.

The sessions run in the test's own network namespace (entering it needs root), so no colony is needed here; the
app tests run the same widget inside real colonies.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FAKE_AGENT_PATH
from rich.color import Color
from textual.app import App, ComposeResult
from textual.widgets import Input
from ui_support import until

from core import netns
from core.agent import AgentSession
from core.events import Event, ScreenChanged
from stem.widgets.terminal import TerminalView

pytestmark = [pytest.mark.root, pytest.mark.anyio]

HERE = Path(__file__).parent
FAKE_AGENT = [sys.executable, str(FAKE_AGENT_PATH)]
# Prints what it reads, byte by byte, in raw mode, after asking for application cursor keys and bracketed paste.
KEY_ECHO = [
    sys.executable,
    "-c",
    "import os,sys,tty;tty.setraw(0);os.write(1,b'\\x1b[?1h\\x1b[?2004hready\\r\\n')\n"
    "while True:\n d=os.read(0,1024)\n os.write(1,(repr(d)+'\\r\\n').encode())\n"
    " if d==b'q': break",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def host_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions enter this process's own namespace instead of a colony's."""
    monkeypatch.setattr(netns, "open_netns", lambda _name: os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))


class TermApp(App[None]):
    """A terminal and an input beside it, the way the Stem app holds it."""

    CSS = "TerminalView { height: 1fr; } Input { height: 3; }"

    def __init__(self, argv: list[str], scrollback: int = 10_000) -> None:
        super().__init__()
        self.argv = argv
        self.scrollback = scrollback
        self.session: AgentSession | None = None
        self.events: list[Event] = []
        self.released = 0

    def compose(self) -> ComposeResult:
        yield TerminalView(id="term")
        yield Input(id="other")

    def on_mount(self) -> None:
        view = self.query_one(TerminalView)
        self.session = AgentSession(
            self.argv,
            netns_name="host",
            cwd=HERE,
            env=dict(os.environ),
            colony="t",
            emit=self.on_core_event,
            scrollback=self.scrollback,
        )
        self.session.start()
        view.show("t", self.session)
        view.focus()

    def on_core_event(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, ScreenChanged):
            self.query_one(TerminalView).screen_changed(event.rows)

    def on_terminal_view_released(self, _message: TerminalView.Released) -> None:
        self.released += 1
        self.query_one(Input).focus()

    async def on_unmount(self) -> None:
        if self.session is not None:
            await self.session.stop(grace=1.0)


@contextlib.asynccontextmanager
async def at_prompt(scrollback: int = 10_000) -> AsyncIterator[tuple[TermApp, Any]]:
    """The app with the fake agent in its terminal, once the agent's prompt is drawn."""
    app = TermApp(FAKE_AGENT, scrollback)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shows(app, "fake-agent> "), "the prompt")
        yield app, pilot


def drawn(app: TermApp) -> list[str]:
    """What the widget draws now, row by row (its own render, as the compositor asks for it)."""
    view = app.query_one(TerminalView)
    return [view.render_line(y).text for y in range(view.scrollable_content_region.height)]


def shows(app: TermApp, text: str) -> bool:
    return any(text in line for line in drawn(app))


async def test_typing_reaches_the_agent_and_its_echo_is_drawn() -> None:
    async with at_prompt() as (app, pilot):
        await pilot.press(*"hello", "enter")
        await until(pilot, lambda: shows(app, "echo: hello"), "the echo")
        # Keys the app would otherwise take ("q", tab) went to the agent too.
        await pilot.press("q", "tab", "x", "enter")
        # The tab reaches the program as a tab: its echo jumps to the next tab stop.
        await until(pilot, lambda: any(line.startswith("echo: q x") for line in drawn(app)), "q, tab, x echoed")
        assert app.query_one(TerminalView).has_focus


async def test_ctrl_c_interrupts_the_agent_not_the_app() -> None:
    async with at_prompt() as (app, pilot):
        await pilot.press(*"sleep 30", "enter")
        await until(pilot, lambda: shows(app, "echo: sleep 30"), "the command to start")
        await pilot.press("ctrl+c")
        await until(pilot, lambda: shows(app, "interrupted"), "the agent to be interrupted")
        assert app.is_running


async def test_the_release_chord_gives_focus_back() -> None:
    async with at_prompt() as (app, pilot):
        await pilot.press("ctrl+right_square_bracket")
        await pilot.pause()
        assert app.released == 1
        assert app.query_one(Input).has_focus
        await pilot.press(*"abc")
        assert app.query_one(Input).value == "abc"
        await pilot.pause()
        assert not shows(app, "abc"), "keys typed after the release went to the agent"


async def test_keys_are_encoded_for_the_mode_the_program_asked_for() -> None:
    app = TermApp(KEY_ECHO)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shows(app, "ready"), "the key echo program")
        assert app.session is not None and app.session.screen.app_cursor_keys
        await pilot.press("up")
        await until(pilot, lambda: shows(app, r"b'\x1bOA'"), "up in application cursor mode")
        await pilot.press("ctrl+left")
        await until(pilot, lambda: shows(app, r"b'\x1b[1;5D'"), "ctrl+left")
        await pilot.press("f5")
        await until(pilot, lambda: shows(app, r"b'\x1b[15~'"), "f5")
        await pilot.press("alt+b")
        await until(pilot, lambda: shows(app, r"b'\x1bb'"), "alt+b")
        app.query_one(TerminalView).post_message(_paste("one\ntwo"))
        await until(pilot, lambda: shows(app, r"b'\x1b[200~one\rtwo\x1b[201~'"), "a bracketed paste")


def _paste(text: str):
    from textual import events

    return events.Paste(text)


async def test_colours_attributes_and_wide_characters() -> None:
    async with at_prompt() as (app, pilot):
        await pilot.press(*"color", "enter")
        await until(pilot, lambda: shows(app, "pink-truecolor"), "the colour line")
        view = app.query_one(TerminalView)
        row = next(y for y, line in enumerate(drawn(app)) if "pink-truecolor" in line and "echo" not in line)
        styles = {seg.text.strip(): seg.style for seg in view.render_line(row) if seg.text.strip()}
        assert styles["red"].color == Color.from_ansi(1)
        assert styles["bright-green"].color == Color.from_ansi(10)
        assert styles["orange-256"].color is not None and styles["orange-256"].color.triplet == (255, 135, 0)
        assert styles["blue-bg-256"].bgcolor is not None and styles["blue-bg-256"].bgcolor.triplet == (0, 95, 135)
        assert styles["pink-truecolor"].color is not None
        assert styles["pink-truecolor"].color.triplet == (255, 105, 180)
        assert styles["bold-underline"].bold and styles["bold-underline"].underline

        await pilot.press(*"unicode", "enter")
        await until(pilot, lambda: shows(app, "wide: 你好世界"), "wide characters")
        # Emoji with VS16 and ZWJ: nothing after them is lost, and each stays in the cells the screen gave it (an
        # emoji the screen counts one cell is drawn without its VS16, which would make it two)
        await until(pilot, lambda: shows(app, "the end"), "the text after VS16 and ZWJ")
        line = next(line for line in drawn(app) if "the end" in line and "echo" not in line)
        # the skin tone takes two cells on the screen (as in xterm) and none for rich, and terminals differ on it
        # (tmux: two cells, others: joined to the emoji): drawn as two blanks, so no terminal shifts the row
        assert "⚠ warning, ✔ done, 👨\u200d💻 dev, 🇨🇳 flag, 👍   tone, the end" in line
        assert "\U0001f3fd" not in "".join(seg.text for y in range(10) for seg in view.render_line(y))
        width = view.scrollable_content_region.width
        assert all(view.render_line(y).cell_length == width for y in range(10)), "a row is not the widget's width"


async def test_dim_concealed_double_underlined_and_overlined_text_is_drawn_so() -> None:
    """Agents draw hints dim (SGR 2): drawn dim, not at full brightness like their content; concealed text (8) as
    blanks; a double underline (21, 4:2) as rich's underline2, an overline (53) as an overline, a curly one (4:3)
    as an underline."""
    async with at_prompt() as (app, pilot):
        await pilot.press(*"hints", "enter")
        await until(pilot, lambda: shows(app, "plain") and shows(app, "overline"), "the hints line")
        view = app.query_one(TerminalView)
        row = next(y for y, line in enumerate(drawn(app)) if "dim-hint" in line and "echo" not in line)
        strip = view.render_line(row)
        styles = {seg.text.strip(): seg.style for seg in strip if seg.text.strip()}
        assert styles["done"].bold and not styles["done"].dim
        assert styles["dim-hint"].dim and not styles["dim-hint"].bold
        assert styles["bold-dim"].bold and styles["bold-dim"].dim
        assert styles["double"].underline2 and not styles["double"].underline
        assert styles["colon-double"].underline2 and not styles["colon-double"].underline
        assert styles["overline"].overline and not styles["overline"].underline
        assert styles["curly"].underline and not styles["curly"].underline2
        plain = styles["plain"]
        assert not (plain.bold or plain.dim or plain.underline or plain.underline2 or plain.overline)
        line = "".join(seg.text for seg in strip)
        assert "secret" not in line and "bold-dim" + " " * 8 + "double" in line  # concealed: blanks in its cells


async def test_the_cursor_is_drawn_reversed() -> None:
    async with at_prompt() as (app, _pilot):
        view = app.query_one(TerminalView)
        assert app.session is not None
        cursor = app.session.screen.cursor
        strip = view.render_line(cursor.y)
        cell = strip.crop(cursor.x, cursor.x + 1)
        base = view.rich_style
        style = next(iter(cell)).style
        assert style is not None and style.bgcolor == base.color, "the cursor cell is not in the reverse colours"


async def test_the_cursor_of_a_row_just_filled_is_drawn_on_its_last_column() -> None:
    """Typing a command that ends at the last column leaves the cursor past it, its wrap pending: xterm and tmux show
    it on the last column; it must not vanish."""
    async with at_prompt() as (app, pilot):
        view = app.query_one(TerminalView)
        assert app.session is not None
        screen = app.session.screen
        await pilot.press(*("x" * (screen.columns - len("fake-agent> "))))
        await until(pilot, lambda: screen.cursor.x == screen.columns, "the row filled")
        base = view.rich_style
        last = next(iter(view.render_line(screen.cursor.y).crop(screen.columns - 1, screen.columns))).style
        assert last is not None and last.bgcolor == base.color, "no cursor on the last column"


async def test_only_changed_rows_are_rendered_again() -> None:
    async with at_prompt() as (app, pilot):
        view = app.query_one(TerminalView)
        rendered: list[int] = []
        original = view._render_row

        def counting(screen, y, cursor_x, base):
            rendered.append(y)
            return original(screen, y, cursor_x, base)

        view._render_row = counting  # type: ignore[method-assign]
        asked: list[int] = []
        view.on_rendered = lambda row, strip: asked.append(row)
        assert app.session is not None
        screen = app.session.screen
        await pilot.press("z")
        await until(pilot, lambda: shows(app, "fake-agent> z"), "the echo of z")
        rendered.clear()
        asked.clear()
        # A full repaint asks for every row, but only the cursor's row is built again: the rest is cached.
        view.refresh()
        await until(pilot, lambda: len(asked) >= screen.lines, "a full repaint")
        assert set(rendered) == {screen.cursor.y}, f"rows rebuilt: {sorted(set(rendered))}"
        # Output that changes other rows rebuilds exactly those rows.
        rendered.clear()
        await pilot.press("enter")
        await until(pilot, lambda: shows(app, "echo: z"), "the echo line")
        await pilot.pause()
        assert 0 < len(set(rendered)) <= 4, f"rows rebuilt for one line of output: {sorted(set(rendered))}"


async def test_a_hidden_terminal_is_not_redrawn() -> None:
    async with at_prompt() as (app, pilot):
        view = app.query_one(TerminalView)
        calls: list[int] = []
        view.on_rendered = lambda row, strip: calls.append(row)
        view.display = False
        await pilot.pause()
        calls.clear()
        assert app.session is not None
        app.session.write(b"flood 300\r")
        await until(pilot, lambda: any("line 000300" in r for r in app.session.screen.text()), "the flood to end")
        await pilot.pause()
        assert calls == [], f"a hidden terminal rendered {len(calls)} rows"
        view.display = True
        await until(pilot, lambda: calls, "a repaint once shown")
        assert shows(app, "line 000300")


async def test_resizing_the_window_resizes_the_pty() -> None:
    async with at_prompt() as (app, pilot):
        view = app.query_one(TerminalView)
        assert app.session is not None
        screen = app.session.screen
        assert (screen.columns, screen.lines) == (view.scrollable_content_region.width, 27)
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: screen.columns == view.scrollable_content_region.width, "the PTY to resize")
        assert screen.lines == 21
        await pilot.press(*"size", "enter")
        await until(pilot, lambda: shows(app, f"size: {screen.columns}x21"), "the program to see the new size")


async def wheel_up(pilot: Any, view: TerminalView, turns: int) -> None:
    """The mouse wheel turned up `turns` times over the terminal, as the driver reports it."""
    from textual.events import MouseScrollUp

    for _ in range(turns):
        await pilot._post_mouse_events([MouseScrollUp], view, offset=(10, 10))
    await pilot.pause()


async def test_the_mouse_wheel_scrolls_back_and_typing_returns_to_the_bottom() -> None:
    async with at_prompt() as (app, pilot):
        await pilot.press(*"flood 200", "enter")
        await until(pilot, lambda: shows(app, "line 000200"), "the flood")
        view = app.query_one(TerminalView)
        await wheel_up(pilot, view, 20)
        assert view.scrolled_back >= 50
        assert not shows(app, "line 000200")
        assert shows(app, "line 0001")
        await pilot.press("x")
        await until(pilot, lambda: view.scrolled_back == 0, "the view to follow the bottom again")
        assert shows(app, "fake-agent> x")


@pytest.mark.parametrize("scrollback", [10_000, 300], ids=["history-grows", "history-full"])
async def test_a_view_scrolled_back_holds_its_lines_while_the_agent_prints(scrollback: int) -> None:
    """Reading history while the agent works: the lines in view stay put as new lines arrive below, also once the
    history is full and its oldest lines are dropped for the new ones."""
    async with at_prompt(scrollback) as (app, pilot):
        await pilot.press(*"flood 400", "enter")
        await until(pilot, lambda: shows(app, "line 000400"), "the flood")
        view = app.query_one(TerminalView)
        await wheel_up(pilot, view, 40)  # 120 lines up (WHEEL_LINES a turn)
        before = drawn(app)
        assert any("line 0002" in line for line in before), before
        # More output, written to the agent without a key in the widget (a key would go back to the bottom).
        assert app.session is not None
        app.session.write(b"flood 150\r")
        screen = app.session.screen
        await until(pilot, lambda: "line 000150" in "".join(screen.display), "the second flood")
        await pilot.pause()
        assert drawn(app) == before
        assert view.scrolled_back > 150


def test_every_one_of_the_16_background_colours_shows() -> None:
    """pyte names bright magenta's background (SGR 105) "bfightmagenta": it shows as colour 13 all the same."""
    from core.screen import StemScreen
    from stem.widgets.terminal import _color

    screen = StemScreen(40, 2)
    screen.feed(b"".join(b"\x1b[%dmx" % n for n in [*range(40, 48), *range(100, 108)]))
    row = screen.buffer[0]
    assert [_color(row[x].bg).number for x in range(16)] == list(range(16))  # type: ignore[union-attr]


def test_half_a_wide_character_drawn_over_is_a_blank_and_the_row_keeps_its_width() -> None:
    """A program that writes over one cell of a wide character (vim redrawing a split over CJK text) leaves the other
    half: shown as a blank (tmux shows a stub left alone so), rather than the character drawn over the next cell (which
    pushed the rest of the row, and the panel's border, one cell right) or nothing (one cell left)."""
    from rich.style import Style

    from core.screen import StemScreen

    screen = StemScreen(10, 3)
    screen.feed("中文\x1b[1;2Hx\x1b[2;1H中文\x1b[2;3Hy\x1b[3;1Habcdefghi\x1b[?7l\x1b[3;10H中".encode())
    view = TerminalView()
    strips = [view._render_cells(screen.buffer[y], 10, -1, Style(), screen.default_char) for y in range(3)]
    assert [strip.text for strip in strips] == [" x文      ", "中y       ", "abcdefghi "]
    assert [strip.cell_length for strip in strips] == [10, 10, 10]
    assert screen.text() == [strip.text for strip in strips]


def test_the_16_colours_by_256_colour_index_take_the_theme_s_colours() -> None:
    """htop, mc and vim under xterm-256color colour with 38;5;N and 48;5;N: N < 16 shows in the theme's ANSI colour
    N, as SGR 31 or 105 does (xterm and tmux draw them alike), not in a fixed RGB that ignores the theme."""
    from rich.style import Style

    from core.screen import StemScreen

    screen = StemScreen(40, 2)
    screen.feed(b"".join(b"\x1b[38;5;%d;48;5;%dmx" % (n, 15 - n) for n in range(16)))
    strip = TerminalView()._render_cells(screen.buffer[0], 40, -1, Style(), screen.default_char)
    shown = [(seg.style.color, seg.style.bgcolor) for seg in strip if seg.text == "x" and seg.style]
    assert shown == [(Color.from_ansi(n), Color.from_ansi(15 - n)) for n in range(16)]
