"""The TOML reader of Stem's config files: parse a document, find the line of any key, word errors about it.

tomli parses the values but forgets where they were, so `TomlLocator` re-reads the (already valid) text to find
the line of any table, key or array element. Every problem becomes a one-line `ConfigError` naming the file, the
line and the key. What the keys mean is the schema's business (core/config.py, core/settings.py).
"""

from __future__ import annotations

import bisect
import datetime
import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import tomli

from core.egress import Egress, EgressError, parse_egress
from core.errors import ConfigError

__all__ = [
    "KeyPath",
    "TomlDoc",
    "TomlLocator",
    "describe",
    "display_path",
    "format_key",
    "toml_string",
    "type_name",
]

# A key of a TOML document as tomli sees it: table and key names, and array indexes.
KeyPath = tuple[str | int, ...]

# ----------------------------------------------------------------------------------------------------
# Where things are in a TOML text


@dataclass(frozen=True, slots=True)
class Spot:
    """Where a key's value (or a table header) sits in the text: 1-based line and character offsets."""

    line: int
    start: int
    end: int


@dataclass(slots=True)
class HeaderSpot:
    """An explicit `[table]` header and where its body ends (the end of its last key's line)."""

    line: int
    start: int
    body_end: int


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = frozenset(",]}#\r\n")


class TomlLocator:
    """Finds the line of each table, key and array element of a TOML text that tomli has already accepted.

    Only positions are recorded; values come from tomli. Handles dotted and quoted keys, inline tables,
    multi-line arrays and strings. On malformed input it stops early and answers with what it has seen.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self.values: dict[KeyPath, Spot] = {}  # keys with a value, and array elements
        self.headers: dict[KeyPath, HeaderSpot] = {}  # explicit [table] and [[array]] headers
        self._implicit: dict[KeyPath, int] = {}  # tables that exist because a longer key mentions them
        try:
            self._parse()
        except (IndexError, ValueError, RecursionError):
            pass  # not valid TOML after all: keep what was found so far

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of `path`, or of its nearest enclosing table or key that appears in the text; else 1."""
        for n in range(len(path), 0, -1):
            prefix = tuple(path[:n])
            if prefix in self.values:
                return self.values[prefix].line
            if prefix in self.headers:
                return self.headers[prefix].line
            if prefix in self._implicit:
                return self._implicit[prefix]
        return 1

    # -- the scanner ---------------------------------------------------------------------------------------

    def _line(self, offset: int) -> int:
        return bisect.bisect_right(self._line_starts, offset)

    def _mention(self, path: KeyPath, line: int) -> None:
        for n in range(1, len(path)):
            self._implicit.setdefault(path[:n], line)

    def _parse(self) -> None:
        text = self._text
        table: KeyPath = ()
        header: HeaderSpot | None = None
        array_counts: dict[KeyPath, int] = {}
        while True:
            self._skip(newlines=True)
            if self._pos >= len(text):
                return
            start = self._pos
            line = self._line(start)
            if text.startswith("[[", start):
                self._pos += 2
                key = self._key()
                self._pos += 2  # ]]
                index = array_counts.get(key, -1) + 1
                array_counts[key] = index
                table = (*key, index)
                header = HeaderSpot(line, start, self._pos)
                self.headers.setdefault(key, header)
                self.headers[table] = header
                self._mention(key, line)
            elif text[start] == "[":
                self._pos += 1
                table = self._key()
                self._pos += 1  # ]
                header = HeaderSpot(line, start, self._pos)
                self.headers[table] = header
                self._mention(table, line)
            else:
                path: KeyPath = (*table, *self._key())
                self._skip()
                self._pos += 1  # =
                self._value(path)
                if header is not None:
                    header.body_end = self._pos
            self._skip()  # a trailing comment belongs to the statement's line
            if header is not None and self._pos > header.body_end:
                header.body_end = self._pos

    def _skip(self, newlines: bool = False) -> None:
        text = self._text
        while self._pos < len(text):
            c = text[self._pos]
            if c in " \t" or (newlines and c in "\r\n"):
                self._pos += 1
            elif c == "#":
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
            else:
                return

    def _key(self) -> tuple[str, ...]:
        """A possibly dotted key, decoded the way tomli decodes it."""
        text = self._text
        parts: list[str] = []
        while True:
            self._skip()
            c = text[self._pos]
            if c == '"':
                start = self._pos
                self._basic_string()
                parts.append(_decode_string(text[start : self._pos]))
            elif c == "'":
                end = text.index("'", self._pos + 1)
                parts.append(text[self._pos + 1 : end])
                self._pos = end + 1
            else:
                m = _BARE_KEY.match(text, self._pos)
                if m is None:
                    raise ValueError("not a key")
                parts.append(m.group())
                self._pos = m.end()
            self._skip()
            if self._pos < len(text) and text[self._pos] == ".":
                self._pos += 1
                continue
            return tuple(parts)

    def _value(self, path: KeyPath) -> None:
        """Skip over one value, recording where it is and where every key or element inside it is."""
        text = self._text
        self._skip()
        start = self._pos
        line = self._line(start)
        self._mention(path, line)
        if text.startswith('"""', start) or text.startswith("'''", start):
            self._multiline_string(text[start])
        elif text[start] == '"':
            self._basic_string()
        elif text[start] == "'":
            self._pos = text.index("'", start + 1) + 1
        elif text[start] == "[":
            self._pos += 1
            index = 0
            while True:
                self._skip(newlines=True)
                if text[self._pos] == "]":
                    self._pos += 1
                    break
                self._value((*path, index))
                index += 1
                self._skip(newlines=True)
                if text[self._pos] == ",":
                    self._pos += 1
        elif text[start] == "{":
            self._pos += 1
            while True:
                self._skip(newlines=True)
                if text[self._pos] == "}":
                    self._pos += 1
                    break
                key = (*path, *self._key())
                self._skip()
                self._pos += 1  # =
                self._value(key)
                self._skip(newlines=True)
                if text[self._pos] == ",":
                    self._pos += 1
        else:
            # Numbers, booleans, dates: up to a delimiter. A date-time may hold a space, so trim at the end.
            end = start
            while end < len(text) and text[end] not in _SCALAR_END:
                end += 1
            while end > start and text[end - 1] in " \t":
                end -= 1
            if end == start:
                raise ValueError("no value")
            self._pos = end
        self.values.setdefault(path, Spot(line, start, self._pos))

    def _basic_string(self) -> None:
        text = self._text
        i = self._pos + 1
        while text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        self._pos = i + 1

    def _multiline_string(self, quote: str) -> None:
        text = self._text
        i = self._pos + 3
        while True:
            if quote == '"' and text[i] == "\\":
                i += 2
            elif text.startswith(quote * 3, i):
                # Up to two more quotes right before the closing three belong to the string.
                run = 3
                while run < 5 and i + run < len(text) and text[i + run] == quote:
                    run += 1
                self._pos = i + run
                return
            else:
                i += 1


def _decode_string(literal: str) -> str:
    """Decode one TOML basic-string literal exactly as tomli would."""
    value = tomli.loads(f"k = {literal}")["k"]
    assert isinstance(value, str)
    return value


# ----------------------------------------------------------------------------------------------------
# Reading a document and wording errors about it


def display_path(path: Path) -> str:
    """The path as the user gave it, or relative to the current directory when that is shorter."""
    shown = str(path)
    if path.is_absolute():
        try:
            if os.getcwd() == "/":  # a daemon's (a colony host's): `tmp/x` would read as a path of the user's
                return shown
            relative = os.path.relpath(path)
        except (ValueError, OSError):
            return shown
        if not relative.startswith("..") and len(relative) < len(shown):
            return relative
    return shown


def format_key(path: Iterable[str | int]) -> str:
    """`services.web.env.NODE_ENV`, `setup[2]`, `env."MY KEY"`: a key path the way TOML would spell it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else toml_string(part)
        out += f".{name}" if out else name
    return out


def toml_string(value: str) -> str:
    """A TOML basic string holding `value`."""
    out = ['"']
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def type_name(value: object) -> str:
    """The TOML name of a parsed value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime.datetime):
        return "datetime"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    return type(value).__name__


def describe(value: object) -> str:
    """`integer 3`, `string 'sometimes'`, `array`: what was found, for a type error."""
    name = type_name(value)
    if isinstance(value, list | dict):
        return name
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{name} {text}"


# No Stem setting nests anywhere near this; past it, walking the value (recursively, as checks and copies do)
# could exhaust the stack.
MAX_DEPTH = 32


def _deeper_than(data: dict[str, Any], limit: int) -> KeyPath | None:
    """The path of a value nested more than `limit` tables or arrays deep, or None. Iterative on purpose."""
    stack: list[tuple[KeyPath, object]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if len(path) > limit:
            return path
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
    return None


class TomlDoc:
    """A parsed TOML file plus what it takes to word an error about any of its keys."""

    def __init__(self, text: str, path: Path) -> None:
        text = text.removeprefix("\ufeff")  # a byte order mark (some Windows editors save one): not TOML, no meaning
        self.text = text
        self.path = path
        self.shown = display_path(path)
        self._locator: TomlLocator | None = None
        try:
            self.data: dict[str, Any] = tomli.loads(text)
        except tomli.TOMLDecodeError as e:
            # tomli >= 2.1 carries the position; older ones only put it in the message.
            line = getattr(e, "lineno", None)
            msg = getattr(e, "msg", None) or str(e)
            if line is None:
                m = re.search(r"\(at line (\d+), column \d+\)", str(e))
                line = int(m.group(1)) if m else 1
                msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)$", "", str(e))
            raise ConfigError(f"{self.shown}:{line}: invalid TOML: {msg}") from None
        except RecursionError:
            # An older tomli recurses until Python refuses; a newer one raises this itself past its own limit.
            raise ConfigError(f"{self.shown}: invalid TOML: arrays, tables or keys nested too deeply") from None
        too_deep = _deeper_than(self.data, MAX_DEPTH)
        if too_deep is not None:
            line = self.locator.line_of(too_deep)
            raise ConfigError(f"{self.shown}:{line}: tables or arrays nested more than {MAX_DEPTH} deep")

    @classmethod
    def read(cls, path: Path) -> TomlDoc:
        """Read and parse `path`; an unreadable or non-UTF-8 file is a ConfigError too."""
        return cls.parse_bytes(cls.read_bytes(path), path)

    @staticmethod
    def read_bytes(path: Path) -> bytes:
        """`path`'s bytes; an unreadable file is a ConfigError."""
        try:
            return path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{display_path(path)}: cannot read: {e.strerror or e}") from None

    @classmethod
    def parse_bytes(cls, raw: bytes, path: Path) -> TomlDoc:
        """Parse `raw`, read from `path` (named in errors); a non-UTF-8 file is a ConfigError."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise ConfigError(f"{display_path(path)}:{line}: not UTF-8 text") from None
        return cls(text, path)

    @property
    def locator(self) -> TomlLocator:
        if self._locator is None:
            self._locator = TomlLocator(self.text)
        return self._locator

    def fail(self, table: KeyPath, key: KeyPath, message: str) -> NoReturn:
        """Raise `file:line: [table] key: message`, the line being that of the key (or its table)."""
        line = self.locator.line_of((*table, *key))
        where = " ".join(p for p in (f"[{format_key(table)}]" if table else "", format_key(key)) if p)
        # A value quoted in the message may hold a line break: the error stays one line.
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        raise ConfigError(f"{self.shown}:{line}: {where}: {message}")

    # -- typed getters: each returns the value or raises naming the key -------------------------------------

    def table(self, table: KeyPath, key: KeyPath, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(table, key, f"must be a table (got {describe(value)})")
        return value

    def check_keys(self, table: KeyPath, values: Mapping[str, object], known: Sequence[str]) -> None:
        for name in values:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.fail(table, (name,), f"unknown key{hint} (known: {', '.join(known)})")

    def string(self, table: KeyPath, key: KeyPath, value: object, *, empty_ok: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(table, key, f"must be a string (got {describe(value)})")
        if not empty_ok and not value.strip():
            self.fail(table, key, "must not be empty")
        if "\0" in value:
            self.fail(table, key, "must not contain a NUL character")
        return value

    def strings(self, table: KeyPath, key: KeyPath, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(table, key, f"must be an array of strings (got {describe(value)})")
        return tuple(self.string(table, (*key, i), item) for i, item in enumerate(value))

    def string_map(self, table: KeyPath, key: KeyPath, value: object) -> Mapping[str, str]:
        """A table of environment variables: names without '=', string values."""
        if not isinstance(value, dict):
            self.fail(table, key, f"must be a table of strings (got {describe(value)})")
        out: dict[str, str] = {}
        for name, item in value.items():
            if not name or "=" in name or "\0" in name:
                self.fail(table, (*key, name), "not a valid environment variable name")
            out[name] = self.string(table, (*key, name), item, empty_ok=True)
        return MappingProxyType(out)

    def integer(self, table: KeyPath, key: KeyPath, value: object, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(table, key, f"must be an integer (got {describe(value)})")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(table, key, f"must be {bound} (got {value})")
        return value

    def positive_number(self, table: KeyPath, key: KeyPath, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(table, key, f"must be a number (got {describe(value)})")
        if not value > 0 or value == float("inf"):  # `not >` also rejects nan
            self.fail(table, key, f"must be a number greater than 0 (got {value})")
        return float(value)

    def egress(self, table: KeyPath, key: KeyPath, value: object) -> Egress:
        try:
            return parse_egress(value)
        except EgressError as exc:
            self.fail(table, key, str(exc))

    def boolean(self, table: KeyPath, key: KeyPath, value: object) -> bool:
        if not isinstance(value, bool):
            self.fail(table, key, f"must be true or false (got {describe(value)})")
        return value
