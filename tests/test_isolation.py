"""A colony cannot read or reach what is not its own: measured from inside it, through `stem exec`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import git, http_get, make_repo, run_stem, stem_cmd, wait_for

from core import sandbox

pytestmark = pytest.mark.root

COLONY_TOML = """
[colony]
pass_env = ["STEM_TEST_PASSED"]

[services.web]
command = "python3 -m http.server 80"
port = 80
ready = "tcp"
"""


def spawn(hive_env, name: str, repo: Path) -> dict:
    result = run_stem(hive_env.env, "spawn", name, "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def inside(hive_env, name: str, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_stem({**hive_env.env, **(env or {})}, "exec", name, "--", "sh", "-c", script)


@pytest.fixture
def two(hive_env, tmp_path):
    """Colonies a and b of one repository, and a secret planted in the caller's home."""
    repo = make_repo(tmp_path / "repo", colony_toml=COLONY_TOML)
    a = spawn(hive_env, "a", repo)
    b = spawn(hive_env, "b", repo)
    return repo, a, b


def test_a_colony_runs_without_privilege_in_its_own_pid_namespace(hive_env, two):
    out = inside(hive_env, "a", "id -u; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; echo $$")
    assert out.returncode == 0, out.stderr
    uid, groups, cap_bnd, cap_eff, nnp, pid = out.stdout.split("\n")[:6]
    assert int(uid) != 0 and "0" not in groups.split()
    assert int(cap_eff.split()[1], 16) == 0 and int(cap_bnd.split()[1], 16) == 0
    assert nnp.split()[1] == "1"
    assert int(pid) < 10  # a fresh PID namespace: the shell is one of its first processes

    # `ps` shows only the colony's own processes; a host process cannot be signalled (it does not exist here).
    host_child = subprocess.Popen(["sleep", "60"])
    try:
        out = inside(hive_env, "a", f"ls /proc | grep -c '^[0-9]'; kill -0 {host_child.pid} && echo reached")
        assert out.returncode != 0 or "reached" not in out.stdout
        assert int(out.stdout.split()[0]) <= 5, out.stdout
        ps = inside(hive_env, "a", "ps -e -o pid=,comm=")
        assert ps.returncode == 0, ps.stderr
        assert "sleep" not in ps.stdout and "stem" not in ps.stdout, ps.stdout
        assert host_child.poll() is None
    finally:
        host_child.kill()
        host_child.wait()

    # No capability: joining the host's network namespace (or any) is refused, and so is changing its network.
    out = inside(hive_env, "a", "nsenter --net=/proc/1/ns/net true && echo joined; ip link set lo down && echo changed")
    assert "joined" not in out.stdout and "changed" not in out.stdout
    out = inside(hive_env, "a", "ls /run/netns | while read ns; do nsenter --net=/run/netns/$ns true && echo $ns; done")
    assert out.stdout.strip() == ""  # not another colony's network either
    out = inside(hive_env, "a", "ip -4 addr show eth0 | grep -c 'inet '; ip link show lo | grep -c UP")
    assert out.stdout.split() == ["1", "1"]  # still its own network, unchanged


def test_a_colony_sees_only_its_own_files(hive_env, two, tmp_path):
    repo, a, b = two
    secret = Path(os.environ.get("HOME", "/root")) / ".stem-test-secret"
    secret.write_text("do not read\n")
    os.chmod(secret, 0o644)  # readable by anyone on the host: only the private view keeps it out
    host_tmp = Path("/tmp") / f"stem-test-host-{os.getpid()}"
    host_tmp.write_text("host scratch\n")
    try:
        out = inside(
            hive_env,
            "a",
            f"cat {secret}; cat /etc/shadow; ls {b['worktree']}; ls {Path(b['db']).parent}; "
            f"ls {hive_env.home / 'hive.db'}; ls {hive_env.home / 'colonies' / 'b'}; ls {repo}/README.md; "
            f"cat {b['db']}; cat {host_tmp}; ls /tmp",
        )
    finally:
        secret.unlink()
        host_tmp.unlink()
    assert "do not read" not in out.stdout
    assert "root:" not in out.stdout
    assert "README.md" not in out.stdout  # the main checkout is not there (its .git is)
    assert "colony.db" not in out.stdout and "SQLite" not in out.stdout
    assert "host scratch" not in out.stdout and host_tmp.name not in out.stdout  # a private /tmp
    # Its own worktree, database and home are there and writable.
    out = inside(
        hive_env,
        "a",
        'touch made-inside && touch $HOME/.agent-config && touch /tmp/scratch && python3 -c "import os, sqlite3; '
        "db = sqlite3.connect(os.environ['COLONY_DB']); db.execute('create table t(x)'); "
        "db.execute('insert into t values (7)'); db.commit()\"",
    )
    assert out.returncode == 0, out.stderr
    assert (Path(a["worktree"]) / "made-inside").exists()
    assert sqlite3.connect(a["db"]).execute("select x from t").fetchone() == (7,)
    # The agent's files landed in the colony's home, not the user's.
    assert not (Path(os.environ.get("HOME", "/root")) / ".agent-config").exists()
    assert (hive_env.home / "colonies" / "a" / "home" / ".agent-config").exists()


def test_the_callers_environment_stays_out_but_pass_env_goes_in(hive_env, two):
    env = {"STEM_TEST_SECRET": "s3cret", "STEM_TEST_PASSED": "handed-over"}
    out = inside(hive_env, "a", 'echo "secret=$STEM_TEST_SECRET passed=$STEM_TEST_PASSED name=$COLONY_NAME"', env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "secret= passed=handed-over name=a"


def test_the_agent_commits_on_its_branch_and_its_service_serves_port_80(hive_env, two):
    repo, a, _ = two
    out = inside(
        hive_env,
        "a",
        "echo work > work.txt && git add work.txt && git commit -qm 'from inside' && git log --oneline -1",
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "from inside" in git(repo, "log", "--oneline", "-1", "colony/a")
    # Another colony of the repository cannot move or delete that branch (a uid per colony, a sticky refs folder).
    tip = git(repo, "rev-parse", "colony/a").strip()
    for attempt in ("git update-ref refs/heads/colony/a HEAD", "git update-ref -d refs/heads/colony/a"):
        out = inside(hive_env, "b", f"{attempt} && echo moved")
        assert "moved" not in out.stdout, (attempt, out.stdout, out.stderr)
        assert git(repo, "rev-parse", "colony/a").strip() == tip
    # The hooks and config of the shared repository are read-only inside: nothing planted there runs later.
    out = inside(hive_env, "a", f"echo evil >> {repo}/.git/config || echo refused")
    assert "refused" in out.stdout
    body = wait_for(lambda: http_get(f"http://{a['ip']}:80/"), timeout=15, what="the service on port 80")
    assert "work.txt" in body


def test_stem_says_what_is_not_enforced(hive_env, two):
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert all(r["isolation"] == list(sandbox.status(True)) for r in rows)
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[hive]\nisolation = false\n")
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert rows[0]["isolation"] == [
        "isolation off ([hive] isolation = false): colony processes run as root and see the host"
    ]
    out = inside(hive_env, "a", "id -u")
    assert out.stdout.strip() == "0"  # the escape hatch, for debugging


def test_stop_ends_a_confined_process_promptly_with_its_own_status(hive_env, two):
    proc = subprocess.Popen(
        [*stem_cmd(), "exec", "a", "--", "sh", "-c", "sleep 300"],
        env=hive_env.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.5)
    start = time.monotonic()
    assert run_stem(hive_env.env, "stop", "a").returncode == 0
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    assert time.monotonic() - start < 10


def test_each_missing_mechanism_is_named_in_one_line():
    none = sandbox.Support(mount_ns=False, pid_ns=False, ipc_ns=False, privileged=False, port_sysctl=False)
    lines = none.missing
    assert len(lines) == 5 and all("\n" not in line for line in lines)
    assert any("PID namespace" in line for line in lines) and any("filesystem view" in line for line in lines)
    full = sandbox.Support(mount_ns=True, pid_ns=True, ipc_ns=True, privileged=True, port_sysctl=True)
    assert full.missing == ()


def test_the_keys_parse_and_a_root_colony_uid_is_refused(tmp_path):
    from core.config import parse_colony_config
    from core.errors import ConfigError
    from core.settings import load_settings

    config = tmp_path / "config.toml"
    config.write_text('[hive]\nisolation = false\ncolony_uid = 1000\nagent_files = ["~/.claude"]\n')
    settings = load_settings(config)
    assert (settings.isolation, settings.colony_uid, settings.agent_files) == (False, 1000, ("~/.claude",))
    config.write_text("[hive]\ncolony_uid = 0\n")
    with pytest.raises(ConfigError, match="colony_uid"):
        load_settings(config)
    assert parse_colony_config('[colony]\npass_env = ["A_KEY"]\n', tmp_path / "c.toml").pass_env == ("A_KEY",)
    with pytest.raises(ConfigError, match="pass_env"):
        parse_colony_config('[colony]\npass_env = ["A=B"]\n', tmp_path / "c.toml")
