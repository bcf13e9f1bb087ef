"""The private Textual API Stem uses (stem/textual_private.py), each called on the real thing: a Textual upgrade that
removes or changes one fails here, by name, rather than somewhere in the app."""

from __future__ import annotations

import inspect

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.screen import Screen
from textual.widgets import Static, TabbedContent, TabPane, Tabs

from stem import textual_private as private
from stem.input_parser import StemParser

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Probe(App[None]):
    BINDINGS = [("ctrl+q", "noted", "")]

    def __init__(self) -> None:
        super().__init__()
        self.noted = 0

    def compose(self) -> ComposeResult:
        with TabbedContent():
            yield TabPane("One", Static("one", id="one"))
            yield TabPane("Two", Static("two"))

    def action_noted(self) -> None:
        self.noted += 1


async def test_every_private_api_is_there_and_works():
    app = Probe()
    async with app.run_test() as pilot:
        assert private.has_screen(app)
        assert await private.check_priority_bindings(app, "ctrl+q") is False  # not a priority binding
        assert app.noted == 0
        assert await private.check_bindings(app, "ctrl+q") is True
        assert app.noted == 1
        assert await private.check_bindings(app, "x") is False
        assert not private.in_batch(app)
        with app.batch_update():
            assert private.in_batch(app)
        private.refresh_truecolor_filter(app, app.ansi_theme)
        private.paint_now(app.screen, [app.query_one("#one", Static)])
        private.realign_tabs(app.query_one(Tabs))
        assert isinstance(private.driver_of(app), Driver)
        app.notify("a toast")
        await pilot.pause()
        assert [note.message for note in private.notifications(app)] == ["a toast"]
        assert any("one" in strip.text for strip in private.screen_strips(app.screen))
        # A screen on top has resumed; one just pushed has not, until its ScreenResume is taken; the one under it
        # again once it is back on top and resumed.
        base = app.screen
        assert private.screen_resumed(base)
        pushed = Screen()
        app.push_screen(pushed)
        assert not private.screen_resumed(pushed)
        await pilot.pause()
        assert private.screen_resumed(pushed) and not private.screen_resumed(base)
        app.pop_screen()
        await pilot.pause()
        assert private.screen_resumed(base)
        # A key given to a widget as the app gives one to the focused widget: back up unhandled, its binding runs.
        private.forward(app.query_one(Tabs), events.Key("ctrl+q", "\x11"))
        await pilot.pause()
        assert app.noted == 2


async def test_the_key_parser_internals_stem_parser_builds_on():
    parser = StemParser()
    assert [key.key for key in private.sequence_to_key_events(parser, "\x1b[A")] == ["up"]
    assert "debug" in inspect.signature(private.XTermParser.__init__).parameters
    assert callable(private.loop_last) and issubclass(private.ParseEOF, Exception)
    for name in ("Read1", "Peek1", "ParseError", "ParseTimeout"):
        assert isinstance(getattr(private, name), type), name
    # What StemDriver.run_input_thread (a copy of LinuxDriver's) and StemParser.parse use of their bases.
    for attribute in ("run_input_thread", "process_message", "stop_application_mode"):
        assert callable(getattr(LinuxDriver, attribute)), attribute
    for attribute in ("parse_mouse_code", "feed", "tick", "read1"):
        assert callable(getattr(private.XTermParser, attribute)), attribute
    assert parser.is_eof is False and parser.mouse_pixels is False
    assert [key.key for key in parser.feed("\x1b[B")] == ["down"]  # StemParser.parse on the base's machinery
    driver = LinuxDriver(Probe(), debug=True)
    assert private.driver_debug(driver) is True
    assert hasattr(driver, "exit_event") and hasattr(driver, "fileno")
