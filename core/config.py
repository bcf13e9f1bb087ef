"""colony.toml: what a repository asks of each colony (agent, setup, services, limits), parsed and validated.

Every mistake a user can make in the file becomes a one-line `ConfigError` that names the file, the line and
the key. tomli parses the values but forgets where they were, so `TomlLocator` re-reads the (already valid)
text to find the line of any table, key or array element.
"""

from __future__ import annotations

import bisect
import datetime
import difflib
import os
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import tomli

from core.egress import Egress, EgressError, parse_egress
from core.errors import ConfigError, StemError
from core.names import check_name

__all__ = [
    "COLONY_FILE",
    "ColonyConfig",
    "KeyPath",
    "Limits",
    "NetworkSpec",
    "PeeringSpec",
    "ServiceSpec",
    "TerminalSpec",
    "TomlDoc",
    "TomlLocator",
    "display_path",
    "format_key",
    "load_colony_config",
    "parse_colony_config",
    "parse_limits",
    "service_start_order",
    "toml_string",
]

COLONY_FILE = "colony.toml"

RESTART_POLICIES = ("no", "on-failure", "always")
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

# A key of a TOML document as tomli sees it: table and key names, and array indexes.
KeyPath = tuple[str | int, ...]


def _empty_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One `[services.NAME]` table: a long-running process the colony supervises."""

    name: str
    command: str
    port: int | None = None
    working_dir: str | None = None  # normalised, relative to the worktree, never escaping it
    env: Mapping[str, str] = field(default_factory=_empty_env)
    restart: str = "on-failure"
    ready: str | None = None  # "tcp", "http:/path", or None (ready once started)
    ready_timeout: float = 30.0
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """`[limits]`: the colony's cgroup. None means no limit (in config.toml: the default for colonies)."""

    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None
    swap: int | None = None  # bytes of swap on top of memory

    def over(self, defaults: Limits) -> Limits:
        """These limits, each one not set taken from `defaults` (the user's config.toml)."""
        return Limits(
            memory=self.memory if self.memory is not None else defaults.memory,
            cpus=self.cpus if self.cpus is not None else defaults.cpus,
            pids=self.pids if self.pids is not None else defaults.pids,
            swap=self.swap if self.swap is not None else defaults.swap,
        )


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """`[network]`: where the colony's traffic may go. `egress` None means the user's default (config.toml)."""

    egress: Egress | None = None
    host_ports: tuple[int, ...] = ()
    peers: tuple[str, ...] = ()  # colonies this one may connect to (both must list each other)


@dataclass(frozen=True, slots=True)
class PeeringSpec:
    """`[peering]`: paths never copied between colonies."""

    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TerminalSpec:
    """`[terminal]`: the extra shell opened in a colony. None means the user's shell."""

    command: str | None = None


@dataclass(frozen=True, slots=True)
class ColonyConfig:
    """A whole colony.toml. `path` is None when the repository has none and these are the defaults."""

    path: Path | None = None
    agent: str | None = None
    setup: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=_empty_env)
    services: Mapping[str, ServiceSpec] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    peering: PeeringSpec = field(default_factory=PeeringSpec)
    terminal: TerminalSpec = field(default_factory=TerminalSpec)


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
        except (IndexError, ValueError):
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
            relative = os.path.relpath(path)
        except ValueError:
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


class TomlDoc:
    """A parsed TOML file plus what it takes to word an error about any of its keys."""

    def __init__(self, text: str, path: Path) -> None:
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

    @classmethod
    def read(cls, path: Path) -> TomlDoc:
        """Read and parse `path`; an unreadable or non-UTF-8 file is a ConfigError too."""
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{display_path(path)}: cannot read: {e.strerror or e}") from None
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


# ----------------------------------------------------------------------------------------------------
# colony.toml


_TABLES = ("colony", "services", "limits", "network", "peering", "terminal")
_COLONY_KEYS = ("agent", "setup", "build", "env")
_SERVICE_KEYS = (
    "command",
    "port",
    "working_dir",
    "env",
    "restart",
    "ready",
    "ready_timeout",
    "depends_on",
)
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_colony_config(text: str, path: Path) -> ColonyConfig:
    """Parse and validate a colony.toml's text; `path` is named in errors and kept in the result."""
    return _colony_config(TomlDoc(text, path))


def load_colony_config(root: Path) -> ColonyConfig:
    """The colony.toml at the root of a repository, or the defaults (path None) when there is none."""
    path = root / COLONY_FILE
    if not path.exists():
        return ColonyConfig()
    return _colony_config(TomlDoc.read(path))


def service_start_order(cfg: ColonyConfig) -> list[list[str]]:
    """Services grouped in waves: each wave depends only on earlier ones; within a wave, file order."""
    remaining = dict(cfg.services)
    started: set[str] = set()
    waves: list[list[str]] = []
    while remaining:
        wave = [name for name, s in remaining.items() if all(d in started for d in s.depends_on)]
        if not wave:
            # parse_colony_config rejects cycles and unknown names, but a hand-built config is not checked.
            raise ConfigError(f"services {', '.join(remaining)}: depend on each other or on unknown services")
        waves.append(wave)
        started.update(wave)
        for name in wave:
            del remaining[name]
    return waves


def _colony_config(doc: TomlDoc) -> ColonyConfig:
    data = doc.data
    for name, value in data.items():
        if name not in _TABLES:
            close = difflib.get_close_matches(name, _TABLES, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            known = f"(known tables: {', '.join(_TABLES)})"
            if isinstance(value, dict):
                doc.fail((name,), (), f"unknown table{hint} {known}")
            doc.fail((), (name,), f"unknown key at top level{hint} {known}")
        doc.table((), (name,), value)

    colony = data.get("colony", {})
    t: KeyPath = ("colony",)
    doc.check_keys(t, colony, _COLONY_KEYS)
    agent = None
    if "agent" in colony:
        agent = doc.string(t, ("agent",), colony["agent"]).strip()
        try:
            shlex.split(agent)  # resolved later, far from the file: catch a broken command line here
        except ValueError as e:
            doc.fail(t, ("agent",), f"cannot split into words: {e}")

    services = _services(doc, data.get("services", {}))
    return ColonyConfig(
        path=doc.path,
        agent=agent,
        setup=doc.strings(t, ("setup",), colony.get("setup", [])),
        build=doc.strings(t, ("build",), colony.get("build", [])),
        env=doc.string_map(t, ("env",), colony.get("env", {})),
        services=services,
        limits=parse_limits(doc, data.get("limits", {})),
        network=_network(doc, data.get("network", {})),
        peering=_peering(doc, data.get("peering", {})),
        terminal=_terminal(doc, data.get("terminal", {})),
    )


def _services(doc: TomlDoc, value: dict[str, Any]) -> Mapping[str, ServiceSpec]:
    specs: dict[str, ServiceSpec] = {}
    ports: dict[int, str] = {}
    for name, raw in value.items():
        if not SERVICE_NAME.fullmatch(name):
            doc.fail(
                ("services",),
                (name,),
                "invalid service name: use a-z, 0-9, '_' and '-', start with a letter or digit, at most 32 characters",
            )
        spec = _service(doc, name, doc.table(("services",), (name,), raw))
        if spec.port is not None:
            if spec.port in ports:
                doc.fail(
                    ("services", name),
                    ("port",),
                    f"{spec.port} is already used by service '{ports[spec.port]}'",
                )
            ports[spec.port] = name
        specs[name] = spec

    for name, spec in specs.items():
        for dep in spec.depends_on:
            if dep not in specs:
                doc.fail(("services", name), ("depends_on",), f"unknown service '{dep}'")
    cycle = _find_cycle(specs)
    if cycle:
        doc.fail(("services", cycle[0]), ("depends_on",), f"dependency cycle: {' -> '.join(cycle)}")
    return MappingProxyType(specs)


def _service(doc: TomlDoc, name: str, raw: dict[str, Any]) -> ServiceSpec:
    t: KeyPath = ("services", name)
    doc.check_keys(t, raw, _SERVICE_KEYS)
    if "command" not in raw:
        doc.fail(t, ("command",), "missing (the command line that runs this service)")
    command = doc.string(t, ("command",), raw["command"])
    port = doc.integer(t, ("port",), raw["port"], 1, 65535) if "port" in raw else None

    working_dir = None
    if "working_dir" in raw:
        given = doc.string(t, ("working_dir",), raw["working_dir"])
        if posixpath.isabs(given) or os.path.isabs(given):
            doc.fail(t, ("working_dir",), f"must be relative to the worktree (got '{given}')")
        working_dir = posixpath.normpath(given)
        if working_dir == ".." or working_dir.startswith("../"):
            doc.fail(t, ("working_dir",), f"must stay inside the worktree (got '{given}')")

    restart = "on-failure"
    if "restart" in raw:
        restart = doc.string(t, ("restart",), raw["restart"])
        if restart not in RESTART_POLICIES:
            doc.fail(t, ("restart",), f"must be one of {', '.join(RESTART_POLICIES)} (got '{restart}')")

    ready = None
    if "ready" in raw:
        ready = _ready(doc, t, doc.string(t, ("ready",), raw["ready"]))
        if port is None:
            doc.fail(t, ("ready",), f"'{ready}' needs a port: add port = ... to [services.{name}]")

    ready_timeout = 30.0
    if "ready_timeout" in raw:
        ready_timeout = doc.positive_number(t, ("ready_timeout",), raw["ready_timeout"])

    depends_on = doc.strings(t, ("depends_on",), raw.get("depends_on", []))
    return ServiceSpec(
        name=name,
        command=command,
        port=port,
        working_dir=working_dir,
        env=doc.string_map(t, ("env",), raw.get("env", {})),
        restart=restart,
        ready=ready,
        ready_timeout=ready_timeout,
        depends_on=tuple(dict.fromkeys(depends_on)),  # a repeated name means nothing more
    )


def _ready(doc: TomlDoc, t: KeyPath, value: str) -> str:
    """'tcp' or 'http:/path'; 'http' alone means 'http:/' and 'http:health' means 'http:/health'."""
    probe = value.strip()
    if probe.lower() == "tcp":
        return "tcp"
    scheme, _, path = probe.partition(":")
    # 'http://host/x' is refused rather than read as a path: the probe always targets the service's own port.
    if scheme.lower() == "http" and not path.startswith("//") and not any(c.isspace() for c in path):
        return "http:/" + path.removeprefix("/")
    doc.fail(t, ("ready",), f"must be 'tcp' or 'http:/path' (got '{value}')")


def _find_cycle(specs: Mapping[str, ServiceSpec]) -> list[str] | None:
    """The first dependency cycle in file order, as `[a, b, a]`, or None."""
    done: set[str] = set()
    path: list[str] = []  # the current chain of dependencies being followed

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for dep in specs[name].depends_on:
            cycle = visit(dep)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return None

    for root in specs:
        cycle = visit(root)
        if cycle:
            return cycle
    return None


def parse_limits(doc: TomlDoc, raw: dict[str, Any]) -> Limits:
    """A `[limits]` table: of colony.toml, or of config.toml (the defaults for every colony)."""
    t: KeyPath = ("limits",)
    doc.check_keys(t, raw, ("memory", "cpus", "pids", "swap"))
    memory = _size(doc, t, "memory", raw["memory"], 1) if "memory" in raw else None
    swap = _size(doc, t, "swap", raw["swap"], 0) if "swap" in raw else None
    cpus = doc.positive_number(t, ("cpus",), raw["cpus"]) if "cpus" in raw else None
    if cpus is not None and cpus < 0.01:
        doc.fail(t, ("cpus",), f"must be at least 0.01 (1% of one CPU; got {cpus:g})")
    pids = doc.integer(t, ("pids",), raw["pids"], 1) if "pids" in raw else None
    return Limits(memory=memory, cpus=cpus, pids=pids, swap=swap)


def _size(doc: TomlDoc, t: KeyPath, key: str, value: object, low: int) -> int:
    """Bytes, or a size like '512M' or '2G' (binary units), at least `low`."""
    if isinstance(value, str):
        m = _MEMORY.fullmatch(value.strip())
        if m is None:
            doc.fail(t, (key,), f"must be bytes or a size like '512M' or '2G' (got '{value}')")
        size = int(float(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()])
        if size < low:
            doc.fail(t, (key,), f"must be more than 0 bytes (got '{value}')")
        return size
    if isinstance(value, int) and not isinstance(value, bool):
        return doc.integer(t, (key,), value, low)
    doc.fail(t, (key,), f"must be bytes or a size like '2G' (got {describe(value)})")


def _network(doc: TomlDoc, raw: dict[str, Any]) -> NetworkSpec:
    t: KeyPath = ("network",)
    doc.check_keys(t, raw, ("egress", "host_ports", "peers"))
    egress = doc.egress(t, ("egress",), raw["egress"]) if "egress" in raw else None
    ports: list[int] = []
    if "host_ports" in raw:
        if not isinstance(raw["host_ports"], list):
            doc.fail(t, ("host_ports",), f"must be an array of port numbers (got {describe(raw['host_ports'])})")
        ports = [doc.integer(t, ("host_ports", i), p, 1, 65535) for i, p in enumerate(raw["host_ports"])]
    peers = doc.strings(t, ("peers",), raw.get("peers", []))
    for i, peer in enumerate(peers):
        try:
            check_name(peer)
        except StemError as exc:
            doc.fail(t, ("peers", i), f"{peer!r} is not a colony name: {exc}")
    return NetworkSpec(egress=egress, host_ports=tuple(sorted(set(ports))), peers=tuple(sorted(set(peers))))


def _not_applied(doc: TomlDoc, table: str, raw: dict[str, Any], why: str) -> None:
    """A table Stem parses but does not apply yet is refused: accepted and ignored, a user would believe it holds."""
    if raw:
        doc.fail((table,), (next(iter(raw)),), f"is not applied by this version of Stem ({why}): remove [{table}]")


def _peering(doc: TomlDoc, raw: dict[str, Any]) -> PeeringSpec:
    _not_applied(doc, "peering", raw, "read-only peering is not built yet")
    return PeeringSpec()


def _terminal(doc: TomlDoc, raw: dict[str, Any]) -> TerminalSpec:
    _not_applied(doc, "terminal", raw, "Stem opens no extra shell in a colony yet")
    return TerminalSpec()
