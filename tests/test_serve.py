"""The long-lived core: `stem serve` runs colonies' services, follows other shells, and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import http_get, make_repo, run_stem, stem_cmd, wait_for

from core import procs
from core.events import Notice, ServiceState
from core.hive import Hive

pytestmark = pytest.mark.root

SERVICES = """\
[services.web]
command = "echo \\"I am $COLONY_NAME\\" > whoami.txt; exec python3 -m http.server 3000"
port = 3000
ready = "http:/whoami.txt"

[services.worker]
command = "echo worker up; exec sleep 1000"
"""


class Serve:
    """`stem serve` in the background, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*stem_cmd(), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        threading.Thread(target=lambda: [self._queue.put(line.rstrip("\n")) for line in stream], daemon=True).start()

    def saw(self, text: str) -> bool:
        while not self._queue.empty():
            self.lines.append(self._queue.get_nowait())
        return any(text in line for line in self.lines)

    def wait_for_line(self, text: str, timeout: float = 20) -> None:
        wait_for(lambda: self.saw(text), timeout=timeout, what=f"stem serve to print {text!r}; got {self.lines}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def netns_pids(prefix: str, name: str) -> list[str]:
    return subprocess.run(["ip", "netns", "pids", f"{prefix}-{name}"], capture_output=True, text=True).stdout.split()


def test_colonies_run_without_any_ui_and_serve_only_watches(hive_env, tmp_path):
    """A colony spawned from a shell runs its services and agent at once, with no UI anywhere; `stem serve`
    (any number of them) follows the hive and leaves everything running when it goes."""
    repo = make_repo(tmp_path / "svcrepo", colony_toml=SERVICES)
    assert run_stem(hive_env.env, "spawn", "alpha", "--repo", str(repo)).returncode == 0
    rows = {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}
    assert rows["alpha"]["host"] is True
    assert rows["alpha"]["services"] == {"web": "ready", "worker": "ready"}
    assert http_get(f"http://{rows['alpha']['ip']}:3000/whoami.txt") == "I am alpha\n"
    assert run_stem(hive_env.env, "logs", "alpha", "--service", "worker").stdout.rstrip().endswith("worker up")

    serve, second = Serve(hive_env.env), Serve(hive_env.env)
    try:
        serve.wait_for_line("alpha service web ready")
        second.wait_for_line("alpha service web ready")  # two watchers at once: no owner to fight over
        assert run_stem(hive_env.env, "spawn", "beta", "--repo", str(repo)).returncode == 0
        serve.wait_for_line("beta service web ready")
        rows = {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}
        body = wait_for(lambda: http_get(f"http://{rows['beta']['ip']}:3000/whoami.txt"), what="beta's web")
        assert body == "I am beta\n"

        # `stem ls` in another shell shows the services' states as the hosts report them.
        listing = run_stem(hive_env.env, "ls").stdout
        assert listing.splitlines()[0].split() == ["NAME", "STATE", "AGENT", "SERVICES", "IP", "BRANCH", "AGE", "REPO"]
        assert listing.count("web:ready worker:ready") == 2, listing

        # Stopping alpha from another shell: its services end, at once, and do not come back.
        assert run_stem(hive_env.env, "stop", "alpha").returncode == 0
        assert netns_pids(hive_env.prefix, "alpha") == []
        serve.wait_for_line("alpha service web stopped")
        beta_pids = sorted(netns_pids(hive_env.prefix, "beta"))
    finally:
        code, code2 = serve.stop(), second.stop()
    assert (code, code2) == (0, 0)
    assert serve.saw("stem serve: detached")
    # The watchers are gone; beta runs on, the same processes, still answering.
    assert sorted(netns_pids(hive_env.prefix, "beta")) == beta_pids
    assert http_get(f"http://{rows['beta']['ip']}:3000/whoami.txt") == "I am beta\n"
    rows = {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}
    assert rows["beta"]["state"] == "running" and rows["alpha"]["state"] == "stopped"
    assert rows["beta"]["services"] == {"web": "ready", "worker": "ready"}
    assert run_stem(hive_env.env, "stop", "beta").returncode == 0
    assert netns_pids(hive_env.prefix, "beta") == []


def test_serve_shows_the_first_lines_of_a_colony_spawned_while_it_watches(hive_env, tmp_path):
    """A colony spawned from another shell while `stem serve` watches: serve links to its host once the registry
    says it runs, and the lines its services printed before that were never shown (a worker's "up", a dev server's
    address). Its first live line now brings what the colony's log holds before it, in order, once."""
    toml = '[services.worker]\ncommand = "echo worker up; echo second line; exec sleep 1000"\n'
    repo = make_repo(tmp_path / "early", colony_toml=toml)
    serve = Serve(hive_env.env)
    try:
        serve.wait_for_line("stem serve: watching")
        assert run_stem(hive_env.env, "spawn", "gamma", "--repo", str(repo)).returncode == 0
        serve.wait_for_line("gamma [worker] second line")
        shown = [line.split(" ", 1)[1] for line in serve.lines if " gamma [" in line]
        assert shown.count("gamma [worker] worker up") == 1, shown
        assert shown.index("gamma [worker] worker up") < shown.index("gamma [worker] second line"), shown
    finally:
        assert serve.stop() == 0
    assert run_stem(hive_env.env, "destroy", "gamma").returncode == 0


def test_a_service_that_never_gets_ready_fails_the_spawn_with_its_last_lines(hive_env, tmp_path):
    toml = (
        '[services.api]\ncommand = "echo connecting to db; echo db refused; exec sleep 1000"\nport = 4000\n'
        'ready = "tcp"\nready_timeout = 1\nrestart = "no"\n'
    )
    repo = make_repo(tmp_path / "notready", colony_toml=toml)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()
            with pytest.raises(Exception) as caught:
                await hive.spawn("slow", repo)
            message = str(caught.value)
            assert message.startswith("spawn slow failed while starting: service api not ready after 1s")
            assert "db refused" in message and message.endswith("(everything made was removed)")
            assert hive.colonies() == []
        finally:
            await hive.close()

    asyncio.run(scenario())
    assert not (hive_env.home / "worktrees" / "slow").exists()


def test_colony_toml_edit_restarts_only_the_changed_service_and_a_broken_edit_keeps_them(hive_env, tmp_path):
    repo = make_repo(tmp_path / "editrepo", colony_toml=SERVICES)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()
        try:
            await hive.attach()
            rec = await hive.spawn("edit", repo)
            services = hive.services("edit")
            assert {n: s.state for n, s in services.items()} == {"web": "ready", "worker": "ready"}
            web_pid, worker_pid = services["web"].pid, services["worker"].pid
            toml = Path(rec.worktree) / "colony.toml"

            async def notice(containing: str) -> Notice:
                async def find() -> Notice:
                    while True:
                        event = await events.get()
                        if isinstance(event, Notice) and containing in event.message:
                            return event

                return await asyncio.wait_for(find(), timeout=15)

            toml.write_text(SERVICES.replace("echo worker up", "echo worker v2"))
            await notice("colony.toml changed: restarted worker")
            services = hive.services("edit")
            assert services["web"].pid == web_pid
            assert services["worker"].pid != worker_pid
            await _until(lambda: hive.services("edit")["worker"].state == "ready")

            worker_pid = hive.services("edit")["worker"].pid
            toml.write_text(SERVICES + "\n[services.broken]\nrestart = 'sometimes'\n")
            bad = await notice("colony.toml not applied, services kept")
            assert "colony.toml:" in bad.message and "restart" in bad.message
            services = hive.services("edit")
            assert services["web"].pid == web_pid and services["worker"].pid == worker_pid
            assert all(s.state == "ready" for s in services.values())
            assert not any(isinstance(e, ServiceState) and e.state == "stopped" for e in _drain(events))
            # Both are in the colony's log, for `stem logs` to show; the broken file is named by its whole path.
            logs = (await asyncio.to_thread(run_stem, hive_env.env, "logs", "edit", "-s", "config")).stdout
            assert "[config] colony.toml changed: restarted worker" in logs, logs
            assert f"[config!] colony.toml not applied, services kept: {toml}:" in logs, logs
            # A shell in the colony still opens (it is how the file gets mended), saying what it lacks.
            shell = await asyncio.to_thread(run_stem, hive_env.env, "exec", "edit", "--", "true")
            assert shell.returncode == 0 and "warning: colony.toml not applied" in shell.stderr, shell.stderr

            # A service taken out of colony.toml is stopped and is no longer one of the colony's services.
            toml.write_text(SERVICES.split("[services.worker]")[0])
            await notice("colony.toml changed: stopped worker")
            await _until(lambda: list(hive.services("edit")) == ["web"])
            assert not procs.alive(worker_pid)
            (row,) = json.loads((await asyncio.to_thread(run_stem, hive_env.env, "ls", "--json")).stdout)
            assert row["services"] == {"web": "ready"}
        finally:
            await hive.close()

    asyncio.run(scenario())


async def _until(predicate, timeout: float = 10) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def _drain(events: asyncio.Queue) -> list:
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    return seen


def test_changed_files_are_live_under_the_owner(hive_env, repo):
    from core.events import ChangesUpdated

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()
        try:
            await hive.attach()
            rec = await hive.spawn("watched", repo)
            (Path(rec.worktree) / "new.txt").write_text("one\ntwo\n")

            async def update_with_new_file() -> ChangesUpdated:
                while True:
                    event = await events.get()
                    if isinstance(event, ChangesUpdated) and any(f.path == "new.txt" for f in event.files):
                        return event

            event = await asyncio.wait_for(update_with_new_file(), timeout=15)
            assert [(f.path, f.status, f.added, f.removed) for f in event.files] == [("new.txt", "untracked", 2, 0)]
            assert await hive.changes("watched") == event.files
            assert "+two" in await hive.diff("watched", "new.txt")
            await hive.stop("watched")
            # Without a watcher, the list is computed on demand.
            assert [f.path for f in await hive.changes("watched")] == ["new.txt"]
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_a_stop_does_not_wait_for_a_service_an_edit_is_still_starting(hive_env, tmp_path):
    """An edit of colony.toml that adds a service which is not ready yet holds the colony's services while it waits
    (up to its ready timeout, here 120 s): a stop meanwhile waited 5 s for it before it stopped anything."""
    repo = make_repo(tmp_path / "stoprepo", colony_toml=SERVICES)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()
            rec = await hive.spawn("held", repo)
            slow = '\n[services.slow]\ncommand = "exec sleep 100000"\nport = 3999\nready = "tcp"\nready_timeout = 120\n'
            (Path(rec.worktree) / "colony.toml").write_text(SERVICES + slow)
            await _until(lambda: "slow" in hive.services("held"))
            assert hive.services("held")["slow"].state == "starting"
            loop = asyncio.get_running_loop()
            began = loop.time()
            await hive.stop("held")
            took = loop.time() - began
            assert took < 4, f"the stop took {took:.1f}s"  # 0.7 s on this 2-core machine; 5 s and more before
            assert netns_pids(hive_env.prefix, "held") == []
        finally:
            await hive.close()

    asyncio.run(scenario())
