"""Colony names and the kernel object names derived from them.

Kernel interface names are at most 15 bytes, so veth names come from the colony's address slot, never from
its name. Everything carries the hive's prefix so `gc` can tell Stem's objects from anyone else's.
"""

from __future__ import annotations

import re

from core.errors import BadName, StemError

MAX_NAME = 32
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
DEFAULT_PREFIX = "stem"


def check_name(name: str) -> str:
    """Return `name` if it is a valid colony name, else raise BadName saying why."""
    if not name:
        raise BadName("colony name is empty: use lowercase letters, digits and '-', like 'alpha' or 'fix-login'")
    if len(name) > MAX_NAME:
        raise BadName(f"colony name {name!r} is {len(name)} characters long: the limit is {MAX_NAME}")
    if not _NAME_RE.match(name):
        raise BadName(
            f"colony name {name!r} is not a DNS label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_prefix(prefix: str) -> str:
    """The hive prefix becomes part of interface names, so it must stay short and plain."""
    if not PREFIX_RE.match(prefix):
        raise StemError(f"STEM_PREFIX {prefix!r} must be 1-6 lowercase letters or digits, starting with a letter")
    return prefix


def netns_name(prefix: str, name: str) -> str:
    return f"{prefix}-{name}"


def veth_name(prefix: str, slot: int) -> str:
    """Host end of the colony's veth pair: prefix + slot, e.g. stem17 (the colony end is eth0 inside)."""
    ifname = f"{prefix}{slot}"
    if len(ifname) > 15:
        raise StemError(f"interface name {ifname!r} would exceed 15 bytes: use a shorter STEM_PREFIX")
    return ifname


def branch_name(name: str) -> str:
    return f"colony/{name}"


def veth_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}(\d+)$")


def netns_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-([a-z0-9-]+)$")
