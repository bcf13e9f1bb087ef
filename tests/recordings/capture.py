#!/usr/bin/env python3
"""Capture what real programs write to a 120x40 PTY, for the screen tests: `python tests/recordings/capture.py`.

Writes, next to this file (`capture.py NAME...` refreshes only those, e.g. `capture.py top.bin`):
  seq.bin       `seq 1 20000`
  vim.bin       vim (no vimrc, no swap, no viminfo) on a generated file: move, search, set number, edit, undo, quit
  less.bin      `less -R` on generated coloured text: page down, search, go to end, quit
  curses.bin    a small Python curses program (curses_demo.py): boxes, colours, a scroll region, a counter
  textual.bin   a full-screen Textual app (textual_demo.py): a table, a log and progress bars repainting on a
                timer for 120 ticks, in truecolour
  rich_live.bin rich Live progress bars (rich_live_demo.py): eight bars redrawn in place, lines printed above
  rich_demo.bin rich's own demo, `python3 -m rich`, in truecolour
  git_log.bin   `git log -p --color=always` on this repository: 12 commits back from a fixed commit
  ls.bin        `ls -laR --color=always` on a generated tree (fixed names, sizes, modes and times, TZ=UTC)
  top.bin       `top` refreshing 25 times, 0.2 s apart
  htop.bin, nano.bin, mc.bin, ncdu.bin, dialog.bin, vim_syntax.bin (syntax on, splits), less_chop.bin (-S,
  sideways), man.bin, top_colour.bin (colours, bold, per-CPU), tmux.bin (tmux running vim and a shell in splits):
                full-screen programs as users run them beside an agent, checked against pyte by the screen tests
  nvim.bin      Neovim (Debian's 0.7) with truecolour, spell checking and splits
  micro.bin     micro (Go, tcell) editing and searching; ranger.bin: ranger (Python curses) browsing a tree
  emacs.bin, tig.bin, fzf.bin, fzf_height.bin, bat.bin, vim_cjk.bin, whiptail.bin, dialog_gauge.bin, gnu_screen.bin,
  ipython.bin, btop.bin, bash_readline.bin: more real programs (Debian's packages of those names, IPython from pip),
                on text with wide characters, emoji and combining marks (cjk.txt) and a generated git repository:
                emacs editing in split windows, tig's views, fzf full-screen with a preview and inline (--height),
                bat paging through less, vim editing CJK text in splits (list, nowrap), whiptail and dialog (a
                checklist, then a gauge), GNU screen's windows and splits, IPython's completion menus, btop's
                truecolour meters, bash's readline editing a line in the middle (ICH, DCH)
  vttest.bin    vttest's (Debian's vttest) cursor movement, screen feature and VT102 insert/delete tests, one run
                each, one after the other: origin mode, scroll regions, IL, DL, ICH, DCH, insert mode, tab stops
  claude.bin    Anthropic's Claude Code (`claude`, from npm; skipped when missing), offline, onboarding marked done:
                the API key dialog, the shortcuts, the slash-command menu walked, a prompt typed and edited, Ctrl-C
  codex.bin     OpenAI's Codex CLI (`codex`, from npm; skipped when missing), offline: its sign-in menu walked to
                the API key field, a key typed and edited

The capture is made deterministic by fixed inputs: a fixed environment (TERM=xterm-256color, COLORTERM=truecolor,
LANG=C.UTF-8, TZ=UTC, an empty HOME), generated files, and keys sent only once the program has gone quiet. Queries
the programs send (DA, DSR, DECRQM, OSC 10/11) are answered by a `StemScreen`, as in a colony, so they do not wait
on timeouts. What the timed
programs (Textual, rich Live, top) draw between refreshes depends on timing, and top shows the machine's
processes, so their bytes differ from one capture to the next. The bytes are committed; rerun only to refresh them.
"""

from __future__ import annotations

import os
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ptyprocess import PtyProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from core.screen import StemScreen

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
# The newest commit of the git log capture; if it is ever gone from the history, pick another.
GIT_LOG_TIP = "e361af33d63cfb5d6d9e9a733a8ff4725246600b"
ROWS, COLS = 40, 120
TMUX_VIM = "vim -u NONE -N colonies.py"
QUIET = 0.4  # seconds without output that count as "the program is waiting for a key"


def _drain(proc: PtyProcess, out: bytearray, quiet: float, screen: StemScreen) -> bool:
    """Read until nothing arrives for `quiet` seconds; False once the program has exited. Everything read goes
    through a `StemScreen` too, which answers the program's queries (DA, DSR, DECRQM, OSC 10/11) as Stem does, so
    programs neither stall nor draw differently than they would in a colony."""
    while True:
        ready, _, _ = select.select([proc.fd], [], [], quiet)
        if not ready:
            return True
        try:
            chunk = os.read(proc.fd, 65536)
        except OSError:
            return False
        if not chunk:
            return False
        out += chunk
        screen.queries.feed(chunk, screen.feed)


def capture(
    argv: list[str], keys: list[bytes], cwd: Path, home: Path, quiet: float = QUIET, env: dict[str, str] | None = None
) -> bytes:
    """Run `argv` under a 120x40 PTY, send each of `keys` once output has been quiet for `quiet` seconds, return
    everything written. `env` adds to the fixed environment."""
    env = (env or {}) | {
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LINES": str(ROWS),
        "COLUMNS": str(COLS),
        "LESSHISTFILE": "-",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = PtyProcess.spawn(argv, cwd=str(cwd), env=env, dimensions=(ROWS, COLS))
    out = bytearray()
    screen = StemScreen(COLS, ROWS)
    screen.set_responder(proc.write)
    try:
        alive = _drain(proc, out, quiet, screen)
        for key in keys:
            if not alive:
                raise RuntimeError(f"{argv[0]} exited before key {key!r}")
            proc.write(key)
            alive = _drain(proc, out, quiet, screen)
        deadline = time.monotonic() + 10
        while alive and time.monotonic() < deadline:
            alive = _drain(proc, out, quiet, screen)
            if proc.isalive():
                continue
            break
    finally:
        if proc.isalive():
            proc.terminate(force=True)
    return bytes(out)


# A key that is not real, and no auto-update: Claude Code otherwise updates its own global install from npm's registry.
_CLAUDE_ENV = {"ANTHROPIC_API_KEY": "sk-ant-not-a-real-key", "DISABLE_AUTOUPDATER": "1"}


def _claude(claude: str, work: Path, home: Path) -> bytes:
    """Claude Code at its prompt, offline: onboarding and the folder's trust marked done in its config, a key that
    is not real in the environment (it asks whether to use it), nothing sent to a model."""
    (home / ".claude.json").write_text(
        '{"hasCompletedOnboarding": true, "theme": "dark", '
        f'"projects": {{"{work}": {{"hasTrustDialogAccepted": true}}}}}}\n'
    )
    keys = [b"\x1b[A", b"\r", b"?", b"?", b"/", b"m", b"o", b"\x1b[B", b"\x1b[B", b"\x1b[A", b"\x7f", b"\x7f", b"\x7f"]
    keys += [b"write a function that adds two numbers", b"\x1b[D" * 7, b"\x7f\x7f\x7f", b"six", b"\x03", b"\x03"]
    return capture([claude], keys, work, home, quiet=1.5, env=_CLAUDE_ENV)


def _source_file(path: Path) -> None:
    lines = ['"""A generated module for the vim capture."""', "", "import os", ""]
    for i in range(120):
        lines.append(f"def colony_{i:03d}(agent, worktree=None):")
        lines.append(f'    """Spawn colony {i} and hand it to {{agent}}; returns its id."""')
        lines.append(f"    return hash((agent, worktree, {i})) % {1000 + i}  # 中文 é")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def _coloured_file(path: Path) -> None:
    rows = []
    for i in range(300):
        colour = 31 + i % 7
        rows.append(f"\x1b[{colour}m{i:04d}\x1b[0m \x1b[1mbold\x1b[0m line {i} of coloured text " + "~" * (i % 70))
    path.write_text("\n".join(rows) + "\n")


def _file_tree(root: Path) -> None:
    """A tree for `ls -laR`: directories, plain and executable files, symlinks (also dangling), a sticky
    world-writable directory and a FIFO, with fixed names, sizes, modes and times."""
    rng = random.Random(5)
    stamp = 1_700_000_000  # 2023-11-14, so ls shows a year rather than a time of day
    paths: list[Path] = []
    for a in range(12):
        for b in range(14):
            folder = root / f"pkg_{a:02d}" / f"module_{b:02d}"
            folder.mkdir(parents=True)
            paths.append(folder)
            for c in range(rng.randrange(8, 22)):
                kind = rng.randrange(10)
                name = f"{rng.choice(['alpha', 'beta', 'colony', 'agent', 'render'])}_{c:02d}"
                if kind < 6:
                    path = folder / f"{name}.{rng.choice(['py', 'txt', 'md', 'json', 'tar.gz', 'png'])}"
                    path.write_bytes(b"x" * rng.randrange(0, 50_000))
                    path.chmod(0o644)
                elif kind < 8:
                    path = folder / f"{name}.sh"
                    path.write_bytes(b"#!/bin/sh\n" * rng.randrange(1, 40))
                    path.chmod(0o755)
                elif kind == 8:
                    path = folder / f"{name}.link"
                    path.symlink_to(f"../module_{rng.randrange(20):02d}")  # some point nowhere
                else:
                    path = folder / f"{name}.tmp"
                    path.mkdir(mode=0o777)
                    path.chmod(0o1777)
                paths.append(path)
        fifo = root / f"pkg_{a:02d}" / "events.fifo"
        os.mkfifo(fifo)
        paths.append(fifo)
        paths.append(root / f"pkg_{a:02d}")
    paths.append(root)
    for i, path in enumerate(sorted(paths, reverse=True)):  # children before parents: listing does not touch
        os.utime(path, (stamp + i * 3607, stamp + i * 3607), follow_symlinks=False)


def _cjk_file(path: Path) -> None:
    """Lines of CJK, emoji, combining marks, a tab and box drawing, as editors and pagers show them."""
    lines = []
    for i in range(200):
        lines.append(
            f"{i:03d} 中文字幕 テスト 한국어 emoji 😀🎉 combining e\u0301 a\u0308 tab\there"
            f" wide「括弧」 {'─' * (i % 20)}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _git_repo(path: Path) -> None:
    """A repository of 40 commits with fixed authors, dates and contents (and a few tags), for tig."""
    env = os.environ | {
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(path),
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    for i in range(40):
        (path / f"file_{i % 7}.py").write_text("".join(f"line {j} of commit {i} 中文\n" for j in range(i % 13 + 3)))
        stamp = f"{1_700_000_000 + i * 3600} +0000"
        subprocess.run(["git", "-C", str(path), "add", "."], check=True, env=env)
        subprocess.run(
            ["git", "-C", str(path), "commit", "-q", "-m", f"Commit {i}: change file_{i % 7} ünïcode 漢字"],
            check=True,
            env=env | {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )
        if i % 10 == 5:
            subprocess.run(["git", "-C", str(path), "tag", f"v0.{i}"], check=True, env=env)


def main() -> int:
    wanted = set(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        _source_file(work / "colonies.py")
        _coloured_file(work / "coloured.txt")
        tree = work / "tree"
        tree.mkdir()
        _file_tree(tree)
        _cjk_file(work / "cjk.txt")
        _git_repo(work / "repo")
        down, up = b"\x1b[B", b"\x1b[A"
        app_down = b"\x1bOB"  # the down key where ncurses turned the keypad on (dialog)
        jobs = {
            "seq.bin": lambda: capture(["seq", "1", "20000"], [], work, home),
            "vim.bin": lambda: capture(
                ["vim", "-u", "NONE", "-i", "NONE", "-n", "-N", "colonies.py"],
                [b"20j", b":set number\r", b"/worktree\r", b"n", b"G", b"ggdd", b"ihello \x1b", b"u", b"50%", b":q!\r"],
                work,
                home,
            ),
            "less.bin": lambda: capture(
                ["less", "-R", "coloured.txt"],
                [b" ", b" ", b"/line 99\r", b"G", b"g", b"q"],
                work,
                home,
            ),
            "curses.bin": lambda: capture(
                [sys.executable, str(HERE / "curses_demo.py")],
                [b"a", b"b", b"c", b"q"],
                work,
                home,
            ),
            "textual.bin": lambda: capture([sys.executable, str(HERE / "textual_demo.py")], [], work, home),
            "rich_live.bin": lambda: capture([sys.executable, str(HERE / "rich_live_demo.py")], [], work, home),
            "rich_demo.bin": lambda: capture([sys.executable, "-m", "rich"], [], work, home),
            "git_log.bin": lambda: capture(
                ["git", "--no-pager", "log", "-p", "--color=always", "-n", "12", GIT_LOG_TIP], [], ROOT, home
            ),
            # git's own pager as git starts it (less with LESS=FRX: no alternate screen, the pages scroll the
            # main screen into the scrollback): paging down, a search, half pages, back, and to the end
            "git_pager.bin": lambda: capture(
                ["git", "log", "-p", "-n", "12", GIT_LOG_TIP],
                [b" "] * 6 + [b"/def \r", b"n", b"n", b"d", b"d", b"b", b"b", b"u", b"G", b"g", b" ", b"q"],
                ROOT,
                home,
            ),
            "ls.bin": lambda: capture(["ls", "-laR", "--color=always", "tree"], [], work, home),
            "top.bin": lambda: capture(["top", "-d", "0.2", "-n", "25"], [], work, home),
            # Full-screen programs as users run them beside an agent (htop, nano, mc, ncdu and dialog from Debian's
            # packages of those names; what they show of the machine differs from one capture to the next).
            "htop.bin": lambda: capture(["htop"], [b"t", b"\x1bOQ", b"\x1b", b"\x1b[B" * 5, b"q"], work, home),
            "nano.bin": lambda: capture(
                ["nano", "colonies.py"],
                [b"\x1b[B" * 30, b"hello world", b"\x17colony_050\r", b"\x0b", b"\x15", b"\x1b[6~", b"\x18", b"n"],
                work,
                home,
            ),
            "mc.bin": lambda: capture(
                ["mc"], [b"\x1b[B" * 3, b"\t", b"\x1b[B" * 2, b"\x1bOS", b"\x1b", b"\x1b0"], work, home
            ),
            "ncdu.bin": lambda: capture(
                ["ncdu", "/usr/share/doc"], [b"\x1b[B" * 5, b"\r", b"\x1b[B" * 3, b"?", b"q", b"q"], work, home
            ),
            "dialog.bin": lambda: capture(
                ["dialog", "--menu", "Pick one", "20", "60", "10"]
                + [word for i in range(30) for word in (str(i), f"item {i} with text")],
                [b"\r"],
                work,
                home,
            ),
            "vim_syntax.bin": lambda: capture(
                ["vim", "-u", "NONE", "-i", "NONE", "-n", "-N", "colonies.py"],
                [
                    b":syntax on\r",
                    b":set cursorline number\r",
                    b"30j",
                    b":vsplit\r",
                    b"\x17l",
                    b"50j",
                    b":split coloured.txt\r",
                    b"G",
                    b"ihello\x1b",
                    b"\x1b[5~",
                    b":qa!\r",
                ],
                work,
                home,
            ),
            "less_chop.bin": lambda: capture(
                ["less", "-RS", "coloured.txt"],
                [b"\x1b[C" * 3, b"/line 2\r", b"n", b"N", b"\x1b[D", b"50%", b"q"],
                work,
                home,
            ),
            "man.bin": lambda: capture(["man", "git-log"], [b" ", b" ", b"/--stat\r", b"n", b"G", b"q"], work, home),
            "top_colour.bin": lambda: capture(["top", "-d", "1"], [b"z", b"x", b"b", b"1", b"c", b"q"], work, home),
            # tmux itself inside the PTY: vim, a split running ls and seq, pane switches (tmux's own redraws)
            "tmux.bin": lambda: capture(
                ["tmux", "-L", f"stemcapture{os.getpid()}", "-f", "/dev/null", "new-session", TMUX_VIM],
                [b"20j", b'\x02"', b"ls -la /usr/bin | head -100\r", b"\x02%", b"seq 1 200\r", b"\x02o", b":q!\r"]
                + [b"exit\r"] * 2,
                work,
                home,
            ),
            # More real programs (Debian's packages; IPython from pip), with wide characters, emoji and combining marks
            "nvim.bin": lambda: capture(
                ["nvim", "--clean", "-n", "-i", "NONE", "colonies.py"],
                [
                    b":set number cursorline termguicolors spell\r",
                    b"30j",
                    b":vsplit coloured.txt\r",
                    b"G",
                    b"\x17l",
                    b"/worktree\r",
                    b"ohello wrold, a mispeled line\x1b",
                    b":set list\r",
                    b"\x06",
                    b"u",
                    b":qa!\r",
                ],
                work,
                home,
            ),
            "micro.bin": lambda: capture(
                ["micro", "-config-dir", str(home / "micro"), "colonies.py"],
                [b"\x1b[B" * 20, b"\x1b[F", b" # edited", b"\x06worktree\r", b"\x1b[5~", b"\x1a", b"\x11"],
                work,
                home,
            ),
            "ranger.bin": lambda: capture(
                ["ranger", "--clean", str(tree)],
                [b"j", b"j", b"l", b"j", b"h", b"zh", b"gg", b"q"],
                work,
                home,
            ),
            "emacs.bin": lambda: capture(
                ["emacs", "-nw", "-Q", "cjk.txt"],
                [
                    b"\x16" * 2,
                    down * 4,
                    b"\x1bf\x1bf",
                    b"hello ",
                    b"\x04" * 3,
                    b"\x0b",
                    b"\x19",
                    b"\x182",
                    b"\x16",
                    b"\x18o",
                    b"\x13colony\r",
                    b"\x1b>",
                    b"\x1b<",
                    b"\x181",
                    b"\x18\x03",
                    b"n",
                    b"yes\r",
                ],
                work,
                home,
                quiet=1.0,
            ),
            "tig.bin": lambda: capture(
                ["tig"],
                [b"j" * 5, b"\r", b"j" * 10, b" ", b"q", b"\x1b[6~", b"/Commit 1\r", b"n", b"q"],
                work / "repo",
                home,
            ),
            "fzf.bin": lambda: capture(
                ["sh", "-c", "find tree | sort | fzf --ansi --multi --preview 'echo {}; seq 1 30'"],
                [b"mod", b"_0", down * 3, b"\t\t", up, b"\x7f\x7f", b"alpha", b"\x15", b"\r"],
                work,
                home,
            ),
            "fzf_height.bin": lambda: capture(
                ["sh", "-c", "seq 1 300 | fzf --height 40% --reverse --border"],
                [b"1", b"2", down * 4, b"\x7f", b"\x1b"],
                work,
                home,
            ),
            "bat.bin": lambda: capture(
                ["batcat", "--paging=always", "--color=always", "--theme=TwoDark", "cjk.txt", "colonies.py"],
                [b" ", b" ", b"/emoji\r", b"n", b"G", b":n", b" ", b"q"],
                work,
                home,
                env={"PAGER": "less", "BAT_PAGER": "less -R"},
            ),
            "vim_cjk.bin": lambda: capture(
                ["vim", "-u", "NONE", "-i", "NONE", "-n", "-N", "cjk.txt"],
                [
                    b":set list number\r",
                    b"10j",
                    b"5l",
                    b"ixyz\x1b",
                    b"x",
                    b"4x",
                    b"dd",
                    b"P",
                    "O中文 new\x1b".encode(),
                    b"\x04",
                    b"\x15",
                    b":vsplit\r",
                    b"20j",
                    b"\x17w",
                    b"$",
                    b":set nowrap\r",
                    b"zl" * 10,
                    b":qa!\r",
                ],
                work,
                home,
            ),
            "whiptail.bin": lambda: capture(
                [
                    "sh",
                    "-c",
                    "whiptail --title 'Stem 中文' --radiolist 'Choose' 20 70 10 "
                    + " ".join(f"{i} 'option {i}' {'ON' if i == 3 else 'OFF'}" for i in range(15))
                    + "; whiptail --yesno 'Proceed?' 10 40",
                ],
                [down * 5, b" ", down * 10, b"\t", b"\r", b"\t", b"\r"],
                work,
                home,
            ),
            "dialog_gauge.bin": lambda: capture(
                [
                    "sh",
                    "-c",
                    "dialog --checklist 'Pick 中文' 20 70 12 "
                    + " ".join(f"{i} 'item {i} é' {'on' if i % 2 else 'off'}" for i in range(20))
                    + "; for i in $(seq 0 5 100); do echo $i; sleep 0.05; done"
                    + " | dialog --gauge 'Copying colonies 中文' 10 70 0",
                ],
                [app_down * 3, b" ", app_down * 12, b" ", b"\t", b"\r"],
                work,
                home,
            ),
            "gnu_screen.bin": lambda: capture(
                ["screen", "-q", "-S", f"stemcapture{os.getpid()}", "sh"],
                [
                    b"ls -la tree/pkg_00 | head -50\r",
                    b"cat cjk.txt | head -60\r",
                    b"\x01c",
                    b"seq 1 100\r",
                    b"\x01S",
                    b"\x01\t",
                    b"\x01c",
                    b"printf '\\033[31mred\\033[0m\\n'\r",
                    b"\x01n",
                    b"exit\r",
                    b"exit\r",
                    b"\x01\\",
                    b"y",  # quit: kills the windows left, so no detached session stays behind
                ],
                work,
                home,
                env={"SHELL": "/bin/sh", "PS1": "$ "},
            ),
            "ipython.bin": lambda: capture(
                [sys.executable, "-m", "IPython", "--no-banner", "--colors=Linux", "--HistoryManager.enabled=False"],
                [
                    b"import o",
                    b"\t",
                    down * 2,
                    b"\t",
                    b"\r",
                    b"os.pa",
                    b"\t",
                    b"\t",
                    b"\r",
                    b"\r",
                    b"def f(x):\r",
                    b"return [i for i in range(x)]\r",
                    b"\r",
                    b"f(200)\r",
                    up,
                    b"\x15",
                    b"exit\r",
                ],
                work,
                home,
                quiet=0.8,
            ),
            "btop.bin": lambda: capture(
                ["btop", "--utf-force"], [b"m", down * 3, b"f", b"ab", b"\x1b", b"q"], work, home, quiet=0.6
            ),  # quiet under a second: btop redraws its clock every second
            "vttest.bin": lambda: b"".join(
                capture(["vttest", "24x80.80"], [menu] + [b"\r"] * returns + [b"0\r"], work, home)
                for menu, returns in ((b"1\r", 8), (b"2\r", 16), (b"8\r", 16))
            ),
            "bash_readline.bin": lambda: capture(
                ["bash", "--norc", "--noprofile", "-i"],
                [
                    "echo hello colony world 中文字 é and more text here".encode(),
                    b"\x1b[D" * 12,
                    b"INSERTED ",
                    b"\x1b[3~" * 5,
                    b"\x7f" * 3,
                    b"\x01",
                    b"\x1b[C" * 5,
                    b"xyz",
                    b"\x05",
                    b"\r",
                    b"for i in 1 2 3; do printf '%s\\t|\\n' $i; done\r",
                    up,
                    up,
                    b"\x1b[D" * 20,
                    b"\x04" * 4,
                    b"ab",
                    b"\x01\x0b",
                    b"ls tree/pkg_0\t\t",
                    b"\x01\x0b",
                    b"exit\r",
                ],
                work,
                home,
                env={"PS1": "\\u $ ", "INPUTRC": "/dev/null", "SHELL": "/bin/bash"},
            ),
        }
        codex = os.environ.get("STEM_CAPTURE_CODEX") or shutil.which("codex")
        if codex:
            jobs["codex.bin"] = lambda: capture(
                [codex],
                [b"\x1b[B", b"\x1b[B", b"\r", b"\r", b"sk-not-a-real-key", b"\x1b[D\x1b[D", b"\x7f", b"\x1b[C"],
                work,
                home,
                quiet=4.0,  # offline, Codex draws its first screen 2-3 s after it starts
            )
        elif not wanted or "codex.bin" in wanted:
            print("codex.bin: no codex here (npm install @openai/codex, or set STEM_CAPTURE_CODEX)", file=sys.stderr)
            if "codex.bin" in wanted:
                return 2
            wanted.discard("codex.bin")
        claude = os.environ.get("STEM_CAPTURE_CLAUDE") or shutil.which("claude")
        if claude:
            jobs["claude.bin"] = lambda: _claude(claude, work, home)
        elif not wanted or "claude.bin" in wanted:
            print(
                "claude.bin: no claude here (npm install @anthropic-ai/claude-code, or set STEM_CAPTURE_CLAUDE)",
                file=sys.stderr,
            )
            if "claude.bin" in wanted:
                return 2
            wanted.discard("claude.bin")
        unknown = wanted - set(jobs)
        if unknown:
            print(f"unknown recordings: {', '.join(sorted(unknown))}; known: {', '.join(jobs)}", file=sys.stderr)
            return 2
        results = {name: job() for name, job in jobs.items() if not wanted or name in wanted}
    for name, data in results.items():
        (HERE / name).write_bytes(data)
        escapes = len(re.findall(rb"\x1b", data))
        print(f"{name}: {len(data)} bytes, {escapes} escapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
