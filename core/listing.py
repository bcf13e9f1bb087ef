"""Opening a hive, and what `stem ls` shows of it, without the orchestration core.

Every stem command checks the hive it is pointed at the same way (STEM_HOME, STEM_PREFIX, STEM_POOL, config.toml, the
machine-wide claims on the prefix and the pool) before it reads or makes anything: `open_hive` is that, and `Hive`
builds on it. A listing needs nothing more than the registry's rows, whether each colony's host holds its lock and
what the host last wrote, so `stem ls` imports this module and not `core.hive` (netlink, cgroups, the sandbox and
asyncio: most of a short command's start-up).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from core import claims
from core import lifecycle as lc
from core.errors import StemError
from core.host.paths import HostPaths
from core.locations import HiveLayout, stem_home
from core.locks import held
from core.names import check_prefix
from core.registry import ColonyRecord, Registry
from core.settings import DEFAULT_POOL, Settings, load_settings


@dataclass(frozen=True, slots=True)
class OpenHive:
    """A hive's place, name and settings, checked and claimed, with its registry open."""

    layout: HiveLayout
    prefix: str
    settings: Settings
    pool: ipaddress.IPv4Network
    registry: Registry


def pool_from_environment(settings: Settings) -> ipaddress.IPv4Network:
    """STEM_POOL over the config's pool; a value that is not a network is one clear line."""
    text = os.environ.get("STEM_POOL")
    if not text:
        return settings.pool
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise StemError(f"STEM_POOL {text!r} is not an IPv4 network: {exc}") from None


def open_hive(
    home: Path | None = None,
    *,
    prefix: str | None = None,
    pool: ipaddress.IPv4Network | None = None,
    settings: Settings | None = None,
) -> OpenHive:
    """The hive at `home` (default: the environment's), its folders made, its prefix and pool claimed for it on
    this machine before anything else is made, its registry open."""
    layout = HiveLayout(home or stem_home())
    layout.ensure()
    given = prefix or os.environ.get("STEM_PREFIX")
    if given:
        check_prefix(given)
    settings = settings or load_settings()
    pool = pool or settings.pool
    # Neither STEM_POOL nor a pool in config.toml: the hive may take a free one if another hive has the default.
    pool_given = pool != DEFAULT_POOL or bool(os.environ.get("STEM_POOL"))
    prefix, pool = claims.claim(
        given or None,
        layout.home,
        pool,
        pool_given=pool_given,
        preview=claims.given_preview_port(settings.preview_port),
    )
    return OpenHive(layout, prefix, settings, pool, Registry(layout.registry))


@dataclass(frozen=True, slots=True)
class Listed:
    """One colony as `stem ls` shows it."""

    rec: ColonyRecord
    hosted: bool  # a host runs it now
    services: dict[str, str]  # service -> state, as its host last wrote them ({} without a host)
    agent: str  # the agent's activity, likewise ("" without a host)
    interrupted: bool = False  # mid-way (spawning, stopping, ...) with nobody holding its lock: its stem process died
    stopped_host: int | None = None  # the pid of its host if that is stopped (SIGSTOP): what it last wrote is stale

    @property
    def orphaned(self) -> bool:
        """Running, but its host is gone (kill -9): the next stem command that can start one revives it."""
        return self.rec.state == lc.RUNNING and not self.hosted


def listing(layout: HiveLayout, registry: Registry) -> list[Listed]:
    """Every colony, oldest first: its row, whether its host runs, and its host's last states (one query)."""
    services: dict[str, dict[str, str]] = {}
    agents: dict[str, str] = {}
    for colony, kind, key, state in registry.all_runtime():
        if kind == "service":
            services.setdefault(colony, {})[key] = state
        else:
            agents[colony] = state
    out = []
    for rec in registry.colonies():
        interrupted = rec.state in lc.IN_FLIGHT and not held(layout.colony_lock(rec.name))
        paths = HostPaths(layout.colony_dir(rec.name))
        if paths.running():
            found = Listed(
                rec, True, services.get(rec.name, {}), agents.get(rec.name, ""), interrupted, paths.stopped()
            )
            out.append(found)
        else:
            out.append(Listed(rec, False, {}, "", interrupted))
    return out
