"""A colony's log: a bounded ring in memory (readers ask for "everything after seq n") and a size-capped file."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from itertools import repeat
from pathlib import Path
from typing import NamedTuple


class Entry(NamedTuple):  # a tuple: made for every line a service prints, at half a frozen dataclass's cost
    seq: int
    at: float
    source: str
    text: str


class ColonyLog:
    """Thread-safe: setup commands and service readers append from worker threads.

    The file is kept open between appends (O_APPEND: other processes appending to the same log, a spawn's setup
    steps, interleave whole writes) and each batch of lines is one write, after one stat of the path: a service
    printing thousands of lines a second cost its colony's host a core when every line opened, stat'ed and closed
    the file. While the file cannot be written (a full disk), a new try is made at most once a second."""

    RETRY_SECONDS = 1.0

    def __init__(self, path: Path, ring_size: int = 5000, max_bytes: int = 4 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._ring: deque[Entry] = deque(maxlen=ring_size)
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
                prefix = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(now))} [{source}] "
                self._write((prefix + ("\n" + prefix).join(lines) + "\n").encode("utf-8", "replace"))
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

    def _write(self, data: bytes) -> None:
        if self._write_error is not None and time.monotonic() < self._retry_at:
            return  # the lines are in the ring; the file is tried again in a moment
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
            else:
                size = st.st_size
            if size and size + len(data) > self.max_bytes:
                # One rotated generation keeps the disk bounded at twice the cap.
                os.replace(self.path, rotated(self.path))
                self._close()
                self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:  # no space, a quota, a read-only or failing disk: the log goes on in memory
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            self._trouble(exc.strerror or str(exc))
            return
        if self._write_error is not None:
            self._trouble(None)

    def _trouble(self, why: str | None) -> None:
        if why != self._write_error:
            self._write_error = why
            if self.on_trouble is not None:
                self.on_trouble(why)

    def after(self, seq: int) -> list[Entry]:
        with self._lock:
            return [e for e in self._ring if e.seq > seq]

    @property
    def last_seq(self) -> int:
        return self._seq

    def tail(self, n: int) -> list[Entry]:
        with self._lock:
            return list(self._ring)[-n:]

    def load(self) -> int:
        """Fill the ring from the file (what setup and build wrote before this process took over); how many."""
        lines = read_tail(self.path, self._ring.maxlen or 0, lambda _line: True)
        with self._lock:
            for line in lines:
                stamp, source, text = parse_line(line)
                self._seq += 1
                self._ring.append(Entry(self._seq, _parse_stamp(stamp), source, text))
        return len(lines)


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


def read_tail(path: Path, count: int, wanted: Callable[[str], bool]) -> list[str]:
    """The last `count` wanted lines of the log, looking into the rotated generation when needed."""
    lines: list[str] = []
    for part in (rotated(path), path):
        try:
            # Split at line feeds only: a carriage return in an older log's line is not a line end.
            text = part.read_bytes().decode(errors="replace")
            if not text:
                continue
            lines.extend(line for line in text.split("\n")[: -1 if text.endswith("\n") else None] if wanted(line))
        except FileNotFoundError:
            continue
    return lines[-count:] if count > 0 else []


async def follow_file(path: Path, interval: float = 0.2) -> AsyncIterator[str]:
    """New lines appended to `path`, following rotation, until cancelled (like tail -F)."""
    handle = None
    inode = None
    from_start = False  # after a rotation the new file is read from its start, at first open from its end
    pending = ""
    try:
        while True:
            if handle is None:
                try:
                    handle = path.open("r", errors="replace", newline="")  # "\r" is no line end
                except FileNotFoundError:
                    await asyncio.sleep(interval)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                if not from_start:
                    handle.seek(0, os.SEEK_END)
            chunk = handle.read()
            if chunk:
                *complete, pending = (pending + chunk).split("\n")
                for line in complete:
                    yield line
                continue
            try:
                rotated = os.stat(path).st_ino != inode
            except FileNotFoundError:
                rotated = True
            if rotated:
                handle.close()
                handle, from_start = None, True
                continue
            await asyncio.sleep(interval)
    finally:
        if handle is not None:
            handle.close()
