"""Reading the user's terminal so that every key can reach an agent exactly as xterm would send it.

Textual's xterm parser names keys for an app, and loses what a terminal inside the app needs: ESC followed by a
key it has no alt name for (`Esc :w` typed quickly in vim) arrives as the key alone; ESC and a key followed by
another ESC arrive as a caret (`^x`); its table turns alt+f into ctrl+right and the application keypad into
digits. `StemParser` reads the same input into the same events (keys, pastes, mouse, focus, resizes, reports),
with these differences:

- ESC followed by a character within the escape delay is alt+that character, whatever the character (ESC ESC is
  Esc, then the second ESC starts afresh); a lone ESC is Esc once the delay passes. Nothing is dropped or turned
  into a caret.
- A CSI or SS3 sequence is read to its final byte; one with no key name is still a key (named `UNKNOWN_KEY`);
  one cut short by the delay is alt+[ or alt+O followed by the characters typed.
- Every key is a `TerminalKey`: a `textual.events.Key` that also carries the characters the terminal sent, from
  which `core.xterm_input.key_bytes` rebuilds xterm's bytes for the agent.

`StemDriver` is Textual's Linux driver reading with this parser, without the kitty keyboard protocol (so the user's
terminal sends xterm's keys). Its input loop repeats Textual's (8.x), which
builds its parser inside the loop; tests/test_input_parser.py checks the loop still matches the Textual installed.
"""

from __future__ import annotations

import os
import re
import selectors
from codecs import getincrementaldecoder
from collections.abc import Callable, Generator, Iterable
from typing import Final

from textual import constants, events, messages
from textual.app import App
from textual.drivers.linux_driver import LinuxDriver
from textual.keys import Keys
from textual.message import Message

from stem.textual_private import (
    ParseEOF,
    ParseError,
    ParseTimeout,
    Peek1,
    Read1,
    XTermParser,
    driver_debug,
    driver_of,
    loop_last,
    sequence_to_key_events,
)

__all__ = ["UNKNOWN_KEY", "StemDriver", "StemParser", "TerminalKey", "outer_terminal"]

ESC: Final = "\x1b"
# The name of a key whose sequence Textual has no name for; its bytes go to the agent as they came.
UNKNOWN_KEY: Final = "unknown_sequence"
# A CSI sequence longer than this is not a key, a report or a mouse event: it is given up on as typed characters.
_MAX_CSI: Final = 64

_BRACKETED_PASTE_START: Final = "\x1b[200~"
_BRACKETED_PASTE_END: Final = "\x1b[201~"
_FOCUS_IN: Final = "\x1b[I"
_FOCUS_OUT: Final = "\x1b[O"
_MOUSE_SGR = re.compile(r"\x1b\[<\d+;-?\d+;-?\d+[Mm]")
_MODE_REPORT = re.compile(r"\x1b\[\?(\d+);(\d)\$y")
_CURSOR_POSITION = re.compile(r"\x1b\[(\d+);(\d+)R")
_IN_BAND_RESIZE = re.compile(r"\x1b\[48;(\d+(?::.*?)?);(\d+(?::.*?)?);(\d+(?::.*?)?);(\d+(?::.*?)?)t")


class TerminalKey(events.Key):
    """A key as Textual names it, with the characters the user's terminal sent for it (`sent`).

    Handled as any `Key` (`on_key`); the terminal widget sends `sent` on, re-encoded only where the agent's modes
    or the kitty protocol call for it."""

    __slots__ = ["sent"]

    def __init__(self, key: str, character: str | None, sent: str) -> None:
        super().__init__(key, character)
        self.sent = sent


# Handled where any key is (Input's `_on_key`, bindings): a subclass would otherwise be `on_terminal_key`.
TerminalKey.handler_name = events.Key.handler_name


class StemParser(XTermParser):
    """Textual's parser with exact Esc and alt handling and keys that carry their bytes (see the module)."""

    def parse(self, token_callback: Callable[[Message], None]) -> Generator[Read1 | Peek1, str, None]:
        read1 = self.read1
        delay = constants.ESCAPE_DELAY

        def emit(message: Message) -> None:
            if isinstance(message, events.Resize):
                self.terminal_size = message.size
                self.terminal_pixel_size = message.pixel_size
            token_callback(message)

        def keys(sequence: str, alt: bool = False) -> None:
            """The key events of `sequence` as Textual names them, each carrying `sequence` (ESC-prefixed with
            alt)."""
            sent = ESC + sequence if alt else sequence
            found = [k for k in sequence_to_key_events(self, sequence) if k.key != Keys.Ignore]
            if not found:
                emit(TerminalKey(UNKNOWN_KEY, None, sent))
                return
            for key in found:
                name = key.key
                if alt:
                    name = f"alt+shift+{name.lower()}" if len(name) == 1 and name.isupper() else f"alt+{name}"
                emit(TerminalKey(name, key.character, sent))

        def typed(text: str) -> None:
            """Characters that began like a sequence but were not one: keys, one by one."""
            for char in text:
                keys(char)

        pending: str | None = None  # a character read while finishing something else, not handled yet
        while not self.is_eof:
            if pending is not None:
                char, pending = pending, None
            else:
                try:
                    char = yield read1()
                except ParseEOF:
                    return
            if char != ESC:
                keys(char)
                continue
            try:
                second = yield read1(delay)
            except ParseTimeout:
                emit(TerminalKey("escape", ESC, ESC))
                continue
            except ParseEOF:
                emit(TerminalKey("escape", ESC, ESC))
                return
            if second == ESC:
                emit(TerminalKey("escape", ESC, ESC))
                pending = second
                continue
            if second not in "[O":
                keys(second, alt=True)
                continue
            # A CSI or SS3 sequence, or alt+[ / alt+O and what follows.
            sequence = ESC + second
            try:
                while True:
                    char = yield read1(delay)
                    if char == ESC or not " " <= char <= "~" or len(sequence) > _MAX_CSI:
                        pending = char  # not part of a sequence: what came before it was typed
                        break
                    sequence += char
                    if second == "O" or "@" <= char <= "~":
                        break  # SS3 takes one character; a CSI ends at its final byte
            except ParseTimeout:
                pass
            except ParseEOF:
                self._typed_sequence(sequence, keys, typed)
                return
            if pending is not None or len(sequence) == 2 or (second == "[" and not "@" <= sequence[-1] <= "~"):
                self._typed_sequence(sequence, keys, typed)
                continue
            if sequence == "\x1b[M":  # a legacy mouse report (Textual asks for SGR ones): three bytes follow
                for _ in range(3):
                    try:
                        yield read1(delay)
                    except ParseTimeout:
                        break
                continue
            if sequence == _BRACKETED_PASTE_START:
                text = ""
                while not text.endswith(_BRACKETED_PASTE_END):
                    try:
                        text += yield read1()
                    except ParseEOF:
                        return
                # NUL characters are dropped, as Textual does (https://github.com/Textualize/textual/issues/1661).
                emit(events.Paste(text[: -len(_BRACKETED_PASTE_END)].replace("\x00", "")))
                continue
            self._sequence(sequence, emit, keys)

    @staticmethod
    def _typed_sequence(sequence: str, keys: Callable[..., None], typed: Callable[[str], None]) -> None:
        """ESC [ or ESC O and the characters after it, which did not make a sequence: alt+[ (alt+O) and keys."""
        keys(sequence[1], alt=True)
        typed(sequence[2:])

    def _sequence(self, sequence: str, emit: Callable[[Message], None], keys: Callable[[str], None]) -> None:
        """A complete CSI or SS3 sequence: a report, a mouse event or a key."""
        if sequence == _FOCUS_IN:
            emit(events.AppFocus())
            return
        if sequence == _FOCUS_OUT:
            emit(events.AppBlur())
            return
        if _MOUSE_SGR.fullmatch(sequence):
            mouse = self.parse_mouse_code(sequence)
            if mouse is not None:
                emit(mouse)
            return
        if match := _IN_BAND_RESIZE.fullmatch(sequence):
            height, width, pixel_height, pixel_width = (g.partition(":")[0] for g in match.groups())
            resize = events.Resize.from_dimensions((int(width), int(height)), (int(pixel_width), int(pixel_height)))
            self.mouse_pixels = True
            emit(resize)
            return
        if match := _MODE_REPORT.fullmatch(sequence):
            mode, setting = match.group(1), int(match.group(2))
            if mode == "2026" and setting > 0:
                emit(messages.TerminalSupportsSynchronizedOutput())
            elif mode == "2048" and constants.SMOOTH_SCROLL:
                emit(messages.InBandWindowResize.from_setting_parameter(setting))
            return
        match = _CURSOR_POSITION.fullmatch(sequence)
        if match is not None and match.group(1) != "1":
            # A cursor position report (Textual asks for one in inline mode). CSI 1;m R is F3 with modifiers.
            emit(events.CursorPosition(int(match.group(2)) - 1, int(match.group(1)) - 1))
            return
        keys(sequence)


_KITTY_PUSH = re.compile(r"\x1b\[>\d+u")


class StemDriver(LinuxDriver):
    """Textual's Linux driver reading input with `StemParser`, leaving the kitty keyboard protocol off (so the user's
    terminal sends xterm's keys, which go on to agents as they are) and mirroring the agent's keypad mode."""

    def write(self, data: str) -> None:
        if _KITTY_PUSH.fullmatch(data):
            return  # Textual's "\x1b[>25u" at start: keys would come in the kitty protocol, which agents do not get
        super().write(data)

    def set_keypad(self, application: bool) -> None:
        """Put the user's terminal's keypad in application mode (DECKPAM) or numeric mode (DECKPNM): in
        application mode it sends what the agent, which asked for it, expects."""
        super().write("\x1b=" if application else "\x1b>")
        self.flush()

    def stop_application_mode(self) -> None:
        super().write("\x1b>")
        super().stop_application_mode()

    def run_input_thread(self) -> None:
        """Textual's `LinuxDriver.run_input_thread` (8.x), with `StemParser` in place of `XTermParser`, and the end
        of input (the terminal hung up) ending the app."""
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        fileno = self.fileno
        parser = StemParser(driver_debug(self))
        feed = parser.feed
        tick = parser.tick
        decode = getincrementaldecoder("utf-8")().decode
        hung_up = False

        def process(selector_events: Iterable[tuple[selectors.SelectorKey, int]], final: bool = False) -> None:
            nonlocal hung_up
            for last, (_key, mask) in loop_last(selector_events):
                if mask & selectors.EVENT_READ:
                    try:
                        raw = os.read(fileno, 1024 * 4)
                    except OSError:  # EIO: the terminal hung up
                        raw = b""
                    if not raw:
                        hung_up = True
                        break
                    data = decode(raw, final=final and last)
                    for event in feed(data):
                        self.process_message(event)
            for event in tick():
                self.process_message(event)

        try:
            while not self.exit_event.is_set() and not hung_up:
                process(selector.select(0.1))
            if hung_up:
                # The terminal is gone and this process lives on (its SIGHUP ignored, as under nohup): at end of
                # input a terminal stays readable, so Textual's loop would read nothing for ever at full speed.
                # Quit instead, as `q` does: the colonies run on.
                self.process_message(messages.ExitApp())
                return
            selector.unregister(self.fileno)
            process(selector.select(0.1), final=True)
        finally:
            selector.close()
            try:
                for _event in feed(""):
                    pass
            except (EOFError, ParseError):
                pass


def outer_terminal(app: App[object]) -> StemDriver | None:
    """The driver of the user's terminal when it is Stem's (not in a headless test). Textual 8 has no public
    accessor for an app's driver."""
    driver = driver_of(app)
    return driver if isinstance(driver, StemDriver) else None
