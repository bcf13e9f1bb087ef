"""The warm start's client: what every `stem` runs before anything else (see stem/warm.py for the whole design).

It asks the hive's warm process to run the command, so what it imports every command pays for: the lightest of the
standard library, msgpack and core.ipc; nothing of the UI, the core's dataclasses or argparse.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys

from core.home import home_text
from core.ipc import connect, fingerprint, recv_exact

START_TIMEOUT = 10.0  # how long a client waits for its command's pid
FORWARDED = (signal.SIGWINCH, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCONT)
# What a UI that died without restoring the terminal leaves on: the alternate screen, a hidden cursor, mouse,
# bracketed paste, focus reports and the kitty keyboard protocol.
_TERMINAL_RESET = b"\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[?1004l"
SERVING = False  # this process was forked by the warm process (it does not start another)


def warm_socket(home: str | os.PathLike[str]) -> str:
    """Where the hive's warm process listens: `WarmPaths.of(home).socket` (core/warm.py), without its imports."""
    return os.path.join(home, "ui", "warm.sock")


def _packages() -> tuple[str, ...]:
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    return (os.path.join(root, "stem"), os.path.join(root, "core"))


def _textual_init() -> list[str]:
    """Textual's `__init__.py` where an import would find it (the first sys.path entry holding it), without
    importlib's machinery; importlib.util.find_spec for an install a path entry does not hold (an import hook)."""
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "textual", "__init__.py")
        if os.path.isfile(candidate):
            return [candidate]
    import importlib.util

    spec = importlib.util.find_spec("textual")
    return [spec.origin] if spec is not None and spec.origin else []


def code_fingerprint() -> str:
    """The fingerprint of the UI's code: Stem's sources, the interpreter and Textual's `__init__.py` (rewritten by
    any install of Textual)."""
    return fingerprint(*_packages(), *_textual_init())


def encodings() -> list[str]:
    return [sys.getfilesystemencoding(), getattr(sys.stdout, "encoding", None) or ""]


def run_warm(argv: list[str]) -> int | None:
    """Run `stem ARGV` (no arguments: the UI) forked by the hive's warm process, on this process's stdin, stdout
    and stderr; its exit status, or None if there is no warm process to use (the caller runs it itself)."""
    if os.environ.get("STEM_WARM") == "0" or SERVING:
        return None
    try:
        sock = connect(warm_socket(home_text()))
    except OSError:
        return None
    with sock:
        return _run_with(sock, argv)


def _run_with(sock: socket.socket, argv: list[str]) -> int | None:
    import termios

    import msgpack

    try:
        saved = termios.tcgetattr(0)
    except termios.error:
        saved = None
    try:
        body = msgpack.packb(
            {
                "fingerprint": code_fingerprint(),
                "argv": argv,
                "env": dict(os.environ),
                "cwd": os.getcwd(),
                "umask": _umask(),
                "encodings": encodings(),
            }
        )
    except (OSError, ValueError):  # a folder that is gone, bytes that are no UTF-8: the command runs cold
        return None
    try:
        socket.send_fds(sock, [struct.pack(">I", len(body)) + body], [0, 1, 2])
        sock.settimeout(START_TIMEOUT)
        if recv_exact(sock, 1) != b"P":
            return None  # stale (it exits now; the next UI starts a new one) or another environment
        (pid,) = struct.unpack(">I", recv_exact(sock, 4))
    except OSError:
        return None
    # From here on the command runs on this process's descriptors: the signals this process gets are its.
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(pid, signum))
    sock.settimeout(None)
    try:
        answer = recv_exact(sock, 5)
    except OSError:
        answer = b""
    if answer[:1] == b"X":
        (code,) = struct.unpack(">i", answer[1:])
        if code < 0:  # killed by a signal: so is this process, so that its caller sees what it would have
            with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
                signal.signal(-code, signal.SIG_DFL)
            with contextlib.suppress(OSError):
                os.kill(os.getpid(), -code)
            return 128 - int(code)
        return int(code)
    # It went away without its status (the warm process was killed): a UI's terminal is given back as it was.
    _forward(pid, signal.SIGTERM)
    if not argv:
        with contextlib.suppress(OSError, termios.error):
            os.write(1, _TERMINAL_RESET)
            if saved is not None:
                termios.tcsetattr(0, termios.TCSANOW, saved)
    print("stem: the command ended without an exit status (its warm process went away); run it again", file=sys.stderr)
    return 1


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
