"""The hive's nftables table: NAT out of the host, each colony's egress policy, DNS and proxies from loopback.

One table per hive, `ip <prefix>`, rebuilt whole from the registry in one atomic `nft -f` transaction whenever
a colony's network comes up or goes, its policy changes, or gc runs; deleted with the hive's last colony. IP
forwarding is machine-wide, so its holders are recorded under /run/stem: the first holder records the earlier
value, the last one restores it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.egress import ALLOW, NAT, NONE, EgressInForce
from core.errors import StemError
from core.locks import file_lock

RUN_DIR = Path("/run/stem")
FORWARD_DIR = RUN_DIR / "ip_forward"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
_ORIGINAL = "original"


@dataclass(frozen=True, slots=True)
class ColonyRules:
    """What the table needs to know of one colony whose network is up."""

    veth: str
    ip: str
    host_ip: str
    egress: EgressInForce
    name: str = ""  # the colony's name, which other colonies' `peers` use


@dataclass(frozen=True, slots=True)
class TablePlan:
    prefix: str
    pool: ipaddress.IPv4Network
    colonies: tuple[ColonyRules, ...]
    dns_servers: tuple[str, ...]  # what colonies' resolv.conf lists (allowed through a restricted egress)
    dns_stub: str | None  # a host loopback resolver reached through each colony's host address


class FirewallError(StemError):
    """nft is missing or refused the table."""


# Not reached under egress "nat": the link-local range, where clouds serve instance metadata and credentials.
LINK_LOCAL = "169.254.0.0/16"


def table_name(prefix: str) -> str:
    return prefix


def nft_available() -> bool:
    return shutil.which("nft") is not None


def _nft(args: Sequence[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft")
    if nft is None:
        raise FirewallError(
            "nft is not installed (Debian/Ubuntu: apt-get install nftables): colonies cannot reach the outside"
        )
    return subprocess.run([nft, *args], input=script, capture_output=True, text=True, check=False)


def _set(items: Sequence[str | int]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def peer_pairs(colonies: Sequence[ColonyRules]) -> list[tuple[str, str]]:
    """(ip, ip) of the colonies that may connect to each other: both list the other in `[network] peers`."""
    by_name = {c.name: c for c in colonies if c.name}
    pairs = []
    for a in colonies:
        for peer in a.egress.peers:
            b = by_name.get(peer)
            if b is not None and b is not a and a.name in b.egress.peers:
                pairs.append((a.ip, b.ip))
    return sorted(pairs)


def render(plan: TablePlan) -> str:
    """The whole table as an nft script that replaces any earlier version of it atomically.

    Forward: a colony reaches the outside per its egress policy; another colony only when both list each other
    as peers (everything else between colonies is dropped, and whatever else would be forwarded to one, another
    hive's colonies among it). Input: a colony reaches the host only on its
    `host_ports`, the resolver it is given and its proxies; everything else it sends the host is dropped."""
    t = table_name(plan.prefix)
    forward: list[str] = ["ct state established,related accept"]
    forward += [f"ip saddr {a} ip daddr {b} accept" for a, b in peer_pairs(plan.colonies)]
    forward.append(f"ip saddr {plan.pool} ip daddr {plan.pool} counter drop")
    # Nor does anything else the host forwards: another hive's colonies (whose own table lets them out to "the
    # outside"), a machine that routes to the pool through this one. The host itself reaches them (not forwarded),
    # and what answers a colony's own connection is `established` above.
    forward.append(f"ip daddr {plan.pool} counter drop")
    inputs: list[str] = []
    chains: list[str] = []
    prerouting: list[str] = []
    for n, c in enumerate(plan.colonies):
        e = c.egress
        iif = f'iifname "{c.veth}"'
        # "none" reaches no resolver either: one that recurses would carry out whatever a colony puts in its names.
        resolves = e.policy.mode != NONE
        if plan.dns_stub and resolves:
            prerouting.append(
                f"{iif} ip daddr {c.host_ip} meta l4proto {{ tcp, udp }} th dport 53 dnat to {plan.dns_stub}"
            )
        for port in e.forwards:
            prerouting.append(f"{iif} ip daddr {c.host_ip} tcp dport {port} dnat to 127.0.0.1:{port}")
        host = [f"chain host{n} {{", "  ct state established,related accept"]
        if plan.dns_stub and resolves:
            host.append("  meta l4proto { tcp, udp } th dport 53 accept")  # DNAT'ed to the loopback resolver
        if plan.dns_servers and resolves:
            host.append(f"  ip daddr {_set(plan.dns_servers)} meta l4proto {{ tcp, udp }} th dport 53 accept")
        if e.forwards:
            host.append(f"  tcp dport {_set(e.forwards)} accept")
        if e.host_ports:
            host.append(f"  meta l4proto {{ tcp, udp }} th dport {_set(e.host_ports)} accept")
        # Not the egress list: one naming a range that holds a host address (10.0.0.0/8 holds the pool, so the
        # colony's gateway) opened every port of the host. The host is reached on `host_ports` only.
        host += ["  counter drop", "}"]
        chains += host
        inputs.append(f"{iif} jump host{n}")
        if e.policy.mode == NAT:
            # Everything but the link-local range: a cloud machine's metadata service (169.254.169.254) hands its
            # instance's credentials to whoever asks. An allow list that names it reaches it.
            forward.append(f"{iif} ip daddr {LINK_LOCAL} counter drop")
            continue
        out = [f"chain egress{n} {{"]
        if e.policy.mode == ALLOW and e.addresses:
            out.append(f"  ip daddr {_set(e.addresses)} accept")
        if e.policy.mode == ALLOW and plan.dns_servers:
            out.append(f"  ip daddr {_set(plan.dns_servers)} meta l4proto {{ tcp, udp }} th dport 53 accept")
        out += ["  counter drop", "}"]
        chains += out
        forward.append(f"{iif} jump egress{n}")

    lines = [
        f"table ip {t}",
        f"delete table ip {t}",
        f"table ip {t} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        *(f"    {r}" for r in forward),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        *(f"    {r}" for r in inputs),
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *(f"    {r}" for r in prerouting),
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {plan.pool} ip daddr != {plan.pool} masquerade",
        "  }",
        *(f"  {r}" for r in chains),
        "}",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Machine-wide: IP forwarding and the tables are shared by every hive and stem process."""
    with file_lock(RUN_DIR / "firewall.lock"):
        yield


def apply(plan: TablePlan) -> list[str]:
    """Make the kernel match `plan` (no colonies: no table, forwarding released). Returns warnings to show."""
    with machine_lock():
        if not plan.colonies:
            remove(plan.prefix)
            return []
        result = _nft(["-f", "-"], render(plan))
        if result.returncode != 0:
            raise FirewallError(f"nft refused the table {table_name(plan.prefix)}: {_first_line(result.stderr)}")
        for c in plan.colonies:
            loopback_for(c, plan.dns_stub)
        _hold_forwarding(plan.prefix)
        return forward_blockers(plan.prefix, plan.pool)


def remove(prefix: str) -> bool:
    """Delete the hive's table and release its hold on forwarding. True if a table was there."""
    removed = False
    if nft_available():
        result = _nft(["delete", "table", "ip", table_name(prefix)])
        removed = result.returncode == 0
    _release_forwarding(prefix)
    return removed


def table_exists(prefix: str) -> bool:
    return nft_available() and _nft(["list", "table", "ip", table_name(prefix)]).returncode == 0


def holds_forwarding(prefix: str) -> bool:
    return (FORWARD_DIR / prefix).exists()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"


def loopback_for(colony: ColonyRules, dns_stub: str | None) -> None:
    """Let the prerouting DNAT send the colony's packets to a loopback address (a stub resolver, a local proxy) if
    its rules do: a setting of its veth, so made again by whoever makes the veth after the table."""
    if dns_stub or colony.egress.forwards:
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv4/conf/{colony.veth}/route_localnet").write_text("1\n")


def _hold_forwarding(holder: str) -> None:
    FORWARD_DIR.mkdir(parents=True, exist_ok=True)
    original = FORWARD_DIR / _ORIGINAL
    if not original.exists():
        original.write_text(IP_FORWARD.read_text().strip() + "\n")
    (FORWARD_DIR / holder).touch()
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1\n")


def _release_forwarding(holder: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (FORWARD_DIR / holder).unlink()
    if not FORWARD_DIR.exists():
        return
    if any(p.name != _ORIGINAL for p in FORWARD_DIR.iterdir()):
        return  # another hive still needs forwarding
    original = FORWARD_DIR / _ORIGINAL
    with contextlib.suppress(FileNotFoundError):
        value = original.read_text().strip()
        if value in ("0", "1") and IP_FORWARD.read_text().strip() != value:
            IP_FORWARD.write_text(value + "\n")
        original.unlink()


def forward_blockers(prefix: str, pool: ipaddress.IPv4Network) -> list[str]:
    """One line per base chain of another table on the forward hook that drops by default."""
    result = _nft(["-j", "list", "chains"])
    if result.returncode != 0:
        return []
    try:
        items = json.loads(result.stdout).get("nftables", [])
    except ValueError:
        return []
    found = []
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        if not chain or chain.get("hook") != "forward" or chain.get("policy") != "drop":
            continue
        if chain.get("family") == "ip" and chain.get("table") == table_name(prefix):
            continue
        where = f"{chain.get('family')} {chain.get('table')} {chain.get('name')}"
        found.append(
            f"the host firewall drops forwarded traffic (nft chain {where} has policy drop): colonies cannot "
            f"reach the outside until it accepts traffic from and to {pool}"
        )
    return found
