"""The agent's terminal: a colony's `StemScreen` drawn through the Line API, with every key forwarded to the agent.

Rows are rendered to `Strip`s and cached by (row, row version), so an unchanged row is never rebuilt; the cursor
row is never cached. Changed rows arrive as `ScreenChanged` events and are refreshed at most ~60 times a second,
and only while the widget is on screen. Focused, the widget sends every key to the agent and stops it, except the
release chord (binding id `terminal.release`, ctrl+] by default), which hands focus back to the panels.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pyte.screens import Char
from rich.cells import cell_len
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

try:  # the core's key encoder; the UI still renders (and cannot type) without it
    from core.agent import encode_key
except ImportError:  # pragma: no cover - only while the core is being assembled
    encode_key = None  # type: ignore[assignment]

__all__ = ["FRAME", "AgentLike", "TerminalView", "cell_style"]

# The terminal repaints at most this often; bursts of output within one frame become one repaint.
FRAME = 1 / 60
# Output this soon after a key is probably its echo: it is painted at once rather than at Textual's next frame,
# which under load (other colonies flooding) is several event-loop turns away.
ECHO_WINDOW = 0.25
# Rows kept rendered; two screens' worth covers a full screen plus rows that changed back and forth.
CACHE_ROWS = 256
WHEEL_LINES = 3


class AgentLike(Protocol):
    """What the terminal needs from an agent session (core.agent.AgentSession provides it)."""

    @property
    def screen(self) -> Any: ...

    def write(self, data: bytes) -> None: ...

    def paste(self, text: str) -> None: ...

    def resize(self, columns: int, lines: int) -> None: ...


# pyte's names for the 16 ANSI colours ("brown" is its name for yellow); 256-colour and truecolour cells carry
# six hex digits.
_ANSI = {
    "black": 0,
    "red": 1,
    "green": 2,
    "brown": 3,
    "yellow": 3,
    "blue": 4,
    "magenta": 5,
    "cyan": 6,
    "white": 7,
    "brightblack": 8,
    "brightred": 9,
    "brightgreen": 10,
    "brightbrown": 11,
    "brightyellow": 11,
    "brightblue": 12,
    "brightmagenta": 13,
    "brightcyan": 14,
    "brightwhite": 15,
}
_HEX = frozenset("0123456789abcdefABCDEF")


def _color(name: str) -> Color | None:
    if name == "default" or not name:
        return None
    index = _ANSI.get(name)
    if index is not None:
        return Color.from_ansi(index)
    if len(name) == 6 and _HEX.issuperset(name):
        return Color.from_rgb(int(name[0:2], 16), int(name[2:4], 16), int(name[4:6], 16))
    try:
        return Color.parse(name)
    except Exception:
        return None


def cell_style(attrs: tuple[Any, ...], base: Style) -> Style:
    """The rich Style of a cell with pyte attributes `attrs` = (fg, bg, bold, italics, underscore, strikethrough,
    reverse, blink) on a terminal whose default colours are `base`'s. Reverse is resolved here, against the
    default colours, because a reversed cell with "default" colours has no colours for rich to swap."""
    fg, bg, bold, italics, underscore, strikethrough, reverse, _blink = attrs
    color = _color(fg) or base.color
    bgcolor = _color(bg) or base.bgcolor
    if reverse:
        color, bgcolor = bgcolor, color
    return Style(
        color=color,
        bgcolor=bgcolor,
        bold=bold or None,
        italic=italics or None,
        underline=underscore or None,
        strike=strikethrough or None,
    )


class TerminalView(ScrollView, can_focus=True):
    """Shows one agent session at a time; scroll up (mouse wheel, or shift+pageup when not focused) for history."""

    BINDINGS = [
        Binding(
            "ctrl+right_square_bracket",
            "release",
            "back to panels",
            id="terminal.release",
            key_display="ctrl+]",
            priority=True,
        ),
    ]

    COMPONENT_CLASSES = {"terminal--cursor", "terminal--cursor-blurred"}

    DEFAULT_CSS = """
    TerminalView {
        background: $background;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
    }
    TerminalView > .terminal--cursor {
        background: $foreground;
        color: $background;
    }
    TerminalView > .terminal--cursor-blurred {
        background: $foreground-muted;
        color: $background;
    }
    """

    class Released(Message):
        """The user pressed the release chord: focus goes back to the panels."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.session: AgentLike | None = None
        self.colony: str | None = None
        self.awaiting: str | None = None  # a colony whose agent is being spawned; keys wait for it
        self._typeahead: list[tuple[str, str | None] | str] = []  # keys (name, character) and pastes
        self._cache: OrderedDict[tuple[int, int], Strip] = OrderedDict()
        self._styles: dict[tuple[Any, ...], Style] = {}
        self._base: Style | None = None
        self._pending: set[int] = set()
        self._stale = True  # something changed while the widget was hidden: repaint everything when shown
        self._timer: Timer | None = None
        self._last_flush = 0.0
        self._follow = True
        self._cursor_row = -1
        self._scrollback_seen = 0
        self._typed_at = float("-inf")
        self.on_rendered: Callable[[int, Strip], None] | None = None  # benchmark hook: (row, strip)

    # ------------------------------------------------------------------------------------------ session

    def expect(self, colony: str, typed: Iterable[tuple[str, str | None]] = ()) -> None:
        """The agent of `colony` is on its way (a spawn is running): keys typed until it is shown are kept, then
        sent to it in order, so nothing typed right after the form closes is lost or taken as a command."""
        self.show(None, None)
        self.awaiting = colony
        self._typeahead = list(typed)

    def cancel_expect(self) -> None:
        """The awaited agent will not come (the spawn failed): drop what was typed for it."""
        self.awaiting = None
        self._typeahead.clear()

    def show(self, colony: str | None, session: AgentLike | None) -> None:
        """Display `session` (the agent of `colony`), or nothing."""
        if session is not None and colony is not None and colony == self.awaiting:
            self.awaiting = None
            typed, self._typeahead = self._typeahead, []
            self._show(colony, session)
            for item in typed:
                if isinstance(item, str):
                    session.paste(item)
                else:
                    self._write_key(session, *item)
            return
        self._show(colony, session)

    def _show(self, colony: str | None, session: AgentLike | None) -> None:
        if session is self.session and colony == self.colony:
            return
        self.session = session
        self.colony = colony
        self._cache.clear()
        self._pending.clear()
        self._follow = True
        self._cursor_row = -1
        self._fit_session()
        self._sync_size()
        self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def screen_changed(self, rows: Iterable[int]) -> None:
        """Rows of the shown session's screen changed; repaint them within a frame."""
        self._pending.update(rows)
        if self._timer is not None:
            return
        wait = self._last_flush + FRAME - time.monotonic()
        if wait <= 0:
            self._flush()
        else:
            self._timer = self.set_timer(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._last_flush = time.monotonic()
        session = self.session
        if session is None:
            self._pending.clear()
            return
        if not self.is_on_screen:
            # Hidden terminals cost nothing but the flag; the rows are redrawn when the widget shows again.
            self._stale = True
            self._pending.clear()
            return
        screen = session.screen
        rows = self._pending
        self._pending = set()
        cursor_y = screen.cursor.y
        if cursor_y != self._cursor_row:
            rows.update(y for y in (self._cursor_row, cursor_y) if y >= 0)
            self._cursor_row = cursor_y
        scrolled = self._sync_size()
        if self._stale or scrolled:
            self._stale = False
            self.refresh()
            return
        top = len(screen.scrollback)
        first = self.scroll_offset.y
        last = first + self.scrollable_content_region.height
        for y in rows:
            if first <= top + y < last:
                self.refresh_line(top + y)
        if time.monotonic() - self._typed_at < ECHO_WINDOW:
            self._paint_now()

    def _paint_now(self) -> None:
        """Put the changed rows on the terminal now, without waiting for the screen's update timer.

        Textual's normal path takes several turns of the event loop (widget idle, screen update message, update
        timer), and a turn is long while other colonies flood; an echo should not wait for them. This uses the
        screen's compositor as its own update timer does; if that ever changes, the normal path still paints.
        """
        app = self.app
        screen = self.screen
        if screen is not app.screen or app._batch_count:
            return
        try:
            screen._compositor.update_widgets({self})
            screen._compositor_refresh()
        except AttributeError:  # a Textual without these internals: the regular repaint follows anyway
            pass

    def _sync_size(self) -> bool:
        """Set the virtual size to scrollback + screen, keep following the bottom (or keep the view where the user
        scrolled it); True if the view moved."""
        session = self.session
        if session is None:
            self.virtual_size = Size(0, 0)
            return False
        screen = session.screen
        lines = len(screen.scrollback)
        grown = lines - self._scrollback_seen
        self._scrollback_seen = lines
        self.virtual_size = Size(screen.columns, lines + screen.lines)
        if self._follow:
            if self.scroll_offset.y != self.max_scroll_y:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
                return True
        elif grown > 0:
            # The user is reading history: keep the same lines in view while new ones arrive.
            self.scroll_to(y=self.scroll_y + grown, animate=False, immediate=True)
            return True
        return False

    def _fit_session(self) -> None:
        """Make the PTY as big as the widget's content area, so the agent draws for the space it has."""
        session = self.session
        region = self.scrollable_content_region
        if session is None or region.width < 1 or region.height < 1:
            return
        screen = session.screen
        if (screen.columns, screen.lines) != (region.width, region.height):
            session.resize(region.width, region.height)
            self._cache.clear()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_session()
        self._sync_size()
        self.refresh()

    def on_show(self) -> None:
        if self._stale:
            self._stale = False
            self._sync_size()
            self.refresh()

    # -------------------------------------------------------------------------------------------- input

    async def _on_key(self, event: events.Key) -> None:
        # Every key belongs to the agent: stop it before bindings or the app can see it.
        self.send_key(event)

    def send_key(self, event: events.Key) -> None:
        """Send `event` to the agent and stop it. The app calls this directly for a focused terminal, which
        saves the key a trip through this widget's message queue."""
        event.stop()
        event.prevent_default()
        session = self.session
        if session is None:
            if self.awaiting is not None:
                self._typeahead.append((event.key, event.character))
            return
        self._write_key(session, event.key, event.character)

    def _write_key(self, session: AgentLike, key: str, character: str | None) -> None:
        data = encode_key(key, session.screen.app_cursor_keys) if encode_key is not None else b""
        if not data and character:
            data = character.encode("utf-8", "surrogateescape")
        if data:
            self._follow_bottom()
            self._typed_at = time.monotonic()
            session.write(data)

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        if self.session is None and self.awaiting is not None and event.text:
            self._typeahead.append(event.text)
        elif self.session is not None and event.text:
            self._follow_bottom()
            self.session.paste(event.text)

    def _follow_bottom(self) -> None:
        if not self._follow:
            self._follow = True
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def action_release(self) -> None:
        self.post_message(self.Released())

    def on_focus(self) -> None:
        self._refresh_cursor()

    def on_blur(self) -> None:
        self._refresh_cursor()

    def _refresh_cursor(self) -> None:
        if self.session is not None:
            self.refresh_line(len(self.session.screen.scrollback) + self.session.screen.cursor.y)

    # ------------------------------------------------------------------------------------------- scroll

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow = round(new_value) >= self.max_scroll_y

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.scroll_to(y=max(0, self.scroll_offset.y - WHEEL_LINES), animate=False)

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.scroll_to(y=min(self.max_scroll_y, self.scroll_offset.y + WHEEL_LINES), animate=False)

    @property
    def scrolled_back(self) -> int:
        """How many lines above the live screen the view is."""
        return max(0, self.max_scroll_y - self.scroll_offset.y)

    # ------------------------------------------------------------------------------------------- render

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None
        self._styles.clear()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        session = self.session
        base = self._base
        if base is None:
            base = self._base = Style(color=self.rich_style.color, bgcolor=self.rich_style.bgcolor)
        if session is None:
            return Strip.blank(width, base)
        screen = session.screen
        row = self.scroll_offset.y + y
        scrollback = screen.scrollback
        top = len(scrollback)
        if row < top:
            strip = self._render_cells(scrollback.line(row), screen.columns, -1, base)
        else:
            sy = row - top
            if sy >= screen.lines:
                return Strip.blank(width, base)
            cursor = screen.cursor
            if sy == cursor.y and not cursor.hidden:
                strip = self._render_row(screen, sy, cursor.x, base)
            else:
                key = (sy, screen.row_version(sy))
                cached = self._cache.get(key)
                if cached is None:
                    cached = self._render_row(screen, sy, -1, base)
                    self._cache[key] = cached
                    if len(self._cache) > CACHE_ROWS:
                        self._cache.popitem(last=False)
                else:
                    self._cache.move_to_end(key)
                strip = cached
        strip = strip.adjust_cell_length(width, base)
        if self.on_rendered is not None:
            self.on_rendered(row - top, strip)
        return strip

    def _render_row(self, screen: Any, y: int, cursor_x: int, base: Style) -> Strip:
        row = screen.buffer.get(y)
        if row is None:
            return self._render_cells((), screen.columns, cursor_x, base, default=screen.default_char)
        return self._render_cells(row, screen.columns, cursor_x, base, default=screen.default_char)

    def _render_cells(self, row: Any, columns: int, cursor_x: int, base: Style, default: Char | None = None) -> Strip:
        """One row of cells as a Strip: runs of cells with the same attributes become one segment."""
        styles = self._styles
        listed = isinstance(row, list)
        count = len(row) if listed else 0
        get = row.get if (row and not listed) else None
        blank = default or Char(" ")
        segments: list[Segment] = []
        run: list[str] = []
        run_key: tuple[Any, ...] | None = None
        previous = ""
        for x in range(columns):
            if listed:
                char = row[x] if x < count else blank
            elif get is None:
                char = blank
            else:
                char = get(x, blank)
            data = char.data
            if not data:
                # The second cell of a wide character is part of it; a stray one is a blank.
                if previous and not previous.isascii() and cell_len(previous) == 2:
                    previous = ""
                    continue
                data = " "
            previous = data
            key = char[1:]
            if x == cursor_x:
                if run:
                    segments.append(Segment("".join(run), _style(styles, run_key, base)))
                    run = []
                name = "terminal--cursor" if self.has_focus else "terminal--cursor-blurred"
                cursor_style = self.get_component_rich_style(name, partial=True)
                segments.append(Segment(data, _style(styles, key, base) + cursor_style))
                run_key = None
                continue
            if key != run_key and run:
                segments.append(Segment("".join(run), _style(styles, run_key, base)))
                run = []
            run_key = key
            run.append(data)
        if run:
            segments.append(Segment("".join(run), _style(styles, run_key, base)))
        return Strip(segments)


def _style(cache: dict[tuple[Any, ...], Style], key: tuple[Any, ...] | None, base: Style) -> Style:
    if key is None:
        return base
    style = cache.get(key)
    if style is None:
        style = cache[key] = cell_style(key, base)
    return style
