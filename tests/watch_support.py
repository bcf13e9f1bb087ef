"""What the watcher tests look at: the kernel's own view of inotify instances and watches, context switches as the
count of wake-ups, batches collected from a watcher, and child processes with limits of their own."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def inotify_fds() -> list[int]:
    """This process's inotify instances, as the kernel lists its descriptors."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                found.append(int(name))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return found


def watched_inodes(fd: int) -> set[int]:
    """The inode of every directory the inotify instance `fd` watches (from /proc/self/fdinfo)."""
    inodes = set()
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("inotify wd:"):
            fields = dict(field.split(":", 1) for field in line.split()[1:])
            inodes.add(int(fields["ino"], 16))
    return inodes


def context_switches() -> int:
    """Voluntary and involuntary context switches of all this process's threads so far, ended ones included: each
    wake-up costs one."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


async def idle_wakeups(seconds: float = 1.0) -> int:
    """Context switches while the loop has nothing to do for `seconds` (the sleep itself costs one or two)."""
    before = context_switches()
    await asyncio.sleep(seconds)
    return context_switches() - before


class Batches:
    """Every batch a watcher delivers, and a way to wait until what arrived satisfies a condition."""

    def __init__(self) -> None:
        self.batches: list[tuple[frozenset[str], bool]] = []
        self._arrived = asyncio.Event()

    def __call__(self, changes: object) -> None:
        self.batches.append((changes.paths, changes.overflow))  # type: ignore[attr-defined]
        self._arrived.set()

    @property
    def paths(self) -> set[str]:
        return {path for paths, _overflow in self.batches for path in paths}

    @property
    def overflowed(self) -> bool:
        return any(overflow for _paths, overflow in self.batches)

    async def until(self, condition: Callable[[Batches], bool], what: str, timeout: float = 10.0) -> None:
        """Wait for batches until `condition(self)` holds; fail naming `what` after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not condition(self):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.batches}") from None


def run_child(code: str, *args: str, limits: dict[str, int] | None = None, timeout: float = 60) -> dict[str, object]:
    """Run `code` in a Python child (with the repository importable) and return the JSON object on its last line.

    `limits` ({"max_inotify_instances": 2}) runs it in a user namespace of its own whose /proc/sys/user limits are
    set first: the child can exhaust them for real while the machine-wide per-user budget stays untouched (the
    kernel counts the child's instances against both, and the child's own limit is the one it runs out of).
    """
    prelude = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    for name, value in (limits or {}).items():
        prelude += f"open('/proc/sys/user/{name}', 'w').write('{value}')\n"
    argv = [sys.executable, "-c", prelude + code, *args]
    if limits:
        argv = ["unshare", "--user", "--map-root-user", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}"
    result: dict[str, object] = json.loads(lines[-1])
    return result
