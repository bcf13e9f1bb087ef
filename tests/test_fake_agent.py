"""The scripted fake agent behaves like an interactive CLI under a real PTY (ptyprocess), as other tests rely on."""

from __future__ import annotations

import errno
import os
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest
from ptyprocess import PtyProcess

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")
PROMPT = b"fake-agent> "
TIMEOUT = 10.0


class Session:
    """The fake agent in a PTY, with pexpect-like waiting on its output."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None, size: tuple[int, int] = (24, 80)):
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color", "LANG": "C.UTF-8"}
        self.proc = PtyProcess.spawn(
            [sys.executable, str(FAKE_AGENT), *args], cwd=str(cwd), env={**base, **(env or {})}, dimensions=size
        )
        self.output = b""
        self.pos = 0  # where the next expect() starts looking
        self.eof = False

    def _read(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; last output: {self.output[-600:]!r}")
        ready, _, _ = select.select([self.proc.fd], [], [], remaining)
        if not ready:
            return
        try:
            data = os.read(self.proc.fd, 65536)
        except OSError as e:  # Linux reports a closed PTY as EIO
            if e.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self.eof = True
        self.output += data

    def expect(self, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        """Wait until `needle` appears after the last match; return what came before it."""
        deadline = time.monotonic() + timeout
        while (at := self.output.find(needle, self.pos)) < 0:
            if self.eof:
                raise AssertionError(f"exited before {needle!r}; output: {self.output[-600:]!r}")
            self._read(deadline)
        before = self.output[self.pos : at]
        self.pos = at + len(needle)
        return before

    def command(self, line: str) -> None:
        self.proc.write(line.encode() + b"\r")

    def exit_code(self, timeout: float = TIMEOUT) -> int:
        """Read to the end of output, then reap the process."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._read(deadline)
        code = self.proc.wait()
        assert isinstance(code, int)
        return code


@pytest.fixture
def start(tmp_path: Path) -> Iterator[type[Session]]:
    sessions: list[Session] = []

    class Started(Session):
        def __init__(self, *args: str, **kw: object) -> None:
            kw.setdefault("cwd", tmp_path)
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            sessions.append(self)

    yield Started
    for s in sessions:
        if s.proc.isalive():
            s.proc.terminate(force=True)


def test_banner_is_coloured_then_prompt(start: type[Session]) -> None:
    agent = start()
    banner = agent.expect(PROMPT)
    assert b"Fake Agent" in banner
    assert b"\x1b[1;38;5;208m" in banner  # SGR colour, as real agents draw


def test_typed_line_is_echoed_by_tty_then_answered(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("hello there")
    # The tty echoes what was typed (and turns Enter into CR LF); the program then answers on its own line.
    assert agent.expect(b"echo: hello there\r\n") == b"hello there\r\n"
    agent.expect(PROMPT)


def test_bell(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("bell")
    assert b"\x07" in agent.expect(b"bell\r\n" + PROMPT)


def test_size_follows_setwinsize_and_sigwinch_is_reported(start: type[Session]) -> None:
    agent = start(size=(24, 80))
    agent.expect(PROMPT)
    agent.command("size")
    agent.expect(b"size: 80x24\r\n")
    agent.expect(PROMPT)
    agent.proc.setwinsize(30, 100)
    agent.expect(b"resized: 100x30")
    agent.command("size")
    agent.expect(b"size: 100x30\r\n")


def test_exit_code(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("exit 3")
    agent.expect(b"echo: exit 3")
    assert agent.exit_code() == 3


def test_eof_exits_zero(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.proc.sendeof()
    agent.expect(b"bye")
    assert agent.exit_code() == 0


def test_arguments(start: type[Session]) -> None:
    agent = start("--continue", "--task", "fix the 'login' bug")
    agent.expect(b"resumed\r\n")
    agent.expect(b"task: fix the 'login' bug\r\n")
    agent.expect(PROMPT)
    quitter = start("--exit-after-banner", "5")
    assert b"Fake Agent" in quitter.expect(b"\n")
    assert quitter.exit_code() == 5
    assert PROMPT not in quitter.output


def test_write_creates_file_relative_to_cwd(start: type[Session], tmp_path: Path) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("write src/notes.txt two words")
    agent.expect(b"wrote src/notes.txt\r\n")
    assert (tmp_path / "src" / "notes.txt").read_text() == "two words"


def test_ask_waits_for_an_answer(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("ask")
    agent.expect(b"Do you want to proceed? (y/n) ")
    agent.command("y")
    agent.expect(b"approved\r\n")
    agent.expect(PROMPT)
    agent.command("ask")
    agent.expect(b"(y/n) ")
    agent.command("nope")
    agent.expect(b"declined\r\n")


def test_flood_prints_every_line(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("flood 3000")
    text = agent.expect(PROMPT)
    numbered = [ln for ln in text.split(b"\r\n") if ln.startswith(b"line ")]
    assert len(numbered) == 3000
    assert numbered[0].startswith(b"line 000001 ") and numbered[-1].startswith(b"line 003000 ")


def test_env_and_colors(start: type[Session]) -> None:
    agent = start(env={"COLONY_DB": "/tmp/colony.db"})
    agent.expect(PROMPT)
    agent.command("env COLONY_DB")
    agent.expect(b"env COLONY_DB=/tmp/colony.db\r\n")
    agent.command("env NOPE")
    agent.expect(b"env NOPE is unset\r\n")
    agent.command("color")
    agent.expect(b"echo: color\r\n")
    line = agent.expect(PROMPT)
    assert b"\x1b[31m" in line and b"\x1b[38;5;208m" in line and b"\x1b[38;2;255;105;180m" in line


def test_ctrl_c_interrupts_a_command_not_the_agent(start: type[Session]) -> None:
    agent = start()
    agent.expect(PROMPT)
    agent.command("sleep 60")
    agent.expect(b"echo: sleep 60\r\n")
    agent.proc.write(b"\x03")
    agent.expect(b"interrupted\r\n" + PROMPT, timeout=5)
    agent.command("exit 0")
    assert agent.exit_code() == 0


def test_clear_and_cursor_render_as_a_terminal_shows_them(start: type[Session]) -> None:
    agent = start(size=(24, 80))
    agent.expect(PROMPT)
    agent.command("clear")
    agent.expect(b"\x1b[2J\x1b[H" + PROMPT)
    agent.command("cursor")
    agent.expect(b"cursor: restored\r\n" + PROMPT)

    screen = pyte.Screen(80, 24)
    pyte.ByteStream(screen).feed(agent.output)
    rows = [row.rstrip() for row in screen.display]
    assert rows[:5] == ["fake-agent> cursor", "echo: cursor", "cursor: restored", "fake-agent>", " " * 9 + "[cursor]"]
    assert (screen.cursor.y, screen.cursor.x) == (3, len(PROMPT))
