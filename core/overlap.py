"""Which colonies change the same files, and the same lines: the overlap warning of the live view.

Each colony's work is measured from its merge base with its target (so the target's commits it synced in are not
its own), committed and uncommitted, untracked files included. Two colonies that change one file overlap; they
overlap in a hunk when their changed line ranges of the file they started from meet (overlap or touch, as git's
three-way merge counts a conflict), with one colony's ranges mapped onto the other's base when their bases differ.
A file git reads as binary has no lines: two colonies that both change one conflict as a whole (`binary`); a file
that is the same in both worktrees (both made the same change) merges clean, text or binary, and is no conflict.
Blocking (git processes): call it in a thread from async code.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.changes import added_lines
from core.errors import StemError
from core.merge import work_base
from core.registry import ColonyRecord
from core.worktree import git_bytes, give_back_git_dir, refuse_symlinks, worktree_owner


class OverlapLevel(StrEnum):
    NONE = "none"
    FILE = "file"  # both colonies change the file
    HUNK = "hunk"  # ...and the same lines (overlapping or touching ranges of the file they started from)


@dataclass(frozen=True, slots=True)
class ColonyWork:
    """A colony's work for the overlap analysis: its worktree measured from `base` (the merge base with its
    target); `paths` when the caller knows them already (else they are listed here)."""

    name: str
    repo: str
    worktree: Path
    base: str
    paths: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two colonies change the same file; `level` HUNK when the same lines too. `lines` pairs each colony's lines
    (in its own version of the file) for the overlapping hunks."""

    path: str
    colonies: tuple[str, str]
    level: OverlapLevel
    lines: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = ()
    binary: bool = False  # git reads the file as binary in either colony: no lines to tell, the whole file meets

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "colonies": list(self.colonies),
            "level": str(self.level),
            "lines": [[list(a), list(b)] for a, b in self.lines],
            "binary": self.binary,
        }


@dataclass(frozen=True, slots=True)
class OverlapReport:
    overlaps: tuple[Overlap, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)  # colony -> why its work could not be read

    def of(self, colony: str) -> tuple[Overlap, ...]:
        return tuple(o for o in self.overlaps if colony in o.colonies)

    def level(self, colony: str) -> OverlapLevel:
        levels = {o.level for o in self.of(colony)}
        return next((lv for lv in (OverlapLevel.HUNK, OverlapLevel.FILE) if lv in levels), OverlapLevel.NONE)

    def as_dict(self) -> dict[str, Any]:
        return {"overlaps": [o.as_dict() for o in self.overlaps], "errors": dict(self.errors)}


@dataclass(frozen=True, slots=True)
class _Hunk:
    base: tuple[int, int]  # [start, end) 0-based lines of the base file it replaces; start == end inserts there
    new: tuple[int, int]  # 1-based inclusive lines of the new file; (n + 1, n) when it only removes lines
    added: str = ""  # the lines it puts there (its "+" lines): two colonies making the same change do not conflict


_LinePair = tuple[tuple[int, int], tuple[int, int]]
_Hunks = tuple[_Hunk, ...] | None  # None: the whole file (binary, untracked, or could not be read)
_BINARY = re.compile(r"^(Binary files .* differ|GIT binary patch)$")
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _quoted(path: str) -> str:
    """A path as git writes it in a diff header (C-quoted when it has to be; core.quotePath is off)."""
    if not any(ch in path for ch in '"\\') and all(32 <= ord(ch) != 127 for ch in path):
        return path
    escapes = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\a": "\\a", "\b": "\\b"}
    body = "".join(escapes.get(ch, f"\\{ord(ch):03o}" if ord(ch) < 32 or ord(ch) == 127 else ch) for ch in path)
    return f'"{body}"'


def _parse_hunks(patch: str, paths: Iterable[str], binary: set[str] | None = None) -> dict[str, _Hunks]:
    """Hunks per path of a `-U0` patch of the given paths; a path without text hunks (binary) is whole-file. The
    paths git says are binary are added to `binary`."""
    headers = {}
    for path in paths:
        plain = f"diff --git a/{path} b/{path}"
        headers[plain] = path
        if _quoted(path) != path:
            inner = _quoted(path)[1:-1]
            headers[f'diff --git "a/{inner}" "b/{inner}"'] = path
    found: dict[str, _Hunks] = {}
    current: str | None = None
    added: list[str] = []

    def take_added() -> None:
        # The "+" lines of the hunk just read go with it.
        hunks = found.get(current) if current is not None else None
        if added and hunks and current is not None:
            found[current] = (*hunks[:-1], dataclasses.replace(hunks[-1], added="\n".join(added)))
        added.clear()

    for line in patch.splitlines():
        if line.startswith("diff --git "):
            take_added()
            current = headers.get(line)
            if current is not None:
                found[current] = None  # until a text hunk shows it is not binary
        elif current is not None and line.startswith("+") and found.get(current):
            added.append(line[1:])
        elif current is not None and binary is not None and not found.get(current) and _BINARY.match(line):
            binary.add(current)
        elif current is not None and line.startswith("@@ "):
            take_added()
            match = _HUNK_HEADER.match(line)
            if match is None:
                continue
            old_start, old_count, new_start, new_count = (
                int(match.group(1)),
                int(match.group(2) or 1),
                int(match.group(3)),
                int(match.group(4) or 1),
            )
            base = (old_start, old_start) if old_count == 0 else (old_start - 1, old_start - 1 + old_count)
            new = (new_start + 1, new_start) if new_count == 0 else (new_start, new_start + new_count - 1)
            found[current] = (*(found[current] or ()), _Hunk(base, new))
    take_added()
    return found


def _work_paths(work: ColonyWork) -> set[str]:
    if work.paths is not None:
        return set(work.paths)
    # diff-index trusts the index's stat data: files whose inode data changed but not their content (a chown of the
    # worktree for the colony's user, a checkout by another process) would read as changed. Refresh it first, as
    # `git status` does; a refresh that cannot take the index lock (the agent runs git) only leaves it as it was.
    owner = worktree_owner(work.worktree)
    try:
        refuse_symlinks(work.worktree, work.name)
    except StemError:
        pass  # a symlink where git writes: no refresh (a stat-only change may then read as one)
    else:
        git_bytes(["update-index", "-q", "--refresh"], work.worktree)
        give_back_git_dir(owner, work.worktree)  # the index it rewrote stays the colony's, for its agent's git
    tracked = git_bytes(["diff-index", "--name-only", "-z", "--no-renames", work.base, "--"], work.worktree)
    if tracked.returncode != 0:
        said = os.fsdecode(tracked.stderr).strip().splitlines()
        raise StemError(f"git diff-index failed in {work.worktree}: {said[-1] if said else tracked.returncode}")
    others = git_bytes(["ls-files", "--others", "--exclude-standard", "-z"], work.worktree)
    return {os.fsdecode(p) for p in (*tracked.stdout.split(b"\0"), *others.stdout.split(b"\0")) if p}


def _work_hunks(work: ColonyWork, paths: set[str], binary: set[str]) -> dict[str, _Hunks]:
    """Each of `paths` in the colony's worktree against its base; untracked files count as whole-file changes. The
    paths that git reads as binary in this colony are added to `binary` (untracked ones by git's own test: a NUL
    near the start)."""
    ordered = sorted(paths)
    proc = git_bytes(
        ["--literal-pathspecs", "diff-index", "-p", "-U0", "--no-color", "--no-ext-diff", "--no-textconv",
         "--no-renames", work.base, "--", *ordered],
        work.worktree,
    )  # fmt: skip
    hunks = _parse_hunks(os.fsdecode(proc.stdout), ordered, binary) if proc.returncode == 0 else {}
    for path in ordered:
        if path not in hunks:  # not tracked: untracked, so new in the worktree
            found = added_lines(work.worktree / path)
            if found is not None and found[1]:
                binary.add(path)
    return {path: hunks.get(path) for path in ordered}


def _same_file(a: Path, b: Path) -> bool:
    """Whether two worktrees hold the same thing at a path (the same bytes, the same link, or nothing in both):
    the same change made in both, which git merges clean."""
    try:
        first, second = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return not os.path.lexists(a) and not os.path.lexists(b)
    except OSError:
        return False
    if stat.S_ISLNK(first.st_mode) or stat.S_ISLNK(second.st_mode):
        return stat.S_ISLNK(first.st_mode) == stat.S_ISLNK(second.st_mode) and os.readlink(a) == os.readlink(b)
    if not (stat.S_ISREG(first.st_mode) and stat.S_ISREG(second.st_mode)) or first.st_mode != second.st_mode:
        return False
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _base_hunks(repo: Path, a: str, b: str, paths: Iterable[str]) -> dict[str, _Hunks]:
    """How each path changed from commit `a` to commit `b`: the map from one colony's base to another's."""
    ordered = sorted(paths)
    proc = git_bytes(
        ["--literal-pathspecs", "diff-tree", "-p", "-U0", "--no-color", "--no-ext-diff", "--no-textconv",
         "--no-renames", a, b, "--", *ordered],
        repo,
    )  # fmt: skip
    return _parse_hunks(os.fsdecode(proc.stdout), ordered) if proc.returncode == 0 else dict.fromkeys(ordered)


def _map_pos(x: int, moves: tuple[_Hunk, ...], is_end: bool) -> int:
    """A line boundary of one base in another's coordinates; inside a changed range it widens to cover it."""
    shift = 0
    for hunk in moves:
        start, end = hunk.base
        new_start = hunk.new[0] - 1
        new_end = new_start + (hunk.new[1] - hunk.new[0] + 1)
        if start >= x:
            break
        if x < end:
            return new_end if is_end else new_start
        shift = new_end - end
    return x + shift


def _touching(a: tuple[int, int], b: tuple[int, int]) -> bool:
    # Changes that overlap or touch are one conflict to git's three-way merge.
    return a[0] <= b[1] and b[0] <= a[1]


def _compare(a: _Hunks, b: _Hunks, moves: _Hunks | tuple[()]) -> tuple[bool, tuple[_LinePair, ...]]:
    """Whether two colonies' hunks of one file meet, with the pairs that do; `moves` maps b's base to a's."""
    if a is None or b is None or moves is None:
        return True, ()
    pairs: list[_LinePair] = []
    for hb in b:
        base = (_map_pos(hb.base[0], moves, False), _map_pos(hb.base[1], moves, True)) if moves else hb.base
        pairs.extend(
            (ha.new, hb.new)
            for ha in a
            if _touching(ha.base, base) and not (not moves and ha.base == hb.base and ha.added == hb.added)
        )  # the same change made by both (a commit they share) merges clean
    return bool(pairs), tuple(pairs)


def find_overlaps(works: Sequence[ColonyWork]) -> OverlapReport:
    """Pairs of colonies of one repository that change the same file, and whether the same lines (measured on the
    file each started from, mapped between their bases when they differ). One `diff-index` per colony for its
    paths (unless given), then hunks only for the paths two colonies share."""
    errors: dict[str, str] = {}
    paths: dict[str, set[str]] = {}
    for work in works:
        try:
            paths[work.name] = _work_paths(work)
        except StemError as exc:
            errors[work.name] = str(exc)
    listed = [w for w in works if w.name in paths]
    shared: dict[str, set[str]] = {w.name: set() for w in listed}
    pairs: list[tuple[ColonyWork, ColonyWork, list[str]]] = []
    for i, first in enumerate(listed):
        for second in listed[i + 1 :]:
            if first.repo != second.repo:
                continue
            common = sorted(paths[first.name] & paths[second.name])
            if common:
                pairs.append((first, second, common))
                shared[first.name].update(common)
                shared[second.name].update(common)
    binary: dict[str, set[str]] = {w.name: set() for w in listed}
    hunks = {w.name: _work_hunks(w, shared[w.name], binary[w.name]) for w in listed if shared[w.name]}
    overlaps: list[Overlap] = []
    for first, second, common in pairs:
        moves: dict[str, _Hunks] = {}
        if first.base != second.base:
            moves = _base_hunks(Path(first.repo), second.base, first.base, common)
        for path in common:
            same, lines = _compare(hunks[first.name][path], hunks[second.name][path], moves.get(path, ()))
            if same and _same_file(first.worktree / path, second.worktree / path):
                same, lines = False, ()  # the same result in both (an untracked file both made alike) merges clean
            is_binary = path in binary[first.name] or path in binary[second.name]
            level = OverlapLevel.HUNK if same else OverlapLevel.FILE
            overlaps.append(Overlap(path, (first.name, second.name), level, () if is_binary else lines, is_binary))
    return OverlapReport(tuple(overlaps), errors)


def overlap_work(records: Sequence[ColonyRecord]) -> list[ColonyWork]:
    """ColonyWork for each colony whose worktree exists, measured from `work_base`: the target's commits it synced
    in (a sync's merge not yet concluded too) are not counted as its own."""
    works = []
    for rec in records:
        worktree = Path(rec.worktree)
        if not worktree.is_dir() or not rec.base_commit:
            continue
        works.append(ColonyWork(rec.name, rec.repo, worktree, work_base(rec)))
    return works


__all__ = ["ColonyWork", "Overlap", "OverlapLevel", "OverlapReport", "find_overlaps", "overlap_work"]
