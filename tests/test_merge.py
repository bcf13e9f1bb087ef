"""Getting the work back, with real git: `stem diff`, `stem commit`, `stem merge`, `stem sync`, the merge status of
`stem ls --json`, and the overlap analysis between colonies. A merge never touches a checkout but the target's."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import git, run_stem

from core import merge, overlap, worktree
from core.changes import changed_files
from core.hive import Hive
from core.registry import ColonyRecord

root = pytest.mark.root
LINES = 30


def numbered(**changed: str) -> str:
    """app.txt: `line 1` .. `line 30`, with some lines replaced (`l3="x"` puts x on line 3)."""
    lines = [f"line {i}" for i in range(1, LINES + 1)]
    for key, text in changed.items():
        lines[int(key[1:]) - 1] = text
    return "\n".join(lines) + "\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository on main: app.txt (numbered lines), other.txt, notes.txt, *.log ignored; its own identity."""
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Stem Test")
    git(path, "config", "user.email", "test@stem.invalid")
    (path / "app.txt").write_text(numbered())
    (path / "other.txt").write_text("other\n")
    (path / "notes.txt").write_text("notes\n")
    (path / ".gitignore").write_text("*.log\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def stem(hive_env, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stem(hive_env.env, *args)


def spawn(hive_env, name: str, repo: Path, *extra: str) -> Path:
    result = stem(hive_env, "spawn", name, "--repo", str(repo), *extra)
    assert result.returncode == 0, result.stderr
    return hive_env.home / "worktrees" / name


def commit(worktree: Path, message: str, **files: str) -> str:
    for name, text in files.items():
        (worktree / name.replace("__", ".")).write_text(text)
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", message)
    return git(worktree, "rev-parse", "HEAD").strip()


def rev(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def snapshot(repo: Path, *worktrees: Path) -> dict[str, str]:
    """Every ref, and for each checkout its HEAD, its index and every file (hashed): what "nothing changed" means."""
    state = {"refs": git(repo, "for-each-ref", "--format=%(objectname) %(refname)")}
    for tree in (repo, *worktrees):
        gitdir = Path(git(tree, "rev-parse", "--absolute-git-dir").strip())
        state[f"{tree}:HEAD"] = (gitdir / "HEAD").read_text()
        state[f"{tree}:index"] = hashlib.sha256((gitdir / "index").read_bytes()).hexdigest()
        state[f"{tree}:MERGE_HEAD"] = str((gitdir / "MERGE_HEAD").exists())
        for path in sorted(tree.rglob("*")):
            if path.relative_to(tree).parts[0] != ".git" and path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def status(tree: Path) -> list[str]:
    return git(tree, "status", "--porcelain", "--untracked-files=all").splitlines()


# merge ----------------------------------------------------------------------------------------------------------------


@root
def test_fast_forward_then_true_merge_and_destroy_sees_them_merged(hive_env, project):
    git(project, "checkout", "-q", "-b", "feature")  # the user works elsewhere, with an edit of their own
    (project / "notes.txt").write_text("the user's own uncommitted edit\n")
    alpha, beta = (
        spawn(hive_env, "alpha", project, "--base", "main"),
        spawn(hive_env, "beta", project, "--base", "main"),
    )
    alpha_tip = commit(alpha, "alpha: top of app", app__txt=numbered(l2="alpha"))
    commit(beta, "beta: other", other__txt="beta\n")
    before = snapshot(project)

    first = stem(hive_env, "merge", "alpha", "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert (out["result"], out["target"], out["new"], out["commits"], out["files"]) == (
        "fast-forward",
        "main",
        alpha_tip,
        1,
        ["app.txt"],
    )
    assert out["checkout"] is None  # main is checked out nowhere
    assert rev(project, "main") == alpha_tip

    second = stem(hive_env, "merge", "beta")
    assert second.returncode == 0, second.stderr
    assert "merged beta into main: merge commit" in second.stdout
    parents = git(project, "rev-list", "--parents", "-n", "1", "main").split()
    assert parents[1:] == [alpha_tip, rev(project, "colony/beta")]
    assert git(project, "show", "main:app.txt") == numbered(l2="alpha")
    assert git(project, "show", "main:other.txt") == "beta\n"
    assert snapshot(project) | {"refs": ""} == before | {"refs": ""}  # the user's checkout: byte for byte

    for name in ("alpha", "beta"):
        destroyed = stem(hive_env, "destroy", name)
        assert destroyed.returncode == 0, destroyed.stderr
        assert "kept branch" not in destroyed.stdout
    assert git(project, "branch", "--list", "colony/*") == ""


@root
def test_squash_is_one_commit_and_the_branch_counts_as_merged(hive_env, project):
    alpha = spawn(hive_env, "alpha", project)
    commit(alpha, "first step", app__txt=numbered(l5="five"))
    commit(alpha, "second step", other__txt="squashed\n")
    old = rev(project, "main")

    result = stem(hive_env, "merge", "alpha", "--squash", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["result"], out["commits"], sorted(out["files"])) == ("squash", 2, ["app.txt", "other.txt"])
    assert git(project, "rev-list", "--parents", "-n", "1", "main").split()[1:] == [old]
    message = git(project, "log", "-1", "--format=%B", "main")
    assert "* first step" in message and "* second step" in message
    assert git(project, "show", "main:other.txt") == "squashed\n"
    assert status(project) == []  # main was checked out and clean: it followed

    again = stem(hive_env, "merge", "alpha")
    assert again.returncode == 2
    assert "already has every change of alpha" in again.stderr

    destroyed = stem(hive_env, "destroy", "alpha")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "kept branch" not in destroyed.stdout
    assert git(project, "for-each-ref", "refs/heads/colony/", "refs/stem/") == ""


@root
def test_after_a_squash_merge_the_colony_has_nothing_to_merge_and_its_later_work_merges_alone(hive_env, project):
    """A squash merge gives the target the colony's changes but not its commits: once the target edits those lines
    again, merging the colony must neither take its squashed commits for new work ("nothing to merge", and
    --all goes on to the next colony) nor see a conflict with them when it has more work; its new commits merge by
    themselves."""
    alpha = spawn(hive_env, "alpha", project)
    beta = spawn(hive_env, "beta", project)
    commit(alpha, "alpha edits line 5", app__txt=numbered(l5="alpha five"))
    commit(beta, "beta's own file", notes__txt="beta\n")
    assert stem(hive_env, "merge", "alpha", "--squash").returncode == 0
    (project / "app.txt").write_text(numbered(l5="main five"))  # main edits the squashed line again
    git(project, "commit", "-qam", "main five")

    listed = {r["name"]: r["merge"] for r in json.loads(stem(hive_env, "ls", "--json").stdout)}
    assert listed["alpha"] == "nothing"
    again = stem(hive_env, "merge", "alpha")
    assert again.returncode == 2 and "already has every change of alpha" in again.stderr, again.stderr
    everything = stem(hive_env, "merge", "--all")
    assert everything.returncode == 0, everything.stderr
    assert "nothing to merge from alpha" in everything.stdout
    assert git(project, "show", "main:notes.txt") == "beta\n"  # --all went on to beta

    # More work after the squash merges alone: main keeps its own line 5, the colony's new line 20 comes in.
    commit(alpha, "alpha edits line 20", app__txt=numbered(l5="alpha five", l20="alpha twenty"))
    listed = {r["name"]: r["merge"] for r in json.loads(stem(hive_env, "ls", "--json").stdout)}
    assert listed["alpha"] == "clean"
    merged = stem(hive_env, "merge", "alpha")
    assert merged.returncode == 0, merged.stderr
    assert git(project, "show", "main:app.txt") == numbered(l5="main five", l20="alpha twenty")


@root
def test_sync_after_a_squash_merge_sees_no_conflict_in_the_squashed_lines(hive_env, project):
    """Once a squash merge took the colony's work and the target edited those lines again, `stem sync` must not
    leave them in conflict (a plain git merge starts from the colony's old base and does): the target's edit comes
    in, the colony's later work stays, and the merge commit's parents are the colony's HEAD and the target. A real
    conflict in the later work is left with markers that name the target, for the agent to conclude."""
    alpha = spawn(hive_env, "alpha", project)
    beta = spawn(hive_env, "beta", project)
    commit(alpha, "alpha edits line 5", app__txt=numbered(l5="alpha five"))
    commit(beta, "beta edits line 15", app__txt=numbered(l15="beta fifteen"))
    assert stem(hive_env, "merge", "alpha", "--squash").returncode == 0
    assert stem(hive_env, "merge", "beta", "--squash").returncode == 0
    main = {"l5": "main five", "l15": "main fifteen"}
    (project / "app.txt").write_text(numbered(**main))  # main edits both squashed lines again
    git(project, "commit", "-qam", "main edits lines 5 and 15")
    later = commit(alpha, "alpha edits line 20", app__txt=numbered(l5="alpha five", l20="alpha twenty"))

    synced = stem(hive_env, "sync", "alpha", "--json")
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["result"] == "merge"
    assert (alpha / "app.txt").read_text() == numbered(**main, l20="alpha twenty")
    assert git(alpha, "rev-list", "--parents", "-n", "1", "HEAD").split()[1:] == [later, rev(project, "main")]
    assert root_owned(alpha) == [] and status(alpha) == []  # the agent's git can go on (before root's git status)
    assert stem(hive_env, "merge", "alpha").returncode == 0
    assert (project / "app.txt").read_text() == numbered(**main, l20="alpha twenty")

    # beta's later work and main both edit line 9: that conflict is left; line 15 is not in it.
    later = commit(beta, "beta edits line 9", app__txt=numbered(l9="beta nine", l15="beta fifteen"))
    (project / "app.txt").write_text(numbered(**main, l9="main nine", l20="alpha twenty"))
    git(project, "commit", "-qam", "main edits line 9")
    conflicted = stem(hive_env, "sync", "beta")
    assert conflicted.returncode == 1, conflicted.stderr
    assert "  app.txt: content: line 9 on main, line 9 on beta" in conflicted.stderr.splitlines(), conflicted.stderr
    text = (beta / "app.txt").read_text()
    assert "<<<<<<< HEAD\nbeta nine\n=======\nmain nine\n>>>>>>> main\n" in text
    assert text.count("<<<<<<<") == 1 and "main fifteen\n" in text and "alpha twenty\n" in text
    (beta / "app.txt").write_text(numbered(**main, l9="both nines", l20="alpha twenty"))
    concluded = stem(hive_env, "commit", "beta", "-m", "merge main")
    assert concluded.returncode == 0, concluded.stderr
    assert git(beta, "rev-list", "--parents", "-n", "1", "HEAD").split()[1:] == [later, rev(project, "main")]


@root
def test_the_changed_files_a_colony_host_shows_follow_merges_of_the_colony(hive_env, project):
    """The Changes panel (the host's watcher) counts the colony's work from where its target has it: a merge moves
    the target, not the colony's worktree, and the list must follow it (it kept the merged files until the worktree
    changed, and they read as overlaps with other colonies). After a squash merge only the later work is listed."""
    alpha = spawn(hive_env, "alpha", project)
    commit(alpha, "alpha edits line 5", app__txt=numbered(l5="alpha five"))

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()

            async def shows(paths: list[str], what: str) -> None:
                deadline = asyncio.get_running_loop().time() + 15
                while (found := sorted(f.path for f in await hive.changes("alpha"))) != paths:
                    assert asyncio.get_running_loop().time() < deadline, f"{what}: the host shows {found}"
                    await asyncio.sleep(0.05)

            await shows(["app.txt"], "the colony's commit")
            assert (await asyncio.to_thread(stem, hive_env, "merge", "alpha")).returncode == 0  # a fast-forward
            await shows([], "after the merge")
            commit(alpha, "alpha edits line 20", app__txt=numbered(l5="alpha five", l20="alpha twenty"))
            commit(alpha, "alpha's other file", other__txt="alpha\n")
            await shows(["app.txt", "other.txt"], "the work after the merge")
            assert (await asyncio.to_thread(stem, hive_env, "merge", "alpha", "--squash")).returncode == 0
            await shows([], "after the squash merge")
            commit(alpha, "alpha's notes", notes__txt="alpha\n")
            await shows(["notes.txt"], "the work after the squash merge")
        finally:
            await hive.close()

    asyncio.run(scenario())


@root
def test_a_conflict_is_reported_with_files_and_lines_and_changes_nothing(hive_env, project):
    git(project, "checkout", "-q", "-b", "feature")
    (project / "notes.txt").write_text("the user's own uncommitted edit\n")
    (project / "scratch.txt").write_text("untracked\n")
    worktrees = [spawn(hive_env, name, project, "--base", "main") for name in ("alpha", "beta", "gamma")]
    alpha, beta, gamma = worktrees
    commit(alpha, "alpha", app__txt=numbered(l10="alpha ten", l11="alpha eleven"))
    commit(beta, "beta", other__txt="beta\n")
    commit(gamma, "gamma", app__txt=numbered(l11="gamma eleven", l12="gamma twelve"))
    (gamma / "wip.txt").write_text("the agent's uncommitted work\n")
    for name in ("alpha", "beta"):
        assert stem(hive_env, "merge", name).returncode == 0

    before = snapshot(project, *worktrees)
    result = stem(hive_env, "merge", "gamma")
    assert result.returncode == 2
    first, *details = result.stderr.splitlines()
    assert first.startswith("stem: gamma does not merge cleanly into main: 1 file in conflict (app.txt)")
    assert "nothing was changed" in first
    # git's conflict hunk spans both changes (10-11 and 11-12): lines 10-12 of each side.
    assert details == ["  app.txt: content: lines 10-12 on main, lines 10-12 on gamma"]
    as_json = stem(hive_env, "merge", "gamma", "--json")
    assert as_json.returncode == 2
    out = json.loads(as_json.stdout)
    assert out["result"] == "conflict"
    assert out["conflicts"] == [
        {
            "path": "app.txt",
            "kind": "content",
            "message": "CONFLICT (content): Merge conflict in app.txt",
            "regions": [{"target": [10, 12], "colony": [10, 12]}],
        }
    ]
    squashed = stem(hive_env, "merge", "gamma", "--squash")
    assert squashed.returncode == 2
    assert snapshot(project, *worktrees) == before


@root
def test_the_target_checked_out_and_clean_follows_keeping_local_files(hive_env, project):
    alpha = spawn(hive_env, "alpha", project)
    commit(alpha, "alpha", app__txt=numbered(l1="alpha"), added__txt="new file\n")
    commit(project, "the user's commit", other__txt="user\n")  # main moved: a true merge
    (project / "notes.txt").write_text("an uncommitted edit the merge does not touch\n")
    (project / "scratch.txt").write_text("untracked\n")
    (project / "build.log").write_text("ignored\n")

    result = stem(hive_env, "merge", "alpha")
    assert result.returncode == 0, result.stderr
    assert f"{project} has main checked out: brought to" in result.stdout
    assert git(project, "rev-parse", "HEAD").strip() == rev(project, "main")
    assert (project / "app.txt").read_text() == numbered(l1="alpha")
    assert (project / "added.txt").read_text() == "new file\n"
    assert (project / "notes.txt").read_text() == "an uncommitted edit the merge does not touch\n"
    assert (project / "scratch.txt").read_text() == "untracked\n"
    assert (project / "build.log").read_text() == "ignored\n"
    assert sorted(status(project)) == [" M notes.txt", "?? scratch.txt"]


@root
def test_the_target_checked_out_with_an_edit_in_a_touched_file_is_refused(hive_env, project):
    alpha = spawn(hive_env, "alpha", project)
    commit(alpha, "alpha", app__txt=numbered(l1="alpha"), fresh__txt="alpha\n")
    (project / "app.txt").write_text(numbered(l30="the user's edit"))
    (project / "fresh.txt").write_text("the user's untracked file of the same name\n")
    before = snapshot(project, alpha)

    result = stem(hive_env, "merge", "alpha")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert f"main is checked out in {project} with uncommitted changes to files the merge changes" in result.stderr
    assert "(app.txt, fresh.txt)" in result.stderr
    assert snapshot(project, alpha) == before


def test_a_target_that_moves_meanwhile_is_merged_again_and_loses_no_commit(tmp_path, project):
    alpha = tmp_path / "alpha"
    git(project, "worktree", "add", "-q", "-b", "colony/alpha", str(alpha), "main")
    commit(alpha, "alpha", app__txt=numbered(l1="alpha"))
    rec = record("alpha", project, alpha)
    landed: list[str] = []

    def meanwhile(attempt: int) -> None:
        if attempt == 0:  # after the merge was computed, before the ref moves: the user commits on main
            landed.append(commit(project, "the user's commit", other__txt="landed meanwhile\n"))

    result = merge.merge_colony(rec, tmp_path / "locks", before_update=meanwhile)
    assert result.retries == 1
    assert result.how == merge.MergeKind.MERGE  # it was a fast-forward before main moved
    assert result.old == landed[0]
    tip = rev(project, "main")
    assert git(project, "rev-list", "--parents", "-n", "1", tip).split()[1:] == [
        landed[0],
        rev(project, "colony/alpha"),
    ]
    assert git(project, "show", "main:other.txt") == "landed meanwhile\n"
    assert git(project, "show", "main:app.txt") == numbered(l1="alpha")
    assert status(project) == []  # the checkout of main followed


@root
def test_merge_all_stops_at_the_first_conflict_with_the_earlier_ones_merged(hive_env, project):
    alpha, beta, gamma = (spawn(hive_env, name, project) for name in ("alpha", "beta", "gamma"))
    commit(alpha, "alpha", app__txt=numbered(l3="alpha"))
    commit(beta, "beta", app__txt=numbered(l3="beta"))
    commit(gamma, "gamma", other__txt="gamma\n")
    after_alpha: list[str] = []

    result = stem(hive_env, "merge", "--all", "--json")
    assert result.returncode == 2
    out = json.loads(result.stdout)
    assert [m["colony"] for m in out["merged"]] == ["alpha"]
    after_alpha.append(out["merged"][0]["new"])
    assert out["stopped"]["colony"] == "beta"
    assert out["stopped"]["conflicts"][0]["path"] == "app.txt"
    assert out["stopped"]["not_tried"] == ["gamma"]
    assert rev(project, "main") == after_alpha[0] == rev(project, "colony/alpha")
    assert "stopped at beta; not tried: gamma" in result.stderr

    assert stem(hive_env, "destroy", "beta", "--force").returncode == 0
    rest = stem(hive_env, "merge", "--all")
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.splitlines()[0] == "nothing to merge from alpha"
    assert "merged gamma into main" in rest.stdout


# sync, commit, diff ---------------------------------------------------------------------------------------------------


@root
def test_sync_brings_the_target_into_the_colony_and_leaves_a_conflict_for_its_agent(hive_env, project):
    alpha, beta = spawn(hive_env, "alpha", project), spawn(hive_env, "beta", project)
    commit(alpha, "alpha", app__txt=numbered(l7="alpha"))
    beta_before = commit(beta, "beta", app__txt=numbered(l7="beta"), other__txt="beta\n")
    commit(project, "main moves", notes__txt="main\n")

    synced = stem(hive_env, "sync", "alpha", "--json")
    assert synced.returncode == 0, synced.stderr
    out = json.loads(synced.stdout)
    assert (out["result"], out["commits"]) == ("merge", 1)
    assert (alpha / "notes.txt").read_text() == "main\n"
    assert len(git(alpha, "rev-list", "--parents", "-n", "1", "HEAD").split()) == 3
    assert stem(hive_env, "sync", "alpha").stdout == "alpha is up to date with main\n"

    assert stem(hive_env, "merge", "alpha").returncode == 0
    main_before = rev(project, "main")
    conflicted = stem(hive_env, "sync", "beta")
    assert conflicted.returncode == 1
    assert "left 1 file in conflict in its worktree" in conflicted.stderr
    assert "  app.txt: content: line 7 on main, line 7 on beta" in conflicted.stderr.splitlines()
    text = (beta / "app.txt").read_text()
    assert "<<<<<<< HEAD\nbeta\n=======\nalpha\n>>>>>>> main\n" in text  # markers the agent can read
    assert "UU app.txt" in status(beta)
    assert rev(project, "colony/beta") == beta_before  # the merge waits in the worktree for the agent
    assert rev(project, "main") == main_before
    refused = stem(hive_env, "merge", "beta")  # its branch still conflicts: the advice is to finish the sync
    assert "resolve the sync's conflicts in its worktree, then stem commit beta" in refused.stderr, refused.stderr
    # What the sync brought from main (notes.txt, merged cleanly) is not beta's work, concluded or not.
    work = json.loads(stem(hive_env, "diff", "beta", "--json").stdout)
    assert sorted(f["path"] for f in work["files"]) == ["app.txt", "other.txt"]

    # An agent that does not commit resolves the file; stem commit concludes the merge, and beta merges.
    early = stem(hive_env, "commit", "beta", "-m", "too early")
    assert early.returncode == 2
    assert "still has conflict markers in app.txt" in early.stderr
    (beta / "app.txt").write_text(numbered(l7="alpha and beta"))
    concluded = stem(hive_env, "commit", "beta", "-m", "merge main, both edits kept")
    assert concluded.returncode == 0, concluded.stderr
    assert git(beta, "rev-list", "--parents", "-n", "1", "HEAD").split()[1:] == [beta_before, main_before]
    assert status(beta) == []
    merged = stem(hive_env, "merge", "beta", "--json")
    assert merged.returncode == 0, merged.stderr
    assert json.loads(merged.stdout)["result"] == "fast-forward"
    assert (project / "app.txt").read_text() == numbered(l7="alpha and beta")


def agent(hive_env, name: str, script: str) -> None:
    """`script` run by the colony's agent, as its uid, inside its sandbox: it must succeed."""
    result = stem(hive_env, "exec", name, "--", "sh", "-c", f"set -e; {script}")
    assert result.returncode == 0, f"the agent's {script!r} failed: {result.stderr}"


def root_owned(worktree: Path) -> list[str]:
    """What in the colony's worktree, its git dir and its branch root owns and the agent would need to replace."""
    gitdir = Path(git(worktree, "rev-parse", "--absolute-git-dir").strip())
    common = Path(git(worktree, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
    branch = git(worktree, "symbolic-ref", "HEAD").strip()
    found = [*worktree.rglob("*"), *gitdir.rglob("*"), common / branch, common / "logs" / branch]
    # Root's on purpose (core.sandbox): the pointers to the repository, the folder of read-only peer snapshots.
    kept = {worktree / ".git", worktree / ".shared", gitdir / "commondir", gitdir / "gitdir"}
    return sorted(str(p) for p in found if p not in kept and p.exists() and p.lstat().st_uid == 0)


@root
def test_the_agents_git_still_works_after_stem_commits_syncs_and_merges_into_its_branch(hive_env, project):
    """What Stem's git writes in a colony (its index, files, branch) stays the colony's: its folders are sticky, so
    the agent could never replace a file root made there (`git add`: "Unable to write new index file")."""
    alpha = spawn(hive_env, "alpha", project)
    spawn(hive_env, "beta", project)
    agent(hive_env, "alpha", "echo 1 > one.txt; git add -A; git commit -qm one")
    agent(hive_env, "alpha", "echo 2 > two.txt")
    assert stem(hive_env, "commit", "alpha", "-m", "two").returncode == 0
    assert root_owned(alpha) == []
    agent(hive_env, "alpha", "echo 3 > three.txt; git add -A; git commit -qm three")

    # The UI's overlap check refreshes the index's stat data (a file touched, its content the same).
    agent(hive_env, "alpha", "touch -d '2001-01-01' one.txt")

    async def overlaps() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.overlaps()
        finally:
            await hive.close()

    asyncio.run(overlaps())
    assert root_owned(alpha) == []

    commit(project, "main moves", app__txt=numbered(l7="main"), notes__txt="main\n")
    agent(hive_env, "alpha", "sed -i 's/^line 7$/alpha/' app.txt; git commit -qam 'alpha edits line 7'")
    assert stem(hive_env, "sync", "alpha").returncode == 1  # a conflict, left for the agent
    assert root_owned(alpha) == []
    agent(hive_env, "alpha", "sed -i '/^[<=>]\\{7\\}/d; /^main$/d' app.txt; git add app.txt; git commit -qm resolved")
    assert (alpha / "app.txt").read_text() == numbered(l7="alpha")

    agent(hive_env, "beta", "echo beta > beta.txt; git add -A; git commit -qm beta")
    merged = stem(hive_env, "merge", "beta", "--into", "colony/alpha")
    assert merged.returncode == 0, merged.stderr
    assert (alpha / "beta.txt").read_text() == "beta\n"  # alpha's worktree followed
    assert root_owned(alpha) == []
    agent(hive_env, "alpha", "echo 4 > four.txt; git add -A; git commit -qm four")
    assert git(alpha, "log", "--format=%s", "-1") == "four\n"


@root
def test_stem_s_git_never_writes_through_what_the_agent_pointed_elsewhere(hive_env, project):
    """An agent cannot aim Stem's git (root's) at the user's files: a symlinked index, reflog or merge file in its
    git dir, a HEAD naming main, or its branch's ref made a symlink to main are refused, and nothing changes."""
    alpha = spawn(hive_env, "alpha", project)
    spawn(hive_env, "beta", project)
    gitdir = Path(git(alpha, "rev-parse", "--absolute-git-dir").strip())
    user_index = (project / ".git" / "index").read_bytes()
    main = rev(project, "main")
    agent(hive_env, "alpha", "echo work > work.txt")

    agent(hive_env, "alpha", f"cd {gitdir} && mv index index.mine && ln -s {project}/.git/index index")
    refused = stem(hive_env, "commit", "alpha", "-m", "through the symlink")
    assert refused.returncode == 2 and f"symlink at {gitdir}/index" in refused.stderr, refused.stderr
    agent(hive_env, "alpha", f"cd {gitdir} && rm index && mv index.mine index")
    assert (project / ".git" / "index").read_bytes() == user_index

    commit(project, "main moves", notes__txt="main\n")
    user_index = (project / ".git" / "index").read_bytes()
    agent(hive_env, "alpha", f"ln -s {project}/.git/index {gitdir}/MERGE_MSG")
    refused = stem(hive_env, "sync", "alpha")
    assert refused.returncode == 2 and "MERGE_MSG: Stem's git will not write through it" in refused.stderr
    agent(hive_env, "alpha", f"rm {gitdir}/MERGE_MSG")
    main = rev(project, "main")

    agent(hive_env, "alpha", "git symbolic-ref HEAD refs/heads/main")
    refused = stem(hive_env, "commit", "alpha", "-m", "onto main")
    assert refused.returncode == 2 and "has main checked out, not colony/alpha" in refused.stderr, refused.stderr
    agent(hive_env, "alpha", "git symbolic-ref HEAD refs/heads/colony/alpha")

    agent(hive_env, "beta", "echo beta > beta.txt; git add -A; git commit -qm beta")
    ref = project / ".git" / "refs" / "heads" / "colony" / "alpha"
    agent(hive_env, "alpha", f"rm {ref} && ln -s refs/heads/main {ref}")
    refused = stem(hive_env, "merge", "beta", "--into", "colony/alpha")
    assert refused.returncode == 2 and "is a symlink" in refused.stderr, refused.stderr

    assert rev(project, "main") == main
    assert (project / ".git" / "index").read_bytes() == user_index
    assert (project / ".git" / "index").stat().st_uid == 0


@root
def test_giving_files_back_never_follows_a_symlink_the_colony_put_on_the_way(tmp_path):
    """A colony can replace a folder of its worktree with a symlink to anywhere: what Stem gives back to it there
    must stay inside (else a chown as root would hand it /etc/shadow)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("root's\n")
    base = tmp_path / "worktree"
    (base / "real").mkdir(parents=True)
    (base / "real" / "file").write_text("merged in\n")
    (base / "sub").symlink_to(outside)
    colony = worktree.Owner(54321, 54321)
    worktree.give_back(colony, base, ["sub/secret", "real/file", "../outside/secret", "gone/file"], folders=True)
    assert (outside / "secret").stat().st_uid == 0
    assert (base / "real" / "file").stat().st_uid == (base / "real").stat().st_uid == 54321
    assert (base / "sub").lstat().st_uid == 54321  # the symlink itself, as git would have made it: harmless


@root
def test_sync_refuses_when_uncommitted_changes_are_in_the_way(hive_env, project):
    alpha = spawn(hive_env, "alpha", project)
    commit(project, "main moves", app__txt=numbered(l1="main"))
    (alpha / "app.txt").write_text(numbered(l20="uncommitted"))
    before = snapshot(project, alpha)
    result = stem(hive_env, "sync", "alpha")
    assert result.returncode == 2
    assert "uncommitted changes to files main changes (app.txt)" in result.stderr
    assert snapshot(project, alpha) == before


@root
def test_commit_takes_every_uncommitted_change_but_ignored_files(hive_env, project):
    alpha = spawn(hive_env, "alpha", project)
    (alpha / "app.txt").write_text(numbered(l4="edited"))
    (alpha / "other.txt").unlink()
    (alpha / "sub").mkdir()
    (alpha / "sub" / "new.txt").write_text("new\n")
    (alpha / "debug.log").write_text("ignored\n")
    parent = rev(alpha, "HEAD")

    result = stem(hive_env, "commit", "alpha", "-m", "the agent's work", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["branch"], out["parent"], sorted(out["files"])) == (
        "colony/alpha",
        parent,
        ["app.txt", "other.txt", "sub/new.txt"],
    )
    assert rev(project, "colony/alpha") == out["commit"]
    assert git(alpha, "log", "-1", "--format=%s") == "the agent's work\n"
    assert status(alpha) == []  # index and files agree with the new commit, as after git commit -a
    assert (alpha / "debug.log").exists()
    assert "debug.log" not in git(alpha, "ls-tree", "-r", "--name-only", "HEAD")
    assert not list(Path(git(alpha, "rev-parse", "--absolute-git-dir").strip()).glob("*.lock"))

    again = stem(hive_env, "commit", "alpha", "-m", "again")
    assert (again.returncode, again.stderr) == (2, "stem: alpha has no uncommitted changes to commit\n")


@root
def test_diff_shows_committed_and_uncommitted_work_against_the_target(hive_env, project):
    alpha = spawn(hive_env, "alpha", project)
    commit(alpha, "alpha", app__txt=numbered(l2="committed"))
    (alpha / "other.txt").write_text("uncommitted\n")
    (alpha / "brand-new.txt").write_text("untracked\none more\n")
    commit(project, "main's own later work", notes__txt="main only\n")

    text = stem(hive_env, "diff", "alpha")
    assert text.returncode == 0, text.stderr
    assert "+committed" in text.stdout and "+uncommitted" in text.stdout and "+untracked" in text.stdout
    assert "notes.txt" not in text.stdout  # the target's own commit is not the colony's work

    stat = stem(hive_env, "diff", "alpha", "--stat")
    assert stat.stdout.splitlines() == [
        " app.txt       |     2 +-",
        " brand-new.txt |     2 ++  (uncommitted)",
        " other.txt     |     2 +-  (uncommitted)",
        " 3 files changed, 4 insertions(+), 2 deletions(-) against main; 2 uncommitted",
    ]
    out = json.loads(stem(hive_env, "diff", "alpha", "--json").stdout)
    assert out["target"] == "main"
    assert out["base"] == git(project, "merge-base", "main", "colony/alpha").strip()
    assert [(f["path"], f["status"], f["added"], f["removed"], f["uncommitted"]) for f in out["files"]] == [
        ("app.txt", "modified", 1, 1, False),
        ("brand-new.txt", "untracked", 2, 0, True),
        ("other.txt", "modified", 1, 1, True),
    ]
    assert "+committed" in out["diff"]


# status for the live view and overlaps --------------------------------------------------------------------------------


@root
def test_ls_json_has_ahead_behind_and_merge_status(hive_env, project):
    alpha, beta, _gamma = (spawn(hive_env, name, project) for name in ("alpha", "beta", "gamma"))
    commit(alpha, "alpha", app__txt=numbered(l3="alpha"))
    commit(beta, "beta 1", app__txt=numbered(l3="beta"))
    commit(beta, "beta 2", other__txt="beta\n")
    assert stem(hive_env, "merge", "alpha").returncode == 0

    rows = {r["name"]: r for r in json.loads(stem(hive_env, "ls", "--json").stdout)}
    fields = ("target", "ahead", "behind", "merge", "merge_summary", "conflicts")
    assert {name: tuple(rows[name][f] for f in fields) for name in rows} == {
        "alpha": ("main", 0, 0, "nothing", "nothing to merge", []),
        "beta": ("main", 2, 1, "conflicts", "conflicts: 1 file", ["app.txt"]),
        "gamma": ("main", 0, 1, "nothing", "nothing to merge", []),
    }
    commit(_gamma, "gamma", notes__txt="gamma\n")
    rows = {r["name"]: r for r in json.loads(stem(hive_env, "ls", "--json").stdout)}
    assert (rows["gamma"]["merge"], rows["gamma"]["merge_summary"]) == ("clean", "merges clean")


@root
def test_overlaps_tell_the_same_file_from_the_same_lines(hive_env, project):
    names = ("alpha", "beta", "gamma")
    trees = [spawn(hive_env, name, project) for name in names]
    commit(trees[0], "alpha", app__txt=numbered(l5="alpha"))
    (trees[1] / "app.txt").write_text(numbered(l25="beta"))  # uncommitted: counts too
    (trees[2] / "app.txt").write_text(numbered(l6="gamma"))  # next to alpha's line: the same hunk to git

    async def scenario() -> overlap.OverlapReport:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            return await hive.overlaps()
        finally:
            await hive.close()

    report = asyncio.run(scenario())
    found = {(o.colonies, o.path): (o.level, o.lines) for o in report.overlaps}
    assert found == {
        (("alpha", "beta"), "app.txt"): (overlap.OverlapLevel.FILE, ()),
        (("alpha", "gamma"), "app.txt"): (overlap.OverlapLevel.HUNK, (((5, 5), (6, 6)),)),
        (("beta", "gamma"), "app.txt"): (overlap.OverlapLevel.FILE, ()),
    }
    assert report.level("alpha") == report.level("gamma") == overlap.OverlapLevel.HUNK
    assert report.level("beta") == overlap.OverlapLevel.FILE
    assert json.loads(json.dumps(report.as_dict()))["overlaps"][1]["lines"] == [[[5, 5], [6, 6]]]


def test_overlaps_between_colonies_of_different_bases_compare_the_same_lines(tmp_path, project):
    """A colony spawned after main gained lines at the top: its line 15 is the other's line 10."""
    early = tmp_path / "early"
    git(project, "worktree", "add", "-q", "-b", "colony/early", str(early), "main")
    commit(project, "main grows", app__txt="\n".join(f"new {i}" for i in range(5)) + "\n" + numbered())
    late = tmp_path / "late"
    git(project, "worktree", "add", "-q", "-b", "colony/late", str(late), "main")
    (early / "app.txt").write_text(numbered(l10="early"))
    late_text = (late / "app.txt").read_text().splitlines()
    late_text[14] = "late"  # line 15 now, line 10 of the early base
    late_text[29] = "late too"  # line 30 now, line 25 then: nothing of early's there
    (late / "app.txt").write_text("\n".join(late_text) + "\n")
    (late / "fresh.txt").write_text("only late\n")

    works = overlap.overlap_work([record("early", project, early), record("late", project, late)])
    report = overlap.find_overlaps(works)
    assert [(o.path, o.level, o.lines) for o in report.overlaps] == [
        ("app.txt", overlap.OverlapLevel.HUNK, (((10, 10), (15, 15)),)),
    ]
    (early / "app.txt").write_text(numbered(l2="early"))  # now far from both of late's lines
    report = overlap.find_overlaps(
        overlap.overlap_work([record("early", project, early), record("late", project, late)])
    )
    assert [(o.path, o.level) for o in report.overlaps] == [("app.txt", overlap.OverlapLevel.FILE)]


def test_a_binary_file_both_change_is_told_as_binary_and_a_file_both_made_alike_is_no_conflict(tmp_path, project):
    """Untracked `.pyc` files and a `dump.rdb` in two colonies read as "the same lines" with `+0 -0`. A binary file
    the two change differently is one, as git's numstat says ("-"): a conflict as a whole, no lines; a file that
    is the same in both (the same build output, the same new file) merges clean and is no conflict, text or
    binary, untracked or tracked."""
    (project / "logo.png").write_bytes(b"\x89PNG\0" + bytes(range(256)))
    commit(project, "a logo")
    trees = {}
    for name in ("alpha", "beta"):
        trees[name] = tmp_path / name
        git(project, "worktree", "add", "-q", "-b", f"colony/{name}", str(trees[name]), "main")
    for name, tree in trees.items():
        (tree / "dump.rdb").write_bytes(b"REDIS0011\0" + name.encode())  # untracked, binary, different
        (tree / "mod.pyc").write_bytes(b"\x00\x0d\r\n same bytes")  # untracked, binary, alike
        (tree / "todo.md").write_text("the same new file\n")  # untracked, text, alike
        (tree / "logo.png").write_bytes(b"\x89PNG\0" + name.encode())  # tracked, binary, different
    (trees["alpha"] / "draft.md").write_text("alpha's draft\n")
    (trees["beta"] / "draft.md").write_text("beta's draft\n")  # untracked, text, different: the whole file meets

    works = overlap.overlap_work([record(name, project, tree) for name, tree in trees.items()])
    report = overlap.find_overlaps(works)
    found = {o.path: (o.level, o.binary, o.lines) for o in report.overlaps}
    assert found == {
        "dump.rdb": (overlap.OverlapLevel.HUNK, True, ()),
        "logo.png": (overlap.OverlapLevel.HUNK, True, ()),
        "mod.pyc": (overlap.OverlapLevel.FILE, True, ()),
        "todo.md": (overlap.OverlapLevel.FILE, False, ()),
        "draft.md": (overlap.OverlapLevel.HUNK, False, ()),
    }
    assert {o["path"]: o["binary"] for o in report.as_dict()["overlaps"]}["dump.rdb"] is True
    files = {f.path: f for f in changed_files(trees["alpha"], works[0].base)}
    assert [(files[p].binary, files[p].added, files[p].removed) for p in ("dump.rdb", "logo.png", "todo.md")] == [
        (True, 0, 0),
        (True, 0, 0),
        (False, 1, 0),
    ]


def test_colonies_that_share_a_commit_are_not_told_they_will_conflict_over_it(tmp_path, project):
    """One colony merged another's branch (`stem merge beta --into colony/alpha`): both change the same lines in
    the same way, which merges clean, so they overlap at file level only; a different change of those lines still
    reads as the same lines."""
    trees = {}
    for name in ("alpha", "beta"):
        trees[name] = tmp_path / name
        git(project, "worktree", "add", "-q", "-b", f"colony/{name}", str(trees[name]), "main")
    commit(trees["beta"], "beta's line 7", app__txt=numbered(l7="beta seven"))
    git(trees["alpha"], "merge", "-q", "--ff-only", "colony/beta")
    records = [record(name, project, tree) for name, tree in trees.items()]
    report = overlap.find_overlaps(overlap.overlap_work(records))
    assert [(o.path, o.level) for o in report.overlaps] == [("app.txt", overlap.OverlapLevel.FILE)]
    commit(trees["alpha"], "alpha's own line 7", app__txt=numbered(l7="alpha seven"))
    report = overlap.find_overlaps(overlap.overlap_work(records))
    assert [(o.path, o.level) for o in report.overlaps] == [("app.txt", overlap.OverlapLevel.HUNK)]


def test_status_of_many_colonies_batches_merge_tree(tmp_path, project):
    records = []
    for i in range(6):
        tree = tmp_path / f"c{i}"
        git(project, "worktree", "add", "-q", "-b", f"colony/c{i}", str(tree), "main")
        if i % 3 == 0:
            commit(tree, "touches line 1", app__txt=numbered(l1=f"c{i}"))
        elif i % 3 == 1:
            commit(tree, "its own file", **{f"c{i}__txt": "x\n"})
        records.append(record(f"c{i}", project, tree))
    commit(project, "main changes line 1", app__txt=numbered(l1="main"))
    found = [(s.colony, s.state, s.ahead, s.behind, s.conflicts) for s in merge.merge_statuses(records)]
    assert found == [
        ("c0", "conflicts", 1, 1, ("app.txt",)),
        ("c1", "clean", 1, 1, ()),
        ("c2", "nothing", 0, 1, ()),
        ("c3", "conflicts", 1, 1, ("app.txt",)),
        ("c4", "clean", 1, 1, ()),
        ("c5", "nothing", 0, 1, ()),
    ]


def test_conflict_regions_are_read_from_the_markers_in_each_sides_lines():
    text = (
        b"a\n<<<<<<< main\nx\ny\n||||||| base\nb\n=======\n>>>>>>> colony/alpha\n"  # the colony removed b
        b"c\n<<<<<<< main\n=======\nz\n>>>>>>> colony/alpha\n"  # the colony added z where main has nothing
        b"======= not a marker outside a conflict\n"
    )
    regions = merge._regions(text, ours_is_target=True)
    assert regions == (merge.Region((2, 3), (2, 1)), merge.Region((5, 4), (3, 3)))
    assert [r.describe("main", "alpha") for r in regions] == [
        "lines 2-3 on main, nothing (at line 2) on alpha",
        "nothing (at line 5) on main, line 3 on alpha",
    ]
    # stem sync: the colony's worktree is "ours"
    assert merge._regions(text, ours_is_target=False)[0] == merge.Region((2, 1), (2, 3))


# bad input, targets ---------------------------------------------------------------------------------------------------


@root
def test_bad_input_is_one_line_and_exit_2(hive_env, project):
    spawn(hive_env, "alpha", project)
    tag = spawn(hive_env, "tagged", project, "--base", rev(project, "main"))
    commit(tag, "work", other__txt="x\n")
    before = snapshot(project)
    cases = {
        ("merge", "nope"): "no colony named 'nope'",
        ("merge", "alpha", "--into", "no-such-branch"): "no branch 'no-such-branch'",
        ("sync", "alpha", "--from", "main~1"): "no branch 'main~1'",
        ("merge", "alpha"): "main already has every change of alpha",
        ("merge", "alpha", "--into", "colony/alpha"): "is alpha's own branch",
        ("merge", "tagged"): "was spawned from",
        ("merge", "tagged", "--into", "main", "-m", " "): "the merge message is empty",
        ("merge",): "name a colony, or --all",
        ("merge", "alpha", "--all"): "name a colony, or --all",
        ("sync", "tagged"): "not a branch: name one with --from BRANCH",
        ("diff", "alpha", "--into", "nope"): "no branch 'nope'",
        ("commit", "alpha", "-m", "x"): "alpha has no uncommitted changes",
    }
    for args, expected in cases.items():
        result = stem(hive_env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
    assert snapshot(project) == before
    nothing = stem(hive_env, "merge", "alpha", "--json")
    assert nothing.returncode == 2
    assert json.loads(nothing.stdout) == {
        "colony": "alpha",
        "result": "nothing to merge",
        "reason": "main already has every change of alpha (colony/alpha)",
    }
    merged = stem(hive_env, "merge", "tagged", "--into", "main")
    assert merged.returncode == 0, merged.stderr


@root
def test_the_target_is_the_branch_checked_out_at_spawn(hive_env, project):
    git(project, "checkout", "-q", "-b", "release")
    alpha = spawn(hive_env, "alpha", project)  # --base HEAD: release
    git(project, "checkout", "-q", "main")
    commit(alpha, "alpha", other__txt="for release\n")
    result = stem(hive_env, "merge", "alpha")
    assert result.returncode == 0, result.stderr
    assert "merged alpha into release" in result.stdout
    assert git(project, "show", "release:other.txt") == "for release\n"
    assert git(project, "show", "main:other.txt") == "other\n"

    # A colony recorded before targets were: its base (HEAD) read now, and said so.
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        db.execute("UPDATE colonies SET target='' WHERE name='alpha'")
    commit(alpha, "more", notes__txt="more\n")
    old = stem(hive_env, "merge", "alpha")
    assert old.returncode == 0, old.stderr
    assert "merged alpha into main" in old.stdout
    assert "target was not recorded at spawn (an older colony): using main, the branch" in old.stderr


def record(name: str, repo: Path, worktree: Path, target: str = "main") -> ColonyRecord:
    """The registry row of a colony made by hand (a worktree without a namespace), for the pure-git tests."""
    base = git(worktree, "merge-base", "HEAD", target).strip()
    return ColonyRecord(
        name=name,
        slot=0,
        repo=str(repo),
        base_ref=target,
        base_commit=base,
        branch=f"colony/{name}",
        worktree=str(worktree),
        db_path="",
        netns="",
        veth="",
        ip="",
        host_ip="",
        prefixlen=30,
        state="running",
        stage="",
        reason="",
        agent="",
        task="",
        created_at=0.0,
        updated_at=0.0,
        target=target,
    )
