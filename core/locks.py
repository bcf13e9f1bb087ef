"""Cross-process locks (flock) so several stem processes serialise per colony and per repository."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` for the block; yields False if non-blocking and already held.

    flock is released by the kernel when the process dies, so a kill -9 never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    with file_lock(path, blocking=False) as got:
        return not got


def repo_lock_path(lock_dir: Path, git_common_dir: Path) -> Path:
    digest = hashlib.sha1(str(git_common_dir).encode()).hexdigest()[:16]
    return lock_dir / f"repo-{digest}.lock"


class FileLock:
    """An flock held across awaits: acquire in a worker thread (it may block), release from anywhere."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
