"""Read-only peering: colony A reads colony B's work through a filtered snapshot at `.shared/B/` in A's worktree.

A snapshot is a copy, never a view of B's worktree, so nothing in A leads back to B. A's snapshots are kept in
`STEM_HOME/peers/A/` (which no colony sees) and shown in A's worktree at `.shared`, a read-only bind mount of that
folder made when A starts: even root inside A gets EROFS. One mount for all of A's snapshots, made before A's
processes start, so a process in a private mount namespace (core/sandbox.py copies the worktree's mounts) sees
snapshots added, refreshed and removed later. Stem writes through its own path, so there is no read-write window.

A refresh copies only files whose size or mtime changed (copy_file_range, in the kernel, of their data only: a sparse
file's holes stay holes), each to a new name renamed over the old: A never reads half a file, though a refresh that
runs while A reads may show some files new and some old (no whole-tree atomicity: that would cost a full copy, or a
mount swap per refresh). Without mount(2) (no
CAP_SYS_ADMIN) the snapshots are written into `.shared` itself with read-only modes, and the peering says that root in
A can write them.

What is copied: regular files and directories only (symlinks are never followed nor copied, nor are devices, fifos
or sockets), minus `DEFAULT_EXCLUDE` (secrets, agent and editor state, dependencies, `.git`, and `.shared/` itself:
no transitive peering), the hive's `[hive] peer_exclude` and both colonies' `[peering] exclude`. B's tree is walked
through directory fds opened with O_NOFOLLOW, so B cannot swap a directory for a symlink under the walk.

`.shared` exists while A runs (a runtime part, like its network: stop removes it and the copies, start makes them
again); a peering itself is a row of the `peers` table in hive.db, kept until unpeer or the destroy of either colony.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import ColonyConfig, colony_config_for
from core.errors import NoSuchColony, StemError
from core.locks import file_lock, remove_unused
from core.worktree import git

if TYPE_CHECKING:
    from core.changes import ChangeWatcher
    from core.events import Event
    from core.inotify import Changes
    from core.locations import HiveLayout
    from core.registry import ColonyRecord, Registry, Resource
    from core.settings import Settings

__all__ = [
    "DEFAULT_EXCLUDE",
    "SHARED",
    "Excludes",
    "PeerFollower",
    "PeerInfo",
    "Peering",
    "Peers",
    "SyncStats",
    "mount_points",
    "remove_resource",
    "sync_tree",
]

SHARED = ".shared"
KIND = "peer"  # the registry resource: ident A's worktree/.shared, extra the snapshots' folder ("": no mount)
CLI, CONFIG = "cli", "config"  # where a peering came from: `stem peer`, or colony.toml's [peering] from
SETTLE = 1.0  # seconds without a change in B before a following snapshot is refreshed
READ_ONLY_MOUNT = "read-only mount"
NO_MOUNT = "file modes only: no read-only mount here (no mount(2)), root in the colony can write it"

# Never copied, whatever the configuration says. A name pattern matches at any depth, case-insensitively; a
# trailing '/' (a directory) matches a file of that name too; a pattern holding '/' matches the path from the top.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".env*",
    ".envrc",
    ".claude/",
    ".codex/",
    ".config/",
    ".cursor/",
    ".vscode/",
    ".idea/",
    ".docker/",
    ".ssh/",
    ".aws/",
    ".gnupg/",
    ".kube/",
    "credentials.json",
    "service-account.json",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".htpasswd",
    ".pgpass",
    ".git-credentials",
    "id_rsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.tfstate*",
    "node_modules/",
    ".venv/",
    ".git/",
    f"{SHARED}/",
)

PEERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers(
    colony TEXT NOT NULL,
    source TEXT NOT NULL,
    follow INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'cli',
    created_at REAL NOT NULL,
    refreshed_at REAL NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    guard TEXT NOT NULL DEFAULT '',
    PRIMARY KEY(colony, source)
)
"""


# ----------------------------------------------------------------------------------------------------
# What is copied


class Excludes:
    """A compiled exclude list: `match(name, rel)` for an entry named `name` at `rel` (relative to the top)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(dict.fromkeys(p.strip() for p in patterns if p.strip()))
        names: set[str] = set()
        globs: list[str] = []
        paths: list[str] = []
        for raw in self.patterns:
            pattern = raw.lower().rstrip("/")
            if "/" in pattern:
                paths.append(fnmatch.translate(pattern.lstrip("/")))
            elif any(c in pattern for c in "*?["):
                globs.append(fnmatch.translate(pattern))
            elif pattern:
                names.add(pattern)
        self._names = frozenset(names)
        self._glob = re.compile("|".join(globs)) if globs else None
        self._path = re.compile("|".join(paths)) if paths else None

    def match(self, name: str, rel: str) -> bool:
        lower = name.lower()
        if lower in self._names or (self._glob is not None and self._glob.match(lower)):
            return True
        return self._path is not None and self._path.match(rel.lower()) is not None

    def any_part(self, rel: str) -> bool:
        """Whether `rel` or a directory above it is excluded (a change there never reaches a snapshot)."""
        parts = rel.split("/")
        return any(self.match(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts))


@dataclass(slots=True)
class SyncStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    copied: int = 0
    removed: int = 0
    excluded: int = 0
    skipped: int = 0  # symlinks, devices, fifos, sockets, entries that changed type under the walk, and directories
    # nested deeper than MAX_DEPTH


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a fifo swapped in never blocks us
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_RACED = (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.ENXIO, errno.EACCES)
_TMP = ".stem-new~"
# Directories below this many levels are not copied: a walk holds two descriptors and a frame per level, and a colony
# nesting thousands (a runaway script, or on purpose) made every snapshot of it fail with a RecursionError (or
# EMFILE), `stem peer` and the reader's start with it.
MAX_DEPTH = 128


def sync_tree(source: Path, dest_fd: int, excludes: Excludes) -> SyncStats:
    """Make the directory `dest_fd` a filtered copy of `source`: copy new and changed files (size or mtime differ),
    remove what went. Files become 0444 (0555 if executable in B), directories 0555."""
    stats = SyncStats()
    src_fd = os.open(source, _DIR)
    try:
        _sync_dir(src_fd, dest_fd, "", excludes, stats)
    finally:
        os.close(src_fd)
    os.fchmod(dest_fd, 0o555)
    return stats


def _sync_dir(src_fd: int, dst_fd: int, rel: str, excludes: Excludes, stats: SyncStats) -> None:
    want: dict[str, os.stat_result] = {}
    with os.scandir(src_fd) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                stats.skipped += 1
            elif stat.S_ISDIR(st.st_mode) and rel.count("/") >= MAX_DEPTH:
                stats.skipped += 1  # two descriptors and a stack frame per level: not without end
            elif excludes.match(entry.name, f"{rel}{entry.name}"):
                stats.excluded += 1
            else:
                want[entry.name] = st
    have: dict[str, os.stat_result] = {}
    with os.scandir(dst_fd) as entries:
        for entry in entries:
            have[entry.name] = entry.stat(follow_symlinks=False)
    for name, st in have.items():
        wanted = want.get(name)
        if wanted is None or stat.S_IFMT(wanted.st_mode) != stat.S_IFMT(st.st_mode):
            _remove(dst_fd, name, st)
            stats.removed += 1
    for name, st in want.items():
        old = have.get(name)
        if old is not None and stat.S_IFMT(old.st_mode) != stat.S_IFMT(st.st_mode):
            old = None  # removed above
        if stat.S_ISDIR(st.st_mode):
            _sync_subdir(src_fd, dst_fd, name, old is not None, f"{rel}{name}/", excludes, stats)
            continue
        mode = 0o555 if st.st_mode & 0o111 else 0o444
        if old is not None and (old.st_size, old.st_mtime_ns, old.st_mode & 0o777) == (
            st.st_size,
            st.st_mtime_ns,
            mode,
        ):
            stats.files += 1
            stats.bytes += st.st_size
        elif _copy_file(src_fd, dst_fd, name, mode, old is not None, stats):
            stats.copied += 1


def _sync_subdir(
    src_fd: int, dst_fd: int, name: str, exists: bool, rel: str, excludes: Excludes, stats: SyncStats
) -> None:
    try:
        child_src = os.open(name, _DIR, dir_fd=src_fd)
    except OSError as exc:
        if exc.errno not in _RACED:
            raise
        stats.skipped += 1  # became a symlink or went since it was listed
        if exists:
            shutil.rmtree(name, dir_fd=dst_fd)
        return
    try:
        if not exists:
            os.mkdir(name, 0o700, dir_fd=dst_fd)
        child_dst = os.open(name, _DIR, dir_fd=dst_fd)
        try:
            _sync_dir(child_src, child_dst, rel, excludes, stats)
            os.fchmod(child_dst, 0o555)
        finally:
            os.close(child_dst)
    finally:
        os.close(child_src)
    stats.dirs += 1


def _copy_file(src_fd: int, dst_fd: int, name: str, mode: int, replace: bool, stats: SyncStats) -> bool:
    """Copy one file (opened without following a symlink, checked to be a regular file once open); a replaced file
    is written to a new name and renamed over the old, so a reader sees the old file or the new, never half."""
    try:
        fin = os.open(name, _FILE, dir_fd=src_fd)
    except OSError as exc:
        if exc.errno not in _RACED:
            raise
        stats.skipped += 1
        if replace:
            os.unlink(name, dir_fd=dst_fd)
        return False
    try:
        st = os.fstat(fin)
        if not stat.S_ISREG(st.st_mode):
            stats.skipped += 1
            return False
        target = _temporary_name(name) if replace else name
        if replace:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target, dir_fd=dst_fd)
        fout = os.open(target, _NEW, 0o600, dir_fd=dst_fd)
        try:
            _copy_data(fin, fout, st.st_size)
            os.fchmod(fout, mode)
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime read before copying: a later write shows
        finally:
            os.close(fout)
        if replace:
            os.rename(target, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
    finally:
        os.close(fin)
    stats.files += 1
    stats.bytes += st.st_size
    return True


def _temporary_name(name: str) -> str:
    """Where a replaced file is written before it is renamed over `name`: beside it, in a name that fits NAME_MAX
    (a name of 246 bytes and more, a generated test snapshot's, made every refresh of its folder fail)."""
    near = name + _TMP
    if len(os.fsencode(near)) <= 255:
        return near
    return _TMP + hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def _copy_data(fin: int, fout: int, size: int) -> None:
    """In the kernel: copy_file_range (a reflink where the filesystem can), else sendfile; the file's data only, its
    holes stay holes: a sparse file (`truncate -s 1T disk.img`, 0 bytes on disk in the source) is not written out as
    zeros into STEM_HOME, which a colony could fill with a few of them. Up to `size`, the size read before copying:
    what a write adds meanwhile waits for the next refresh, as it would with a later mtime."""
    for start, end in _data_extents(fin, size):
        _copy_range(fin, fout, start, end)
    os.ftruncate(fout, size)  # the hole at the end, if any


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) of each run of data in the first `size` bytes of `fd` (SEEK_DATA / SEEK_HOLE; a
    filesystem without holes gives the whole file as one)."""
    at = 0
    while at < size:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here on
                return
            if exc.errno != errno.EINVAL:
                raise
            start = at  # SEEK_DATA unknown here: all of it is data
            end = size
        else:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if start >= size:
            return
        yield start, end
        at = end


def _copy_range(fin: int, fout: int, start: int, end: int) -> None:
    """Bytes start..end of `fin` to the same place in `fout`, or fewer if `fin` shrank meanwhile."""
    at = start
    try:
        while at < end:
            done = os.copy_file_range(fin, fout, min(end - at, 1 << 30), at, at)
            if not done:
                return
            at += done
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(fout, at, os.SEEK_SET)
    while at < end:
        done = os.sendfile(fout, fin, at, min(end - at, 1 << 30))
        if not done:
            return
        at += done


def _remove(dir_fd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


# ----------------------------------------------------------------------------------------------------
# Mounts


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND = 1, 2, 4, 32, 4096
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _fd_path(fd: int) -> bytes:
    return f"/proc/self/fd/{fd}".encode()


def bind_readonly(source_fd: int, target_fd: int) -> None:
    """Bind the directory `source_fd` onto the directory `target_fd`, read-only, nosuid, nodev. Both are fds
    (O_PATH) so no symlink planted in a path is followed. The bind is read-write until the remount that follows
    at once: a window of microseconds in which only the copy (never B) is exposed."""
    _check(_c().mount(_fd_path(source_fd), _fd_path(target_fd), None, _MS_BIND, None), "bind mount")


def remount_readonly(mounted_fd: int) -> None:
    """`mounted_fd` opened through the new bind (its root): make that mount read-only."""
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    _check(_c().mount(None, _fd_path(mounted_fd), None, flags, None), "read-only remount")


def unmount(path: str) -> None:
    """Detach every mount at `path` (lazily: a process with its cwd inside does not keep it), until the kernel says
    none is left there (EINVAL: not a mount point; ENOENT: no such path). No read of the mount table: stopping 100
    colonies read it 200 times, each read as long as the hive has colonies."""
    while _c().umount2(path.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW) == 0:
        pass
    code = ctypes.get_errno()
    if code not in (errno.EINVAL, errno.ENOENT):
        raise OSError(code, f"unmount {path}: {os.strerror(code)}")


def mount_points() -> list[str]:
    """Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded)."""
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    return [_unescape(line.split(b" ", 5)[4]) for line in lines]


def _unescape(field: bytes) -> str:
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field))


# ----------------------------------------------------------------------------------------------------
# Peerings


@dataclass(frozen=True, slots=True)
class Peering:
    """Colony `colony` reads `source`'s worktree at `.shared/<source>/` of its own."""

    colony: str
    source: str
    follow: bool  # refreshed when the source's changes settle
    origin: str  # CLI or CONFIG
    refreshed_at: float  # 0: no snapshot made yet
    files: int
    bytes: int
    guard: str  # how the snapshot is kept read-only now ("read-only mount", ...); "" when there is none

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """`alpha reads beta (follows; 120 files, 3 s ago; read-only mount)`."""
        when = f"{self.files} files, refreshed {_ago(time.time() - self.refreshed_at)}" if self.refreshed_at else ""
        parts = [p for p in ("follows" if self.follow else "", when, self.guard or "no snapshot while stopped") if p]
        return f"{self.colony} reads {self.source} ({'; '.join(parts)})"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """The peerings of one colony: whom it reads (`peers`), and who reads it (`peered_by`)."""

    peers: tuple[Peering, ...] = ()
    peered_by: tuple[Peering, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"peers": [p.as_dict() for p in self.peers], "peered_by": [p.as_dict() for p in self.peered_by]}

    def line(self) -> str:
        """One line for Info: "reads beta, gamma · read by delta", or ""."""
        parts = []
        if self.peers:
            parts.append("reads " + ", ".join(p.source for p in self.peers))
        if self.peered_by:
            parts.append("read by " + ", ".join(p.colony for p in self.peered_by))
        return " · ".join(parts)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"


_FIELDS = "colony, source, follow, origin, refreshed_at, files, bytes, guard"


class Peers:
    """The hive's peerings: the `peers` table, and the snapshots and mounts they make. Blocking: call off the loop.

    Snapshots into colony A are written under A's peering lock (`locks/peers-A.lock`), whoever writes them (a stem
    command, or B's colony host following B's changes); the callers that make or remove a snapshot also hold A's
    colony lock, so a stop or destroy of A never races a snapshot being made.
    """

    def __init__(self, registry: Registry, layout: HiveLayout, settings: Settings) -> None:
        self.registry = registry
        self.layout = layout
        self.settings = settings
        if not registry.read("SELECT 1 FROM sqlite_master WHERE name = 'peers'"):  # (not a write at every open)
            with registry.transaction() as db:
                db.execute(PEERS_SCHEMA)

    # queries -------------------------------------------------------------------------------------------

    def rows(self, colony: str | None = None, source: str | None = None) -> list[Peering]:
        sql, args = f"SELECT {_FIELDS} FROM peers", []
        where = [(k, v) for k, v in (("colony", colony), ("source", source)) if v is not None]
        if where:
            sql += " WHERE " + " AND ".join(f"{k}=?" for k, _ in where)
            args = [v for _, v in where]
        found = self.registry.read(sql + " ORDER BY created_at", tuple(args))
        return [Peering(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in found]

    def info(self, name: str) -> PeerInfo:
        return PeerInfo(tuple(self.rows(colony=name)), tuple(self.rows(source=name)))

    # what the CLI and the UI ask --------------------------------------------------------------------------

    def add(self, name: str, source: str, *, follow: bool = False) -> Peering:
        """Colony `name` reads `source` from now on; the snapshot is made at once if `name` runs (else at its
        start). Nothing is left half-made when it fails."""
        if name == source:
            raise StemError(f"{name} cannot peer with itself: name another colony (stem ls)")
        rec, src = self.registry.get(name), self.registry.get(source)
        self._check_worktrees(rec, src)
        before = self.rows(name, source)
        self._upsert(name, source, follow=follow, origin=CLI)
        try:
            if self._runs(rec):
                self._snapshot(rec, src, create=True)
        except BaseException:
            if before:
                self._upsert(name, source, follow=before[0].follow, origin=before[0].origin)
            else:
                self._delete_row(name, source)
            raise
        return self.rows(name, source)[0]

    def remove(self, name: str, source: str) -> None:
        """Colony `name` no longer reads `source`: its snapshot and mount go."""
        self.registry.get(name)
        if not self.rows(name, source):
            raise StemError(f"{name} does not read {source} (see stem peer {name})")
        self._remove_snapshot_of(name, source)
        self._delete_row(name, source)

    def refresh(self, name: str) -> list[Peering]:
        """Refresh every snapshot colony `name` reads (made if missing while it runs)."""
        rec = self.registry.get(name)
        rows = self.rows(colony=name)
        if not rows:
            raise StemError(f"{name} reads no colony: stem peer {name} --from OTHER")
        if not self._runs(rec):
            raise StemError(f"{name} is {rec.state}: its snapshots are made when it starts (stem start {name})")
        for row in rows:
            src = self.registry.get(row.source)
            self._check_worktrees(rec, src)
            self._snapshot(rec, src, create=True)
        return self.rows(colony=name)

    # lifecycle hooks ----------------------------------------------------------------------------------------

    def apply(self, rec: ColonyRecord, config: ColonyConfig) -> list[str]:
        """At spawn and start (A's lock held, its runtime parts just made): colony.toml's `[peering] from` becomes
        peerings, then `.shared` is mounted and every snapshot of the colony is made. Returns warnings (a named
        colony that does not exist,
        a snapshot that could not be made): the colony runs without that snapshot."""
        warnings: list[str] = []
        wanted = [s for s in dict.fromkeys(config.peering.sources) if s != rec.name]
        for row in self.rows(colony=rec.name):
            if row.origin == CONFIG and row.source not in wanted:
                self._delete_row(rec.name, row.source)
        for source in wanted:
            if self.registry.find(source) is None:
                warnings.append(f"peering: [peering] from names {source!r}, not a colony of this hive: skipped")
                continue
            existing = self.rows(rec.name, source)
            if existing and existing[0].origin == CLI:
                self._upsert(rec.name, source, follow=existing[0].follow or config.peering.auto_refresh, origin=CLI)
            else:
                self._upsert(rec.name, source, follow=config.peering.auto_refresh, origin=CONFIG)
        try:
            # Every running colony has its `.shared`, peered or not yet: its processes may live in private mount
            # namespaces, which see a mount only if it was there when they started.
            with file_lock(self._lock_path(rec.name)):
                if self._shared(rec) is None:
                    self._mount(rec)
        except (StemError, OSError) as exc:
            warnings.append(f"peering: no .shared in {rec.name}'s worktree: {exc}")
            return warnings
        for row in self.rows(colony=rec.name):
            src = self.registry.find(row.source)
            try:
                if src is None:
                    raise NoSuchColony(f"{row.source} is gone")
                self._check_worktrees(rec, src)
                self._snapshot(rec, src, create=True)
            except (StemError, OSError) as exc:
                warnings.append(f"peering: no snapshot of {row.source}: {exc}")
        return warnings

    def refresh_followers(self, source: str) -> list[str]:
        """B's changes settled (called in B's colony host): refresh the snapshots of B that follow it. Only existing
        snapshots are refreshed, never made: a colony stopping meanwhile keeps none. Returns warnings."""
        warnings = []
        src = self.registry.find(source)
        if src is None:
            return []
        for row in self.rows(source=source):
            if not row.follow:
                continue
            rec = self.registry.find(row.colony)
            if rec is None:
                continue
            try:
                self._snapshot(rec, src, create=False)
            except (StemError, OSError) as exc:
                warnings.append(f"peering: {rec.name}'s snapshot of {source} not refreshed: {exc}")
        return warnings

    def forget(self, name: str) -> None:
        """Colony `name` is destroyed: the snapshots of it in other colonies go, and every peering row naming it
        (its own snapshots went with its parts)."""
        for row in self.rows(source=name):
            self._remove_snapshot_of(row.colony, name)
        with self.registry.transaction() as db:
            db.execute("DELETE FROM peers WHERE colony=? OR source=?", (name, name))
        remove_unused(self._lock_path(name))

    def collect(self) -> list[str]:
        """gc: peerings of colonies that are gone, `.shared` mounts under the hive's worktrees and snapshot folders
        that no claim owns. What was removed, one line each."""
        removed = []
        names = {rec.name for rec in self.registry.colonies()}
        for row in self.rows():
            if row.colony not in names or row.source not in names:
                if row.colony in names:
                    self._remove_snapshot_of(row.colony, row.source)
                self._delete_row(row.colony, row.source)
                removed.append(f"peering {row.colony} <- {row.source} (a colony of it is gone)")
        claims = [res for res in self.registry.resources() if res.kind == KIND]
        claimed = {res.ident for res in claims}
        root = os.path.realpath(self.layout.worktrees) + os.sep
        for point in mount_points():
            if point.startswith(root) and point.endswith(os.sep + SHARED) and point not in claimed:
                with contextlib.suppress(OSError):
                    _remove_shared(point, "")
                    removed.append(f"snapshot mount {point} (not in the registry)")
        stores = {res.extra for res in claims}
        for store in sorted(self._stores.glob("*")):
            if str(store) not in stores:
                shutil.rmtree(store, ignore_errors=True)
                removed.append(f"snapshots {store} (not in the registry)")
        for path in self.layout.locks.glob("peers-*.lock"):
            if path.name[len("peers-") : -len(".lock")] not in names:
                remove_unused(path)
        return removed

    def remove_resource(self, res: Resource) -> None:
        remove_resource(self.registry, self.layout, res)

    # the snapshots ------------------------------------------------------------------------------------------

    def _snapshot(self, rec: ColonyRecord, src: ColonyRecord, *, create: bool) -> None:
        """Make (`create`) or refresh `src`'s snapshot in `rec`; a colony not running gets none."""
        excludes = self.excludes(rec, src)
        with file_lock(self._lock_path(rec.name)):
            shared = self._shared(rec)
            if shared is None:
                if not (create and self._runs(rec)):
                    return
                shared = self._mount(rec)
            store, guard = shared
            started = time.time()
            with _open_dir(store, src.name, create=create) as dest:
                if dest is None:
                    return  # following, but its snapshot is not made (a colony starting): its start makes it
                stats = sync_tree(Path(src.worktree), dest, excludes)
            with self.registry.transaction() as db:
                db.execute(
                    "UPDATE peers SET refreshed_at=?, files=?, bytes=?, guard=? WHERE colony=? AND source=?",
                    (started, stats.files, stats.bytes, guard, rec.name, src.name),
                )

    def _shared(self, rec: ColonyRecord) -> tuple[Path, str] | None:
        """Where `rec`'s snapshots are written, and how they are kept read-only; None if it has no `.shared`."""
        target = self._target(rec)
        for res in self.registry.resources(rec.name):
            if res.kind == KIND and res.ident == target:
                if not res.extra:
                    return Path(target), NO_MOUNT
                if target not in mount_points():
                    # Unmounted behind Stem's back (root on the host can): mount it again, never write unguarded.
                    self._bind(rec, Path(res.extra))
                return Path(res.extra), READ_ONLY_MOUNT
        return None

    def _mount(self, rec: ColonyRecord) -> tuple[Path, str]:
        """`.shared` in the colony's worktree: a read-only bind of its snapshots' folder (STEM_HOME/peers/NAME, which
        no colony sees), made while the colony runs. One mount for all its snapshots, made before its processes
        start: a process in a private mount namespace keeps seeing it, and snapshots added or removed later."""
        worktree = Path(rec.worktree)
        _exclude_from_git(worktree)
        target = self._target(rec)
        store = self._stores / rec.name
        self.registry.claim(rec.name, KIND, target, extra=str(store))
        try:
            store.mkdir(parents=True, exist_ok=True)
            os.chmod(store, 0o555)
            try:
                self._bind(rec, store)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EACCES, errno.ENOSYS):
                    raise
                # No mount(2) here: the snapshots go to .shared itself, read-only by their modes alone.
                shutil.rmtree(store)
                self.registry.claim(rec.name, KIND, target, extra="")
                return Path(target), NO_MOUNT
            return store, READ_ONLY_MOUNT
        except BaseException:
            _remove_shared(target, str(store))
            self.registry.release(KIND, target)
            raise

    @staticmethod
    def _bind(rec: ColonyRecord, store: Path) -> None:
        store_fd = os.open(store, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with _shared_dir(Path(rec.worktree)) as point:
                bind_readonly(store_fd, point)
            with _shared_dir(Path(rec.worktree)) as mounted:  # opened again: through the new mount, its root
                try:
                    remount_readonly(mounted)
                except BaseException:
                    _check(_c().umount2(_fd_path(mounted), _MNT_DETACH), "unmount")
                    raise
        finally:
            os.close(store_fd)

    def excludes(self, rec: ColonyRecord, src: ColonyRecord) -> Excludes:
        """The defaults, the hive's `peer_exclude`, and both colonies' `[peering] exclude`. A colony.toml that does
        not parse refuses the snapshot: its exclude list might be what keeps a secret out."""
        patterns = [*DEFAULT_EXCLUDE, *self.settings.peer_exclude]
        for colony in (src, rec):
            kept = self.layout.colony_policy(colony.name)
            config, _ = colony_config_for(Path(colony.worktree), colony.base_commit, colony.target, kept)
            patterns += config.peering.exclude
        return Excludes(patterns)

    def _remove_snapshot_of(self, name: str, source: str) -> None:
        """`source`'s snapshot in colony `name` goes (through the writable path: the mount stays for the others)."""
        rec = self.registry.find(name)
        if rec is None:
            return
        with file_lock(self._lock_path(name)):
            shared = self._shared(rec)
            if shared is not None:
                fd = os.open(shared[0], _DIR)
                try:
                    with contextlib.suppress(FileNotFoundError):
                        shutil.rmtree(source, dir_fd=fd)
                finally:
                    os.close(fd)

    # plumbing ------------------------------------------------------------------------------------------------

    @property
    def _stores(self) -> Path:
        return self.layout.home / "peers"

    def _runs(self, rec: ColonyRecord) -> bool:
        """Whether the colony's runtime parts are up (its network is: spawn and start make it before peering)."""
        return self.registry.owns("veth", rec.veth)

    @staticmethod
    def _check_worktrees(rec: ColonyRecord, src: ColonyRecord) -> None:
        for colony in (src, rec):
            if not Path(colony.worktree).is_dir():
                raise StemError(f"{colony.name} has no worktree ({colony.worktree} is gone): stem gc removes it")

    @staticmethod
    def _target(rec: ColonyRecord) -> str:
        return os.path.join(os.path.realpath(rec.worktree), SHARED)

    def _lock_path(self, name: str) -> Path:
        return _lock_path(self.layout, name)

    def _upsert(self, name: str, source: str, *, follow: bool, origin: str) -> None:
        with self.registry.transaction() as db:
            db.execute(
                "INSERT INTO peers(colony, source, follow, origin, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(colony, source) DO UPDATE SET follow=excluded.follow, origin=excluded.origin",
                (name, source, int(follow), origin, time.time()),
            )

    def _delete_row(self, name: str, source: str) -> None:
        with self.registry.transaction() as db:
            db.execute("DELETE FROM peers WHERE colony=? AND source=?", (name, source))


def remove_resource(registry: Registry, layout: HiveLayout, res: Resource) -> None:
    """Teardown of a colony's `.shared` (stop, destroy, a rolled-back spawn, gc): unmount, remove the snapshots,
    release the claim."""
    with file_lock(_lock_path(layout, res.colony)):
        _remove_shared(res.ident, res.extra)
        registry.release(res.kind, res.ident)


def _lock_path(layout: HiveLayout, name: str) -> Path:
    return layout.locks / f"peers-{name}.lock"


@contextlib.contextmanager
def _shared_dir(worktree: Path) -> Iterator[int]:
    """An O_PATH fd of `worktree/.shared`, made if missing, opened without following a symlink (the colony owns its
    worktree and could plant one to aim the mount elsewhere)."""
    top = os.open(worktree, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(SHARED, 0o755, dir_fd=top)
        fd = os.open(SHARED, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
    finally:
        os.close(top)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open_dir(parent: Path, name: str, *, create: bool) -> Iterator[int | None]:
    """A readable fd of `parent/name` (made if missing when `create`; None if missing otherwise), never through a
    symlink at the last step."""
    top = os.open(parent, _DIR)
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=top)
        try:
            fd = os.open(name, _DIR, dir_fd=top)
        except FileNotFoundError:
            fd = -1
    finally:
        os.close(top)
    try:
        yield fd if fd >= 0 else None
    finally:
        if fd >= 0:
            os.close(fd)


def _remove_shared(target: str, store: str) -> None:
    """Unmount `target` (a colony's .shared), remove it and the snapshots' folder `store`."""
    unmount(target)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if os.path.islink(target):
            os.unlink(target)
        else:
            shutil.rmtree(target)
    if store:
        shutil.rmtree(store, ignore_errors=True)


def _exclude_from_git(worktree: Path) -> None:
    """`/.shared/` in the repository's info/exclude (shared by all its worktrees), never in a tracked .gitignore,
    so snapshots stay out of git status, commits and the changed-file list."""
    where = git(["rev-parse", "--path-format=absolute", "--git-path", "info/exclude"], worktree).stdout.strip()
    path = Path(where)
    line = f"/{SHARED}/"
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    if line in text.splitlines():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(("" if not text or text.endswith("\n") else "\n") + f"# stem: read-only peer snapshots\n{line}\n")


# ----------------------------------------------------------------------------------------------------
# Following a source's changes (in its colony host)


class PeerFollower:
    """In B's colony host: when B's changes settle (SETTLE seconds without one), refresh the snapshots of B that
    follow it. Hooked on B's change watcher (its inotify instance); looks at the table only when B changed."""

    def __init__(
        self, peers: Peers, source: str, changes: ChangeWatcher, emit: Callable[[Event], None], settle: float = SETTLE
    ) -> None:
        self.peers = peers
        self.source = source
        self.refreshes = 0  # for tests and diagnostics
        self._root = changes.root + os.sep
        self._emit = emit
        self._settle = settle
        self._ignore = Excludes([*DEFAULT_EXCLUDE, *peers.settings.peer_exclude])
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._unsubscribe: Callable[[], None] | None = changes.subscribe(self._on_changes)
        # What changed between the colony's start (or a `stem peer --follow` since) and its watches being up made no
        # event: one refresh once settled, as after a change (nothing is copied if nothing follows it).
        self._timer = asyncio.get_running_loop().call_later(self._settle, self._settled)

    def _on_changes(self, batch: Changes) -> None:
        paths = [p[len(self._root) :] for p in batch.paths if p.startswith(self._root)]
        if not batch.overflow and all(self._ignore.any_part(p) for p in paths):
            return  # only what no snapshot holds changed (.git, B's own .shared, node_modules, ...)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._settle, self._settled)

    def _settled(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            self._again = True  # a refresh runs: one more after it
            return
        self._task = asyncio.get_running_loop().create_task(self._refresh(), name=f"peers-{self.source}")

    async def _refresh(self) -> None:
        from core.events import Notice

        while True:
            self._again = False
            try:
                warnings = await asyncio.to_thread(self.peers.refresh_followers, self.source)
            except Exception as exc:  # a bug: say so, following goes on
                warnings = [f"peering: refreshing the snapshots of {self.source} failed: {exc}"]
            self.refreshes += 1
            for warning in warnings:
                self._emit(Notice(self.source, "warning", f"{self.source}: {warning}"))
            if not self._again:
                return

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
