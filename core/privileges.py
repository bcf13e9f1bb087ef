"""Capabilities Stem needs, and making Stem a child subreaper so it reaps what its children leave behind."""

from __future__ import annotations

import ctypes

from core.errors import NeedsPrivilege

CAP_SYS_ADMIN = 21
CAP_NET_ADMIN = 12
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_netns_privileges(action: str) -> None:
    """Creating network namespaces needs CAP_SYS_ADMIN (unshare, mount) and CAP_NET_ADMIN (links, routes)."""
    caps = effective_caps()
    missing = [
        name
        for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
        if not caps & (1 << bit)
    ]
    if missing:
        raise NeedsPrivilege(
            f"{action} needs {' and '.join(missing)} to manage network namespaces: run it as root (sudo stem ...)"
        )


def become_subreaper() -> None:
    """Orphaned grandchildren are re-parented to us instead of PID 1, so we can reap them promptly."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
