#!/usr/bin/env python3
"""Preview routing benchmark: requests a second through the hive's preview port (Caddy) beside the same requests
straight to the colony's address, in the same run.

Run as root: `python3 tests/bench/bench_preview.py [--seconds S] [--rounds R]`. It makes a throwaway hive (its own
STEM_HOME in a temporary folder, a prefix `bp????`, a pool 10.24X.0.0/16 that no route covers, a free loopback
port as its preview port, the fake agent of tests/fake_agent.py) and spawns one colony with two services:
- `web`: a small keep-alive HTTP server (asyncio, a fixed 10-byte body), so the proxy's own cost is what shows;
- `files`: python3's http.server (threading, HTTP/1.1 keep-alive) serving a 2 KB file, a dev server's pace.
A client in this process (asyncio, keep-alive connections) sends GET requests for S seconds (default 3) per
measurement, R rounds (default 3), alternating the two targets so drift hits both alike:
- direct: `http://<colony ip>:<port>/`, the address the host reaches the colony at;
- preview: `http://127.0.0.1:<preview port>/` with `Host: <service>-<colony>.localhost:<port>`, as a browser
  through `ssh -L` sends it.
Each with 1 connection (one request after another: latency) and with --connections (default 16) at once
(throughput). Every request is bounded by the time window and goes only to the loopback address or the colony's
address inside the namespace the run made. Also timed: adding and removing a route through Caddy's admin API
(--route-runs, default 50, a route to nowhere in the same hive) and a cold start of a Caddy (another throwaway
home, `preview.ensure_running`, then `preview.stop`; 5 runs).

Everything is removed at the end, also on failure or Ctrl-C. Progress goes to stderr; stdout is a table and, as
its last line, one JSON object: `rps_{direct,preview}_{web,files}_c{1,N}` (requests a second, median of the
rounds), `ratio_{web,files}_c{1,N}` (preview / direct: 1 means the proxy costs nothing), `p50_ms_*`/`p99_ms_*`
(latency of the 1-connection runs, all rounds pooled), `route_add_ms_*`, `route_remove_ms_*`,
`caddy_start_ms_median`, `caddy` (its version), `cpus`, `loadavg_start`, `loadavg_end` (other work on the machine
shows here), `leftovers` (should be empty) and, only if the run failed, `error`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import destroy_hive, print_table, run_sections  # noqa: E402
from helpers import git, make_repo  # noqa: E402

from core import firewall, netns, preview, procs  # noqa: E402
from core.host.launch import wait_exit  # noqa: E402
from core.host.paths import HostPaths  # noqa: E402
from core.preview import PreviewPaths, Route  # noqa: E402
from core.privileges import require_netns_privileges  # noqa: E402

FAKE_AGENT = ROOT / "tests" / "fake_agent.py"
SERVER = """\
import asyncio

BODY = b"hello stem"
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 10\\r\\n\\r\\n" + BODY


async def serve(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "0.0.0.0", 3000)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""
FILES = """\
import http.server


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a browser's requests to a dev server

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 3001), Handler).serve_forever()
"""
COLONY_TOML = """\
[services.web]
command = "exec python3 serve.py"
port = 3000
ready = "tcp"

[services.files]
command = "exec python3 files.py"
port = 3001
ready = "tcp"
"""
PAGE = ("<p>" + "stem preview " * 160 + "</p>\n").encode()  # ~2 KB
# (service, port, path, what the table calls it)
UPSTREAMS = [
    ("web", 3000, "/", "asyncio server, 10-byte body"),
    ("files", 3001, "/page.html", "python3 http.server, 2 KB file"),
]
COLONY = "pv"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pick_pool() -> ipaddress.IPv4Network:
    """A 10.24X.0.0/16 that no route of any table covers or falls inside (the default route aside)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    routes = []
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit", "multicast", "nat"):
            words = words[1:]
        with contextlib.suppress(ValueError, IndexError):
            routes.append(ipaddress.IPv4Network(words[0], strict=False))
    for b in range(241, 250):
        net = ipaddress.IPv4Network(f"10.{b}.0.0/16")
        if not any(net.overlaps(r) for r in routes):
            return net
    raise RuntimeError("no free 10.24X.0.0/16 pool on this machine")


def pick_prefix() -> str:
    taken = set(netns.list_namespaces()) | set(netns.list_links())
    while True:
        prefix = "bp" + secrets.token_hex(2)
        if not any(name.startswith(prefix) for name in taken):
            return prefix


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------------------------------ the client


async def load(
    host: str, port: int, header_host: str, path: str, connections: int, seconds: float
) -> tuple[int, list[float]]:
    """GET `path` over `connections` keep-alive connections for `seconds`: (responses, latencies in s of the first
    connection's requests)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {header_host}\r\nUser-Agent: stem-bench\r\n\r\n".encode()
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def one(index: int) -> int:
        reader, writer = await asyncio.open_connection(host, port)
        done = 0
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{header_host} via {host}:{port} answered {head.splitlines()[0]!r}")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                done += 1
                if index == 0:
                    latencies.append(time.perf_counter() - started)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return done

    counts = await asyncio.gather(*(one(i) for i in range(connections)))
    return sum(counts), latencies


# ------------------------------------------------------------------------------------------------------ the bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.seconds: float = args.seconds
        self.rounds: int = args.rounds
        self.connections: int = args.connections
        self.route_runs: int = args.route_runs
        self.prefix = pick_prefix()
        self.pool = pick_pool()
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stem-bench-{self.prefix}-"))
        self.home = self.tmp / "home"
        self.repo = self.tmp / "repo"
        self.figures: dict[str, Any] = {}
        self.rows: list[list[str]] = []
        self.pids: dict[int, int] = {}  # hosts and Caddys seen: pid -> start time, for the cleanup
        config = self.tmp / "config"
        self.env = dict(
            os.environ,
            STEM_HOME=str(self.home),
            STEM_PREFIX=self.prefix,
            STEM_POOL=str(self.pool),
            STEM_PREVIEW_PORT=str(self.port),
            XDG_CONFIG_HOME=str(config),
            SHELL="/bin/sh",
        )
        self.env.pop("STEM_CONFIG", None)
        os.environ.clear()
        os.environ.update(self.env)  # this process's own Hive (the cleanup) sees the same hive
        agent = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_AGENT))}"
        (config / "stem").mkdir(parents=True)
        (config / "stem" / "config.toml").write_text(
            f'[hive]\ndefault_agent = "fake"\n\n[agents.fake]\ncommand = "{agent}"\n'
        )

    def stem(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "stem.cli", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.tmp,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"stem {shlex.join(args)} exited with {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def remember(self, found: tuple[int, int] | tuple[int, int, int] | None) -> None:
        if found is not None:
            self.pids[found[0]] = found[1]

    def setup(self) -> str:
        log(f"hive: home {self.home}, prefix {self.prefix}, pool {self.pool}, preview port {self.port}")
        make_repo(self.repo, files=3, colony_toml=COLONY_TOML)
        (self.repo / "serve.py").write_text(SERVER)
        (self.repo / "files.py").write_text(FILES)
        (self.repo / "page.html").write_bytes(PAGE)
        git(self.repo, "add", "serve.py", "files.py", "page.html")
        git(self.repo, "commit", "-qm", "the bench's service")
        log(f"spawning {COLONY}")
        self.stem("spawn", COLONY, "--repo", str(self.repo))
        self.remember(HostPaths(self.home / "colonies" / COLONY).process())
        self.remember(PreviewPaths.of(self.home).process())
        row = {r["name"]: r for r in json.loads(self.stem("ls", "--json"))}[COLONY]
        if row["services"] != {"web": "ready", "files": "ready"} or set(row["preview"]) != {"web", "files"}:
            raise RuntimeError(f"{COLONY} is not serving with a preview URL: {row['services']} {row['preview']}")
        version = subprocess.run([preview.caddy_binary(), "version"], capture_output=True, text=True).stdout
        self.figures["caddy"] = version.split()[0] if version else "?"
        return str(row["ip"])

    async def throughput(self, ip: str) -> None:
        for service, port, path, what in UPSTREAMS:
            targets = {
                "direct": (ip, port, f"{ip}:{port}"),
                "preview": ("127.0.0.1", self.port, f"{service}-{COLONY}.localhost:{self.port}"),
            }
            for addr, to, header in targets.values():  # warm-up: connections, Caddy's upstream pool
                await load(addr, to, header, path, self.connections, 0.5)
            for connections in (1, self.connections):
                rps: dict[str, list[float]] = {k: [] for k in targets}
                lat: dict[str, list[float]] = {k: [] for k in targets}
                for r in range(self.rounds):
                    for name, (addr, to, header) in targets.items():
                        log(f"{service}: {name}, {connections} connection(s), round {r + 1} of {self.rounds}")
                        count, latencies = await load(addr, to, header, path, connections, self.seconds)
                        rps[name].append(count / self.seconds)
                        lat[name] += latencies
                key = f"{service}_c{connections}"
                for name in targets:
                    self.figures[f"rps_{name}_{key}"] = round(statistics.median(rps[name]), 1)
                ratio = self.figures[f"rps_preview_{key}"] / self.figures[f"rps_direct_{key}"]
                self.figures[f"ratio_{key}"] = round(ratio, 3)
                self.rows.append(
                    [
                        f"{what}: req/s, {connections} connection(s)",
                        f"{self.figures[f'rps_direct_{key}']:,.0f}",
                        f"{self.figures[f'rps_preview_{key}']:,.0f}",
                        f"{ratio:.2f}",
                    ]
                )
                if connections != 1:
                    continue
                for name in targets:
                    self.figures[f"p50_ms_{name}_{service}"] = round(pct(lat[name], 0.5) * 1000, 3)
                    self.figures[f"p99_ms_{name}_{service}"] = round(pct(lat[name], 0.99) * 1000, 3)
                d50, d99 = self.figures[f"p50_ms_direct_{service}"], self.figures[f"p99_ms_direct_{service}"]
                p50, p99 = self.figures[f"p50_ms_preview_{service}"], self.figures[f"p99_ms_preview_{service}"]
                self.rows.append(
                    [f"{what}: latency p50 / p99 (ms)", f"{d50:.3f} / {d99:.3f}", f"{p50:.3f} / {p99:.3f}", ""]
                )

    def routes(self) -> None:
        """Adding and removing a route through the admin API (a config reload of Caddy each)."""
        route = Route(COLONY, "bench", "127.0.0.1:9")
        add, remove = [], []
        for _ in range(self.route_runs):
            started = time.perf_counter()
            preview.add_route(self.home, self.port, route)
            add.append(time.perf_counter() - started)
            started = time.perf_counter()
            if not preview.remove_route(self.home, route.colony, route.service):
                raise RuntimeError("the bench route was not there to remove")
            remove.append(time.perf_counter() - started)
        for key, samples in (("route_add", add), ("route_remove", remove)):
            self.figures[f"{key}_ms_median"] = round(statistics.median(samples) * 1000, 2)
            self.figures[f"{key}_ms_p90"] = round(pct(samples, 0.9) * 1000, 2)
        self.rows.append(
            [
                "route add / remove via the admin API (ms, median)",
                "",
                f"{self.figures['route_add_ms_median']:.1f} / {self.figures['route_remove_ms_median']:.1f}",
                "",
            ]
        )

    def cold_start(self) -> None:
        """A Caddy started from nothing until it confirms its config, then stopped."""
        other = self.tmp / "cold"
        starts = []
        for _ in range(5):
            port = free_port()
            started = time.perf_counter()
            preview.ensure_running(other, port)
            starts.append(time.perf_counter() - started)
            self.remember(PreviewPaths.of(other).process())
            preview.stop(other)
        self.figures["caddy_start_ms_median"] = round(statistics.median(starts) * 1000, 1)
        self.rows.append(["Caddy cold start (ms, median of 5)", "", f"{self.figures['caddy_start_ms_median']:.0f}", ""])

    def leftovers(self) -> list[str]:
        found = [f"process {pid}" for pid, start in self.pids.items() if procs.alive(pid, start)]
        found += [f"namespace {n}" for n in netns.list_namespaces() if n.startswith(f"{self.prefix}-")]
        if firewall.table_exists(self.prefix):
            found.append(f"nftables table of {self.prefix}")
        return found

    def cleanup(self) -> list[str]:
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.remember(PreviewPaths.of(self.home).process())
            if (self.home / "hive.db").exists():
                try:
                    asyncio.run(destroy_hive(self.home, self.prefix, self.pool, log))
                except Exception as exc:
                    log(f"warning: cleaning the hive failed: {type(exc).__name__}: {exc}")
            for pid, start in self.pids.items():
                if procs.alive(pid, start):
                    log(f"warning: killing {pid}, still alive after the hive's cleanup")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    wait_exit(pid, 5)
            db = self.home / "hive.db"
            if db.exists():
                with contextlib.suppress(sqlite3.Error), sqlite3.connect(db) as conn:
                    for (pid,) in conn.execute("SELECT pid FROM processes"):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL)
            for name in [n for n in netns.list_namespaces() if n.startswith(f"{self.prefix}-")]:
                for pid in netns.pids_in(name):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    netns.destroy(name, "")
            with contextlib.suppress(Exception):
                firewall.remove(self.prefix)
            shutil.rmtree(self.tmp, ignore_errors=True)
            return self.leftovers()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measurement (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="connections of the throughput runs (16)")
    parser.add_argument("--route-runs", type=int, default=50, help="route adds and removes timed (default 50)")
    args = parser.parse_args()
    require_netns_privileges("the preview benchmark")
    signal.signal(signal.SIGTERM, _interrupt)

    bench = Bench(args)

    def sections() -> None:
        ip = bench.setup()
        asyncio.run(bench.throughput(ip))
        bench.routes()
        bench.cold_start()

    run = run_sections(sections, bench.cleanup, log)
    load_start, load_end, error, leftovers = run.load_start, run.load_end, run.error, run.leftovers

    print(
        f"Stem preview routing benchmark: {os.cpu_count()} CPUs, load average {load_start} at start, {load_end} at "
        f"the end; Caddy {bench.figures.get('caddy', '?')}, {args.seconds:g} s x {args.rounds} rounds per figure"
    )
    if bench.rows:
        print_table("", ["", "direct to the colony", "through the preview port", "preview / direct"], bench.rows)
    figures = {
        **bench.figures,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "leftovers": leftovers,
    }
    if error:
        figures["error"] = error
    print(json.dumps(figures))
    return 1 if error or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
