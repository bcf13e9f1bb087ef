"""Linux inotify through ctypes, on the asyncio event loop: no thread, no timer, nothing runs while nothing changes.

`Inotify` is one bare kernel instance. `FileWatcher` builds on one of them: directory trees (a watch per directory,
new directories added as they appear, removed ones dropped) and single directories, with debounced sets of changed
paths delivered to subscribers. When the kernel refuses (the per-user inotify instances or watches are used up, the
process is out of file descriptors) it falls back to polling with stat, says why, and delivers the same kind of sets.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import stat
import struct
import threading
from collections.abc import Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("stem.inotify")

# <sys/inotify.h>
IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000

# What changes a file's content, mode or presence. IN_MODIFY alone misses writes through mmap, IN_CLOSE_WRITE alone
# misses a file kept open and appended to; the kernel merges repeats of one event that nobody has read yet.
CONTENT_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
# Plus what happens to a watched directory itself (a root removed or moved away).
TREE_MASK = CONTENT_MASK | IN_DELETE_SELF | IN_MOVE_SELF
# Added to every watch: directories only, never through a symlink, no events for files unlinked while open, and
# OR-ed into a watch that another root of the same instance already holds on the same directory.
_WATCH_FLAGS = IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK | IN_MASK_ADD

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then `len` bytes of NUL-padded name
# Room for many events per read(2); one event needs at most sizeof(struct inotify_event) + NAME_MAX + 1.
_READ_SIZE = 64 * 1024
# Reads per wake-up at most, so an event storm cannot hold the loop: the fd stays readable and we come back.
_READS_PER_WAKE = 16

_libc = ctypes.CDLL(None, use_errno=True)
_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes = [ctypes.c_int]
_inotify_init1.restype = ctypes.c_int
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_add_watch.restype = ctypes.c_int
_inotify_rm_watch = _libc.inotify_rm_watch
_inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_inotify_rm_watch.restype = ctypes.c_int


def _os_error(path: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), path) if path is not None else OSError(code, os.strerror(code))


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One `struct inotify_event`: the watch it came from, what happened, and the name inside the watched directory
    (raw bytes: file names need not be UTF-8; empty for an event on the directory itself)."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def parse_events(data: bytes) -> list[InotifyEvent]:
    """The events in one read(2) of an inotify fd (the kernel returns whole events only)."""
    events = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
        start = offset + _EVENT.size
        name = data[start : start + length].split(b"\0", 1)[0]
        events.append(InotifyEvent(wd, mask, cookie, name))
        offset = start + length
    return events


class Inotify:
    """One inotify instance: a non-blocking, close-on-exec descriptor, its watches and its event queue."""

    def __init__(self) -> None:
        fd = int(_inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise _os_error()
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch `path` for `mask`; the same directory twice gives the same watch descriptor."""
        wd = int(_inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            raise _os_error(path)
        return wd

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; one the kernel already dropped (its directory deleted) is no error."""
        if int(_inotify_rm_watch(self.fd, wd)) < 0 and ctypes.get_errno() != errno.EINVAL:
            raise _os_error()

    def read(self) -> list[InotifyEvent]:
        """The events queued now (maybe none); never blocks."""
        events: list[InotifyEvent] = []
        for _ in range(_READS_PER_WAKE):
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            events.extend(parse_events(data))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _proc_value(*paths: str) -> str:
    """The first readable of some /proc/sys files (per user namespace first, then the global name), or "?"."""
    for path in paths:
        try:
            with open(path) as handle:
                return handle.read().strip()
        except OSError:
            continue
    return "?"


def unavailable_reason(exc: OSError) -> str:
    """Why inotify_init1 failed, in words a person can act on. Blocking (it reads /proc)."""
    if exc.errno == errno.EMFILE:
        # EMFILE means either the per-user instance limit or this process's descriptor limit: tell them apart.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            open_fds = len(os.listdir("/proc/self/fd"))
        except OSError as listing:
            if listing.errno == errno.EMFILE:
                return f"open file limit reached ({soft} per process)"
            open_fds = 0
        if soft != resource.RLIM_INFINITY and open_fds >= soft - 1:  # -1: the listing's own descriptor
            return f"open file limit reached ({soft} per process)"
        limit = _proc_value("/proc/sys/user/max_inotify_instances", "/proc/sys/fs/inotify/max_user_instances")
        return f"inotify instances exhausted ({limit} in use)"
    if exc.errno == errno.ENFILE:
        return "the system's open file limit reached"
    if exc.errno == errno.ENOMEM:
        return "out of kernel memory for inotify"
    return f"inotify unavailable: {exc.strerror or exc}"


def _watches_reason() -> str:
    limit = _proc_value("/proc/sys/user/max_inotify_watches", "/proc/sys/fs/inotify/max_user_watches")
    return f"inotify watches exhausted ({limit} per user)"


@dataclass(frozen=True, slots=True)
class Changes:
    """One debounced batch: the absolute paths that changed (a file, or a directory's entry), or `overflow`: events
    were lost and anything under the watched roots may have changed."""

    paths: frozenset[str]
    overflow: bool = False


SkipDir = Callable[[str], bool]
"""Called with a directory's path relative to its tree's root; True leaves it (and all below it) unwatched. Called
from worker threads, so it may block (run git), and must be thread-safe."""

_Stat = tuple[int, int, int, int]  # mode, inode, size, mtime in ns: what polling compares


@dataclass(slots=True, eq=False)
class _Root:
    """One thing being watched: a tree, or one directory (optionally only some names in it)."""

    path: str
    recursive: bool
    mask: int
    skip_dir: SkipDir | None = None
    names: frozenset[str] | None = None
    snapshot: dict[str, _Stat] = field(default_factory=dict)  # polling only: the last look
    ready: bool = False  # polling only: the first look is taken

    def skips(self, path: str) -> bool:
        return path != self.path and self.skip_dir is not None and self.skip_dir(path[len(self.path) + 1 :])


@dataclass(slots=True)
class _Dir:
    path: str
    root: _Root


class _Exhausted(Exception):
    """The kernel refused a watch (ENOSPC): the whole watcher moves to polling."""


class _Closed(Exception):
    """The watcher was closed while a walk was on its way."""


def _stat_key(info: os.stat_result) -> _Stat:
    if stat.S_ISDIR(info.st_mode):
        # A directory's mtime moves with every entry added or removed; the entry itself is what changed.
        return (info.st_mode, info.st_ino, 0, 0)
    return (info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns)


def _snapshot(root: _Root) -> dict[str, _Stat]:
    """What polling compares: every entry under the root (in its kept directories), or the root's named files."""
    found: dict[str, _Stat] = {}
    try:
        found[root.path] = _stat_key(os.stat(root.path))
    except OSError:
        return found  # gone: everything it had reads as deleted
    if root.names is not None:
        for name in root.names:
            path = os.path.join(root.path, name)
            try:
                found[path] = _stat_key(os.lstat(path))
            except OSError:
                continue
        return found
    stack = [root.path]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found[entry.path] = _stat_key(info)
            if root.recursive and stat.S_ISDIR(info.st_mode) and not root.skips(entry.path):
                stack.append(entry.path)
    return found


def _differences(before: dict[str, _Stat], after: dict[str, _Stat]) -> set[str]:
    changed = {path for path, key in after.items() if before.get(path) != key}
    changed.update(path for path in before if path not in after)
    return changed


class FileWatcher:
    """Directory trees and directories watched through one inotify instance (or by polling), changes delivered in
    debounced batches: after `quiet` seconds without an event, or `max_delay` after the first one at the latest.

    `on_fallback(reason)` is called (on the loop) when the watcher moves to polling; `mode` says which it uses.
    Subscribers run on the event loop and must not block.
    """

    def __init__(
        self,
        *,
        quiet: float = 0.05,
        max_delay: float = 0.3,
        poll_interval: float = 2.0,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.quiet = quiet
        self.max_delay = max(max_delay, quiet)
        self.poll_interval = poll_interval
        self.mode = ""  # "inotify", or "polling: <why>"; empty until the first root is added
        self._on_fallback = on_fallback
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ino: Inotify | None = None
        # Walks add watches from worker threads while the loop reads events: the lock keeps a watch descriptor and
        # its directory in step, so an event never arrives for a descriptor the loop cannot place.
        self._lock = threading.Lock()
        self._dirs: dict[int, list[_Dir]] = {}
        self._roots: list[_Root] = []
        self._subscribers: list[Callable[[Changes], None]] = []
        self._pending: set[str] = set()
        self._overflow = False
        self._first = 0.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    # public -----------------------------------------------------------------------------------------------------

    @property
    def polling(self) -> bool:
        return self.mode.startswith("polling")

    @property
    def watches(self) -> int:
        """Directories watched through inotify now (0 when polling)."""
        with self._lock:
            return len(self._dirs)

    async def watch_tree(self, path: str, skip_dir: SkipDir | None = None) -> None:
        """Watch `path` and every directory below it that `skip_dir` does not skip, now and as they appear. The
        walk runs in a worker thread. Raises OSError if `path` cannot be watched (missing, not a directory)."""
        await self._add_root(_Root(path, True, TREE_MASK, skip_dir=skip_dir))

    async def watch_dir(self, path: str, names: Collection[str] | None = None, mask: int = TREE_MASK) -> None:
        """Watch the entries of one directory (not below it), or only those called `names`. Raises OSError if
        `path` cannot be watched."""
        await self._add_root(_Root(path, False, mask, names=frozenset(names) if names is not None else None))

    def subscribe(self, callback: Callable[[Changes], None]) -> Callable[[], None]:
        """Call `callback` with every batch from now on; returns the function that unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def rescan(self) -> None:
        """Walk the trees again, watching directories that `skip_dir` no longer skips (its answers changed) or whose
        creation was lost. Polling already looks at everything each time."""
        with self._lock:
            watching = self._ino is not None
        if not watching or self._loop is None:
            return
        for root in list(self._roots):
            try:
                await self._loop.run_in_executor(None, self._walk, root, root.path, False)
            except _Exhausted:
                await self._fall_back(_watches_reason())
                return
            except (_Closed, OSError):
                continue  # closed meanwhile, or the root is gone (its own event said so)

    async def close(self) -> None:
        """Stop watching; no batch is delivered after this returns."""
        self._closed = True
        self._subscribers.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_inotify()
        tasks = [t for t in (self._poller, *self._tasks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        # Walks in worker threads cannot be cancelled; they stop at their next watch (_Closed). The tasks can.
        await asyncio.gather(*(t for t in tasks if isinstance(t, asyncio.Task)), return_exceptions=True)

    # adding roots ---------------------------------------------------------------------------------------------

    async def _add_root(self, root: _Root) -> None:
        if self._closed:
            raise RuntimeError("the file watcher is closed")
        loop = self._loop = asyncio.get_running_loop()
        if not self.mode:
            await self._open()
        self._roots.append(root)
        try:
            if self._ino is not None:
                await loop.run_in_executor(None, self._walk, root, root.path, False)
        except _Exhausted:
            await self._fall_back(_watches_reason())
        except _Closed:
            if self._closed:
                return
            # Another walk moved the watcher to polling while this one ran: this root gets polled too.
        except BaseException:
            self._roots.remove(root)
            raise
        if self.polling and not root.ready:
            await self._look_first(root)

    async def _open(self) -> None:
        assert self._loop is not None
        try:
            ino = Inotify()
        except OSError as exc:
            await self._fall_back(await asyncio.to_thread(unavailable_reason, exc))
            return
        self._ino = ino
        self.mode = "inotify"
        self._loop.add_reader(ino.fd, self._on_readable)

    def _add_watch(self, root: _Root, path: str) -> None:
        with self._lock:
            if self._ino is None:
                raise _Closed
            wd = self._ino.add_watch(path, root.mask | _WATCH_FLAGS)
            dirs = self._dirs.setdefault(wd, [])
            for known in dirs:
                if known.root is root:
                    known.path = path  # the same directory met again (a rescan, or moved back in)
                    return
            dirs.append(_Dir(path, root))

    def _walk(self, root: _Root, top: str, report: bool) -> list[str]:
        """Watch `top` and the kept directories below it (in a worker thread); with `report`, return every entry
        found there: they appeared before their directory's watch did, so no event will name them."""
        found: list[str] = []
        stack = [top]
        while stack:
            directory = stack.pop()
            if root.skips(directory):
                continue
            try:
                self._add_watch(root, directory)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise _Exhausted from exc
                if directory == root.path and not report:
                    raise  # the caller asked to watch something that cannot be watched
                continue  # vanished meanwhile, replaced by a file, or not ours to read: nothing to watch
            if not root.recursive and not report:
                break
            try:
                with os.scandir(directory) as entries:
                    listed = list(entries)
            except OSError:
                continue
            for entry in listed:
                if report and (root.names is None or entry.name in root.names):
                    found.append(entry.path)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir and root.recursive:
                    stack.append(entry.path)
        return found

    # events ---------------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        ino = self._ino
        if ino is None:
            return
        try:
            events = ino.read()
        except OSError as exc:  # should not happen; a watcher that says why beats one that spins
            self._spawn(self._fall_back(f"reading inotify failed: {exc}"))
            return
        changed: list[str] = []
        new_dirs: list[tuple[_Root, str]] = []
        overflow = False
        with self._lock:
            for event in events:
                if event.mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                dirs = self._dirs.get(event.wd)
                if not dirs:
                    continue  # a watch dropped a moment ago
                if event.mask & IN_IGNORED:  # the kernel dropped the watch: its directory is gone
                    del self._dirs[event.wd]
                    changed.extend(d.path for d in dirs if d.path == d.root.path)
                    continue
                for watched in dirs:
                    root = watched.root
                    if not event.name:
                        # About the watched directory itself; below a root, its parent reports the same by name.
                        if watched.path == root.path and event.mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                            changed.append(root.path)
                        continue
                    name = os.fsdecode(event.name)
                    if root.names is not None and name not in root.names:
                        continue
                    path = os.path.join(watched.path, name)
                    changed.append(path)
                    if root.recursive and event.mask & IN_ISDIR:
                        # A deleted directory needs nothing: its watch (and those below) ended with IN_IGNORED.
                        if event.mask & IN_MOVED_FROM:
                            self._forget(root, path)
                        if event.mask & (IN_CREATE | IN_MOVED_TO):
                            new_dirs.append((root, path))
        for root, path in new_dirs:
            self._walk_new(root, path)
        if overflow:
            self._spawn(self._recover())
        if changed:
            self._queue(changed)

    def _forget(self, root: _Root, path: str) -> None:
        """Drop the watches of a directory that moved away and of everything below it: they would go on reporting
        under paths that no longer exist (a move within the tree is watched afresh at its new place). Holds the
        lock."""
        assert self._ino is not None
        below = path + os.sep
        for wd, dirs in list(self._dirs.items()):
            kept = [d for d in dirs if not (d.root is root and (d.path == path or d.path.startswith(below)))]
            if len(kept) == len(dirs):
                continue
            if kept:
                self._dirs[wd] = kept
            else:
                del self._dirs[wd]
                try:
                    self._ino.rm_watch(wd)
                except OSError:
                    pass  # the kernel dropped it first

    def _walk_new(self, root: _Root, path: str) -> None:
        """Watch a directory that just appeared, off the loop (the tree below it may be large, `skip_dir` may run
        git), and report what it already holds."""
        assert self._loop is not None
        future = self._loop.run_in_executor(None, self._walk, root, path, True)
        self._tasks.add(future)
        future.add_done_callback(self._walked)

    def _walked(self, future: asyncio.Future[list[str]]) -> None:
        self._tasks.discard(future)
        if self._closed or future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._queue(future.result())
        elif isinstance(exc, _Exhausted):
            self._spawn(self._fall_back(_watches_reason()))
        elif not isinstance(exc, _Closed):
            log.error("watching a new directory failed", exc_info=exc)

    async def _recover(self) -> None:
        """After the kernel's queue overflowed: directories created meanwhile went unseen, so walk again, then say
        that anything may have changed (after the walk, so a consumer's recount is followed by every later event)."""
        await self.rescan()
        self._queue((), overflow=True)

    # delivery -------------------------------------------------------------------------------------------------

    def _queue(self, paths: Iterable[str], overflow: bool = False) -> None:
        if self._closed or self._loop is None:
            return
        self._pending.update(paths)
        self._overflow = self._overflow or overflow
        if not self._pending and not self._overflow:
            return
        now = self._loop.time()
        self._last = now
        if self._timer is None:
            self._first = now
            self._timer = self._loop.call_at(now + self.quiet, self._flush)

    def _flush(self) -> None:
        assert self._loop is not None
        self._timer = None
        due = min(self._last + self.quiet, self._first + self.max_delay)
        if due - self._loop.time() > 0.001:  # events kept coming: wait for quiet, or up to max_delay
            self._timer = self._loop.call_at(due, self._flush)
            return
        batch = Changes(frozenset(self._pending), self._overflow)
        self._pending = set()
        self._overflow = False
        for callback in list(self._subscribers):
            try:
                callback(batch)
            except Exception:
                log.exception("a file-change subscriber failed")

    # polling --------------------------------------------------------------------------------------------------

    def _close_inotify(self) -> None:
        with self._lock:
            ino, self._ino = self._ino, None
            self._dirs.clear()
        if ino is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(ino.fd)
            ino.close()

    async def _fall_back(self, reason: str) -> None:
        """Poll from now on: take a first look at every root, then report anything-may-have-changed, since events
        between the kernel's refusal and that look are lost."""
        if self.polling or self._closed:
            return
        had_inotify = self._ino is not None
        self._close_inotify()
        self.mode = f"polling: {reason}"
        log.warning("watching by polling: %s", reason)
        if self._on_fallback is not None:
            self._on_fallback(reason)
        for root in list(self._roots):
            await self._look_first(root)
        if had_inotify:
            self._queue((), overflow=True)

    async def _look_first(self, root: _Root) -> None:
        root.ready = False
        root.snapshot = await asyncio.to_thread(_snapshot, root)
        root.ready = True
        if self._poller is None and not self._closed:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="file-watcher-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            roots = [root for root in self._roots if root.ready]
            try:
                changed = await asyncio.to_thread(self._look_again, roots)
            except Exception:  # a bug: keep polling, the next look compares against the last good one
                log.exception("polling for file changes failed")
                continue
            self._queue(changed)

    @staticmethod
    def _look_again(roots: list[_Root]) -> set[str]:
        changed: set[str] = set()
        for root in roots:
            now = _snapshot(root)
            changed |= _differences(root.snapshot, now)
            root.snapshot = now
        return changed

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        if self._closed:
            coroutine.close()
            return
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
