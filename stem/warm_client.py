"""The warm start's client: what every `stem` runs before anything else (see stem/warm.py for the whole design).

It asks the hive's warm process to run the command, so what it imports every command pays for: the lightest of the
standard library's C modules (_socket, _signal), struct and core.ipc; nothing of the UI, the core's dataclasses or
argparse; not even msgpack (its request is packed here) or socket.py.
"""

from __future__ import annotations

import os
import struct
import sys

from core.home import home_text
from core.ipc import connect_raw, fingerprint, recv_exact

TYPE_CHECKING = False  # typing's own costs every command ~2 ms of start-up; mypy reads this name as typing's
if TYPE_CHECKING:
    import _socket
    import signal
    from typing import Any
else:
    import _signal as signal  # the C module: signal.py's enums (and the re, collections, functools they pull in) cost
    # every `stem` a few ms, and the client needs only numbers

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
        sock = connect_raw(warm_socket(home_text()))
    except OSError:
        return None
    try:
        return _run_with(sock, argv)
    finally:
        sock.close()


def _run_with(sock: _socket.socket, argv: list[str]) -> int | None:
    import termios

    try:
        saved = termios.tcgetattr(0)
    except termios.error:
        saved = None
    try:
        body = pack(
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
    # Signals that come while the command is being handed over (a Ctrl-C at once) wait for its pid: the warm
    # process may have forked it already, and it must not run on after the user interrupted it.
    held: list[int] = []
    to: list[int] = []  # the command's pid, once known

    def hand_on(signum: int, _frame: object) -> None:
        if to:
            _forward(to[0], signum)
        else:
            held.append(signum)

    for sig in FORWARDED:
        signal.signal(sig, hand_on)
    try:
        import _socket

        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))]
        sock.sendmsg([struct.pack(">I", len(body)) + body], rights)  # socket.send_fds, without socket.py
        sock.settimeout(START_TIMEOUT)
        if recv_exact(sock, 1) != b"P":
            return _interrupted(held)  # stale (it exits now; the next UI starts a new one) or another environment
        (pid,) = struct.unpack(">I", recv_exact(sock, 4))
    except OSError:
        return _interrupted(held)
    # From here on the command runs on this process's descriptors: the signals this process gets are its.
    to.append(pid)
    for signum in held:
        _forward(pid, signum)
    sock.settimeout(None)
    try:
        answer = recv_exact(sock, 5)
    except OSError:
        answer = b""
    if answer[:1] == b"X":
        (code,) = struct.unpack(">i", answer[1:])
        if code < 0:  # killed by a signal: so is this process, so that its caller sees what it would have
            if not argv:  # a UI killed (-9, an OOM kill) left the terminal as it drew: given back as it was
                _reset_terminal(saved)
            try:
                signal.signal(-code, signal.SIG_DFL)
            except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
                pass
            try:
                os.kill(os.getpid(), -code)
            except OSError:
                pass
            return 128 - int(code)
        return int(code)
    # It went away without its status (the warm process was killed): a UI's terminal is given back as it was.
    _forward(pid, signal.SIGTERM)
    if not argv:
        _reset_terminal(saved)
    print("stem: the command ended without an exit status (its warm process went away); run it again", file=sys.stderr)
    return 1


def _interrupted(held: list[int]) -> int | None:
    """No command was handed over: 128 + the signal that ends a command, if the user sent one meanwhile (the
    command is not run cold after it), else None (it runs cold). The signals are this process's own again."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    ending = [signum for signum in held if signum in _ENDING]
    return 128 + ending[0] if ending else None


_ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _reset_terminal(saved: list[Any] | None) -> None:
    import termios

    try:
        os.write(1, _TERMINAL_RESET)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSANOW, saved)
    except (OSError, termios.error):
        pass


def pack(value: object) -> bytes:
    """`value` (None, bool, int, str, list, tuple, dict of them) as msgpack.packb writes it, without importing msgpack
    (~3 ms of every `stem`: its extension, datetime and collections). ValueError for what msgpack would refuse,
    a string that is not UTF-8 included."""
    if value is None:
        return b"\xc0"
    if isinstance(value, bool):
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 0x80 or -32 <= value < 0:
            return struct.pack("b" if value < 0 else "B", value)
        for marker, form in _INT_FORMS[value < 0]:
            try:
                return marker + struct.pack(form, value)
            except struct.error:
                continue
        raise ValueError(f"integer out of msgpack's range: {value}")
    if isinstance(value, str):
        data = value.encode()
        n = len(data)
        if n < 32:
            return bytes((0xA0 | n,)) + data
        return (b"\xd9" + bytes((n,)) if n < 0x100 else _sized(n, b"\xda", b"\xdb")) + data
    if isinstance(value, (list, tuple)):
        head = bytes((0x90 | len(value),)) if len(value) < 16 else _sized(len(value), b"\xdc", b"\xdd")
        return head + b"".join(pack(item) for item in value)
    if isinstance(value, dict):
        head = bytes((0x80 | len(value),)) if len(value) < 16 else _sized(len(value), b"\xde", b"\xdf")
        return head + b"".join(pack(k) + pack(v) for k, v in value.items())
    raise ValueError(f"cannot pack {type(value).__name__}")


# msgpack's integer forms, smallest first: unsigned for 0 and above, signed below.
_INT_FORMS = (
    ((b"\xcc", ">B"), (b"\xcd", ">H"), (b"\xce", ">I"), (b"\xcf", ">Q")),
    ((b"\xd0", ">b"), (b"\xd1", ">h"), (b"\xd2", ">i"), (b"\xd3", ">q")),
)


def _sized(n: int, marker16: bytes, marker32: bytes) -> bytes:
    return marker16 + struct.pack(">H", n) if n < 0x10000 else marker32 + struct.pack(">I", n)


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
