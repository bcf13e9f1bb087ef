"""Capabilities Stem needs, and making Stem a child subreaper so it reaps what its children leave behind."""

from __future__ import annotations

import ctypes
import os

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


def reap_orphans(known: set[int] | None = None) -> list[int]:
    """Reap zombie children that nobody else waits for (adopted orphans), leaving `known` pids alone.

    A blanket waitpid(-1) would steal exit codes from subprocess/asyncio watchers, so reap by pid only.
    """
    me = os.getpid()
    reaped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if known and pid in known:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] == b"Z" and int(fields[1]) == me:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
            except ChildProcessError:
                pass
    return reaped
