"""Only one long-lived core (the UI or `stem serve`) may own a hive's services and agents at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from core.errors import CoreBusy


class Ownership:
    """An flock on STEM_HOME/core.lock, held for the life of the owning process; the kernel drops it on death."""

    def __init__(self, home: Path, what: str) -> None:
        self.path = home / "core.lock"
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CoreBusy(
                f"this hive ({self.path.parent}) is already run by {holder}: "
                "use that one, or stop it first (short commands like stem ls work beside it)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.what} (pid {os.getpid()})".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
