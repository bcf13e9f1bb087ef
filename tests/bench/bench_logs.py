#!/usr/bin/env python3
"""Logs tab benchmark: Stem's Line API log view against a `RichLog` rebuilt the way the Logs tab did before it.

Run: `python3 tests/bench/bench_logs.py [--lines 5000] [--burst 1000] [--runs 7]`. No root, no colony.

Both widgets fill a headless 140x40 app (38 log rows) in the same process, on the same --lines lines: sources
setup/build/web/worker and a stderr one, requests, warnings and errors, one line in five with the program's own ANSI
colours. What is timed, the median of --runs runs, each from the same state:
  load     show the --lines lines (a colony selected).
  search   one keystroke of typing "error" in `/` (e, er, err, erro, error): the new view recomputes which lines match
           and renders the rows on screen (cold: no row cached for the new term); the reference clears the RichLog
           and writes every matching line again, as the old `_redraw` did.
  burst    --burst new lines, one `add` each as the app's event pump does, following: the new view appends, then
           runs its once-per-burst sync and renders the rows on screen; the reference writes each line.
Every figure includes rendering the visible rows with `render_line`, as a frame would.

Then the log file a colony's host writes: `core.colony_log.ColonyLog.extend` taking 100,000 lines of 100 characters
in batches of 64 (what one read of a service's pipe gives), beside the floor of a file kept open and written once per
batch with the same lines formatted the same way (plain `os.write`), both on the same temporary folder: lines per
second and the ratio (`file_*`).

stdout: a table, then as its last line one JSON object: `{op}_new_ms`, `{op}_richlog_ms` and `{op}_ratio` (the
reference's time over the new view's: above 1 means the new view is faster) for load, search (the median keystroke)
and burst, `search_{term}_new_ms` and `search_{term}_richlog_ms` per keystroke, `lines`, `burst_lines`, `runs`,
`rows`, `cpus` and, only if the run failed, `error`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchlib import print_table  # noqa: E402
from rich.style import Style  # noqa: E402
from rich.text import Text  # noqa: E402
from textual.app import App, ComposeResult  # noqa: E402
from textual.widget import Widget  # noqa: E402
from textual.widgets import RichLog, Static  # noqa: E402

from stem.hive_view import Clock  # noqa: E402
from stem.widgets.logs import LogLines, LogsView  # noqa: E402

SIZE = (140, 40)
TERMS = ("e", "er", "err", "erro", "error")
SOURCES = ("setup", "build", "web", "web!", "worker")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: float
    source: str
    text: str


def make_entries(count: int, start: int = 1) -> list[Entry]:
    """Log lines as services write them; every fifth has its own colours, some are warnings and errors."""
    entries = []
    for seq in range(start, start + count):
        source = SOURCES[seq % len(SOURCES)]
        if seq % 23 == 0:
            text = f"error: connection to db-{seq % 7} refused (attempt {seq % 5})"
        elif seq % 11 == 0:
            text = f"warning: slow query on items ({seq % 900} ms)"
        else:
            text = f"GET /api/items/{seq} 200 {seq % 97} ms - Mozilla/5.0 (X11; Linux x86_64)"
        if seq % 5 == 0:
            text = f"\x1b[32m{text[:3]}\x1b[0m{text[3:]} \x1b[2m[{seq % 13}]\x1b[0m"
        entries.append(Entry(seq, 1_767_225_600.0 + seq / 10, source, text))
    return entries


class RichLogReference:
    """The Logs tab before the Line API: a RichLog cleared and rewritten on every filter or search change."""

    def __init__(self, log: RichLog, clock: Clock, styles: dict[str, Style]) -> None:
        self.log = log
        self.clock = clock
        self.styles = styles
        self.entries: list[Entry] = []
        self.search = ""

    def show(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)[-5000:]
        self.redraw()

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if len(self.entries) > 5000:
            del self.entries[: len(self.entries) - 5000]
        if self.wanted(entry):
            self.write(entry)

    def set_search(self, search: str) -> None:
        self.search = search
        self.redraw()

    def wanted(self, entry: Entry) -> bool:
        return not self.search or self.search.lower() in entry.text.lower()

    def redraw(self) -> None:
        self.log.clear()
        for entry in self.entries:
            if self.wanted(entry):
                self.write(entry)
        self.log.scroll_end(animate=False)

    def write(self, entry: Entry) -> None:
        error = entry.source.endswith("!")
        text = Text.assemble(
            (self.clock.stamp(entry.at) + " ", self.styles["time"]),
            (f"{entry.source.rstrip('!'):>8} ", self.styles["error" if error else "source"]),
            (entry.text, self.styles["error"] if error else Style()),
        )
        if self.search:
            text.highlight_words([self.search], self.styles["match"], case_sensitive=False)
        self.log.write(text, scroll_end=True)


class NewApp(App[None]):
    CSS_PATH = ROOT / "stem" / "stem.tcss"

    def compose(self) -> ComposeResult:
        yield LogsView(Clock(), id="logs")


class ReferenceApp(App[None]):
    CSS = "RichLog { height: 1fr; }"

    def compose(self) -> ComposeResult:
        yield Static("the status line")
        yield RichLog(max_lines=5000, wrap=False, markup=False, highlight=False)


def render_visible(widget: Widget) -> int:
    """Render every row on screen through the Line API, as a frame does; the number of rows."""
    height = widget.scrollable_content_region.height
    for y in range(height):
        widget.render_line(y)
    return height


def timed(prepare: Callable[[], None], work: Callable[[], None], runs: int) -> float:
    """The median of `runs` timings of `work` in ms, `prepare` (untimed) before each."""
    samples = []
    for _ in range(runs):
        prepare()
        start = time.perf_counter()
        work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def bench_new(entries: list[Entry], burst: list[Entry], runs: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    app = NewApp()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(LogsView)
        lines = app.query_one(LogLines)
        await pilot.pause()

        def load() -> None:
            view.show("bench", entries)
            render_visible(lines)

        figures["load"] = timed(lambda: view.show(None, ()), load, runs)
        figures["rows"] = render_visible(lines)
        for i, term in enumerate(TERMS):

            def cold(i: int = i) -> None:
                view.show("bench", entries)
                for previous in TERMS[:i]:
                    lines.set_filter(None, previous)
                lines._cache.clear()  # a term typed for the first time: no row of it rendered yet

            def keystroke(term: str = term) -> None:
                lines.set_filter(None, term)
                render_visible(lines)

            figures[f"search_{term}"] = timed(cold, keystroke, runs)

        def fresh() -> None:
            view.show(None, ())
            view.show("bench", entries)
            render_visible(lines)

        def append_burst() -> None:
            for entry in burst:
                view.add(entry)
            lines._sync()  # what the widget runs once the burst's messages are processed
            render_visible(lines)

        figures["burst"] = timed(fresh, append_burst, runs)
        assert lines.last_seq == burst[-1].seq
    return figures


async def bench_reference(entries: list[Entry], burst: list[Entry], runs: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    app = ReferenceApp()
    async with app.run_test(size=SIZE) as pilot:
        log = app.query_one(RichLog)
        await pilot.pause()
        styles = {
            "time": Style(color="grey50"),
            "source": Style(color="cyan"),
            "error": Style(color="red"),
            "match": Style(bgcolor="yellow", bold=True),
        }
        reference = RichLogReference(log, Clock(), styles)

        def load() -> None:
            reference.show(entries)
            render_visible(log)

        def empty() -> None:
            reference.search = ""
            reference.show(())

        figures["load"] = timed(empty, load, runs)
        for i, term in enumerate(TERMS):

            def before(i: int = i) -> None:
                reference.search = TERMS[i - 1] if i else ""
                reference.show(entries)

            def keystroke(term: str = term) -> None:
                reference.set_search(term)
                render_visible(log)

            figures[f"search_{term}"] = timed(before, keystroke, runs)

        def fresh() -> None:
            reference.search = ""
            reference.show(entries)
            render_visible(log)

        def append_burst() -> None:
            for entry in burst:
                reference.add(entry)
            render_visible(log)

        figures["burst"] = timed(fresh, append_burst, runs)
    return figures


def bench_file(runs: int, lines: int = 100_000, batch: int = 64) -> tuple[float, float]:
    """Lines per second through ColonyLog and through a plain kept-open file, medians of `runs`."""
    import tempfile

    from core.colony_log import ColonyLog

    texts = [f"GET /api/items/{i} 200 " + "x" * 80 for i in range(batch)]
    ours: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(runs):
            log = ColonyLog(Path(folder) / f"colony{run}.log", max_bytes=1 << 40)
            start = time.perf_counter()
            for _ in range(lines // batch):
                log.extend("web", texts)
            ours.append(lines / (time.perf_counter() - start))
            log.close()
            fd = os.open(Path(folder) / f"plain{run}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            start = time.perf_counter()
            for _ in range(lines // batch):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                os.write(fd, "".join(f"{stamp} [web] {t}\n" for t in texts).encode())
            floor.append(lines / (time.perf_counter() - start))
            os.close(fd)
    return statistics.median(ours), statistics.median(floor)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000, help="lines shown before the search and the burst")
    parser.add_argument("--burst", type=int, default=1000, help="lines appended in one burst")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    result: dict[str, object] = {
        "lines": args.lines,
        "burst_lines": args.burst,
        "runs": args.runs,
        "cpus": os.cpu_count(),
    }
    table: list[tuple[str, str, str, str]] = []
    try:
        entries = make_entries(args.lines)
        burst = make_entries(args.burst, start=args.lines + 1)
        new = asyncio.run(bench_new(entries, burst, args.runs))
        reference = asyncio.run(bench_reference(entries, burst, args.runs))
        result["rows"] = int(new.pop("rows"))
        for term in TERMS:
            result[f"search_{term}_new_ms"] = round(new[f"search_{term}"], 3)
            result[f"search_{term}_richlog_ms"] = round(reference[f"search_{term}"], 3)
        new["search"] = statistics.median(new[f"search_{term}"] for term in TERMS)
        reference["search"] = statistics.median(reference[f"search_{term}"] for term in TERMS)
        for op in ("load", *(f"search_{term}" for term in TERMS), "search", "burst"):
            ratio = reference[op] / new[op]
            if not op.startswith("search_"):
                result[f"{op}_new_ms"] = round(new[op], 3)
                result[f"{op}_richlog_ms"] = round(reference[op], 3)
                result[f"{op}_ratio"] = round(ratio, 2)
            label = {"search": "search (median)", "burst": f"burst of {args.burst}"}.get(op, op.replace("_", " "))
            table.append((label, f"{new[op]:.2f}", f"{reference[op]:.2f}", f"{ratio:.1f}x"))
        ours, floor = bench_file(args.runs)
        result["file_lines_per_s"] = round(ours)
        result["file_plain_lines_per_s"] = round(floor)
        result["file_ratio"] = round(ours / floor, 2)
    except Exception as exc:  # the JSON line must still come out, saying what went wrong
        result["error"] = f"{type(exc).__name__}: {exc}"
    header = ("operation", "new ms", "RichLog ms", "RichLog/new")
    print_table(
        f"Logs view at {SIZE[0]}x{SIZE[1]} over {args.lines} lines, median of {args.runs} runs",
        header,
        table,
    )
    if "file_ratio" in result:
        print_table(
            "Log file writes, batches of 64 lines of 100 characters",
            ("writer", "lines/s", "/ plain"),
            [
                ("ColonyLog.extend", f"{result['file_lines_per_s']:,}", f"{result['file_ratio']:.2f}x"),
                ("plain kept-open file (floor)", f"{result['file_plain_lines_per_s']:,}", "1.00x"),
            ],
        )
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
