"""What the benchmarks share: the figures table they print, and ending a benchmark's hive."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv4Network
from pathlib import Path


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
