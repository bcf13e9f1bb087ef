"""Where a colony host keeps its files: all in the colony's folder, so destroy and gc remove them with it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.locks import is_locked


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
        from core import procs  # not for `running()`, which `stem ls` asks without the process machinery

        return procs.read_pid_file(self.pid)


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
        from core import procs

        return procs.read_pid_file(self.pid)


def take_ready_fd(args: list[str]) -> tuple[list[str], int | None]:
    """The arguments without `--ready-fd FD`, and FD: where a host or the forker says it listens (b"1")."""
    if "--ready-fd" not in args:
        return args, None
    at = args.index("--ready-fd")
    return args[:at] + args[at + 2 :], int(args[at + 1])


# sun_path holds 108 bytes; a STEM_HOME deep in a home directory or a test's tmp folder makes longer paths.
_SUN_PATH = 100


@contextlib.contextmanager
def socket_address(path: Path | str) -> Iterator[str]:
    """An address for bind/connect that reaches `path`: itself, or when too long for sun_path, the same file
    through /proc/self/fd/<its folder> (the kernel resolves the magic link; nothing is renamed or moved)."""
    text = str(path)
    if len(text.encode()) < _SUN_PATH:
        yield text
        return
    folder = os.open(os.path.dirname(text) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(text)}"
    finally:
        os.close(folder)


def connect(path: Path) -> socket.socket:
    """A Unix stream socket connected to `path` (close-on-exec); OSError if nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with socket_address(path) as address:
            sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from `sock`; ConnectionError if the other end hangs up first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other end hung up")
        data += chunk
    return data


def fingerprint(*sources: Path) -> str:
    """What a preloaded process's code is: the interpreter and every source file in `sources` (files, or folders
    of them; default: `core`), each by path, size and mtime. A launcher whose fingerprint differs asks for a new
    process, so an upgrade never runs old code."""
    digest = hashlib.blake2b(f"{os.path.realpath(sys.executable)} {sys.version}".encode(), digest_size=16)
    for root in sources or (Path(__file__).resolve().parents[1],):
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            with contextlib.suppress(OSError):
                st = path.stat()
                digest.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
