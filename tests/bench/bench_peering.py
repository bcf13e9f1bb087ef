#!/usr/bin/env python3
"""Peer snapshot benchmark: core.peering.sync_tree beside `rsync -a --no-links --exclude-from=FILE` in the same run.

Run: `python3 tests/bench/bench_peering.py [--files 5000] [--runs 7] [--changed 50]`. No root, no network; needs
rsync (`apt-get install -y rsync`). Makes a worktree of --files files (1-8 KiB, ten per folder, a few executable)
plus what the exclude list keeps out (node_modules with 500 files, .env files, .claude/, symlinks), then times,
--runs times each after one untimed warm-up, both tools writing into a folder of their own:
  first      a snapshot into an empty folder (a fresh one per run)
  unchanged  a refresh when nothing changed (every file compared by size and mtime)
  changed    a refresh after --changed files were rewritten (other content, new mtime) and as many added
The exclude file rsync reads holds core.peering.DEFAULT_EXCLUDE, which sync_tree uses too; both copies are checked
to hold the same files before timing.

stdout: a table (median ms, and sync_tree over rsync), then as its last line one JSON object: for each row R,
`{R}_ms` (sync_tree's median), `{R}_rsync_ms` and `{R}_ratio` (sync_tree / rsync, below 1 is faster); `files`,
`copied_files`, `runs`, `changed`, `cpus`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import print_table

from core.peering import DEFAULT_EXCLUDE, Excludes, sync_tree


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"pkg{i // 100}" / f"mod{(i // 10) % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"file{i}.py"
        path.write_bytes(os.urandom(512) * (1 + i % 16))
        if i % 50 == 0:
            path.chmod(0o755)
    for i in range(500):
        folder = root / "node_modules" / f"dep{i // 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"index{i}.js").write_text("module.exports = 1\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / "pkg0" / ".env.local").write_text("SECRET=2\n")
    (root / ".claude").mkdir()
    (root / ".claude" / "settings.json").write_text("{}\n")
    (root / "shadow").symlink_to("/etc/shadow")


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def median_ms(fn: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> float:
    if before:
        before()
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def clear(path: Path) -> None:
    if path.exists():
        for folder in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)  # sync_tree leaves folders read-only, as a snapshot is
        shutil.rmtree(path)
    path.mkdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--changed", type=int, default=50)
    args = parser.parse_args()
    rsync = shutil.which("rsync")
    if rsync is None:
        print("rsync is not installed: apt-get install -y rsync", file=sys.stderr)
        return 2
    excludes = Excludes(DEFAULT_EXCLUDE)
    out: dict[str, object] = {"files": args.files, "runs": args.runs, "changed": args.changed, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-peering-") as tmp_name:
        tmp = Path(tmp_name)
        source, mine, theirs = tmp / "worktree", tmp / "snapshot", tmp / "rsync"
        source.mkdir()
        log(f"making {args.files} files")
        make_tree(source, args.files)
        exclude_file = tmp / "exclude"
        exclude_file.write_text("\n".join(DEFAULT_EXCLUDE) + "\n")
        rsync_argv = [rsync, "-a", "--no-links", f"--exclude-from={exclude_file}", f"{source}/", f"{theirs}/"]

        def ours() -> None:
            fd = os.open(mine, os.O_RDONLY | os.O_DIRECTORY)
            try:
                sync_tree(source, fd, excludes)
            finally:
                os.close(fd)

        def reference() -> None:
            subprocess.run(rsync_argv, check=True, stderr=subprocess.DEVNULL)  # "skipping non-regular file"

        figures: dict[str, tuple[float, float]] = {}
        figures["first"] = (
            median_ms(ours, args.runs, lambda: clear(mine)),
            median_ms(reference, args.runs, lambda: clear(theirs)),
        )
        clear(mine)
        clear(theirs)
        ours()
        reference()
        if listing(mine) != listing(theirs):
            raise SystemExit(f"the copies differ: {sorted(listing(mine) ^ listing(theirs))[:10]}")
        out["copied_files"] = sum(1 for p in mine.rglob("*") if p.is_file())
        figures["unchanged"] = (median_ms(ours, args.runs), median_ms(reference, args.runs))

        counter = [0]
        targets = sorted(p for p in source.rglob("file*.py"))[: args.changed]

        def change() -> None:
            counter[0] += 1
            for i, path in enumerate(targets):
                path.write_bytes(os.urandom(700))
                (path.parent / f"new{counter[0]}_{i}.py").write_text("new\n")

        # Each tool gets its own changes: the reference, then ours, each before every timed run.
        figures["changed"] = (median_ms(ours, args.runs, change), median_ms(reference, args.runs, change))

    rows = []
    for name, (ms, ref) in figures.items():
        ratio = ms / ref
        rows.append([name, f"{ms:.1f}", f"{ref:.1f}", f"{ratio:.2f}"])
        out[f"{name}_ms"], out[f"{name}_rsync_ms"], out[f"{name}_ratio"] = round(ms, 1), round(ref, 1), round(ratio, 2)
    print_table(
        f"peer snapshot of {args.files} files (+ excluded), median of {args.runs} runs, ms",
        ["", "sync_tree", "rsync", "ratio"],
        rows,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
