"""The real `stem` in a tmux pane, read as a real terminal shows it: a service's own colours in the Logs tab, and
SIGTERM of the UI (the terminal restored, exit status 0, the colony left running)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from helpers import git, make_repo, stem_cmd, wait_for
from test_e2e_tmux import COLS, Tmux, stem_in_tmux

pytestmark = pytest.mark.root

# A service that colours its output as many do: SGR with several parameters, 256 colours, sgr0 (ESC ( B), bold.
COLOURED = r"""
import sys, time
for line in ["\x1b[1;32mINFO\x1b[0m listening", "\x1b[0;33mWARN\x1b[0m slow start", "\x1b[38;5;208morange\x1b[39m",
             "\x1b(B\x1b[mafter sgr0", "\x1b[1m\x1b[34m==>\x1b[0m \x1b[1mDone\x1b[0m", "tab\there"]:
    print(line, flush=True)
print("\x1b[31mred on stderr\x1b[0m", file=sys.stderr, flush=True)
time.sleep(3600)
"""


@pytest.fixture
def pane(hive_env, tmp_path):
    # In the repository: a colony sees its worktree, not the test's folder.
    repo = make_repo(tmp_path / "repo", colony_toml=f'[services.web]\ncommand = "{sys.executable} -u coloured.py"\n')
    (repo / "coloured.py").write_text(COLOURED)
    git(repo, "add", "coloured.py")
    git(repo, "commit", "-q", "-m", "a coloured service")
    with stem_in_tmux(hive_env, repo, tmp_path) as server:
        yield server, repo


def stem_pid(tmux: Tmux) -> int:
    """The stem process: the child of the pane's shell."""
    shell = tmux("display", "-p", "-t", "stem", "#{pane_pid}").strip()
    children = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    return int(children[0])


def test_coloured_service_lines_keep_the_border_in_place_and_sigterm_restores_the_terminal(pane, hive_env):
    tmux, _repo = pane
    tmux.wait("Welcome to Stem")
    tmux.keys("n")
    tmux.wait("New colony")
    tmux.keys("C-s")
    tmux.wait("fake-agent>", timeout=60)
    tmux.keys("C-]")
    tmux.wait("stop/start")
    tmux.keys("]")
    screen = tmux.wait("INFO listening", "after sgr0", "==> Done", "red on stderr", "tab     here", timeout=30)
    # As the terminal drew them: no escape sequence printed, and every row of the main view ends at its border,
    # nothing drawn in the wrong column.
    rows = [row for row in screen.splitlines() if " web " in row]
    assert len(rows) == 7, screen
    for row in rows:
        assert "\x1b" not in row and "[" not in row.split(" web ", 1)[1], row
        assert row.rstrip().endswith("│") and len(row.rstrip()) == COLS, row
        assert row.count("│") == 4, f"a stray border in {row!r}"  # the sidebar's two and the main view's two
    assert tmux("display", "-p", "-t", "stem", "#{alternate_on}").strip() == "1"

    os.kill(stem_pid(tmux), signal.SIGTERM)
    screen = tmux.wait("stem exited with status", history=True)
    assert "stem exited with status 0" in screen, screen
    assert "Traceback" not in screen, screen
    wait_for(lambda: tmux("display", "-p", "-t", "stem", "#{alternate_on}").strip() == "0", 10, "the main screen")
    listed = subprocess.run([*stem_cmd(), "ls"], env=hive_env.env, capture_output=True, text=True, timeout=60)
    assert "alder" in listed.stdout and "running" in listed.stdout, listed.stdout + listed.stderr
