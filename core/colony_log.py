"""A colony's log: a bounded ring in memory (readers ask for "everything after seq n") and a size-capped file.

Neither lets one noisy source push the others out: each source's last KEEP_PER_SOURCE lines are kept past the
ring's end, and past the file's rotation in `colony.log.kept` (a quiet service's URL line, the setup's output)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import NamedTuple


class Entry(NamedTuple):  # a tuple: made for every line a service prints, at half a frozen dataclass's cost
    seq: int
    at: float
    source: str
    text: str


KEEP_PER_SOURCE = 500  # each source's last lines, kept whatever the others print
# Room a log that found the disk full leaves free when it tries again: a flood took whatever was freed within a
# second, and the room a stop or destroy frees for the registry (its 1 MiB reserve) is theirs.
ROOM_TO_SPARE = 1 << 20


class _Last:
    """One source's last `keep` lines, as the batches they came in: O(1) a batch on a flood's path."""

    __slots__ = ("batches", "count", "keep")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.batches: deque[list[Entry]] = deque()
        self.count = 0

    def add(self, batch: list[Entry]) -> None:
        self.batches.append(batch)
        self.count += len(batch)
        while len(self.batches) > 1 and self.count - len(self.batches[0]) >= self.keep:
            self.count -= len(self.batches.popleft())

    @property
    def first(self) -> int:
        """The seq of the oldest line held (perhaps one of more than `keep`)."""
        return self.batches[0][0].seq

    def entries(self) -> list[Entry]:
        held = [e for batch in self.batches for e in batch]
        return held[-self.keep :] if self.keep else []


class ColonyLog:
    """Thread-safe: setup commands and service readers append from worker threads.

    The file is kept open between appends (O_APPEND: other processes appending to the same log, a spawn's setup
    steps, interleave whole writes) and each batch of lines is one write, after one stat of the path: a service
    printing thousands of lines a second cost its colony's host a core when every line opened, stat'ed and closed
    the file. While the file cannot be written (a full disk), a new try is made at most once a second."""

    RETRY_SECONDS = 1.0

    def __init__(
        self, path: Path, ring_size: int = 5000, max_bytes: int = 4 << 20, keep_per_source: int = KEEP_PER_SOURCE
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._ring: deque[Entry] = deque(maxlen=ring_size)
        # Each source's last lines, whatever the ring or the file dropped since: a flood of one service does not
        # take the others' lines with it. One append per batch on the flood's path (`_Last`).
        self.keep_per_source = keep_per_source
        self._last: dict[str, _Last] = {}
        self._gen_start = 1  # the first seq in the current file generation: what is older sits in colony.log.1
        self._loaded_inode = -1  # the current file `load` read (its lines from `_gen_start` on)
        self._seq = 0
        self._lock = threading.Lock()
        # Why the file cannot be written now (a full disk, a read-only or failing one), None while it can. The
        # lines stay in the ring meanwhile; `on_trouble` hears each change (from the appending thread, lock held).
        self._write_error: str | None = None
        self._retry_at = 0.0
        self._fd = -1
        self._inode = -1
        self.on_trouble: Callable[[str | None], None] | None = None

    def append(self, source: str, text: str) -> Entry:
        return self.extend(source, (text,))[0]

    def extend(self, source: str, texts: Iterable[str]) -> list[Entry]:
        """Append lines of one source, in order, as one write to the file."""
        lines = [shown(text) for text in texts]
        with self._lock:
            now = time.time()
            first = self._seq + 1
            self._seq += len(lines)
            entries = list(map(Entry, range(first, self._seq + 1), repeat(now), repeat(source), lines))
            self._ring.extend(entries)
            if lines:
                last = self._last.get(source)
                if last is None:
                    last = self._last[source] = _Last(self.keep_per_source)
                last.add(entries)
                prefix = f"{_stamp(now)} [{source}] "
                self._write((prefix + ("\n" + prefix).join(lines) + "\n").encode("utf-8", "replace"), first)
        return entries

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> int:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(self._fd)
        self._inode = st.st_ino
        return st.st_size

    def _write(self, data: bytes, first: int) -> None:
        if self._write_error is not None and time.monotonic() < self._retry_at:
            return  # the lines are in the ring; the file is tried again in a moment
        view: memoryview | None = None
        try:
            try:
                st: os.stat_result | None = os.stat(self.path)
            except FileNotFoundError:
                if not self.path.parent.is_dir():
                    self._close()
                    return  # the colony is being destroyed
                st = None
            if st is None or self._fd < 0 or st.st_ino != self._inode:  # first write, removed, or rotated elsewhere
                self._close()
                size = self._open()
                if self._inode != self._loaded_inode:
                    self._gen_start = first  # a file this process knows nothing of before this batch
            else:
                size = st.st_size
            rotating = size and size + len(data) > self.max_bytes
            if self._write_error is not None and not rotating:  # a rotation frees the old generation first
                disk = os.fstatvfs(self._fd)
                spare = min(ROOM_TO_SPARE, disk.f_blocks * disk.f_frsize // 8)  # a tiny disk: an eighth of it
                if disk.f_bavail * disk.f_frsize < spare + len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if rotating:
                # One rotated generation keeps the disk bounded at twice the cap (and a bit: the kept lines).
                keeping = self._kept_lines()
                os.replace(self.path, rotated(self.path))  # frees the old generation's room first (a full disk)
                self._close()
                self._open()
                self._gen_start = first
                self._write_kept(keeping)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:  # no space, a quota, a read-only or failing disk: the log goes on in memory
            if view is not None and 0 < len(view) < len(data):
                self._cut_partial(data, len(data) - len(view))
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            self._trouble(exc.strerror or str(exc))
            return
        if self._write_error is not None:
            self._trouble(None)

    def _cut_partial(self, data: bytes, written: int) -> None:
        """The disk filled in the middle of a batch: the file ends at its last whole line, not in the middle of
        one that the next write, once there is room, would run into (a truncation needs no room)."""
        whole = data.rfind(b"\n", 0, written) + 1
        with contextlib.suppress(OSError):
            size = os.fstat(self._fd).st_size
            os.ftruncate(self._fd, size - (written - whole))

    def _kept_lines(self) -> list[str] | None:
        """What colony.log.kept is to hold after the rotation about to be done: what it drops (the lines of
        colony.log.1 and of the kept file) that are among a source's last lines, so that each source's last lines
        outlive a flood of another's. From memory (what this process wrote or loaded) and the kept file there now
        (small): the generation about to be dropped is never read. None: nothing to keep, nor to remove."""
        start, limit = self._gen_start, self.keep_per_source
        room = {source: limit - sum(1 for e in last.entries() if e.seq >= start) for source, last in self._last.items()}
        path = kept(self.path)
        try:
            before = path.read_bytes().decode(errors="replace").split("\n")
        except FileNotFoundError:
            before = []
        have = set(before)
        mine = sorted(e for last in self._last.values() for e in last.entries() if e.seq < start)
        lines = [line for line in before if line] + [line for line in (file_line(e) for e in mine) if line not in have]
        chosen: list[str] = []
        counts: Counter[str] = Counter()
        size = 0
        for line in reversed(lines):  # the newest first: each source's last lines, within a byte budget
            source = parse_line(line)[1]
            if counts[source] >= room.get(source, limit):
                continue
            size += len(line) + 1
            if size > self.max_bytes // 4:
                break
            counts[source] += 1
            chosen.append(line)
        if not chosen and not before:
            return None
        chosen.reverse()
        return chosen

    def _write_kept(self, lines: list[str] | None) -> None:
        if lines is None:
            return
        path = kept(self.path)
        temporary = path.with_name(path.name + ".new")
        try:
            temporary.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "replace"))
            os.replace(temporary, path)
        except OSError:  # no room even after the rotation: the log goes on without them, as it did before them
            with contextlib.suppress(OSError):
                temporary.unlink()

    def _trouble(self, why: str | None) -> None:
        if why != self._write_error:
            self._write_error = why
            if self.on_trouble is not None:
                self.on_trouble(why)

    @property
    def write_error(self) -> str | None:
        """Why the file is not being written now (a full disk), None while it is."""
        return self._write_error

    def after(self, seq: int) -> list[Entry]:
        """The entries after `seq`: the ring's, and before them each source's last lines the ring dropped."""
        if seq >= self._seq:
            return []  # none: a client asking whether the host is there (`Connection.unanswered`) costs nothing
        with self._lock:
            return [e for e in self._older() if e.seq > seq] + [e for e in self._ring if e.seq > seq]

    @property
    def last_seq(self) -> int:
        return self._seq

    def tail(self, n: int) -> list[Entry]:
        """The last `n` entries, and before them each source's last lines the ring dropped."""
        with self._lock:
            return self._older() + list(self._ring)[-n:]

    def _older(self) -> list[Entry]:
        """Lines of the sources' last lines the ring no longer holds, in order."""
        if len(self._ring) < (self._ring.maxlen or 0) or not self._ring:
            return []
        first = self._ring[0].seq
        return sorted(e for last in self._last.values() if last.first < first for e in last.entries() if e.seq < first)

    def load(self) -> int:
        """Fill the ring from the file (what setup and build wrote before this process took over), and each
        source's last lines from the kept lines and both generations; how many lines the files held."""
        parts = _read_parts(self.path)
        size = self._ring.maxlen or 0
        limit = self.keep_per_source
        with self._lock:
            total = sum(len(lines) for lines in parts)
            base = self._seq
            self._seq += total
            self._gen_start = self._seq - len(parts[-1]) + 1
            with contextlib.suppress(OSError):
                self._loaded_inode = os.stat(self.path).st_ino
            flat = [line for lines in parts for line in lines]
            counts: Counter[str] = Counter()
            picked: list[Entry] = []
            ring_from = max(0, total - size)
            for index in range(total - 1, ring_from - 1, -1):  # the ring's lines, the newest first
                stamp, source, text = parse_line(flat[index])
                counts[source] += 1
                picked.append(Entry(base + index + 1, _parse_stamp(stamp), source, text))
            for index in range(ring_from - 1, -1, -1):  # then each source's last lines before them
                line = flat[index]
                end = line.find("] ", 21)  # the source, cheaply: most of these lines are skipped
                if counts[line[21:end] if end > 0 and line[19:21] == " [" else parse_line(line)[1]] >= limit:
                    continue
                stamp, source, text = parse_line(line)
                counts[source] += 1
                picked.append(Entry(base + index + 1, _parse_stamp(stamp), source, text))
            picked.reverse()
            for entry in picked:
                if entry.seq > base + total - size:
                    self._ring.append(entry)
                last = self._last.get(entry.source)
                if last is None:
                    last = self._last[entry.source] = _Last(limit)
                last.add([entry])
        return total


def trouble_message(colony: str, why: str | None) -> str:
    """What a user is told when the colony's log file cannot be written (`ColonyLog.write_error`), and when it is
    written again (`why` None)."""
    if why is None:
        return f"{colony}: its log file is written again"
    return f"{colony}: its log file cannot be written ({why}): new lines stay in memory (the last 5,000)"


def trouble_told(colony: str, message: str) -> str | None:
    """What `trouble_message` said in `message`: why the file cannot be written, "" once it is again, None for
    any other message."""
    if message == trouble_message(colony, None):
        return ""
    head, tail = trouble_message(colony, "\0").split("\0")
    if message.startswith(head) and message.endswith(tail) and len(message) > len(head) + len(tail):
        return message[len(head) : len(message) - len(tail)]
    return None


def recent(entries: Sequence[Entry], n: int, keep: int = KEEP_PER_SOURCE) -> list[Entry]:
    """The last `n` of `entries` (in seq order) and, before them, each source's last `keep` lines among the rest:
    a cut of a log that a flood of one source filled leaves the others' last lines in."""
    if len(entries) <= n:
        return list(entries)
    cut = len(entries) - n
    counts = Counter(e.source for e in entries[cut:])
    older: list[Entry] = []
    for e in reversed(entries[:cut]):
        if counts[e.source] < keep:
            counts[e.source] += 1
            older.append(e)
    older.reverse()
    return older + list(entries[cut:])


def shown(text: str) -> str:
    """A line as a terminal shows it: a carriage return goes back to the line's start and what follows overwrites
    what was there (a progress counter redrawn in place is its last state, not each state on a line of its own)."""
    text = text.rstrip("\r\n")
    if "\r" not in text:
        return text
    line = ""
    for part in text.split("\r"):
        line = part + line[len(part) :]
    return line


LAST_LINES = 40  # a command's last lines kept for the reason it failed (`failure_tail`)
_ERROR_LINE = re.compile(r"error|err!|fatal|traceback|exception|panic|failed|cannot|could not|denied", re.IGNORECASE)
_TAIL_WIDTH = 240


def failure_tail(lines: Iterable[str], n: int = 3) -> str:
    """What a failure reason quotes of a command's last lines, on one line: the first lines that say what went wrong
    (npm, pip and compilers say the cause first, then a summary and where their own log went; a traceback's last
    line is its error) and the last line; else the last `n` non-blank lines."""
    kept = [line.strip()[:_TAIL_WIDTH] for line in lines if line.strip()]
    # Lines that say more than the word itself ("npm error" alone, between paragraphs, says nothing).
    errors = [line for line in kept if _ERROR_LINE.search(line) and len(_ERROR_LINE.sub("", line).split()) > 1]
    if not errors:
        return " | ".join(kept[-n:])
    picked = errors[: n - 1]
    if kept[-1] not in picked:
        picked.append(kept[-1])
    return " | ".join(picked)


_LINE_RE = re.compile(r"^(\S+) \[([^\]]*)\] (.*)$")


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at))


def file_line(entry: Entry) -> str:
    """An entry as a line of the log file (without its line feed)."""
    return f"{_stamp(entry.at)} [{entry.source}] {entry.text}"


@functools.lru_cache(maxsize=256)  # a log's lines come many to a second: a load parses each second once
def _parse_stamp(stamp: str) -> float:
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0


def parse_line(line: str) -> tuple[str, str, str]:
    """(timestamp, source, text) of a line of the log file; unparsable lines have an empty source."""
    match = _LINE_RE.match(line)
    return (match.group(1), match.group(2), match.group(3)) if match else ("", "", line)


def rotated(path: Path) -> Path:
    """Where the log's previous generation is kept (colony.log.1)."""
    return path.with_suffix(".log.1")


def kept(path: Path) -> Path:
    """Where each source's last lines that a rotation dropped are kept (colony.log.kept): older than colony.log.1."""
    return path.with_suffix(".log.kept")


def _read_parts(path: Path, live: bool = True) -> list[list[str]]:
    """The lines of the kept file, the rotated generation and (unless not `live`) the log, oldest first."""
    parts: list[list[str]] = []
    for part in (kept(path), rotated(path), path) if live else (kept(path), rotated(path)):
        try:
            text = part.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        parts.append(_lines(text))
    return parts


def _lines(text: str) -> list[str]:
    # Split at line feeds only: a carriage return in an older log's line is not a line end.
    return text.split("\n")[: -1 if text.endswith("\n") else None] if text else []


def read_tail(path: Path, count: int, wanted: Callable[[str], bool]) -> list[str]:
    """The last `count` wanted lines of the log, looking into the rotated generation and the kept lines when
    needed."""
    lines = [line for part in _read_parts(path) for line in part if wanted(line)]
    return lines[-count:] if count > 0 else []


# Where a reader of the log got to: the live file's inode, and the byte after the last whole line it read.
LogMark = tuple[int, int]


def read_tail_marked(path: Path, count: int, wanted: Callable[[str], bool]) -> tuple[list[str], LogMark | None]:
    """`read_tail` of the whole lines, and where they end (`follow_file` goes on from there, so that no line written
    between the two is lost); None where the log does not exist yet."""
    parts = _read_parts(path, live=False)
    mark: LogMark | None = None
    try:
        with path.open("rb") as handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1  # a line still being written is followed, not shown half
            mark = (os.fstat(handle.fileno()).st_ino, end)
        parts.append(_lines(data[:end].decode(errors="replace")))
    except FileNotFoundError:
        pass
    lines = [line for part in parts for line in part if wanted(line)]
    return (lines[-count:] if count > 0 else []), mark


async def follow_file(path: Path, interval: float = 0.2, since: LogMark | None = None) -> AsyncIterator[str]:
    """New lines appended to `path`, following rotation, until cancelled (like tail -F): from its end, or from `since`
    (`read_tail_marked`), in the rotated generation if the log was rotated meanwhile."""
    handle = None
    inode = None
    from_start = False  # after a rotation the new file is read from its start, at first open from its end
    pending = ""
    generation = rotated(path)
    try:
        while True:
            if handle is None:
                try:
                    handle = path.open("r", errors="replace", newline="")  # "\r" is no line end
                except FileNotFoundError:
                    await asyncio.sleep(interval)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                if since is not None and not from_start:
                    mark_inode, offset = since
                    since = None
                    from_start = True  # read on from the mark, not from the end
                    if mark_inode == inode:
                        handle.seek(offset)
                    else:  # rotated since the mark: the rest of the generation it was in, then this one whole
                        rest = ""
                        with contextlib.suppress(OSError), generation.open("r", errors="replace", newline="") as older:
                            if os.fstat(older.fileno()).st_ino == mark_inode:
                                older.seek(offset)
                                rest = older.read()
                        *complete, pending = rest.split("\n")
                        for line in complete:
                            yield line
                if not from_start:
                    handle.seek(0, os.SEEK_END)
            chunk = handle.read()
            if chunk:
                *complete, pending = (pending + chunk).split("\n")
                for line in complete:
                    yield line
                continue
            try:
                moved = os.stat(path).st_ino != inode
            except FileNotFoundError:
                moved = True
            if moved:
                handle.close()
                handle, from_start = None, True
                continue
            await asyncio.sleep(interval)
    finally:
        if handle is not None:
            handle.close()
