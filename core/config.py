"""colony.toml's schema: what a repository asks of each colony (agent, setup, services, limits), and its checks.

The dataclasses are the schema: the keys a file may hold are derived from their fields (`known_keys`), so a new
field is a new key. Reading the file and wording errors is core/toml_doc.py's; every mistake a user can make
becomes a one-line `ConfigError` that names the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import posixpath
import re
import shlex
import signal
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.egress import Egress
from core.errors import ConfigError, StemError
from core.locations import write_atomically
from core.names import check_name
from core.toml_doc import KeyPath, TomlDoc, describe

__all__ = [
    "COLONY_FILE",
    "NOT_IN_FILE",
    "ColonyConfig",
    "Limits",
    "NetworkSpec",
    "PeeringSpec",
    "ServiceSpec",
    "TerminalSpec",
    "in_file",
    "known_keys",
    "load_colony_config",
    "parse_colony_config",
    "parse_limits",
    "service_start_order",
]

COLONY_FILE = "colony.toml"

RESTART_POLICIES = ("no", "on-failure", "always")
MAX_STOP_TIMEOUT = 300.0
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH")
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# What writes to a colony's log besides its services, each under its own name (`stem logs -s` takes these too): no
# service may be called so, or its lines would read as Stem's (a watcher named build among the build step's lines).
LOG_SOURCES = (
    "setup",
    "build",
    "network",
    "host",
    "agent",
    "limits",
    "preview",
    "peering",
    "config",
    "sandbox",
    "isolation",
    "colony",
)

# Where a field of a schema dataclass sits in its file, relative to the dataclass's own table: by default a key
# named like the field; `in_file("hive", "pool")` elsewhere; NOT_IN_FILE for what the file does not hold.
_WHERE = "toml"
NOT_IN_FILE: Mapping[str, Any] = MappingProxyType({_WHERE: ()})


def in_file(*where: str) -> Mapping[str, Any]:
    """Field metadata: the field is read from `where` (table names, then the key) in the file."""
    return MappingProxyType({_WHERE: where})


def known_keys(schema: type, table: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names `table` of `schema`'s file may hold (the top level by default), in field order."""
    names: dict[str, None] = {}
    for f in dataclasses.fields(schema):
        where: tuple[str, ...] = f.metadata.get(_WHERE, (f.name,))
        if len(where) > len(table) and where[: len(table)] == table:
            names[where[len(table)]] = None
    return tuple(names)


def _empty_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One `[services.NAME]` table: a long-running process the colony supervises."""

    name: str = field(metadata=NOT_IN_FILE)  # the table's name
    command: str
    port: int | None = None
    working_dir: str | None = None  # normalised, relative to the worktree, never escaping it
    env: Mapping[str, str] = field(default_factory=_empty_env)
    restart: str = "on-failure"
    ready: str | None = None  # "tcp", "http:/path", or None (ready once started)
    ready_timeout: float = 30.0
    depends_on: tuple[str, ...] = ()
    preview: bool = True  # a route through the preview port once ready (false for a database, a queue: not HTTP)
    stop_signal: int = signal.SIGTERM  # what a stop sends first (postgres: SIGINT, its fast shutdown)
    stop_timeout: float | None = None  # seconds from it to SIGKILL; None: the hive's (5)


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
    """`[peering]`: colonies whose worktree this one reads (a read-only snapshot at `.shared/NAME/`, core/peering.py),
    paths never copied between colonies (added to the built-in list), and whether snapshots follow their source."""

    sources: tuple[str, ...] = field(default=(), metadata=in_file("from"))
    exclude: tuple[str, ...] = ()
    auto_refresh: bool = False


@dataclass(frozen=True, slots=True)
class TerminalSpec:
    """`[terminal]`: the extra shell opened in a colony. None means the user's shell."""

    command: str | None = None


@dataclass(frozen=True, slots=True)
class ColonyConfig:
    """A whole colony.toml. `path` is None when the repository has none and these are the defaults."""

    path: Path | None = field(default=None, metadata=NOT_IN_FILE)
    agent: str | None = field(default=None, metadata=in_file("colony", "agent"))
    setup: tuple[str, ...] = field(default=(), metadata=in_file("colony", "setup"))
    build: tuple[str, ...] = field(default=(), metadata=in_file("colony", "build"))
    env: Mapping[str, str] = field(default_factory=_empty_env, metadata=in_file("colony", "env"))
    # variables of the caller's environment handed to the colony (the rest is not inherited)
    pass_env: tuple[str, ...] = field(default=(), metadata=in_file("colony", "pass_env"))
    services: Mapping[str, ServiceSpec] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    peering: PeeringSpec = field(default_factory=PeeringSpec)
    terminal: TerminalSpec = field(default_factory=TerminalSpec)


# ----------------------------------------------------------------------------------------------------
# colony.toml


_TABLES = known_keys(ColonyConfig)
_COLONY_KEYS = known_keys(ColonyConfig, ("colony",))
_SERVICE_KEYS = known_keys(ServiceSpec)
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_colony_config(text: str, path: Path) -> ColonyConfig:
    """Parse and validate a colony.toml's text; `path` is named in errors and kept in the result."""
    return _colony_config(TomlDoc(text, path))


def load_colony_config(root: Path) -> ColonyConfig:
    """The colony.toml at the root of a repository, or the defaults (path None) when there is none."""
    return _read_colony_config(root / COLONY_FILE)[0]


def _read_colony_config(path: Path) -> tuple[ColonyConfig, bytes | None]:
    """The colony.toml at `path` and the bytes it was parsed from (one read: what parsed is what they hold); the
    defaults and None when there is none."""
    if not path.exists():
        return ColonyConfig(), None
    raw = TomlDoc.read_bytes(path)
    return _colony_config(TomlDoc.parse_bytes(raw, path)), raw


# What a colony may use and reach: never what its own agent says. A colony's worktree is its uid's, but Stem keeps
# its colony.toml root's (core.sandbox), which the agent can read and not change, in a folder where it cannot
# replace it either.
POLICY = ("limits", "network", "pass_env", "peering")


def written_by_root(path: Path) -> bool:
    """Whether colony.toml at `path` can hold the colony's policy: root's regular file (Stem's checkout, or the
    user's edit as root), or none at all. When Stem is not root, colonies run as its user: nothing to tell apart."""
    if os.geteuid() != 0:
        return True
    try:
        st = os.lstat(path)
    except OSError:
        return True
    return st.st_uid == 0 and stat.S_ISREG(st.st_mode)


def colony_config_for(
    worktree: Path, base_commit: str, target: str = "", kept: Path | None = None, fallback: bool = False
) -> tuple[ColonyConfig, str]:
    """A colony's colony.toml, and a note when its policy (POLICY) came from elsewhere. It comes from elsewhere when
    the file in its worktree may say what its agent wants: when the colony's uid wrote it (or it is a symlink), and
    when root's git wrote it from the colony's own commits (a sync, a merge into its branch, a failed merge putting
    back an assume-unchanged file): root's file holding the colony's HEAD version, neither the spawn's nor its
    `target` branch's. A root edit in the worktree holds.

    `kept` (a root-only file outside the colony's view) keeps the last colony.toml that held, and it is where the
    policy comes from then, else from the commit the colony was spawned from: so an agent that commits the file as
    root last edited it (a tightened limit) keeps that edit in force rather than going back to the spawn's.

    Every file that parses is kept too (`_applied`). With `fallback` (a start: nothing runs yet to keep), a file that
    does not parse gives the last one that did, with a note saying so, as a live edit keeps what runs; the error is
    raised only when none ever did."""
    path = worktree / COLONY_FILE
    applied = _applied(kept)
    try:
        config, text = _read_colony_config(path)
    except ConfigError as exc:
        held = _read_kept(applied) if fallback else None
        if held is None:
            raise
        config = parse_colony_config(held.decode(errors="replace"), Path(f"the last {COLONY_FILE} that held"))
        # Its policy as an untrusted file's: the last trusted one's, else the spawn's.
        config, _ = _policy_from(config, _read_kept(kept), base_commit, worktree)
        return config, f"{exc}; started with the last {COLONY_FILE} that held (fix the file: it applies when saved)"
    if text is not None:
        _keep(applied, text, _read_kept(applied))
    if not base_commit:
        return config, ""

    last = _read_kept(kept)
    if written_by_root(path):
        # The spawn's first: the common case, one git. Then root's own edit (not the colony's HEAD version).
        if (
            text is None
            or text == last
            or text == _committed(worktree, base_commit)
            or text != _committed(worktree, "HEAD")
        ):
            _keep(kept, text, last)
            return config, ""  # none, what held before, the spawn's, or root's own edit
        if target and text == _committed(worktree, f"refs/heads/{target}"):
            _keep(kept, text, last)
            return config, ""  # its target's, brought by a sync
        why = "holds the colony's own committed version (root's git wrote it from the colony's branch)"
        fix = "edit it as root to change them"
    else:
        why = "is not root's (the colony wrote it)"
        fix = f"as root, chown root {path} to trust it"
    config, source = _policy_from(config, last, base_commit, worktree)
    return config, f"{path} {why}: its [limits], [network], [peering] and pass_env do not apply, {source} do; {fix}"


def _policy_from(
    config: ColonyConfig, last: bytes | None, base_commit: str, worktree: Path
) -> tuple[ColonyConfig, str]:
    """`config` with its policy (POLICY) from `last` (the last trusted colony.toml), else from the spawn's commit,
    else the defaults; and which of those it came from."""
    policy_text: bytes | None = None
    name = Path(COLONY_FILE)
    if last is not None:
        policy_text, name = last, Path(f"the last trusted {COLONY_FILE}")
    elif base_commit:
        policy_text, name = _committed(worktree, base_commit), Path(f"{base_commit[:12]}:{COLONY_FILE}")
    policy = (
        parse_colony_config(policy_text.decode(errors="replace"), name) if policy_text is not None else ColonyConfig()
    )
    config = dataclasses.replace(config, **{key: getattr(policy, key) for key in POLICY})
    return config, f"those of {name}" if policy_text is not None else "the defaults"


def _committed(worktree: Path, rev: str) -> bytes | None:
    """colony.toml as commit `rev` of the worktree's repository holds it (None: it holds none)."""
    from core.worktree import git_bytes  # git only to tell where the file came from

    shown = git_bytes(["show", f"{rev}:{COLONY_FILE}"], worktree)
    return shown.stdout if shown.returncode == 0 else None


def _applied(kept: Path | None) -> Path | None:
    """Where the last colony.toml that parsed is kept, beside `kept` (None: nowhere)."""
    return None if kept is None else kept.with_name("applied.toml")


def _read_kept(kept: Path | None) -> bytes | None:
    if kept is None:
        return None
    try:
        return kept.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _keep(kept: Path | None, text: bytes | None, last: bytes | None) -> None:
    """Keep `text` as the colony.toml that holds (none: nothing kept). Best effort: a full disk keeps the last one."""
    if kept is None or text == last:
        return
    try:
        if text is None:
            kept.unlink(missing_ok=True)
            return
        write_atomically(kept, text, 0o600)
    except OSError:
        pass


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


def stop_patience(cfg: ColonyConfig, grace: float) -> float:
    """The longest `cfg`'s services may take to stop: wave after wave (the reverse of their start), each wave as long
    as its slowest service (its `stop_timeout`, else `grace`), so the waves' times add up; never less than `grace`. The
    slowest service alone was taken: five chained services that each took their 6 s outlasted a stopper's patience
    of 6 + 15 s, which killed the host before the last had ended, and that service's end was never logged."""
    try:
        waves = service_start_order(cfg)
    except ConfigError:
        waves = [list(cfg.services)]
    total = 0.0
    for wave in waves:
        timeouts = [cfg.services[name].stop_timeout for name in wave]
        total += max(grace if timeout is None else timeout for timeout in timeouts)
    return max(grace, total)


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
        pass_env=_pass_env(doc, t, colony.get("pass_env", [])),
        services=services,
        limits=parse_limits(doc, data.get("limits", {})),
        network=_network(doc, data.get("network", {})),
        peering=_peering(doc, data.get("peering", {})),
        terminal=_terminal(doc, data.get("terminal", {})),
    )


def _pass_env(doc: TomlDoc, t: KeyPath, value: object) -> tuple[str, ...]:
    names = doc.strings(t, ("pass_env",), value)
    for i, name in enumerate(names):
        if not name or "=" in name or "\0" in name:
            doc.fail(t, ("pass_env", i), f"not a valid environment variable name: {name!r}")
    return names


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
        if name in LOG_SOURCES:
            doc.fail(
                ("services",),
                (name,),
                f"Stem writes its own lines to the colony's log under '{name}' ({', '.join(LOG_SOURCES)}): give the "
                f"service another name ({name}-dev, say)",
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

    # A service with a port is ready when the port takes a connection (its preview URL, `depends_on` and `stem ls`
    # then mean what they say); "none" is ready once started, as a service without a port is.
    ready = None if port is None else "tcp"
    if "ready" in raw:
        given = doc.string(t, ("ready",), raw["ready"])
        ready = None if given.strip().lower() == "none" else _ready(doc, t, given)
        if port is None and ready is not None:
            doc.fail(t, ("ready",), f"'{ready}' needs a port: add port = ... to [services.{name}]")

    ready_timeout = 30.0
    if "ready_timeout" in raw:
        ready_timeout = doc.positive_number(t, ("ready_timeout",), raw["ready_timeout"])

    depends_on = doc.strings(t, ("depends_on",), raw.get("depends_on", []))
    preview = doc.boolean(t, ("preview",), raw["preview"]) if "preview" in raw else True
    stop_signal = signal.SIGTERM
    if "stop_signal" in raw:
        given = doc.string(t, ("stop_signal",), raw["stop_signal"]).strip().upper()
        named = given if given.startswith("SIG") else f"SIG{given}"
        if named not in STOP_SIGNALS:
            doc.fail(t, ("stop_signal",), f"must be one of {', '.join(STOP_SIGNALS)} (got '{raw['stop_signal']}')")
        stop_signal = signal.Signals[named]
    stop_timeout = None
    if "stop_timeout" in raw:
        stop_timeout = doc.positive_number(t, ("stop_timeout",), raw["stop_timeout"])
        if stop_timeout > MAX_STOP_TIMEOUT:
            doc.fail(t, ("stop_timeout",), f"must be at most {MAX_STOP_TIMEOUT:g} seconds (got {stop_timeout:g})")
    if preview and port is None and "preview" in raw:
        doc.fail(t, ("preview",), f"a preview needs a port: add port = ... to [services.{name}]")
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
        preview=preview,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
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
    doc.fail(t, ("ready",), f"must be 'tcp', 'http:/path' or 'none' (got '{value}')")


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


MIN_MEMORY = 1 << 20  # the colony's init and a shell start in 1 MiB; in less, the start fails with no reason
MAX_SIZE = 1 << 63


def parse_limits(doc: TomlDoc, raw: dict[str, Any]) -> Limits:
    """A `[limits]` table: of colony.toml, or of config.toml (the defaults for every colony)."""
    t: KeyPath = ("limits",)
    doc.check_keys(t, raw, known_keys(Limits))
    memory = _size(doc, t, "memory", raw["memory"], MIN_MEMORY) if "memory" in raw else None
    swap = _size(doc, t, "swap", raw["swap"], 0) if "swap" in raw else None
    cpus = doc.positive_number(t, ("cpus",), raw["cpus"]) if "cpus" in raw else None
    if cpus is not None and cpus < 0.01:
        doc.fail(t, ("cpus",), f"must be at least 0.01 (1% of one CPU; got {cpus:g})")
    pids = doc.integer(t, ("pids",), raw["pids"], 1) if "pids" in raw else None
    return Limits(memory=memory, cpus=cpus, pids=pids, swap=swap)


def _size(doc: TomlDoc, t: KeyPath, key: str, value: object, low: int) -> int:
    """Bytes, or a size like '512M' or '2G' (binary units), at least `low` and less than 8 EiB (the kernel's
    counters are signed 64-bit: a larger limit would read back as none)."""
    if isinstance(value, str):
        m = _MEMORY.fullmatch(value.strip())
        if m is None:
            doc.fail(t, (key,), f"must be bytes or a size like '512M' or '2G' (got '{value}')")
        size = int(float(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()])
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        doc.fail(t, (key,), f"must be bytes or a size like '2G' (got {describe(value)})")
    if size < low:
        least = "more than 0 bytes" if low <= 1 else f"at least {low >> 20}M: a colony's processes cannot start in less"
        doc.fail(t, (key,), f"must be {least} (got {value!r})")
    if size >= MAX_SIZE:
        doc.fail(t, (key,), f"must be less than 8E; leave {key} out for no limit (got {value!r})")
    return size


def _network(doc: TomlDoc, raw: dict[str, Any]) -> NetworkSpec:
    t: KeyPath = ("network",)
    doc.check_keys(t, raw, known_keys(NetworkSpec))
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
    t: KeyPath = ("peering",)
    doc.check_keys(t, raw, known_keys(PeeringSpec))
    sources = doc.strings(t, ("from",), raw.get("from", []))
    for i, source in enumerate(sources):
        try:
            check_name(source)
        except StemError as exc:
            doc.fail(t, ("from", i), f"{source!r} is not a colony name: {exc}")
    exclude = doc.strings(t, ("exclude",), raw.get("exclude", []))
    auto_refresh = doc.boolean(t, ("auto_refresh",), raw["auto_refresh"]) if "auto_refresh" in raw else False
    return PeeringSpec(sources=tuple(dict.fromkeys(sources)), exclude=exclude, auto_refresh=auto_refresh)


def _terminal(doc: TomlDoc, raw: dict[str, Any]) -> TerminalSpec:
    _not_applied(doc, "terminal", raw, "Stem opens no extra shell in a colony yet")
    return TerminalSpec()
