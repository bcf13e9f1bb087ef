"""A colony's limits, network policy and private view tried as a user, a careless agent or a hostile one would:
real programs inside a real colony, measured from inside it (`stem exec`) and from the host."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import make_repo, run_stem

pytestmark = pytest.mark.root

COLONY_TOML = """
[colony]
agent = "shell"
"""


def spawn(env: HiveEnv, name: str, repo: Path) -> dict:
    result = run_stem(env.env, "spawn", name, "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    rows = json.loads(run_stem(env.env, "ls", "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def inside(env: HiveEnv, name: str, script: str) -> subprocess.CompletedProcess[str]:
    return run_stem(env.env, "exec", name, "--", "sh", "-c", script)


@pytest.fixture
def outside_tmp():
    """Folders outside /tmp (which every colony has a private one of), removed after: another hive's home, and
    another user's home under /home."""
    tag = f"stem-test-{os.getpid()}-{secrets.token_hex(3)}"
    made = [Path("/var/lib") / tag, Path("/home") / tag]
    yield made
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_colony_sees_neither_another_hive_nor_another_users_home(hive_env, tmp_path, outside_tmp):
    # Another hive on the machine, its home where a user may well put one (not under /tmp): its registry, a
    # colony's worktree (writable by every colony's group, as Stem makes them) and its log.
    other_root, user_home = outside_tmp
    other = HiveEnv(other_root)
    try:
        assert run_stem(other.env, "ls").returncode == 0  # its first command claims its prefix, pool and home
        worktree = other.home / "worktrees" / "theirs"
        worktree.mkdir(parents=True)
        (worktree / "work.txt").write_text("another hive's work\n")
        worktree.chmod(0o2777)
        user_home.mkdir()
        (user_home / "notes.txt").write_text("another user's notes\n")
        spawn(hive_env, "a", make_repo(tmp_path / "repo", colony_toml=COLONY_TOML))
        out = inside(
            hive_env,
            "a",
            f"ls {other.home}; cat {worktree}/work.txt; echo planted > {worktree}/planted; "
            f"ls {other.home / 'hive.db'}; cat {user_home}/notes.txt; ls /home; ls /etc/netns /run/stem/hives",
        )
        assert "another hive's work" not in out.stdout
        assert not (worktree / "planted").exists()
        assert "hive.db" not in out.stdout and "worktrees" not in out.stdout
        assert "another user's notes" not in out.stdout and user_home.name not in out.stdout
        assert other.prefix not in out.stdout and hive_env.prefix not in out.stdout  # no hive's or colony's name
        # What the colony needs is still there: its worktree, the tools on PATH, its own git.
        out = inside(hive_env, "a", "git log --oneline | wc -l && python3 -c 'print(6 * 7)'")
        assert out.returncode == 0 and out.stdout.split() == ["1", "42"], out.stderr
    finally:
        other.cleanup()
