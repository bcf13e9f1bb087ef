"""Service supervision in real colonies: readiness, output into the log, restart policies, live edits, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType

import pytest
from helpers import git, make_repo, run_stem, stem_cmd, until, wait_for

from core import procs
from core.config import ColonyConfig, ServiceSpec, parse_colony_config
from core.errors import ConfigError, StepFailed
from core.events import Event, LogLine, ServiceState
from core.hive import Hive
from core.services import ServiceHost, ServiceRunner, ServiceSet, Timing

pytestmark = pytest.mark.root

FAST = Timing(backoff_initial=0.05, backoff_max=0.2, backoff_reset=5.0, stop_grace=2.0, probe_interval=0.05)


def alive(pid: int) -> bool:
    return procs.alive(pid)


def my_zombies() -> list[int]:
    """Zombie children of this test process: what a supervisor that forgets to reap leaves behind."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == b"Z" and int(fields[1]) == me:
                found.append(int(entry))
    return found


class Colony:
    """A spawned colony plus a ServiceSet wired the way the Hive wires it, with its events collected."""

    def __init__(self, hive: Hive, name: str, toml: str) -> None:
        self.hive = hive
        self.name = name
        self.rec = hive.get(name)
        self.events: list[Event] = []
        self.recorded: list[int] = []
        host = ServiceHost(
            colony=name,
            netns=self.rec.netns,
            worktree=Path(self.rec.worktree),
            ip=self.rec.ip,
            log=hive.log(name),
            emit=self.events.append,
            record_process=self._record,
            forget_process=hive.registry.remove_process,
            timing=FAST,
        )
        self.services = ServiceSet(self.config(toml), host, hive.env_for(self.rec))

    def config(self, toml: str) -> ColonyConfig:
        return parse_colony_config(toml, Path(self.rec.worktree) / "colony.toml")

    def _record(self, pid: int, starttime: int, kind: str, argv: list[str]) -> None:
        self.recorded.append(pid)
        self.hive.registry.add_process(self.name, pid, starttime, kind, argv)

    def states(self, service: str) -> list[tuple[str, int | None]]:
        return [(e.state, e.code) for e in self.events if isinstance(e, ServiceState) and e.service == service]

    def registry_pids(self) -> list[int]:
        return [p.pid for p in self.hive.registry.processes(self.name)]


def fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy from the env
    with opener.open(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def run(hive_env, scenario: Callable[[Hive], Awaitable[None]]) -> None:
    async def main() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, hosts=False)
        try:
            await scenario(hive)
        finally:
            for rec in hive.colonies():
                await hive.destroy(rec.name, force=True)
            await hive.close()

    asyncio.run(main())


WEB = """
[services.web]
command = "python3 -u -m http.server 3000"
port = 3000
working_dir = "www"
ready = "http:/"
ready_timeout = 20
"""


def test_a_stop_that_cancels_a_wait_as_it_ends_is_never_lost():
    """A readiness probe refused at the moment the service's stop cancelled it: Python 3.11's asyncio.wait_for gave
    the probe its refusal instead of the cancel, so the probing went on for the service's whole ready timeout (120 s)
    and the colony's stop waited for it. Stem's `wait_for` raises the cancel."""
    from core import aio

    async def scenario() -> None:
        refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def probing() -> str:
            try:
                await aio.wait_for(refused, 5)
            except OSError:
                return "the refusal came back, the cancel was lost"
            return "finished"

        task = asyncio.create_task(probing())
        await asyncio.sleep(0)  # the probe waits
        refused.set_exception(ConnectionRefusedError())
        task.cancel()  # in the same turn of the loop: the stop
        with pytest.raises(asyncio.CancelledError):
            print(await task)

    asyncio.run(scenario())


def test_two_colonies_serve_port_3000_and_log_their_output(hive_env, repo):
    async def scenario(hive: Hive) -> None:
        await asyncio.gather(hive.spawn("red", repo), hive.spawn("blue", repo))
        colonies = {}
        for name in ("red", "blue"):
            www = Path(hive.get(name).worktree) / "www"
            www.mkdir()
            (www / "index.html").write_text(f"this is {name}\n")
            colonies[name] = Colony(hive, name, WEB)
        try:
            await asyncio.gather(*(c.services.start_all() for c in colonies.values()))
            for name, colony in colonies.items():
                web = colony.services.services["web"]
                assert web.state == "ready"
                assert colony.states("web")[:2] == [("starting", None), ("ready", None)]
                assert colony.registry_pids() == [web.pid]
                # A plain command is exec'd as is: the service's pid is python's own, no `/bin/sh -c` above it.
                assert Path(f"/proc/{web.pid}/comm").read_text().startswith("python")
                body = await asyncio.to_thread(fetch, f"http://{colony.rec.ip}:3000/")
                assert body == f"this is {name}\n"
                # stdout (the banner) and stderr (access lines, including the readiness probe's GET) both land
                # in the colony's log with the service as source, and as LogLine events.
                log = hive.log(name)
                await until(lambda log=log: any("GET / HTTP/1.1" in e.text for e in log.after(0)), what="access")
                lines = [e for e in log.after(0) if e.source == "web"]
                assert any("Serving HTTP on" in e.text and "port 3000" in e.text for e in lines)
                assert any('"GET / HTTP/1.0" 200' in e.text for e in lines)
                assert all(e.at > 0 for e in lines)
                logged = {e.text for e in colony.events if isinstance(e, LogLine) and e.source == "web"}
                assert any("Serving HTTP on" in text for text in logged)
        finally:
            for colony in colonies.values():
                await colony.services.stop_all()
        for colony in colonies.values():
            assert colony.states("web")[-1] == ("stopped", -15)
            assert colony.registry_pids() == []
            assert not any(alive(pid) for pid in colony.recorded)

    run(hive_env, scenario)


@pytest.mark.parametrize(("loopback", "check"), [("127.0.0.1", "http"), ("::1", "http"), ("127.0.0.1", "none")])
def test_a_service_on_its_colonys_loopback_only_is_reached_at_the_colonys_address(hive_env, repo, loopback, check):
    """Dev servers listen on localhost unless told otherwise (runserver, flask run, Vite): the colony's own loopback.
    Its readiness probe, the preview port and the user reach it at <colony ip>:<port> anyway, through a forward that
    the colony's log names and that ends with the service's process; a service with a port and no readiness check
    too, once it listens."""
    toml = WEB.replace("http.server 3000", f"http.server 3000 --bind {loopback}")
    if check == "none":
        toml = toml.replace('ready = "http:/"\n', "")

    async def scenario(hive: Hive) -> None:
        await hive.spawn("local", repo)
        www = Path(hive.get("local").worktree) / "www"
        www.mkdir()
        (www / "index.html").write_text("only on my loopback\n")
        colony = Colony(hive, "local", toml)
        try:
            await colony.services.start_all()
            web = colony.services.services["web"]
            assert web.state == "ready"
            log = hive.log("local")
            forwarded = lambda: any(e.source == "network" and "forwarded" in e.text for e in log.after(0))  # noqa: E731
            await until(forwarded, what="the forward named in the colony's log")
            for _ in range(2):  # two connections, one after the other: the forward serves each
                assert await asyncio.to_thread(fetch, f"http://{colony.rec.ip}:3000/") == "only on my loopback\n"
            noted = [e.text for e in log.after(0) if e.source == "network"]
            assert any(f"listens on {'[::1]' if ':' in loopback else loopback}:3000 only" in t for t in noted), noted
            pid = web.pid
        finally:
            await colony.services.stop_all()
        assert pid is not None and not alive(pid)
        # The forward ended with the process: nothing answers at the colony's address any more.
        with pytest.raises(OSError):
            await asyncio.to_thread(fetch, f"http://{colony.rec.ip}:3000/")

    run(hive_env, scenario)


def test_a_loopback_only_listener_is_told_apart_from_one_on_every_address():
    import socket

    from core.forward import loopback_listener

    def listening(family: socket.AddressFamily, address: str) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen()
        return sock

    with listening(socket.AF_INET, "127.0.0.1") as v4, listening(socket.AF_INET6, "::1") as v6:
        assert loopback_listener(os.getpid(), v4.getsockname()[1]) == "127.0.0.1"
        assert loopback_listener(os.getpid(), v6.getsockname()[1]) == "::1"
    with listening(socket.AF_INET, "0.0.0.0") as anywhere:
        assert loopback_listener(os.getpid(), anywhere.getsockname()[1]) is None
    with listening(socket.AF_INET, "127.0.0.1") as closed:
        port = closed.getsockname()[1]
    assert loopback_listener(os.getpid(), port) is None  # nothing listens
    assert loopback_listener(2**22 + 1, 80) is None  # no such process


CRASHY = """
[services.flaky]
command = "echo boom; exit 1"
restart = "on-failure"

[services.fragile]
command = "echo boom; exit 1"
restart = "no"

[services.oneshot]
command = "echo done; exit 0"
restart = "on-failure"

[services.missing]
command = "no-such-program --serve"
restart = "always"
"""


def test_restart_policies(hive_env, repo):
    async def scenario(hive: Hive) -> None:
        await hive.spawn("crashy", repo)
        colony = Colony(hive, "crashy", CRASHY)
        services = colony.services.services
        try:
            await colony.services.start_all()
            flaky, fragile, oneshot = services["flaky"], services["fragile"], services["oneshot"]

            # on-failure: every exit 1 is a crash followed by a fresh start that gets ready again.
            await until(lambda: flaky.restarts >= 3, what="flaky to be restarted three times")
            states = colony.states("flaky")
            assert states[:3] == [("starting", None), ("ready", None), ("crashed", 1)]
            assert states[3:5] == [("starting", None), ("ready", None)]
            # Each crash reports its own run's output, not the runs' before it too.
            crashes = [e.detail for e in colony.events if isinstance(e, ServiceState) and e.service == "flaky"]
            assert [d for d in crashes if d][:3] == ["boom\nexited with 1"] * 3

            # no: stays crashed with its exit code and its output.
            await until(lambda: fragile.finished, what="fragile's supervisor to give up")
            assert (fragile.state, fragile.code, fragile.restarts) == ("crashed", 1, 0)
            assert "boom" in fragile.detail and "exited with 1" in fragile.detail
            assert colony.states("fragile")[-1] == ("crashed", 1)
            # Its pid is still known once it is reaped: the kernel's log may name it as an OOM victim only then.
            assert fragile.pid is None and fragile.last_pid is not None and not alive(fragile.last_pid)

            # on-failure and a clean exit: finished, not restarted.
            await until(lambda: oneshot.finished, what="oneshot to finish")
            assert (oneshot.state, oneshot.code, oneshot.restarts) == ("stopped", 0, 0)
            assert [e.text for e in hive.log("crashy").after(0) if e.source == "oneshot"] == ["done", "exited with 0"]
            # Each end is in the colony's log under the service's name, as its stderr when it failed.
            said = [(e.source, e.text) for e in hive.log("crashy").after(0) if e.text.startswith("exited")]
            assert ("fragile!", "exited with 1; not restarted (restart = no)") in said
            assert ("flaky!", "exited with 1; restart 1 in 0.05s") in said, said
            # A program the shell cannot find is not looked for again and again.
            missing = services["missing"]
            await until(lambda: missing.finished, what="missing's supervisor to give up")
            assert (missing.state, missing.code, missing.restarts) == ("crashed", 127, 0)
            said = [(e.source, e.text) for e in hive.log("crashy").after(0) if e.source == "missing!"]
            assert said[-1] == ("missing!", "exited with 127; not restarted (its program was not found)"), said
        finally:
            await colony.services.stop_all()
        assert colony.states("flaky")[-1][0] == "stopped"
        count = flaky.restarts
        assert flaky.finished and flaky.pid is None
        assert colony.registry_pids() == []
        assert not any(alive(pid) for pid in colony.recorded)
        assert my_zombies() == []
        assert flaky.restarts == count  # stop means no restart, even from a backoff wait

    run(hive_env, scenario)


NEVER_READY = """
[services.db]
command = "exec python3 -u -m http.server 3001"
port = 3001
ready = "tcp"

[services.api]
command = "echo waiting for the database; echo still waiting; exec sleep 1000"
port = 3000
ready = "tcp"
ready_timeout = 1
depends_on = ["db"]
"""


def test_a_service_that_never_gets_ready_fails_start_all_and_nothing_is_left(hive_env, repo):
    async def scenario(hive: Hive) -> None:
        await hive.spawn("stuck", repo)
        colony = Colony(hive, "stuck", NEVER_READY)
        with pytest.raises(StepFailed) as failure:
            await colony.services.start_all()
        message = str(failure.value)
        assert message.startswith("service api not ready after 1s (nothing took a connection on port 3000): ")
        assert "still waiting" in message
        # api started only once db was ready; everything started was stopped again.
        order = [(e.service, e.state) for e in colony.events if isinstance(e, ServiceState)]
        assert order.index(("db", "ready")) < order.index(("api", "starting"))
        assert len(colony.recorded) == 2
        assert not any(alive(pid) for pid in colony.recorded)
        assert colony.services.services == {}
        assert colony.registry_pids() == []
        assert my_zombies() == []

        # With restart = "no" the supervisor ends the unready service itself; the reason still says why.
        again = Colony(hive, "stuck", NEVER_READY.replace("ready_timeout = 1", 'ready_timeout = 1\nrestart = "no"'))
        unready = r"^service api not ready after 1s \(nothing took a connection on port 3000\): .*still waiting"
        with pytest.raises(StepFailed, match=unready):
            await again.services.start_all()
        assert not any(alive(pid) for pid in again.recorded)

    run(hive_env, scenario)


TWO = """
[colony]
env = {{ MODE = "{mode}" }}

[services.a]
command = "echo a is {a}; exec sleep 1000"

[services.b]
command = "echo b; exec sleep 1000"
"""


def test_apply_restarts_only_what_changed(hive_env, repo):
    async def scenario(hive: Hive) -> None:
        await hive.spawn("edit", repo)
        colony = Colony(hive, "edit", TWO.format(mode="dev", a="one"))
        services = colony.services.services
        try:
            await colony.services.start_all()
            a1, b1 = services["a"].pid, services["b"].pid
            assert a1 and b1

            changes = await colony.services.apply(colony.config(TWO.format(mode="dev", a="two")))
            assert (changes.restarted, changes.started, changes.stopped) == (("a",), (), ())
            a2 = services["a"].pid
            assert a2 and a2 != a1 and not alive(a1)
            assert services["b"].pid == b1 and alive(b1)
            await until(lambda: "a is two" in services["a"].last_lines, what="the new a's output")

            # Removing b and adding c: b stops, c starts, a is left alone.
            edited = TWO.format(mode="dev", a="two").replace("[services.b]", "[services.c]")
            changes = await colony.services.apply(colony.config(edited))
            assert (changes.restarted, changes.started, changes.stopped) == ((), ("c",), ("b",))
            assert sorted(services) == ["a", "c"]
            assert not alive(b1)
            assert services["a"].pid == a2 and services["c"].state == "ready"

            # A dependency cycle (a hand-built config; the parser rejects it) changes nothing.
            a_spec = ServiceSpec("a", "sleep 1", depends_on=("c",))
            c_spec = ServiceSpec("c", "sleep 1", depends_on=("a",))
            with pytest.raises(ConfigError):
                await colony.services.apply(ColonyConfig(services=MappingProxyType({"a": a_spec, "c": c_spec})))
            assert services["a"].pid == a2 and alive(a2)

            # The colony-wide env reaches every service: changing it restarts them all.
            c1 = services["c"].pid
            changes = await colony.services.apply(colony.config(edited.replace("dev", "prod")))
            assert sorted(changes.restarted) == ["a", "c"]
            assert services["a"].pid not in (None, a2) and services["c"].pid not in (None, c1)
            assert sorted(colony.registry_pids()) == sorted(p for p in (services["a"].pid, services["c"].pid) if p)
        finally:
            await colony.services.stop_all()
        assert not any(alive(pid) for pid in colony.recorded)

    run(hive_env, scenario)


FORKING = """
[services.web]
command = "sleep 1000 & exec python3 -u -m http.server 3000"
port = 3000
ready = "tcp"
"""


# A server that stops as postgres does on SIGTERM (a "smart" shutdown: it waits for its clients to leave) and at
# once on SIGINT, which it says.
PATIENT = r"""
import select, signal, socket
server = socket.create_server(("0.0.0.0", 5433))
clients, stopping = [], []
signal.signal(signal.SIGTERM, lambda *_: stopping.append("SIGTERM"))
signal.signal(signal.SIGINT, lambda *_: stopping.append("SIGINT"))
print("serving", flush=True)
while not stopping or (clients and stopping[0] == "SIGTERM"):
    for ready in select.select([server, *clients], [], [], 0.05)[0]:
        if ready is server:
            clients.append(server.accept()[0])
        elif not ready.recv(1):
            clients.remove(ready)
print(f"{stopping[0]}: ending with {len(clients)} clients", flush=True)
"""


@pytest.mark.parametrize("stop_signal", ["", 'stop_signal = "SIGINT"'])
def test_a_server_that_waits_for_its_clients_ends_cleanly_on_stop(hive_env, tmp_path, stop_signal):
    """A `stem exec` client holds the server open: the stop ends the client as it ends the server, so a server that
    waits for its clients (postgres's SIGTERM) ends by itself, not by SIGKILL; `stop_signal` sends what the
    server stops at once on instead."""
    toml = f'[services.db]\ncommand = "python3 -u patient.py"\nport = 5433\npreview = false\n{stop_signal}\n'
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    (repo / "patient.py").write_text(PATIENT)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a patient server")
    assert run_stem(hive_env.env, "spawn", "pg", "--repo", str(repo), "--agent", "shell").returncode == 0
    client = subprocess.Popen(
        [*stem_cmd(), "exec", "pg", "--", "python3", "-c",
         "import socket, time; c = socket.create_connection(('127.0.0.1', 5433)); print('in', flush=True); "
         "time.sleep(600)"],
        env=hive_env.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert client.stdout is not None and client.stdout.readline() == b"in\n"
        assert run_stem(hive_env.env, "stop", "pg").returncode == 0
        logs = run_stem(hive_env.env, "logs", "pg", "-s", "db").stdout
        expected = "SIGINT: ending with" if stop_signal else "SIGTERM: ending with 0 clients"
        assert expected in logs and "SIGKILL" not in logs, logs
        assert client.wait(timeout=10) != 0  # ended by the stop, not left waiting
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_a_python_services_prints_reach_the_log_as_it_prints_them(hive_env, repo, monkeypatch):
    """print() to a pipe is block-buffered: a quiet Python service's lines would sit in its buffer (and die with a
    kill) unless PYTHONUNBUFFERED is set; the colony's services have it unless their config says otherwise."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    toml = """
[services.worker]
command = "python3 -c 'import time; print(\\"working\\"); time.sleep(600)'"

[services.quiet]
command = "python3 -c 'import time; print(\\"held\\"); time.sleep(600)'"
env = { PYTHONUNBUFFERED = "" }
"""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("py", repo)
        colony = Colony(hive, "py", toml)
        await colony.services.start_all()
        await until(lambda: "working" in colony.services.services["worker"].last_lines, what="the printed line")
        assert "held" not in colony.services.services["quiet"].last_lines  # its own setting holds
        await colony.services.stop_all()

    run(hive_env, scenario)


# Services a stop must SIGKILL, each the log's line for it: one that ignores SIGTERM itself, and one whose shell ends
# on SIGTERM leaving a child that ignores it (then the rest of its process group is killed).
STUBBORN = {
    "leader": (
        "trap '' TERM; echo holding; while :; do sleep 0.1; done",
        "still running 0.3s after SIGTERM: killed (SIGKILL)",
    ),
    "left": (
        "(trap '' TERM; exec sleep 1000) & sleep 1000",
        "what was left of its process group still ran 0.3s after SIGTERM: killed (SIGKILL)",
    ),
}


@pytest.mark.parametrize("which", list(STUBBORN))
def test_a_service_killed_on_stop_says_so_in_the_log(hive_env, repo, which):
    command, killed = STUBBORN[which]

    async def scenario(hive: Hive) -> None:
        await hive.spawn("stubborn", repo)
        colony = Colony(hive, "stubborn", f'[services.db]\ncommand = "{command}"\n')
        await colony.services.start_all()
        db = colony.services.services["db"]
        if which == "leader":
            await until(lambda: "holding" in db.last_lines, what="the service to ignore SIGTERM")
        else:
            await until(lambda: len(procs.group_members(db.pid)) == 3, what="the shell and its two sleeps")
        await colony.services.stop_all(grace=0.3)
        assert db.state == "stopped" and not alive(db.last_pid)
        said = [(e.source, e.text) for e in hive.log("stubborn").after(0) if e.source.startswith("db")]
        assert ("db!", killed) in said, said

    run(hive_env, scenario)


def test_stop_all_ends_the_whole_process_group_and_reaps_it(hive_env, repo):
    async def scenario(hive: Hive) -> None:
        await hive.spawn("forky", repo)
        colony = Colony(hive, "forky", FORKING)
        await colony.services.start_all()
        web = colony.services.services["web"]
        assert web.pid is not None
        group = await until(lambda: len(procs.group_members(web.pid)) == 2 and procs.group_members(web.pid))
        await colony.services.stop_all()
        assert web.state == "stopped"
        assert not any(alive(pid) for pid in group)
        assert colony.registry_pids() == []
        assert my_zombies() == []

    run(hive_env, scenario)


# A server that goes to the background as nginx, redis-server --daemonize yes and memcached -d do: it forks, the
# child leaves the session (and with "twice" forks again and exits), and the command exits 0 at once. With "wipe" it
# writes over its environment as a daemon that sets its process title does (nginx, redis).
DAEMON = r"""
import ctypes, http.server, os, sys, time
forks, port, wipe, when = sys.argv[1], int(sys.argv[2]), "wipe" in sys.argv, sys.argv[-1]
deadline = time.monotonic() + 10
while when == "late" and not os.path.exists("early.orphaned") and time.monotonic() < deadline:
    time.sleep(0.01)  # forks only once the "early" one's daemon, older than its own, is orphaned too
parent = os.getpid()
if os.fork():
    os._exit(0)
while when == "early" and os.getppid() == parent and time.monotonic() < deadline:
    time.sleep(0.01)
if when == "early":
    open("early.orphaned", "w").close()
os.setsid()
if forks == "twice" and os.fork():
    os._exit(0)
if wipe:
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end
    ctypes.memset(start, 0, end - start)
print("daemon serving", port, flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""
DAEMONIZING = """
[services.web]
command = "python3 -u daemon.py {forks} 3000"
port = 3000
ready = "http:/"
"""
# Two at once, both with their environment written over, the older daemon not web's although web's command exits
# first or with it: each is followed to its own, told apart by the program it runs (this interpreter, a copy of it).
TWO_DAEMONS = """
[services.web]
command = "{python} -u daemon.py once 3000 wipe late"
port = 3000
ready = "http:/"

[services.api]
command = "{copy} -u daemon.py once 3001 wipe early"
port = 3001
ready = "http:/"
"""


@pytest.mark.parametrize("forks", ["once", "twice"])
def test_a_service_that_goes_to_the_background_is_followed(hive_env, repo, forks):
    """Its command's clean exit leaves its daemon as the service's process: ready, answering, its output in the log
    (it still holds the pipes), restarted by its policy when killed, and ended and reaped by stop."""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("daemon", repo)
        colony = Colony(hive, "daemon", DAEMONIZING.format(forks=forks))
        (Path(colony.rec.worktree) / "daemon.py").write_text(DAEMON)
        (Path(colony.rec.worktree) / "index.html").write_text("served by the daemon\n")
        try:
            await colony.services.start_all()
            web = colony.services.services["web"]
            assert web.state == "ready" and web.pid is not None
            first = web.pid
            assert "daemon serving 3000" in web.last_lines
            assert await asyncio.to_thread(fetch, f"http://{colony.rec.ip}:3000/") == "served by the daemon\n"
            log = [e.text for e in hive.log("daemon").after(0) if e.source == "web"]
            assert any(f"went to the background as pid {first}" in line for line in log), log
            assert colony.registry_pids() == [first]
            os.kill(first, 9)  # the daemon dies: a failure, restarted by the default policy, followed again
            await until(lambda: web.pid not in (None, first) and web.state == "ready", what="a new daemon, ready")
            assert await asyncio.to_thread(fetch, f"http://{colony.rec.ip}:3000/") == "served by the daemon\n"
            assert ("crashed", -9) in colony.states("web")
            second = web.pid
        finally:
            await colony.services.stop_all()
        assert web.state == "stopped"
        assert not alive(first) and not alive(second)
        assert colony.registry_pids() == []
        assert my_zombies() == []

    run(hive_env, scenario)


def test_two_services_that_go_to_the_background_at_once_are_each_followed_to_their_own(hive_env, repo):
    async def scenario(hive: Hive) -> None:
        await hive.spawn("daemons", repo)
        python, copy = os.path.realpath(sys.executable), Path(hive.get("daemons").worktree) / "python-copy"
        shutil.copy(python, copy)
        colony = Colony(hive, "daemons", TWO_DAEMONS.format(python=python, copy=copy))
        (Path(colony.rec.worktree) / "daemon.py").write_text(DAEMON)

        def serves(runner: ServiceRunner, port: int) -> bool:
            """Its process is its own daemon (a command that is ready before it exits is its process until then)."""
            with contextlib.suppress(OSError, TypeError):
                return Path(f"/proc/{runner.pid}/cmdline").read_bytes().split(b"\0")[-5:-3] == [b"once", b"%d" % port]
            return False

        try:
            await colony.services.start_all()
            web, api = colony.services.services["web"], colony.services.services["api"]
            await until(lambda: serves(web, 3000) and serves(api, 3001), what="each service to follow its daemon")
            assert (web.state, api.state) == ("ready", "ready")
            assert "daemon serving 3000" in web.last_lines and "daemon serving 3001" in api.last_lines
            pids = (web.pid, api.pid)
        finally:
            await colony.services.stop_all()
        assert not any(alive(pid) for pid in pids)
        assert my_zombies() == []

    run(hive_env, scenario)


def test_a_daemonizing_service_in_a_confined_colony_from_the_cli(hive_env, tmp_path):
    """The same through `stem spawn`, where the colony has its own PID namespace (the daemon is orphaned to the
    colony's init, not to the host): it answers, and `stem stop` ends it."""
    repo = make_repo(tmp_path / "repo", colony_toml=DAEMONIZING.format(forks="twice"))
    (repo / "daemon.py").write_text(DAEMON)
    (repo / "index.html").write_text("served by the daemon\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a daemon")
    result = run_stem(hive_env.env, "spawn", "bg", "--repo", str(repo), "--agent", "shell")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert row["services"] == {"web": "ready"}
    assert fetch(f"http://{row['ip']}:3000/") == "served by the daemon\n"
    logs = run_stem(hive_env.env, "logs", "bg").stdout
    assert "daemon serving 3000" in logs
    served = [int(pid) for pid in procs_serving(hive_env.prefix + "-bg")]
    assert served
    # Named as `ps` in the colony shows it, and as the host does.
    said = f"went to the background as pid {procs.colony_pid(served[0])} in the colony ({served[0]} on the host)"
    assert said in logs, logs
    (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert row["service_pids"] == {"web": served[0]}  # the daemon, the service's process now
    assert run_stem(hive_env.env, "stop", "bg").returncode == 0
    assert not any(alive(pid) for pid in served)
    assert "[web] stopped: " in run_stem(hive_env.env, "logs", "bg").stdout  # the stop is a line of its own too


def test_a_daemon_killed_in_a_confined_colony_reads_crashed_with_its_own_end(hive_env, tmp_path):
    """The daemon is the colony's init's child: killed, its exit status goes to the init, which kept none (the
    service read `crashed(-1000)`, Stem's own marker, and the UI said "exit -1000"; then a bare `crashed`). The init
    keeps its orphans' ends for its host: the service reads crashed(-9), and the log says it was SIGKILL."""
    toml = DAEMONIZING.format(forks="twice").replace('ready = "http:/"', 'ready = "http:/"\nrestart = "no"', 1)
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    (repo / "daemon.py").write_text(DAEMON)
    (repo / "index.html").write_text("served by the daemon\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a daemon")
    assert run_stem(hive_env.env, "spawn", "bg", "--repo", str(repo), "--agent", "shell").returncode == 0
    (daemon,) = [int(pid) for pid in procs_serving(hive_env.prefix + "-bg")]
    os.kill(daemon, signal.SIGKILL)

    def web() -> str:
        (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
        return row["services"]["web"]

    assert wait_for(lambda: web() != "ready" and web(), what="the service's end") == "crashed(-9)"
    logs = run_stem(hive_env.env, "logs", "bg").stdout
    assert "[web!] killed by SIGKILL; not restarted (restart = no)" in logs and "-1000" not in logs, logs
    assert run_stem(hive_env.env, "stop", "bg").returncode == 0


# A daemon that cannot start: its command forks twice (a subshell, then the daemon in the background) and exits 0,
# once its daemon has said why on stderr and exited 1 ("gone"), or at once with its daemon still starting up (it
# then is followed first, and exits 1 a moment later).
GONE = r"""
( sh -c 'echo $$ > daemon.pid; echo cannot bind port 6379 >&2; exit 1' & )
until [ -s daemon.pid ]; do sleep 0.01; done
pid=$(cat daemon.pid)
while [ -e /proc/$pid ] && [ "$(cut -d' ' -f3 /proc/$pid/stat)" != Z ]; do sleep 0.01; done
exit 0
"""
DIES = {
    "gone": "sh dies.sh",
    "followed": r"sh -c '(sh -c \"sleep 0.3; echo cannot bind port 6379 >&2; exit 1\" &); exit 0'",
}


def dies_toml(how: str) -> str:
    return f'[services.web]\ncommand = "{DIES[how]}"\nrestart = "no"\n'


def ends_of_a_dead_daemon(logs: str) -> bool:
    """The log says the daemon's end with its own exit code: gone before Stem looked for it, or followed first and
    then ended."""
    gone = "] its command exited 0, but what it left in the background (pid "
    if gone in logs:
        return ") exited with 1 at once; not restarted (restart = no)" in logs.split(gone, 1)[1].splitlines()[0]
    return "went to the background as pid" in logs and "[web!] exited with 1; not restarted (restart = no)" in logs


@pytest.mark.parametrize("how", ["gone", "followed"])
def test_a_daemon_that_dies_at_once_in_a_confined_colony_reads_crashed_with_why(hive_env, tmp_path, how):
    """Its exit status went to the colony's init, which ignored SIGCHLD (the kernel reaped it, unread): the service
    read `stopped`, "exited with 0", as if it had done its work (or a bare `crashed`, followed first). The init keeps
    its orphans' ends for its host: the service reads crashed with the daemon's own code, and the log says what
    ended and how."""
    repo = make_repo(tmp_path / "repo", colony_toml=dies_toml(how))
    (repo / "dies.sh").write_text(GONE)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a daemon that cannot start")
    assert run_stem(hive_env.env, "spawn", "dies", "--repo", str(repo), "--agent", "shell").returncode == 0

    def web() -> str:
        (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
        return str(row["services"]["web"])

    assert wait_for(lambda: web() not in ("starting", "ready") and web(), what="the service's end") == "crashed(1)"
    logs = run_stem(hive_env.env, "logs", "dies").stdout
    assert "[web] cannot bind port 6379" in logs, logs
    assert ends_of_a_dead_daemon(logs), logs
    if how == "gone":
        assert "what it left in the background (pid " in logs and " in the colony) exited with 1 at once" in logs
    assert "exited with 0" not in logs, logs
    assert run_stem(hive_env.env, "stop", "dies").returncode == 0


def test_a_daemon_that_dies_at_once_where_stem_is_its_reaper_reads_crashed(hive_env, repo):
    """Without a PID namespace of its own the daemon is orphaned to Stem (a subreaper), whose orphan reaper took its
    exit status and dropped it: the same `stopped` after "exited with 0"."""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("dies", repo)
        colony = Colony(hive, "dies", dies_toml("gone"))
        (Path(colony.rec.worktree) / "dies.sh").write_text(GONE)
        try:
            await colony.services.start_all()
            web = colony.services.services["web"]
            await until(lambda: web.finished, what="the service's end")
            assert (web.state, web.code) == ("crashed", 1)
            logs = "\n".join(f"[{e.source}] {e.text}" for e in hive.log("dies").after(0))
            assert "[web] cannot bind port 6379" in logs, logs
            assert "[web!] its command exited 0, but what it left in the background (pid " in logs, logs
            assert ends_of_a_dead_daemon(logs), logs
        finally:
            await colony.services.stop_all()
        assert my_zombies() == []

    run(hive_env, scenario)


# A daemon that dies at once without a word here (redis with --daemonize yes writes to its logfile, by default
# nowhere): its command waits for it to end, as GONE's does. "taken": it cannot bind a port another service holds.
SILENT = r"""
( sh -c 'echo $$ > $STEM_SERVICE.pid; exec python3 -c "import socket; socket.socket().bind((\"0.0.0.0\", 9001))" \
  >/dev/null 2>&1' & )
until [ -s $STEM_SERVICE.pid ]; do sleep 0.01; done
pid=$(cat $STEM_SERVICE.pid)
while [ -e /proc/$pid ] && [ "$(cut -d' ' -f3 /proc/$pid/stat)" != Z ]; do sleep 0.01; done
exit 0
"""
HOLD = """import socket, time
held = []
for port in (9001, 9002):
    s = socket.socket()
    s.bind(("0.0.0.0", port))
    s.listen()
    held.append(s)
time.sleep(600)
"""
SILENT_TOML = r"""
[services.late]
command = "sh -c '(sh -c \"sleep 0.3; exit 1\" &); exit 0'"
restart = "no"

[services.hold]
command = "python3 hold.py"
port = 9002

[services.taken]
command = "sh silent.sh"
port = 9001
ready = "none"
restart = "no"
depends_on = ["hold"]

[services.mute]
command = "sh silent.sh"
restart = "no"
depends_on = ["taken"]
"""


def test_a_daemon_that_dies_at_once_without_a_word_is_told_why_it_may_have(hive_env, repo):
    """Its line said only that it exited with 1 (at once, or after it was followed): nothing of why, which a daemon
    writes where it logs (redis with --daemonize yes and its port in use: nowhere). The line names who holds its
    port, else that the daemon said nothing here and where it would have."""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("mute", repo)
        colony = Colony(hive, "mute", SILENT_TOML)
        (Path(colony.rec.worktree) / "silent.sh").write_text(SILENT)
        (Path(colony.rec.worktree) / "hold.py").write_text(HOLD)
        try:
            await colony.services.start_all()
            runners = colony.services.services
            await until(lambda: all(runners[s].finished for s in ("taken", "mute", "late")), what="the daemons' ends")
            assert {(runners[s].state, runners[s].code) for s in ("taken", "mute", "late")} == {("crashed", 1)}
            ends = {e.source: e.text for e in hive.log("mute").after(0) if e.source in ("taken!", "mute!", "late!")}
            assert " exited with 1 at once; port 9001 is taken by service hold (pid " in ends["taken!"], ends
            assert "python3 hold.py); not restarted (restart = no)" in ends["taken!"], ends
            # It names no port to look at: the line says where a daemon tells why.
            assert " at once; it wrote nothing here: a daemon says why in its own log file" in ends["mute!"], ends
            # Followed first (it went to the background), then it failed: the same word.
            assert ends["late!"].startswith("exited with 1; it wrote nothing here: a daemon says why in its own"), ends
        finally:
            await colony.services.stop_all()

    run(hive_env, scenario)


def procs_serving(netns_name: str) -> list[str]:
    """Pids of the daemon.py processes in the colony's network namespace."""
    pids = subprocess.run(["ip", "netns", "pids", netns_name], capture_output=True, text=True).stdout.split()
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"daemon.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def test_output_lines_partial_long_and_undecodable(hive_env, repo):
    toml = r"""
[services.talk]
command = '''printf 'first\nlong:'; head -c 40000 /dev/zero | tr '\0' x;
             printf '\nbad \377 byte\r\nno newline at end'; exit 0'''
restart = "no"
"""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("talk", repo)
        colony = Colony(hive, "talk", toml)
        await colony.services.start_all()
        talk = colony.services.services["talk"]
        await until(lambda: talk.finished, what="talk to exit")
        texts = [e.text for e in hive.log("talk").after(0) if e.source == "talk"]
        assert texts[0] == "first"
        assert texts[-3:] == ["bad \ufffd byte", "no newline at end", "exited with 0"]  # the last is Stem's
        long = texts[1:-3]
        assert len(long) > 1  # a 40 kB line is logged in pieces, none of them huge
        assert "".join(long) == "long:" + "x" * 40000
        assert (talk.state, talk.code) == ("stopped", 0)
        await colony.services.stop_all()

    run(hive_env, scenario)


BOTH = """import sys
for i in range(200):
    print(f"out {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
"""


def test_lines_written_to_stdout_and_stderr_in_turn_are_logged_in_that_order(hive_env, repo):
    """Read from two pipes, a burst's lines came out grouped by pipe: all of its stdout, then all of its stderr (a
    warning logged after the lines it was written before). Both go to one pipe, as a terminal has one screen."""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("both", repo)
        colony = Colony(hive, "both", '[services.both]\ncommand = "python3 both.py"\nrestart = "no"\n')
        (Path(colony.rec.worktree) / "both.py").write_text(BOTH)
        await colony.services.start_all()
        both = colony.services.services["both"]
        await until(lambda: both.finished, what="the service to exit")
        texts = [e.text for e in hive.log("both").after(0) if e.source == "both"]
        assert texts == [line for i in range(200) for line in (f"out {i}", f"err {i}")] + ["exited with 0"]
        await colony.services.stop_all()

    run(hive_env, scenario)


def test_the_http_readiness_probe_asks_as_localhost():
    """A dev server that lets in only local host names (Django in DEBUG, Vite) is asked for what it lets in: it
    answers, and logs no 'Invalid HTTP_HOST header' for every probe."""
    from core.services import probe

    async def scenario() -> tuple[list[bytes], int]:
        seen: list[bytes] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            host = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"host:"))
            seen.append(host)
            local = host.split(b":")[1].strip() in (b"localhost", b"127.0.0.1")
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" if local else b"HTTP/1.0 500 Bad host\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            assert await probe("http:/health", "127.0.0.1", port)
        return seen, port

    seen, port = asyncio.run(scenario())
    assert seen == [f"Host: localhost:{port}".encode()]


def test_a_plain_command_is_execd_and_anything_the_shell_must_read_goes_through_it(tmp_path):
    env = {"PATH": os.defpath + ":" + os.path.dirname(sys.executable)}
    python = Path(sys.executable).name
    assert procs.command_argv(f"{python} -m http.server 3000", env) == [python, "-m", "http.server", "3000"]
    assert procs.command_argv(f"exec {python} 'a b'", env) == [python, "a b"]
    # A program in the service's folder, named by a relative path (a virtualenv's, node_modules/.bin's).
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "uvicorn").write_text("#!/bin/sh\n")
    (tmp_path / ".venv" / "bin" / "uvicorn").chmod(0o755)
    assert procs.command_argv(".venv/bin/uvicorn api:app", env, tmp_path) == [".venv/bin/uvicorn", "api:app"]
    # One program with expansions, globs or redirections: the shell reads them and execs it, so it keeps its pid.
    for command in ("ls *.txt", "echo $HOME", f"{python} -u app.py --port $PORT > log", ".venv/bin/uvicorn $APP"):
        assert procs.command_argv(command, env, tmp_path) == ["/bin/sh", "-c", f"exec {command}"], command
    for command in (
        "echo hi > out; exec python3 x",  # a list and a redirection
        f"{python} x | tee log",
        "PORT=1 node server.js",  # an assignment
        "cd www && npm start",
        f"{python} x 2>&1",
        "$PYTHON x",  # the program itself an expansion
        "exec python3 $X",  # exec'd already
        "no-such-program --flag",  # not found: the shell says so, exit 127
        ".venv/bin/uvicorn api:app",  # not there from the folder it runs in
        "echo 'unterminated",
    ):
        assert procs.command_argv(command, env) == ["/bin/sh", "-c", command], command
    # What quotes hold is an argument, not the shell's syntax: a program with a script for its argument is exec'd.
    assert procs.command_argv("sh -c 'cd www && exec npm start'", env) == ["sh", "-c", "cd www && exec npm start"]
    assert procs.command_argv(f"{python} -c 'import a; a.b()'", env) == [python, "-c", "import a; a.b()"]
    assert procs.command_argv(f'{python} -c "print(1); x" -q', env) == [python, "-c", "print(1); x", "-q"]
    # Syntax outside quotes, an expansion in double quotes, an escape there (the shell's rules, not shlex's).
    for command in (f"{python} -c 'a; b' > log", f'{python} -c "$CODE; x"', f'{python} -c "a\\$b"'):
        assert procs.command_argv(command, env) == ["/bin/sh", "-c", f"exec {command}"], command


def test_a_shell_script_in_quotes_is_the_service_and_ends_by_its_own_trap(hive_env, repo):
    """`sh -c '...; exec postgres ...'` ran under a second /bin/sh -c (its quoted `;` read as the shell's), which was
    the service: a stop's SIGINT killed that wrapper ('stopped: killed by SIGINT') while the program shut down as
    told. Exec'd as it is, the script's shell is the service and its trap ends it."""
    toml = """
[services.script]
command = "sh -c 'trap \\"echo bye; exit 0\\" INT; echo up; while :; do sleep 0.05; done'"
stop_signal = "SIGINT"
"""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("script", repo)
        colony = Colony(hive, "script", toml)
        await colony.services.start_all()
        script = colony.services.services["script"]
        await until(lambda: "up" in script.last_lines, what="the script's first line")
        assert script.pid is not None
        assert Path(f"/proc/{script.pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sh", b"-c"]
        await colony.services.stop_all()
        texts = [e.text for e in hive.log("script").after(0) if e.source == "script"]
        assert texts[-2:] == ["bye", "stopped: exited with 0"], texts

    run(hive_env, scenario)


def test_a_service_that_crashes_while_its_colony_starts_is_restarted(hive_env, tmp_path):
    """A worker (no readiness check) that fails at once because what it needs is not up yet, while another service
    of the colony is still getting ready: restarted by its policy like any other crash, not left crashed."""
    toml = (
        "[services.web]\n"
        f"command = \"sh -c 'sleep 1.5; exec {sys.executable} -m http.server 3000'\"\n"
        "port = 3000\n\n"
        "[services.worker]\n"
        "command = \"sh -c 'if [ -e /tmp/tried ]; then echo worker up; exec sleep 1000; fi; "
        "touch /tmp/tried; echo not yet >&2; exit 1'\"\n"
    )
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    spawned = run_stem(hive_env.env, "spawn", "eager", "--repo", str(repo), "--agent", "shell")
    assert spawned.returncode == 0, spawned.stderr

    def services() -> dict[str, str] | None:
        (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
        return row["services"] if row["services"].get("worker") == "ready" else None

    assert wait_for(services, timeout=15, what="the worker restarted") == {"web": "ready", "worker": "ready"}
    logs = run_stem(hive_env.env, "logs", "eager").stdout
    assert "exited with 1; restart 1 in" in logs and "worker up" in logs, logs


def test_colony_env_is_what_build_services_agent_and_exec_all_see(hive_env, tmp_path):
    """[colony] env sets DATABASE_URL (a postgres the app uses): the build that migrates, the service that serves
    and a `stem exec` see the same one, not the colony's SQLite URL in some and the user's in others."""
    url = "postgres://db.example/app"
    toml = (
        "[colony]\n"
        f'env = {{ DATABASE_URL = "{url}", LOG_LEVEL = "debug" }}\n'
        "build = [\"sh -c 'echo build sees $DATABASE_URL'\"]\n\n"
        "[services.web]\n"
        "command = \"sh -c 'echo web sees $DATABASE_URL; exec sleep 1000'\"\n"
    )
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    spawned = run_stem(hive_env.env, "spawn", "same", "--repo", str(repo), "--agent", "shell")
    assert spawned.returncode == 0, spawned.stderr

    def said() -> str | None:
        out = run_stem(hive_env.env, "logs", "same").stdout
        return out if "web sees" in out else None

    logs = wait_for(said, what="the service's line")
    assert f"build sees {url}" in logs and f"web sees {url}" in logs, logs
    shown = run_stem(hive_env.env, "exec", "same", "--", "sh", "-c", "echo $DATABASE_URL $COLONY_DB")
    assert shown.stdout.split()[0] == url, shown
    assert shown.stdout.split()[1].endswith("colony.db")


# The first run starts a worker in a session of its own (setsid, as dev servers' workers do) that takes port 3000, then
# crashes; the next run serves port 3000 itself, with a setsid'd helper of its own beside it.
LEFT_BEHIND = r"""
import os, socket, sys, time

def serve(answer):
    server = socket.create_server(("0.0.0.0", 3000))
    while True:
        conn, _ = server.accept()
        conn.sendall(answer)
        conn.close()

def in_own_session(name, work):
    if os.fork() == 0:
        os.setsid()
        with open(name + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(name + ".tmp", name)
        work()
        os._exit(0)
    while not os.path.exists(name):
        time.sleep(0.01)

if not os.path.exists("ran"):
    open("ran", "w").close()
    in_own_session("worker.pid", lambda: serve(b"left behind\n"))
    print("worker started; crashing", flush=True)
    sys.exit(1)
in_own_session("helper.pid", lambda: time.sleep(1000))
server = socket.create_server(("0.0.0.0", 3000))
print("serving", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"restarted\n")
    conn.close()
"""


def read_port(ip: str, port: int) -> bytes:
    import socket

    with socket.create_connection((ip, port), timeout=5) as conn:
        return conn.recv(100)


def test_what_a_crashed_service_left_in_another_session_ends_before_its_restart(hive_env, repo):
    """A service's worker that called setsid is not in its process group: before, it outlived the crash and kept
    the port, so every restart failed with 'address in use' until the whole colony stopped. Each service has a
    cgroup of its own below its colony's: what is left in it ends before the restart, and with a stop."""
    from core import cgroups

    toml = '[services.web]\ncommand = "python3 -u serve.py"\nport = 3000\nready = "tcp"\nrestart = "on-failure"\n'

    async def scenario(hive: Hive) -> None:
        await hive.spawn("leaky", repo)
        worktree = Path(hive.get("leaky").worktree)
        (worktree / "serve.py").write_text(LEFT_BEHIND)
        colony = Colony(hive, "leaky", toml)
        own = cgroups.service_cgroup(colony.rec.netns, "web")
        be = cgroups.backend()
        assert be is not None  # this machine kind has cgroups
        await colony.services.start_all()
        web = colony.services.services["web"]
        try:
            await until(lambda: "serving" in web.last_lines, timeout=15, what="the restarted service to serve 3000")
            worker = int((worktree / "worker.pid").read_text())
            assert not alive(worker)
            assert web.restarts == 1
            assert await asyncio.to_thread(read_port, colony.rec.ip, 3000) == b"restarted\n"
            said = [(e.source, e.text) for e in hive.log("leaky").after(0) if e.source == "web!"]
            left = "1 process it started outside its process group (setsid, a double fork) still ran: killed (SIGKILL)"
            assert ("web!", left) in said, said
            # Its own cgroup, below its colony's: the colony's limits hold it too.
            assert web.pid in cgroups.procs(own) and web.pid in cgroups.procs(colony.rec.netns)
            helper = int((worktree / "helper.pid").read_text())
            assert alive(helper) and helper in cgroups.procs(own)
        finally:
            await colony.services.stop_all()
        assert not alive(helper)  # a stop ends what the service left in other sessions too
        assert not any(path.exists() for path in be.paths(own))  # and its cgroup goes
        assert any(path.exists() for path in be.paths(colony.rec.netns))  # the colony's stays until it stops

    run(hive_env, scenario)


def test_a_cancelled_supervisor_ends_its_service_and_removes_its_cgroup_as_a_stop_does(hive_env, repo):
    """A supervisor cancelled (its host's loop torn down) rather than stopped killed its process group only: what
    the service had started in a session of its own ran on in the service's cgroup, left for `stem stop` or
    `stem gc`. The cancel ends the cgroup's processes and removes it, as a stop does."""
    from core import cgroups

    command = "setsid sleep 1000 & echo $! > left.pid; echo up; exec sleep 1000"
    toml = f'[services.web]\ncommand = "{command}"\n'

    async def scenario(hive: Hive) -> None:
        await hive.spawn("cut", repo)
        worktree = Path(hive.get("cut").worktree)
        colony = Colony(hive, "cut", toml)
        own = cgroups.service_cgroup(colony.rec.netns, "web")
        be = cgroups.backend()
        assert be is not None  # this machine kind has cgroups
        await colony.services.start_all()
        web = colony.services.services["web"]
        await until(lambda: "up" in web.last_lines, what="the service to start its helper")
        left, leader = int((worktree / "left.pid").read_text()), web.pid
        assert leader is not None and alive(left) and left in cgroups.procs(own)
        (supervisor,) = [t for t in asyncio.all_tasks() if t.get_name() == "service-cut-web"]
        supervisor.cancel()
        with pytest.raises(asyncio.CancelledError):
            await supervisor
        assert not alive(left) and not alive(leader)
        assert not any(path.exists() for path in be.paths(own))
        assert any(path.exists() for path in be.paths(colony.rec.netns))  # the colony's stays until it stops

    run(hive_env, scenario)


def test_a_clean_exit_that_restart_always_restarts_reads_exited_not_crashed(hive_env, tmp_path):
    """restart = "always" and exit 0 (a job that runs again and again): `stem ls` said crashed(0) while it waited to
    start again; it says exited(0), and the UI does not report it as a crash."""
    toml = '[services.tick]\ncommand = "sh -c \'echo tick; exit 0\'"\nrestart = "always"\n'
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    spawned = run_stem(hive_env.env, "spawn", "ticking", "--repo", str(repo), "--agent", "shell")
    assert spawned.returncode == 0, spawned.stderr

    seen = []

    def exited() -> dict[str, str] | None:
        (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
        seen.append(row["services"])
        return row["services"] if row["services"].get("tick", "").startswith("exited") else None

    try:
        assert wait_for(exited, timeout=15, what="tick to wait for its restart") == {"tick": "exited(0)"}
    except AssertionError:  # say what was there instead
        raise AssertionError(f"{seen[-3:]}\n{run_stem(hive_env.env, 'logs', 'ticking').stdout}") from None
    logs = run_stem(hive_env.env, "logs", "ticking").stdout
    assert "[tick] exited with 0; restart 1 in" in logs and "crashed" not in logs, logs
    # Its daemon is looked for in its own cgroup: the agent, started as it exited, was once taken for one.
    assert "went to the background" not in logs, logs


# A prompt with no newline, an answer, then half a UTF-8 character at a pause: each is shown once the pipe is quiet.
PROMPT = r"""
import os, sys, time

def wait_for(name):
    while not os.path.exists(name):
        time.sleep(0.01)

out = sys.stdout.buffer
out.write(b"Password: ")
out.flush()
wait_for("go")
out.write(b"accepted\ncaf\xc3")
out.flush()
wait_for("go2")
out.write(b"\xa9\n")
out.flush()
"""


def test_a_line_without_its_newline_shows_once_the_service_is_quiet(hive_env, repo):
    """A prompt ("Password: ") or a progress line reached the log only when the service exited. It shows once the
    pipe has been quiet a moment, as a terminal shows it; what follows on that line is an entry of its own, and
    the shown part is never repeated."""
    toml = '[services.ask]\ncommand = "python3 -u prompt.py"\nrestart = "no"\n'

    async def scenario(hive: Hive) -> None:
        await hive.spawn("asking", repo)
        worktree = Path(hive.get("asking").worktree)
        (worktree / "prompt.py").write_text(PROMPT)
        colony = Colony(hive, "asking", toml)
        await colony.services.start_all()
        ask = colony.services.services["ask"]
        log = hive.log("asking")

        def said() -> list[str]:
            return [e.text for e in log.after(0) if e.source == "ask"]

        try:
            await until(lambda: "Password: " in said(), what="the prompt while the service waits")
            assert ask.pid is not None and alive(ask.pid)
            (worktree / "go").touch()
            await until(lambda: "caf" in said(), what="the line begun, without its cut character")
            (worktree / "go2").touch()
            await until(lambda: ask.finished, what="ask to exit")
            assert said() == ["Password: ", "accepted", "caf", "é", "exited with 0"]
            shown = {e.text for e in colony.events if isinstance(e, LogLine) and e.source == "ask"}
            assert "Password: " in shown
        finally:
            await colony.services.stop_all()

    run(hive_env, scenario)


@pytest.mark.parametrize("case", ["program under /tmp", "missing working_dir"])
def test_a_service_that_cannot_start_says_why_in_words(hive_env, tmp_path, case):
    """A program there on the host but not inside the colony (a venv made under /tmp: the colony's /tmp is its own),
    and a working_dir the worktree lacks, each said as what is wrong, not as `[Errno 2] ... PosixPath(...)`."""
    program = tmp_path / "venv" / "bin" / "serve"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\nexec sleep 1000\n")
    program.chmod(0o755)
    if case == "program under /tmp":
        toml, said = f'[services.web]\ncommand = "{program}"\n', f"{program} is not there inside the colony: its /tmp"
    else:
        toml, said = (
            '[services.web]\ncommand = "sleep 1000"\nworking_dir = "nope"\n',
            ("its working_dir 'nope' is not a folder in the colony's worktree"),
        )
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    result = run_stem(hive_env.env, "spawn", "cannot", "--repo", str(repo), "--agent", "shell")
    assert result.returncode != 0 and f"service web could not start: {said}" in result.stderr, result.stderr
    assert "Errno" not in result.stderr and "PosixPath" not in result.stderr


def test_an_edit_is_applied_while_a_service_an_earlier_edit_added_is_still_getting_ready(hive_env, tmp_path):
    """An edit that added a service which does not get ready held every later edit back for that service's whole
    ready timeout: the edit that mends it too, and one of another service (27 s late in an exploratory run)."""
    web = '[services.web]\ncommand = "python3 -m http.server 3000"\nport = 3000\n'
    repo = make_repo(tmp_path / "repo", colony_toml=web)
    assert run_stem(hive_env.env, "spawn", "edits", "--repo", str(repo)).returncode == 0
    toml = hive_env.home / "worktrees" / "edits" / "colony.toml"
    slow = '\n[services.slow]\ncommand = "sleep 1000"\nport = 3999\nready_timeout = 60\n'
    toml.write_text(web + slow)

    def services() -> dict[str, str]:
        (row,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
        return row["services"]

    wait_for(lambda: services().get("slow") == "starting", 20, "the added service to be starting")
    toml.write_text(web.replace("port = 3000\n", 'port = 3000\nenv = { EDITED = "1" }\n') + slow)

    def restarted() -> str | None:
        out = run_stem(hive_env.env, "logs", "edits").stdout
        return out if "colony.toml changed: restarted web" in out else None

    wait_for(restarted, 20, "the second edit to restart web")  # 20 s: the slow service's ready timeout is 60 s
    assert services()["slow"] == "starting"  # still getting ready, as it was
