"""The lightest pieces of Stem's local sockets: reaching a socket by a path of any length, reading exactly N bytes,
and the fingerprint of a preloaded process's code. The warm start's client (stem/warm_client.py), which every
`stem` runs first, imports this and nothing heavier.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing, socket.py, contextlib and collections would cost every `stem` a few ms: none here
if TYPE_CHECKING:
    import _socket
    import socket
    from types import TracebackType

try:  # hashlib's own blake2b, without the ~2 ms of loading OpenSSL that importing hashlib costs
    from _blake2 import blake2b
except ImportError:  # another interpreter
    from hashlib import blake2b

# sun_path holds 108 bytes; a STEM_HOME deep in a home directory or a test's tmp folder makes longer paths.
_SUN_PATH = 100


class socket_address:  # lower case: used as the function it was, `with socket_address(path) as address`
    """An address for bind/connect that reaches `path`: itself, or when too long for sun_path, the same file
    through /proc/self/fd/<its folder> (the kernel resolves the magic link; nothing is renamed or moved)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._text = os.fspath(path)
        self._folder = -1

    def __enter__(self) -> str:
        if len(self._text.encode()) < _SUN_PATH:
            return self._text
        self._folder = os.open(os.path.dirname(self._text) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._folder}/{os.path.basename(self._text)}"

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._folder >= 0:
            os.close(self._folder)
            self._folder = -1


def connect(path: str | os.PathLike[str]) -> socket.socket:
    """A Unix stream socket connected to `path` (close-on-exec); OSError if nothing listens there."""
    import socket

    return socket.socket(fileno=connect_raw(path).detach())


def connect_raw(path: str | os.PathLike[str]) -> _socket.socket:
    """`connect`'s socket as the C module makes it (no socket.py, whose enums every `stem` would import): what the
    warm client needs, sendmsg, recv and settimeout, and nothing of socket.socket's (no `with`, no makefile)."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        with socket_address(path) as address:
            sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def recv_exact(sock: socket.socket | _socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from `sock`; ConnectionError if the other end hangs up first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other end hung up")
        data += chunk
    return data


def fingerprint(*sources: str | os.PathLike[str]) -> str:
    """What a preloaded process's code is: the interpreter and every source file in `sources` (files, or folders
    of them; default: `core`), each by path, size and mtime. A launcher whose fingerprint differs asks for a new
    process, so an upgrade never runs old code. Strings and os.walk, not pathlib: the warm client computes it."""
    digest = blake2b(f"{os.path.realpath(sys.executable)} {sys.version}".encode(), digest_size=16)
    for root in [os.fspath(source) for source in sources] or [os.path.dirname(os.path.realpath(__file__))]:
        if os.path.isdir(root):
            files = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(root)
                for name in names
                if name.endswith(".py")
            )
        else:
            files = [root]
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            digest.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
