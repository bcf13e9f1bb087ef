"""The terminal widget beyond keys, with a real agent session: text selected with the mouse is copied to the user's
clipboard with OSC 52, the agent's own clipboard writes reach the user's terminal, hyperlinks stay links, and the
agent is told its colours (OSC 10/11), focus (1004) and mouse events (1000/1006) as xterm tells them."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest
from test_terminal_widget import FAKE_AGENT, TermApp, drawn, host_namespace, shows  # noqa: F401 - a fixture
from textual.widgets import Input
from ui_support import until

from core.events import Event
from stem.widgets.terminal import TerminalView

pytestmark = [pytest.mark.root, pytest.mark.anyio]

# Asks for focus reports and mouse reports, asks its background colour, then prints what it reads.
REPORTS_ECHO = [
    sys.executable,
    "-c",
    "import os,tty;tty.setraw(0);os.write(1,b'\\x1b[?1004h\\x1b[?1000h\\x1b[?1006h\\x1b]11;?\\x07ready\\r\\n')\n"
    "while True:\n d=os.read(0,1024)\n os.write(1,(repr(d)+'\\r\\n').encode())",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ClipboardApp(TermApp):
    """The terminal test app; the agent's last screen events, sent as it is stopped on unmount, find no widget."""

    def on_core_event(self, event: Event) -> None:
        if self.query(TerminalView):
            super().on_core_event(event)


def written(app: ClipboardApp) -> list[str]:
    """What the app writes to the user's terminal from now on (the headless driver discards it otherwise)."""
    out: list[str] = []
    driver: Any = app._driver
    original = driver.write

    def write(data: str) -> None:
        out.append(data)
        original(data)

    driver.write = write
    return out


def osc52(text: str) -> str:
    return f"\x1b]52;c;{base64.b64encode(text.encode()).decode()}\x07"


def where(app: ClipboardApp, text: str) -> tuple[int, int]:
    for y, line in enumerate(drawn(app)):
        if text in line and "echo:" not in line:
            return line.index(text), y
    raise AssertionError(f"{text!r} is not drawn: {drawn(app)}")


async def test_a_drag_over_the_terminal_copies_the_text_with_osc_52() -> None:
    app = ClipboardApp(FAKE_AGENT)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shows(app, "fake-agent> "), "the prompt")
        await pilot.press(*"say", "enter")
        await until(pilot, lambda: shows(app, "unknown command: say"), "the agent's answer")
        out = written(app)
        view = app.query_one(TerminalView)
        x, y = where(app, "unknown command: say")
        # From the first character to the last, both included (as a terminal selects).
        end = x + len("unknown command") - 1
        await pilot.mouse_down(view, offset=(x, y))
        await pilot.hover(view, offset=(end, y))
        await pilot.mouse_up(view, offset=(end, y))
        await until(pilot, lambda: app.clipboard == "unknown command", "the selection on the clipboard")
        assert osc52("unknown command") in out
        # Over two lines: each line as drawn, its trailing blanks dropped.
        await pilot.mouse_down(view, offset=(0, y - 1))
        await pilot.hover(view, offset=(3, y))
        await pilot.mouse_up(view, offset=(3, y))
        await until(pilot, lambda: app.clipboard == "echo: say\nunkn", "two lines on the clipboard")
        assert osc52("echo: say\nunkn") in out


async def test_the_agents_clipboard_writes_reach_the_users_terminal() -> None:
    app = ClipboardApp(FAKE_AGENT)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shows(app, "fake-agent> "), "the prompt")
        out = written(app)
        await pilot.press(*"copy from the agent é", "enter")
        await until(pilot, lambda: osc52("from the agent é") in out, "the agent's OSC 52 on the user's terminal")
        assert app.clipboard == "from the agent é"


async def test_hyperlinks_are_drawn_as_links() -> None:
    app = ClipboardApp(FAKE_AGENT)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shows(app, "fake-agent> "), "the prompt")
        await pilot.press(*"link https://example.com/docs the docs", "enter")
        await until(pilot, lambda: shows(app, "see the docs here"), "the link")
        view = app.query_one(TerminalView)
        _x, y = where(app, "see the docs here")
        links = {seg.text: seg.style.link for seg in view.render_line(y) if seg.style is not None}
        assert links.get("the docs") == "https://example.com/docs"
        assert all(link is None for text, link in links.items() if text != "the docs")


async def test_the_agent_is_told_its_colours_focus_and_mouse_events() -> None:
    app = ClipboardApp(REPORTS_ECHO)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(TerminalView)
        await until(pilot, lambda: shows(app, "ready"), "the reports echo program")
        # OSC 11: the background it is drawn on, as xterm reports it (16 bits a channel).
        bg = view.rich_style.bgcolor
        assert bg is not None
        red, green, blue = bg.get_truecolor()
        answer = f"\\x1b]11;rgb:{red * 257:04x}/{green * 257:04x}/{blue * 257:04x}\\x07"
        await until(pilot, lambda: shows(app, answer), "the background colour answered")
        # 1004: focus out and in as the terminal loses and regains the focus.
        app.query_one(Input).focus()
        await until(pilot, lambda: shows(app, r"b'\x1b[O'"), "a focus-out report")
        view.focus()
        await until(pilot, lambda: shows(app, r"b'\x1b[I'"), "a focus-in report")
        # 1000 + 1006: a click at the agent's cell (3, 2) from 1, in SGR form; the selection stays off.
        assert not view.allow_select
        await pilot.click(view, offset=(2, 1))
        await until(pilot, lambda: shows(app, r"\x1b[<0;3;2M") and shows(app, r"\x1b[<0;3;2m"), "the click")
