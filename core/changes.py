"""A colony's changed files against its base commit, and a watcher that keeps that list current.

Everything here reads the repository and never writes it: the agent runs git in the same worktree, and git fails
rather than waits when it meets another command's index.lock. Porcelain `git diff` refreshes the index as a side
effect (even with --no-optional-locks, as of git 2.39), so the list comes from plumbing (`diff-index`, `ls-files`).
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import watchfiles
from watchfiles._rust_notify import WatchfilesRustInternalError

from core.actor import describe
from core.errors import StemError
from core.events import ChangesUpdated, Event, FileChange, Notice
from core.worktree import git_env

ADDED = "added"
MODIFIED = "modified"
DELETED = "deleted"
RENAMED = "renamed"

# diff-index's one-letter statuses; T (type change), U (unmerged) and X read as "modified" to a person.
_STATUS = {"A": ADDED, "C": ADDED, "D": DELETED, "M": MODIFIED, "R": RENAMED, "T": MODIFIED, "U": MODIFIED}

# git's own binary test (xdiff's buffer_is_binary): a NUL in the first 8000 bytes.
_BINARY_PROBE = 8000
# core.bigFileThreshold's default: git diffs files larger than this as binary, so counting their lines is moot.
_BIG_FILE = 512 * 1024 * 1024
# Restarts of the file watcher in a row that fail before it watches again, before it gives up.
_MAX_RESTARTS = 3


def _git(args: list[str], cwd: Path, *, input: bytes | None = None, ok: Iterable[int] = (0,)) -> bytes:
    """Run git for its raw stdout: paths come NUL-separated and need not be UTF-8."""
    env = git_env()
    argv = ["git", "--no-optional-locks", "-c", "core.quotePath=false", *args]
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            input=input,
            capture_output=True,
            stdin=subprocess.DEVNULL if input is None else None,
        )
    except (FileNotFoundError, NotADirectoryError) as exc:
        if not cwd.is_dir():
            raise StemError(f"worktree {cwd} is gone: destroy the colony (or run `stem gc`)") from exc
        raise
    if proc.returncode not in ok:
        detail = os.fsdecode(proc.stderr or proc.stdout).strip().splitlines()
        command = next((arg for arg in args if not arg.startswith("-")), "")
        raise StemError(f"git {command} failed in {cwd}: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


@dataclass(frozen=True, slots=True)
class _Entry:
    """One changed path; `tracked`/`untracked` say where it was found (both: removed from the index, still on disk)."""

    path: str
    status: str
    added: int
    removed: int
    old_path: str = ""
    tracked: bool = True
    untracked: bool = False


def _tracked(worktree: Path, base: str) -> dict[str, _Entry]:
    """Tracked paths whose work-tree content differs from `base`: commits on the branch plus uncommitted edits."""
    # One command for both formats, so statuses and counts describe the same moment.
    out = _git(["diff-index", "--raw", "--numstat", "-z", "--find-renames", base, "--"], worktree)
    tokens = [os.fsdecode(token) for token in out.split(b"\0")]
    raw: dict[str, tuple[str, str, str, str, str, str]] = {}  # path -> (status, old path, old/new mode, old/new sha)
    counts: dict[str, tuple[int, int] | None] = {}  # path -> (added, removed); None for binary
    i = 0
    while i < len(tokens) - 1:  # the output ends with a NUL, so the last token is empty
        token = tokens[i]
        if token.startswith(":"):
            old_mode, new_mode, old_sha, new_sha, status = token[1:].split(" ")
            if status[0] in "RC":
                raw[tokens[i + 2]] = (status[0], tokens[i + 1], old_mode, new_mode, old_sha, new_sha)
                i += 3
            else:
                raw[tokens[i + 1]] = (status[0], "", old_mode, new_mode, old_sha, new_sha)
                i += 2
            continue
        plus, minus, path = token.split("\t", 2)
        if path == "":  # a rename: old and new path follow as their own tokens
            path = tokens[i + 2]
            i += 2
        counts[path] = None if plus == "-" else (int(plus), int(minus))
        i += 1

    entries: dict[str, _Entry] = {}
    unverified: dict[str, str] = {}  # path -> base blob of binary files that may only have been touched
    for path, (letter, old_path, old_mode, new_mode, old_sha, new_sha) in raw.items():
        if path not in counts:
            # The raw format lists files whose stat data changed (touched, rewritten with the same bytes);
            # numstat compares content and leaves out the unchanged ones.
            continue
        stats = counts[path]
        # A null new sha means "see the work tree": git did not hash the file.
        if stats is None and letter == "M" and old_mode == new_mode and not new_sha.strip("0"):
            # ...but numstat reports every binary file it did not compare; hash those to tell.
            unverified[path] = old_sha
        added, removed = stats or (0, 0)
        entries[path] = _Entry(path, _STATUS.get(letter, MODIFIED), added, removed, old_path)
    for path in _unchanged_blobs(worktree, unverified):
        del entries[path]
    return entries


def _unchanged_blobs(worktree: Path, blobs: dict[str, str]) -> list[str]:
    """The paths whose work-tree file hashes to the given blob (through the repository's clean filters)."""
    paths = sorted(blobs)
    same: list[str] = []
    for start in range(0, len(paths), 500):  # keep the command line well under ARG_MAX
        chunk = paths[start : start + 500]
        try:
            out = _git(["hash-object", "--", *chunk], worktree)
        except StemError:
            continue  # a file vanished meanwhile: keep listing it; the next change event recomputes
        same.extend(path for path, sha in zip(chunk, out.decode().split(), strict=True) if sha == blobs[path])
    return same


def _added_lines(path: Path) -> int | None:
    """The lines git will count for an untracked file once it is added (0 for binary); None if it vanished."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        try:
            return 1 if os.readlink(path) else 0  # git stores a symlink as its target, one line
        except OSError:
            return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > _BIG_FILE:
        return 0  # a nested repository (git lists it as one entry), a special file, or one git calls binary
    try:
        # O_NONBLOCK: an agent could swap in a FIFO after the lstat, and opening one for reading would hang.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        chunk = handle.read(1 << 16)
        if b"\0" in chunk[:_BINARY_PROBE]:
            return 0
        lines, last = 0, b"\n"
        while chunk:
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            chunk = handle.read(1 << 16)
    return lines + int(last != b"\n")  # git counts a last line without a newline


def _untracked(worktree: Path) -> list[str]:
    """Untracked files git does not ignore (.gitignore, .git/info/exclude, core.excludesFile)."""
    out = _git(["ls-files", "--others", "--exclude-standard", "-z"], worktree)
    # A nested repository is listed as "dir/"; drop the slash so every path reads the same way.
    return [os.fsdecode(token).rstrip("/") for token in out.split(b"\0") if token]


def _changes(worktree: Path, base: str) -> list[_Entry]:
    entries = _tracked(worktree, base)
    for path in _untracked(worktree):
        lines = _added_lines(worktree / path)
        if lines is None:
            continue
        known = entries.get(path)
        if known is not None and known.status == DELETED:
            # Removed from the index (git rm --cached) yet still on disk: one path, changed; the counts are
            # "all of base out, all of the file in", an upper bound, since comparing needs a blob in the index.
            entries[path] = _Entry(path, MODIFIED, lines, known.removed, tracked=True, untracked=True)
        else:
            entries[path] = _Entry(path, ADDED, lines, 0, tracked=False, untracked=True)
    return sorted(entries.values(), key=lambda entry: entry.path)


def changed_files(worktree: Path, base_commit: str) -> tuple[FileChange, ...]:
    """What differs between `base_commit` and the worktree as it is now: commits on the colony branch, uncommitted
    edits and untracked files git does not ignore, sorted by path. Blocking: call it in a thread."""
    return tuple(FileChange(e.path, e.status, e.added, e.removed) for e in _changes(worktree, base_commit))


def diff_text(worktree: Path, base_commit: str, path: str | None = None) -> str:
    """The unified diff (plain text) of one changed path, or of all of them, against `base_commit`.

    Tracked changes come first, then untracked files, each in path order. `path` may name either side of a rename.
    Empty when the path has no changes. Blocking: call it in a thread.
    """
    entries = _changes(worktree, base_commit)
    if path is not None:
        entries = [e for e in entries if path in (e.path, e.old_path)]
        if not entries:
            return ""
    texts: list[str] = []
    if any(e.tracked for e in entries):
        args = ["--literal-pathspecs", "diff-index", "-p", "--no-color", "--find-renames", base_commit, "--"]
        if path is not None:
            # Both sides of a rename, or git shows an added file instead.
            args += sorted({p for e in entries if e.tracked for p in (e.path, e.old_path) if p})
        texts.append(_git(args, worktree).decode("utf-8", "replace"))
    for entry in entries:
        if entry.untracked and not (worktree / entry.path).is_dir():
            texts.append(_new_file_diff(worktree, entry.path))
    return "".join(texts)


def _new_file_diff(worktree: Path, path: str) -> str:
    # --no-index compares two files without involving the index, so an untracked file reads as a new one; the
    # explicit options keep a user's diff config (color.ui=always, noprefix, external tools) out of the text.
    args = ["diff", "--no-index", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/"]
    try:
        out = _git([*args, "--", "/dev/null", path], worktree, ok=(0, 1))
    except StemError:
        if os.path.lexists(worktree / path):
            raise
        return ""  # deleted since it was listed
    return out.decode("utf-8", "replace")


def _any_not_ignored(worktree: Path, paths: list[str]) -> bool:
    """Whether any of `paths` (relative to the worktree) is not ignored by git; one git process for the batch."""
    data = b"".join(os.fsencode(p) + b"\0" for p in paths)
    try:
        # -v -n prints a record per path; tracked files are never ignored and come back without a pattern.
        out = _git(["check-ignore", "--stdin", "-z", "--verbose", "--non-matching"], worktree, input=data, ok=(0, 1))
    except StemError:
        return True  # cannot tell (an odd name, a vanished worktree): recomputing is always correct
    fields = out.split(b"\0")
    for i in range(2, len(fields) - 1, 4):  # records: source, line number, pattern, path
        pattern = fields[i]
        if not pattern or pattern.startswith(b"!"):
            return True
    return False


def _index_file(worktree: Path) -> str:
    """The worktree's own index file (a linked worktree's lives in <repo>/.git/worktrees/<name>/)."""
    out = _git(["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree)
    # Real path, as the watched roots are: the watcher reports paths under the root it was given.
    return os.path.realpath(os.fsdecode(out).strip())


class _StopFlag:
    """The `stop_event` watchfiles polls every `step` ms from inside its watch loop. That loop only runs on a watcher
    whose inotify watches exist, so a poll also proves no later change can be missed: `when_watching` uses that."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._pending: Callable[[], None] | None = None

    def set(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def when_watching(self, callback: Callable[[], None]) -> None:
        """Run `callback` (in the watching thread) at the next poll."""
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
        pass  # the loop is closed: nobody is listening any more


def _resolve(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


class ChangeWatcher:
    """Keeps one colony's changed-file list (`files`) current and emits ChangesUpdated whenever it changes."""

    def __init__(
        self,
        colony: str,
        worktree: Path,
        base_commit: str,
        emit: Callable[[Event], None],
        debounce_ms: int = 300,
    ) -> None:
        self.colony = colony
        self.worktree = worktree
        self.base_commit = base_commit
        self.files: tuple[FileChange, ...] = ()
        # Counters for tests and diagnostics: change batches seen, and how many of them led to a recount.
        self.batches = 0
        self.recomputes = 0
        self._emit = emit
        self._debounce_ms = debounce_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flag: _StopFlag | None = None
        self._done: asyncio.Future[str | None] | None = None
        self._lock = threading.Lock()  # one recount at a time, so results reach the loop in the order computed
        self._published = False
        self._stopped = False
        self._errors: set[str] = set()

    async def start(self) -> None:
        """Start watching, then emit the initial list. Raises StemError if the worktree cannot be watched or read."""
        if self._flag is not None:
            raise RuntimeError(f"the change watcher of {self.colony} is already started")
        loop = self._loop = asyncio.get_running_loop()
        root = Path(await asyncio.to_thread(os.path.realpath, self.worktree))
        index = await asyncio.to_thread(_index_file, root)
        ready: asyncio.Future[str | None] = loop.create_future()
        done: asyncio.Future[str | None] = loop.create_future()
        self._done = done
        self._flag = _StopFlag()
        self._flag.when_watching(lambda: _call_soon(loop, _resolve, ready, None))
        # A thread of its own rather than awatch: building the inotify watches walks the whole tree (about 170 ms
        # for 5,000 directories) and awatch does that on the event loop; a thread also reports when it is ready.
        thread = threading.Thread(
            target=self._watch, args=(root, index, loop), name=f"changes-{self.colony}", daemon=True
        )
        thread.start()
        await asyncio.wait([ready, done], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            raise StemError(f"cannot watch {root} for changes ({self.colony}): {done.result()}")
        # Counted only now that the watches exist: a change made during the count still produces an event.
        try:
            await asyncio.to_thread(self._recount, root, True)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop watching; no event is emitted after this returns."""
        self._stopped = True
        if self._flag is None or self._done is None:
            return
        self._flag.set()
        # watchfiles polls the flag every 50 ms; a recount in progress is not waited for beyond a second, and
        # its result is dropped (`_stopped`).
        await asyncio.wait([self._done], timeout=1.0)

    # the watcher thread -------------------------------------------------------------------------------------

    def _watch(self, root: Path, index: str, loop: asyncio.AbstractEventLoop) -> None:
        assert self._flag is not None and self._done is not None
        prefix = str(root) + os.sep
        roots = [str(root)]
        if not index.startswith(prefix):
            roots.append(os.path.dirname(index))  # staging (a rename, git rm --cached) changes only the index

        def may_matter(_change: watchfiles.Change, path: str) -> bool:
            if path == index:
                return True
            # Cheap first cut, per path: nothing inside .git (ours or a nested repository's) is work-tree content.
            return path.startswith(prefix) and ".git" not in path[len(prefix) :].split(os.sep)

        error: str | None = None
        failed_starts = 0  # restarts in a row that never got as far as watching

        def watching_again() -> None:
            nonlocal failed_starts
            failed_starts = 0
            self._recount(root, False)

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
                        self.batches += 1
                        if self._matters(root, index, prefix, batch):
                            self._recount(root, False)
                except WatchfilesRustInternalError as exc:
                    # watchfiles drops the whole batch on an event it cannot report (a file name that is not
                    # UTF-8, for one) and ends the watch: watch afresh, and recount once the new watches exist,
                    # as the batch is lost and a change made before then would be too.
                    failed_starts += 1
                    if failed_starts > _MAX_RESTARTS:
                        raise
                    self._warn(f"file watcher restarted: {exc}")
                    self._flag.when_watching(watching_again)
        except Exception as exc:  # a bug or a vanished worktree: say so, since the list stops being current
            error = str(exc) if isinstance(exc, (StemError, OSError)) else describe(exc)
            if not self._stopped:
                _call_soon(loop, self._emit_notice, "error", f"changed-file list stopped updating: {error}")
        finally:
            _call_soon(loop, _resolve, self._done, error or "stopped")

    def _matters(self, root: Path, index: str, prefix: str, batch: set[tuple[watchfiles.Change, str]]) -> bool:
        if self._flag is None or self._flag.stopped:
            return False
        paths: set[str] = set()
        for _change, path in batch:
            if path == index:
                return True
            paths.add(path[len(prefix) :])
        return _any_not_ignored(root, sorted(paths))

    def _recount(self, root: Path, initial: bool) -> None:
        with self._lock:
            self.recomputes += 1
            try:
                files = changed_files(root, self.base_commit)
            except (StemError, OSError) as exc:
                if initial:
                    raise
                self._warn(f"could not list changed files: {exc}")
                return
            if self._loop is not None:
                _call_soon(self._loop, self._publish, files)

    def _warn(self, message: str) -> None:
        if message not in self._errors and self._loop is not None:  # once per distinct problem, not per batch
            self._errors.add(message)
            _call_soon(self._loop, self._emit_notice, "warning", message)

    # on the loop ---------------------------------------------------------------------------------------------

    def _publish(self, files: tuple[FileChange, ...]) -> None:
        if self._stopped or (self._published and files == self.files):
            return
        self.files = files
        self._published = True
        self._emit(ChangesUpdated(self.colony, files))

    def _emit_notice(self, level: str, message: str) -> None:
        if not self._stopped:
            self._emit(Notice(self.colony, level, f"{self.colony}: {message}"))
