"""The warm start: `stem` runs forked from a process that has imported the UI and the core already.

A cold `stem` spends most of its first half second importing (Textual, the panels, the core) before it draws
anything, and a short command like `stem spawn` ~80 ms before it does anything. The hive's warm process (`python3 -m
stem.warm HOME`, started in the background by a cold UI once that UI shows its first frame, and by a cold command that
leaves colonies running, a shell's `stem spawn` say, on its way out) pays that once: while it
runs, each `stem` is a thin client that passes its stdin, stdout and stderr (as descriptors over the socket: the
terminal, or a script's pipes), its environment, working directory, umask and arguments to the warm process, which
forks a child that runs the command (no arguments: the UI) on them. The client relays the signals it gets (window
size, hang-up, interrupt, terminate, quit) to the child and exits with the child's status (killed by a signal, it
kills itself with the same one); should the child vanish without one, the client restores a UI's terminal itself.

Nothing depends on it. The client goes cold (imports and runs the command itself) when no warm process answers,
when the warm process runs older code (its fingerprint: the interpreter, the source files of `stem` and `core`,
Textual's `__init__.py`; it then exits), or when the environment differs in what Textual read once at import
(TEXTUAL_*, ESCDELAY) or in the encodings Python chose at start-up. `STEM_WARM=0` turns it off. The child is in a
session of its own, so the terminal is not its controlling terminal: no job-control signal stops it, and when its
client goes away (a kill -9 of `stem` included) it gets SIGTERM, as a command whose caller gave up.

Request (client → warm process), with the three descriptors attached: a 4-byte big-endian length, then a msgpack
map {"fingerprint", "argv", "env", "cwd", "umask", "encodings"}. Answer: b"P" and the child's pid (4 bytes, sent by
the child), later b"X" and its exit status (4 bytes, signed: -N when a signal N ended it; sent by the child as it
exits, else by the warm process once it has reaped the child), then the end of the stream. b"S" (stale: it exits)
or b"E" (environment differs) instead of b"P": run cold.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.ipc import recv_exact
from core.warm import WarmPaths, hosts_running
from stem import warm_client
from stem.warm_client import START_TIMEOUT, code_fingerprint, encodings

if TYPE_CHECKING:
    from core.host.forker import Serving

WARM_IDLE = 30.0  # seconds with no UI of its own and no colony host running before the warm process exits
CHECK_EVERY = 30.0  # how often an idle warm process looks at the hive's colony hosts
# What Textual reads from the environment once, when it is imported: a UI with other values starts cold.
_IMPORT_TIME_ENV = ("TEXTUAL_", "ESCDELAY")
_MAX_REQUEST = 4 << 20
PR_SET_NAME = 15
# What the warm process imports before it serves: the UI up to its first frame (Textual's driver and tabs are imported
# only when an app runs) and the commands with the core they run.
PRELOADED = (
    "textual.drivers.linux_driver",
    "textual.widgets._tabbed_content",
    "stem.app",
    "stem.attach",
    "stem.subcommands",
    "core.gc",
    "core.hive",
    "core.host.client",
    "core.host.launch",
    "core.listing",
    "core.settings",
)


def _import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_ENV)}


# --- starting one -------------------------------------------------------------------------------------------------


def keep_warm(home: Path, env: dict[str, str]) -> bool:
    """Start the hive's warm process unless one runs (or another UI is starting one); True if one now answers.
    Blocks until it is ready or START_TIMEOUT: call it from a thread."""
    from core.host.forker import start_server

    return start_server(WarmPaths.of(home), "stem.warm", home, env, START_TIMEOUT, wait=False)


def warm_up(home: Path, env: dict[str, str]) -> None:
    """Start the hive's warm process in the background, not waited for (a cold command about to exit), when colony
    hosts run (none running, it would soon exit again) and none runs or is starting (its lock is taken)."""
    from core.locks import held

    paths = WarmPaths.of(home)
    if held(paths.lock) or not hosts_running(home):
        return
    from core.host.forker import start_server

    start_server(paths, "stem.warm", home, env, 0, wait=False)


# --- the warm process ---------------------------------------------------------------------------------------------


def _preload() -> None:
    """Import everything a UI runs up to its first frame and what the commands import, then keep those objects out
    of the cyclic GC (no collection in a child walks them, and their pages stay shared with the warm process)."""
    import gc
    import importlib

    for module in PRELOADED:
        importlib.import_module(module)
    from stem.parser import build_parser

    build_parser()  # cached: a forked command only parses
    gc.collect()
    gc.freeze()


def serve(home: Path, ready_fd: int | None) -> int:
    import time

    from core.host.forker import Serving, hold_lock

    paths = WarmPaths.of(home)
    lock = hold_lock(paths, "warm")
    if lock is None:
        return 3
    # The commands it forks have a plain `stem`'s Ctrl-C, from their first instruction, whatever this process was
    # started with (a script's background job has SIGINT ignored, and a child can lose a Ctrl-C passed on to it
    # before it could reset that). Nothing sends this process SIGINT: it has a session of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mark = code_fingerprint()
    own_env = _import_time_env(dict(os.environ))
    own_encodings = encodings()
    _preload()
    from core.host.protocol import peer_credentials

    serving = Serving(paths, lock, ready_fd)  # what a child's children leave when it dies is reaped by `_reap`
    children: dict[int, socket.socket] = {}  # each child's pid -> its client's connection
    idle_since = time.monotonic()
    try:
        while True:
            _reap(children)
            if children:
                idle_since = time.monotonic()
            if serving.stopping or not home.is_dir():
                serving.stop_listening()  # no new command from here on; the running ones end as they do
                if not children:
                    break
            elif not children and time.monotonic() - idle_since > WARM_IDLE and not hosts_running(home):
                break
            conn = serving.accept(CHECK_EVERY)
            if conn is None:
                continue
            fds: list[int] = []
            try:
                peer_pid, uid, _gid = peer_credentials(conn)
                if uid != os.getuid() or peer_pid in children:  # another user; or one of ours asking again
                    conn.close()
                    continue
                request, fds = _read_request(conn)
                if request is None or len(fds) != 3:
                    conn.close()
                    continue
                if request.get("fingerprint") != mark:
                    conn.sendall(b"S")
                    conn.close()
                    serving.stopping = True
                    continue
                env = request.get("env")
                if (
                    not isinstance(env, dict)
                    or _import_time_env(env) != own_env
                    or request.get("encodings") != own_encodings
                ):
                    conn.sendall(b"E")
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _be_stem(request, fds, conn, serving)
                children[pid] = conn  # the child sends b"P" and its pid itself (`_be_stem`)
            except OSError as exc:
                print(f"stem warm: a request failed: {exc}", file=sys.stderr, flush=True)
                conn.close()
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        serving.leave()
    return 0


def _read_request(conn: socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    """The request and the descriptors that came with it (always returned, to be closed by the caller)."""
    import msgpack

    conn.settimeout(2.0)
    fds: list[int] = []
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
        if len(data) < 4:
            data += recv_exact(conn, 4 - len(data))
        (size,) = struct.unpack(">I", data[:4])
        if size > _MAX_REQUEST:
            return None, fds
        body = data[4:]
        if len(body) < size:
            body += recv_exact(conn, size - len(body))
        request = msgpack.unpackb(body)
    except (OSError, ValueError, msgpack.UnpackException):
        return None, fds
    return (request if isinstance(request, dict) else None), fds


def _reap(children: dict[int, socket.socket]) -> None:
    """Reap every child that ended; a UI's status goes to its client."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue  # a UI's orphan, reaped as a subreaper
        with contextlib.suppress(OSError):
            conn.sendall(b"X" + struct.pack(">i", os.waitstatus_to_exitcode(status)))
        conn.close()


def _be_stem(request: dict[str, object], fds: list[int], conn: socket.socket, serving: Serving) -> None:
    """In the forked child: run the client's stem command (the UI, or any other) on its terminal or pipes, in its
    folder and environment. Never returns."""
    import ctypes
    import random
    import threading
    import traceback

    code = 1
    try:
        # The client passes its signals on from the moment it has this pid, so the pid is sent from here, not by
        # the parent: a signal that reaches a child before Python has finished forking (PyOS_AfterFork_Child
        # clears the flags of signals caught meanwhile) is lost, and a Ctrl-C at once with it.
        conn.sendall(b"P" + struct.pack(">I", os.getpid()))
        serving.close_in_child()
        os.setsid()
        # SIGTERM, SIGHUP and SIGQUIT end the command as they end a plain `stem`, whatever this process was
        # started with (SIGINT: see `serve`).
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _std_streams()
        try:
            os.chdir(str(request.get("cwd") or "/"))
        except OSError:
            os.chdir("/")
        umask = request.get("umask")
        if isinstance(umask, int):
            os.umask(umask)
        random.seed()
        with contextlib.suppress(OSError):
            ctypes.CDLL(None).prctl(PR_SET_NAME, b"stem", 0, 0, 0)
        argv = [str(a) for a in request.get("argv") or []]  # type: ignore[attr-defined]
        sys.argv = ["stem", *argv]
        warm_client.SERVING = True
        conn.settimeout(None)
        threading.Thread(target=_watch_client, args=(conn,), name="warm-client", daemon=True).start()
        from stem.cli import main

        code = main(argv, warm=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # a Ctrl-C passed on before the command began: it ends as an interrupted one does
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        # The status goes to the client now, not once this process has exited and been reaped: tearing down a
        # copy of the warm process's memory takes a few ms that the user's shell need not wait for.
        code &= 0xFF
        with contextlib.suppress(OSError):
            conn.sendall(b"X" + struct.pack(">i", code))
        os._exit(code)


def _std_streams() -> None:
    """sys.stdin, stdout and stderr on the client's terminal, buffered as Python sets them up for a terminal."""
    import io

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, f"__{name}__")
        stream = io.TextIOWrapper(
            open(fd, "rb" if fd == 0 else "wb", closefd=False),  # noqa: SIM115 (open until the process exits)
            encoding=old.encoding,
            errors=old.errors,
            line_buffering=fd == 2 or os.isatty(fd),
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _watch_client(conn: socket.socket) -> None:
    """The client went away (killed, its terminal gone): the command ends as on SIGTERM (a UI detaches)."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    from core.host.paths import take_ready_fd

    args, ready_fd = take_ready_fd(list(sys.argv[1:] if argv is None else argv))
    if len(args) != 1:
        print("usage: python3 -m stem.warm HOME [--ready-fd FD]", file=sys.stderr)
        return 2
    return serve(Path(args[0]), ready_fd)


if __name__ == "__main__":
    from stem.warm import main as _main  # the module the rest of Stem imports, not a second copy as __main__

    sys.exit(_main())
