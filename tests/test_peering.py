"""Read-only peering through the `stem` command: what a snapshot holds, that the peer cannot write it, and that
nothing of it (mounts, copies, rows) outlives unpeer, stop, destroy or gc."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import assert_refused, git, make_repo, run_stem, wait_for

from core.peering import DEFAULT_EXCLUDE, Excludes, sync_tree

pytestmark = pytest.mark.root

# Planted in B's worktree: none of these may reach a snapshot.
SECRETS = (
    ".env",
    ".env.local",
    "app/.env.production",
    ".envrc",
    ".claude/settings.json",
    ".codex/auth.json",
    ".config/gh/hosts.yml",
    ".cursor/mcp.json",
    ".vscode/settings.json",
    ".idea/workspace.xml",
    ".docker/config.json",
    "credentials.json",
    "deploy/service-account.json",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".htpasswd",
    ".pgpass",
    "node_modules/left-pad/index.js",
    "vendor/lib/node_modules/x/y.js",
    ".shared/gamma/from-gamma.txt",  # B's own peers: no transitive peering
    "data/local.sqlite",  # excluded by the hive's [hive] peer_exclude
)
WORK = ("work.txt", "src/app.py", "src/deep/er/file.txt", "run.sh")


def spawn(hive_env, name: str, repo: Path) -> None:
    result = run_stem(hive_env.env, "spawn", name, "--repo", str(repo))
    assert result.returncode == 0, result.stderr


def worktree(hive_env, name: str) -> Path:
    return hive_env.home / "worktrees" / name


def mounts() -> dict[str, str]:
    """Mount point -> its options, of this mount namespace."""
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        found[point] = fields[5]
    return found


def shared_mounts(hive_env) -> list[str]:
    """The hive's snapshot mounts: one read-only `.shared` per running colony."""
    root = os.path.realpath(hive_env.home)
    return sorted(p for p in mounts() if p.startswith(root) and p.endswith("/.shared"))


def tree(root: Path) -> dict[str, str]:
    """Relative path -> "dir", "link" or the file's sha256, never following a symlink."""
    out = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(top) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def plant(root: Path, shared: Path | None = None) -> None:
    """SECRETS and WORK under `root`; `.shared/...` under `shared` instead when given (a running colony's .shared
    is read-only: Stem writes its snapshots there)."""
    for rel in (*SECRETS, *WORK):
        path = shared / rel.removeprefix(".shared/") if shared and rel.startswith(".shared/") else root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
    (root / "run.sh").chmod(0o755)
    (root / "shadow").symlink_to("/etc/shadow")
    (root / "etc").symlink_to("/etc")
    (root / "src" / "up").symlink_to("../..")


def peer_rows(hive_env, name: str) -> dict:
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    row = next(r for r in rows if r["name"] == name)
    return {"peers": [p["source"] for p in row["peers"]], "peered_by": [p["colony"] for p in row["peered_by"]]}


def in_colony(hive_env, name: str, command: str) -> subprocess.CompletedProcess[str]:
    return run_stem(hive_env.env, "exec", name, "--", "sh", "-c", command)


@pytest.fixture(autouse=True)
def no_mount_left(hive_env):
    """Whatever a failing test left mounted goes, so its folder can be removed; a passing test leaves none."""
    yield
    for point in shared_mounts(hive_env):
        subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def pair(hive_env, repo):
    """Colonies alpha and beta, beta's worktree planted with secrets, symlinks and work; the hive excludes *.sqlite."""
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[hive]\npeer_exclude = ["*.sqlite"]\n')
    spawn(hive_env, "alpha", repo)
    spawn(hive_env, "beta", repo)
    plant(worktree(hive_env, "beta"), shared=hive_env.home / "peers" / "beta")
    assert (worktree(hive_env, "beta") / ".shared" / "gamma" / "from-gamma.txt").exists()
    return worktree(hive_env, "alpha"), worktree(hive_env, "beta")


def test_snapshot_holds_the_work_and_no_secret_symlink_or_peer_of_the_peer(hive_env, pair):
    alpha, beta = pair
    result = run_stem(hive_env.env, "peer", "alpha", "--from", "beta")
    assert result.returncode == 0, result.stderr
    snapshot = tree(alpha / ".shared" / "beta")
    source = tree(beta)
    for rel in WORK:
        assert snapshot[rel] == source[rel], rel
    for rel in (*SECRETS, "shadow", "etc", "src/up", ".git"):
        assert rel not in snapshot, f"{rel} reached the snapshot"
    assert "link" not in snapshot.values()
    assert not any(rel.split("/")[0] in (".claude", ".shared", "node_modules") for rel in snapshot)
    # Everything else of beta is there: its tracked files and its work.
    tracked = git(beta, "ls-files").split()
    assert set(tracked) <= set(snapshot)
    assert os.access(alpha / ".shared" / "beta" / "run.sh", os.X_OK)
    assert (alpha / ".shared" / "beta" / "work.txt").stat().st_mode & 0o777 == 0o444
    # Kept out of alpha's git status, and its branch, and nothing tracked changed for it.
    assert ".shared" not in git(alpha, "status", "--porcelain", "--untracked-files=all")
    assert git(alpha, "diff", "--name-only", "HEAD") == ""
    assert peer_rows(hive_env, "alpha") == {"peers": ["beta"], "peered_by": []}
    assert peer_rows(hive_env, "beta") == {"peers": [], "peered_by": ["alpha"]}


def test_the_peer_cannot_write_the_snapshot_nor_reach_the_source(hive_env, pair):
    alpha, beta = pair
    before = tree(beta)
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "beta").returncode == 0
    point = os.path.realpath(alpha / ".shared")
    assert "ro" in mounts()[point].split(","), mounts()[point]
    for command in (
        "echo x > .shared/beta/work.txt",
        "echo x >> .shared/beta/src/app.py",
        "rm -f .shared/beta/README.md",
        "touch .shared/beta/new-file",
        "mkdir .shared/beta/new-dir",
        "chmod 666 .shared/beta/work.txt",
        "mv .shared/beta/work.txt .shared/beta/moved.txt",
        "ln -s /etc/shadow .shared/beta/shadow",
        "mkdir .shared/gamma",
    ):
        result = in_colony(hive_env, "alpha", command)
        assert result.returncode != 0, f"{command!r} succeeded inside alpha"
        # Read-only mount (EROFS); an unprivileged colony may meet the modes first (EACCES).
        assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr, (command, result)
    assert tree(beta) == before, "beta's files changed"
    assert (alpha / ".shared" / "beta" / "work.txt").read_text() == "content of work.txt\n"
    # A copy, not a view of beta: no mount of beta's worktree, the snapshot's files are other inodes.
    assert os.stat(point + "/beta/work.txt").st_ino != (beta / "work.txt").stat().st_ino
    assert os.path.realpath(beta) not in mounts()


def test_refresh_picks_up_new_changed_and_removed_files_then_unpeer_leaves_nothing(hive_env, pair):
    alpha, beta = pair
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "beta").returncode == 0
    snapshot = alpha / ".shared" / "beta"
    (beta / "new.txt").write_text("new in beta\n")
    (beta / "src" / "app.py").write_text("print('changed')\n")
    (beta / "work.txt").unlink()
    (beta / ".env.new").write_text("SECRET=1\n")
    assert not (snapshot / "new.txt").exists()
    result = run_stem(hive_env.env, "peer", "alpha", "--refresh")
    assert result.returncode == 0, result.stderr
    assert (snapshot / "new.txt").read_text() == "new in beta\n"
    assert (snapshot / "src" / "app.py").read_text() == "print('changed')\n"
    assert not (snapshot / "work.txt").exists()
    assert not (snapshot / ".env.new").exists()
    running = [os.path.realpath(worktree(hive_env, n) / ".shared") for n in ("alpha", "beta")]
    assert shared_mounts(hive_env) == sorted(running)

    result = run_stem(hive_env.env, "unpeer", "alpha", "--from", "beta")
    assert result.returncode == 0, result.stderr
    # Nothing of beta is left in alpha: no snapshot, no copy; alpha's own empty read-only .shared stays while it runs.
    assert shared_mounts(hive_env) == sorted(running)
    assert os.listdir(alpha / ".shared") == []
    assert not (hive_env.home / "peers" / "alpha" / "beta").exists()
    assert peer_rows(hive_env, "alpha") == {"peers": [], "peered_by": []}


def test_a_following_snapshot_is_refreshed_when_the_source_settles(hive_env, pair):
    alpha, beta = pair
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "beta", "--follow").returncode == 0
    (beta / "later.txt").write_text("written after peering\n")
    target = alpha / ".shared" / "beta" / "later.txt"
    wait_for(target.exists, timeout=20, what="beta's new file in alpha's snapshot")
    assert target.read_text() == "written after peering\n"


def test_stop_start_and_destroy_of_either_colony_leave_no_mount_or_stale_snapshot(hive_env, repo, pair):
    alpha, beta = pair
    shared = os.path.realpath(alpha / ".shared")
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "beta").returncode == 0
    assert shared in shared_mounts(hive_env)

    assert run_stem(hive_env.env, "stop", "alpha").returncode == 0
    assert shared not in shared_mounts(hive_env)
    assert not (alpha / ".shared").exists()
    assert not (hive_env.home / "peers" / "alpha").exists()
    assert run_stem(hive_env.env, "start", "alpha").returncode == 0
    assert shared in shared_mounts(hive_env)
    assert (alpha / ".shared" / "beta" / "work.txt").exists()

    # Destroying the source takes its snapshot out of every colony that read it.
    assert run_stem(hive_env.env, "destroy", "--force", "beta").returncode == 0
    assert shared_mounts(hive_env) == [shared]
    assert os.listdir(alpha / ".shared") == []
    assert not beta.exists()
    assert peer_rows(hive_env, "alpha") == {"peers": [], "peered_by": []}

    spawn(hive_env, "gamma", repo)
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "gamma").returncode == 0
    result = run_stem(hive_env.env, "destroy", "alpha")  # the snapshot is no uncommitted work of alpha's
    assert result.returncode == 0, result.stderr
    assert shared_mounts(hive_env) == [os.path.realpath(worktree(hive_env, "gamma") / ".shared")]
    assert not alpha.exists()
    assert not (hive_env.home / "peers" / "alpha").exists()
    assert peer_rows(hive_env, "gamma") == {"peers": [], "peered_by": []}
    assert run_stem(hive_env.env, "destroy", "gamma").returncode == 0
    assert shared_mounts(hive_env) == []
    assert os.listdir(hive_env.home / "peers") == []


def test_gc_removes_the_snapshot_of_a_colony_that_vanished_and_unclaimed_mounts(hive_env, repo, pair):
    alpha, _beta = pair
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "beta").returncode == 0
    with sqlite3.connect(hive_env.home / "hive.db") as db:  # beta went, its peerings were not told (a hand edit)
        db.execute("DELETE FROM colonies WHERE name='beta'")
        db.execute("DELETE FROM resources WHERE colony='beta'")
    result = run_stem(hive_env.env, "gc")
    assert result.returncode == 0, result.stderr
    assert "peering alpha <- beta" in result.stdout
    assert not (alpha / ".shared" / "beta").exists()

    # A snapshot whose claim is gone (deleted by hand: Stem claims before it mounts): gc unmounts and removes it.
    spawn(hive_env, "gamma", repo)
    assert run_stem(hive_env.env, "peer", "alpha", "--from", "gamma").returncode == 0
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        db.execute("DELETE FROM resources WHERE kind='peer'")
    result = run_stem(hive_env.env, "gc")
    assert result.returncode == 0, result.stderr
    assert "snapshot mount" in result.stdout
    assert shared_mounts(hive_env) == []
    assert not (alpha / ".shared").exists()
    assert os.listdir(hive_env.home / "peers") == []


def test_colony_toml_peering_applies_at_spawn_and_skips_itself_and_unknown_names(hive_env, tmp_path):
    toml = '[peering]\nfrom = ["beta", "nobody"]\nauto_refresh = true\nexclude = ["secret-dir/"]\n'
    repo = make_repo(tmp_path / "peering-repo", colony_toml=toml)
    (repo / "secret-dir").mkdir()
    (repo / "secret-dir" / "key.txt").write_text("k\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "secret dir")
    spawn(hive_env, "beta", repo)  # names itself: skipped
    assert os.listdir(worktree(hive_env, "beta") / ".shared") == []
    spawn(hive_env, "alpha", repo)
    snapshot = worktree(hive_env, "alpha") / ".shared" / "beta"
    assert (snapshot / "colony.toml").exists()
    assert not (snapshot / "secret-dir").exists()
    logs = run_stem(hive_env.env, "logs", "alpha", "-s", "peering").stdout
    assert "'nobody', not a colony of this hive" in logs
    rows = json.loads(run_stem(hive_env.env, "peer", "alpha", "--json").stdout)
    assert [(p["source"], p["follow"], p["origin"]) for p in rows["peers"]] == [("beta", True, "config")]
    (worktree(hive_env, "beta") / "later.txt").write_text("x\n")
    wait_for((snapshot / "later.txt").exists, timeout=20, what="auto_refresh to bring beta's new file")


def test_bad_input_is_one_line_exit_2_and_makes_nothing(hive_env, repo):
    spawn(hive_env, "alpha", repo)
    spawn(hive_env, "beta", repo)
    alpha = worktree(hive_env, "alpha")
    assert_refused(run_stem(hive_env.env, "peer", "alpha", "--from", "nobody"), "no colony named 'nobody'")
    assert_refused(run_stem(hive_env.env, "peer", "nobody", "--from", "alpha"), "no colony named 'nobody'")
    assert_refused(run_stem(hive_env.env, "peer", "alpha", "--from", "alpha"), "cannot peer with itself")
    assert_refused(run_stem(hive_env.env, "unpeer", "alpha", "--from", "beta"), "alpha does not read beta")
    assert_refused(run_stem(hive_env.env, "peer", "alpha", "--refresh"), "alpha reads no colony")
    assert_refused(run_stem(hive_env.env, "peer", "alpha", "--follow"), "--follow needs --from")
    assert run_stem(hive_env.env, "stop", "beta").returncode == 0
    subprocess.run(["rm", "-rf", str(worktree(hive_env, "beta"))], check=True)
    assert_refused(run_stem(hive_env.env, "peer", "alpha", "--from", "beta"), "beta has no worktree")
    assert os.listdir(alpha / ".shared") == []
    assert json.loads(run_stem(hive_env.env, "peer", "alpha", "--json").stdout) == {"peers": [], "peered_by": []}
    with sqlite3.connect(hive_env.home / "hive.db") as db:
        claims = [row[0] for row in db.execute("SELECT ident FROM resources WHERE kind='peer'")]
    assert claims == [os.path.realpath(alpha / ".shared")]  # alpha's own, empty, as every running colony has


def test_sync_tree_copies_only_what_changed_and_never_follows_a_symlink(tmp_path):
    source, dest = tmp_path / "b", tmp_path / "copy"
    plant(source)
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        excludes = Excludes(DEFAULT_EXCLUDE)
        first = sync_tree(source, fd, excludes)
        assert first.copied == first.files == len(WORK) + 1  # data/local.sqlite: only the hive excludes it
        again = sync_tree(source, fd, excludes)
        assert again.copied == 0 and again.removed == 0 and again.files == first.files
        (source / "work.txt").write_text("longer content now\n")
        third = sync_tree(source, fd, excludes)
        assert third.copied == 1
        assert (dest / "work.txt").read_text() == "longer content now\n"
    finally:
        os.close(fd)
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_unmount_takes_every_stacked_mount_and_is_quiet_where_there_is_none(tmp_path):
    from core.peering import mount_points, unmount

    target = tmp_path / "shared"
    target.mkdir()
    for source in ("one", "two"):  # two binds stacked on one point, as a remount over a live one leaves
        (tmp_path / source).mkdir()
        subprocess.run(["mount", "--bind", str(tmp_path / source), str(target)], check=True)
    try:
        assert mount_points().count(str(target)) == 2
        unmount(str(target))
        assert str(target) not in mount_points()
        unmount(str(target))  # not a mount point (any more)
        unmount(str(tmp_path / "missing"))  # no such path
    finally:
        while str(target) in mount_points():
            subprocess.run(["umount", "-l", str(target)], check=False)
