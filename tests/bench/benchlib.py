"""What the benchmarks share: running their sections, the figures table they print, and ending their hive."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Run:
    """How a benchmark's run went: the load around it, why it stopped early (None if it did not), and what of it
    was still there after its cleanup (should be nothing)."""

    load_start: list[float]
    load_end: list[float]
    error: str | None
    leftovers: list[str]


def run_sections(sections: Callable[[], None], cleanup: Callable[[], list[str]], log: Callable[[str], None]) -> Run:
    """Run the benchmark's `sections`; whatever happens (an error, Ctrl-C), `cleanup` after, and say how it went."""
    load_start = [round(x, 2) for x in os.getloadavg()]
    error = None
    try:
        sections()
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        log("cleaning up")
        load_end = [round(x, 2) for x in os.getloadavg()]
        leftovers = cleanup()
    return Run(load_start, load_end, error, leftovers)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """`title`, then the rows under `header`, every column right-aligned to its widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(title)
    for line in (header, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))


async def destroy_hive(home: Path, prefix: str, pool: IPv4Network, log: Callable[[str], None]) -> None:
    """Destroy every colony of the benchmark's hive (hosts included), then gc what is left."""
    from core import claims
    from core.hive import Hive

    hive = Hive(home, prefix=prefix, pool=pool, stop_grace=2.0)
    try:
        for rec in hive.colonies():
            try:
                await hive.destroy(rec.name, force=True)
            except Exception as exc:
                log(f"warning: destroying {rec.name} failed: {type(exc).__name__}: {exc}")
        report = await hive.gc()
        for line in report.removed:
            log(f"gc removed {line}")
    finally:
        await hive.close()
        claims.release(prefix)  # the run's prefix and pool are free for the next one
