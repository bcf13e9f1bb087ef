"""Every bad input gets one clear line on stderr, exit code 2, and leaves nothing half-made."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import assert_refused, git, link_names, make_repo, netns_names, run_stem, stem_cmd, wait_for

pytestmark = pytest.mark.root


def assert_nothing_made(hive_env, repo: Path | None = None, colonies: int = 0) -> None:
    assert len(netns_names(hive_env.prefix)) == colonies
    assert len(link_names(hive_env.prefix)) == colonies
    if (hive_env.home / "hive.db").exists():
        with sqlite3.connect(hive_env.home / "hive.db") as db:
            assert db.execute("SELECT COUNT(*) FROM colonies").fetchone()[0] == colonies
    worktrees = hive_env.home / "worktrees"
    assert len(list(worktrees.iterdir()) if worktrees.exists() else []) == colonies
    assert len(list((hive_env.home / "locks").glob("colony-*.lock"))) <= colonies  # none for a name that is no colony
    if repo is not None:
        assert git(repo, "worktree", "list").count("\n") == 1 + colonies
        assert len(git(repo, "branch").split("\n")) - 1 == 1 + colonies


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Alpha", "not a DNS label"),
        ("-alpha", "not a DNS label"),
        ("alpha-", "not a DNS label"),
        ("al_pha", "not a DNS label"),
        ("al.pha", "not a DNS label"),
        ("a" * 33, "33 characters long: the limit is 32"),
        ("", "colony name is empty"),
    ],
)
def test_invalid_names(hive_env, repo, name, why):
    assert_refused(run_stem(hive_env.env, "spawn", "--repo", str(repo), "--", name), why)
    assert_nothing_made(hive_env, repo)


@pytest.mark.parametrize("count", ["-5", "many"])
def test_a_count_of_log_lines_that_is_not_one_is_refused(hive_env, count):
    assert_refused(run_stem(hive_env.env, "logs", "alpha", "-n", count), f"{count!r} is not a count of lines")


def test_a_colony_toml_not_committed_is_warned_of_at_spawn(hive_env, repo):
    """The colony gets colony.toml as of the base commit: one the user wrote but did not commit was ignored without
    a word (no services, exit 0). The spawn still works, and says so."""
    (repo / "colony.toml").write_text('[services.web]\ncommand = "sleep 1000"\n')
    result = run_stem(hive_env.env, "spawn", "fresh", "--repo", str(repo), "--agent", "shell")
    assert result.returncode == 0, result.stderr
    assert f"warning: fresh: {repo / 'colony.toml'} is not committed at HEAD" in result.stderr, result.stderr
    subprocess.run(["git", "-C", str(repo), "add", "colony.toml"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "services"], check=True)
    (repo / "colony.toml").write_text('[services.web]\ncommand = "sleep 2000"\n')
    result = run_stem(hive_env.env, "spawn", "edited", "--repo", str(repo), "--agent", "shell")
    assert result.returncode == 0, result.stderr
    assert "has edits not committed at HEAD: the colony gets the committed one" in result.stderr, result.stderr
    (repo / "colony.toml").write_text('[services.web]\ncommand = "sleep 1000"\n')
    result = run_stem(hive_env.env, "spawn", "same", "--repo", str(repo), "--agent", "shell")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    # A base the checkout is not at: its colony.toml is another commit's, not edits (it said "edits not committed").
    (repo / "colony.toml").write_text('[services.web]\ncommand = "sleep 3000"\n')
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "longer"], check=True)
    result = run_stem(hive_env.env, "spawn", "older", "--repo", str(repo), "--agent", "shell", "--base", "HEAD~1")
    assert result.returncode == 0, result.stderr
    assert "differs from HEAD~1's (the checkout is at another commit): the colony gets HEAD~1's" in result.stderr
    assert "edits" not in result.stderr, result.stderr
    result = run_stem(hive_env.env, "spawn", "oldest", "--repo", str(repo), "--agent", "shell", "--base", "HEAD~2")
    assert result.returncode == 0, result.stderr
    assert "is not in HEAD~2: the colony has no colony.toml (the checkout is at another commit)" in result.stderr


def test_name_already_used(hive_env, repo):
    assert run_stem(hive_env.env, "spawn", "dup", "--repo", str(repo)).returncode == 0
    assert_refused(run_stem(hive_env.env, "spawn", "dup", "--repo", str(repo)), "a colony named 'dup' already exists")
    assert_nothing_made(hive_env, repo, colonies=1)


def test_path_that_is_not_a_git_repository(hive_env, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert_refused(
        run_stem(hive_env.env, "spawn", "x", "--repo", str(plain)), str(plain), "is not inside a git repository"
    )
    assert_refused(run_stem(hive_env.env, "spawn", "x", "--repo", str(tmp_path / "missing")), "is not a directory")
    assert_nothing_made(hive_env)


def test_repository_without_commits(hive_env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert_refused(run_stem(hive_env.env, "spawn", "x", "--repo", str(empty)), "has no commits yet")
    assert_nothing_made(hive_env)


def test_base_ref_that_does_not_exist(hive_env, repo):
    assert_refused(
        run_stem(hive_env.env, "spawn", "x", "--repo", str(repo), "--base", "nope"),
        "base ref 'nope' does not name a commit",
    )
    assert_nothing_made(hive_env, repo)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[colony]\nsetup = [\n", "colony.toml:"),
        ("[colony]\nsetup = 'npm ci'\n", "colony.toml:2: [colony] setup"),
        ("[colony]\nbogus = 1\n", "colony.toml:2: [colony] bogus: unknown key"),
        ("[services.web]\ncommand = 'x'\nrestart = 'sometimes'\n", "colony.toml:3: [services.web] restart"),
        ("[services.web]\nport = 3000\n", "[services.web] command"),
        ("[services.web]\ncommand = 'x'\ndepends_on = ['db']\n", "colony.toml:3: [services.web] depends_on"),
        ("a = " + "[" * 10_000 + "]" * 10_000, "colony.toml: invalid TOML: arrays, tables or keys nested too deeply"),
        ("[colony]\nenv = " + "{a = " * 10_000 + "'x'" + "}" * 10_000, "colony.toml: invalid TOML: arrays, tables"),
    ],
)
def test_malformed_colony_toml_names_file_line_and_key(hive_env, tmp_path, toml, expected):
    repo = make_repo(tmp_path / "badtoml", colony_toml=toml)
    assert_refused(run_stem(hive_env.env, "spawn", "x", "--repo", str(repo)), expected)
    assert_nothing_made(hive_env, repo)


def test_a_broken_colony_toml_of_another_commit_is_named_as_git_names_it(hive_env, tmp_path):
    """The colony's colony.toml is the base commit's: when it is not the file in the user's checkout, the error
    names it as `git show` would, not the checkout's file (which may be fine)."""
    repo = make_repo(tmp_path / "based", colony_toml="[colony]\nbogus = 1\n")
    (repo / "colony.toml").write_text("[colony]\n")
    git(repo, "commit", "-qam", "fixed")
    assert_refused(
        run_stem(hive_env.env, "spawn", "x", "--repo", str(repo), "--base", "HEAD~1"),
        "HEAD~1:colony.toml:2: [colony] bogus: unknown key",
    )
    (repo / "colony.toml").write_text("[colony]\nbogus = 2\n")  # uncommitted: the spawn takes HEAD's
    assert run_stem(hive_env.env, "spawn", "x", "--repo", str(repo)).returncode == 0


def test_failing_setup_command_rolls_back_and_names_the_step(hive_env, tmp_path):
    repo = make_repo(
        tmp_path / "failsetup", colony_toml='[colony]\nsetup = ["echo preparing; echo broken >&2; exit 4"]\n'
    )
    line = assert_refused(run_stem(hive_env.env, "spawn", "x", "--repo", str(repo)))
    assert line == (
        "stem: spawn x failed while provisioning: setup command `echo preparing; echo broken >&2; exit 4` "
        "exited with 4: preparing | broken (everything made was removed)"
    )
    assert_nothing_made(hive_env, repo)
    assert list((hive_env.home / "colonies").iterdir()) == []


def test_full_address_pool(hive_env, repo):
    env = dict(hive_env.env, STEM_POOL=str(hive_env.pool.network_address) + "/29")  # two /30 slots
    assert run_stem(env, "spawn", "one", "--repo", str(repo)).returncode == 0
    assert run_stem(env, "spawn", "two", "--repo", str(repo)).returncode == 0
    assert_refused(run_stem(env, "spawn", "three", "--repo", str(repo)), "address pool is full (2 colonies)")
    assert_nothing_made(hive_env, repo, colonies=2)
    assert_refused(run_stem(dict(hive_env.env, STEM_POOL="10.300.0.0/16"), "ls"), "STEM_POOL '10.300.0.0/16'")


def test_bad_pool_in_config_file(hive_env, repo, tmp_path):
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[hive]\npool = "10.0.0.0/31"\n')
    env = dict(hive_env.env)
    env.pop("STEM_POOL")
    assert_refused(run_stem(env, "spawn", "x", "--repo", str(repo)), "config.toml:2: [hive] pool")
    assert_nothing_made(hive_env, repo)


def test_deeply_nested_config_toml_is_one_line(hive_env, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[keys]\nx = " + "[" * 10_000 + "]" * 10_000 + "\n")
    env = {**hive_env.env, "STEM_CONFIG": str(config)}
    assert_refused(run_stem(env, "ls"), f"{config}: invalid TOML: arrays, tables or keys nested too deeply")
    config.write_text("[keys]\n" + "a." * 200 + "b = 'x'\n")
    assert_refused(run_stem(env, "ls"), f"{config}:2: tables or arrays nested more than 32 deep")


def test_missing_capabilities_says_exactly_what_is_needed(hive_env, repo):
    result = subprocess.run(
        [
            shutil.which("setpriv") or "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-net_admin,-sys_admin",
            "--",
            *_stem(),
            "spawn",
            "x",
            "--repo",
            str(repo),
        ],
        env=hive_env.env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert_refused(result, "stem spawn needs CAP_NET_ADMIN and CAP_SYS_ADMIN", "run it as root")
    assert_nothing_made(hive_env, repo)


def _stem() -> list[str]:
    from helpers import stem_cmd

    return stem_cmd()


def test_unknown_colony_and_wrong_states(hive_env, repo):
    for verb in ("stop", "start", "destroy"):
        assert_refused(run_stem(hive_env.env, verb, "ghost"), "no colony named 'ghost'")
    assert_refused(run_stem(hive_env.env, "exec", "ghost", "--", "true"), "no colony named 'ghost'")
    for args in (("commit", "ghost", "-m", "x"), ("merge", "ghost"), ("sync", "ghost")):
        assert_refused(run_stem(hive_env.env, *args), "no colony named 'ghost'")
    assert list((hive_env.home / "locks").glob("colony-*.lock")) == []  # a name that is no colony leaves nothing
    assert run_stem(hive_env.env, "spawn", "live", "--repo", str(repo)).returncode == 0
    assert_refused(run_stem(hive_env.env, "exec", "live"), "no command given")
    assert_refused(
        run_stem(hive_env.env, "exec", "live", "--", "no-such-program-xyz"),
        "command not found in live: no-such-program-xyz",
    )


def test_an_empty_agent_is_refused_not_taken_for_the_default(hive_env, repo):
    assert_refused(run_stem(hive_env.env, "spawn", "x", "--repo", str(repo), "--agent", " "), "--agent is empty")
    assert_nothing_made(hive_env, repo)


def test_usage_errors_are_one_line(hive_env):
    assert_refused(run_stem(hive_env.env, "spawn"), "the following arguments are required: name")
    assert_refused(run_stem(hive_env.env, "frobnicate"), "invalid choice: 'frobnicate'")


def test_existing_branch_refuses_spawn_and_rollback_leaves_it_alone(hive_env, repo):
    git(repo, "branch", "colony/taken")
    before = git(repo, "rev-parse", "colony/taken")
    assert_refused(
        run_stem(hive_env.env, "spawn", "taken", "--repo", str(repo)),
        "branch colony/taken already exists",
        "git branch -D colony/taken",
    )
    assert git(repo, "rev-parse", "colony/taken") == before  # not Stem's: untouched
    assert netns_names(hive_env.prefix) == []
    assert list((hive_env.home / "worktrees").iterdir()) == []


def test_a_colony_name_another_hive_has_in_the_same_repository_names_that_hive(hive_env, repo, tmp_path):
    """Two STEM_HOMEs spawn from one repository: the second `a` is refused naming the hive whose colony has the
    branch, never advising to delete it; the first colony is untouched."""
    other = HiveEnv(tmp_path / "other")
    try:
        assert run_stem(other.env, "spawn", "a", "--repo", str(repo)).returncode == 0
        tip = git(repo, "rev-parse", "colony/a")
        line = assert_refused(
            run_stem(hive_env.env, "spawn", "a", "--repo", str(repo)),
            f"branch colony/a of {repo} belongs to a colony of the hive at {other.home}",
            "pick another colony name",
        )
        assert "branch -D" not in line
        assert git(repo, "rev-parse", "colony/a") == tip
        assert_nothing_made(hive_env)
        assert json.loads(run_stem(other.env, "ls", "--json").stdout)[0]["state"] == "running"
    finally:
        other.cleanup()


def test_gc_never_deletes_a_kept_branch_that_another_hive_has_checked_out_now(hive_env, repo, tmp_path):
    """A destroyed colony's unmerged branch is kept (and gc deletes it once merged); the user deletes it by hand,
    and another hive makes a colony of that name: this hive's gc lets its claim go and leaves that branch alone."""
    assert run_stem(hive_env.env, "spawn", "shared", "--repo", str(repo)).returncode == 0
    commit = "echo x > x.txt && git add x.txt && git commit -qm work"
    assert run_stem(hive_env.env, "exec", "shared", "--", "sh", "-c", commit).returncode == 0
    assert run_stem(hive_env.env, "destroy", "--force", "shared").returncode == 0
    git(repo, "branch", "-D", "colony/shared")
    other = HiveEnv(tmp_path / "other")
    try:
        assert run_stem(other.env, "spawn", "shared", "--repo", str(repo)).returncode == 0
        tip = git(repo, "rev-parse", "colony/shared")
        gc = run_stem(hive_env.env, "gc")
        assert gc.returncode == 0, gc.stderr
        assert "branch colony/shared" in gc.stdout and "not Stem's; forgotten" in gc.stdout, gc.stdout
        assert git(repo, "rev-parse", "colony/shared") == tip
        assert run_stem(hive_env.env, "gc").stdout.strip() == "nothing to clean"
        assert json.loads(run_stem(other.env, "ls", "--json").stdout)[0]["state"] == "running"
    finally:
        other.cleanup()


def test_a_reader_that_stops_early_gets_no_traceback(hive_env, repo):
    """`stem logs NAME -n 1000 | head -1` and `stem ls | head`: the writer sees EPIPE; that is not an error."""
    assert run_stem(hive_env.env, "spawn", "chatty", "--repo", str(repo)).returncode == 0
    log = hive_env.home / "colonies" / "chatty" / "colony.log"
    with log.open("a") as f:  # enough lines to outgrow the pipe's buffer
        f.writelines(f"12:00:00.000 [agent] line {i} {'x' * 200}\n" for i in range(2000))
    for args in (("logs", "chatty", "-n", "2000"), ("ls",)):
        reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        result = subprocess.run(
            [*stem_cmd(), *args], env=hive_env.env, stdout=reader.stdin, stderr=subprocess.PIPE, text=True
        )
        reader.stdin.close()
        reader.wait()
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_logs_of_a_service_the_colony_does_not_have(hive_env, tmp_path):
    repo = make_repo(tmp_path / "svc", colony_toml='[services.web]\ncommand = "sleep 600"\n')
    assert run_stem(hive_env.env, "spawn", "one", "--repo", str(repo)).returncode == 0
    assert_refused(run_stem(hive_env.env, "logs", "one", "-s", "nosuch"), "one has no service named 'nosuch'", "web")
    assert run_stem(hive_env.env, "logs", "one", "-s", "web").returncode == 0


def test_a_full_disk_is_one_line_for_every_command(hive_env, repo, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(disk)], check=True)
    try:
        env = {**hive_env.env, "STEM_HOME": str(disk / "home")}
        assert run_stem(env, "spawn", "kept", "--repo", str(repo)).returncode == 0  # made while there is room
        log = disk / "home" / "colonies" / "kept" / "colony.log"
        wait_for(lambda: log.stat().st_size > 0, timeout=10, what="the colony's log")
        before = log.read_bytes()
        worktree = Path(json.loads(run_stem(env, "ls", "--json").stdout)[0]["worktree"])
        with (disk / "filler").open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        # Reading needs no room: the listing shows the colony as it runs, gc finds nothing to remove.
        assert re.search(r"^kept\s+running\s", run_stem(env, "ls").stdout, re.M)
        assert run_stem(env, "gc").stdout.strip() == "nothing to clean"
        for args in (
            ("spawn", "nospace", "--repo", str(repo)),
            ("stop", "kept"),  # its registry row cannot change: the colony runs on, nothing half-stopped
            ("destroy", "--force", "kept"),
        ):
            line = assert_refused(run_stem(env, *args), "free some space")
            assert "cannot be written" in line or "No space left" in line
        assert log.read_bytes().startswith(before)  # a destroy that could not begin left the log as it was
        # A command the registry cannot record is not left running where no stop would find it.
        assert_refused(run_stem(env, "exec", "kept", "--", "sleep", "333"), "free some space")
        ps = subprocess.run(["ps", "-e", "-o", "args="], capture_output=True, text=True).stdout.splitlines()
        assert "sleep 333" not in ps
        # Refused before any of it runs: a quick command ran before its record was refused, and its exec said it was
        # refused.
        assert_refused(run_stem(env, "exec", "kept", "--", "touch", "made.txt"), "free some space")
        assert not (worktree / "made.txt").exists()
        (disk / "filler").unlink()
        assert re.search(r"^kept\s+running\s", run_stem(env, "ls").stdout, re.M)
        assert run_stem(env, "destroy", "--force", "kept").returncode == 0
        assert netns_names(hive_env.prefix) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_spawn_on_a_nearly_full_disk_is_refused_before_it_makes_anything(hive_env, repo, tmp_path):
    """A few hundred KB left under STEM_HOME: the spawn would fail half way and its rollback might find no room
    either (a row left 'starting', every later command refused). It is refused first, and the hive stays usable."""
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(hive_env.home)], check=True)
    try:
        assert run_stem(hive_env.env, "ls").returncode == 0  # the hive's own files first
        free = os.statvfs(hive_env.home).f_bavail * os.statvfs(hive_env.home).f_frsize
        (hive_env.home / "filler").write_bytes(b"\0" * (free - (300 << 10)))
        line = assert_refused(run_stem(hive_env.env, "spawn", "tight", "--repo", str(repo)), "No space left on device")
        assert re.search(r"has 0\.\d\d MB free and a spawn needs 1\.05 MB", line) and "free some space" in line, line
        assert_nothing_made(hive_env, repo)
        assert run_stem(hive_env.env, "ls").returncode == 0
        (hive_env.home / "filler").unlink()
        assert run_stem(hive_env.env, "spawn", "tight", "--repo", str(repo)).returncode == 0
        assert run_stem(hive_env.env, "destroy", "--force", "tight").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


def test_a_worktree_the_disk_has_no_room_for_is_one_line_and_nothing_is_left(hive_env, tmp_path):
    """The repository's files do not fit where STEM_HOME is: git says only "unable to write file"; Stem says the
    disk is full, with the size of the files and the room there is, and leaves nothing."""
    repo = make_repo(tmp_path / "bigrepo")
    (repo / "blob.bin").write_bytes(os.urandom(12 << 20))
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-qm", "a big file")
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10M", "tmpfs", str(hive_env.home)], check=True)
    try:
        line = assert_refused(
            run_stem(hive_env.env, "spawn", "big", "--repo", str(repo)),
            "No space left on device for the worktree",
            "free some space",
        )
        assert re.search(r"files take 12\.\d MB and \S+ has \d+\.\d MB free", line), line
        assert_nothing_made(hive_env, repo)
    finally:
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


@pytest.mark.parametrize("command", ["serve", "logs"])
def test_a_dead_terminal_gets_no_traceback(hive_env, repo, tmp_path, command):
    """An SSH drop: stdout is a terminal whose other end is gone (EIO on every write), then SIGHUP."""
    args = ["serve"]
    if command == "logs":
        assert run_stem(hive_env.env, "spawn", "tty", "--repo", str(repo)).returncode == 0
        args = ["logs", "tty", "-f"]
    master, slave = pty.openpty()
    with (tmp_path / "stderr").open("w") as stderr:
        proc = subprocess.Popen(
            [*stem_cmd(), *args], env=hive_env.env, stdin=slave, stdout=slave, stderr=stderr, start_new_session=True
        )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"\n" not in seen and time.monotonic() < deadline:  # the first line: it is up and has written
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    assert b"\n" in seen, seen
    os.close(master)  # the terminal is gone: the next write fails with EIO
    if command == "logs":
        # Lines it follows and writes; it may start following after the first ones, so a few.
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            with (hive_env.home / "colonies" / "tty" / "colony.log").open("a") as f:
                f.write("12:00:00.000 [agent] written after the terminal went away\n")
            time.sleep(0.2)
        assert proc.poll() is not None  # the write failed (EIO) and it ended
    if proc.poll() is None:
        proc.send_signal(signal.SIGHUP)
    code = proc.wait(timeout=30)
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err and "Errno 5" not in err, err
    assert code in (0, -signal.SIGHUP), (code, err)


def test_what_a_colony_host_says_of_a_full_disk_is_the_disk_not_sqlite(monkeypatch):
    """A host whose start (or a request) fails on a full disk answers the disk's one line, as the CLI does, not
    SQLite's class name; a bug still says what it is."""
    from core.errors import StemError, failure_line

    monkeypatch.setenv("STEM_HOME", "/srv/hive")
    line = failure_line(sqlite3.OperationalError("database or disk is full"))
    assert line == (
        "the hive's registry in /srv/hive cannot be written (database or disk is full): free some space and try again"
    )
    line = failure_line(OSError(28, "No space left on device", "/srv/hive/colonies/a/colony.log"))
    assert line == (
        "No space left on device writing /srv/hive/colonies/a/colony.log: free some space (or point STEM_HOME "
        "elsewhere) and try again"
    )
    assert failure_line(StemError("alpha is not running")) == "alpha is not running"
    assert failure_line(KeyError("x")) == "KeyError: 'x'"
    # A step of a spawn that fails so (a setup that filled the disk) says it the same way, not where SQLite raised.
    from core.actor import describe

    assert describe(sqlite3.OperationalError("database or disk is full")).startswith(
        "the hive's registry in /srv/hive cannot be written (database or disk is full)"
    )
    assert describe(KeyError("x")) == "KeyError: 'x'"
