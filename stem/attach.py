"""`stem attach NAME`: one colony's agent full-screen in the user's own terminal, like `tmux attach`.

The colony host sends a snapshot of the agent's screen, drawn once, then the agent's output bytes exactly as it
wrote them, passed straight through: the user's terminal does the emulating, so nothing is parsed on the way and
a slow link carries only what the agent wrote. Typed bytes go the other way untouched, except the release chord
(`terminal.release`, ctrl+] by default), which detaches.

A snapshot carries what the output after it relies on besides the rows (`TermState`: the scroll margins, origin
mode, autowrap, insert mode, the G0/G1 character sets and the pen), set after the rows are drawn, so that a program
that set a scroll region once (apt's progress row) goes on scrolling inside it after an attach. Terminal state the
host does not keep (the cursor's shape, modifyOtherKeys) starts from the terminal's defaults until the agent sets
it again.

A colony host that is stopped (kill -STOP, a debugger) still holds the connection and says nothing: every
`HOST_CHECK` seconds attach looks whether it is, and while it is, the terminal's last row says so (and how to let it
go on), over the agent's screen, which is drawn again whole once the host goes on. Keys typed meanwhile wait in the
connection and reach the agent then, as they would reach a stopped program in a terminal of its own. So for a host
that is hung (stuck in the kernel, a loop that never yields): one that has been quiet is asked whether it is there,
and one that leaves that unanswered for `HOST_SILENT` seconds gets its line until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from core import lifecycle as lc
from core.agent import EXITED
from core.aio import wait_for
from core.errors import StemError
from core.host.paths import HostPaths
from core.host.protocol import (
    HOST_SILENT,
    AgentInfo,
    Bye,
    ColonyInfo,
    Connection,
    Keys,
    Output,
    Resize,
    Rows,
    ScreenState,
    Snapshot,
    State,
    Stream,
    Subscribe,
    Update,
)
from core.screen_cells import Char, cell_width
from core.xterm_input import encode_key
from stem.exec_pty import write_all

__all__ = ["DEFAULT_RELEASE", "RELEASE_BINDING", "ReleaseKey", "attach", "release_key", "render_snapshot"]

RELEASE_BINDING: Final = "terminal.release"
DEFAULT_RELEASE: Final = b"\x1d"  # ctrl+]
STREAMS: Final[frozenset[Stream]] = frozenset({"output", "states"})
# While the agent is at another client's size (a UI used last), its output is laid out for that size: the screen's
# changed rows are drawn instead, cut to this terminal, as tmux shows a window larger than the client.
MIRROR_STREAMS: Final[frozenset[Stream]] = frozenset({"screen", "states"})
READ_SIZE: Final = 65536
HOST_CHECK: Final = 2.0  # how often attach looks whether the colony host is stopped or hung: it says nothing itself

EXIT_DETACHED: Final = 0
EXIT_HOST_GONE: Final = 1

_CSI = "\x1b["

# The agent switching between its main and alternate screens (xterm's 1049, 1047 and 47, set or reset), and the
# start of such a switch cut by the end of an output.
_SCREEN_SWITCH: Final = re.compile(rb"\x1b\[\?(?:1049|1047|47)[hl]")
_SWITCH_START: Final = re.compile(rb"\x1b(?:\[(?:\?[0-9]{0,4})?)?\Z")

# Entering: push the terminal's title (xterm's title stack) so the agent's title can be undone, then the
# alternate screen, so the user's shell and its scrollback are left as they were.
_ENTER: Final = f"{_CSI}22;0t{_CSI}?1049h".encode()

# Leaving: undo whatever the agent may have turned on through the passed-through output, then the alternate
# screen (its own kitty keyboard stack is popped before it is left) and the title. Mouse reports, focus events,
# bracketed paste or application keys left on would make the user's shell receive escape sequences as input.
_LEAVE: Final = (
    "\x18"  # CAN: ends any sequence the agent's output left half written when the user detached
    f"{_CSI}?9l{_CSI}?1000l{_CSI}?1002l{_CSI}?1003l{_CSI}?1005l{_CSI}?1006l{_CSI}?1015l"  # mouse reports off
    f"{_CSI}?1004l{_CSI}?2004l"  # focus events, bracketed paste
    f"{_CSI}?1l\x1b>"  # cursor keys and keypad back to normal
    f"{_CSI}<99u"  # the kitty keyboard flags the agent pushed
    f"{_CSI}0m{_CSI}r{_CSI}?6l{_CSI}?7h{_CSI}4l\x1b(B"  # pen, margins, origin, autowrap, insert, charset
    f"{_CSI}?5l{_CSI}0 q{_CSI}?25h"  # normal video, the default cursor shape, a visible cursor
    f"{_CSI}?1049l{_CSI}23;0t"  # the user's screen and title
).encode()

# SGR numbers of pyte's 16 colour names: 0-7 are 30+n / 40+n, 8-15 are 90+n / 100+n. pyte names yellow
# "brown", and its bright magenta background is spelled "bfightmagenta" (a typo in pyte.graphics.BG_AIXTERM).
_ANSI_NAMES: Final = ("black", "red", "green", "brown", "blue", "magenta", "cyan", "white")
ANSI_INDEX: Final = {
    **{name: i for i, name in enumerate(_ANSI_NAMES)},
    **{f"bright{name}": i + 8 for i, name in enumerate(_ANSI_NAMES)},
    "yellow": 3,
    "brightyellow": 11,
    "bfightmagenta": 13,
}
_HEX = frozenset("0123456789abcdefABCDEF")
# bold, italics, underscore, strikethrough, reverse, blink, dim, conceal, double underline, overline: the order of
# a Char's flags after fg and bg. A cell underlined and double underlined gets 4 then 21: double, as it was shown.
_FLAG_SGR: Final = ("1", "3", "4", "9", "7", "5", "2", "8", "21", "53")
# What must not reach the terminal inside a title: it would end the OSC early and run the rest as a sequence.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# ------------------------------------------------------------------------------------------------ the release key


def release_key(spec: str | None, where: str = "config.toml") -> tuple[bytes, str | None]:
    """The byte a terminal sends for the user's release chord (their `[keys] terminal.release`, Textual key names,
    comma separated: the first with a one-byte form wins), and a warning when none has one (ctrl+] then)."""
    if not spec:
        return DEFAULT_RELEASE, None
    for name in spec.split(","):
        data = _key_byte(name.strip())
        if data is not None:
            return data, None
    return DEFAULT_RELEASE, (
        f"{where}: [keys] {RELEASE_BINDING} = {spec!r} is not a key a terminal sends as one byte: "
        f"stem attach detaches with ctrl+] instead"
    )


def _key_byte(name: str) -> bytes | None:
    data = encode_key(name)
    if not data:
        # Textual spells ctrl+] "ctrl+right_square_bracket", which encode_key knows; users may write the character.
        *mods, base = name.split("+")
        if mods == ["ctrl"] and len(base) == 1 and base in "@[\\]^_?":
            data = bytes([ord(base) ^ 0x40])
    # ESC begins every escape sequence the terminal sends (arrows, mouse, paste): it cannot mean "detach".
    if len(data) == 1 and data != b"\x1b":
        return data
    return None


def key_name(byte: int) -> str:
    """How a person names the key that sends `byte` ("ctrl+]", "ctrl+g", "q")."""
    if byte < 0x20 or byte == 0x7F:
        return "ctrl+" + chr(byte ^ 0x40).lower()
    return chr(byte)


class ReleaseKey:
    """Finds the release chord in typed bytes: its byte, or the same chord as a terminal reports it once the agent
    turned on the kitty keyboard protocol (`CSI 93;5u`) or xterm's modifyOtherKeys (`CSI 27;5;93~`)."""

    def __init__(self, data: bytes) -> None:
        if len(data) != 1:
            raise ValueError(f"the release key is one byte, not {data!r}")
        self.byte = data[0]
        self.name = key_name(self.byte)
        alternatives = [re.escape(data)]
        self._chord = self.byte < 0x20
        if self._chord:
            code = ord(chr(self.byte ^ 0x40).lower())  # the key's own code point: ctrl+] is 93, ctrl+g is 103
            # Kitty: CSI code[:alternates] ; modifiers[:event] u, press (1) or repeat (2) only.
            alternatives.append(rb"\x1b\[%d(?::\d*)*;(\d+)(?::[12])?u" % code)
            alternatives.append(rb"\x1b\[27;(\d+);%d~" % code)
        self._pattern = re.compile(b"|".join(alternatives))

    def find(self, data: bytes) -> int:
        """Where the first release chord in `data` starts, or -1."""
        for match in self._pattern.finditer(data):
            modifiers = (match.group(1) or match.group(2)) if self._chord else None
            # 1 + bits: shift 1, alt 2, ctrl 4, super 8, hyper 16, meta 32, caps lock 64, num lock 128.
            if modifiers is None or (int(modifiers) - 1) & 0x3F == 4:
                return match.start()
        return -1


# --------------------------------------------------------------------------------------------- drawing a screen


def _colour(name: str, base: int) -> str:
    """SGR parameters for a pyte colour name; `base` is 30 (foreground) or 40 (background)."""
    index = ANSI_INDEX.get(name)
    if index is not None:
        return str(base + index if index < 8 else base + 60 + index - 8)
    if len(name) == 6 and _HEX.issuperset(name):  # pyte gives 256-colour and truecolour cells as hex
        return f"{base + 8};2;{int(name[0:2], 16)};{int(name[2:4], 16)};{int(name[4:6], 16)}"
    return str(base + 9)  # "default", or a name this stem does not know


_SGR_CACHE: dict[tuple[object, ...], str] = {}


def _sgr(style: tuple[object, ...]) -> str:
    """The SGR sequence that sets exactly `style` (a Char's fields after its data), from any pen."""
    found = _SGR_CACHE.get(style)
    if found is None:
        fg, bg, *flags = style
        params = ["0", *(sgr for sgr, on in zip(_FLAG_SGR, flags, strict=True) if on)]
        if fg != "default":
            params.append(_colour(str(fg), 30))
        if bg != "default":
            params.append(_colour(str(bg), 40))
        if len(_SGR_CACHE) > 4096:  # a truecolour rainbow must not grow it without limit
            _SGR_CACHE.clear()
        found = _SGR_CACHE[style] = f"{_CSI}{';'.join(params)}m"
    return found


def render_snapshot(screen: ScreenState | None, columns: int, lines: int) -> bytes:
    """What draws `screen` on a terminal of `columns` x `lines` already on its alternate screen: cleared, every
    row with its colours and attributes, the agent's key, keypad, mouse and focus modes, its title, the cursor. A
    screen larger than the terminal is cut at its right and bottom."""
    # A known pen, whole-screen margins, no origin or insert mode, autowrap, ASCII character sets before clearing.
    out = [f"{_CSI}0m{_CSI}?6l{_CSI}r{_CSI}?7h{_CSI}4l\x1b(B\x1b)B{_CSI}H{_CSI}2J"]
    if screen is None:
        return "".join(out).encode()
    out.append(f"{_CSI}?5{'h' if screen.modes.reverse_screen else 'l'}")
    _draw_rows(out, screen, columns, lines, erase=False)
    _draw_modes_and_cursor(out, screen, columns, lines)
    _draw_term(out, screen, columns, lines)
    return "".join(out).encode()


def render_rows(screen: ScreenState, columns: int, lines: int) -> bytes:
    """What draws the rows a `rows` message holds over a drawn snapshot (each erased first), cut to a terminal of
    `columns` x `lines`, and the modes and cursor it gives."""
    out: list[str] = []
    _draw_rows(out, screen, columns, lines, erase=True)
    _draw_modes_and_cursor(out, screen, columns, lines)
    return "".join(out).encode()


def _draw_rows(out: list[str], screen: ScreenState, columns: int, lines: int, erase: bool) -> None:
    """The rows of `screen` (those it holds), cut at the terminal's right and bottom; `erase`: each row erased
    first (else the terminal is known blank)."""
    # On a DECSCNM screen pyte stores every cell reversed; the terminal reverses them itself once told to.
    flip = screen.modes.reverse_screen
    width, height = min(columns, screen.columns), min(lines, screen.lines)
    blank = screen.blank
    for y in sorted(screen.rows) if erase else range(height):
        cells = screen.rows.get(y)
        if cells is None or y >= height:
            continue
        end = len(cells)
        while end and cells[end - 1] == blank:  # an erase drew those already
            end -= 1
        if erase:
            out.append(f"{_CSI}{y + 1}H{_CSI}0m{_CSI}2K")
        elif not end:
            continue
        else:
            out.append(f"{_CSI}{y + 1}H")
        pen: tuple[object, ...] = Char(" ")[1:]
        for x in range(min(end, width)):
            cell = cells[x]
            data = cell.data
            if not data:
                if x and cells[x - 1].data and _wide(cells[x - 1].data):
                    continue  # the empty cell pyte puts after a wide character: that character covers it
                data = " "  # its character drawn over: a blank, as the UI shows it (every later cell stays put)
            elif not data.isascii() and _wide(data):
                if x + 1 >= len(cells) or cells[x + 1].data:
                    data = " "  # its second cell drawn over: a blank, or the rest of the row would be a cell right
                elif x + 1 >= width:
                    break  # a wide character with one column left would wrap onto the next row
            style = cell[1:]
            if flip:
                style = (*style[:6], not style[6], *style[7:])
            if style != pen:
                out.append(_sgr(style))
                pen = style
            out.append(data)
        if pen != Char(" ")[1:]:
            out.append(f"{_CSI}0m")


def _draw_term(out: list[str], screen: ScreenState, columns: int, lines: int) -> None:
    """The terminal state the output after a snapshot relies on (`TermState`: an apt-style progress row kept out of
    a scroll region, line drawing designated once, a pen set before a run of text): set as the host's screen has it,
    the cursor put back where it was (DECSTBM homes it), and the pen last."""
    term = screen.term
    width, height = min(columns, screen.columns), min(lines, screen.lines)
    top = 0
    if term.margins is not None and term.margins[1] < height:  # a region this terminal has room for
        top, bottom = term.margins
        out.append(f"{_CSI}{top + 1};{bottom + 1}r")
    if term.origin:
        out.append(f"{_CSI}?6h")
    if not term.autowrap:
        out.append(f"{_CSI}?7l")
    if term.insert:
        out.append(f"{_CSI}4h")
    if term.g0_lines:
        out.append("\x1b(0")
    if term.g1_lines:
        out.append("\x1b)0")
    if term.margins is not None or term.origin:
        x = min(screen.cursor_x, width - 1)
        y = min(screen.cursor_y, height - 1) - (top if term.origin else 0)
        out.append(f"{_CSI}{max(y, 0) + 1};{x + 1}H")
    if term.pen[1:] != Char(" ")[1:]:
        out.append(_sgr(term.pen[1:]))


def _draw_modes_and_cursor(out: list[str], screen: ScreenState, columns: int, lines: int) -> None:
    modes = screen.modes
    out.append(f"{_CSI}0m")
    out.append(f"{_CSI}?1{'h' if modes.app_cursor_keys else 'l'}")
    out.append(f"{_CSI}?2004{'h' if modes.bracketed_paste else 'l'}")
    out.append(f"{_CSI}?9l{_CSI}?1000l{_CSI}?1002l{_CSI}?1003l")
    if modes.mouse:
        out.append(f"{_CSI}?{modes.mouse}h")
    out.append(f"{_CSI}?1006{'h' if modes.mouse_sgr else 'l'}")
    out.append("\x1b=" if modes.app_keypad else "\x1b>")
    out.append(f"{_CSI}?1004{'h' if modes.focus_reports else 'l'}")
    if screen.title:
        out.append(f"\x1b]2;{_CONTROL.sub('', screen.title)}\x07")
    width, height = min(columns, screen.columns), min(lines, screen.lines)
    x = min(screen.cursor_x, width - 1)  # pyte's x is `columns` while a wrap is pending
    y = min(screen.cursor_y, height - 1)
    out.append(f"{_CSI}{y + 1};{x + 1}H{_CSI}?25{'h' if screen.cursor_visible else 'l'}")


# -------------------------------------------------------------------------------------------------- the terminal


def _terminal_size(*fds: int) -> tuple[int, int] | None:
    """(columns, lines) of the first of `fds` that is a terminal with a size."""
    for fd in fds:
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.columns > 0 and size.lines > 0:
            return size.columns, size.lines
    return None


@contextlib.contextmanager
def _raw_terminal(stdin_fd: int, stdout_fd: int) -> Iterator[None]:
    """The terminal in raw mode on its alternate screen, with stdin non-blocking; all undone on the way out,
    whatever ended it."""
    saved = termios.tcgetattr(stdin_fd)
    blocking = os.get_blocking(stdin_fd)
    try:
        # TCSANOW, not setraw's TCSAFLUSH: keys typed while connecting reach the agent rather than vanish.
        tty.setraw(stdin_fd, termios.TCSANOW)
        # stdin and stdout are often one open file, so stdout is non-blocking now too: writes handle EAGAIN.
        os.set_blocking(stdin_fd, False)
        write_all(stdout_fd, _ENTER)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(stdin_fd, blocking)  # the shell would otherwise inherit a non-blocking terminal
        with contextlib.suppress(OSError):  # a terminal that hung up takes nothing more
            write_all(stdout_fd, _LEAVE)
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)


# ------------------------------------------------------------------------------------------------- the session


@dataclass(frozen=True, slots=True)
class _End:
    """How an attachment ended: the exit code and the line to print (none when the terminal is gone)."""

    code: int
    line: str | None


class _Attachment:
    """One attached terminal: stdin to the host as keys, the host's output to stdout, resizes both ways."""

    def __init__(
        self, conn: Connection, colony: str, host: HostPaths, release: ReleaseKey, stdin_fd: int, stdout_fd: int
    ) -> None:
        self.conn = conn
        self.colony = colony
        self.host = host
        self.release = release
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[_End] = self.loop.create_future()
        self.asked: tuple[int, int] | None = None  # the size last asked of the host
        # Output only makes sense on top of a drawn snapshot: none is drawn yet, and after asking for a size the
        # output is for a screen about to be replaced. Dropped until the next snapshot.
        self.stale = True
        self.held = b""  # the end of the last output, which may be the start of a screen switch (see `_passed`)
        # The agent is at another client's size (`MIRROR_STREAMS`): the screen's rows are drawn, not its output.
        self.mirroring = False
        self.agent_size: tuple[int, int] | None = None  # as the host last said
        self.colony_info: ColonyInfo | None = None
        self.agent: AgentInfo | None = None
        self.lines = 24  # the rows of the screen drawn last: where a stopped host's line goes without a known size
        self.stopped: int | None = None  # the host's pid while it is stopped (kill -STOP) or hung, as last looked
        self.look = asyncio.Event()  # look at the host now, not at the next `HOST_CHECK`
        self.writing = asyncio.Lock()  # one write at a time: the stopped host's line never lands inside the output

    async def run(self, updates: AsyncIterator[Update]) -> _End:
        loop = self.loop
        loop.add_reader(self.stdin_fd, self._on_input)
        loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
        loop.add_signal_handler(signal.SIGHUP, self._end, _End(128 + signal.SIGHUP, None))
        loop.add_signal_handler(
            signal.SIGTERM, self._end, _End(128 + signal.SIGTERM, f"detached from {self.colony}: terminated")
        )
        follower = loop.create_task(self._follow(updates), name=f"stem-attach-{self.colony}")
        follower.add_done_callback(self._follower_done)
        watcher = loop.create_task(self._watch_host(), name=f"stem-attach-{self.colony}-host")
        watcher.add_done_callback(self._follower_done)
        try:
            return await self.ended
        finally:
            loop.remove_reader(self.stdin_fd)
            for sig in (signal.SIGWINCH, signal.SIGHUP, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for task in (follower, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _end(self, end: _End) -> None:
        if not self.ended.done():
            self.ended.set_result(end)

    def _follower_done(self, task: asyncio.Task[None]) -> None:
        # A bug in following must end the attachment with its traceback, not leave the terminal raw and waiting.
        if not task.cancelled() and task.exception() is not None and not self.ended.done():
            self.ended.set_exception(cast(BaseException, task.exception()))

    # ----------------------------------------------------------------------------------------- user to host

    def _on_input(self) -> None:
        if self.ended.done():
            return  # detaching: what follows the release key is not the agent's
        try:
            data = os.read(self.stdin_fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal hung up
            data = b""
        if not data:
            self._end(_End(128 + signal.SIGHUP, None))
            return
        at = self.release.find(data)
        if at < 0:
            self._send(data)
            return
        if at:
            self._send(data[:at])  # typed before the chord in the same read: the agent still gets it
        self._end(
            _End(EXIT_DETACHED, f"detached from {self.colony} ({self.release.name} again: stem attach {self.colony})")
        )

    def _send(self, data: bytes) -> None:
        try:
            self.conn.post(Keys(data))
        except StemError:
            pass  # the connection ended: the follower reports why

    def _on_resize(self) -> None:
        size = _terminal_size(self.stdout_fd, self.stdin_fd)
        if size is not None:
            self._ask_size(size)
            self.look.set()  # a stopped host sends no snapshot: its line goes to the new last row at once

    def _ask_size(self, size: tuple[int, int]) -> None:
        """Resize the agent to `size`, then subscribe again: the host answers with a snapshot of the resized
        screen, drawn whole, rather than leaving the terminal's own reflow of the old one."""
        self.asked = size
        self._redraw(Resize(*size))

    def _redraw(self, *first: Resize) -> None:
        """Stop passing output through and subscribe again (after `first`): the host answers with a snapshot, drawn
        whole (see `_snapshot`)."""
        self.stale = True
        try:
            for msg in first:
                self.conn.post(msg)
            self.conn.post(Subscribe(MIRROR_STREAMS if self.mirroring else STREAMS))
        except StemError:
            pass  # the connection ended: the follower reports why

    def _passed(self, data: bytes) -> bytes:
        """What of the agent's output goes to the terminal as it is. The user's terminal is on its alternate screen
        for as long as it is attached, whichever screen the agent is on: passed through, the agent's switch to its
        main screen (vim quitting) would show the user's own screen and draw on it. So the output stops before a
        switch, and a snapshot of the screen the agent switched to is drawn instead (what comes until then is in
        it). A switch cut by the end of the output is held back until the rest comes."""
        data, self.held = self.held + data, b""
        switch = _SCREEN_SWITCH.search(data)
        if switch is not None:
            self._redraw()
            return data[: switch.start()]
        cut = _SWITCH_START.search(data, max(0, len(data) - 8))
        if cut is not None:
            data, self.held = data[: cut.start()], data[cut.start() :]
        return data

    # ----------------------------------------------------------------------------------------- host to user

    async def _follow(self, updates: AsyncIterator[Update]) -> None:
        bye: str | None = None
        try:
            async for msg in updates:
                if isinstance(msg, Output):
                    if not self.stale and not self.mirroring:
                        await self._write(self._passed(msg.data))
                elif isinstance(msg, Rows):
                    if not self.stale and self.mirroring:
                        columns, lines = _terminal_size(self.stdout_fd, self.stdin_fd) or (80, self.lines)
                        await self._write(render_rows(msg.screen, columns, lines))
                elif isinstance(msg, Snapshot):
                    self._note(msg.colony, msg.agent)
                    await self._snapshot(msg.screen)
                elif isinstance(msg, State):
                    self._note(msg.colony, msg.agent)
                    if msg.agent is not None and msg.agent.size is not None:
                        self._agent_sized(msg.agent.size)
                elif isinstance(msg, Bye):
                    bye = msg.reason
        except StemError as e:  # the connection broke, or the host sent something broken
            bye = bye or str(e)
        except OSError:  # stdout is gone
            self._end(_End(128 + signal.SIGHUP, None))
            return
        self._end(_End(EXIT_HOST_GONE, f"{self.colony}'s agent ended: {bye or self._why_gone()}"))

    def _agent_sized(self, size: tuple[int, int]) -> None:
        """The agent's size, as the host says when it changes: at another size than this terminal (a UI used last
        took it), the screen's rows are drawn rather than its output passed through, which is laid out for that
        size; back at this size, output again. Each change subscribes again for a snapshot of the screen."""
        before, self.agent_size = self.agent_size, size
        mine = _terminal_size(self.stdout_fd, self.stdin_fd) or self.asked
        mirror = mine is not None and size != mine
        if mirror != self.mirroring or (mirror and size != before):
            self.mirroring = mirror
            self._redraw()

    async def _snapshot(self, screen: ScreenState | None) -> None:
        self.held = b""  # the snapshot has it
        size = _terminal_size(self.stdout_fd, self.stdin_fd)
        if (
            screen is not None
            and size is not None
            and (screen.columns, screen.lines) != size
            and self.asked != size
            and not self.mirroring
        ):
            self._ask_size(size)  # what follows this snapshot would not fit: draw the one that answers
            return
        if size is not None and self.asked is None:
            # The agent has this size already: the host is told it all the same, so that a key typed here gives it
            # back after another client (a UI used since) took it.
            self.asked = size
            with contextlib.suppress(StemError):
                self.conn.post(Resize(*size))
        self.stale = False
        columns, lines = size or ((screen.columns, screen.lines) if screen is not None else (80, 24))
        self.lines = lines
        await self._write(render_snapshot(screen, columns, lines))

    # ------------------------------------------------------------------------------ a stopped or hung host

    async def _watch_host(self) -> None:
        """Every `HOST_CHECK` seconds: a host that got stopped, or that does not answer, gets its line on the last
        row (again each time, as a resize or the output that was on its way may have moved it); one that went on
        gets the agent's screen drawn again whole, which takes the line away."""
        while True:
            with contextlib.suppress(TimeoutError):  # a period, not a wait for something: the host tells nothing
                await wait_for(self.look.wait(), HOST_CHECK)
            self.look.clear()
            pid, line = self.host.stopped(), self._stopped_line
            if pid is None and self.conn.unanswered() >= HOST_SILENT:
                found = self.host.process()
                pid, line = (found[0] if found is not None else None), self._silent_line
            if pid is not None:
                self.stopped = pid
                try:
                    await self._write(self._last_row(line(pid)))
                except OSError:  # stdout is gone
                    self._end(_End(128 + signal.SIGHUP, None))
                    return
            elif self.stopped is not None:
                self.stopped = None
                self._redraw()

    def _stopped_line(self, pid: int) -> str:
        return f"colony {self.colony}: its host (pid {pid}) is stopped: kill -CONT {pid} (keys typed wait for it)"

    def _silent_line(self, pid: int) -> str:
        return f"colony {self.colony}: its host (pid {pid}) does not answer; `stem stop {self.colony}` ends it"

    def _last_row(self, text: str) -> bytes:
        """`text` as a line over the last row, written without disturbing the agent's screen: the cursor, pen,
        origin mode and character set are saved and put back."""
        columns, lines = _terminal_size(self.stdout_fd, self.stdin_fd) or (80, self.lines)
        text = _CONTROL.sub("", text)[:columns].ljust(columns)
        # CAN first: the output may have stopped in the middle of a sequence, which would swallow the line.
        return f"\x18\x1b7{_CSI}?6l\x1b(B{_CSI}{lines};1H{_CSI}0;7m{text}{_CSI}0m\x1b8".encode()

    def _note(self, colony: ColonyInfo | None, agent: AgentInfo | None) -> None:
        self.colony_info = colony or self.colony_info
        self.agent = agent or self.agent

    def _why_gone(self) -> str:
        agent, colony = self.agent, self.colony_info
        if agent is not None and agent.activity == EXITED and agent.code is not None:
            return f"it was killed by signal {-agent.code}" if agent.code < 0 else f"it exited with code {agent.code}"
        if colony is not None and colony.state != lc.RUNNING:
            return f"the colony is {colony.state}" + (f" ({colony.reason})" if colony.reason else "")
        return "its colony host went away"

    async def _write(self, data: bytes) -> None:
        """Write all of `data` to stdout; when the terminal is slower than the agent, wait for it without holding
        the loop, so the release key still works."""
        async with self.writing:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.stdout_fd, view) :]
                except BlockingIOError:
                    await self._writable()

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_writer(self.stdout_fd, wake)
        try:
            await ready
        finally:
            self.loop.remove_writer(self.stdout_fd)


async def attach(socket_path: Path | str, colony: str, release_key_bytes: bytes, stdin_fd: int, stdout_fd: int) -> int:
    """Show `colony`'s agent full-screen on the terminal at `stdin_fd`/`stdout_fd` until the release key (exit 0),
    its host goes away (exit 1) or SIGHUP/SIGTERM (128 + the signal). Connection errors are raised before the
    terminal is touched."""
    release = ReleaseKey(release_key_bytes)
    conn = await Connection.open(socket_path, "attach", client=f"stem attach pid {os.getpid()}")
    try:
        updates = conn.updates()
        await conn.subscribe(*STREAMS)  # the snapshot now waits first in `updates`
        with _raw_terminal(stdin_fd, stdout_fd):
            # The socket is in the host's folder (HostPaths.socket): where its pid file tells whether it is stopped.
            host = HostPaths(Path(socket_path).parent)
            end = await _Attachment(conn, colony, host, release, stdin_fd, stdout_fd).run(updates)
    finally:
        # Bounded: keys typed before the release key are flushed, but a host that stopped reading holds nobody.
        with contextlib.suppress(TimeoutError):
            await wait_for(conn.close(), 2.0)
    if end.line is not None:
        with contextlib.suppress(OSError):
            write_all(stdout_fd, f"{end.line}\n".encode())
    return end.code


def _wide(data: str) -> bool:
    """Whether a cell's characters take two cells."""
    return cell_width(data[0]) == 2
