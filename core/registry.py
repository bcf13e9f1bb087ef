"""The hive registry: colonies, the kernel objects and paths each owns, processes, transitions and events.

SQLite in WAL mode, shared by every stem process on the machine. Every kernel object or path is recorded as an
intent *before* it is made and forgotten only *after* it is gone, so a kill -9 at any moment leaves rows that
`gc` can reconcile against what really exists.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from core import pids
from core.errors import NameTaken, NoSuchColony, PoolExhausted, StemError, WrongState, free_bytes
from core.lifecycle import ColonyState, allowed
from core.locks import holder

# Room kept for the registry's own writes on a disk that fills up: a file of this size next to hive.db, made while
# there is plenty of space, given up the first time a write of stop, destroy or gc (which free space) is refused for
# lack of room (see `_with_room`), so that they can still record what they do. Nothing else may take it: a spawn
# on a full disk is refused and leaves the reserve for the stop that makes room.
RESERVE_BYTES = 1 << 20
RESERVE_WHEN_FREE = 4 << 20  # made only with at least this much free (an 8 MB STEM_HOME gets one)

F = TypeVar("F", bound=Callable[..., Any])


def _out_of_room(exc: sqlite3.OperationalError, path: Path) -> bool:
    """SQLite's error came from a disk without room (it says "disk I/O error" when it cannot size a file)."""
    if "full" in str(exc):
        return True
    if "disk I/O error" not in str(exc):
        return False
    free = free_bytes(path.parent)
    return free is not None and free < RESERVE_BYTES


# Pids a process is recorded under before it starts (`settle_process`): above any pid_max (at most 2**22), so no
# process has one and nothing that looks a recorded process up finds it running.
PENDING_PIDS = 1 << 30


def _add_process(db: sqlite3.Connection, colony: str, pid: int, starttime: int, kind: str, argv: list[str]) -> None:
    db.execute(
        "INSERT OR REPLACE INTO processes(pid, starttime, colony, kind, argv, started_at) VALUES (?, ?, ?, ?, ?, ?)",
        (pid, starttime, colony, kind, json.dumps(argv), time.time()),
    )


def _with_room(method: F) -> F:
    """A write that the disk refused for lack of room is made again once, after the reserve is given up."""

    @functools.wraps(method)
    def write(self: Registry, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc) or not self.freeing_space or not self.give_up_reserve():
                raise
            return method(self, *args, **kwargs)

    return cast(F, write)


SCHEMA = """
CREATE TABLE IF NOT EXISTS colonies(
    name TEXT PRIMARY KEY,
    slot INTEGER NOT NULL UNIQUE,
    repo TEXT NOT NULL,
    base_ref TEXT NOT NULL,
    base_commit TEXT NOT NULL DEFAULT '',
    branch TEXT NOT NULL,
    worktree TEXT NOT NULL,
    db_path TEXT NOT NULL,
    netns TEXT NOT NULL,
    veth TEXT NOT NULL,
    ip TEXT NOT NULL,
    host_ip TEXT NOT NULL,
    prefixlen INTEGER NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT '',
    task TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    egress TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS transitions(
    id INTEGER PRIMARY KEY,
    colony TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_colony ON transitions(colony, id);
CREATE TABLE IF NOT EXISTS resources(
    kind TEXT NOT NULL,
    ident TEXT NOT NULL,
    colony TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY(kind, ident)
);
CREATE TABLE IF NOT EXISTS processes(
    pid INTEGER NOT NULL,
    starttime INTEGER NOT NULL,
    colony TEXT NOT NULL,
    kind TEXT NOT NULL,
    argv TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY(pid, starttime)
);
CREATE TABLE IF NOT EXISTS runtime(
    colony TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY(colony, kind, name)
);
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY,
    colony TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ColonyRecord:
    """One colony as the registry knows it."""

    name: str
    slot: int
    repo: str
    base_ref: str
    base_commit: str
    branch: str
    worktree: str
    db_path: str
    netns: str
    veth: str
    ip: str
    host_ip: str
    prefixlen: int
    state: ColonyState
    stage: str
    reason: str
    agent: str
    task: str
    created_at: float
    updated_at: float
    egress: str = ""  # core.egress.EgressInForce as JSON, set when the network comes up
    target: str = ""  # the branch `base_ref` named at spawn (HEAD: the one checked out), where merges go; "" if none


@dataclass(frozen=True, slots=True)
class Transition:
    state: ColonyState
    stage: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    ident: str
    colony: str
    extra: str


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    pid: int
    starttime: int
    colony: str
    kind: str
    argv: list[str]
    started_at: float


_COLONY_FIELDS = ", ".join(ColonyRecord.__slots__)
_STATE = ColonyRecord.__slots__.index("state")


def _busy_line(path: Path, pid: int | None, stopped: bool) -> str:
    """Who holds the registry at `path` for writing, and what lets it go."""
    if pid is None:
        return f"the hive's registry ({path}) has been busy for {BUSY_GIVE_UP:.0f} s: another process writes to it"
    what = f"pid {pid} ({pids.command_text(pid)})"
    if stopped:
        return f"the hive's registry ({path}) is held by {what}, which is stopped: kill -CONT {pid} lets it finish"
    return f"the hive's registry ({path}) has been held by {what} for {BUSY_GIVE_UP:.0f} s"


def _record(row: sqlite3.Row) -> ColonyRecord:
    values = list(row)
    values[_STATE] = ColonyState(values[_STATE])
    return ColonyRecord(*values)


_ADDED_COLUMNS = (("egress", "TEXT NOT NULL DEFAULT ''"), ("target", "TEXT NOT NULL DEFAULT ''"))
_SCHEMA_NAMES = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA))


WAL_KEPT = 1 << 20  # bytes of hive.db-wal kept after a checkpoint
# A write waits for another process's write this long (SQLite's busy handler) before it looks at who holds the
# registry, and gives up after BUSY_GIVE_UP. The holder is found by the POSIX lock SQLite's WAL mode takes on this
# byte of hive.db-shm for a write (WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK).
BUSY_LOOK = 1.0
BUSY_GIVE_UP = 30.0
_WAL_WRITE_BYTE = 120


class RegistryBusy(StemError):
    """Another process holds the hive's registry for writing: stopped (ctrl+z, kill -STOP), or for too long."""


class Registry:
    """Thread-safe access to hive.db. Writes are short transactions; callers run them off the event loop."""

    def __init__(self, path: Path, waits_for_stopped: bool = False) -> None:
        """`waits_for_stopped`: a write waits for a holder that is stopped as for any other (a colony host, which must
        not give up a write it owes while a ctrl+z'd `stem` is brought back); otherwise it ends at once, in one line
        naming it (`RegistryBusy`)."""
        self.path = path
        self.waits_for_stopped = waits_for_stopped
        self.reserve_path = path.with_name(path.name + ".reserve")
        self._lock = threading.RLock()
        self._freeing = 0  # stops, destroys and gcs under way (`freeing`): only their writes may take the reserve
        new = not path.exists()
        try:
            try:
                self._open()
            except sqlite3.OperationalError as exc:
                # Opened by nobody else, the file needs room for its shared-memory index and its journal's header:
                # on a full disk ("disk I/O error" as SQLite says it) no command could open the hive, not even the
                # stop, destroy or gc that would make room. The reserve is for that.
                if hasattr(self, "_db"):
                    self._db.close()
                if not _out_of_room(exc, path) or not self.give_up_reserve():
                    raise
                self._open()
        except BaseException:
            if new:
                self._unmade()
            raise
        self._keep_reserve()

    def _unmade(self) -> None:
        """A hive.db this open made and could not write (a full disk before the hive's first command): removed with
        its journal and index, which hold nothing, rather than left empty."""
        if hasattr(self, "_db"):
            self._db.close()
        with suppress(OSError):
            if self.path.stat().st_size == 0:
                for suffix in ("", "-wal", "-shm"):
                    with suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")

    def _open(self) -> None:
        path = self.path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout={int(BUSY_GIVE_UP * 1000)}")
        self._wal()
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The WAL file is cut back to this after each checkpoint that empties it: otherwise it keeps the largest size
        # it ever had (colony hosts keep the registry open, so it is never removed), and on a small STEM_HOME the
        # hive's own journal filled the disk.
        self._db.execute(f"PRAGMA journal_size_limit={WAL_KEPT}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_KEPT // 4096 // 2}")  # pages: checkpointed at half of it
        if self._schema_current():
            return  # (a write at every open would make every command wait for any other's write, even `stem ls`)
        with self.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            # Columns added since the first schema: an older hive.db gets them in place.
            have = {row[1] for row in db.execute("PRAGMA table_info(colonies)")}
            for column, decl in _ADDED_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE colonies ADD COLUMN {column} {decl}")

    def _schema_current(self) -> bool:
        """Whether hive.db has every table, index and column of `SCHEMA` already: read, not written."""
        names = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        if not names >= _SCHEMA_NAMES:
            return False
        have = {row[1] for row in self._db.execute("PRAGMA table_info(colonies)")}
        return all(column in have for column, _ in _ADDED_COLUMNS)

    def _keep_reserve(self) -> None:
        """Make the reserve if it is missing (new, or given up on a full disk) and the disk has room again."""
        if (self._reserve_size() or 0) >= RESERVE_BYTES:
            return
        free = free_bytes(self.reserve_path.parent)
        if free is None or free < RESERVE_WHEN_FREE:
            return
        self._make_reserve()

    def _reserve_size(self) -> int | None:
        """The reserve's size: None where this hive never had one, 0 where it was given up."""
        try:
            return os.stat(self.reserve_path).st_size
        except FileNotFoundError:
            return None

    def _make_reserve(self) -> bool:
        made = self.reserve_path.with_name(self.reserve_path.name + ".new")  # one name: never left behind twice
        try:
            fd = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)  # blocks taken now, not when written
            finally:
                os.close(fd)
            os.replace(made, self.reserve_path)
        except OSError:
            with suppress(OSError):
                os.unlink(made)
            return False  # a read-only or racing hive, or no room after all: no reserve this time
        return True

    @property
    def reserve_owed(self) -> bool:
        """The hive had a reserve and gave it up on a full disk: its room is the registry's, not a spawn's."""
        return self._reserve_size() == 0

    def make_reserve_again(self) -> bool:
        """Before a spawn or a start writes anything: the reserve an earlier stop, destroy or gc gave up (it is
        `reserve_owed`) is made again (the caller checked the room), or the spawn could take the last of it and
        leave its own destroy none. Whether it is there now."""
        return self._make_reserve() or not self.reserve_owed  # or another spawn made it meanwhile

    @contextmanager
    def freeing(self) -> Iterator[None]:
        """While an operation that frees space (stop, destroy, gc) runs: a write refused for lack of room may take
        the reserve."""
        with self._lock:
            self._freeing += 1
        try:
            yield
        finally:
            with self._lock:
                self._freeing -= 1

    @property
    def freeing_space(self) -> bool:
        return self._freeing > 0

    def give_up_reserve(self) -> bool:
        """Free the reserve for the registry's writes; whether there was one to free. The file stays, empty (no
        blocks to free, none needed): it says the room is owed, so a spawn makes the reserve again before its own
        writes (see `make_reserve_again`), where a hive too small for one never had the file."""
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            had = os.fstat(fd).st_size > 0
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        return had

    def _wal(self) -> None:
        """WAL mode, set once per file. Switching takes an exclusive lock and SQLite answers "database is locked"
        at once (no busy handler) while another process opens the file: retried, and skipped when already set."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)  # another process holds the lock for a moment: nothing to wait on but time

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so read-then-write (slot allocation) cannot race."""
        with self._lock:
            self._begin()
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write a second at a time. A holder that is stopped (ctrl+z on
        a `stem` in the middle of a write, kill -STOP) would hold the registry for good: unless `waits_for_stopped`,
        the wait ends with a line naming it, as it does after BUSY_GIVE_UP of a holder that runs (rather than
        SQLite's "database is locked" after 30 s)."""
        db = self._db
        deadline = time.monotonic() + BUSY_GIVE_UP
        db.execute(f"PRAGMA busy_timeout={int(BUSY_LOOK * 1000)}")
        try:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc):
                        raise
                    pid = holder(Path(f"{self.path}-shm"), _WAL_WRITE_BYTE)
                    stopped = pid is not None and pids.stopped(pid)
                    if (stopped and not self.waits_for_stopped) or time.monotonic() >= deadline:
                        if self.waits_for_stopped:
                            raise
                        raise RegistryBusy(_busy_line(self.path, pid, stopped)) from None
        finally:
            db.execute(f"PRAGMA busy_timeout={int(BUSY_GIVE_UP * 1000)}")

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """The rows of a query, under the lock every other use of the connection takes. A read takes no write lock, so
        another process's write (even one stopped halfway) does not hold it up."""
        return self._query(sql, args)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args))

    # colonies ---------------------------------------------------------------------------------------------

    @_with_room
    def reserve(self, name: str, slots: int, make_row: Callable[[int], dict[str, Any]]) -> ColonyRecord:
        """Insert colony `name` in state `spawning` on the lowest free address slot below `slots`.

        `make_row(slot)` derives the slot-dependent fields (addresses, veth name) inside the same transaction.
        """
        now = time.time()
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM colonies WHERE name=?", (name,)).fetchone():
                raise NameTaken(f"a colony named {name!r} already exists: pick another name")
            used = {row[0] for row in db.execute("SELECT slot FROM colonies")}
            slot = next((s for s in range(slots) if s not in used), None)
            if slot is None:
                raise PoolExhausted(
                    f"the address pool is full ({slots} colonies): destroy a colony or widen [hive] pool"
                )
            row = dict(make_row(slot), name=name, slot=slot, state=ColonyState.SPAWNING, created_at=now, updated_at=now)
            cols = ", ".join(row)
            db.execute(f"INSERT INTO colonies({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
            db.execute("INSERT INTO transitions(colony, state, at) VALUES (?, ?, ?)", (name, ColonyState.SPAWNING, now))
        return self.get(name)

    def get(self, name: str) -> ColonyRecord:
        rows = self._query(f"SELECT {_COLONY_FIELDS} FROM colonies WHERE name=?", (name,))
        if not rows:
            raise NoSuchColony.named(name)
        return _record(rows[0])

    def find(self, name: str) -> ColonyRecord | None:
        rows = self._query(f"SELECT {_COLONY_FIELDS} FROM colonies WHERE name=?", (name,))
        return _record(rows[0]) if rows else None

    def colonies(self) -> list[ColonyRecord]:
        return [_record(r) for r in self._query(f"SELECT {_COLONY_FIELDS} FROM colonies ORDER BY created_at")]

    @_with_room
    def set_state(self, name: str, state: ColonyState, stage: str = "", reason: str = "") -> None:
        """Move the colony to `state`, if core.lifecycle allows it from the state it is in (else WrongState);
        a colony that is gone (a destroy won the race) stays gone."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT state FROM colonies WHERE name=?", (name,)).fetchone()
            if row is None:
                return
            if not allowed(row[0], state):
                hint = " (stem gc finishes an interrupted destroy)" if row[0] == ColonyState.DESTROYING else ""
                raise WrongState(f"{name} is {row[0]}: it cannot become {state} from there{hint}")
            db.execute(
                "UPDATE colonies SET state=?, stage=?, reason=?, updated_at=? WHERE name=?",
                (state, stage, reason, now, name),
            )
            db.execute(
                "INSERT INTO transitions(colony, state, stage, reason, at) VALUES (?, ?, ?, ?, ?)",
                (name, state, stage, reason, now),
            )

    @_with_room
    def update(self, name: str, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as db:
            db.execute(
                f"UPDATE colonies SET {sets}, updated_at=? WHERE name=?",
                (*fields.values(), time.time(), name),
            )

    @_with_room
    def forget_orphans(self) -> int:
        """Delete the rows of colonies that no longer exist (written by a process that lost a race with a
        destroy); how many went."""
        with self.transaction() as db:
            gone = 0
            for table in ("transitions", "events", "runtime"):  # processes: gc ends them first (by pid)
                gone += db.execute(f"DELETE FROM {table} WHERE colony NOT IN (SELECT name FROM colonies)").rowcount
            return gone

    @_with_room
    def delete_colony(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM colonies WHERE name=?", (name,))
            for table in ("transitions", "resources", "processes", "events", "runtime"):
                db.execute(f"DELETE FROM {table} WHERE colony=?", (name,))

    def transitions(self, name: str) -> list[Transition]:
        rows = self._query("SELECT state, stage, reason, at FROM transitions WHERE colony=? ORDER BY id", (name,))
        return [Transition(ColonyState(r[0]), r[1], r[2], r[3]) for r in rows]

    # resources --------------------------------------------------------------------------------------------

    @_with_room
    def claim(self, colony: str, kind: str, ident: str, extra: str = "") -> None:
        """Record that `colony` is about to own `kind:ident` (called before the object is made)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO resources(kind, ident, colony, extra, created_at) VALUES (?, ?, ?, ?, ?)",
                (kind, ident, colony, extra, time.time()),
            )

    def release(self, kind: str, ident: str) -> None:
        """Forget `kind:ident` (called after the object is gone)."""
        self.release_many([(kind, ident)])

    @_with_room
    def release_many(self, claims: list[tuple[str, str]]) -> None:
        """Forget several (kind, ident) claims in one write: a stop's four, not four writes contending with every
        other colony's stop for the database's one write lock."""
        if claims:
            with self.transaction() as db:
                db.executemany("DELETE FROM resources WHERE kind=? AND ident=?", claims)

    def owns(self, kind: str, ident: str) -> bool:
        return bool(self._query("SELECT 1 FROM resources WHERE kind=? AND ident=?", (kind, ident)))

    def resources(self, colony: str | None = None) -> list[Resource]:
        if colony is None:
            rows = self._query("SELECT kind, ident, colony, extra FROM resources ORDER BY created_at")
        else:
            rows = self._query(
                "SELECT kind, ident, colony, extra FROM resources WHERE colony=? ORDER BY created_at",
                (colony,),
            )
        return [Resource(*r) for r in rows]

    # processes --------------------------------------------------------------------------------------------

    @_with_room
    def add_process(self, colony: str, pid: int, starttime: int, kind: str, argv: list[str]) -> None:
        with self.transaction() as db:
            _add_process(db, colony, pid, starttime, kind, argv)

    def settle_process(
        self, placeholder: int, colony: str, pid: int, starttime: int, kind: str, argv: list[str]
    ) -> None:
        """The process recorded before it started under `placeholder` (a pid no process has, starttime 0: see
        `Hive.exec`) is `pid`, started at `starttime` (recorded anew if gc forgot the placeholder meanwhile)."""
        with self.transaction() as db:
            moved = db.execute(
                "UPDATE processes SET pid=?, starttime=? WHERE pid=? AND starttime=0", (pid, starttime, placeholder)
            ).rowcount
            if not moved:
                _add_process(db, colony, pid, starttime, kind, argv)

    def remove_process(self, pid: int, starttime: int) -> None:
        self.remove_processes([(pid, starttime)])

    @_with_room
    def remove_processes(self, processes: list[tuple[int, int]]) -> None:
        """Forget several (pid, starttime) processes in one write."""
        if processes:
            with self.transaction() as db:
                db.executemany("DELETE FROM processes WHERE pid=? AND starttime=?", processes)

    def processes(self, colony: str | None = None) -> list[ProcessRecord]:
        sql = "SELECT pid, starttime, colony, kind, argv, started_at FROM processes"
        rows = self._query(sql + " WHERE colony=?", (colony,)) if colony else self._query(sql)
        return [ProcessRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    # runtime states (services, agent) written by each colony's host for other processes to read ------------

    @_with_room
    def set_runtime(self, colony: str, kind: str, name: str, state: str, detail: str = "") -> None:
        with self.transaction() as db:
            # Only for a colony that exists: a host's last writes may land after a destroy deleted its colony.
            db.execute(
                "INSERT OR REPLACE INTO runtime(colony, kind, name, state, detail, updated_at) "
                "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM colonies WHERE name=?)",
                (colony, kind, name, state, detail, time.time(), colony),
            )

    @_with_room
    def remove_runtime(self, colony: str, kind: str, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM runtime WHERE colony=? AND kind=? AND name=?", (colony, kind, name))

    def runtime(self, colony: str) -> list[tuple[str, str, str, str]]:
        """(kind, name, state, detail) rows of a colony, services by name then the agent."""
        rows = self._query(
            "SELECT kind, name, state, detail FROM runtime WHERE colony=? ORDER BY kind DESC, name", (colony,)
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def all_runtime(self) -> list[tuple[str, str, str, str]]:
        """(colony, kind, name, state) rows of every colony, each colony's services by name then its agent."""
        rows = self._query("SELECT colony, kind, name, state FROM runtime ORDER BY colony, kind DESC, name")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    @_with_room
    def clear_runtime(self, colony: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM runtime WHERE colony=?", (colony,))

    # events -----------------------------------------------------------------------------------------------

    @_with_room
    def add_event(self, colony: str, kind: str, message: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events(colony, at, kind, message) VALUES (?, ?, ?, ?)",
                (colony, time.time(), kind, message),
            )

    def events(self, colony: str | None = None, limit: int = 200) -> list[tuple[str, float, str, str]]:
        if colony is None:
            rows = self._query("SELECT colony, at, kind, message FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._query(
                "SELECT colony, at, kind, message FROM events WHERE colony=? ORDER BY id DESC LIMIT ?",
                (colony, limit),
            )
        return [tuple(r) for r in reversed(rows)]  # type: ignore[misc]
