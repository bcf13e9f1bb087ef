#!/usr/bin/env python3
"""Protocol encoding benchmark: what a colony host spends per update, and what a client spends to take it in.

Run: `python3 tests/bench/bench_protocol.py [--runs 7] [--min-time 0.2]`. Two cases on a 120x40 screen painted by
tests/recordings/streams.py's `fullscreen_redraw` (every row full of 256-colour words, bold on every other row, a
reversed status line):
  snapshot  every row (what a client gets on connect)
  rows5     5 changed rows (a typical `rows` message)

What is timed, in microseconds per message, the median of --runs runs of as many repetitions as fill --min-time:
  encode       `screen_state` (cells out of the StemScreen) + `pack` (styled runs, msgpack, frame): the host's work
  decode       `unpack` of that frame back to cells: the client's work
  json_dumps   the in-run reference: `json.dumps` of the very dict `pack` serialises (same runs, same styles)
  json_cells   the obvious alternative: `json.dumps` of every cell as [data, fg, bg, bold, ...]
Sizes are bytes: the frame, the same dict as JSON, the cells as JSON.

stdout: a table, then as its last line one JSON object with every figure: `{case}_{what}_us`, `{case}_frame_bytes`,
`{case}_json_bytes`, `{case}_json_cells_bytes`, `{case}_encode_vs_json_dumps` (encode time over json_dumps time),
`runs`, `cols`, `rows` and, only if the run failed, `error`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import print_table  # noqa: E402
from recordings import streams  # noqa: E402

from core.host.protocol import Rows, Snapshot, pack, screen_state, unpack  # noqa: E402
from core.screen import StemScreen  # noqa: E402

COLS, ROWS = 120, 40
DIRTY = (3, 11, 20, 27, 38)


def per_call(fn: Callable[[], object], runs: int, min_time: float) -> float:
    """Median seconds per call of `fn`, each run repeating it for at least `min_time` seconds."""
    fn()  # warm caches (shared cells, style lookups) as a running host has them
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_time / once))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def cells_json(screen: StemScreen, rows: list[int]) -> str:
    """Every cell of `rows` as a JSON list of its fields: what a host would send without styled runs."""
    out = {}
    for y in rows:
        row = screen.buffer[y]
        out[y] = [list(row[x]) for x in range(screen.columns)]
    return json.dumps(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per run")
    args = parser.parse_args()

    result: dict[str, object] = {"runs": args.runs, "cols": COLS, "rows": ROWS}
    table: list[tuple[str, ...]] = []
    try:
        screen = StemScreen(COLS, ROWS)
        screen.feed(streams.fullscreen_redraw(3))
        cases: dict[str, tuple[Callable[[], Snapshot | Rows], list[int]]] = {
            "snapshot": (lambda: Snapshot(screen_state(screen)), list(range(ROWS))),
            "rows5": (lambda: Rows(screen_state(screen, DIRTY)), list(DIRTY)),
        }
        for name, (make, rows) in cases.items():
            frame = pack(make())
            body = make().encode()
            dumped = json.dumps(body, ensure_ascii=False)
            naive = cells_json(screen, rows)
            assert unpack(frame) == make(), "the benchmark's frames must decode to what was sent"
            timings = {
                "encode": per_call(lambda make=make: pack(make()), args.runs, args.min_time),
                "decode": per_call(lambda frame=frame: unpack(frame), args.runs, args.min_time),
                "json_dumps": per_call(
                    lambda body=body: json.dumps(body, ensure_ascii=False), args.runs, args.min_time
                ),
                "json_cells": per_call(lambda rows=rows: cells_json(screen, rows), args.runs, args.min_time),
            }
            sizes = {"frame": len(frame), "json": len(dumped.encode()), "json_cells": len(naive.encode())}
            for what, seconds in timings.items():
                result[f"{name}_{what}_us"] = round(seconds * 1e6, 1)
            for what, size in sizes.items():
                result[f"{name}_{what}_bytes"] = size
            ratio = timings["encode"] / timings["json_dumps"]
            result[f"{name}_encode_vs_json_dumps"] = round(ratio, 2)
            table.append(
                (
                    name,
                    *(f"{timings[k] * 1e6:.0f}" for k in ("encode", "decode", "json_dumps", "json_cells")),
                    f"{ratio:.2f}x",
                    *(str(sizes[k]) for k in ("frame", "json", "json_cells")),
                )
            )
    except Exception as exc:  # the JSON line must still come out, saying what went wrong
        result["error"] = f"{type(exc).__name__}: {exc}"
    header = ("case", "encode", "decode", "json_dumps", "json_cells", "enc/dumps", "frame B", "json B", "cells B")
    print_table(
        f"microseconds per message at {COLS}x{ROWS}, median of {args.runs} runs; sizes in bytes",
        header,
        table,
    )
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
