#!/usr/bin/env python3
"""Capture what real programs write to a 120x40 PTY, for the screen tests: `python tests/recordings/capture.py`.

Writes, next to this file:
  seq.bin     `seq 1 20000`
  vim.bin     vim (no vimrc, no swap, no viminfo) on a generated file: move, search, set number, edit, undo, quit
  less.bin    `less -R` on generated coloured text: page down, search, go to end, quit
  curses.bin  a small Python curses program (curses_demo.py): boxes, colours, a scroll region, a counter

The capture is made deterministic by fixed inputs: a fixed environment (TERM=xterm-256color, LANG=C.UTF-8, an
empty HOME), generated files, and keys sent only once the program has gone quiet. Queries the programs send
(DA, DSR) are answered the way xterm would, so they do not wait on timeouts. The bytes are committed; rerun
only to refresh them.
"""

from __future__ import annotations

import os
import re
import select
import sys
import tempfile
import time
from pathlib import Path

from ptyprocess import PtyProcess

HERE = Path(__file__).parent
ROWS, COLS = 40, 120
QUIET = 0.4  # seconds without output that count as "the program is waiting for a key"


def _answer(chunk: bytes, proc: PtyProcess, cursor: tuple[int, int]) -> None:
    """Answer terminal queries so programs do not stall; the answers do not change what they draw."""
    if b"\x1b[c" in chunk or b"\x1b[0c" in chunk:
        proc.write(b"\x1b[?62;22c")
    if b"\x1b[>c" in chunk:
        proc.write(b"\x1b[>41;330;0c")
    if b"\x1b[6n" in chunk:
        proc.write(f"\x1b[{cursor[0]};{cursor[1]}R".encode())


def _drain(proc: PtyProcess, out: bytearray, quiet: float) -> bool:
    """Read until nothing arrives for `quiet` seconds; False once the program has exited."""
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
        _answer(chunk, proc, (1, 1))


def capture(argv: list[str], keys: list[bytes], cwd: Path, home: Path) -> bytes:
    """Run `argv` under a 120x40 PTY, send each of `keys` once output is quiet, return everything written."""
    env = {
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LINES": str(ROWS),
        "COLUMNS": str(COLS),
        "LESSHISTFILE": "-",
    }
    proc = PtyProcess.spawn(argv, cwd=str(cwd), env=env, dimensions=(ROWS, COLS))
    out = bytearray()
    try:
        alive = _drain(proc, out, QUIET)
        for key in keys:
            if not alive:
                raise RuntimeError(f"{argv[0]} exited before key {key!r}")
            proc.write(key)
            alive = _drain(proc, out, QUIET)
        deadline = time.monotonic() + 10
        while alive and time.monotonic() < deadline:
            alive = _drain(proc, out, QUIET)
            if proc.isalive():
                continue
            break
    finally:
        if proc.isalive():
            proc.terminate(force=True)
    return bytes(out)


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


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        _source_file(work / "colonies.py")
        _coloured_file(work / "coloured.txt")
        results = {
            "seq.bin": capture(["seq", "1", "20000"], [], work, home),
            "vim.bin": capture(
                ["vim", "-u", "NONE", "-i", "NONE", "-n", "-N", "colonies.py"],
                [b"20j", b":set number\r", b"/worktree\r", b"n", b"G", b"ggdd", b"ihello \x1b", b"u", b"50%", b":q!\r"],
                work,
                home,
            ),
            "less.bin": capture(
                ["less", "-R", "coloured.txt"],
                [b" ", b" ", b"/line 99\r", b"G", b"g", b"q"],
                work,
                home,
            ),
            "curses.bin": capture(
                [sys.executable, str(HERE / "curses_demo.py")],
                [b"a", b"b", b"c", b"q"],
                work,
                home,
            ),
        }
    for name, data in results.items():
        (HERE / name).write_bytes(data)
        escapes = len(re.findall(rb"\x1b", data))
        print(f"{name}: {len(data)} bytes, {escapes} escapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
