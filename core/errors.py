"""Errors a user can cause. The CLI prints one line and exits 2; the UI shows a notification."""

from __future__ import annotations

import errno
import os
import sys


class StemError(Exception):
    """An error with a message a person can act on."""

    exit_code = 2


class BadName(StemError):
    """A colony name that is not a short DNS label."""


class NameTaken(StemError):
    """A colony of that name already exists in this hive."""


class NoSuchColony(StemError):
    """No colony of that name in this hive."""

    @classmethod
    def named(cls, name: str | None) -> NoSuchColony:
        return cls(f"no colony named {name!r} in this hive (see `stem ls`)")


class NotARepository(StemError):
    """A path that is not inside a git repository."""


class BadRef(StemError):
    """A git ref that does not resolve to a commit."""


class BranchExists(StemError):
    """The branch a colony would be made on is there already (not Stem's to touch)."""


class ConfigError(StemError):
    """A malformed or mistyped config file (colony.toml, config.toml). The message names file, line and key."""


class PoolExhausted(StemError):
    """Every address of the colony pool is in use."""


class NeedsPrivilege(StemError):
    """The caller lacks a capability Stem needs (CAP_NET_ADMIN, CAP_SYS_ADMIN)."""


class WrongState(StemError):
    """The colony is not in a state that allows the operation."""


class StepFailed(StemError):
    """A lifecycle step failed; the message names the step and the cause."""


def refused_by_disk(exc: BaseException) -> bool:
    """Whether `exc` is the disk refusing a write (full, over quota, read-only; SQLite's own words for those): the
    machine's trouble, said in one line, never a bug of Stem's."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    if isinstance(exc, sqlite_error()):
        text = str(exc)
        return "disk is full" in text or "disk I/O error" in text or "readonly" in text
    return False


class PastFullDisk:
    """Steps of an undo that go on when the disk refuses one (a full registry that cannot record what a step did):
    each `with` block whose failure is the disk's (`disk_trouble`) is left and remembered, any other failure raised
    at once; `raise_first` raises the first the disk refused once every step had its turn."""

    def __init__(self) -> None:
        self.first: Exception | None = None

    def __enter__(self) -> PastFullDisk:
        return self

    def __exit__(self, _kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        if not isinstance(exc, Exception) or disk_trouble(exc) is None:
            return False
        self.first = self.first or exc
        return True

    def raise_first(self) -> None:
        if self.first is not None:
            raise self.first


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """What the disk under `path` has free for this process (the blocks root's reserve holds back excluded), or None
    if it cannot be asked (the path is gone)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def sqlite_error() -> type[Exception]:
    """sqlite3.Error if something imported sqlite3 (only the registry's users do: the warm client does not), else
    OSError (which stands for it harmlessly where sqlite3 was never used)."""
    module = sys.modules.get("sqlite3")
    return module.Error if module is not None else OSError


def disk_trouble(exc: BaseException) -> str | None:
    """One line for what the disk refused (see `refused_by_disk`), or None for anything else."""
    if not refused_by_disk(exc):
        return None
    if isinstance(exc, OSError):
        # Pointing STEM_HOME elsewhere helps only what is written in it, not a repository's files on another disk.
        from core.home import home_text

        hive = os.path.join(home_text(), "")
        # A write to a descriptor names no file: said as the hint says it, a file of STEM_HOME, named.
        where = f" writing {exc.filename}" if exc.filename else f" (STEM_HOME is {home_text()})"
        elsewhere = not exc.filename or os.path.abspath(os.fsdecode(exc.filename)).startswith(hive)
        hint = " (or point STEM_HOME elsewhere)" if elsewhere else " there"
        return f"{os.strerror(exc.errno or 0)}{where}: free some space{hint} and try again"
    home = os.environ.get("STEM_HOME", "STEM_HOME")
    return f"the hive's registry in {home} cannot be written ({exc}): free some space and try again"


def failure_line(exc: BaseException) -> str:
    """One line for why something failed, as a user reads it: a StemError's own words, the disk's trouble (see
    `disk_trouble`) rather than SQLite's or the OS's raw error, and for anything else (a bug) its type too."""
    if isinstance(exc, StemError):
        return str(exc) or type(exc).__name__
    return disk_trouble(exc) or f"{type(exc).__name__}: {exc}"
