#!/usr/bin/env python3
"""A scripted stand-in for an interactive AI coding agent CLI, for tests of PTYs, the TUI and activity detection.

It prints a coloured banner and the prompt `fake-agent> `, then reads lines (canonical tty mode: the tty echoes
what is typed). Every line is answered with `echo: <line>`, then run if it is a command (type `help`).
Arguments: --task TEXT prints `task: TEXT`; --continue prints `resumed`; --exit-after-banner N exits with N.
SIGWINCH prints `resized: <cols>x<rows>`; Ctrl-C interrupts the current command; EOF exits 0. Stdlib only.

--hex: a key echo instead. The terminal is put in raw mode and every read is printed as `hex: 1b 3a 77` and
appended, as it came, to `.stem-keys.bin` in the working directory. Whenever `.stem-modes` there changes, its
bytes are written to the terminal (mode sequences: `ESC [ ? 1 h` ...), followed by `modes N` (N counts changes).
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import time
from pathlib import Path

PROMPT = "fake-agent> "
ESC = "\x1b"

HELP = """\
commands:
  help            this list
  bell            ring the bell (BEL)
  color           one line in 16-colour, 256-colour and truecolour SGR
  hints           dim, concealed and double/over/curly-underlined text (agents' hints)
  size            print size: <cols>x<rows>
  write PATH TEXT write TEXT to PATH (relative to the working directory)
  flood N         print N numbered lines as fast as possible
  ask             ask for approval and wait for y/n
  clear           clear the screen and redraw the prompt
  cursor          save the cursor, write at row 5 col 10, restore it
  unicode         wide characters, emoji and a combining accent
  title TEXT      set the window title (OSC 0)
  copy TEXT       put TEXT on the clipboard (OSC 52)
  link URL TEXT   print TEXT as a hyperlink to URL (OSC 8)
  frames N        draw N screens in synchronized output (2026), each with a pause halfway
  spin S          show a busy spinner for S seconds
  env NAME        print env NAME=<value>
  pwd             print cwd: <directory>
  sleep S         sleep S seconds
  exit N          exit with code N"""

# Whether the program is waiting at its prompt, so an asynchronous message knows to redraw it.
_at_prompt = False


def out(text: str) -> None:
    """Write straight to fd 1: no buffering to flush, and safe to call from the SIGWINCH handler."""
    data = text.encode("utf-8", "replace")
    while data:
        written = os.write(1, data)
        data = data[written:]


def say(line: str = "") -> None:
    out(line + "\n")


def window_size() -> tuple[int, int]:
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        return size.columns, size.lines
    return 0, 0


def on_winch(_signum: int, _frame: object) -> None:
    cols, rows = window_size()
    if _at_prompt:
        out(f"\r\nresized: {cols}x{rows}\n{PROMPT}")
    else:
        say(f"resized: {cols}x{rows}")


def read_line() -> str | None:
    """One line from stdin, or None at end of input."""
    global _at_prompt
    _at_prompt = True
    try:
        raw = sys.stdin.buffer.readline()
    finally:
        _at_prompt = False
    if not raw:
        return None
    return raw.decode("utf-8", "replace").rstrip("\r\n")


def banner() -> None:
    say(f"{ESC}[1;38;5;208m✻ Fake Agent{ESC}[0m {ESC}[2mv1.0{ESC}[0m")
    say(f"{ESC}[2mA scripted stand-in for an AI coding agent. Type {ESC}[0;1mhelp{ESC}[0;2m for commands.{ESC}[0m")


def number(text: str, kind: type[int] | type[float]) -> int | float | None:
    try:
        return kind(text)
    except ValueError:
        say(f"error: not a number: {text!r}")
        return None


def run(line: str) -> int | None:
    """Run one command line; return an exit code to stop, else None."""
    word, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if word == "help":
        say(HELP)
    elif word == "bell":
        out("\a")
        say("bell")
    elif word == "color":
        say(
            f"{ESC}[31mred{ESC}[0m {ESC}[92mbright-green{ESC}[0m {ESC}[38;5;208morange-256{ESC}[0m "
            f"{ESC}[48;5;24mblue-bg-256{ESC}[0m {ESC}[38;2;255;105;180mpink-truecolor{ESC}[0m "
            f"{ESC}[1;4mbold-underline{ESC}[0m"
        )
    elif word == "hints":
        say(
            f"{ESC}[1mdone{ESC}[22m {ESC}[2mdim-hint{ESC}[22m {ESC}[1;2mbold-dim{ESC}[22m {ESC}[8msecret{ESC}[28m "
            f"{ESC}[21mdouble{ESC}[24m {ESC}[4:2mcolon-double{ESC}[4:0m {ESC}[53moverline{ESC}[55m "
            f"{ESC}[4:3mcurly{ESC}[4:0m plain"
        )
    elif word == "size":
        cols, rows = window_size()
        say(f"size: {cols}x{rows}")
    elif word == "write":
        path, _, text = rest.partition(" ")
        if not path:
            say("error: usage: write PATH TEXT")
            return None
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        say(f"wrote {path}")
    elif word == "flood":
        count = number(rest or "0", int)
        if count is None:
            return None
        # Build big chunks: the point is to produce output faster than a reader can draw it.
        chunk: list[str] = []
        for i in range(1, int(count) + 1):
            chunk.append(f"line {i:06d} the quick brown fox jumps over the lazy dog\n")
            if len(chunk) == 1000:
                out("".join(chunk))
                chunk.clear()
        out("".join(chunk))
    elif word == "ask":
        out("Do you want to proceed? (y/n) ")
        answer = read_line()
        if answer is None:
            return 0
        say("approved" if answer.strip().lower() in ("y", "yes") else "declined")
    elif word == "clear":
        out(f"{ESC}[2J{ESC}[H")
    elif word == "cursor":
        out(f"{ESC}7{ESC}[5;10H[cursor]{ESC}8")
        say("cursor: restored")
    elif word == "unicode":
        say("wide: 你好世界 emoji: 🚀✨ combining: e\u0301 box: ┌─┐")
        say("as agents write: ⚠️ warning, ✔️ done, 👨\u200d💻 dev, 🇨🇳 flag, 👍🏽 tone, the end")
    elif word == "title":
        out(f"{ESC}]0;{rest}\a")
        say(f"title: {rest}")
    elif word == "copy":
        out(f"{ESC}]52;c;{base64.b64encode(rest.encode()).decode()}\a")
        say("copied")
    elif word == "link":
        url, _, text = rest.partition(" ")
        say(f"see {ESC}]8;;{url}{ESC}\\{text}{ESC}]8;;{ESC}\\ here")
    elif word == "frames":
        count = number(rest or "1", int)
        if count is None:
            return None
        for i in range(1, int(count) + 1):
            # A terminal must show each frame whole: "begins" never without "ends".
            out(f"{ESC}[?2026h{ESC}[2J{ESC}[Hframe {i} begins\r\n")
            time.sleep(0.03)
            out(f"frame {i} ends\r\n{ESC}[?2026l")
        say("frames done")
    elif word == "spin":
        seconds = number(rest or "1", float)
        if seconds is None:
            return None
        frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            out(f"\r{frames[i % len(frames)]} working… ")
            i += 1
            time.sleep(0.05)
        say("\rdone            ")
    elif word == "env":
        value = os.environ.get(rest)
        say(f"env {rest}={value}" if value is not None else f"env {rest} is unset")
    elif word == "pwd":
        say(f"cwd: {os.getcwd()}")
    elif word == "sleep":
        seconds = number(rest or "1", float)
        if seconds is None:
            return None
        time.sleep(max(0.0, seconds))
        say(f"slept {rest}")
    elif word == "exit":
        code = number(rest or "0", int)
        return None if code is None else int(code)
    elif word:
        say(f"unknown command: {word} (try help)")
    return None


KEYS_LOG = ".stem-keys.bin"
MODES_FILE = ".stem-modes"


def hex_echo() -> int:
    """The --hex mode: print what is read as hex, log it, apply mode changes asked for through MODES_FILE."""
    import select
    import tty

    tty.setraw(0)
    changes = 0
    applied: bytes | None = None
    out("hex agent ready\r\n")
    with open(KEYS_LOG, "ab", buffering=0) as log:
        while True:
            # The timeout is how often the modes file is looked at, not a wait for anything.
            readable, _, _ = select.select([0], [], [], 0.02)
            if readable:
                data = os.read(0, 4096)
                if not data:
                    return 0
                log.write(data)
                out(f"hex: {data.hex(' ')}\r\n")
                continue
            try:
                wanted = Path(MODES_FILE).read_bytes()
            except FileNotFoundError:
                continue
            if wanted != applied:
                applied = wanted
                changes += 1
                os.write(1, wanted)
                out(f"modes {changes}\r\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake-agent", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--task", help="the task to start with")
    parser.add_argument("--continue", dest="resume", action="store_true", help="resume the last session")
    parser.add_argument("--exit-after-banner", type=int, metavar="N", help="print the banner, then exit with N")
    parser.add_argument("--hex", action="store_true", help="print every byte read as hex (see the docstring)")
    args = parser.parse_args(argv)
    if args.hex:
        return hex_echo()

    signal.signal(signal.SIGWINCH, on_winch)
    # Python only installs its Ctrl-C handler when SIGINT is not ignored at start; a launcher may ignore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    banner()
    if args.resume:
        say("resumed")
    if args.task is not None:
        say(f"task: {args.task}")
    if args.exit_after_banner is not None:
        return int(args.exit_after_banner)

    while True:
        try:
            out(PROMPT)
            line = read_line()
            if line is None:
                say()
                say("bye")
                return 0
            say(f"echo: {line}")
            code = run(line)
            if code is not None:
                return code
        except KeyboardInterrupt:
            # Like the real agents: Ctrl-C cancels what is running, it does not quit.
            say()
            say("interrupted")


if __name__ == "__main__":
    sys.exit(main())
