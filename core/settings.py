"""The user's own settings (config.toml) and the agent presets: which agent command a colony runs, and how.

The file lives at `$STEM_CONFIG`, else `$XDG_CONFIG_HOME/stem/config.toml`, else `~/.config/stem/config.toml`.
Shipped presets come from `core/presets.toml`; the user's `[agents.NAME]` tables override their fields or add
new presets. In an agent command, `{task}` becomes the task text as one argument (or vanishes when there is no
task) and `{shell}` becomes the user's shell.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.config import NOT_IN_FILE, Limits, in_file, known_keys, parse_limits
from core.dns import HOST_RESOLV_CONF
from core.egress import Egress
from core.errors import ConfigError
from core.locations import write_atomically
from core.toml_doc import KeyPath, TomlDoc, TomlLocator, format_key, toml_string

__all__ = [
    "AgentPreset",
    "ResolvedAgent",
    "Settings",
    "config_path",
    "load_settings",
    "resolve_agent",
    "save_setting",
    "shipped_presets",
    "user_shell",
]

DEFAULT_POOL = ipaddress.IPv4Network("10.200.0.0/16")
DEFAULT_THEME = "stem-dark"
DEFAULT_AGENT = "shell"
# A colony needs a /30 at least (network, two hosts, broadcast); anything narrower cannot hold one.
MAX_POOL_PREFIX = 29

PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
TASK = "{task}"
SHELL = "{shell}"


@dataclass(frozen=True, slots=True)
class AgentPreset:
    """A named way to start an agent CLI, how to resume it, and how to tell it is waiting for approval."""

    name: str = field(metadata=NOT_IN_FILE)  # the table's name
    command: str
    resume: str | None = None
    attention: tuple[str, ...] = ()
    task_command: str | None = None  # used instead of `command` when there is a task


@functools.cache
def shipped_presets() -> Mapping[str, AgentPreset]:
    """The presets in core/presets.toml."""
    source = resources.files("core").joinpath("presets.toml")
    doc = TomlDoc(source.read_text(encoding="utf-8"), Path(str(source)))
    doc.check_keys((), doc.data, ("agents",))
    return _agents(doc, doc.data.get("agents", {}), MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Settings:
    """The user's settings over the defaults. `path` is the file they belong to, which may not exist."""

    path: Path = field(metadata=NOT_IN_FILE)
    pool: ipaddress.IPv4Network = field(default=DEFAULT_POOL, metadata=in_file("hive", "pool"))
    theme: str = field(default=DEFAULT_THEME, metadata=in_file("hive", "theme"))
    default_agent: str = field(default=DEFAULT_AGENT, metadata=in_file("hive", "default_agent"))
    # paths never copied into a peer snapshot, on top of core/peering.py's DEFAULT_EXCLUDE
    peer_exclude: tuple[str, ...] = field(default=(), metadata=in_file("hive", "peer_exclude"))
    # colony processes confined (core/sandbox.py): off only to debug
    isolation: bool = field(default=True, metadata=in_file("hive", "isolation"))
    # the uid colony processes run as when Stem does not run through sudo (None: Stem's dedicated uid)
    colony_uid: int | None = field(default=None, metadata=in_file("hive", "colony_uid"))
    # files of the user's home an agent needs (its login), bound read-only into each colony's home
    agent_files: tuple[str, ...] = field(default=(), metadata=in_file("hive", "agent_files"))
    # for colonies whose colony.toml does not say
    egress: Egress = field(default_factory=Egress, metadata=in_file("network", "egress"))
    # resolvers for colonies instead of the host's
    dns: tuple[str, ...] = field(default=(), metadata=in_file("network", "dns"))
    # where the host's resolvers are read from
    resolv_conf: Path = field(default=HOST_RESOLV_CONF, metadata=in_file("network", "resolv_conf"))
    agents: Mapping[str, AgentPreset] = field(default_factory=lambda: shipped_presets())
    keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # where each of `keys` is written, "file:line", for the UI's errors about a remap (stem.keys.keymap)
    key_lines: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # every colony's services through the hive's preview proxy; 0 turns it off
    # None: not set, so the port the hive's claim chose (core.claims: 8900 for the first hive on the machine)
    preview_port: int | None = field(default=None, metadata=in_file("preview", "port"))
    limits: Limits = field(default_factory=Limits)  # for colonies whose colony.toml does not say


_TABLES = known_keys(Settings)
_HIVE_KEYS = known_keys(Settings, ("hive",))
_NETWORK_KEYS = known_keys(Settings, ("network",))
_PREVIEW_KEYS = known_keys(Settings, ("preview",))
_AGENT_KEYS = known_keys(AgentPreset)


@dataclass(frozen=True, slots=True)
class ResolvedAgent:
    """An agent spec turned into what to exec."""

    name: str  # the preset's name, or the program's name for a raw command
    argv: tuple[str, ...]
    preset: AgentPreset | None
    resume_argv: tuple[str, ...] | None
    available: bool  # argv[0] was found (on PATH, or as a path)
    task_passed: bool  # the task is in argv; when False and there is a task, type it into the session


def config_path() -> Path:
    """Where the user's config.toml is (whether or not it exists)."""
    override = os.environ.get("STEM_CONFIG")
    if override:
        return Path(override).expanduser()
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "stem" / "config.toml"


def load_settings(path: Path | None = None) -> Settings:
    """Read the user's config.toml (default `config_path()`); a missing file gives the defaults."""
    path = path if path is not None else config_path()
    if not path.exists():
        return Settings(path=path)
    return _settings(TomlDoc.read(path))


def save_setting(section: str, key: str, value: str, path: Path | None = None) -> None:
    """Set `[section] key = "value"` in the config file, keeping every other byte of it as it was.

    The result is validated before it replaces the file: a bad value raises ConfigError and changes nothing.
    """
    path = path if path is not None else config_path()
    # Reading parses too, so a file that is already broken is refused rather than edited.
    before = TomlDoc.read(path) if path.exists() else TomlDoc("", path)
    text = before.text
    table: KeyPath = tuple(section.split("."))
    if not all(table) or not key:
        raise ConfigError(f"cannot save setting [{section}] {key!r}: empty section or key name")

    locator = TomlLocator(text)
    written = toml_string(value)
    # `a.b = ...` in the file and a key named "a.b" mean the same binding id in [keys]; edit the one present.
    candidates: list[KeyPath] = [(*table, *key.split("."))] if "." in key else []
    candidates.append((*table, key))
    target = next((p for p in candidates if p in locator.values), None)
    if target is not None:
        spot = locator.values[target]
        new_text = text[: spot.start] + written + text[spot.end :]
    elif table in locator.headers:
        target = (*table, key)
        end = locator.headers[table].body_end
        new_text = f"{text[:end]}\n{format_key((key,))} = {written}{text[end:]}"
    elif _lookup(before.data, table) is not None:
        raise ConfigError(
            f"{before.shown}:{locator.line_of(table)}: [{format_key(table)}] is written inline or as dotted "
            f"keys; add {format_key((key,))} = {written} to it by hand"
        )
    else:
        target = (*table, key)
        # One blank line between the old text and the new table.
        if not text or text.endswith("\n\n"):
            sep = ""
        elif text.endswith("\n"):
            sep = "\n"
        else:
            sep = "\n\n"
        new_text = f"{text}{sep}[{format_key(table)}]\n{format_key((key,))} = {written}\n"

    after = TomlDoc(new_text, path)
    _settings(after)
    # The edit must have changed exactly that one value; anything else means the locator misread the file.
    if _without(after.data, target) != _without(before.data, target) or _lookup(after.data, target) != value:
        raise ConfigError(f"{before.shown}: could not update [{section}] {key} safely; edit it by hand")
    _write_atomically(path, new_text)


def resolve_agent(spec: str | None, settings: Settings, task: str | None) -> ResolvedAgent:
    """Turn a preset name or a raw command line (None: the default agent) into argv for a task."""
    spec = (spec if spec is not None else settings.default_agent).strip()
    if not spec:
        raise ConfigError("agent: empty command")
    task = task if task and task.strip() else None
    preset = settings.agents.get(spec)
    if preset is None:
        template = spec
    elif task is not None and preset.task_command:
        template = preset.task_command
    else:
        template = preset.command
    argv = _expand(template, task, what=f"agent {spec!r}")
    if not argv:
        raise ConfigError(f"agent {spec!r}: the command is empty without a task")
    resume = _expand(preset.resume, None, what=f"agent {spec!r} resume") if preset and preset.resume else None
    program = argv[0]
    return ResolvedAgent(
        name=preset.name if preset else os.path.basename(program),
        argv=argv,
        preset=preset,
        resume_argv=resume or None,
        available=shutil.which(program) is not None,
        task_passed=task is not None and TASK in template,
    )


def user_shell() -> str:
    """$SHELL if it names an executable, else /bin/bash, else /bin/sh."""
    for candidate in (os.environ.get("SHELL", ""), "/bin/bash"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return "/bin/sh"


# ----------------------------------------------------------------------------------------------------


def _expand(template: str, task: str | None, what: str) -> tuple[str, ...]:
    # Split first, then substitute: the task stays one argument whatever quotes or spaces it holds, the same
    # as shlex.quote-ing it into the line, and it also works inside quotes in the template.
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise ConfigError(f"{what}: cannot split {template!r} into words: {e}") from None
    out: list[str] = []
    for word in words:
        if word == TASK and task is None:
            continue
        out.append(word.replace(SHELL, user_shell()).replace(TASK, task or ""))
    return tuple(out)


def _settings(doc: TomlDoc) -> Settings:
    data = doc.data
    for name, value in data.items():
        if name not in _TABLES:
            known = f"(known tables: {', '.join(_TABLES)})"
            if isinstance(value, dict):
                doc.fail((name,), (), f"unknown table {known}")
            doc.fail((), (name,), f"unknown key at top level {known}")
        doc.table((), (name,), value)

    hive = data.get("hive", {})
    t: KeyPath = ("hive",)
    doc.check_keys(t, hive, _HIVE_KEYS)
    pool = DEFAULT_POOL
    if "pool" in hive:
        given = doc.string(t, ("pool",), hive["pool"])
        try:
            pool = ipaddress.IPv4Network(given.strip())
        except ValueError as e:
            doc.fail(t, ("pool",), f"must be an IPv4 network like '10.200.0.0/16' (got '{given}': {e})")
        if pool.prefixlen > MAX_POOL_PREFIX:
            doc.fail(t, ("pool",), f"must be /{MAX_POOL_PREFIX} or wider to hold a colony (got '{given}')")
    theme = doc.string(t, ("theme",), hive["theme"]).strip() if "theme" in hive else DEFAULT_THEME
    default_agent = DEFAULT_AGENT
    if "default_agent" in hive:
        default_agent = doc.string(t, ("default_agent",), hive["default_agent"]).strip()
    peer_exclude = doc.strings(t, ("peer_exclude",), hive.get("peer_exclude", []))
    isolation = doc.boolean(t, ("isolation",), hive["isolation"]) if "isolation" in hive else True
    colony_uid = None
    if "colony_uid" in hive:
        colony_uid = doc.integer(t, ("colony_uid",), hive["colony_uid"], 1, 2**32 - 2)
    agent_files = doc.strings(t, ("agent_files",), hive.get("agent_files", []))

    egress, dns, resolv_conf = _network(doc, data.get("network", {}))
    preview = data.get("preview", {})
    doc.check_keys(("preview",), preview, _PREVIEW_KEYS)
    preview_port = None
    if "port" in preview:
        preview_port = doc.integer(("preview",), ("port",), preview["port"], 0, 65535)
    key_lines: dict[str, str] = {}
    return Settings(
        path=doc.path,
        pool=pool,
        theme=theme,
        default_agent=default_agent,
        peer_exclude=peer_exclude,
        isolation=isolation,
        colony_uid=colony_uid,
        agent_files=agent_files,
        egress=egress,
        dns=dns,
        resolv_conf=resolv_conf,
        preview_port=preview_port,
        agents=_agents(doc, data.get("agents", {}), shipped_presets()),
        keys=_keys(doc, data.get("keys", {}), key_lines),
        limits=parse_limits(doc, data.get("limits", {})),
        key_lines=MappingProxyType(key_lines),
    )


def _network(doc: TomlDoc, raw: dict[str, Any]) -> tuple[Egress, tuple[str, ...], Path]:
    t: KeyPath = ("network",)
    doc.check_keys(t, raw, _NETWORK_KEYS)
    egress = doc.egress(t, ("egress",), raw["egress"]) if "egress" in raw else Egress()
    dns: list[str] = []
    for i, item in enumerate(doc.strings(t, ("dns",), raw.get("dns", []))):
        try:
            address = ipaddress.IPv4Address(item.strip())
        except ValueError:
            doc.fail(t, ("dns", i), f"must be an IPv4 address (got '{item}')")
        if address.is_loopback:
            doc.fail(t, ("dns", i), f"{item} is loopback: a colony's loopback is its own; give a reachable server")
        dns.append(str(address))
    resolv_conf = HOST_RESOLV_CONF
    if "resolv_conf" in raw:
        resolv_conf = Path(doc.string(t, ("resolv_conf",), raw["resolv_conf"])).expanduser()
    return egress, tuple(dns), resolv_conf


def _agents(doc: TomlDoc, raw: dict[str, Any], base: Mapping[str, AgentPreset]) -> Mapping[str, AgentPreset]:
    agents = dict(base)
    for name, value in raw.items():
        if not PRESET_NAME.fullmatch(name):
            doc.fail(
                ("agents",),
                (name,),
                "invalid preset name: use a-z, 0-9, '_' and '-', start with a letter or digit, at most 32 characters",
            )
        t: KeyPath = ("agents", name)
        table = doc.table(("agents",), (name,), value)
        doc.check_keys(t, table, _AGENT_KEYS)
        fields: dict[str, Any] = {}
        for key in ("command", "task_command", "resume"):
            if key in table:
                command = doc.string(t, (key,), table[key]).strip()
                try:
                    words = shlex.split(command)
                except ValueError as e:
                    doc.fail(t, (key,), f"cannot split into words: {e}")
                if not [w for w in words if w != TASK]:
                    doc.fail(t, (key,), "names no program")
                if key == "task_command" and TASK not in command:
                    doc.fail(t, (key,), f"must contain {TASK} (where the task text goes)")
                fields[key] = command
        if "attention" in table:
            fields["attention"] = doc.strings(t, ("attention",), table["attention"])
        if name in agents:
            agents[name] = dataclasses.replace(agents[name], **fields)
        elif "command" not in fields:
            doc.fail(t, ("command",), 'missing (how to start this agent, e.g. "my-agent {task}")')
        else:
            agents[name] = AgentPreset(name=name, **fields)
    return MappingProxyType(agents)


def _keys(doc: TomlDoc, raw: dict[str, Any], lines: dict[str, str]) -> Mapping[str, str]:
    """Key remaps by binding id. `app.quit = "q"` and `"app.quit" = "q"` both mean binding id `app.quit`. `lines`
    gets where each is written ("file:line")."""
    keys: dict[str, str] = {}

    def walk(prefix: tuple[str, ...], table: dict[str, Any]) -> None:
        for name, value in table.items():
            path = (*prefix, name)
            if isinstance(value, dict):
                walk(path, value)
                continue
            binding = ".".join(path)
            if binding in keys:
                doc.fail(("keys",), path, f"binding '{binding}' is set twice")
            keys[binding] = doc.string(("keys",), path, value).strip()
            lines[binding] = f"{doc.shown}:{doc.locator.line_of(('keys', *path))}"

    walk((), raw)
    return MappingProxyType(keys)


def _lookup(data: Mapping[str, Any], path: KeyPath) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _without(data: dict[str, Any], path: KeyPath) -> dict[str, Any]:
    """`data` minus the key at `path`, and minus empty tables (saving may have created the key's table)."""
    out = copy.deepcopy(data)
    parent = _lookup(out, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)

    def prune(table: dict[str, Any]) -> dict[str, Any]:
        pruned = {k: prune(v) if isinstance(v, dict) else v for k, v in table.items()}
        return {k: v for k, v in pruned.items() if v != {}}

    return prune(out)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)
