"""Least privilege and a private filesystem view for every process of a colony (agent, services, exec, steps).

A running colony has one set of namespaces that all its processes share, held by its init (`ColonyInit`):
- **its own PID namespace**: the init is pid 1 of it, forked from a thread that unshared CLONE_NEWPID. Each
  colony process is forked from a thread that joined it (setns), so its parent is still whoever started it (the
  host waits for its services and agent itself) while the colony's processes see and signal one another, and
  nothing outside. What is orphaned goes to the init, which reaps it and keeps its end (`OrphanExit`: a service's
  daemon that died at once, its exit status) for its owner to ask for; when the init ends (its owner stops the
  colony, or dies) the kernel kills everything left in the namespace.
- **its own mount namespace** (recursively private), made once by the init: tmpfs over `STEM_HOME`, the users' homes,
  the repository's main checkout, `/tmp`, `/var/tmp`, `/dev/shm`, `/run/user` and `/run/netns` (one private /tmp for the
  whole colony); then only what is the colony's is bound back at its own path: its worktree, its database folder, its
  home (HOME points there), the repository's `.git` (with `config` and `hooks` read-only, so nothing planted there runs
  later as the user), and `[hive] agent_files` read-only in its home; /proc of its PID namespace and the colony's
  resolv.conf. Other colonies' worktrees and databases, `hive.db`, the logs and the user's secrets are not there. A
  colony process joins it (and the IPC namespace) in the forked child, single-threaded, before exec.
- **its own IPC namespace**, made and joined with the mount namespace.
The init belongs to the colony's host, which publishes it (`Sandbox.init_file`) so `stem exec` from any shell joins
it. Setup and build commands run in the starter's process before any host exists: their run gets an init of its
own, ended with it (nothing a build leaves running outlives it), as does a `stem exec` while no host runs.
- **no privilege**: an unprivileged uid (see `choose_identity`), no supplementary groups, an empty capability
  bounding set, no_new_privs. Without CAP_SYS_ADMIN it cannot setns into another namespace or mount; without
  CAP_NET_ADMIN it cannot change its network. Ports below 1024 still bind: `ip_unprivileged_port_start` is 0 in
  the colony's network namespace (a per-namespace sysctl).

Git needs the worktree and parts of the shared repository to be writable by that uid without letting it redirect
Stem's own git (run as root) at a config it wrote: see `prepare`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import ipaddress
import os
import pwd
import random
import select
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from core import cgroups, claims
from core.config import COLONY_FILE
from core.locations import HiveLayout
from core.netns import SLOT_SIZE
from core.worktree import head_ref

if TYPE_CHECKING:
    from core.registry import ColonyRecord
    from core.settings import Settings


T = TypeVar("T")
ORPHAN_EXITS = 64  # the latest ends of orphans an init keeps for its owner to ask for
# Where a colony's pids start in its PID namespace (`pid_base`): each run of its init starts PID_STRIDE past the last
# one's start (from PID_LOW, wrapping below half of pid_max), so that a pid a program wrote in a file in one run (a
# daemon's pid file: postgres's postmaster.pid) names no process of the next. Pids numbered from 2 at every run made
# a revived colony's postgres find its stale pid alive (another service's) and refuse to start.
PID_LOW = 1000
PID_STRIDE = 4096
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


class OrphanExit(NamedTuple):
    """A process orphaned to a colony's reaper (its init, or Stem as subreaper) that ended: its pid as the reaper saw
    it, its start (clock ticks since boot, as /proc/PID/stat), its exit code (negative: killed by that signal) and
    its cgroup on the unified hierarchy ("" if none: a zombie keeps only that one, so whose it was is told there)."""

    pid: int
    start: int
    code: int
    cgroup: str


def adopted_exit(pid: int) -> OrphanExit | None:
    """Blocking: reap `pid`, an orphan of ours that ended (a zombie), and say what it was; None if it was not one."""
    start, cgroup = 0, ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as f:
            start = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open(f"/proc/{pid}/cgroup") as f:
            cgroup = next((line[3:].strip() for line in f if line.startswith("0::")), "")
    try:
        found, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return OrphanExit(pid, start, os.waitstatus_to_exitcode(status), cgroup) if found else None


# In 1879048192-2147352575: above systemd's container range (524288-1879048191), below its "foreign" range and
# 2^31 (signedness bugs); no passwd entry, so it owns nothing on the host but what Stem gives it.
DEDICATED_UID = 0x71000000
DEDICATED_NAME = "colony"

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
# The new mount API (same numbers on every architecture), for binds made read-only before they are attached.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"
UNPRIVILEGED_PORTS = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
NO_IPV6_ON_ETH0 = "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"

# What a colony process may learn of the caller's environment, besides `pass_env` (prefixes end in "_"): the
# locale and terminal, and flags and CA bundle paths (never credentials) that change how output and TLS behave.
SAFE_ENV = (
    *("PATH", "LANG", "LANGUAGE", "LC_", "TERM", "COLORTERM", "TZ", "SHELL", "PYTHONUNBUFFERED", "NO_COLOR"),
    *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO"),
)
# Directories no cover may hide (the system the colony runs on).
_SYSTEM = tuple(Path(p) for p in ("/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin", "/opt", "/proc", "/dev", "/sys"))

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a colony's processes are: `why` says how that was chosen."""

    uid: int
    gid: int
    user: str
    why: str


# The private ranges a pool comes from (`core.claims.check_pool`), laid end to end: a colony's uid is the place of
# its address in them, so it is unique on the machine as the address is, across hives too.
_UID_RANGES = tuple(
    ipaddress.IPv4Network(net) for net in ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16")
)


def address_index(address: str) -> int:
    """The number of a colony's /30 among every private range, from 0; a pool outside them (another range
    `is_private` allows) comes after them, by its low bits."""
    addr = ipaddress.IPv4Address(address)
    offset = 0
    for net in _UID_RANGES:
        if addr in net:
            return (offset + int(addr) - int(net.network_address)) // SLOT_SIZE
        offset += net.num_addresses
    return offset // SLOT_SIZE + ((int(addr) // SLOT_SIZE) & 0x3FFFFF)


def choose_identity(
    configured: int | None, environ: Mapping[str, str] = os.environ, address: str | None = None
) -> Identity:
    """The invoking user when Stem runs through sudo; else `[hive] colony_uid`; else a dedicated uid: one per
    colony address (so one per colony on the machine, whichever hive it belongs to), all in one group, so a
    colony writes the shared object store but cannot replace another colony's branch (refs/heads/colony/ is
    sticky: only a ref's owner may rename over it), nor share per-uid limits with it.

    Root is never chosen: sudo from root, or a configured 0, falls through to the next."""
    sudo_uid = environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        uid = int(sudo_uid)
        gid_text = environ.get("SUDO_GID", "")
        gid = int(gid_text) if gid_text.isdigit() else uid
        return Identity(uid, gid, _user_name(uid), "the user who ran sudo")
    if configured:
        try:
            gid = pwd.getpwuid(configured).pw_gid
        except KeyError:
            gid = configured
        return Identity(configured, gid, _user_name(configured), "[hive] colony_uid")
    uid = DEDICATED_UID if address is None else DEDICATED_UID + 1 + address_index(address)
    return Identity(uid, DEDICATED_UID, DEDICATED_NAME, "Stem's dedicated colony uid")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return DEDICATED_NAME


def identity_of(data_dir: Path, configured: int | None, address: str | None = None) -> Identity:
    """The identity a colony was prepared for (the owner of its database folder), else a fresh choice: a colony
    keeps its uid whoever starts it later (sudo or not), so its files stay its own."""
    fresh = choose_identity(configured, address=address)
    try:
        st = os.stat(data_dir)
    except OSError:
        return fresh
    if st.st_uid == 0:
        return fresh
    if fresh.uid == st.st_uid:
        return fresh
    return Identity(st.st_uid, st.st_gid, _user_name(st.st_uid), "the owner of the colony's files")


# ------------------------------------------------------------------------------------------------ support


@dataclass(frozen=True, slots=True)
class Support:
    """Which mechanisms this kernel and this process have; `missing` says, one line each, what is not enforced."""

    mount_ns: bool
    pid_ns: bool
    ipc_ns: bool
    privileged: bool  # CAP_SYS_ADMIN and CAP_SETUID: able to unshare, mount and change uid
    port_sysctl: bool

    @property
    def missing(self) -> tuple[str, ...]:
        lines = []
        if not self.privileged:
            lines.append("no least privilege: Stem is not root, colony processes run as the caller")
        if not self.mount_ns:
            lines.append("no private filesystem view: mount namespaces unavailable, the host's files are visible")
        if not self.pid_ns:
            lines.append("no PID namespace: colony processes see the host's processes")
        if not self.ipc_ns:
            lines.append("no IPC namespace: System V IPC is shared with the host")
        if not self.port_sysctl:
            lines.append("ports below 1024 cannot be bound (no ip_unprivileged_port_start on this kernel)")
        return tuple(lines)


@functools.cache
def support() -> Support:
    caps = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
    except OSError:
        pass
    privileged = bool(caps & (1 << 21)) and bool(caps & (1 << 7)) and bool(caps & (1 << 6))
    return Support(
        mount_ns=os.path.exists("/proc/self/ns/mnt"),
        pid_ns=os.path.exists("/proc/self/ns/pid_for_children"),
        ipc_ns=os.path.exists("/proc/self/ns/ipc"),
        privileged=privileged,
        port_sysctl=os.path.exists(UNPRIVILEGED_PORTS),
    )


def status(enabled: bool) -> tuple[str, ...]:
    """What the colonies of this hive lack, one line each: empty when every guarantee holds."""
    if not enabled:
        return ("isolation off ([hive] isolation = false): colony processes run as root and see the host",)
    return support().missing


# ------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What confines one colony's processes, worked out before fork; `confine` applies it in the child."""

    identity: Identity
    home: Path  # the colony's own, HOME inside
    covers: tuple[Path, ...]  # hidden under a fresh tmpfs, outermost first
    # (source, target, read-only), bound back in this order; a source None is an empty tmpfs at the target
    binds: tuple[tuple[Path | None, Path, bool], ...]
    use_pid_ns: bool = True
    use_ipc_ns: bool = True
    world_writable: frozenset[Path] = field(default_factory=frozenset)  # covers that get mode 1777
    init_file: Path | None = None  # where the colony's running init is published (`pid starttime`), for joiners


def plan(
    *,
    identity: Identity,
    stem_home: Path,
    worktree: Path,
    data_dir: Path,
    home: Path,
    repo: Path,
    agent_files: Iterable[Path] = (),
    environ: Mapping[str, str] = os.environ,
    init_file: Path | None = None,
    accounts: Path | None = None,
    other_hives: Iterable[Path] = (),
    cgroup: str | None = None,
) -> Sandbox:
    """The covers and binds for one colony: made from paths only (a few stats), cheap enough for every spawn.

    The colony's home is bound over the user's home path (HOME keeps its value, absolute paths into it keep
    working for what `agent_files` passes); every other home, STEM_HOME, the homes of the machine's other hives
    (`other_hives`), the main checkout and the shared temporary folders get an empty tmpfs. `accounts` is a folder
    that may hold a passwd and a group file to show as /etc's (see `write_accounts`)."""
    user_home = _user_home(environ)
    if not _coverable(user_home):  # HOME=/ (a service account) or missing: HOME is the colony home's own path
        user_home = home
    homes = {Path("/root"), Path("/home"), Path(environ.get("HOME") or "/root")}  # every user's home
    shared = ("/tmp", "/var/tmp", "/dev/shm")
    # /run/netns and /etc/netns: the names of every namespace on the machine, other colonies' and hives' among them;
    # /run/stem: where every hive on the machine keeps its home. Other hives' homes (their hive.db, worktrees and
    # logs; a colony's worktree is writable by every colony's group) are as hidden as this one's.
    hidden = (Path("/run/user"), Path("/run/netns"), Path("/etc/netns"), Path("/run/stem"))
    # Each cgroup hierarchy that holds the colony's cgroup lists every colony of every hive beside it: only the
    # colony's own is there (what a runtime reads its limits from: /proc/self/cgroup names it).
    own_cgroups = [h.mount / cgroup for h in cgroups.hierarchies() if cgroup and (h.mount / cgroup).is_dir()]
    wanted = [*map(Path, shared), *hidden, stem_home, *other_hives, repo, *homes, *(c.parent for c in own_cgroups)]
    covers = _outermost(p for p in wanted if _coverable(p) and not _under(p, user_home))
    common = _git_common_dir(worktree) or repo / ".git"
    binds: list[tuple[Path | None, Path, bool]] = [(home, user_home, False), (common, common, False)]
    binds += [(own, own, True) for own in own_cgroups]
    for protected in ("config", "hooks"):
        binds.append((common / protected, common / protected, True))
    # Other colonies' gitdirs (their HEAD and index) are not there either: nor can a `git worktree prune` inside,
    # which would take every worktree it cannot see for gone, empty them.
    gitdir = _gitdir(worktree)
    if gitdir is not None and gitdir.parent == common / "worktrees":
        binds += [(None, gitdir.parent, False), (gitdir, gitdir, False)]
    binds += [(worktree, worktree, False), (data_dir, data_dir, False)]
    passed = {Path(str(user_home) + str(f)[1:]) if str(f).startswith("~") else Path(f) for f in agent_files}
    passed.update(_toolchains({user_home, *homes, *_folders_in(Path("/home"))} - {Path("/home")}, environ))
    binds += [(source, source, True) for source in _outermost(passed) if not _under(source, stem_home)]
    if accounts is not None:  # `write_accounts` made them where the colony's uid has no entry; else none is bound
        binds += [(accounts / name, Path("/etc", name), True) for name in ACCOUNT_FILES]
    # Parents before what is inside them: a bind inside the home lands on the colony's home, not under it.
    binds.sort(key=lambda b: len(b[1].parts))
    return Sandbox(
        identity=identity,
        home=user_home,
        covers=covers,
        binds=tuple(binds),
        use_pid_ns=support().pid_ns,
        use_ipc_ns=support().ipc_ns,
        world_writable=frozenset(Path(p) for p in shared),
        init_file=init_file,
    )


def _toolchains(homes: Iterable[Path], environ: Mapping[str, str]) -> set[Path]:
    """What of the hidden homes PATH needs, read-only: each PATH folder inside one (~/.cargo/bin, not the rest of
    ~/.cargo) and, for a prefix's bin, its lib (npm's and pip's packages that bin links into); and the install of
    the Python Stem runs on when it is in one (~/.pyenv: its shims need all of it), since colony.toml's commands
    often run python3."""
    homes = [h for h in homes if h != Path("/")]
    found = set()
    for entry in environ.get("PATH", "").split(os.pathsep):
        if entry and os.path.isabs(entry) and any(_under(Path(entry), h) and Path(entry) != h for h in homes):
            found.add(Path(entry))
            if Path(entry).name == "bin":  # a prefix (~/.local, nvm's node): its programs link into its lib
                found.update(Path(entry).parent / lib for lib in ("lib", "lib64"))
    base = Path(sys.base_prefix)
    for home in homes:
        if _under(base, home) and base != home:
            found.add(home / base.relative_to(home).parts[0])
    return {p for p in found if p.exists()}


def _user_home(environ: Mapping[str, str]) -> Path:
    """The home of whom the colony acts for: the sudo user's, else ours."""
    sudo_uid = environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        try:
            return Path(pwd.getpwuid(int(sudo_uid)).pw_dir)
        except KeyError:
            pass
    return Path(environ.get("HOME") or "/root")


def _folders_in(folder: Path) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if entry.is_dir()]
    except OSError:
        return []


def _under(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _coverable(path: Path) -> bool:
    if path == Path("/") or not path.is_dir():
        return False
    return not any(path == s or path in s.parents for s in _SYSTEM)


def _outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    unique = sorted({p.absolute() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in unique:
        if not any(k == p or k in p.parents for k in kept):
            kept.append(p)
    return tuple(kept)


def _gitdir(worktree: Path) -> Path | None:
    """The worktree's own folder in the repository's .git (what its .git file names)."""
    try:
        text = (worktree / ".git").read_text().strip()
    except OSError:
        return None
    return Path(text.split(":", 1)[1].strip()) if text.startswith("gitdir:") else None


def _git_common_dir(worktree: Path) -> Path | None:
    """The repository's .git a linked worktree points to (its .git file, then the gitdir's `commondir`)."""
    try:
        text = (worktree / ".git").read_text().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text.split(":", 1)[1].strip())
    try:
        common = (gitdir / "commondir").read_text().strip()
    except OSError:
        return gitdir.parent.parent
    return (gitdir / common).resolve()


def env_for_colony(
    environ: Mapping[str, str], identity: Identity | None, home: Path | None, pass_env: Iterable[str]
) -> dict[str, str]:
    """The caller's environment a colony process may see: the safe set, `pass_env`, and who it is."""
    env = {k: v for k, v in environ.items() if k in SAFE_ENV or any(k.startswith(p) for p in SAFE_ENV if p[-1] == "_")}
    for name in pass_env:
        if name in environ:
            env[name] = environ[name]
    env.setdefault("PATH", os.defpath)
    if identity is not None:
        env["USER"] = env["LOGNAME"] = identity.user
    if home is not None:
        env["HOME"] = str(home)
    return env


def for_colony(rec: ColonyRecord, settings: Settings, stem_home: Path) -> Sandbox | None:
    """The sandbox of a colony's processes; None when isolation is off or Stem lacks the privilege for it."""
    if not settings.isolation or not support().privileged or not support().mount_ns:
        return None
    layout = HiveLayout(stem_home)
    data = Path(rec.db_path).parent
    return plan(
        identity=identity_of(data, settings.colony_uid, rec.ip),
        stem_home=stem_home,
        worktree=Path(rec.worktree),
        data_dir=data,
        home=layout.colony_home(rec.name),
        repo=Path(rec.repo),
        agent_files=[Path(p) for p in settings.agent_files],
        init_file=layout.colony_dir(rec.name) / "init.pid",
        accounts=layout.colony_dir(rec.name),
        other_hives=[Path(claim.home) for claim in claims.held()],
        cgroup=rec.netns,
    )


def prepare_colony(rec: ColonyRecord, settings: Settings, stem_home: Path) -> None:
    """`prepare` for a colony's paths (blocking: call it from a worker thread)."""
    box = for_colony(rec, settings, stem_home)
    if box is None:
        return
    layout = HiveLayout(stem_home)
    db = Path(rec.db_path)
    # A colony made before databases had a folder of their own: that folder holds its host's files too, which the
    # colony must never write, so its database stays root's.
    legacy = db.parent == layout.colony_dir(rec.name)
    home = layout.colony_home(rec.name)
    if layout.colonies not in home.parents:  # never the user's home: only what Stem made for the colony
        raise ValueError(f"refusing to give {home} to a colony")
    prepare(
        box.identity,
        worktree=Path(rec.worktree),
        data_dir=None if legacy else db.parent,
        home=home,  # not box.home: that is the user's home path, the bind's target
        db_files=[db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")],
        user_gitconfig=box.home / ".gitconfig",
    )
    write_accounts(layout.colony_dir(rec.name), box.identity, box.home)


# ------------------------------------------------------------------------------------------------ prepare


def prepare(
    identity: Identity,
    *,
    worktree: Path,
    data_dir: Path | None,
    home: Path,
    db_files: Iterable[Path],
    user_gitconfig: Path | None = None,
) -> None:
    """Give the colony's uid what it must write, off the event loop (at spawn, and at start for older colonies).

    - its database folder and home: its own (0700);
    - its worktree: every file its own, but colony.toml (its policy: read-only to it) and the top folder and the
      `.git` file stay root's (root:gid, sticky and group-writable), and so do the worktree's gitdir and its
      `commondir`/`gitdir` pointers: git run by Stem as root then trusts the worktree (safe.directory) and the
      colony cannot point that git at a config it wrote;
    - in the shared repository: the object fan-out folders (all 256, made now, so none is later made by root
      without group write) and refs/heads/colony/ with its reflogs: group-writable and sticky where root owns
      them, so the colony adds objects and colony/* branches but cannot remove what root made; its own branch
      and reflog its own. The user's branches stay root's or theirs.
    """
    uid, gid = identity.uid, identity.gid
    for folder in (home,) if data_dir is None else (data_dir, home):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, uid, gid)
        os.chmod(folder, 0o700)
    for f in db_files:
        if data_dir is not None and f.exists():
            os.chown(f, uid, gid)
    _write_gitconfig(home / ".gitconfig", uid, gid, user_gitconfig)
    top = os.stat(worktree)
    if top.st_gid != gid or top.st_mode & 0o3070 != 0o3070:
        # `.shared` holds read-only peer snapshots (core.peering): never the colony's. Nor is colony.toml: it says
        # what the colony may use and reach (core.config.POLICY), so its agent reads it and cannot change it.
        _chown_tree(worktree, uid, gid, keep={worktree / ".git", worktree / ".shared", worktree / COLONY_FILE})
        os.chown(worktree, 0, gid)
        os.chmod(worktree, 0o3775)
    try:
        gitdir = Path((worktree / ".git").read_text().split(":", 1)[1].strip())
    except (OSError, IndexError):
        return
    _chown_tree(gitdir, uid, gid, keep={gitdir / "commondir", gitdir / "gitdir"})
    os.chown(gitdir, 0, gid)
    os.chmod(gitdir, 0o1775)
    common = _git_common_dir(worktree)
    if common is None:
        return
    objects = os.path.join(common, "objects")
    shared = [objects, *(os.path.join(objects, name) for name in ("pack", "info", *(f"{i:02x}" for i in range(256))))]
    # Branches under colony/ only: the user's own branches (main, ...) stay out of a colony's reach.
    shared += [os.path.join(common, "refs", "heads", "colony"), os.path.join(common, "logs", "refs", "heads", "colony")]
    branch = head_ref(gitdir)
    for shared_dir in shared:  # strings and a stat first: 260 of them at every spawn, nearly all there already
        try:
            st = os.stat(shared_dir)
        except FileNotFoundError:
            os.makedirs(shared_dir, exist_ok=True)
            st = os.stat(shared_dir)
        if st.st_uid == 0 and (st.st_gid != gid or st.st_mode & 0o3070 != 0o3070):
            os.chown(shared_dir, 0, gid)
            os.chmod(shared_dir, (st.st_mode & 0o777) | 0o3070)
    if branch:
        for own in (common / branch, common / "logs" / branch):
            if own.exists():
                os.chown(own, uid, gid)


ACCOUNT_FILES = ("passwd", "group")


def write_accounts(folder: Path, identity: Identity, home: Path, etc: Path = Path("/etc")) -> None:
    """The passwd and group files the colony sees as /etc's: the host's, with an entry for the colony's uid (home:
    `home`, the path HOME has inside) and gid where the host has none. Stem's dedicated uids have none, and
    programs that look their user up refuse to run without one (postgres's initdb: "could not look up effective
    user ID"; whoami, ssh, npm's os.userInfo()). Where the host has the entry, no file: the host's is seen."""
    for name, key, line in (
        ("passwd", identity.uid, f"{identity.user}:x:{identity.uid}:{identity.gid}:Stem colony:{home}:/bin/sh\n"),
        ("group", identity.gid, f"{identity.user}:x:{identity.gid}:\n"),
    ):
        target = folder / name
        try:
            host = (etc / name).read_text()
        except OSError:
            host = ""
        if any(_entry_id(entry) == key for entry in host.splitlines()):
            target.unlink(missing_ok=True)
            continue
        if host and not host.endswith("\n"):
            host += "\n"
        made = target.with_name(f".{name}.new")
        try:
            made.write_text(host + line)
        except OSError as exc:  # a full disk: the write names no file, the spawn's line must
            made.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        os.chmod(made, 0o644)
        os.replace(made, target)


def _entry_id(entry: str) -> int | None:
    fields = entry.split(":")
    return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None


def _write_gitconfig(path: Path, uid: int, gid: int, user_gitconfig: Path | None) -> None:
    """The colony home's ~/.gitconfig, once: the user's name and email (commits are theirs), and safe.directory,
    since the worktree's top folder is root's (see `prepare`) and git inside would otherwise refuse it."""
    if path.exists():
        return
    lines = ["[safe]", "\tdirectory = *"]
    if user_gitconfig is not None and user_gitconfig.exists():
        got = subprocess.run(  # one git for both keys (the last of each wins, as git's own lookup does)
            ["git", "config", "--file", str(user_gitconfig), "--get-regexp", r"^user\.(name|email)$"],
            capture_output=True,
            text=True,
        )
        values: dict[str, str] = {}
        for line in got.stdout.splitlines() if got.returncode == 0 else []:
            key, _, value = line.partition(" ")
            if value.strip():
                values[key.split(".")[1]] = value.strip()
        found = [f"\t{key} = {values[key]}" for key in ("name", "email") if key in values]
        if found:
            lines += ["[user]", *found]
    if "[user]" not in lines:  # the colony's uid may have no passwd entry for git to make a name from
        lines += ["[user]", "\tname = Stem colony", "\temail = colony@stem.invalid"]
    path.write_text("\n".join(lines) + "\n")
    os.chown(path, uid, gid)


def _chown_tree(root: Path, uid: int, gid: int, keep: set[Path]) -> None:
    """lchown everything under `root` (not `root` itself) not in `keep`; symlinks are never followed, and nothing
    mounted inside (a peer snapshot, anything bound there) is entered or touched."""
    stack = [str(root)]
    kept = {str(k) for k in keep} | _mount_points()
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.path in kept:
                    continue
                os.lchown(entry.path, uid, gid)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            fields = [line.split(" ", 5)[4] for line in f]
    except OSError:
        return set()
    return {p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") for p in fields}


# --------------------------------------------------------------------------------- in the child, after fork


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int, data: bytes | None = None) -> None:
    _check(_libc.mount(source, target.encode(), fstype, flags, data), f"mount {target}")


class ColonyInit:
    """Pid 1 of a colony's PID namespace, holding the colony's mount and IPC namespaces: the private view of a
    `Sandbox`, made once. Every process of the colony is forked into them (`fork_inside`, then `enter` in the
    child), so the agent, the services and `stem exec` see and signal one another, share /tmp, and see nothing else.

    Whoever runs the colony makes it (`start`) and owns it: its host, or a spawn for its setup and build steps. It
    runs as the colony's uid with no capability, reaps what is orphaned to it, keeping the latest ends for its owner
    (`orphan_exits`), and ends when its owner kills it or dies; its end makes the kernel kill whatever is left in
    the namespace. Others join the running one by its pid (`attach`: `stem exec` in another process)."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.pid = 0  # 0 until started or attached
        self.pidfd = -1
        self.owned = False
        self.inode = 0  # of its PID namespace (its mount namespace without one): who is a member
        self._ask = -1  # the owner's ends of the pipes to and from the init (`orphan_exits`)
        self._answers = -1
        self._asking = threading.Lock()

    def start(self, enter: Callable[[], None], resolv: bytes | None) -> None:
        """Fork the init (a thread that unshared CLONE_NEWPID forks it, so it is pid 1 of a new namespace), let it
        make the colony's view, and wait until it has. `enter` runs first in the child (the colony's cgroup and
        network namespace); `resolv` is bound over /etc/resolv.conf. Blocking for a few ms: off the event loop."""
        owner = os.pidfd_open(os.getpid())  # the child's way to see its owner go
        ready_r, ready_w = os.pipe()
        asks, self._ask = os.pipe2(os.O_CLOEXEC)
        self._answers, answers = os.pipe2(os.O_CLOEXEC)
        pipes = (asks, answers)
        try:
            pid = _forked_in_new_pid_namespace(
                self.box, lambda: _fork_init(self.box, enter, resolv, owner, ready_w, pipes)
            )
            os.close(ready_w)
            ready_w = -1
            answer = b""
            while chunk := os.read(ready_r, 4096):
                answer += chunk
        finally:
            for fd in (owner, ready_r, ready_w, *pipes):
                if fd >= 0:
                    os.close(fd)
        self.pid, self.owned = pid, True
        self.pidfd = os.pidfd_open(pid)
        if answer != b"1":
            self.kill(5.0)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.close()
            raise OSError(errno.EIO, "the colony's init failed: " + (answer.decode(errors="replace") or "it died"))
        self.inode = os.stat(f"/proc/{pid}/ns/{self._kind}").st_ino

    def attach(self, pid: int, pidfd: int) -> None:
        """Join a running init (started by another process) through a pidfd of it."""
        self.pid, self.pidfd, self.owned = pid, pidfd, False
        self.inode = os.stat(f"/proc/{pid}/ns/{self._kind}").st_ino

    @property
    def _kind(self) -> str:
        return "pid" if self.box.use_pid_ns else "mnt"

    def fork_inside(self, start: Callable[[], T]) -> T:
        """Call `start` (which forks a colony process) on a fresh thread that joined the init's PID namespace
        (setns of a PID namespace applies to the children of the calling thread only; the thread then ends)."""
        if self.pidfd < 0:
            raise OSError(errno.ESRCH, "the colony's init is not running")
        if not self.box.use_pid_ns:
            return start()
        return _on_thread(lambda: _check(_libc.setns(self.pidfd, CLONE_NEWPID), "setns(CLONE_NEWPID)"), start)

    def enter(self, cwd: str, terminal: bool = False) -> None:
        """In the forked child (single-threaded, as joining a mount namespace requires), as root: the init's mount
        and IPC namespaces, no privilege, `cwd`. Runs after the child entered the colony's network namespace.
        `terminal`: stdin is a terminal Stem made for this child (the agent's PTY), given to it as login gives a
        user theirs."""
        flags = CLONE_NEWNS | (CLONE_NEWIPC if self.box.use_ipc_ns else 0)
        _give_stdio(self.box.identity, terminal)
        _check(_libc.setns(self.pidfd, flags), "setns")
        _drop(self.box.identity)
        os.chdir(cwd)

    def members(self) -> set[int]:
        """Every live process in the namespace but the init (pids as the caller sees them)."""
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    if os.stat(f"/proc/{entry}/ns/{self._kind}").st_ino == self.inode:
                        found.add(int(entry))
                except OSError:  # gone, or a zombie (no namespaces left)
                    continue
        return found

    def kill(self, timeout: float) -> bool:
        """SIGKILL the init (the kernel kills every process of the namespace with it) and wait up to `timeout` until
        all of them are gone: the init's own exit waits for that. True if it ended in time."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        return bool(select.select([self.pidfd], [], [], timeout)[0])

    def orphan_exits(self, timeout: float = 1.0) -> list[OrphanExit]:
        """Blocking: the latest processes orphaned to the init that ended (reaped by it up to now: those that ended
        before this call are there), pids as the colony sees them. Only its owner can ask; [] for anyone else, or if
        it does not answer within `timeout`."""
        with self._asking:
            if self._ask < 0:
                return []
            got = b""
            try:
                while select.select([self._answers], [], [], 0)[0]:  # an answer that came too late for its ask
                    if not os.read(self._answers, 65536):
                        return []
                os.write(self._ask, b"?")
                deadline = time.monotonic() + timeout
                while not got.endswith(b"\n\n") and got != b"\n":
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                        return []
                    chunk = os.read(self._answers, 65536)
                    if not chunk:
                        return []
                    got += chunk
            except OSError:
                return []
        found = []
        for line in got.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                pid, start, code, cgroup = line.split(" ", 3)
                found.append(OrphanExit(int(pid), int(start), int(code), cgroup))
        return found

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        with self._asking:
            for fd in (self._ask, self._answers):
                if fd >= 0:
                    os.close(fd)
            self._ask = self._answers = -1


def _on_thread(prepare: Callable[[], None], start: Callable[[], T]) -> T:
    """`prepare` then `start` on a fresh thread (for per-thread namespace state that must not stay behind)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            prepare()
            result.append(start())
        except BaseException as exc:  # handed to the calling thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="colony-pid-ns")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return result[0]


def _forked_in_new_pid_namespace(box: Sandbox, fork: Callable[[], int]) -> int:
    if not box.use_pid_ns:
        return fork()
    return _on_thread(lambda: _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)"), fork)


def pid_base(box: Sandbox) -> int:
    """Where the next run of the colony's init starts its PID namespace's pids (`PID_STRIDE`), kept beside its init
    file; 0 (pids from 2) without a PID namespace of its own or a file to keep it in."""
    if not box.use_pid_ns or box.init_file is None:
        return 0
    kept = box.init_file.with_name("pid-base")
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            top = int(f.read()) // 2
    except (OSError, ValueError):
        top = 16384
    span = max(top - PID_LOW, PID_STRIDE * 2)
    try:
        last = int(kept.read_text())
    except (OSError, ValueError):
        last = PID_LOW + random.randrange(span)
    base = PID_LOW + (last - PID_LOW + PID_STRIDE) % span
    with contextlib.suppress(OSError):
        kept.write_text(f"{base}\n")
    return base


def _fork_init(
    box: Sandbox, enter: Callable[[], None], resolv: bytes | None, owner: int, ready: int, pipes: tuple[int, int]
) -> int:
    pid = os.fork()
    if pid != 0:
        return pid
    try:  # the child: never returns into the caller's code
        _be_init(box, enter, resolv, owner, ready, pipes)
        os._exit(0)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(ready, f"{type(exc).__name__}: {exc}".encode())
    finally:
        os._exit(1)


def _be_init(
    box: Sandbox, enter: Callable[[], None], resolv: bytes | None, owner: int, ready: int, pipes: tuple[int, int]
) -> None:
    """The init, as root in its new PID namespace: into the colony's cgroup and network, the colony's view, its pids
    from past the last run's (`pid_base`), no privilege; then wait for its owner to go, reaping the orphans that come
    to it and answering its owner's asks (`pipes`: asks in, answers out) with the latest of their ends."""
    # Nothing of the owner's signal handling stays (an asyncio loop's wakeup fd, faulthandler's SIGUSR1): a pid 1
    # gets from its own namespace only the signals it handles, and it handles none.
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    os.setsid()  # no terminal, and not in its owner's session
    retitle(b"colony-init")
    base = pid_base(box)  # (its file is in STEM_HOME, which the view covers)
    enter()
    _make_view(box, resolv)
    try:
        with open(UNPRIVILEGED_PORTS, "w") as f:  # this network namespace's own sysctl
            f.write("0")
    except OSError:
        pass
    # No IPv6 on eth0 (loopback keeps ::1): the hive's nftables table is IPv4 only, and eth0's link-local address
    # reached the host's on the other end of the veth, where any host server on `[::]` answered the colony.
    with contextlib.suppress(OSError), open(NO_IPV6_ON_ETH0, "w") as f:
        f.write("1")
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")  # never the victim of the colony's memory limit: its pages are mostly its owner's
    if base:
        with contextlib.suppress(OSError), open(NS_LAST_PID, "w") as f:  # this PID namespace's own
            f.write(str(base))
    _drop(box.identity)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # it holds a copy of its owner's memory: no ptrace, no /proc/1/mem
    asks, answers = pipes
    # Nothing of the owner's stays open (a pipe a reader waits on to end, a socket): only `owner`, `ready`, `pipes`.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = sorted({owner, ready, asks, answers})
    for low, high in zip([2, *keep], [*keep, 65536], strict=True):
        os.closerange(low + 1, high)
    # Its orphans stay zombies until reaped here (SIGCHLD handled, not ignored: ignored, the kernel reaped them and
    # their exit status was lost, so a service's daemon that died at once read as a clean exit).
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    os.write(ready, b"1")
    os.close(ready)
    ended: deque[bytes] = deque(maxlen=ORPHAN_EXITS)
    waiting = select.poll()
    for fd in (owner, wake_r, asks):
        waiting.register(fd, select.POLLIN)
    while True:
        woken = {fd for fd, _ in waiting.poll()}
        if owner in woken:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(wake_r, 4096):
                pass
        _reap_orphans_into(ended)
        if asks in woken:
            if not os.read(asks, 64):
                waiting.unregister(asks)  # its owner closed it: no more asks
                continue
            with contextlib.suppress(OSError):
                os.write(answers, b"".join(ended) + b"\n")


def _reap_orphans_into(ended: deque[bytes]) -> None:
    """In the init: reap every orphan that ended, each one's end a line in `ended`."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or not info.si_pid:
            return
        done = adopted_exit(info.si_pid)
        if done is not None:
            ended.append(f"{done.pid} {done.start} {done.code} {done.cgroup}\n".encode())


def retitle(title: bytes, name: bytes | None = None) -> None:
    """What `ps` shows of this process: `title` as its command line, and `name` (`title` by default; cut to 15
    bytes) as its name, not those it inherited (the init inside a colony: its owner's, which name Stem's paths; a
    colony host forked by the forker: the forker's). The command line is overwritten in place, where the kernel
    reads it from, so a title longer than the old command line is cut to its length."""
    _libc.prctl(PR_SET_NAME, (title if name is None else name)[:15], 0, 0, 0)
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end (fields 48 and 49)
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(title[: end - start - 1].ljust(end - start, b"\0"))


def _make_view(box: Sandbox, resolv: bytes | None) -> None:
    """The colony's mount (and IPC) namespace: covers, then what is the colony's bound back, the colony's
    resolv.conf, and a /proc of the calling init's PID namespace."""
    _check(_libc.unshare(CLONE_NEWNS | (CLONE_NEWIPC if box.use_ipc_ns else 0)), "unshare")
    _mount(b"none", "/", None, MS_REC | MS_PRIVATE)
    if resolv is not None:  # no /etc/resolv.conf on the host: nothing to cover
        _libc.mount(resolv, b"/etc/resolv.conf", None, MS_BIND, None)
    # Opened in this namespace (a bind's source must be a mount of the caller's own), before the covers hide them.
    binds = [
        (-1 if src is None else os.open(src, os.O_PATH | os.O_CLOEXEC), src, target, ro)
        for src, target, ro in box.binds
        if src is None or src.exists()
    ]
    for cover in box.covers:
        mode = b"mode=1777" if cover in box.world_writable else b"mode=755"
        _mount(b"tmpfs", str(cover), b"tmpfs", MS_NOSUID | MS_NODEV, mode)
    for fd, src, target, read_only in binds:
        if src is None:  # reached without following links, as a bind's target is
            at = _open_mountpoint(target, True)
            if at is not None:
                _mount(b"tmpfs", f"/proc/self/fd/{at}", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755")
                os.close(at)
            continue
        _bind(fd, src, target, read_only)
        os.close(fd)
    _own_net_devices()
    if box.use_pid_ns:
        _mount(b"proc", "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this namespace's processes only


def _own_net_devices() -> None:
    """/sys/class/net and /sys/devices/virtual/net of the colony's network namespace, where the host's sysfs listed
    the host's interfaces: every other colony's veth by name (and so every colony's name), eth0 with its MAC. A
    sysfs mounted here shows the network devices of the namespace that mounts it; mounted over /sys/class/net,
    its two folders are bound onto the host's, covering it for good."""
    net = "/sys/class/net"
    if not os.path.isdir(net):
        return
    try:
        _mount(b"sysfs", net, b"sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        return  # no sysfs of its own to be had (a kernel or a namespace that refuses it): the host's stays
    _mount(f"{net}/devices/virtual/net".encode(), "/sys/devices/virtual/net", None, MS_BIND)
    _mount(f"{net}/class/net".encode(), net, None, MS_BIND)  # on top of the whole sysfs, which it hides


def _bind(fd: int, src: Path | None, target: Path, read_only: bool) -> None:
    """Bind the source behind `fd` onto `target`, made if missing. The target may sit in a folder the colony
    writes (its home): it is reached one component at a time without following links, and the mount goes onto
    that very inode, so a link planted on the way cannot redirect it."""
    is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)  # the source's path may be covered by now
    at = _open_mountpoint(target, is_dir)
    if at is None:
        return  # a link or a file of the other kind is in the way: that one bind is simply not made
    try:
        if _attach_tree(fd, at, read_only):
            return
        # Kernels before 5.12 (no mount_setattr): bind, then remount read-only by path.
        _mount(f"/proc/self/fd/{fd}".encode(), f"/proc/self/fd/{at}", None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, str(target), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    finally:
        os.close(at)


def _attach_tree(fd: int, at: int, read_only: bool) -> bool:
    """open_tree + mount_setattr + move_mount: a copy of the source's mounts, made read-only before it is
    attached, so no moment exists where it is there and writable, and no path is looked up twice. False where the
    kernel lacks these calls."""
    tree = _libc.syscall(SYS_OPEN_TREE, fd, b"", OPEN_TREE_CLONE | os.O_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE)
    if tree < 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL):
            return False
        _check(-1, "open_tree")
    try:
        if read_only:
            attr = struct.pack("=QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
            done = _libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, attr, len(attr))
            if done != 0 and ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL):
                return False
            _check(done, "mount_setattr")
        flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", at, b"", flags), "move_mount")
    finally:
        os.close(tree)
    return True


def _open_mountpoint(target: Path, is_dir: bool) -> int | None:
    walk = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY
    fd = os.open("/", walk)
    parts = target.parts[1:]
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and not is_dir:
                with _suppress_exists():
                    os.close(os.open(part, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd))
                nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                if not stat.S_ISREG(os.fstat(nxt).st_mode):
                    os.close(nxt)
                    return None
            else:
                with _suppress_exists():
                    os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, walk, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        return None
    return fd


def _suppress_exists() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(FileExistsError)


def _give_stdio(identity: Identity, terminal: bool) -> None:
    """Give the child's stdin, stdout and stderr, where they are pipes, to the colony's uid: a pipe is made mode
    0600 by its maker (Stem, or the shell that ran `stem exec`), and a program that opens /dev/stdout or
    /dev/stderr (nginx's `error_log /dev/stderr`, `echo >&2` spelled `> /dev/stderr`) reopens it through
    /proc/self/fd as the colony's uid. Only anonymous pipes, and the terminal only when Stem made it for the
    child (`terminal`): the user's own terminal or a named FIFO is a file of the user's."""
    if terminal and os.isatty(0):
        with contextlib.suppress(OSError):
            os.fchown(0, identity.uid, -1)
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
            anonymous = stat.S_ISFIFO(st.st_mode) and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
            if anonymous and st.st_uid != identity.uid:
                os.fchown(fd, identity.uid, identity.gid)
        except OSError:
            continue


def _drop(identity: Identity) -> None:
    """No capabilities (bounding set emptied while we still may), the colony's uid and gid, no_new_privs."""
    try:
        with open(CAP_LAST_CAP_FILE) as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    os.setgroups([identity.gid])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
