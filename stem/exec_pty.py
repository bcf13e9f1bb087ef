"""`stem exec` from a terminal: the command gets a PTY of its own, as `ssh` and `docker exec -it` give one.

Run on the user's terminal directly it would have no controlling terminal (its own session, in the colony), so a
shell has no job control, `/dev/tty` does not open, and the user's terminal, which is not the colony uid's, cannot
be reopened as /dev/stdout. So when stdin and stdout are both terminals the command runs on a fresh PTY (its
controlling terminal, given to the colony's uid), the user's terminal is put in raw mode and the bytes are relayed
both ways until the command ends; the window size follows the user's (SIGWINCH). With a pipe or a file on either
side nothing changes: its bytes pass through untouched, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import termios
import tty
from collections.abc import Iterator

CHUNK = 65536


def wanted(stdin_fd: int = 0, stdout_fd: int = 1) -> bool:
    return os.isatty(stdin_fd) and os.isatty(stdout_fd)


def open_pty(size_of: int) -> tuple[int, int]:
    """(master, slave) of a new PTY the size of the terminal `size_of`."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    copy_size(size_of, master)
    return master, slave


def copy_size(source: int, pty: int) -> None:
    """The window size of terminal `source` onto `pty` (the kernel tells its foreground programs: SIGWINCH)."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(pty, termios.TIOCSWINSZ, fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8))


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    """`fd`'s terminal in raw mode (keys, ctrl+c included, go to the command's PTY), restored however it ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: what was typed ahead goes to the command
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def session(master: int, proc: subprocess.Popen[bytes], stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Blocking: relay between the user's terminal and the command's PTY until the command ends; its status."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        with raw(stdin_fd):
            relay(master, pidfd, stdin_fd, stdout_fd)
    finally:
        os.close(pidfd)
        os.close(master)
    return proc.wait()


def relay(master: int, pidfd: int, stdin_fd: int, stdout_fd: int) -> None:
    """Both ways, never blocking on one side while the other has something: keys wait in `pending` while the PTY
    is full. Ends when the command does (its pidfd), with what it wrote last drained, or when every end of the PTY
    closed (EIO)."""
    os.set_blocking(master, False)
    pending = b""
    reading = True  # the user's terminal: still there to read keys from
    while True:
        readable = [master, pidfd] + ([stdin_fd] if reading and len(pending) < CHUNK else [])
        ready, can_write, _ = select.select(readable, [master] if pending else [], [])
        if master in ready and _copy_out(master, stdout_fd) is None:
            return
        if stdin_fd in ready:
            try:
                data = os.read(stdin_fd, CHUNK)
            except OSError:
                data = b""
            if data:
                pending += data
            else:  # the terminal hung up: the command gets SIGHUP from `stem exec`'s handler
                reading = False
        if can_write and pending:
            with contextlib.suppress(BlockingIOError):
                pending = pending[os.write(master, pending) :]
        if pidfd in ready:
            while _copy_out(master, stdout_fd):
                pass
            return


def _copy_out(master: int, stdout_fd: int) -> bool | None:
    """One read of the command's output onto the user's terminal: True if there was some, False if none is there
    now, None if none ever will be (EIO: every end of the PTY closed)."""
    try:
        data = os.read(master, CHUNK)
    except BlockingIOError:
        return False
    except OSError:
        return None
    if not data:
        return None
    with contextlib.suppress(OSError):  # a terminal gone: what the command writes goes nowhere
        write_all(stdout_fd, data)
    return True


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data`, waiting if `fd` is non-blocking and full (stdin and stdout are often one open file)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


# The guard of a `stem exec` (see `guard`): told the command's process group, then waits. The end of its stdin with
# nothing more said is the death of the `stem exec` that started it: the group gets SIGTERM, as a `stem exec` that is
# terminated gives it, and SIGKILL if it is still there 5 s later.
_GUARD = """
import os, signal, sys, time
line = sys.stdin.buffer.readline()
if line.strip().isdigit() and not sys.stdin.buffer.read(1):
    group = int(line)
    try:
        os.killpg(group, signal.SIGTERM)
        ends = time.monotonic() + 5
        while time.monotonic() < ends:
            time.sleep(0.05)
            os.killpg(group, 0)
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class Guard:
    """A process that ends a `stem exec`'s command should that `stem exec` die without ending it (kill -9): the
    command runs in a session of its own in the colony, so nothing else would, and it ran on until the colony's
    next stop. A warm `stem` ends its command when its client goes; a cold one has no such watcher of its own."""

    def __init__(self) -> None:
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _GUARD],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C is the command's to get, through `stem exec`
        )

    def watch(self, group: int) -> None:
        """From now on, the death of this process ends process group `group` (the command's pid: it runs in a
        session of its own)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{group}\n".encode())
        self._proc.stdin.flush()

    def release(self) -> None:
        """The command has ended (or never started): the guard ends without touching anything."""
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.write(b"done\n")
            self._proc.stdin.close()
        self._proc.wait()
