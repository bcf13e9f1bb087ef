#!/usr/bin/env python3
"""Idle cost of watching colonies: ChangeWatchers plus their colony.toml watchers on small worktrees, the inotify
watcher on the event loop (core/inotify.py) against the watchfiles one it replaced (kept below as the reference).

Run: `python3 tests/bench/bench_watch.py [--colonies 100] [--seconds 10] [--files 20]`, best as root. No network.

Makes one repository and --colonies worktrees of it (--files files each, a colony.toml at the top). Then, for each
implementation in turn, a forked child process starts one colony's watchers per worktree as the colony runtime
does (the reference: a watchfiles watcher thread for the changed-file list and a watchfiles `awatch` for
colony.toml, two inotify instances; the new one: one FileWatcher that both listen to), lets them settle for a
second, and measures --seconds of idleness: CPU time (user + system, all threads) and context switches (voluntary
and involuntary, all threads: one per wake-up of a thread). Afterwards it writes a file in the first worktree and
times the ChangesUpdated event, to show the watchers still work.

As root, both children run with a throwaway effective uid: inotify instances are counted per user (128 here), the
reference needs two per colony, and exhausting root's would break every other program on the machine that uses
inotify. Their filesystem uid stays root's, so they still read Python's modules.

stdout: a table, then as its last line one JSON object: for `new` and `watchfiles`, `{impl}_watching` (colonies
whose two watchers both started), `{impl}_failed` (the first failure, "" if none), `{impl}_instances` (inotify
instances open), `{impl}_threads`, `{impl}_cpu_percent` (of one core), `{impl}_wakeups_per_s`,
`{impl}_wakeups_per_s_per_colony` and `{impl}_change_ms`; `cpu_ratio` and `wakeup_ratio` (reference over new),
`colonies`, `seconds`, `files`, `uid`, `max_user_instances`, `cpus` and, only if the run failed, `error`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import watchfiles  # noqa: E402
from benchlib import print_table  # noqa: E402

from core.actor import describe  # noqa: E402
from core.changes import ChangeWatcher, _any_not_ignored, _index_file, changed_files  # noqa: E402
from core.errors import StemError  # noqa: E402
from core.events import ChangesUpdated, Event, FileChange, Notice  # noqa: E402
from core.inotify import Changes  # noqa: E402

_MAX_RESTARTS = 3
GIT_ID = ["-c", "user.email=bench@stem.invalid", "-c", "user.name=Stem Bench"]
COLONY_TOML = '[services.web]\ncommand = "exec sleep 1000"\n'


# The reference: the watchfiles-based watchers as core/changes.py and core/runtime.py had them ---------------------


class _StopFlag:
    """The `stop_event` watchfiles polls every `step` ms from inside its watch loop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._pending: Callable[[], None] | None = None

    def set(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def when_watching(self, callback: Callable[[], None]) -> None:
        self._pending = callback

    def is_set(self) -> bool:
        callback, self._pending = self._pending, None
        if callback is not None:
            callback()
        return self._event.is_set()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _resolve(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


class WatchfilesChangeWatcher:
    """The ChangeWatcher before core/inotify.py: a thread per colony in `watchfiles.watch`, which wakes every 50 ms
    to poll its stop flag."""

    def __init__(
        self, colony: str, worktree: Path, base_commit: str, emit: Callable[[Event], None], debounce_ms: int = 300
    ) -> None:
        self.colony = colony
        self.worktree = worktree
        self.base_commit = base_commit
        self.files: tuple[FileChange, ...] = ()
        self._emit = emit
        self._debounce_ms = debounce_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flag: _StopFlag | None = None
        self._done: asyncio.Future[str | None] | None = None
        self._lock = threading.Lock()
        self._published = False
        self._stopped = False

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        root = Path(await asyncio.to_thread(os.path.realpath, self.worktree))
        index = await asyncio.to_thread(_index_file, root)
        ready: asyncio.Future[str | None] = loop.create_future()
        done: asyncio.Future[str | None] = loop.create_future()
        self._done = done
        self._flag = _StopFlag()
        self._flag.when_watching(lambda: _call_soon(loop, _resolve, ready, None))
        thread = threading.Thread(target=self._watch, args=(root, index, loop), daemon=True)
        thread.start()
        await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            raise StemError(f"cannot watch {root} for changes ({self.colony}): {done.result()}")
        await asyncio.to_thread(self._recount, root)

    async def stop(self) -> None:
        self._stopped = True
        if self._flag is None or self._done is None:
            return
        self._flag.set()
        await asyncio.wait([self._done], timeout=1.0)

    def _watch(self, root: Path, index: str, loop: asyncio.AbstractEventLoop) -> None:
        assert self._flag is not None and self._done is not None
        prefix = str(root) + os.sep
        roots = [str(root)]
        if not index.startswith(prefix):
            roots.append(os.path.dirname(index))

        def may_matter(_change: watchfiles.Change, path: str) -> bool:
            if path == index:
                return True
            return path.startswith(prefix) and ".git" not in path[len(prefix) :].split(os.sep)

        error: str | None = None
        failed_starts = 0  # restarts in a row that never got as far as watching

        def watching_again() -> None:
            nonlocal failed_starts
            failed_starts = 0
            self._recount(root)

        try:
            while not self._flag.stopped:
                try:
                    for batch in watchfiles.watch(
                        *roots,
                        watch_filter=may_matter,
                        debounce=self._debounce_ms,
                        stop_event=self._flag,
                        ignore_permission_denied=True,
                    ):
                        paths = sorted(path[len(prefix) :] for _change, path in batch)
                        if any(path == index for _change, path in batch) or _any_not_ignored(root, paths):
                            self._recount(root)
                except RuntimeError:
                    # What watchfiles raises (its WatchfilesRustInternalError, private, is one) for a name that is
                    # not UTF-8, and also when the kernel refuses an instance: restart, up to _MAX_RESTARTS in a row
                    # that never get to watch.
                    failed_starts += 1
                    if failed_starts > _MAX_RESTARTS:
                        raise
                    self._flag.when_watching(watching_again)
        except Exception as exc:
            error = str(exc) if isinstance(exc, (StemError, OSError)) else describe(exc)
        finally:
            _call_soon(loop, _resolve, self._done, error or "stopped")

    def _recount(self, root: Path) -> None:
        with self._lock:
            files = changed_files(root, self.base_commit)
            if self._loop is not None:
                _call_soon(self._loop, self._publish, files)

    def _publish(self, files: tuple[FileChange, ...]) -> None:
        if self._stopped or (self._published and files == self.files):
            return
        self.files = files
        self._published = True
        self._emit(ChangesUpdated(self.colony, files))


async def watchfiles_config_watch(worktree: Path, stop: asyncio.Event, reload: Callable[[], Awaitable[None]]) -> None:
    """ColonyRuntime._watch_config before: an `awatch` of the worktree's top directory of its own."""
    target = worktree / "colony.toml"

    def is_config(_change: watchfiles.Change, path: str) -> bool:
        return Path(path) == target

    async for _ in watchfiles.awatch(worktree, watch_filter=is_config, recursive=False, stop_event=stop, debounce=200):
        await reload()


# One colony's watchers, either way --------------------------------------------------------------------------------


class Colony(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def config_failed(self) -> str: ...


async def _nothing() -> None:
    return None


class ReferenceColony:
    """The two watchfiles watchers of one colony, started in the order ColonyRuntime.start had them."""

    def __init__(self, name: str, worktree: Path, base: str, emit: Callable[[Event], None]) -> None:
        self.worktree = worktree
        self.changes = WatchfilesChangeWatcher(name, worktree, base, emit)
        self._stop = asyncio.Event()
        self._config: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._config = asyncio.create_task(watchfiles_config_watch(self.worktree, self._stop, _nothing))
        await self.changes.start()

    @property
    def config_failed(self) -> str:
        if self._config is not None and self._config.done() and self._config.exception() is not None:
            return str(self._config.exception())
        return ""

    async def stop(self) -> None:
        await self.changes.stop()
        self._stop.set()
        if self._config is not None:
            await asyncio.wait([self._config], timeout=5)


class NewColony:
    """The change watcher and a colony.toml subscriber on its events, as ColonyRuntime.start has them now."""

    def __init__(self, name: str, worktree: Path, base: str, emit: Callable[[Event], None]) -> None:
        self.changes = ChangeWatcher(name, worktree, base, emit)
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.changes.start()
        target = os.path.join(self.changes.root, "colony.toml")

        def on_changes(batch: Changes) -> None:
            if batch.overflow or target in batch.paths:
                pass  # the runtime sets an asyncio.Event its config task waits on

        self._unsubscribe = self.changes.subscribe(on_changes)

    @property
    def config_failed(self) -> str:
        return ""

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.changes.stop()


IMPLEMENTATIONS: dict[str, Callable[[str, Path, str, Callable[[Event], None]], Colony]] = {
    "new": NewColony,
    "watchfiles": ReferenceColony,
}


# Measuring ----------------------------------------------------------------------------------------------------


def inotify_instances() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return count


def usage() -> tuple[float, int]:
    """CPU seconds and context switches of the whole process so far (all threads, ended ones too)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw + ru.ru_nivcsw


async def measure(impl: str, worktrees: list[Path], base: str, seconds: float) -> dict[str, Any]:
    """Start every colony's watchers, settle, measure the idle window, then time one change."""
    events: asyncio.Queue[Event] = asyncio.Queue()
    everyone: list[Colony] = []  # a colony whose change watcher failed may still run its colony.toml watcher
    colonies: list[Colony] = []
    failed = ""
    watching = 0
    for i, worktree in enumerate(worktrees):
        colony = IMPLEMENTATIONS[impl](f"c{i}", worktree, base, events.put_nowait)
        everyone.append(colony)
        try:
            await colony.start()
            colonies.append(colony)
        except Exception as exc:
            failed = failed or f"colony {i + 1}: {exc}"
    await asyncio.sleep(1.0)  # settle: initial counts, threads getting to their loops, failed awatch tasks ending
    for colony in colonies:
        if colony.config_failed:
            failed = failed or f"a colony.toml watcher: {colony.config_failed}"
        else:
            watching += 1
    notices = [e for e in _drain(events) if isinstance(e, Notice)]
    instances = inotify_instances()
    threads = len(os.listdir("/proc/self/task"))

    cpu0, switches0 = usage()
    await asyncio.sleep(seconds)
    cpu1, switches1 = usage()

    change_ms = -1.0
    if colonies:
        probe = worktrees[0] / "probe.txt"
        started = time.monotonic()
        probe.write_text("changed\n")
        async with asyncio.timeout(10):
            while True:
                event = await events.get()
                files = event.files if isinstance(event, ChangesUpdated) and event.colony == "c0" else ()
                if any(f.path == "probe.txt" for f in files):
                    break
        change_ms = (time.monotonic() - started) * 1000
        probe.unlink()
    for colony in everyone:
        await colony.stop()
    return {
        "watching": watching,
        "failed": failed or (notices[0].message if notices else ""),
        "instances": instances,
        "threads": threads,
        "cpu_percent": (cpu1 - cpu0) / seconds * 100,
        "wakeups_per_s": (switches1 - switches0) / seconds,
        "change_ms": change_ms,
    }


def _drain(queue: asyncio.Queue[Event]) -> list[Event]:
    drained = []
    while not queue.empty():
        drained.append(queue.get_nowait())
    return drained


def charge_inotify_to(uid: int) -> None:
    """Make this process's inotify instances count against `uid`'s budget and leave root's alone: the kernel charges
    them to the effective uid. File access goes by the filesystem uid, kept at root's so Python still reads its
    modules under /root; programs it runs (git) are `uid` throughout, the owner of the worktrees."""
    os.setresuid(0, uid, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setfsuid(0)  # allowed: 0 is still the real uid
    if libc.setfsuid(-1) != 0:  # -1 changes nothing and returns the current one
        raise RuntimeError("could not keep root's file access")


def in_child(uid: int | None, home: Path, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`run()` in a forked child, its inotify instances charged to `uid` when given; its result comes back through a
    pipe as JSON."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            if uid is not None:
                charge_inotify_to(uid)
            os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
            result = run()
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
            code = 1
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(json.dumps(result))
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data) if data else {"error": "the child died"}
    return result


def throwaway_uid() -> int:
    """A uid nobody uses: not in the user database, running no process."""
    running = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                running.add(os.stat(f"/proc/{pid}").st_uid)
            except OSError:
                continue
    for uid in range(61_000, 65_000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in running:
                return uid
    raise RuntimeError("no free uid between 61000 and 65000")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_worktrees(top: Path, colonies: int, files: int) -> tuple[list[Path], str]:
    repo = top / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i in range(files):
        folder = repo / f"dir{i % 5}"
        folder.mkdir(exist_ok=True)
        (folder / f"file{i}.txt").write_text(f"file {i}\n" * 5)
    (repo / ".gitignore").write_text("node_modules/\n")
    (repo / "colony.toml").write_text(COLONY_TOML)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    worktrees = []
    for i in range(colonies):
        worktree = top / "worktrees" / f"c{i}"
        git(repo, "worktree", "add", "-q", "-b", f"colony/c{i}", str(worktree), "HEAD")
        worktrees.append(worktree)
    return worktrees, git(repo, "rev-parse", "HEAD").strip()


def chown_tree(top: Path, uid: int) -> None:
    for folder, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, uid)
    os.lchown(top, uid, uid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--colonies", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="the idle window measured")
    parser.add_argument("--files", type=int, default=20, help="files in each worktree")
    args = parser.parse_args()
    limit = Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip()
    result: dict[str, object] = {
        "colonies": args.colonies,
        "seconds": args.seconds,
        "files": args.files,
        "max_user_instances": int(limit),
        "cpus": os.cpu_count(),
    }
    rows: list[tuple[str, ...]] = []
    top = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        worktrees, base = make_worktrees(top, args.colonies, args.files)
        uid = throwaway_uid() if os.geteuid() == 0 else None
        result["uid"] = uid if uid is not None else os.geteuid()
        if uid is not None:
            chown_tree(top, uid)
        for impl in IMPLEMENTATIONS:
            measured = in_child(uid, top, lambda impl=impl: asyncio.run(measure(impl, worktrees, base, args.seconds)))
            if "error" in measured:
                raise RuntimeError(f"{impl}: {measured['error']}")
            for key, value in measured.items():
                result[f"{impl}_{key}"] = round(value, 3) if isinstance(value, float) else value
            per_colony = measured["wakeups_per_s"] / max(measured["watching"], 1)
            result[f"{impl}_wakeups_per_s_per_colony"] = round(per_colony, 3)
            rows.append(
                (
                    impl,
                    f"{measured['watching']}/{args.colonies}",
                    str(measured["instances"]),
                    str(measured["threads"]),
                    f"{measured['cpu_percent']:.2f}",
                    f"{measured['wakeups_per_s']:.1f}",
                    f"{per_colony:.2f}",
                    f"{measured['change_ms']:.0f}",
                )
            )
        new_cpu, old_cpu = float(result["new_cpu_percent"]), float(result["watchfiles_cpu_percent"])  # type: ignore[arg-type]
        new_wakeups = float(result["new_wakeups_per_s"])  # type: ignore[arg-type]
        old_wakeups = float(result["watchfiles_wakeups_per_s"])  # type: ignore[arg-type]
        result["cpu_ratio"] = round(old_cpu / new_cpu, 1) if new_cpu > 0 else None
        result["wakeup_ratio"] = round(old_wakeups / new_wakeups, 1) if new_wakeups > 0 else None
    except Exception as exc:  # the JSON line must still come out, saying what went wrong
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(top, ignore_errors=True)
    header = ("watcher", "watching", "inotify", "threads", "CPU % idle", "wake-ups/s", "per colony", "change ms")
    print_table(
        f"{args.colonies} colonies idle for {args.seconds:g} s (inotify instances per user: {limit})",
        header,
        rows,
    )
    if result.get("watchfiles_failed"):
        print(f"watchfiles: {result['watchfiles_failed']}")
    if result.get("new_failed"):
        print(f"new: {result['new_failed']}")
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
