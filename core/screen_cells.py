"""Shared cell helpers for Stem's fast screen: reused `Char` instances, cached SGR transitions, row text."""

from __future__ import annotations

import re
import threading

import pyte
from pyte import modes as mo
from pyte.screens import Char, StaticDefaultDict, wcwidth

# The attributes of a blank cell on a normal (not DECSCNM-reversed) screen, as pyte's `default_char`.
DEFAULT_CHAR = Char(" ")

# One SGR sequence; `split` on it alternates text and parameter strings.
SGR_SPLIT = re.compile(r"\x1b\[([0-9;]*)m")

Row = StaticDefaultDict[int, Char]

# Caches are bounded by wiping them when full: entries are cheap to recompute and a truecolor rainbow
# must not grow memory without limit.
_CACHE_LIMIT = 4096


class CharCache(dict[str, Char]):
    """Maps a character to the one shared `Char` with these attributes; a namedtuple per cell is the
    dominant cost of pyte's `draw`, and `Char` is immutable so sharing is safe."""

    __slots__ = ("attrs",)

    def __init__(self, attrs: Char) -> None:
        super().__init__()
        self.attrs = attrs

    def __missing__(self, data: str) -> Char:
        char = self.attrs._replace(data=data)
        self[data] = char
        return char


_char_caches: dict[Char, CharCache] = {}


def chars_for(attrs: Char) -> CharCache:
    """The shared cache of cells carrying `attrs`."""
    cache = _char_caches.get(attrs)
    if cache is None:
        if len(_char_caches) >= _CACHE_LIMIT:
            _char_caches.clear()
        cache = _char_caches[attrs] = CharCache(attrs)
    return cache


_sgr_cache: dict[tuple[Char, str | tuple[int, ...], bool], Char] = {}
_scratch = threading.local()


def parse_params(params: str) -> tuple[int, ...]:
    """CSI parameters as pyte's parser reads them: empty means 0, values are capped at 9999."""
    return tuple(min(int(p), 9999) if p else 0 for p in params.split(";"))


def sgr_apply(attrs: Char, params: str | tuple[int, ...], reverse_screen: bool) -> Char:
    """The cursor attributes after SGR `params` (a parameter string or parsed ints) starting from `attrs`.

    Misses are computed by pyte's own `select_graphic_rendition` on a per-thread scratch screen, so the
    result is pyte's by construction; `reverse_screen` is DECSCNM, which changes what "reset" means.
    """
    key = (attrs, params, reverse_screen)
    out = _sgr_cache.get(key)
    if out is None:
        screens: dict[bool, pyte.Screen] | None = getattr(_scratch, "screens", None)
        if screens is None:
            screens = _scratch.screens = {}
        scratch = screens.get(reverse_screen)
        if scratch is None:
            scratch = screens[reverse_screen] = pyte.Screen(1, 1)
            if reverse_screen:
                scratch.mode.add(mo.DECSCNM)
        scratch.cursor.attrs = attrs
        ints = parse_params(params) if isinstance(params, str) else params
        pyte.Screen.select_graphic_rendition(scratch, *ints)
        out = scratch.cursor.attrs
        if len(_sgr_cache) >= _CACHE_LIMIT:
            _sgr_cache.clear()
        _sgr_cache[key] = out
    return out


def draw_line(row: dict[int, Char], raw: str, attrs: Char) -> Char:
    """Draw `raw` (printable ASCII with SGR sequences, no wider than the screen) into `row` from column 0,
    exactly as pyte's `draw` would; returns the attributes in force after it."""
    if "\x1b" not in raw:
        if raw:
            row.update(zip(range(len(raw)), map(chars_for(attrs).__getitem__, raw), strict=True))
        return attrs
    x = 0
    for i, part in enumerate(SGR_SPLIT.split(raw)):
        if i & 1:
            attrs = sgr_apply(attrs, part, False)
        elif part:
            end = x + len(part)
            row.update(zip(range(x, end), map(chars_for(attrs).__getitem__, part), strict=True))
            x = end
    return attrs


def wrap_sgr_line(parts: list[str], attrs: Char, columns: int, rows: list[str], starts: list[Char]) -> Char:
    """Cut a line (`SGR_SPLIT.split` of it) wider than the screen into the rows autowrap makes of it,
    appending each row and the attributes it starts with to `rows` and `starts`; returns the attributes
    after the line. A row breaks only when a visible character no longer fits, so SGR sequences right
    after a full row stay on it and change only the next row's starting attributes, as in pyte."""
    current: list[str] = []
    width = 0
    row_start = attrs
    for i, part in enumerate(parts):
        if i & 1:
            current.append(f"\x1b[{part}m")
            attrs = sgr_apply(attrs, part, False)
            continue
        while part:
            room = columns - width
            if len(part) <= room:
                current.append(part)
                width += len(part)
                break
            current.append(part[:room])
            part = part[room:]
            rows.append("".join(current))
            starts.append(row_start)
            current, width, row_start = [], 0, attrs
    rows.append("".join(current))
    starts.append(row_start)
    return attrs


def strip_sgr(raw: str) -> str:
    """The visible text of a line stored with its SGR sequences."""
    return SGR_SPLIT.sub("", raw) if "\x1b" in raw else raw


def row_text(row: dict[int, Char], columns: int) -> str:
    """A row as a string the way pyte's `display` renders it: the cell after a wide character is skipped."""
    get = row.__getitem__
    datas = [get(x).data for x in range(columns)]
    text = "".join(datas)
    if text.isascii():
        return text  # no wide characters, so nothing to skip
    out: list[str] = []
    skip = False
    for data in datas:
        if skip:
            skip = False
            continue
        out.append(data)
        # pyte's `display` would raise on an orphaned stub (""); treat it as zero-width instead.
        skip = bool(data) and wcwidth(data[0]) == 2
    return "".join(out)


# Characters pyte draws as exactly one cell; a text run made only of these can skip per-character width
# lookups. Grown lazily from pyte's own `wcwidth`, so it always agrees with pyte.
_narrow: set[str] = {chr(c) for c in range(0x20, 0x7F)}
_not_narrow: set[str] = set()


def all_narrow(text: str) -> bool:
    """True if every character of `text` takes exactly one cell in pyte."""
    chars = set(text)
    if chars <= _narrow:
        return True
    unknown = chars - _narrow
    if not unknown.isdisjoint(_not_narrow):
        return False
    result = True
    for char in unknown:
        if wcwidth(char) == 1:
            _narrow.add(char)
        else:
            _not_narrow.add(char)
            result = False
    return result
