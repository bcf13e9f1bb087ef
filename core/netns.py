"""Network namespaces for colonies, through pyroute2 and three syscalls.

Each colony gets `/run/netns/<prefix>-<name>` with loopback up and one veth pair: `eth0` inside (created
directly in the namespace, so no name ever clashes on the host) and `<prefix><slot>` on the host, a /30 from the
pool per colony. pyroute2's own `netns.create` and `NetNS` fork a helper process per call (~50 ms); network
namespaces are per-thread in Linux, so a short-lived thread that unshares and opens its netlink socket there
does the same in ~12 ms without forking.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.errors import StemError
from core.locations import write_atomically

NETNS_DIR = Path("/run/netns")
# iproute2's convention: files here are bind-mounted over /etc/<file> by `ip netns exec`, and by Stem's children.
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_REC = 16384
MS_BIND = 4096
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2
# rtnetlink, for the one message sent without pyroute2 (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h)
NETLINK_ROUTE = 0
RTM_DELLINK = 17
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
IFLA_IFNAME = 3

SLOT_SIZE = 4  # a /30 per colony: network, host end, colony end, broadcast

T = TypeVar("T")


def _pyroute2() -> tuple[type[Any], type[Exception]]:
    """IPRoute and NetlinkError, imported when netlink is first needed: pyroute2 takes ~50 ms to import, which
    short commands that never touch the network (`stem ls`) should not pay."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError


_libc = ctypes.CDLL(None, use_errno=True)
_rundir_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ColonyNet:
    """The network identity of one colony."""

    netns: str
    veth: str
    host_ip: str
    ip: str
    prefixlen: int


def pool_slots(pool: ipaddress.IPv4Network) -> int:
    return pool.num_addresses // SLOT_SIZE


def slot_addresses(pool: ipaddress.IPv4Network, slot: int) -> tuple[str, str, int]:
    """(host end, colony end, prefix length) of address slot `slot`."""
    base = pool.network_address + slot * SLOT_SIZE
    return str(base + 1), str(base + 2), 30


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _ensure_rundir() -> None:
    """Like iproute2: /run/netns must be a shared mount so bind mounts in it propagate."""
    with _rundir_lock:
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        rundir = str(NETNS_DIR).encode()
        if _libc.mount(b"", rundir, b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(rundir, rundir, b"none", MS_BIND | MS_REC, None), "bind /run/netns")
            _check(_libc.mount(b"", rundir, b"none", MS_SHARED | MS_REC, None), "share /run/netns")


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def create(net: ColonyNet) -> None:
    """Create the namespace, the veth pair with its addresses, loopback and the default route.

    Blocking (netlink): call it from a worker thread. On failure, partial state is left for `destroy`.
    """
    _ensure_rundir()
    path = NETNS_DIR / net.netns
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise StemError(f"network namespace {net.netns} already exists: run `stem gc` to clean up") from None
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    failure: list[BaseException] = []

    IPRoute, _ = _pyroute2()

    def inside() -> None:
        # This thread alone moves into the new namespace and then ends, so no other thread is ever left there.
        # pyroute2's sync API refuses to run on a thread with a running asyncio loop; a fresh thread has none.
        try:
            with IPRoute() as host:  # opened before unshare: its socket stays bound to the host namespace
                _check(_libc.unshare(CLONE_NEWNET), "unshare")
                _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None), "mount")
                with IPRoute() as ns:
                    ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                    ns.link("add", ifname="eth0", kind="veth", peer={"ifname": net.veth, "net_ns_fd": host_ns})
                    eth0 = ns.link_lookup(ifname="eth0")[0]
                    ns.addr("add", index=eth0, address=net.ip, prefixlen=net.prefixlen)
                    ns.link("set", index=eth0, state="up")
                    ns.route("add", dst="0.0.0.0/0", gateway=net.host_ip)
                index = host.link_lookup(ifname=net.veth)[0]
                host.addr("add", index=index, address=net.host_ip, prefixlen=net.prefixlen)
                host.link("set", index=index, state="up")
        except BaseException as exc:  # handed to the calling thread
            failure.append(exc)

    try:
        _in_fresh_thread(inside, f"netns-{net.netns}")
    finally:
        os.close(host_ns)
    if failure:
        raise _explain(failure[0], net) from failure[0]


def _in_fresh_thread(fn: Callable[[], None], name: str) -> None:
    worker = threading.Thread(target=fn, name=name)
    worker.start()
    worker.join()


def _off_loop(fn: Callable[[], T]) -> T:
    """Run a pyroute2 call where it works: directly, or on a fresh thread if this one runs an asyncio loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    result: list[T] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    _in_fresh_thread(call, "netlink")
    if failure:
        raise failure[0]
    return result[0]


def _explain(exc: BaseException, net: ColonyNet) -> BaseException:
    _, NetlinkError = _pyroute2()
    if isinstance(exc, NetlinkError) and getattr(exc, "code", None) == errno.EEXIST:
        return StemError(f"interface {net.veth} or address {net.host_ip} already exists: run `stem gc`")
    if isinstance(exc, (NetlinkError, OSError, IndexError, RuntimeError)):
        return StemError(f"network setup for {net.netns} failed: {exc}")
    return exc


def destroy(netns: str, veth: str) -> None:
    """Remove the veth pair, the namespace and its /etc/netns files; each part may already be gone."""
    if veth:
        delete_link(veth)
    shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)
    path = NETNS_DIR / netns
    if path.exists() or os.path.islink(path):
        _libc.umount2(str(path).encode(), MNT_DETACH)
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def delete_link(ifname: str) -> None:
    """Deleting one end of a veth deletes both, even while the namespace is still held by a process.

    One RTM_DELLINK by name over a plain netlink socket: stop and destroy need nothing else of netlink, and
    pyroute2's import (~50 ms) would be most of a short `stem stop`. A link already gone is not an error."""
    name = ifname.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), IFLA_IFNAME) + name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0) + attr  # ifinfomsg: by name, not index
    request = struct.pack("=IHHII", 16 + len(body), RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(request)
        reply = sock.recv(65536)
    length, kind = struct.unpack_from("=IH", reply)
    if kind == NLMSG_ERROR and length >= 20:
        (error,) = struct.unpack_from("=i", reply, 16)
        if error and -error != errno.ENODEV:
            raise OSError(-error, f"deleting interface {ifname}: {os.strerror(-error)}")


def wait_link_gone(ifname: str, timeout: float) -> bool:
    """Wait until the interface `ifname` no longer exists (a namespace's cleanup takes its veth with it); False if
    it is still there after `timeout`. Polls sysfs: a stat every 5 ms, for the few ms the kernel usually takes."""
    path = f"/sys/class/net/{ifname}"
    deadline = time.monotonic() + timeout
    while os.path.lexists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def etc_dirs() -> list[str]:
    try:
        return sorted(os.listdir(ETC_NETNS))
    except FileNotFoundError:
        return []


def list_links() -> list[str]:
    IPRoute, _ = _pyroute2()

    def names() -> list[str]:
        with IPRoute() as host:
            return [str(link.get("ifname")) for link in host.get_links()]

    return _off_loop(names)


def open_netns(netns: str) -> int:
    """An O_CLOEXEC fd for the namespace, to hand to `enter` in a child before exec."""
    try:
        return os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StemError(f"network namespace {netns} is gone: `stem start` recreates it") from None


def enter(fd: int) -> None:
    """setns() into the namespace behind `fd`; meant for a child between fork and exec."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def resolv_conf(netns: str) -> Path:
    """The namespace's own resolv.conf (as `ip netns exec` finds it)."""
    return ETC_NETNS / netns / "resolv.conf"


def write_resolv_conf(netns: str, text: str) -> None:
    path = resolv_conf(netns)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text, 0o644, durable=False)  # written anew at every start


def child_files(netns: str) -> bytes | None:
    """The resolv.conf to bind in a child of `netns`, looked up before fork (the child only makes syscalls)."""
    path = resolv_conf(netns)
    return str(path).encode() if path.exists() else None


def enter_mounts(resolv: bytes | None) -> None:
    """In a child between fork and exec: a private mount namespace where /etc/resolv.conf is the colony's.

    Like `ip netns exec`: mounts made here never propagate back to the host (the root is made a slave).
    """
    if resolv is None:
        return
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if _libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rslave /")
    # No /etc/resolv.conf on the host (or a dangling link): nothing to cover, the colony resolves as the host does.
    _libc.mount(resolv, b"/etc/resolv.conf", None, MS_BIND, None)


def inode(netns: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / netns).st_ino
    except OSError:
        return None


def pids_in(netns: str) -> list[int]:
    """Every process whose network namespace is `netns`: what stop must end, whatever its process group."""
    target = inode(netns)
    if target is None:
        return []
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids
