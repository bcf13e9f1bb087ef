"""A colony cannot read or reach what is not its own: measured from inside it, through `stem exec`."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import git, http_get, make_repo, run_stem, stem_cmd, wait_for
from test_e2e_tmux import Tmux

from core import procs, sandbox
from core.host.paths import HostPaths
from core.host.protocol import Connection, Keys

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


def _whole_line(path: Path) -> bool:
    try:
        return path.read_text().endswith("\n")
    except FileNotFoundError:
        return False


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
    out = inside(
        hive_env, "a", "id -u; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; cat /proc/1/comm"
    )
    assert out.returncode == 0, out.stderr
    uid, groups, cap_bnd, cap_eff, nnp, first = out.stdout.split("\n")[:6]
    assert int(uid) != 0 and "0" not in groups.split()
    assert int(cap_eff.split()[1], 16) == 0 and int(cap_bnd.split()[1], 16) == 0
    assert nnp.split()[1] == "1"
    assert first == "colony-init"  # the colony's own PID namespace, whose pid 1 is the colony's init

    # `ps` shows only the colony's own processes; a host process cannot be signalled (it does not exist here).
    host_child = subprocess.Popen(["sleep", "60"])
    try:
        out = inside(hive_env, "a", f"kill -0 {host_child.pid} && echo reached")
        assert out.returncode != 0 or "reached" not in out.stdout
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


def test_the_colonys_user_has_a_name_a_group_and_a_home_as_programs_look_them_up(hive_env, tmp_path):
    """Stem's dedicated uid has no entry on the host; a program that looks its user up (postgres's initdb, whoami,
    ssh, npm) finds one inside the colony, in setup commands as in `stem exec`, and the host's files are unchanged."""
    host_passwd = Path("/etc/passwd").read_text()
    toml = '[colony]\nsetup = ["id -un > $HOME/setup-user"]\n'
    repo = make_repo(tmp_path / "named", colony_toml=toml)
    spawn(hive_env, "named", repo)
    out = inside(
        hive_env,
        "named",
        "id -un; id -gn; whoami; cat $HOME/setup-user; "
        'python3 -c "import os, pwd; e = pwd.getpwuid(os.getuid()); '
        "print(e.pw_dir == os.environ['HOME'], e.pw_shell)\"",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:5] == ["colony", "colony", "colony", "colony", "True /bin/sh"], out.stdout
    uid = int(inside(hive_env, "named", "id -u").stdout)
    assert uid >= sandbox.DEDICATED_UID
    assert Path("/etc/passwd").read_text() == host_passwd  # nothing added on the host
    assert f":{uid}:" not in host_passwd


def test_an_entry_is_added_only_where_the_host_has_none(tmp_path):
    etc, made = tmp_path / "etc", tmp_path / "colony"
    etc.mkdir()
    made.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nana:x:1000:1000::/home/ana:/bin/bash")
    (etc / "group").write_text("root:x:0:\nana:x:1000:\n")
    sandbox.write_accounts(made, sandbox.Identity(1000, 1000, "ana", "sudo"), Path("/home/ana"), etc)
    assert not (made / "passwd").exists() and not (made / "group").exists()  # the host's own are seen
    dedicated = sandbox.Identity(sandbox.DEDICATED_UID + 3, sandbox.DEDICATED_UID, "colony", "dedicated")
    sandbox.write_accounts(made, dedicated, Path("/root"), etc)
    assert (made / "passwd").read_text().splitlines()[
        -1
    ] == f"colony:x:{dedicated.uid}:{dedicated.gid}:Stem colony:/root:/bin/sh"
    assert (made / "passwd").read_text().splitlines()[1] == "ana:x:1000:1000::/home/ana:/bin/bash"  # newline added
    assert (made / "group").read_text() == f"root:x:0:\nana:x:1000:\ncolony:x:{dedicated.gid}:\n"
    assert (made / "passwd").stat().st_mode & 0o777 == 0o644


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
            f"cat {b['db']}; cat {host_tmp}; ls /tmp; ls /run/netns /var/run/netns",
        )
    finally:
        secret.unlink()
        host_tmp.unlink()
    assert "do not read" not in out.stdout
    assert "root:" not in out.stdout
    assert "README.md" not in out.stdout  # the main checkout is not there (its .git is)
    assert "colony.db" not in out.stdout and "SQLite" not in out.stdout
    assert "host scratch" not in out.stdout and host_tmp.name not in out.stdout  # a private /tmp
    assert hive_env.prefix not in out.stdout  # no other colony's namespace name
    # Its network devices, as sysfs lists them, are its own: not the host's eth0 nor b's veth (named by the hive).
    for folder in ("/sys/class/net", "/sys/devices/virtual/net"):
        listed = inside(hive_env, "a", f"ls {folder}")
        assert listed.stdout.split() == ["eth0", "lo"], (folder, listed)
    mac = inside(hive_env, "a", "cat /sys/class/net/eth0/address").stdout.strip()
    assert mac == inside(hive_env, "a", "ip -o link show eth0").stdout.split("link/ether ")[1].split()[0]
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


def test_a_colony_of_another_hive_cannot_move_this_hives_branch(hive_env, two, tmp_path):
    """Two hives on one machine (two STEM_HOMEs) spawn from one repository: each colony runs as a uid of its own
    across hives, so the other hive's colony can neither move nor delete this one's branch."""
    repo = two[0]
    other = HiveEnv(tmp_path / "other")
    try:
        assert run_stem(other.env, "spawn", "c", "--repo", str(repo)).returncode == 0
        colonies = ((hive_env, "a"), (hive_env, "b"), (other, "c"))
        uids = {int(inside(env, name, "id -u").stdout) for env, name in colonies}
        assert len(uids) == 3, uids
        commit = "echo work > work.txt && git add work.txt && git commit -qm 'from inside'"
        assert inside(hive_env, "a", commit).returncode == 0
        tip = git(repo, "rev-parse", "colony/a").strip()
        for attempt in ("git update-ref refs/heads/colony/a HEAD", "git update-ref -d refs/heads/colony/a"):
            out = inside(other, "c", f"{attempt} && echo moved")
            assert "moved" not in out.stdout, (attempt, out.stdout, out.stderr)
            assert git(repo, "rev-parse", "colony/a").strip() == tip
    finally:
        other.cleanup()


def test_a_service_and_stem_exec_may_write_to_dev_stdout_and_dev_stderr(hive_env, tmp_path):
    """Programs that log to /dev/stderr by name (nginx's `error_log /dev/stderr`) reopen the pipe Stem gave them
    as the colony's uid: their lines reach the colony's log, `stem exec`'s reach the caller, and the agent's its
    terminal."""
    toml = (
        "[services.named]\n"
        "command = \"sh -c 'echo to-out > /dev/stdout && echo to-err > /dev/stderr && exec sleep 600'\"\n"
    )
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    result = run_stem(hive_env.env, "spawn", "pipes", "--repo", str(repo), "--agent", "shell")
    assert result.returncode == 0, result.stderr
    log = hive_env.home / "colonies" / "pipes" / "colony.log"
    wait_for(lambda: "to-err" in log.read_text(), timeout=15, what="the service's line to /dev/stderr")
    assert "to-out" in log.read_text()
    assert "Permission denied" not in log.read_text()
    out = inside(hive_env, "pipes", "echo via-out > /dev/stdout; echo via-err > /dev/stderr")
    assert (out.returncode, out.stdout, out.stderr) == (0, "via-out\n", "via-err\n")
    type_into_agent(hive_env, "pipes", "echo on-tty > /dev/stderr && echo on-tty > /dev/stdout && touch tty-ok")
    worktree = Path(json.loads(run_stem(hive_env.env, "ls", "--json").stdout)[0]["worktree"])
    wait_for((worktree / "tty-ok").exists, timeout=15, what="the agent's write to its terminal by name")


def test_stem_exec_from_a_terminal_runs_on_a_terminal_of_its_own(hive_env, tmp_path):
    """`stem exec NAME -- bash` typed in a terminal, as `docker exec -it`: the shell has a controlling terminal
    (job control, ctrl+c, /dev/tty, /dev/stderr), the user's window size and its changes, and its exit status."""
    spawn(hive_env, "tty", make_repo(tmp_path / "repo"))
    server = Tmux(dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path)))
    command = f"{shlex.join(stem_cmd())} exec tty -- bash --norc --noprofile; echo exec exited $?; sleep 600"
    server("new-session", "-d", "-s", "stem", "-x", "100", "-y", "30", command)
    try:
        server.wait("bash-")
        server.keys("-l", "tty; echo to-stderr > /dev/stderr && stty size && sleep 60")
        server.keys("Enter")
        server.wait("to-stderr", "30 100")
        server.keys("C-c")  # through the command's own terminal to its foreground job
        server.wait("^C")
        server("resize-window", "-t", "stem", "-x", "80", "-y", "24")
        server.keys("-l", "stty size; exit 3")
        server.keys("Enter")
        screen = server.wait("24 80", "exec exited 3")
        assert "/dev/pts/" in screen and "no job control" not in screen and "not a tty" not in screen, screen
    finally:
        server.kill()


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


def test_a_colony_commits_as_the_user_whose_gitconfig_names_them(tmp_path):
    user = tmp_path / "user.gitconfig"
    # Set twice: the last value wins, as in git's own lookup.
    user.write_text("[user]\n\tname = Old Name\n\temail = ada@example.org\n[user]\n\tname = Ada Lovelace\n")
    made = tmp_path / "colony-home" / ".gitconfig"
    made.parent.mkdir()
    sandbox._write_gitconfig(made, os.getuid(), os.getgid(), user)
    assert git(tmp_path, "config", "--file", str(made), "user.name").strip() == "Ada Lovelace"
    assert git(tmp_path, "config", "--file", str(made), "user.email").strip() == "ada@example.org"
    assert git(tmp_path, "config", "--file", str(made), "safe.directory").strip() == "*"
    # No user config: a name and an address git accepts, since the colony's uid has no passwd entry.
    bare = tmp_path / "bare-home" / ".gitconfig"
    bare.parent.mkdir()
    sandbox._write_gitconfig(bare, os.getuid(), os.getgid(), tmp_path / "missing")
    assert git(tmp_path, "config", "--file", str(bare), "user.email").strip() == "colony@stem.invalid"


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


# A service that says who it is in the colony's /tmp and in its worktree, and notes every SIGUSR1 it gets.
SERVICE = """
import os, signal
def noted(*_):
    with open("signalled.txt", "a") as f:
        f.write("usr1\\n")
signal.signal(signal.SIGUSR1, noted)
with open("/tmp/from-service.txt", "w") as f:
    f.write(f"{os.environ['COLONY_NAME']} {os.getpid()}\\n")
with open("svc.pid.tmp", "w") as f:
    f.write(f"{os.getpid()}\\n")
os.rename("svc.pid.tmp", "svc.pid")
while True:
    signal.pause()
"""
SERVICE_TOML = '[services.svc]\ncommand = "exec python3 svc.py"\n'


@pytest.fixture
def shared(hive_env, tmp_path):
    """Colonies a and b, each with the service above and a shell as its agent (a person's typing reaches it)."""
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE_TOML)
    (repo / "svc.py").write_text(SERVICE)
    git(repo, "add", "svc.py")
    git(repo, "commit", "-qm", "service")
    rows = {}
    for name in ("a", "b"):
        result = run_stem(hive_env.env, "spawn", name, "--repo", str(repo), "--agent", "shell")
        assert result.returncode == 0, result.stderr
        rows[name] = next(r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout) if r["name"] == name)
        pid_file = Path(rows[name]["worktree"]) / "svc.pid"
        wait_for(pid_file.exists, timeout=15, what=f"{name}'s service to start")
    return rows


def type_into_agent(hive_env, name: str, line: str) -> None:
    """Type a line into the colony's agent (a shell), as the user does through any client."""

    async def send() -> None:
        async with await Connection.open(HostPaths(hive_env.home / "colonies" / name).socket, "script") as conn:
            await conn.request(Keys(line.encode() + b"\r"))

    asyncio.run(send())


def colony_processes(hive_env, name: str) -> tuple[int, set[int]]:
    """The colony's init and every other process in its PID namespace, as pids of the host."""
    init = int((hive_env.home / "colonies" / name / "init.pid").read_text().split()[0])
    inode = os.stat(f"/proc/{init}/ns/pid").st_ino
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != init:
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == inode:
                    members.add(int(entry))
            except OSError:
                continue
    return init, members


def lists_service(ps: str, service: int) -> bool:
    """Whether `ps -e -o pid=,args=` shows the service as `python3 svc.py` (python3 as PATH found it: a version
    manager's shim runs it by its whole path)."""
    rows = [line.split() for line in ps.splitlines()]
    return any(row[:1] == [str(service)] and row[1].endswith("python3") and row[2:] == ["svc.py"] for row in rows)


def test_a_colonys_processes_see_and_signal_one_another_and_share_one_tmp(hive_env, shared):
    a_tree = Path(shared["a"]["worktree"])
    service = int((a_tree / "svc.pid").read_text())  # its pid in the colony's namespace
    host = HostPaths(hive_env.home / "colonies" / "a").process()
    assert host is not None

    # `stem exec`: the service is in `ps`, its /tmp file is there, and a signal reaches it.
    out = inside(hive_env, "a", f"ps -e -o pid=,args=; cat /tmp/from-service.txt; kill -USR1 {service} && echo sent")
    assert out.returncode == 0, out.stderr
    assert lists_service(out.stdout, service), out.stdout
    assert f"a {service}" in out.stdout and "sent" in out.stdout
    wait_for(lambda: (a_tree / "signalled.txt").exists(), what="the service to get the exec's signal")
    # Not the host's processes (the colony host, its forker), nor another colony's service.
    assert "runpy" not in out.stdout and out.stdout.count("svc.py") == 1, out.stdout

    # The agent, typed into by the user: the same.
    type_into_agent(
        hive_env,
        "a",
        f"ps -e -o pid=,args= > agent-ps.txt; cat /tmp/from-service.txt > agent-tmp.txt; "
        f"kill -USR1 {service}; kill -0 {host[0]} && echo reached > agent-kill.txt || echo refused > agent-kill.txt",
    )
    # The shell makes the file for the redirect before echo writes to it: wait for the whole line.
    wait_for(lambda: _whole_line(a_tree / "agent-kill.txt"), what="the agent's commands to run")
    assert (a_tree / "agent-kill.txt").read_text() == "refused\n"  # the host's pid names nothing in the colony
    agent_ps = (a_tree / "agent-ps.txt").read_text()
    assert lists_service(agent_ps, service), agent_ps
    assert "runpy" not in agent_ps and agent_ps.count("svc.py") == 1, agent_ps
    assert (a_tree / "agent-tmp.txt").read_text() == f"a {service}\n"
    wait_for(lambda: (a_tree / "signalled.txt").read_text().count("usr1") == 2, what="the agent's signal")

    # Colony b has a /tmp of its own, with its own service's file; a's service is not there.
    out = inside(hive_env, "b", "cat /tmp/from-service.txt; pgrep -cf 'python3 svc.py$'")
    b_service = int((Path(shared["b"]["worktree"]) / "svc.pid").read_text())
    assert out.stdout.split() == ["b", str(b_service), "1"], out.stdout


def test_stop_leaves_no_process_of_the_colony_and_its_init_goes(hive_env, shared):
    init, members = colony_processes(hive_env, "a")
    assert len(members) >= 2  # the service and the agent, at least
    leftover = subprocess.Popen(
        [*stem_cmd(), "exec", "a", "--", "sh", "-c", "setsid sleep 1000 & echo started; exec sleep 1000"],
        env=hive_env.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert leftover.stdout is not None and leftover.stdout.readline().strip() == "started"
        _, members = colony_processes(hive_env, "a")
        others = colony_processes(hive_env, "b")
        assert run_stem(hive_env.env, "stop", "a").returncode == 0
        assert leftover.wait(timeout=15) == 128 + signal.SIGTERM
    finally:
        leftover.kill()
        leftover.wait()
    assert not procs.alive(init) and not any(procs.alive(pid) for pid in members), members
    assert not (hive_env.home / "colonies" / "a" / "init.pid").exists()
    assert procs.alive(others[0]) and all(procs.alive(pid) for pid in others[1])  # b runs on untouched


def test_the_colony_host_killed_leaves_no_process_of_its_colony(hive_env, shared):
    init, members = colony_processes(hive_env, "a")
    host = HostPaths(hive_env.home / "colonies" / "a").process()
    assert host is not None and host[0] not in members
    others = colony_processes(hive_env, "b")
    os.kill(host[0], signal.SIGKILL)
    gone = wait_for(
        lambda: not procs.alive(init) and not any(procs.alive(pid) for pid in members),
        timeout=10,
        what="the colony's processes to end with its host",
    )
    assert gone
    assert procs.alive(others[0]) and all(procs.alive(pid) for pid in others[1])


def test_the_init_killed_ends_the_colony_and_its_host_stops(hive_env, shared):
    init, members = colony_processes(hive_env, "a")
    host = HostPaths(hive_env.home / "colonies" / "a").process()
    assert host is not None
    os.kill(init, signal.SIGKILL)  # root on the host can: every process of the colony ends with it
    wait_for(
        lambda: not procs.alive(host[0]) and not any(procs.alive(pid) for pid in (init, *members)),
        timeout=15,
        what="the colony's processes and its host to end",
    )
    assert "init (pid 1 of its namespaces) ended" in run_stem(hive_env.env, "logs", "a").stdout
