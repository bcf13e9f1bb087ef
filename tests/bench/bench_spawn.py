#!/usr/bin/env python3
"""Spawn/destroy benchmark: Stem's colonies beside the same work done with `ip` commands and `git worktree add`.

Run as root: `python3 tests/bench/bench_spawn.py [--runs 20] [--sizes 100,5000] [--accumulate 30] [--pool CIDR]`.
It generates one repository per size (files of 1-4 KB in nested folders, one commit), uses a throwaway hive
(temporary STEM_HOME, a random prefix `b????`, the first half of a random pool 10.2XX.0.0/16 or of `--pool`; the
accumulate row's reference hive has the second half) and removes everything it made, even on failure or Ctrl-C.
Each step is run once untimed to warm caches, then `--runs` times; Stem and reference take turns going first.
Progress goes to stderr; stdout is a table and, as its last line, one JSON object.

What is timed (Stem | reference):
  net          core.netns.create (pyroute2, peer made inside the namespace) | 8 `ip` commands doing the same
  net_destroy  core.netns.destroy | `ip link del` + `ip netns del`
  worktree_N   core.worktree.add | `git worktree add -b <branch> <path> HEAD`
  spawn_N      Hive.spawn | ip network + git worktree add + SQLite file (WAL), one after the other
  destroy_N    Hive.destroy(force=True) | git worktree remove --force + git branch -D + ip link/netns del + rm
  limits_spawn_N    Hive.spawn of a colony.toml with [limits] (memory, cpus, pids: its cgroup made, limited, every
               process joining it) | the same spawn without them and with no cgroup at all (STEM_CGROUPS=0);
               N is the smallest size only
  limits_destroy_N  Hive.destroy of that colony (its cgroup ended and removed) | the same without a cgroup
  among_K      Hive.spawn of a colony.toml with one small web service (python3 -m http.server, ready on its
               port), as colonies accumulate: `--accumulate K` spawns one after another, each left running;
               among_1 is spawns #1-#5, among_K spawns #K-4-#K | the same spawn (then destroyed) in a second hive
               with one colony running, taking turns with each of them: what a hive's own running colonies (their
               registry rows, firewall table, preview routes, hosts) add to a spawn. Both hives keep one colony
               running throughout (a spawn into an empty hive starts the hive's host forker and proxy again)

JSON keys, N being each repository size in files: for each timed row R above, `{R}_median_ms` and `{R}_p90_ms`
(Stem), `ref_{R}_median_ms` and `ref_{R}_p90_ms` (reference), `ratio_{R}_median` and `ratio_{R}_p90` (Stem divided
by reference: below 1 means Stem is faster; for the limits rows, limits on divided by off: the goal is <= 1.1). Also
`runs`, `files` (the sizes), `accumulate` (K), `cpus`, `prefix`, `pool`, `cgroup` (the cgroup backend, v1 or v2),
`leftovers` (namespaces, links or cgroups with the run's prefixes still present after cleanup; should be empty) and,
only if the run failed, `error`. p90 is `statistics.quantiles(n=10, method="inclusive")[-1]` of the samples.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchlib import destroy_hive, paired_figures

from core import cgroups, netns, worktree
from core.hive import Hive
from core.netns import ColonyNet
from core.privileges import require_netns_privileges

_GIT_ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
FILES_PER_DIR = 25
# The two colony.toml of the limits row: the same but for [limits].
PLAIN_TOML = '[colony]\nenv = { BENCH = "1" }\n'
LIMITS_TOML = PLAIN_TOML + '\n[limits]\nmemory = "512M"\ncpus = 1.5\npids = 1000\n'
# The accumulate row's colony.toml: one small web service, ready once it takes a connection on its port.
SERVICE_TOML = '[services.web]\ncommand = "python3 -m http.server 3000 --bind 0.0.0.0"\nport = 3000\n'
AMONG_FIRST = 5  # spawns at each end of the accumulate row
# Address slots of the pool: the hive takes the lowest free one (0); the network-only rows use their own.
SLOT_NET_STEM, SLOT_NET_IP, SLOT_REF_COLONY = 1, 2, 3


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(argv: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=_GIT_ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()}")


def make_repo(path: Path, files: int, seed: int, colony_toml: str | None = None) -> None:
    """`files` text files of 1-4 KB, 25 to a folder, two levels deep, in one commit (with `colony_toml`)."""
    rng = random.Random(seed)
    for k in range(files):
        folder = k // FILES_PER_DIR
        target = path / "src" / f"g{folder // 10}" / f"d{folder % 10}" / f"file{k}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = (f"value_{rng.getrandbits(64):016x} = {rng.randrange(10**9)}" for _ in range(rng.randrange(25, 100)))
        target.write_text("\n".join(lines) + "\n")
    if colony_toml is not None:
        (path / "colony.toml").write_text(colony_toml)
    run(["git", "init", "--quiet", "-b", "main", str(path)])
    run(["git", "add", "-A"], cwd=path)
    ident = ["-c", "user.email=bench@stem.invalid", "-c", "user.name=Stem bench"]
    run(["git", *ident, "commit", "--quiet", "-m", f"{files} generated files"], cwd=path)


def ip_up(net: ColonyNet) -> None:
    """What core.netns.create does, with the `ip` command line."""
    ns, veth, cidr = net.netns, net.veth, f"/{net.prefixlen}"
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "addr", "add", net.host_ip + cidr, "dev", veth])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", ns, "addr", "add", net.ip + cidr, "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "route", "add", "default", "via", net.host_ip])


def ip_down(net: ColonyNet) -> None:
    run(["ip", "link", "del", net.veth])
    run(["ip", "netns", "del", net.netns])


def make_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


def pick_prefix() -> str:
    taken = set(netns.list_namespaces()) | set(netns.list_links())
    while True:
        prefix = "b" + secrets.token_hex(2)
        if not any(name.startswith(prefix) for name in taken):
            return prefix


def threaded(step: Callable[[int, bool], None]) -> Callable[[int, bool], Awaitable[None]]:
    """pyroute2's blocking API cannot run on a thread with a running event loop; Hive uses worker threads too."""
    return lambda i, timed: asyncio.to_thread(step, i, timed)


class Bench:
    """One benchmark run: its temporary files, its hive, its kernel objects and its samples."""

    def __init__(self, runs: int, sizes: list[int], accumulate: int, pool: ipaddress.IPv4Network | None) -> None:
        self.runs = runs
        self.sizes = sizes
        self.accumulate = accumulate
        self.prefix = pick_prefix()
        self.ref_prefix = pick_prefix()
        while self.ref_prefix == self.prefix:
            self.ref_prefix = pick_prefix()
        whole = pool or ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.0.0/16")
        self.pool, self.ref_pool = whole.subnets(prefixlen_diff=1)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stem-bench-{self.prefix}-"))
        self.home = self.tmp / "home"
        self.ref_home = self.tmp / "home-ref"  # the accumulate row's reference hive (one colony running)
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._link_re = re.compile(rf"^{self.prefix}r?\d+$")

    def net(self, slot: int, tag: str) -> ColonyNet:
        host_ip, ip, prefixlen = netns.slot_addresses(self.pool, slot)
        veth = f"{self.prefix}{slot}" if tag == "stem" else f"{self.prefix}r{slot}"
        return ColonyNet(f"{self.prefix}-{tag}{slot}", veth, host_ip, ip, prefixlen)

    def record(self, key: str, seconds: float, timed: bool) -> None:
        if timed:
            self.samples[key].append(seconds)

    # measuring ------------------------------------------------------------------------------------------------

    async def measure(self) -> None:
        repos = {}
        for size in self.sizes:
            log(f"generating a {size}-file repository")
            repos[size] = self.tmp / f"repo{size}"
            make_repo(repos[size], size, seed=size)
        hive = Hive(self.home, prefix=self.prefix, pool=self.pool)
        try:
            log(f"network: {self.runs} runs")
            await self._rounds([threaded(self._net_stem), threaded(self._net_ip)])
            size = min(self.sizes)
            plain, limited = self.tmp / f"plain{size}", self.tmp / f"limited{size}"
            make_repo(plain, size, seed=size, colony_toml=PLAIN_TOML)
            make_repo(limited, size, seed=size, colony_toml=LIMITS_TOML)
            log(f"{size} files, limits on and off: {self.runs} runs")
            await self._rounds(
                [
                    lambda i, timed: self._colony_limits(hive, size, limited, True, i, timed),
                    lambda i, timed: self._colony_limits(hive, size, plain, False, i, timed),
                ]
            )
            for size, repo in repos.items():
                log(f"{size} files: {self.runs} runs")
                commit = worktree.resolve_ref(repo, "HEAD")
                await self._rounds(
                    [
                        lambda i, timed, s=size, r=repo: self._colony_stem(hive, s, r, i, timed),
                        threaded(lambda i, timed, s=size, r=repo: self._colony_ref(s, r, i, timed)),
                        threaded(
                            lambda i, timed, s=size, r=repo, c=commit: self._worktree_stem(hive, s, r, c, i, timed)
                        ),
                    ]
                )
            if self.accumulate:
                await self._accumulate(hive)
        finally:
            await hive.close()

    async def _accumulate(self, hive: Hive) -> None:
        """Spawns #1 to #K into `hive`, each left running, taking turns with a spawn and destroy of the same colony
        in a second hive (which goes first alternates). Untimed first: one colony in each, left running, so that
        neither hive is ever empty: a spawn into an empty hive starts its host forker and preview proxy again."""
        k = self.accumulate
        repo = self.tmp / "service"
        make_repo(repo, min(self.sizes), seed=1, colony_toml=SERVICE_TOML)
        log(f"{k} colonies with a web service, one after another, each left running")
        ref = Hive(self.ref_home, prefix=self.ref_prefix, pool=self.ref_pool)
        try:
            for target, keep in ((hive, "keep"), (ref, "keep-ref")):  # one repository: a branch per colony
                await target.spawn(keep, repo)

            async def mine(n: int) -> float:
                t0 = time.perf_counter()
                await hive.spawn(f"a{n}", repo)
                return time.perf_counter() - t0

            async def reference(n: int) -> float:
                t0 = time.perf_counter()
                await ref.spawn(f"r{n}", repo)
                took = time.perf_counter() - t0
                await ref.destroy(f"r{n}", force=True)
                return took

            for n in range(1, k + 1):
                first, second = (mine, reference) if n % 2 else (reference, mine)
                one, other = await first(n), await second(n)
                ours, theirs = (one, other) if first is mine else (other, one)
                for key, end in (("among_1", n <= AMONG_FIRST), (f"among_{k}", n > k - AMONG_FIRST)):
                    if end:
                        self.record(key, ours, True)
                        self.record(f"ref_{key}", theirs, True)
        finally:
            await ref.close()

    async def _rounds(self, steps: list[Callable[[int, bool], Awaitable[None]]]) -> None:
        """One untimed round, then `runs` timed ones; the step that goes first rotates, so none always gets the
        warmest caches."""
        for i in range(-1, self.runs):
            shift = i % len(steps)
            for step in steps[shift:] + steps[:shift]:
                await step(i, i >= 0)

    def _net_stem(self, i: int, timed: bool) -> None:
        net = self.net(SLOT_NET_STEM, "stem")
        t0 = time.perf_counter()
        netns.create(net)
        t1 = time.perf_counter()
        netns.destroy(net.netns, net.veth)
        t2 = time.perf_counter()
        self.record("net", t1 - t0, timed)
        self.record("net_destroy", t2 - t1, timed)

    def _net_ip(self, i: int, timed: bool) -> None:
        net = self.net(SLOT_NET_IP, "ip")
        t0 = time.perf_counter()
        ip_up(net)
        t1 = time.perf_counter()
        ip_down(net)
        t2 = time.perf_counter()
        self.record("ref_net", t1 - t0, timed)
        self.record("ref_net_destroy", t2 - t1, timed)

    async def _colony_stem(self, hive: Hive, size: int, repo: Path, i: int, timed: bool) -> None:
        name = f"s{size}-{i + 1}"
        t0 = time.perf_counter()
        await hive.spawn(name, repo)
        t1 = time.perf_counter()
        await hive.destroy(name, force=True)
        t2 = time.perf_counter()
        self.record(f"spawn_{size}", t1 - t0, timed)
        self.record(f"destroy_{size}", t2 - t1, timed)

    async def _colony_limits(self, hive: Hive, size: int, repo: Path, on: bool, i: int, timed: bool) -> None:
        """A spawn and destroy with [limits] and a cgroup (`on`), or without either (the reference)."""
        name, key = (f"l{size}-{i + 1}", "limits") if on else (f"n{size}-{i + 1}", "ref_limits")
        os.environ["STEM_CGROUPS"] = "1" if on else "0"
        try:
            t0 = time.perf_counter()
            await hive.spawn(name, repo)
            t1 = time.perf_counter()
            await hive.destroy(name, force=True)
            t2 = time.perf_counter()
        finally:
            os.environ.pop("STEM_CGROUPS", None)
        self.record(f"{key}_spawn_{size}", t1 - t0, timed)
        self.record(f"{key}_destroy_{size}", t2 - t1, timed)

    def _colony_ref(self, size: int, repo: Path, i: int, timed: bool) -> None:
        net = self.net(SLOT_REF_COLONY, "ref")
        path = self.tmp / "ref-worktrees" / f"r{size}-{i + 1}"
        folder = self.tmp / "ref-colonies" / f"r{size}-{i + 1}"
        branch = f"bench/r{size}-{i + 1}"
        t0 = time.perf_counter()
        ip_up(net)
        t1 = time.perf_counter()
        run(["git", "worktree", "add", "-b", branch, str(path), "HEAD"], cwd=repo)
        t2 = time.perf_counter()
        make_db(folder / "colony.db")
        t3 = time.perf_counter()
        run(["git", "worktree", "remove", "--force", str(path)], cwd=repo)
        run(["git", "branch", "-D", branch], cwd=repo)
        ip_down(net)
        shutil.rmtree(folder)
        t4 = time.perf_counter()
        self.record(f"ref_spawn_{size}", t3 - t0, timed)
        self.record(f"ref_worktree_{size}", t2 - t1, timed)
        self.record(f"ref_destroy_{size}", t4 - t3, timed)

    def _worktree_stem(self, hive: Hive, size: int, repo: Path, commit: str, i: int, timed: bool) -> None:
        path = self.tmp / "stem-worktrees" / f"w{size}-{i + 1}"
        branch = f"bench/w{size}-{i + 1}"
        locks = hive.layout.locks
        t0 = time.perf_counter()
        worktree.add(repo, path, branch, commit, locks)
        t1 = time.perf_counter()
        worktree.remove(repo, path, locks)
        worktree.delete_branch(repo, branch, locks)
        self.record(f"worktree_{size}", t1 - t0, timed)

    # cleaning up ----------------------------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        prefixes = (self.prefix, self.ref_prefix)
        spaces = [n for n in netns.list_namespaces() if n.startswith(tuple(f"{p}-" for p in prefixes))]
        groups = [f"cgroup {n}" for p in prefixes for n in cgroups.names(p)]
        links = [n for n in netns.list_links() if self._link_re.match(n) or re.match(rf"^{self.ref_prefix}\d+$", n)]
        return spaces + links + groups

    def cleanup(self) -> list[str]:
        """Remove everything this run made; returns what could not be removed. Ctrl-C is ignored meanwhile."""
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for home, prefix, pool in (
                (self.home, self.prefix, self.pool),
                (self.ref_home, self.ref_prefix, self.ref_pool),
            ):
                if (home / "hive.db").exists():
                    try:
                        asyncio.run(destroy_hive(home, prefix, pool, log))
                    except Exception as exc:
                        log(f"warning: cleaning the hive {prefix} failed: {type(exc).__name__}: {exc}")
            for name in self.leftovers():
                try:
                    if name.startswith("cgroup "):
                        cgroups.remove(name.split(" ", 1)[1])
                    elif name.startswith((f"{self.prefix}-", f"{self.ref_prefix}-")):
                        netns.destroy(name, "")
                    else:
                        netns.delete_link(name)
                except Exception as exc:
                    log(f"warning: could not remove {name}: {type(exc).__name__}: {exc}")
            shutil.rmtree(self.tmp, ignore_errors=True)
            return self.leftovers()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    # reporting ------------------------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        keys = ["net", "net_destroy"] + [f"{r}_{n}" for n in self.sizes for r in ("worktree", "spawn", "destroy")]
        keys += [f"limits_{r}_{min(self.sizes)}" for r in ("spawn", "destroy")]
        keys += [f"among_{n}" for n in (1, self.accumulate)] if self.accumulate else []
        return paired_figures(self.samples, keys)

    def table(self, figures: dict[str, Any]) -> list[str]:
        rows = [("network up", "net", "8 ip commands"), ("network down", "net_destroy", "ip link del, ip netns del")]
        for n in self.sizes:
            rows += [
                (f"worktree add, {n} files", f"worktree_{n}", "git worktree add -b"),
                (f"spawn, {n} files", f"spawn_{n}", "ip + git worktree add + sqlite"),
                (f"destroy, {n} files", f"destroy_{n}", "git worktree remove, branch -D, ip del"),
            ]
        n = min(self.sizes)
        rows += [
            (f"spawn with limits, {n} f.", f"limits_spawn_{n}", "same spawn, no limits, no cgroup"),
            (f"destroy with limits, {n} f.", f"limits_destroy_{n}", "same destroy, no cgroup"),
        ]
        if self.accumulate:
            k, e = self.accumulate, AMONG_FIRST
            rows += [
                (f"spawn #1-#{e}, web service", "among_1", "same spawn, 1 colony running"),
                (f"spawn #{k - e + 1}-#{k}, web service", f"among_{k}", "same spawn, 1 colony running"),
            ]
        lines = [
            f"Stem spawn/destroy benchmark: {self.runs} runs per row, {os.cpu_count()} CPUs, prefix {self.prefix}, "
            f"pool {self.pool}",
            "times in ms; ratio = Stem / reference (below 1: Stem is faster)",
            "",
            f"{'':26}{'Stem':>17}   {'reference':>17}   {'ratio':>13}",
            f"{'what':26}{'median':>9}{'p90':>8}   {'median':>9}{'p90':>8}   {'median':>7}{'p90':>6}   reference is",
        ]
        for label, key, ref_label in rows:
            if f"{key}_median_ms" not in figures:
                continue
            lines.append(
                f"{label:26}{figures[f'{key}_median_ms']:9.1f}{figures[f'{key}_p90_ms']:8.1f}   "
                f"{figures[f'ref_{key}_median_ms']:9.1f}{figures[f'ref_{key}_p90_ms']:8.1f}   "
                f"{figures[f'ratio_{key}_median']:7.2f}{figures[f'ratio_{key}_p90']:6.2f}   {ref_label}"
            )
        return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per row (default 20)")
    parser.add_argument("--sizes", default="100,5000", help="repository sizes in files (default 100,5000)")
    parser.add_argument(
        "--accumulate", type=int, default=30, help="colonies spawned one after another, left running (default 30)"
    )
    parser.add_argument("--pool", type=ipaddress.IPv4Network, help="the run's addresses (default: a random /16)")
    args = parser.parse_args()
    if args.accumulate and args.accumulate < 2 * AMONG_FIRST:
        parser.error(f"--accumulate is 0 (none) or at least {2 * AMONG_FIRST}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    require_netns_privileges("the spawn benchmark")
    signal.signal(signal.SIGTERM, _interrupt)  # so `kill` cleans up like Ctrl-C does

    bench = Bench(args.runs, sizes, args.accumulate, args.pool)
    error = None
    try:
        asyncio.run(bench.measure())
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        log("cleaning up")
        leftovers = bench.cleanup()

    figures = bench.figures()
    for line in bench.table(figures):
        print(line)
    if error:
        print(f"error: {error}" + ("" if leftovers else " (everything the run made was removed)"))
    if leftovers:
        print(f"warning: still present after cleanup: {', '.join(leftovers)}")
    result: dict[str, Any] = {
        "runs": bench.runs,
        "files": sizes,
        "accumulate": bench.accumulate,
        "cpus": os.cpu_count(),
        "prefix": bench.prefix,
        "pool": str(bench.pool),
        "cgroup": be.version if (be := cgroups.backend()) is not None else None,
        **figures,
        "leftovers": leftovers,
    }
    if error:
        result["error"] = error
    print(json.dumps(result), flush=True)
    return 1 if error or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
