"""A cgroup per colony: its `[limits]` (memory, swap, CPUs, pids), every process of it in one place, its live usage,
and the end of it all at stop (nothing escapes by setsid, double fork or setns).

A colony's cgroup has its network namespace's name, `<prefix>-<colony>`, at the top of each hierarchy used, so a
process started in the namespace (`procs.spawn`, the agent's PTY) finds its cgroup from the namespace's name and
joins it between fork and exec. The hive's prefix keeps two hives apart, and `gc` finds what a crash left by it.

Each service also gets a cgroup of its own below its colony's (`<prefix>-<colony>/<prefix>-svc-<service>`), in the
hierarchy that tracks membership only (`Backend.service_hierarchies`): what a service started in another session
(a setsid'd worker, a double-forked daemon) is found and ended there before the service restarts, and with the
service. Removing a colony's cgroup removes its services' with it.

Two backends behind one interface (`Backend`):
- **v2**, where the unified hierarchy has the memory and pids controllers: one directory; `memory.max`,
  `memory.swap.max`, `cpu.max`, `pids.max`; OOM kills and refused forks in `memory.events` / `pids.events`.
- **v1** otherwise: a directory per controller hierarchy (memory, cpu, cpuacct, pids, freezer, each as mounted);
  `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes` for swap), `cpu.cfs_quota_us`, `pids.max`. When the
  unified hierarchy is mounted beside them (the "hybrid" layout), the colony gets a directory there too: without a
  controller it still has `cgroup.kill`, `cgroup.freeze` and `cgroup.events` (populated), which v1 lacks.
Everything above (creating, limiting, joining, ending, watching) is one code path over that interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import re
import select
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from core.config import Limits
from core.errors import StemError
from core.inotify import IN_MODIFY, Inotify
from core.names import netns_pattern

__all__ = [
    "EVENT_KINDS",
    "Backend",
    "CgroupError",
    "ColonyLimits",
    "LimitEvent",
    "LimitWatch",
    "Usage",
    "apply",
    "backend",
    "create",
    "describe",
    "end",
    "join",
    "make_service",
    "migrations_kept_fast",
    "names",
    "open_join",
    "procs",
    "remove",
    "service_cgroup",
    "size_text",
    "usage",
]

log = logging.getLogger("stem.cgroups")

V1_CONTROLLERS = frozenset({"memory", "cpu", "cpuacct", "pids", "freezer"})
V2_NEEDED = frozenset({"memory", "pids"})  # v2 is used only where these are delegated to us
CPU_PERIOD = 100_000  # µs: `cpus = 1.5` is 150 ms of CPU time every 100 ms
V1_UNLIMITED = 1 << 62  # v1 shows "no limit" as the page counter's maximum (9223372036854771712 bytes)
EVENT_KINDS = ("oom", "pids")  # the registry's event kinds for a kill by the OOM killer and a refused fork
PIDS_WINDOW = 2.0  # refused forks come in bursts (a fork loop): one report per window, with the count
V1_PIDS_LOOK = 5.0  # v1's pids.events notifies nobody: a look this often once the kernel log said the first
POLL_FALLBACK = 2.0  # without inotify (the per-user instances used up): a look at the counters this often
OOM_RECHECK = (0.05, 0.5, 2.0)  # v1 notifies *before* the OOM killer picks its victim: looks after a wake-up
OOM_NAME_WAIT = 1.0  # the kill is counted before the kernel logs "Killed process": how long a kill waits for its name
OOM_NAME_LOOK = 0.05  # and how often the kernel's log is read meanwhile
KEEP_FAST_EVERY = 0.002  # below an RCU grace period (10-17 ms measured here): see `migrations_kept_fast`
KEEP_FAST_FOR = 2.0  # at most this long: past it, the ~15 ms of a migration is little beside a start so slow


class CgroupError(StemError):
    """A colony's cgroup could not be made, limited or removed; the message names the file and why."""


class Usage(NamedTuple):
    """What a colony uses now, from its cgroup."""

    memory: int | None  # bytes charged to it now
    cpu: float | None  # CPU seconds used since the cgroup was made


@dataclass(frozen=True, slots=True)
class LimitEvent:
    """The kernel held a limit: `kind` is "oom" (a process killed) or "pids" (forks refused)."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class ColonyLimits:
    """The limits in force in a colony's cgroup (None: it has none), what it uses, and when the kernel held them."""

    in_force: Limits | None
    usage: Usage | None
    events: tuple[tuple[float, str, str], ...] = ()  # (at, kind, message), oldest first

    def as_dict(self) -> dict[str, Any]:
        return {
            "limits": dataclasses.asdict(self.in_force) if self.in_force is not None else None,
            "usage": self.usage._asdict() if self.usage is not None else None,
            "limit_events": [{"at": at, "kind": kind, "message": message} for at, kind, message in self.events],
        }


def size_text(size: int) -> str:
    """Bytes as people write them: 64 MiB, 1.5 GiB, 512 B."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def describe(limits: Limits) -> str:
    """One line for the colony's log: "memory 64 MiB, cpus 1.5, pids 100", or "none"."""
    parts = []
    if limits.memory is not None:
        parts.append(f"memory {size_text(limits.memory)}")
    if limits.swap is not None:
        parts.append(f"swap {size_text(limits.swap)}")
    if limits.cpus is not None:
        have = len(os.sched_getaffinity(0))
        more = f" (more than this machine's {have}: no limit in effect)" if limits.cpus >= have else ""
        parts.append(f"cpus {limits.cpus:g}{more}")
    if limits.pids is not None:
        parts.append(f"pids {limits.pids}")
    return ", ".join(parts) or "none"


# --- hierarchies -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted cgroup hierarchy: v1 (one or more controllers) or the unified v2 one."""

    mount: Path
    controllers: frozenset[str]
    unified: bool

    def dir(self, name: str) -> Path:
        return self.mount / name


_ESCAPED = re.compile(r"\\([0-7]{3})")


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> tuple[Hierarchy, ...]:
    """The cgroup hierarchies mounted here, the first mount of each (v1: the controllers Stem uses)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ()
    found: list[Hierarchy] = []
    seen: set[frozenset[str]] = set()
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2]
        mount = Path(_ESCAPED.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
        if fstype == "cgroup2":
            key = frozenset({"<unified>"})
            controllers = frozenset(_read(mount / "cgroup.controllers").split())
        elif fstype == "cgroup":
            controllers = key = frozenset(options.split(",")) & V1_CONTROLLERS
            if not controllers:
                continue
        else:
            continue
        if key not in seen:
            seen.add(key)
            found.append(Hierarchy(mount, controllers, fstype == "cgroup2"))
    return tuple(found)


def _subtree(path: Path) -> list[Path]:
    """`path` and the cgroups below it, the deepest first (the order they can be removed in); [] if it is gone."""
    below: list[Path] = []
    try:
        with os.scandir(path) as entries:
            folders = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:
        folders = []
    for folder in folders:
        below.extend(_subtree(folder))
    return [*below, path]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (memory.events, cgroup.events, cpu.stat): {"oom_kill": 3, ...}; {} if unreadable."""
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _number(path: Path) -> int | None:
    """A file holding one number; None if it says "max" or cannot be read."""
    text = _read(path).split()
    if not text or text[0] == "max":
        return None
    try:
        return int(text[0])
    except ValueError:
        return None


# --- the backends ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    """One file to write to set a limit: `required` when the limit is set (the file must exist)."""

    key: str  # the [limits] key it serves
    path: Path | None
    value: str
    required: bool


class Backend(ABC):
    """Where a colony's cgroup lives and what its files are called: what differs between v1 and v2."""

    version = ""

    def __init__(self, dirs: tuple[Hierarchy, ...], tracker: Hierarchy | None) -> None:
        self.hierarchies = dirs  # a colony gets a directory in each
        self.tracker = tracker  # the unified hierarchy, for cgroup.kill/freeze/events (v2, or v1's hybrid layout)

    def paths(self, name: str) -> list[Path]:
        return [h.dir(name) for h in self.hierarchies]

    def controller(self, controller: str, name: str) -> Path | None:
        """The colony's directory in the hierarchy holding `controller`, if one does."""
        return next((h.dir(name) for h in self.hierarchies if controller in h.controllers), None)

    def exists(self, name: str) -> bool:
        return any(path.is_dir() for path in self.paths(name))

    def names(self) -> set[str]:
        """Every cgroup directly under the top of the hierarchies (gc looks for its prefix among them)."""
        found: set[str] = set()
        for h in self.hierarchies:
            with contextlib.suppress(OSError), os.scandir(h.mount) as entries:
                found.update(e.name for e in entries if e.is_dir(follow_symlinks=False))
        return found

    def make(self, name: str) -> None:
        for path in self.paths(name):
            try:
                path.mkdir(exist_ok=True)
            except OSError as exc:
                raise CgroupError(f"cannot make cgroup {path}: {exc.strerror}") from None

    def service_hierarchies(self) -> tuple[Hierarchy, ...]:
        """Where a service gets a cgroup of its own below its colony's (`make_service`): the hierarchy that tells its
        processes apart and ends them (the unified one: cgroup.kill, cgroup.events; else v1's freezer), and only
        that one. In the others its processes stay in the colony's cgroup, so v1's memory and pids counters (local
        to a cgroup there) go on counting the colony's OOM kills and refused forks; on v2 the child enables no
        controller, so the colony's limits and counters cover it as before."""
        if self.tracker is not None:
            return (self.tracker,)
        freezer = next((h for h in self.hierarchies if h.controllers == {"freezer"}), None)
        return (freezer,) if freezer is not None else ()

    def rmdir(self, name: str) -> list[str]:
        """Remove the cgroup's directories, those below them first (its services'); what could not be removed, and
        why."""
        problems = []
        for path in self.paths(name):
            for folder in _subtree(path):
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    problems.append(f"{folder}: {exc.strerror}")
        return problems

    def procs(self, name: str) -> set[int]:
        """The processes in the cgroup and below it (its services'), of every hierarchy: one that failed to join
        one still counts."""
        pids: set[int] = set()
        for path in self.paths(name):
            for folder in _subtree(path):
                pids.update(int(p) for p in _read(folder / "cgroup.procs").split())
        return pids

    def kill_file(self, name: str) -> Path | None:
        """v2's cgroup.kill (Linux 5.14): one write SIGKILLs every process in it, forks in flight included."""
        if self.tracker is None:
            return None
        path = self.tracker.dir(name) / "cgroup.kill"
        return path if path.exists() else None

    def events_file(self, name: str) -> Path | None:
        """v2's cgroup.events: says `populated 0` once the last process has left, and notifies inotify of it."""
        if self.tracker is None:
            return None
        path = self.tracker.dir(name) / "cgroup.events"
        return path if path.exists() else None

    def freeze(self, name: str, frozen: bool) -> bool:
        """Freeze (or thaw) every process of the colony: v2's cgroup.freeze, else the v1 freezer. False if neither
        exists. Freezing waits until the kernel says frozen (a second at most)."""
        if self.tracker is not None and (self.tracker.dir(name) / "cgroup.freeze").exists():
            path, value, done = self.tracker.dir(name) / "cgroup.freeze", "1" if frozen else "0", "frozen 1"
            state = self.tracker.dir(name) / "cgroup.events"
        else:
            freezer = self.controller("freezer", name)
            if freezer is None or not (freezer / "freezer.state").exists():
                return False
            path, value, done = freezer / "freezer.state", "FROZEN" if frozen else "THAWED", "FROZEN"
            state = path
        try:
            path.write_text(value)
        except OSError:
            return False
        deadline = time.monotonic() + 1.0
        delay = 0.001
        # Used only where cgroup.kill is missing (v1 alone, or Linux < 5.14): the v1 freezer notifies nothing, so a
        # bounded look with backoff.
        while frozen and done not in _read(state) and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    @abstractmethod
    def limit_writes(self, name: str, limits: Limits) -> list[Write]:
        """The writes that set `limits`, in order (an unset limit is lifted)."""

    @abstractmethod
    def in_force(self, name: str) -> Limits:
        """The limits the kernel holds the colony to now."""

    @abstractmethod
    def usage(self, name: str) -> Usage: ...

    @abstractmethod
    def oom_kills(self, name: str) -> int | None:
        """How many processes the OOM killer has killed in it (None: no memory controller or no cgroup)."""

    @abstractmethod
    def forks_refused(self, name: str) -> int | None:
        """How many forks its pids limit has refused."""

    @abstractmethod
    def watched_files(self, name: str) -> list[Path]:
        """Files that notify inotify when a limit was hit (v2); v1 has none."""

    def oom_eventfd(self, name: str) -> int | None:
        """An eventfd the kernel signals on each OOM in the colony (v1's cgroup.event_control); None on v2."""
        return None


class V2(Backend):
    version = "v2"

    def __init__(self, unified: Hierarchy) -> None:
        super().__init__((unified,), unified)

    def limit_writes(self, name: str, limits: Limits) -> list[Write]:
        d = self.hierarchies[0].dir(name)

        def write(key: str, file: str, value: int | None, unlimited: str = "max") -> Write:
            path = d / file if (d / file).exists() else None
            return Write(key, path, str(value) if value is not None else unlimited, value is not None)

        cpu = write("cpus", "cpu.max", None, f"max {CPU_PERIOD}")
        if limits.cpus is not None:
            cpu = dataclasses.replace(cpu, value=f"{_quota(limits.cpus)} {CPU_PERIOD}", required=True)
        return [
            write("memory", "memory.max", limits.memory),
            write("swap", "memory.swap.max", limits.swap),
            cpu,
            write("pids", "pids.max", limits.pids),
        ]

    def in_force(self, name: str) -> Limits:
        d = self.hierarchies[0].dir(name)
        quota, _, period = _read(d / "cpu.max").partition(" ")
        cpus = int(quota) / int(period) if quota.isdigit() and period.strip().isdigit() else None
        return Limits(
            memory=_number(d / "memory.max"),
            cpus=cpus,
            pids=_number(d / "pids.max"),
            swap=_number(d / "memory.swap.max"),
        )

    def usage(self, name: str) -> Usage:
        d = self.hierarchies[0].dir(name)
        usec = _keyed(d / "cpu.stat").get("usage_usec")
        return Usage(_number(d / "memory.current"), usec / 1e6 if usec is not None else None)

    def oom_kills(self, name: str) -> int | None:
        return _keyed(self.hierarchies[0].dir(name) / "memory.events").get("oom_kill")

    def forks_refused(self, name: str) -> int | None:
        return _keyed(self.hierarchies[0].dir(name) / "pids.events").get("max")

    def watched_files(self, name: str) -> list[Path]:
        d = self.hierarchies[0].dir(name)
        return [p for p in (d / "memory.events", d / "pids.events") if p.exists()]


class V1(Backend):
    version = "v1"

    def limit_writes(self, name: str, limits: Limits) -> list[Write]:
        memory, cpu, pids = self.controller("memory", name), self.controller("cpu", name), self.controller("pids", name)

        def at(d: Path | None, file: str) -> Path | None:
            return d / file if d is not None and (d / file).exists() else None

        def value(number: int | None) -> str:
            return str(number) if number is not None else "-1"

        if limits.swap is not None and limits.memory is None:
            raise CgroupError("[limits] swap needs memory too on cgroup v1 (it limits memory and swap together)")
        memsw = at(memory, "memory.memsw.limit_in_bytes")
        writes = [
            # memory+swap may never be below memory: lifted first, set last.
            Write("swap", memsw, "-1", False),
            Write("memory", at(memory, "memory.limit_in_bytes"), value(limits.memory), limits.memory is not None),
            Write("cpus", at(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD), limits.cpus is not None),
            Write("cpus", at(cpu, "cpu.cfs_quota_us"), value(_quota(limits.cpus)), limits.cpus is not None),
            Write("pids", at(pids, "pids.max"), str(limits.pids) if limits.pids else "max", limits.pids is not None),
        ]
        if limits.swap is not None and limits.memory is not None:
            writes.append(Write("swap", memsw, str(limits.memory + limits.swap), True))
        return writes

    def in_force(self, name: str) -> Limits:
        memory_dir, cpu, pids = (self.controller(c, name) for c in ("memory", "cpu", "pids"))
        memory = memsw = quota = period = None
        if memory_dir is not None:
            memory = _number(memory_dir / "memory.limit_in_bytes")
            memsw = _number(memory_dir / "memory.memsw.limit_in_bytes")
        memory = memory if memory is not None and memory < V1_UNLIMITED else None
        memsw = memsw if memsw is not None and memsw < V1_UNLIMITED else None
        if cpu is not None:
            quota, period = _number(cpu / "cpu.cfs_quota_us"), _number(cpu / "cpu.cfs_period_us")
        return Limits(
            memory=memory,
            cpus=quota / period if quota is not None and quota > 0 and period else None,
            pids=_number(pids / "pids.max") if pids is not None else None,
            swap=memsw - memory if memsw is not None and memory is not None else None,
        )

    def usage(self, name: str) -> Usage:
        memory, cpuacct = self.controller("memory", name), self.controller("cpuacct", name)
        used = _number(memory / "memory.usage_in_bytes") if memory is not None else None
        cpu = None
        if cpuacct is not None and (ns := _number(cpuacct / "cpuacct.usage")) is not None:
            cpu = ns / 1e9
        elif self.tracker is not None and (usec := _keyed(self.tracker.dir(name) / "cpu.stat").get("usage_usec")):
            cpu = usec / 1e6  # the unified hierarchy counts CPU time without a controller
        return Usage(used, cpu)

    def oom_kills(self, name: str) -> int | None:
        memory = self.controller("memory", name)
        return _keyed(memory / "memory.oom_control").get("oom_kill") if memory is not None else None

    def forks_refused(self, name: str) -> int | None:
        pids = self.controller("pids", name)
        return _keyed(pids / "pids.events").get("max") if pids is not None else None

    def watched_files(self, name: str) -> list[Path]:
        return []

    def oom_eventfd(self, name: str) -> int | None:
        memory = self.controller("memory", name)
        if memory is None:
            return None
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            control = os.open(memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                (memory / "cgroup.event_control").write_text(f"{efd} {control}")
            finally:
                os.close(control)  # the kernel keeps what it needs: the eventfd alone ends the registration
        except OSError:
            os.close(efd)
            return None
        return efd


def _quota(cpus: float | None) -> int | None:
    return max(1000, round(cpus * CPU_PERIOD)) if cpus is not None else None


def _disabled() -> bool:
    """`STEM_CGROUPS=0`: new colonies get no cgroup (benchmarks; hosts where cgroups cannot be written)."""
    return os.environ.get("STEM_CGROUPS", "").strip().lower() in ("0", "off", "no", "false")


@functools.cache
def _detect() -> Backend | None:
    found = hierarchies()
    unified = next((h for h in found if h.unified), None)
    if unified is not None and unified.controllers >= V2_NEEDED:
        # Delegated to the root: the top of the hierarchy must hand them down to its children (ours).
        wanted = {"memory", "pids", "cpu"} & unified.controllers
        enabled = set(_read(unified.mount / "cgroup.subtree_control").split())
        for controller in sorted(wanted - enabled):  # one by one: cpu can be refused (realtime tasks) alone
            with contextlib.suppress(OSError):
                (unified.mount / "cgroup.subtree_control").write_text(f"+{controller}")
        if set(_read(unified.mount / "cgroup.subtree_control").split()) >= V2_NEEDED:
            return V2(unified)
    v1 = tuple(h for h in found if not h.unified)
    if not any(h.controllers & {"memory", "pids"} for h in v1):
        return None
    return V1(v1 + ((unified,) if unified is not None else ()), unified)


def backend() -> Backend | None:
    """The machine's cgroup backend, or None where no hierarchy has the memory or pids controller."""
    return _detect()


def oom_kills(name: str) -> int | None:
    """How many processes the kernel killed in cgroup `name` for want of memory, so far; None: not counted."""
    be = _detect()
    return be.oom_kills(name) if be is not None else None


# --- making, limiting, joining ---------------------------------------------------------------------------------


def needed(limits: Limits) -> bool:
    """Whether a new colony gets a cgroup: True where cgroups work. Without them (or with STEM_CGROUPS=0) a
    colony runs without one, but one that asks for limits is refused: a limit must never look as if it held."""
    if backend() is not None and not _disabled():
        return True
    if any(value is not None for value in dataclasses.astuple(limits)):
        why = (
            "STEM_CGROUPS=0 turns them off" if _disabled() else "no cgroup hierarchy has the memory or pids controller"
        )
        raise CgroupError(f"[limits] cannot be applied: {why}")
    return False


def create(name: str, limits: Limits) -> None:
    """Make the colony's cgroup (a left-over one is reused) and set its limits."""
    be = backend()
    if be is None:
        raise CgroupError("no cgroup hierarchy has the memory or pids controller")
    be.make(name)
    apply(name, limits)


def apply(name: str, limits: Limits) -> None:
    """Set the colony's limits now (at spawn, start, and when colony.toml changes); unset ones are lifted. One that
    cannot be set puts back what was written before it: the limits in force are the old ones, never a mix (v1's
    swap is lifted first to set memory, and a memory below what is in use fails after it)."""
    be = backend()
    if be is None or not be.exists(name):
        if any(value is not None for value in dataclasses.astuple(limits)):
            raise CgroupError(f"[limits] cannot be applied: {name} runs without a cgroup (stop and start it)")
        return
    written: list[tuple[Path, str]] = []
    try:
        for write in be.limit_writes(name, limits):
            if write.path is None:
                if write.required:
                    raise CgroupError(
                        f"[limits] {write.key} cannot be applied: this kernel's cgroup {be.version} has no "
                        f"file for it (controller not mounted or not enabled)"
                    )
                continue
            try:
                old = write.path.read_text().strip()
                write.path.write_text(write.value)
            except OSError as exc:
                busy = exc.errno == errno.EBUSY and write.key == "memory"
                hint = " (more than that is in use now and cannot be reclaimed)" if busy else ""
                raise CgroupError(
                    f"[limits] {write.key}: cannot write {write.value} to {write.path}: {exc.strerror}{hint}"
                ) from None
            written.append((write.path, old))
    except CgroupError:
        for path, old in reversed(written):  # in reverse: v1's memory+swap goes back after memory
            with contextlib.suppress(OSError):
                path.write_text(old)
        raise


def open_join(name: str) -> list[int]:
    """Descriptors of the cgroup.procs files of cgroup `name` (none without a cgroup), opened before a fork so that
    the child only has to write to them (`join`). The caller closes them after the fork. A service's cgroup
    (`colony/service`) has a directory in some hierarchies only (`Backend.service_hierarchies`): in the others the
    child joins its colony's."""
    be = backend()
    fds: list[int] = []
    if be is None:
        return fds
    parts = name.split("/")
    for h in be.hierarchies:
        for depth in range(len(parts), 0, -1):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                fds.append(os.open(h.dir("/".join(parts[:depth])) / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
                break
    return fds


def join(fds: Iterable[int]) -> None:
    """In a child between fork and exec: move this process into the cgroup ("0" is the writer itself). Raises if the
    kernel refuses, so nothing runs outside its colony's limits."""
    for fd in fds:
        os.write(fd, b"0")


@contextlib.contextmanager
def migrations_kept_fast() -> Iterator[None]:
    """While a colony starts, keep the kernel's cgroup migrations quick.

    Moving a process into a cgroup (`join`) takes the kernel's cgroup_threadgroup_rwsem for writing; when no
    migration took it within the last RCU grace period, the writer first waits a whole grace period (10-17 ms
    measured on this kernel), while right after another one it takes ~0.1 ms. A colony's start moves its init,
    then each service, then its agent, each past that window of the one before: ~15 ms apiece on the way to a
    spawn's end. Inside this block (for KEEP_FAST_FOR at most), a thread moves itself to the cgroup it is already
    in (nothing changes, but the lock is taken) every KEEP_FAST_EVERY, so each of them finds it warm. Costs ~15 µs
    a time, and meanwhile forks and exits on the machine take the lock's slower path, as they always do where
    cgroups are mounted with `favordynmods` (the kernel's own trade for this; there this block changes nothing).
    Where its own cgroup cannot be written it does nothing."""
    target = _own_cgroup_file()
    stop = threading.Event()
    if target is not None:
        until = time.monotonic() + KEEP_FAST_FOR
        threading.Thread(target=_keep_fast, args=(target, stop, until), name="cgroup-warm", daemon=True).start()
    try:
        yield
    finally:
        stop.set()  # not joined: its first write may still wait out a grace period, nothing depends on it


def _own_cgroup_file() -> tuple[Path, int] | None:
    """The file that moves a thread (v1: `tasks`, with the thread's id) or this process (v2: `cgroup.procs`) into
    the cgroup it is in now, in the first hierarchy Stem uses."""
    be = backend()
    if be is None or not be.hierarchies:
        return None
    first = be.hierarchies[0]
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, where = [*line.split(":", 2), "", ""][:3]
        mine = number == "0" if first.unified else first.controllers <= set(controllers.split(","))
        if mine:
            folder = first.mount / where.lstrip("/")
            return (folder / "cgroup.procs", 0) if first.unified else (folder / "tasks", -1)
    return None


def _keep_fast(target: tuple[Path, int], stop: threading.Event, until: float) -> None:
    path, who = target
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        me = str(threading.get_native_id() if who < 0 else os.getpid()).encode()  # "0" would not take the lock
        while True:
            os.write(fd, me)
            if stop.wait(KEEP_FAST_EVERY) or time.monotonic() > until:
                return
    except OSError:
        return  # refused (a cgroup of another owner, a v2 rule): migrations are merely slow
    finally:
        os.close(fd)


def procs(name: str) -> set[int]:
    """The processes in cgroup `name` and below it (its services' cgroups)."""
    be = backend()
    return be.procs(name) if be is not None else set()


# --- a cgroup per service ----------------------------------------------------------------------------------------


def service_cgroup(colony: str, service: str) -> str:
    """The name of a service's own cgroup, below its colony's (`<prefix>-<colony>`): `stem-web/stem-svc-api`."""
    prefix = colony.split("-", 1)[0]
    return f"{colony}/{prefix}-svc-{service}"


def make_service(colony: str, service: str) -> str | None:
    """Blocking: give a service a cgroup of its own below its colony's, emptied of anything a run before left in it;
    its name (for `procs.spawn`, `end`, `remove`), or None where the colony has no cgroup or its hierarchies cannot
    tell a service's processes apart (the service then runs in the colony's cgroup, as a whole colony's)."""
    be = backend()
    if be is None:
        return None
    name = service_cgroup(colony, service)
    made: list[Path] = []
    for h in be.service_hierarchies():
        if not h.dir(colony).is_dir():
            continue
        try:
            h.dir(name).mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("no cgroup of its own for service %s: cannot make %s: %s", name, h.dir(name), exc.strerror)
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            return None
        made.append(h.dir(name))
    if not made:
        return None
    end(name)  # what an abandoned run left (its host was killed): not the new run's
    return name


def names(prefix: str) -> list[str]:
    """The cgroups of the hive with `prefix` (named as its colonies' namespaces), in any hierarchy."""
    be = backend()
    pattern = netns_pattern(prefix)
    return sorted(n for n in (be.names() if be is not None else ()) if pattern.match(n))


def usage(name: str) -> Usage | None:
    """Memory in use (bytes) and CPU time used (seconds) by the colony now; None if it has no cgroup."""
    be = backend()
    if be is None or not be.exists(name):
        return None
    return be.usage(name)


def status(name: str, events: Iterable[tuple[float, str, str]] = ()) -> ColonyLimits:
    be = backend()
    if be is None or not be.exists(name):
        return ColonyLimits(None, None, tuple(events))
    return ColonyLimits(be.in_force(name), be.usage(name), tuple(events))


# --- ending ----------------------------------------------------------------------------------------------------


def end(name: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process in the colony's cgroup and wait until it is empty; the pids that were in it.

    v2 (and v1's hybrid layout): one write to cgroup.kill, then inotify on cgroup.events until `populated 0`.
    v1 alone: freeze (so nothing forks meanwhile), SIGKILL each, thaw; then wait on the pidfds of what is left,
    looking again once they are gone (a child forked before the freeze). Without a freezer: kill and look again
    until empty. No process escapes by setsid or a double fork (both stay in the cgroup) nor by setns."""
    be = backend()
    if be is None:
        return []
    first = be.procs(name)
    if not first:
        return []
    deadline = time.monotonic() + timeout
    kill = be.kill_file(name)
    if kill is not None:
        with contextlib.suppress(FileNotFoundError):
            kill.write_text("1")
    else:
        frozen = be.freeze(name, True)
        try:
            _kill_all(be.procs(name))
        finally:
            if frozen:
                be.freeze(name, False)
    events = be.events_file(name)
    if events is None or not _wait_unpopulated(events, deadline):
        _wait_empty_v1(be, name, deadline)
    return sorted(first)


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _wait_unpopulated(events: Path, deadline: float) -> bool:
    """Block on inotify until cgroup.events says `populated 0` (True), or the deadline (False). Polls with backoff
    only if no inotify instance can be had."""
    try:
        watcher: Inotify | None = Inotify()
    except OSError:
        watcher = None
    try:
        if watcher is not None:
            try:
                watcher.add_watch(str(events), IN_MODIFY)
            except OSError:
                watcher.close()
                watcher = None
        delay = 0.001
        while True:
            text = _read(events)  # read after the watch exists: a change in between still wakes us
            if not text or "populated 0" in text:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if watcher is not None:
                select.select([watcher.fd], [], [], remaining)
                watcher.read()
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
    finally:
        if watcher is not None:
            watcher.close()


def _wait_empty_v1(be: Backend, name: str, deadline: float) -> None:
    """Wait on the pidfds of the processes still in the cgroup (no polling), SIGKILLing any that appears (a child
    forked before a freeze took hold, or with no freezer at all), until none is left or the deadline."""
    from core import procs as processes  # procs imports this module

    def left() -> set[int]:
        members = {pid for pid in be.procs(name) if processes.alive(pid)}
        _kill_all(members)
        return members

    processes.wait_gone(left, max(0.0, deadline - time.monotonic()))


def remove(name: str, timeout: float = 5.0) -> bool:
    """End what runs in the colony's cgroup and remove it, in every hierarchy. False (with a log line) if the kernel
    kept a directory (a process stuck in the kernel); the caller keeps its claim, so gc tries again."""
    be = backend()
    if be is None or not be.exists(name):
        return True
    end(name, timeout)
    problems: list[str] = []
    for delay in (0.0, 0.01, 0.05, 0.2):  # a memory cgroup can stay busy a moment after its last process left
        time.sleep(delay)
        problems = be.rmdir(name)
        if not problems:
            return True
    log.warning("cgroup %s not removed: %s", name, "; ".join(problems))
    return False


# --- watching for OOM kills and refused forks ------------------------------------------------------------------

_OOM_KILL = re.compile(r"oom-kill:.*?oom_memcg=([^,]*),task_memcg=([^,]*),task=(.*),pid=(\d+),uid=")
_KILLED = re.compile(r"Killed process (\d+) \(")
_FORK_REFUSED = re.compile(r"fork rejected by pids controller in (\S+)")


def _pgid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2 :].split()[2])
    except (OSError, ValueError, IndexError):
        return None


class LimitWatch:
    """Reports OOM kills and refused forks in one colony's cgroup as they happen, on the running event loop.

    What wakes it: on v2, inotify on memory.events and pids.events; on v1, an eventfd the kernel signals on each OOM
    (memory.oom_control through cgroup.event_control). The kernel's log (/dev/kmsg, root only) names each victim
    (pid and command; `owner` turns a pid into "web" or "the agent"); without it a victim is "a process". v1's
    pids.events notifies nobody: the kernel's log says the first refusal at once, and from then on a look every
    V1_PIDS_LOOK s finds later ones. Without inotify (the per-user instances used up) the counters are read every
    POLL_FALLBACK s.
    """

    def __init__(
        self, name: str, report: Callable[[LimitEvent], None], owner: Callable[[int], str | None] | None = None
    ) -> None:
        self.name = name
        self._report = report
        self._owner = owner or (lambda pid: None)
        self._be: Backend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers: list[int] = []  # fds we read on the loop, closed by close()
        self._inotify: Inotify | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._oom_seen = 0
        self._oom_unreported = 0  # counted kills not reported yet: waiting for the kernel's log to name them
        self._oom_name_deadline: float | None = None
        self._oom_name_timer = False
        self._refused_seen = 0
        self._refused_reported = float("-inf")
        self._refused_timer = False
        self._victims: OrderedDict[int, str] = OrderedDict()  # pid -> who, from the kernel log, until counted
        self._eventfd: int | None = None
        self._kmsg: int | None = None
        self._v1_pids = False
        self._pids_looking = False
        self.polling = False

    def start(self) -> bool:
        """Start watching (call on the loop); False if the colony has no cgroup."""
        be = backend()
        if be is None or not be.exists(self.name):
            return False
        self._be, self._loop = be, asyncio.get_running_loop()
        self._oom_seen = be.oom_kills(self.name) or 0  # counted before this host: reported by the one before
        self._refused_seen = be.forks_refused(self.name) or 0
        self._eventfd = be.oom_eventfd(self.name)
        if self._eventfd is not None:
            self._read_on_loop(self._eventfd, self._on_oom_eventfd)
        files = be.watched_files(self.name)
        if files:
            try:
                self._inotify = Inotify()
                for path in files:
                    self._inotify.add_watch(str(path), IN_MODIFY)
            except OSError as exc:
                log.warning("%s: watching its cgroup by polling: %s", self.name, exc)
                if self._inotify is not None:
                    self._inotify.close()
                    self._inotify = None
                self.polling = True
                self._every(POLL_FALLBACK, self._check)
            else:
                self._read_on_loop(self._inotify.fd, self._on_inotify, close=False)
        self._open_kmsg()
        self._v1_pids = be.version == "v1" and be.controller("pids", self.name) is not None
        if self._v1_pids and (self._kmsg is None or self._refused_seen):
            self._look_at_forks()  # no kernel log to say the first refusal, or it was said before this host
        return True

    def _look_at_forks(self) -> None:
        """v1: look at the refused forks every V1_PIDS_LOOK s from now on. Only from the first refusal on when the
        kernel's log is read (it says that one, and no later one): an idle colony is not woken for it."""
        if not self._pids_looking:
            self._pids_looking = True
            self._every(V1_PIDS_LOOK, self._check_forks)

    def close(self) -> None:
        loop = self._loop
        for fd in self._readers:
            if loop is not None:
                loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._readers.clear()
        self._eventfd = self._kmsg = None
        if self._inotify is not None:
            if loop is not None:
                loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._loop = None

    # wake-ups ---------------------------------------------------------------------------------------------------

    def _read_on_loop(self, fd: int, callback: Callable[[], None], close: bool = True) -> None:
        assert self._loop is not None
        self._loop.add_reader(fd, callback)
        if close:
            self._readers.append(fd)

    def _later(self, delay: float, callback: Callable[[], object]) -> None:
        if self._loop is None:
            return

        def run() -> None:
            self._timers.discard(handle)
            if self._loop is not None:
                callback()

        handle = self._loop.call_later(delay, run)
        self._timers.add(handle)

    def _every(self, interval: float, callback: Callable[[], object]) -> None:
        def tick() -> None:
            callback()
            self._later(interval, tick)

        self._later(interval, tick)

    def _on_oom_eventfd(self) -> None:
        if self._eventfd is not None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._eventfd)
        if self._check_oom():
            return
        for delay in OOM_RECHECK:  # v1 signals before the kill; the kernel log (when readable) usually comes first
            self._later(delay, self._check_oom)

    def _on_inotify(self) -> None:
        if self._inotify is not None:
            self._inotify.read()
        self._check()

    def _check(self) -> None:
        self._check_oom()
        self._check_forks()

    # the kernel's log -------------------------------------------------------------------------------------------

    def _open_kmsg(self) -> None:
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # not root, or a container without it: victims go unnamed
        try:
            os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
        except OSError:
            os.close(fd)
            return
        self._kmsg = fd
        self._read_on_loop(fd, self._on_kmsg)

    def _on_kmsg(self) -> None:
        killed, refused = self._take_kmsg()
        if killed:
            self._check_oom()
        if refused:
            self._check_forks()

    def _take_kmsg(self) -> tuple[bool, bool]:
        """Take in what the kernel's log says about this cgroup: each OOM victim, named; and whether it printed a
        kill (after the kill counter went up) or a refused fork."""
        killed = refused = False
        for text in self._kmsg_records():
            if "oom-kill:" in text:
                self._victim(text)
            elif found := _KILLED.search(text):
                pid = int(found.group(1))
                if pid not in self._victims and (who := self._owner(pid)) is not None:
                    # The kernel prints the "oom-kill:" summary at most 10 times in 5 s (its OOM reports are rate
                    # limited), but "Killed process" always: a victim it names is ours if it is one of our own.
                    self._victims[pid] = who
                killed |= pid in self._victims
            elif (found := _FORK_REFUSED.search(text)) and self.name in found.group(1).split("/"):
                refused = True
        return killed, refused

    def _kmsg_records(self, limit: int = 512) -> list[str]:
        """Records waiting in the kernel's log, their text only (at most `limit`: the fd stays readable)."""
        records: list[str] = []
        fd = self._kmsg
        while fd is not None and len(records) < limit:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # records were overwritten before we read them: go on with the next
            except OSError:
                break
            if not record:
                break
            _, _, text = record.decode("utf-8", "replace").partition(";")
            records.append(text.split("\n", 1)[0])
        return records

    def _victim(self, text: str) -> None:
        found = _OOM_KILL.search(text)
        if found is None:
            return
        oom_memcg, task_memcg, task, pid_text = found.groups()
        if self.name not in oom_memcg.split("/") and self.name not in task_memcg.split("/"):
            return
        pid = int(pid_text)
        # Named now, while the victim is still there to ask its process group.
        who = self._owner(pid)
        if who is None:
            pgid = _pgid(pid)
            group = self._owner(pgid) if pgid is not None and pgid != pid else None
            who = f"{task} (pid {pid})" + (f" of {group}" if group else "")
        self._victims[pid] = who
        while len(self._victims) > 64:
            self._victims.popitem(last=False)

    # counting and reporting -------------------------------------------------------------------------------------

    def _check_oom(self) -> bool:
        """Report the OOM kills not reported yet; True if there were any.

        The kernel counts a kill before it logs "Killed process N": a kill counted with no victim read yet waits up
        to OOM_NAME_WAIT for the log to name it (reading it every OOM_NAME_LOOK), then goes out as "a process"."""
        be = self._be
        if be is None:
            return False
        if self._kmsg is not None and self._take_kmsg()[1]:
            self._later(0, self._check_forks)
        count = be.oom_kills(self.name)
        if count is not None and count > self._oom_seen:
            self._oom_unreported += count - self._oom_seen
            self._oom_seen = count
        elif not self._oom_unreported:
            return False
        limit = be.in_force(self.name).memory
        held = f" ({size_text(limit)})" if limit is not None else ""
        while self._oom_unreported and self._victims:
            self._oom_unreported -= 1
            self._report(LimitEvent("oom", f"{self._victims.popitem(last=False)[1]} killed: out of memory{held}"))
        if self._oom_unreported and self._kmsg is not None:
            now = time.monotonic()
            if self._oom_name_deadline is None:
                self._oom_name_deadline = now + OOM_NAME_WAIT
            if now < self._oom_name_deadline:
                if not self._oom_name_timer:
                    self._oom_name_timer = True
                    self._later(OOM_NAME_LOOK, self._oom_name_look)
                return True
        for _ in range(self._oom_unreported):
            self._report(LimitEvent("oom", f"a process killed: out of memory{held}"))
        self._oom_unreported, self._oom_name_deadline = 0, None
        return True

    def _oom_name_look(self) -> None:
        self._oom_name_timer = False
        self._check_oom()

    def _check_forks(self) -> None:
        be = self._be
        if be is None:
            return
        count = be.forks_refused(self.name)
        if count is None or count <= self._refused_seen:
            return
        if self._v1_pids:
            self._look_at_forks()
        wait = self._refused_reported + PIDS_WINDOW - time.monotonic()
        if wait > 0:  # one report per window: a fork loop is refused thousands of times
            if not self._refused_timer:
                self._refused_timer = True
                self._later(wait, self._forks_window_ended)
            return
        new, self._refused_seen = count - self._refused_seen, count
        self._refused_reported = time.monotonic()
        limit = be.in_force(self.name).pids
        times = f", {new} times" if new > 1 else ""
        self._report(LimitEvent("pids", f"fork refused: pids limit ({limit}) reached{times}"))

    def _forks_window_ended(self) -> None:
        self._refused_timer = False
        self._check_forks()
