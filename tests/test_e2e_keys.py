"""End to end: keys pressed in a real terminal (tmux, driven with send-keys) reach an agent in the real `stem` UI
exactly as xterm sends them, for every mode the agent can ask for; and vim as the agent saves with Esc :w.

The agent is the fake agent's --hex mode: it logs every byte it reads and turns modes on when the test asks
(`.stem-modes` in its worktree). Each row of a table is the tmux keys sent, one send-keys call each (so they arrive
a few milliseconds apart, as typed), and the bytes xterm sends for them.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import FAKE_AGENT_PATH, make_repo, run_stem, wait_for
from test_e2e_hosts import Panes
from test_e2e_tmux import stem_command

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
KEYS_AGENT = f"{sys.executable} {FAKE_AGENT_PATH} --hex"
ESC = "\x1b"
CSI = ESC + "["
SS3 = ESC + "O"


@dataclass(frozen=True)
class Row:
    """Keys as tmux names them, each tuple one send-keys call, and what xterm sends the program for them."""

    calls: tuple[tuple[str, ...], ...]
    sent: bytes

    @classmethod
    def of(cls, *calls: str | tuple[str, ...], sent: str) -> Row:
        return cls(tuple((c,) if isinstance(c, str) else c for c in calls), sent.encode())

    def __str__(self) -> str:
        return " ".join(" ".join(call) for call in self.calls)


R = Row.of
TYPED = "az AZ 09 ~!@#$%^&*()_+-=[]{}|;':\",./<>?`"

# No mode asked for: xterm's normal cursor keys, numeric keypad.
NORMAL = [
    R(("-l", TYPED), sent=TYPED),
    R(("-l", "é中"), sent="é中"),
    R("Enter", sent="\r"),
    R("Tab", sent="\t"),
    R("BSpace", sent="\x7f"),
    R("BTab", sent=CSI + "Z"),
    R("C-a", sent="\x01"),
    R("C-e", sent="\x05"),
    R("C-c", sent="\x03"),
    R("C-d", sent="\x04"),
    R("C-z", sent="\x1a"),
    R("C-Space", sent="\x00"),
    R("C-\\", sent="\x1c"),
    R("C-_", sent="\x1f"),
    # Esc alone, and Esc followed at once by a key: ESC then the key, never dropped, never a caret.
    R("Escape", sent=ESC),
    R("Escape", ":", "w", sent=ESC + ":w"),
    R(("Escape", ":", "w"), sent=ESC + ":w"),
    R("Escape", "Escape", sent=ESC + ESC),
    R("Escape", "Up", sent=ESC + CSI + "A"),
    # Alt (meta) is ESC before the key, whatever the key.
    R("a", "M-x", "b", sent="a" + ESC + "xb"),
    R("M-x", "M-y", sent=ESC + "x" + ESC + "y"),
    R("M-b", "M-f", "M-d", sent=ESC + "b" + ESC + "f" + ESC + "d"),
    R("M-X", sent=ESC + "X"),
    R("M-:", sent=ESC + ":"),
    R("M-.", sent=ESC + "."),
    R("M-Enter", sent=ESC + "\r"),
    R("M-BSpace", sent=ESC + "\x7f"),
    R("C-M-x", sent=ESC + "\x18"),
    # Cursor keys, with modifiers in xterm's CSI 1;m form.
    R("Up", "Down", "Right", "Left", sent=CSI + "A" + CSI + "B" + CSI + "C" + CSI + "D"),
    R("S-Up", sent=CSI + "1;2A"),
    R("M-Left", sent=CSI + "1;3D"),
    R("C-Right", sent=CSI + "1;5C"),
    R("C-S-Down", sent=CSI + "1;6B"),
    R("Home", "End", sent=CSI + "H" + CSI + "F"),  # tmux sends CSI 1~ and CSI 4~ for these
    R("S-Home", sent=CSI + "1;2H"),
    R("C-End", sent=CSI + "1;5F"),
    R("PPage", "NPage", sent=CSI + "5~" + CSI + "6~"),
    R("C-PPage", sent=CSI + "5;5~"),
    R("IC", "DC", sent=CSI + "2~" + CSI + "3~"),
    R("S-DC", sent=CSI + "3;2~"),
    R("M-IC", sent=CSI + "2;3~"),
    R("F1", "F2", "F3", "F4", sent=SS3 + "P" + SS3 + "Q" + SS3 + "R" + SS3 + "S"),
    R("F5", "F6", "F7", "F8", sent=CSI + "15~" + CSI + "17~" + CSI + "18~" + CSI + "19~"),
    R("F9", "F10", "F11", "F12", sent=CSI + "20~" + CSI + "21~" + CSI + "23~" + CSI + "24~"),
    R("S-F1", sent=CSI + "1;2P"),
    R("S-F3", sent=CSI + "1;2R"),
    R("C-F5", sent=CSI + "15;5~"),
    R("M-F12", sent=CSI + "24;3~"),
    R("KP1", "KP0", sent="10"),
]

# DECCKM and DECKPAM: cursor keys in SS3 form, the keypad in application mode; modified keys are as before.
APPLICATION = [
    R("Up", "Down", "Right", "Left", sent=SS3 + "A" + SS3 + "B" + SS3 + "C" + SS3 + "D"),
    R("Home", "End", sent=SS3 + "H" + SS3 + "F"),
    R("C-Up", sent=CSI + "1;5A"),
    R("Escape", "Up", sent=ESC + SS3 + "A"),
    R("KP1", "KP0", "KP9", sent=SS3 + "q" + SS3 + "p" + SS3 + "y"),
    R("KP+", "KP-", "KP*", "KP/", "KP.", sent=SS3 + "k" + SS3 + "m" + SS3 + "j" + SS3 + "o" + SS3 + "n"),
    R("KPEnter", sent=SS3 + "M"),
    R("PPage", sent=CSI + "5~"),
]


@dataclass
class KeysAgent:
    """The hex agent of colony `keys` in the stem UI of tmux session `ui`, its terminal focused."""

    panes: Panes
    worktree: Path

    @property
    def log(self) -> Path:
        return self.worktree / ".stem-keys.bin"

    def received(self) -> bytes:
        try:
            return self.log.read_bytes()
        except FileNotFoundError:
            return b""

    def send(self, *args: str) -> None:
        self.panes("send-keys", "-t", "ui", *args)

    def expect(self, what: str, sent: bytes, calls: tuple[tuple[str, ...], ...]) -> None:
        """Make the send-keys `calls` and check that the agent then reads exactly `sent`."""
        before = len(self.received())
        for call in calls:
            self.send(*call)
        try:
            wait_for(lambda: len(self.received()) >= before + len(sent), 10, f"{what} to reach the agent")
        except AssertionError:
            raise AssertionError(f"{what}: the agent read {self.received()[before:]!r}, expected {sent!r}") from None
        got = self.received()[before:]
        assert got == sent, f"{what}: the agent read {got!r}, xterm sends {sent!r}"

    def table(self, rows: list[Row]) -> None:
        for row in rows:
            self.expect(str(row), row.sent, row.calls)

    modes_set = 0

    def modes(self, sequences: str) -> None:
        """Have the agent write `sequences` (mode changes) and wait until the UI shows it did, with those modes."""
        tmp = self.worktree / ".stem-modes.tmp"
        tmp.write_bytes(sequences.encode())
        os.replace(tmp, self.worktree / ".stem-modes")
        self.modes_set += 1
        self.panes.wait_in("ui", f"modes {self.modes_set}")

    def position_of(self, text: str) -> tuple[int, int]:
        """Where `text` is in the pane: (column, row), from 1 as mouse reports count."""
        for y, line in enumerate(self.panes.pane("ui").splitlines()):
            if text in line:
                return line.index(text) + 1, y + 1
        raise AssertionError(f"{text!r} is not in the pane:\n{self.panes.pane('ui')}")


@pytest.fixture
def keys_agent(hive_env, tmp_path):
    repo = make_repo(tmp_path / "repo")
    spawned = run_stem(hive_env.env, "spawn", "keys", "--repo", str(repo), "--agent", KEYS_AGENT)
    assert spawned.returncode == 0, spawned.stderr
    env = dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path))
    panes = Panes(env)
    try:
        panes.start("ui", stem_command(), repo)
        panes.wait_in("ui", "hex agent ready")
        panes("send-keys", "-t", "ui", "Enter")  # focus the terminal
        panes.wait_in("ui", "back to panels")
        yield KeysAgent(panes, hive_env.home / "worktrees" / "keys")
    finally:
        panes.kill()
        run_stem(hive_env.env, "stop", "keys")


def test_keys_reach_the_agent_as_xterm_sends_them(keys_agent: KeysAgent) -> None:
    keys_agent.table(NORMAL)
    keys_agent.modes(f"{CSI}?1h{ESC}=")
    keys_agent.table(APPLICATION)
    keys_agent.modes(f"{CSI}?1l{ESC}>")
    keys_agent.table([R("Up", sent=CSI + "A"), R("KP1", sent="1"), R("Home", sent=CSI + "H")])


def test_paste_focus_and_mouse_reports_follow_the_agents_modes(keys_agent: KeysAgent) -> None:
    agent = keys_agent
    agent.panes("set-buffer", "-b", "p", "two lines\nand é")
    # tmux pastes bracketed (the UI asks it to); the agent gets the brackets only once it asks for them.
    for bracketed in (False, True):
        if bracketed:
            agent.modes(f"{CSI}?2004h")
        text = "two lines\rand é"
        expected = (f"{CSI}200~{text}{CSI}201~" if bracketed else text).encode()
        before = len(agent.received())
        agent.panes("paste-buffer", "-p", "-b", "p", "-t", "ui")
        wait_for(lambda: len(agent.received()) >= before + len(expected), 10, "the paste")  # noqa: B023
        assert agent.received()[before:] == expected

    # Focus reports (1004): the user's terminal losing and regaining the focus, and the release chord.
    agent.expect("focus out before 1004", b"z", (("-l", f"{CSI}O"), ("z",)))  # nothing for the agent, then z
    agent.send("-l", f"{CSI}I")
    agent.modes(f"{CSI}?1004h")
    agent.expect("the terminal losing the focus", f"{CSI}O".encode(), (("-l", f"{CSI}O"),))
    agent.expect("the terminal regaining it", f"{CSI}I".encode(), (("-l", f"{CSI}I"),))
    agent.expect("the release chord", f"{CSI}O".encode(), (("C-]",),))
    agent.panes.wait_in("ui", "stop/start")
    agent.expect("focus back on the terminal", f"{CSI}I".encode(), (("Enter",),))
    agent.panes.wait_in("ui", "back to panels")

    # Mouse reports (1000 clicks and wheel, 1002 drags) in SGR form (1006), at the agent's own cells. The agent
    # clears its screen first, so "modes N" is at its top left cell.
    agent.modes(f"{CSI}2J{CSI}H{CSI}?1000h{CSI}?1006h")
    x, y = agent.position_of(f"modes {agent.modes_set}")
    agent.expect("a click", f"{CSI}<0;1;1M{CSI}<0;1;1m".encode(), (("-l", f"{CSI}<0;{x};{y}M{CSI}<0;{x};{y}m"),))
    agent.expect(
        "a right click elsewhere",
        f"{CSI}<2;5;3M{CSI}<2;5;3m".encode(),
        (("-l", f"{CSI}<2;{x + 4};{y + 2}M{CSI}<2;{x + 4};{y + 2}m"),),
    )
    agent.expect("the wheel", f"{CSI}<64;2;2M{CSI}<65;2;2M".encode(), (("-l", f"{CSI}<64;{x + 1};{y + 1}M"),
                 ("-l", f"{CSI}<65;{x + 1};{y + 1}M")))  # fmt: skip
    agent.expect("motion without 1002", b"z", (("-l", f"{CSI}<32;{x + 2};{y}M"), ("z",)))
    agent.modes(f"{CSI}2J{CSI}H{CSI}?1002h")
    x, y = agent.position_of(f"modes {agent.modes_set}")
    agent.expect(
        "a drag",
        f"{CSI}<0;1;1M{CSI}<32;3;1M{CSI}<0;3;1m".encode(),
        (("-l", f"{CSI}<0;{x};{y}M{CSI}<32;{x + 2};{y}M{CSI}<0;{x + 2};{y}m"),),
    )
    # Without mouse reporting the wheel is Stem's (it scrolls the history): the agent gets nothing.
    agent.modes(f"{CSI}?1002l{CSI}?1000l{CSI}?1006l")
    agent.expect("the wheel without 1000", b"z", (("-l", f"{CSI}<64;{x};{y}M"), ("z",)))


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed (.ci/run installs it)")
def test_vim_as_the_agent_saves_with_esc_colon_w(hive_env, tmp_path) -> None:
    repo = make_repo(tmp_path / "repo")
    spawned = run_stem(hive_env.env, "spawn", "vim", "--repo", str(repo), "--agent", "vim -N -u NONE -i NONE notes.txt")
    assert spawned.returncode == 0, spawned.stderr
    env = dict(hive_env.env, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path))
    panes = Panes(env)
    notes = hive_env.home / "worktrees" / "vim" / "notes.txt"
    try:
        panes.start("ui", stem_command(), repo)
        panes.wait_in("ui", "││~")  # vim's empty-buffer lines (its "notes.txt" message goes with a redraw)
        panes("send-keys", "-t", "ui", "Enter")
        panes.wait_in("ui", "back to panels")
        # Each key its own send-keys call, Esc followed at once by ':' as a vim user types it.
        for keys in (("i",), ("-l", "hello from stem"), ("Escape",), (":",), ("w",), ("Enter",)):
            panes("send-keys", "-t", "ui", *keys)
        wait_for(lambda: notes.exists() and notes.read_text() == "hello from stem\n", 20, "vim to write notes.txt")
        # Had the Esc been lost, ":w" would be in the buffer and nothing written.
    finally:
        panes.kill()
        run_stem(hive_env.env, "stop", "vim")
