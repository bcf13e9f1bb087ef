"""Getting a colony's work back: its diff against its target branch, a commit of its uncommitted work, the merge
into the target, the sync of the target into the colony, and the status the live view shows (ahead/behind, "merges
clean" or "conflicts: N files"). Which colonies change the same lines is core/overlap.py.

A merge never touches the user's checkout: it is computed with `git merge-tree --write-tree`, written with
`git commit-tree`, and the target ref moves by compare-and-swap (`git update-ref REF NEW OLD`), recomputed when the
target moved meanwhile. Only a worktree that has the target checked out follows, the way `git merge --ff-only`
brings it (`git read-tree -m -u OLD NEW`: its other local changes and untracked files stay). Plumbing only, so no
hook runs; `stem sync`, which merges inside the colony's own worktree for its agent, turns hooks off.
Everything here blocks: call it in a thread from async code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.config import COLONY_FILE
from core.errors import BadRef, StemError
from core.events import FileChange
from core.locations import write_atomically
from core.locks import checkpoint as _checkpoint
from core.locks import file_lock, repo_lock_path
from core.registry import ColonyRecord
from core.words import plural
from core.worktree import (
    SQUASHED_REFS,
    Owner,
    branch_of,
    common_dir,
    git_bytes,
    git_dir_of,
    give_back,
    give_back_git_dir,
    owner_of,
    refuse_symlinks,
    worktree_owner,
    worktrees,
)

CAS_ATTEMPTS = 5  # a target that moves this many times in a row while we merge is reported, not chased forever
_NO_HOOKS = ["-c", "core.hooksPath=/dev/null"]
# Files in a worktree's git dir that say an operation is under way there (HEAD must not move under it).
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
}
_UNMERGED = {"DD", "AU", "UD", "UA", "DU", "AA", "UU"}  # status codes of paths with conflicts in the index


class BadTarget(BadRef):
    """The branch to merge into does not exist, is the colony's own, or cannot be told (a detached HEAD)."""


class NothingToMerge(StemError):
    """The target already has every change of the colony's branch."""


class NothingToCommit(StemError):
    """The colony's worktree has no uncommitted change."""


class TargetDirty(StemError):
    """The target is checked out with uncommitted changes in files the merge changes, or an operation under way."""

    def __init__(self, message: str, files: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.files = tuple(files)


class MergeConflict(StemError):
    """The colony's branch does not merge cleanly into its target; nothing was changed."""

    def __init__(self, message: str, colony: str, target: str, conflicts: Sequence[Conflict]) -> None:
        super().__init__(message)
        self.colony, self.target, self.conflicts = colony, target, tuple(conflicts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "colony": self.colony,
            "target": self.target,
            "result": "conflict",
            "error": str(self),
            "conflicts": [c.as_dict() for c in self.conflicts],
        }


class MergeState(StrEnum):
    """How a colony's branch stands against its target (the live view's "merges clean" / "conflicts: N files")."""

    NOTHING = "nothing"  # the target has every commit of the branch
    FAST_FORWARD = "fast-forward"  # the target has no commit the branch lacks
    CLEAN = "clean"  # both moved; merge-tree merges them without conflict
    CONFLICTS = "conflicts"
    UNKNOWN = "unknown"  # no target to compare with (`error` says why)


class MergeKind(StrEnum):
    FAST_FORWARD = "fast-forward"
    MERGE = "merge"
    SQUASH = "squash"


# results ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    """One conflicting hunk: 1-based inclusive line ranges on each side; (n, n - 1) is no line (before line n)."""

    target: tuple[int, int]
    colony: tuple[int, int]

    def describe(self, target: str, colony: str) -> str:
        return f"{_lines(self.target)} on {target}, {_lines(self.colony)} on {colony}"


def _lines(span: tuple[int, int]) -> str:
    start, end = span
    if end < start:
        return f"nothing (at line {start})"
    return f"line {start}" if start == end else f"lines {start}-{end}"


@dataclass(frozen=True, slots=True)
class Conflict:
    path: str
    kind: str  # content, add/add, modify/delete, rename/delete, binary, ... (git's own words)
    message: str = ""
    regions: tuple[Region, ...] = ()

    def describe(self, target: str, colony: str) -> str:
        where = "; ".join(r.describe(target, colony) for r in self.regions)
        return f"{self.path}: {self.kind}" + (f": {where}" if where else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "message": self.message,
            "regions": [{"target": list(r.target), "colony": list(r.colony)} for r in self.regions],
        }


@dataclass(frozen=True, slots=True)
class Target:
    """The branch a colony merges into; `note` says how it was found when the colony's record did not say."""

    branch: str
    note: str = ""

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"


@dataclass(frozen=True, slots=True)
class MergeStatus:
    colony: str
    target: str
    state: MergeState
    ahead: int = 0  # commits on the colony's branch the target lacks
    behind: int = 0  # commits on the target the colony's branch lacks
    conflicts: tuple[str, ...] = ()  # paths
    note: str = ""
    error: str = ""

    @property
    def summary(self) -> str:
        """What the list shows: "merges clean", "conflicts: 2 files", "nothing to merge"."""
        if self.state == MergeState.CONFLICTS:
            return f"conflicts: {plural(len(self.conflicts), 'file')}"
        if self.state in (MergeState.CLEAN, MergeState.FAST_FORWARD):
            return "merges clean"
        if self.state == MergeState.NOTHING:
            return "nothing to merge"
        return self.error or "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ahead": self.ahead,
            "behind": self.behind,
            "merge": str(self.state),
            "merge_summary": self.summary,
            "conflicts": list(self.conflicts),
            "merge_note": self.note or self.error,
        }


@dataclass(frozen=True, slots=True)
class MergeResult:
    colony: str
    target: str
    how: MergeKind
    old: str  # the target before
    new: str  # the target after
    commits: int  # commits of the colony merged
    files: tuple[str, ...]  # paths the target changed in
    checkout: str | None = None  # the worktree that has the target checked out and followed
    retries: int = 0  # times the target moved while merging (each time recomputed on its new tip)
    uncommitted: tuple[str, ...] = ()  # the colony's uncommitted paths, not part of the merge
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "colony": self.colony,
            "target": self.target,
            "result": str(self.how),
            "old": self.old,
            "new": self.new,
            "commits": self.commits,
            "files": list(self.files),
            "checkout": self.checkout,
            "retries": self.retries,
            "uncommitted": list(self.uncommitted),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class CommitResult:
    colony: str
    branch: str
    commit: str
    parent: str
    files: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "colony": self.colony,
            "branch": self.branch,
            "commit": self.commit,
            "parent": self.parent,
            "files": list(self.files),
        }


@dataclass(frozen=True, slots=True)
class SyncResult:
    colony: str
    target: str
    how: str  # "up to date", "fast-forward", "merge", "conflicts"
    old: str  # the colony's HEAD before
    new: str  # ...and after (its old HEAD while conflicts wait for the agent)
    commits: int  # commits of the target brought in
    conflicts: tuple[Conflict, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "colony": self.colony,
            "target": self.target,
            "result": self.how,
            "old": self.old,
            "new": self.new,
            "commits": self.commits,
            "conflicts": [c.as_dict() for c in self.conflicts],
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class ColonyDiff:
    colony: str
    target: str  # "" when measured from the spawn's base commit (no target branch)
    base: str  # the commit the diff starts from: the merge base of the colony and its target
    files: tuple[FileChange, ...]
    uncommitted: frozenset[str]  # paths with uncommitted changes
    text: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "colony": self.colony,
            "target": self.target,
            "base": self.base,
            "files": [
                {
                    "path": f.path,
                    "status": f.status,
                    "added": f.added,
                    "removed": f.removed,
                    "uncommitted": f.path in self.uncommitted,
                }
                for f in self.files
            ],
            "diff": self.text,
            "note": self.note,
        }


# git ----------------------------------------------------------------------------------------------------------------


def _said(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = os.fsdecode(proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def _out(args: list[str], cwd: Path, *, input: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
    proc = git_bytes(args, cwd, input=input, env=env)
    if proc.returncode != 0:
        said = os.fsdecode(proc.stderr)
        if "Please tell me who you are" in said or "unable to auto-detect email" in said:
            raise StemError(
                "git does not know who is committing: set it once with git config --global user.name NAME "
                "and git config --global user.email EMAIL (or GIT_AUTHOR_NAME/EMAIL)"
            )
        command = next((a for a in args if not a.startswith("-")), "")
        raise StemError(f"git {command} failed in {cwd}: {_said(proc)}")
    return os.fsdecode(proc.stdout).strip()


def _rev(repo: Path, ref: str) -> str | None:
    proc = git_bytes(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo)
    return os.fsdecode(proc.stdout).strip() if proc.returncode == 0 else None


def _is_ancestor(repo: Path, a: str, b: str) -> bool:
    proc = git_bytes(["merge-base", "--is-ancestor", a, b], repo)
    if proc.returncode not in (0, 1):
        raise StemError(f"git merge-base failed in {repo}: {_said(proc)}")
    return proc.returncode == 0


def _count_commits(repo: Path, revs: list[str]) -> int:
    return int(_out(["rev-list", "--count", *revs], repo) or 0)


def _split_z(data: bytes) -> list[str]:
    return [os.fsdecode(token) for token in data.split(b"\0") if token]


def _touched(repo: Path, old: str, new: str) -> tuple[str, ...]:
    """Paths that differ between two commits (a rename is both its paths)."""
    proc = git_bytes(["diff-tree", "-r", "-z", "--no-renames", "--name-only", old, new], repo)
    if proc.returncode != 0:
        raise StemError(f"git diff-tree failed in {repo}: {_said(proc)}")
    return tuple(_split_z(proc.stdout))


def _status(path: Path) -> list[tuple[str, str]]:
    """(two-letter status, path) of every uncommitted change in a worktree, renames as both paths, read without
    taking its index lock (the user's or the agent's git may be running there)."""
    proc = git_bytes(["--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all"], path)
    if proc.returncode != 0:
        raise StemError(f"git status failed in {path}: {_said(proc)}")
    tokens = [os.fsdecode(t) for t in proc.stdout.split(b"\0")]
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens) and tokens[i]:
        code, name = tokens[i][:2], tokens[i][3:]
        found.append((code, name))
        i += 1
        if code[0] in "RC" or code[1] in "RC":  # the path it came from follows
            found.append((code, tokens[i]))
            i += 1
    return found


def _in_progress(path: Path) -> str:
    """What operation (a merge, a rebase...) is under way in the worktree at `path`, or ""."""
    gitdir = Path(_out(["rev-parse", "--absolute-git-dir"], path))
    return next((what for name, what in _IN_PROGRESS.items() if (gitdir / name).exists()), "")


def _head_branch(path: Path) -> str:
    proc = git_bytes(["symbolic-ref", "--quiet", "HEAD"], path)
    full = os.fsdecode(proc.stdout).strip()
    return full[len("refs/heads/") :] if proc.returncode == 0 and full.startswith("refs/heads/") else ""


def _branch_tips(repo: Path) -> dict[str, str]:
    """Every local branch and squash record of the repository: full ref name -> commit, from one git process."""
    out = _out(["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/", SQUASHED_REFS], repo)
    return {ref: sha for sha, _, ref in (line.partition(" ") for line in out.splitlines())}


def _squashed_ref(rec: ColonyRecord) -> str:
    return f"{SQUASHED_REFS}{rec.branch}"


# The identity and date of `_after_squash`'s commits: always the same, so that the same target and squash record give
# the same commit (written to the object store once, not at every look at the merge status).
_SQUASH_BASE_ENV = {
    "GIT_AUTHOR_NAME": "stem",
    "GIT_AUTHOR_EMAIL": "stem@localhost",
    "GIT_AUTHOR_DATE": "@0 +0000",
    "GIT_COMMITTER_NAME": "stem",
    "GIT_COMMITTER_EMAIL": "stem@localhost",
    "GIT_COMMITTER_DATE": "@0 +0000",
}


def _after_squash(repo: Path, tip: str, src: str, squashed: str | None) -> str:
    """What to merge the colony's `src` into, for the target at `tip`: `tip` itself, or, once a squash merge took the
    colony's branch up to `squashed` (a commit the target has the changes of but not the ancestry), a commit with
    `tip`'s files whose parents are `tip` and `squashed`, so that git's merge starts from what the squash took rather
    than from the colony's base, and sees neither the squashed changes nor the target's edits of them since as
    conflicts. Never referenced: the merge commit itself has `tip` (and `src`) as parents."""
    if not squashed or not _is_ancestor(repo, squashed, src) or _is_ancestor(repo, squashed, tip):
        return tip
    return _out(
        ["commit-tree", f"{tip}^{{tree}}", "-p", tip, "-p", squashed, "-m", "stem: what a squash merge took"],
        repo,
        env=_SQUASH_BASE_ENV,
    )


# targets ------------------------------------------------------------------------------------------------------------


def resolve_target(
    rec: ColonyRecord, into: str | None = None, tips: Mapping[str, str] | None = None, option: str = "--into"
) -> Target:
    """The branch the colony merges into: `into`, else the one recorded at spawn, else (a colony made before
    targets were recorded) the branch its base names now, said in the note. BadTarget if there is none; its
    message names `option` as the way to give one."""
    repo = Path(rec.repo)

    def exists(branch: str) -> bool:
        if tips is not None:
            return f"refs/heads/{branch}" in tips
        # The ref itself: `refs/heads/main~1` names a commit to rev-parse, not a branch a merge could move.
        return git_bytes(["show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], repo).returncode == 0

    note = ""
    if into is not None:
        branch = into.removeprefix("refs/heads/")
        if not branch or branch.startswith("-") or not exists(branch):
            raise BadTarget(f"no branch {into!r} in {repo} ({option} takes a local branch)")
    elif rec.target:
        branch = rec.target
        if not exists(branch):
            raise BadTarget(
                f"{rec.name}'s target branch {branch} is no longer in {repo}: name one with {option} BRANCH"
            )
    else:
        branch = branch_of(repo, rec.base_ref)
        if not branch:
            if rec.base_ref == "HEAD":
                raise BadTarget(
                    f"{repo} has a detached HEAD, so {rec.name} has no branch to merge into: "
                    f"name one with {option} BRANCH"
                )
            raise BadTarget(f"{rec.name} was spawned from {rec.base_ref}, not a branch: name one with {option} BRANCH")
        where = f"the branch {repo} has checked out now" if rec.base_ref == "HEAD" else f"the branch {rec.base_ref}"
        note = f"{rec.name}'s target was not recorded at spawn (an older colony): using {branch}, {where}"
    if branch == rec.branch:
        raise BadTarget(f"{branch} is {rec.name}'s own branch: merge it into another branch")
    return Target(branch, note)


# merge-tree -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TreeMerge:
    tree: str
    clean: bool
    conflicts: tuple[Conflict, ...]  # without regions


def _merge_trees(repo: Path, pairs: Sequence[tuple[str, str]]) -> list[_TreeMerge]:
    """`git merge-tree --write-tree` of each (ours, theirs) pair, all in one git process (--stdin)."""
    if not pairs:
        return []
    data = "".join(f"{ours} {theirs}\n" for ours, theirs in pairs).encode()
    proc = git_bytes(["merge-tree", "--write-tree", "--stdin", "-z", "--name-only"], repo, input=data)
    if proc.returncode == 129:  # usage: an older git
        version = os.fsdecode(git_bytes(["--version"], repo).stdout).strip()
        raise StemError(f"merging needs git 2.39 or newer (git merge-tree --write-tree --stdin); this is {version}")
    if proc.returncode != 0:
        raise StemError(f"git merge-tree failed in {repo}: {_said(proc)}")
    tokens = [os.fsdecode(t) for t in proc.stdout.split(b"\0")]
    results: list[_TreeMerge] = []
    i = 0
    for _ in pairs:
        status, tree = tokens[i], tokens[i + 1]
        i += 2
        if status not in ("0", "1"):
            raise StemError(f"git merge-tree could not merge in {repo} (status {status})")
        paths: list[str] = []
        while tokens[i]:  # conflicted files, then an empty token (for a clean merge: only that token)
            paths.append(tokens[i])
            i += 1
        i += 1
        kinds: dict[str, tuple[str, str]] = {}
        if status == "0":
            # Messages (given for conflicts only): <n> NUL <path>... <type> NUL <message> NUL, until the empty
            # token that ends this merge.
            while i < len(tokens) and tokens[i]:
                n = int(tokens[i])
                named = tokens[i + 1 : i + 1 + n]
                kind, message = tokens[i + 1 + n], tokens[i + 2 + n].strip()
                i += n + 3
                if kind.startswith("CONFLICT"):
                    for path in named:
                        kinds.setdefault(path, (_kind(kind, message), message))
            i += 1
        conflicts = tuple(Conflict(p, *kinds.get(p, ("content", ""))) for p in paths)
        results.append(_TreeMerge(tree, status == "1", conflicts))
    return results


def _kind(kind: str, message: str) -> str:
    """git's stable conflict type ("CONFLICT (contents)") in a person's words; add/add is only in the message."""
    inner = kind[kind.find("(") + 1 : kind.rfind(")")] if "(" in kind else kind
    if inner == "contents":
        found = re.match(r"CONFLICT \(([^)]*)\)", message)
        inner = found.group(1) if found else "content"
    return inner


_MARKER = re.compile(rb"^(<{7,}|\|{7,}|={7,}|>{7,})(?: |$)")


def _regions(text: bytes, ours_is_target: bool) -> tuple[Region, ...]:
    """The conflict hunks in a file with conflict markers, as line ranges of each side's own version."""
    regions: list[Region] = []
    ours = theirs = 0  # lines of each side's file passed so far
    section = ""
    ours_start = ours_end = theirs_start = 0
    for line in text.splitlines():
        marker = _MARKER.match(line)
        sign = marker.group(1)[:1] if marker else b""
        if section == "":
            if sign == b"<":
                section, ours_start = "ours", ours + 1
            else:
                ours += 1
                theirs += 1
        elif section in ("ours", "base") and sign == b"=":
            section, ours_end, theirs_start = "theirs", ours, theirs + 1
        elif section == "ours":
            if sign == b"|":
                section = "base"
            else:
                ours += 1
        elif section == "theirs":
            if sign == b">":
                section = ""
                mine, other = (ours_start, ours_end), (theirs_start, theirs)
                regions.append(Region(mine, other) if ours_is_target else Region(other, mine))
            else:
                theirs += 1
    return tuple(regions)


def _blobs(repo: Path, names: Sequence[str]) -> dict[str, bytes]:
    """Contents of `<tree>:<path>` names, from one `git cat-file --batch`; missing names are left out."""
    names = [n for n in names if "\n" not in n]
    if not names:
        return {}
    proc = git_bytes(["cat-file", "--batch"], repo, input="".join(f"{n}\n" for n in names).encode())
    if proc.returncode != 0:
        return {}
    out, at, found = proc.stdout, 0, {}
    for name in names:
        end = out.index(b"\n", at)
        header = out[at:end].split()
        at = end + 1
        if len(header) == 3 and header[2].isdigit():
            size = int(header[2])
            if header[1] == b"blob":
                found[name] = out[at : at + size]
            at += size + 1
    return found


def _with_regions(repo: Path, tree: str, conflicts: Sequence[Conflict]) -> tuple[Conflict, ...]:
    blobs = _blobs(repo, [f"{tree}:{c.path}" for c in conflicts])
    return tuple(
        Conflict(c.path, c.kind, c.message, _regions(blobs.get(f"{tree}:{c.path}", b""), ours_is_target=True))
        for c in conflicts
    )


# status for the live view ---------------------------------------------------------------------------------------------


def merge_statuses(records: Sequence[ColonyRecord], workers: int = 4) -> list[MergeStatus]:
    """Ahead/behind and merge state of each colony against its target, in the order given: per repository one
    `for-each-ref`, one `rev-list` per colony (side by side), one `merge-tree --stdin` for all that diverged."""
    by_repo: dict[str, list[ColonyRecord]] = {}
    for rec in records:
        by_repo.setdefault(rec.repo, []).append(rec)
    found: dict[str, MergeStatus] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for repo_text, recs in by_repo.items():
            found.update(_repo_statuses(Path(repo_text), recs, pool))
    return [found[rec.name] for rec in records]


def merge_status(rec: ColonyRecord) -> MergeStatus:
    return merge_statuses([rec], workers=1)[0]


def _repo_statuses(repo: Path, recs: Sequence[ColonyRecord], pool: ThreadPoolExecutor) -> dict[str, MergeStatus]:
    out: dict[str, MergeStatus] = {}
    try:
        tips = _branch_tips(repo)
    except StemError as exc:
        return {r.name: MergeStatus(r.name, r.target, MergeState.UNKNOWN, error=str(exc)) for r in recs}
    jobs: list[tuple[ColonyRecord, Target, str, str]] = []
    for rec in recs:
        try:
            target = resolve_target(rec, tips=tips)
        except StemError as exc:
            out[rec.name] = MergeStatus(rec.name, rec.target, MergeState.UNKNOWN, error=str(exc))
            continue
        colony = tips.get(f"refs/heads/{rec.branch}")
        if colony is None:
            error = f"{rec.branch} is not in {rec.repo}"
            out[rec.name] = MergeStatus(rec.name, target.branch, MergeState.UNKNOWN, note=target.note, error=error)
            continue
        jobs.append((rec, target, tips[target.ref], colony))

    def counts(job: tuple[ColonyRecord, Target, str, str]) -> tuple[int, int]:
        rec, _target, tip, colony = job
        revs = ["--left-right", f"{colony}...{tip}"]
        squashed = tips.get(_squashed_ref(rec))
        if squashed:
            revs.append(f"^{squashed}")  # what a squash merge already took
        ahead, behind = _out(["rev-list", "--count", *revs], repo).split()
        return int(ahead), int(behind)

    diverged: list[tuple[ColonyRecord, Target, int, int]] = []
    pairs: list[tuple[str, str]] = []
    for job, (ahead, behind) in zip(jobs, pool.map(counts, jobs), strict=True):
        rec, target, tip, colony = job
        if ahead == 0 or behind == 0:
            state = MergeState.NOTHING if ahead == 0 else MergeState.FAST_FORWARD
            out[rec.name] = MergeStatus(rec.name, target.branch, state, ahead, behind, note=target.note)
        else:
            diverged.append((rec, target, ahead, behind))
            pairs.append((_after_squash(repo, tip, colony, tips.get(_squashed_ref(rec))), colony))
    for (rec, target, ahead, behind), merged in zip(diverged, _merge_trees(repo, pairs), strict=True):
        state = MergeState.CLEAN if merged.clean else MergeState.CONFLICTS
        paths = tuple(c.path for c in merged.conflicts)
        out[rec.name] = MergeStatus(rec.name, target.branch, state, ahead, behind, paths, note=target.note)
    return out


# merge ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    how: MergeKind
    new: str
    commits: int
    files: tuple[str, ...]


def _plan(rec: ColonyRecord, target: Target, old: str, src: str, squash: bool, message: str | None) -> _Plan:
    """The commit the target would move to, written but not referenced yet; MergeConflict or NothingToMerge."""
    repo = Path(rec.repo)
    nothing = NothingToMerge(f"{target.branch} already has every change of {rec.name} ({rec.branch})")
    if _is_ancestor(repo, src, old):
        raise nothing
    squashed = _rev(repo, _squashed_ref(rec))
    revs = [f"{old}..{src}", *([f"^{squashed}"] if squashed else [])]
    commits = _count_commits(repo, revs)
    if commits == 0:  # a squash merge took every commit: the target has their changes, not their ancestry
        raise nothing
    if not squash and _is_ancestor(repo, old, src):
        return _Plan(MergeKind.FAST_FORWARD, src, commits, _touched(repo, old, src))
    (merged,) = _merge_trees(repo, [(_after_squash(repo, old, src, squashed), src)])
    if not merged.clean:
        conflicts = _with_regions(repo, merged.tree, merged.conflicts)
        listed = ", ".join(c.path for c in conflicts[:3]) + (
            f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        )
        if _merge_heads(Path(rec.worktree)):  # a sync brought it in already
            advice = f"its agent is to resolve the sync's conflicts in its worktree, then stem commit {rec.name}"
        else:
            advice = f"stem sync {rec.name} brings {target.branch} into the colony for its agent to resolve"
        raise MergeConflict(
            f"{rec.name} does not merge cleanly into {target.branch}: {plural(len(conflicts), 'file')} in conflict "
            f"({listed}); nothing was changed ({advice})",
            rec.name,
            target.branch,
            conflicts,
        )
    if merged.tree == _out(["rev-parse", f"{old}^{{tree}}"], repo):
        raise nothing
    if message is None:
        if squash:
            subjects = _out(["log", "--reverse", "--format=* %s", *revs], repo)
            message = f"{rec.name}: {plural(commits, 'commit')} of {rec.branch}, squashed\n\n{subjects}\n"
        else:
            message = f"Merge colony {rec.name} ({rec.branch}) into {target.branch}\n"
    parents = ["-p", old] if squash else ["-p", old, "-p", src]
    new = _out(["commit-tree", merged.tree, *parents, "-F", "-"], repo, input=message.encode())
    return _Plan(MergeKind.SQUASH if squash else MergeKind.MERGE, new, commits, _touched(repo, old, new))


def _checkout_of(repo: Path, branch: str) -> Path | None:
    """The worktree (the main one or a linked one) that has `branch` checked out, if any still exists."""
    return next((w.path for w in worktrees(repo) if w.branch == branch and w.path.is_dir()), None)


def _check_checkout(checkout: Path, target: Target, touched: Iterable[str]) -> None:
    """The checkout of the target may follow the merge: no operation under way, no uncommitted change (untracked
    files included) in a path the merge changes. TargetDirty otherwise."""
    busy = _in_progress(checkout)
    if busy:
        raise TargetDirty(
            f"{target.branch} is checked out in {checkout} with {busy} under way: finish it there, then merge again"
        )
    status = _status(checkout)
    if any(code in _UNMERGED for code, _ in status):
        raise TargetDirty(f"{target.branch} is checked out in {checkout} with unresolved conflicts: resolve them first")
    touched_set = set(touched)
    dirty = sorted(
        {
            path
            for _, path in status
            if path in touched_set
            or any(path.startswith(t + "/") or t.startswith(path.rstrip("/") + "/") for t in touched_set)
        }
    )
    if dirty:
        listed = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise TargetDirty(
            f"{target.branch} is checked out in {checkout} with uncommitted changes to files the merge changes "
            f"({listed}): commit or stash them there, then merge again; nothing was changed",
            dirty,
        )


def checkout_problem(rec: ColonyRecord, into: str | None = None) -> str:
    """Why the checkout of the colony's target would refuse its merge now (an operation under way there, unresolved
    conflicts, uncommitted changes to files the merge changes), as the merge would say it; "" if nothing would. What
    the merge dialog shows before the user says yes."""
    repo = Path(rec.repo)
    try:
        target = resolve_target(rec, into)
        checkout = _checkout_of(repo, target.branch)
        src, old = _rev(repo, f"refs/heads/{rec.branch}"), _rev(repo, target.ref)
        if checkout is None or src is None or old is None:
            return ""
        base = _out(["merge-base", old, src], repo)
        _check_checkout(checkout, target, _touched(repo, base, src) if base else ())
    except TargetDirty as exc:
        return str(exc).removesuffix("; nothing was changed")
    except StemError:
        return ""  # the merge itself says what is wrong
    return ""


def _cas(repo: Path, ref: str, new: str, old: str, reason: str, checkout: Path | None = None) -> bool:
    """Move `ref` from `old` to `new` if it still is at `old`; False if it moved meanwhile. The ref keeps its owner
    (a colony's branch stays its uid's; packed, a colony/ branch goes to the owner of the `checkout` that has it)."""
    common = common_dir(repo)
    if (common / ref).is_symlink():  # git takes it for a symbolic ref: a colony's pointing at main would move main
        raise StemError(f"{ref} in {repo} is a symlink: Stem will not move what it points at")
    owner = owner_of(common / ref)
    if owner is None and checkout is not None and ref.startswith("refs/heads/colony/"):
        owner = worktree_owner(checkout)
    proc = git_bytes(["update-ref", "-m", reason, ref, new, old], repo)
    if proc.returncode == 0:
        give_back(owner, common, [ref, f"logs/{ref}"])
        return True
    if _rev(repo, ref) != old:
        return False
    raise StemError(f"git update-ref {ref} failed in {repo}: {_said(proc)}")


def _follow(checkout: Path, old: str, new: str, undo: bool = True) -> str:
    """Bring the checkout from `old` to `new` as a fast-forward does; git's reason if it could not (then it is
    as it was: read-tree checks everything before it writes, and what it wrote before the disk refused a file is
    put back by `_unfollow`, unless not to `undo`)."""
    owner = worktree_owner(checkout)  # what it writes stays the owner's: a colony's, the sudo user's
    git_bytes(["update-index", "-q", "--refresh"], checkout)  # stat-only changes must not read as edits
    proc = git_bytes(["read-tree", "-m", "-u", old, new], checkout)
    if proc.returncode != 0 and undo:
        give_back(owner, checkout, [p for p in _unfollow(checkout, old, new) if p != COLONY_FILE])
    _give_back_changes(owner, checkout, old)
    return "" if proc.returncode == 0 else os.fsdecode(proc.stderr).strip().replace("\n", " ")


def _unfollow(checkout: Path, old: str, new: str) -> list[str]:
    """Undo what a read-tree from `old` to `new` that failed half way (a full disk) wrote in the checkout: its index
    is still `old`'s (git writes it last) and every path the merge changes was clean (`_check_checkout`), so a path
    `old` has is written again from the index, and one it lacks (a file read-tree made, partly written: no untracked
    file was in its way, or it would have refused) is removed, first, to give the others its room. The paths
    written again."""
    proc = git_bytes(["diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new], checkout)
    tokens = _split_z(proc.stdout)
    made = [path for status, path in zip(tokens[::2], tokens[1::2], strict=False) if status == "A"]
    kept = [path for status, path in zip(tokens[::2], tokens[1::2], strict=False) if status != "A"]
    for path in made:
        target = checkout / path
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            target.unlink()
    if kept:
        stdin = b"".join(os.fsencode(path) + b"\0" for path in kept)
        git_bytes(["checkout-index", "-f", "-q", "-z", "--stdin"], checkout, input=stdin)
    return kept


# A merge moves its target's ref, then brings the checkout that has the target along (`_follow`). A stem process
# killed between the two (kill -9, the machine going down) would leave that checkout's index and files at the old
# commit under the new one: `git status` then shows the merge undone, staged, and a commit there reverts it. So the
# move is written down first, in a journal beside the repository's lock, and whoever takes the lock next (the next
# merge into the repository, `stem ls`, a UI, `stem gc`) finishes it.


def _journal_path(repo_lock: Path) -> Path:
    return repo_lock.with_name(repo_lock.name.replace("repo-", "follow-", 1).replace(".lock", ".json"))


def _write_journal(journal: Path, colony: str, repo: Path, checkout: Path, ref: str, old: str, new: str) -> None:
    entry = {"colony": colony, "repo": str(repo), "checkout": str(checkout), "ref": ref, "old": old, "new": new}
    write_atomically(journal, json.dumps(entry))


def _finish_follow(journal: Path) -> str | None:
    """Bring the checkout of a merge that was killed before its checkout followed to the merge, if the target is
    still at the merge and the checkout's index still at the old commit (the caller holds the repository's lock);
    the journal goes in any case. What was done, in a line, or None."""
    try:
        entry = json.loads(journal.read_text())
        colony, repo, checkout = str(entry["colony"]), Path(entry["repo"]), Path(entry["checkout"])
        ref, old, new = str(entry["ref"]), str(entry["old"]), str(entry["new"])
    except (OSError, ValueError, KeyError, TypeError):
        journal.unlink(missing_ok=True)
        return None
    try:
        if (
            not checkout.is_dir()
            or _rev(repo, ref) != new
            or _checkout_of(repo, ref.removeprefix("refs/heads/")) != checkout
        ):
            return None  # moved back, or on since; or no longer checked out there
        if git_bytes(["diff-index", "--cached", "--quiet", old, "--"], checkout).returncode != 0:
            return None  # the follow was done (its read-tree outlived the merge), or the index changed since
        branch = ref.removeprefix("refs/heads/")
        why = _follow(checkout, old, new, undo=False)
        if why:
            return (
                f"colony {colony}: its merge into {branch} was interrupted before {checkout} followed it, which "
                f"cannot follow it now ({why}): git read-tree -m -u {old[:12]} {new[:12]} there brings it"
            )
        return (
            f"colony {colony}: its merge into {branch} was interrupted before {checkout} followed it; "
            f"brought it to {new[:12]}"
        )
    except StemError:
        return None
    finally:
        journal.unlink(missing_ok=True)


def finish_follows(lock_dir: Path) -> list[str]:
    """Finish the checkouts of merges killed before they followed (see `_finish_follow`), in every repository whose
    lock nobody holds; one line each of what was done."""
    done = []
    for journal in sorted(lock_dir.glob("follow-*.json")):
        repo_lock = journal.with_name(journal.name.replace("follow-", "repo-", 1).replace(".json", ".lock"))
        with file_lock(repo_lock, blocking=False) as got:
            line = _finish_follow(journal) if got else None
        if line is not None:
            done.append(line)
    return done


def _give_back_changes(owner: Owner | None, worktree: Path, since: str) -> None:
    """Give `owner` the files root's git wrote in `worktree` (those that differ from commit `since` now, with the
    folders it made for them) and what it wrote in the worktree's git dir."""
    if owner is None:
        return
    changed = git_bytes(["diff-index", "--name-only", "-z", "--no-renames", since], worktree)  # never writes
    # colony.toml stays root's: it says what the colony may use and reach (core.config.POLICY).
    give_back(owner, worktree, [p for p in _split_z(changed.stdout) if p != COLONY_FILE], folders=True)
    give_back_git_dir(owner, worktree)


def merge_colony(
    rec: ColonyRecord,
    lock_dir: Path,
    *,
    into: str | None = None,
    squash: bool = False,
    message: str | None = None,
    before_update: Callable[[int], None] | None = None,
) -> MergeResult:
    """Merge the colony's branch into its target: fast-forward when possible (unless `squash`), else a merge
    commit (a single-parent commit with `squash`). Nothing changes on a conflict, on a dirty checkout of the
    target, or when the target already has everything. `before_update(attempt)` runs between computing the merge
    and moving the target (a test hook: it may move the target)."""
    if message is not None and not message.strip():
        raise StemError(f"the merge message is empty: stem merge {rec.name} -m MESSAGE, or no -m for the default")
    repo = Path(rec.repo)
    target = resolve_target(rec, into)
    src = _rev(repo, f"refs/heads/{rec.branch}")
    if src is None:
        raise StemError(f"{rec.name}'s branch {rec.branch} is not in {repo}")
    uncommitted: tuple[str, ...] = ()
    if Path(rec.worktree).is_dir():
        uncommitted = tuple(sorted({path for _, path in _status(Path(rec.worktree))}))
    try:
        for attempt in range(CAS_ATTEMPTS):
            old = _rev(repo, target.ref)
            if old is None:
                raise BadTarget(f"branch {target.branch} vanished from {repo} while merging")
            plan = _plan(rec, target, old, src, squash, message)
            if before_update is not None:
                before_update(attempt)
            # One merge at a time moves a repository's refs and checkouts: the checkout follows in ref order.
            repo_lock = repo_lock_path(lock_dir, common_dir(repo))
            with file_lock(repo_lock):
                journal = _journal_path(repo_lock)
                _finish_follow(journal)  # a merge killed before its checkout followed: that first
                checkout = _checkout_of(repo, target.branch)
                if checkout is not None:
                    _check_checkout(checkout, target, plan.files)
                    refuse_symlinks(checkout, target.branch)
                    _write_journal(journal, rec.name, repo, checkout, target.ref, old, plan.new)
                if not _cas(repo, target.ref, plan.new, old, f"stem merge {rec.name}: {plan.how}", checkout):
                    journal.unlink(missing_ok=True)
                    continue  # the target moved: merge again onto its new tip
                if checkout is not None:
                    _checkpoint("merge-moved")
                    why = _follow(checkout, old, plan.new)
                    if not why:
                        journal.unlink(missing_ok=True)
                    if why:
                        try:
                            undone = _cas(repo, target.ref, old, plan.new, f"stem merge {rec.name}: undone", checkout)
                        except StemError as exc:  # the disk still refuses: say that the merge stands
                            raise TargetDirty(
                                f"{checkout} could not follow the merge ({why}), and {target.branch} could not be "
                                f"moved back to {old[:12]} ({exc}): it has the merge, its checkout does not"
                            ) from exc
                        journal.unlink(missing_ok=True)
                        state = "nothing was changed" if undone else f"{target.branch} moved again meanwhile"
                        raise TargetDirty(f"{checkout} could not follow the merge ({why}); {state}")
                if squash:
                    _out(["update-ref", _squashed_ref(rec), src], repo)
            return MergeResult(
                rec.name,
                target.branch,
                plan.how,
                old,
                plan.new,
                plan.commits,
                plan.files,
                str(checkout) if checkout is not None else None,
                attempt,
                uncommitted,
                target.note,
            )
    except NothingToMerge as exc:
        if uncommitted:
            raise NothingToMerge(
                f"{exc}; its {plural(len(uncommitted), 'uncommitted file')} "
                f"{'is' if len(uncommitted) == 1 else 'are'} not merged: "
                f"stem commit {rec.name} -m MESSAGE first"
            ) from None
        raise
    raise StemError(f"{target.branch} moved {CAS_ATTEMPTS} times while {rec.name} was being merged: try again")


# commit ---------------------------------------------------------------------------------------------------------------


def commit_colony(rec: ColonyRecord, message: str) -> CommitResult:
    """Commit everything uncommitted in the colony's worktree (untracked files too, ignored ones not) on the branch
    it has checked out, as `git add -A && git commit` would, but with plumbing and git's own lock protocol: the
    index is built in index.lock and replaces the index only once the branch moved, so an interrupted commit
    leaves nothing behind, and no hook runs. A merge left by `stem sync` whose conflicts the agent resolved is
    concluded (a merge commit); conflict markers still in a file refuse it."""
    worktree = Path(rec.worktree)
    if not message.strip():
        raise StemError("the commit message is empty: stem commit NAME -m MESSAGE")
    if not worktree.is_dir():
        raise StemError(f"{rec.name}'s worktree {worktree} is gone: nothing to commit")
    branch = _head_branch(worktree)
    if not branch:
        raise StemError(f"{rec.name}'s worktree has a detached HEAD: check out a branch there first")
    if branch != rec.branch:  # Stem moves the colony's own branch only, never main through a symbolic HEAD
        raise StemError(f"{rec.name}'s worktree has {branch} checked out, not {rec.branch}: Stem commits on its own")
    refuse_symlinks(worktree, rec.name)
    gitdir = git_dir_of(worktree)
    if gitdir is None:
        raise StemError(f"{rec.name}'s worktree has no git dir: nothing to commit")
    busy = _in_progress(worktree)
    merging: list[str] = []
    if busy == "a merge":
        merging = _merge_heads(worktree)
        marked = [c.path for c in _worktree_conflicts(worktree) if c.regions]
        if marked:
            raise StemError(
                f"{rec.name}'s worktree still has conflict markers in {', '.join(marked[:5])}: "
                "its agent must resolve them first"
            )
    elif busy:
        raise StemError(f"{rec.name}'s worktree has {busy} under way: its agent must finish it first")
    # The git dir's own index, its path not resolved, read without following a symlink the colony put there.
    index = gitdir / "index"
    lock = gitdir / "index.lock"
    owner = worktree_owner(worktree)  # the index and the branch stay the colony's, for its agent's git
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise StemError(f"git is busy in {rec.name}'s worktree ({lock} exists): try again in a moment") from None
    try:
        try:
            _copy_index(fd, index)
        except OSError as exc:  # a full disk: a write to a descriptor names no file, the error must
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(lock)) from exc
            raise
        env = {"GIT_INDEX_FILE": str(lock)}
        _out(["add", "--all", "--", "."], worktree, env=env)
        tree = _out(["write-tree"], worktree, env=env)
        parent = _out(["rev-parse", "--verify", "HEAD"], worktree)
        if not merging and tree == _out(["rev-parse", f"{parent}^{{tree}}"], worktree):
            raise NothingToCommit(f"{rec.name} has no uncommitted changes to commit")
        parents = [arg for commit in (parent, *merging) for arg in ("-p", commit)]
        new = _out(["commit-tree", tree, *parents, "-F", "-"], worktree, input=message.encode())
        ref = f"refs/heads/{branch}"
        if not _cas(worktree, ref, new, parent, f"stem commit {rec.name}", worktree):
            raise StemError(f"{branch} moved while committing (the agent committed?): nothing was changed, try again")
        give_back(owner, lock.parent, [lock.name])
        os.replace(lock, index)  # the index now matches the commit, as after `git commit -a`
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    for name in ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE") if merging else ():
        (gitdir / name).unlink(missing_ok=True)  # the merge is concluded, as `git commit` does
    return CommitResult(rec.name, branch, new, parent, _touched(worktree, parent, new))


def _copy_index(fd: int, index: Path) -> None:
    """Write the worktree's `index` (if it has one) into the open lock file `fd`, with the index's own mtime."""
    with os.fdopen(fd, "wb") as out:
        try:
            source = os.open(index, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        with os.fdopen(source, "rb") as current:
            out.write(current.read())  # its stat data spares hashing unchanged files
            st = os.fstat(current.fileno())
        out.flush()
        # ...and its own mtime, which git compares entries with to tell a file changed within the same tick.
        os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))


# sync -----------------------------------------------------------------------------------------------------------------


def sync_colony(rec: ColonyRecord, into: str | None = None) -> SyncResult:
    """Merge the target's new commits into the colony's branch inside its worktree (a real `git merge` there, hooks
    off), so a conflict is left where the agent works, with markers, for it to resolve."""
    worktree = Path(rec.worktree)
    repo = Path(rec.repo)
    target = resolve_target(rec, into, option="--from")
    if not worktree.is_dir():
        raise StemError(f"{rec.name}'s worktree {worktree} is gone")
    busy = _in_progress(worktree)
    if busy:
        raise StemError(f"{rec.name}'s worktree has {busy} under way: its agent must finish it first")
    tip = _rev(repo, target.ref)
    head = _out(["rev-parse", "--verify", "HEAD"], worktree)
    if tip is None:
        raise BadTarget(f"branch {target.branch} vanished from {repo}")
    if _is_ancestor(repo, tip, head):
        return SyncResult(rec.name, target.branch, "up to date", head, head, 0, note=target.note)
    commits = _count_commits(repo, [f"{head}..{tip}"])
    on = _head_branch(worktree) or "HEAD"
    message = f"Merge {target.branch} into {on} (stem sync)"
    # By name, so the conflict markers the agent reads say `>>>>>>> main` (the full ref if the name is ambiguous).
    name = target.branch if _rev(repo, target.branch) == tip else target.ref
    owner = worktree_owner(worktree)
    refuse_symlinks(worktree, rec.name)
    # An assume-unchanged or skip-worktree colony.toml would be rewritten by a failed merge to the colony's own
    # committed version, as root: what it says must come from its user (core.config.colony_config_for).
    git_bytes(["update-index", "-q", "--no-assume-unchanged", "--no-skip-worktree", "--", COLONY_FILE], worktree)
    # After a squash merge of the colony, the target has its work up to the squash record without the ancestry: a
    # plain merge would start from the colony's old base and see the target's later edits of the squashed lines as
    # conflicts. The merge then takes the target through `_after_squash` (so it starts from the record) and is
    # concluded with the target itself as the second parent: that commit is never in the colony's history.
    theirs = _after_squash(repo, tip, head, _rev(repo, _squashed_ref(rec)))
    mode = ["--ff", "--no-edit"] if theirs == tip else ["--no-ff", "--no-commit"]
    proc = git_bytes(
        [*_NO_HOOKS, "merge", *mode, "--no-autostash", "--no-verify", "-m", message, name if theirs == tip else theirs],
        worktree,
    )
    if theirs != tip and _merge_heads(worktree) == [theirs]:
        _relabel(worktree, theirs, name)
        gitdir = git_dir_of(worktree)
        assert gitdir is not None  # git merged in it
        (gitdir / "MERGE_HEAD").write_text(tip + "\n")
        if proc.returncode == 0:
            proc = git_bytes([*_NO_HOOKS, "commit", "--no-edit", "--no-verify", "-q"], worktree)
    _give_back_changes(owner, worktree, head)  # the files it merged in, conflicted or not, are the agent's to edit
    new = _out(["rev-parse", "--verify", "HEAD"], worktree)
    if proc.returncode == 0:
        how = "fast-forward" if new == tip else "merge"
        return SyncResult(rec.name, target.branch, how, head, new, commits, note=target.note)
    conflicts = _worktree_conflicts(worktree)
    if not conflicts:
        said = os.fsdecode(proc.stderr)
        files = [line.strip() for line in said.splitlines() if line.startswith("\t")]
        if files:
            raise StemError(
                f"{rec.name} has uncommitted changes to files {target.branch} changes ({', '.join(files[:5])}): "
                f"commit them first (stem commit {rec.name} -m MESSAGE); nothing was changed"
            )
        raise StemError(f"git merge failed in {worktree}: {_said(proc)}")
    return SyncResult(rec.name, target.branch, "conflicts", head, new, commits, conflicts, target.note)


def _relabel(worktree: Path, commit: str, name: str) -> None:
    """The conflict markers of a merge of `commit` in the worktree's files name `name` instead (what `stem sync`
    merged, as a plain `git merge NAME` labels it). Each file is reached from the worktree a folder at a time without
    following a symlink, so one the agent puts in place of a folder or the file cannot have root write elsewhere."""
    old, new = f">>>>>>> {commit}\n".encode(), f">>>>>>> {name}\n".encode()
    unmerged = _split_z(git_bytes(["ls-files", "-u", "-z"], worktree).stdout)
    for path in dict.fromkeys(entry.partition("\t")[2] for entry in unmerged):
        *folders, last = path.split("/")
        fd = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for folder in folders:
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = inner
            file = os.open(last, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            with open(file, "r+b") as handle:
                text = handle.read()
                if old in text and stat.S_ISREG(os.fstat(file).st_mode):
                    handle.seek(0)
                    handle.write(text.replace(old, new))
                    handle.truncate()
        except OSError:  # gone, a symlink, a folder: the markers keep the commit's name
            pass
        finally:
            os.close(fd)


def _worktree_conflicts(worktree: Path) -> tuple[Conflict, ...]:
    """The unmerged paths of a worktree mid-merge, with the regions its files' markers show (ours: the colony)."""
    proc = git_bytes(["ls-files", "-u", "-z"], worktree)
    stages: dict[str, set[str]] = {}
    for entry in _split_z(proc.stdout):
        info, _, path = entry.partition("\t")
        stages.setdefault(path, set()).add(info.split()[-1])
    conflicts = []
    for path, have in sorted(stages.items()):
        # Stages: 1 the merge base, 2 ours (the colony), 3 theirs (the target).
        kind = ("content" if "1" in have else "add/add") if {"2", "3"} <= have else "modify/delete"
        try:
            text = (worktree / path).read_bytes()
        except OSError:
            text = b""
        conflicts.append(Conflict(path, kind, "", _regions(text, ours_is_target=False)))
    return tuple(conflicts)


# diff -----------------------------------------------------------------------------------------------------------------


def _merge_heads(worktree: Path) -> list[str]:
    """The commits a merge under way in the worktree brings in (a `stem sync` waiting for its conflicts), or []."""
    gitdir = git_dir_of(worktree)
    try:
        return (gitdir / "MERGE_HEAD").read_text().split() if gitdir is not None else []
    except OSError:
        return []


def work_base(rec: ColonyRecord, target: Target | None = None) -> str:
    """Where the colony's work is measured from: the merge base of its HEAD and its target (default: its own), so
    what `stem sync` brought in is not counted as its work (with that merge still unresolved, as if it were
    concluded: `git merge-base TARGET HEAD MERGE_HEAD`); else, with no target, the commit it was spawned from."""
    worktree = Path(rec.worktree)
    if target is None:
        try:
            target = resolve_target(rec)
        except StemError:
            return rec.base_commit
    proc = git_bytes(["merge-base", target.ref, "HEAD", *_merge_heads(worktree)], worktree)
    found = os.fsdecode(proc.stdout).strip() if proc.returncode == 0 else ""
    if not found:
        return rec.base_commit
    # A squash merge gave the target the colony's work up to its squash record, without the ancestry: the work left
    # is what came after it.
    squashed = _rev(worktree, _squashed_ref(rec))
    if (
        squashed
        and squashed != found
        and _is_ancestor(worktree, found, squashed)
        and _is_ancestor(worktree, squashed, "HEAD")
    ):
        return squashed
    return found


def target_ref_files(rec: ColonyRecord) -> list[str]:
    """The files whose change moves what `work_base` gives: the target branch's ref, the packed refs (a ref may be
    kept there instead) and the colony's squash record, in the repository's shared git dir. A watcher of the
    colony's changed files recounts when one changes: a merge (from any colony, or the user's own commit) moves the
    target without touching the colony's worktree."""
    try:
        target = resolve_target(rec)
        common = common_dir(Path(rec.repo))
    except StemError:
        return []
    return [str(common / target.ref), str(common / "packed-refs"), str(common / _squashed_ref(rec))]


def colony_diff(rec: ColonyRecord, into: str | None = None, *, text: bool = True) -> ColonyDiff:
    """The colony's work against its target, committed and uncommitted (untracked files too): from the merge base
    of the colony's HEAD and the target, so the target's own later commits are not shown as the colony's."""
    from core.changes import changed_files, diff_text  # the watcher's machinery: only for a diff

    worktree = Path(rec.worktree)
    if not worktree.is_dir():
        raise StemError(f"{rec.name}'s worktree {worktree} is gone")
    note = ""
    try:
        target = resolve_target(rec, into)
    except BadTarget:
        if into is not None:
            raise
        base, name = rec.base_commit, ""
        note = f"{rec.name} has no target branch: its changes since the commit it was spawned from"
    else:
        base = work_base(rec, target)
        name, note = target.branch, target.note
    files = changed_files(worktree, base)
    uncommitted = frozenset(f.path for f in changed_files(worktree, "HEAD")) if files else frozenset()
    body = diff_text(worktree, base) if text and files else ""
    return ColonyDiff(rec.name, name, base, files, uncommitted, body, note)


__all__ = [
    "BadTarget",
    "ColonyDiff",
    "CommitResult",
    "Conflict",
    "MergeConflict",
    "MergeKind",
    "MergeResult",
    "MergeState",
    "MergeStatus",
    "NothingToCommit",
    "NothingToMerge",
    "Region",
    "SyncResult",
    "Target",
    "TargetDirty",
    "colony_diff",
    "commit_colony",
    "merge_colony",
    "merge_status",
    "merge_statuses",
    "resolve_target",
    "sync_colony",
]
