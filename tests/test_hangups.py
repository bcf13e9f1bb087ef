"""Stem when its terminal goes away (an SSH drop: the real `stem` in a tmux pane whose server is killed) or it is
killed: the colonies run on, nothing is left half made, and the next command or UI sees the truth."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import make_repo, run_stem, use_fake_agent, wait_for
from test_e2e_tmux import Tmux, stem_command
from test_e2e_tmux_ui import stem_pid
from test_host import SERVICE, host_pid

from core.procs import alive

pytestmark = pytest.mark.root


def listed(hive_env) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}


def test_a_ui_whose_terminal_hung_up_quits_though_it_ignores_sighup(hive_env, tmp_path):
    """Under nohup (or a shell that ignores SIGHUP) the hang-up itself is all a UI learns of an SSH drop: its
    terminal reads end of input, at once and for ever. It quits, rather than spin on it; the colony runs on."""
    use_fake_agent(hive_env.env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    assert run_stem(hive_env.env, "spawn", "solo", "--repo", str(repo)).returncode == 0
    # A cold UI: the same driver runs forked from the warm process, only its start is less predictable.
    tmux = Tmux(dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path), STEM_WARM="0"))
    ui: int | None = None
    try:
        tmux(
            "new-session",
            "-d",
            "-s",
            "stem",
            "-x",
            "120",
            "-y",
            "35",
            "-c",
            str(repo),
            f"trap '' HUP; {stem_command()}",
        )
        tmux.wait("solo", "running", "fake-agent>", timeout=60)
        ui = stem_pid(tmux)
        host = host_pid(hive_env, "solo")
        tmux.kill()  # the terminal hangs up
        wait_for(lambda: not alive(ui), 15, "the UI to quit once its terminal is gone")
    finally:
        tmux.kill()
        if ui is not None and alive(ui):
            os.kill(ui, signal.SIGKILL)
    after = listed(hive_env)["solo"]
    assert after["state"] == "running" and after["services"] == {"web": "ready"}, after
    assert host is not None and host_pid(hive_env, "solo") == host  # the same host: it never went
