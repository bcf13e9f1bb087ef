"""End to end, as a user over SSH meets it: the real `stem` in tmux (which takes OSC 52 into its paste buffer, as a
terminal takes it into the clipboard). Text dragged over in the terminal is copied; the agent's own clipboard write
reaches the user's terminal; the agent's window title shows in its colony row."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import FAKE_AGENT_PATH, make_repo, run_stem, wait_for
from test_e2e_hosts import Panes
from test_e2e_tmux import stem_command

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
CSI = "\x1b["


@pytest.fixture
def ui(hive_env, tmp_path):
    repo = make_repo(tmp_path / "repo")
    agent = f"{sys.executable} {FAKE_AGENT_PATH}"
    spawned = run_stem(hive_env.env, "spawn", "clip", "--repo", str(repo), "--agent", agent)
    assert spawned.returncode == 0, spawned.stderr
    panes = Panes(dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path)))
    try:
        panes.start("ui", stem_command(), repo)
        panes("set-option", "-g", "set-clipboard", "on")  # OSC 52 from the pane fills tmux's paste buffer
        panes.wait_in("ui", "fake-agent>")
        panes("send-keys", "-t", "ui", "Enter")
        panes.wait_in("ui", "back to panels")
        yield panes
    finally:
        panes.kill()
        run_stem(hive_env.env, "stop", "clip")


def buffer(panes: Panes) -> str:
    return panes("show-buffer", check=False)


def test_copy_over_ssh_and_the_agents_title(ui: Panes) -> None:
    ui.type("ui", "copy from the agent")
    wait_for(lambda: buffer(ui) == "from the agent", 20, "the agent's OSC 52 in tmux's buffer")

    # The title in the colony's row, in the side panel (the first 44 columns), not only in the terminal.
    ui.type("ui", "title fixing the parser")
    wait_for(
        lambda: any(0 <= line.find("fixing the parser") < 44 for line in ui.pane("ui").splitlines()),
        20,
        "the title in the colonies panel",
    )

    # A drag over "unknown command" in the terminal, as the user's terminal reports it (SGR, from 1).
    ui.type("ui", "hello")
    screen = ui.wait_in("ui", "unknown command: hello")
    y, line = next((y, line) for y, line in enumerate(screen.splitlines()) if "unknown command: hello" in line)
    x = line.index("unknown command: hello") + 1
    end = x + len("unknown command") - 1
    ui("send-keys", "-t", "ui", "-l", f"{CSI}<0;{x};{y + 1}M{CSI}<32;{end};{y + 1}M{CSI}<0;{end};{y + 1}m")
    wait_for(lambda: buffer(ui) == "unknown command", 20, "the selection in tmux's buffer")
