"""The host forker: colony hosts are forked from one preloaded process per hive, which is replaced when the code
changes, goes when no host needs it, and is never needed (a host starts as a fresh interpreter without it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import make_repo, run_stem, wait_for
from test_host import SERVICE, fake_agent_config, host_pid

from core.host import forker as forker_module
from core.host.forker import ForkerPaths
from core.procs import alive

pytestmark = pytest.mark.root

CORE_FILE = Path(__file__).resolve().parents[1] / "core" / "names.py"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def forker_pid(hive_env) -> int | None:
    found = ForkerPaths.of(hive_env.home).process()
    return found[0] if found else None


def test_hosts_are_forked_from_one_forker_that_goes_with_the_last_host(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    for name in ("one", "two"):
        assert run_stem(hive_env.env, "spawn", name, "--repo", str(repo)).returncode == 0
    forker = forker_pid(hive_env)
    assert forker is not None
    hosts = [host_pid(hive_env, name) for name in ("one", "two")]
    assert all(pid is not None and parent_of(pid) == forker for pid in hosts)
    for pid in hosts:  # each its own session, no terminal, named for its colony
        assert os.getsid(pid) == pid
    assert Path(f"/proc/{hosts[0]}/comm").read_text().strip() == "stem-host one"
    # What `ps` and htop show of each: its colony's host, not one more copy of the forker's command line.
    for name, pid in zip(("one", "two"), hosts, strict=True):
        shown = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout
        title = f"stem-host {name} {hive_env.home}"  # cut to the length of the forker's own command line
        assert shown.startswith(f"stem-host {name} /") and title.startswith(shown.strip()), shown
    assert oct(ForkerPaths.of(hive_env.home).socket.stat().st_mode & 0o777) == "0o600"
    assert run_stem(hive_env.env, "stop", "one").returncode == 0
    assert forker_pid(hive_env) == forker  # "two" still runs
    assert run_stem(hive_env.env, "destroy", "--force", "two").returncode == 0
    assert not alive(forker)


def test_gc_removes_a_forker_that_no_host_needs(hive_env):
    hive_env.home.mkdir(parents=True, exist_ok=True)
    assert forker_module._start(ForkerPaths.of(hive_env.home), hive_env.home, hive_env.env)
    forker = forker_pid(hive_env)
    assert forker is not None
    gc = run_stem(hive_env.env, "gc")
    assert "the host forker (no colony host runs)" in gc.stdout, gc.stdout
    assert not alive(forker)


def test_the_forker_exits_by_itself_when_no_host_of_its_own_runs(hive_env, tmp_path):
    fake_agent_config(hive_env)
    env = {**hive_env.env, "STEM_FORKER_IDLE": "0.5"}
    repo = make_repo(tmp_path / "repo")
    assert run_stem(env, "spawn", "brief", "--repo", str(repo)).returncode == 0
    forker = forker_pid(hive_env)
    assert forker is not None
    assert run_stem(env, "stop", "brief").returncode == 0
    wait_for(lambda: not alive(forker), timeout=10, what="the idle forker to exit")
    assert not ForkerPaths.of(hive_env.home).socket.exists()


def test_a_forker_that_runs_older_code_is_replaced(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "before", "--repo", str(repo)).returncode == 0
    old = forker_pid(hive_env)
    assert old is not None
    st = CORE_FILE.stat()
    try:
        os.utime(CORE_FILE, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # as an upgrade would
        assert run_stem(hive_env.env, "spawn", "after", "--repo", str(repo)).returncode == 0
    finally:
        os.utime(CORE_FILE, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = forker_pid(hive_env)
    assert new is not None and new != old
    assert parent_of(host_pid(hive_env, "after")) == new
    before = host_pid(hive_env, "before")
    assert before is not None and alive(before)  # its hosts are not touched
    # The stale forker stepped aside (the new one has its socket and pid file) but stays to reap the hosts it forked:
    # exited, it passed them to PID 1, where each one's zombie (and then Caddy's) stayed for PID 1 to reap.
    assert alive(old) and parent_of(before) == old
    assert run_stem(hive_env.env, "stop", "before").returncode == 0
    wait_for(lambda: not alive(old), what="the stale forker to exit with its last host")
    assert not Path(f"/proc/{before}").exists()  # reaped by it, not passed on as a zombie
    assert forker_pid(hive_env) == new


def test_without_a_forker_a_host_starts_as_a_fresh_interpreter(hive_env, tmp_path):
    fake_agent_config(hive_env)
    hive_env.home.mkdir(parents=True, exist_ok=True)
    (hive_env.home / "forker").write_text("not a folder\n")  # no forker can start here
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "plain", "--repo", str(repo)).returncode == 0
    pid = host_pid(hive_env, "plain")
    assert pid is not None and forker_pid(hive_env) is None
    assert b"core.host" in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "fresh"])
def test_hosts_run_the_launchers_code_when_another_install_is_found_first(hive_env, tmp_path, forked):
    """A machine with another install of Stem (a stale editable install of an older name, another checkout) that the
    interpreter finds first from /: the forker and the hosts still run the code of the stem that launched them."""
    fake_agent_config(hive_env)
    decoy = tmp_path / "decoy"
    (decoy / "core").mkdir(parents=True)
    (decoy / "core" / "__init__.py").write_text("raise SystemExit('the decoy core was imported')\n")
    env = {**hive_env.env, "PYTHONPATH": str(decoy)}
    if not forked:
        hive_env.home.mkdir(parents=True, exist_ok=True)
        (hive_env.home / "forker").write_text("not a folder\n")
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    spawn = run_stem(env, "spawn", "mine", "--repo", str(repo), cwd=Path(__file__).resolve().parents[1])
    assert spawn.returncode == 0, spawn.stderr
    pid = host_pid(hive_env, "mine")
    assert pid is not None
    if forked:
        assert parent_of(pid) == forker_pid(hive_env)
    assert "decoy" not in (hive_env.home / "colonies" / "mine" / "host.log").read_text()


def test_a_running_forker_makes_colony_networks_and_says_why_it_could_not(hive_env):
    """`stem spawn` and `stem start` have the forker (pyroute2 preloaded) make the colony's network when one runs."""
    from core import netns
    from core.errors import StemError
    from core.host.forker import create_network

    host_ip, ip, prefixlen = netns.slot_addresses(hive_env.pool, 0)  # the test's own pool
    net = netns.ColonyNet(f"{hive_env.prefix}-viaforker", f"{hive_env.prefix}-vf0", host_ip, ip, prefixlen)
    hive_env.home.mkdir(parents=True, exist_ok=True)
    assert not create_network(hive_env.home, net)  # no forker runs: the caller makes it itself
    assert not netns.exists(net.netns)
    assert forker_module._start(ForkerPaths.of(hive_env.home), hive_env.home, hive_env.env)
    try:
        assert create_network(hive_env.home, net)
        inside = subprocess.run(["ip", "-n", net.netns, "-o", "addr"], capture_output=True, text=True).stdout
        assert "eth0" in inside and f"{net.ip}/{prefixlen}" in inside, inside
        host_side = subprocess.run(["ip", "-o", "addr", "show", net.veth], capture_output=True, text=True).stdout
        assert f"{net.host_ip}/{prefixlen}" in host_side, host_side
        with pytest.raises(StemError, match="already exists: run `stem gc`"):
            create_network(hive_env.home, net)
    finally:
        netns.destroy(net.netns, net.veth)
        forker_module.stop(hive_env.home)
