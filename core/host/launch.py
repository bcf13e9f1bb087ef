"""Starting, finding and stopping colony hosts, from whichever stem process brings a colony up or down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
from pathlib import Path

from core import pids, procs
from core.aio import wait_for
from core.errors import StemError, free_bytes
from core.host.paths import HostPaths
from core.host.protocol import Connection, HostUnreachable, RequestFailed

# The host's own log is for its few lines and a traceback if it has a bug; a runaway one is cut at launch.
HOST_LOG_CAP = 1 << 20
NO_ROOM = 1 << 20  # free bytes under which a host that wrote nothing is said to have met a full disk
HELLO_WAIT = 5.0  # seconds a stopper waits for a host to answer at all before it kills it
_HOST_LINE = re.compile(r" host\[(\d+)\] ")  # how each host's own log lines name it (core.host.server)


class HostFailed(StemError):
    """A colony host could not start, or its colony could not."""


class HostGone(HostFailed):
    """The host died while starting the colony (killed, crashed): trying again may well work."""


def launch(paths: HostPaths, home: Path, name: str, env: dict[str, str] | None = None) -> int:
    """Start the host of `name`, detached (own session, no terminal, output to host.log): forked by the hive's
    forker (core.host.forker), else as a fresh interpreter. Blocks until it listens on its socket, or raises with
    what it printed. Returns its pid."""
    paths.folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if paths.log.stat().st_size > HOST_LOG_CAP:
            paths.log.replace(paths.log.with_suffix(".log.1"))
    from core.host import forker

    try:
        if forker.request_host(home, name, env if env is not None else dict(os.environ)):
            found = paths.process()
            return found[0] if found is not None else 0
    except forker.HostStartFailed:
        raise HostFailed(f"the colony host of {name} did not start: {_log_tail(paths)}") from None
    # No forker could be used: the host starts as a fresh interpreter. Not registered as a waited-for child: when
    # it ends, whichever stem process is its parent then reaps it as a child of another session (reap_orphans).
    proc, ready = procs.start_detached(procs.python_module("core.host", str(home), name), paths.log, env, None)
    if ready != b"1":
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        raise HostFailed(f"the colony host of {name} did not start: {_log_tail(paths)}")
    # The Popen object is dropped on purpose: the host must outlive this process, which never waits for it.
    proc.returncode = 0  # keeps subprocess from polling (and reaping) it behind our back
    return proc.pid


def _log_tail(paths: HostPaths, pid: int | None = None) -> str:
    """The last lines of host.log; with `pid`, only those after the last line of another host: the colony's hosts
    share the file, and one killed -9 before it wrote a word must not be given the last words of the one before it
    (`stopping alpha: asked by a script client`)."""
    try:
        lines = [line for line in paths.log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return _nothing_said(paths)
    if pid is not None:
        for i in range(len(lines) - 1, -1, -1):
            named = _HOST_LINE.search(lines[i])
            if named is not None and int(named.group(1)) != pid:
                lines = lines[i + 1 :]
                break
    return " | ".join(lines[-3:]) or _nothing_said(paths)


def _nothing_said(paths: HostPaths) -> str:
    """For a host that wrote nothing: on a full disk it had no room to say why, so the disk is named."""
    free = free_bytes(paths.folder)
    if free is None or free >= NO_ROOM:
        return "no output"
    return f"no output, and {paths.folder} has {free / 1e3:.0f} KB free: free some space and try again"


async def await_start(paths: HostPaths, name: str) -> None:
    """Wait until the host has started the colony's services and agent; HostFailed with the reason if not."""
    found = paths.process()
    try:
        async with await Connection.open(paths.socket, "script", client="stem start") as conn:
            await conn.await_start()
    except RequestFailed as exc:
        raise HostFailed(str(exc).split(": ", 1)[-1]) from None
    except (HostUnreachable, StemError) as exc:
        said = _log_tail(paths, found[0] if found is not None else None)
        raise HostGone(f"the colony host of {name} went away while starting: {exc}; {said}") from None


async def stop(paths: HostPaths, grace: float, routes: bool = True, longest: float | None = None) -> bool:
    """Ask the host to end everything the colony runs and exit (removing its preview routes unless `routes` is
    false); wait until it has, as long as its slowest service may take (`longest`, else `grace`) and then some.
    False if no host ran."""
    found = paths.process()
    if found is None:
        return False
    if pids.stopped(*found):  # kill -STOP, ctrl+z: let it go on, so that it stops what it runs as a stop does
        with contextlib.suppress(ProcessLookupError):
            os.kill(found[0], signal.SIGCONT)
    # The welcome too is waited for no longer than HELLO_WAIT: a hung host accepts a connection (its listening
    # socket's backlog does) and never answers, which held the stop, and every signal after it, for good. It never
    # heard of the stop, so it is not waited for again; one that refused (on its way out) or answered is.
    hung = False
    try:
        conn = await wait_for(Connection.open(paths.socket, "script", client="stem stop"), HELLO_WAIT)
    except TimeoutError:
        hung = True
    except (StemError, OSError):
        pass
    else:
        with contextlib.suppress(StemError, TimeoutError, OSError):  # it stops answering: it is ended below
            async with conn:
                await wait_for(conn.stop(grace, routes), max(grace, longest or 0) + 15)
    if hung or not await exited(found[0], 5.0):
        kill(paths)
    return True


def kill(paths: HostPaths) -> None:
    """SIGKILL the host (a hung one); the caller sweeps the colony's processes after."""
    found = paths.process()
    if found is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(found[0], signal.SIGKILL)
        wait_exit(found[0], 5.0)


async def exited(pid: int, timeout: float) -> bool:
    """`wait_exit` on the event loop: its pidfd is watched by the loop, so stopping 100 colonies at once parks no
    thread per host (the default executor has a handful, which everything else of the stop then queues behind)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await wait_for(gone, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    with contextlib.suppress(ChildProcessError):  # a host started as a fresh interpreter is our child: reap it
        os.waitpid(pid, os.WNOHANG)
    return True


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait on a pidfd (no polling) until `pid` ends; False on timeout. It need not be our child."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            procs.reap_orphans()
        return bool(readable)
    finally:
        os.close(fd)
