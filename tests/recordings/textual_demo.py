#!/usr/bin/env python3
"""A small full-screen Textual app for capture.py: a table, a log and progress bars repainting on a timer.

Every tick changes table cells, appends log lines, advances the bars and moves the table's cursor; the app
exits by itself after `TICKS` ticks. Data come from a seeded generator and no clock is shown, so what it draws
depends only on the tick count (how Textual batches frames still depends on timing).
"""

from __future__ import annotations

import random

from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Log, ProgressBar, Static

TICKS = 120
WORDS = ["colony", "agent", "worktree", "commit", "rebase", "merge", "socket", "render", "cursor", "stream"]


class Dashboard(App[None]):
    CSS = """
    #left { width: 2fr; }
    #right { width: 1fr; }
    DataTable { height: 1fr; }
    Log { height: 1fr; border: round $accent; }
    ProgressBar { height: 1; margin: 0 1; }
    #status { height: 1; background: $boost; }
    """

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal():
            with Vertical(id="left"):
                yield DataTable(id="table")
                yield Static(id="status")
            with Vertical(id="right"):
                for i in range(4):
                    yield ProgressBar(total=TICKS + 10 * i, id=f"bar{i}", show_eta=False)
                yield Log(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.rng = random.Random(7)
        self.tick = 0
        table = self.query_one(DataTable)
        table.add_columns("colony", "agent", "state", "tokens", "cost", "branch")
        for i in range(40):
            table.add_row(*self._row(i), key=str(i))
        self.set_interval(1 / 30, self._step)

    def _row(self, i: int) -> tuple[str, ...]:
        rng = self.rng
        state = rng.choice(["running", "idle", "building", "stopped"])
        return (f"colony-{i:02d}", rng.choice(WORDS), state, str(rng.randrange(10**6)), f"${rng.random() * 9:.2f}",
                f"{rng.choice(WORDS)}/{rng.choice(WORDS)}")  # fmt: skip

    def _step(self) -> None:
        self.tick += 1
        rng = self.rng
        table = self.query_one(DataTable)
        for _ in range(6):
            i = rng.randrange(40)
            table.update_cell(str(i), table.columns[list(table.columns)[3]].key, str(rng.randrange(10**6)))
            table.update_cell(str(i), table.columns[list(table.columns)[2]].key, rng.choice(["running", "idle"]))
        table.move_cursor(row=self.tick % 40)
        log = self.query_one(Log)
        for j in range(3):
            log.write_line(f"[{self.tick:04d}.{j}] {' '.join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9)))}")
        for i in range(4):
            self.query_one(f"#bar{i}", ProgressBar).advance(1 + i % 2)
        self.query_one("#status", Static).update(f"tick {self.tick} of {TICKS}  rows changed: 6")
        if self.tick >= TICKS:
            self.exit()


if __name__ == "__main__":
    Dashboard().run()
