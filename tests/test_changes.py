"""The changed-file list, the diff, and the watcher that keeps the list current, on real git worktrees."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import git, make_repo, until

from core.changes import ChangeWatcher, changed_files, diff_text
from core.errors import StemError
from core.events import ChangesUpdated, Event, FileChange, Notice

NUMBERS = "".join(f"{n}\n" for n in range(1, 21))


@pytest.fixture
def colony(tmp_path: Path) -> tuple[Path, str]:
    """A colony-like worktree on branch colony/x, and its base commit."""
    repo = make_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("node_modules/\n*.log\n")
    (repo / "numbers.txt").write_text(NUMBERS)
    (repo / "image.bin").write_bytes(bytes(range(256)) * 4)
    (repo / "keep.log").write_text("kept\n")  # tracked although *.log is ignored
    git(repo, "add", ".gitignore", "numbers.txt", "image.bin")
    git(repo, "add", "-f", "keep.log")
    git(repo, "commit", "-q", "-m", "fixtures")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "colony/x", str(worktree), "HEAD")
    return worktree, git(repo, "rev-parse", "HEAD").strip()


def by_path(files: tuple[FileChange, ...]) -> dict[str, FileChange]:
    return {f.path: f for f in files}


# changed_files ------------------------------------------------------------------------------------------------


def test_a_fresh_worktree_has_no_changes(colony: tuple[Path, str]) -> None:
    assert changed_files(*colony) == ()


def test_modified_file_has_exact_line_counts(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "dir0/file0.txt").write_text("file 0\nchanged\nfile 0\nfile 0\nfile 0\nnew a\nnew b\n")
    assert changed_files(wt, base) == (FileChange("dir0/file0.txt", "modified", 3, 1),)


def test_untracked_files_count_as_added_lines(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "notes.md").write_text("a\nb\nc")  # git counts an unterminated last line
    (wt / "src").mkdir()
    (wt / "src/empty.py").write_text("")
    assert changed_files(wt, base) == (
        FileChange("notes.md", "untracked", 3, 0),
        FileChange("src/empty.py", "untracked", 0, 0),
    )


def test_an_untracked_file_reads_apart_from_a_staged_new_one(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "staged.txt").write_text("one\n")
    (wt / "untracked.txt").write_text("two\n")
    git(wt, "add", "staged.txt")
    assert changed_files(wt, base) == (
        FileChange("staged.txt", "added", 1, 0),
        FileChange("untracked.txt", "untracked", 1, 0),
    )


def test_deleted_file(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "dir1/file1.txt").unlink()
    assert changed_files(wt, base) == (FileChange("dir1/file1.txt", "deleted", 0, 5),)


def test_commits_on_the_branch_add_up_with_uncommitted_edits(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "README.md").write_text("test repo\none\ntwo\n")
    (wt / "src").mkdir()
    (wt / "src/new.py").write_text("x = 1\ny = 2\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "on the branch")
    (wt / "README.md").write_text("test repo\none\ntwo\nthree\n")
    assert changed_files(wt, base) == (
        FileChange("README.md", "modified", 3, 0),
        FileChange("src/new.py", "added", 2, 0),
    )


def test_a_staged_rename_is_one_entry(colony: tuple[Path, str]) -> None:
    wt, base = colony
    git(wt, "mv", "numbers.txt", "renamed.txt")
    (wt / "renamed.txt").write_text(NUMBERS + "21\n")
    assert changed_files(wt, base) == (FileChange("renamed.txt", "renamed", 1, 0),)


def test_an_unstaged_move_is_a_delete_and_an_add_until_staged(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "numbers.txt").rename(wt / "moved.txt")
    assert changed_files(wt, base) == (
        FileChange("moved.txt", "untracked", 20, 0),
        FileChange("numbers.txt", "deleted", 0, 20),
    )
    git(wt, "add", "-A")
    assert changed_files(wt, base) == (FileChange("moved.txt", "renamed", 0, 0),)


def test_binary_files_have_no_line_counts(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "image.bin").write_bytes(bytes(range(256)) * 5)
    (wt / "blob.dat").write_bytes(b"text first\n\0 then a NUL")
    # Said to be binary (git's numstat gives "-"), so they read as such and not as "+0 -0".
    assert changed_files(wt, base) == (
        FileChange("blob.dat", "untracked", 0, 0, binary=True),
        FileChange("image.bin", "modified", 0, 0, binary=True),
    )


def test_rewritten_with_the_same_bytes_is_not_a_change(colony: tuple[Path, str]) -> None:
    wt, base = colony
    # New stat data, same content: git's raw diff lists such files until the index is refreshed.
    for name in ("image.bin", "README.md"):
        path = wt / name
        path.write_bytes(path.read_bytes())
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert changed_files(wt, base) == ()


def test_mode_change_is_a_modification(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "README.md").chmod(0o755)
    assert changed_files(wt, base) == (FileChange("README.md", "modified", 0, 0),)


def test_paths_with_spaces_unicode_and_control_characters(colony: tuple[Path, str]) -> None:
    wt, base = colony
    odd = 'quote"and\ttab.txt'
    (wt / odd).write_text("one\n")
    git(wt, "add", odd)
    git(wt, "commit", "-q", "-m", "odd name")
    (wt / odd).write_text("one\ntwo\n")
    (wt / "dir with space").mkdir()
    (wt / "dir with space/ünï cødé файл.txt").write_text("ä\nö\n")
    (wt / "line\nbreak.txt").write_text("x\n")
    git(wt, "mv", "dir0/file0.txt", "dir0/fïle 0.txt")
    assert changed_files(wt, base) == (
        FileChange("dir with space/ünï cødé файл.txt", "untracked", 2, 0),
        FileChange("dir0/fïle 0.txt", "renamed", 0, 0),
        FileChange("line\nbreak.txt", "untracked", 1, 0),
        FileChange(odd, "added", 2, 0),
    )


def test_ignored_files_are_not_listed_but_tracked_ones_matching_a_pattern_are(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "node_modules/pkg").mkdir(parents=True)
    (wt / "node_modules/pkg/index.js").write_text("module.exports = 1\n")
    (wt / "debug.log").write_text("noise\n")
    (wt / "keep.log").write_text("kept\nmore\n")
    assert changed_files(wt, base) == (FileChange("keep.log", "modified", 1, 0),)


def test_a_file_removed_from_the_index_but_kept_on_disk_is_listed_once(colony: tuple[Path, str]) -> None:
    wt, base = colony
    git(wt, "rm", "-q", "--cached", "dir2/file2.txt")
    (wt / "dir2/file2.txt").write_text("file 2\n" * 6)
    assert [(f.path, f.status) for f in changed_files(wt, base)] == [("dir2/file2.txt", "modified")]


def test_a_bad_base_commit_is_a_stem_error(colony: tuple[Path, str]) -> None:
    wt, _base = colony
    with pytest.raises(StemError, match="diff-index failed"):
        changed_files(wt, "0" * 40)


# diff_text ----------------------------------------------------------------------------------------------------


def test_diff_of_one_tracked_file(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "dir0/file0.txt").write_text("file 0\nchanged\nfile 0\nfile 0\nfile 0\n")
    (wt / "README.md").write_text("other\n")
    text = diff_text(wt, base, "dir0/file0.txt")
    assert "--- a/dir0/file0.txt\n+++ b/dir0/file0.txt\n" in text
    assert "\n-file 0\n+changed\n" in text
    assert "README" not in text
    assert "\x1b[" not in text  # plain text: the UI colours it


def test_diff_of_one_untracked_file(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "notes dir").mkdir()
    (wt / "notes dir/nötes.md").write_text("a\nb\n")
    text = diff_text(wt, base, "notes dir/nötes.md")
    assert "new file mode 100644" in text
    assert "--- /dev/null\n+++ b/notes dir/nötes.md" in text  # git ends a name with a space with a tab here
    assert "@@ -0,0 +1,2 @@\n+a\n+b\n" in text


def test_diff_of_a_renamed_file_by_either_name(colony: tuple[Path, str]) -> None:
    wt, base = colony
    git(wt, "mv", "numbers.txt", "renamed.txt")
    (wt / "renamed.txt").write_text(NUMBERS + "21\n")
    for name in ("renamed.txt", "numbers.txt"):
        text = diff_text(wt, base, name)
        assert "rename from numbers.txt\nrename to renamed.txt\n" in text
        assert "\n+21\n" in text


def test_diff_of_the_whole_colony(colony: tuple[Path, str]) -> None:
    wt, base = colony
    (wt / "dir0/file0.txt").write_text("changed\n")
    (wt / "dir1/file1.txt").unlink()
    (wt / "new.txt").write_text("fresh\n")
    (wt / "node_modules").mkdir()
    (wt / "node_modules/dep.js").write_text("ignored\n")
    text = diff_text(wt, base)
    assert "+++ b/dir0/file0.txt\n" in text
    assert "deleted file mode 100644" in text and "--- a/dir1/file1.txt\n+++ /dev/null\n" in text
    assert "+++ b/new.txt\n@@ -0,0 +1 @@\n+fresh\n" in text
    assert "node_modules" not in text
    assert diff_text(wt, base, "README.md") == ""


def test_listing_and_diffing_leave_the_index_alone(colony: tuple[Path, str]) -> None:
    wt, base = colony
    index = Path(git(wt, "rev-parse", "--path-format=absolute", "--git-path", "index").strip())
    (wt / "README.md").write_text("changed\n")
    (wt / "new.txt").write_text("fresh\n")
    os.utime(wt / "dir0/file0.txt", (1_000_000_000, 1_000_000_000))  # stat-dirty: porcelain diff would refresh
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    changed_files(wt, base)
    diff_text(wt, base)
    diff_text(wt, base, "new.txt")
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    assert "?? new.txt" in git(wt, "status", "--porcelain")


# ChangeWatcher ------------------------------------------------------------------------------------------------


async def next_change(
    queue: asyncio.Queue[Event], match: Callable[[tuple[FileChange, ...]], bool], others: list[Event] | None = None
) -> ChangesUpdated:
    """The first ChangesUpdated whose files `match`, within 10 s; other events go to `others` (or fail the test)."""
    async with asyncio.timeout(10):
        while True:
            event = await queue.get()
            if isinstance(event, ChangesUpdated):
                if match(event.files):
                    return event
            elif others is not None:
                others.append(event)
            else:
                raise AssertionError(f"unexpected event {event}")


async def assert_quiet(queue: asyncio.Queue[Event], seconds: float) -> None:
    """Nothing arrives for `seconds` (a bounded wait: this asserts an absence)."""
    with pytest.raises(TimeoutError):
        event = await asyncio.wait_for(queue.get(), seconds)
        raise AssertionError(f"unexpected event {event}")


async def stop_promptly(watcher: ChangeWatcher) -> None:
    started = time.monotonic()
    await watcher.stop()
    assert time.monotonic() - started < 2


def test_watcher_follows_the_worktree_and_ignores_what_git_ignores(colony: tuple[Path, str]) -> None:
    wt, base = colony

    async def scenario() -> None:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        watcher = ChangeWatcher("x", wt, base, queue.put_nowait)
        await watcher.start()
        try:
            assert queue.get_nowait() == ChangesUpdated("x", ())

            (wt / "hello.txt").write_text("one\ntwo\n")
            expected = (FileChange("hello.txt", "untracked", 2, 0),)
            event = await next_change(queue, lambda files: files == expected)
            assert event.colony == "x" and watcher.files == expected

            batches, recomputes = watcher.batches, watcher.recomputes
            for i in range(200):
                folder = wt / "node_modules" / f"pkg{i % 10}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"f{i}.js").write_text(f"module.exports = {i}\n")
            await until(lambda: watcher.batches > batches, what="the watcher to see the node_modules burst")
            await assert_quiet(queue, 1.5)
            assert watcher.recomputes == recomputes, "ignored paths made the watcher recount"
            assert watcher.files == expected

            (wt / "hello.txt").unlink()
            event = await next_change(queue, lambda files: "hello.txt" not in by_path(files))
            assert event.files == () == watcher.files
        finally:
            await stop_promptly(watcher)
        (wt / "after-stop.txt").write_text("unseen\n")
        await assert_quiet(queue, 1.0)

    asyncio.run(scenario())


def test_watcher_sees_staging_and_tracked_files_matching_ignore_patterns(colony: tuple[Path, str]) -> None:
    wt, base = colony

    async def scenario() -> None:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        watcher = ChangeWatcher("x", wt, base, queue.put_nowait, debounce_ms=100)
        await watcher.start()
        try:
            await next_change(queue, lambda files: files == ())

            (wt / "keep.log").write_text("kept\nmore\n")
            await next_change(queue, lambda files: files == (FileChange("keep.log", "modified", 1, 0),))

            (wt / "numbers.txt").rename(wt / "moved.txt")
            await next_change(queue, lambda files: by_path(files).get("numbers.txt", None) is not None)
            # Staging changes only the index, outside the worktree; the list still has to follow.
            await asyncio.to_thread(git, wt, "add", "-A")
            event = await next_change(queue, lambda files: "numbers.txt" not in by_path(files))
            assert by_path(event.files)["moved.txt"] == FileChange("moved.txt", "renamed", 0, 0)
        finally:
            await stop_promptly(watcher)

    asyncio.run(scenario())


def test_watcher_survives_a_file_name_that_is_not_utf8(colony: tuple[Path, str]) -> None:
    wt, base = colony

    async def scenario() -> None:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        watcher = ChangeWatcher("x", wt, base, queue.put_nowait, debounce_ms=100)
        await watcher.start()
        others: list[Event] = []
        try:
            await next_change(queue, lambda files: files == ())
            bad = os.fsdecode(b"latin-\xe9.txt")
            # Names are bytes to inotify: each change to the file is followed, one by one, with nothing to report.
            for lines in range(1, 6):
                with open(os.path.join(os.fsencode(wt), b"latin-\xe9.txt"), "ab") as handle:
                    handle.write(b"caf\xe9\n")
                expected = FileChange(bad, "untracked", lines, 0)
                await next_change(queue, lambda files, e=expected: by_path(files).get(bad) == e, others)
            assert not [e for e in others if isinstance(e, Notice)]

            (wt / "later.txt").write_text("still watching\n")
            await next_change(queue, lambda files: "later.txt" in by_path(files), others)
        finally:
            await stop_promptly(watcher)

    asyncio.run(scenario())


def test_watcher_on_a_missing_worktree_fails_with_a_stem_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        watcher = ChangeWatcher("x", tmp_path / "gone", "HEAD", lambda event: None)
        with pytest.raises(StemError, match="is gone"):
            await watcher.start()

    asyncio.run(scenario())


def test_stems_git_status_never_rewrites_the_index_under_a_checkout(tmp_path: Path) -> None:
    """`git status` saves a refreshed index by default, holding index.lock meanwhile: a checkout starting in that
    worktree at that moment failed ("remove the file manually to continue"). Stem's never takes the lock."""
    from core import worktree

    repo = make_repo(tmp_path / "repo")
    tracked = next(p for p in repo.iterdir() if p.is_file())
    os.utime(tracked, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # stat data the index does not have
    index = repo / ".git" / "index"
    before = index.stat().st_mtime_ns
    assert worktree.dirty_files(repo) == []
    assert index.stat().st_mtime_ns == before


def test_a_git_failure_names_what_git_found_not_its_advice(tmp_path: Path) -> None:
    """git ends a lock failure with advice ("remove the file manually to continue") that names nothing: the line
    Stem shows is git's fatal one, with the lock's path."""
    from core import worktree

    repo = make_repo(tmp_path / "repo")
    (repo / ".git" / "index.lock").touch()
    with pytest.raises(StemError) as caught:
        worktree.git(["-c", "user.name=a", "-c", "user.email=a@b", "commit", "--allow-empty", "-qm", "x"], repo)
    message = str(caught.value)
    assert f"fatal: Unable to create '{repo}/.git/index.lock': File exists." in message, message
