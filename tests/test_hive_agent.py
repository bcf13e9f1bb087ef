"""The agent inside a colony, through the Hive: preset, task, screen, input, exit code, resume on start."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from helpers import FAKE_AGENT_PATH, run_stem

from core.events import AgentActivity
from core.hive import Hive
from core.settings import load_settings

pytestmark = pytest.mark.root

FAKE = FAKE_AGENT_PATH


def fake_preset(tmp_path: Path, resume: str = "--continue") -> Path:
    """A config whose `fake` preset runs the fake agent with its task, and `resume` as its resume form's flags."""
    agent = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))}"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[agents.fake]\ncommand = "{agent} --task {{task}}"\nresume = "{agent} {resume}"\n'
        'attention = ["Do you want to proceed"]\n'
    )
    return config


async def screen_shows(hive: Hive, name: str, text: str, timeout: float = 10) -> list[str]:
    async def poll() -> list[str]:
        while True:
            session = hive.agent(name)
            if session is not None and any(text in row for row in session.screen.text()):
                return session.screen.text()
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


def test_agent_runs_with_its_task_takes_input_exits_and_resumes_on_start(hive_env, repo, tmp_path):
    settings = load_settings(fake_preset(tmp_path))

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, settings=settings)
        events = hive.subscribe()
        try:
            await hive.attach()
            rec = await hive.spawn("agent1", repo, agent="fake", task="fix the login bug")
            await screen_shows(hive, "agent1", "task: fix the login bug")
            await screen_shows(hive, "agent1", "fake-agent>")
            session = hive.agent("agent1")
            assert session is not None
            first_pid = session.pid
            assert first_pid is not None
            session.write(b"env COLONY_NAME\r")
            await screen_shows(hive, "agent1", "env COLONY_NAME=agent1")
            session.write(b"write made-by-agent.txt hi\r")
            await screen_shows(hive, "agent1", "wrote made-by-agent.txt")
            assert (Path(rec.worktree) / "made-by-agent.txt").read_text().strip() == "hi"
            session.write(b"ask\r")

            async def activity(state: str) -> AgentActivity:
                while True:
                    event = await events.get()
                    if isinstance(event, AgentActivity) and event.colony == "agent1" and event.activity == state:
                        return event

            await asyncio.wait_for(activity("attention"), 10)
            session.write(b"y\r")
            session.write(b"exit 3\r")
            exited = await asyncio.wait_for(activity("exited"), 10)
            assert exited.code == 3
            # `stem ls` in another shell sees what the owner reports.
            rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
            assert rows[0]["agent"] == "exited(3)"
            # start on the running colony brings the agent back in its resume form.
            await hive.start("agent1")
            await screen_shows(hive, "agent1", "resumed")
            agent = hive.agent("agent1")
            assert agent is not None and agent.pid is not None and agent.pid != first_pid
            pid = agent.pid
            await hive.stop("agent1")
            assert hive.agent("agent1") is None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_missing_agent_program_starts_the_shell_with_a_notice(hive_env, repo, tmp_path):
    from core.events import Notice

    config = tmp_path / "config.toml"
    config.write_text('[agents.ghost]\ncommand = "no-such-agent-cli {task}"\n')
    settings = load_settings(config)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, settings=settings)
        events = hive.subscribe()
        try:
            await hive.attach()
            await hive.spawn("bare", repo, agent="ghost")
            session = hive.agent("bare")
            assert session is not None
            seen = []
            while not events.empty():
                seen.append(events.get_nowait())
            notices = [e.message for e in seen if isinstance(e, Notice)]
            assert any("no-such-agent-cli" in m and "instead" in m for m in notices), notices
            session.write(b"echo shell-$COLONY_NAME\r")
            await screen_shows(hive, "bare", "shell-bare")
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_a_resume_form_with_nothing_to_resume_gets_the_agent_started_anew(hive_env, repo, tmp_path):
    """`claude --continue` in a colony whose agent never had a conversation prints "No conversation found to
    continue" and exits 1: `stem start` must not leave the colony with an agent that exited at once. The plain
    command starts in its place, with its task, and a notice says why."""
    from core.events import Notice

    settings = load_settings(fake_preset(tmp_path, resume="--continue --exit-after-banner 1"))

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, settings=settings)
        events = hive.subscribe()
        try:
            await hive.attach()
            await hive.spawn("again", repo, agent="fake", task="fix the login bug")
            await screen_shows(hive, "again", "fake-agent>")
            first = hive.agent("again")
            assert first is not None
            first.write(b"exit 0\r")

            async def exited() -> None:
                while True:
                    event = await events.get()
                    if isinstance(event, AgentActivity) and event.activity == "exited":
                        return

            await asyncio.wait_for(exited(), 10)
            await hive.start("again")  # the resume form, which finds nothing and exits 1

            async def notice() -> str:
                while True:
                    event = await events.get()
                    if isinstance(event, Notice) and "nothing to resume" in event.message:
                        return event.message

            said = await asyncio.wait_for(notice(), 15)
            assert "--continue --exit-after-banner 1 ended after" in said and "(exit 1)" in said, said

            # What a UI shows follows the new session by itself (no key sent): its task, not the resume's output.
            async def anew() -> None:
                while True:
                    session = hive.agent("again")
                    text = "\n".join(session.screen.text()) if session is not None else ""
                    if "task: fix the login bug" in text and "resumed" not in text:
                        return
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(anew(), 10)
            await screen_shows(hive, "again", "fake-agent>")
            session = hive.agent("again")
            assert session is not None
            session.write(b"env COLONY_NAME\r")
            await screen_shows(hive, "again", "env COLONY_NAME=again")
        finally:
            await hive.close()

    asyncio.run(scenario())
