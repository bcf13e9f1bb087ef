"""core.inotify on real directories and the real kernel: trees, new and moved directories, skipped directories (the
kernel's own list of watches), overflow, polling when the kernel says no, idleness, and a colony's one instance."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from pathlib import Path

import pytest
from helpers import git, make_repo, until
from watch_support import Batches, idle_wakeups, inotify_fds, run_child, watched_inodes

from core.changes import ChangeWatcher
from core.events import ChangesUpdated, Event, Notice
from core.inotify import (
    IN_CREATE,
    IN_IGNORED,
    IN_ISDIR,
    FileWatcher,
    Inotify,
    InotifyEvent,
)


def read_events(ino: Inotify) -> list[InotifyEvent]:
    ready, _, _ = select.select([ino.fd], [], [], 5)
    assert ready, "no inotify event within 5 s"
    return ino.read()


def test_the_bare_instance_reports_names_as_bytes_and_a_removed_watch_ends(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        wd = ino.add_watch(str(tmp_path), IN_CREATE)
        os.close(os.open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY))
        (tmp_path / "sub").mkdir()
        events = read_events(ino)
        assert [(e.wd, e.mask, e.name) for e in events] == [
            (wd, IN_CREATE, b"caf\xe9.txt"),
            (wd, IN_CREATE | IN_ISDIR, b"sub"),
        ]
        assert ino.add_watch(str(tmp_path), IN_CREATE) == wd  # the same directory, the same watch
        ino.rm_watch(wd)
        assert [(e.wd, e.mask) for e in read_events(ino)] == [(wd, IN_IGNORED)]
        assert ino.read() == []  # non-blocking: nothing queued is an empty list
        with pytest.raises(FileNotFoundError):
            ino.add_watch(str(tmp_path / "missing"), IN_CREATE)
    finally:
        ino.close()


def make_tree(root: Path) -> None:
    for folder in ("src/a/b/c", "docs", "node_modules/pkg/lib", ".venv/lib/site"):
        (root / folder).mkdir(parents=True)
        (root / folder / "file.txt").write_text("x\n")


def skip_heavy(path: str) -> bool:
    return os.path.basename(path) in {"node_modules", ".venv", "target"}


def test_changes_in_nested_new_and_moved_directories_are_seen(tmp_path: Path) -> None:
    make_tree(tmp_path)
    root = str(tmp_path)

    async def scenario() -> None:
        watcher = FileWatcher(quiet=0.05)
        batches = Batches()
        await watcher.watch_tree(root, skip_dir=skip_heavy)
        watcher.subscribe(batches)
        try:
            assert watcher.mode == "inotify"
            (tmp_path / "src/a/b/c/file.txt").write_text("changed\n")
            await batches.until(lambda b: f"{root}/src/a/b/c/file.txt" in b.paths, "a change four levels down")

            # A whole new tree at once: files made before their directory's watch are reported by the walk.
            (tmp_path / "new/x/y").mkdir(parents=True)
            (tmp_path / "new/x/y/early.txt").write_text("early\n")
            await batches.until(lambda b: f"{root}/new/x/y/early.txt" in b.paths, "a file in a brand-new tree")
            (tmp_path / "new/x/y/later.txt").write_text("later\n")
            await batches.until(lambda b: f"{root}/new/x/y/later.txt" in b.paths, "a later file in the new tree")

            # Moved within the tree: watched at its new place, nothing reported under the old one.
            (tmp_path / "new").rename(tmp_path / "docs/moved")
            await batches.until(lambda b: f"{root}/docs/moved" in b.paths, "the move")
            batches.batches.clear()
            (tmp_path / "docs/moved/x/y/after.txt").write_text("after the move\n")
            await batches.until(lambda b: f"{root}/docs/moved/x/y/after.txt" in b.paths, "a file in the moved tree")
            assert not any(p.startswith(f"{root}/new/") for p in batches.paths)

            # Removed directories leave no watch behind (the kernel's count, not ours).
            (fd,) = inotify_fds()
            before = len(watched_inodes(fd))
            for folder in ("docs/moved/x/y", "docs/moved/x", "docs/moved"):
                for entry in (tmp_path / folder).iterdir():
                    if entry.is_file():
                        entry.unlink()
                (tmp_path / folder).rmdir()
            await batches.until(lambda b: f"{root}/docs/moved" in b.paths and watcher.watches == before - 3, "rmdir")
            assert len(watched_inodes(fd)) == before - 3
        finally:
            await watcher.close()
        assert inotify_fds() == []

    asyncio.run(scenario())


def test_skipped_directories_get_no_watch_now_or_when_they_appear(tmp_path: Path) -> None:
    make_tree(tmp_path)
    root = str(tmp_path)

    skipped: list[str] = []

    def skip_and_note(path: str) -> bool:
        if skip_heavy(path):
            skipped.append(path)  # list.append is atomic: the walks call this from worker threads
            return True
        return False

    async def scenario() -> None:
        watcher = FileWatcher(quiet=0.05)
        batches = Batches()
        await watcher.watch_tree(root, skip_dir=skip_and_note)
        watcher.subscribe(batches)
        try:
            (fd,) = inotify_fds()
            kept = ["", "src", "src/a", "src/a/b", "src/a/b/c", "docs"]
            assert watched_inodes(fd) == {os.stat(tmp_path / d).st_ino for d in kept}

            (tmp_path / "target/debug/deps").mkdir(parents=True)  # a build directory made while watching
            await batches.until(lambda b: f"{root}/target" in b.paths, "the new directory's own entry")
            await until(lambda: "target" in skipped, what="the new directory's walk to ask about it")
            (tmp_path / "target/debug/deps/out.o").write_bytes(b"\0" * 64)
            (tmp_path / "node_modules/pkg/lib/file.txt").write_text("changed\n")
            (tmp_path / "docs/sentinel.txt").write_text("after the others\n")  # events arrive in order
            await batches.until(lambda b: f"{root}/docs/sentinel.txt" in b.paths, "the sentinel")
            assert not any("/target/" in p or "/node_modules/" in p for p in batches.paths)
            assert watched_inodes(fd) == {os.stat(tmp_path / d).st_ino for d in kept}
        finally:
            await watcher.close()

    asyncio.run(scenario())


def test_a_queue_overflow_means_everything_and_lost_directories_are_watched_after(tmp_path: Path) -> None:
    (tmp_path / "flood").mkdir()
    root = str(tmp_path)
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())

    async def scenario() -> None:
        watcher = FileWatcher(quiet=0.05)
        batches = Batches()
        await watcher.watch_tree(root)
        watcher.subscribe(batches)
        try:
            # The loop is blocked here, so nothing reads the queue: two events per file fill it.
            flood = os.fsencode(tmp_path / "flood")
            for i in range(queued // 2 + 500):
                os.close(os.open(flood + b"/%d" % i, os.O_CREAT | os.O_WRONLY))
            (tmp_path / "late").mkdir()  # its creation is lost with the rest
            await batches.until(lambda b: b.overflowed, "the overflow to be reported")
            (tmp_path / "late/file.txt").write_text("seen\n")
            await batches.until(lambda b: f"{root}/late/file.txt" in b.paths, "a change in the lost directory")
            assert watcher.mode == "inotify"
        finally:
            await watcher.close()

    asyncio.run(scenario())


def test_bursts_are_debounced_but_delivered_while_they_last(tmp_path: Path) -> None:
    async def scenario() -> None:
        watcher = FileWatcher(quiet=0.05, max_delay=0.3)
        batches = Batches()
        await watcher.watch_tree(str(tmp_path))
        watcher.subscribe(batches)
        try:
            for i in range(200):
                (tmp_path / f"burst{i}.txt").write_text("x\n")
            await batches.until(lambda b: len(b.paths) == 200, "the burst")
            assert len(batches.batches) == 1
            # Writes every 20 ms for a second never leave 50 ms of quiet: max_delay still delivers.
            batches.batches.clear()
            for i in range(50):
                (tmp_path / f"steady{i}.txt").write_text("x\n")
                await asyncio.sleep(0.02)  # pacing the writer, not synchronisation
            await batches.until(lambda b: len(b.paths) == 50, "the steady writes")
            assert 2 <= len(batches.batches) <= 25  # held to the end would be 1; one per write, 50
        finally:
            await watcher.close()

    asyncio.run(scenario())


def test_an_idle_watcher_never_wakes_up(tmp_path: Path) -> None:
    make_tree(tmp_path)
    repo = make_repo(tmp_path / "repo", files=20)
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "colony/idle", str(worktree), "HEAD")
    base = git(repo, "rev-parse", "HEAD").strip()

    async def scenario() -> None:
        watchers = [FileWatcher() for _ in range(5)]
        for watcher in watchers:
            await watcher.watch_tree(str(tmp_path), skip_dir=skip_heavy)
        changes = ChangeWatcher("idle", worktree, base, lambda event: None)
        await changes.start()
        changes.subscribe(lambda batch: None)
        try:
            await idle_wakeups(0.2)  # let the threads that ran git settle
            wakeups = await idle_wakeups(1.0)
            # watchfiles' watchers woke ~20 times a second each; these only when the 1 s sleep ends.
            assert wakeups <= 4, f"{wakeups} context switches in 1 s of idleness"
        finally:
            await changes.stop()
            for watcher in watchers:
                await watcher.close()

    asyncio.run(scenario())


def test_a_colony_leaves_what_git_ignores_unwatched_until_it_is_no_longer_ignored(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("node_modules/\nbuild/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "colony/x", str(worktree), "HEAD")
    base = git(repo, "rev-parse", "HEAD").strip()
    for folder in ("node_modules/pkg/lib/deep", "build/out", "dir0/node_modules/x"):
        (worktree / folder).mkdir(parents=True)
        (worktree / folder / "old.txt").write_text("x\n")

    def inode(path: str) -> int:
        return os.stat(worktree / path).st_ino

    async def scenario() -> None:
        events: asyncio.Queue[Event] = asyncio.Queue()
        watcher = ChangeWatcher("x", worktree, base, events.put_nowait, debounce_ms=100)
        await watcher.start()

        async def listed(path: str) -> None:
            async with asyncio.timeout(10):
                while True:
                    event = await events.get()
                    if isinstance(event, ChangesUpdated) and any(f.path == path for f in event.files):
                        return

        try:
            (fd,) = inotify_fds()
            watched = watched_inodes(fd)
            assert {inode(""), inode("dir0"), inode("dir1"), inode("dir2")} <= watched
            for skipped in ("node_modules", "node_modules/pkg", "build", "build/out", "dir0/node_modules"):
                assert inode(skipped) not in watched, skipped
            assert len(watched) == 5  # the four above and the worktree's index directory

            # build/ is no longer ignored: its files are listed, and it is watched from now on.
            (worktree / ".gitignore").write_text("node_modules/\n")
            await listed("build/out/old.txt")
            assert {inode("build"), inode("build/out")} <= watched_inodes(fd)
            (worktree / "build/out/new.txt").write_text("y\n")
            await listed("build/out/new.txt")
            assert inode("node_modules") not in watched_inodes(fd)
        finally:
            await watcher.stop()

    asyncio.run(scenario())


# Falling back to polling, in child processes that run out for real -------------------------------------------

OUT_OF_FDS = """
import asyncio, json, os, resource
from core.inotify import FileWatcher

async def main(root):
    await asyncio.to_thread(lambda: None)  # the worker threads (and their imports) exist before the descriptors go
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    fillers = []
    try:
        while True:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    reasons = []

    def fell_back(reason):
        reasons.append(reason)
        for fd in fillers:  # the pressure is gone again: polling needs a descriptor per directory it reads
            os.close(fd)
        fillers.clear()

    watcher = FileWatcher(poll_interval=0.2, on_fallback=fell_back)
    await watcher.watch_tree(root)
    seen = set()
    arrived = asyncio.Event()
    watcher.subscribe(lambda changes: (seen.update(changes.paths), arrived.set()))
    with open(os.path.join(root, "sub", "new.txt"), "w") as handle:
        handle.write("polled")
    async with asyncio.timeout(10):
        while os.path.join(root, "sub", "new.txt") not in seen:
            arrived.clear()
            await arrived.wait()
    print(json.dumps({"mode": watcher.mode, "reasons": reasons, "seen": sorted(seen)}))
    await watcher.close()

asyncio.run(main(__import__("sys").argv[1]))
"""


def test_out_of_file_descriptors_it_polls_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    result = run_child(OUT_OF_FDS, str(tmp_path))
    assert result["mode"] == "polling: open file limit reached (256 per process)"
    assert result["reasons"] == ["open file limit reached (256 per process)"]
    assert result["seen"] == [str(tmp_path / "sub/new.txt")]


COLONY_WITHOUT_INSTANCES = """
import asyncio, json, os, sys
from pathlib import Path
from core.changes import ChangeWatcher
from core.events import ChangesUpdated, Notice
from core.inotify import Inotify

async def main(worktree, base):
    held = []
    try:
        while True:
            held.append(Inotify())
    except OSError:
        pass
    events = asyncio.Queue()
    watcher = ChangeWatcher("x", Path(worktree), base, events.put_nowait)
    await watcher.start()
    (Path(worktree) / "polled.txt").write_text("one\\n")
    seen = []
    async with asyncio.timeout(20):
        while True:
            event = await events.get()
            seen.append(repr(event))
            if isinstance(event, ChangesUpdated) and any(f.path == "polled.txt" for f in event.files):
                break
    print(json.dumps({"held": len(held), "mode": watcher.mode, "events": seen}))
    await watcher.stop()
    for ino in held:
        ino.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.root
def test_with_inotify_instances_exhausted_a_colony_polls_and_says_why(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "colony/x", str(worktree), "HEAD")
    base = git(repo, "rev-parse", "HEAD").strip()
    result = run_child(COLONY_WITHOUT_INSTANCES, str(worktree), base, limits={"max_inotify_instances": 2})
    # Fewer when root's own instances are nearly all in use: the kernel charges the child's to root's too.
    assert 0 < result["held"] <= 2  # type: ignore[operator]
    assert result["mode"] == "polling: inotify instances exhausted (2 in use)"
    events = result["events"]
    assert isinstance(events, list)
    assert events[0] == repr(Notice("x", "warning", "x: watching by polling: inotify instances exhausted (2 in use)"))
    assert "ChangesUpdated(colony='x', files=())" in events[1]


OUT_OF_WATCHES = """
import asyncio, json, os, sys
from core.inotify import FileWatcher

def instances():
    return sum(os.readlink(f"/proc/self/fd/{n}") == "anon_inode:inotify" for n in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{n}"))

async def main(root):
    reasons = []
    watcher = FileWatcher(poll_interval=0.2, on_fallback=reasons.append)
    await watcher.watch_tree(root)
    batches = []
    arrived = asyncio.Event()
    watcher.subscribe(lambda changes: (batches.append(changes), arrived.set()))
    start = {"mode": watcher.mode, "watches": watcher.watches}
    os.makedirs(os.path.join(root, "one", "two", "three"))  # more directories than the watches left
    target = os.path.join(root, "one", "two", "three", "deep.txt")
    async def until(condition):
        async with asyncio.timeout(10):
            while not condition():
                arrived.clear()
                await arrived.wait()
    await until(lambda: watcher.mode.startswith("polling"))
    await until(lambda: any(b.overflow for b in batches))
    with open(target, "w") as handle:
        handle.write("polled")
    await until(lambda: any(target in b.paths for b in batches))
    print(json.dumps({"start": start, "mode": watcher.mode, "reasons": reasons, "instances": instances()}))
    await watcher.close()

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.root
def test_with_inotify_watches_exhausted_it_moves_to_polling_midway(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    result = run_child(OUT_OF_WATCHES, str(tmp_path), limits={"max_inotify_watches": 3})
    assert result["start"] == {"mode": "inotify", "watches": 2}
    assert result["reasons"] == ["inotify watches exhausted (3 per user)"]
    assert result["mode"] == "polling: inotify watches exhausted (3 per user)"
    assert result["instances"] == 0  # the instance was given back for others to use


# A colony ------------------------------------------------------------------------------------------------------

COLONY_TOML = """\
[services.worker]
command = "echo worker up; exec sleep 1000"
"""


def host_inotify_instances(home: Path, name: str) -> int:
    """The inotify instances of the colony's host process, as the kernel lists its descriptors."""
    from core.host.paths import HostPaths

    host = HostPaths(home / "colonies" / name).process()
    assert host is not None, f"no host runs {name}"
    links = []
    for fd in os.listdir(f"/proc/{host[0]}/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{host[0]}/fd/{fd}"))
    return links.count("anon_inode:inotify")


@pytest.mark.root
def test_a_colony_watches_files_and_colony_toml_with_one_inotify_instance(hive_env, tmp_path: Path) -> None:
    from core.hive import Hive

    repo = make_repo(tmp_path / "onerepo", colony_toml=COLONY_TOML)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()
        try:
            await hive.attach()
            rec = await hive.spawn("one", repo)
            # An edit right away (before the watchers, which start once the colony runs, are up) is not missed.
            (Path(rec.worktree) / "colony.toml").write_text(COLONY_TOML.replace("worker up", "worker v2"))
            # Both watchers run in the colony host, on one inotify instance.
            await until(lambda: host_inotify_instances(hive_env.home, "one") == 1, what="the host's inotify instance")

            async def notice(containing: str) -> Notice:
                while True:
                    event: Event = await events.get()
                    if isinstance(event, Notice) and containing in event.message:
                        return event

            await asyncio.wait_for(notice("colony.toml changed: restarted worker"), timeout=15)
            assert host_inotify_instances(hive_env.home, "one") == 1
        finally:
            try:
                await hive.stop("one")  # the host outlives this Hive (as it outlives a UI): end it
            finally:
                await hive.close()

    asyncio.run(scenario())
