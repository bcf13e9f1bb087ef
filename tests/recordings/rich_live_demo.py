#!/usr/bin/env python3
"""rich Live progress bars for capture.py: several tasks advanced in fixed steps, refreshed at a fixed rate.

No clocks are shown (no elapsed or remaining time columns) and the steps are fixed, so the bars drawn depend
only on how many refreshes happen between steps.
"""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

TASKS = ["clone worktree", "install deps", "build", "unit tests", "lint", "typecheck", "package", "upload"]
STEPS = 160


def main() -> None:
    columns = (SpinnerColumn(), TextColumn("[bold blue]{task.description}"), BarColumn(), TaskProgressColumn(),
               MofNCompleteColumn())  # fmt: skip
    with Progress(*columns, refresh_per_second=30) as progress:
        ids = [progress.add_task(name, total=STEPS + 20 * i) for i, name in enumerate(TASKS)]
        for step in range(STEPS + 20 * len(TASKS)):
            for i, task in enumerate(ids):
                progress.advance(task, 1 + (step + i) % 2)
            if step % 25 == 0:
                progress.console.print(f"[green]step {step}[/] [dim]checkpoint written[/]")
            time.sleep(1 / 60)


if __name__ == "__main__":
    main()
