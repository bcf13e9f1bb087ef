"""Git worktrees: one per colony on branch `colony/<name>`, sharing the repository's objects.

git takes its own lock files (index.lock, config.lock, packed-refs.lock) and fails rather than waits when two
commands meet; calls that change the repository's shared state hold a per-repository flock.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadRef, BranchExists, NotARepository, StemError, free_bytes
from core.locks import file_lock, repo_lock_path

# GIT_OPTIONAL_LOCKS=0: a `git status` of Stem's never takes a worktree's index.lock to save a refreshed index, which
# made a checkout starting in that worktree at the same moment fail ("remove the file manually to continue").
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
# Variables that would point git at another repository or index (a git hook sets them, for one).
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX")


def without_repo_vars(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without GIT_DIR and friends, so git finds the repository from the directory it runs in: what a
    caller exported (a git hook does) must not point Stem, or a colony's agent, at another repository."""
    return {key: value for key, value in env.items() if key not in _REPO_ENV}


def git_env() -> dict[str, str]:
    """The environment Stem runs git in: never prompts, C messages, the repository of the directory."""
    env = without_repo_vars(os.environ)
    env.update(_GIT_ENV)
    return env


def _failed(what: str, cwd: Path, said: str | bytes, code: int) -> StemError:
    """`what` failed in `cwd`: git's last `fatal:` or `error:` line (the advice after it, as in "remove the file
    manually to continue", names nothing), else the last line of what it `said`, else its exit code."""
    detail = (said.decode(errors="replace") if isinstance(said, bytes) else said).strip().splitlines()
    errors = [line for line in detail if line.startswith(("fatal: ", "error: "))]
    line = errors[-1] if errors else detail[-1] if detail else code
    return StemError(f"{what} failed in {cwd}: {line}")


def git(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = git_env()
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise _failed(f"git {' '.join(args)}", cwd, proc.stderr or proc.stdout, proc.returncode)
    return proc


@dataclass(frozen=True, slots=True)
class Owner:
    """Who must own what Stem's git writes in a worktree or on a branch: a colony's uid (its folders are sticky, so
    a file root made there the agent's git could never replace: "Unable to write new index file"), or the user who
    ran Stem through sudo in their own checkout."""

    uid: int
    gid: int


def owner_of(path: Path) -> Owner | None:
    """The owner of `path`; None when root owns it, it is not there, or Stem is not root (nothing to give back)."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return None if st.st_uid == 0 else Owner(st.st_uid, st.st_gid)


def git_dir_of(worktree: Path) -> Path | None:
    """The worktree's own git dir (the main checkout's .git, a linked worktree's .git/worktrees/ID)."""
    dotgit = worktree / ".git"
    try:
        return (worktree / dotgit.read_text().split(":", 1)[1].strip()) if dotgit.is_file() else dotgit
    except (OSError, IndexError):
        return None


def worktree_owner(worktree: Path) -> Owner | None:
    """Who works in `worktree`: the owner of its HEAD (Stem gives a colony's git dir to the colony's uid)."""
    gitdir = git_dir_of(worktree)
    return None if gitdir is None else owner_of(gitdir / "HEAD")


def give_back(owner: Owner | None, base: Path, names: Iterable[str], folders: bool = False) -> None:
    """Give `owner` each of `names` (paths relative to `base`, a folder the colony cannot replace) that root owns,
    and with `folders` the folders on the way (git made them too). Never through a symlink: each path is walked
    from `base` a component at a time without following one, so a symlink the colony put where git had a folder
    cannot hand it a file outside."""
    if owner is None:
        return
    try:
        top = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for name in names:
            parts = [part for part in name.split("/") if part not in ("", ".")]
            if not parts or ".." in parts:
                continue
            fd = os.dup(top)
            try:
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    if (last or folders) and os.stat(part, dir_fd=fd, follow_symlinks=False).st_uid == 0:
                        os.chown(part, owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)
                    if not last:
                        inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                        os.close(fd)
                        fd = inner
            except OSError:  # gone, or a symlink on the way (ELOOP, ENOTDIR): nothing of root's to give there
                pass
            finally:
                os.close(fd)
    finally:
        os.close(top)


# What git writes in a worktree's git dir when it merges, reads a tree in or commits there.
_GIT_DIR_FILES = (
    "index",
    "ORIG_HEAD",
    "MERGE_HEAD",
    "MERGE_MSG",
    "MERGE_MODE",
    "AUTO_MERGE",
    "COMMIT_EDITMSG",
    "logs",
    "logs/HEAD",
)


def head_ref(gitdir: Path) -> str | None:
    """The ref HEAD names in a git dir ("refs/heads/colony/x"); None when detached, unreadable or a symlink."""
    head = gitdir / "HEAD"
    try:
        text = "" if head.is_symlink() else head.read_text().strip()
    except OSError:
        return None
    return text[5:].strip() if text.startswith("ref: refs/") else None


def _branch_files(gitdir: Path) -> tuple[Path, str, bool]:
    """(the repository's shared git dir, the ref HEAD names or "", whether the worktree is a linked one)."""
    linked = (gitdir / "commondir").is_file()
    try:
        common = gitdir / (gitdir / "commondir").read_text().strip() if linked else gitdir
    except OSError:
        return gitdir, "", linked
    return common, head_ref(gitdir) or "", linked


def refuse_symlinks(worktree: Path, name: str) -> None:
    """StemError if a file root's git would write for the worktree is a symlink: in a colony's git dir (and its
    branch's ref and reflog) the colony makes what it likes, and a symlink there would have root's git write, or
    Stem read, a file anywhere (the user's index, /etc/shadow). Git itself follows them."""
    gitdir = git_dir_of(worktree)
    if gitdir is None:
        return
    found = [gitdir / entry for entry in (*_GIT_DIR_FILES, "HEAD", "index.lock")]
    common, branch, _linked = _branch_files(gitdir)
    if branch:
        found += [common / branch, common / "logs" / branch]
    for path in found:
        if path.is_symlink():
            raise StemError(
                f"{name}'s git has a symlink at {path}: Stem's git will not write through it (remove it, or let "
                "the colony's agent do it)"
            )


def give_back_git_dir(owner: Owner | None, worktree: Path) -> None:
    """Give `owner` what root's git wrote in the worktree's git dir (its index, merge state, HEAD's reflog) and its
    branch's ref and reflog: in a colony's worktree only a colony/ branch, the user's stay out of its reach."""
    gitdir = git_dir_of(worktree)
    if owner is None or gitdir is None:
        return
    give_back(owner, gitdir, _GIT_DIR_FILES)
    common, branch, linked = _branch_files(gitdir)
    if branch.startswith("refs/heads/") and (not linked or branch.startswith("refs/heads/colony/")):
        give_back(owner, common, [branch, f"logs/{branch}"])


def git_bytes(
    args: list[str], cwd: Path, *, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """git for its raw output (NUL-separated paths need not be UTF-8; core.quotePath off), not checked; `env` is
    added to Stem's git environment. StemError if `cwd` is gone (a colony's worktree removed meanwhile)."""
    full = git_env()
    full.update(env or {})
    try:
        return subprocess.run(
            ["git", "-c", "core.quotePath=false", *args],
            cwd=cwd,
            env=full,
            input=input,
            capture_output=True,
            stdin=subprocess.DEVNULL if input is None else None,
        )
    except (FileNotFoundError, NotADirectoryError) as exc:
        if not cwd.is_dir():
            raise StemError(f"{cwd} is gone (a colony's worktree? destroy it, or run `stem gc`)") from exc
        raise


def repo_root(path: Path) -> Path:
    """The top of the (main) work tree that contains `path`."""
    if not path.is_dir():
        raise NotARepository(f"{path} is not a directory, so not a git repository")
    proc = git(["rev-parse", "--path-format=absolute", "--git-common-dir"], path, check=False)
    if proc.returncode != 0:
        raise NotARepository(f"{path} is not inside a git repository (run `git init` there, or pass --repo)")
    common = Path(proc.stdout.strip())
    if common.name == ".git":
        _COMMON_DIRS[common.parent] = common  # what `common_dir` of the top would ask git again
        return common.parent
    top = git(["rev-parse", "--show-toplevel"], path, check=False)
    if top.returncode != 0:
        raise NotARepository(f"{path} is a bare git repository: Stem needs one with a work tree")
    return Path(top.stdout.strip())


_COMMON_DIRS: dict[Path, Path] = {}


def common_dir(repo: Path) -> Path:
    """The repository's shared git dir (cached: it never changes for a repository path; `repo_root` fills the
    cache too, so a spawn asks git once)."""
    found = _COMMON_DIRS.get(repo)
    if found is None:
        found = Path(git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo).stdout.strip())
        if len(_COMMON_DIRS) < 256:
            _COMMON_DIRS[repo] = found
    return found


def _bad_ref(repo: Path, ref: str) -> BadRef:
    if ref == "HEAD":
        return BadRef(f"{repo} has no commits yet: commit something first, Stem branches colonies from it")
    return BadRef(f"base ref {ref!r} does not name a commit in {repo} (try a branch, tag or sha)")


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit `ref` names, or BadRef saying so."""
    proc = git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo, check=False)
    if proc.returncode != 0:
        raise _bad_ref(repo, ref)
    return proc.stdout.strip()


def resolve_with_file(repo: Path, ref: str, path: str) -> tuple[str, bytes | None]:
    """The commit `ref` names and the file at `path` in it (None if it has none), from one git process; BadRef
    if `ref` names no commit."""
    if not ref or "\n" in ref:
        raise _bad_ref(repo, ref)
    names = [f"{ref}^{{commit}}", f"{ref}^{{commit}}:{path}"]
    proc = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo,
        env=git_env(),
        input="".join(f"{name}\n" for name in names).encode(),
        capture_output=True,
    )
    if proc.returncode != 0:
        raise _failed("git cat-file", repo, proc.stderr, proc.returncode)
    out = proc.stdout
    found: list[tuple[str, bytes] | None] = []
    at = 0
    for _ in names:
        end = out.index(b"\n", at)
        header = out[at:end].split()
        at = end + 1
        if len(header) == 3 and header[2].isdigit():  # <oid> <type> <size>, then the content and a newline
            size = int(header[2])
            found.append((header[0].decode(), out[at : at + size]))
            at += size + 1
        else:  # <name> missing | ambiguous
            found.append(None)
    commit, blob = found
    if commit is None:
        raise _bad_ref(repo, ref)
    return commit[0], blob[1] if blob is not None else None


def branch_exists(repo: Path, branch: str) -> bool:
    return git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], repo, check=False).returncode == 0


def add(
    repo: Path, path: Path, branch: str, commit: str, lock_dir: Path, claim: Callable[[], None] | None = None
) -> None:
    """Create the worktree at `path` on a new branch `branch` starting at `commit`, under the repository's lock;
    `claim()` runs first, under the lock too. BranchExists (nothing made) if the branch is there already."""
    with file_lock(repo_lock_path(lock_dir, common_dir(repo))):
        if claim is not None:
            claim()
        # No separate check: git refuses an existing branch before it makes anything, and says so.
        proc = git(["worktree", "add", "--quiet", "-b", branch, str(path), commit], repo, check=False)
        if proc.returncode != 0:
            if f"a branch named '{branch}' already exists" in proc.stderr:
                raise BranchExists(_taken(repo, branch))
            said = proc.stderr or proc.stdout
            failed = _failed("git worktree add", repo, said, proc.returncode)
            raise _no_room(repo, path, commit) or _no_room_for_git(repo, failed) or failed


def _no_room(repo: Path, path: Path, commit: str) -> StemError | None:
    """Why a checkout failed when it was for lack of room (git says only "unable to write file"), else None: the
    commit's files, in whole blocks, against what the disk under `path` has free (git removed its partial checkout
    before it gave up, so that is what there was)."""
    proc = git_bytes(["ls-tree", "-r", "-l", "-z", commit], repo)
    if proc.returncode != 0:
        return None
    need = 0
    for entry in proc.stdout.split(b"\0"):
        size = entry.split(b"\t", 1)[0].rsplit(None, 1)[-1:] if entry else []
        if size and size[0].isdigit():
            need += -(-int(size[0]) // _BLOCK) * _BLOCK
    free = free_bytes(path.parent)
    if free is None or need < free:
        return None
    return StemError(
        f"{os.strerror(errno.ENOSPC)} for the worktree: {commit[:12]}'s files take {need / 1e6:.1f} MB and "
        f"{path.parent} has {free / 1e6:.1f} MB free: free some space (or point STEM_HOME elsewhere) and try again"
    )


_BLOCK = 4096  # a file takes whole blocks
_GIT_ROOM = 1 << 20  # free bytes under which a git dir that git could not write in is said to be full


def _no_room_for_git(repo: Path, failed: StemError) -> StemError | None:
    """Why git failed when the disk of the repository's git dir (the new branch's ref, the worktree's index) is
    full, else None: git says only "couldn't write" or "unable to write", naming the file."""
    try:
        git_dir = common_dir(repo)
    except (OSError, StemError):
        return None
    free = free_bytes(git_dir)
    if free is None or free >= _GIT_ROOM:
        return None
    return StemError(
        f"{os.strerror(errno.ENOSPC)} in {git_dir} ({free / 1e3:.0f} KB free): {failed}: free some space there "
        "and try again"
    )


def checked_out(repo: Path, branch: str) -> Path | None:
    """The worktree of `repo` that has `branch` checked out, if one does."""
    return next((w.path for w in worktrees(repo) if w.branch == branch), None)


def _taken(repo: Path, branch: str) -> str:
    """Why `branch` cannot be made: checked out in a worktree (another hive's colony, or the user's own), or there."""
    held = checked_out(repo, branch)
    if held is None:
        return (
            f"branch {branch} already exists in {repo}: merge or delete it (git branch -D {branch}), "
            "or pick another colony name"
        )
    hive = held.parent.parent if held.parent.name == "worktrees" else None
    if hive is not None and (hive / "hive.db").exists():
        return (
            f"branch {branch} of {repo} belongs to a colony of the hive at {hive} (its worktree {held}): "
            "pick another colony name"
        )
    return f"branch {branch} of {repo} is checked out at {held}: pick another colony name"


def remove(repo: Path, path: Path, lock_dir: Path) -> None:
    """Remove the worktree at `path` (uncommitted changes included) and prune git's record of it."""
    with file_lock(repo_lock_path(lock_dir, common_dir(repo))):
        if path.exists():
            proc = git(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
            if proc.returncode == 0:
                return
            shutil.rmtree(path, ignore_errors=True)
        git(["worktree", "prune"], repo, check=False)  # only needed when git did not remove it itself


# `stem merge --squash` records the colony tip it squashed here: the content of those commits is on the target, so
# they do not count as unmerged work (the ref goes with the branch).
SQUASHED_REFS = "refs/stem/squashed/"


def unmerged_commits(repo: Path, branch: str) -> int:
    """Commits on `branch` that no other branch or tag contains, nor a squash merge took: work that deleting the
    branch would lose."""
    proc = git(
        # --exclude patterns for --branches are relative to refs/heads/.
        [
            "rev-list",
            "--count",
            f"refs/heads/{branch}",
            "--not",
            f"--exclude={branch}",
            "--branches",
            "--tags",
            f"--glob={SQUASHED_REFS}*",
        ],
        repo,
        check=False,
    )
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def delete_branch(repo: Path, branch: str, lock_dir: Path) -> None:
    with file_lock(repo_lock_path(lock_dir, common_dir(repo))):
        if branch_exists(repo, branch):
            git(["branch", "-D", branch], repo)
        git(["update-ref", "-d", f"{SQUASHED_REFS}{branch}"], repo, check=False)


def branch_of(repo: Path, ref: str) -> str:
    """The local branch `ref` names (for HEAD, the branch `repo` has checked out), or "" for a tag, a commit, a
    remote branch or a detached HEAD: the branch a colony spawned from `ref` merges into by default."""
    if not ref or ref.startswith("-"):
        return ""
    proc = git(["rev-parse", "--symbolic-full-name", ref], repo, check=False)
    full = proc.stdout.strip()
    return full[len("refs/heads/") :] if proc.returncode == 0 and full.startswith("refs/heads/") else ""


def dirty_files(path: Path) -> list[str]:
    """Uncommitted changes (tracked or untracked, not ignored) in the worktree at `path`."""
    if not path.exists():
        return []
    proc = git(["status", "--porcelain", "--untracked-files=all"], path, check=False)
    return [line[3:] for line in proc.stdout.splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class WorktreeInfo:
    path: Path
    branch: str


def worktrees(repo: Path) -> list[WorktreeInfo]:
    proc = git(["worktree", "list", "--porcelain"], repo, check=False)
    found: list[WorktreeInfo] = []
    path: Path | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("worktree "):
            path = Path(line[len("worktree ") :])
        elif line.startswith("branch ") and path is not None:
            found.append(WorktreeInfo(path, line[len("branch refs/heads/") :]))
    return found


def repo_of_worktree(path: Path) -> Path | None:
    """The main repository a linked worktree belongs to, read from its `.git` file, even if git lost track."""
    gitfile = path / ".git"
    try:
        text = gitfile.read_text().strip()
    except OSError:
        return None
    if not text.startswith("gitdir: "):
        return None
    gitdir = Path(text[len("gitdir: ") :])  # <repo>/.git/worktrees/<name>
    common = gitdir.parent.parent
    return common.parent if common.name == ".git" else None
