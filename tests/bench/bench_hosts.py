#!/usr/bin/env python3
"""Colony host benchmark: what the detached colony hosts cost, and how fast things are through them, each figure
beside a reference measured in the same run.

Run as root: `python3 tests/bench/bench_hosts.py [--colonies N]` (default 10). It makes a throwaway hive (its own
STEM_HOME in a temporary folder, a prefix `bh????`, a pool 10.24X.0.0/16 that no route covers, a config whose
default agent is tests/fake_agent.py), spawns N colonies from a generated 100-file repository whose colony.toml
runs one tiny service (`python3 -m http.server 3000`, this interpreter named in full; ready on tcp), and removes
everything it made at the end, also on failure or Ctrl-C: colonies through core.hive.Hive, then hosts and colony
processes by pid, then namespaces and links by the run's prefix. Progress goes to stderr; stdout is one table per
section and, as its last line, one JSON object with every figure.

1. Short commands, as a user runs them: the installed `stem` entry point in a subprocess, `--runs` times each (after
   one untimed round): `stem ls` with N colonies running; `stem spawn` of the 100-file repository, then `stem stop`
   and `stem destroy --force` of that colony; `stem spawn` of the same 100 files without a colony.toml (the colony
   runs its agent only: what a spawn costs apart from a service's own start, measured rather than subtracted).
   Reference: `python3 -c pass`, in the same rounds. Also the wall time
   of `python3 -c "import stem.cli"` and `-X importtime`'s total for `import stem.cli`.
2. Cost of a host, with N colonies idle: the PSS (smaps_rollup) of each host, and the CPU all hosts use over an
   `--idle-seconds` window (utime+stime from /proc/PID/stat, and the same from the scheduler's nanosecond counts
   in /proc/PID/task/*/schedstat), and their wakeups (context switches) a second. Reference: an idle asyncio
   python process (`asyncio.run(asyncio.sleep(60))`) over the same window. Also threads, open fds and inotify
   instances per host; a host whose file watchers found no inotify instance left (the limit is per user: other
   programs count) polls its worktree every 2 s instead, which its idle figures then show: such hosts are counted
   (`hosts_polling`, and a note) and, if any, each kind's idle figures are given apart (`*_inotify`, `*_polling`).
3. Keystroke to echo through a host: a client (HostLink, as a UI has one per colony) follows a quiet colony; a
   character is typed into its fake agent and timed until the `rows` update showing its echo has been applied to
   the client's ScreenMirror. `--keys` keys per configuration, ~30 a second: no colony flooding; 4 other colonies
   flooding (`flood 100000000` in their agents, typed through their hosts) with the client following the quiet
   colony only; the same with the client following every colony like a UI. Reference: a byte written to a PTY
   (ptyprocess running `cat`) until its echo is read, in the same conditions. `keystroke_slowest_*` lists the
   four slowest keys as [index, ms].
4. Stop all: `stem stop name1 ... nameN` in one command, beside N times the median single `stem stop` of (1).
5. Reattach and quit: the UI (`stem`) started in a tmux pane (a private server: `tmux -L`, no config, its socket in
   the temporary folder) until the pane shows the colony names that fit in it (up to 10 of the N listed) and the
   fake agent's prompt, polled with capture-pane; then `q` (its dialog) and `y`, timed from the `y` until the
   process has exited (a pidfd). Reference: a minimal Textual app until the pane shows its "ready", then ctrl+q.
   `--ui-runs` each. The stem commands run without PYTHONDONTWRITEBYTECODE (as a user's would: bytecode cached).

JSON keys: times in ms, sizes in MB, CPU in % of one core; `ratio_*` is Stem divided by its reference (above 1:
Stem is slower or bigger). p90 is `statistics.quantiles(n=10, method="inclusive")[-1]`; p99 is the sample at rank
round(0.99 * (n - 1)). Also `colonies`, `runs`, `cpus`, `loadavg_start`, `loadavg_end` (other work on the machine
shows here), `stem_command`, `prefix`, `pool`, `leftovers` (anything of the run's still present after cleanup;
should be empty), `notes` (oddities seen during the run) and, only if the run failed, `error`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import ipaddress
import json
import os
import random
import re
import secrets
import select
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Run by an interpreter Stem is installed in (`scripts/install`'s venv, as a user has it), the bench uses that copy,
# as the `stem` it times does: the warm process it starts must run the same files as that `stem` (its fingerprint).
if importlib.util.find_spec("stem.cli") is None:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import destroy_hive, run_sections  # noqa: E402
from helpers import make_repo, wait_for  # noqa: E402

from core import firewall, netns, procs  # noqa: E402
from core.events import Event, ScreenChanged  # noqa: E402
from core.host import launch  # noqa: E402
from core.host import protocol as p  # noqa: E402
from core.host.client import HostLink  # noqa: E402
from core.host.mirror import ScreenMirror  # noqa: E402
from core.host.paths import HostPaths  # noqa: E402
from core.privileges import require_netns_privileges  # noqa: E402
from core.screen_cells import cells_text  # noqa: E402
from core.warm import WarmPaths  # noqa: E402

FAKE_AGENT = ROOT / "tests" / "fake_agent.py"
# The service's interpreter named in full, as the agent's is: a `python3` found on PATH may be a version manager's
# shim (pyenv's is a bash script: ~70 ms more per start), which would be the shim's figure, not Stem's.
COLONY_TOML = f"""\
[services.web]
command = "exec {sys.executable} -m http.server 3000"
port = 3000
ready = "tcp"
"""
PROMPT = "fake-agent>"
TYPED = "abcdefghijklmnopqrstuvwxyz"
FLOOD = b"flood 100000000\r"
FLOODERS = 4
COLS, ROWS = 160, 45
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
VISIBLE_COLONIES = 10  # two rows per colony in the colonies panel of the 160x45 pane
READY_APP = """\
from textual.app import App, ComposeResult
from textual.widgets import Static


class Ready(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("ready")


Ready().run()
"""
# The reference idle process: `asyncio.run(asyncio.sleep(60))`, saying when it is in its sleep.
IDLE_PYTHON = """\
import asyncio


async def main():
    print("ready", flush=True)
    await asyncio.sleep(60)


asyncio.run(main())
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def summary(samples: Sequence[float]) -> tuple[float, float]:
    """(median, p90) of seconds, in milliseconds."""
    ms = [s * 1000 for s in samples]
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return statistics.median(ms), p90


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def fmt(value: Any, width: int, digits: int = 1) -> str:
    if value is None:
        return f"{'n/a':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}f}"
    return f"{value!s:>{width}}"


def pick_pool() -> ipaddress.IPv4Network:
    """A 10.24X.0.0/16 that no route of any table covers or falls inside (the default route aside)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    routes = []
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit", "multicast", "nat"):
            words = words[1:]
        with contextlib.suppress(ValueError, IndexError):
            routes.append(ipaddress.IPv4Network(words[0], strict=False))  # "default" is not a network: skipped
    candidates = [ipaddress.IPv4Network(f"10.{b}.0.0/16") for b in range(241, 250)]
    free = [net for net in candidates if not any(net.overlaps(r) for r in routes)]
    if not free:
        raise RuntimeError("every 10.241-249.0.0/16 is covered by a route")
    return random.choice(free)


def pick_prefix() -> str:
    taken = set(netns.list_namespaces()) | set(netns.list_links())
    while True:
        prefix = "bh" + secrets.token_hex(2)
        if not any(name.startswith(prefix) for name in taken):
            return prefix


def stem_entry() -> list[str]:
    """The installed `stem` console script of this interpreter (not a pyenv shim, whose own start would be
    measured), else `python3 -m stem.cli`."""
    beside = Path(sys.executable).parent / "stem"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("stem")
    if found and "shims" not in found:
        return [found]
    return [sys.executable, "-m", "stem.cli"]


# ------------------------------------------------------------------------------------------------- /proc reading


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [0] is state (field 3), [11] utime, [12] stime."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_ticks(pid: int) -> int:
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12])


def threads(pid: int) -> int:
    return int(proc_stat(pid)[17])


def sched_ns(pid: int) -> int:
    """CPU time of every thread the process has now, in ns (the scheduler's own count, not clock ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def switches(pid: int) -> int:
    """Context switches of every thread (each wakeup of a sleeping thread is one)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def memory_mb(pid: int) -> tuple[float, float]:
    """(PSS, RSS) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0]) / 1024
    return values["Pss"], values["Rss"]


def descriptors(pid: int) -> tuple[int, int]:
    """(open file descriptors, inotify instances among them)."""
    fds = inotify = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            inotify += os.readlink(fd) == "anon_inode:inotify"
    return fds, inotify


def row_text(mirror: ScreenMirror, y: int) -> str:
    cells = mirror.buffer.get(y)
    return cells_text([c.data for c in cells]) if cells is not None else ""


def importtime(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """From `-X importtime` output: ms spent in `import stem.cli` (its one top-level entry, which holds the `stem`
    package's import too), and the heaviest of the imports made under it (name, ms)."""
    entries = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        raw = parts[2].rstrip()
        level = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        entries.append((level, raw.strip(), int(parts[1])))
    end = next(i for i, (level, name, _) in enumerate(entries) if level == 0 and name == "stem.cli")
    start = max((i for i, (level, _, _) in enumerate(entries[:end]) if level == 0), default=-1) + 1
    direct = sorted(((name, cum / 1000) for level, name, cum in entries[start:end] if level == 1), key=lambda e: -e[1])
    return entries[end][2] / 1000, direct[:6]


# --------------------------------------------------------------------------------------------------- the run


class Probe:
    """Told of every screen update the client applies; notes when the row with the expected text arrives."""

    def __init__(self) -> None:
        self.mirror = ScreenMirror()  # the link's, once it follows
        self.expect: str | None = None
        self.seen_at = 0.0
        self.seen = asyncio.Event()

    def arm(self, text: str) -> None:
        self.expect = text
        self.seen.clear()

    def publish(self, event: Event) -> None:
        if self.expect is None or not isinstance(event, ScreenChanged):
            return
        mirror = self.mirror
        for y in event.rows:
            if row_text(mirror, y).rstrip().endswith(self.expect):
                self.seen_at = time.perf_counter()
                self.expect = None
                self.seen.set()
                return


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.n: int = args.colonies
        self.runs: int = args.runs
        self.keys: int = args.keys
        self.ui_runs: int = args.ui_runs
        self.idle_seconds: float = args.idle_seconds
        self.prefix = pick_prefix()
        self.pool = pick_pool()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stem-bench-{self.prefix}-"))
        self.home = self.tmp / "home"
        self.repo = self.tmp / "repo"
        self.plain_repo = self.tmp / "plain-repo"  # the same 100 files, no colony.toml: a spawn runs its agent only
        self.names = [f"h{i + 1:02d}" for i in range(self.n)]
        self.stem = stem_entry()
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.tables: list[list[str]] = []
        self.host_pids: dict[int, int] = {}  # every host seen: pid -> start time, for the cleanup
        self.children: list[subprocess.Popen[bytes]] = []
        self.tmux_socket = f"stem-bench-{self.prefix}"
        self.tmux_server: tuple[int, int] | None = None  # pid and start time of the private tmux server
        self._link_re = re.compile(rf"^{self.prefix}\d+$")
        config = self.tmp / "config"
        self.env = dict(
            os.environ,
            STEM_HOME=str(self.home),
            STEM_PREFIX=self.prefix,
            STEM_POOL=str(self.pool),
            XDG_CONFIG_HOME=str(config),
            SHELL="/bin/sh",
            TERM="xterm-256color",
            TMUX_TMPDIR=str(self.tmp / "tmux"),
        )
        # PYTHONDONTWRITEBYTECODE (set on some machines) would have every stem command compile its sources again.
        for key in ("STEM_CONFIG", "STEM_FAULT_KILL_AT", "TMUX", "TMUX_PANE", "PYTHONDONTWRITEBYTECODE"):
            self.env.pop(key, None)
        os.environ.clear()
        os.environ.update(self.env)  # this process's own Hive and links see the same hive
        agent = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_AGENT))}"
        (config / "stem").mkdir(parents=True)
        (config / "stem" / "config.toml").write_text(
            f'[hive]\ndefault_agent = "fake"\n\n[agents.fake]\ncommand = "{agent}"\nresume = "{agent} --continue"\n'
        )
        (self.tmp / "tmux").mkdir(mode=0o700)

    # helpers ----------------------------------------------------------------------------------------------

    def stem_run(self, *args: str, check: bool = True, timeout: float = 180, cold: bool = False) -> tuple[float, str]:
        """Run the `stem` entry point (`cold`: with STEM_WARM=0); (seconds, stdout)."""
        return self.timed([*self.stem, *args], check=check, timeout=timeout, cold=cold)

    def timed(self, argv: list[str], check: bool = True, timeout: float = 180, cold: bool = False) -> tuple[float, str]:
        env = dict(self.env, STEM_WARM="0") if cold else self.env
        started = time.perf_counter()
        proc = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, cwd=self.tmp
        )
        took = time.perf_counter() - started
        if check and proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv[-4:])} exited with {proc.returncode}: {proc.stderr.strip()}")
        return took, proc.stdout

    def service_alone(self) -> float:
        """Seconds from exec of the colony.toml's service command (on the host, a free loopback port) until it
        accepts a TCP connection: the part of a spawn that is the service's own start."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.tmp)
        try:
            deadline = started + 30
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        return time.perf_counter() - started
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{shlex.join(command)} did not accept connections")
                time.sleep(0.005)  # polling interval, as the colony's readiness probe polls
        finally:
            proc.terminate()
            proc.wait(10)

    def paths(self, name: str) -> HostPaths:
        return HostPaths(self.home / "colonies" / name)

    def host_pid(self, name: str) -> int | None:
        found = self.paths(name).process()
        if found is None:
            return None
        self.host_pids[found[0]] = found[1]
        return found[0]

    def listed(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in json.loads(self.stem_run("ls", "--json")[1])}

    def record(self, key: str, samples: Sequence[float]) -> tuple[float, float]:
        median, p90 = summary(samples)
        self.figures[f"{key}_median_ms"] = round(median, 2)
        self.figures[f"{key}_p90_ms"] = round(p90, 2)
        return median, p90

    # setting up -------------------------------------------------------------------------------------------

    def setup(self) -> None:
        log(f"hive: home {self.home}, prefix {self.prefix}, pool {self.pool}; stem is {shlex.join(self.stem)}")
        make_repo(self.repo, files=100, colony_toml=COLONY_TOML)
        make_repo(self.plain_repo, files=100)
        for name in self.names:
            log(f"spawning {name}")
            self.stem_run("spawn", name, "--repo", str(self.repo))
            self.host_pid(name)
        listed = self.listed()
        wrong = {n: listed.get(n) for n in self.names if (listed.get(n) or {}).get("services") != {"web": "ready"}}
        if wrong:
            raise RuntimeError(f"colonies not running with their service ready: {wrong}")
        wait_for(
            lambda: all(self.listed()[n]["agent"] in ("idle", "working") for n in self.names), 30, "every agent up"
        )

    # 1. short commands ------------------------------------------------------------------------------------

    def short_commands(self) -> None:
        commands = ("ls", "spawn", "spawn_plain", "stop", "destroy")
        keys = ("pass", "import", "service", *commands, *(f"{c}_warm" for c in commands))
        samples: dict[str, list[float]] = {k: [] for k in keys}
        # Each command cold (STEM_WARM=0: it imports what it runs) and warm (forked by the hive's warm process, which
        # the setup's first `stem spawn` started, as a shell user's does), in alternating order.
        if WarmPaths.of(self.home).started_process() is None:
            raise RuntimeError(f"the setup's spawns started no warm process: {WarmPaths.of(self.home).log}")
        for i in range(-1, self.runs):
            log(f"short commands: round {i + 1} of {self.runs}" + (" (warm-up)" if i < 0 else ""))
            took = {
                "pass": self.timed([sys.executable, "-c", "pass"])[0],
                "import": self.timed([sys.executable, "-c", "import stem.cli"])[0],
                "service": self.service_alone(),
            }
            for cold in (i % 2 == 0, i % 2 != 0):
                suffix = "" if cold else "_warm"
                name = f"sp{i + 2:02d}{suffix.replace('_', '')}"
                took[f"ls{suffix}"], out = self.stem_run("ls", cold=cold)
                missing = [n for n in self.names if not re.search(rf"^{n}\s+running\s", out, re.M)]
                if missing:
                    raise RuntimeError(f"stem ls does not show {missing} running:\n{out}")
                took[f"spawn{suffix}"], _ = self.stem_run("spawn", name, "--repo", str(self.repo), cold=cold)
                self.host_pid(name)
                took[f"stop{suffix}"], _ = self.stem_run("stop", name, cold=cold)
                took[f"destroy{suffix}"], _ = self.stem_run("destroy", "--force", name, cold=cold)
                plain = f"pl{i + 2:02d}{suffix.replace('_', '')}"
                repo = str(self.plain_repo)
                took[f"spawn_plain{suffix}"], _ = self.stem_run("spawn", plain, "--repo", repo, cold=cold)
                self.host_pid(plain)
                self.stem_run("destroy", "--force", plain, cold=cold)
            if i >= 0:
                for key, value in took.items():
                    samples[key].append(value)
        if WarmPaths.of(self.home).process() is None:
            raise RuntimeError("the warm process went away during the short commands: their warm figures are not")
        argv = [sys.executable, "-X", "importtime", "-c", "import stem.cli"]
        profile = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=True)
        total, heaviest = importtime(profile.stderr)
        self.figures["importtime_stem_cli_ms"] = round(total, 1)
        self.figures["importtime_heaviest"] = [[n, round(ms, 1)] for n, ms in heaviest]

        ref, _ = self.record("py_pass", samples["pass"])
        imp, _ = self.record("import_stem_cli", samples["import"])
        rows = [("python3 -c 'import stem.cli'", "import_stem_cli")]
        rows += [
            ("the service alone, until it accepts", "service"),
            (f"stem ls ({self.n} running), cold", "ls"),
            ("stem spawn (100 files), cold", "spawn"),
            ("stem spawn, no colony.toml, cold", "spawn_plain"),
            ("stem stop (1 colony), cold", "stop"),
            ("stem destroy --force, cold", "destroy"),
            (f"stem ls ({self.n} running), warm", "ls_warm"),
            ("stem spawn (100 files), warm", "spawn_warm"),
            ("stem spawn, no colony.toml, warm", "spawn_plain_warm"),
            ("stem stop (1 colony), warm", "stop_warm"),
            ("stem destroy --force, warm", "destroy_warm"),
        ]
        for _, key in rows[1:]:
            self.record(key, samples[key])
        lines = [
            f"1. short commands, end to end ({shlex.join(self.stem)}), {self.runs} runs, {self.n} colonies running",
            "   ms; ratio = median / median of the reference `python3 -c pass` in the same rounds",
            f"   {'command':34}{'median':>9}{'p90':>9}{'ratio':>9}",
            f"   {'python3 -c pass (reference)':34}{fmt(ref, 9)}{fmt(self.figures['py_pass_p90_ms'], 9)}{'1.00':>9}",
        ]
        for label, key in rows:
            median = self.figures[f"{key}_median_ms"]
            self.figures[f"ratio_{key}_median"] = ratio(median, ref)
            lines.append(
                f"   {label:34}{fmt(median, 9)}{fmt(self.figures[f'{key}_p90_ms'], 9)}"
                f"{fmt(self.figures[f'ratio_{key}_median'], 9, 2)}"
            )
        # What spawn itself costs: its time less the time the colony's service takes to start on its own.
        for suffix in ("", "_warm"):
            own = self.figures[f"spawn{suffix}_median_ms"] - self.figures["service_median_ms"]
            self.figures[f"spawn{suffix}_less_service_median_ms"] = round(own, 1)
            how = "warm" if suffix else "cold"
            lines.append(f"   stem spawn ({how}) less the service's own start: {own:.1f} ms (median less median)")
        lines.append(
            f"   import stem.cli per -X importtime: {total:.1f} ms (wall, minus `pass`: {imp - ref:.1f} ms); heaviest "
            "direct imports: " + ", ".join(f"{n} {ms:.1f}" for n, ms in heaviest)
        )
        self.tables.append(lines)

    # 2. cost of a host ------------------------------------------------------------------------------------

    def host_cost(self) -> None:
        pids = {}
        for name in self.names:
            pid = self.host_pid(name)
            if pid is None:
                raise RuntimeError(f"{name} has no host running")
            pids[name] = pid
        ref = subprocess.Popen([sys.executable, "-c", IDLE_PYTHON], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.children.append(ref)
        assert ref.stdout is not None
        if ref.stdout.readline().strip() != b"ready":
            raise RuntimeError("the reference idle python did not start")
        every = [*pids.values(), ref.pid]
        log(f"idle cost: {self.idle_seconds:.0f} s window over {len(pids)} hosts and the reference")
        before = {pid: (cpu_ticks(pid), sched_ns(pid), switches(pid)) for pid in every}
        started = time.monotonic()
        time.sleep(self.idle_seconds)  # the measurement window itself, not a wait for anything
        after = {pid: (cpu_ticks(pid), sched_ns(pid), switches(pid)) for pid in every}
        window = time.monotonic() - started
        memory = {pid: memory_mb(pid) for pid in every}
        host_threads = [threads(pid) for pid in pids.values()]
        host_fds = [descriptors(pid) for pid in pids.values()]
        polling = {}  # hosts whose file watchers fell back to polling their worktree (no inotify instance left)
        for name in pids:
            with contextlib.suppress(OSError):
                text = self.paths(name).log.read_text(errors="replace")
                if "watching by polling: " in text:
                    polling[name] = text.split("watching by polling: ", 1)[1].splitlines()[0]
        if polling:
            self.notes.append(
                f"{len(polling)} of {self.n} hosts watch their worktree by polling, not inotify "
                f"({next(iter(polling.values()))}); their idle figures include a walk of the worktree every 2 s"
            )
        ref.kill()
        ref.wait()

        def usage(pid: int) -> tuple[float, float, float]:
            (t0, s0, w0), (t1, s1, w1) = before[pid], after[pid]
            return (t1 - t0) / TICKS / window * 100, (s1 - s0) / 1e9 / window * 100, (w1 - w0) / window

        hosts = [usage(pid) for pid in pids.values()]
        ref_cpu, ref_sched, ref_wake = usage(ref.pid)
        pss = [memory[pid][0] for pid in pids.values()]
        rss = [memory[pid][1] for pid in pids.values()]
        f = self.figures
        f.update(
            {
                "host_pss_median_mb": round(statistics.median(pss), 2),
                "host_pss_max_mb": round(max(pss), 2),
                "hosts_pss_total_mb": round(sum(pss), 1),
                "ref_pss_mb": round(memory[ref.pid][0], 2),
                "host_rss_median_mb": round(statistics.median(rss), 2),
                "ref_rss_mb": round(memory[ref.pid][1], 2),
                "host_threads_median": statistics.median(host_threads),
                "host_fds_median": statistics.median(fds for fds, _ in host_fds),
                "host_inotify_instances_median": statistics.median(ino for _, ino in host_fds),
                "hosts_polling": len(polling),
                "hosts_idle_cpu_pct": round(sum(h[0] for h in hosts), 3),
                "host_idle_cpu_pct_max": round(max(h[0] for h in hosts), 3),
                "ref_idle_cpu_pct": round(ref_cpu, 3),
                "hosts_idle_cpu_pct_sched": round(sum(h[1] for h in hosts), 3),
                "host_idle_cpu_pct_sched_median": round(statistics.median(h[1] for h in hosts), 4),
                "ref_idle_cpu_pct_sched": round(ref_sched, 5),
                "host_wakeups_per_s_median": round(statistics.median(h[2] for h in hosts), 1),
                "hosts_wakeups_per_s_total": round(sum(h[2] for h in hosts), 1),
                "ref_wakeups_per_s": round(ref_wake, 2),
                "idle_window_s": round(window, 2),
            }
        )
        for group, members in (("inotify", [n for n in pids if n not in polling]), ("polling", list(polling))):
            # When some hosts poll (another program took every inotify instance), each kind on its own.
            group_usage = [usage(pids[n]) for n in members]
            f[f"host_idle_cpu_pct_sched_median_{group}"] = (
                round(statistics.median(u[1] for u in group_usage), 4) if group_usage and polling else None
            )
            f[f"host_wakeups_per_s_median_{group}"] = (
                round(statistics.median(u[2] for u in group_usage), 1) if group_usage and polling else None
            )
        f["ratio_host_pss_median"] = ratio(f["host_pss_median_mb"], f["ref_pss_mb"])
        f["ratio_host_idle_cpu_sched_median"] = ratio(f["host_idle_cpu_pct_sched_median"], f["ref_idle_cpu_pct_sched"])
        f["ratio_host_wakeups_median"] = ratio(f["host_wakeups_per_s_median"], f["ref_wakeups_per_s"])
        self.tables.append(
            [
                f"2. cost of a host: {self.n} hosts, each with the fake agent and one http.server, idle; "
                f"{window:.1f} s window",
                "   reference: an idle asyncio python (asyncio.run(asyncio.sleep(60))) in the same window",
                f"   {'figure':44}{'hosts':>11}{'reference':>11}{'ratio':>9}",
                f"   {'PSS per host, median (MB)':44}{fmt(f['host_pss_median_mb'], 11)}{fmt(f['ref_pss_mb'], 11)}"
                f"{fmt(f['ratio_host_pss_median'], 9, 2)}",
                f"   {'PSS per host, max (MB)':44}{fmt(f['host_pss_max_mb'], 11)}{fmt(f['ref_pss_mb'], 11)}"
                f"{fmt(ratio(f['host_pss_max_mb'], f['ref_pss_mb']), 9, 2)}",
                f"   {'RSS per host, median (MB)':44}{fmt(f['host_rss_median_mb'], 11)}{fmt(f['ref_rss_mb'], 11)}"
                f"{fmt(ratio(f['host_rss_median_mb'], f['ref_rss_mb']), 9, 2)}",
                f"   {'threads per host, median':44}{fmt(f['host_threads_median'], 11)}{fmt(1, 11)}",
                f"   {'open fds per host, median':44}{fmt(f['host_fds_median'], 11)}",
                f"   {'inotify instances per host, median':44}{fmt(f['host_inotify_instances_median'], 11)}"
                f"{'':20}(hosts polling instead: {len(polling)})",
                f"   {f'idle CPU, all {self.n} hosts, utime+stime (%)':44}{fmt(f['hosts_idle_cpu_pct'], 11, 3)}"
                f"{fmt(f['ref_idle_cpu_pct'], 11, 3)}",
                f"   {f'idle CPU, all {self.n} hosts, schedstat (%)':44}"
                f"{fmt(f['hosts_idle_cpu_pct_sched'], 11, 3)}{fmt(f['ref_idle_cpu_pct_sched'], 11, 5)}",
                f"   {'idle CPU per host, median, schedstat (%)':44}"
                f"{fmt(f['host_idle_cpu_pct_sched_median'], 11, 4)}{fmt(f['ref_idle_cpu_pct_sched'], 11, 5)}"
                f"{fmt(f['ratio_host_idle_cpu_sched_median'], 9, 1)}",
                f"   {'wakeups/s per host, median':44}{fmt(f['host_wakeups_per_s_median'], 11)}"
                f"{fmt(f['ref_wakeups_per_s'], 11)}{fmt(f['ratio_host_wakeups_median'], 9, 1)}",
            ]
        )
        if polling:
            for group, count in (("inotify", self.n - len(polling)), ("polling", len(polling))):
                self.tables[-1].append(
                    f"   {count} hosts watching by {group}: idle CPU per host, median "
                    f"{f[f'host_idle_cpu_pct_sched_median_{group}']} %, wakeups/s "
                    f"{f[f'host_wakeups_per_s_median_{group}']}"
                )

    # 3. keystroke to echo ---------------------------------------------------------------------------------

    async def watch_screen(self, name: str, predicate: Callable[[ScreenMirror], bool], what: str) -> None:
        """Subscribe to `name`'s screen until `predicate` holds for it (30 s at most)."""
        mirror = ScreenMirror()
        async with await p.Connection.open(self.paths(name).socket, "script", client="bench") as conn:
            await conn.subscribe("screen")

            async def follow() -> None:
                async for msg in conn.updates():
                    if isinstance(msg, p.Snapshot | p.Rows):
                        mirror.apply(msg)
                        if predicate(mirror):
                            return
                raise RuntimeError(f"{name}'s host closed the connection before {what}")

            try:
                await asyncio.wait_for(follow(), 30)
            except TimeoutError:
                raise RuntimeError(f"timed out waiting for {what}; {name} shows {mirror.text()}") from None

    async def follow(self, name: str, publish: Callable[[Event], None]) -> tuple[HostLink, asyncio.Task[str]]:
        link = HostLink(name, self.paths(name), publish)
        task = asyncio.create_task(link.run())
        waiter = asyncio.create_task(link.connected.wait())
        await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not link.connected.is_set():
            raise RuntimeError(f"could not follow {name}: {await task if task.done() else 'timed out'}")
        return link, task

    async def type_keys(self, link: HostLink, probe: Probe, line: list[str]) -> list[float]:
        """Type `--keys` characters into the link's agent; seconds from sending each to its echo being applied."""
        samples: list[float] = []
        rng = random.Random(7)
        mirror = link.mirror

        def cursor_row() -> str:
            return row_text(mirror, mirror.cursor.y).rstrip()

        for i in range(self.keys):
            if len(line) >= 40:
                link.agent.write(b"\x15")  # ^U: the tty discards the typed line, the row is a bare prompt again
                line.clear()
                deadline = time.monotonic() + 10
                while cursor_row() != PROMPT:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"^U did not clear the line: {cursor_row()!r}")
                    await asyncio.sleep(0.005)  # polling the condition
                await asyncio.sleep(rng.uniform(0.02, 0.04))  # the typist's rhythm: not typed into the same frame
            char = TYPED[i % len(TYPED)]
            line.append(char)
            probe.arm(f"{PROMPT} {''.join(line)}")
            started = time.perf_counter()
            link.agent.write(char.encode())
            try:
                await asyncio.wait_for(probe.seen.wait(), 10)
            except TimeoutError:
                raise RuntimeError(f"no echo of {char!r} within 10 s; the row shows {cursor_row()!r}") from None
            samples.append(probe.seen_at - started)
            await asyncio.sleep(rng.uniform(0.02, 0.04))  # the typist's rhythm (~30 keys a second), not a wait
        return samples

    def pty_reference(self) -> list[float]:
        """A byte written to a PTY running `cat` until its echo is read back; the same rhythm as the typing."""
        from ptyprocess import PtyProcess

        proc = PtyProcess.spawn(["cat"], env=self.env)
        rng = random.Random(7)
        samples = []
        try:
            for i in range(self.keys):
                char = TYPED[i % len(TYPED)].encode()
                started = time.perf_counter()
                os.write(proc.fd, char)
                got = b""
                while not got:
                    ready, _, _ = select.select([proc.fd], [], [], 10)
                    if not ready:
                        raise RuntimeError("no echo from the reference PTY within 10 s")
                    got = os.read(proc.fd, 64)
                samples.append(time.perf_counter() - started)
                if got != char:
                    raise RuntimeError(f"the reference PTY echoed {got!r} for {char!r}")
                time.sleep(rng.uniform(0.02, 0.04))  # the typist's rhythm, as for the hosts
        finally:
            proc.terminate(force=True)
        return samples

    async def keystrokes(self) -> None:
        quiet, flooders = self.names[0], self.names[1 : 1 + FLOODERS]
        others = self.names[1:]
        probe = Probe()
        link, task = await self.follow(quiet, probe.publish)
        probe.mirror = link.mirror
        tasks = [task]
        conns: list[p.Connection] = []
        line = list("x" * 40)  # so the first key starts from a fresh prompt line
        results: dict[str, tuple[list[float], list[float]]] = {}
        try:
            await self.watch_screen(quiet, lambda m: any(PROMPT in r for r in m.text()), f"{quiet}'s prompt")
            log(f"typing {self.keys} keys, nothing flooding")
            ref = await asyncio.to_thread(self.pty_reference)
            results["flood0"] = (await self.type_keys(link, probe, line), ref)

            log(f"flooding {len(flooders)} colonies")
            for name in flooders:
                conn = await p.Connection.open(self.paths(name).socket, "script", client="bench flood")
                conns.append(conn)
                conn.post(p.Keys(FLOOD))
            for name in flooders:
                await self.watch_screen(name, lambda m: any("quick brown fox" in r for r in m.text()), "its flood")
            log(f"typing {self.keys} keys, {len(flooders)} colonies flooding, the client following {quiet} only")
            ref = await asyncio.to_thread(self.pty_reference)
            results[f"flood{len(flooders)}"] = (await self.type_keys(link, probe, line), ref)

            log(f"typing {self.keys} keys, {len(flooders)} colonies flooding, the client following all colonies")
            for name in others:
                tasks.append((await self.follow(name, lambda e: None))[1])
            ref = await asyncio.to_thread(self.pty_reference)
            results[f"flood{len(flooders)}_ui"] = (await self.type_keys(link, probe, line), ref)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.post(p.Keys(b"\x03"))
        for name in flooders:
            await self.watch_screen(
                name,
                lambda m: any("interrupted" in r for r in m.text()) and row_text(m, m.cursor.y).startswith(PROMPT),
                "the flood to be interrupted",
            )
        for conn in conns:
            await conn.close()
        after = [memory_mb(pid)[0] for pid in (self.host_pid(n) for n in [quiet, *flooders]) if pid is not None]
        self.figures["host_pss_after_flood_max_mb"] = round(max(after), 2)

        f = self.figures
        lines = [
            f"3. keystroke -> echo applied in a client's ScreenMirror, through the colony host; {self.keys} keys each",
            "   reference: a byte through a PTY running `cat` (write, read the echo), in the same conditions",
            f"   {'configuration':44}{'p50':>8}{'p99':>8}{'max':>8}   {'ref p50':>8}{'ref p99':>8}{'ratio p50':>10}",
        ]
        labels = {
            "flood0": "no colony flooding",
            f"flood{len(flooders)}": f"{len(flooders)} flooding, client follows 1 colony",
            f"flood{len(flooders)}_ui": f"{len(flooders)} flooding, client follows all {self.n}",
        }
        for key, (ms, ref) in results.items():
            ms = [s * 1000 for s in ms]
            ref = [s * 1000 for s in ref]
            f[f"keystroke_p50_ms_{key}"] = round(statistics.median(ms), 2)
            f[f"keystroke_p99_ms_{key}"] = round(pct(ms, 0.99), 2)
            f[f"keystroke_max_ms_{key}"] = round(max(ms), 2)
            f[f"keystroke_slowest_{key}"] = [
                [i, round(v, 2)] for i, v in sorted(enumerate(ms), key=lambda e: -e[1])[:4]
            ]
            f[f"ref_pty_p50_ms_{key}"] = round(statistics.median(ref), 3)
            f[f"ref_pty_p99_ms_{key}"] = round(pct(ref, 0.99), 3)
            f[f"ref_pty_max_ms_{key}"] = round(max(ref), 3)
            f[f"ratio_keystroke_p50_{key}"] = ratio(f[f"keystroke_p50_ms_{key}"], f[f"ref_pty_p50_ms_{key}"])
            lines.append(
                f"   {labels[key]:44}{fmt(f[f'keystroke_p50_ms_{key}'], 8, 2)}{fmt(f[f'keystroke_p99_ms_{key}'], 8, 2)}"
                f"{fmt(f[f'keystroke_max_ms_{key}'], 8, 2)}   {fmt(f[f'ref_pty_p50_ms_{key}'], 8, 3)}"
                f"{fmt(f[f'ref_pty_p99_ms_{key}'], 8, 3)}{fmt(f[f'ratio_keystroke_p50_{key}'], 10, 0)}"
            )
        for key in results:
            slowest = ", ".join(f"#{i} {v} ms" for i, v in f[f"keystroke_slowest_{key}"])
            lines.append(f"   slowest keys, {labels[key]}: {slowest}")
        lines.append(
            f"   PSS of the quiet and flooded hosts after the floods, max: {f['host_pss_after_flood_max_mb']} MB"
        )
        self.tables.append(lines)

    # 5. reattach ------------------------------------------------------------------------------------------

    def tmux(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.tmux_socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def first_frame(
        self, session: str, command: str, texts: list[str], quit_keys: Sequence[tuple[str, str | None]] = ()
    ) -> tuple[float, float | None]:
        """Seconds from the Enter that execs `command` in a fresh pane until the pane shows every one of `texts`;
        then, with `quit_keys` ((key, text the pane shows before the next key)...), seconds from the last key
        until the program has exited (None without `quit_keys`)."""
        self.tmux(
            "new-session", "-d", "-s", session, "-x", str(COLS), "-y", str(ROWS), "-c", str(self.tmp),
            f"printf armed; read _ && exec {command}",
        )  # fmt: skip
        pid = int(self.tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        try:
            wait_for(lambda: "armed" in self.tmux("capture-pane", "-p", "-t", session), 10, "the pane's shell")
            started = time.perf_counter()
            self.tmux("send-keys", "-t", session, "Enter")
            deadline = started + 60
            while True:
                screen = self.tmux("capture-pane", "-p", "-t", session)
                if all(t in screen for t in texts):
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{command} never showed {texts}; the pane shows:\n{screen}")
                time.sleep(0.01)  # polling interval: capture-pane decides
            shown = time.perf_counter() - started
            if not quit_keys:
                return shown, None
            for key, then in quit_keys:
                pressed = time.perf_counter()
                self.tmux("send-keys", "-t", session, key)
                if then is not None:
                    wait_for(lambda then=then: then in self.tmux("capture-pane", "-p", "-t", session), 10, then)
            if not launch.wait_exit(pid, 30):
                raise RuntimeError(f"{command} did not exit within 30 s of {quit_keys[-1][0]}")
            return shown, time.perf_counter() - pressed
        finally:
            self.tmux("kill-session", "-t", session, check=False)  # SIGHUP to the UI, as a closed terminal does
            if not launch.wait_exit(pid, 10):
                self.notes.append(f"the process of pane {session} ({command}) outlived its tmux session by 10 s")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def reattach(self) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed: apt-get install tmux")
        app = self.tmp / "ready_app.py"
        app.write_text(READY_APP)
        before = {n: self.host_pid(n) for n in self.names}
        self.tmux("new-session", "-d", "-s", "keep", "cat")  # keeps the server up between runs
        server = int(self.tmux("display-message", "-p", "#{pid}").strip())
        self.tmux_server = (server, procs.starttime(server) or 0)
        stem_cmd = shlex.join(self.stem)
        cold_cmd = shlex.join(["env", "STEM_WARM=0", *self.stem])
        ref_cmd = shlex.join([sys.executable, str(app)])
        samples: dict[str, list[float]] = {
            "stem": [], "cold": [], "ref": [], "stem_quit": [], "cold_quit": [], "ref_quit": []
        }  # fmt: skip
        # q asks (the colonies keep running), y quits: timed from the y. The bare app quits on ctrl+q.
        quit_stem = [("q", "Quit Stem?"), ("y", None)]
        quits = {"stem": quit_stem, "cold": quit_stem, "ref": [("C-q", None)]}
        # The colonies panel of a 45-row pane shows the first ~10 colonies: wait for those that fit.
        shown = [*self.names[:VISIBLE_COLONIES], PROMPT]
        runs = [("ref", ref_cmd, ["ready"]), ("stem", stem_cmd, shown), ("cold", cold_cmd, shown)]
        try:
            # The warm-up round's UI starts the hive's warm UI process (stem/warm.py): from then on `stem` is a
            # reattach as a user makes it, forked warm; `STEM_WARM=0 stem` is the cold start beside it.
            for i in range(-1, self.ui_runs):
                log(f"reattach: round {i + 1} of {self.ui_runs}" + (" (warm-up)" if i < 0 else ""))
                at = i % len(runs)
                for key, command, texts in runs[at:] + runs[:at]:
                    took, quit_took = self.first_frame(f"{key}{i + 1}", command, texts, quits[key])
                    if i >= 0:
                        samples[key].append(took)
                        if quit_took is not None:
                            samples[f"{key}_quit"].append(quit_took)
                if i < 0:
                    warm = WarmPaths.of(self.home).socket
                    wait_for(warm.exists, 30, "the warm UI process the first UI starts")
        finally:
            self.tmux("kill-server", check=False)
        after = {n: self.host_pid(n) for n in self.names}
        if after != before:
            self.notes.append(f"hosts changed while UIs came and went: {before} -> {after}")
        stem_median, stem_p90 = self.record("reattach", samples["stem"])
        cold_median, cold_p90 = self.record("cold_first_frame", samples["cold"])
        ref_median, ref_p90 = self.record("ref_textual_first_frame", samples["ref"])
        self.figures["ratio_reattach_median"] = ratio(stem_median, ref_median)
        self.figures["ratio_cold_first_frame_median"] = ratio(cold_median, ref_median)
        self.figures["warm_process"] = WarmPaths.of(self.home).process() is not None
        quit_median, quit_p90 = self.record("ui_quit", samples["stem_quit"])
        ref_quit_median, ref_quit_p90 = self.record("ref_textual_quit", samples["ref_quit"])
        self.figures["ratio_ui_quit_median"] = ratio(quit_median, ref_quit_median)
        self.tables.append(
            [
                f"5. reattach: `stem` exec'd in a {COLS}x{ROWS} tmux pane with {self.n} colonies until it shows the "
                f"first {min(self.n, VISIBLE_COLONIES)} colony names and the agent's prompt; {self.ui_runs} runs",
                "   reference: a minimal Textual app until its 'ready' shows, measured the same way",
                f"   {'':44}{'median':>9}{'p90':>9}{'ratio':>9}",
                f"   {'stem UI, first full frame (warm start)':44}{fmt(stem_median, 9)}{fmt(stem_p90, 9)}"
                f"{fmt(self.figures['ratio_reattach_median'], 9, 2)}",
                f"   {'STEM_WARM=0 stem (cold start)':44}{fmt(cold_median, 9)}{fmt(cold_p90, 9)}"
                f"{fmt(self.figures['ratio_cold_first_frame_median'], 9, 2)}",
                f"   {'minimal Textual app, first frame':44}{fmt(ref_median, 9)}{fmt(ref_p90, 9)}{'1.00':>9}",
                f"   {'stem UI quit (q, y) until the process exits':44}{fmt(quit_median, 9)}{fmt(quit_p90, 9)}"
                f"{fmt(self.figures['ratio_ui_quit_median'], 9, 2)}",
                f"   {'bare Textual app quit (ctrl+q)':44}{fmt(ref_quit_median, 9)}{fmt(ref_quit_p90, 9)}{'1.00':>9}",
            ]
        )

    # 4. stop all ------------------------------------------------------------------------------------------

    def stop_all(self) -> None:
        log(f"stopping all {self.n} colonies in one command")
        took, _ = self.stem_run("stop", *self.names)
        listed = self.listed()
        wrong = {n: listed[n]["state"] for n in self.names if listed[n]["state"] != "stopped" or listed[n]["host"]}
        if wrong:
            self.notes.append(f"after stem stop of all: not stopped or host still up: {wrong}")
        f = self.figures
        f["stop_all_ms"] = round(took * 1000, 1)
        f["ref_stop_all_ms"] = round(self.n * f["stop_median_ms"], 1)
        f["stop_all_per_colony_ms"] = round(took * 1000 / self.n, 1)
        f["ratio_stop_all"] = ratio(f["stop_all_ms"], f["ref_stop_all_ms"])
        self.tables.append(
            [
                f"4. stop all: `stem stop` with {self.n} names in one command",
                f"   {'':44}{'ms':>9}{'ratio':>9}",
                f"   {f'stem stop {self.n} names':44}{fmt(f['stop_all_ms'], 9)}{fmt(f['ratio_stop_all'], 9, 2)}",
                f"   {f'{self.n} x median single stem stop (reference)':44}{fmt(f['ref_stop_all_ms'], 9)}{'1.00':>9}",
                f"   per colony: {f['stop_all_per_colony_ms']} ms",
            ]
        )

    # cleaning up ------------------------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        found = [n for n in netns.list_namespaces() if n.startswith(f"{self.prefix}-")]
        found += [n for n in netns.list_links() if self._link_re.match(n)]
        found += [f"host pid {pid}" for pid, start in self.host_pids.items() if procs.alive(pid, start)]
        found += [f"process {c.pid}" for c in self.children if c.poll() is None]
        if self.tmux_server is not None and procs.alive(*self.tmux_server):
            found.append(f"tmux server {self.tmux_server[0]}")
        if firewall.table_exists(self.prefix):
            found.append(f"nftables table of {self.prefix}")
        return found

    def cleanup(self) -> list[str]:
        """Remove everything this run made; what could not be removed. Ctrl-C is ignored meanwhile."""
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if shutil.which("tmux"):
                self.tmux("kill-server", check=False)
            if self.tmux_server is not None and not launch.wait_exit(self.tmux_server[0], 5):
                with contextlib.suppress(ProcessLookupError):
                    if procs.alive(*self.tmux_server):
                        os.kill(self.tmux_server[0], signal.SIGKILL)
            for child in self.children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if (self.home / "hive.db").exists():
                for pid_file in (self.home / "colonies").glob("*/host.pid"):
                    self.host_pid(pid_file.parent.name)
                try:
                    asyncio.run(self._cleanup_hive())
                except Exception as exc:
                    log(f"warning: cleaning the hive failed: {type(exc).__name__}: {exc}")
            self._kill_leftover_processes()
            for name in [n for n in netns.list_namespaces() if n.startswith(f"{self.prefix}-")]:
                with contextlib.suppress(Exception):
                    netns.destroy(name, "")
            for name in [n for n in netns.list_links() if self._link_re.match(n)]:
                with contextlib.suppress(Exception):
                    netns.delete_link(name)
            with contextlib.suppress(Exception):
                firewall.remove(self.prefix)
            shutil.rmtree(self.tmp, ignore_errors=True)
            return self.leftovers()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    async def _cleanup_hive(self) -> None:
        await destroy_hive(self.home, self.prefix, self.pool, log)

    def _kill_leftover_processes(self) -> None:
        """Hosts by the pids seen, the warm UI process, the registry's process groups, anything still in the run's
        namespaces."""
        warm = WarmPaths.of(self.home).process()
        if warm is not None:
            log(f"warning: killing the warm UI process {warm[0]}, still alive after the hive's cleanup")
            with contextlib.suppress(ProcessLookupError):
                os.kill(warm[0], signal.SIGKILL)
        for pid, start in self.host_pids.items():
            if procs.alive(pid, start):
                log(f"warning: killing host {pid}, still alive after the hive's cleanup")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--colonies", type=int, default=10, help="colonies running (default 10)")
    parser.add_argument("--runs", type=int, default=10, help="runs of each short command (default 10)")
    parser.add_argument("--keys", type=int, default=200, help="keystrokes per configuration (default 200)")
    parser.add_argument("--ui-runs", type=int, default=5, help="UI starts timed, and as many references (default 5)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window (default 10)")
    args = parser.parse_args()
    if args.colonies < 1 + FLOODERS:
        parser.error(f"--colonies must be at least {1 + FLOODERS} (one typist, {FLOODERS} flooders)")
    require_netns_privileges("the host benchmark")
    signal.signal(signal.SIGTERM, _interrupt)  # so `kill` cleans up like Ctrl-C does

    bench = Bench(args)

    def sections() -> None:
        bench.setup()
        bench.short_commands()
        bench.host_cost()
        asyncio.run(bench.keystrokes())
        bench.reattach()
        bench.stop_all()

    run = run_sections(sections, bench.cleanup, log)
    load_start, load_end, error, leftovers = run.load_start, run.load_end, run.error, run.leftovers

    print(
        f"Stem colony host benchmark: {bench.n} colonies, {os.cpu_count()} CPUs, load average {load_start} at start, "
        f"{load_end} at the end; prefix {bench.prefix}, pool {bench.pool}"
    )
    order = sorted(bench.tables, key=lambda t: t[0])  # sections in their numbered order (4 runs after 5)
    for table in order:
        print()
        for line in table:
            print(line)
    print()
    for note in bench.notes:
        print(f"note: {note}")
    if error:
        print(f"error: {error}" + ("" if leftovers else " (everything the run made was removed)"))
    if leftovers:
        print(f"warning: still present after cleanup: {', '.join(leftovers)}")
    result: dict[str, Any] = {
        "colonies": bench.n,
        "runs": bench.runs,
        "keys": bench.keys,
        "ui_runs": bench.ui_runs,
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "stem_command": shlex.join(bench.stem),
        "prefix": bench.prefix,
        "pool": str(bench.pool),
        **bench.figures,
        "notes": bench.notes,
        "leftovers": leftovers,
    }
    if error:
        result["error"] = error
    print(json.dumps(result), flush=True)
    return 1 if error or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
