"""The colony host protocol over real Unix sockets: framing, every message, the handshake, the uid check, styled
runs of real screens, and a `ScreenMirror` kept in step with a real `StemScreen` through a small host."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgpack
import pytest
from pyte import modes as mo
from recordings import streams

from core.colony_log import ColonyLog, Entry
from core.errors import StemError
from core.events import FileChange
from core.host.mirror import ScreenMirror
from core.host.protocol import (
    MAX_FRAME,
    MESSAGE_TYPES,
    SUPPORTED_VERSIONS,
    Accepted,
    AgentInfo,
    AwaitStart,
    Bye,
    ColonyInfo,
    Connection,
    ConnectionClosed,
    Diff,
    DiffText,
    FrameTooLarge,
    Hello,
    HostUnreachable,
    Keys,
    Log,
    LogHistory,
    LogPage,
    Message,
    NoticeMessage,
    Output,
    Paste,
    ProtocolError,
    Reply,
    RequestFailed,
    Resize,
    RestartAgent,
    RestartService,
    Rows,
    ScreenModes,
    ScrollbackPage,
    ScrollbackRequest,
    ServiceInfo,
    SetPalette,
    Snapshot,
    State,
    Stop,
    Subscribe,
    VersionMismatch,
    Welcome,
    accept_client,
    listen,
    pack,
    read_message,
    screen_state,
    scrollback_page,
    unpack,
    write_message,
)
from core.screen import StemScreen
from core.screen_cells import DEFAULT_CHAR, Char
from core.screen_queries import Palette

ROOT = Path(__file__).resolve().parents[1]
CSI = "\x1b["

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(path: Path, handler: Handler) -> AsyncIterator[asyncio.Server]:
    server = await listen(path, handler)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def source_cells(screen: StemScreen, y: int) -> list[Char]:
    """Row `y` as pyte shows it: every column, an unwritten cell being the row's blank."""
    row = screen.buffer[y]
    return [row[x] for x in range(screen.columns)]


# ------------------------------------------------------------------------------------------------------ framing


def test_frames_round_trip_large_ones_too_and_oversized_ones_are_refused(tmp_path: Path) -> None:
    received: asyncio.Queue[Message | StemError] = asyncio.Queue()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                received.put_nowait(await read_message(reader))
        except StemError as e:
            received.put_nowait(e)
        finally:
            writer.close()

    big = Paste("中文 " * (2 << 20), id=2)  # 14 MiB of UTF-8 in one frame

    async def scenario() -> None:
        path = tmp_path / "host.sock"
        async with serving(path, collect):
            _, writer = await asyncio.open_unix_connection(str(path))
            write_message(writer, Keys(b"\x1b[A", id=1))
            write_message(writer, big)
            await writer.drain()
            assert await received.get() == Keys(b"\x1b[A", id=1)
            assert await received.get() == big
            # A length over the limit is refused from the header alone: the body is never waited for.
            writer.write(struct.pack(">I", MAX_FRAME + 1))
            await writer.drain()
            error = await received.get()
            assert isinstance(error, FrameTooLarge)
            assert str(error) == f"a frame of {MAX_FRAME + 1} bytes is over the 16 MiB limit ({MAX_FRAME} bytes)"
            writer.close()

    asyncio.run(scenario())

    # ... and the sender refuses to make one.
    with pytest.raises(FrameTooLarge, match=r"^a paste message of \d+ bytes is over the 16 MiB frame limit$"):
        pack(Paste("x" * MAX_FRAME))


def sample_screen() -> StemScreen:
    screen = StemScreen(40, 6, scrollback=20)
    screen.feed(b"line 1\r\nline 2\r\n" * 5)
    screen.feed(f"{CSI}1;31mred{CSI}0m \xe4\xb8\xad\xe6\x96\x87 x\u0301{CSI}?1h{CSI}?2004h{CSI}?1002h".encode())
    screen.feed(b"\x1b]2;the title\x07\x07")
    # Fed as an agent session feeds it: through the screen's queries, which keep the hyperlink.
    screen.queries.feed(b"\x1b]8;;https://example.com/\x1b\\link\x1b]8;;\x1b\\\x1b=\x1b[?1004h", screen.feed)
    return screen


def samples() -> list[Message]:
    """One of each message type (and each reply result), with every field away from its default."""
    screen = sample_screen()
    state = screen_state(screen)
    partial = dataclasses.replace(screen_state(screen, {0, 5}), clipboard=("c;aGk=", "p;dGhlcmU="))
    assert partial.links, "the sample's row 5 has a hyperlink"
    entries = (Entry(7, 1700000000.25, "web", "listening on :3000"), Entry(8, 1700000001.0, "setup", "ok é"))
    services = (ServiceInfo("web", "ready", 3000, 2, None, ""), ServiceInfo("worker", "crashed", None, 5, 1, "boom"))
    files = (FileChange("src/a.py", "modified", 3, 1), FileChange("logo.png", "added", 0, 0))
    return [
        Hello((1, 2), "attach", "stem 0.1.0 pid 42"),
        Welcome("alpha", (1,), 1),
        Welcome("alpha", (2, 3), None, "no protocol version in common"),
        Snapshot(state, ColonyInfo("failed", "build", "exit 2"), AgentInfo("exited", 3), services, files, entries, 8),
        Snapshot(),
        Rows(partial),
        State(ColonyInfo("running"), AgentInfo("attention"), services[:1], files),
        State(agent=AgentInfo("idle")),
        Log(entries),
        Reply(1),
        Reply(2, "no service named nope"),
        Reply(3, result=scrollback_page(screen, 0, 5)),
        Reply(4, result=LogPage(entries, more=True)),
        Reply(5, result=DiffText("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")),
        Bye("the colony is stopping"),
        Keys(b"\x03\xff\x00", 6),
        Paste("two\nlines", 7),
        Resize(132, 50, 8),
        SetPalette(Palette((1, 2, 3), (250, 251, 252), tuple((i, 2 * i, 255 - i) for i in range(16))), 18),
        ScrollbackRequest(100, 40, 9),
        LogHistory(8, 500, 10),
        Diff("src/a.py", 11),
        Diff(None, 12),
        RestartService("web", 13),
        RestartAgent(14),
        Subscribe(frozenset({"screen", "logs", "states", "output"}), 15),
        AwaitStart(16),
        Stop(2.5, 17),
        Stop(1.0, 18, routes=False),
        NoticeMessage("warning", "colony.toml not applied"),
        Output(b"\x1b[31mred\x1b[0m\r\n"),
    ]


def test_every_message_type_round_trips(tmp_path: Path) -> None:
    messages = samples()
    assert {type(m).T for m in messages} == MESSAGE_TYPES  # a new message type needs a sample here
    for msg in messages:
        assert unpack(pack(msg)) == msg
        assert type(msg).decode(msg.encode()) == msg

    received: list[Message] = []

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in messages:
            received.append(await read_message(reader))
        writer.close()

    async def scenario() -> None:
        path = tmp_path / "host.sock"
        async with serving(path, collect):
            reader, writer = await asyncio.open_unix_connection(str(path))
            for msg in messages:
                write_message(writer, msg)
            await writer.drain()
            assert await reader.read() == b""  # the host read everything, then closed
            writer.close()

    asyncio.run(scenario())
    assert received == messages


def frame_of(data: object) -> bytes:
    body = msgpack.packb(data, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


ROW_OK = {
    "version": 1,
    "columns": 4,
    "lines": 2,
    "cursor": [0, 0, True],
    "modes": {},
    "styles": [["red", "default", 1]],
}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\0\0\0\1\xc1", "a frame that is not a msgpack message"),
        (b"\0\0\0\5\xc0", "a frame announcing 5 bytes holds 1"),
        (frame_of([1, 2]), "a message should be a map, not list"),
        (frame_of({"id": 1}), "a message without a type: 't' is nil"),
        (frame_of({"t": "frobnicate"}), "unknown message type 'frobnicate'"),
        (frame_of({"t": "keys", "id": 1}), "a keys message has no field 'data'"),
        (frame_of({"t": "keys", "id": "1", "data": b""}), "field 'id' of a keys message should be an integer, not str"),
        (frame_of({"t": "resize", "id": 1, "columns": True, "lines": 5}), "field 'columns' of a resize message should"),
        (frame_of({"t": "resize", "id": 1, "columns": 0, "lines": 5}), "field 'columns' of a resize message is 0"),
        (frame_of({"t": "paste", "id": 1, "text": b"raw"}), "field 'text' of a paste message should be a string"),
        (frame_of({"t": "hello", "versions": [1], "kind": "robot"}), "field 'kind' of a hello message is 'robot'"),
        (frame_of({"t": "hello", "versions": ["1"], "kind": "ui"}), "'versions' of a hello message should be a list"),
        (frame_of({"t": "subscribe", "id": 1, "streams": ["screen", "gossip"]}), "asks for unknown streams ['gossip']"),
        (frame_of({"t": "reply", "id": 1, "result": {"k": "poem"}}), "is of unknown kind 'poem'"),
        (frame_of({"t": "state", "services": [{"state": "ready"}]}), "an item of 'services' in a state message has no"),
        (frame_of({"t": "log", "entries": [{"seq": 1, "at": "now", "source": "", "text": ""}]}), "should be a number"),
        (
            frame_of({"t": "log", "entries": [{"seq": 1, "at": 2.0, "source": "", "text": ""}, {"seq": 2, "at": 3.0}]}),
            "an item of 'entries' in a log message has no field 'source'",
        ),
        (frame_of({"t": "log", "entries": [{"seq": 1, "at": 2.0, "source": "", "text": ""}, 5]}), "should be a map"),
        (
            frame_of({"t": "log", "entries": [{"seq": True, "at": 2.0, "source": "", "text": ""}]}),
            "field 'seq' of an item of 'entries' in a log message should be an integer",
        ),
        (frame_of({"t": "rows", **ROW_OK, "rows": {5: []}}), "has a row 5 on a screen of 2 lines"),
        (frame_of({"t": "rows", **ROW_OK, "rows": {0: ["ab", 3]}}), "row 0 of a rows message names style 3, but"),
        (
            frame_of({"t": "rows", **ROW_OK, "rows": {0: ["abcde", 0]}}),
            "row 0 of a rows message has more than 4 cells, the width",
        ),
        (frame_of({"t": "rows", **ROW_OK, "rows": {0: ["ab"]}}), "should be a list of segment and style pairs"),
        (frame_of({"t": "rows", **ROW_OK, "rows": {0: [7, 0]}}), "a segment of row 0 of a rows message should be"),
        (frame_of({"t": "rows", **ROW_OK, "styles": [["red"]], "rows": {}}), "should be [fg, bg, flags]"),
        (frame_of({"t": "rows", **ROW_OK, "lines": 10**6, "rows": {}}), "field 'lines' of a rows message is 1000000"),
        (frame_of({"t": "rows", **ROW_OK, "cursor": [0, 0], "rows": {}}), "should be [x, y, visible]"),
    ],
)
def test_malformed_messages_raise_a_protocol_error_that_says_what(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        unpack(body)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------- handshake


def test_a_version_mismatch_is_one_clear_line(tmp_path: Path) -> None:
    outcomes: list[Accepted | None] = []

    def host(versions: tuple[int, ...]) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            outcomes.append(await accept_client(reader, writer, "alpha", versions))
            writer.close()

        return handle

    async def scenario() -> None:
        newer = tmp_path / "newer.sock"
        async with serving(newer, host((3,))):
            with pytest.raises(VersionMismatch) as caught:
                await Connection.open(newer, "ui")
        assert str(caught.value) == (
            "colony host of alpha speaks protocol 3, this stem speaks 1 or 2: "
            "restart the colony (stem stop alpha && stem start alpha) or upgrade stem"
        )
        older = tmp_path / "older.sock"
        async with serving(older, host((1,))):
            with pytest.raises(VersionMismatch) as caught:
                await Connection.open(older, "attach", versions=(2, 3))
            assert str(caught.value).startswith("colony host of alpha speaks protocol 1, this stem speaks 2 or 3: ")
            async with await Connection.open(older, "script") as conn:  # and a client that speaks 1 gets in
                assert (conn.colony, conn.version) == ("alpha", 1)
        with pytest.raises(
            HostUnreachable, match=r"^no colony host answers at .*/older\.sock \(is the colony running\?\)$"
        ):
            await Connection.open(older, "ui")

    asyncio.run(scenario())
    assert outcomes == [None, None, Accepted("script", "", 1)]


CHILD = """
import asyncio, os, sys
from core.errors import StemError
from core.host.protocol import Connection

os.setuid(65534)  # everything is imported: from here on this process is nobody


async def main() -> None:
    try:
        conn = await Connection.open(sys.argv[1], "script")
    except StemError as e:
        print(f"{type(e).__name__}: {e}")
    else:
        print("admitted")
        await conn.close()


asyncio.run(main())
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder another uid can traverse (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="stem-protocol-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.root
def test_a_peer_of_another_uid_is_refused(open_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[Accepted | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outcomes.append(await accept_client(reader, writer, "alpha"))
        writer.close()

    async def as_nobody(path: Path) -> str:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(path), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()
        return out.decode().strip()

    async def scenario() -> None:
        path = open_dir / "alpha.sock"
        async with serving(path, handle):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            # The socket's mode alone keeps other users out ...
            assert (
                await as_nobody(path)
                == f"HostUnreachable: not allowed to connect to {path}: it belongs to another user"
            )
            assert outcomes == []
            # ... and if it did not (a mode gone wrong), the host checks who is calling.
            path.chmod(0o666)
            assert await as_nobody(path) == (
                "HostRefused: the colony host refused this connection: "
                f"uid 65534 may not connect to the colony host of alpha (it runs as uid {os.geteuid()})"
            )

    with caplog.at_level(logging.WARNING, logger="stem.host"):
        asyncio.run(scenario())
    assert outcomes == [None]
    refusals = [r.getMessage() for r in caplog.records if r.name == "stem.host"]
    assert len(refusals) == 1
    assert refusals[0].startswith("refused a client: pid ")
    assert refusals[0].endswith(
        f", uid 65534 may not connect to the colony host of alpha (it runs as uid {os.geteuid()})"
    )


# ------------------------------------------------------------------------------------------------- styled runs


def attributes_and_wide() -> bytes:
    """Every attribute and colour form, multi-code-point cells, stubs with another style, a DECSCNM screen."""
    out = [f"{CSI}1mbold{CSI}0m {CSI}3mitalic{CSI}0m {CSI}4munder{CSI}0m {CSI}9mstrike{CSI}0m "]
    out.append(f"{CSI}7mreverse{CSI}0m {CSI}5mblink{CSI}0m {CSI}1;3;4;9;7;5mall{CSI}0m\r\n")
    out.append(
        f"{CSI}31;42mansi{CSI}91;104mbright{CSI}38;5;208;48;5;17m256{CSI}38;2;1;2;3;48;2;250;128;0mtrue{CSI}0m\r\n"
    )
    out.append("x\u0301 q\u0308\u0323 combining without a precomposed form\r\n")
    out.append(f"{CSI}33m中文{CSI}0m{CSI}4;2H{CSI}32mA{CSI}0m\r\n")  # a stub overwritten in another colour
    out.append(f"{CSI}6;1H{CSI}35m日本{CSI}6;3H{CSI}36m語")  # a stub that keeps its style, next to a new one
    out.append(f"{CSI}8;119H中{CSI}9;1H" + "\x00")  # a wide character in the last column has no stub
    return "".join(out).encode()


SCREENS = {
    "attributes_and_wide": attributes_and_wide(),
    "wide_and_combining": streams.wide_and_combining(),
    "styled_runs": streams.styled_runs(),
    "colored_logs": streams.colored_logs(300),
    "alternate_screen": streams.alternate_screen(),
    "fuzz": streams.fuzz(7),
    "reverse_screen": attributes_and_wide() + f"{CSI}?5h{CSI}2;5Hon a reversed screen".encode(),
    "agent_hints": streams.agent_hints() * 20,
    # Real programs (tests/recordings): the agents, and full-screen programs with line drawing and many colours
    **{
        name: (Path(__file__).parent / "recordings" / f"{name}.bin").read_bytes()
        for name in ("claude", "codex", "textual", "htop", "mc", "vim_syntax", "tmux")
    },
}


@pytest.mark.parametrize("name", list(SCREENS))
def test_styled_runs_give_back_the_cells_of_a_real_screen(name: str) -> None:
    screen = StemScreen(120, 40, scrollback=500)
    screen.feed(SCREENS[name])
    sent = Rows(screen_state(screen))
    frame = pack(sent)
    got = unpack(frame)
    assert isinstance(got, Rows)
    state = got.screen
    assert (state.columns, state.lines, state.cursor_x, state.cursor_y) == (120, 40, screen.cursor.x, screen.cursor.y)
    assert state.modes.reverse_screen == (mo.DECSCNM in screen.mode)
    for y in range(screen.lines):
        assert state.rows[y] == source_cells(screen, y), f"row {y}"
    assert ["".join(c.data or "" for c in state.rows[y]) for y in range(40)] == [
        "".join(c.data for c in source_cells(screen, y)) for y in range(40)
    ]
    # Scrollback pages carry lines the same way.
    held = len(screen.scrollback)
    page = unpack(pack(Reply(1, result=scrollback_page(screen, screen.scrollback.scrolled - held, held))))
    assert isinstance(page, Reply) and isinstance(page.result, ScrollbackPage)
    assert list(page.result.lines) == [screen.scrollback.line(i) for i in range(held)]


def test_runs_are_compact_and_mark_wide_and_combined_cells() -> None:
    screen = StemScreen(20, 3)
    screen.feed(f"{CSI}31mred{CSI}0m plain 中文\r\nx\u0301y\r\n".encode())
    encoded = Rows(screen_state(screen)).encode()
    rows, styles = encoded["rows"], encoded["styles"]
    assert isinstance(rows, dict)
    assert styles == [["red", "default", 0], ["default", "default", 0]]
    assert rows[0] == ["red", 0, " plain 中\x00文\x00", 1]  # trailing blanks left out; "\0": a wide char's stub
    assert rows[1] == [["x\u0301"], 1, "y", 1]  # a cell of two code points: a list, one string per cell
    assert rows[2] == []


def test_dim_concealed_double_underlined_and_overlined_cells_reach_a_mirror_and_its_history() -> None:
    """An agent's dim hints (and concealed, double-underlined, overlined text) reach a client as style flags 64,
    128, 256 and 512, on screen rows and scrollback pages. No new version: a decoder drops flag bits it does not
    know, as the ones before these flags drop them."""
    screen = StemScreen(60, 6, scrollback=50)
    screen.feed(streams.agent_hints())
    encoded = Rows(screen_state(screen)).encode()
    assert isinstance(encoded["styles"], list)
    assert {flags for _fg, _bg, flags in encoded["styles"]} == {0, 1, 4, 64, 1 | 64, 128, 256, 4 | 256, 512}
    expected = streams.agent_hints_expected()
    mirror = ScreenMirror()
    snapshot = unpack(pack(Snapshot(screen_state(screen))))
    assert isinstance(snapshot, Snapshot)
    mirror.apply(snapshot)
    assert streams.agent_hints_shown([mirror.buffer[y] for y in range(3)]) == expected
    screen.feed(streams.flood(10))  # the hints scroll into the history
    rows = unpack(pack(Rows(screen_state(screen))))
    assert isinstance(rows, Rows)
    mirror.apply(rows)
    held = len(screen.scrollback)
    page = unpack(pack(Reply(1, result=scrollback_page(screen, screen.scrollback.scrolled - held, held))))
    assert isinstance(page, Reply) and isinstance(page.result, ScrollbackPage)
    mirror.scrollback.store(page.result)
    assert streams.agent_hints_shown([mirror.scrollback.line(i) for i in range(3)]) == expected

    # A newer host's bits are dropped; an older host's styles (six flags at most) decode as before.
    frame = pack(Rows(screen_state(screen)))
    body = msgpack.unpackb(frame[4:], strict_map_key=False)
    body["styles"] = [["red", "default", 1 << 10 | 64 | 1], ["default", "default", 4]]
    body["rows"] = {0: ["ab", 0, "c", 1]}
    newer = unpack(frame_of(body))
    assert isinstance(newer, Rows)
    assert newer.screen.rows[0][:3] == [
        Char("a", "red", bold=True, dim=True),
        Char("b", "red", bold=True, dim=True),
        Char("c", underscore=True),
    ]


def test_a_mirror_forgets_history_lines_a_grown_screen_took_back() -> None:
    """A screen that grows taller takes its newest history lines back onto its top rows, and their numbers go to
    the next lines to scroll away. A client that kept those lines by number, and was sent no state in between (a
    host that fell behind sends one snapshot), must not show the old lines under the new lines' numbers."""
    screen = StemScreen(40, 10, scrollback=100)
    screen.feed(b"".join(b"old %d\r\n" % i for i in range(30)))
    mirror = ScreenMirror()
    snapshot = unpack(pack(Snapshot(screen_state(screen))))
    assert isinstance(snapshot, Snapshot)
    mirror.apply(snapshot)
    held = len(screen.scrollback)
    mirror.scrollback.store(scrollback_page(screen, screen.scrollback.scrolled - held, held))
    assert mirror.scrollback.text(-1).rstrip() == "old 20"
    screen.resize(15, 40)  # 5 lines come back on top
    assert screen.text()[0].rstrip() == "old 16" and screen.scrollback.text(-1).rstrip() == "old 15"
    # The 5 rows rewritten, then scrolled away again: under the numbers the old lines had.
    screen.feed(b"".join(b"\x1b[%d;1Hnew %d\x1b[K" % (i + 1, i) for i in range(5)) + b"\x1b[15;1H" + b"\n" * 5)
    snapshot = unpack(pack(Snapshot(screen_state(screen))))
    assert isinstance(snapshot, Snapshot) and snapshot.screen.pulled == 5
    mirror.apply(snapshot)
    assert len(mirror.scrollback) == len(screen.scrollback)
    # Not the old lines: blank until fetched again, and asked for.
    assert [mirror.scrollback.text(i).rstrip() for i in range(-5, 0)] == [""] * 5
    assert mirror.scrollback.wanted
    held = len(screen.scrollback)
    mirror.scrollback.store(scrollback_page(screen, screen.scrollback.scrolled - held, held))
    assert [mirror.scrollback.text(i).rstrip() for i in range(-6, 0)] == ["old 15", *(f"new {i}" for i in range(5))]


# ------------------------------------------------------------------------------------------ a host and a mirror


class TinyHost:
    """A colony host reduced to the protocol: a real StemScreen that shows the keys it is sent (as an agent's echo
    would), a real ColonyLog and a service; it answers every request and pushes the screen's changed rows."""

    def __init__(self, tmp: Path, columns: int = 40, lines: int = 8, scrollback: int = 30) -> None:
        self.screen = StemScreen(columns, lines, scrollback=scrollback)
        self.log = ColonyLog(tmp / "colony.log")
        self.writers: list[asyncio.StreamWriter] = []

    def push_rows(self, writer: asyncio.StreamWriter) -> None:
        write_message(writer, Rows(screen_state(self.screen, self.screen.take_dirty())))

    def answer(self, msg: Message, writer: asyncio.StreamWriter) -> Reply:
        screen = self.screen
        if isinstance(msg, Subscribe):
            screen.take_dirty()  # the snapshot has every row: rows pushes start from here
            tail = tuple(self.log.tail(3))
            write_message(
                writer,
                Snapshot(
                    screen=screen_state(screen) if "screen" in msg.streams else None,
                    agent=AgentInfo("idle") if "states" in msg.streams else None,
                    services=(ServiceInfo("web", "ready", 3000),) if "states" in msg.streams else (),
                    log=tail if "logs" in msg.streams else (),
                    log_seq=self.log.last_seq,
                ),
            )
        elif isinstance(msg, Keys):
            screen.feed(msg.data)
            self.push_rows(writer)
        elif isinstance(msg, Resize):
            screen.resize(msg.lines, msg.columns)
            self.push_rows(writer)
        elif isinstance(msg, ScrollbackRequest):
            return Reply(msg.id, result=scrollback_page(screen, msg.start, msg.count))
        elif isinstance(msg, LogHistory):
            entries = self.log.after(msg.after)
            return Reply(msg.id, result=LogPage(tuple(entries[: msg.limit]), more=len(entries) > msg.limit))
        elif isinstance(msg, Diff):
            return Reply(msg.id, result=DiffText(f"diff of {msg.path or 'everything'}\n"))
        elif isinstance(msg, RestartService) and msg.name != "web":
            return Reply(msg.id, f"no service named {msg.name}")
        return Reply(msg.id)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await accept_client(reader, writer, "alpha") is None:
            return
        self.writers.append(writer)
        try:
            while True:
                msg = await read_message(reader)
                write_message(writer, self.answer(msg, writer))
                await writer.drain()
        except ConnectionClosed:
            pass
        finally:
            writer.close()

    async def say_bye(self, reason: str) -> None:
        for writer in self.writers:
            write_message(writer, Bye(reason))
            await writer.drain()
            writer.close()


def assert_mirrors(mirror: ScreenMirror, screen: StemScreen) -> None:
    assert (mirror.columns, mirror.lines) == (screen.columns, screen.lines)
    for y in range(screen.lines):
        assert mirror.buffer[y] == source_cells(screen, y), f"row {y}"
    assert (mirror.cursor.x, mirror.cursor.y, mirror.cursor.hidden) == (
        screen.cursor.x,
        screen.cursor.y,
        screen.cursor.hidden,
    )
    assert mirror.text() == screen.text()
    assert mirror.default_char == screen.default_char
    assert mirror.app_cursor_keys == screen.app_cursor_keys
    assert mirror.bracketed_paste == screen.bracketed_paste
    assert mirror.alternate_screen == screen.alternate_screen
    assert mirror.title == screen.title
    assert len(mirror.scrollback) == len(screen.scrollback)


OUTPUT = [
    f"{CSI}1;32m$ {CSI}0mls\r\n{CSI}34mcore{CSI}0m  stem  中文.txt\r\n".encode(),
    "".join(f"line {i} {CSI}3{i % 8}mcoloured{CSI}0m é x\u0301\r\n" for i in range(25)).encode(),
    f"{CSI}?1h{CSI}?2004h\x1b]2;vim\x07{CSI}3;5H{CSI}7mselected{CSI}0m{CSI}?25l".encode(),
    f"{CSI}?1049h{CSI}Hfull screen {CSI}41m中{CSI}0m".encode(),
    f"{CSI}?1049l{CSI}?25h{CSI}?5h".encode(),
    "".join(f"more {i}\r\n" for i in range(40)).encode(),  # the scrollback (30 lines) is full: old lines drop
]


def test_a_mirror_follows_a_host_screen_through_snapshot_and_rows(tmp_path: Path) -> None:
    host = TinyHost(tmp_path)
    host.screen.feed(b"before anyone connected\r\n" + "".join(f"old {i}\r\n" for i in range(12)).encode())

    async def scenario() -> None:
        path = tmp_path / "alpha.sock"
        async with serving(path, host.handle), await Connection.open(path, "ui") as conn:
            updates = conn.updates()
            mirror = ScreenMirror()
            await conn.subscribe("screen")
            snapshot = await anext(updates)
            assert isinstance(snapshot, Snapshot) and snapshot.agent is None and snapshot.log == ()
            assert mirror.apply(snapshot) == set(range(8))
            assert_mirrors(mirror, host.screen)
            for chunk in OUTPUT:
                before = [mirror.row_version(y) for y in range(mirror.lines)]
                await conn.send_keys(chunk)
                rows = await anext(updates)
                assert isinstance(rows, Rows)
                changed = mirror.apply(rows)
                assert_mirrors(mirror, host.screen)
                assert changed == set(rows.screen.rows)
                assert all((mirror.row_version(y) != before[y]) == (y in changed) for y in range(mirror.lines)), (
                    "row versions move exactly for the rows that changed"
                )
            assert mirror.take_dirty() >= changed

            await conn.resize(30, 5)
            rows = await anext(updates)
            assert isinstance(rows, Rows)
            mirror.apply(rows)
            assert_mirrors(mirror, host.screen)

            # Scrollback: blank until fetched, then the host's lines, by their stable numbers.
            scrollback = mirror.scrollback
            assert len(scrollback) == 30 and scrollback.first > 0  # older lines were dropped
            assert scrollback.line(0) == [DEFAULT_CHAR] * 30
            assert scrollback.line(-1) and scrollback.wanted == {scrollback.first, scrollback.first + 29}
            scrollback.store(await conn.scrollback(scrollback.first, 30))
            assert scrollback.wanted == set()
            assert [scrollback.line(i) for i in range(30)] == [host.screen.scrollback.line(i) for i in range(30)]
            assert [scrollback.text(i) for i in range(30)] == [host.screen.scrollback.text(i) for i in range(30)]
            # New lines push the oldest out: what the mirror kept stays filed under the right line.
            await conn.send_keys(b"newest 1\r\nnewest 2\r\nnewest 3\r\nnewest 4\r\nnewest 5\r\nnewest 6\r\n")
            rows = await anext(updates)
            assert isinstance(rows, Rows)
            mirror.apply(rows)
            assert [scrollback.line(i) for i in range(30)][:24] == [host.screen.scrollback.line(i) for i in range(24)]
            assert len(scrollback.wanted) == 6  # only the new lines are missing

    asyncio.run(scenario())


def test_requests_are_answered_by_id_and_a_bye_ends_the_connection(tmp_path: Path) -> None:
    host = TinyHost(tmp_path)
    for i in range(5):
        host.log.append("web", f"request {i}")

    async def scenario() -> None:
        path = tmp_path / "alpha.sock"
        async with serving(path, host.handle), await Connection.open(path, "logs") as conn:
            updates = conn.updates()
            await conn.subscribe("logs", "states")
            snapshot = await anext(updates)
            assert isinstance(snapshot, Snapshot) and snapshot.screen is None
            assert [e.text for e in snapshot.log] == ["request 2", "request 3", "request 4"]
            assert snapshot.log_seq == 5 and snapshot.services == (ServiceInfo("web", "ready", 3000),)
            # Several requests in flight at once each get their own answer.
            page, diff, whole, _ = await asyncio.gather(
                conn.log_history(1, 2), conn.diff("src/a.py"), conn.diff(), conn.restart_service("web")
            )
            assert [e.text for e in page.entries] == ["request 1", "request 2"] and page.more
            assert (diff, whole) == ("diff of src/a.py\n", "diff of everything\n")
            with pytest.raises(RequestFailed, match=r"^colony host of alpha: no service named nope$"):
                await conn.restart_service("nope")
            await conn.paste("pasted")
            await conn.restart_agent()

            await host.say_bye("the colony is stopping")
            assert await anext(updates) == Bye("the colony is stopping")
            assert [u async for u in updates] == []
            with pytest.raises(ConnectionClosed, match="closed the connection: the colony is stopping"):
                await conn.restart_agent()

    asyncio.run(scenario())


def test_a_host_refusing_a_bad_hello_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "alpha.sock"
        host = TinyHost(tmp_path)
        async with serving(path, host.handle):
            reader, writer = await asyncio.open_unix_connection(str(path))
            write_message(writer, Keys(b"x", 1))  # no hello first
            answer = await read_message(reader)
            assert answer == Welcome("alpha", SUPPORTED_VERSIONS, None, "expected hello, got keys")
            assert await reader.read() == b""
            writer.close()

    asyncio.run(scenario())


def test_screen_modes_come_from_the_screen() -> None:
    screen = StemScreen(20, 4)
    screen.feed(f"{CSI}?1h{CSI}?2004h{CSI}?1000h{CSI}?1006h{CSI}?1049h".encode())
    assert screen_state(screen, ()).modes == ScreenModes(True, True, 1000, True, True, False)
    screen.feed(f"{CSI}?1003h{CSI}?5h".encode())
    modes = screen_state(screen, ()).modes
    assert (modes.mouse, modes.reverse_screen) == (1003, True)


def test_the_terminal_widget_draws_a_mirror_as_it_draws_the_screen() -> None:
    from rich.style import Style

    from stem.widgets.terminal import TerminalView

    screen = StemScreen(120, 40, scrollback=100)
    screen.feed(streams.colored_logs(90) + attributes_and_wide())
    mirror = ScreenMirror()
    snapshot = unpack(pack(Snapshot(screen_state(screen))))
    assert isinstance(snapshot, Snapshot)
    mirror.apply(snapshot)
    page = scrollback_page(screen, mirror.scrollback.first, len(mirror.scrollback))
    mirror.scrollback.store(page)
    view = TerminalView()
    base = Style(color="white", bgcolor="black")
    for y in range(screen.lines):
        assert view._render_row(mirror, y, -1, base) == view._render_row(screen, y, -1, base), f"row {y}"
    for i in range(len(screen.scrollback)):
        drawn = view._render_cells(mirror.scrollback.line(i), mirror.columns, -1, base)
        assert drawn == view._render_cells(screen.scrollback.line(i), screen.columns, -1, base), f"line {i}"
