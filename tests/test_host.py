"""Colony hosts for real: agents and services outlive every UI, survive a host's kill -9, and any number of UIs
attach at once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAKE_AGENT_PATH, http_get, make_repo, run_stem, scripted_agent, until, wait_for

from core.hive import Hive
from core.host.paths import HostPaths
from core.procs import alive

pytestmark = pytest.mark.root

FAKE = FAKE_AGENT_PATH
SERVICE = """\
[services.web]
command = "echo \\"I am $COLONY_NAME\\" > whoami.txt; exec python3 -m http.server 3000"
port = 3000
ready = "http:/whoami.txt"
"""


def fake_agent_config(hive_env) -> None:
    agent = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))}"
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'[hive]\ndefault_agent = "fake"\n\n[agents.fake]\ncommand = "{agent}"\nresume = "{agent} --continue"\n'
    )


def listed(hive_env) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}


def host_pid(hive_env, name: str) -> int | None:
    found = HostPaths(hive_env.home / "colonies" / name).process()
    return found[0] if found else None


def netns_pids(hive_env, name: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", f"{hive_env.prefix}-{name}"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_a_spawn_from_a_shell_runs_at_once_and_its_host_is_detached(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "solo", "--repo", str(repo)).returncode == 0
    rec = listed(hive_env)["solo"]
    assert rec["host"] and rec["services"] == {"web": "ready"}
    assert http_get(f"http://{rec['ip']}:3000/whoami.txt") == "I am solo\n"
    wait_for(lambda: listed(hive_env)["solo"]["agent"] in ("idle", "working"), what="the agent's activity in ls")
    pid = host_pid(hive_env, "solo")
    assert pid is not None
    # Detached: its own session, no controlling terminal, not a child of anything stem left running.
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[3]) == pid  # session id
    assert stat[4] == "0"  # tty_nr
    socket = HostPaths(hive_env.home / "colonies" / "solo").socket
    assert oct(socket.stat().st_mode & 0o777) == "0o600"
    assert run_stem(hive_env.env, "stop", "solo").returncode == 0
    assert not alive(pid) and netns_pids(hive_env, "solo") == set()


def test_a_spawn_killed_while_it_makes_the_colony_leaves_no_host_and_starts_nothing(hive_env, tmp_path):
    """A spawn launches the colony's host while it makes the rest of the colony; killed before it asked for the
    start, it leaves a host that exits by itself, having started no service or agent; gc removes what is left."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    killed = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT="starting"), "spawn", "cut", "--repo", str(repo))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    paths = HostPaths(hive_env.home / "colonies" / "cut")
    wait_for(lambda: paths.log.exists() and "went away before starting it" in paths.log.read_text(), 10, "its word")
    wait_for(lambda: paths.process() is None, 10, "the host to exit with its starter")
    assert not (Path(hive_env.home / "worktrees" / "cut") / "whoami.txt").exists()  # the service never ran
    assert hive_env.registry_pids() == []  # nor did the agent
    report = run_stem(hive_env.env, "gc")
    assert report.returncode == 0, report.stderr
    assert "cut" not in listed(hive_env)


def test_kill_9_of_a_host_brings_the_colony_back_and_touches_no_other(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    for name in ("victim", "bystander"):
        assert run_stem(hive_env.env, "spawn", name, "--repo", str(repo)).returncode == 0
    ip = listed(hive_env)["victim"]["ip"]
    bystander = netns_pids(hive_env, "bystander") | {host_pid(hive_env, "bystander")}

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()  # a UI-like follower: it notices the death and revives the host
            for cycle in range(20):
                old_host = host_pid(hive_env, "victim")
                old = netns_pids(hive_env, "victim")
                assert old_host is not None and old
                os.kill(old_host, signal.SIGKILL)
                loop = asyncio.get_running_loop()
                started = loop.time()

                def back(old_host: int = old_host, old: set[int] = old) -> bool:
                    # A new host, none of the old processes, and the agent running again (resumed).
                    new = host_pid(hive_env, "victim")
                    agent = hive.agent("victim")
                    return (
                        new not in (None, old_host)
                        and not (netns_pids(hive_env, "victim") & old)
                        and agent is not None
                        and agent.pid is not None
                        and agent.pid not in old
                        and agent.activity in ("idle", "working")
                    )

                while not back():
                    assert loop.time() - started < 5, f"cycle {cycle}: not back within 5 s"
                    await asyncio.sleep(0.02)
                body = await asyncio.to_thread(
                    lambda: wait_for(lambda: http_get(f"http://{ip}:3000/whoami.txt"), 5, "victim's web")
                )
                assert body == "I am victim\n"
                assert not any(alive(p) for p in old), f"cycle {cycle}: old processes survived"
        finally:
            await hive.close()

    asyncio.run(scenario())
    assert netns_pids(hive_env, "bystander") | {host_pid(hive_env, "bystander")} == bystander
    log = run_stem(hive_env.env, "logs", "victim").stdout
    assert log.count("[web] ") >= 1
    agent = listed(hive_env)["victim"]["agent"]
    assert agent in ("idle", "working"), agent
    for name in ("victim", "bystander"):
        assert run_stem(hive_env.env, "stop", name).returncode == 0
    # No orphan: nothing of either colony is left anywhere.
    assert netns_pids(hive_env, "victim") == set() and netns_pids(hive_env, "bystander") == set()


def test_a_dead_host_is_noticed_by_the_next_stem_command(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "lone", "--repo", str(repo)).returncode == 0
    old = host_pid(hive_env, "lone")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="the host to die")
    table = run_stem(hive_env.env, "ls").stdout  # `stem ls` revives it on its way (the quick path cannot)
    assert re.search(r"^lone +running +(idle|working) +web:ready ", table, re.M), table
    rec = listed(hive_env)["lone"]
    assert rec["host"] and rec["services"] == {"web": "ready"}
    assert host_pid(hive_env, "lone") not in (None, old)
    assert http_get(f"http://{rec['ip']}:3000/whoami.txt") == "I am lone\n"
    assert "[host] its colony host died; restarting the colony" in run_stem(hive_env.env, "logs", "lone").stdout
    assert run_stem(hive_env.env, "stop", "lone").returncode == 0


def inner_pids(pids: set[int]) -> set[int]:
    """`pids` as their colony sees them (the last of NSpid: the pid in the innermost PID namespace)."""
    found = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found.add(int(re.search(r"^NSpid:.*\s(\d+)$", status, re.M).group(1)))
    return found


# A daemon's pid file checked as postgres checks its postmaster.pid: one naming a live process but itself is refused.
DAEMON = """\
if [ -f daemon.pid ]; then
  old=$(cat daemon.pid)
  if [ "$old" != "$$" ] && [ -d "/proc/$old" ]; then echo "daemon.pid names live pid $old"; exit 1; fi
fi
echo $$ > daemon.pid
exec python3 -m http.server 3000
"""


def test_a_revived_colony_numbers_its_pids_apart_from_the_run_before(hive_env, tmp_path):
    """A colony's host killed -9 and revived: its new processes have pids the processes of the run before never had,
    so a pid file left by a daemon of that run (postgres's postmaster.pid) names no live process, and the daemon
    starts again. (Pids numbered from 2 at every run: a revived postgres found its stale pid alive, another
    service's, and refused to start.)"""
    fake_agent_config(hive_env)
    toml = '[services.db]\ncommand = "sh daemon.sh"\nport = 3000\nready = "http:/"\n\n'
    toml += '[services.idle]\ncommand = "sleep 1000"\n'
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    (repo / "daemon.sh").write_text(DAEMON)
    subprocess.run(["git", "-C", str(repo), "add", "daemon.sh"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "daemon"], check=True)
    assert run_stem(hive_env.env, "spawn", "pg", "--repo", str(repo)).returncode == 0
    assert listed(hive_env)["pg"]["services"] == {"db": "ready", "idle": "ready"}
    before = inner_pids(netns_pids(hive_env, "pg"))
    assert len(before) >= 4  # the init, the agent, the two services
    old = host_pid(hive_env, "pg")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="the host to die")
    run_stem(hive_env.env, "ls")  # revives it
    wait_for(lambda: listed(hive_env)["pg"]["services"].get("db") == "ready", timeout=30, what="the daemon again")
    after = inner_pids(netns_pids(hive_env, "pg"))
    assert before & after == {1}, (sorted(before), sorted(after))  # only the init's pid is the same
    assert "names live pid" not in run_stem(hive_env.env, "logs", "pg").stdout
    assert run_stem(hive_env.env, "stop", "pg").returncode == 0


def test_a_start_or_a_revived_host_meeting_a_broken_colony_toml_runs_the_last_one_that_held(hive_env, tmp_path):
    """A live edit that breaks colony.toml keeps what runs; a start (or a host revived after kill -9) meeting that file
    used to fail the colony (`failed (provisioning)`). It starts with the last file that held and says why, on the
    command's stderr and in the colony's log."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "mend", "--repo", str(repo)).returncode == 0
    worktree = Path(listed(hive_env)["mend"]["worktree"])
    (worktree / "colony.toml").write_text("[services.web\ncommand = 'x'\n")  # a typo, saved
    assert run_stem(hive_env.env, "stop", "mend").returncode == 0
    started = run_stem(hive_env.env, "start", "mend")
    assert started.returncode == 0, started.stderr
    assert "colony.toml:1: invalid TOML" in started.stderr
    assert "started with the last colony.toml that held" in started.stderr
    rec = listed(hive_env)["mend"]
    assert rec["state"] == "running" and rec["services"] == {"web": "ready"}
    assert http_get(f"http://{rec['ip']}:3000/whoami.txt") == "I am mend\n"
    old = host_pid(hive_env, "mend")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="the host to die")
    table = run_stem(hive_env.env, "ls").stdout  # revives it
    assert re.search(r"^mend +running +(idle|working) +web:ready ", table, re.M), table
    assert http_get(f"http://{rec['ip']}:3000/whoami.txt") == "I am mend\n"
    log = run_stem(hive_env.env, "logs", "mend").stdout
    assert log.count("started with the last colony.toml that held") == 2, log
    assert run_stem(hive_env.env, "stop", "mend").returncode == 0


def test_a_plain_stem_ls_reads_the_hive_without_the_orchestration_core(hive_env, tmp_path):
    """`stem ls` is what a user types most: it reads the registry and the hosts' locks without importing the core
    (asyncio, netlink, cgroups: most of a short command's start-up), and shows what the hosts wrote."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "quick", "--repo", str(repo)).returncode == 0
    try:
        result = run_stem(dict(hive_env.env, PYTHONPROFILEIMPORTTIME="1"), "ls")
        assert result.returncode == 0, result.stderr
        assert re.search(r"^quick +running +(idle|working) +web:ready ", result.stdout, re.M), result.stdout
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import")}
        assert "core.listing" in imported
        assert not imported & {"asyncio", "core.hive", "pyroute2", "core.cgroups", "core.sandbox"}
    finally:
        assert run_stem(hive_env.env, "stop", "quick").returncode == 0


def test_a_host_whose_colony_folder_vanished_ends_what_it_runs(hive_env, tmp_path):
    """`rm -rf` of a colony's folder (or of STEM_HOME) under a running host: within its guard's look (every
    GUARD_INTERVAL s, a stat on its loop) the host ends the agent and the services and exits; destroy then finishes
    the colony off."""
    from core.host.server import GUARD_INTERVAL

    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "vanish", "--repo", str(repo)).returncode == 0
    host = host_pid(hive_env, "vanish")
    assert host is not None
    inside = netns_pids(hive_env, "vanish")
    assert inside  # the service and the agent
    folder = hive_env.home / "colonies" / "vanish"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    wait_for(lambda: not alive(host), timeout=GUARD_INTERVAL + 5, what="the host to notice and exit")
    wait_for(lambda: not netns_pids(hive_env, "vanish"), timeout=10, what="its agent and service to be ended")
    result = run_stem(hive_env.env, "destroy", "vanish", "--force")
    assert result.returncode == 0, result.stderr


def test_a_ui_links_the_colony_it_shows_first_and_the_others_once_it_is_drawn(hive_env, tmp_path, monkeypatch):
    """At 100 colonies a UI's first frame waited behind 99 hellos and snapshots: attaching with the rows it lists,
    it links the first (the colony it shows) at once and the others only once told its first frame is drawn."""
    monkeypatch.setattr("core.hive.FIRST_LINK_WAIT", 60.0)  # here only the UI's word lets the others link
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo")
    for name in ("one", "two", "three"):
        assert run_stem(hive_env.env, "spawn", name, "--repo", str(repo)).returncode == 0

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        drawn = asyncio.Event()
        try:
            records = hive.colonies()
            first, others = records[0].name, [r.name for r in records[1:]]

            def linked(name: str) -> bool:
                link = hive.link(name)
                return link is not None and link.connected.is_set()

            await hive.attach(records, rest_after=drawn)
            await until(lambda: linked(first), what=f"{first} linked")
            # Not held, the others' links would exist by now: they start beside the first.
            assert [n for n in others if hive.link(n) is not None] == []
            drawn.set()
            await until(lambda: all(linked(n) for n in others), what="the others linked")
        finally:
            await hive.close()

    asyncio.run(scenario())


# A client that subscribes to the colony's log and then stops reading (an SSH link that stalls, a UI under ctrl+z).
STALLED_CLIENT = """
import asyncio, os, signal, sys
from core.host.protocol import Connection

async def main():
    conn = await Connection.open(sys.argv[1], "ui")
    await conn.subscribe("logs", "states")
    print("subscribed", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    async for update in conn.updates():  # going on: the lines it missed arrive
        if any(entry.text.startswith("0599999 ") for entry in getattr(update, "entries", ())):
            print("caught up", flush=True)
            return

asyncio.run(main())
"""
FLOOD = """
[services.flood]
command = "python3 flood.py"
"""
FLOOD_PY = """
import time
for i in range(600_000):
    print(f"{i:07d} " + "x" * 200)
open("flooded", "w").close()
time.sleep(600)
"""


def test_a_service_flooding_its_log_to_a_stalled_client_does_not_grow_the_host(hive_env, tmp_path):
    """The client's socket backs up: its log lines wait in the log's ring, not in the host's memory, and reach it
    once it reads again."""
    repo = make_repo(tmp_path / "repo", colony_toml=FLOOD.replace("flood.py", "-c pass"))
    assert run_stem(hive_env.env, "spawn", "fl", "--repo", str(repo), "--agent", "shell").returncode == 0
    worktree = Path(listed(hive_env)["fl"]["worktree"])
    host = host_pid(hive_env, "fl")
    client = subprocess.Popen(
        [sys.executable, "-c", STALLED_CLIENT, str(HostPaths(hive_env.home / "colonies" / "fl").socket)],
        cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert client.stdout is not None and client.stdout.readline() == b"subscribed\n"
        wait_for(lambda: Path(f"/proc/{client.pid}/stat").read_text().split(") ")[1][0] == "T", 10, "a stop")
        before = _rss(host)
        (worktree / "flood.py").write_text(FLOOD_PY)
        (worktree / "colony.toml").write_text(FLOOD)  # the edit starts the flood
        wait_for((worktree / "flooded").exists, timeout=120, what="600,000 lines printed")
        grown = _rss(host) - before
        assert grown < 64 << 20, f"the host grew {grown >> 20} MiB"  # the lines, queued, would be ~130 MB
        assert host_pid(hive_env, "fl") == host
        os.kill(client.pid, signal.SIGCONT)
        assert client.communicate(timeout=30)[0] == b"caught up\n"
    finally:
        client.kill()
        client.wait()


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) << 10


def test_a_revived_host_keeps_the_pass_env_values_given_at_spawn(hive_env, tmp_path):
    """A colony spawned with its API key passed (`pass_env`); its host killed; revived by a `stem ls` from a shell
    without the key (another SSH session, cron): the service and agent of the new host still have the key."""
    fake_agent_config(hive_env)
    toml = (
        '[colony]\npass_env = ["MY_SECRET"]\n\n'
        "[services.echo]\n"
        "command = \"sh -c 'echo secret=$MY_SECRET; exec sleep 1000'\"\n"
    )
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    spawned = run_stem(dict(hive_env.env, MY_SECRET="s3cr3t"), "spawn", "keyed", "--repo", str(repo))
    assert spawned.returncode == 0, spawned.stderr
    kept = hive_env.home / "colonies" / "keyed" / "passed-env.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    old = host_pid(hive_env, "keyed")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="the host to die")
    env = {k: v for k, v in hive_env.env.items() if k != "MY_SECRET"}
    run_stem(env, "ls")  # revives it, from a shell without the key
    wait_for(lambda: host_pid(hive_env, "keyed") not in (None, old), what="a new host")

    def echoed() -> list[str] | None:
        lines = [ln for ln in run_stem(hive_env.env, "logs", "keyed").stdout.splitlines() if "secret=" in ln]
        return lines if len(lines) >= 2 else None

    lines = wait_for(echoed, timeout=15, what="the revived service's line")
    assert all(line.endswith("secret=s3cr3t") for line in lines), lines
    assert run_stem(hive_env.env, "stop", "keyed").returncode == 0


def test_the_agent_takes_the_size_of_the_client_used_last_and_gets_it_back_when_one_leaves(hive_env, tmp_path):
    """A UI shows the agent at 93x35, then `stem attach` at 100x30: the agent is 100x30 while the attach is used;
    the UI resizing takes it back, a key typed in the attach gives it the attach's size again, and when the attach
    ends the UI's size comes back (it used to keep the attach's, and the UI showed the agent cut)."""
    from core.host.protocol import Connection, Resize

    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "sized", "--repo", str(repo)).returncode == 0
    socket = HostPaths(hive_env.home / "colonies" / "sized").socket

    async def size() -> tuple[int, int]:
        async with await Connection.open(socket, "script") as look:
            await look.subscribe("screen")
            async for update in look.updates():
                screen = update.screen  # type: ignore[union-attr]
                return (screen.columns, screen.lines)
        raise AssertionError("no snapshot")

    async def scenario() -> None:
        ui = await Connection.open(socket, "ui")
        await ui.request(Resize(93, 35))
        assert await size() == (93, 35)
        attach = await Connection.open(socket, "attach")
        await attach.request(Resize(100, 30))
        assert await size() == (100, 30)
        await ui.request(Resize(93, 35))  # the UI shows the colony again
        assert await size() == (93, 35)
        await attach.send_keys(b"x")  # typed in the attach
        assert await size() == (100, 30)
        await attach.close()
        for _ in range(100):
            if await size() == (93, 35):
                break
            await asyncio.sleep(0.02)
        assert await size() == (93, 35)
        await ui.close()

    asyncio.run(scenario())
    assert run_stem(hive_env.env, "stop", "sized").returncode == 0


MODES_AGENT = """
import os, sys, tty
tty.setraw(0)  # no echo: what is typed changes no row
os.write(1, b"ready")
os.read(0, 1)
os.write(1, b"\\x1b[?1h\\x1b=\\x1b[?1000h\\x1b[?1006h\\x1b[?2004h")  # modes only: no row, no cursor changes
os.read(0, 1)
"""


def test_modes_an_agent_sets_without_drawing_reach_a_client_at_once(hive_env, tmp_path):
    """An agent that turns on application cursor keys, mouse reports and bracketed paste and draws nothing: its
    host sent screen changes only with rows that changed, so a UI went on encoding the next keys, clicks and pastes
    in the old modes (the first Up after vim's `CSI ? 1 h` went as CSI A; clicks were not reported) until
    something drew a row."""
    from core.host.protocol import Connection, Keys, Rows, Snapshot

    repo = make_repo(tmp_path / "repo")
    scripted_agent(hive_env.env, repo, MODES_AGENT)
    assert run_stem(hive_env.env, "spawn", "moded", "--repo", str(repo)).returncode == 0
    socket = HostPaths(hive_env.home / "colonies" / "moded").socket

    async def scenario() -> None:
        async with await Connection.open(socket, "ui") as ui:
            await ui.subscribe("screen")
            updates = ui.updates()
            shown = ""
            while "ready" not in shown:
                update = await asyncio.wait_for(anext(updates), 10)
                if isinstance(update, Snapshot | Rows) and update.screen is not None:
                    shown += "".join(cell.data for row in update.screen.rows.values() for cell in row)
            ui.post(Keys(b"x"))
            while True:
                update = await asyncio.wait_for(anext(updates), 5)  # TimeoutError: the modes never came
                if isinstance(update, Rows) and update.screen.modes.app_cursor_keys:
                    break
            modes = update.screen.modes
            assert (modes.mouse, modes.mouse_sgr, modes.bracketed_paste, modes.app_keypad) == (1000, True, True, True)

    asyncio.run(scenario())
    assert run_stem(hive_env.env, "stop", "moded").returncode == 0


def test_a_stopped_host_turns_a_command_away_and_keeps_a_ui_waiting_until_it_goes_on(hive_env, tmp_path):
    """kill -STOP of a host: its socket still takes connections and nothing answers. A command's handshake (attach,
    logs, a script) ends within a second naming the host's pid and how to let it go on (it waited for good); a UI's
    waits, and is answered once the host gets SIGCONT."""
    from core.host.protocol import Connection, HostStopped

    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "held", "--repo", str(repo)).returncode == 0
    paths = HostPaths(hive_env.home / "colonies" / "held")
    pid = host_pid(hive_env, "held")
    assert pid is not None

    async def scenario() -> None:
        ui = asyncio.ensure_future(Connection.open(paths.socket, "ui"))
        for kind in ("attach", "script"):
            with pytest.raises(HostStopped, match=rf"host of held \(pid {pid}\) is stopped: .* kill -CONT {pid}$"):
                await asyncio.wait_for(Connection.open(paths.socket, kind), 5)
        assert not ui.done()
        os.kill(pid, signal.SIGCONT)
        conn = await asyncio.wait_for(ui, 10)
        assert conn.colony == "held"
        await conn.close()

    os.kill(pid, signal.SIGSTOP)
    try:
        asyncio.run(scenario())
    finally:
        os.kill(pid, signal.SIGCONT)
    assert paths.stopped() is None
    assert run_stem(hive_env.env, "stop", "held").returncode == 0


def test_a_stop_that_hangs_leaves_in_host_log_what_it_waits_on(caplog, capfd):
    """A host whose stop hangs is killed by its stopper, and nothing told what it waited on (a stop held 25 s once in
    CI): past its patience, host.log gets the stack of every task and thread."""
    from core.host import server

    async def stuck_in_a_service_stop() -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        task = asyncio.create_task(stuck_in_a_service_stop(), name="stuck")
        await asyncio.sleep(0)
        server._report_stuck_stop()
        task.cancel()

    with caplog.at_level("WARNING", logger="stem.host"):
        asyncio.run(scenario())
    said = caplog.text
    assert "the stop has not ended" in said
    assert "stuck_in_a_service_stop" in said
    assert "thread 0x" in capfd.readouterr().err  # every thread's stack, faulthandler's
