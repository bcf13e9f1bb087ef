"""Every private Textual API Stem uses, in this one module. Each is bounded by the `textual<9` pin in pyproject.toml
and exercised by tests/test_textual_private.py, which fails when a Textual upgrade removes or changes one.

Why each is needed (Textual 8 has no public way):
- the key parser and its helpers: Stem's driver parses the user's keys itself, to hand agents the exact bytes;
- `App._check_bindings`: a key for a focused terminal goes to the agent after the priority bindings only; the
  new-colony key runs as it arrives, not after a trip through the focused list's queue;
- the compositor: a keystroke's echo is painted at once, not after the screen's update timer;
- `App._refresh_truecolor_filter`: the configured theme is applied before the stylesheet is first parsed;
- `Tabs._highlight_active`: the active tab's underline, after the tabs come back from being hidden;
- `Widget._forward_event` and the meaning of `Screen.stack_updates`: keys are handed on in the order they were typed
  (stem/key_order.py);
- `CommandPalette._select_or_command` and its search worker's group: enter typed right after the search text acts
  on that text's results (`StemPalette`);
- `App._begin_batch`/`_end_batch`, `Screen._compositor_refresh` and `_on_timer_update`: the first frame is drawn
  once, whole, as soon as it is (`HoldingScreen`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from rich.terminal_theme import TerminalTheme
from textual import on
from textual._loop import loop_last
from textual._parser import ParseEOF, ParseError, ParseTimeout, Peek1, Read1
from textual._xterm_parser import XTermParser
from textual.app import App
from textual.command import CommandPalette
from textual.driver import Driver
from textual.events import Event, Key
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, Tabs
from textual.worker import WorkerCancelled, WorkerError, WorkerFailed

__all__ = [
    "HoldingScreen",
    "ParseEOF",
    "ParseError",
    "ParseTimeout",
    "Peek1",
    "Read1",
    "StemPalette",
    "XTermParser",
    "check_priority_bindings",
    "driver_debug",
    "driver_of",
    "forward",
    "has_screen",
    "in_batch",
    "loop_last",
    "notifications",
    "paint_now",
    "realign_tabs",
    "refresh_truecolor_filter",
    "screen_resumed",
    "screen_strips",
    "sequence_to_key_events",
]


def screen_resumed(screen: Screen[Any]) -> bool:
    """Whether `screen` has taken its `ScreenResume` since it came on top (and with it its focus): Textual counts
    each resume and each suspend in `stack_updates`, so an odd count is a screen on top that has resumed."""
    return screen.stack_updates % 2 == 1


def forward(widget: Widget, event: Event) -> None:
    """Give `event` (a key or a paste) to `widget` as the app gives one to the focused widget."""
    widget._forward_event(event)


def has_screen(app: App[Any]) -> bool:
    """Whether the app has a screen yet (the public `screen_stack` copies the stack on every call)."""
    return bool(app._screen_stack)


async def check_priority_bindings(app: App[Any], key: str) -> bool:
    """Run the priority binding for `key`, if any; whether one ran."""
    return await app._check_bindings(key, priority=True)


async def check_bindings(app: App[Any], key: str) -> bool:
    """Run the binding for `key` as Textual would once the key comes back from the focused widget unhandled (the
    priority ones, then from the focused widget up); whether one ran."""
    return await app._check_bindings(key, priority=True) or await app._check_bindings(key)


def refresh_truecolor_filter(app: App[Any], theme: TerminalTheme) -> None:
    """What `App.watch_theme` does to the ANSI colour filter, without its full stylesheet parse."""
    app._refresh_truecolor_filter(theme)


def in_batch(app: App[Any]) -> bool:
    """Inside `App.batch_update()`: painting now would show a half-made frame."""
    return app._batch_count > 0


def paint_now(screen: Screen[Any], widgets: Iterable[Widget]) -> None:
    """Put `widgets`' changed rows on the terminal now, as the screen's own update timer would."""
    screen._compositor.update_widgets(set(widgets))
    screen._compositor_refresh()


class HoldingScreen(Screen[Any]):
    """A screen that can hold its first frame until what it shows is there (`hold`, then `release`).

    An app batch alone stops frames from reaching the terminal, but Textual still renders every layout made during
    it (only to drop the result): ~15-25 ms of the event loop each, at start-up, while the hosts' snapshots wait.
    Held, this screen renders nothing; released, it lays out and draws everything at once, without waiting for
    its update timer."""

    held = False

    def hold(self) -> None:
        if not self.held:
            self.held = True
            self.app._begin_batch()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.app._end_batch()
            self.refresh(layout=True)
            self._on_timer_update()

    def _compositor_refresh(self) -> None:
        if not self.held:
            super()._compositor_refresh()


def realign_tabs(tabs: Tabs) -> None:
    """Put the active tab's underline under it (Tabs' own resize handler calls this)."""
    tabs._highlight_active(animate=False)


def driver_of(app: App[Any]) -> Driver | None:
    return app._driver


def driver_debug(driver: Driver) -> bool:
    """The debug flag a driver passes to its key parser."""
    return driver._debug


def sequence_to_key_events(parser: XTermParser, sequence: str) -> Iterable[Key]:
    """The key events Textual makes of an input `sequence`."""
    return parser._sequence_to_key_events(sequence)


def screen_strips(screen: Screen[Any]) -> list[Strip]:
    """The screen's rows as the compositor would draw them now (what a user would read)."""
    return list(screen._compositor.render_strips())


def notifications(app: App[Any]) -> list[Any]:
    """The notifications (toasts) showing now."""
    return list(app._notifications)


class StemPalette(CommandPalette):
    """Textual's command palette, where enter typed right after the search text (`:stop all` and enter, typed at
    once) acts on the results for that text: Textual's acted on the list shown before the search was in, and so
    ran its first command ("New colony")."""

    @on(Input.Submitted)
    async def _submitted_after_search(self, event: Input.Submitted) -> None:
        searches = [
            worker
            for worker in self.workers
            if worker.node is self and worker.group == self._GATHER_COMMANDS_GROUP and not worker.is_finished
        ]
        if not searches:
            return  # Textual's own handler acts on the list shown
        event.prevent_default()
        event.stop()
        for worker in searches:
            with contextlib.suppress(WorkerError, WorkerCancelled, WorkerFailed):
                await worker.wait()
        self._select_or_command()
