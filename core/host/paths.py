"""Where a colony host keeps its files: all in the colony's folder, so destroy and gc remove them with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.locks import is_locked

# The pid of the process that launched a host while it still makes the host's colony (a spawn): the host waits for
# that process to ask for the start, however long it takes, and exits without starting anything if it dies first.
STARTER_ENV = "STEM_HOST_STARTER"

__all__ = ["STARTER_ENV", "HostPaths", "ServerPaths", "take_ready_fd"]


@dataclass(frozen=True, slots=True)
class HostPaths:
    folder: Path

    @property
    def socket(self) -> Path:
        """The protocol's Unix socket (mode 0600)."""
        return self.folder / "host.sock"

    @property
    def lock(self) -> Path:
        """flock'ed by the host for its whole life: free means no host runs."""
        return self.folder / "host.lock"

    @property
    def pid(self) -> Path:
        """`<pid> <starttime>` of the running host."""
        return self.folder / "host.pid"

    @property
    def log(self) -> Path:
        """The host's own stdout and stderr (its logging, a traceback if it ever has a bug)."""
        return self.folder / "host.log"

    def running(self) -> bool:
        """Whether a host holds the colony's host lock right now (the kernel drops it when the host dies)."""
        return self.lock.exists() and is_locked(self.lock)

    def process(self) -> tuple[int, int] | None:
        """(pid, starttime) of the colony's host if it is alive."""
        from core import pids

        return pids.read_pid_file(self.pid)

    def stopped(self) -> int | None:
        """The host's pid if it is stopped (kill -STOP, ctrl+z in the shell it was run from, a debugger): it holds
        its lock and its socket takes connections, but it answers nothing and its agent and services get no keys,
        until a SIGCONT. None if it runs or is gone."""
        from core import pids

        found = self.process()
        return found[0] if found is not None and pids.stopped(*found) else None


@dataclass(frozen=True, slots=True)
class ServerPaths:
    """Where one of a hive's preloaded servers (the host forker, the warm process) keeps its files: `NAME.sock`,
    `NAME.lock`, `NAME.pid`, `NAME.log` and `start.lock` in its folder."""

    folder: Path
    NAME: ClassVar[str] = ""

    @property
    def socket(self) -> Path:
        """Where it is asked (mode 0600; peers of another uid are refused)."""
        return self.folder / f"{self.NAME}.sock"

    @property
    def lock(self) -> Path:
        """flock'ed by the server for its whole life."""
        return self.folder / f"{self.NAME}.lock"

    @property
    def start_lock(self) -> Path:
        """flock'ed by whoever starts one, so two starters do not start two."""
        return self.folder / "start.lock"

    @property
    def pid(self) -> Path:
        return self.folder / f"{self.NAME}.pid"

    @property
    def log(self) -> Path:
        """Its own output (a traceback if it ever has a bug)."""
        return self.folder / f"{self.NAME}.log"

    def process(self) -> tuple[int, int] | None:
        """(pid, starttime) of the server if it is alive."""
        from core import pids

        return pids.read_pid_file(self.pid)

    def started_process(self, timeout: float = 10.0) -> tuple[int, int] | None:
        """`process()`, waiting for one that is starting (its lock taken, its imports and pid file not done yet: a
        spawn killed -9 right after launching it leaves one so) for up to `timeout`: whoever stops the server
        must not miss one that comes up a moment later."""
        import time

        from core.locks import held

        deadline = time.monotonic() + timeout
        found = self.process()
        while found is None and held(self.lock) and time.monotonic() < deadline:
            time.sleep(0.02)
            found = self.process()
        return found


def take_ready_fd(args: list[str]) -> tuple[list[str], int | None]:
    """The arguments without `--ready-fd FD`, and FD: where a host or the forker says it listens (b"1")."""
    if "--ready-fd" not in args:
        return args, None
    at = args.index("--ready-fd")
    return args[:at] + args[at + 2 :], int(args[at + 1])
