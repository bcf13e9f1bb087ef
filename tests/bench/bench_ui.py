#!/usr/bin/env python3
"""UI benchmark: keystroke-to-screen latency in the terminal widget while other colonies flood, and the cost of
redrawing a full 120x40 terminal.

Run as root: `python3 tests/bench/bench_ui.py [--keys 200] [--flooders 0,1,4]`.

Latency: the Stem app (headless, 160x45) on a real hive; one quiet colony's terminal has the focus and N other
colonies run `flood` (endless numbered lines) in their agents at the same time, in the same process and event
loop, as when they are all on screen in one `stem`. A sample is one key: from posting the key event to the app
until the terminal widget renders the row with the typed character in it (render_line, asked by the
compositor for the frame that shows it); the path covers key dispatch, encoding, the PTY write, the tty's
echo, the batched read, the screen feed, the ScreenChanged event, the frame coalescing and the row render.
Keys are typed ~30 a second; after each sample the next waits 20-40 ms (a fast typist).

Frame cost: a 120x40 terminal full of coloured text (16, 256 and true colour, bold, underline, reverse, one
wide-character row): `full_redraw_ms` renders all 40 rows with the row cache empty (the worst frame: every row
changed), `cached_redraw_ms` with the cache warm (a frame where only the cursor row changed). Medians of --frames.

stdout: a table, then as its last line one JSON object: `keystroke_p50_ms_floodN`, `keystroke_p99_ms_floodN`,
`keystroke_max_ms_floodN`, `samples_floodN` for each N, `full_redraw_ms`, `cached_redraw_ms`, `cpus`, and only
on failure `error`. Exit code 1 if the p99 with the most flooders is not under --target ms (default 50).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import destroy_hive  # noqa: E402
from helpers import make_repo  # noqa: E402
from textual import events  # noqa: E402
from textual.app import App, ComposeResult  # noqa: E402

from core.hive import Hive  # noqa: E402
from core.host.protocol import ScreenModes, screen_modes  # noqa: E402
from core.screen import StemScreen  # noqa: E402
from core.screen_queries import Link, Palette  # noqa: E402
from core.settings import Settings  # noqa: E402
from stem.app import StemApp  # noqa: E402
from stem.widgets.terminal import TerminalView  # noqa: E402

FAKE_AGENT = f"{sys.executable} {ROOT / 'tests' / 'fake_agent.py'}"
TYPED = "abcdefghijklmnopqrstuvwxyz"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def until(pilot: Any, predicate: Any, what: str, timeout: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await pilot.pause(0.01)


class Probe:
    """Watches the terminal's rendered rows for the line the typist expects."""

    def __init__(self, terminal: TerminalView) -> None:
        self.expect: str | None = None
        self.seen_at: float | None = None
        terminal.on_rendered = self.rendered

    def arm(self, text: str) -> None:
        self.expect = text
        self.seen_at = None

    def rendered(self, _row: int, strip: Any) -> None:
        if self.expect is not None and self.seen_at is None and strip.text.rstrip().endswith(self.expect):
            self.seen_at = time.perf_counter()


async def typing_latency(app: StemApp, pilot: Any, hive: Hive, target: str, keys: int) -> list[float]:
    """Type `keys` characters into `target`'s focused terminal; seconds from key event to rendered echo each."""
    terminal = app.query_one(TerminalView)
    session = hive.agent(target)
    assert session is not None
    probe = Probe(terminal)
    samples: list[float] = []
    line = "x" * 40  # start from a fresh line
    rng = random.Random(7)
    for i in range(keys):
        if len(line) >= 40:
            # A fresh prompt line now and then, so the typed line never wraps.
            session.write(b"\x15")  # ^U: the tty discards the line
            line = ""
            await until(pilot, lambda: session.screen.text()[session.screen.cursor.y].rstrip() == "fake-agent>", "kill")
        char = TYPED[i % len(TYPED)]
        line += char
        probe.arm("fake-agent> " + line)
        started = time.perf_counter()
        app.post_message(events.Key(char, char))
        await until(pilot, lambda: probe.seen_at is not None, f"the echo of {char!r}", timeout=10)
        assert probe.seen_at is not None
        samples.append(probe.seen_at - started)
        await asyncio.sleep(rng.uniform(0.02, 0.04))
    terminal.on_rendered = None
    return samples


async def latency_run(
    home: Path, prefix: str, pool: ipaddress.IPv4Network, repo: Path, counts: list[int], keys: int, figures: dict
) -> None:
    hive = Hive(home, prefix=prefix, pool=pool, stop_grace=2.0)
    app = StemApp(hive, Settings(path=Path(os.devnull)), cwd=repo, blink=False)
    flooders = [f"flood{i}" for i in range(max(counts))]
    names = ["typist", *flooders]
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            for name in names:
                log(f"spawning {name}")
                await hive.spawn(name, repo, agent=FAKE_AGENT)
            for name in names:
                await until(pilot, lambda n=name: hive.agent(n) is not None, f"{name}'s agent")
                session = hive.agent(name)
                await until(pilot, lambda s=session: any("fake-agent> " in r for r in s.screen.text()), "a prompt")
            app.open_terminal("typist")
            await until(pilot, lambda: app.query_one(TerminalView).has_focus, "the typist's terminal focused")
            for count in sorted(counts):
                for name in flooders[:count]:
                    hive.agent(name).write(b"flood 1000000000\r")  # type: ignore[union-attr]
                await pilot.pause(0.5)  # let the flood reach its steady state
                log(f"typing {keys} keys with {count} colonies flooding")
                samples = await typing_latency(app, pilot, hive, "typist", keys)
                ms = [s * 1000 for s in samples]
                figures[f"keystroke_p50_ms_flood{count}"] = round(statistics.median(ms), 2)
                figures[f"keystroke_p99_ms_flood{count}"] = round(pct(ms, 0.99), 2)
                figures[f"keystroke_max_ms_flood{count}"] = round(max(ms), 2)
                figures[f"samples_flood{count}"] = len(ms)
                for name in flooders[:count]:
                    hive.agent(name).write(b"\x03")  # type: ignore[union-attr]
    finally:
        await hive.close()
        await destroy_hive(home, prefix, pool, log)  # its colonies, what gc finds, and its claim on the prefix


class Frozen:
    """A session whose screen never changes: for timing frames."""

    def __init__(self, screen: StemScreen) -> None:
        self.screen = screen

    def write(self, data: bytes) -> None:
        pass

    def paste(self, text: str) -> None:
        pass

    def resize(self, columns: int, lines: int) -> None:
        self.screen.resize(lines, columns)

    @property
    def modes(self) -> ScreenModes:
        return screen_modes(self.screen)

    def row_links(self, y: int) -> list[Link]:
        return []

    def take_clipboard(self) -> list[str]:
        return []

    def set_palette(self, palette: Palette) -> None:
        pass


def coloured_screen(columns: int = 120, lines: int = 40) -> StemScreen:
    screen = StemScreen(columns, lines)
    rng = random.Random(3)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "the",
        "agent",
        "refactors",
        "the",
        "login",
        "module",
    ]
    out = []
    for y in range(lines - 1):
        parts = []
        width = 0
        while width < columns - 12:
            word = rng.choice(words)
            kind = rng.randrange(5)
            if kind == 0:
                sgr = f"\x1b[{rng.choice([31, 32, 33, 34, 35, 36, 91, 92, 93])}m"
            elif kind == 1:
                sgr = f"\x1b[38;5;{rng.randrange(256)}m"
            elif kind == 2:
                sgr = f"\x1b[38;2;{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}m"
            elif kind == 3:
                sgr = rng.choice(["\x1b[1m", "\x1b[4m", "\x1b[7m", "\x1b[3m"])
            else:
                sgr = "\x1b[48;5;236m"
            parts.append(f"{sgr}{word}\x1b[0m ")
            width += len(word) + 1
        if y == 5:
            parts = ["wide: 你好世界 emoji: 🚀✨ box: ┌─┐ " * 2]
        out.append("".join(parts))
    screen.feed(("\r\n".join(out)).encode())
    return screen


class FrameApp(App[None]):
    CSS = "TerminalView { width: 121; height: 40; }"

    def compose(self) -> ComposeResult:
        yield TerminalView()


async def frame_costs(frames: int) -> dict[str, float]:
    app = FrameApp()
    async with app.run_test(size=(121, 40)) as pilot:
        terminal = app.query_one(TerminalView)
        screen = coloured_screen()
        terminal.show("bench", Frozen(screen))
        await pilot.pause()
        assert (screen.columns, screen.lines) == (120, 40), (screen.columns, screen.lines)
        full: list[float] = []
        cached: list[float] = []
        for _ in range(frames):
            terminal._cache.clear()
            started = time.perf_counter()
            for y in range(40):
                terminal.render_line(y)
            full.append(time.perf_counter() - started)
            started = time.perf_counter()
            for y in range(40):
                terminal.render_line(y)
            cached.append(time.perf_counter() - started)
    return {
        "full_redraw_ms": round(statistics.median(full) * 1000, 3),
        "cached_redraw_ms": round(statistics.median(cached) * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=200, help="keystrokes per configuration (default 200)")
    parser.add_argument("--flooders", default="0,1,4", help="numbers of flooding colonies (default 0,1,4)")
    parser.add_argument("--frames", type=int, default=50, help="frames timed for the redraw cost (default 50)")
    parser.add_argument("--target", type=float, default=50.0, help="p99 target in ms with the most flooders")
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.flooders.split(",")})

    figures: dict[str, Any] = {"cpus": os.cpu_count()}
    error = None
    tmp = Path(tempfile.mkdtemp(prefix="stem-bench-ui-"))
    try:
        figures.update(asyncio.run(frame_costs(args.frames)))
        repo = make_repo(tmp / "repo")
        prefix = "u" + secrets.token_hex(2)
        pool = ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.{random.randrange(0, 256, 16)}.0/20")
        asyncio.run(latency_run(tmp / "home", prefix, pool, repo, counts, args.keys, figures))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'configuration':<34}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for count in counts:
        if f"keystroke_p50_ms_flood{count}" in figures:
            print(
                f"{f'keystroke, {count} colonies flooding':<34}"
                f"{figures[f'keystroke_p50_ms_flood{count}']:>10}"
                f"{figures[f'keystroke_p99_ms_flood{count}']:>10}"
                f"{figures[f'keystroke_max_ms_flood{count}']:>10}"
            )
    for key, label in (("full_redraw_ms", "120x40 redraw, every row"), ("cached_redraw_ms", "120x40 redraw, cached")):
        if key in figures:
            print(f"{label:<34}{figures[key]:>10}")
    if error:
        print(f"error: {error}")
        figures["error"] = error
    print(json.dumps(figures), flush=True)
    worst = figures.get(f"keystroke_p99_ms_flood{max(counts)}")
    return 1 if error or worst is None or worst >= args.target else 0


if __name__ == "__main__":
    sys.exit(main())
