"""What programs ask of their terminal, answered as xterm answers, and what they tell it beyond the screen's cells.

A `StemScreen` holds one `TerminalQueries`. The agent session feeds the program's output through it (`feed`)
rather than straight to the screen: a read that holds nothing for it (a few byte searches tell) goes to the screen
at once; otherwise the screen is fed piece by piece, each piece ending right after a sequence for this module,
which is acted on once the bytes before it are on the screen, so an answer reflects the state they left (a DECRQM
after a DECSET in the same read reports the mode set). A sequence cut by the end of a read is completed with the
next. The screen sees every byte; `StemScreen.feed` itself stays free of this scan.

Answered: DECRQM (`CSI ? Ps $ p`, `CSI Ps $ p`) for the modes Stem implements (0, "not recognised", for others);
OSC 10/11/12 and OSC 4 colour queries, with the palette of whoever shows the terminal (`palette`); through the
screen's hooks, DA2 (`CSI > c`) and DECXCPR (`CSI ? 6 n`), as xterm answers them. DA and DSR are pyte's own.
Kept: clipboard writes (OSC 52) for the user's terminal and hyperlinks (OSC 8) as spans of cells; through the
screen's hooks, the keypad mode (DECKPAM `ESC =`, DECKPNM `ESC >`, DECNKM) and the synchronized-output frame in
progress (mode 2026).
Not answered on purpose: the kitty keyboard protocol's `CSI ? u` (Stem does not implement it, so programs fall back
to legacy keys), clipboard reads (`OSC 52 ; c ; ?`: a program must not read the user's clipboard), XTGETTCAP.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pyte import modes as mo

if TYPE_CHECKING:
    from core.screen import StemScreen

__all__ = ["FRAME_TIMEOUT", "Link", "Palette", "TerminalQueries", "xterm_colour"]

# A synchronized-output frame that does not end within this long is shown as it is (xterm and kitty use ~150 ms):
# a program that died mid-frame must not freeze its screen.
FRAME_TIMEOUT: Final = 0.15

Rgb = tuple[int, int, int]

# xterm's 16 default colours; 16-231 are its colour cube, 232-255 its grey ramp.
_XTERM_16: Final[tuple[Rgb, ...]] = (
    (0x00, 0x00, 0x00),
    (0xCD, 0x00, 0x00),
    (0x00, 0xCD, 0x00),
    (0xCD, 0xCD, 0x00),
    (0x00, 0x00, 0xEE),
    (0xCD, 0x00, 0xCD),
    (0x00, 0xCD, 0xCD),
    (0xE5, 0xE5, 0xE5),
    (0x7F, 0x7F, 0x7F),
    (0xFF, 0x00, 0x00),
    (0x00, 0xFF, 0x00),
    (0xFF, 0xFF, 0x00),
    (0x5C, 0x5C, 0xFF),
    (0xFF, 0x00, 0xFF),
    (0x00, 0xFF, 0xFF),
    (0xFF, 0xFF, 0xFF),
)
_CUBE: Final = (0, 95, 135, 175, 215, 255)


def xterm_colour(index: int, ansi: tuple[Rgb, ...] = _XTERM_16) -> Rgb:
    """Colour `index` (0-255) of the 256-colour palette, the first 16 from `ansi`."""
    if index < 16:
        return ansi[index]
    if index < 232:
        n = index - 16
        return _CUBE[n // 36], _CUBE[n // 6 % 6], _CUBE[n % 6]
    grey = 8 + 10 * (index - 232)
    return grey, grey, grey


@dataclass(frozen=True, slots=True)
class Palette:
    """The colours the terminal is shown in: default foreground and background, and the 16 ANSI colours. Until a
    client says otherwise, a dark theme's (most agents only ask dark or light)."""

    foreground: Rgb = (0xE0, 0xE0, 0xE0)
    background: Rgb = (0x12, 0x12, 0x12)
    ansi: tuple[Rgb, ...] = _XTERM_16

    def colour(self, index: int) -> Rgb:
        return xterm_colour(index, self.ansi)


@dataclass(frozen=True, slots=True)
class Link:
    """An OSC 8 hyperlink over cells `start` .. `end - 1` of a row."""

    start: int
    end: int
    uri: str


@dataclass(slots=True)
class _Span:
    start: int
    end: int
    uri: str
    text: str  # the cells' characters when the link was drawn: a span whose cells were overwritten is dropped


@dataclass(slots=True)
class _OpenLink:
    uri: str
    x: int
    y: int
    row: object  # the row object the link began on (rows move when the screen scrolls), or None


@dataclass(slots=True)
class _RowLinks:
    row: object  # kept alive so that its id is not reused while it is a key
    spans: list[_Span] = field(default_factory=list)


# Every sequence acted on holds `$p` (DECRQM) or `ESC ]` (OSC). A feed is searched for each pair only where its
# first byte is (a memchr): escape-dense output seldom holds `$` or `]`, so most feeds cost two byte scans.
_NEEDLES: Final = ((b"$", b"$p"), (b"]", b"\x1b]"))

# The sequences acted on, each ending where the screen must have been fed up to before acting.
_SEQUENCE = re.compile(
    rb"\x1b\[(\??)(\d*)\$p"  # 1-2: DECRQM
    rb"|\x1b\](\d+);([^\x07\x1b\x9c]*)(\x07|\x1b\\|\x9c)"  # 3-5: OSC code ; text, terminator
)
# An unfinished sequence at the end of a feed that could still become one of `_SEQUENCE`: kept to be matched with
# the next feed. OSC text can be long (a clipboard write), a DECRQM is short.
_UNFINISHED = re.compile(rb"\x1b(?:\](?:\d+(?:;[^\x07\x1b\x9c]*)?)?\x1b?|\[(?:\??\d*\$?)?)?")
_MAX_CARRY: Final = 1 << 20

# Private modes whose state DECRQM reports (pyte keeps them shifted in `Screen.mode`), besides 2026, the keypad and
# the alternate screens, which are kept elsewhere.
_PRIVATE_MODES: Final = frozenset({1, 5, 6, 7, 9, 25, 1000, 1002, 1003, 1004, 1006, 2004})
_ANSI_MODES: Final = frozenset({mo.IRM, mo.LNM})
_ALT_MODES: Final = frozenset({47, 1047, 1049})
_KEYPAD_MODE: Final = 66  # DECNKM: the keypad mode as a private mode
_SYNC_MODE: Final = 2026
_XTERM_PATCH: Final = 379  # the xterm DA2 reports (Debian 12's); programs read features off it, as from xterm's


def _hex16(rgb: Rgb) -> str:
    """A colour as xterm reports it: rgb:RRRR/GGGG/BBBB, each 8-bit channel scaled to 16 bits."""
    return "rgb:" + "/".join(f"{c * 257:04x}" for c in rgb)


class TerminalQueries:
    """Answers and notices for one `StemScreen` (see the module's docstring)."""

    def __init__(self, screen: StemScreen, clock: Callable[[], float] = time.monotonic) -> None:
        self.screen = screen
        self.clock = clock
        self.palette = Palette()
        self.clipboard: list[str] = []  # OSC 52 writes not yet taken, as "selection;base64"
        self.frame_started: float | None = None  # a 2026 frame is being drawn since then
        self._deckpam = False  # ESC = seen (ESC > since)
        self._carry = b""
        self._open: _OpenLink | None = None
        self._links: dict[int, _RowLinks] = {}

    # ------------------------------------------------------------------------------------------ feeding

    def feed(self, data: bytes, feed_screen: Callable[[bytes], None]) -> None:
        """Feed `data` to the screen with `feed_screen`, acting on each sequence right after the bytes up to it."""
        carry = self._carry
        if carry == b"\x1b" and data[:1] in (b"=", b">"):
            self._deckpam = data[:1] == b"="  # ESC = or ESC > cut by the read: pyte's own parser ignores them
        if not any(byte in data and needle in data for byte, needle in _NEEDLES):
            # Every sequence holds a needle: only one begun at the end of the last feed can end here.
            if not carry:
                feed_screen(data)
                self._carry = self._unfinished_short(data)
                return
            text = carry + data
            m = _SEQUENCE.match(text)
            matches = [m] if m is not None and m.end() > len(carry) else []
        else:
            text = carry + data if carry else data
            matches = [m for m in _SEQUENCE.finditer(text) if m.end() > len(carry)]
        offset = len(carry)
        done = 0  # bytes of `data` fed
        for m in matches:
            cut = m.end() - offset
            feed_screen(data[done:cut])
            done = cut
            self._act(m)
        if done < len(data):
            feed_screen(data[done:] if done else data)
        self._carry = self._unfinished(text)

    @staticmethod
    def _unfinished_short(data: bytes) -> bytes:
        """The start of a DECRQM (an OSC start sends a feed the long way) cut by the end of `data`."""
        at = data.rfind(b"\x1b", len(data) - 16)
        return data[at:] if at >= 0 and _UNFINISHED.fullmatch(data, at) else b""

    @staticmethod
    def _unfinished(text: bytes) -> bytes:
        """The tail of `text` that may be the start of a sequence completed by the next feed."""
        end = len(text)
        at = text.rfind(b"\x1b", max(0, end - _MAX_CARRY))
        if at < 0:
            return b""
        osc = text.rfind(b"\x1b]", max(0, end - _MAX_CARRY))
        if 0 <= osc < at and at == end - 1 and _UNFINISHED.fullmatch(text, osc):
            return text[osc:]  # an OSC whose terminator (ESC \\) is cut after its ESC
        if _UNFINISHED.fullmatch(text, at):
            return text[at:]
        return b""

    # ----------------------------------------------------------------------------------------- answering

    def _act(self, m: re.Match[bytes]) -> None:
        if m.group(2) is not None:  # DECRQM
            self._report_mode(int(m.group(2) or 0), private=bool(m.group(1)))
        else:
            self._osc(int(m.group(3)), m.group(4).decode("utf-8", "replace"), m.group(5).decode("latin-1"))

    def _write(self, answer: str) -> None:
        self.screen.write_process_input(answer)

    def mode_state(self, mode: int, private: bool) -> int:
        """DECRQM's Pm for `mode`: 1 set, 2 reset, 0 not recognised."""
        screen = self.screen
        if not private:
            return (1 if mode in screen.mode else 2) if mode in _ANSI_MODES else 0
        if mode in _ALT_MODES:
            return 1 if screen.alternate_screen else 2
        if mode == _SYNC_MODE:
            return 1 if self.frame_started is not None else 2
        if mode == _KEYPAD_MODE:
            return 1 if self.app_keypad else 2
        if mode in _PRIVATE_MODES:
            return 1 if mode << 5 in screen.mode else 2
        return 0

    def _report_mode(self, mode: int, private: bool) -> None:
        mark = "?" if private else ""
        self._write(f"\x1b[{mark}{mode};{self.mode_state(mode, private)}$y")

    def _osc(self, code: int, text: str, terminator: str) -> None:
        if code == 52:
            selection, _, data = text.partition(";")
            if data and data != "?":
                try:
                    base64.b64decode(data, validate=True)
                except ValueError:
                    return  # not base64: no terminal would set the clipboard from it
                self.clipboard.append(f"{selection or 'c'};{data}")
                del self.clipboard[:-8]
            return
        if code == 8:
            _params, _, uri = text.partition(";")
            self._link(uri)
            return
        if code == 4:
            parts = text.split(";")
            for index, spec in zip(parts[0::2], parts[1::2], strict=False):
                if spec == "?" and index.isdigit() and int(index) < 256:
                    rgb = self.palette.colour(int(index))
                    self._write(f"\x1b]4;{index};{_hex16(rgb)}{terminator}")
            return
        if 10 <= code <= 12:
            # OSC 10;?;? asks for 10 and 11: each further parameter is about the next colour.
            for offset, spec in enumerate(text.split(";")):
                which = code + offset
                if spec == "?" and which <= 12:
                    palette = self.palette
                    rgb = palette.background if which == 11 else palette.foreground  # 12: the cursor's colour
                    self._write(f"\x1b]{which};{_hex16(rgb)}{terminator}")

    def secondary_device_attributes(self) -> None:
        """DA2 (`CSI > c`): xterm's answer as xterm gives it when it emulates a VT100 (0), as DA says (`CSI ? 6 c`),
        at xterm's patch level, no ROM cartridge (0). Not a VT420 (41), as xterm says by default: tmux takes that
        to have left and right margins (DECSLRM) and rectangle fills (DECFRA), which Stem does not, and scrolled
        one of two side-by-side panes inside margins Stem did not keep, blanking the other."""
        self._write(f"\x1b[>0;{_XTERM_PATCH};0c")

    def extended_cursor_position(self) -> None:
        """DECXCPR (`CSI ? 6 n`): the cursor's row and column as xterm reports them, `CSI ? row ; column R`; rows
        count from the top margin in origin mode, and a cursor past the last column (a wrap pending) is on it."""
        screen = self.screen
        cursor = screen.cursor
        y = cursor.y + 1
        if mo.DECOM in screen.mode and screen.margins is not None:
            y -= screen.margins.top
        self._write(f"\x1b[?{y};{min(cursor.x, screen.columns - 1) + 1}R")

    # ------------------------------------------------------------------------------------------ modes

    def escapes(self) -> dict[str, Callable[[], None]]:
        """Handlers for the screen's two-character escapes that pyte does not know: the keypad modes."""
        return {"=": self._keypad_application, ">": self._keypad_numeric}

    def _keypad_application(self) -> None:
        self._deckpam = True

    def _keypad_numeric(self) -> None:
        self._deckpam = False

    @property
    def app_keypad(self) -> bool:
        """The keypad sends application sequences (DECKPAM, or DECNKM set)."""
        return self._deckpam or _KEYPAD_MODE << 5 in self.screen.mode

    def set_modes(self, modes: tuple[int, ...], on: bool) -> None:
        """The screen's `set_mode`/`reset_mode` hook for private modes."""
        if _SYNC_MODE in modes:
            if on:
                if self.frame_started is None:
                    self.frame_started = self.clock()
            else:
                self.frame_started = None

    def frame_remaining(self, now: float | None = None) -> float:
        """Seconds until the synchronized-output frame being drawn is due (0 when none is, or it timed out)."""
        started = self.frame_started
        if started is None:
            return 0.0
        left = started + FRAME_TIMEOUT - (self.clock() if now is None else now)
        return left if left > 0 else 0.0

    def take_clipboard(self) -> list[str]:
        """The clipboard writes (OSC 52 payloads, "selection;base64") since the last call."""
        taken, self.clipboard = self.clipboard, []
        return taken

    # ------------------------------------------------------------------------------------------ links

    def _link(self, uri: str) -> None:
        """OSC 8: a link ends where the cursor is now (an empty URI or a new link ends the open one)."""
        screen = self.screen
        cursor = screen.cursor
        if self._open is not None:
            self._close_link(cursor.x, cursor.y)
        if uri:
            # The row (not created here: rows must come into being when pyte's would) or, before any cell of it
            # is drawn, its number.
            self._open = _OpenLink(uri, min(cursor.x, screen.columns), cursor.y, screen.buffer.get(cursor.y))

    def _close_link(self, x: int, y: int) -> None:
        opened, self._open = self._open, None
        assert opened is not None
        screen = self.screen
        buffer = screen.buffer
        if opened.row is None:
            start_y: int | None = opened.y
        else:
            start_y = next((row_y for row_y, row in buffer.items() if row is opened.row), None)
        if start_y is None or start_y > y:
            return  # the row it began on scrolled away
        columns = screen.columns
        x = min(x, columns)
        for row_y in range(start_y, y + 1):
            first = opened.x if row_y == start_y else 0
            last = x if row_y == y else columns
            row = buffer.get(row_y)
            if last > first and row is not None:
                text = "".join(row[i].data for i in range(first, last))
                entry = self._links.get(id(row))
                if entry is None or entry.row is not row:
                    entry = self._links[id(row)] = _RowLinks(row)
                entry.spans = [s for s in entry.spans if s.end <= first or s.start >= last]
                entry.spans.append(_Span(first, last, opened.uri, text))
        if len(self._links) > 4 * screen.lines:
            self._prune()

    def _prune(self) -> None:
        """Forget the links of rows no longer on the screen (those of the main screen, too, while the alternate one
        is shown: rare, as only a screen with many links prunes)."""
        live = {id(row) for row in self.screen.buffer.values()}
        self._links = {key: entry for key, entry in self._links.items() if key in live}

    def row_links(self, y: int) -> list[Link]:
        """The hyperlinks on row `y` whose cells still show what was drawn under them."""
        if not self._links:
            return []
        row = self.screen.buffer.get(y)
        entry = self._links.get(id(row)) if row is not None else None
        if entry is None or entry.row is not row:
            return []
        assert row is not None
        kept = [s for s in entry.spans if "".join(row[i].data for i in range(s.start, s.end)) == s.text]
        if len(kept) != len(entry.spans):
            entry.spans = kept
        return [Link(s.start, s.end, s.uri) for s in kept]
