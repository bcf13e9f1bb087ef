"""A colony's egress policy: where its traffic may go beyond the host.

`nat` (the default) forwards and masquerades everything; `none` lets nothing leave (only the host ports the
colony is allowed); an allow list names CIDRs and host names, the names resolved when the policy is applied.
The policy in force is stored on the colony's registry row, with the addresses its names resolved to.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

NAT = "nat"
NONE = "none"
ALLOW = "allow"

_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?")


class EgressError(ValueError):
    """A value that is not an egress policy; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Egress:
    """What a colony may reach beyond the host. `allow` holds normalised CIDRs and lower-case host names."""

    mode: str = NAT
    allow: tuple[str, ...] = ()

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(entry for entry in self.allow if _is_network(entry))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry for entry in self.allow if not _is_network(entry))

    def describe(self) -> str:
        if self.mode == ALLOW:
            return "only " + ", ".join(self.allow) if self.allow else "only the host ports allowed"
        return "nat (everything, through the host)" if self.mode == NAT else "none"


def _is_network(entry: str) -> bool:
    return entry[:1].isdigit() and "/" in entry


def parse_egress(value: object) -> Egress:
    """`"nat"`, `"none"` or a list of CIDRs / IPv4 addresses / host names; raises EgressError otherwise."""
    if isinstance(value, str):
        if value in (NAT, NONE):
            return Egress(value)
        raise EgressError(f"must be 'nat', 'none' or a list of addresses and host names (got '{value}')")
    if not isinstance(value, list):
        raise EgressError(f"must be 'nat', 'none' or a list of addresses and host names (got {type(value).__name__})")
    allowed: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise EgressError(f"list entries must be addresses or host names (got {item!r})")
        entry = _entry(item.strip())
        if entry not in allowed:
            allowed.append(entry)
    return Egress(ALLOW, tuple(allowed))


def _entry(text: str) -> str:
    if ":" in text:
        raise EgressError(f"'{text}': colonies have IPv4 only; give an IPv4 address, a CIDR or a host name")
    if text[:1].isdigit() and _looks_numeric(text):
        try:
            net = ipaddress.IPv4Network(text, strict=False)
        except ValueError as exc:
            raise EgressError(f"'{text}' is not an IPv4 address or CIDR: {exc}") from None
        if net.prefixlen == 0:
            raise EgressError(f"'{text}' is everything: use egress = 'nat' instead")
        return str(net)
    name = text.lower().rstrip(".")
    if not _HOSTNAME.fullmatch(name):
        raise EgressError(f"'{text}' is neither an IPv4 address, a CIDR nor a host name")
    return name


def _looks_numeric(text: str) -> bool:
    return all(part.isdigit() for part in text.split("/", 1)[0].split("."))


@dataclass(frozen=True, slots=True)
class EgressInForce:
    """A colony's policy as applied: its addresses (names resolved), loopback ports forwarded from the host."""

    policy: Egress = field(default_factory=Egress)
    addresses: tuple[str, ...] = ()  # the allow list's CIDRs plus what its names resolved to
    unresolved: tuple[str, ...] = ()  # names that resolved to nothing (reported, and allow nothing)
    host_ports: tuple[int, ...] = ()  # ports on the host the colony may reach when its egress is restricted
    forwards: tuple[int, ...] = ()  # host loopback TCP ports reachable at the colony's host address (proxies)
    peers: tuple[str, ...] = ()  # colonies it may connect to, if they list it too

    def to_json(self) -> str:
        return json.dumps(
            {
                "mode": self.policy.mode,
                "allow": list(self.policy.allow),
                "addresses": list(self.addresses),
                "unresolved": list(self.unresolved),
                "host_ports": list(self.host_ports),
                "forwards": list(self.forwards),
                "peers": list(self.peers),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> EgressInForce:
        """The stored form; an empty or unreadable value is the default (nat), as before egress was stored."""
        try:
            raw = json.loads(text) if text else {}
            return cls(
                Egress(str(raw.get("mode", NAT)), tuple(raw.get("allow", ()))),
                tuple(raw.get("addresses", ())),
                tuple(raw.get("unresolved", ())),
                tuple(int(p) for p in raw.get("host_ports", ())),
                tuple(int(p) for p in raw.get("forwards", ())),
                tuple(str(p) for p in raw.get("peers", ())),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()

    def describe(self) -> str:
        text = self.policy.describe()
        if self.policy.names and self.addresses:
            text += f" ({', '.join(self.addresses)})"
        if self.unresolved:
            text += f"; unresolved: {', '.join(self.unresolved)}"
        text += f"; host ports {', '.join(map(str, self.host_ports))}" if self.host_ports else "; no host ports"
        if self.peers:
            text += f"; peers {', '.join(self.peers)}"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.policy.mode,
            "allow": list(self.policy.allow),
            "addresses": list(self.addresses),
            "unresolved": list(self.unresolved),
            "host_ports": list(self.host_ports),
            "peers": list(self.peers),
        }


PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY", "NO_PROXY")
_PROXY_NAMES = (*PROXY_VARS, *(v.lower() for v in PROXY_VARS))


def _loopback_port(url: str) -> int | None:
    """The port of a proxy URL whose host is the host's loopback (unreachable as such from a colony)."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    host = (parsed.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    if not loopback:
        return None
    try:
        return parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return None


def proxy_forwards(environ: Mapping[str, str]) -> tuple[int, ...]:
    """Loopback ports of the caller's proxies, for the firewall to forward from each colony's host address."""
    ports = {
        p for name in _PROXY_NAMES if "NO_PROXY" not in name.upper() and (p := _loopback_port(environ.get(name, "")))
    }
    return tuple(sorted(ports))


def proxy_env(environ: Mapping[str, str], host_ip: str) -> dict[str, str]:
    """The caller's proxy variables for a colony: passed on, a loopback proxy host replaced by `host_ip`."""
    out: dict[str, str] = {}
    for name in _PROXY_NAMES:
        value = environ.get(name)
        if value is None:
            continue
        if name.upper() != "NO_PROXY" and _loopback_port(value) is not None:
            parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
            netloc = parsed.netloc.rsplit("@", 1)
            hostport = netloc[-1].replace(parsed.hostname or "", host_ip, 1).replace("[", "").replace("]", "")
            netloc[-1] = hostport
            value = urllib.parse.urlunsplit(parsed._replace(netloc="@".join(netloc)))
        out[name] = value
    return out
