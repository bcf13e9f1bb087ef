"""Machine-wide claims: which hive (STEM_HOME) a prefix belongs to, and the address pool it uses.

Everything Stem makes in the kernel is named by the hive's prefix, and its addresses come from its pool. Two hives
on one machine (two users, or STEM_HOME set in one shell and not in another) that share a prefix would take each
other's namespaces and interfaces for their own (a rollback or a gc of one destroyed the other's), and two hives
whose pools overlap would hand out the same address twice. So every hive claims its prefix and pool under
/run/stem/hives before it does anything; a second hive asking for a taken prefix, or an overlapping pool, is refused
with one line that says which hive has it. A claim whose hive is gone (its STEM_HOME deleted) is taken over.

A hive that names neither (no STEM_PREFIX, no STEM_POOL, no pool in its config) gets them by itself: the defaults
(`stem`, 10.200.0.0/16) when no other hive has them, else the first free ones (`stemb`, `stemc`, ...; 10.201.0.0/16,
...), remembered in its home (`claim.json`) so that it keeps them: a second STEM_HOME just works. Prefixes that
could name the same interface (`stem` + slot 23 and `stem2` + slot 3 are both `stem23`) count as the same. Its
preview port, unless set, is chosen and kept the same way: 8900, else the first that no other hive's claim has.
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
from core.locations import write_atomically
from core.locks import file_lock
from core.names import DEFAULT_PREFIX, PREFIX_RE, veth_pattern

CLAIMS_DIR = Path("/run/stem/hives")
REMEMBERED = "claim.json"  # in the hive's home: the prefix and pool it chose for itself
_SPARE_PREFIXES = [DEFAULT_PREFIX, *(DEFAULT_PREFIX + chr(c) for c in range(ord("b"), ord("z") + 1))]
_SPARE_POOLS = [ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(200, 255)]
DEFAULT_PREVIEW_PORT = 8900  # the hive's preview proxy, on 127.0.0.1 only
_SPARE_PREVIEW_PORTS = range(DEFAULT_PREVIEW_PORT, DEFAULT_PREVIEW_PORT + 100)


class HiveConflict(StemError):
    """Another hive on this machine has this prefix, or a pool that overlaps this one."""


class BadPool(StemError):
    """A pool no colony should get addresses from."""


@dataclass(frozen=True, slots=True)
class Claim:
    prefix: str
    home: str
    pool: ipaddress.IPv4Network
    preview: int = DEFAULT_PREVIEW_PORT  # the preview port it chose (a claim written before ports were: the default)


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
    found = _route_over(pool, prefixes)
    if found is not None:
        iface, net = found
        raise BadPool(
            f"the pool {pool} overlaps the host's network {net} on {iface}: choose another (STEM_POOL, or "
            "[hive] pool in config.toml)"
        )


def _route_over(pool: ipaddress.IPv4Network, prefixes: list[str]) -> tuple[str, ipaddress.IPv4Network] | None:
    """A host route into `pool` that is not one of these hives' colony veths."""
    hives = [veth_pattern(p) for p in prefixes]
    for iface, net in host_routes():
        if net.prefixlen > 0 and net.overlaps(pool) and not any(h.match(iface) for h in hives):
            return iface, net
    return None


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


def clash(a: str, b: str) -> bool:
    """Whether two prefixes could name the same kernel object: equal, or one is the other plus digits (the
    interface of slot 23 of `stem` and of slot 3 of `stem2` are both `stem23`)."""
    short, long = sorted((a, b), key=len)
    return a == b or (long.startswith(short) and long[len(short) :].isdigit())


def claim(
    prefix: str | None,
    home: Path,
    pool: ipaddress.IPv4Network,
    *,
    pool_given: bool = True,
    preview: int | None = None,
) -> tuple[str, ipaddress.IPv4Network]:
    """Record that this hive's prefix and pool are its own and return them, or refuse naming the hive that has
    them, or the host network the pool would shadow. A `prefix` of None (none given) and a pool not given are
    the ones this hive chose before, else the defaults or the first free ones (see the module's docstring).
    `preview` is the preview port set for it (STEM_PREVIEW_PORT, `[preview] port`): the claim records the port in
    use, so that another hive does not choose it and this one does not keep a port it does not use from others."""
    remembered = _remembered(home)
    default_pool = pool
    home_text = str(home.resolve())
    try:
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    except OSError:  # no /run/stem to record in (not root): nothing this process could make in the kernel anyway
        prefix = prefix or remembered.get("prefix") or DEFAULT_PREFIX
        pool = pool if pool_given else ipaddress.IPv4Network(remembered.get("pool") or pool)
        check_pool(pool)
        _check_routes(pool, [prefix])
        return prefix, pool
    with file_lock(CLAIMS_DIR / ".lock"):
        claims = _read_all()
        others = [c for c in claims.values() if c.home != home_text and _exists(c.home)]
        chose: dict[str, str] = {}
        if prefix is None:
            prefix = remembered.get("prefix") or _free_prefix(others)
            chose["prefix"] = prefix
        if not pool_given:
            if "pool" in remembered:
                pool = ipaddress.IPv4Network(remembered["pool"])
            else:
                pool = _free_pool(default_pool, others, claims)
            chose["pool"] = str(pool)
        check_pool(pool)
        for other in others:
            if other.prefix == prefix:
                raise HiveConflict(
                    f"prefix {prefix!r} belongs to the hive at {other.home}: give this hive (STEM_HOME {home_text}) "
                    "its own STEM_PREFIX and STEM_POOL"
                )
            if clash(other.prefix, prefix):
                raise HiveConflict(
                    f"prefix {prefix!r} would name interfaces as the hive at {other.home} (prefix {other.prefix!r}) "
                    "does: choose a STEM_PREFIX that is not the other plus digits"
                )
            if other.pool.overlaps(pool) and _has_colonies(other.home):
                raise HiveConflict(
                    f"pool {pool} overlaps {other.pool} of the hive at {other.home} (prefix {other.prefix!r}): "
                    "give this hive another STEM_POOL"
                )
        _check_routes(pool, [prefix, *claims])
        if preview is None:
            if "preview" not in remembered:
                chose["preview"] = str(_free_preview_port(others))
            preview = int(chose.get("preview") or remembered["preview"])
        if chose and any(remembered.get(key) != value for key, value in chose.items()):
            _write(home / REMEMBERED, {**remembered, **chose})
        if claims.get(prefix) != Claim(prefix, home_text, pool, preview):
            record = {"prefix": prefix, "home": home_text, "pool": str(pool), "preview": str(preview)}
            _write(CLAIMS_DIR / prefix, record)
    return prefix, pool


def check_alone(home: Path, pool: ipaddress.IPv4Network) -> None:
    """Refuse (HiveConflict) if another hive whose pool overlaps `pool` has colonies now. A spawn asks it once its
    colony's row is there: `claim` lets a pool overlap that of a hive with no colonies, and two such hives whose
    first spawns came at the same moment both passed it and gave their colonies the same address (two routes to
    10.200.0.0/30; then each hive refused every command, its destroy too, for the other's colonies). Under the
    claims' lock, the later of two such spawns sees the earlier one's row."""
    home_text = str(home.resolve())
    try:
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no /run/stem (not root): no claims to check against
    with file_lock(CLAIMS_DIR / ".lock"):
        for other in _read_all().values():
            if other.home == home_text or not other.pool.overlaps(pool) or not _exists(other.home):
                continue
            if _has_colonies(other.home):
                raise HiveConflict(
                    f"pool {pool} overlaps {other.pool} of the hive at {other.home} (prefix {other.prefix!r}), which "
                    "has colonies now: give this hive another STEM_POOL"
                )


def preview_port(home: Path) -> int:
    """The preview port the hive at `home` chose for itself (the default if it has not claimed one yet)."""
    return int(_remembered(home).get("preview", DEFAULT_PREVIEW_PORT))


def given_preview_port(configured: int | None) -> int | None:
    """The preview port STEM_PREVIEW_PORT sets, else `configured` (`[preview] port` of config.toml); None if neither
    does (the claim chooses one). 0 turns preview off."""
    text = os.environ.get("STEM_PREVIEW_PORT", "").strip()
    if not text:
        return configured
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise StemError(f"STEM_PREVIEW_PORT {text!r} is not a port (0 to 65535; 0 turns preview off)")
    return port


def _free_preview_port(others: list[Claim]) -> int:
    taken = {other.preview for other in others}
    for port in _SPARE_PREVIEW_PORTS:
        if port not in taken:
            return port
    raise HiveConflict(f"{len(others)} other hives on this machine have every spare preview port: set [preview] port")


def _free_prefix(others: list[Claim]) -> str:
    for prefix in _SPARE_PREFIXES:
        if not any(clash(other.prefix, prefix) for other in others):
            return prefix
    raise HiveConflict(f"{len(others)} other hives on this machine have every spare prefix: set STEM_PREFIX")


def _free_pool(default: ipaddress.IPv4Network, others: list[Claim], claims: dict[str, Claim]) -> ipaddress.IPv4Network:
    """The default, or the first spare /16 no other hive's pool and no host network overlaps."""
    for pool in [default, *_SPARE_POOLS]:
        taken = any(other.pool.overlaps(pool) for other in others)
        if not taken and _route_over(pool, list(claims)) is None:
            return pool
    raise HiveConflict("every spare pool overlaps another hive's or the host's network: set STEM_POOL")


def _remembered(home: Path) -> dict[str, str]:
    """What this hive chose for itself before ({} if nothing)."""
    try:
        raw = json.loads((home / REMEMBERED).read_text())
    except (OSError, ValueError):
        return {}
    found = {key: str(raw[key]) for key in ("prefix", "pool", "preview") if isinstance(raw, dict) and key in raw}
    # Edited by hand into something else: chosen again.
    if "prefix" in found and not PREFIX_RE.match(found["prefix"]):
        del found["prefix"]
    if "pool" in found:
        try:
            ipaddress.IPv4Network(found["pool"])
        except ValueError:
            del found["pool"]
    if "preview" in found and not (found["preview"].isdigit() and 0 < int(found["preview"]) < 65536):
        del found["preview"]
    return found


def _write(path: Path, record: dict[str, str]) -> None:
    write_atomically(path, json.dumps(record) + "\n")  # on a full disk, nothing is left behind


def release(prefix: str) -> None:
    """Forget the claim of `prefix` (a test's cleanup, a hive removed for good)."""
    with contextlib.suppress(FileNotFoundError):
        (CLAIMS_DIR / prefix).unlink()


def forget_gone() -> None:
    """Forget the claims of hives whose home is gone (a STEM_HOME removed, a benchmark's temporary hive): they hold
    nothing, yet their files stayed under /run/stem until a reboot. A home that is there without its registry yet
    (a hive being made) keeps its claim."""
    with contextlib.suppress(OSError), file_lock(CLAIMS_DIR / ".lock"):  # OSError: no /run/stem (not root)
        for name, found in _read_all().items():
            if not Path(found.home).exists():
                with contextlib.suppress(FileNotFoundError):
                    (CLAIMS_DIR / name).unlink()


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
            preview = int(raw.get("preview", DEFAULT_PREVIEW_PORT))
            claims[path.name] = Claim(str(raw["prefix"]), str(raw["home"]), ipaddress.IPv4Network(raw["pool"]), preview)
    return claims


def claimed(home: Path) -> bool:
    """Whether a claim names the hive at `home`: one whose home was removed leaves its claim (and what its colonies
    made in the kernel) until a gc."""
    home_text = str(home.resolve())
    try:
        return any(c.home == home_text for c in _read_all().values())
    except OSError:  # no /run/stem/hives: nothing was claimed
        return False


def _exists(home: str) -> bool:
    return (Path(home) / "hive.db").exists()


def _has_colonies(home: str) -> bool:
    """Whether that hive has colonies now (a hive with none holds no addresses); unreadable counts as yes."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{Path(home) / 'hive.db'}?mode=ro", uri=True, timeout=5)) as db:
            return bool(db.execute("SELECT COUNT(*) FROM colonies").fetchone()[0])
    except sqlite3.Error:
        return True
