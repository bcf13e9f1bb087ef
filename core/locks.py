"""Cross-process locks (flock) so several stem processes serialise per colony and per repository."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` for the block; yields False if non-blocking and already held.

    flock is released by the kernel when the process dies, so a kill -9 never leaves a stale lock.
    """
    try:
        fd = _locked(path, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def _locked(path: Path, how: int) -> int:
    """An fd of `path` holding the flock. Lock files are removed once unused (`remove_unused`): a lock taken on a
    file that was unlinked meanwhile is no lock, so it is taken again on the file the path names now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, how)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def held(path: Path) -> bool:
    """Whether some process holds `path`'s flock now (a lock file that is not there is held by nobody)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_unused(path: Path) -> bool:
    """Remove the lock file `path` if nobody holds it (taken, then unlinked while held); True if removed."""
    try:
        fd = _locked(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, FileNotFoundError):
        return False
    try:
        path.unlink()
        return True
    finally:
        os.close(fd)


def hold(path: Path) -> int | None:
    """An fd holding `path`'s flock for as long as it stays open (a server's lock for its whole life, the kernel's
    to drop when it dies); None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_locked(path: Path) -> bool:
    with file_lock(path, blocking=False) as got:
        return not got


def repo_lock_path(lock_dir: Path, git_common_dir: Path) -> Path:
    digest = hashlib.sha1(str(git_common_dir).encode()).hexdigest()[:16]
    return lock_dir / f"repo-{digest}.lock"


def holder(path: Path, byte: int | None = None) -> int | None:
    """The pid of the process holding `path`'s flock, as /proc/locks says; None if nobody does (or it cannot tell).
    With `byte`: of the process holding a POSIX write lock on that byte of it (SQLite's locks). A line of a process
    waiting for a lock ("->") names no holder."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    kind, start = ("FLOCK", None) if byte is None else ("POSIX", str(byte))
    for line in text.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 22042 fe:00:2179257 0 EOF"
        if (
            len(fields) >= 7
            and fields[1] == kind
            and fields[5] == device
            and fields[4].isdigit()
            and (start is None or (fields[3] == "WRITE" and fields[6] == start))
        ):
            return int(fields[4])
    return None


class FileLock:
    """An flock held across awaits: acquire in a worker thread (it may block), release from anywhere."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self._fd = _locked(self.path, fcntl.LOCK_EX)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        try:
            self._fd = _locked(self.path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def checkpoint(step: str) -> None:
    """Test hook: `STEM_FAULT_KILL_AT=<step>` SIGKILLs this process at that step, to prove that what a process killed
    there leaves behind (under the locks it held) is finished or rolled back by the next one (gc, the next merge)."""
    if os.environ.get("STEM_FAULT_KILL_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
