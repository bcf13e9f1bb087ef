"""Machine-wide claims: which hive (STEM_HOME) a prefix belongs to, and the address pool it uses.

Everything Stem makes in the kernel is named by the hive's prefix, and its addresses come from its pool. Two hives
on one machine (two users, or STEM_HOME set in one shell and not in another) that share a prefix would take each
other's namespaces and interfaces for their own (a rollback or a gc of one destroyed the other's), and two hives
whose pools overlap would hand out the same address twice. So every hive claims its prefix and pool under
/run/stem/hives before it does anything; a second hive asking for a taken prefix, or an overlapping pool, is refused
with one line that says which hive has it. A claim whose hive is gone (its STEM_HOME deleted) is taken over.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from core.errors import StemError
from core.locks import file_lock
from core.names import veth_pattern

CLAIMS_DIR = Path("/run/stem/hives")


class HiveConflict(StemError):
    """Another hive on this machine has this prefix, or a pool that overlaps this one."""


class BadPool(StemError):
    """A pool no colony should get addresses from."""


@dataclass(frozen=True, slots=True)
class Claim:
    prefix: str
    home: str
    pool: ipaddress.IPv4Network


def check_pool(pool: ipaddress.IPv4Network, source: str = "the pool") -> None:
    """A private range: colonies get every address in it."""
    why = None
    if pool.prefixlen < 8:
        why = "is wider than a /8"
    elif pool.is_loopback or pool.is_multicast or pool.is_link_local or pool.is_unspecified or pool.is_reserved:
        why = "is not a range for hosts (loopback, multicast, link-local or reserved)"
    elif not (pool.is_private or pool.subnet_of(ipaddress.IPv4Network("100.64.0.0/10"))):
        why = "is not a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10)"
    if why:
        raise BadPool(f"{source} {pool} {why}: choose another (STEM_POOL, or [hive] pool in config.toml)")


def _check_routes(pool: ipaddress.IPv4Network, prefixes: list[str]) -> None:
    """Not the host's own networks (its LAN, a docker bridge): the colonies' veths of the hives are not those."""
    hives = [veth_pattern(p) for p in prefixes]
    for iface, net in host_routes():
        if net.prefixlen > 0 and net.overlaps(pool) and not any(h.match(iface) for h in hives):
            raise BadPool(
                f"the pool {pool} overlaps the host's network {net} on {iface}: choose another (STEM_POOL, or "
                "[hive] pool in config.toml)"
            )


def host_routes() -> list[tuple[str, ipaddress.IPv4Network]]:
    """(interface, destination) of the host's IPv4 routes (the main table, as /proc/net/route lists it)."""
    routes = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        with contextlib.suppress(ValueError):
            dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
            routes.append((fields[0], ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
    return routes


def claim(prefix: str, home: Path, pool: ipaddress.IPv4Network) -> None:
    """Record that `prefix` and `pool` are this hive's, or refuse naming the hive that has them, or the host
    network the pool would shadow."""
    check_pool(pool)
    home_text = str(home.resolve())
    try:
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    except OSError:
        _check_routes(pool, [prefix])
        return  # no /run/stem to record in (not root): nothing this process could make in the kernel anyway
    with file_lock(CLAIMS_DIR / ".lock"):
        claims = _read_all()
        held = claims.pop(prefix, None)
        if held is not None and held.home != home_text and _exists(held.home):
            raise HiveConflict(
                f"prefix {prefix!r} belongs to the hive at {held.home}: give this hive (STEM_HOME {home_text}) "
                "its own STEM_PREFIX and STEM_POOL"
            )
        for other in claims.values():
            overlaps = other.home != home_text and other.pool.overlaps(pool)
            if overlaps and _exists(other.home) and _has_colonies(other.home):
                raise HiveConflict(
                    f"pool {pool} overlaps {other.pool} of the hive at {other.home} (prefix {other.prefix!r}): "
                    "give this hive another STEM_POOL"
                )
        _check_routes(pool, [prefix, *claims])
        if held == Claim(prefix, home_text, pool):
            return
        record = {"prefix": prefix, "home": home_text, "pool": str(pool)}
        path = CLAIMS_DIR / prefix
        partial = path.with_suffix(f".{os.getpid()}")
        partial.write_text(json.dumps(record) + "\n")
        partial.replace(path)


def release(prefix: str) -> None:
    """Forget the claim of `prefix` (a test's cleanup, a hive removed for good)."""
    with contextlib.suppress(FileNotFoundError):
        (CLAIMS_DIR / prefix).unlink()


def held() -> list[Claim]:
    """Every hive's claim on this machine (none where /run/stem cannot be read)."""
    try:
        return list(_read_all().values())
    except OSError:
        return []


def _read_all() -> dict[str, Claim]:
    claims = {}
    for path in CLAIMS_DIR.iterdir():
        if path.name.startswith(".") or "." in path.name:
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            raw = json.loads(path.read_text())
            claims[path.name] = Claim(str(raw["prefix"]), str(raw["home"]), ipaddress.IPv4Network(raw["pool"]))
    return claims


def _exists(home: str) -> bool:
    return (Path(home) / "hive.db").exists()


def _has_colonies(home: str) -> bool:
    """Whether that hive has colonies now (a hive with none holds no addresses); unreadable counts as yes."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{Path(home) / 'hive.db'}?mode=ro", uri=True, timeout=5)) as db:
            return bool(db.execute("SELECT COUNT(*) FROM colonies").fetchone()[0])
    except sqlite3.Error:
        return True
