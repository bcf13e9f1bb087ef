"""The agent in a PTY inside a real colony: screen, input, resize, terminal queries, activity, exit, stop, and a
flooding agent that must not starve another colony's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from helpers import FAKE_AGENT_PATH

from core import netns, procs
from core.agent import AgentSession, choose_argv, encode_key
from core.events import AgentActivity, Event, ScreenChanged
from core.hive import Hive
from core.settings import AgentPreset, Settings, resolve_agent, user_shell

pytestmark = pytest.mark.root

T = TypeVar("T")
FAKE_AGENT = [sys.executable, str(FAKE_AGENT_PATH)]
PROMPT = "fake-agent> "
TIMEOUT = 10.0


class Recorder:
    """The sessions' `emit`: keeps every event and wakes whoever waits for a condition."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.hooks: list[Callable[[Event], None]] = []  # run as each event is emitted, to see that moment
        self._changed: dict[str | None, asyncio.Event] = {}

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        for hook in self.hooks:
            hook(event)
        for key in (None, event.colony):
            if key in self._changed:
                self._changed[key].set()

    async def until(
        self, predicate: Callable[[], T], timeout: float = TIMEOUT, what: str = "condition", colony: str | None = None
    ) -> T:
        """Re-check `predicate` after every event (of `colony`, if given) until it is truthy; fail after
        `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = self._changed.setdefault(colony, asyncio.Event())
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def activities(self, colony: str) -> list[AgentActivity]:
        return [e for e in self.events if isinstance(e, AgentActivity) and e.colony == colony]

    def screen_events(self, colony: str) -> list[ScreenChanged]:
        return [e for e in self.events if isinstance(e, ScreenChanged) and e.colony == colony]


class Colonies:
    """An in-process hive with some running colonies, and agent sessions in them wired as the Hive would."""

    def __init__(self, hive: Hive) -> None:
        self.hive = hive
        self.recorder = Recorder()
        self.sessions: list[AgentSession] = []

    def agent(self, name: str, argv: list[str] | None = None, **options: object) -> AgentSession:
        rec = self.hive.get(name)
        argv = argv or FAKE_AGENT
        registry = self.hive.registry
        session = AgentSession(
            argv,
            netns_name=rec.netns,
            cwd=rec.worktree,
            env=self.hive.env_for(rec),
            colony=name,
            emit=self.recorder,
            record_process=lambda pid, start: registry.add_process(name, pid, start, "agent", argv),
            forget_process=registry.remove_process,
            **options,  # type: ignore[arg-type]
        )
        session.start()
        self.sessions.append(session)
        return session

    async def shows(self, session: AgentSession, text: str, timeout: float = TIMEOUT) -> list[str]:
        """Wait until `text` is on the session's screen; return the screen's rows."""

        def found() -> list[str] | None:
            rows = session.screen.text()
            return rows if any(text in row for row in rows) else None

        return await self.recorder.until(found, timeout, f"{text!r} on {session.colony}'s screen", session.colony)

    async def activity(self, session: AgentSession, activity: str, timeout: float = TIMEOUT) -> None:
        await self.recorder.until(
            lambda: session.activity == activity, timeout, f"{session.colony} {activity}", session.colony
        )


@contextlib.asynccontextmanager
async def colonies(hive_env, repo: Path, *names: str) -> AsyncIterator[Colonies]:
    hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool, hosts=False)
    world = Colonies(hive)
    try:
        for name in names:
            await hive.spawn(name, repo)
        yield world
    finally:
        for session in world.sessions:
            await session.stop(grace=1.0)
        await hive.close()


def row_of(rows: list[str], prefix: str) -> int:
    return next(y for y, row in enumerate(rows) if row.startswith(prefix))


def reaped(pid: int) -> bool:
    """True if `pid` is no child of ours any more: neither running nor a zombie waiting to be reaped."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


# ---------------------------------------------------------------------------------------------------------


def test_agent_runs_in_the_colony_and_draws_its_screen(hive_env, repo):
    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha")
            rec = world.hive.get("alpha")
            await world.shows(session, PROMPT)
            assert session.pid is not None
            # Inside the colony: its network namespace, its worktree, its environment; recorded for `stem stop`.
            assert os.stat(f"/proc/{session.pid}/ns/net").st_ino == netns.inode(rec.netns)
            assert [p.pid for p in world.hive.registry.processes("alpha")] == [session.pid]
            session.write(b"pwd\r")
            await world.shows(session, f"cwd: {rec.worktree}")
            session.write(b"env TERM\r")
            await world.shows(session, "env TERM=xterm-256color")
            session.write(b"env COLORTERM\r")
            await world.shows(session, "env COLORTERM=truecolor")

            session.write(b"hello\r")
            await world.shows(session, "echo: hello")

            session.write(b"color\r")
            rows = await world.shows(session, "bold-underline")
            y = row_of(rows, "red ")
            line, cells = rows[y], session.screen.buffer[y]

            def cell(word: str):
                return cells[line.index(word)]

            assert cell("red").fg == "red"
            assert cell("bright-green").fg == "brightgreen"
            assert cell("orange-256").fg == "ff8700"
            assert cell("blue-bg-256").bg == "005f87"
            assert cell("pink-truecolor").fg == "ff69b4"
            assert cell("bold-underline").bold and cell("bold-underline").underscore
            assert cell("bold-underline").fg == "default"

            # From a cleared screen, so nothing scrolls: `cursor` writes at row 5 column 10 (1-based) over
            # the help text, then goes back to where it was.
            session.write(b"clear\r")
            await world.recorder.until(lambda: session.screen.text()[0].rstrip() == PROMPT.rstrip(), what="clear")
            session.write(b"help\r")
            await world.shows(session, "exit N          exit with code N")
            session.write(b"cursor\r")
            rows = await world.shows(session, "cursor: restored")
            assert rows[4][9:17] == "[cursor]"
            restored = row_of(rows, "cursor: restored")
            assert rows[restored - 1].startswith("echo: cursor")
            await world.recorder.until(
                lambda: session.screen.text()[restored + 1].startswith(PROMPT), what="prompt after cursor"
            )
            assert (session.screen.cursor.x, session.screen.cursor.y) == (len(PROMPT), restored + 1)

    asyncio.run(scenario())


def test_resize_reaches_the_program_and_the_screen(hive_env, repo):
    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha")
            await world.shows(session, PROMPT)
            assert (session.screen.columns, session.screen.lines) == (120, 40)
            session.write(b"size\r")
            await world.shows(session, "size: 120x40")
            before = len(world.recorder.screen_events("alpha"))
            session.resize(100, 30)
            assert (session.screen.columns, session.screen.lines) == (100, 30)
            # The UI is told at once that every row may have changed.
            assert world.recorder.screen_events("alpha")[before].rows == frozenset(range(30))
            await world.shows(session, "resized: 100x30")
            session.write(b"size\r")
            await world.shows(session, "size: 100x30")
            assert all(len(row) == 100 for row in session.screen.text())

    asyncio.run(scenario())


def test_activity_working_idle_attention(hive_env, repo):
    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha", attention=("Do you want to proceed",), idle_after=0.3)
            await world.shows(session, PROMPT)
            await world.activity(session, "idle")

            # The bell asks for attention; any input from the user answers it.
            session.write(b"bell\r")
            await world.activity(session, "attention")
            session.write(b"x")
            assert session.activity == "working"
            session.write(b"\x15")  # ctrl+u: forget the x
            await world.activity(session, "idle")

            # A known approval prompt asks for attention; answering it clears it.
            session.write(b"ask\r")
            await world.activity(session, "attention")
            assert any("Do you want to proceed? (y/n)" in row for row in session.screen.text())
            session.write(b"y\r")
            assert session.activity == "working"
            await world.shows(session, "approved")
            await world.activity(session, "idle")
            # The answered prompt is still on screen; a second prompt is new and asks again.
            session.write(b"ask\r")
            await world.activity(session, "attention")
            session.write(b"n\r")
            await world.shows(session, "declined")
            await world.activity(session, "idle")

            seen = [e.activity for e in world.recorder.activities("alpha")]
            # Events only on change; whether a typed command's echo shows "working" before its bell or prompt
            # arrives depends on how the output is split into reads, so "working" is checked above instead.
            assert all(a != b for a, b in itertools.pairwise(seen))
            assert seen[0] == "working"
            assert [a for a in seen if a != "working"] == ["idle", "attention"] + ["idle", "attention"] * 2 + ["idle"]

    asyncio.run(scenario())


PROBE = r"""
import os, tty
tty.setraw(0)

def ask(query, end):
    os.write(1, query)
    got = b""
    while not got.endswith(end):
        got += os.read(0, 1)
    return got.replace(b"\x1b", b"ESC").replace(b"\r", b"<CR>")

os.write(1, b"abc")
dsr = ask(b"\x1b[6n", b"R")
da = ask(b"\x1b[c", b"c")
os.write(1, b"\r\nDSR " + dsr + b" DA " + da + b"\r\n\x1b[?2004hpaste> ")
pasted = ask(b"", b"\x1b[201~")
os.write(1, b"\r\nPASTE " + pasted + b"\r\n")
"""


def test_terminal_queries_are_answered_and_pastes_bracketed(hive_env, repo):
    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha", [sys.executable, "-c", PROBE])
            # The cursor was after "abc" on the first row: DSR answers row 1, column 4 (1-based).
            await world.shows(session, "DSR ESC[1;4R DA ESC[?6c")
            await world.shows(session, "paste> ")
            assert session.screen.bracketed_paste
            session.paste("one\ntwo\x1b[201~three")
            # Newlines arrive as CR, like a terminal's paste; an end marker inside the text cannot end it early.
            await world.shows(session, "PASTE ESC[200~one<CR>twothreeESC[201~")
            assert await session.wait() == 0

    asyncio.run(scenario())


def test_exit_code_is_recorded_and_the_program_reaped(hive_env, repo):
    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha")
            await world.shows(session, PROMPT)
            pid = session.pid
            assert pid is not None
            session.write(b"exit 7\r")
            assert await session.wait() == 7
            assert session.exit_code == 7 and session.activity == "exited"
            assert world.recorder.activities("alpha")[-1] == AgentActivity("alpha", "exited", 7)
            # The exit was announced after the program's last output reached the screen.
            assert any(row.startswith("echo: exit 7") for row in session.screen.text())
            assert reaped(pid)
            assert world.hive.registry.processes("alpha") == []
            assert pid not in procs._children
            # Input to an exited agent goes nowhere, quietly; stopping it again is harmless.
            session.write(b"more\r")
            assert await session.stop() == 7

    asyncio.run(scenario())


STUBBORN = r"""
import os, signal, subprocess, sys
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "1000"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
print(f"stubborn {child.pid}", flush=True)
signal.pause()
"""


def test_stop_ends_the_whole_group_even_when_it_ignores_sigterm(hive_env, repo):
    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha", [sys.executable, "-c", STUBBORN])
            rows = await world.shows(session, "stubborn ")
            child = int(rows[row_of(rows, "stubborn ")].split()[1])
            pid = session.pid
            assert pid is not None and procs.alive(child)
            started = time.monotonic()
            assert await session.stop(grace=0.5) == -9
            assert time.monotonic() - started < 5
            assert world.recorder.activities("alpha")[-1] == AgentActivity("alpha", "exited", -9)
            assert reaped(pid)
            assert not procs.alive(child)
            assert procs.group_members(pid) == []
            assert world.hive.registry.processes("alpha") == []

    asyncio.run(scenario())


FLOOD_LINES = 400_000


def flood_text(first: int, last: int) -> str:
    return "".join(f"line {n:06d} the quick brown fox jumps over the lazy dog\n" for n in range(first, last + 1))


@pytest.mark.parametrize("producer", ["fake-agent", "cat"])
def test_a_flooding_agent_does_not_starve_another_colony(hive_env, repo, tmp_path, producer):
    """The fake agent floods from its prompt; `cat` writes the same text as fast as the PTY takes it and exits
    at once, so its screen also shows that output still in the PTY at exit is read before the exit counts."""
    lines = FLOOD_LINES

    async def scenario() -> None:
        async with colonies(hive_env, repo, "flood", "calm") as world:
            calm = world.agent("calm")
            await world.shows(calm, PROMPT)
            loop = asyncio.get_running_loop()
            if producer == "cat":
                text = tmp_path / "flood.txt"
                text.write_text(flood_text(1, lines) + PROMPT)
                at_exit: list[list[str]] = []
                world.recorder.hooks.append(
                    lambda e: at_exit.append(flood.screen.text()) if e == AgentActivity("flood", "exited", 0) else None
                )
                started = loop.time()
                flood = world.agent("flood", ["cat", str(text)])
            else:
                flood = world.agent("flood")
                await world.shows(flood, PROMPT)
                started = loop.time()
                flood.write(f"flood {lines}\r".encode())
            last = f"line {lines:06d} "

            def flood_done() -> bool:
                rows = flood.screen.text()
                return rows[-2].startswith(last) and rows[-1].rstrip() == PROMPT.rstrip()

            latencies: list[float] = []
            i = 0
            while not flood_done():
                i += 1
                sent = loop.time()
                calm.write(f"ping {i}\r".encode())
                echo = f"echo: ping {i}"
                await world.recorder.until(
                    lambda echo=echo: any(row.rstrip() == echo for row in calm.screen.text()),
                    timeout=5.0,
                    what=f"{echo!r} during the flood",
                    colony="calm",
                )
                latencies.append(loop.time() - sent)
            elapsed = loop.time() - started

            print(
                f"\n{producer}: {lines} lines in {elapsed:.2f}s; {len(latencies)} echoes from the calm colony: "
                f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; "
                f"{len(world.recorder.screen_events('flood'))} ScreenChanged events for the flood"
            )
            assert max(latencies) < 1.0
            assert len(latencies) >= 10
            # The flood's final screen is exactly its last lines and the prompt.
            expected = flood_text(lines - 38, lines).splitlines()
            assert [row.rstrip() for row in flood.screen.text()] == [*expected, PROMPT.rstrip()]
            # Screen events were coalesced to about one per frame, not one per read.
            assert len(world.recorder.screen_events("flood")) <= (elapsed + 1) * 60 + 20
            if producer == "cat":
                # The exit was announced only once everything cat wrote was on the screen.
                assert await flood.wait() == 0
                assert [[row.rstrip() for row in rows] for rows in at_exit] == [[*expected, PROMPT.rstrip()]]

    asyncio.run(scenario())


def test_missing_program_runs_the_shell_with_a_notice_and_resume_uses_the_resume_form(hive_env, repo, tmp_path):
    fake = " ".join(FAKE_AGENT)
    settings = Settings(
        path=tmp_path / "config.toml",
        agents={
            "ghost": AgentPreset("ghost", "stem-no-such-agent-7c1 {task}", resume="stem-no-such-agent-7c1 --continue"),
            "fake": AgentPreset("fake", f"{fake} {{task}}", resume=f"{fake} --continue"),
        },
    )
    ghost = resolve_agent("ghost", settings, None)
    notice = f"stem-no-such-agent-7c1 is not installed here: started {user_shell()} instead"
    assert choose_argv(ghost, resume=False) == ([user_shell()], notice)
    assert choose_argv(ghost, resume=True) == ([user_shell()], notice)
    resolved = resolve_agent("fake", settings, None)
    assert choose_argv(resolved, resume=False) == (FAKE_AGENT, None)
    assert choose_argv(resolved, resume=True) == ([*FAKE_AGENT, "--continue"], None)
    assert choose_argv(resolve_agent("shell", Settings(path=tmp_path / "c.toml"), None), resume=True) == (
        [user_shell()],
        None,
    )

    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha", "beta") as world:
            argv, shown = choose_argv(ghost, resume=False)
            shell = world.agent("alpha", argv, notice=shown)
            rows = await world.shows(shell, "is not installed here")
            assert rows[0].startswith(f"[stem] {notice}")
            shell.write(b"echo $((6 * 7))\r")
            await world.shows(shell, "42")

            argv, shown = choose_argv(resolved, resume=True)
            resumed = world.agent("beta", argv)
            await world.shows(resumed, "resumed")
            assert shown is None

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("key", "app_cursor", "expected"),
    [
        ("up", False, b"\x1b[A"),
        ("up", True, b"\x1bOA"),
        ("left", True, b"\x1bOD"),
        ("home", False, b"\x1b[H"),
        ("end", True, b"\x1bOF"),
        ("shift+up", True, b"\x1b[1;2A"),
        ("ctrl+right", False, b"\x1b[1;5C"),
        ("pageup", False, b"\x1b[5~"),
        ("pagedown", False, b"\x1b[6~"),
        ("delete", False, b"\x1b[3~"),
        ("insert", False, b"\x1b[2~"),
        ("ctrl+delete", False, b"\x1b[3;5~"),
        ("f1", False, b"\x1bOP"),
        ("f4", False, b"\x1bOS"),
        ("f5", False, b"\x1b[15~"),
        ("f12", False, b"\x1b[24~"),
        ("shift+f1", False, b"\x1b[1;2P"),
        ("tab", False, b"\t"),
        ("shift+tab", False, b"\x1b[Z"),
        ("enter", False, b"\r"),
        ("escape", False, b"\x1b"),
        ("backspace", False, b"\x7f"),
        ("ctrl+c", False, b"\x03"),
        ("ctrl+a", False, b"\x01"),
        ("ctrl+z", False, b"\x1a"),
        ("alt+b", False, b"\x1bb"),
        ("alt+enter", False, b"\x1b\r"),
        ("ctrl+alt+c", False, b"\x1b\x03"),
        ("alt+up", False, b"\x1b[1;3A"),
        ("a", False, b"a"),
        ("é", False, "é".encode()),
        ("hyper+q", False, b""),
        ("volume_up", False, b""),
    ],
)
def test_encode_key(key: str, app_cursor: bool, expected: bytes) -> None:
    assert encode_key(key, app_cursor) == expected


def test_tmux_inside_a_colony_keeps_a_pane_beside_one_that_scrolls(hive_env, repo, tmp_path):
    # tmux takes a terminal that says it is a VT420 (secondary DA 41) to have left and right margins (DECSLRM) and
    # rectangle fills (DECFRA), and then scrolls one of two side-by-side panes inside them. Stem has neither: it
    # scrolled whole rows, and the pane beside the one that scrolled went blank, its divider with it.
    server = str(tmp_path / "inner-tmux")  # its socket: a killed server leaves the file, removed with tmp_path
    left = "seq -f LEFT%g 1 5; exec sleep 600"
    right = "echo ready; read line; seq 1 100; exec sleep 600"  # scrolls once both panes are drawn
    argv = ["tmux", "-S", server, "-f", "/dev/null", "new-session", left, ";", "split-window", "-h", right]

    def panes(rows: list[str]) -> tuple[list[str], list[str]]:
        column = rows[-2].find("│")
        if column < 0:
            return [], []
        return [row[:column].rstrip() for row in rows[:-1]], [row[column:] for row in rows[:-1]]

    def drawn(session: AgentSession) -> bool:
        right_pane = panes(session.screen.text())[1]
        return bool(right_pane) and right_pane[-2].strip() == "│100" and right_pane[-3].strip() == "│99"

    async def scenario() -> None:
        async with colonies(hive_env, repo, "alpha") as world:
            session = world.agent("alpha", argv)
            try:
                await world.recorder.until(
                    lambda: panes(session.screen.text())[0][4:5] == ["LEFT5"] and "│ready" in session.screen.text()[0],
                    TIMEOUT,
                    "both panes",
                    "alpha",
                )
                session.write(b"\r")
                await world.recorder.until(lambda: drawn(session), TIMEOUT, "the right pane's last lines", "alpha")
                left_pane, right_pane = panes(session.screen.text())
                assert left_pane[:5] == [f"LEFT{i}" for i in range(1, 6)], session.screen.text()
                assert all(row.startswith("│") for row in right_pane), session.screen.text()  # the divider
            finally:
                ended = await world.hive.exec("alpha", ["tmux", "-S", server, "kill-server"])
                await asyncio.to_thread(ended.proc.wait, 10)
                world.hive.exec_finished(ended)

    asyncio.run(scenario())
