"""Keys act in the order they were typed.

Textual hands a key to the focused widget's message queue and runs its binding only when the key comes back up
unhandled, several queues later; a binding that moves the focus (`Widget.focus`) does so from a callback that waits
behind the keys already in the app's queue; a screen pushed takes its focus once it has mounted. Keys read in one
chunk (a burst typed through tmux, keys an SSH link delivers together after a stall, a fast typist) overtook each
other: `/gam` opened the filter line and then the merge dialog (the `m` reached the list before the filter line had
the focus), ctrl+u then a name in a field cleared the name typed after it, the keys typed after `:` were lost while
the palette opened.

`KeyOrder` takes every key and paste as it arrives and hands them on one at a time, each once what the one before
did is in place: a binding's action has run and the app's queue has taken what it posted, a key given to a field
has been taken by that field, a screen pushed has resumed (and so has its focus). Keys that only add to what the
focused field or terminal already takes (characters typed into a field, keys for the agent) go on at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from textual import events
from textual.app import App
from textual.widget import Widget
from textual.widgets import Input

from stem.textual_private import screen_resumed

__all__ = ["AFTER_APP", "KeyOrder"]

# What handing an event on leaves to wait for before the next goes: nothing (None), the app's queue (a binding ran:
# what its action posted, a focus change above all, comes first), or the widget the event was given to.
AFTER_APP = object()
HOLD_WAIT = 5.0  # at most this long for what a key started to open its dialog (`KeyOrder.hold`)
SCREEN_WAIT = 1.0  # at most this long for a screen pushed to resume before the keys typed into it go on anyway
STUCK_WAIT = 1.0  # a widget that closed with the wait in its queue never answers: the keys go on after this
_RETRY = 0.005

Waiting = events.Key | events.Paste
Dispatch = Callable[[Waiting], Awaitable[Any]]


class KeyOrder:
    """Every key and paste of `app`, handed to `dispatch` one at a time (see the module's doc). `dispatch` returns
    what the next event waits for: None, `AFTER_APP` or the widget it gave the event to."""

    def __init__(self, app: App[Any], dispatch: Dispatch) -> None:
        self.app = app
        self.dispatch = dispatch
        self.waiting: deque[Waiting] = deque()
        self._barrier: object = None  # what the last event handed on left to wait for, until it is passed
        self._turn = 0  # which barrier's way back counts (a later event's barrier replaces an earlier one's)
        self._retrying = False
        self._screen_since: float | None = None
        self._holds: dict[object, float] = {}  # hold -> when it was taken

    def hold(self) -> Callable[[], None]:
        """Keep the keys typed from now on waiting until the function returned is called (on the app's loop; at
        most `HOLD_WAIT`): for a key whose dialog opens once a worker has looked something up (destroy, merge,
        commit, sync), so that `d` then `y` answers the dialog rather than going to the list."""
        token = object()
        self._holds[token] = time.monotonic()

        def release() -> None:
            if self._holds.pop(token, None) is not None:
                self.app.call_later(self._run)

        return release

    async def take(self, event: Waiting) -> None:
        """`event` as it arrives from the terminal: handed on now if nothing waits before it."""
        self.waiting.append(event)
        await self._run()

    async def _run(self) -> None:
        """Hand on the waiting events while nothing holds them (always on the app's queue, never two at once)."""
        waiting = self.waiting
        while waiting:
            barrier = self._barrier
            if barrier is not None and not (isinstance(barrier, Widget) and self._goes_to(waiting[0], barrier)):
                return  # the barrier's way back runs this again
            if self._held() or not self._screen_ready():
                if not self._retrying:
                    self._retrying = True
                    self.app.set_timer(_RETRY, lambda: self.app.call_later(self._retry))
                return
            event = waiting.popleft()
            after = await self.dispatch(event)
            if after is not None:
                self._wait_for(after)

    async def _retry(self) -> None:
        self._retrying = False
        await self._run()

    def _held(self) -> bool:
        if not self._holds:
            return False
        now = time.monotonic()
        for token in [t for t, since in self._holds.items() if now - since >= HOLD_WAIT]:
            del self._holds[token]
        return bool(self._holds)

    def _screen_ready(self) -> bool:
        """Whether the screen on top has resumed (a screen just pushed takes its focus then) and, if it says,
        `keys_ready` (a screen that focuses a field of its own choosing a frame later): keys typed into it wait for
        that, at most `SCREEN_WAIT`."""
        screen = self.app.screen
        if screen_resumed(screen) and getattr(screen, "keys_ready", True):
            self._screen_since = None
            return True
        now = time.monotonic()
        if self._screen_since is None:
            self._screen_since = now
        return now - self._screen_since >= SCREEN_WAIT

    def _goes_to(self, event: Waiting, widget: Widget) -> bool:
        """Whether `event` would only be given to `widget` too, behind the event before it in the same queue: text
        typed on into the focused field."""
        if widget is not self.app.screen.focused or not isinstance(widget, Input):
            return False
        return isinstance(event, events.Paste) or event.is_printable

    def _wait_for(self, after: object) -> None:
        """Hold the events to come until what `after` stands for (see `Dispatch`) is passed."""
        self._barrier = after
        self._turn += 1
        turn = self._turn
        app = self.app

        async def passed() -> None:
            if turn == self._turn and self._barrier is not None:
                self._barrier = None  # once: the other way back (`STUCK_WAIT`) finds it passed
                await self._run()

        # A round trip through the queues of the widget the event went to (or that has the focus) and of each of its
        # ancestors up to the app, in turn, and then twice through the app's: whatever the event started there, a
        # message bubbling up to the handler that moves the focus (a field's Submitted, the list's OpenTerminal
        # for the app) above all, and the focus change that handler left in the app's queue, is taken before the
        # next event is handed on.
        start = after if isinstance(after, Widget) else app.screen.focused or app.screen
        chain = [node for node in start.ancestors_with_self if node is not app]

        def step(at: int) -> None:
            if at == len(chain) or not chain[at].call_later(step, at + 1):
                app.call_later(app.call_later, passed)

        step(0)
        app.set_timer(STUCK_WAIT, lambda: app.call_later(passed))
