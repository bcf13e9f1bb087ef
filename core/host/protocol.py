"""The colony host protocol: the messages between a colony host and its clients (UIs, attach, logs, scripts).

Transport-independent: messages are msgpack maps with their type under "t", each framed by a 4-byte big-endian
length (at most `MAX_FRAME`). Over a Unix socket the frames are the byte stream; over a WebSocket each frame's
body is one binary message. Nothing refers to file descriptors or to paths a client would read itself.

A connection starts with `hello` (client) and `welcome` (host), which never change shape, so any two versions
can tell each other that they differ. Decoders ignore keys they do not know: a field can be added without a new
version; a new message type, a removed field or a changed meaning needs a new `PROTOCOL_VERSION`.

| t               | from   | fields                                               | meaning                          |
|-----------------|--------|------------------------------------------------------|----------------------------------|
| hello           | client | versions [int], kind, client str                     | first frame; kind: ui, attach,   |
|                 |        |                                                      | logs or script                   |
| welcome         | host   | colony, versions [int], version int|nil, error str   | the version chosen, or nil + why |
| subscribe       | client | id, streams [screen|logs|log-live|states|output]     | a `snapshot`, then the `reply`   |
| keys            | client | id, data bin                                         | bytes for the agent's PTY        |
| paste           | client | id, text                                             | pasted text (bracketed if asked) |
| resize          | client | id, columns, lines                                   | size of the agent's PTY, screen  |
| palette         | client | id, foreground, background, colors [16] (v2)         | the colours the agent is shown   |
|                 |        |                                                      | in: answers to OSC 10/11/12/4    |
| scrollback      | client | id, start, count                                     | lines by number; result: page    |
| log_history     | client | id, after, limit                                     | entries seq > after; result: log |
| diff            | client | id, path str|nil                                     | one path's diff or all; result   |
| restart_service | client | id, name                                             | restart a service                |
| restart_agent   | client | id                                                   | restart the agent program        |
| await_start     | client | id                                                   | answered once services are up    |
|                 |        |                                                      | and the agent started, or why not|
| stop            | client | id, grace, routes bool (default true)                | end all the colony runs, then    |
|                 |        |                                                      | the host; answered when done;    |
|                 |        |                                                      | routes false: its preview routes |
|                 |        |                                                      | are left to the stopper          |
| snapshot        | host   | screen, colony, agent, services, files, log, log_seq | all of the subscribed streams    |
| rows            | host   | the fields of a screen, with changed rows only       | screen changes since last `rows` |
| state           | host   | colony, agent, services (changed ones), files|nil    | colony, agent, service changes   |
| log             | host   | entries                                              | new log entries                  |
| notice          | host   | level, message                                       | something a person should see    |
| output          | host   | data bin                                             | the agent's raw output (stream   |
|                 |        |                                                      | `output`, for `stem attach`)     |
| reply           | host   | id, error str, result                                | answer to request `id`           |
| bye             | host   | reason                                               | the host closes the connection   |

Values inside messages:
- screen: version, columns, lines, cursor [x, y, visible], title (OSC 0/2), modes {app_cursor_keys, bracketed_paste,
  mouse (0, 9, 1000, 1002 or 1003), mouse_sgr, alternate_screen, reverse_screen, app_keypad (DECKPAM),
  focus_reports (1004)}, scrollback (lines held), scrolled (lines that ever entered it), pulled (lines ever taken
  back out of it; left out when none), bells, styles [style],
  rows {y: row}, links {y: [[start, end, uri], ...]} (OSC 8 hyperlinks on the rows sent; left out when none),
  clipboard ["selection;base64", ...] (the agent's OSC 52 writes since the last message; left out when none),
  term {margins [top, bottom], origin, autowrap, insert, g0_lines, g1_lines, pen (style index)} (in snapshots, only
  what differs from a terminal's defaults; left out when nothing does): what a client passing the output on sets.
  A snapshot holds every row.
- colors: "#rrggbb" strings.
- row: [segment, style index, segment, style index, ...] of cells, trailing cells equal to the screen's blank
  left out. A str segment is one cell per code point, "\\0" standing for the empty cell pyte puts after a wide
  character; a list segment is one cell per string (cells of several code points: a letter with a combining
  accent that has no precomposed form).
- style: [fg, bg, flags], colours as pyte names them ("default", "red", 6 hex digits; the 16 colours of the palette
  by name however they were set: SGR 31 and 38;5;1 are both "red"); flags: bold 1, italics 2,
  underscore 4, strikethrough 8, reverse 16, blink 32, dim 64, conceal 128, double underline 256, overline 512
  (a double underline from SGR 4:2 has the underscore bit too, from SGR 21 not: as pyte reads them). Decoders
  ignore bits they do not know. Style indices point into the message's own `styles`.
- scrollback line numbers: the n-th line ever to enter the scrollback is number n (from 0), so a number stays
  valid while older lines are dropped; the oldest line still held is `scrolled - scrollback`. A screen that grows
  taller takes its newest lines back onto its top rows (as tmux does): `scrolled` goes down by as many, their
  numbers go to the next lines to leave the screen, and `pulled` goes up by as many, so that a client forgets the
  lines it keeps by number whenever `pulled` changed. A width change rewraps every line (as tmux does): the lines
  held get new numbers from the oldest's on, and `pulled` goes up by one (clients also forget every line when
  `columns` changes).
- colony {state, stage, reason}; agent {activity, code, pid, size [columns, lines] (left out when not known)};
  service {name, state, port, restarts, code, detail, pid};
  file {path, status, added, removed}; log entry {seq, at, source, text}.
- result: {k: "scrollback", start, columns, styles, lines [row]} | {k: "log", entries, more} | {k: "diff", text}.

Streams: `logs` puts the log's tail (up to 5,000 entries) in the snapshot and pushes new entries; `log-live` pushes
new entries only (a UI following 100 colonies reads a colony's history when it shows it, from `log_history` or the
log file); `output` pushes the agent's raw bytes.

Versions: 2 added `palette` (a client sends it only on a connection at version 2) and the screen's links, clipboard,
app_keypad and focus_reports, which version 1 decoders ignore. A host speaks both. The style flags from 64 up
(dim, conceal, double underline, overline) came later without a new version: decoders before them drop those bits
(and show such cells without them). So did the screen's `pulled`: a decoder before it may show, in a history it
kept, lines that a screen grown taller took back.

Order: on one connection messages arrive in the order sent; a `rows` applies to the snapshot or rows before it.
A host that falls behind on a client may drop the rows it owes it and send a fresh snapshot instead.

Access: the socket file is mode 0600, and the host answers a peer of another uid (root too, unless the host runs
as root) with `bye`, never parsing what that peer sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import struct
import time
from asyncio.trsock import TransportSocket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import getitem, itemgetter, ne
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final, Literal, Self, TypeVar, cast, get_args

import msgpack
from pyte import modes as mo
from pyte.charsets import VT100_MAP as _LINE_DRAWING

from core.colony_log import Entry
from core.errors import StemError
from core.events import FileChange
from core.ipc import socket_address
from core.screen_cells import DEFAULT_CHAR, Char, chars_for
from core.screen_queries import Link, Palette

if TYPE_CHECKING:
    from core.screen import StemScreen

PROTOCOL_VERSION: Final = 2
SUPPORTED_VERSIONS: Final[tuple[int, ...]] = (1, PROTOCOL_VERSION)

# Big enough for a snapshot of a huge screen with its log tail, small enough that a corrupt length is caught.
MAX_FRAME: Final = 16 << 20
_HEADER = struct.Struct(">I")

# A host quiet this long (seconds) is asked whether it is there (`Connection.unanswered`); one that leaves the
# question unanswered this long is said not to answer (hung: stuck in the kernel, a loop that never yields).
HOST_QUIET: Final = 2.0
HOST_SILENT: Final = 10.0
# No log entry is after this one: a `log_history` after it is the cheapest question every version answers.
_NEWEST: Final = 1 << 62

# A screen larger than this is surely a corrupt message; it would otherwise make the decoder pad rows forever.
MAX_SIZE: Final = 4096

ClientKind = Literal["ui", "attach", "logs", "script"]
Stream = Literal["screen", "logs", "log-live", "states", "output"]
_KINDS: frozenset[str] = frozenset(get_args(ClientKind))
_STREAMS: frozenset[str] = frozenset(get_args(Stream))

log = logging.getLogger("stem.host")


# ------------------------------------------------------------------------------------------------------ errors


class ProtocolError(StemError):
    """A frame or message that does not follow the protocol (a bug or a foreign program on the socket)."""


class FrameTooLarge(ProtocolError):
    """A frame over `MAX_FRAME`; the connection cannot continue after it."""


class VersionMismatch(StemError):
    """The host and this stem share no protocol version; the message says what to do, in one line."""


class HostRefused(StemError):
    """The host would not take this connection (another uid, a bad hello); the message gives its reason."""


class HostUnreachable(StemError):
    """No colony host answers at the socket (not running, or not ours to reach)."""


class HostStopped(HostUnreachable):
    """The colony host is stopped (SIGSTOP, a debugger): its socket takes a connection and nothing answers."""


class ConnectionClosed(StemError):
    """The other end closed the connection."""


class RequestFailed(StemError):
    """The host answered a request with an error."""


STOPPED_CHECK = 0.5  # how often a handshake not answered yet looks whether the host is stopped


async def _unless_stopped(handshake: Awaitable[Connection], folder: Path) -> Connection:
    """`handshake`, unless the host in the colony `folder` is (or gets) stopped before it answers: a stopped host's
    listening socket still takes connections, and the command waited on its hello for good (`stem logs` hung)."""
    from core.host.paths import HostPaths

    task = asyncio.ensure_future(handshake)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=STOPPED_CHECK)
            if done:
                return task.result()
            pid = HostPaths(folder).stopped()
            if pid is not None:
                why = f"it answers nothing until kill -CONT {pid}"
                raise HostStopped(f"the colony host of {folder.name} (pid {pid}) is stopped: {why}")
    finally:
        task.cancel()  # a no-op once it is done; the caller closes the connection it was shaking hands on


def mismatch_line(colony: str, host: Sequence[int], ours: Sequence[int]) -> str:
    """The one line a user sees when this stem and a colony's host share no protocol version."""
    return (
        f"colony host of {colony} speaks protocol {_versions(host)}, this stem speaks {_versions(ours)}: "
        f"restart the colony (stem stop {colony} && stem start {colony}) or upgrade stem"
    )


def _versions(versions: Sequence[int]) -> str:
    names = [str(v) for v in sorted(versions)] or ["none"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# ---------------------------------------------------------------------------------------------- field reading

_REQUIRED: Final = object()


def _kind(value: object) -> str:
    return "nil" if value is None else type(value).__name__


class _Fields:
    """Typed access to a decoded msgpack map: a missing or mistyped field is a `ProtocolError` naming it."""

    __slots__ = ("data", "what")

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, dict):
            raise ProtocolError(f"{what} should be a map, not {_kind(data)}")
        self.data: dict[object, object] = data
        self.what = what

    def _get(self, key: str, default: object) -> object:
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise ProtocolError(f"{self.what} has no field {key!r}")
        return default

    def _wrong(self, key: str, expected: str, value: object) -> ProtocolError:
        return ProtocolError(f"field {key!r} of {self.what} should be {expected}, not {_kind(value)}")

    def integer(self, key: str, default: object = _REQUIRED, low: int | None = None, high: int | None = None) -> int:
        value = self._get(key, default)
        if type(value) is not int:  # bool is an int subclass, and never a valid number here
            raise self._wrong(key, "an integer", value)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{'' if low is None else low}..{'' if high is None else high}"
            raise ProtocolError(f"field {key!r} of {self.what} is {value}, outside {bounds}")
        return value

    def optional_integer(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value = self._get(key, _REQUIRED)
        if type(value) not in (int, float):
            raise self._wrong(key, "a number", value)
        return float(cast("float", value))

    def text(self, key: str, default: object = _REQUIRED) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def choice(self, key: str, allowed: frozenset[str]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise ProtocolError(f"field {key!r} of {self.what} is {value!r}, not one of {', '.join(sorted(allowed))}")
        return value

    def flag(self, key: str, default: object = _REQUIRED) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def blob(self, key: str) -> bytes:
        value = self._get(key, _REQUIRED)
        if not isinstance(value, bytes):
            raise self._wrong(key, "binary", value)
        return value

    def items(self, key: str, default: object = _REQUIRED) -> list[object]:
        value = self._get(key, default)
        if not isinstance(value, list):
            raise self._wrong(key, "a list", value)
        return value

    def integers(self, key: str) -> tuple[int, ...]:
        values = self.items(key)
        if not all(type(v) is int for v in values):
            raise ProtocolError(f"field {key!r} of {self.what} should be a list of integers")
        return tuple(cast("list[int]", values))

    def mapping(self, key: str) -> dict[object, object]:
        value = self._get(key, _REQUIRED)
        if not isinstance(value, dict):
            raise self._wrong(key, "a map", value)
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self._get(key, _REQUIRED), f"field {key!r} of {self.what}")

    def optional_sub(self, key: str) -> _Fields | None:
        return None if self.data.get(key) is None else self.sub(key)

    def subs(self, key: str, default: object = _REQUIRED) -> list[_Fields]:
        return [_Fields(item, f"an item of {key!r} in {self.what}") for item in self.items(key, default)]


# ------------------------------------------------------------------------------------------------ styled runs

# A cell's attributes without its character: fg, bg, then the flags (`Char`'s order, which is the wire's bits').
StyleKey = tuple[str, str, bool, bool, bool, bool, bool, bool, bool, bool, bool, bool]
_STYLE_SLICE = slice(1, None)  # cell[1:] is twice as fast as an itemgetter of the twelve fields
_DATA = cast("Callable[[Char], str]", itemgetter(0))
_FLAGS: Final = Char._fields[3:]  # bold, italics, underscore, strikethrough, reverse, blink, dim, conceal, ...
_REVERSE_BLANK: Final = DEFAULT_CHAR._replace(reverse=True)

# The wire's stand-in for pyte's empty cell after a wide character; pyte never stores NUL as a cell.
_STUB = "\x00"

RowWire = list[str | list[str] | int]


# The attribute flags of a style as the wire's bits, and back.
_FLAG_BITS: dict[tuple[bool, ...], int] = {}
_FLAG_TUPLES: list[tuple[bool, ...]] = []
for _bits in range(1 << len(_FLAGS)):
    _flags = tuple(bool(_bits >> i & 1) for i in range(len(_FLAGS)))
    _FLAG_BITS[_flags] = _bits
    _FLAG_TUPLES.append(_flags)


class StyleTable:
    """The styles of one message: each distinct style is sent once (`wire`) and rows point at it by index."""

    __slots__ = ("ids", "wire")

    def __init__(self) -> None:
        self.ids: dict[StyleKey, int] = {}
        self.wire: list[list[str | int]] = []

    def id(self, key: StyleKey) -> int:
        """The index of a style, added if new."""
        found = self.ids.get(key)
        return self.add(key) if found is None else found

    def add(self, key: StyleKey) -> int:
        """The index of a style not in the table yet."""
        self.ids[key] = index = len(self.wire)
        self.wire.append([key[0], key[1], _FLAG_BITS[key[2:]]])
        return index


CellMaker = Callable[[str], Char]

# Wire style (fg, bg, flags) -> what makes its cells. Screens use few styles and repeat them in every message, so
# most are found here; wiped when full, as the cell caches are.
_MAKERS: dict[tuple[str, str, int], CellMaker] = {}
_MAKERS_LIMIT = 4096


def _decode_styles(items: list[object], what: str) -> list[CellMaker]:
    """For each style of a message's table, what turns a character into its (shared) cell."""
    makers: list[CellMaker] = []
    for item in items:
        if not (
            type(item) is list
            and len(item) == 3
            and type(item[0]) is str
            and type(item[1]) is str
            and type(item[2]) is int
        ):
            raise ProtocolError(f"a style of {what} should be [fg, bg, flags], not {item!r}")
        key = (item[0], item[1], item[2] & (len(_FLAG_TUPLES) - 1))  # bits we do not know: a newer host's
        maker = _MAKERS.get(key)
        if maker is None:
            if len(_MAKERS) >= _MAKERS_LIMIT:
                _MAKERS.clear()
            maker = _MAKERS[key] = chars_for(Char(" ", key[0], key[1], *_FLAG_TUPLES[key[2]])).__getitem__
        makers.append(maker)
    return makers


def encode_row(cells: Sequence[Char], blank: Char, styles: StyleTable) -> RowWire:
    """A row of cells as runs of one style each (see the module docstring); trailing `blank` cells are left out."""
    n = len(cells)
    while n and cells[n - 1] == blank:
        n -= 1
    if not n:
        return []
    if n < len(cells):
        cells = cells[:n]
    datas = list(map(_DATA, cells))
    keys = cast("list[StyleKey]", list(map(getitem, cells, repeat(_STYLE_SLICE))))
    text = "".join(datas)
    if _STUB not in text:
        if "" in datas:
            text = "".join([d or _STUB for d in datas])
        if len(text) == n:  # every cell is one code point (or a stub): the row is one string
            return _split_runs(text, keys, styles)
    return _general_runs(datas, keys, styles)


def _split_runs(text: str, keys: list[StyleKey], styles: StyleTable) -> RowWire:
    # Where the style changes, found in C (a Python loop over cells costs twice as much).
    starts = [0, *compress(range(1, len(keys)), map(ne, keys, islice(keys, 1, None)))]
    ends = [*starts[1:], len(keys)]
    ids = styles.ids
    out: RowWire = []
    for start, end in zip(starts, ends, strict=True):
        key = keys[start]
        sid = ids.get(key)
        out += (text[start:end], styles.add(key) if sid is None else sid)
    return out


def _general_runs(datas: list[str], keys: list[StyleKey], styles: StyleTable) -> RowWire:
    """Runs for a row with cells of several code points (or a NUL): those go as lists, one string per cell."""
    out: RowWire = []
    run: list[str] = []
    run_key = keys[0]
    run_plain = True
    for data, key in zip(datas, keys, strict=True):
        plain = len(data) <= 1 and data != _STUB
        if run and (key != run_key or plain != run_plain):
            out += ("".join(run) if run_plain else run, styles.id(run_key))
            run = []
        run_key, run_plain = key, plain
        run.append((data or _STUB) if plain else data)
    out += ("".join(run) if run_plain else run, styles.id(run_key))
    return out


def _decode_row(wire: object, makers: list[CellMaker], columns: int, blank: Char, what: str) -> list[Char]:
    if not isinstance(wire, list) or len(wire) % 2:
        raise ProtocolError(f"{what} should be a list of segment and style pairs")
    cells: list[Char] = []
    for i in range(0, len(wire), 2):
        segment, sid = wire[i], wire[i + 1]
        if type(sid) is not int or not 0 <= sid < len(makers):
            raise ProtocolError(f"{what} names style {sid!r}, but its message has {len(makers)}")
        make = makers[sid]
        if isinstance(segment, str | list) and len(cells) + len(segment) > columns:
            raise ProtocolError(f"{what} has more than {columns} cells, the width of its screen")
        if isinstance(segment, str):
            if _STUB in segment:
                cells.extend(make("" if c == _STUB else c) for c in segment)
            else:
                cells.extend(map(make, segment))
        elif isinstance(segment, list) and all(isinstance(s, str) for s in segment):
            cells.extend(map(make, segment))
        else:
            raise ProtocolError(f"a segment of {what} should be a string or a list of strings, not {_kind(segment)}")
    cells.extend(repeat(blank, columns - len(cells)))
    return cells


# --------------------------------------------------------------------------------------------- nested values


class _Wire:
    """What every message and value shares: `decode` from a plain dict, checked field by field."""

    __slots__ = ()

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: Mapping[str, object]) -> Self:
        """The value `encode()` gave `data`; a missing or mistyped field is a `ProtocolError` naming it."""
        return cls._read(_Fields(data, f"a {cls.__name__}"))


@dataclass(frozen=True, slots=True)
class ScreenModes(_Wire):
    """Terminal modes a client needs to encode keys, pastes and mouse reports as the agent expects."""

    app_cursor_keys: bool = False  # DECCKM
    bracketed_paste: bool = False  # 2004
    mouse: int = 0  # the mouse tracking asked for: 0 none, 9 X10, 1000 clicks, 1002 drags, 1003 all motion
    mouse_sgr: bool = False  # 1006: mouse reports in SGR form
    alternate_screen: bool = False
    reverse_screen: bool = False  # DECSCNM: blanks are reversed
    app_keypad: bool = False  # DECKPAM (or DECNKM): the keypad sends application sequences
    focus_reports: bool = False  # 1004: the agent wants CSI I / CSI O when it gains or loses the focus

    def encode(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(
            app_cursor_keys=f.flag("app_cursor_keys", False),
            bracketed_paste=f.flag("bracketed_paste", False),
            mouse=f.integer("mouse", 0),
            mouse_sgr=f.flag("mouse_sgr", False),
            alternate_screen=f.flag("alternate_screen", False),
            reverse_screen=f.flag("reverse_screen", False),
            app_keypad=f.flag("app_keypad", False),
            focus_reports=f.flag("focus_reports", False),
        )


@dataclass(frozen=True, slots=True)
class TermState:
    """What of the terminal's state a client that passes the agent's output on to a terminal of its own (`stem
    attach`) must set after drawing a snapshot, for the output that follows to land as it did on the host's screen:
    the scroll margins, origin mode, autowrap, insert mode, the character sets G0 and G1 and the pen."""

    margins: tuple[int, int] | None = None  # top, bottom rows (from 0) of the scroll region; None: the whole screen
    origin: bool = False  # DECOM: the cursor's row counts from the top margin
    autowrap: bool = True  # DECAWM
    insert: bool = False  # IRM
    g0_lines: bool = False  # G0 is DEC line drawing (ESC ( 0)
    g1_lines: bool = False  # G1 is (ESC ) 0)
    pen: Char = DEFAULT_CHAR  # the attributes the next character is drawn with (its data unused)


_DEFAULT_TERM = TermState()


@dataclass(frozen=True, slots=True)
class ScreenState(_Wire):
    """The agent's screen, whole (in a snapshot) or only its changed rows (in `rows`), with cursor and modes."""

    version: int  # the host screen's version: grows with every change
    columns: int
    lines: int
    rows: Mapping[int, Sequence[Char]]  # y -> exactly `columns` cells
    cursor_x: int = 0
    cursor_y: int = 0
    cursor_visible: bool = True
    title: str = ""
    modes: ScreenModes = ScreenModes()
    scrollback: int = 0  # lines held in the scrollback
    scrolled: int = 0  # lines that ever entered the scrollback (see "scrollback line numbers")
    pulled: int = 0  # lines ever taken back out of the scrollback onto the screen (idem)
    bells: int = 0
    links: Mapping[int, tuple[Link, ...]] = dataclasses.field(default_factory=dict)  # of the rows sent, y -> links
    clipboard: tuple[str, ...] = ()  # OSC 52 writes ("selection;base64") since the last message
    term: TermState = _DEFAULT_TERM  # in snapshots: what a client passing output on sets (see TermState)

    @property
    def blank(self) -> Char:
        """The cell of an unwritten position (reversed on a DECSCNM screen)."""
        return _REVERSE_BLANK if self.modes.reverse_screen else DEFAULT_CHAR

    def encode(self) -> dict[str, object]:
        styles = StyleTable()
        blank = self.blank
        rows = {y: encode_row(cells, blank, styles) for y, cells in self.rows.items()}
        return {
            "version": self.version,
            "columns": self.columns,
            "lines": self.lines,
            "cursor": [self.cursor_x, self.cursor_y, self.cursor_visible],
            "title": self.title,
            "modes": self.modes.encode(),
            "scrollback": self.scrollback,
            "scrolled": self.scrolled,
            **({"pulled": self.pulled} if self.pulled else {}),
            "bells": self.bells,
            "styles": styles.wire,
            "rows": rows,
            **(
                {"links": {y: [[k.start, k.end, k.uri] for k in ks] for y, ks in self.links.items()}}
                if self.links
                else {}
            ),
            **({"clipboard": list(self.clipboard)} if self.clipboard else {}),
            **({"term": _encode_term(self.term, styles)} if self.term != _DEFAULT_TERM else {}),
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        columns = f.integer("columns", low=1, high=MAX_SIZE)
        lines = f.integer("lines", low=1, high=MAX_SIZE)
        cursor = f.items("cursor")
        if not (len(cursor) == 3 and type(cursor[0]) is int and type(cursor[1]) is int and type(cursor[2]) is bool):
            raise ProtocolError(f"field 'cursor' of {f.what} should be [x, y, visible], not {cursor!r}")
        modes = ScreenModes._read(f.sub("modes"))
        blank = _REVERSE_BLANK if modes.reverse_screen else DEFAULT_CHAR
        makers = _decode_styles(f.items("styles"), f.what)
        rows: dict[int, list[Char]] = {}
        for y, wire in f.mapping("rows").items():
            if type(y) is not int or not 0 <= y < lines:
                raise ProtocolError(f"{f.what} has a row {y!r} on a screen of {lines} lines")
            rows[y] = _decode_row(wire, makers, columns, blank, f"row {y} of {f.what}")
        links: dict[int, tuple[Link, ...]] = {}
        for y, items in (f.mapping("links") if f.data.get("links") is not None else {}).items():
            if type(y) is not int or not isinstance(items, list):
                raise ProtocolError(f"{f.what} has links {items!r} for a row {y!r}")
            links[y] = tuple(_read_link(item, f.what) for item in items)
        clipboard = f.items("clipboard", [])
        if not all(isinstance(c, str) for c in clipboard):
            raise ProtocolError(f"field 'clipboard' of {f.what} should be a list of strings")
        return cls(
            version=f.integer("version"),
            columns=columns,
            lines=lines,
            rows=rows,
            cursor_x=cursor[0],
            cursor_y=cursor[1],
            cursor_visible=cursor[2],
            title=f.text("title", ""),
            modes=modes,
            scrollback=f.integer("scrollback", 0, low=0),
            scrolled=f.integer("scrolled", 0, low=0),
            pulled=f.integer("pulled", 0, low=0),
            bells=f.integer("bells", 0),
            links=links,
            clipboard=tuple(cast("list[str]", clipboard)),
            term=_read_term(f.sub("term"), makers) if f.data.get("term") is not None else _DEFAULT_TERM,
        )


def _encode_term(term: TermState, styles: StyleTable) -> dict[str, object]:
    """Only what differs from a terminal's defaults."""
    wire: dict[str, object] = {}
    if term.margins is not None:
        wire["margins"] = list(term.margins)
    for name in ("origin", "insert", "g0_lines", "g1_lines"):
        if getattr(term, name):
            wire[name] = True
    if not term.autowrap:
        wire["autowrap"] = False
    if term.pen[1:] != DEFAULT_CHAR[1:]:
        wire["pen"] = styles.id(term.pen[1:])  # type: ignore[arg-type]  # a Char's style fields
    return wire


def _read_term(f: _Fields, makers: list[CellMaker]) -> TermState:
    margins: tuple[int, int] | None = None
    if f.data.get("margins") is not None:
        match f.integers("margins"):
            case (top, bottom) if 0 <= top <= bottom:
                margins = (top, bottom)
            case _:
                raise ProtocolError(f"field 'margins' of {f.what} should be [top, bottom]")
    pen = DEFAULT_CHAR
    if f.data.get("pen") is not None:
        index = f.integer("pen", low=0)
        if index >= len(makers):
            raise ProtocolError(f"field 'pen' of {f.what} names style {index} of {len(makers)}")
        pen = makers[index](" ")
    return TermState(
        margins=margins,
        origin=f.flag("origin", False),
        autowrap=f.flag("autowrap", True),
        insert=f.flag("insert", False),
        g0_lines=f.flag("g0_lines", False),
        g1_lines=f.flag("g1_lines", False),
        pen=pen,
    )


def _read_link(item: object, what: str) -> Link:
    if not (
        isinstance(item, list)
        and len(item) == 3
        and type(item[0]) is int
        and type(item[1]) is int
        and isinstance(item[2], str)
    ):
        raise ProtocolError(f"a link of {what} should be [start, end, uri], not {item!r}")
    return Link(item[0], item[1], item[2])


@dataclass(frozen=True, slots=True)
class ColonyInfo(_Wire):
    """The colony's lifecycle state; `stage` and `reason` say where and why it failed."""

    state: str
    stage: str = ""
    reason: str = ""

    def encode(self) -> dict[str, object]:
        return {"state": self.state, "stage": self.stage, "reason": self.reason}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("state"), f.text("stage", ""), f.text("reason", ""))


@dataclass(frozen=True, slots=True)
class AgentInfo(_Wire):
    """The agent's activity (working, idle, attention, exited) and, once exited, its exit code."""

    activity: str
    code: int | None = None
    pid: int | None = None  # the agent program's process, while it runs
    # Its terminal's size (columns, lines), that of the client used last; a `state` says when it changes, so that
    # `stem attach` at another size draws the screen rather than passing through output laid out for another.
    size: tuple[int, int] | None = None

    def encode(self) -> dict[str, object]:
        sized = {"size": list(self.size)} if self.size is not None else {}
        return {"activity": self.activity, "code": self.code, "pid": self.pid, **sized}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        size: tuple[int, int] | None = None
        if "size" in f.data:
            match f.integers("size"):
                case (columns, lines):
                    size = (columns, lines)
                case _:
                    raise ProtocolError(f"field 'size' of {f.what} should be [columns, lines]")
        return cls(f.text("activity"), f.optional_integer("code"), f.optional_integer("pid"), size)


@dataclass(frozen=True, slots=True)
class ServiceInfo(_Wire):
    """One service of `colony.toml`: state (starting, ready, running, crashed, exited: ended by itself with 0 and
    restarting, stopped; removed: taken out of colony.toml, to be forgotten), port, restarts."""

    name: str
    state: str
    port: int | None = None
    restarts: int = 0
    code: int | None = None
    detail: str = ""
    pid: int | None = None  # the service's process (group leader), while it runs

    def encode(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(
            f.text("name"),
            f.text("state"),
            f.optional_integer("port"),
            f.integer("restarts", 0),
            f.optional_integer("code"),
            f.text("detail", ""),
            f.optional_integer("pid"),
        )


def _encode_file(change: FileChange) -> dict[str, object]:
    encoded: dict[str, object] = {
        "path": change.path,
        "status": change.status,
        "added": change.added,
        "removed": change.removed,
    }
    if change.binary:
        encoded["binary"] = True  # only then: an older peer reads the rest as before
    return encoded


def _read_file(f: _Fields) -> FileChange:
    return FileChange(
        f.text("path"), f.text("status"), f.integer("added", 0), f.integer("removed", 0), f.flag("binary", False)
    )


def _encode_entry(entry: Entry) -> dict[str, object]:
    return {"seq": entry.seq, "at": entry.at, "source": entry.source, "text": entry.text}


def _read_entry(f: _Fields) -> Entry:
    return Entry(f.integer("seq"), f.number("at"), f.text("source"), f.text("text"))


_ENTRY_FIELDS: Final = itemgetter("seq", "at", "source", "text")


def _read_entries(f: _Fields, key: str, default: object = _REQUIRED) -> tuple[Entry, ...]:
    """Log entries, checked all at once (a flooding service's batches are thousands of them: one `_Fields` each
    was most of a UI's time); where one is wrong, each is read alone to say which and what."""
    items = f.items(key, default)
    try:
        rows = list(map(_ENTRY_FIELDS, cast("list[dict[str, object]]", items)))
    except (TypeError, KeyError):  # not a map, or a field missing
        rows = None
    if rows is not None and all(
        type(seq) is int and type(at) is float and type(source) is str and type(text) is str
        for seq, at, source, text in rows
    ):
        return tuple(map(Entry._make, cast("list[tuple[int, float, str, str]]", rows)))
    return tuple(_read_entry(e) for e in f.subs(key, default))  # also an `at` sent as an integer


# --------------------------------------------------------------------------------------------- reply results


@dataclass(frozen=True, slots=True)
class ScrollbackPage(_Wire):
    """Scrollback lines `start`, `start + 1`, ... by line number, each exactly `columns` cells."""

    K: ClassVar[str] = "scrollback"
    start: int
    columns: int
    lines: tuple[Sequence[Char], ...]

    def encode(self) -> dict[str, object]:
        styles = StyleTable()
        lines = [encode_row(cells, DEFAULT_CHAR, styles) for cells in self.lines]
        return {"k": self.K, "start": self.start, "columns": self.columns, "styles": styles.wire, "lines": lines}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        columns = f.integer("columns", low=1, high=MAX_SIZE)
        makers = _decode_styles(f.items("styles"), f.what)
        wire = f.items("lines")
        lines = tuple(
            _decode_row(row, makers, columns, DEFAULT_CHAR, f"line {i} of {f.what}") for i, row in enumerate(wire)
        )
        return cls(f.integer("start", low=0), columns, lines)


@dataclass(frozen=True, slots=True)
class LogPage(_Wire):
    """Log entries, oldest first; `more` if the limit cut the page short."""

    K: ClassVar[str] = "log"
    entries: tuple[Entry, ...]
    more: bool = False

    def encode(self) -> dict[str, object]:
        return {"k": self.K, "entries": [_encode_entry(e) for e in self.entries], "more": self.more}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(_read_entries(f, "entries"), f.flag("more", False))


@dataclass(frozen=True, slots=True)
class DiffText(_Wire):
    """A diff in git's unified format."""

    K: ClassVar[str] = "diff"
    text: str

    def encode(self) -> dict[str, object]:
        return {"k": self.K, "text": self.text}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("text"))


Result = ScrollbackPage | LogPage | DiffText
_RESULTS: dict[str, Callable[[_Fields], Result]] = {c.K: c._read for c in (ScrollbackPage, LogPage, DiffText)}


# --------------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Hello(_Wire):
    """The client's first frame: the versions it speaks and what kind of client it is. Never changes shape."""

    T: ClassVar[str] = "hello"
    versions: tuple[int, ...]
    kind: ClientKind
    client: str = ""  # free text for the host's log, e.g. "stem 0.1.0 pid 4242"

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "versions": list(self.versions), "kind": self.kind, "client": self.client}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.integers("versions"), cast("ClientKind", f.choice("kind", _KINDS)), f.text("client", ""))


@dataclass(frozen=True, slots=True)
class Welcome(_Wire):
    """The host's answer to `hello`: the version chosen, or None with an error. Never changes shape."""

    T: ClassVar[str] = "welcome"
    colony: str
    versions: tuple[int, ...]  # what the host speaks
    version: int | None = None
    error: str = ""

    def encode(self) -> dict[str, object]:
        return {
            "t": self.T,
            "colony": self.colony,
            "versions": list(self.versions),
            "version": self.version,
            "error": self.error,
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("colony"), f.integers("versions"), f.optional_integer("version"), f.text("error", ""))


@dataclass(frozen=True, slots=True)
class Snapshot(_Wire):
    """The whole state of the streams a client subscribed to; the others are left empty."""

    T: ClassVar[str] = "snapshot"
    screen: ScreenState | None = None
    colony: ColonyInfo | None = None
    agent: AgentInfo | None = None
    services: tuple[ServiceInfo, ...] = ()
    files: tuple[FileChange, ...] = ()
    log: tuple[Entry, ...] = ()  # the tail of the log
    log_seq: int = 0  # the newest seq, also when `log` is empty: `log_history` after it asks for what follows
    log_trouble: str = ""  # why the colony's log file is not being written now (a full disk), "" while it is

    def encode(self) -> dict[str, object]:
        return {
            "t": self.T,
            "screen": None if self.screen is None else self.screen.encode(),
            "colony": None if self.colony is None else self.colony.encode(),
            "agent": None if self.agent is None else self.agent.encode(),
            "services": [s.encode() for s in self.services],
            "files": [_encode_file(c) for c in self.files],
            "log": [_encode_entry(e) for e in self.log],
            "log_seq": self.log_seq,
            "log_trouble": self.log_trouble,
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        screen, colony, agent = f.optional_sub("screen"), f.optional_sub("colony"), f.optional_sub("agent")
        return cls(
            screen=None if screen is None else ScreenState._read(screen),
            colony=None if colony is None else ColonyInfo._read(colony),
            agent=None if agent is None else AgentInfo._read(agent),
            services=tuple(ServiceInfo._read(s) for s in f.subs("services", [])),
            files=tuple(_read_file(c) for c in f.subs("files", [])),
            log=_read_entries(f, "log", []),
            log_seq=f.integer("log_seq", 0),
            log_trouble=f.text("log_trouble", ""),
        )


@dataclass(frozen=True, slots=True)
class Rows(_Wire):
    """The screen's rows that changed since the last `rows` (or snapshot), with its cursor, modes and size."""

    T: ClassVar[str] = "rows"
    screen: ScreenState

    def encode(self) -> dict[str, object]:
        return {"t": self.T, **self.screen.encode()}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(ScreenState._read(f))


@dataclass(frozen=True, slots=True)
class State(_Wire):
    """What changed in the colony, agent, services (only those that changed) or files (the whole list)."""

    T: ClassVar[str] = "state"
    colony: ColonyInfo | None = None
    agent: AgentInfo | None = None
    services: tuple[ServiceInfo, ...] = ()
    files: tuple[FileChange, ...] | None = None  # None: unchanged

    def encode(self) -> dict[str, object]:
        return {
            "t": self.T,
            "colony": None if self.colony is None else self.colony.encode(),
            "agent": None if self.agent is None else self.agent.encode(),
            "services": [s.encode() for s in self.services],
            "files": None if self.files is None else [_encode_file(c) for c in self.files],
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        colony, agent = f.optional_sub("colony"), f.optional_sub("agent")
        files = None if f.data.get("files") is None else tuple(_read_file(c) for c in f.subs("files"))
        return cls(
            colony=None if colony is None else ColonyInfo._read(colony),
            agent=None if agent is None else AgentInfo._read(agent),
            services=tuple(ServiceInfo._read(s) for s in f.subs("services", [])),
            files=files,
        )


@dataclass(frozen=True, slots=True)
class Log(_Wire):
    """New log entries, oldest first."""

    T: ClassVar[str] = "log"
    entries: tuple[Entry, ...]

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "entries": [_encode_entry(e) for e in self.entries]}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(_read_entries(f, "entries"))


@dataclass(frozen=True, slots=True)
class Reply(_Wire):
    """The answer to request `id`: `error` is empty when it worked; `result` for requests that fetch something."""

    T: ClassVar[str] = "reply"
    id: int
    error: str = ""
    result: Result | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    def encode(self) -> dict[str, object]:
        result = None if self.result is None else self.result.encode()
        return {"t": self.T, "id": self.id, "error": self.error, "result": result}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        sub = f.optional_sub("result")
        result = None
        if sub is not None:
            kind = sub.text("k")
            read = _RESULTS.get(kind)
            if read is None:
                raise ProtocolError(f"{sub.what} is of unknown kind {kind!r}")
            result = read(sub)
        return cls(f.integer("id"), f.text("error", ""), result)


@dataclass(frozen=True, slots=True)
class Bye(_Wire):
    """The host closes the connection, saying why."""

    T: ClassVar[str] = "bye"
    reason: str = ""

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "reason": self.reason}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("reason", ""))


# Requests: `id` comes last with a default, so callers write Keys(b"ls\r") and `Connection` numbers them.


@dataclass(frozen=True, slots=True)
class Keys(_Wire):
    """Bytes for the agent's PTY, already encoded for its modes (see `ScreenModes`)."""

    T: ClassVar[str] = "keys"
    data: bytes
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "data": self.data}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.blob("data"), f.integer("id"))


@dataclass(frozen=True, slots=True)
class Paste(_Wire):
    """Pasted text; the host brackets it if the agent turned bracketed paste on."""

    T: ClassVar[str] = "paste"
    text: str
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "text": self.text}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("text"), f.integer("id"))


def _rgb_text(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _rgb(text: object, what: str) -> tuple[int, int, int]:
    if not (isinstance(text, str) and len(text) == 7 and text[0] == "#"):
        raise ProtocolError(f"a colour of {what} should be #rrggbb, not {text!r}")
    try:
        return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    except ValueError:
        raise ProtocolError(f"a colour of {what} should be #rrggbb, not {text!r}") from None


@dataclass(frozen=True, slots=True)
class SetPalette(_Wire):
    """The colours the client shows the agent in: what the agent is told when it asks (OSC 10, 11, 4). Version 2."""

    T: ClassVar[str] = "palette"
    palette: Palette
    id: int = 0

    def encode(self) -> dict[str, object]:
        palette = self.palette
        return {
            "t": self.T,
            "id": self.id,
            "foreground": _rgb_text(palette.foreground),
            "background": _rgb_text(palette.background),
            "colors": [_rgb_text(c) for c in palette.ansi],
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        colors = f.items("colors")
        if len(colors) != 16:
            raise ProtocolError(f"field 'colors' of {f.what} should hold 16 colours, not {len(colors)}")
        palette = Palette(
            _rgb(f.data.get("foreground"), f.what),
            _rgb(f.data.get("background"), f.what),
            tuple(_rgb(c, f.what) for c in colors),
        )
        return cls(palette, f.integer("id"))


@dataclass(frozen=True, slots=True)
class Resize(_Wire):
    """Resize the agent's PTY and screen."""

    T: ClassVar[str] = "resize"
    columns: int
    lines: int
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "columns": self.columns, "lines": self.lines}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(
            f.integer("columns", low=1, high=MAX_SIZE), f.integer("lines", low=1, high=MAX_SIZE), f.integer("id")
        )


@dataclass(frozen=True, slots=True)
class ScrollbackRequest(_Wire):
    """Scrollback lines `start` .. `start + count - 1` by line number; the reply's page may hold fewer."""

    T: ClassVar[str] = "scrollback"
    start: int
    count: int
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "start": self.start, "count": self.count}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.integer("start", low=0), f.integer("count", low=0), f.integer("id"))


@dataclass(frozen=True, slots=True)
class LogHistory(_Wire):
    """Log entries with seq above `after`, oldest first, at most `limit`."""

    T: ClassVar[str] = "log_history"
    after: int
    limit: int
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "after": self.after, "limit": self.limit}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.integer("after"), f.integer("limit", low=0), f.integer("id"))


@dataclass(frozen=True, slots=True)
class Diff(_Wire):
    """The colony's diff against its base commit: of `path`, or of every changed file when None."""

    T: ClassVar[str] = "diff"
    path: str | None = None
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "path": self.path}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.optional_text("path"), f.integer("id"))


@dataclass(frozen=True, slots=True)
class RestartService(_Wire):
    """Restart one service of the colony."""

    T: ClassVar[str] = "restart_service"
    name: str
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "name": self.name}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("name"), f.integer("id"))


@dataclass(frozen=True, slots=True)
class RestartAgent(_Wire):
    """Restart the agent program."""

    T: ClassVar[str] = "restart_agent"
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.integer("id"))


@dataclass(frozen=True, slots=True)
class Subscribe(_Wire):
    """Which pushed streams the client wants; replaces any earlier choice and is answered with a snapshot."""

    T: ClassVar[str] = "subscribe"
    streams: frozenset[Stream]
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "streams": sorted(self.streams)}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        streams = f.items("streams")
        unknown = [s for s in streams if s not in _STREAMS]
        if unknown:
            raise ProtocolError(f"{f.what} asks for unknown streams {unknown!r} (known: {', '.join(sorted(_STREAMS))})")
        return cls(cast("frozenset[Stream]", frozenset(streams)), f.integer("id"))


@dataclass(frozen=True, slots=True)
class AwaitStart(_Wire):
    """Answered once the colony's services are up and its agent started (or with why they could not be)."""

    T: ClassVar[str] = "await_start"
    id: int = 0

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.integer("id"))


@dataclass(frozen=True, slots=True)
class Stop(_Wire):
    """End everything the colony runs, then the host itself; answered once it is all gone."""

    T: ClassVar[str] = "stop"
    grace: float = 5.0
    id: int = 0
    routes: bool = True  # remove the colony's preview routes (false: the stopper removes many at once)

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "id": self.id, "grace": self.grace, "routes": self.routes}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.number("grace"), f.integer("id"), f.flag("routes", True))


@dataclass(frozen=True, slots=True)
class NoticeMessage(_Wire):
    """Something a person should see (a colony.toml not applied, a missing agent program)."""

    T: ClassVar[str] = "notice"
    level: str
    message: str

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "level": self.level, "message": self.message}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.text("level"), f.text("message"))


@dataclass(frozen=True, slots=True)
class Output(_Wire):
    """The agent's output bytes as it wrote them (the `output` stream, for `stem attach`)."""

    T: ClassVar[str] = "output"
    data: bytes

    def encode(self) -> dict[str, object]:
        return {"t": self.T, "data": self.data}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.blob("data"))


Request = (
    Keys
    | Paste
    | Resize
    | SetPalette
    | ScrollbackRequest
    | LogHistory
    | Diff
    | RestartService
    | RestartAgent
    | Subscribe
    | AwaitStart
    | Stop
)
Update = Snapshot | Rows | State | Log | NoticeMessage | Output | Bye
ServerMessage = Welcome | Reply | Update
ClientMessage = Hello | Request
Message = ServerMessage | ClientMessage

_MESSAGES: tuple[type[Message], ...] = (
    Hello,
    Welcome,
    Snapshot,
    Rows,
    State,
    Log,
    Reply,
    Bye,
    Keys,
    Paste,
    Resize,
    SetPalette,
    ScrollbackRequest,
    LogHistory,
    Diff,
    RestartService,
    RestartAgent,
    Subscribe,
    AwaitStart,
    Stop,
    NoticeMessage,
    Output,
)
_DECODERS: dict[str, Callable[[_Fields], Message]] = {cls.T: cls._read for cls in _MESSAGES}
MESSAGE_TYPES: Final = frozenset(_DECODERS)


def decode_message(data: object) -> Message:
    """A message from its decoded msgpack map; anything malformed is a `ProtocolError` that says what."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a message should be a map, not {_kind(data)}")
    kind = data.get("t")
    if not isinstance(kind, str):
        raise ProtocolError(f"a message without a type: {'t'!r} is {_kind(kind)}")
    read = _DECODERS.get(kind)
    if read is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    return read(_Fields(data, f"a {kind} message"))


# ---------------------------------------------------------------------------------------------------- framing


def encode_body(msg: Message) -> bytes:
    """A message as msgpack, unframed: for transports that frame messages themselves (a WebSocket)."""
    try:
        body: bytes = msgpack.packb(msg.encode(), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:  # a lone surrogate in text, an integer beyond 64 bits
        raise ProtocolError(f"cannot encode a {msg.T} message: {e}") from e
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"a {msg.T} message of {len(body)} bytes is over the {MAX_FRAME >> 20} MiB frame limit")
    return body


def decode_body(body: bytes) -> Message:
    """The message in an unframed msgpack body."""
    try:
        data = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, TypeError) as e:  # msgpack's format errors are ValueErrors, unhashable keys TypeErrors
        raise ProtocolError(f"a frame that is not a msgpack message ({e})") from e
    return decode_message(data)


def pack(msg: Message) -> bytes:
    """One frame: the body's length, then the body."""
    body = encode_body(msg)
    return _HEADER.pack(len(body)) + body


def unpack(frame: bytes) -> Message:
    """The message in one whole frame."""
    if len(frame) < _HEADER.size:
        raise ProtocolError(f"a frame of {len(frame)} bytes is shorter than its header")
    (size,) = _HEADER.unpack_from(frame)
    if size != len(frame) - _HEADER.size:
        raise ProtocolError(f"a frame announcing {size} bytes holds {len(frame) - _HEADER.size}")
    return decode_body(frame[_HEADER.size :])


async def read_message(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> Message:
    """The next message; `ConnectionClosed` at a clean end of the stream, `ProtocolError` for a broken frame."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise ConnectionClosed("the other end closed the connection") from None
        raise ProtocolError("the connection closed inside a frame header") from None
    except ConnectionError:  # reset by the peer, or a failed write that ended the transport
        raise ConnectionClosed("the connection was broken") from None
    (size,) = _HEADER.unpack(header)
    if size > max_frame:
        # Not read: a corrupt length must not make us allocate gigabytes; the stream cannot be resynchronised.
        raise FrameTooLarge(f"a frame of {size} bytes is over the {max_frame >> 20} MiB limit ({max_frame} bytes)")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError as e:
        raise ProtocolError(f"the connection closed inside a frame ({len(e.partial)} of {size} bytes)") from None
    except ConnectionError:
        raise ConnectionClosed("the connection was broken inside a frame") from None
    return decode_body(body)


def write_message(writer: asyncio.StreamWriter, msg: Message) -> None:
    """Queue one message on `writer`; the caller drains (a host drains per client, so one slow client waits alone)."""
    writer.write(pack(msg))


# ------------------------------------------------------------------------------------------------ host side

PeerSocket = socket.socket | TransportSocket


def peer_credentials(sock: PeerSocket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, as the kernel saw it at connect."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_uid(sock: PeerSocket) -> int:
    """The uid of the process at the other end of a Unix socket."""
    return peer_credentials(sock)[1]


# How long a refused peer may take to finish sending its hello before the host hangs up on it.
_REFUSAL_LINGER = 2.0


async def admit_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, colony: str) -> bool:
    """True if the peer runs as our effective uid. Anyone else (root too, unless root is us) gets `bye`, a log
    line and a closed connection: a host can type into an agent, so only its owner may talk to it. A peer whose
    uid cannot be known (not a Unix socket) is refused too."""
    sock: PeerSocket | None = writer.get_extra_info("socket")
    ours = os.geteuid()
    if sock is not None and sock.family == socket.AF_UNIX:
        pid, uid, _gid = peer_credentials(sock)
        if uid == ours:
            return True
        reason = f"uid {uid} may not connect to the colony host of {colony} (it runs as uid {ours})"
        log.warning("refused a client: pid %d, %s", pid, reason)
    else:
        reason = f"the colony host of {colony} cannot tell who is calling (not a Unix socket)"
        log.warning("refused a client: %s", reason)
    try:
        write_message(writer, Bye(reason))
        writer.write_eof()
        await writer.drain()
        # Hanging up at once would make the peer's hello, sent meanwhile, fail with EPIPE, and its transport would
        # report that instead of the bye waiting in its buffer. So let it finish; what it sends is never parsed.
        async with asyncio.timeout(_REFUSAL_LINGER):
            while await reader.read(1 << 16):
                pass
    except (ConnectionError, TimeoutError):
        pass
    writer.close()
    return False


@dataclass(frozen=True, slots=True)
class Accepted:
    """A client past the handshake: what it is and the protocol version chosen for it."""

    kind: ClientKind
    client: str
    version: int


async def accept_client(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    colony: str,
    versions: Sequence[int] = SUPPORTED_VERSIONS,
    *,
    check_peer: bool = True,
) -> Accepted | None:
    """The host's side of the handshake: check the peer's uid, read `hello`, answer `welcome`. None if the client
    was refused (it has been told why, and the connection is closed). `check_peer=False` is for a transport that
    has authenticated the peer itself."""
    if check_peer and not await admit_peer(reader, writer, colony):
        return None
    try:
        msg = await read_message(reader)
    except (ProtocolError, ConnectionClosed) as e:
        await _refuse(writer, Welcome(colony, tuple(versions), error=f"a bad hello: {e}"))
        return None
    if not isinstance(msg, Hello):
        await _refuse(writer, Welcome(colony, tuple(versions), error=f"expected hello, got {msg.T}"))
        return None
    common = set(msg.versions) & set(versions)
    if not common:
        log.info("refused a %s client of %s: it speaks protocol %s", msg.kind, colony, _versions(msg.versions))
        await _refuse(writer, Welcome(colony, tuple(versions), error="no protocol version in common"))
        return None
    version = max(common)
    write_message(writer, Welcome(colony, tuple(versions), version))
    await writer.drain()
    return Accepted(msg.kind, msg.client, version)


async def _refuse(writer: asyncio.StreamWriter, answer: Welcome) -> None:
    try:
        write_message(writer, answer)
        await writer.drain()
    except ConnectionError:
        pass  # the client is gone already
    writer.close()


async def listen(
    path: Path, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
) -> asyncio.Server:
    """Serve `handler` on a Unix socket at `path`, created mode 0600. An existing file at `path` is an error: the
    caller decides whether it is a stale socket (nothing answers there) before removing it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_address(path) as address:
            sock.bind(address)
        # Before listen(): until then nobody can connect, so the mode is right before anyone could use it, and
        # no process-wide umask is changed under other threads' feet.
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return await asyncio.start_unix_server(handler, sock=sock)


_MOUSE_TRACKING = tuple(m << 5 for m in (1003, 1002, 1000, 9))  # most to least reporting; pyte shifts private modes
_MOUSE_SGR = 1006 << 5
_FOCUS_REPORTS = 1004 << 5


def screen_state(screen: StemScreen, rows: Iterable[int] | None = None) -> ScreenState:
    """The state of `screen` with every row (for a snapshot) or with `rows` (for a `rows` message)."""
    columns, lines = screen.columns, screen.lines
    buffer = screen.buffer
    blank = screen.default_char
    span = range(columns)
    cells: dict[int, list[Char]] = {}
    for y in range(lines) if rows is None else sorted(rows):
        if not 0 <= y < lines:
            continue
        row = buffer.get(y)  # not buffer[y]: reading must not create rows in pyte's defaultdict
        # row[x], not row.get(x): an unwritten cell is the row's default, as pyte and the terminal widget show it.
        cells[y] = list(map(row.__getitem__, span)) if row is not None else [blank] * columns
    modes = screen_modes(screen)
    row_links = screen.queries.row_links
    links = {y: tuple(found) for y in cells if (found := row_links(y))}
    cursor = screen.cursor
    return ScreenState(
        version=screen.version,
        columns=columns,
        lines=lines,
        rows=cells,
        cursor_x=cursor.x,
        cursor_y=cursor.y,
        cursor_visible=not cursor.hidden,
        title=screen.title,
        modes=modes,
        scrollback=len(screen.scrollback),
        scrolled=screen.scrollback.scrolled,
        pulled=screen.scrollback.pulled,
        bells=screen.bells,
        links=links,
        term=_DEFAULT_TERM if rows is not None else term_state(screen),
    )


def term_state(screen: StemScreen) -> TermState:
    """The terminal state of `screen` a client passing its output on must set (see TermState)."""
    mode = screen.mode
    margins = screen.margins
    return TermState(
        margins=None if margins is None else (margins.top, margins.bottom),
        origin=mo.DECOM in mode,
        autowrap=mo.DECAWM in mode,
        insert=mo.IRM in mode,
        g0_lines=screen.g0_charset is _LINE_DRAWING,
        g1_lines=screen.g1_charset is _LINE_DRAWING,
        pen=screen.cursor.attrs,
    )


def screen_modes(screen: StemScreen) -> ScreenModes:
    """The modes of `screen` that tell a client how to encode keys, pastes, mouse and focus reports."""
    mode = screen.mode
    return ScreenModes(
        app_cursor_keys=screen.app_cursor_keys,
        bracketed_paste=screen.bracketed_paste,
        mouse=next((m >> 5 for m in _MOUSE_TRACKING if m in mode), 0),
        mouse_sgr=_MOUSE_SGR in mode,
        alternate_screen=screen.alternate_screen,
        reverse_screen=mo.DECSCNM in mode,
        app_keypad=screen.queries.app_keypad,
        focus_reports=_FOCUS_REPORTS in mode,
    )


def scrollback_page(screen: StemScreen, start: int, count: int) -> ScrollbackPage:
    """Scrollback lines `start` .. `start + count - 1` by number, clipped to the lines still held."""
    scrollback = screen.scrollback
    end, first = scrollback.scrolled, scrollback.first
    lo = min(max(start, first), end)
    hi = max(lo, min(start + count, end))
    lines = tuple(scrollback.line(n - first) for n in range(lo, hi))
    return ScrollbackPage(lo, scrollback.columns, lines)


# ------------------------------------------------------------------------------------------------ client side

_R = TypeVar("_R", bound=Request)


class Connection:
    """A client's connection to one colony host: the handshake, requests answered by id, pushed updates.

    Open with `Connection.open(path, kind)` (a Unix socket) or `Connection.over(reader, writer, kind)` (any
    stream). Replies are matched by id in a reader task; pushed messages queue for `updates()`, unbounded, so
    a client that subscribes must also consume them.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: Welcome) -> None:
        self.colony = welcome.colony
        self.version = cast(int, welcome.version)
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._updates: asyncio.Queue[Update | None] = asyncio.Queue()  # None: the connection ended
        self._failure: StemError | None = None  # why it ended, if not cleanly
        self._ended: StemError | None = None
        self.heard = time.monotonic()  # when the host last sent anything
        self._asked: float | None = None  # when the question of `unanswered` went out, until it is answered
        self._question: asyncio.Task[None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._read_loop(), name=f"stem-host-client-{self.colony}")

    @classmethod
    async def open(
        cls, path: Path | str, kind: ClientKind, *, client: str = "", versions: Sequence[int] = SUPPORTED_VERSIONS
    ) -> Connection:
        """Connect to the host socket at `path` and shake hands."""
        try:
            with socket_address(path) as address:
                reader, writer = await asyncio.open_unix_connection(address)
        except (FileNotFoundError, ConnectionRefusedError):
            raise HostUnreachable(f"no colony host answers at {path} (is the colony running?)") from None
        except PermissionError:
            raise HostUnreachable(f"not allowed to connect to {path}: it belongs to another user") from None
        try:
            handshake = cls.over(reader, writer, kind, client=client, versions=versions)
            # A UI waits for a stopped host to go on (its link resumes); a command says so and ends.
            return await (handshake if kind == "ui" else _unless_stopped(handshake, Path(path).parent))
        except BaseException:
            writer.close()
            raise

    @classmethod
    async def over(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        kind: ClientKind,
        *,
        client: str = "",
        versions: Sequence[int] = SUPPORTED_VERSIONS,
    ) -> Connection:
        """Shake hands over an open stream; raises `VersionMismatch`, `HostRefused` or `ProtocolError`."""
        write_message(writer, Hello(tuple(versions), kind, client))
        try:
            await writer.drain()
        except ConnectionError:
            pass  # a host refusing us may close before reading our hello; its answer is still there to read
        try:
            msg = await read_message(reader)
        except ConnectionClosed:
            raise HostRefused("the colony host closed the connection without answering") from None
        if isinstance(msg, Bye):
            raise HostRefused(f"the colony host refused this connection: {msg.reason}")
        if not isinstance(msg, Welcome):
            raise ProtocolError(f"the colony host answered hello with {msg.T}, not welcome")
        if msg.version is None:
            if not set(msg.versions) & set(versions):
                raise VersionMismatch(mismatch_line(msg.colony, msg.versions, versions))
            raise HostRefused(f"the colony host of {msg.colony} refused this connection: {msg.error}")
        if msg.version not in versions:
            raise ProtocolError(f"the colony host of {msg.colony} chose protocol {msg.version}, which we never offered")
        return cls(reader, writer, msg)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; pending requests fail with `ConnectionClosed`."""
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    # ------------------------------------------------------------------------------------------- requests

    async def request(self, req: _R) -> Reply:
        """Send `req` with a fresh id and wait for its reply; `RequestFailed` if the host answered an error."""
        if self._ended is not None:
            raise self._ended
        self._next_id += 1
        req = dataclasses.replace(req, id=self._next_id)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[req.id] = future
        try:
            write_message(self._writer, req)
            await self._writer.drain()
            reply = await future
        except ConnectionError:
            raise ConnectionClosed(f"the colony host of {self.colony} closed the connection") from None
        finally:
            self._pending.pop(req.id, None)
        if reply.error:
            raise RequestFailed(f"colony host of {self.colony}: {reply.error}")
        return reply

    async def subscribe(self, *streams: Stream) -> None:
        """Choose the pushed streams; the snapshot of them is the next item of `updates()`."""
        await self.request(Subscribe(frozenset(streams)))

    async def send_keys(self, data: bytes) -> None:
        await self.request(Keys(data))

    def post(self, req: Request) -> None:
        """Send `req` without waiting for its reply (keys typed: order is kept, the reply is not needed)."""
        if self._ended is not None:
            raise self._ended
        self._next_id += 1
        write_message(self._writer, dataclasses.replace(req, id=self._next_id))

    async def await_start(self) -> None:
        await self.request(AwaitStart())

    async def stop(self, grace: float, routes: bool = True) -> None:
        await self.request(Stop(grace, routes=routes))

    async def paste(self, text: str) -> None:
        await self.request(Paste(text))

    async def resize(self, columns: int, lines: int) -> None:
        await self.request(Resize(columns, lines))

    async def set_palette(self, palette: Palette) -> None:
        """Tell the host the colours this client shows the agent in (a version 1 host is not told)."""
        if self.version >= 2:
            await self.request(SetPalette(palette))

    async def scrollback(self, start: int, count: int) -> ScrollbackPage:
        return _result(await self.request(ScrollbackRequest(start, count)), ScrollbackPage)

    async def log_history(self, after: int, limit: int) -> LogPage:
        return _result(await self.request(LogHistory(after, limit)), LogPage)

    async def diff(self, path: str | None = None) -> str:
        return _result(await self.request(Diff(path)), DiffText).text

    async def restart_service(self, name: str) -> None:
        await self.request(RestartService(name))

    async def restart_agent(self) -> None:
        await self.request(RestartAgent())

    def unanswered(self, quiet: float = HOST_QUIET) -> float:
        """For how many seconds the host has left a question unanswered (0: it has not). A host quiet for `quiet`
        seconds is asked one whether it is there, one at a time: a hung host (stuck in the kernel, a loop that never
        yields) takes the connection's bytes and answers nothing, and nothing else tells. Call it now and then."""
        now = time.monotonic()
        if self._asked is not None:
            return now - self._asked
        if self._ended is None and now - self.heard >= quiet:
            self._asked = now
            self._question = asyncio.ensure_future(self._ask())
        return 0.0

    async def _ask(self) -> None:
        with contextlib.suppress(StemError):  # the connection ended: so does its follower
            await self.log_history(_NEWEST, 1)
        self._asked = None

    # -------------------------------------------------------------------------------------------- updates

    async def updates(self) -> AsyncIterator[Update]:
        """Pushed messages in order, until the connection ends (a `bye` is the last one). A connection that ends
        on an error raises it here, after what came before it."""
        while True:
            item = await self._updates.get()
            if item is None:
                self._updates.put_nowait(None)  # every later iteration ends too
                if self._failure is not None:
                    raise self._failure
                return
            yield item

    async def _read_loop(self) -> None:
        ended: StemError = ConnectionClosed(f"the colony host of {self.colony} closed the connection")
        try:
            while True:
                msg = await read_message(self._reader)
                self.heard = time.monotonic()
                if isinstance(msg, Reply):
                    future = self._pending.get(msg.id)
                    if future is not None and not future.done():
                        future.set_result(msg)
                    continue  # a reply nobody waits for any more: its request was cancelled
                if not isinstance(msg, Snapshot | Rows | State | Log | NoticeMessage | Output | Bye):
                    raise ProtocolError(
                        f"the colony host of {self.colony} sent a {msg.T} message, which hosts never send"
                    )
                self._updates.put_nowait(msg)
                if isinstance(msg, Bye):
                    ended = ConnectionClosed(f"the colony host of {self.colony} closed the connection: {msg.reason}")
                    break
        except ConnectionClosed:
            pass
        except OSError as e:
            ended = ConnectionClosed(f"the connection to the colony host of {self.colony} failed: {e}")
        except StemError as e:
            ended = self._failure = e
        finally:
            self._ended = ended
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ended)
            self._updates.put_nowait(None)


_T = TypeVar("_T", ScrollbackPage, LogPage, DiffText)


def _result(reply: Reply, kind: type[_T]) -> _T:
    if not isinstance(reply.result, kind):
        got = "nothing" if reply.result is None else reply.result.K
        raise ProtocolError(f"the colony host answered a {kind.K} request with {got}")
    return reply.result
