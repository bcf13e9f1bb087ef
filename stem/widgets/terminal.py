"""The agent's terminal: a colony's `StemScreen` drawn through the Line API, with every key forwarded to the agent.

Rows are rendered to `Strip`s and cached by (row, row version), so an unchanged row is never rebuilt; the cursor
row is never cached. Changed rows arrive as `ScreenChanged` events and are refreshed at most ~60 times a second,
and only while the widget is on screen. Focused, the widget sends every key to the agent and stops it, except the
release chord (binding id `terminal.release`, ctrl+] by default), which hands focus back to the panels.

Keys reach the agent as xterm sends them (`core.xterm_input.key_bytes`, from the bytes the user's terminal sent);
so do focus reports (mode 1004) and mouse reports while the agent asks for them (1000/1002/1003, SGR 1006), the
keypad in the agent's keypad mode (mirrored to the user's terminal while focused). Without mouse reporting the
wheel scrolls the history and a drag selects text, copied to the user's clipboard (OSC 52) on release; the agent's
own clipboard writes and hyperlinks (OSC 8) reach the user's terminal too.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from rich.cells import cell_len
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip
from textual.timer import Timer

from core.host.protocol import ScreenModes
from core.screen_cells import Char, cell_width
from core.screen_queries import Link, Palette
from core.xterm_input import FOCUS_IN, FOCUS_OUT, MouseAction, key_bytes, mouse_report
from stem.attach import ANSI_INDEX
from stem.input_parser import TerminalKey, outer_terminal
from stem.keys import bind
from stem.textual_private import in_batch, paint_now

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

    @property
    def modes(self) -> ScreenModes: ...

    def write(self, data: bytes) -> None: ...

    def paste(self, text: str) -> None: ...

    def resize(self, columns: int, lines: int) -> None: ...

    def row_links(self, y: int) -> Sequence[Link]: ...

    def take_clipboard(self) -> list[str]: ...

    def set_palette(self, palette: Palette) -> None: ...


# pyte's names for the 16 ANSI colours (stem.attach's table, with pyte's typo for bright magenta); 256-colour and
# truecolour cells carry six hex digits.
_ANSI = ANSI_INDEX
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
    """The rich Style of a cell with attributes `attrs` (a `Char`'s fields after its data: fg, bg, bold, italics,
    underscore, strikethrough, reverse, blink, dim, conceal, double underline, overline) on a terminal whose default
    colours are `base`'s. Reverse is resolved here, against the default colours, because a reversed cell with
    "default" colours has no colours for rich to swap. A double underline wins over a single one, as the later of
    SGR 4 and 21 does in a terminal (a cell with both had 4:2). Concealed text is drawn as blanks (`_shown`)."""
    fg, bg, bold, italics, underscore, strikethrough, reverse, blink, dim, _conceal, double, overline = attrs
    color = _color(fg) or base.color
    bgcolor = _color(bg) or base.bgcolor
    if reverse:
        color, bgcolor = bgcolor, color
    return Style(
        color=color,
        bgcolor=bgcolor,
        bold=bold or None,
        dim=dim or None,
        italic=italics or None,
        blink=blink or None,
        underline=(underscore and not double) or None,
        underline2=double or None,
        strike=strikethrough or None,
        overline=overline or None,
    )


# Where conceal (SGR 8) is in a cell's attributes (`Char` without its data).
_CONCEAL = Char._fields.index("conceal") - 1


def _shown(text: str, key: tuple[Any, ...] | None) -> str:
    """The characters of cells with attributes `key` as drawn: concealed ones as blanks over the same cells."""
    return " " * cell_len(text) if key is not None and key[_CONCEAL] else text


class TerminalView(ScrollView, can_focus=True):
    """Shows one agent session at a time; scroll up (mouse wheel, or shift+pageup when not focused) for history."""

    BINDINGS = [bind("terminal.release")]

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
        self._first_seen = 0  # the number of the oldest history line at the last look (`_sync_size`)
        self._typed_at = float("-inf")
        self._outer_keypad = False  # the user's terminal's keypad is in application mode for the agent
        self._focused = False  # the agent's terminal has the focus (as last reported under mode 1004)
        self._widget_focused = False
        self._mouse_held = False  # a button went down here while the agent reported the mouse
        self._told: tuple[int, int] | None = None  # the size the shown session was last given
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
        self._told = None
        self._fit_session()
        self._sync_size()
        self.scroll_end(animate=False, immediate=True)
        self.refresh()
        if session is not None:
            session.take_clipboard()  # what it wrote before it was shown is not the user's to get now
            self._send_palette()
        self._sync_keypad()

    def screen_changed(self, rows: Iterable[int]) -> None:
        """Rows of the shown session's screen changed; repaint them within a frame."""
        session = self.session
        if session is not None:
            for payload in session.take_clipboard():
                self._agent_copied(payload)
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
        self._sync_keypad()
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
        screen's compositor as its own update timer does (stem.textual_private).
        """
        app = self.app
        screen = self.screen
        if screen is not app.screen or in_batch(app):
            return
        paint_now(screen, (self,))

    def _sync_size(self) -> bool:
        """Set the virtual size to scrollback + screen, keep following the bottom (or keep the view where the user
        scrolled it); True if the view moved."""
        session = self.session
        if session is None:
            self.virtual_size = Size(0, 0)
            return False
        screen = session.screen
        scrollback = screen.scrollback
        lines = len(scrollback)
        # History line i is line number `first + i` (core.screen_scrollback.Scrollback): new lines are added at
        # the end without moving the older ones, until the history is full and its oldest lines are dropped.
        first = scrollback.first
        dropped = first - self._first_seen
        self._first_seen = first
        self.virtual_size = Size(screen.columns, lines + screen.lines)
        if self._follow:
            if self.scroll_offset.y != self.max_scroll_y:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
                return True
        elif dropped > 0:
            # The user is reading history: keep the same lines in view while old ones are dropped for new ones.
            self.scroll_to(y=max(0, self.scroll_y - dropped), animate=False, immediate=True)
            return True
        return False

    def _fit_session(self) -> None:
        """Make the PTY as big as the widget's content area, so the agent draws for the space it has. The session
        is told this size once even when the agent has it already: an agent shown in several places takes the
        size of the one used last (a colony host's rule), and a place that never gave its size could not take it
        back with a key after another place resized the agent."""
        session = self.session
        region = self.scrollable_content_region
        if session is None or region.width < 1 or region.height < 1:
            return
        screen = session.screen
        size = (region.width, region.height)
        if (screen.columns, screen.lines) != size or self._told != size:
            self._told = size
            session.resize(*size)
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
        self._write_key(session, event.key, event.character, event.sent if isinstance(event, TerminalKey) else None)

    def _write_key(self, session: AgentLike, key: str, character: str | None, sent: str | None = None) -> None:
        modes = session.modes
        data = key_bytes(key, character, sent, app_cursor=modes.app_cursor_keys, app_keypad=modes.app_keypad)
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

    def on_mount(self) -> None:
        self.watch(self.app, "app_focus", self._sync_focus, init=False)

    def on_focus(self) -> None:
        self._refresh_cursor()
        self._widget_focused = True  # `has_focus` is set after this handler (by Widget's own)
        self._sync_focus()
        self._sync_keypad()

    def on_blur(self) -> None:
        self._refresh_cursor()
        self._widget_focused = False
        self._sync_focus()
        self._sync_keypad()

    def _sync_focus(self) -> None:
        """Mode 1004: the agent is told when its terminal gains or loses the focus, which it has while this widget
        is focused in a focused Stem (the user's terminal reports its own focus to Stem)."""
        focused = self._widget_focused and self.app.app_focus
        if focused == self._focused:
            return
        self._focused = focused
        session = self.session
        if session is not None and session.modes.focus_reports:
            session.write(FOCUS_IN if focused else FOCUS_OUT)

    def _sync_keypad(self) -> None:
        """While focused, the user's terminal's keypad is in the mode the agent asked for, so that its keys arrive
        as the agent expects them; otherwise numeric, for the panels."""
        session = self.session
        want = self._widget_focused and session is not None and session.modes.app_keypad
        if want != self._outer_keypad:
            self._outer_keypad = want
            outer = outer_terminal(self.app)
            if outer is not None:
                outer.set_keypad(want)

    def _send_palette(self) -> None:
        """Tell the session the colours it is shown in: agents ask (OSC 10, 11, 4) to pick dark or light."""
        session = self.session
        if session is None or not self.is_mounted:
            return
        style = self.rich_style
        theme = self.app.ansi_theme
        foreground = style.color.get_truecolor(theme) if style.color else theme.foreground_color
        background = style.bgcolor.get_truecolor(theme, foreground=False) if style.bgcolor else theme.background_color
        ansi = tuple((c.red, c.green, c.blue) for c in (theme.ansi_colors[i] for i in range(16)))
        session.set_palette(
            Palette(
                (foreground.red, foreground.green, foreground.blue),
                (background.red, background.green, background.blue),
                ansi,
            )
        )

    def _agent_copied(self, payload: str) -> None:
        """The agent wrote the clipboard (OSC 52 "selection;base64"): so does the user's terminal."""
        _selection, _, data = payload.partition(";")
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return
        self.app.copy_to_clipboard(text)

    def _refresh_cursor(self) -> None:
        if self.session is not None:
            self.refresh_line(len(self.session.screen.scrollback) + self.session.screen.cursor.y)

    # ------------------------------------------------------------------------------------------- scroll

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow = round(new_value) >= self.max_scroll_y

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        # The wheel is the agent's or this view's alone: Textual's own handler (Widget's) would scroll the view
        # as well, into the history while the agent is sent the wheel, and by more than WHEEL_LINES when not.
        event.stop()
        event.prevent_default()
        if not self._report_mouse(event, "wheel_up"):
            self.scroll_to(y=max(0, self.scroll_offset.y - WHEEL_LINES), animate=False)

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        event.prevent_default()
        if not self._report_mouse(event, "wheel_down"):
            self.scroll_to(y=min(self.max_scroll_y, self.scroll_offset.y + WHEEL_LINES), animate=False)

    def _on_mouse_scroll_left(self, event: events.MouseScrollLeft) -> None:
        # The wheel tilted (or a touchpad's sideways swipe): the agent's when it asks for the mouse, as xterm
        # reports it (buttons 6 and 7); the view has nothing to scroll sideways.
        event.stop()
        event.prevent_default()
        self._report_mouse(event, "wheel_left")

    def _on_mouse_scroll_right(self, event: events.MouseScrollRight) -> None:
        event.stop()
        event.prevent_default()
        self._report_mouse(event, "wheel_right")

    def on_mouse_down(self, event: events.MouseDown) -> None:
        if self._report_mouse(event, "press"):
            self._mouse_held = True
            self.capture_mouse()  # a drag that leaves the widget still reports to the agent

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._mouse_held:
            self._mouse_held = False
            self.release_mouse()
            self._report_mouse(event, "release")
            return
        self._copy_selection()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self._report_mouse(event, "motion")

    def _report_mouse(self, event: events.MouseEvent, action: MouseAction) -> bool:
        """Send the agent a report of `event` if it asked for mouse reports; False if it did not (the event is
        then Stem's: the wheel scrolls the history). Reports describe the live screen: a view scrolled into the
        history keeps the mouse for itself."""
        session = self.session
        if session is None or not self._follow:
            return False
        modes = session.modes
        if not modes.mouse:
            return False
        event.stop()
        region = self.scrollable_content_region
        x = min(max(0, event.screen_x - region.x), region.width - 1)
        y = min(max(0, event.screen_y - region.y), region.height - 1)
        data = mouse_report(
            action,
            event.button,
            int(x),
            int(y),
            tracking=modes.mouse,
            sgr=modes.mouse_sgr,
            shift=event.shift,
            meta=event.meta,
            ctrl=event.ctrl,
        )
        if data:
            session.write(data)
        return True

    # ---------------------------------------------------------------------------------------- selection

    @property
    def allow_select(self) -> bool:
        """Text can be selected with the mouse unless the agent takes the mouse for itself."""
        return self.session is not None and not self.session.modes.mouse

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The selected text: lines as drawn (a wide character is one character), trailing blanks dropped."""
        session = self.session
        if session is None:
            return None
        screen = session.screen
        total = len(screen.scrollback) + screen.lines
        last = total - 1 if selection.end is None else min(selection.end.y, total - 1)
        first = 0 if selection.start is None else selection.start.y
        lines = [""] * first + [self._line_text(screen, row) for row in range(first, last + 1)]
        text = selection.extract("\n".join(lines))
        return "\n".join(line.rstrip() for line in text.split("\n")), "\n"

    def _line_text(self, screen: Any, row: int) -> str:
        """Line `row` of the history and screen as `render_line` draws its characters."""
        top = len(screen.scrollback)
        cells: Any = screen.scrollback.line(row) if row < top else screen.buffer.get(row - top)
        blank = screen.default_char
        listed = isinstance(cells, list)
        out: list[str] = []
        wide = False
        for x in range(screen.columns):
            if cells is None:
                data = " "
            elif listed:
                data = cells[x].data if x < len(cells) else " "
            else:
                data = cells.get(x, blank).data
            if not data:
                if wide:
                    wide = False
                    continue
                data = " "
            elif data.isascii():
                wide = False
            else:
                data, wide = _as_placed(data)
                if wide and not _stub_next(cells, x, screen.columns, listed, blank):
                    data, wide = " ", False
            out.append(data)
        return "".join(out)

    def _copy_selection(self) -> None:
        """A drag over the terminal ended: what it selected goes to the user's clipboard (OSC 52, which works
        over SSH and through tmux)."""
        selection = self.text_selection
        if selection is None:
            return
        found = self.get_selection(selection)
        if found and found[0]:
            self.app.copy_to_clipboard(found[0])
            self.notify(f"copied {len(found[0])} characters", timeout=2)

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
        self._send_palette()

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
            links = session.row_links(sy)
            cursor = screen.cursor
            if sy == cursor.y and not cursor.hidden:
                # A cursor past the last column (a row just filled, its wrap pending) is shown on the last column,
                # as xterm and tmux show it; one on the second cell of a wide character, on the character.
                x = _cursor_cell(screen.buffer.get(sy), min(cursor.x, screen.columns - 1), screen.default_char)
                strip = _linked(self._render_row(screen, sy, x, base), links)
            else:
                key = (sy, screen.row_version(sy), *links)
                cached = self._cache.get(key)
                if cached is None:
                    cached = _linked(self._render_row(screen, sy, -1, base), links)
                    self._cache[key] = cached
                    if len(self._cache) > CACHE_ROWS:
                        self._cache.popitem(last=False)
                else:
                    self._cache.move_to_end(key)
                strip = cached
        strip = strip.adjust_cell_length(width, base)
        if self.on_rendered is not None:
            self.on_rendered(row - top, strip)
        selection = self.text_selection
        if selection is not None:
            strip = self._highlight(strip, selection, row)
        # Offsets tell Textual's selection which character is where (see `get_selection`).
        return strip.apply_offsets(0, row) if self.allow_select else strip

    def _highlight(self, strip: Strip, selection: Selection, row: int) -> Strip:
        """`strip` with the selected part of line `row` in the selection's style."""
        span = selection.get_span(row)
        if span is None:
            return strip
        start, end = span
        first = strip.index_to_cell_position(start)
        last = strip.cell_length if end == -1 else strip.index_to_cell_position(end)
        if last <= first:
            return strip
        return _restyle(strip, first, last, self.screen.get_component_rich_style("screen--selection"))

    def _render_row(self, screen: Any, y: int, cursor_x: int, base: Style) -> Strip:
        row = screen.buffer.get(y)
        return self._render_cells(() if row is None else row, screen.columns, cursor_x, base, screen.default_char)

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
        wide = False  # the cell before was a wide character, drawn over both its cells
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
                if wide:
                    wide = False
                    continue
                data = " "
            elif data.isascii():
                wide = False
            else:
                data, wide = _as_placed(data)
                if wide and not _stub_next(row, x, columns, listed, blank):
                    data, wide = " ", False  # its second cell was drawn over: a blank, the row keeps its width
            key = char[1:]
            if x == cursor_x:
                if run:
                    segments.append(Segment(_shown("".join(run), run_key), _style(styles, run_key, base)))
                    run = []
                name = "terminal--cursor" if self.has_focus else "terminal--cursor-blurred"
                cursor_style = self.get_component_rich_style(name, partial=True)
                segments.append(Segment(_shown(data, key), _style(styles, key, base) + cursor_style))
                run_key = None
                continue
            if key != run_key and run:
                segments.append(Segment(_shown("".join(run), run_key), _style(styles, run_key, base)))
                run = []
            run_key = key
            run.append(data)
        if run:
            segments.append(Segment(_shown("".join(run), run_key), _style(styles, run_key, base)))
        return Strip(segments)


def _cursor_cell(row: Any, x: int, blank: Char) -> int:
    """The cell the cursor in column `x` of `row` is drawn on: `x`, or the wide character's first cell when `x`
    is its second (a program moved there with a backspace): that cell is not drawn on its own."""
    if x < 1 or not row:
        return x
    listed = isinstance(row, list)
    if listed and x >= len(row):
        return x
    if (row[x] if listed else row.get(x, blank)).data:
        return x
    before = (row[x - 1] if listed else row.get(x - 1, blank)).data
    return x - 1 if before and not before.isascii() and cell_width(before[0]) == 2 else x


def _stub_next(row: Any, x: int, columns: int, listed: bool, blank: Char) -> bool:
    """Whether the cell after column `x` of `row` (a list of cells, or a row of the screen) is the stub of the wide
    character in `x`: a program that wrote over it left the character half drawn."""
    if x + 1 >= columns or not row:
        return False
    if listed:
        return x + 1 < len(row) and not row[x + 1].data
    return not row.get(x + 1, blank).data


def _as_placed(data: str) -> tuple[str, bool]:
    """A cell's characters as drawn over the cells the screen gave them (two for a wide character, whose second
    cell is then skipped), and whether that is two. Where rich counts them otherwise, the row would lose the
    screen's columns: a character with a zero-width one joined that rich counts wider (VS16: "⚠️" is one cell on the
    screen, two for rich) is drawn without it; one rich counts narrower (a skin tone alone, two cells on the screen
    and zero for rich) is drawn as blanks: terminals differ on its width (tmux takes it for two cells, others join it
    to the emoji before it), and a guess either way would shift the rest of the row and the panel's border."""
    wide = cell_width(data[0]) == 2
    cells = 2 if wide else 1
    width = cell_len(data)
    if width > cells:
        data = data[0]
        width = cell_len(data)
    if width < cells:
        data = " " * cells
    return data, wide


def _linked(strip: Strip, links: Sequence[Link]) -> Strip:
    """`strip` with its cells under OSC 8 hyperlinks carrying them: Textual writes them to the user's terminal as
    OSC 8, where they can be clicked."""
    for link in links:
        strip = _restyle(strip, link.start, link.end, Style(link=link.uri))
    return strip


def _restyle(strip: Strip, start: int, end: int, style: Style) -> Strip:
    """`strip` with `style` laid over cells `start` .. `end - 1`."""
    length = strip.cell_length
    start, end = max(0, start), min(end, length)
    if end <= start:
        return strip
    before, middle, after = strip.crop(0, start), strip.crop(start, end), strip.crop(end, length)
    styled = Strip(Segment.apply_style(middle, post_style=style), end - start)
    return Strip.join([before, styled, after])


def _style(cache: dict[tuple[Any, ...], Style], key: tuple[Any, ...] | None, base: Style) -> Style:
    if key is None:
        return base
    style = cache.get(key)
    if style is None:
        style = cache[key] = cell_style(key, base)
    return style
