#!/usr/bin/env python3
"""Merge pre-check benchmark: each colony's ahead/behind and "merges clean" / "conflicts", beside `git merge-tree`.

`python3 tests/bench/bench_merge.py [--colonies 20] [--runs 20] [--files 100] [--ls 10]`. Without --ls it needs no
root: it generates a repository of `--files` files and one worktree per colony on its own branch (a third change the
lines main changes afterwards, a third add a file of their own, a third change nothing), then times, after one
untimed warm-up, `--runs` times each:
  status_all   core.merge.merge_statuses of every colony (per repository one for-each-ref, one rev-list per
               colony side by side, one `git merge-tree --stdin` for all that diverged), per colony
  status_one   core.merge.merge_status of one colony (what a UI recomputes after that colony changed)
  merge_tree   `git merge-tree --write-tree main colony/X` alone, one process per colony: the reference
  overlaps     core.overlap.find_overlaps over every colony (each also has an uncommitted edit), per colony
With `--ls N` (as root) it also spawns N colonies through `stem spawn` in a throwaway hive (some with commits, one in
conflict) and times `stem ls --json` end to end, beside the same command with the merge status left out (the
reference: Hive.merge_statuses patched to return nothing), `--runs` times each, then destroys the hive.
With `--ui N` (as root) it runs the Stem app (headless) on a throwaway hive of N colonies (same shape, the fake
agent in each) and times keystrokes in the colonies list (`j`/`k`, `--keys` of them: from posting the key to the
highlight moving): first while idle, then while the app recomputes every colony's merge status and overlaps back
to back (asked every 20 ms: the debounced recompute runs in threads, its results redraw the rows).

Progress goes to stderr; stdout is a table and, as its last line, one JSON object: for each timed row R,
`{R}_p50_ms` and `{R}_p90_ms`; with --ls, `ls_json_p50_ms`, `ls_json_p90_ms`, `ls_json_ref_p50_ms`,
`ls_json_ref_p90_ms` and `ls_colonies`; with --ui, `ui_colonies`, `key_idle_p50_ms`, `key_idle_p99_ms`,
`key_recompute_p50_ms`, `key_recompute_p99_ms`, `key_recompute_max_ms`, `ui_recomputes_per_s` and
`ui_recompute_ms` (one recompute of every colony, as the app runs it); and `colonies`, `files`, `runs`, `cpus`. p90 is
`statistics.quantiles(n=10, method="inclusive")[-1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import destroy_hive, print_table

from core import merge, overlap
from core.registry import ColonyRecord

_ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
_ID = ["-c", "user.name=Bench", "-c", "user.email=bench@stem.invalid"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *_ID, *args], cwd=cwd, env=_ENV, check=True, capture_output=True, text=True).stdout


def p50_p90(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), statistics.quantiles(samples, n=10, method="inclusive")[-1]


def timed(fn: Callable[[], object], runs: int, per: int = 1) -> list[float]:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000 / per)
    return samples


def make_repo(path: Path, files: int) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        folder = path / f"dir{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"file{i}.txt").write_text("".join(f"file {i} line {n}\n" for n in range(40)))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")


def record(name: str, repo: Path, tree: Path, base: str) -> ColonyRecord:
    return ColonyRecord(
        name, 0, str(repo), "main", base, f"colony/{name}", str(tree), "", "", "", "", "", 30, "running", "", "", "",
        "", 0.0, 0.0, target="main",
    )  # fmt: skip


def precheck(colonies: int, files: int, runs: int, tmp: Path) -> dict[str, tuple[float, float]]:
    repo = tmp / "repo"
    make_repo(repo, files)
    base = git(repo, "rev-parse", "HEAD").strip()
    records = []
    for i in range(colonies):
        tree = tmp / f"c{i}"
        git(repo, "worktree", "add", "-q", "-b", f"colony/c{i}", str(tree), "main")
        target = tree / "dir0" / "file0.txt"
        if i % 3 == 0:
            target.write_text(target.read_text().replace("line 5\n", f"line 5 by c{i}\n"))
        elif i % 3 == 1:
            (tree / f"c{i}.txt").write_text("its own file\n")
        if i % 3 != 2:
            git(tree, "add", "-A")
            git(tree, "commit", "-q", "-m", f"c{i}")
        extra = tree / "dir1" / "file1.txt"
        extra.write_text(extra.read_text() + f"uncommitted by c{i}\n")
        records.append(record(f"c{i}", repo, tree, base))
    main_file = repo / "dir0" / "file0.txt"
    main_file.write_text(main_file.read_text().replace("line 5\n", "line 5 by main\n"))
    git(repo, "commit", "-q", "-am", "main moves")
    states = [s.state for s in merge.merge_statuses(records)]
    log(f"states: {', '.join(f'{s}: {states.count(s)}' for s in sorted(set(states)))}")

    def merge_tree_alone() -> None:
        for i in range(colonies):
            subprocess.run(
                ["git", "merge-tree", "--write-tree", "main", f"colony/c{i}"], cwd=repo, env=_ENV, capture_output=True
            )

    works = overlap.overlap_work(records)
    return {
        "status_all": p50_p90(timed(lambda: merge.merge_statuses(records), runs, per=colonies)),
        "status_one": p50_p90(timed(lambda: merge.merge_status(records[0]), runs)),
        "merge_tree": p50_p90(timed(merge_tree_alone, runs, per=colonies)),
        "overlaps": p50_p90(timed(lambda: overlap.find_overlaps(works), runs, per=colonies)),
    }


def ls_json(count: int, runs: int, tmp: Path) -> dict[str, Any]:
    repo = tmp / "ls-repo"
    make_repo(repo, 100)
    home = tmp / "home"
    prefix = "b" + secrets.token_hex(2)
    pool = ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.0.0/16")
    env = dict(_ENV, STEM_HOME=str(home), STEM_PREFIX=prefix, STEM_POOL=str(pool), XDG_CONFIG_HOME=str(tmp / "config"))
    stem = [sys.executable, "-m", "stem.cli"]
    try:
        for i in range(count):
            subprocess.run([*stem, "spawn", f"c{i}", "--repo", str(repo)], env=env, check=True, capture_output=True)
            tree = home / "worktrees" / f"c{i}"
            if i % 2 == 0:
                (tree / f"c{i}.txt").write_text("work\n")
                if i == 0:
                    (tree / "dir0" / "file0.txt").write_text("c0's version\n")
                git(tree, "add", "-A")
                git(tree, "commit", "-q", "-m", f"c{i}")
            log(f"spawned c{i}")
        (repo / "dir0" / "file0.txt").write_text("main's version\n")
        git(repo, "commit", "-q", "-am", "main moves")
        rows = json.loads(subprocess.run([*stem, "ls", "--json"], env=env, capture_output=True, text=True).stdout)
        log("merge states: " + ", ".join(f"{r['name']}: {r['merge']}" for r in rows))
        reference = (
            "import sys; from core.hive import Hive; from stem.cli import main\n"
            "async def nothing(self, names=None): return []\n"
            "Hive.merge_statuses = nothing\n"
            "sys.exit(main(['ls', '--json']))\n"
        )

        def run(argv: list[str]) -> None:
            subprocess.run(argv, env=env, check=True, capture_output=True)

        with_status = timed(lambda: run([*stem, "ls", "--json"]), runs)
        without = timed(lambda: run([sys.executable, "-c", reference]), runs)
    finally:
        asyncio.run(destroy_hive(home, prefix, pool, log))
    p50, p90 = p50_p90(with_status)
    ref50, ref90 = p50_p90(without)
    return {
        "ls_colonies": count,
        "ls_json_p50_ms": round(p50, 1),
        "ls_json_p90_ms": round(p90, 1),
        "ls_json_ref_p50_ms": round(ref50, 1),
        "ls_json_ref_p90_ms": round(ref90, 1),
    }


async def _ui_latency(count: int, keys: int, tmp: Path) -> dict[str, Any]:
    from textual import events

    from core.hive import Hive
    from core.settings import Settings
    from stem.app import StemApp
    from stem.widgets.colonies import ColoniesList

    repo = tmp / "ui-repo"
    make_repo(repo, 100)
    home = tmp / "ui-home"
    prefix = "b" + secrets.token_hex(2)
    pool = ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.0.0/16")
    agent = f"{sys.executable} {Path(__file__).resolve().parents[1] / 'fake_agent.py'}"
    out: dict[str, Any] = {"ui_colonies": count}
    hive = Hive(home, prefix=prefix, pool=pool, stop_grace=2.0)
    app = StemApp(hive, Settings(path=Path(os.devnull)), cwd=repo, blink=False)
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            for i in range(count):
                rec = await hive.spawn(f"c{i}", repo, agent=agent)
                tree = Path(rec.worktree)
                if i % 3 != 2:
                    (tree / f"c{i}.txt").write_text("work\n")
                    if i % 3 == 0:
                        (tree / "dir0" / "file0.txt").write_text(f"c{i}'s version\n")
                    git(tree, "add", "-A")
                    git(tree, "commit", "-q", "-m", f"c{i}")
                (tree / "dir1" / "file1.txt").write_text(f"uncommitted by c{i}\n")
                log(f"spawned c{i}")
            (repo / "dir0" / "file0.txt").write_text("main's version\n")
            git(repo, "commit", "-q", "-am", "main moves")
            colonies = app.query_one(ColoniesList)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not (colonies.option_count == count and len(app.live.merge) == count):
                if loop.time() > deadline:
                    raise TimeoutError("the list and its merge status")
                await pilot.pause(0.05)
            colonies.focus()
            await pilot.pause(0.1)
            moved: dict[str, float] = {}

            def highlighted(value: int | None) -> None:
                moved.setdefault(f"{value}", time.perf_counter())

            app.watch(colonies, "highlighted", highlighted, init=False)

            async def type_keys() -> list[float]:
                samples = []
                for n in range(keys):
                    now = colonies.highlighted or 0
                    key, want = ("j", now + 1) if now + 1 < count and n % 2 == 0 else ("k", max(0, now - 1))
                    if want == now:
                        key, want = "j", now + 1
                    moved.clear()
                    started = time.perf_counter()
                    app.post_message(events.Key(key, key))
                    while f"{want}" not in moved:
                        if time.perf_counter() - started > 10:
                            raise TimeoutError(f"key {key} to move the highlight to {want}")
                        await asyncio.sleep(0.0005)
                    samples.append((moved[f"{want}"] - started) * 1000)
                    await asyncio.sleep(random.uniform(0.02, 0.04))
                return samples

            log(f"typing {keys} keys, idle")
            idle = await type_keys()
            before, started = app.live.recomputes, time.perf_counter()
            busy = True

            async def keep_recomputing() -> None:
                while busy:
                    app.live.changed()
                    await asyncio.sleep(0.02)

            driver = asyncio.ensure_future(keep_recomputing())
            log(f"typing {keys} keys while the list recomputes")
            try:
                recomputing = await type_keys()
            finally:
                busy = False
                await driver
            elapsed = time.perf_counter() - started
            done = app.live.recomputes - before
            ms = sorted(recomputing)
            out.update(
                key_idle_p50_ms=round(statistics.median(idle), 2),
                key_idle_p99_ms=round(sorted(idle)[min(len(idle) - 1, round(0.99 * (len(idle) - 1)))], 2),
                key_recompute_p50_ms=round(statistics.median(ms), 2),
                key_recompute_p99_ms=round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 2),
                key_recompute_max_ms=round(ms[-1], 2),
                ui_recomputes_per_s=round(done / elapsed, 1),
                ui_recompute_ms=round(elapsed * 1000 / max(1, done), 1),
            )
    finally:
        await hive.close()
        await destroy_hive(home, prefix, pool, log)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--colonies", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--ls", type=int, default=0, metavar="N", help="also time `stem ls --json` with N colonies")
    parser.add_argument("--ui", type=int, default=0, metavar="N", help="also time keys in the app with N colonies")
    parser.add_argument("--keys", type=int, default=200, help="keys typed for --ui, idle and while recomputing")
    args = parser.parse_args()
    out: dict[str, Any] = {"colonies": args.colonies, "files": args.files, "runs": args.runs, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        figures = precheck(args.colonies, args.files, args.runs, Path(tmp))
        rows = [[name, f"{p50:.2f}", f"{p90:.2f}"] for name, (p50, p90) in figures.items()]
        print_table(f"ms per colony, {args.colonies} colonies, {args.files} files", ["", "p50", "p90"], rows)
        for name, (p50, p90) in figures.items():
            out[f"{name}_p50_ms"], out[f"{name}_p90_ms"] = round(p50, 2), round(p90, 2)
        if args.ls:
            found = ls_json(args.ls, args.runs, Path(tmp))
            out.update(found)
            print(
                f"stem ls --json, {args.ls} colonies: p50 {found['ls_json_p50_ms']} ms, p90 {found['ls_json_p90_ms']} "
                f"ms; without the merge status: p50 {found['ls_json_ref_p50_ms']} ms, p90 {found['ls_json_ref_p90_ms']}"
            )
        if args.ui:
            found = asyncio.run(_ui_latency(args.ui, args.keys, Path(tmp)))
            out.update(found)
            print(
                f"keys in the list, {args.ui} colonies: idle p50 {found['key_idle_p50_ms']} ms, p99 "
                f"{found['key_idle_p99_ms']} ms; while recomputing p50 {found['key_recompute_p50_ms']} ms, p99 "
                f"{found['key_recompute_p99_ms']} ms ({found['ui_recomputes_per_s']} recomputes/s, "
                f"{found['ui_recompute_ms']} ms each)"
            )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
