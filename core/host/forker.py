"""The host forker: one small process per hive that has imported everything a colony host runs and forks each new
host from that state.

A host started as a fresh interpreter pays ~0.3 s of start-up and imports before it listens, and each one holds its
own copy of every imported module (~8 MB). Forked from the forker, a host listens a few milliseconds after it is
asked for, and the imported code (frozen out of the cyclic GC, so collections do not dirty it) stays shared
copy-on-write between the forker and every host it made.

The forker is an optimisation, never a dependency: `launch` falls back to a fresh interpreter when it cannot reach
or start one. It serves one request at a time on `forker.sock` (mode 0600, peers of another uid refused), is
replaced when the code on disk changed since it started (each request carries the launcher's fingerprint: the
stale one steps aside, and stays only to reap the hosts it forked as they end), reaps the hosts it forked and what
they leave it (the hive's Caddy, when the host that started it ends first), and exits once no child of its has run
for `IDLE_EXIT` seconds (or its hive is gone), reaping them all before it does.

It also makes colony networks for the short commands that start a colony: pyroute2 is preloaded here, and its
import (~70 ms) would otherwise be a large part of a `stem spawn` or `stem start`. Only a forker that already runs is
asked (starting one would cost more than the import), and a child forked for the one request does the netlink work.

Request (client → forker): a 4-byte big-endian length, then a msgpack map {"fingerprint", "name", "env"} (a host)
or {"fingerprint", "name", "network": [netns, veth, host_ip, ip, prefixlen]} (a network).
Answer: b"F" from the forker right before it forks, then b"1" from the forked host on the same connection once it
listens on its socket (for a network: b"1" once it is made, or b"E" and the error's one line). b"S" instead of
b"F" means "stale: start a new forker"; the stream ending before b"F" means the forker went away (it is exiting: ask
a new one), after b"F" that the host died while starting (host.log says why).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from core.host.paths import ServerPaths
from core.ipc import connect, fingerprint, recv_exact, socket_address
from core.locks import hold

if TYPE_CHECKING:
    from core.netns import ColonyNet

IDLE_EXIT = 120.0  # seconds with no host of ours alive before the forker exits (STEM_FORKER_IDLE overrides)
READY_TIMEOUT = 30.0  # how long a launcher waits for a forked host to listen
LAST_REAPS = 3.0  # how long an ending forker waits for its children to end (its stopper waits 5 s before SIGKILL)
_MAX_REQUEST = 1 << 20


@dataclass(frozen=True, slots=True)
class ForkerPaths(ServerPaths):
    NAME: ClassVar[str] = "forker"

    @classmethod
    def of(cls, home: Path) -> ForkerPaths:
        return cls(home / "forker")


# --- the launcher's side ------------------------------------------------------------------------------------------


class Stale(Exception):
    """The forker runs older code than the launcher's: it exits, a new one is started."""


class Gone(Exception):
    """The forker went away before it forked (it was exiting): a new one is started."""


def request_host(home: Path, name: str, env: dict[str, str]) -> bool:
    """Have the hive's forker (started if need be) fork the host of `name`. True once the host listens on its
    socket; False if no forker could be used (the caller starts the host as a fresh interpreter). Raises
    HostStartFailed (with no message) if the forked host died before it listened."""
    paths = ForkerPaths.of(home)
    mark = fingerprint()
    for _ in range(4):  # a stale or exiting forker, then a new one
        try:
            sock = connect(paths.socket)
        except OSError:
            if not _start(paths, home, env):
                return False
            continue
        with sock:
            try:
                return _ask(sock, mark, name, env)
            except (Stale, Gone):
                _wait_gone(paths)
                continue
            except OSError:
                return False
    return False


def create_network(home: Path, net: ColonyNet) -> bool:
    """Have the hive's forker, if one runs, make the colony's network (netns.create in a child of it). True once
    made; False if no forker could be used (the caller makes it itself). Raises StemError with the child's reason
    if the network could not be made."""
    from core.errors import StemError

    try:
        sock = connect(ForkerPaths.of(home).socket)
    except OSError:
        return False
    with sock:
        try:
            answer = _send(sock, {"fingerprint": fingerprint(), "name": net.netns, "network": list(astuple(net))})
        except OSError:
            return False
        if answer != b"F":
            return False  # stale or exiting: this one is made here, the next host launch replaces it
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except OSError as exc:
            raise StemError(
                f"network setup for {net.netns} failed: no answer from the forker's child ({exc})"
            ) from None
    if reply == b"1":
        return True
    if reply.startswith(b"E"):
        raise StemError(reply[1:].decode(errors="replace"))
    raise StemError(f"network setup for {net.netns} failed: the forker's child ended without an answer")


class HostStartFailed(Exception):
    """The forked host ended before it listened (its host.log says why)."""


def _send(sock: socket.socket, request: dict[str, object]) -> bytes:
    """Send one request; the forker's first byte (b"" if it hung up)."""
    import msgpack

    body = msgpack.packb(request)
    sock.sendall(struct.pack(">I", len(body)) + body)
    sock.settimeout(READY_TIMEOUT)
    return sock.recv(1)


def _ask(sock: socket.socket, mark: str, name: str, env: dict[str, str]) -> bool:
    try:
        answer = _send(sock, {"fingerprint": mark, "name": name, "env": env})
        if answer == b"S":
            raise Stale
        if answer != b"F":
            raise Gone
        answer = sock.recv(1)
    except TimeoutError:
        raise HostStartFailed from None
    except ConnectionError:
        raise Gone from None
    if answer == b"1":
        return True
    raise HostStartFailed


def _start(paths: ForkerPaths, home: Path, env: dict[str, str]) -> bool:
    """Start the hive's forker unless another launcher just did; True if one should now answer."""
    return start_server(paths, "core.host.forker", home, env, READY_TIMEOUT, wait=True)


def start_server(
    paths: ServerPaths, module: str, home: Path, env: dict[str, str], timeout: float, *, wait: bool
) -> bool:
    """Start the hive's preloaded server (`python3 -m MODULE HOME`, detached) unless one answers; True if one answers
    now. Another starter at work is waited for (`wait`) or left to it. Blocks until the new one is ready or
    `timeout` has passed."""
    with contextlib.suppress(OSError):
        connect(paths.socket).close()
        return True
    try:
        paths.folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(paths.start_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another starter is at it
        with contextlib.suppress(OSError):
            connect(paths.socket).close()
            return True  # another starter started it meanwhile
        if paths.process() is not None:
            return False  # one is ending (stale, or stopped) and still holds its lock: a new one could not take it
        from core import procs

        proc, ready = procs.start_detached(procs.python_module(module, str(home)), paths.log, env, timeout)
        # It may outlive this process (then whoever adopts it reaps it); while this one lives, a thread blocked in
        # waitpid reaps it the moment it exits, so a long-lived UI never keeps its zombie.
        threading.Thread(target=proc.wait, name=f"{paths.NAME}-reaper", daemon=True).start()
        return ready == b"1"
    except OSError:
        return False
    finally:
        os.close(lock)


def _wait_gone(paths: ForkerPaths, timeout: float = 5.0) -> None:
    """A stale forker steps aside before it answers, an exiting one exits: wait for its socket to stop answering."""
    deadline = time.monotonic() + timeout
    found = paths.process()
    if found is not None:
        from core.host.launch import wait_exit

        wait_exit(found[0], timeout)
    while time.monotonic() < deadline:
        try:
            connect(paths.socket).close()
        except OSError:
            return
        time.sleep(0.01)


def stop(home: Path) -> bool:
    """End the hive's forker (gc, a test's cleanup). Its hosts are not touched. True if one ran."""
    found = ForkerPaths.of(home).started_process()
    if found is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(found[0], signal.SIGTERM)
    from core.host.launch import wait_exit

    if not wait_exit(found[0], 5.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(found[0], signal.SIGKILL)
    return True


# --- what the forker and the warm process (stem/warm.py) share ---------------------------------------------------


def hold_lock(paths: ServerPaths, what: str) -> int | None:
    """Take the server's lock for its whole life; None (and a line on stderr) if one runs already for this hive."""
    paths.folder.mkdir(parents=True, exist_ok=True)
    lock = hold(paths.lock)
    if lock is None:
        print(f"stem {what}: one runs already for this hive", file=sys.stderr, flush=True)
    return lock


class Serving:
    """A preloaded server that has taken its lock, listens on its socket (mode 0600), has written its pid file and
    said it is ready on `ready_fd`: it wakes for a request, a child's exit (it is a subreaper, so a killed child's
    leftovers come to it too) or SIGTERM (`stopping`); SIGHUP is ignored."""

    def __init__(self, paths: ServerPaths, lock: int, ready_fd: int | None) -> None:
        from core import pids
        from core.privileges import become_subreaper

        self.paths, self.lock = paths, lock
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()  # ours: we hold the lock, so whoever made it is gone
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with socket_address(paths.socket) as address:
            listener.bind(address)
        os.chmod(paths.socket, 0o600)
        listener.listen(16)
        self.listener: socket.socket | None = listener  # None once it stops taking requests
        pids.write_pid_file(paths.pid)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        become_subreaper()
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if ready_fd is not None:
            with contextlib.suppress(OSError):  # whoever started it may have given up waiting meanwhile
                os.write(ready_fd, b"1")
            os.close(ready_fd)

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def accept(self, timeout: float) -> socket.socket | None:
        """The next request's connection, or None when something else woke it (or `timeout` passed)."""
        waiting = [self.wake_r] + ([self.listener.fileno()] if self.listener is not None else [])
        readable, _, _ = select.select(waiting, [], [], timeout)
        if self.wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_r, 512)
        if self.listener is None or self.listener.fileno() not in readable:
            return None
        return self.listener.accept()[0]

    def stop_listening(self) -> None:
        """No request from here on (a client then finds nothing and runs without it)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()

    def close_in_child(self) -> None:
        """In a forked child: none of the server's descriptors (listener, wakeup pipe, lock) or handlers."""
        for fd in (self.listener.fileno() if self.listener is not None else -1, self.wake_r, self.wake_w, self.lock):
            if fd >= 0:
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)

    def leave(self) -> None:
        """The server ends: its socket and pid file go (the lock goes with the process)."""
        self.stop_listening()
        with contextlib.suppress(FileNotFoundError):
            self.paths.pid.unlink()


# --- the forker ---------------------------------------------------------------------------------------------------


def _preload() -> None:
    """Import everything a host runs, then keep those objects out of the cyclic GC: a collection in a host would
    otherwise write to every page of them and unshare it."""
    import http.client  # noqa: F401  # core.preview's admin client: ~14 ms a host would pay on its first route

    import core.host.server
    import core.netns

    core.netns._pyroute2()  # a restarted service's namespace work
    gc.collect()
    gc.freeze()


def serve(home: Path, ready_fd: int | None) -> int:
    paths = ForkerPaths.of(home)
    lock = hold_lock(paths, "forker")
    if lock is None:
        return 3
    mark = fingerprint()
    _preload()
    from core.host.protocol import peer_uid

    serving = Serving(paths, lock, ready_fd)  # its children's leftovers (a host killed -9's) are reaped by `_reap`
    children: set[int] = set()
    idle_since = time.monotonic()
    idle_exit = float(os.environ.get("STEM_FORKER_IDLE", IDLE_EXIT))
    stale = False
    try:
        while not serving.stopping:
            # Idle only with no child at all: the hive's Caddy, adopted when the host that started it ended first,
            # would pass to PID 1 alive, and its zombie stay there once it is stopped.
            if _reap(children):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_exit or not home.is_dir():
                break
            conn = serving.accept(min(10.0, max(idle_exit, 0.05)))
            if conn is None:
                continue
            try:
                if peer_uid(conn) != os.getuid():
                    continue
                request = _read_request(conn)
                if request is None:
                    continue
                if request.get("fingerprint") != mark:
                    _step_aside(serving)  # before the answer: the launcher starts the new forker at once
                    conn.sendall(b"S")
                    stale = True
                    break
                conn.sendall(b"F")  # before the fork, so it always comes before the host's b"1"
                pid = os.fork()
                if pid == 0:
                    if "network" in request:
                        _make_network(request, conn, serving)
                    _be_host(home, request, conn, serving)
                children.add(pid)
            except OSError as exc:
                print(f"stem forker: a request failed: {exc}", file=sys.stderr, flush=True)
            finally:
                conn.close()
    finally:
        if not stale:  # a stale one left already: the socket and pid file there now may be the new forker's
            serving.leave()
        # A stale forker's hosts run on, for as long as their colonies do: it stays, out of the way, to reap them.
        _reap_last(children, serving, None if stale else LAST_REAPS)
    return 0


def _read_request(conn: socket.socket) -> dict[str, object] | None:
    import msgpack

    conn.settimeout(2.0)
    try:
        head = recv_exact(conn, 4)
        (size,) = struct.unpack(">I", head)
        if size > _MAX_REQUEST:
            return None
        request = msgpack.unpackb(recv_exact(conn, size))
    except (OSError, ValueError, msgpack.UnpackException):
        return None
    return request if isinstance(request, dict) and isinstance(request.get("name"), str) else None


def _reap(children: set[int]) -> bool:
    """Reap every child that ended: hosts, and (a subreaper) what a host that ended left behind: the processes of a
    host killed -9, which are in their colony's PID namespace, whose init ends only once they are reaped
    (core/sandbox.py); the hive's Caddy, when the host that started it ended first. Whether a child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False  # none at all
        if pid == 0:
            return True
        children.discard(pid)


def _reap_last(children: set[int], serving: Serving, timeout: float | None) -> None:
    """The forker exits: every child that has ended is reaped, and those still running are waited for (for
    `timeout` seconds, None: until none is left; woken by SIGCHLD), so none passes to PID 1, whose reaping may come
    late. Its stopper ends the hive's Caddy first (core/hive.py, core/gc.py), so Caddy has ended or ends now: left
    to PID 1, its zombie was a visible leak (`[caddy] <defunct>` children of PID 1 after colonies were
    destroyed)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while _reap(children):
        left = 10.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            break
        serving.accept(left)


def _step_aside(serving: Serving) -> None:
    """A stale forker makes way for the new one: no socket, no pid file, and its lock released, so the new one
    starts at once. It stays only to reap the hosts it forked, and what they leave it, as they end: exited, it
    would pass them to PID 1, and each one's zombie, and then Caddy's, would stay there for PID 1 to reap."""
    serving.leave()
    os.close(serving.lock)
    serving.lock = -1


def _make_network(request: dict[str, object], conn: socket.socket, serving: Serving) -> None:
    """In the forked child: make the requested colony network, answer b"1" or b"E" and why. Never returns."""
    code = 1
    try:
        serving.close_in_child()
        from core import netns
        from core.errors import StemError

        try:
            fields = request["network"]
            if not isinstance(fields, list) or len(fields) != 5:
                raise StemError("a network request needs netns, veth, host_ip, ip and prefixlen")
            netns.create(netns.ColonyNet(*fields))
        except StemError as exc:
            conn.sendall(b"E" + str(exc).encode())
        else:
            conn.sendall(b"1")
            code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _be_host(home: Path, request: dict[str, object], conn: socket.socket, serving: Serving) -> None:
    """In the forked child: become the host of the requested colony. Never returns."""
    code = 1
    try:
        serving.close_in_child()
        os.setsid()
        name = str(request["name"])
        env = request.get("env")
        if isinstance(env, dict):
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in env.items()})
        from core.host.paths import HostPaths
        from core.locations import HiveLayout
        from core.sandbox import retitle

        log = HostPaths(HiveLayout(home).colony_dir(name)).log
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        os.chdir("/")
        random.seed()
        # `ps` tells each colony's host by its colony, not as one more copy of the forker's command line.
        retitle(f"stem-host {name} {home}".encode(), f"stem-host {name}".encode())
        sys.argv = ["stem-host", str(home), name]
        ready = conn.detach()
        os.set_inheritable(ready, False)
        from core.host.server import main

        code = main([str(home), name, "--ready-fd", str(ready)])
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from core.host.paths import take_ready_fd

    args, ready_fd = take_ready_fd(list(sys.argv[1:] if argv is None else argv))
    if len(args) != 1:
        print("usage: python3 -m core.host.forker HOME [--ready-fd FD]", file=sys.stderr)
        return 2
    return serve(Path(args[0]), ready_fd)


if __name__ == "__main__":
    sys.exit(main())
