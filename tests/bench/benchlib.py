"""What the benchmarks share: running their sections, the figures table they print, and ending their hive."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any


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


def summary(samples: Sequence[float]) -> tuple[float, float]:
    """(median, p90) in milliseconds of samples in seconds."""
    ms = [s * 1000 for s in samples]
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return statistics.median(ms), p90


def paired_figures(samples: Mapping[str, Sequence[float]], keys: Sequence[str]) -> dict[str, Any]:
    """For each key with samples under `key` and its reference under `ref_key`: median and p90 of both (ms) and
    their ratios, as the JSON figures name them."""
    out: dict[str, Any] = {}
    for key in keys:
        mine, ref = samples.get(key), samples.get(f"ref_{key}")
        if not mine or not ref:
            continue
        (mm, mp), (rm, rp) = summary(mine), summary(ref)
        out.update(
            {
                f"{key}_median_ms": round(mm, 2),
                f"{key}_p90_ms": round(mp, 2),
                f"ref_{key}_median_ms": round(rm, 2),
                f"ref_{key}_p90_ms": round(rp, 2),
                f"ratio_{key}_median": round(mm / rm, 3),
                f"ratio_{key}_p90": round(mp / rp, 3),
            }
        )
    return out
