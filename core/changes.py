"""A colony's changed files against its base commit, and a watcher that keeps that list current.

Everything here reads the repository and never writes it: the agent runs git in the same worktree, and git fails
rather than waits when it meets another command's index.lock. Porcelain `git diff` refreshes the index as a side
effect (even with --no-optional-locks, as of git 2.39), so the list comes from plumbing (`diff-index`, `ls-files`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.actor import describe
from core.errors import StemError
from core.events import ChangesUpdated, Event, FileChange, Notice
from core.inotify import Changes, FileWatcher
from core.worktree import git_env

ADDED = "added"
MODIFIED = "modified"
DELETED = "deleted"
RENAMED = "renamed"
UNTRACKED = "untracked"  # new in the worktree, never added: distinct from a file added to the index or committed

# diff-index's one-letter statuses; T (type change), U (unmerged) and X read as "modified" to a person.
_STATUS = {"A": ADDED, "C": ADDED, "D": DELETED, "M": MODIFIED, "R": RENAMED, "T": MODIFIED, "U": MODIFIED}

# git's own binary test (xdiff's buffer_is_binary): a NUL in the first 8000 bytes.
_BINARY_PROBE = 8000
# core.bigFileThreshold's default: git diffs files larger than this as binary, so counting their lines is moot.
_BIG_FILE = 512 * 1024 * 1024
# Quiet time that ends a batch of file events (the debounce is the most a batch waits for it).
_QUIET = 0.05


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
    binary: bool = False  # git counts no lines of it (numstat's "-")


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
        entries[path] = _Entry(path, _STATUS.get(letter, MODIFIED), added, removed, old_path, binary=stats is None)
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


def added_lines(path: Path) -> tuple[int, bool] | None:
    """The lines git will count for an untracked file once it is added, and whether git reads it as binary (no
    lines then: numstat's "-"); None if it vanished."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        try:
            return (1 if os.readlink(path) else 0), False  # git stores a symlink as its target, one line
        except OSError:
            return None
    if not stat.S_ISREG(info.st_mode):
        return 0, False  # a nested repository (git lists it as one entry) or a special file
    if info.st_size > _BIG_FILE:
        return 0, True
    try:
        # O_NONBLOCK: an agent could swap in a FIFO after the lstat, and opening one for reading would hang.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0, False
        chunk = handle.read(1 << 16)
        if b"\0" in chunk[:_BINARY_PROBE]:
            return 0, True
        lines, last = 0, b"\n"
        while chunk:
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            chunk = handle.read(1 << 16)
    return lines + int(last != b"\n"), False  # git counts a last line without a newline


def _untracked(worktree: Path) -> list[str]:
    """Untracked files git does not ignore (.gitignore, .git/info/exclude, core.excludesFile)."""
    out = _git(["ls-files", "--others", "--exclude-standard", "-z"], worktree)
    # A nested repository is listed as "dir/"; drop the slash so every path reads the same way.
    return [os.fsdecode(token).rstrip("/") for token in out.split(b"\0") if token]


def _changes(worktree: Path, base: str) -> list[_Entry]:
    entries = _tracked(worktree, base)
    for path in _untracked(worktree):
        found = added_lines(worktree / path)
        if found is None:
            continue
        lines, binary = found
        known = entries.get(path)
        if known is not None and known.status == DELETED:
            # Removed from the index (git rm --cached) yet still on disk: one path, changed; the counts are
            # "all of base out, all of the file in", an upper bound, since comparing needs a blob in the index.
            binary = binary or known.binary
            entries[path] = _Entry(path, MODIFIED, lines, known.removed, tracked=True, untracked=True, binary=binary)
        else:
            entries[path] = _Entry(path, UNTRACKED, lines, 0, tracked=False, untracked=True, binary=binary)
    return sorted(entries.values(), key=lambda entry: entry.path)


def changed_files(worktree: Path, base_commit: str) -> tuple[FileChange, ...]:
    """What differs between `base_commit` and the worktree as it is now: commits on the colony branch, uncommitted
    edits and untracked files git does not ignore, sorted by path. Blocking: call it in a thread."""
    return tuple(FileChange(e.path, e.status, e.added, e.removed, e.binary) for e in _changes(worktree, base_commit))


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


# Directory names that are often ignored and heavy (dependencies, build output, caches). A directory with such a name
# that appears while the colony runs is asked about (git) before it is watched; any other new one is simply watched.
_OFTEN_IGNORED = frozenset(
    {
        "node_modules",
        ".shared",  # read-only peer snapshots (core/peering.py), in the repository's info/exclude
        ".venv",
        "venv",
        "target",
        "build",
        "dist",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".next",
        ".nuxt",
        ".cache",
        ".gradle",
        ".terraform",
        "coverage",
    }
)


def _ignored_dirs(worktree: Path, paths: list[str] | None = None) -> set[str]:
    """Directories (relative) that git ignores whole and that hold no tracked file: nothing in them can ever show
    in the list, so they need no watch. Only `paths` (and what is below them), if given."""
    args = ["--literal-pathspecs", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z"]
    out = _git([*args, "--", *paths] if paths else args, worktree)
    # --directory also collapses an untracked directory whose every file happens to be ignored; a file added there
    # later would not be, so keep only directories an ignore pattern names.
    listed = [os.fsdecode(token)[:-1] for token in out.split(b"\0") if token.endswith(b"/")]
    if not listed:
        return set()
    data = b"".join(os.fsencode(p) + b"\0" for p in listed)
    out = _git(["check-ignore", "--stdin", "-z", "--verbose", "--non-matching"], worktree, input=data, ok=(0, 1))
    fields = out.split(b"\0")
    return {
        os.fsdecode(fields[i + 1])
        for i in range(2, len(fields) - 1, 4)  # records: source, line number, pattern, path
        if fields[i] and not fields[i].startswith(b"!")
    }


class _WatchedDirs:
    """The `skip_dir` of a colony's file watcher: `.git` (and nested repositories' own), and directories git ignores
    whole, such as node_modules or target: watching them would cost inotify watches (a per-user budget shared by
    every colony) and wake-ups for changes that can never reach the list."""

    def __init__(self, worktree: Path) -> None:
        self.worktree = worktree
        self._ignored: set[str] = set()
        self._asked: dict[str, bool] = {}

    def refresh(self) -> None:
        """Learn the ignored directories afresh (at start, and after an ignore rule changed). Blocking."""
        try:
            ignored = _ignored_dirs(self.worktree)
        except StemError:
            ignored = set()  # cannot tell: watching everything is always correct
        self._ignored = ignored
        self._asked = {}

    def skip(self, path: str) -> bool:
        name = os.path.basename(path)
        if name == ".git":
            return True
        if path in self._ignored:
            return True
        if name not in _OFTEN_IGNORED:
            return False
        # Made after the last refresh (npm install, a first build): ask once; worker threads call this.
        verdict = self._asked.get(path)
        if verdict is None:
            try:
                verdict = path in _ignored_dirs(self.worktree, [path])
            except StemError:
                verdict = False
            self._asked[path] = verdict
        return verdict


class ChangeWatcher:
    """Keeps one colony's changed-file list (`files`) current and emits ChangesUpdated whenever it changes.

    One inotify instance per colony (core.inotify.FileWatcher) watches the worktree, minus what git ignores whole,
    and the worktree's index; others in the colony (the colony.toml watcher) `subscribe` to the same events. Without
    inotify it polls, says so in a Notice, and `mode` tells which.
    """

    def __init__(
        self,
        colony: str,
        worktree: Path,
        base_commit: str,
        emit: Callable[[Event], None],
        debounce_ms: int = 300,
        base: Callable[[], str] | None = None,
        refs: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        """`base`: asked (in a thread) at each count for the commit to count from, when it moves (a sync); `refs`:
        asked (in a thread) once, the files whose change moves that commit without a change in the worktree (the
        target branch's ref, moved by a merge): a change of one recounts."""
        self.colony = colony
        self.worktree = worktree
        self.base_commit = base_commit
        self._base = base
        self._ref_files = refs
        self._refs: frozenset[str] = frozenset()
        self.files: tuple[FileChange, ...] = ()
        self.root = ""  # the worktree's real path, once started: subscribers get paths under it
        self.mode = ""  # "inotify", or "polling: <why>" (for the Info tab)
        # Counters for tests and diagnostics: change batches seen, and how many of them led to a recount.
        self.batches = 0
        self.recomputes = 0
        self._emit = emit
        self._debounce_ms = debounce_ms
        self._watcher: FileWatcher | None = None
        self._dirs: _WatchedDirs | None = None
        self._index = ""
        self._pending: set[str] = set()  # relative paths changed since the last recount
        self._everything = False  # the index changed or events were lost: recount without asking git
        self._rules_changed = False
        self._worker: asyncio.Task[None] | None = None
        self._started = False
        self._published = False
        self._stopped = False
        self._errors: set[str] = set()

    async def start(self) -> None:
        """Start watching, then emit the initial list. Raises StemError if the worktree cannot be watched or read."""
        if self._started:
            raise RuntimeError(f"the change watcher of {self.colony} is already started")
        self._started = True
        root = await asyncio.to_thread(os.path.realpath, self.worktree)
        # Real paths, as the watched roots are: events name paths under the root they were given.
        self._index = await asyncio.to_thread(_index_file, Path(root))
        self.root = root
        dirs = self._dirs = _WatchedDirs(Path(root))
        await asyncio.to_thread(dirs.refresh)
        watcher = self._watcher = FileWatcher(
            quiet=_QUIET, max_delay=self._debounce_ms / 1000, on_fallback=self._fell_back
        )
        try:
            await watcher.watch_tree(root, skip_dir=dirs.skip)
            # Staging (a rename, git rm --cached) changes only the index: in <repo>/.git/worktrees/<name>/ for a
            # linked worktree, in the skipped .git/ of a main one. Only that file of its directory.
            await watcher.watch_dir(os.path.dirname(self._index), names=[os.path.basename(self._index)])
            if self._ref_files is not None:
                refs = await asyncio.to_thread(self._ref_files)
                self._refs = await self._watch_files(watcher, refs)
        except OSError as exc:
            await self.stop()
            raise StemError(f"cannot watch {root} for changes ({self.colony}): {exc.strerror or exc}") from exc
        self.mode = watcher.mode
        watcher.subscribe(self._on_changes)
        # Counted only now that the watches exist: a change made during the count still produces an event.
        try:
            await self._recount(initial=True)
        except BaseException:
            await self.stop()
            raise

    @staticmethod
    async def _watch_files(watcher: FileWatcher, files: Sequence[str]) -> frozenset[str]:
        """Watch each of `files` by name in its directory (a ref is replaced by a rename); those whose directory does
        not exist (no branch there yet) are left out. The paths watched."""
        by_dir: dict[str, list[str]] = {}
        for path in files:
            by_dir.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
        watched: set[str] = set()
        for folder, names in by_dir.items():
            try:
                await watcher.watch_dir(folder, names=names)
            except OSError:
                continue
            watched.update(os.path.join(folder, name) for name in names)
        return frozenset(watched)

    def subscribe(self, callback: Callable[[Changes], None]) -> Callable[[], None]:
        """Every batch of raw changes under the worktree (absolute paths, nothing filtered by git), through the same
        inotify instance; returns the function that unsubscribes. Only once started."""
        if self._watcher is None:
            raise RuntimeError(f"the change watcher of {self.colony} is not running")
        return self._watcher.subscribe(callback)

    async def stop(self) -> None:
        """Stop watching; no event is emitted after this returns."""
        self._stopped = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.close()
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            # A recount in progress finishes in its thread; its result is dropped (`_stopped`).
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    # on the loop ---------------------------------------------------------------------------------------------

    def _on_changes(self, changes: Changes) -> None:
        if self._stopped:
            return
        prefix = self.root + os.sep
        relevant = False
        for path in changes.paths:
            if path == self._index or path == self.root or path in self._refs:
                self._everything = relevant = True
            elif path.startswith(prefix):
                parts = path[len(prefix) :].split(os.sep)
                # Nothing inside .git (a nested repository's, or this one's .git file) is work-tree content.
                if ".git" in parts:
                    continue
                if parts[-1] == ".gitignore":
                    self._rules_changed = True
                self._pending.add(path[len(prefix) :])
                relevant = True
        if changes.overflow:
            self._everything = relevant = True
        if not relevant:
            return
        self.batches += 1
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"changes-{self.colony}")

    async def _work(self) -> None:
        """Recount for the batches that matter, one recount at a time, so results are published in the order they
        were computed; batches arriving meanwhile are taken together on the next round."""
        assert self._watcher is not None and self._dirs is not None
        watcher, dirs, root = self._watcher, self._dirs, Path(self.root)
        while (self._pending or self._everything) and not self._stopped:
            paths, everything = sorted(self._pending), self._everything
            self._pending, self._everything = set(), False
            try:
                if self._rules_changed:
                    # An ignore rule changed: a skipped directory may now hold listed files, so look again.
                    self._rules_changed = False
                    await asyncio.to_thread(dirs.refresh)
                    await watcher.rescan()
                if everything or await asyncio.to_thread(_any_not_ignored, root, paths):
                    await self._recount(initial=False)
            except Exception as exc:  # a bug: say so, as the list may be stale until the next change
                self._warn(f"changed-file list may be out of date: {describe(exc)}")

    def _count(self) -> tuple[FileChange, ...]:
        if self._base is not None:
            self.base_commit = self._base()
        return changed_files(Path(self.root), self.base_commit)

    async def _recount(self, initial: bool) -> None:
        self.recomputes += 1
        try:
            files = await asyncio.to_thread(self._count)
        except (StemError, OSError) as exc:
            if initial:
                raise
            self._warn(f"could not list changed files: {exc}")
            return
        self._publish(files)

    def _fell_back(self, reason: str) -> None:
        self.mode = f"polling: {reason}"
        self._emit_notice("warning", f"watching by polling: {reason}")

    def _warn(self, message: str) -> None:
        if message not in self._errors:  # once per distinct problem, not per batch
            self._errors.add(message)
            self._emit_notice("warning", message)

    def _publish(self, files: tuple[FileChange, ...]) -> None:
        if self._stopped or (self._published and files == self.files):
            return
        self.files = files
        self._published = True
        self._emit(ChangesUpdated(self.colony, files))

    def _emit_notice(self, level: str, message: str) -> None:
        if not self._stopped:
            self._emit(Notice(self.colony, level, f"{self.colony}: {message}"))
