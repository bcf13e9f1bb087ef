"""Synchronized output (mode 2026): rows an agent changes inside a frame are published when the frame ends, never
half drawn, whether to the UI in the same process (ScreenChanged) or to a colony host's clients (rows messages);
a frame that never ends is shown after its timeout."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from helpers import FAKE_AGENT_PATH, make_repo, run_stem, until

from core import netns, screen_queries
from core.agent import AgentSession
from core.events import Event, ScreenChanged
from core.host.mirror import ScreenMirror
from core.host.paths import HostPaths
from core.host.protocol import Connection, Keys, Rows, Snapshot

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
FAKE_AGENT = [sys.executable, str(FAKE_AGENT_PATH)]
# Begins a frame and never ends it.
STUCK = [sys.executable, "-c", "import os,sys;os.write(1,b'\\x1b[?2026hstuck frame\\r\\n');sys.stdin.read()"]


def half_drawn(lines: list[str]) -> list[str]:
    """The frames a screen shows begun but not ended (the fake agent's `frames`: "frame N begins", "frame N ends")."""
    text = "\n".join(lines)
    return [
        line.split()[1]
        for line in lines
        if line.startswith("frame ") and "begins" in line and f"frame {line.split()[1]} ends" not in text
    ]


@pytest.fixture
def host_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions enter this process's own namespace instead of a colony's."""
    monkeypatch.setattr(netns, "open_netns", lambda _name: os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))


async def _session(argv: list[str], seen: list[list[str]]) -> AgentSession:
    def emit(event: Event) -> None:
        if isinstance(event, ScreenChanged):
            seen.append(session.screen.text())  # what a UI would draw now

    session = AgentSession(argv, netns_name="host", cwd=HERE, env=dict(os.environ), colony="t", emit=emit)
    session.start()
    return session


def test_a_frame_is_published_whole(host_namespace, monkeypatch: pytest.MonkeyPatch) -> None:
    # A long timeout: the frame's end, not the timeout, must be what publishes it, however slow the machine.
    monkeypatch.setattr(screen_queries, "FRAME_TIMEOUT", 30.0)

    async def scenario() -> None:
        seen: list[list[str]] = []
        session = await _session(FAKE_AGENT, seen)
        try:
            await until(lambda: any("fake-agent> " in "".join(s) for s in seen), 10, "the prompt")
            session.write(b"frames 5\r")
            await until(lambda: any("frames done" in "".join(s) for s in seen), 10, "the frames")
        finally:
            await session.stop(grace=1.0)
        shown = [s for s in seen if any(line.startswith("frame ") for line in s)]
        assert shown, "no frame was published"
        for lines in shown:
            assert not half_drawn(lines), f"a frame was published half drawn: {lines}"

    asyncio.run(scenario())


def test_a_frame_that_never_ends_is_shown_after_its_timeout(host_namespace) -> None:
    async def scenario() -> None:
        seen: list[list[str]] = []
        session = await _session(STUCK, seen)
        try:
            await until(lambda: any("stuck frame" in "".join(s) for s in seen), 10, "the stuck frame after its timeout")
            assert session.screen.queries.frame_started is not None  # still inside it
        finally:
            await session.stop(grace=1.0)

    asyncio.run(scenario())


def test_a_hosts_clients_never_get_a_frame_half_drawn(hive_env, tmp_path) -> None:
    repo = make_repo(tmp_path / "repo")
    agent = f"{sys.executable} {FAKE_AGENT_PATH}"
    assert run_stem(hive_env.env, "spawn", "frames", "--repo", str(repo), "--agent", agent).returncode == 0

    async def scenario() -> None:
        socket = HostPaths(hive_env.home / "colonies" / "frames").socket
        mirror = ScreenMirror()
        async with await Connection.open(socket, "script") as conn:
            updates = conn.updates()
            await conn.subscribe("screen")
            first = await anext(updates)
            assert isinstance(first, Snapshot)
            mirror.apply(first)
            await conn.request(Keys(b"frames 30\r"))
            async for msg in updates:
                if isinstance(msg, Rows):
                    mirror.apply(msg)
                    lines = mirror.text()
                    assert not half_drawn(lines), f"a rows message showed a frame half drawn: {lines}"
                    if any("frames done" in line for line in lines):
                        return

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        run_stem(hive_env.env, "stop", "frames")
