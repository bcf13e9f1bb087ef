"""Reaching a service that listens on its colony's loopback only.

Dev servers often listen on localhost unless told otherwise (Django's runserver, `flask run`, Vite, webpack's dev
server, Rails): inside a colony that is the colony's own loopback, which nothing outside the colony's network
namespace can reach, so neither the readiness probe, the preview port nor the user's `curl <colony ip>:<port>` gets
an answer. When a service's port has a listener on the loopback (127.0.0.1 or ::1) and none on every address, its
colony host forwards `<colony ip>:<port>` to it: a listening socket made inside the colony's network namespace, each
connection relayed to the loopback listener on the host's event loop. It ends when the service's process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from core import netns

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it (host byte order, little-endian here)
_LOOPBACK_V6 = "00000000000000000000000001000000"  # ::1 likewise
CHUNK = 65536


def listeners(pid: int, port: int) -> set[str] | None:
    """The addresses (as /proc/net/tcp writes them) on which a process in `pid`'s network namespace listens at
    `port`; None if `pid` is gone. Read from /proc (a few µs): the namespace's own TCP tables."""
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) >= 4 and fields[3] == _LISTEN:
                address, _, hex_port = fields[1].rpartition(":")
                if int(hex_port, 16) == port:
                    found.add(address)
    return found


def listening_inodes(pid: int, port: int) -> set[int]:
    """The socket inodes of what listens at `port` in `pid`'s network namespace (empty if none, or `pid` is gone)."""
    found: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return found
        for line in lines:
            fields = line.split()
            if len(fields) >= 10 and fields[3] == _LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                found.add(int(fields[9]))
    found.discard(0)
    return found


def port_holder(pids: set[int], port: int) -> int | None:
    """Which of `pids` (processes of one network namespace) holds a socket listening at `port`, if one does."""
    inodes: set[int] = set()
    for pid in sorted(pids):
        inodes = listening_inodes(pid, port)
        if inodes or os.path.exists(f"/proc/{pid}"):
            break  # one live member reads the namespace's tables
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in sorted(pids) if wanted else ():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
    return None


def loopback_listener(pid: int, port: int) -> str | None:
    """The loopback address ("127.0.0.1" or "::1") a process in `pid`'s network namespace listens on at `port`
    when none listens there on every address or on another one (which the colony's address would reach); else
    None."""
    return loopback_only(listeners(pid, port))


def loopback_only(found: set[str] | None) -> str | None:
    """`loopback_listener` of addresses `listeners` has read."""
    if not found or found - {_LOOPBACK_V4, _LOOPBACK_V6}:
        return None
    return "127.0.0.1" if _LOOPBACK_V4 in found else "::1"


class LoopbackForward:
    """`ip:port` in the colony's network namespace, relayed to `target:port` (a loopback listener there)."""

    def __init__(self, netns_name: str, ip: str, port: int, target: str) -> None:
        self.netns_name, self.ip, self.port, self.target = netns_name, ip, port, target
        self._family = socket.AF_INET6 if ":" in target else socket.AF_INET
        # One thread that has joined the colony's network namespace makes every socket of the forward there
        # (a socket belongs to the namespace of the thread that made it); the relaying itself is on the loop.
        self._maker: ThreadPoolExecutor | None = None
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on `ip:port` in the namespace; OSError if that cannot be (the address is taken, say)."""
        loop = asyncio.get_running_loop()
        self._maker = ThreadPoolExecutor(1, thread_name_prefix=f"forward-{self.port}", initializer=self._join)
        try:
            listener = await loop.run_in_executor(self._maker, self._listener)
            self._server = await asyncio.start_server(self._accepted, sock=listener)
        except BaseException:
            self._maker.shutdown(wait=False)
            self._maker = None
            raise

    def _join(self) -> None:
        fd = netns.open_netns(self.netns_name)
        try:
            netns.enter(fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _listener(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _upstream_socket(self) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._relays.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            if task is not None:
                self._relays.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._maker is None:
                return
            upstream = await loop.run_in_executor(self._maker, self._upstream_socket)
            try:
                await loop.sock_connect(upstream, (self.target, self.port))
            except OSError:
                upstream.close()
                return  # the service went away: the client sees its connection closed, as it would
            up_reader, up_writer = await asyncio.open_connection(sock=upstream)
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                up_writer.close()
        except (OSError, RuntimeError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop listening and end every relayed connection (awaited)."""
        relays = list(self._relays)
        self.abandon()
        if relays:
            await asyncio.gather(*relays, return_exceptions=True)

    def abandon(self) -> None:
        """`close` without awaiting (a runner torn down by a cancellation)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._relays):
            task.cancel()
        if self._maker is not None:
            self._maker.shutdown(wait=False)
            self._maker = None


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side (a client that shuts down its writing still
    reads the answer)."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()
