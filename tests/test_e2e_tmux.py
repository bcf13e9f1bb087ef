"""End to end: the real `stem` command in a tmux pane, driven with send-keys and read with capture-pane, as a user
would: spawn a colony from the form, see the fake agent's prompt, type into it, see the echo, quit."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import stem_cmd, use_fake_agent, wait_for

pytestmark = pytest.mark.root

COLS, ROWS = 140, 40


class Tmux:
    """A private tmux server (its own socket, no user config), killed by its socket name at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"stem-e2e-{os.getpid()}"
        self.env = env

    def __call__(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def screen(self, history: bool = False) -> str:
        return self("capture-pane", "-p", *(("-S", "-") if history else ()), "-t", "stem")

    def shows(self, *texts: str, history: bool = False) -> str | None:
        screen = self.screen(history)
        return screen if all(t in screen for t in texts) else None

    def wait(self, *texts: str, timeout: float = 30.0, history: bool = False) -> str:
        try:
            return wait_for(lambda: self.shows(*texts, history=history), timeout, f"{texts} in the tmux pane")
        except AssertionError:
            raise AssertionError(f"timed out waiting for {texts}; the pane shows:\n{self.screen(history)}") from None

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "stem", *keys)

    def kill(self) -> None:
        self("kill-server", check=False)


def stem_command() -> str:
    return shlex.join(stem_cmd())


@contextlib.contextmanager
def stem_in_tmux(hive_env, repo: Path, tmp_path: Path) -> Iterator[Tmux]:
    """The real `stem` (the fake agent its default) in session "stem" of a private tmux server, started in `repo`;
    the pane stays after it exits, saying its exit status."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: apt-get install tmux")
    use_fake_agent(hive_env.env)  # the default agent, so the form needs no typing to run it
    # The server's socket lives in the test's own folder, so nothing of it outlives the test.
    env = dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path))
    server = Tmux(env)
    server("set-option", "-g", "remain-on-exit", "on", check=False)
    server(
        "new-session", "-d", "-s", "stem", "-x", str(COLS), "-y", str(ROWS), "-c", str(repo),
        f"cd {repo} && {stem_command()}; echo stem exited with status $?",
    )  # fmt: skip
    server("set-option", "-t", "stem", "remain-on-exit", "on")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def tmux(hive_env, repo, tmp_path):
    with stem_in_tmux(hive_env, repo, tmp_path) as server:
        yield server


def test_spawn_type_and_quit_in_tmux(tmux, hive_env, repo):
    tmux.wait("Welcome to Stem", str(repo))
    tmux.keys("n")
    tmux.wait("New colony", "alder")
    tmux.keys("C-s")
    # Typed at once, while the colony is still spawning: the keys wait for the agent instead of landing on the
    # colony list as commands (where `s` would stop a colony).
    tmux.keys("-l", "typed early, stop nothing")
    tmux.keys("Enter")
    tmux.wait("alder", "running", "echo: typed early, stop nothing", timeout=60)
    tmux.wait("back to panels")  # the new colony's terminal has the focus
    tmux.keys("-l", "hello from tmux")
    tmux.keys("Enter")
    tmux.wait("echo: hello from tmux")

    tmux.keys("C-]")  # the release chord
    tmux.wait("stop/start", "destroy")
    tmux.keys("q")
    tmux.wait("Quit Stem?", "1 colony is running: alder")
    tmux.keys("y")

    # The shell that started stem reports its exit status (tmux's own pane_dead_status can lag behind the pane
    # closing by many seconds on a loaded machine). The line may have scrolled above the pane by then.
    screen = tmux.wait("stem exited with status", history=True)
    assert "stem exited with status 0" in screen, screen
    # The colony outlives the UI; only its agent stopped.
    listed = subprocess.run([*stem_cmd(), "ls"], env=hive_env.env, capture_output=True, text=True, timeout=60)
    assert "alder" in listed.stdout and "running" in listed.stdout, listed.stdout + listed.stderr


def test_keys_typed_in_one_burst_act_in_the_order_they_were_typed(tmux, hive_env, repo):
    """Each burst is one tmux write, as a fast typist or an SSH link after a stall delivers keys: `/gam` opened
    the filter line and then the merge dialog (the `m` reached the list first); the keys after `:` were lost while
    the palette opened; ctrl+u in a field cleared the text typed after it; enter after the palette's search text
    ran the first command of the list shown before the search."""
    tmux.wait("Welcome to Stem", str(repo))
    spawned = subprocess.run(
        [*stem_cmd(), "spawn", "gamma", "--repo", str(repo)], env=hive_env.env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert spawned.returncode == 0, spawned.stderr
    tmux.wait("gamma", "running")
    tmux.keys("/", *"gam")
    tmux.wait("Colonies /gam")
    tmux.keys("Enter", "j", ":", *"stop")
    # The palette lists every command until its search for what was typed is in.
    screen = wait_for(lambda: (s := tmux.shows("🔎 stop", "Stop gamma")) and "Merge gamma" not in s and s, 30, "stop")
    assert "Colonies /gam " in screen, screen  # enter kept the filter, and the `j` was the list's
    tmux.keys("Escape")  # on its own: ESC and a key read together are alt+key
    wait_for(lambda: "🔎" not in tmux.screen(), 30, "the palette to close")
    tmux.keys("n", "C-u", *"x-y", "BSpace", "z", "Tab")

    def name() -> str | None:
        fields = [line.strip("│ ") for line in tmux.screen().splitlines()]
        return fields[fields.index("Name") + 1] if "Name" in fields else None

    try:
        wait_for(lambda: name() == "x-z", 30, "the name field to read x-z")
    except AssertionError:
        raise AssertionError(f"the name field reads {name()!r}:\n{tmux.screen()}") from None
    # Enter right after the search text acts on that text's results (it ran the first command listed before them).
    tmux.keys("Escape")
    wait_for(lambda: "New colony" not in tmux.screen(), 30, "the form to close")
    tmux.keys(":", *"stop all", "Enter")
    tmux.wait("Stop all colonies?", "Stop gamma, the one colony running?")


def test_the_new_colony_form_keeps_every_key_typed_in_one_burst(tmux, hive_env, repo):
    """Typed faster than the form opens and moves on, as a paste or a fast typist sends them: the keys after `n`
    are the name field's (the suggestion replaced), those after enter the next field's, and ctrl+s spawns with
    everything typed before it."""
    tmux.wait("Welcome to Stem", str(repo))
    tmux.keys("n", *"quick-one", "C-s")  # one write: the form has not even drawn when most of it arrives
    tmux.wait("quick-one", "running", "back to panels", timeout=60)  # its terminal has the focus
    tmux.keys("C-]")
    tmux.wait("stop/start")
    tmux.keys("n", *"second", "Enter", *"nowhere", "C-s")  # the repository field gets "nowhere"
    # The error names the whole path, so where its line wraps in the dialog depends on the temporary folder's name:
    # its words are looked for across the wrap (the dialog's and the panels' borders between them).
    said = re.compile(r"nowhere[\s│]+is[\s│]+not[\s│]+a[\s│]+directory")

    def refused() -> str | None:
        text = tmux.screen()
        return text if "New colony" in text and said.search(text) else None

    screen = wait_for(refused, 30, "the form saying the repository is not a directory")
    fields = [line.strip("│ ") for line in screen.splitlines()]
    assert fields[fields.index("Name") + 1] == "second", screen
    assert fields[fields.index("Repository") + 1] == "nowhere", screen
    listed = subprocess.run([*stem_cmd(), "ls"], env=hive_env.env, capture_output=True, text=True, timeout=60)
    assert "quick-one" in listed.stdout and "second" not in listed.stdout, listed.stdout
