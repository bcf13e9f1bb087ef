#!/usr/bin/env python3
"""Isolation benchmark: spawn and `stem exec` with colony processes confined (core/sandbox.py) beside the same with
`[hive] isolation = false`, in one run, through the `stem` command a user types.

Run as root: `python3 tests/bench/bench_isolation.py [--runs 10] [--sizes 100,5000]`. One throwaway hive (temporary
STEM_HOME, a random prefix `i????`, a random pool) and one repository per size (files of 1-4 KB, one commit, a
colony.toml with one setup command and one service, so a spawn starts confined processes of every kind). The two
settings differ only in the config file the commands read (STEM_CONFIG). Each step runs once untimed, then `--runs`
times; isolation on and off take turns going first. Progress goes to stderr; stdout is a table and, as its last
line, one JSON object.

What is timed (on | off):
  spawn_N   `stem spawn` of an N-file repository until it returns (worktree, network, the colony's files given to its
            uid, the setup command, the host, the service and the agent started) | the same, isolation off
  exec      `stem exec NAME -- true` in a running colony, until it returns | the same, isolation off
  destroy_N `stem destroy --force` of that colony

JSON keys: for each row R, `{R}_median_ms`, `{R}_p90_ms` (on), `ref_{R}_median_ms`, `ref_{R}_p90_ms` (off),
`ratio_{R}_median`, `ratio_{R}_p90` (on divided by off: the goal is <= 1.1); `runs`, `files`, `cpus`, `prefix`,
`pool`, `missing` (what this kernel does not enforce), `leftovers` (namespaces or links of the run's prefix left after
cleanup; should be empty) and, only if the run failed, `error`.
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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchlib import destroy_hive, paired_figures, run_sections

from core import netns, sandbox
from core.privileges import require_netns_privileges

ROOT = Path(__file__).resolve().parents[2]

COLONY_TOML = """
[colony]
setup = ["echo set up > .setup-done"]

[services.web]
command = "python3 -m http.server 8000"
port = 8000
ready = "tcp"
"""


def log(text: str) -> None:
    print(f"[bench_isolation] {text}", file=sys.stderr, flush=True)


def make_repo(path: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    path.mkdir(parents=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
    for i in range(files):
        sub = path / f"d{i // 25 % 40}" / f"e{i // 1000}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_bytes(rng.randbytes(rng.randint(512, 2048)).hex().encode())
    (path / "colony.toml").write_text(COLONY_TOML)
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run(["git", *ident, "commit", "-q", "-m", "bench"], cwd=path, check=True, env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, runs: int, sizes: list[int]) -> None:
        self.runs = runs
        self.sizes = sizes
        taken = set(netns.list_namespaces()) | set(netns.list_links())
        while True:
            self.prefix = "i" + secrets.token_hex(2)
            if not any(n.startswith(self.prefix) for n in taken):
                break
        self.pool = ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.0.0/16")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stem-bench-{self.prefix}-"))
        self.home = self.tmp / "home"
        self.samples: dict[str, list[float]] = defaultdict(list)
        configs = {}
        for key, text in (("on", ""), ("off", "[hive]\nisolation = false\n")):
            configs[key] = self.tmp / f"config-{key}.toml"
            configs[key].write_text(text)
        base = dict(
            os.environ,
            STEM_HOME=str(self.home),
            STEM_PREFIX=self.prefix,
            STEM_POOL=str(self.pool),
            STEM_PREVIEW_PORT=str(free_port()),
            SHELL="/bin/sh",
        )
        self.env = {key: {**base, "STEM_CONFIG": str(path)} for key, path in configs.items()}

    def stem(self, mode: str, *args: str) -> float:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "stem.cli", *args],
            env=self.env[mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"stem {' '.join(args)} ({mode}): {done.stderr.strip() or done.stdout.strip()}")
        return seconds

    def sections(self) -> None:
        repos = {}
        for size in self.sizes:
            log(f"generating a {size}-file repository")
            repos[size] = self.tmp / f"repo{size}"
            make_repo(repos[size], size, seed=size)
        for size, repo in repos.items():
            log(f"{size} files: spawn and destroy, isolation on and off, {self.runs} runs")
            for i in range(-1, self.runs):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for mode in order:
                    name = f"{mode}{size}-{i + 1}"
                    spawned = self.stem(mode, "spawn", name, "--repo", str(repo))
                    destroyed = self.stem(mode, "destroy", name, "--force")
                    if i >= 0:
                        key = "" if mode == "on" else "ref_"
                        self.samples[f"{key}spawn_{size}"].append(spawned)
                        self.samples[f"{key}destroy_{size}"].append(destroyed)
        size = min(self.sizes)
        log(f"exec, isolation on and off, {self.runs * 3} runs")
        for mode in ("on", "off"):
            self.stem(mode, "spawn", f"x{mode}", "--repo", str(repos[size]))
        for i in range(-1, self.runs * 3):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for mode in order:
                seconds = self.stem(mode, "exec", f"x{mode}", "--", "true")
                if i >= 0:
                    self.samples["exec" if mode == "on" else "ref_exec"].append(seconds)

    def leftovers(self) -> list[str]:
        spaces = [n for n in netns.list_namespaces() if n.startswith(f"{self.prefix}-")]
        return spaces + [n for n in netns.list_links() if n.startswith(self.prefix) and n[len(self.prefix) :].isdigit()]

    def cleanup(self) -> list[str]:
        try:
            asyncio.run(destroy_hive(self.home, self.prefix, self.pool, log))
        except Exception as exc:
            log(f"warning: cleaning the hive failed: {type(exc).__name__}: {exc}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.leftovers()

    def figures(self) -> dict[str, Any]:
        keys = [f"{r}_{n}" for n in self.sizes for r in ("spawn", "destroy")] + ["exec"]
        return paired_figures(self.samples, keys)

    def table(self, figures: dict[str, Any]) -> list[str]:
        rows = [(f"{r} {n} files", f"{r}_{n}") for n in self.sizes for r in ("spawn", "destroy")]
        rows.append(("exec true", "exec"))
        lines = [
            f"Stem isolation benchmark: {self.runs} runs per size ({self.runs * 3} for exec), {os.cpu_count()} CPUs, "
            f"prefix {self.prefix}",
            "times in ms; ratio = isolation on / off (goal <= 1.1)",
            "",
            f"{'what':20}{'on median':>11}{'p90':>8}{'off median':>12}{'p90':>8}{'ratio':>8}{'p90':>6}",
        ]
        for label, key in rows:
            if f"{key}_median_ms" in figures:
                lines.append(
                    f"{label:20}{figures[f'{key}_median_ms']:11.1f}{figures[f'{key}_p90_ms']:8.1f}"
                    f"{figures[f'ref_{key}_median_ms']:12.1f}{figures[f'ref_{key}_p90_ms']:8.1f}"
                    f"{figures[f'ratio_{key}_median']:8.2f}{figures[f'ratio_{key}_p90']:6.2f}"
                )
        return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per size (default 10; exec: 3x)")
    parser.add_argument("--sizes", default="100,5000", help="repository sizes in files (default 100,5000)")
    args = parser.parse_args()
    require_netns_privileges("the isolation benchmark")
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args.runs, [int(s) for s in args.sizes.split(",") if s.strip()])
    run = run_sections(bench.sections, bench.cleanup, log)
    figures = bench.figures()
    for line in bench.table(figures):
        print(line)
    if run.error:
        print(f"error: {run.error}")
    if run.leftovers:
        print(f"warning: still present after cleanup: {', '.join(run.leftovers)}")
    result: dict[str, Any] = {
        "runs": bench.runs,
        "files": bench.sizes,
        "cpus": os.cpu_count(),
        "prefix": bench.prefix,
        "pool": str(bench.pool),
        "missing": list(sandbox.status(True)),
        "load_start": run.load_start,
        "load_end": run.load_end,
        **figures,
        "leftovers": run.leftovers,
    }
    if run.error:
        result["error"] = run.error
    print(json.dumps(result))
    return 1 if run.error else 0


if __name__ == "__main__":
    sys.exit(main())
