"""Keys as the user's terminal sends them, through Stem's parser, come out for the agent as xterm sends them: a table
of xterm's bytes fed to `StemParser` and encoded by `key_bytes` for the agent's modes; Esc and alt never lost or
turned into a caret; reports (paste, mouse, focus) still reach Textual; mouse reports encoded per tracking mode."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from textual import events
from textual.drivers.linux_driver import LinuxDriver

from core.xterm_input import encode_key, key_bytes, mouse_report
from stem.input_parser import UNKNOWN_KEY, StemDriver, StemParser, TerminalKey

ESC = "\x1b"
CSI = ESC + "["
SS3 = ESC + "O"


class Clock:
    """Textual's parser times the escape delay with `textual._time.get_time`: this one moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parse(monkeypatch: pytest.MonkeyPatch):
    """feed(*reads) -> the events of the reads: each read is followed by the escape delay passing (`pause`), or only
    the last one (`pause=False`: the reads come as quickly as keys typed in a burst)."""
    clock = Clock()
    monkeypatch.setattr("textual._parser.get_time", clock)
    parser = StemParser()

    def feed(*reads: str, pause: bool = True) -> list[object]:
        found: list[object] = []
        for i, data in enumerate(reads):
            found += parser.feed(data)
            if pause or i == len(reads) - 1:
                clock.now += 1.0  # longer than any escape delay
                found += parser.tick()
        return found

    return feed


def agent_bytes(found: list[object], app_cursor: bool = False, app_keypad: bool = False) -> bytes:
    keys = [e for e in found if isinstance(e, TerminalKey)]
    assert len(keys) == len(found), f"not only keys: {found}"
    return b"".join(key_bytes(k.key, k.character, k.sent, app_cursor=app_cursor, app_keypad=app_keypad) for k in keys)


# What xterm (and tmux, which sends what xterm sends) sends for keys, and what the agent must get for them in normal
# mode and in application cursor and keypad mode (DECCKM, DECKPAM).
XTERM = [
    # (sent by the user's terminal, normal modes, application modes)
    ("a", "a", "a"),
    ("é中", "é中", "é中"),
    ("\r", "\r", "\r"),
    ("\t", "\t", "\t"),
    ("\x7f", "\x7f", "\x7f"),
    ("\x08", "\x08", "\x08"),  # ctrl+h stays ctrl+h (Textual calls it backspace)
    ("\x01\x03\x1a\x00\x1c\x1f", "\x01\x03\x1a\x00\x1c\x1f", "\x01\x03\x1a\x00\x1c\x1f"),
    (ESC + "x", ESC + "x", ESC + "x"),
    (ESC + "b", ESC + "b", ESC + "b"),  # alt+b, not ctrl+left as Textual's table has it
    (ESC + "f", ESC + "f", ESC + "f"),
    (ESC + ":", ESC + ":", ESC + ":"),
    (ESC + "X", ESC + "X", ESC + "X"),
    (ESC + "\r", ESC + "\r", ESC + "\r"),
    (ESC + "\x7f", ESC + "\x7f", ESC + "\x7f"),  # alt+backspace, not ctrl+w
    (ESC + "\x18", ESC + "\x18", ESC + "\x18"),
    (ESC + "1", ESC + "1", ESC + "1"),  # not macOS's option+1
    (CSI + "A", CSI + "A", SS3 + "A"),
    (SS3 + "B", CSI + "B", SS3 + "B"),
    (CSI + "1;2A", CSI + "1;2A", CSI + "1;2A"),
    (CSI + "1;3D", CSI + "1;3D", CSI + "1;3D"),
    (CSI + "1;5C", CSI + "1;5C", CSI + "1;5C"),
    (CSI + "1;6B", CSI + "1;6B", CSI + "1;6B"),
    (CSI + "1;8C", CSI + "1;8C", CSI + "1;8C"),
    (CSI + "H", CSI + "H", SS3 + "H"),
    (CSI + "F", CSI + "F", SS3 + "F"),
    (CSI + "1~", CSI + "H", SS3 + "H"),  # tmux's Home
    (CSI + "4~", CSI + "F", SS3 + "F"),  # tmux's End
    (CSI + "1;2H", CSI + "1;2H", CSI + "1;2H"),
    (CSI + "1;5F", CSI + "1;5F", CSI + "1;5F"),
    (CSI + "5~" + CSI + "6~", CSI + "5~" + CSI + "6~", CSI + "5~" + CSI + "6~"),
    (CSI + "5;5~", CSI + "5;5~", CSI + "5;5~"),
    (CSI + "2~" + CSI + "3~", CSI + "2~" + CSI + "3~", CSI + "2~" + CSI + "3~"),
    (CSI + "3;2~", CSI + "3;2~", CSI + "3;2~"),
    (CSI + "2;3~", CSI + "2;3~", CSI + "2;3~"),
    (SS3 + "P" + SS3 + "Q" + SS3 + "R" + SS3 + "S",) * 3,
    (CSI + "15~" + CSI + "17~" + CSI + "24~",) * 3,
    (CSI + "1;2P", CSI + "1;2P", CSI + "1;2P"),
    (CSI + "1;2R", CSI + "1;2R", CSI + "1;2R"),  # shift+f3, not a cursor position report
    (CSI + "15;5~", CSI + "15;5~", CSI + "15;5~"),
    (CSI + "24;3~", CSI + "24;3~", CSI + "24;3~"),
    (CSI + "Z", CSI + "Z", CSI + "Z"),
    (SS3 + "q" + SS3 + "p", "10", SS3 + "q" + SS3 + "p"),  # the keypad in application mode
    (SS3 + "M", "\r", SS3 + "M"),
    (
        SS3 + "k" + SS3 + "m" + SS3 + "j" + SS3 + "o" + SS3 + "n",
        "+-*/.",
        SS3 + "k" + SS3 + "m" + SS3 + "j" + SS3 + "o" + SS3 + "n",
    ),
    (CSI + "25~", CSI + "25~", CSI + "25~"),  # F13: no name Stem rebuilds, so as it came
    (CSI + "99~", CSI + "99~", CSI + "99~"),  # no key at all: as it came, not Textual's "c"
]


@pytest.mark.parametrize(("sent", "normal", "application"), XTERM, ids=lambda v: repr(v))
def test_xterm_keys_reach_the_agent_as_xterm_sends_them(parse, sent: str, normal: str, application: str) -> None:
    found = parse(sent)
    assert agent_bytes(found) == normal.encode()
    assert agent_bytes(found, app_cursor=True, app_keypad=True) == application.encode()


def test_esc_followed_at_once_by_a_key_is_esc_then_that_key(parse) -> None:
    # Within the escape delay, in separate reads: `Esc :w` as a vim user types it.
    assert agent_bytes(parse(ESC, ":", "w", pause=False)) == b"\x1b:w"
    # An Esc alone, once the delay passed.
    assert agent_bytes(parse(ESC)) == b"\x1b"
    assert agent_bytes(parse(ESC + ESC)) == b"\x1b\x1b"
    # alt+x then alt+y: no caret (Textual's own parser made "^x" of this).
    assert agent_bytes(parse(ESC + "x" + ESC + "y")) == b"\x1bx\x1by"
    assert agent_bytes(parse("a", ESC + "x", "b", pause=False)) == b"a\x1bxb"
    # Esc then an arrow.
    assert agent_bytes(parse(ESC, CSI + "A", pause=False)) == b"\x1b\x1b[A"
    # alt+[ and alt+O, and what follows them when no sequence does.
    assert agent_bytes(parse(ESC + "[")) == b"\x1b["
    assert agent_bytes(parse(ESC + "O")) == b"\x1bO"
    assert agent_bytes(parse(ESC + "[1;", "x")) == b"\x1b[1;x"


def test_reports_are_still_textuals(parse) -> None:
    (paste,) = parse(f"{CSI}200~two\nlines{ESC}x{CSI}201~")
    assert isinstance(paste, events.Paste) and paste.text == f"two\nlines{ESC}x"
    down, up = parse(f"{CSI}<0;3;4M{CSI}<0;3;4m")
    assert isinstance(down, events.MouseDown) and (down.x, down.y, down.button) == (2, 3, 1)
    assert isinstance(up, events.MouseUp)
    (wheel,) = parse(f"{CSI}<64;1;1M")
    assert isinstance(wheel, events.MouseScrollUp)
    focus_in, focus_out = parse(f"{CSI}I{CSI}O")
    assert isinstance(focus_in, events.AppFocus) and isinstance(focus_out, events.AppBlur)
    (unknown,) = parse(f"{CSI}?99;1x")
    assert isinstance(unknown, TerminalKey) and unknown.key == UNKNOWN_KEY and unknown.sent == f"{CSI}?99;1x"


def test_keys_in_the_kitty_protocol_are_encoded_from_their_names(parse) -> None:
    # Stem leaves the kitty protocol off; a terminal that reports keys in it anyway still gives xterm's bytes.
    assert agent_bytes(parse(f"{CSI}97;5u")) == b"\x01"
    assert agent_bytes(parse(f"{CSI}27u")) == b"\x1b"
    assert agent_bytes(parse(f"{CSI}13u")) == b"\r"
    assert agent_bytes(parse(f"{CSI}57400u"), app_keypad=True) == b"\x1bOq"


def test_a_terminal_key_is_handled_as_any_key() -> None:
    assert TerminalKey.handler_name == events.Key.handler_name == "on_key"
    key = TerminalKey("alt+colon", ":", ESC + ":")
    assert isinstance(key, events.Key) and key.sent == ESC + ":"


def test_keys_made_up_by_the_app_are_encoded_from_their_names() -> None:
    assert encode_key("alt+colon", character=":") == b"\x1b:"
    assert encode_key("ctrl+shift+a") == b"\x01"
    assert encode_key("alt+shift+a") == b"\x1bA"
    assert key_bytes("up", None, None, app_cursor=True) == b"\x1bOA"
    assert key_bytes("super+c", "c", None) == b""  # xterm has no super


@pytest.mark.parametrize(
    ("action", "button", "tracking", "sgr", "mods", "report"),
    [
        ("press", 1, 1000, True, {}, f"{CSI}<0;5;3M"),
        ("release", 1, 1000, True, {}, f"{CSI}<0;5;3m"),
        ("press", 3, 1000, True, {"ctrl": True, "shift": True}, f"{CSI}<22;5;3M"),
        ("press", 2, 1000, False, {}, f"{CSI}M!%#"),
        ("release", 2, 1000, False, {}, f"{CSI}M#%#"),  # legacy: which button is not said
        ("wheel_up", 0, 1000, True, {}, f"{CSI}<64;5;3M"),
        ("wheel_down", 0, 1000, True, {"meta": True}, f"{CSI}<73;5;3M"),
        ("motion", 1, 1000, True, {}, ""),  # clicks only
        ("motion", 1, 1002, True, {}, f"{CSI}<32;5;3M"),  # drags
        ("motion", 0, 1002, True, {}, ""),
        ("motion", 0, 1003, True, {}, f"{CSI}<35;5;3M"),  # all motion
        ("press", 1, 9, True, {"ctrl": True}, f"{CSI}<0;5;3M"),  # X10: presses only, no modifiers
        ("release", 1, 9, True, {}, ""),
        ("wheel_up", 0, 9, True, {}, ""),
        ("press", 1, 0, True, {}, ""),  # not asked for
    ],
)
def test_mouse_reports(action, button: int, tracking: int, sgr: bool, mods: dict[str, bool], report: str) -> None:
    assert mouse_report(action, button, 4, 2, tracking=tracking, sgr=sgr, **mods) == report.encode("latin-1")


def test_legacy_mouse_reports_stop_where_a_byte_cannot_carry_the_cell() -> None:
    assert mouse_report("press", 1, 222, 0, tracking=1000, sgr=False) == bytes([27, 91, 77, 32, 255, 33])
    assert mouse_report("press", 1, 223, 0, tracking=1000, sgr=False) == b""
    assert mouse_report("press", 1, 300, 0, tracking=1000, sgr=True) == b"\x1b[<0;301;1M"


def test_stems_driver_input_loop_still_matches_textuals() -> None:
    """StemDriver repeats LinuxDriver.run_input_thread with its own parser: if Textual changes that loop, this fails
    and the copy must be reviewed (then the hash updated)."""
    source = inspect.getsource(LinuxDriver.run_input_thread)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "d796af6d69db337d", "review StemDriver.run_input_thread"
    assert StemDriver.run_input_thread is not LinuxDriver.run_input_thread
