"""End to end, as a user over SSH would meet it: the real `stem` in tmux panes. A dropped terminal (the tmux server
killed) ends the UI and nothing else; two UIs show and type into the same agent; a shell's spawn shows in a
running UI; `stem attach` puts one agent full-screen in the user's terminal and gives the terminal back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import http_get, make_repo, run_stem, use_fake_agent, wait_for
from test_e2e_tmux import COLS, ROWS, Tmux, stem_command

from core.host.paths import HostPaths
from core.host.protocol import Connection, Keys

pytestmark = pytest.mark.root

TOML = """\
[colony]
setup = ["echo setup-ran-for-$COLONY_NAME"]

[services.web]
command = "echo \\"I am $COLONY_NAME\\" > whoami.txt; exec python3 -m http.server 3000"
port = 3000
ready = "http:/whoami.txt"
"""


class Panes(Tmux):
    """A private tmux server with any number of sessions, each a terminal a user could be looking at."""

    def start(self, name: str, command: str, cwd: Path) -> None:
        self(
            "new-session", "-d", "-s", name, "-x", str(COLS), "-y", str(ROWS), "-c", str(cwd),
            f"cd {cwd} && {command}; echo exited with status $?; sleep 600",
        )  # fmt: skip

    def pane(self, name: str) -> str:
        return self("capture-pane", "-p", "-t", name)

    def wait_in(self, name: str, *texts: str, timeout: float = 30.0) -> str:
        def shows() -> str | None:
            screen = self.pane(name)
            return screen if all(t in screen for t in texts) else None

        try:
            return wait_for(shows, timeout, f"{texts} in pane {name}")
        except AssertionError:
            raise AssertionError(f"timed out waiting for {texts}; pane {name} shows:\n{self.pane(name)}") from None

    def type(self, name: str, text: str) -> None:
        self("send-keys", "-t", name, "-l", text)
        self("send-keys", "-t", name, "Enter")


@pytest.fixture
def setup(hive_env, tmp_path):
    use_fake_agent(hive_env.env)
    repo = make_repo(tmp_path / "repo", colony_toml=TOML)
    env = dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path))
    panes = Panes(env)
    try:
        yield repo, panes
    finally:
        panes.kill()


def colonies(hive_env) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}


def pids_of(hive_env, name: str) -> set[int]:
    """Everything the colony runs: its host and what is inside its namespace."""
    out = subprocess.run(["ip", "netns", "pids", f"{hive_env.prefix}-{name}"], capture_output=True, text=True)
    host = (hive_env.home / "colonies" / name / "host.pid").read_text().split()[0]
    return {int(p) for p in out.stdout.split()} | {int(host)}


def type_into(hive_env, name: str, text: str) -> None:
    """Type into a colony's agent as a script would, with no UI anywhere."""

    async def send() -> None:
        async with await Connection.open(HostPaths(hive_env.home / "colonies" / name).socket, "script") as conn:
            await conn.request(Keys(text.encode() + b"\r"))

    asyncio.run(send())


def test_a_dropped_terminal_ends_the_ui_and_nothing_else(setup, hive_env):
    repo, panes = setup
    names = ("alpha", "beta", "gamma")
    for name in names:
        assert run_stem(hive_env.env, "spawn", name, "--repo", str(repo)).returncode == 0
    panes.start("ui", stem_command(), repo)
    panes.wait_in("ui", "alpha", "beta", "gamma", "fake-agent>")
    before = {name: pids_of(hive_env, name) for name in names}

    panes.kill()  # the SSH connection drops: the UI gets SIGHUP with its terminal gone
    for name in names:
        type_into(hive_env, name, f"while-away-{name}")  # the agents go on working with no UI
    listed = colonies(hive_env)
    for name in names:
        assert pids_of(hive_env, name) == before[name], f"{name}'s processes changed"
        assert http_get(f"http://{listed[name]['ip']}:3000/whoami.txt") == f"I am {name}\n"

    # A new UI shows each agent's screen, with what it printed while no UI ran.
    panes.start("ui2", stem_command(), repo)
    for i, name in enumerate(names):
        if i:
            panes("send-keys", "-t", "ui2", "j")
        panes.wait_in("ui2", f"echo: while-away-{name}")
    for name in names:
        assert run_stem(hive_env.env, "stop", name).returncode == 0


def test_two_uis_show_the_same_agent_and_both_can_type(setup, hive_env):
    repo, panes = setup
    assert run_stem(hive_env.env, "spawn", "shared", "--repo", str(repo)).returncode == 0
    panes.start("one", stem_command(), repo)
    panes.start("two", stem_command(), repo)
    for pane in ("one", "two"):
        panes.wait_in(pane, "shared", "fake-agent>")
        panes("send-keys", "-t", pane, "Enter")  # focus the terminal
        panes.wait_in(pane, "back to panels")
    panes.type("one", "typed-in-one")
    for pane in ("one", "two"):
        panes.wait_in(pane, "echo: typed-in-one")
    panes.type("two", "typed-in-two")
    for pane in ("one", "two"):
        panes.wait_in(pane, "echo: typed-in-two")
    assert run_stem(hive_env.env, "stop", "shared").returncode == 0


def test_a_spawn_from_a_shell_shows_in_a_running_ui_with_its_setup_output(setup, hive_env):
    repo, panes = setup
    panes.start("ui", stem_command(), repo)
    panes.wait_in("ui", "Welcome to Stem")
    assert run_stem(hive_env.env, "spawn", "fromshell", "--repo", str(repo)).returncode == 0
    spawned = time.monotonic()
    panes.wait_in("ui", "fromshell", "running", timeout=10)
    assert time.monotonic() - spawned < 1.5, "a spawn from a shell took more than a second to show"
    panes.wait_in("ui", "fake-agent>")
    panes("send-keys", "-t", "ui", "]")  # the Logs tab
    panes.wait_in("ui", "setup-ran-for-fromshell", "Serving HTTP")
    assert run_stem(hive_env.env, "stop", "fromshell").returncode == 0


def test_attach_types_into_the_agent_and_gives_the_terminal_back(setup, hive_env):
    repo, panes = setup
    assert run_stem(hive_env.env, "spawn", "solo", "--repo", str(repo)).returncode == 0
    panes.start("term", "sh", repo)
    check = "if stty -a | tr ' ;' '\\n\\n' | grep -qx -- -echo; then echo ECHO-OFF; else echo ECHO-ON; fi"
    panes.type("term", f"{stem_command()} attach solo; echo attach-exit=$?; {check}")
    panes.wait_in("term", "fake-agent>")
    panes.type("term", "hello-attached")
    panes.wait_in("term", "echo: hello-attached")
    panes("send-keys", "-t", "term", "C-]")
    screen = panes.wait_in("term", "attach-exit=0", "ECHO-")
    assert "detached from solo" in screen
    assert "ECHO-ON" in screen, screen  # the terminal is back in its cooked mode
    # The agent is still there, with what was typed through attach.
    type_into(hive_env, "solo", "after-detach")
    assert run_stem(hive_env.env, "stop", "solo").returncode == 0
    assert os.path.exists(hive_env.home / "colonies" / "solo")
