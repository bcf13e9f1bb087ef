"""Name resolution for colonies: which resolver a colony can reach, its resolv.conf, and A lookups through it.

A colony has its own network namespace, so a resolver on the host's loopback (systemd-resolved's 127.0.0.53,
a dnsmasq on 127.0.0.1) is out of its reach. In order of preference a colony gets: the servers the user's
config names (`[network] dns`); the host's own non-loopback servers; systemd-resolved's upstream servers; and
when the host only has a loopback resolver, the colony's host address, which the hive's firewall table
DNATs to that loopback resolver (see core/firewall.py).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# systemd-resolved keeps the real upstream servers here when /etc/resolv.conf points at its stub.
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")


@dataclass(frozen=True, slots=True)
class DnsPlan:
    """The servers a colony's resolv.conf lists; `stub` is the host loopback resolver to DNAT to, if any."""

    servers: tuple[str, ...]
    stub: str | None = None
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def servers_for(self, host_ip: str) -> tuple[str, ...]:
        return (host_ip,) if self.stub else self.servers


@dataclass(frozen=True, slots=True)
class _Parsed:
    servers: tuple[str, ...]
    search: tuple[str, ...]
    options: tuple[str, ...]


def _parse(path: Path) -> _Parsed | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options.extend(words[1:])
    return _Parsed(tuple(servers), tuple(search), tuple(options))


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def plan(
    configured: Sequence[str] = (), resolv_conf: Path = HOST_RESOLV_CONF, upstream_conf: Path = RESOLVED_UPSTREAM
) -> DnsPlan:
    """The resolver plan for this host now (the host's resolver can change, so call it at every network up)."""
    host = _parse(resolv_conf) or _Parsed((), (), ())
    if configured:
        return DnsPlan(tuple(configured), None, host.search, host.options)
    reachable = [s for s in host.servers if (a := _ipv4(s)) is not None and not a.is_loopback]
    if reachable:
        return DnsPlan(tuple(reachable), None, host.search, host.options)
    loopback = [s for s in host.servers if (a := _ipv4(s)) is not None and a.is_loopback]
    upstream = _parse(upstream_conf) if loopback else None
    if upstream is not None:
        found = [s for s in upstream.servers if (a := _ipv4(s)) is not None and not a.is_loopback]
        if found:
            return DnsPlan(tuple(found), None, upstream.search or host.search, host.options)
    # No server of the host's is reachable from another namespace; glibc's default with none listed is 127.0.0.1.
    return DnsPlan((), loopback[0] if loopback else "127.0.0.1", host.search, host.options)


def resolv_conf_text(dns: DnsPlan, host_ip: str, colony: str) -> str:
    lines = [f"# Written by stem for colony {colony}: the resolvers this colony can reach."]
    lines += [f"nameserver {server}" for server in dns.servers_for(host_ip)[:3]]
    if dns.search:
        lines.append("search " + " ".join(dns.search))
    options = [o for o in dns.options if o != "trust-ad"]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def resolve_a(name: str, servers: Sequence[str], timeout: float = 2.0) -> tuple[str, ...]:
    """IPv4 addresses of `name` asked of `servers` (as the colony would ask them); () if none answers.

    The host's own getaddrinfo would use the host's resolver and /etc/hosts, which the colony does not see.
    """
    for server in servers:
        try:
            return _query(name, server, timeout)
        except (OSError, ValueError):
            continue
    return ()


def _query(name: str, server: str, timeout: float, port: int = 53) -> tuple[str, ...]:
    ident = secrets.randbits(16)
    question = b"".join(bytes([len(label)]) + label.encode("idna") for label in name.rstrip(".").split("."))
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))
        sock.send(packet)
        while True:
            reply = sock.recv(4096)
            if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == ident:
                break
    flags, qdcount, ancount = struct.unpack(">HHH", reply[2:8])
    if flags & 0x000F:  # NXDOMAIN, SERVFAIL, ...: an answer, just not an address
        return ()
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(reply, offset) + 4
    found: list[str] = []
    for _ in range(ancount):
        offset = _skip_name(reply, offset)
        rtype, _rclass, _ttl, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return tuple(found)


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        if offset >= len(data):
            raise ValueError("truncated DNS reply")
        length = data[offset]
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += length + 1
