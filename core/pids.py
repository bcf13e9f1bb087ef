"""A process by its pid, read from /proc: alive or not, since when, and whether it is stopped (SIGSTOP).

Light on purpose (os only): `stem ls` asks it of every colony's host without the process machinery of core.procs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["alive", "proc_stat", "read_pid_file", "starttime", "stopped", "write_pid_file"]


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, session, ...), or None.

    The name is in parentheses and may itself hold spaces and parentheses, so split after the last ')'.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:  # os.read, not open(): a stop scans every process, and a file object costs twice the syscalls' time
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    return stat[stat.rfind(b")") + 2 :].split()


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/pid/stat: with the pid, it identifies a process across pid reuse."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def write_pid_file(path: Path) -> None:
    """`<pid> <starttime>` of this process: who holds a role (a colony's host, the hive's forker)."""
    path.write_text(f"{os.getpid()} {starttime(os.getpid()) or 0}\n")


def read_pid_file(path: Path) -> tuple[int, int] | None:
    """(pid, starttime) a `write_pid_file` recorded, if that very process is still alive (not a reused pid)."""
    try:
        pid_text, start_text = path.read_text().split()[:2]
        pid, start = int(pid_text), int(start_text)
    except (OSError, ValueError):
        return None
    return (pid, start) if alive(pid, start) else None


def alive(pid: int, start: int | None = None) -> bool:
    """True if `pid` runs (zombies do not count) and, if given, started at `start`."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    return start is None or int(fields[19]) == start


def stopped(pid: int, start: int | None = None) -> bool:
    """True if `pid` (started at `start`, if given) is stopped: by SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU (state T),
    or held by a debugger (t). It runs nothing until a SIGCONT (or the debugger) lets it go on."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] in (b"T", b"t") and (start is None or int(fields[19]) == start)


def argv_of(pid: int) -> list[str]:
    """The command line `pid` runs, as /proc gives it; [] if it is gone (or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return raw.decode(errors="replace").rstrip("\0").split("\0") if raw else []


def command_text(pid: int) -> str:
    """`pid`'s command line as a line names it: `stem spawn alpha --repo .` rather than the interpreter and the
    script's path, cut at 80 characters."""
    argv = argv_of(pid)
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and not argv[1].startswith("-"):
        argv = [os.path.basename(argv[1]), *argv[2:]]
    text = " ".join(" ".join(argv).split()) or "a process"  # one line: an argument may hold newlines (python3 -c)
    return text if len(text) <= 80 else text[:79] + "…"
