"""`stem attach`: the release key, a drawn snapshot read back by a real screen, `attach()` on a real PTY, and the
real `stem attach NAME` in a tmux pane against a small in-test colony host (a real StemScreen behind the
protocol's own server helpers), read back with capture-pane as a user would see it."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import termios
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import HiveEnv, free_pool
from helpers import hung, make_repo, run_stem, scripted_agent, stem_cmd, until, wait_for
from recordings import streams
from test_host import fake_agent_config, host_pid

from core import claims
from core.host.forker import ForkerPaths
from core.host.launch import wait_exit
from core.host.paths import HostPaths
from core.host.protocol import (
    AgentInfo,
    Bye,
    ColonyInfo,
    Connection,
    ConnectionClosed,
    Keys,
    Message,
    Output,
    Reply,
    Resize,
    Snapshot,
    State,
    Subscribe,
    accept_client,
    listen,
    pack,
    read_message,
    screen_state,
    unpack,
    write_message,
)
from core.lifecycle import ColonyState
from core.locations import HiveLayout
from core.registry import Registry
from core.screen import StemScreen
from stem.attach import DEFAULT_RELEASE, ReleaseKey, attach, release_key, render_snapshot

ROOT = Path(__file__).resolve().parents[1]
CSI = "\x1b["
T = TypeVar("T")

# --------------------------------------------------------------------------------------------- the release key


@pytest.mark.parametrize(
    ("spec", "byte", "warns"),
    [
        (None, b"\x1d", False),
        ("ctrl+right_square_bracket", b"\x1d", False),
        ("ctrl+]", b"\x1d", False),
        ("ctrl+g", b"\x07", False),
        ("f5, ctrl+backslash", b"\x1c", False),  # the first key with a one-byte form
        ("f5", b"\x1d", True),
        ("escape", b"\x1d", True),  # it begins every escape sequence: never a release key
        ("alt+x", b"\x1d", True),
    ],
)
def test_the_release_key_is_the_byte_of_the_users_remap(spec: str | None, byte: bytes, warns: bool) -> None:
    got, warning = release_key(spec)
    assert got == byte
    assert (warning is not None) == warns
    if warning:
        assert "\n" not in warning and "ctrl+]" in warning and repr(spec) in warning


def test_the_release_key_is_found_as_its_byte_or_as_the_chord_an_enhanced_keyboard_reports() -> None:
    release = ReleaseKey(DEFAULT_RELEASE)
    assert release.name == "ctrl+]"
    assert release.find(b"abc\x1ddef") == 3
    assert release.find(b"abc") == -1
    assert release.find(b"ab\x1b[93;5u") == 2  # kitty keyboard protocol
    assert release.find(b"\x1b[93;69:1u") == 0  # ... with caps lock on, a press event
    assert release.find(b"\x1b[93;5:3u") == -1  # a key release event is not the chord
    assert release.find(b"\x1b[93;6u") == -1  # ctrl+shift+]
    assert release.find(b"x\x1b[27;5;93~") == 1  # xterm modifyOtherKeys
    assert ReleaseKey(b"\x07").find(b"\x1b[103;5u") == 0
    assert ReleaseKey(b"\x07").name == "ctrl+g"


# --------------------------------------------------------------------------------------------- drawing snapshots


def styled_modes() -> bytes:
    out = [f"{CSI}1mbold{CSI}0m {CSI}3mitalic{CSI}0m {CSI}4munder{CSI}0m {CSI}9mstrike{CSI}0m "]
    out.append(f"{CSI}7mreverse{CSI}0m {CSI}5mblink{CSI}0m {CSI}1;3;4;9;7;5mall{CSI}0m\r\n")
    out.append(
        f"{CSI}31;42mansi{CSI}93;105mbright{CSI}38;5;208;48;5;17m256{CSI}38;2;1;2;3;48;2;250;128;0mtrue{CSI}0m\r\n"
    )
    out.append(f"x\u0301 q\u0308\u0323 combining {CSI}33m中文{CSI}0m wide\r\n")
    out.append(f"{CSI}?1h{CSI}?2004h{CSI}?1002h{CSI}?1006h\x1b={CSI}?1004h\x1b]2;a title\x07{CSI}12;30H{CSI}?25l")
    return "".join(out).encode()


DRAWN = {
    "styled_modes": styled_modes(),
    "wide_and_combining": streams.wide_and_combining(),
    "styled_runs": streams.styled_runs(),
    "colored_logs": streams.colored_logs(300),
    "alternate_screen": streams.alternate_screen(),
    "cursor_movement": streams.cursor_movement(),
    "fuzz": streams.fuzz(7),
    "reverse_screen": styled_modes() + f"{CSI}?5h{CSI}2;5Hon a reversed screen".encode(),
    "agent_hints": streams.agent_hints(),
    "agent_hints_reversed": streams.agent_hints() + f"{CSI}?5h".encode(),
    # Real programs (tests/recordings): the agents, and full-screen programs with line drawing and many colours
    **{
        name: (Path(__file__).parent / "recordings" / f"{name}.bin").read_bytes()
        for name in ("claude", "codex", "textual", "htop", "mc", "vim_syntax", "tmux")
    },
}


@pytest.mark.parametrize("name", list(DRAWN))
def test_a_drawn_snapshot_gives_back_the_agents_screen(name: str) -> None:
    """What attach draws, fed to a fresh screen, shows the cells, cursor and modes of the agent's screen."""
    agent = StemScreen(120, 40)
    agent.feed(DRAWN[name])
    snapshot = unpack(pack(Snapshot(screen=screen_state(agent))))
    assert isinstance(snapshot, Snapshot) and snapshot.screen is not None
    user = StemScreen(120, 40)
    user.feed(render_snapshot(snapshot.screen, 120, 40))
    for y in range(40):
        for x in range(120):
            want, got = agent.buffer[y][x], user.buffer[y][x]
            # The empty cell after a wide character takes the character's style when drawn anew.
            assert got == want or want.data == got.data == "", f"row {y} column {x}: {got} != {want}"
    assert (user.cursor.x, user.cursor.y, user.cursor.hidden) == (agent.cursor.x, agent.cursor.y, agent.cursor.hidden)
    assert user.title == agent.title
    # Attach keeps the user's terminal on its alternate screen whichever screen the agent is on (see `_passed`).
    modes = screen_state(agent, ()).modes
    assert screen_state(user, ()).modes == dataclasses.replace(modes, alternate_screen=False)


def test_a_drawn_snapshot_keeps_every_column_where_half_a_wide_character_was_drawn_over() -> None:
    """A wide character one of whose cells a program wrote over (vim redrawing a split over CJK text) shows as a
    blank, as in the UI: attach skipped the orphaned half, or drew the character over the next cell, and every cell
    after it on the row landed a column left or right of where the agent put it."""
    agent = StemScreen(20, 4)
    agent.feed("中文字\x1b[1;2Hx\x1b[2;1H中文字 end\x1b[2;3Hy\x1b[3;1H😀🎉 ok\x1b[3;2H😀".encode())
    snapshot = unpack(pack(Snapshot(screen=screen_state(agent))))
    assert isinstance(snapshot, Snapshot) and snapshot.screen is not None
    user = StemScreen(20, 4)
    user.feed(render_snapshot(snapshot.screen, 20, 4))
    assert [row.rstrip() for row in user.text()[:3]] == [" x文字", "中y 字 end", " 😀  ok"]
    assert user.text() == agent.text()


@pytest.mark.parametrize("reverse", [False, True])
def test_a_drawn_snapshot_re_emits_dim_concealed_double_underlined_and_overlined_text(reverse: bool) -> None:
    """An agent's dim hints (SGR 2) are drawn dim on attach, not at full brightness; concealed (8), double
    underlined (21; 4:2 comes out as 4 and 21, double in the user's terminal too) and overlined (53) text too, on a
    DECSCNM screen as well."""
    agent = StemScreen(120, 40)
    agent.feed(streams.agent_hints() + (f"{CSI}?5h".encode() if reverse else b""))
    drawn = render_snapshot(screen_state(agent), 120, 40)
    for sgr in (b"2", b"1;2", b"8", b"21", b"4;21", b"53"):
        assert b"\x1b[0;" + sgr + b"m" in drawn or b"\x1b[0;" + sgr + b";" in drawn, sgr
    user = StemScreen(120, 40)
    user.feed(drawn)
    assert streams.agent_hints_shown([[user.buffer[y][x] for x in range(120)] for y in range(3)]) == (
        streams.agent_hints_expected()
    )


def test_a_drawn_snapshot_gives_the_16_colours_by_256_colour_index_as_the_user_s_palette() -> None:
    """An agent's 38;5;1 (as ncurses colours under xterm-256color) reaches the user's terminal as SGR 31, in the
    palette of that terminal as xterm and tmux draw it, not as a fixed RGB (38;2;205;0;0); 256-colour indices from
    16 on keep their RGB."""
    agent = StemScreen(20, 2)
    agent.feed(f"{CSI}38;5;1mA{CSI}38;5;9mB{CSI}0;48;5;4mC{CSI}48:5:13mD{CSI}0;38;5;208mE".encode())
    drawn = render_snapshot(screen_state(agent), 20, 2)
    assert b"\x1b[0;31mA\x1b[0;91mB\x1b[0;44mC\x1b[0;105mD\x1b[0;38;2;255;135;0mE" in drawn


def test_a_snapshot_larger_than_the_terminal_is_cut_without_wrapping() -> None:
    agent = StemScreen(30, 6)
    agent.feed(f"{'a' * 19}中 end\r\nsecond\r\n\r\n\r\n\r\nlast row".encode())
    user = StemScreen(20, 4)
    user.feed(render_snapshot(screen_state(agent), 20, 4))
    assert user.text() == ["a" * 19 + " ", "second" + " " * 14, " " * 20, " " * 20]


# ---------------------------------------------------------------------------------------------- an in-test host


class FakeHost:
    """A colony host reduced to what `stem attach` uses, on an event loop of its own thread: a real StemScreen
    snapshotted on subscribe, output pushed to subscribers, keys and resizes recorded."""

    def __init__(self, path: Path, columns: int = 80, lines: int = 24, colony: str = "alpha") -> None:
        self.path = path
        self.colony = colony
        self.screen = StemScreen(columns, lines)
        self.keys = b""  # every Keys request's bytes, in order
        self.resizes: list[tuple[int, int]] = []
        self.subscribes = 0
        self.unexpected: list[str] = []  # requests stem attach has no business sending
        self.writers: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-host", daemon=True)
        self.thread.start()
        # Like a real host, it holds the colony's host lock while it serves, so stem sees a host running.
        self.lock = os.open(path.with_name("host.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.server = self.call(listen(path, self.handle))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await accept_client(reader, writer, self.colony) is None:
            return
        try:
            while True:
                msg = await read_message(reader)
                write_message(writer, self.answer(msg, writer))
                await writer.drain()
        except (ConnectionClosed, ConnectionError):
            pass
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    def answer(self, msg: Message, writer: asyncio.StreamWriter) -> Reply:
        if isinstance(msg, Subscribe):
            self.subscribes += 1
            write_message(
                writer,
                Snapshot(screen=screen_state(self.screen), colony=ColonyInfo("running"), agent=AgentInfo("working")),
            )
            if "output" in msg.streams and writer not in self.writers:
                self.writers.append(writer)
        elif isinstance(msg, Keys):
            self.keys += msg.data
        elif isinstance(msg, Resize):
            self.resizes.append((msg.columns, msg.lines))
            self.screen.resize(msg.lines, msg.columns)
        else:
            self.unexpected.append(msg.T)
        return Reply(msg.id)

    def output(self, data: bytes, push: bool = True) -> None:
        """The agent writes `data`: onto the screen, and (with `push`) to attached clients as it was written."""

        async def write() -> None:
            self.screen.feed(data)
            if push:
                for writer in self.writers:
                    write_message(writer, Output(data))
                    await writer.drain()

        self.call(write())

    def go_away(self, bye: str | None = None, agent: AgentInfo | None = None) -> None:
        """End as a host does when its colony stops: a last state, a bye, the socket closed and removed."""

        async def end() -> None:
            for writer in list(self.writers):
                if agent is not None:
                    write_message(writer, State(agent=agent))
                if bye is not None:
                    write_message(writer, Bye(bye))
                await writer.drain()
                writer.close()
            self.server.close()
            self.path.unlink(missing_ok=True)

        self.call(end())
        if self.lock >= 0:
            os.close(self.lock)  # the host is gone: its lock with it
            self.lock = -1

    def close(self) -> None:
        if self.server.is_serving():
            self.go_away()

        async def cancel_the_rest() -> None:  # client handlers still waiting for a request
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def agent_screen(host: FakeHost) -> None:
    """What the agent showed before anyone attached: colours, attributes, a wide character, modes, a title."""
    host.output(
        (
            f"{CSI}2;5H{CSI}1;31mred bold{CSI}0m"
            f"{CSI}4;1H{CSI}38;5;208morange{CSI}0m {CSI}38;2;10;200;30mtruecolor{CSI}0m 中文 wide"
            f"{CSI}6;3H{CSI}7mreversed{CSI}0m {CSI}44mon blue{CSI}0m"
            f"{CSI}?1h{CSI}?2004h{CSI}?1000h{CSI}?1006h\x1b]2;agent title\x07{CSI}?25l"
            f"{CSI}8;1Hagent ready>"
        ).encode()
    )


# --------------------------------------------------------------------------------------- attach() on a real PTY


class Pty:
    """A real PTY: `attach()` gets its slave as the user's terminal; the test types on the master, and a thread
    reads it as a terminal would, also while attach blocks its loop to write."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.cooked = termios.tcgetattr(self.slave)
        self._seen = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)  # the timeout only lets it see `_stop`
            if ready:
                data = os.read(self.master, 65536)
                with self._lock:
                    self._seen += data

    @property
    def seen(self) -> bytes:
        with self._lock:
            return bytes(self._seen)

    def text(self) -> str:
        return self.seen.decode(errors="replace")

    async def attach(self, host: FakeHost, during: Callable[[], Awaitable[None]], last: bytes = b"\n") -> int:
        """Run `attach()` on the slave until it ends, doing `during` once the agent's screen is drawn; then wait
        for what it wrote, up to `last`."""
        task = asyncio.create_task(attach(host.path, "alpha", DEFAULT_RELEASE, self.slave, self.slave))
        await until(lambda: b"agent ready>" in self.seen or task.done(), what="the snapshot drawn")
        await during()
        try:
            return await task
        finally:
            await until(lambda: self.seen.endswith(last), what=f"{last!r} at the end")

    def assert_restored(self) -> None:
        assert termios.tcgetattr(self.slave) == self.cooked
        assert os.get_blocking(self.slave)
        text = self.text()
        assert text.startswith(f"{CSI}22;0t{CSI}?1049h")
        leaving = text[text.rindex("\x18") :]  # CAN begins the restore: it cuts off a sequence left half written
        for sequence in ("?1000l", "?1006l", "?2004l", "?1l", "0m", "?25h", "?1049l", "23;0t"):
            assert f"{CSI}{sequence}" in leaving, sequence

    def close(self) -> None:
        self._stop.set()
        self._reader.join(5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[Pty]:
    pty = Pty()
    try:
        yield pty
    finally:
        pty.close()


@pytest.fixture
def small_host(tmp_path: Path) -> Iterator[FakeHost]:
    host = FakeHost(tmp_path / "h.sock", 40, 10)
    agent_screen(host)
    try:
        yield host
    finally:
        host.close()
    assert host.unexpected == []


def test_attach_on_a_pty_forwards_what_precedes_the_release_key_and_restores_the_terminal(
    pty: Pty, small_host: FakeHost
) -> None:
    async def type_and_release() -> None:
        os.write(pty.master, b"typed\x1ddropped")  # one read: what precedes the chord goes, what follows not

    assert asyncio.run(pty.attach(small_host, type_and_release)) == 0
    assert small_host.keys == b"typed"
    assert small_host.resizes == []  # a PTY without a size: nothing to ask for
    assert pty.text().endswith("detached from alpha (ctrl+] again: stem attach alpha)\r\n")  # cooked again
    pty.assert_restored()


def test_attach_on_a_pty_passes_a_flood_through_whole_and_in_order_and_still_detaches(
    pty: Pty, small_host: FakeHost
) -> None:
    lines = [b"line %06d\r\n" % i for i in range(60_000)]
    chunks = [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]  # 11 KiB per message

    async def flood_then_release() -> None:
        for chunk in chunks:
            await asyncio.to_thread(small_host.output, chunk)
        # Written faster than the terminal reads: attach waits for it without holding its loop.
        await until(lambda: b"line 059999" in pty.seen, what="the end of the flood")
        os.write(pty.master, b"\x1d")

    assert asyncio.run(pty.attach(small_host, flood_then_release)) == 0
    shown = re.findall(rb"line (\d{6})", pty.seen)
    assert shown == [b"%06d" % i for i in range(60_000)]
    pty.assert_restored()


def test_attach_on_a_pty_ends_with_1_saying_why_when_the_agent_exits_and_the_host_goes(
    pty: Pty, small_host: FakeHost
) -> None:
    async def agent_exits() -> None:
        await asyncio.to_thread(small_host.go_away, None, AgentInfo("exited", 3))

    assert asyncio.run(pty.attach(small_host, agent_exits)) == 1
    assert pty.text().endswith("alpha's agent ended: it exited with code 3\r\n")
    pty.assert_restored()


@pytest.mark.parametrize(("sig", "line"), [(signal.SIGTERM, "detached from alpha: terminated"), (signal.SIGHUP, "")])
def test_attach_on_a_pty_restores_the_terminal_on_sigterm_and_sighup(
    pty: Pty, small_host: FakeHost, sig: int, line: str
) -> None:
    async def signalled() -> None:
        os.kill(os.getpid(), sig)

    last = f"{line}\r\n" if line else "\x1b[23;0t"  # a terminal that hung up gets no line
    assert asyncio.run(pty.attach(small_host, signalled, last.encode())) == 128 + sig
    pty.assert_restored()


def test_attach_on_a_pty_restores_the_terminal_when_it_fails(
    pty: Pty, small_host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def nothing() -> None:
        pass

    def broken(*_args: object) -> bytes:
        raise RuntimeError("a bug while drawing")

    monkeypatch.setattr("stem.attach.render_snapshot", broken)
    with pytest.raises(RuntimeError, match="a bug while drawing"):
        asyncio.run(pty.attach(small_host, nothing, b"\x1b[23;0t"))
    pty.assert_restored()


# ------------------------------------------------------------------------------------ stem attach NAME in tmux

COLS, ROWS = 100, 30


def register(home: Path, name: str, state: str) -> Path:
    """A colony in the registry in `state`, as far as `stem attach` looks: its record and its folder."""
    layout = HiveLayout(home)
    layout.ensure()
    registry = Registry(layout.registry)
    try:
        registry.reserve(
            name,
            8,
            lambda slot: {
                "repo": str(home),
                "base_ref": "HEAD",
                "branch": f"colony/{name}",
                "worktree": str(layout.worktree(name)),
                "db_path": str(layout.colony_db(name)),
                "netns": f"t-{name}",
                "veth": f"t{slot}",
                "ip": f"10.9.{slot}.2",
                "host_ip": f"10.9.{slot}.1",
                "prefixlen": 30,
            },
        )
        # The way a colony gets there: the registry refuses a jump the lifecycle does not make.
        steps = ("provisioning", "building", "starting", "running")
        path = {"running": steps, "starting": steps[:3]}.get(state, (state,))
        for step in path:
            registry.set_state(name, ColonyState(step))
    finally:
        registry.close()
    layout.colony_dir(name).mkdir(parents=True, exist_ok=True)
    return HostPaths(layout.colony_dir(name)).socket


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A hive of its own (colonies alpha, running, beta, stopped, and delta, starting) and a config folder."""
    home = tmp_path / "h"
    register(home, "alpha", "running")
    register(home, "beta", "stopped")
    register(home, "delta", "starting")
    (tmp_path / "config" / "stem").mkdir(parents=True)
    environ = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "STEM_CONFIG")}
    prefix, pool = "a" + secrets.token_hex(2), free_pool()  # not one another hive on this machine has claimed
    yield dict(
        environ, STEM_HOME=str(home), STEM_PREFIX=prefix, STEM_POOL=str(pool), XDG_CONFIG_HOME=str(tmp_path / "config")
    )
    # A revive of alpha's missing host may have started the hive's host forker: it goes with the test, by pid.
    found = ForkerPaths.of(home).process()
    if found is not None:
        os.kill(found[0], signal.SIGKILL)
        wait_exit(found[0], 5)
    claims.release(prefix)  # the hive's claim on its prefix and pool (core/claims.py)


@pytest.fixture
def host(env: dict[str, str]) -> Iterator[FakeHost]:
    host = FakeHost(HostPaths(HiveLayout(Path(env["STEM_HOME"])).colony_dir("alpha")).socket)
    agent_screen(host)
    try:
        yield host
    finally:
        host.close()
    assert host.unexpected == []


class Pane:
    """A shell in a private tmux server (its own socket in the test's folder, no user config)."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: apt-get install tmux")
        self.env = dict(env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp), PS1="shell$ ", ENV="")
        self("new-session", "-d", "-s", "stem", "-x", str(COLS), "-y", str(ROWS), "-c", str(ROOT), "sh")
        self.wait("shell$")

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", "stem-attach", "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def lines(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "stem").split("\n")

    def styled(self) -> str:
        """The pane with its SGR sequences, as capture-pane -e gives them."""
        return self("capture-pane", "-p", "-e", "-t", "stem")

    def flags(self, *names: str) -> dict[str, str]:
        values = self("display-message", "-p", "-t", "stem", "|".join(f"#{{{n}}}" for n in names)).rstrip("\n")
        return dict(zip(names, values.split("|"), strict=True))

    def wait(self, *texts: str, timeout: float = 30.0) -> str:
        def shows() -> str | None:
            screen = "\n".join(self.lines())
            return screen if all(t in screen for t in texts) else None

        try:
            return wait_for(shows, timeout, f"{texts} in the tmux pane")
        except AssertionError:
            raise AssertionError(
                f"timed out waiting for {texts}; the pane shows:\n" + "\n".join(self.lines())
            ) from None

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "stem", *keys)

    def run(self, command: str) -> None:
        self.keys("-l", command)
        self.keys("Enter")

    def attach(self, name: str = "alpha") -> None:
        self.run(f"{shlex.join(stem_cmd())} attach {name}; echo attach exited $?")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", "stem-attach", "kill-server"], env=self.env, capture_output=True, timeout=30)


@pytest.fixture
def pane(env: dict[str, str], tmp_path: Path) -> Iterator[Pane]:
    pane = Pane(env, tmp_path)
    try:
        yield pane
    finally:
        pane.kill()


def sgr_before(styled: str, text: str) -> set[str]:
    """The SGR parameters capture-pane -e puts right before `text` (tmux splits them over several sequences)."""
    match = re.search(r"((?:\x1b\[[0-9;]*m)+)" + re.escape(text), styled)
    assert match, f"{text!r} has no SGR before it in the pane:\n{styled}"
    return set(re.findall(r"\x1b\[([0-9;]*)m", match.group(1)))


AGENT_FLAGS = ("alternate_on", "keypad_cursor_flag", "mouse_standard_flag", "mouse_sgr_flag", "cursor_flag")


def test_attach_shows_the_agent_passes_keys_and_output_follows_resizes_and_detaches(pane: Pane, host: FakeHost) -> None:
    title = pane.flags("pane_title")
    pane.attach()
    pane.wait("agent ready>")
    # The agent's screen was 80x24: attach asked for the pane's size before drawing.
    assert host.resizes == [(COLS, ROWS)]
    lines = pane.lines()
    assert lines[1][4:12] == "red bold"
    assert lines[3].startswith("orange truecolor 中文 wide")
    assert lines[5].startswith("  reversed on blue")
    assert lines[7].startswith("agent ready>")
    styled = pane.styled()
    assert {"1", "31"} <= sgr_before(styled, "red bold")
    assert "38;2;255;135;0" in sgr_before(styled, "orange")  # 208 of the 256 colours, as pyte gives it: its RGB
    assert "38;2;10;200;30" in sgr_before(styled, "truecolor")
    assert "7" in sgr_before(styled, "reversed")
    assert "44" in sgr_before(styled, "on blue")
    # The agent's modes are the terminal's now: its keys, mouse and cursor as the agent asked.
    assert pane.flags(*AGENT_FLAGS, "pane_title", "cursor_x", "cursor_y") == {
        "alternate_on": "1",
        "keypad_cursor_flag": "1",
        "mouse_standard_flag": "1",
        "mouse_sgr_flag": "1",
        "cursor_flag": "0",
        "pane_title": "agent title",
        "cursor_x": "12",
        "cursor_y": "7",
    }

    # Keys arrive as the terminal sent them, in order: an Esc at once followed by a key is not merged or
    # delayed, alt+x is ESC x, up is ESC O A in application cursor mode, ctrl+c is a byte, a paste is bracketed.
    pane.keys("-l", "hello")
    pane.keys("Escape", "x")
    pane.keys("M-x", "Up", "C-c", "Enter")
    pane("set-buffer", "pasted")
    pane("paste-buffer", "-p", "-t", "stem")
    expected = b"hello\x1bx\x1bx\x1bOA\x03\r\x1b[200~pasted\x1b[201~"
    wait_for(lambda: host.keys == expected, what="the typed keys at the host")

    # The agent's output after attaching is shown as it writes it.
    host.output(f"{CSI}10;1H{CSI}32mpushed after attach{CSI}0m".encode())
    pane.wait("pushed after attach")
    assert pane.lines()[9].startswith("pushed after attach")
    assert "32" in sgr_before(pane.styled(), "pushed after attach")

    # A resized terminal resizes the agent, and is drawn again from a fresh snapshot: a change the agent made
    # without writing it to attach (it reached the screen only) shows.
    host.output(f"{CSI}12;1Honly in the snapshot".encode(), push=False)
    pane("resize-window", "-t", "stem", "-x", "90", "-y", "25")
    wait_for(lambda: host.resizes[-1:] == [(90, 25)], what="a resize to 90x25")
    pane.wait("only in the snapshot", "agent ready>", "red bold")
    assert len(host.resizes) == 2

    # ctrl+] detaches: the shell is back on its own screen with its terminal as it was.
    pane.keys("C-]")
    pane.wait("detached from alpha (ctrl+] again: stem attach alpha)", "attach exited 0")
    assert pane.flags(*AGENT_FLAGS) == {
        "alternate_on": "0",
        "keypad_cursor_flag": "0",
        "mouse_standard_flag": "0",
        "mouse_sgr_flag": "0",
        "cursor_flag": "1",
    }
    assert pane.flags("pane_title") == title
    assert host.keys == expected  # the release key itself never reaches the agent
    lines = pane.lines()
    assert lines[lines.index("attach exited 0") + 1] == "shell$", lines  # the prompt, on the shell's own screen
    pane.run("clear; stty -a")
    words = set(re.split(r"[\s;]+", pane.wait("icanon", "opost")))
    assert {"icanon", "echo", "isig", "opost", "icrnl"} <= words, words  # cooked, as the shell left it


def test_an_agent_leaving_its_alternate_screen_shows_its_own_screen_not_the_users(pane: Pane, host: FakeHost) -> None:
    """A shell agent running vim: vim's switch back to the main screen must show the agent's main screen, drawn
    from the host, and leave the user's terminal on the alternate screen attach put it on; passed through, it
    showed the user's own screen (here "users own words"), the agent's output landed on it, and detaching left it
    there. Switches cut across two outputs count too."""
    pane.run("echo users own words")
    pane.wait("users own words")
    pane.attach()
    pane.wait("agent ready>")
    host.output(f"{CSI}?1049h{CSI}H{CSI}2Jvim's buffer{CSI}5;1H~".encode())
    pane.wait("vim's buffer")
    assert "agent ready>" not in "\n".join(pane.lines())
    host.output(f"{CSI}2;1Hmore of vim\x1b[?10".encode())  # vim quits: its switch back is cut in two
    host.output(f"49l{CSI}9;1Hagent ready> again".encode())
    screen = pane.wait("agent ready> again", "red bold")
    assert "vim's buffer" not in screen and "users own words" not in screen, screen
    assert pane.flags("alternate_on") == {"alternate_on": "1"}
    pane.keys("C-]")
    screen = pane.wait("attach exited 0", "users own words")
    assert "agent ready" not in screen and "vim's buffer" not in screen, screen


def test_a_remapped_release_key_detaches_and_ctrl_bracket_goes_to_the_agent(
    pane: Pane, host: FakeHost, env: dict[str, str]
) -> None:
    config = Path(env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.write_text('[keys]\n"terminal.release" = "ctrl+g"\n')
    pane.attach()
    pane.wait("agent ready>")
    pane.keys("C-]")
    wait_for(lambda: host.keys == b"\x1d", what="ctrl+] at the host")
    pane.keys("-l", "still here")
    wait_for(lambda: host.keys == b"\x1dstill here", what="more keys: attach did not end")
    pane.keys("C-g")
    pane.wait("detached from alpha (ctrl+g again: stem attach alpha)", "attach exited 0")
    assert host.keys == b"\x1dstill here"


def test_the_host_going_away_ends_attach_with_1_and_then_there_is_no_host(pane: Pane, host: FakeHost) -> None:
    pane.attach()
    pane.wait("agent ready>")
    host.go_away(bye="the colony is stopping")
    pane.wait("alpha's agent ended: the colony is stopping", "attach exited 1")
    assert pane.flags("alternate_on", "cursor_flag", "mouse_standard_flag") == {
        "alternate_on": "0",
        "cursor_flag": "1",
        "mouse_standard_flag": "0",
    }
    pane.attach()
    pane.wait("alpha has no running host: stem start alpha", "attach exited 2")


def test_attach_refuses_what_it_cannot_attach_in_one_line(env: dict[str, str]) -> None:
    cases = {
        "alpha": "stem attach needs a terminal",  # stdin is not a terminal here
        "beta": "beta is stopped, not running: stem start beta",
        "delta": "delta is starting, not running: wait until it is running (stem ls)",
        "gamma": "no colony named 'gamma' in this hive",
    }
    for name, message in cases.items():
        result = run_stem(env, "attach", name, cwd=ROOT)
        assert result.returncode == 2, result
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""


def attached_to_fake_agent(hive_env: HiveEnv, tmp_path: Path) -> tuple[Pane, int]:
    """A colony alpha running the fake agent, attached in a tmux pane that shows its prompt; and its host's pid.
    The caller kills the pane."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "alpha", "--repo", str(repo)).returncode == 0
    pane = Pane(hive_env.env, tmp_path)
    try:
        pane.attach()
        pane.wait("fake-agent>")
        host = host_pid(hive_env, "alpha")
        assert host is not None
    except BaseException:
        pane.kill()
        raise
    return pane, host


@pytest.mark.root
def test_attach_says_on_its_last_row_that_the_host_is_stopped_and_goes_on_once_it_is_continued(
    hive_env: HiveEnv, tmp_path: Path
) -> None:
    """A real colony host stopped (kill -STOP) under an attached terminal: its screen froze with no word of why.
    The last row says so within a few seconds; after kill -CONT the agent's screen is drawn again without it, and
    what was typed meanwhile reached the agent, which still echoes what is typed after."""
    pane, host = attached_to_fake_agent(hive_env, tmp_path)
    try:
        line = f"colony alpha: its host (pid {host}) is stopped: kill -CONT {host}"
        os.kill(host, signal.SIGSTOP)
        try:
            pane.wait(line, timeout=10)
            assert pane.lines()[ROWS - 1].startswith(line), pane.lines()
            assert "7" in sgr_before(pane.styled(), "colony alpha: its host")  # reversed: apart from the agent's
            pane.run("typed while stopped")
            assert "attach exited" not in "\n".join(pane.lines())
        finally:
            os.kill(host, signal.SIGCONT)
        pane.wait("echo: typed while stopped")  # held while it was stopped, not lost
        wait_for(lambda: line not in "\n".join(pane.lines()), what="the stopped host's line to go")
        pane.run("typed after")
        pane.wait("echo: typed after", "fake-agent>")
        pane.keys("C-]")
        pane.wait("detached from alpha", "attach exited 0")
    finally:
        pane.kill()


@pytest.mark.root
def test_attach_says_on_its_last_row_that_the_host_does_not_answer_and_goes_on_once_it_does(
    hive_env: HiveEnv, tmp_path: Path
) -> None:
    """A real colony host hung (frozen by the cgroup freezer: not stopped, so the SIGSTOP look does not see it)
    under an attached terminal: the last row says it has not answered and what ends it; once it answers again the
    agent's screen is drawn again without the line, and what was typed meanwhile reached the agent."""
    from core.host.protocol import HOST_SILENT

    pane, host = attached_to_fake_agent(hive_env, tmp_path)
    try:
        line = f"colony alpha: its host (pid {host}) does not answer; `stem stop alpha` ends it"
        with hung(host):
            pane.wait(line, timeout=HOST_SILENT + 10)
            assert pane.lines()[ROWS - 1].startswith(line), pane.lines()
            pane.run("typed while hung")
        pane.wait("echo: typed while hung")
        wait_for(lambda: line not in "\n".join(pane.lines()), what="the line to go")
        pane.keys("C-]")
        pane.wait("detached from alpha", "attach exited 0")
    finally:
        pane.kill()


@pytest.mark.root
def test_attach_at_another_size_than_the_agent_draws_its_screen_and_gets_its_size_back_once_typed_in(
    hive_env: HiveEnv, tmp_path: Path
) -> None:
    """A UI used last gives the agent its size (60x20) while `stem attach` shows it at 100x30: the agent's output,
    laid out for 60 columns, was passed through to a terminal of 100 and the attach showed lines the agent never
    drew (a line wrapped at 60 shown whole on one row). The attach now draws the screen's rows cut to its terminal,
    as tmux shows a window larger than a client, and a key typed in it gives the agent its size back."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "alpha", "--repo", str(repo)).returncode == 0
    socket = HostPaths(hive_env.home / "colonies" / "alpha").socket
    pane = Pane(hive_env.env, tmp_path)

    async def scenario() -> None:
        pane.attach()
        await asyncio.to_thread(pane.wait, "fake-agent>")
        async with await Connection.open(socket, "ui") as ui:
            await ui.request(Resize(60, 20))  # the UI, used last
            await ui.send_keys(b"x" * 80 + b"\r")
            # The agent's screen: its line wrapped at 60 (6 + 54, then 26), drawn so in the attach, not as one row.
            await asyncio.to_thread(pane.wait, "echo: " + "x" * 54)
            rows = [row.rstrip() for row in pane.lines()]
            at = rows.index("echo: " + "x" * 54)
            assert rows[at + 1] == "x" * 26, rows
            # Typed in the attach: the agent takes its size back. Its echo is longer than 60 columns, and fits on a
            # row of 100 even after the prompt the agent may print first (its resize can come before the line).
            await asyncio.to_thread(pane.run, "y" * 70)
            await asyncio.to_thread(pane.wait, "echo: " + "y" * 70)
            async with await Connection.open(socket, "script") as look:
                await look.subscribe("screen")
                snapshot = await anext(look.updates())
                assert isinstance(snapshot, Snapshot) and snapshot.screen is not None
                assert (snapshot.screen.columns, snapshot.screen.lines) == (COLS, ROWS)
            assert any("echo: " + "y" * 70 in row for row in pane.lines())  # passed through at its width

    try:
        asyncio.run(scenario())
        pane.keys("C-]")
        pane.wait("detached from alpha", "attach exited 0")
    finally:
        pane.kill()


REGION_AGENT = """
import os, tty
tty.setraw(0)
os.write(1, b"ready")
n = 0
while True:
    key = os.read(0, 1)
    if not key:
        break
    rows = os.get_terminal_size(0).lines
    if key == b"a":  # the scroll region is set once, as apt keeps its progress row out of it
        os.write(1, f"\\x1b[1;{rows - 1}r\\x1b[{rows - 1};1H".encode())
    for _ in range(rows):
        n += 1
        os.write(1, f"\\r\\nline {n}".encode())
    os.write(1, f"\\x1b7\\x1b[{rows};1Hprogress {n}\\x1b8".encode())
"""


@pytest.mark.root
def test_a_scroll_region_set_before_an_attach_holds_for_the_output_after_it(hive_env: HiveEnv, tmp_path: Path) -> None:
    """A program keeps its progress row out of a scroll region it set once (apt, dpkg), and a `stem attach` comes
    after that: the snapshot drew the screen but not the region, so the lines that followed scrolled the whole
    terminal, the progress row with them, and the attach showed what the agent's screen did not."""
    repo = make_repo(tmp_path / "repo")
    scripted_agent(hive_env.env, repo, REGION_AGENT)
    assert run_stem(hive_env.env, "spawn", "alpha", "--repo", str(repo)).returncode == 0
    socket = HostPaths(hive_env.home / "colonies" / "alpha").socket
    pane = Pane(hive_env.env, tmp_path)
    try:
        pane.attach()
        pane.wait("ready")
        pane.keys("a")
        pane.wait(f"progress {ROWS}")
        pane.keys("C-]")
        pane.wait("attach exited 0")
        pane.attach()  # after the region was set
        pane.wait(f"progress {ROWS}")
        pane.keys("b")
        pane.wait(f"progress {2 * ROWS}")

        async def host_rows() -> list[str]:
            async with await Connection.open(socket, "script") as look:
                await look.subscribe("screen")
                snapshot = await anext(look.updates())
                assert isinstance(snapshot, Snapshot) and snapshot.screen is not None
                screen = snapshot.screen
                return ["".join(cell.data for cell in screen.rows[y]).rstrip() for y in range(screen.lines)]

        expected = asyncio.run(host_rows())
        assert expected[-1] == f"progress {2 * ROWS}" and expected[-2] == f"line {2 * ROWS}", expected
        assert [row.rstrip() for row in pane.lines()[:ROWS]] == expected
        pane.keys("C-]")
        pane.wait("attach exited 0")
    finally:
        pane.kill()
